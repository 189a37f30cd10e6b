/**
 * `flowctl daemon`: drains every attached meter (or those the config names) on an interval and
 * exports what ended to every collector. Runs until SIGTERM/SIGINT, which export everything still
 * held (forced end) and exit 0; SIGHUP reloads the config (a bad one is refused and the old one
 * keeps running).
 */
import {existsSync, readFileSync, rmSync, writeFileSync} from 'node:fs'
import {dirname} from 'node:path'

import {readOverflow} from '../bpf/overflow.js'
import {MeterSet} from '../bpf/meter-set.js'
import {skipSockets, unskipSockets} from '../bpf/sockets.js'
import {claimMeterRoot, daemonPidFile} from '../bpf/state.js'
import {makeDirectories} from '../sys/directories.js'
import type {HeldLock} from '../sys/flock.js'
import type {Config} from '../config/config.js'
import {defaultStateFile, type Paths} from '../paths.js'
import type {FlowBatch} from '../flow/batch.js'
import {compileTemplates, exporterFor} from '../config/export-settings.js'
import {SpoolBudget, type CollectorExporter, type ExportTemplate, type TransportDefaults} from '../ipfix/export/collector-exporter.js'
import {sameEndpoints, type CollectorTarget} from '../ipfix/export/target.js'
import {netnsLabel} from '../sys/netns.js'
import {MeterSetDrainer, type DrainPolicy, type DrainReport} from './drain.js'
import {createLogger, type Logger} from './log.js'
import {DaemonStateFile} from './state-file.js'

/** What became of the meter set a drainer opened: still pinned, its pins gone, or another set pinned in its place. */
type MeterFate = 'live' | 'removed' | 'replaced'

/** An output besides the collectors (flow logs): gets every exported batch. */
export interface FlowOutput {
  write(batch: FlowBatch): void
  close?(): Promise<void> | void
  /** Reopens the output's file (SIGHUP, after log rotation). */
  reopen?(): Promise<void> | void
}

export interface DaemonHooks {
  /** Called after every drain (metrics). */
  onDrain?(report: {netns: string} & DrainReport): void
  /** Called with every batch of ended flows, before the outputs get it (metrics). */
  onExport?(batch: FlowBatch): void
  /** Called each time the state file could not be written (metrics). */
  onStateFileError?(error: Error): void
}

/** A state file that cannot be written is logged at most this often (it is retried every drain). */
export const STATE_FILE_ERROR_LOG_MS = 60_000

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

export class Daemon {
  private config: Config
  private readonly log: Logger
  private readonly state: DaemonStateFile
  private exporters: CollectorExporter[] = []
  /** Collectors a reload dropped, until the metrics take them (what they lost counts there). */
  private retired: CollectorExporter[] = []
  /** One bound on what every collector's spool and window hold together (spoolTotalBytes). */
  private readonly spoolBudget: SpoolBudget
  private templates: ExportTemplate[] = []
  private readonly drainers = new Map<string, MeterSetDrainer>()
  private readonly outputs: FlowOutput[] = []
  private timer?: NodeJS.Timeout
  private stopping?: Promise<void>
  private lastStatsAt = 0
  private lastTemplateCheck = 0
  private running = false
  private readonly hooks: DaemonHooks

  readonly paths: Paths

  constructor(paths: Paths, config: Config, options: {log?: Logger; outputs?: FlowOutput[]; hooks?: DaemonHooks} = {}) {
    this.paths = paths
    this.config = config
    this.log = options.log ?? createLogger()
    this.state = new DaemonStateFile(config.stateFile ?? defaultStateFile(paths))
    this.spoolBudget = new SpoolBudget(config.spoolTotalBytes)
    this.outputs.push(...(options.outputs ?? []))
    this.hooks = options.hooks ?? {}
  }

  get policy(): DrainPolicy {
    return {idleTimeoutNs: this.config.idleTimeoutSeconds * 1e9, activeTimeoutNs: this.config.activeTimeoutSeconds * 1e9}
  }

  get collectors(): readonly CollectorExporter[] {
    return this.exporters
  }

  /** The collectors reloads have dropped since the last call (the metrics count what they lost). */
  takeRetiredCollectors(): CollectorExporter[] {
    return this.retired.splice(0)
  }

