/**
 * The templates an exporter sends flows in: a data template (its wire form is ../wire/template.ts)
 * compiled against the FlowBatch columns, through the fields of exportable-elements.ts and the
 * writers of flow-fields.ts; the choice of template per address family; and the options template
 * of the exporter's statistics.
 */
import {IE, naturalLength} from '../wire/elements.js'
import {bindField, templateFamily, type BoundField} from './flow-fields.js'
import type {Template} from '../wire/template.js'

/** A data template ready to encode flows: its fields bound to the FlowBatch columns. */
export interface ExportTemplate {
  template: Template
  fields: BoundField[]
  recordLength: number
  /** The address family its address fields tie it to, if any. */
  family?: 4 | 6
}

export function compileTemplate(id: number, fields: readonly {name: string; length: number}[]): ExportTemplate {
  return boundTemplate(
    id,
    fields.map((f) => bindField(f.name, f.length)),
    templateFamily(fields.map((f) => f.name)),
  )
}

/** A data template of fields already bound (biflow-templates.ts adds reverse ones). */
export function boundTemplate(id: number, bound: BoundField[], family: 4 | 6 | undefined): ExportTemplate {
  const wire = (b: BoundField) =>
    b.enterpriseNumber === undefined ? {element: b.element, length: b.length} : {element: b.element, length: b.length, enterpriseNumber: b.enterpriseNumber}
  return {
    template: {id, fields: bound.map(wire), scopeFieldCount: 0},
    fields: bound,
    recordLength: bound.reduce((n, b) => n + b.length, 0),
    family,
  }
}

/**
 * The template a flow of `family` goes out with: among the templates that fit it (no address
 * field of the other family), the one with the most fields; on a tie, the first. So each flow
 * reaches each collector once, in the richest template that can carry it.
 */
export function chooseTemplate(templates: readonly ExportTemplate[], family: 4 | 6): ExportTemplate | undefined {
  let best: ExportTemplate | undefined
  for (const t of templates) {
    if (t.family !== undefined && t.family !== family) continue
    if (!best || t.fields.length > best.fields.length) best = t
  }
  return best
}

/**
 * The options template carrying the exporting process's statistics (RFC 7011 §4.3 style).
 * notSentFlowTotalCount: the data records a collector's spool dropped while it was down.
 */
export function statsTemplate(id: number): Template {
  const field = (e: (typeof IE)[keyof typeof IE]) => ({element: e, length: naturalLength(e.type)})
  return {
    id,
    scopeFieldCount: 1,
    fields: [
      field(IE.observationDomainId),
      field(IE.exportedMessageTotalCount),
      field(IE.exportedFlowRecordTotalCount),
      field(IE.exportedOctetTotalCount),
      field(IE.ignoredPacketTotalCount),
      field(IE.ignoredOctetTotalCount),
      field(IE.notSentFlowTotalCount),
      field(IE.observationTimeMilliseconds),
    ],
  }
}

/** The ids of the exporter's own options templates, none of them a data template's. */
export interface OptionsTemplateIds {
  /** The exporter's statistics. */
  stats: number
  /** The sampling rate of each observation domain (sampling-options.ts). */
  sampling: number
  /** Interface names, the standard shape and nfdump's (interface-options.ts). */
  interfaceNames: number
  nfdumpInterfaceNames: number
}

/** The first `n` template ids from 65000 up (then from 256 up) that no data template uses. */
function freeTemplateIds(templates: readonly {id: number}[], n: number): number[] {
  const used = new Set(templates.map((t) => t.id))
  const out: number[] = []
  for (let id = 65000; id <= 65535 && out.length < n; id++) if (!used.has(id)) out.push(id)
  for (let id = 256; out.length < n; id++) if (!used.has(id) && !out.includes(id)) out.push(id)
  return out
}

/**
 * The options templates' ids: the statistics keep the first free id (as before there were
 * others), the sampling rate and interface names take the next ones.
 */
export function optionsTemplateIds(templates: readonly {id: number}[]): OptionsTemplateIds {
  const [stats, sampling, interfaceNames, nfdumpInterfaceNames] = freeTemplateIds(templates, 4)
  return {stats, sampling, interfaceNames, nfdumpInterfaceNames}
}
