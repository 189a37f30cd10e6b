/**
 * The accuracy check: what the meter saw on each metered interface against the kernel's own
 * interface counters (`ip -s -j link`, read in the namespace right after a drain, at most every
 * ACCURACY_SAMPLE_MS).
 *
 * The kernel counts L2 bytes (with the 14-byte Ethernet header), the meter IP bytes, so the
 * comparable figure is `meter bytes + 14 × meter packets`. Both sides are sampled at a drain (what
 * the meter saw over several drains waits for the next kernel reading), so they cover the same
 * intervals; the first drain of a meter (which holds what was counted before this daemon started)
 * is left out. The ratio gauge compares the two over the last 5 minutes; 1 means the meter saw
 * exactly what the interface carried. Below 1: traffic that is not IPv4/IPv6 (ARP, LLDP, STP), the
 * daemon's own IPFIX datagrams (the meter skips them), packets not metered (map full, see
 * flowctl_not_metered_*), VLAN tags in the frame (4 bytes each, which the kernel counts and IP
 * bytes do not). Above 1: packets a qdisc dropped after tc egress saw them. The counters behind it
 * let any window be computed in PromQL:
 *   (rate(flowctl_interface_meter_bytes_total[1h]) + 14 * rate(flowctl_interface_meter_packets_total[1h]))
 *     / rate(flowctl_interface_kernel_bytes_total[1h])
 *
 * A meter that samples (1 packet in N, at random) counts about 1/N of the traffic: what it saw
 * is compared as the estimate its flows stand for (each flow's counts times its N), which is
 * what collectors make of it too, so sampling never reads as loss. The estimate is off by
 * chance, by about sqrt(N) / sqrt(packets counted) of itself: the sampling error gauge says by
 * how much over the same window (one standard error, as a fraction of the kernel's bytes; 0
 * without sampling). A ratio within 1 ± 3 × that error is what sampling alone gives.
 */
import type {LinkCounters, NetnsName} from '../../sys/netns.js'
import type {InterfaceTally} from '../drain.js'
import type {InterfaceNames} from '../interfaces.js'
import type {Logger} from '../log.js'
import type {AccuracyMetrics} from './definitions.js'

/** What the Ethernet header adds to each packet in the kernel's byte counters. */
const ETHERNET_HEADER_BYTES = 14
/** The accuracy ratio covers this much time. */
const ACCURACY_WINDOW_MS = 300_000
/** The interfaces' counters are read at most this often per namespace (always right after a drain). */
export const ACCURACY_SAMPLE_MS = 5_000

/** Reads every interface's counters in a namespace, by ifindex. */
export type LinkReader = (netns: NetnsName) => Promise<Map<number, LinkCounters>>

/** Packets and IP bytes the meter saw (as estimates, with their spread when sampled), by slot (ifindex × 2 + direction). */
export type SeenBySlot = Map<number, InterfaceTally>

interface AccuracySlot {
  /** Samples of the window: when, meter bytes + 14 × packets, kernel bytes, and the variance of the meter's figure. */
  window: {at: number; meter: number; kernel: number; variance: number}[]
}

/**
 * The variance of `bytes + 14 × packets` as estimated from a sampled count (see InterfaceTally):
 * Var(bytes) + 2·14·Cov(bytes, packets) + 14²·Var(packets).
 */
function frameBytesVariance(t: InterfaceTally): number {
  const s = t.spread
  if (!s) return 0
  const h = ETHERNET_HEADER_BYTES
  return s.squares + 2 * h * s.bytes + h * h * s.packets
}

interface NamespaceState {
  netns: NetnsName
  /** The first drain of a meter holds what was counted before: left out. */
  primed: boolean
  /** What the meter saw since the last kernel sample (drains not yet paired with one). */
  pending: SeenBySlot
  sampling: boolean
  sampledAt: number
  /** The previous kernel sample, and which slots were attached then. */
  last?: Map<number, LinkCounters>
  lastAttached: Set<number>
}

export interface AccuracySamplerOptions {
  metrics: AccuracyMetrics
  names: InterfaceNames
  log: Logger
  readLinks: LinkReader
  /** How often the interfaces' counters are read, at most. */
  sampleIntervalMs: number
}

