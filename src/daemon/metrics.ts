/**
 * The daemon's Prometheus metrics (prom-client), served over HTTP on `metrics.listen`
 * (default 127.0.0.1:9999; empty = off). Every name starts with `flowctl_`; counters end in
 * `_total`, byte counts in `_bytes`, durations in `_seconds`. Counts are JavaScript numbers:
 * exact up to 2^53 (9 PB, or 9·10^15 packets), which is where a 64-bit counter read from the
 * kernel would stop being exact in any Prometheus client too.
 *
 * Where the numbers come from:
 * - the flows the daemon exports (onExport): packets and bytes metered, flows by end reason;
 * - each drain (onDrain): drains and their duration, how full each flow map got, and what the
 *   meter saw per interface since the previous drain;
 * - at each scrape: the collectors' own statistics, the overflow map (packets not metered),
 *   the flows held in the cache;
 * - the kernel's interface counters (`ip -s -j link`, read in the namespace right after a drain,
 *   at most every ACCURACY_SAMPLE_MS), for the accuracy metrics.
 * Nothing is counted while the metrics are not served (metrics.listen "").
 *
 * Accuracy. The kernel counts L2 bytes (with the 14-byte Ethernet header), the meter IP bytes, so
 * the comparable figure is `meter bytes + 14 × meter packets`. Both sides are sampled at a
 * drain (what the meter saw over several drains waits for the next kernel reading), so they cover
 * the same intervals; the first drain of a meter (which holds what was
 * counted before this daemon started) is left out. The ratio gauge compares the two over the last
 * 5 minutes; 1 means the meter saw exactly what the interface carried. Below 1: traffic that is
 * not IPv4/IPv6 (ARP, LLDP, STP), the daemon's own IPFIX datagrams (the meter skips them), packets
 * not metered (map full, see flowctl_not_metered_*), VLAN tags in the frame (4 bytes each, which
 * the kernel counts and IP bytes do not). Above 1: packets a qdisc dropped after tc egress saw
 * them. The counters behind it let any window be computed in PromQL:
 *   (rate(flowctl_interface_meter_bytes_total[1h]) + 14 * rate(flowctl_interface_meter_packets_total[1h]))
 *     / rate(flowctl_interface_kernel_bytes_total[1h])
 */
import {readFileSync} from 'node:fs'
import {createServer, type Server} from 'node:http'
import type {AddressInfo} from 'node:net'

import {Counter, Gauge, Histogram, Registry, collectDefaultMetrics} from 'prom-client'

import {decodePerCpuOverflow} from '../bpf/layout.js'
import {directionName} from '../flow/record.js'
import {runningDaemonPid} from '../bpf/state.js'
import {FlowctlError} from '../errors.js'
import type {Paths} from '../paths.js'
import {END_REASON, type FlowBatch} from '../flow/batch.js'
import {protocolName} from '../flow/protocols.js'
import type {CollectorExporter, ExporterStats} from '../ipfix/exporter.js'
import {run} from '../sys/exec.js'
import type {NetnsName} from '../sys/netns.js'
import type {Daemon, DaemonHooks} from './daemon.js'
import type {MeterSetDrainer} from './drain.js'
import type {DrainReport} from './drain.js'
import {InterfaceNames} from './interfaces.js'
import type {Logger} from './log.js'

/** What the Ethernet header adds to each packet in the kernel's byte counters. */
export const ETHERNET_HEADER_BYTES = 14
/** The accuracy ratio covers this much time. */
export const ACCURACY_WINDOW_MS = 300_000
/** The interfaces' counters are read at most this often per namespace (always right after a drain). */
export const ACCURACY_SAMPLE_MS = 5_000

const REASON_LABEL: Record<number, string> = {
  [END_REASON.idleTimeout]: 'idle_timeout',
  [END_REASON.activeTimeout]: 'active_timeout',
  [END_REASON.endOfFlowDetected]: 'end_of_flow',
  [END_REASON.forcedEnd]: 'forced_end',
  [END_REASON.lackOfResources]: 'lack_of_resources',
}

