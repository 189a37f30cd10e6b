/**
 * The daemon's Prometheus metrics (prom-client): what feeds each metric, tied together. The
 * definitions are in definitions.ts, the HTTP endpoint in server.ts, the accuracy check against
 * the kernel's interface counters in accuracy.ts.
 *
 * Where the numbers come from:
 * - the flows the daemon exports (onExport): packets and bytes metered, flows by end reason;
 * - each drain (onDrain): drains and their duration, how full each flow map got, and what the
 *   meter saw per interface since the previous drain (for the accuracy check);
 * - at each scrape: the collectors' own statistics, the overflow map (packets not metered),
 *   the flows held in the cache.
 * Nothing is counted while the metrics are not served (metrics.listen "").
 */
import type {AddressInfo} from 'node:net'

import {Registry} from 'prom-client'

import {readOverflow} from '../../bpf/overflow.js'
import {readSampling} from '../../bpf/sampling.js'
import type {FlowBatch} from '../../flow/batch.js'
import {protocolName} from '../../flow/protocols.js'
import {directionName} from '../../flow/record.js'
import type {CollectorExporter, ExporterStats} from '../../ipfix/export/collector-exporter.js'
import type {Paths} from '../../paths.js'
import {readLinkCounters} from '../../sys/netns.js'
import {readDropStats} from '../../bpf/drops.js'
import type {Daemon, DaemonObserver} from '../daemon.js'
import type {DrainReport, MeterSetDrainer} from '../drain.js'
import {InterfaceNames} from '../interfaces.js'
import type {Logger} from '../log.js'
import {ACCURACY_SAMPLE_MS, AccuracySampler, type LinkReader} from './accuracy.js'
import {defineMetrics, REASON_LABEL, type DaemonMetricSet} from './definitions.js'
import {MetricsServer} from './server.js'

/** What the flow log outputs report (implemented by DaemonMetrics; a no-op without metrics). */
export interface FlowLogObserver {
  /** Records written to an output's file (whole lines in it). */
  written(output: string, records: number): void
  /** Records that could not be written (a full disk): not in the file. */
  lost(output: string, records: number): void
  /** A hook failed (`exit`, `timeout`, `garbage`, `spawn`) or was skipped (`queue_full`). */
  hookFailed(output: string, hook: string, reason: string): void
  /** Records waiting for the hooks of an output. */
  queued(output: string, records: number): void
  /** An output was opened: its series can show (at 0) before anything happens to it. */
  declareOutput?(output: string, hooks: string[]): void
}

export interface DaemonMetricsOptions {
  paths: Paths
  log: Logger
  names?: InterfaceNames
  /** Node.js process metrics (flowctl_process_*, flowctl_nodejs_*); default true. */
  processMetrics?: boolean
  readLinks?: LinkReader
  /** How often the interfaces' counters are read, at most (default ACCURACY_SAMPLE_MS). */
  sampleIntervalMs?: number
}

export class DaemonMetrics implements FlowLogObserver {
  readonly registry = new Registry()
  readonly names: InterfaceNames
  private readonly log: Logger
  private readonly m: DaemonMetricSet
  private readonly accuracy: AccuracySampler
  private readonly server: MetricsServer
  private daemon?: Daemon

  private readonly exporterSeen = new WeakMap<
    CollectorExporter,
    Pick<ExporterStats, 'messages' | 'records' | 'octets' | 'sendErrors' | 'templateSends' | 'unexportable' | 'spoolDroppedMessages'>
  >()

  constructor(options: DaemonMetricsOptions) {
    this.log = options.log
    this.names = options.names ?? new InterfaceNames(options.paths)
    this.m = defineMetrics(this.registry, {processMetrics: options.processMetrics ?? true})
    this.accuracy = new AccuracySampler({
      metrics: this.m.accuracy,
      names: this.names,
      log: this.log,
      readLinks: options.readLinks ?? readLinkCounters,
      sampleIntervalMs: options.sampleIntervalMs ?? ACCURACY_SAMPLE_MS,
    })
    this.server = new MetricsServer({paths: options.paths, log: this.log, render: () => this.text(), contentType: this.registry.contentType})
  }

  /** What the Daemon is to tell (its observer): counted only while the metrics are served. */
  get daemonObserver(): DaemonObserver {
    return {
      onExport: (batch) => {
        if (this.server.serving) this.countBatch(batch)
      },
      onDrain: (report) => {
        if (this.server.serving) this.countDrain(report)
      },
      onStateFileError: () => {
        if (this.server.serving) this.m.stateFileWriteErrors.inc()
      },
    }
  }

  /** Lets the scrapes read the daemon's collectors and meters. */
  watch(daemon: Daemon): void {
    this.daemon = daemon
  }