export class AccuracySampler {
  private readonly namespaces = new Map<string, NamespaceState>()
  private readonly slots = new Map<string, AccuracySlot>()
  private readonly samplings = new Set<Promise<void>>()

  constructor(private readonly options: AccuracySamplerOptions) {}

  /** What one drain of the meter of `label` (namespace `netns`) saw; samples the kernel when due. */
  drained(label: string, netns: NetnsName, seen: SeenBySlot): void {
    let state = this.namespaces.get(label)
    if (!state) {
      state = {netns, primed: false, pending: new Map(), sampling: false, sampledAt: -Infinity, lastAttached: new Set()}
      this.namespaces.set(label, state)
    }
    if (state.primed) addSeen(state.pending, seen)
    state.primed = true
    // The next sample pairs these drains with the kernel.
    if (state.sampling || Date.now() - state.sampledAt < this.options.sampleIntervalMs) return
    state.sampledAt = Date.now()
    const sampling = this.sample(label, state).finally(() => this.samplings.delete(sampling))
    this.samplings.add(sampling)
  }

  /** Resolves once the kernel samples in progress are done (tests, shutdown). */
  async settled(): Promise<void> {
    while (this.samplings.size > 0) await Promise.all([...this.samplings])
  }

  /** Reads the kernel's counters now and pairs their growth with what the meter saw meanwhile. */
  private async sample(label: string, state: NamespaceState): Promise<void> {
    const {metrics, names, log} = this.options
    state.sampling = true
    const seen = state.pending
    state.pending = new Map()
    const attachments = names.attached(label)
    try {
      const now = await this.options.readLinks(state.netns)
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
        const labels = {netns: label, interface: a.interface, direction: a.direction}
        metrics.meterPackets.inc(labels, meter.packets)
        metrics.meterBytes.inc(labels, meter.bytes)
        metrics.kernelPackets.inc(labels, kernelPackets)
        metrics.kernelBytes.inc(labels, kernelBytes)
        const key = `${label}/${a.ifindex}/${a.direction}`
        let s = this.slots.get(key)
        if (!s) {
          s = {window: []}
          this.slots.set(key, s)
        }
        s.window.push({at, meter: meter.bytes + ETHERNET_HEADER_BYTES * meter.packets, kernel: kernelBytes, variance: frameBytesVariance(meter)})
        while (s.window.length > 0 && s.window[0].at < at - ACCURACY_WINDOW_MS) s.window.shift()
        const meterSum = s.window.reduce((n, w) => n + w.meter, 0)
        const kernelSum = s.window.reduce((n, w) => n + w.kernel, 0)
        const varianceSum = s.window.reduce((n, w) => n + w.variance, 0)
        metrics.ratio.set(labels, kernelSum > 0 ? meterSum / kernelSum : meterSum > 0 ? Number.POSITIVE_INFINITY : 1)
        metrics.samplingError.set(labels, kernelSum > 0 ? Math.sqrt(varianceSum) / kernelSum : 0)
      }
      state.last = now
      state.lastAttached = attached
    } catch (error) {
      // Not paired: keep what the meter saw for the next sample, which covers its interval too.
      addSeen(state.pending, seen)
      log.limited(`metrics-links:${label}`, 'warn', 'metrics-read-failed', {netns: label, what: 'interface counters', error: (error as Error).message})
    } finally {
      state.sampling = false
    }
  }
}

function addSeen(into: SeenBySlot, seen: SeenBySlot): void {
  for (const [slot, t] of seen) {
    const p = into.get(slot)
    if (!p) {
      into.set(slot, {packets: t.packets, bytes: t.bytes, spread: t.spread && {...t.spread}})
      continue
    }
    p.packets += t.packets
    p.bytes += t.bytes
    if (!t.spread) continue
    const s = (p.spread ??= {packets: 0, bytes: 0, squares: 0})
    s.packets += t.spread.packets
    s.bytes += t.spread.bytes
    s.squares += t.spread.squares
  }
}
