/**
 * The interfaces of each observation domain, as the daemon tells its collectors their names: an
 * ifindex means an interface of the namespace whose meter counted the flow, and a domain holds
 * the flows of every meter that exports in it. When namespaces sharing a domain each give an
 * ifindex to an interface of their own, the records cannot say which one they mean: that
 * ifindex is named to no collector, and the daemon says so once (interface-names-ambiguous).
 */
import type {InterfaceLabels} from '../ipfix/export/collector-exporter.js'
import type {MeterSetDrainer} from './drain.js'
import type {InterfaceNames} from './interfaces.js'
import type {Logger} from './log.js'

export class DomainInterfaces {
  /** The ifindexes last logged as ambiguous, by domain. */
  private readonly ambiguous = new Map<number, string>()

  constructor(
    private readonly names: InterfaceNames,
    private readonly meters: () => Iterable<MeterSetDrainer>,
    private readonly log: Logger,
  ) {}

  /** What the exporters ask: the interface of `ifindex` in `domain`. */
  readonly labels: InterfaceLabels = {label: (domain, ifindex) => this.names.label(this.namespacesOf(domain), ifindex)}

  /** The namespaces (labels) whose meters export in `domain`. */
  private namespacesOf(domain: number): string[] {
    const out: string[] = []
    for (const d of this.meters()) if (d.observationDomainId === domain) out.push(d.netns)
    return out
  }

  /** Meters just found: their namespaces' interfaces are read (for the names sent before their first flows), ambiguities logged. */
  async meet(found: MeterSetDrainer[]): Promise<void> {
    if (found.length === 0) return
    await this.names.readLinks(found.map((d) => d.set.netns))
    for (const domain of new Set(found.map((d) => d.observationDomainId))) {
      const namespaces = this.namespacesOf(domain)
      const ifindexes = this.names.conflicts(namespaces)
      const key = ifindexes.join(',')
      if ((this.ambiguous.get(domain) ?? '') === key) continue
      this.ambiguous.set(domain, key)
      if (ifindexes.length === 0) continue
      this.log.log('warn', 'interface-names-ambiguous', {
        observationDomainId: domain,
        netns: namespaces,
        ifindexes,
        effect: 'these ifindexes are different interfaces in these namespaces: no collector is told their names',
        fix: 'give each namespace its own observationDomainId (meters: in the config)',
      })
    }
  }

  /** The meters are all met again (a reload): ambiguities are logged anew. */
  reset(): void {
    this.ambiguous.clear()
  }
}
