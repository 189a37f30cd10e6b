/**
 * The daemon's collectors over their life: an exporter per collector the config names, opened
 * (and opened again at each drain while it cannot be), serviced at each drain (a collector that
 * is down is probed, its spool replayed), carried over a reload by name (with its spool and its
 * sequence numbers, to a new address if it moved), retired when a reload drops it, and settled
 * when the daemon stops. Their sockets go on the skip list of every meter drained, so that the
 * meters do not count the daemon's own datagrams; their spools share one SpoolBudget.
 */
import {setTimeout as sleep} from 'node:timers/promises'

import {skipSockets, unskipSockets} from '../bpf/sockets.js'
import type {Config} from '../config/config.js'
import {compileBiflowTemplates, compileTemplates, exporterFor} from '../config/export-settings.js'
import type {FlowBatch} from '../flow/batch.js'
import {
  SpoolBudget,
  type CollectorExporter,
  type ExportTemplate,
  type InterfaceLabels,
  type SequenceStore,
  type TransportDefaults,
} from '../ipfix/export/collector-exporter.js'
import {sameEndpoints, type CollectorTarget} from '../ipfix/export/target.js'
import type {MeterSetDrainer} from './drain.js'
import type {Logger} from './log.js'

/** How long a stopping daemon keeps trying to hand a down collector its spool. */
const STOP_SPOOL_MS = 3000
/**
 * How long a stopping daemon lets a replay under way go on (it is paced: 32 MiB take 3.4 s at
 * the default rate); within the service unit's TimeoutStopSec (30 s), with room for the final drain.
 */
const STOP_REPLAY_MS = 20_000
/** Collectors a reload dropped, kept until the metrics have counted what they lost. */
const RETIRED_KEPT = 64

/** A collector's address for people: HOST:PORT, [IPV6]:PORT. */
function endpointText(e: CollectorTarget['remote']): string {
  return e.host.includes(':') ? `[${e.host}]:${e.port}` : `${e.host}:${e.port}`
}

export interface CollectorsOptions {
  log: Logger
  /** Where the sequence numbers of sessions with a fixed source port are kept (the state file). */
  sequences: SequenceStore
  /** The meters drained now: the collectors' sockets go on their skip lists. */
  meters: () => Iterable<MeterSetDrainer>
  /** Where the names of the interfaces the records carry come from (sent to every collector). */
  interfaceLabels?: InterfaceLabels
}

export class Collectors {
  private config: Config
  private exporters: CollectorExporter[] = []
  /** Collectors a reload dropped, until the metrics take them (what they lost counts there). */
  private readonly retired: CollectorExporter[] = []
  /** One bound on what every collector's spool and window hold together (spoolTotalBytes). */
  private readonly spoolBudget: SpoolBudget
  private templates: ExportTemplate[] = []
  /** The same templates in their biflow form, for the collectors with `biflow: true`. */
  private biflowTemplates: ExportTemplate[] = []
  /** The cookie of each collector's socket, as it is on the meters' skip lists. */
  private readonly cookies = new Map<CollectorExporter, bigint>()
  /** The spoolDroppedMessages each collector was last logged at. */
  private readonly droppedLogged = new WeakMap<CollectorExporter, number>()
  private readonly log: Logger
  private readonly sequences: SequenceStore
  private readonly meters: () => Iterable<MeterSetDrainer>
  private readonly interfaceLabels?: InterfaceLabels

  constructor(config: Config, options: CollectorsOptions) {
    this.config = config
    this.log = options.log
    this.sequences = options.sequences
    this.meters = options.meters
    this.interfaceLabels = options.interfaceLabels
    this.spoolBudget = new SpoolBudget(config.spoolTotalBytes)
  }

  get all(): readonly CollectorExporter[] {
    return this.exporters
  }

  /** The collectors reloads have dropped since the last call (the metrics count what they lost). */
  takeRetired(): CollectorExporter[] {
    return this.retired.splice(0)
  }

  /** An exporter for each collector of the config, opened (one that cannot be is tried again at each drain). */
  async start(): Promise<void> {
    this.templates = compileTemplates(this.config)
    this.biflowTemplates = compileBiflowTemplates(this.config)
    this.exporters = this.config.collectors.map((c) => this.newExporter(c))
    await this.openAll()
  }

