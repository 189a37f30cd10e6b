/**
 * Every metric the daemon serves, defined in one place: names, help, labels, buckets. Every name
 * starts with `flowctl_`; counters end in `_total`, byte counts in `_bytes`, durations in
 * `_seconds`. Counts are JavaScript numbers: exact up to 2^53 (9 PB, or 9·10^15 packets), which is
 * where a 64-bit counter read from the kernel would stop being exact in any Prometheus client too.
 * The names are an interface (dashboards, alerts): rename none.
 */
import {readFileSync} from 'node:fs'

import {Counter, Gauge, Histogram, collectDefaultMetrics, type Registry} from 'prom-client'

import {END_REASON} from '../../flow/batch.js'

/** The label of each IPFIX flowEndReason in flowctl_flows_exported_total. */
export const REASON_LABEL: Record<number, string> = {
  [END_REASON.idleTimeout]: 'idle_timeout',
  [END_REASON.activeTimeout]: 'active_timeout',
  [END_REASON.endOfFlowDetected]: 'end_of_flow',
  [END_REASON.forcedEnd]: 'forced_end',
  [END_REASON.lackOfResources]: 'lack_of_resources',
}

type InterfaceLabel = 'netns' | 'interface' | 'direction'

/**
 * How often the event loop lag gauges (flowctl_nodejs_eventloop_lag_{min,max,mean,stddev,p50,
 * p90,p99}_seconds) look at the loop: each look is a timer that wakes the daemon. At prom-client's
 * default, 10 ms, those 100 wake-ups a second cost an idle daemon 0.3 % of a core, most of what
 * one idle meter set cost it (docs/benchmarks.md, figure 10); at 100 ms, 0.03 %. Each gauge is the
 * time between two looks: an idle loop reads this period, and lag is what exceeds it.
 */
export const EVENT_LOOP_LOOK_MS = 100

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

