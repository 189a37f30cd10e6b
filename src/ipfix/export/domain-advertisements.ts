/**
 * What one export session tells its collector, per observation domain, about the data it sends
 * there, besides the templates: the sampling rate the data was counted at (sampling-options.ts)
 * and the names of the interfaces it names (interface-options.ts). Each goes in front of the
 * first data it describes and is sent again after every sending of the templates (a refresh, a
 * send error, a move: the collector may have lost it with them), and the rate again whenever
 * the data that follows was counted at another one. One rate per message.
 */
import type {FlowBatch} from '../../flow/batch.js'
import type {Template} from '../wire/template.js'
import type {RecordRun} from './encode.js'
import type {ExportTemplate, OptionsTemplateIds} from './flow-templates.js'
import {InterfaceAnnouncements, interfaceNamesRuns, interfaceNamesTemplate, nfdumpInterfaceNamesTemplate, type InterfaceLabels} from './interface-options.js'
import {rateGroups} from './rate-groups.js'
import {splitByDrops} from './drops-templates.js'
import {flowRun} from './record-runs.js'
import {samplingRecordRun, samplingTemplate} from './sampling-options.js'

const INGRESS_INTERFACE = 10
const EGRESS_INTERFACE = 14

export class DomainAdvertisements {
  private readonly sampling: Template
  private readonly names?: {standard: Template; nfdump: Template; announcements: InterfaceAnnouncements}
  /** The rate last advertised in each domain since its templates were sent. */
  private readonly rates = new Map<number, number>()

  /** `labels`: where interface names come from; without it, none are sent. */
  constructor(ids: OptionsTemplateIds, labels?: InterfaceLabels) {
    this.sampling = samplingTemplate(ids.sampling)
    if (labels)
      this.names = {
        standard: interfaceNamesTemplate(ids.interfaceNames),
        nfdump: nfdumpInterfaceNamesTemplate(ids.nfdumpInterfaceNames),
        announcements: new InterfaceAnnouncements(labels),
      }
  }

  /** The Options Templates of what is advertised, each to go in a set of its own. */
  get templates(): Template[] {
    return this.names ? [this.sampling, this.names.standard, this.names.nfdump] : [this.sampling]
  }

  /** The templates went to `domain` again: everything is advertised again before its next data. */
  forget(domain: number): void {
    this.rates.delete(domain)
    this.names?.announcements.forget(domain)
  }

  /**
   * The batch's flows in template `t`, as the runs of the messages they go in: for each rate its
   * flows were counted at, a list of runs to pack on their own (one rate per message). The first
   * starts with the names of the interfaces the batch names that its domain has not been told
   * (when the template carries interfaces); each starts with its rate unless that is the one last
   * advertised in the domain. With `drops` (t's drops template), each rate's flows with drops go
   * under it, after those without (under `t`).
   */
  batchRuns(t: ExportTemplate, batch: FlowBatch, drops?: ExportTemplate): RecordRun[][] {
    const domain = batch.observationDomainId
    const out: RecordRun[][] = []
    const names = this.names
    if (names && t.template.fields.some((f) => f.element.id === INGRESS_INTERFACE || f.element.id === EGRESS_INTERFACE)) {
      const due = names.announcements.due(batch)
      if (due.length > 0) out.push(interfaceNamesRuns(names.standard, names.nfdump, domain, due))
    }
    for (const [k, group] of rateGroups(batch, this.rates.get(domain)).entries()) {
      const runs = k === 0 ? (out.pop() ?? []) : []
      if (this.rates.get(domain) !== group.interval) {
        runs.push(samplingRecordRun(this.sampling, domain, group.interval))
        this.rates.set(domain, group.interval)
      }
      const split = drops && splitByDrops(batch, group.rows)
      if (!split) runs.push(flowRun(t, batch, group.rows))
      else {
        if (split.without.length > 0) runs.push(flowRun(t, batch, split.without))
        runs.push(flowRun(drops, batch, split.withDrops))
      }
      out.push(runs)
    }
    return out
  }
}