/** An interface's counters as the kernel keeps them (L2 bytes). */
export interface LinkCounters {
  rxPackets: number
  rxBytes: number
  txPackets: number
  txBytes: number
}

/** Reads every interface's counters in a namespace, by ifindex. */
export type LinkReader = (netns: NetnsName) => Promise<Map<number, LinkCounters>>

/** `ip -s -j link show` in the namespace (nsenter for a named one), through the execa wrapper. */
export async function readLinkCounters(netns: NetnsName): Promise<Map<number, LinkCounters>> {
  const {stdout} = await run('ip', ['-s', '-j', 'link', 'show'], {netns, timeoutMs: 10_000})
  const links = JSON.parse(stdout || '[]') as {ifindex: number; stats64?: {rx: {packets: number; bytes: number}; tx: {packets: number; bytes: number}}}[]
  const out = new Map<number, LinkCounters>()
  for (const l of links) {
    if (!l.stats64) continue
    out.set(l.ifindex, {rxPackets: l.stats64.rx.packets, rxBytes: l.stats64.rx.bytes, txPackets: l.stats64.tx.packets, txBytes: l.stats64.tx.bytes})
  }
  return out
}

/** What the flow log outputs report (implemented by DaemonMetrics; a no-op without metrics). */
export interface FlowLogObserver {
  /** Records written to an output's file. */
  written(output: string, records: number): void
  /** A hook failed (`exit`, `timeout`, `garbage`, `spawn`) or was skipped (`queue_full`). */
  hookFailed(output: string, hook: string, reason: string): void
  /** Records waiting for the hooks of an output. */
  queued(output: string, records: number): void
  /** An output was opened: its series can show (at 0) before anything happens to it. */
  declareOutput?(output: string, hooks: string[]): void
}

/** A counter fed with absolute values read elsewhere: it adds what grew (and all of it after a reset). */
class AbsoluteCounter<T extends string> {
  private readonly last = new Map<string, number>()

  constructor(readonly counter: Counter<T>) {}

  set(labels: Record<T, string>, value: number, key = JSON.stringify(labels)): void {
    const before = this.last.get(key)
    this.last.set(key, value)
    const delta = before === undefined || value < before ? value : value - before
    if (delta > 0) this.counter.inc(labels, delta)
    else if (before === undefined) this.counter.inc(labels, 0)
  }
}

interface AccuracySlot {
  netns: string
  interface: string
  direction: 'ingress' | 'egress'
  /** Samples of the window: when, meter bytes + 14 × packets, kernel bytes. */
  window: {at: number; meter: number; kernel: number}[]
}

interface AccuracyState {
  netns: NetnsName
  /** The first drain of a meter holds what was counted before: left out. */
  primed: boolean
  /** What the meter saw since the last kernel sample (drains not yet paired with one). */
  pending: Map<number, {packets: number; bytes: number}>
  sampling: boolean
  sampledAt: number
  /** The previous kernel sample, and which slots were attached then. */
  last?: Map<number, LinkCounters>
  lastAttached: Set<number>
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
  private readonly paths: Paths
  private readonly readLinks: LinkReader
  private readonly sampleIntervalMs: number
  private daemon?: Daemon
  private server?: Server
  private listenText: string | null = null

