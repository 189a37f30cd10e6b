/**
 * `flowctl daemon`: drains every attached meter (or those the config names) on an interval and
 * exports what ended to every collector. Runs until SIGTERM/SIGINT, which export everything still
 * held (forced end) and exit 0; SIGHUP reloads the config (a bad one is refused and the old one
 * keeps running). Here: the drain loop and the meters' life (found, drained, their last drain when
 * their pins go); the collectors' life is collectors.ts's, the one-daemon lock and pid file
 * pid-file.ts's.
 */
import {readOverflow} from '../bpf/overflow.js'
import {MeterSet} from '../bpf/meter-set.js'
import {readSampling, setSampling} from '../bpf/sampling.js'
import type {Config} from '../config/config.js'
import {meterFor, meterTakes} from '../config/meter-selection.js'
import type {FlowBatch} from '../flow/batch.js'
import type {CollectorExporter} from '../ipfix/export/collector-exporter.js'
import {defaultStateFile, type Paths} from '../paths.js'
import {netnsLabel} from '../sys/netns.js'
import {Collectors} from './collectors.js'
import {MeterSetDrainer, type DrainPolicy, type DrainReport} from './drain.js'
import {DomainInterfaces} from './domain-interfaces.js'
import {InterfaceNames} from './interfaces.js'
import {createLogger, type Logger} from './log.js'
import {PidFile} from './pid-file.js'
import {DaemonStateFile} from './state-file.js'

/**
 * What became of the meter set a drainer opened: still pinned, its pins gone, or another set pinned
 * in its place; or released: its namespace is gone, and the daemon that follows it lets it go.
 */
type MeterFate = 'live' | 'removed' | 'replaced' | 'released'

/** An output besides the collectors (flow logs): gets every exported batch. */
export interface FlowOutput {
  write(batch: FlowBatch): void
  close?(): Promise<void> | void
  /** Reopens the output's file (SIGHUP, after log rotation). */
  reopen?(): Promise<void> | void
}

/** What the daemon tells as it goes (the metrics count it). */
export interface DaemonObserver {
  /** Called after every drain (metrics). */
  onDrain?(report: {netns: string} & DrainReport): void
  /** Called with every batch of ended flows, before the outputs get it (metrics). */
  onExport?(batch: FlowBatch): void
  /** Called each time the state file could not be written (metrics). */
  onStateFileError?(error: Error): void
}

/** A state file that cannot be written is logged at most this often (it is retried every drain). */
const STATE_FILE_ERROR_LOG_MS = 60_000

export class Daemon {
  private config: Config
  private readonly log: Logger
  private readonly state: DaemonStateFile
  private readonly collectorSet: Collectors
  private readonly pidFile: PidFile
  private readonly drainers = new Map<string, MeterSetDrainer>()
  /** Sets being released (their last drain done, their pins on the way out): not picked up again. */
  private readonly releasing = new Set<string>()
  private readonly outputs: FlowOutput[] = []
  private timer?: NodeJS.Timeout
  private stopping?: Promise<void>
  private lastStatsAt = 0
  private lastTemplateCheck = 0
  private running = false
  private readonly observer: DaemonObserver
  private readonly interfaces: DomainInterfaces

  readonly paths: Paths

  /** `names`: the interface names the flow logs and metrics use too (one `ip link` reader for all). */
  constructor(paths: Paths, config: Config, options: {log?: Logger; outputs?: FlowOutput[]; observer?: DaemonObserver; names?: InterfaceNames} = {}) {
    this.paths = paths
    this.config = config
    this.log = options.log ?? createLogger()
    this.state = new DaemonStateFile(config.stateFile ?? defaultStateFile(paths))
    this.interfaces = new DomainInterfaces(options.names ?? new InterfaceNames(paths), () => this.drainers.values(), this.log)
    this.collectorSet = new Collectors(config, {
      log: this.log,
      sequences: this.state,
      meters: () => this.drainers.values(),
      interfaceLabels: this.interfaces.labels,
    })
    this.pidFile = new PidFile(paths)
    this.outputs.push(...(options.outputs ?? []))
    this.observer = options.observer ?? {}
  }