  private newExporter(c: Config['collectors'][number]): CollectorExporter {
    return exporterFor(this.config, c, c.biflow ? this.biflowTemplates : this.templates, {
      interfaceLabels: this.interfaceLabels,
      sequences: this.sequences,
      spoolBudget: this.spoolBudget,
      onError: (error) =>
        this.log.limited(`send:${c.name}:${(error as NodeJS.ErrnoException).code ?? error.message}`, 'warn', 'collector-error', {
          collector: c.name,
          error: error.message,
          spooling: this.config.spoolBytes > 0,
        }),
      onResume: (replayed) => this.log.log('info', 'collector-back', {collector: c.name, replayed}),
    })
  }

  /** Opens the collectors not open yet. */
  async openAll(): Promise<void> {
    await Promise.all(this.exporters.map((e) => this.open(e)))
  }

  /** Opens a collector's socket; a failure is logged and retried at the next drain. */
  private async open(e: CollectorExporter): Promise<void> {
    if (e.isOpen) return
    try {
      await e.open()
      this.skipOwnSocket(e)
      this.log.log('info', 'collector-open', {collector: e.config.name, localPort: e.localPort})
    } catch (error) {
      this.log.limited(`open:${e.config.name}`, 'warn', 'collector-unreachable', {collector: e.config.name, error: (error as Error).message})
    }
  }

  /** Puts every collector's socket on the skip list of a meter found now. */
  skipOwnSockets(drainer: MeterSetDrainer): void {
    skipSockets(drainer, [...this.cookies.values()])
  }

  /** Probes collectors that are down, replays their spools, and says what a full spool dropped. */
  service(): void {
    for (const e of this.exporters) {
      e.service()
      const s = e.stats
      if (s.spoolDroppedMessages === (this.droppedLogged.get(e) ?? 0)) continue
      this.droppedLogged.set(e, s.spoolDroppedMessages)
      this.log.log('warn', 'spool-dropped', {
        collector: e.config.name,
        messages: s.spoolDroppedMessages,
        records: s.spoolDroppedRecords,
        packets: s.spoolDroppedPackets,
        octets: s.spoolDroppedOctets,
        spooledMessages: s.spooledMessages,
        spooledBytes: s.spooledBytes,
      })
    }
  }

  /** Sends a batch of ended flows to every collector that takes uniflows. */
  exportBatch(batch: FlowBatch): void {
    for (const e of this.exporters) if (!e.config.biflow) e.exportBatch(batch)
  }

  /** Whether a collector asks for biflows (`biflow: true`). */
  get wantBiflows(): boolean {
    return this.exporters.some((e) => e.config.biflow)
  }

  /** Sends a batch of biflows (src/flow/biflow.ts) to every collector that asks for them. */
  exportBiflows(batch: FlowBatch): void {
    for (const e of this.exporters) if (e.config.biflow) e.exportBatch(batch)
  }

  /** Sends every open collector its templates for these observation domains. */
  sendTemplates(domains: number[]): void {
    for (const e of this.exporters) if (e.isOpen) for (const domain of domains) e.sendTemplates(domain)
  }

  /** Sends templates again where their refresh interval has passed. */
  refreshTemplates(): void {
    for (const e of this.exporters) e.refreshTemplates()
  }

  /** Sends every collector the statistics record of each domain, with what the meters could not record. */
  sendStats(ignored: Map<number, {packets: number; bytes: number}>): void {
    for (const e of this.exporters) for (const [domain, counts] of ignored) e.sendStats(domain, counts)
  }

  get anyOpen(): boolean {
    return this.exporters.some((e) => e.isOpen)
  }

  /**
   * Applies a new config's collectors. A collector is its name: one the new config names again is
   * kept, with its spool and its sequence numbers, whatever else changed (a new address gets what
   * the old one did not take); the others are new, and those it no longer names are retired. The
   * collectors change at once (throws, changing nothing, if the templates cannot be compiled);
   * the promise resolves once the moves and retirements are done and every collector was opened.
   */
  reload(next: Config): Promise<void> {
    const templates = compileTemplates(next)
    const biflowTemplates = compileBiflowTemplates(next)
    const byName = new Map(this.exporters.map((e) => [e.config.name, e]))
    const changes: Promise<void>[] = []
    const nextExporters = next.collectors.map((c) => {
      const same = byName.get(c.name)
      if (!same) return null
      byName.delete(c.name)
      changes.push(
        this.reconfigure(same, c, {
          spoolBytes: next.spoolBytes,
          replayBytesPerSecond: next.replayBytesPerSecond,
          sendBytesPerSecond: next.sendBytesPerSecond,
        }),
      )
      same.setTemplates(c.biflow ? biflowTemplates : templates)
      return same
    })
    const dropped = [...byName.values()]
    this.config = next
    this.templates = templates
    this.biflowTemplates = biflowTemplates
    this.spoolBudget.setLimit(next.spoolTotalBytes)
    this.exporters = nextExporters.map((e, i) => e ?? this.newExporter(next.collectors[i]))
    return this.settleReload(changes, dropped)
  }

