/**
 * The flows the daemon holds for one meter set, and when each ends: what a drain takes out of
 * the kernel is merged into the flow cache (one per family), and the flows that ended are written
 * as rows of FlowBatches handed to the outputs.
 *
 * Expiry per flow, with IPFIX flowEndReason (IE 136):
 *   idle timeout (1): no packet for idleTimeout;
 *   active timeout (2): the flow is older than activeTimeout: exported, and its next packets
 *     start a new record (so a long flow goes out every interval, as deltas);
 *   end of flow (3): FIN or RST seen, and no packet in the latest drain;
 *   forced end (4): shutdown, or the meter is detached (or replaced by another at its path: the
 *     daemon holds the old set's maps, so they live until finalDrain() has taken their flows out);
 *   lack of resources (5): the cache is full (twice a flow map's capacity): a new flow is
 *     exported at once instead of being held.
 */
import {forEachFlow, forEachFlowAhead, type FlowMapReadOptions, type FlowVisitor} from '../bpf/flow-map-reader.js'
import type {FamilyCaches} from '../bpf/flow-store.js'
import {emptySample, FLOW_KEY4, FLOW_KEY6, interfaceSlot, keySamplingInterval} from '../bpf/layout.js'
import type {BpfMap} from '../bpf/libbpf.js'
import {END_REASON, FlowBatch} from '../flow/batch.js'
import {FlowRtts} from '../flow/handshake-rtt.js'
import type {FoundKeys} from '../flow/key-index.js'
import {TCP_FIN, TCP_RST} from '../flow/protocols.js'
import {FAMILIES, type Family} from '../flow/record.js'
import {clockOffsetNs, monotonicNowNs} from '../sys/clock.js'
import {fillCounters, fillKey} from './batch-rows.js'
import type {DropTable} from './drop-table.js'

/** Entries per read of a drained flow map (one bpf() call; the next ones are read ahead meanwhile). */
const READ_BATCH = 8192
/**
 * A drained map expected to hold fewer entries than this is read at once, in this thread (a read
 * batch or a few: well under a millisecond); a larger one with the next read batch read ahead in
 * one of libuv's threads while this one is merged.
 */
const READ_AHEAD_FROM = 4 * READ_BATCH
/** Rows of a FlowBatch of ended flows: handed to the outputs whenever one is full. */
const EXPORT_BATCH = 8192
/**
 * How long the round trips of a timed flow wait for its record beyond the active timeout (or, with
 * none, at all): a flow exported without a look at the table (its first drain's, when the cache was
 * full) leaves them behind.
 */
const RTT_KEPT_NS = 60e9
const RTT_KEPT_WITHOUT_ACTIVE_TIMEOUT_NS = 3600e9
/** What the expiry sample's next hop points at between drains. */
const NO_NEXT_HOP = new Uint8Array(16)

export interface DrainPolicy {
  idleTimeoutNs: number
  activeTimeoutNs: number
}

/** Sends a batch of ended flows to every output; called synchronously during the drain. */
export type ExportSink = (batch: FlowBatch) => void

/**
 * The traffic one interface and direction carried as the meter's flows tell it: their packets and
 * IP bytes, each flow's counts times the N it was counted 1 packet in (exact when N is 1), and
 * how far sampling may put those estimates off.
 */
export interface InterfaceTally {
  packets: number
  bytes: number
  /**
   * Sums over the flows counted 1 packet in N > 1, k packets and b bytes counted, of N(N-1)k,
   * N(N-1)b and N(N-1)b²/k: with each packet counted at random with probability 1/N, the
   * variance of the packets estimate, its covariance with the bytes estimate, and the variance
   * of the bytes estimate (as if a flow's packets were all of one size). Absent without sampling.
   */
  spread?: {packets: number; bytes: number; squares: number}
}

/** Adds a flow's counts, taken 1 packet in `interval`, to a tally (see InterfaceTally). */
export function addToTally(tally: InterfaceTally, packets: number, bytes: number, interval: number): void {
  if (interval <= 1) {
    tally.packets += packets
    tally.bytes += bytes
    return
  }
  tally.packets += packets * interval
  tally.bytes += bytes * interval
  if (packets === 0) return
  const weight = interval * (interval - 1)
  const spread = (tally.spread ??= {packets: 0, bytes: 0, squares: 0})
  spread.packets += weight * packets
  spread.bytes += weight * bytes
  spread.squares += (weight * bytes * bytes) / packets
}

/** The traffic per interface and direction (key `ifindex * 2 + direction`), as estimates (InterfaceTally). */
export type SeenBySlot = Map<number, InterfaceTally>

export class HeldFlows {
  readonly caches: FamilyCaches
  private readonly batches: Record<Family, FlowBatch>
  private policy: DrainPolicy = {idleTimeoutNs: Infinity, activeTimeoutNs: Infinity}
  private offsetNs = 0
  private nowNs = 0
  /** Flows exported by the drain under way, by flowEndReason. */
  exported: Record<number, number> = {}
  /** What the drain under way read from the kernel, per interface and direction. */
  seen: SeenBySlot = new Map()
  private marks = new Uint8Array(0)
  /** Each flow's cache entry (or -1), for one read batch. */
  private found = new Int32Array(READ_BATCH)
  private readonly sample = emptySample()
  /** The round trips of the flows of timed TCP connections, until each flow's first record goes out. */
  readonly rtts = new FlowRtts()
  /** The drops of the set's flows, when its drops are counted: each exported row takes its flow's. */
  drops?: DropTable