  private readonly meteredPackets: Counter<'netns' | 'interface' | 'direction' | 'protocol'>
  private readonly meteredBytes: Counter<'netns' | 'interface' | 'direction' | 'protocol'>
  private readonly flowsExported: Counter<'netns' | 'reason'>
  private readonly drains: Counter<'netns'>
  private readonly drainDuration: Histogram<'netns'>
  private readonly drainTaken: Counter<'netns'>
  private readonly flowsPending: Gauge<'netns'>
  private readonly mapFlows: Gauge<'netns' | 'family'>
  private readonly mapCapacity: Gauge<'netns' | 'family'>
  private readonly mapFill: Gauge<'netns' | 'family'>
  private readonly notMeteredPackets: AbsoluteCounter<'netns' | 'interface' | 'direction'>
  private readonly notMeteredBytes: AbsoluteCounter<'netns' | 'interface' | 'direction'>
  private readonly ipfixMessages: Counter<'collector'>
  private readonly ipfixRecords: Counter<'collector'>
  private readonly ipfixBytes: Counter<'collector'>
  private readonly ipfixErrors: Counter<'collector'>
  private readonly ipfixTemplates: Counter<'collector'>
  private readonly ipfixUnexportable: Counter<'collector'>
  private readonly ipfixSpoolMessages: Gauge<'collector'>
  private readonly ipfixSpoolBytes: Gauge<'collector'>
  private readonly ipfixSpoolDropped: Counter<'collector'>
  private readonly reloads: Counter<'result'>
  private readonly logRecords: Counter<'output'>
  private readonly hookFailures: Counter<'output' | 'hook' | 'reason'>
  private readonly hookQueue: Gauge<'output'>
  private readonly ifMeterPackets: Counter<'netns' | 'interface' | 'direction'>
  private readonly ifMeterBytes: Counter<'netns' | 'interface' | 'direction'>
  private readonly ifKernelPackets: Counter<'netns' | 'interface' | 'direction'>
  private readonly ifKernelBytes: Counter<'netns' | 'interface' | 'direction'>
  private readonly ifAccuracy: Gauge<'netns' | 'interface' | 'direction'>

  private readonly exporterSeen = new WeakMap<CollectorExporter, Omit<ExporterStats, 'spooledMessages' | 'spooledBytes' | 'spoolDroppedRecords' | 'spoolDroppedPackets' | 'spoolDroppedOctets'>>()
  private readonly capacities = new WeakMap<MeterSetDrainer, number>()
  private readonly accuracy = new Map<string, AccuracyState>()
  private readonly accuracySlots = new Map<string, AccuracySlot>()
  private readonly samplings = new Set<Promise<void>>()