  get policy(): DrainPolicy {
    return {idleTimeoutNs: this.config.idleTimeoutSeconds * 1e9, activeTimeoutNs: this.config.activeTimeoutSeconds * 1e9}
  }

  get collectors(): readonly CollectorExporter[] {
    return this.collectorSet.all
  }

  /** The collectors reloads have dropped since the last call (the metrics count what they lost). */
  takeRetiredCollectors(): CollectorExporter[] {
    return this.collectorSet.takeRetired()
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
    this.pidFile.claim()
    if (this.state.problem)
      this.log.log('warn', 'state-file-invalid', {
        file: this.state.path,
        problem: this.state.problem,
        effect: 'sequence numbers restart at 0 (collectors see one gap); the file is rewritten',
      })
    this.running = true
    await this.collectorSet.start()
    await this.interfaces.meet(this.rescanMeters())
    this.log.log('info', 'started', {
      pid: process.pid,
      collectors: this.collectors.map((e) => ({
        collector: e.config.name,
        localPort: e.localPort,
        templates: {ipv4: e.templateFor(4)?.template.id, ipv6: e.templateFor(6)?.template.id},
      })),
      meters: [...this.drainers.keys()],
      drainIntervalSeconds: this.config.drainIntervalSeconds,
    })
    this.collectorSet.sendTemplates(this.domainsInUse())
    this.lastStatsAt = Date.now()
    this.schedule()
  }

  private domainOf(netns: string | null): number {
    return meterFor(this.config.meters, netns)?.observationDomainId ?? this.config.observationDomainId
  }

  /** Makes a meter count 1 packet in `n`, as its `sampling:` in the config says, if it does not already. */
  private applySampling(label: string, drainer: MeterSetDrainer, n: number): void {
    try {
      const before = readSampling(drainer.set)
      if (before === n) return
      setSampling(drainer.set, n)
      this.log.log('info', 'sampling-set', {netns: label, from: before, to: n})
    } catch (error) {
      this.log.limited(`sampling:${label}`, 'error', 'sampling-not-set', {netns: label, sampling: n, error: (error as Error).message})
    }
  }

  /**
   * The Observation Domains this daemon speaks for: its meters' (per-namespace domains included),
   * or, before any meter is found, those the config gives them. A router whose namespaces all have
   * their own domain says nothing under the top-level one: a collector sees only its real domains.
   */
  private domainsInUse(): number[] {
    if (this.drainers.size > 0) return [...new Set([...this.drainers.values()].map((d) => d.observationDomainId))]
    if (this.config.meters?.length) return [...new Set(this.config.meters.map((m) => m.observationDomainId ?? this.config.observationDomainId))]
    return [this.config.observationDomainId]
  }

  /**
   * Lets go of the meters whose pins are gone or were replaced (after their last drain), then
   * picks up meters attached since the last look: a set detached and attached again within one
   * interval is followed to the new one here. Each set on its own: one that cannot be read is
   * logged and never keeps the others from being drained. A meter with `sampling:` in the config
   * is set to that rate when found. Returns the meters found.
   */
  private rescanMeters(): MeterSetDrainer[] {
    const found: MeterSetDrainer[] = []
    this.retireDeadMeters()
    const wanted = MeterSet.list(this.paths).filter((s) => !this.config.meters || this.config.meters.some((m) => meterTakes(m, s.netns)))
    for (const set of wanted) {
      const label = netnsLabel(set.netns)
      if (this.drainers.has(label) || this.releasing.has(label) || !set.exists()) continue
      let drainer: MeterSetDrainer | undefined
      try {
        drainer = MeterSetDrainer.open(set, label, this.domainOf(set.netns), (b) => this.emit(b))
        this.collectorSet.skipOwnSockets(drainer)
        this.drainers.set(label, drainer)
        found.push(drainer)
        this.log.log('info', 'meter-found', {netns: label, pending: drainer.pending})
      } catch (error) {
        drainer?.close()
        this.log.limited(`meter:${label}`, 'error', 'meter-unreadable', {netns: label, error: (error as Error).message})
        continue
      }
      const sampling = meterFor(this.config.meters, set.netns)?.sampling
      if (sampling !== undefined) this.applySampling(label, drainer, sampling)
    }
    return found
  }