  constructor(caches: FamilyCaches, netns: string, observationDomainId: number) {
    this.caches = caches
    const batch = (family: Family) => {
      const b = new FlowBatch(family, EXPORT_BATCH)
      b.netns = netns
      b.observationDomainId = observationDomainId
      return b
    }
    this.batches = {4: batch(4), 6: batch(6)}
  }

  /** Whether the cache holds the flow of these key bytes (the kernel's flow key of its family). */
  holds(family: Family, key: Buffer): boolean {
    const found = new Int32Array(1)
    this.caches[family].findMany(key, 0, key.length, 1, found)
    return found[0] >= 0
  }

  /** Flows held now. */
  get size(): number {
    return this.caches[4].size + this.caches[6].size
  }

  /**
   * Lets go of what the expiry sample last pointed at: its next hop is a view of a record, perhaps
   * in a slab the cache has since given back.
   */
  release(): void {
    this.sample.nextHopBytes = NO_NEXT_HOP
    this.sample.nextHopOffset = 0
  }

  /** Starts a drain: its policy and clock; what it exports and sees is counted from 0. */
  begin(policy: DrainPolicy): void {
    this.policy = policy
    this.offsetNs = Number(clockOffsetNs())
    this.nowNs = Number(monotonicNowNs())
    this.exported = {}
    this.seen = new Map()
    if (this.rtts.size) {
      const active = Number.isFinite(policy.activeTimeoutNs) ? policy.activeTimeoutNs : RTT_KEPT_WITHOUT_ACTIVE_TIMEOUT_NS
      this.rtts.prune(this.nowNs - active - RTT_KEPT_NS)
    }
  }

  /** Row `j`'s round trips, if the flow has them (taken from the table: its first record carries them). */
  private fillRtt(batch: FlowBatch, j: number, keys: Uint8Array, ko: number): void {
    const rtt = batch.proto[j] === 6 ? this.rtts.take(batch.family, keys, ko, batch.family === 4 ? FLOW_KEY4.size : FLOW_KEY6.size) : undefined
    if (rtt) batch.setRtt(j, rtt.clientUs, rtt.serverUs)
  }

  /**
   * Why a flow ends now, or 0 if it goes on. `quiet`: it had no packet in this drain. A flow
   * read at shutdown that saw FIN or RST ended by itself, whatever else holds.
   */
  private endReason(first: number, last: number, flags: number, quiet: boolean, force: boolean): number {
    const idle = this.nowNs - last >= this.policy.idleTimeoutNs
    // A connection that said FIN or RST ended by itself, however long it has been quiet since.
    if (flags & (TCP_FIN | TCP_RST) && (quiet || force || idle)) return END_REASON.endOfFlowDetected
    if (idle) return END_REASON.idleTimeout
    if (this.nowNs - first >= this.policy.activeTimeoutNs) return END_REASON.activeTimeout
    return force ? END_REASON.forcedEnd : 0
  }

  /**
   * Merges every entry of a drained flow map into the cache (see merger): a map expected to hold
   * many entries with the next read batch read ahead in one of libuv's threads meanwhile.
   */
  merge(family: Family, map: BpfMap, round: number, direct: boolean, sink: ExportSink, expected: number | undefined): Promise<number> | number {
    const [, visitor, options] = this.merger(family, map, round, direct, sink)
    if (expected !== undefined && expected < READ_AHEAD_FROM) return forEachFlow(map, visitor, options)
    return forEachFlowAhead(map, visitor, options)
  }

  /**
   * What merges every entry of a drained flow map into the cache, as forEachFlow's arguments. A
   * flow not held in the cache that has already ended when read (every flow with `direct`, i.e.
   * forced drains; otherwise one read after its idle or active timeout, as after a daemon
   * restart), or that finds the cache full, is exported as it is read.
   */
  merger(family: Family, map: BpfMap, round: number, direct: boolean, sink: ExportSink): [BpfMap, FlowVisitor, FlowMapReadOptions] {
    const cache = this.caches[family]
    const batch = this.batches[family]
    const seen = this.seen
    const keySize = map.info.keySize
    let found = this.found
    let lookup: FoundKeys | undefined
    const visitor: FlowVisitor = (keys, ko, sample, i) => {
      const slot = interfaceSlot(keys, ko)
      let tally = seen.get(slot)
      if (!tally) seen.set(slot, (tally = {packets: 0, bytes: 0}))
      addToTally(tally, sample.packets, sample.bytes, keySamplingInterval(keys, ko))
      let idx = found[i]
      if (idx < 0) {
        const ended = this.endReason(sample.firstNs, sample.lastNs, sample.tcpFlags, false, direct)
        if (ended || cache.full) {
          if (batch.full) this.flushBatch(batch, sink)
          const reason = ended || END_REASON.lackOfResources
          const j = batch.length++
          fillKey(batch, j, keys, ko)
          this.fillRtt(batch, j, keys, ko)
          fillCounters(batch, j, sample, reason, this.offsetNs)
          this.drops?.attach(batch, j, keys, ko, keySize)
          this.exported[reason] = (this.exported[reason] ?? 0) + 1
          return
        }
        idx = cache.insertFound(lookup!, i)
      }
      cache.merge(idx, sample)
      cache.gen[idx] = round
    }
    const options: FlowMapReadOptions = {
      batchEntries: READ_BATCH,
      onBatch: (keys, n) => {
        // (A read batch can outgrow READ_BATCH: a read retries with room for a whole hash bucket.)
        if (found.length < n) found = this.found = new Int32Array(n)
        lookup = cache.findMany(keys, 0, keySize, n, found)
      },
    }
    return [map, visitor, options]
  }