  constructor(options: DaemonMetricsOptions) {
    this.log = options.log
    this.paths = options.paths
    this.names = options.names ?? new InterfaceNames(options.paths)
    this.readLinks = options.readLinks ?? readLinkCounters
    this.sampleIntervalMs = options.sampleIntervalMs ?? ACCURACY_SAMPLE_MS
    const registers = [this.registry]
    const counter = <T extends string>(name: string, help: string, labelNames: readonly T[]) => new Counter<T>({name, help, labelNames, registers})
    const gauge = <T extends string>(name: string, help: string, labelNames: readonly T[]) => new Gauge<T>({name, help, labelNames, registers})
    const flowLabels = ['netns', 'interface', 'direction', 'protocol'] as const
    const ifLabels = ['netns', 'interface', 'direction'] as const

    new Gauge({name: 'flowctl_build_info', help: 'Always 1; the version of flowctl that runs.', labelNames: ['version'], registers}).set({version: packageVersion()}, 1)
    this.meteredPackets = counter('flowctl_metered_packets_total', 'Packets in the flows exported, by namespace, interface, direction and IP protocol.', flowLabels)
    this.meteredBytes = counter('flowctl_metered_bytes_total', 'IP bytes (IPFIX octetDeltaCount) in the flows exported, by namespace, interface, direction and IP protocol.', flowLabels)
    this.flowsExported = counter('flowctl_flows_exported_total', 'Flow records exported, by namespace and IPFIX flowEndReason.', ['netns', 'reason'])
    this.drains = counter('flowctl_drains_total', 'Drains of a meter (flows taken from the kernel).', ['netns'])
    this.drainDuration = new Histogram({
      name: 'flowctl_drain_duration_seconds',
      help: 'How long one drain of a meter took, exporting included.',
      labelNames: ['netns'],
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
      registers,
    })
    this.drainTaken = counter('flowctl_drain_entries_total', 'Flow map entries taken by the drains.', ['netns'])
    this.flowsPending = gauge('flowctl_flows_pending', 'Flows held by the daemon until they end (idle or active timeout).', ['netns'])
    this.mapFlows = gauge('flowctl_meter_map_flows', 'Flows in a flow map when the last drain swapped it out (its fullest: a map only fills between drains).', ['netns', 'family'])
    this.mapCapacity = gauge('flowctl_meter_map_capacity_flows', 'Flows a flow map can hold (more are not metered).', ['netns', 'family'])
    this.mapFill = gauge('flowctl_meter_map_fill_ratio', 'flowctl_meter_map_flows / flowctl_meter_map_capacity_flows.', ['netns', 'family'])
    this.notMeteredPackets = new AbsoluteCounter(counter('flowctl_not_metered_packets_total', 'Packets the meter could not record because the flow map was full (the overflow map).', ifLabels))
    this.notMeteredBytes = new AbsoluteCounter(counter('flowctl_not_metered_bytes_total', 'IP bytes the meter could not record because the flow map was full.', ifLabels))
    this.ipfixMessages = counter('flowctl_ipfix_messages_total', 'IPFIX messages sent to a collector (templates, data and statistics).', ['collector'])
    this.ipfixRecords = counter('flowctl_ipfix_records_total', 'IPFIX data records sent to a collector (flows, and statistics options records).', ['collector'])
    this.ipfixBytes = counter('flowctl_ipfix_sent_bytes_total', 'IPFIX bytes (UDP payload) sent to a collector.', ['collector'])
    this.ipfixErrors = counter('flowctl_ipfix_send_errors_total', 'Messages the kernel refused to send to a collector (e.g. ICMP port unreachable, no route).', ['collector'])
    this.ipfixTemplates = counter('flowctl_ipfix_template_refreshes_total', 'Times the templates were sent to a collector (at start, on the refresh timer, and again after a send error).', ['collector'])
    this.ipfixUnexportable = counter('flowctl_ipfix_unexportable_flows_total', 'Flows a collector got no record for: none of its templates fits their address family.', ['collector'])
    this.ipfixSpoolMessages = gauge('flowctl_ipfix_spool_messages', 'IPFIX messages held for a collector that is down (ICMP port unreachable), to be replayed when it answers.', ['collector'])
    this.ipfixSpoolBytes = gauge('flowctl_ipfix_spool_bytes', 'Bytes of the messages held for a collector that is down (at most spoolBytes).', ['collector'])
    this.ipfixSpoolDropped = counter('flowctl_ipfix_spool_dropped_messages_total', 'Messages a full spool dropped, oldest first: the collector never gets them.', ['collector'])
    this.reloads = counter('flowctl_config_reloads_total', 'Config reloads (SIGHUP), by result: ok, or refused (the old config keeps running).', ['result'])
    this.logRecords = counter('flowctl_flow_log_records_total', 'Flow records written to a flow log output.', ['output'])
    this.hookFailures = counter('flowctl_hook_failures_total', 'Hook runs that failed (exit, timeout, garbage, spawn) or were skipped (queue_full); the records were written unenriched.', ['output', 'hook', 'reason'])
    this.hookQueue = gauge('flowctl_hook_queue_records', 'Flow records waiting for the hooks of a flow log output.', ['output'])
    this.ifMeterPackets = counter('flowctl_interface_meter_packets_total', 'Packets the meter saw on a metered interface (accuracy check; since this daemon started).', ifLabels)
    this.ifMeterBytes = counter('flowctl_interface_meter_bytes_total', 'IP bytes the meter saw on a metered interface (accuracy check).', ifLabels)
    this.ifKernelPackets = counter('flowctl_interface_kernel_packets_total', "Packets the kernel's own interface counters counted over the same intervals (rx for ingress, tx for egress).", ifLabels)
    this.ifKernelBytes = counter('flowctl_interface_kernel_bytes_total', "L2 bytes (Ethernet header included) the kernel's interface counters counted over the same intervals.", ifLabels)
    this.ifAccuracy = gauge(
      'flowctl_interface_accuracy_ratio',
      '(meter bytes + 14 x meter packets) / kernel bytes over the last 5 minutes: 1 = the meter saw every byte the interface carried.',
      ifLabels,
    )
    for (const result of ['ok', 'refused']) this.reloads.inc({result}, 0)
    if (options.processMetrics ?? true) collectDefaultMetrics({register: this.registry, prefix: 'flowctl_'})
  }

