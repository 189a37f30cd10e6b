/**
 * `flowctl daemon`: drains every attached meter (or those the config names) on an interval and
 * exports what ended to every collector. Runs until SIGTERM/SIGINT, which export everything still
 * held (forced end) and exit 0; SIGHUP reloads the config (a bad one is refused and the old one
 * keeps running). Here: the drain loop and the meters' life (found, drained, their last drain when
 * their pins go); the collectors' life is collectors.ts's, the one-daemon lock and pid file
 * pid-file.ts's.
 */
import {MeterSet} from '../bpf/meter-set.js'
import type {Config} from '../config/config.js'
import {meterFor, meterTakes} from '../config/meter-selection.js'
import type {FlowBatch} from '../flow/batch.js'
import type {CollectorExporter} from '../ipfix/export/collector-exporter.js'
import {defaultStateFile, type Paths} from '../paths.js'
import {netnsLabel} from '../sys/netns.js'
import {Collectors} from './collectors.js'
import {MeterSetDrainer, type DrainPolicy, type DrainReport} from './drain.js'
import {drainInTurn, drainLogFields, exportedCount, FILL_WATCH_MS, fillingMeters, QuietMeters, type DrainCause} from './drain-rounds.js'
import {DomainInterfaces} from './domain-interfaces.js'
import {FlowFanout} from './flow-fanout.js'
import {InterfaceNames} from './interfaces.js'
import {createLogger, type Logger} from './log.js'
import {MeterDirsWatch} from './meter-dirs.js'
import {applyMeterConfig, domainsInUse, ignoredByDomain} from './meter-upkeep.js'
import {PidFile} from './pid-file.js'
import {SerialWork} from './serial-work.js'
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
  private readonly fanout: FlowFanout
  private timer?: NodeJS.Timeout
  private watchTimer?: NodeJS.Timeout
  private stopping?: Promise<void>
  /** The daemon's work on its meters, one task at a time (rounds of drains, early drains, reload, stop). */
  private readonly work = new SerialWork()
  private readonly quietMeters = new QuietMeters()
  private readonly meterDirs: MeterDirsWatch
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
    this.meterDirs = new MeterDirsWatch(paths.pinRoot)
    this.outputs.push(...(options.outputs ?? []))
    this.observer = options.observer ?? {}
    this.fanout = new FlowFanout(this.collectorSet, this.outputs, (b) => this.observer.onExport?.(b))
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
    this.collectorSet.sendTemplates(domainsInUse(this.config, this.drainers.values()))
    this.lastStatsAt = Date.now()
    this.schedule()
    this.watchTimer = setInterval(() => this.watchFill(), FILL_WATCH_MS)
    this.watchTimer.unref()
  }

  private domainOf(netns: string | null): number {
    return meterFor(this.config.meters, netns)?.observationDomainId ?? this.config.observationDomainId
  }

  /**
   * Lets go of the meters whose pins are gone or were replaced (after their last drain), then
   * picks up meters attached since the last look: a set detached and attached again within one
   * interval is followed to the new one here. Each set on its own: one that cannot be read is
   * logged and never keeps the others from being drained. A meter with `sampling:` in the config
   * is set to that rate when found. Returns the meters found.
   */
  private rescanMeters(): MeterSetDrainer[] {
    if (!this.meterDirs.mayHaveChanged()) return []
    this.retireDeadMeters()
    return this.pickUpMeters()
  }

  /** The meters attached since the last look, opened (rescanMeters without letting dead ones go). */
  private pickUpMeters(): MeterSetDrainer[] {
    const found: MeterSetDrainer[] = []
    const wanted = MeterSet.list(this.paths).filter((s) => !this.config.meters || this.config.meters.some((m) => meterTakes(m, s.netns)))
    for (const set of wanted) {
      const label = netnsLabel(set.netns)
      if (this.drainers.has(label) || this.releasing.has(label) || !set.exists()) continue
      let drainer: MeterSetDrainer | undefined
      try {
        drainer = MeterSetDrainer.open(set, label, this.domainOf(set.netns), (b) => this.fanout.emit(b), {intervalMs: this.config.drainIntervalSeconds * 1000})
        this.collectorSet.skipOwnSockets(drainer)
        this.drainers.set(label, drainer)
        found.push(drainer)
        this.log.log('info', 'meter-found', {netns: label, pending: drainer.pending})
      } catch (error) {
        drainer?.close()
        this.log.limited(`meter:${label}`, 'error', 'meter-unreadable', {netns: label, error: (error as Error).message})
        continue
      }
      applyMeterConfig(this.log, this.paths, label, drainer, meterFor(this.config.meters, set.netns))
    }
    return found
  }

  /** Picks up the meter sets attached since the last look now, not at the next drain (the follower, before it adds filters). */
  adoptMeters(): void {
    // Not rescanMeters(): letting a dead set go drains it, which waits for a drain under way.
    this.pickUpMeters()
  }

  /**
   * Lets a set go for good (the follower, when its namespace is gone): its last drain first,
   * exporting what its maps counted since the last drain and what the daemon held for it, then
   * `removePins`, which returns its kernel memory. Returns the flows exported.
   */
  releaseMeter(netns: string | null, removePins: () => Promise<unknown>): Promise<number> {
    // After the drain under way, if any: its last drain must not run beside another of the set.
    return this.work.run(() => this.release(netns, removePins))
  }

  private async release(netns: string | null, removePins: () => Promise<unknown>): Promise<number> {
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
      const report = drainer.finalDrain(this.policy, (b) => this.fanout.emit(b))
      this.fanout.flushBiflows(true)
      const exported = exportedCount(report)
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

  private schedule(): void {
    if (!this.running) return
    this.timer = setTimeout(() => void this.tick(), this.config.drainIntervalSeconds * 1000)
  }

  /** One round: drain every meter, export, refresh templates and statistics when due. */
  tick(force = false): Promise<void> {
    return this.work.run(() => this.round(force))
  }

  private async round(force: boolean): Promise<void> {
    try {
      await this.collectorSet.openAll()
      this.collectorSet.service()
      await this.interfaces.meet(this.rescanMeters())
      const drained = await this.drainAll([...this.drainers], force)
      // The sequence numbers just used are on disk before anything says they were: a SIGKILL
      // after the log line still restarts the numbering where the collector saw it stop.
      this.saveState()
      for (const {label, report} of drained) this.reportDrain(label, report, 'interval')
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

  /** Drains `meters` (drain-rounds.ts); one that fails goes to `failed`, by default drainFailed (logged, or the set's last drain if its pins went). */
  private drainAll(
    meters: [string, MeterSetDrainer][],
    force: boolean,
    failed: (label: string, drainer: MeterSetDrainer, error: unknown) => void = (l, d, e) => this.drainFailed(l, d, e),
  ): Promise<{label: string; report: DrainReport}[]> {
    return drainInTurn(meters, this.policy, (b) => this.fanout.emit(b), force, failed).finally(() => this.fanout.flushBiflows(force))
  }

  /**
   * Logs a drain that took or exported flows, and tells the observer (metrics) of every drain
   * but the idle ones after the first: a meter set with no traffic costs no work per interval.
   */
  private reportDrain(label: string, report: DrainReport, cause: DrainCause): void {
    const exported = exportedCount(report)
    if (report.taken || exported) this.log.log('info', 'drain', drainLogFields(label, report, cause))
    if (report.dropsError) this.log.limited(`drops:${label}`, 'error', 'drops-failed', {netns: label, error: report.dropsError})
    if (this.quietMeters.worthTelling(label, report)) this.observer.onDrain?.({netns: label, ...report})
  }

  /**
   * Between drains: drains at once the meter sets whose live map is past half its size (one read
   * of each set's counters), so that a burst of new flows finds a larger map before the one in
   * place overflows. Skipped while other work on the meters runs.
   */
  private watchFill(): void {
    if (this.work.busy || !this.running) return
    const filling = fillingMeters(this.drainers)
    if (!filling.length) return
    void this.work.run(async () => {
      if (!this.running) return
      const drained = await this.drainAll(filling, false)
      this.saveState()
      for (const {label, report} of drained) this.reportDrain(label, report, 'filling')
    })
  }

  private sendStats(): void {
    const ignored = ignoredByDomain(this.drainers.values())
    if (!ignored.size) for (const domain of domainsInUse(this.config, this.drainers.values())) ignored.set(domain, {packets: 0, bytes: 0})
    this.collectorSet.sendStats(ignored)
  }

  /** Applies a new config; refused (and logged) if it cannot be applied, the old one keeps running. */
  reload(next: Config): Promise<void> {
    return this.work.run(() => this.applyConfig(next))
  }

  private async applyConfig(next: Config): Promise<void> {
    // The collectors change at once (a drain meanwhile exports to the new ones); a move or a
    // retirement then takes a second more (what was sent gets that long to be refused).
    const collectors = this.collectorSet.reload(next)
    this.config = next
    await collectors
    this.retireDeadMeters()
    for (const d of this.drainers.values()) d.close()
    this.drainers.clear()
    this.quietMeters.clear()
    this.meterDirs.reset()
    this.interfaces.reset()
    await this.interfaces.meet(this.rescanMeters())
    this.log.log('info', 'reloaded', {file: next.file, collectors: next.collectors.map((c) => c.name), templates: next.templates.map((t) => t.id)})
  }

  /** Exports everything still held (forced end), waits for it to leave, and stops. */
  stop(): Promise<void> {
    if (!this.stopping) {
      // No round or early drain starts from now on; one under way finishes first.
      this.running = false
      if (this.timer) clearTimeout(this.timer)
      if (this.watchTimer) clearInterval(this.watchTimer)
      this.stopping = this.work.run(() => this.doStop())
    }
    return this.stopping
  }

  private async doStop(): Promise<void> {
    if (this.timer) clearTimeout(this.timer)
    let exported = 0
    // Whatever fails on the way, the sockets close and the pid file goes: a daemon that was
    // told to stop always does.
    try {
      const drained = await this.drainAll([...this.drainers], true, (label, drainer, error) => {
        // Detached (or replaced) since the last drain: its last drain goes through the maps held.
        const fate = this.fateOrLive(label, drainer)
        if (fate !== 'live') exported += this.retire(label, drainer, fate)
        else this.log.log('error', 'final-drain-failed', {netns: label, error: (error as Error).message})
      })
      for (const {label, report} of drained) {
        exported += exportedCount(report)
        this.log.log('info', 'final-drain', {netns: label, taken: report.taken, byReason: report.exported})
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