  /** Hands the rows of ended flows not yet handed over to the outputs. */
  flushBatches(sink: ExportSink): void {
    for (const family of FAMILIES) if (this.batches[family].length) this.flushBatch(this.batches[family], sink)
  }

  private flushBatch(batch: FlowBatch, sink: ExportSink): void {
    sink(batch)
    batch.clear()
  }

  /**
   * Exports every flow held that has ended by now (with `force`, every one): `round` is the drain
   * now, by which a flow without packets in it is known.
   */
  expireAll(force: boolean, round: number, sink: ExportSink): void {
    if (this.size === 0) return
    this.nowNs = Number(monotonicNowNs())
    for (const family of FAMILIES) this.expire(family, force, round, sink)
  }

  private expire(family: Family, force: boolean, round: number, sink: ExportSink): void {
    if (force) return this.expireEvery(family, round, sink)
    const cache = this.caches[family]
    const batch = this.batches[family]
    const sample = this.sample
    // Ended entries are marked and removed together afterwards (one compaction of the cache):
    // removing them one by one costs an index repair each.
    const ended = this.endedMarks(cache.size)
    const keySize = family === 4 ? FLOW_KEY4.size : FLOW_KEY6.size
    let count = 0
    for (let idx = 0; idx < cache.size; idx++) {
      cache.read(idx, sample)
      const reason = this.endReason(sample.firstNs, sample.lastNs, sample.tcpFlags, cache.gen[idx] < round, force)
      if (!reason) continue
      if (batch.full) this.flushBatch(batch, sink)
      const j = batch.length++
      fillKey(batch, j, cache.slabOf(idx), cache.recordAt(idx))
      this.fillRtt(batch, j, cache.slabOf(idx), cache.recordAt(idx))
      fillCounters(batch, j, sample, reason, this.offsetNs)
      this.drops?.attach(batch, j, cache.slabOf(idx), cache.recordAt(idx), keySize)
      this.exported[reason] = (this.exported[reason] ?? 0) + 1
      ended[idx] = 1
      count++
    }
    if (batch.length) this.flushBatch(batch, sink)
    if (count === cache.size) cache.clear()
    else if (count) cache.removeMarked(ended)
  }

  /**
   * Exports every flow held (a forced drain), a slab of the cache at a time from its last
   * (FlowCache.removeEachSlab): each slab's rows are handed to the outputs before its memory goes
   * back, so that the cache shrinks as the messages of its flows grow.
   */
  private expireEvery(family: Family, round: number, sink: ExportSink): void {
    const cache = this.caches[family]
    const batch = this.batches[family]
    const sample = this.sample
    const keySize = family === 4 ? FLOW_KEY4.size : FLOW_KEY6.size
    cache.removeEachSlab((from, to) => {
      for (let idx = from; idx < to; idx++) {
        cache.read(idx, sample)
        // (Forced: every flow ends, for a reason of its own or as forcedEnd.)
        const reason = this.endReason(sample.firstNs, sample.lastNs, sample.tcpFlags, cache.gen[idx] < round, true) || END_REASON.forcedEnd
        if (batch.full) this.flushBatch(batch, sink)
        const j = batch.length++
        fillKey(batch, j, cache.slabOf(idx), cache.recordAt(idx))
        this.fillRtt(batch, j, cache.slabOf(idx), cache.recordAt(idx))
        fillCounters(batch, j, sample, reason, this.offsetNs)
        this.drops?.attach(batch, j, cache.slabOf(idx), cache.recordAt(idx), keySize)
        this.exported[reason] = (this.exported[reason] ?? 0) + 1
      }
      if (batch.length) this.flushBatch(batch, sink)
      // The sample's next hop is a view of the slab about to go.
      this.release()
    })
  }

  /** A zeroed mark per cache entry, reused between drains. */
  private endedMarks(size: number): Uint8Array {
    if (this.marks.length < size) this.marks = new Uint8Array(Math.max(size, 2 * this.marks.length))
    else this.marks.fill(0, 0, size)
    return this.marks
  }
}