/** Registers every flowctl_ metric in `registry` (and the process ones, unless told not to). */
export function defineMetrics(registry: Registry, options: {processMetrics: boolean}) {
  const registers = [registry]
  const counter = <T extends string>(name: string, help: string, labelNames: readonly T[]) => new Counter<T>({name, help, labelNames, registers})
  const gauge = <T extends string>(name: string, help: string, labelNames: readonly T[]) => new Gauge<T>({name, help, labelNames, registers})
  const flowLabels = ['netns', 'interface', 'direction', 'protocol'] as const
  const ifLabels: readonly InterfaceLabel[] = ['netns', 'interface', 'direction']

  new Gauge({name: 'flowctl_build_info', help: 'Always 1; the version of flowctl that runs.', labelNames: ['version'], registers}).set(
    {version: packageVersion()},
    1,
  )
  const metrics = {
    meteredPackets: counter(
      'flowctl_metered_packets_total',
      'Packets in the flows exported, by namespace, interface, direction and IP protocol; a flow counted 1 packet in N (sampling) stands for N times its count, as collectors scale it.',
      flowLabels,
    ),
    meteredBytes: counter(
      'flowctl_metered_bytes_total',
      'IP bytes (IPFIX octetDeltaCount) in the flows exported, by namespace, interface, direction and IP protocol; with sampling, times N as for packets.',
      flowLabels,
    ),
    droppedPackets: counter(
      'flowctl_dropped_packets_total',
      "Packets the kernel dropped in a namespace with drops on (meter attach --drops), by namespace, the interface they came in by (or were sent out of), and the kernel's reason (enum skb_drop_reason; TTL_EXPIRED for IP_INHDR at forwarding with TTL 1).",
      ['netns', 'interface', 'reason'],
    ),
    droppedBytes: counter('flowctl_dropped_bytes_total', 'IP bytes of the packets in flowctl_dropped_packets_total.', ['netns', 'interface', 'reason']),
    droppedUnmetered: counter(
      'flowctl_dropped_unmetered_packets_total',
      'Dropped packets (of flowctl_dropped_packets_total) whose flow the meter never counted (no meter on their interface, later fragments, IPv6 extension headers): in no flow record.',
      ['netns', 'interface', 'reason'],
    ),
    dropsLost: new AbsoluteCounter(
      counter(
        'flowctl_dropped_lost_packets_total',
        "Dropped packets the drop hook could not record, host-wide: their namespace's drops hash was full (65536 flows and reasons between two drains).",
        [],
      ),
    ),
    flowsExported: counter('flowctl_flows_exported_total', 'Flow records exported, by namespace and IPFIX flowEndReason.', ['netns', 'reason']),
    flowsBySampling: counter(
      'flowctl_flows_exported_by_sampling_total',
      'Flow records exported, by namespace and the sampling interval N they were counted at (1 packet in N; 1: every packet), which their records carry (samplingInterval).',
      ['netns', 'sampling_interval'],
    ),
    samplingInterval: gauge(
      'flowctl_meter_sampling_interval',
      'The meter of a namespace counts 1 packet in this many (1: every packet), now (meter attach --sampling, sampling: in the config).',
      ['netns'],
    ),
    drains: counter('flowctl_drains_total', 'Drains of a meter (flows taken from the kernel).', ['netns']),
    drainDuration: new Histogram({
      name: 'flowctl_drain_duration_seconds',
      help: 'How long one drain of a meter took, exporting included.',
      labelNames: ['netns'],
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
      registers,
    }),
    tcpHandshakeRtt: new Histogram({
      name: 'flowctl_tcp_handshake_rtt_seconds',
      help: 'Round trips of the TCP connections whose handshake the meter saw whole, once per connection: side="server" from the client\'s SYN to the server\'s SYN+ACK (router to server and back), side="client" from that to the client\'s first ACK (router to client and back); in and out: the interfaces the client\'s packets come in and leave by.',
      labelNames: ['netns', 'side', 'in', 'out'],
      buckets: [0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2.5],
      registers,
    }),
    drainTaken: counter('flowctl_drain_entries_total', 'Flow map entries taken by the drains.', ['netns']),
    flowsPending: gauge('flowctl_flows_pending', 'Flows held by the daemon until they end (idle or active timeout).', ['netns']),
    mapFlows: gauge('flowctl_meter_map_flows', 'Flows in a flow map when the last drain swapped it out (its fullest: a map only fills between drains).', [
      'netns',
      'family',
    ]),
    mapCapacity: gauge('flowctl_meter_map_capacity_flows', 'Flows a flow map can hold (more are not metered).', ['netns', 'family']),
    liveMapSize: gauge(
      'flowctl_meter_live_map_size_flows',
      'Flows the live flow map in place can hold: sized by the daemon to the recent traffic, at most the capacity (a map past half of it is taken out early for a larger one).',
      ['netns', 'family'],
    ),
    kernelMemory: gauge(
      'flowctl_meter_kernel_memory_bytes',
      'Kernel memory the meter set of a namespace takes now (its maps, as the kernel accounts them: memlock).',
      ['netns'],
    ),
    kernelMemoryMax: gauge(
      'flowctl_meter_kernel_memory_max_bytes',
      'Kernel memory the meter set of a namespace can take at most: full flow maps and the largest snapshot of held flows.',
      ['netns'],
    ),
    mapFill: gauge('flowctl_meter_map_fill_ratio', 'flowctl_meter_map_flows / flowctl_meter_map_capacity_flows.', ['netns', 'family']),
    notMeteredPackets: new AbsoluteCounter(
      counter('flowctl_not_metered_packets_total', 'Packets the meter could not record because the flow map was full (the overflow map).', ifLabels),
    ),
    notMeteredBytes: new AbsoluteCounter(
      counter('flowctl_not_metered_bytes_total', 'IP bytes the meter could not record because the flow map was full.', ifLabels),
    ),
    ipfixMessages: counter('flowctl_ipfix_messages_total', 'IPFIX messages sent to a collector (templates, data and statistics).', ['collector']),
    ipfixRecords: counter('flowctl_ipfix_records_total', 'IPFIX data records sent to a collector (flows, and statistics options records).', ['collector']),
    ipfixBytes: counter('flowctl_ipfix_sent_bytes_total', 'IPFIX bytes (UDP payload) sent to a collector.', ['collector']),
    ipfixErrors: counter('flowctl_ipfix_send_errors_total', 'Messages the kernel refused to send to a collector (e.g. ICMP port unreachable, no route).', [
      'collector',
    ]),
    ipfixTemplates: counter(
      'flowctl_ipfix_template_refreshes_total',
      'Times the templates were sent to a collector (at start, on the refresh timer, and again after a send error).',
      ['collector'],
    ),
    ipfixUnexportable: counter(
      'flowctl_ipfix_unexportable_flows_total',
      'Flows a collector got no record for: none of its templates fits their address family.',
      ['collector'],
    ),
    stateFileWriteErrors: counter(
      'flowctl_state_file_write_errors_total',
      'Times the state file (IPFIX sequence numbers) could not be written; exporting goes on without it.',
      [],
    ),
    ipfixSpoolMessages: gauge(
      'flowctl_ipfix_spool_messages',
      'IPFIX messages held for a collector that is down (ICMP port unreachable), to be replayed when it answers, or waiting their turn while the replay goes on (paced).',
      ['collector'],
    ),
    ipfixSpoolBytes: gauge(
      'flowctl_ipfix_spool_bytes',
      'Bytes of the messages held for a collector that is down or being replayed to (within spoolBytes, and spoolTotalBytes for all collectors).',
      ['collector'],
    ),
    ipfixSpoolDropped: counter(
      'flowctl_ipfix_spool_dropped_messages_total',
      'Messages a full spool dropped, oldest first (spoolBytes, or spoolTotalBytes for all collectors), or still spooled when the daemon stopped or a reload dropped the collector: the collector never gets them.',
      ['collector'],
    ),
    followed: counter(
      'flowctl_follow_changes_total',
      'Meters the daemon attached or detached itself (config meters with interfaces), and sets of deleted namespaces it released, by reason: appeared, gone, pattern-changed.',
      ['action', 'reason'],
    ),
    reloads: counter('flowctl_config_reloads_total', 'Config reloads (SIGHUP), by result: ok, or refused (the old config keeps running).', ['result']),
    logRecords: counter('flowctl_flow_log_records_total', 'Flow records written to a flow log output (whole lines in the file).', ['output']),
    logRecordsLost: counter('flowctl_flow_log_records_lost_total', 'Flow records a flow log output could not write (e.g. a full disk): not in the file.', [
      'output',
    ]),
    hookFailures: counter(
      'flowctl_hook_failures_total',
      'Hook runs that failed (exit, timeout, garbage, spawn) or were skipped (queue_full); the records were written unenriched.',
      ['output', 'hook', 'reason'],
    ),
    hookQueue: gauge('flowctl_hook_queue_records', 'Flow records waiting for the hooks of a flow log output.', ['output']),
    accuracy: {
      meterPackets: counter(
        'flowctl_interface_meter_packets_total',
        'Packets the meter saw on a metered interface (accuracy check; since this daemon started); with sampling, the estimate: each flow counted 1 in N, times N.',
        ifLabels,
      ),
      meterBytes: counter(
        'flowctl_interface_meter_bytes_total',
        'IP bytes the meter saw on a metered interface (accuracy check); with sampling, the estimate (counts x N).',
        ifLabels,
      ),
      kernelPackets: counter(
        'flowctl_interface_kernel_packets_total',
        "Packets the kernel's own interface counters counted over the same intervals (rx for ingress, tx for egress).",
        ifLabels,
      ),
      kernelBytes: counter(
        'flowctl_interface_kernel_bytes_total',
        "L2 bytes (Ethernet header included) the kernel's interface counters counted over the same intervals.",
        ifLabels,
      ),
      ratio: gauge(
        'flowctl_interface_accuracy_ratio',
        '(meter bytes + 14 x meter packets) / kernel bytes over the last 5 minutes: 1 = the meter saw every byte the interface carried (with sampling, its estimate: counts x N).',
        ifLabels,
      ),
      samplingError: gauge(
        'flowctl_interface_accuracy_sampling_error_ratio',
        'The standard error sampling (1 packet in N) gives flowctl_interface_accuracy_ratio over the same 5 minutes; 0 without sampling. A ratio within 1 +- 3 x this is sampling, not loss.',
        ifLabels,
      ),
    },
  }
  for (const result of ['ok', 'refused']) metrics.reloads.inc({result}, 0)
  metrics.stateFileWriteErrors.inc(0)
  if (options.processMetrics) {
    collectDefaultMetrics({register: registry, prefix: 'flowctl_', eventLoopMonitoringPrecision: EVENT_LOOP_LOOK_MS})
    // prom-client names three gauges *_total, which marks a counter (`promtool check metrics`
    // objects); each is the sum of the gauge of the same name by type, so nothing is lost.
    for (const what of ['handles', 'requests', 'resources']) registry.removeSingleMetric(`flowctl_nodejs_active_${what}_total`)
  }
  return metrics
}

export type DaemonMetricSet = ReturnType<typeof defineMetrics>
/** The accuracy metrics, by interface and direction. */
export type AccuracyMetrics = DaemonMetricSet['accuracy']

function packageVersion(): string {
  try {
    // dist/src/daemon/metrics/definitions.js → the package root.
    return (JSON.parse(readFileSync(new URL('../../../../package.json', import.meta.url), 'utf8')) as {version: string}).version
  } catch {
    return 'unknown'
  }
}