  /** The meters drained now, by namespace label (metrics read their maps' fill and overflow). */
  get meters(): ReadonlyMap<string, MeterSetDrainer> {
    return this.drainers
  }

  /** Replaces the flow outputs (config reload); the caller closes the ones it dropped. */
  setOutputs(outputs: FlowOutput[]): void {
    this.outputs.splice(0, this.outputs.length, ...outputs)
  }

  async start(): Promise<void> {
    this.claimPidFile()
    if (this.state.problem)
      this.log.log('warn', 'state-file-invalid', {
        file: this.state.path,
        problem: this.state.problem,
        effect: 'sequence numbers restart at 0 (collectors see one gap); the file is rewritten',
      })
    this.running = true
    this.templates = compileTemplates(this.config)
    this.exporters = this.config.collectors.map((c) => this.newExporter(c))
    await Promise.all(this.exporters.map((e) => this.openExporter(e)))
    this.rescanMeters()
    this.log.log('info', 'started', {
      pid: process.pid,
      collectors: this.exporters.map((e) => ({
        collector: e.config.name,
        localPort: e.localPort,
        templates: {ipv4: e.templateFor(4)?.template.id, ipv6: e.templateFor(6)?.template.id},
      })),
      meters: [...this.drainers.keys()],
      drainIntervalSeconds: this.config.drainIntervalSeconds,
    })
    for (const e of this.exporters) if (e.isOpen) for (const domain of this.domainsInUse()) e.sendTemplates(domain)
    this.lastStatsAt = Date.now()
    this.schedule()
  }