  /** The hooks to give the Daemon: they count only while the metrics are served. */
  get hooks(): DaemonHooks {
    return {
      onExport: (batch) => {
        if (this.server) this.countBatch(batch)
      },
      onDrain: (report) => {
        if (this.server) this.countDrain(report)
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
    for (let i = 0; i < batch.length; i++) {
      const key = (batch.ifindex[i] * 2 + batch.direction[i]) * 256 + batch.proto[i]
      const t = byKey.get(key)
      if (t) {
        t.packets += batch.packets[i]
        t.bytes += batch.bytes[i]
      } else byKey.set(key, {packets: batch.packets[i], bytes: batch.bytes[i]})
      byReason.set(batch.endReason[i], (byReason.get(batch.endReason[i]) ?? 0) + 1)
    }
    for (const [key, t] of byKey) {
      const proto = key % 256
      const slot = (key - proto) / 256
      const labels = {netns: batch.netns, interface: this.names.name(batch.netns, Math.floor(slot / 2)), direction: directionName(slot % 2), protocol: protocolName(proto)}
      this.meteredPackets.inc(labels, t.packets)
      this.meteredBytes.inc(labels, t.bytes)
    }
    for (const [reason, n] of byReason) this.flowsExported.inc({netns: batch.netns, reason: REASON_LABEL[reason] ?? String(reason)}, n)
  }

  countDrain(report: {netns: string} & DrainReport): void {
    const {netns} = report
    this.drains.inc({netns})
    this.drainDuration.observe({netns}, report.ms / 1000)
    this.drainTaken.inc({netns}, report.taken)
    this.flowsPending.set({netns}, report.pending)
    for (const family of [4, 6] as const) {
      const flows = report.takenByFamily?.[family]
      if (flows === undefined) continue
      this.mapFlows.set({netns, family: `ipv${family}`}, flows)
      const drainer = this.daemon?.meters.get(netns)
      const capacity = drainer && this.capacity(drainer)
      if (capacity) this.mapFill.set({netns, family: `ipv${family}`}, flows / capacity)
    }
    this.syncCollectors()
    if (report.seen) this.accuracyDrain(netns, report.seen)
  }

  reloaded(result: 'ok' | 'refused'): void {
    this.reloads.inc({result})
  }

  // --- flow logs (FlowLogObserver) -------------------------------------------------------------

  written(output: string, records: number): void {
    this.logRecords.inc({output}, records)
  }

  hookFailed(output: string, hook: string, reason: string): void {
    this.hookFailures.inc({output, hook, reason})
  }

  queued(output: string, records: number): void {
    this.hookQueue.set({output}, records)
  }

  /** Makes a flow log output's series show (at 0) before anything happened to it. */
  declareOutput(output: string, hooks: string[]): void {
    this.logRecords.inc({output}, 0)
    this.hookQueue.set({output}, 0)
    for (const hook of hooks) for (const reason of ['exit', 'timeout', 'garbage']) this.hookFailures.inc({output, hook, reason}, 0)
  }

  // --- read at scrape time ---------------------------------------------------------------------

  private capacity(drainer: MeterSetDrainer): number | undefined {
    let capacity = this.capacities.get(drainer)
    if (capacity === undefined) {
      try {
        capacity = drainer.set.capacity()
        this.capacities.set(drainer, capacity)
      } catch {
        return undefined // detached meanwhile
      }
    }
    return capacity
  }

  /** Adds what each collector sent since the last look (a new exporter, after a reload, from 0). */
  syncCollectors(): void {
    for (const e of this.daemon?.collectors ?? []) {
      const before = this.exporterSeen.get(e) ?? {messages: 0, records: 0, octets: 0, sendErrors: 0, templateSends: 0, unexportable: 0, spoolDroppedMessages: 0}
      const now = {...e.stats}
      const collector = e.config.name
      this.ipfixMessages.inc({collector}, now.messages - before.messages)
      this.ipfixRecords.inc({collector}, now.records - before.records)
      this.ipfixBytes.inc({collector}, now.octets - before.octets)
      this.ipfixErrors.inc({collector}, now.sendErrors - before.sendErrors)
      this.ipfixTemplates.inc({collector}, now.templateSends - before.templateSends)
      this.ipfixUnexportable.inc({collector}, now.unexportable - before.unexportable)
      this.ipfixSpoolMessages.set({collector}, now.spooledMessages)
      this.ipfixSpoolBytes.set({collector}, now.spooledBytes)
      this.ipfixSpoolDropped.inc({collector}, now.spoolDroppedMessages - before.spoolDroppedMessages)
      this.exporterSeen.set(e, now)
    }
  }

  private syncMeters(): void {
    for (const [netns, drainer] of this.daemon?.meters ?? []) {
      this.flowsPending.set({netns}, drainer.pending)
      const capacity = this.capacity(drainer)
      if (capacity) for (const family of ['ipv4', 'ipv6']) this.mapCapacity.set({netns, family}, capacity)
      let map
      try {
        map = drainer.set.openMap('overflow')
      } catch {
        continue // detached meanwhile
      }
      try {
        const stride = map.valueBytes
        map.forEachBatch((keys, values, n) => {
          for (let i = 0; i < n; i++) {
            const ifindex = keys.readUInt32LE(i * 8)
            const direction = directionName(keys.readUInt32LE(i * 8 + 4))
            const o = decodePerCpuOverflow(values, i * stride, stride / 16)
            const labels = {netns, interface: this.names.name(netns, ifindex), direction}
            const key = `${netns}/${ifindex}/${direction}`
            this.notMeteredPackets.set(labels, o.packets, key)
            this.notMeteredBytes.set(labels, o.bytes, key)
          }
        })
      } catch (error) {
        this.log.limited(`metrics-overflow:${netns}`, 'warn', 'metrics-read-failed', {netns, map: 'overflow', error: (error as Error).message})
      } finally {
        map.close()
      }
      for (const a of this.names.attached(netns)) {
        const labels = {netns, interface: a.interface, direction: a.direction}
        this.notMeteredPackets.counter.inc(labels, 0)
        this.notMeteredBytes.counter.inc(labels, 0)
      }
    }
  }

  /** The exposition text, brought up to date first. */
  async text(): Promise<string> {
    this.syncCollectors()
    this.syncMeters()
    return this.registry.metrics()
  }

  // --- accuracy --------------------------------------------------------------------------------

  private accuracyDrain(netns: string, seen: Map<number, {packets: number; bytes: number}>): void {
    let state = this.accuracy.get(netns)
    if (!state) {
      state = {netns: this.daemon?.meters.get(netns)?.set.netns ?? (netns === 'root' ? null : netns), primed: false, pending: new Map(), sampling: false, sampledAt: -Infinity, lastAttached: new Set()}
      this.accuracy.set(netns, state)
    }
    if (state.primed) {
      for (const [slot, t] of seen) {
        const p = state.pending.get(slot)
        if (p) {
          p.packets += t.packets
          p.bytes += t.bytes
        } else state.pending.set(slot, {...t})
      }
    }
    state.primed = true
    // The next sample pairs these drains with the kernel.
    if (state.sampling || Date.now() - state.sampledAt < this.sampleIntervalMs) return
    state.sampledAt = Date.now()
    const sampling = this.sample(netns, state).finally(() => this.samplings.delete(sampling))
    this.samplings.add(sampling)
  }

  /** Reads the kernel's counters now and pairs their growth with what the meter saw meanwhile. */
  private async sample(netns: string, state: AccuracyState): Promise<void> {
    state.sampling = true
    const seen = state.pending
    state.pending = new Map()
    const attachments = this.names.attached(netns)
    try {
      const now = await this.readLinks(state.netns)
      const at = Date.now()
      const attached = new Set<number>()
      for (const a of attachments) {
        const dir = a.direction === 'egress' ? 1 : 0
        const slot = a.ifindex * 2 + dir
        attached.add(slot)
        const before = state.last?.get(a.ifindex)
        const after = now.get(a.ifindex)
        if (!before || !after || !state.lastAttached.has(slot)) continue
        const kernelPackets = dir ? after.txPackets - before.txPackets : after.rxPackets - before.rxPackets
        const kernelBytes = dir ? after.txBytes - before.txBytes : after.rxBytes - before.rxBytes
        if (kernelPackets < 0 || kernelBytes < 0) continue // the interface was made anew
        const meter = seen.get(slot) ?? {packets: 0, bytes: 0}
        const labels = {netns, interface: a.interface, direction: a.direction}
        this.ifMeterPackets.inc(labels, meter.packets)
        this.ifMeterBytes.inc(labels, meter.bytes)
        this.ifKernelPackets.inc(labels, kernelPackets)
        this.ifKernelBytes.inc(labels, kernelBytes)
        const key = `${netns}/${a.ifindex}/${a.direction}`
        let s = this.accuracySlots.get(key)
        if (!s) {
          s = {netns, interface: a.interface, direction: a.direction, window: []}
          this.accuracySlots.set(key, s)
        }
        s.window.push({at, meter: meter.bytes + ETHERNET_HEADER_BYTES * meter.packets, kernel: kernelBytes})
        while (s.window.length > 0 && s.window[0].at < at - ACCURACY_WINDOW_MS) s.window.shift()
        const meterSum = s.window.reduce((n, w) => n + w.meter, 0)
        const kernelSum = s.window.reduce((n, w) => n + w.kernel, 0)
        this.ifAccuracy.set(labels, kernelSum > 0 ? meterSum / kernelSum : meterSum > 0 ? Number.POSITIVE_INFINITY : 1)
      }
      state.last = now
      state.lastAttached = attached
    } catch (error) {
      // Not paired: keep what the meter saw for the next sample, which covers its interval too.
      for (const [slot, t] of seen) {
        const p = state.pending.get(slot)
        if (p) {
          p.packets += t.packets
          p.bytes += t.bytes
        } else state.pending.set(slot, t)
      }
      this.log.limited(`metrics-links:${netns}`, 'warn', 'metrics-read-failed', {netns, what: 'interface counters', error: (error as Error).message})
    } finally {
      state.sampling = false
    }
  }

  /** Resolves once the kernel samples in progress are done (tests, shutdown). */
  async settled(): Promise<void> {
    while (this.samplings.size > 0) await Promise.all([...this.samplings])
  }

  // --- HTTP ------------------------------------------------------------------------------------

  /** The address served, once listening (e.g. for a `:0` port). */
  get address(): AddressInfo | undefined {
    const a = this.server?.address()
    return a && typeof a === 'object' ? a : undefined
  }

  /**
   * Serves /metrics on HOST:PORT (null: stops serving). Called again with another address (a
   * reload), it moves there once the new one is bound; a failure leaves the old one serving.
   */
  async listen(listen: string | null, configFile: string | null = null): Promise<void> {
    if (listen === this.listenText && (listen === null || this.server)) return
    if (listen === null) {
      await this.closeServer()
      this.listenText = null
      return
    }
    const {host, port} = splitHostPort(listen)
    const server = createServer((req, res) => {
      const path = (req.url ?? '/').split('?')[0]
      if (req.method !== 'GET' && req.method !== 'HEAD') {
        res.writeHead(405, {allow: 'GET, HEAD'}).end()
        return
      }
      if (path === '/metrics') {
        this.text().then(
          (body) => res.writeHead(200, {'content-type': this.registry.contentType}).end(req.method === 'HEAD' ? undefined : body),
          (error: Error) => {
            this.log.limited('metrics-scrape', 'error', 'metrics-scrape-failed', {error: error.message})
            res.writeHead(500, {'content-type': 'text/plain'}).end(`${error.message}\n`)
          },
        )
        return
      }
      if (path === '/') {
        res.writeHead(200, {'content-type': 'text/html'}).end('<html><body><h1>flowctl daemon</h1><p><a href="/metrics">/metrics</a></p></body></html>\n')
        return
      }
      res.writeHead(404, {'content-type': 'text/plain'}).end('not found: the metrics are at /metrics\n')
    })
    try {
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject)
        server.listen({host, port}, () => {
          server.off('error', reject)
          resolve()
        })
      })
    } catch (error) {
      throw metricsListenError(listen, configFile, error as NodeJS.ErrnoException, runningDaemonPid(this.paths))
    }
    server.on('error', (error) => this.log.limited('metrics-server', 'error', 'metrics-server-error', {error: error.message}))
    await this.closeServer()
    this.server = server
    this.listenText = listen
    this.log.log('info', 'metrics-listening', {listen, url: `http://${host.includes(':') ? `[${host}]` : host}:${this.address?.port}/metrics`})
  }

  private async closeServer(): Promise<void> {
    const server = this.server
    this.server = undefined
    if (!server) return
    await new Promise<void>((resolve) => {
      server.close(() => resolve())
      server.closeAllConnections()
    })
  }

  async close(): Promise<void> {
    await this.settled()
    await this.closeServer()
  }
}