  /** Picks up the meter sets attached since the last look now, not at the next drain (the follower, before it adds filters). */
  adoptMeters(): void {
    this.rescanMeters()
  }

  /**
   * Lets a set go for good (the follower, when its namespace is gone): its last drain first,
   * exporting what its maps counted since the last drain and what the daemon held for it, then
   * `removePins`, which returns its kernel memory. Returns the flows exported.
   */
  async releaseMeter(netns: string | null, removePins: () => Promise<unknown>): Promise<number> {
    const label = netnsLabel(netns)
    this.releasing.add(label)
    try {
      const drainer = this.drainers.get(label)
      const exported = drainer ? this.retire(label, drainer, 'released') : 0
      this.saveState()
      await removePins()
      return exported
    } finally {
      this.releasing.delete(label)
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
      this.observer.onDrain?.({netns: label, ...report})
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
    this.collectorSet.exportBatch(batch)
    this.observer.onExport?.(batch)
    for (const o of this.outputs) o.write(batch)
  }

  private schedule(): void {
    if (!this.running) return
    this.timer = setTimeout(() => void this.tick(), this.config.drainIntervalSeconds * 1000)
  }

  /** One round: drain every meter, export, refresh templates and statistics when due. */
  async tick(force = false): Promise<void> {
    try {
      await this.collectorSet.openAll()
      this.collectorSet.service()
      await this.interfaces.meet(this.rescanMeters())
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
        this.observer.onDrain?.({netns: label, ...report})
      }
      const now = Date.now()
      if (now - this.lastTemplateCheck >= 1000) {
        this.collectorSet.refreshTemplates()
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
    this.collectorSet.sendStats(ignored)
  }

  /** Applies a new config; refused (and logged) if it cannot be applied, the old one keeps running. */
  async reload(next: Config): Promise<void> {
    // The collectors change at once (a drain meanwhile exports to the new ones); a move or a
    // retirement then takes a second more (what was sent gets that long to be refused).
    const collectors = this.collectorSet.reload(next)
    this.config = next
    await collectors
    this.retireDeadMeters()
    for (const d of this.drainers.values()) d.close()
    this.drainers.clear()
    this.interfaces.reset()
    await this.interfaces.meet(this.rescanMeters())
    this.log.log('info', 'reloaded', {file: next.file, collectors: next.collectors.map((c) => c.name), templates: next.templates.map((t) => t.id)})
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
      if (this.collectorSet.anyOpen) this.sendStats()
      await this.collectorSet.settle()
      this.saveState()
    } finally {
      this.collectorSet.close()
      for (const d of this.drainers.values()) d.close()
      this.drainers.clear()
      try {
        for (const o of this.outputs) await o.close?.()
      } finally {
        this.pidFile.release()
      }
    }
    this.log.log('info', 'stopped', {exported, collectors: this.collectors.map((e) => ({collector: e.config.name, ...e.stats}))})
  }

  /** Export never waits on the state file: a write that fails is counted, logged once a minute, and retried next time. */
  private saveState(): void {
    const error = this.state.save()
    if (!error) return
    this.observer.onStateFileError?.(error)
    this.log.limited(
      'state-file',
      'error',
      'state-file-unwritable',
      {file: this.state.path, error: error.message, effect: 'exporting goes on; the sequence numbers are kept in memory'},
      STATE_FILE_ERROR_LOG_MS,
    )
  }
}

/** A drain's phases in whole tenths of a millisecond, for the log. */
function roundedPhases(phases: Record<string, number>): Record<string, number> {
  return Object.fromEntries(Object.entries(phases).map(([k, v]) => [k.replace(/Ms$/, ''), Math.round(v * 10) / 10]))
}