  private async settleReload(changes: Promise<void>[], dropped: CollectorExporter[]): Promise<void> {
    await Promise.all([...changes, ...dropped.map((e) => this.retire(e))])
    await this.openAll()
  }

  /**
   * A collector the new config names again, with its new settings. At a new address (or from a
   * new source) it gets what the old one did not take: its spool, the messages sent in the last
   * second that the old address refused, and those not yet sent, numbered as they were.
   */
  private async reconfigure(e: CollectorExporter, c: CollectorTarget, defaults: TransportDefaults): Promise<void> {
    const from = e.config
    const moved = !sameEndpoints(from, c)
    const change = e.reconfigure(c, defaults)
    if (!moved) return change
    let error: Error | undefined
    try {
      await change
    } catch (err) {
      error = err as Error
    }
    // The old socket is gone: its cookie leaves the meters' skip list, the new one's goes on it.
    this.forgetCookie(e)
    if (e.isOpen) this.skipOwnSocket(e)
    const s = e.stats
    this.log.log('info', 'collector-moved', {
      collector: c.name,
      from: endpointText(from.remote),
      to: endpointText(c.remote),
      localPort: e.localPort,
      spooledMessages: s.spooledMessages,
      spooledBytes: s.spooledBytes,
    })
    if (error) this.log.limited(`open:${c.name}`, 'warn', 'collector-unreachable', {collector: c.name, error: error.message})
  }

  /** Puts a collector's socket on every meter's skip list (the meter does not count our own datagrams). */
  private skipOwnSocket(e: CollectorExporter): void {
    const cookie = e.cookie()
    if (cookie === undefined) return
    this.cookies.set(e, cookie)
    for (const d of this.meters()) {
      try {
        // Through the maps the drainer holds, not the set's path (another set may be there now).
        skipSockets(d, [cookie])
      } catch {
        // its pins are gone: the next look at the meters lets it go
      }
    }
  }

  /**
   * A collector the new config no longer names: what it was sent in the last second gets that
   * long to be refused, then it closes. What its spool still holds is lost: counted
   * (spoolDropped*) and said (spool-lost).
   */
  private async retire(e: CollectorExporter): Promise<void> {
    await e.retire()
    this.forgetCookie(e)
    const lost = e.discardSpool()
    if (lost.messages) {
      this.log.log('warn', 'spool-lost', {
        collector: e.config.name,
        reason: 'no longer in the config (a collector that keeps its name: keeps its spool when its address changes)',
        ...lost,
      })
    }
    this.retired.push(e)
    this.retired.splice(0, Math.max(0, this.retired.length - RETIRED_KEPT))
  }

  private forgetCookie(e: CollectorExporter): void {
    const cookie = this.cookies.get(e)
    if (cookie === undefined) return
    for (const d of this.meters()) {
      try {
        unskipSockets(d, [cookie])
      } catch {
        // the meter went away
      }
    }
    this.cookies.delete(e)
  }

  /** The daemon stops: waits for what was handed to the collectors to leave, and settles their spools. */
  async settle(): Promise<void> {
    await Promise.all(this.exporters.map((e) => e.flushed()))
    await this.settleSpools()
  }

  /**
   * At stop, a collector that was down gets a last chance (probe, replay) for a few seconds, and
   * a replay under way the time to finish (it is paced); what a spool still holds then is lost:
   * counted (spoolDropped*) and said (spool-lost), with its records, packets and octets.
   */
  private async settleSpools(): Promise<void> {
    const start = Date.now()
    for (;;) {
      const waiting = this.exporters.filter((e) => e.stats.spooledMessages > 0)
      if (!waiting.length) break
      const replaying = waiting.some((e) => e.isReplaying)
      if (Date.now() - start >= (replaying ? STOP_REPLAY_MS : STOP_SPOOL_MS)) break
      this.service()
      await sleep(100)
    }
    this.service()
    for (const e of this.exporters) {
      const lost = e.discardSpool()
      if (lost.messages) this.log.log('warn', 'spool-lost', {collector: e.config.name, reason: 'the daemon stops', ...lost})
    }
  }

  /** Takes the collectors' sockets off the meters' skip lists and closes them. */
  close(): void {
    for (const e of this.exporters) {
      this.forgetCookie(e)
      e.close()
    }
  }
}