/** HOST:PORT or [IPV6]:PORT, as the config loader checked it. */
export function splitHostPort(text: string): {host: string; port: number} {
  const m = /^\[([^\]]+)\]:(\d+)$/.exec(text) ?? /^([^:]+):(\d+)$/.exec(text)
  if (!m) throw new FlowctlError(`metrics.listen: '${text}' is not HOST:PORT`)
  return {host: m[1], port: Number(m[2])}
}

/** The one-line error for a metrics port that cannot be bound, naming the config key. */
export function metricsListenError(listen: string, configFile: string | null, error: NodeJS.ErrnoException, otherDaemonPid?: number): FlowctlError {
  const where = configFile ? ` (${configFile})` : ''
  const fix = `set another metrics.listen${where}, or metrics.listen: "" to serve no metrics`
  let problem: string
  switch (error.code) {
    case 'EADDRINUSE': {
      const other = otherDaemonPid
      problem = `the port is in use${other ? ` (another flowctl daemon, pid ${other}, is running)` : ' by another program (`ss -ltnp` shows which)'}`
      break
    }
    case 'EADDRNOTAVAIL':
      problem = 'no interface of this host has that address'
      break
    case 'EACCES':
      problem = 'permission denied (ports below 1024 need CAP_NET_BIND_SERVICE)'
      break
    case 'ENOTFOUND':
    case 'EAI_AGAIN':
      problem = 'the host name does not resolve'
      break
    default:
      problem = error.message
  }
  return new FlowctlError(`metrics.listen: cannot listen on ${listen}: ${problem}${error.code ? ` (${error.code})` : ''}; ${fix}`, {cause: error})
}

function packageVersion(): string {
  try {
    // dist/src/daemon/metrics.js → the package root.
    return (JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as {version: string}).version
  } catch {
    return 'unknown'
  }
}