  // --- flows -----------------------------------------------------------------------------------

  countBatch(batch: FlowBatch): void {
    const byKey = new Map<number, {packets: number; bytes: number}>()
    const byReason = new Map<number, number>()
    const bySampling = new Map<number, number>()
    for (let i = 0; i < batch.length; i++) {
      const key = (batch.ifindex[i] * 2 + batch.direction[i]) * 256 + batch.proto[i]
      // What the flow stands for: counted 1 packet in N, N times its counts.
      const n = batch.samplingInterval[i]
      const packets = batch.packets[i] * n
      const bytes = batch.bytes[i] * n
      const t = byKey.get(key)
      if (t) {
        t.packets += packets
        t.bytes += bytes
      } else byKey.set(key, {packets, bytes})
      byReason.set(batch.endReason[i], (byReason.get(batch.endReason[i]) ?? 0) + 1)
      bySampling.set(n, (bySampling.get(n) ?? 0) + 1)
    }
    for (const [key, t] of byKey) {
      const proto = key % 256
      const slot = (key - proto) / 256
      const labels = {
        netns: batch.netns,
        interface: this.names.name(batch.netns, Math.floor(slot / 2)),
        direction: directionName(slot % 2),
        protocol: protocolName(proto),
      }
      this.m.meteredPackets.inc(labels, t.packets)
      this.m.meteredBytes.inc(labels, t.bytes)
    }
    for (const [reason, n] of byReason) this.m.flowsExported.inc({netns: batch.netns, reason: REASON_LABEL[reason] ?? String(reason)}, n)
    for (const [interval, n] of bySampling) this.m.flowsBySampling.inc({netns: batch.netns, sampling_interval: String(interval)}, n)
  }

  countDrain(report: {netns: string} & DrainReport): void {
    const {netns} = report
    this.m.drains.inc({netns})
    this.m.drainDuration.observe({netns}, report.ms / 1000)
    this.m.drainTaken.inc({netns}, report.taken)
    this.m.flowsPending.set({netns}, report.pending)
    const drainer = this.daemon?.meters.get(netns)
    for (const family of [4, 6] as const) {
      const flows = report.takenByFamily[family]
      this.m.mapFlows.set({netns, family: `ipv${family}`}, flows)
      this.m.liveMapSize.set({netns, family: `ipv${family}`}, report.liveEntries[family])
      const capacity = drainer && this.capacity(drainer)
      if (capacity) this.m.mapFill.set({netns, family: `ipv${family}`}, flows / capacity)
    }
    for (const rtt of report.handshakes ?? []) {
      const labels = {netns, in: rtt.inIfindex ? this.names.name(netns, rtt.inIfindex) : '', out: rtt.outIfindex ? this.names.name(netns, rtt.outIfindex) : ''}
      this.m.tcpHandshakeRtt.observe({...labels, side: 'client'}, rtt.clientUs / 1e6)
      this.m.tcpHandshakeRtt.observe({...labels, side: 'server'}, rtt.serverUs / 1e6)
    }
    for (const d of report.drops ?? []) {
      const labels = {netns, interface: this.names.name(netns, d.ifindex), reason: d.reason}
      this.m.droppedPackets.inc(labels, d.packets)
      this.m.droppedBytes.inc(labels, d.bytes)
    }
    for (const d of report.unmeteredDrops ?? []) this.m.droppedUnmetered.inc({netns, interface: this.names.name(netns, d.ifindex), reason: d.reason}, d.packets)
    this.syncCollectors()
    this.accuracy.drained(netns, drainer?.set.netns ?? (netns === 'root' ? null : netns), report.seen)
  }

  /** A meter the daemon attached or detached itself, or a set it released (follower). */
  followed(action: string, reason: string): void {
    this.m.followed.inc({action, reason})
  }

  reloaded(result: 'ok' | 'refused'): void {
    this.m.reloads.inc({result})
  }

  // --- flow logs (FlowLogObserver) -------------------------------------------------------------

  written(output: string, records: number): void {
    this.m.logRecords.inc({output}, records)
  }

  lost(output: string, records: number): void {
    this.m.logRecordsLost.inc({output}, records)
  }

  hookFailed(output: string, hook: string, reason: string): void {
    this.m.hookFailures.inc({output, hook, reason})
  }

  queued(output: string, records: number): void {
    this.m.hookQueue.set({output}, records)
  }

  /** Makes a flow log output's series show (at 0) before anything happened to it. */
  declareOutput(output: string, hooks: string[]): void {
    this.m.logRecords.inc({output}, 0)
    this.m.logRecordsLost.inc({output}, 0)
    this.m.hookQueue.set({output}, 0)
    for (const hook of hooks) for (const reason of ['exit', 'timeout', 'garbage']) this.m.hookFailures.inc({output, hook, reason}, 0)
  }