  private newExporter(c: Config['collectors'][number]): CollectorExporter {
    return exporterFor(this.config, c, this.templates, {
      sequences: this.state,
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

  private readonly droppedLogged = new WeakMap<CollectorExporter, number>()

  /** Probes collectors that are down, replays their spools, and says what a full spool dropped. */
  private serviceExporters(): void {
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

  /** Opens a collector's socket; a failure is logged and retried at the next drain. */
  private async openExporter(e: CollectorExporter): Promise<void> {
    if (e.isOpen) return
    try {
      await e.open()
      const cookie = e.cookie()
      if (cookie !== undefined) {
        this.cookies.set(e, cookie)
        for (const d of this.drainers.values()) {
          try {
            skipSockets(d, [cookie])
          } catch {
            // its pins are gone: the next look at the meters lets it go
          }
        }
      }
      this.log.log('info', 'collector-open', {collector: e.config.name, localPort: e.localPort})
    } catch (error) {
      this.log.limited(`open:${e.config.name}`, 'warn', 'collector-unreachable', {collector: e.config.name, error: (error as Error).message})
    }
  }

  private readonly cookies = new Map<CollectorExporter, bigint>()
  /** Held while running: no second daemon drains the same pinned maps. */
  private meterRootLock?: HeldLock

  private domainOf(netns: string | null): number {
    return this.config.meters?.find((m) => m.netns === netns)?.observationDomainId ?? this.config.observationDomainId
  }

  /**
   * The Observation Domains this daemon speaks for: its meters' (per-namespace domains included),
   * or, before any meter is found, those the config gives them. A router whose namespaces all have
   * their own domain says nothing under the top-level one: a collector sees only its real domains.
   */
  private domainsInUse(): number[] {
    if (this.drainers.size > 0) return [...new Set([...this.drainers.values()].map((d) => d.observationDomainId))]
    if (this.config.meters?.length) return [...new Set(this.config.meters.map((m) => this.domainOf(m.netns)))]
    return [this.config.observationDomainId]
  }

  /**
   * Lets go of the meters whose pins are gone or were replaced (after their last drain), then
   * picks up meters attached since the last look: a set detached and attached again within one
   * interval is followed to the new one here. Each set on its own: one that cannot be read is
   * logged and never keeps the others from being drained.
   */
  private rescanMeters(): void {
    this.retireDeadMeters()
    const wanted = MeterSet.list(this.paths).filter((s) => !this.config.meters || this.config.meters.some((m) => m.netns === s.netns))
    for (const set of wanted) {
      const label = netnsLabel(set.netns)
      if (this.drainers.has(label) || !set.exists()) continue
      let drainer: MeterSetDrainer | undefined
      try {
        drainer = MeterSetDrainer.open(set, label, this.domainOf(set.netns), (b) => this.emit(b))
        skipSockets(drainer, [...this.cookies.values()])
        this.drainers.set(label, drainer)
        this.log.log('info', 'meter-found', {netns: label, pending: drainer.pending})
      } catch (error) {
        drainer?.close()
        this.log.limited(`meter:${label}`, 'error', 'meter-unreadable', {netns: label, error: (error as Error).message})
      }
    }
  }

  /** Whether the set `drainer` opened is still the one pinned at its path (by identity, not path). */
  private fateOf(drainer: MeterSetDrainer): MeterFate {
    const pinned = drainer.set.identity()
    if (pinned === drainer.identity) return 'live'
    return pinned === undefined ? 'removed' : 'replaced'
  }

  /** fateOf(), taking a set that cannot be looked at now for live (it is looked at again next time). */
  private fateOrLive(label: string, drainer: MeterSetDrainer): MeterFate {
    try {
      return this.fateOf(drainer)
    } catch (error) {
      this.log.limited(`meter:${label}`, 'error', 'meter-unreadable', {netns: label, error: (error as Error).message})
      return 'live'
    }
  }

  private retireDeadMeters(): void {
    for (const [label, drainer] of this.drainers) {
      const fate = this.fateOrLive(label, drainer)
      if (fate !== 'live') this.retire(label, drainer, fate)
    }
  }

  /**
   * The last drain of a meter set whose pins are gone or replaced: its maps live on while the
   * daemon holds them, so what they counted since the last drain and what the daemon held for
   * them is exported now (forced end); then they are let go. Returns the flows exported.
   */
  private retire(label: string, drainer: MeterSetDrainer, pins: Exclude<MeterFate, 'live'>): number {
    this.drainers.delete(label)
    try {
      const report = drainer.finalDrain(this.policy, (b) => this.emit(b))
      const exported = Object.values(report.exported).reduce((a, b) => a + b, 0)
      const unread = report.unread.length ? {unread: report.unread} : {}
      this.log.log(report.unread.length ? 'warn' : 'info', 'meter-gone', {
        netns: label,
        pins,
        taken: report.taken,
        exported,
        byReason: report.exported,
        ...unread,
      })
      this.hooks.onDrain?.({netns: label, ...report})
      return exported
    } catch (error) {
      this.log.log('error', 'drain-failed', {netns: label, final: true, error: (error as Error).message, unexported: drainer.pending})
      return 0
    } finally {
      drainer.close()
    }
  }

  /**
   * A drain that failed. A set whose pins went away meanwhile fails at its first pin, having
   * taken nothing out: its last drain follows now. Any other fault is the set's own: logged
   * (at most every 10 s per set), and the set is drained again next time.
   */
  private drainFailed(label: string, drainer: MeterSetDrainer, error: unknown): void {
    const fate = this.fateOrLive(label, drainer)
    if (fate !== 'live') this.retire(label, drainer, fate)
    else this.log.limited(`drain:${label}`, 'error', 'drain-failed', {netns: label, error: (error as Error).message})
  }

  /** Sends a batch of ended flows to every collector and output. */
  private emit(batch: FlowBatch): void {
    for (const e of this.exporters) e.exportBatch(batch)
    this.hooks.onExport?.(batch)
    for (const o of this.outputs) o.write(batch)
  }

  private schedule(): void {
    if (!this.running) return
    this.timer = setTimeout(() => void this.tick(), this.config.drainIntervalSeconds * 1000)
  }

  /** One round: drain every meter, export, refresh templates and statistics when due. */
  async tick(force = false): Promise<void> {
    try {
      await Promise.all(this.exporters.map((e) => this.openExporter(e)))
      this.serviceExporters()
      this.rescanMeters()
      const drained: {label: string; report: ReturnType<MeterSetDrainer['drain']>}[] = []
      for (const [label, drainer] of this.drainers) {
        try {
          drained.push({label, report: drainer.drain(this.policy, (b) => this.emit(b), force)})
        } catch (error) {
          this.drainFailed(label, drainer, error)
        }
      }
      // The sequence numbers just used are on disk before anything says they were: a SIGKILL
      // after the log line still restarts the numbering where the collector saw it stop.
      this.saveState()
      for (const {label, report} of drained) {
        const exported = Object.values(report.exported).reduce((a, b) => a + b, 0)
        if (report.taken || exported) {
          this.log.log('info', 'drain', {
            netns: label,
            taken: report.taken,
            exported,
            byReason: report.exported,
            pending: report.pending,
            ms: Math.round(report.ms * 10) / 10,
            phasesMs: roundedPhases(report.phases),
          })
        }
        this.hooks.onDrain?.({netns: label, ...report})
      }
      const now = Date.now()
      if (now - this.lastTemplateCheck >= 1000) {
        for (const e of this.exporters) e.refreshTemplates()
        this.lastTemplateCheck = now
      }
      if (now - this.lastStatsAt >= this.config.statsIntervalSeconds * 1000) {
        this.sendStats()
        this.lastStatsAt = now
      }
      this.saveState()
    } catch (error) {
      this.log.log('error', 'drain-failed', {error: (error as Error).message})
    } finally {
      this.schedule()
    }
  }

  /** Packets and bytes the meters could not record (full maps), per observation domain. */
  ignoredByDomain(): Map<number, {packets: number; bytes: number}> {
    const out = new Map<number, {packets: number; bytes: number}>()
    for (const d of this.drainers.values()) {
      const counts = readOverflow(d)
      if (!counts) continue // its pins are gone: the next look at the meters lets it go
      const total = out.get(d.observationDomainId) ?? {packets: 0, bytes: 0}
      for (const o of counts) {
        total.packets += o.packets
        total.bytes += o.bytes
      }
      out.set(d.observationDomainId, total)
    }
    return out
  }

  private sendStats(): void {
    const ignored = this.ignoredByDomain()
    if (!ignored.size) for (const domain of this.domainsInUse()) ignored.set(domain, {packets: 0, bytes: 0})
    for (const e of this.exporters) for (const [domain, counts] of ignored) e.sendStats(domain, counts)
  }

  /** Applies a new config; refused (and logged) if it cannot be applied, the old one keeps running. */
  async reload(next: Config): Promise<void> {
    const templates = compileTemplates(next)
    // A collector is its name: one the new config names again is kept, with its spool and its
    // sequence numbers, whatever else changed (a new address gets what the old one did not take).
    const byName = new Map(this.exporters.map((e) => [e.config.name, e]))
    const changes: Promise<void>[] = []
    const nextExporters = next.collectors.map((c) => {
      const same = byName.get(c.name)
      if (!same) return null
      byName.delete(c.name)
      changes.push(
        this.reconfigureExporter(same, c, {
          spoolBytes: next.spoolBytes,
          replayBytesPerSecond: next.replayBytesPerSecond,
          sendBytesPerSecond: next.sendBytesPerSecond,
        }),
      )
      same.setTemplates(templates)
      return same
    })
    const dropped = [...byName.values()]
    this.config = next
    this.templates = templates
    this.spoolBudget.setLimit(next.spoolTotalBytes)
    this.exporters = nextExporters.map((e, i) => e ?? this.newExporter(next.collectors[i]))
    await Promise.all([...changes, ...dropped.map((e) => this.retireExporter(e))])
    await Promise.all(this.exporters.map((e) => this.openExporter(e)))
    this.retireDeadMeters()
    for (const d of this.drainers.values()) d.close()
    this.drainers.clear()
    this.rescanMeters()
    this.log.log('info', 'reloaded', {file: next.file, collectors: next.collectors.map((c) => c.name), templates: next.templates.map((t) => t.id)})
  }

  /**
   * A collector the new config names again, with its new settings. At a new address (or from a
   * new source) it gets what the old one did not take: its spool, the messages sent in the last
   * second that the old address refused, and those not yet sent, numbered as they were.
   */
  private async reconfigureExporter(e: CollectorExporter, c: CollectorTarget, defaults: TransportDefaults): Promise<void> {
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
    for (const d of this.drainers.values()) skipSockets(d.set, [cookie])
  }

  /**
   * A collector the new config no longer names: what it was sent in the last second gets that
   * long to be refused, then it closes. What its spool still holds is lost: counted
   * (spoolDropped*) and said (spool-lost).
   */
  private async retireExporter(e: CollectorExporter): Promise<void> {
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
    for (const d of this.drainers.values()) {
      try {
        unskipSockets(d, [cookie])
      } catch {
        // the meter went away
      }
    }
    this.cookies.delete(e)
  }

  /** Exports everything still held (forced end), waits for it to leave, and stops. */
  stop(): Promise<void> {
    this.stopping ??= this.doStop()
    return this.stopping
  }

  private async doStop(): Promise<void> {
    this.running = false
    if (this.timer) clearTimeout(this.timer)
    let exported = 0
    // Whatever fails on the way, the sockets close and the pid file goes: a daemon that was
    // told to stop always does.
    try {
      for (const [label, drainer] of this.drainers) {
        try {
          const report = drainer.drain(this.policy, (b) => this.emit(b), true)
          exported += Object.values(report.exported).reduce((a, b) => a + b, 0)
          this.log.log('info', 'final-drain', {netns: label, taken: report.taken, byReason: report.exported})
        } catch (error) {
          // Detached (or replaced) since the last drain: its last drain goes through the maps held.
          const fate = this.fateOrLive(label, drainer)
          if (fate !== 'live') exported += this.retire(label, drainer, fate)
          else this.log.log('error', 'final-drain-failed', {netns: label, error: (error as Error).message})
        }
      }
      if (this.exporters.some((e) => e.isOpen)) this.sendStats()
      await Promise.all(this.exporters.map((e) => e.flushed()))
      await this.settleSpools()
      this.saveState()
    } finally {
      for (const e of this.exporters) {
        this.forgetCookie(e)
        e.close()
      }
      for (const d of this.drainers.values()) d.close()
      this.drainers.clear()
      try {
        for (const o of this.outputs) await o.close?.()
      } finally {
        this.releasePidFile()
      }
    }
    this.log.log('info', 'stopped', {exported, collectors: this.exporters.map((e) => ({collector: e.config.name, ...e.stats}))})
  }

  /** Export never waits on the state file: a write that fails is counted, logged once a minute, and retried next time. */
  private saveState(): void {
    const error = this.state.save()
    if (!error) return
    this.hooks.onStateFileError?.(error)
    this.log.limited(
      'state-file',
      'error',
      'state-file-unwritable',
      {file: this.state.path, error: error.message, effect: 'exporting goes on; the sequence numbers are kept in memory'},
      STATE_FILE_ERROR_LOG_MS,
    )
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
      this.serviceExporters()
      await new Promise((r) => setTimeout(r, 100))
    }
    this.serviceExporters()
    for (const e of this.exporters) {
      const lost = e.discardSpool()
      if (lost.messages) this.log.log('warn', 'spool-lost', {collector: e.config.name, reason: 'the daemon stops', ...lost})
    }
  }

  /**
   * The one-daemon lock says whether another daemon runs (the kernel drops it with its holder);
   * daemon.pid only tells people which process this is: a stale one, its pid reused by any
   * process after a SIGKILL, never stops a daemon from starting.
   */
  private claimPidFile(): void {
    this.meterRootLock = claimMeterRoot(this.paths)
    try {
      const file = daemonPidFile(this.paths)
      makeDirectories(dirname(file))
      writeFileSync(file, `${process.pid}\n`)
    } catch (error) {
      this.meterRootLock.release()
      throw error
    }
  }

  private releasePidFile(): void {
    this.meterRootLock?.release()
    const file = daemonPidFile(this.paths)
    if (existsSync(file) && readFileSync(file, 'utf8').trim() === String(process.pid)) rmSync(file, {force: true})
  }
}

/** A drain's phases in whole tenths of a millisecond, for the log. */
function roundedPhases(phases: Record<string, number>): Record<string, number> {
  return Object.fromEntries(Object.entries(phases).map(([k, v]) => [k.replace(/Ms$/, ''), Math.round(v * 10) / 10]))
}