  // --- read at scrape time ---------------------------------------------------------------------

  /** The capacity of the set the drainer holds (read when it opened it: never another set's at its path). */
  private capacity(drainer: MeterSetDrainer): number {
    return drainer.capacity
  }

  /**
   * Adds what each collector sent since the last look (a new exporter, after a reload, from 0),
   * and, one last time, what the collectors a reload dropped did (their lost spool included).
   */
  syncCollectors(): void {
    const retired = this.daemon?.takeRetiredCollectors() ?? []
    for (const e of [...(this.daemon?.collectors ?? []), ...retired]) {
      const before = this.exporterSeen.get(e) ?? {messages: 0, records: 0, octets: 0, sendErrors: 0, templateSends: 0, unexportable: 0, spoolDroppedMessages: 0}
      const now = {...e.stats}
      const collector = e.config.name
      this.m.ipfixMessages.inc({collector}, now.messages - before.messages)
      this.m.ipfixRecords.inc({collector}, now.records - before.records)
      this.m.ipfixBytes.inc({collector}, now.octets - before.octets)
      this.m.ipfixErrors.inc({collector}, now.sendErrors - before.sendErrors)
      this.m.ipfixTemplates.inc({collector}, now.templateSends - before.templateSends)
      this.m.ipfixUnexportable.inc({collector}, now.unexportable - before.unexportable)
      this.m.ipfixSpoolMessages.set({collector}, now.spooledMessages)
      this.m.ipfixSpoolBytes.set({collector}, now.spooledBytes)
      this.m.ipfixSpoolDropped.inc({collector}, now.spoolDroppedMessages - before.spoolDroppedMessages)
      this.exporterSeen.set(e, now)
    }
  }

  private syncMeters(): void {
    const {notMeteredPackets, notMeteredBytes} = this.m
    for (const [netns, drainer] of this.daemon?.meters ?? []) {
      this.m.flowsPending.set({netns}, drainer.pending)
      const capacity = this.capacity(drainer)
      if (capacity) for (const family of ['ipv4', 'ipv6']) this.m.mapCapacity.set({netns, family}, capacity)
      try {
        const memory = drainer.set.memory()
        this.m.kernelMemory.set({netns}, memory.now)
        this.m.kernelMemoryMax.set({netns}, memory.atMost)
        this.m.samplingInterval.set({netns}, readSampling(drainer.set))
      } catch {
        // detached meanwhile: the overflow read below says so
      }
      let overflow
      try {
        overflow = readOverflow(drainer)
      } catch (error) {
        this.log.limited(`metrics-overflow:${netns}`, 'warn', 'metrics-read-failed', {netns, map: 'overflow', error: (error as Error).message})
      }
      if (overflow === null) continue // detached meanwhile
      for (const o of overflow ?? []) {
        const labels = {netns, interface: this.names.name(netns, o.ifindex), direction: o.direction}
        const key = `${netns}/${o.ifindex}/${o.direction}`
        notMeteredPackets.set(labels, o.packets, key)
        notMeteredBytes.set(labels, o.bytes, key)
      }
      for (const a of this.names.attached(netns)) {
        const labels = {netns, interface: a.interface, direction: a.direction}
        notMeteredPackets.counter.inc(labels, 0)
        notMeteredBytes.counter.inc(labels, 0)
      }
    }
    this.syncDropHook()
  }

  /** The drop hook's own counts (host-wide): drops lost to a full drops hash. */
  private syncDropHook(): void {
    if (!this.daemon) return
    try {
      const stats = readDropStats(this.daemon.paths)
      if (stats) this.m.dropsLost.set({}, stats.lost)
    } catch (error) {
      this.log.limited('metrics-drop-stats', 'warn', 'metrics-read-failed', {map: 'drop_stats', error: (error as Error).message})
    }
  }

  /** The exposition text, brought up to date first. */
  async text(): Promise<string> {
    this.syncCollectors()
    this.syncMeters()
    return this.registry.metrics()
  }

  /** Resolves once the kernel samples in progress are done (tests, shutdown). */
  settled(): Promise<void> {
    return this.accuracy.settled()
  }

  // --- HTTP ------------------------------------------------------------------------------------

  /** The address served, once listening (e.g. for a `:0` port). */
  get address(): AddressInfo | undefined {
    return this.server.address
  }

  /** Serves /metrics on HOST:PORT (null: stops serving); see MetricsServer.listen. */
  listen(listen: string | null, configFile: string | null = null): Promise<void> {
    return this.server.listen(listen, configFile)
  }

  async close(): Promise<void> {
    await this.settled()
    await this.server.close()
  }
}
