/**
 * Taking flows out of one meter set and deciding when each is exported.
 *
 * A drain takes each family's live flow map out whole (src/bpf/flow-store.ts: a fresh map goes
 * into the program's slot; the old one stays pinned until the drain commits), merges its entries
 * into the flow cache, exports the flows that ended, and commits: the cache goes back to the
 * kernel as a snapshot, and one update of drain_state makes it the current one. A daemon that
 * starts loads the snapshot and merges any drained map a cut-short drain left behind: a SIGKILL
 * at any moment can make a flow be sent twice, never lost.
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
import {forEachFlow} from '../bpf/flow-map-reader.js'
import type {FlowStore as FlowStoreType, FamilyCaches} from '../bpf/flow-store.js'
import {FlowStore} from '../bpf/flow-store.js'
import {emptySample, interfaceSlot, KEY, keySamplingInterval, readU32, srcOffset} from '../bpf/layout.js'
import type {BpfMap} from '../bpf/libbpf.js'
import type {MeterSet} from '../bpf/meter-set.js'
import {FlowBatch, END_REASON} from '../flow/batch.js'
import type {FoundKeys} from '../flow/key-index.js'
import {TCP_FIN, TCP_RST} from '../flow/protocols.js'
import {FAMILIES, type Family, type FlowSample} from '../flow/record.js'
import {clockOffsetNs, monotonicNowNs} from '../sys/clock.js'

/** Entries per read of a drained flow map (one bpf() call; the next ones are read ahead meanwhile). */
const READ_BATCH = 8192
/** Rows of a FlowBatch of ended flows: handed to the outputs whenever one is full. */
const EXPORT_BATCH = 8192
/** What the expiry sample's next hop points at between drains. */
const NO_NEXT_HOP = new Uint8Array(16)

export interface DrainPolicy {
  idleTimeoutNs: number
  activeTimeoutNs: number
}

export interface DrainReport {
  /** Entries read from the kernel's flow maps. */
  taken: number
  /** Flows exported, by flowEndReason. */
  exported: Record<number, number>
  /** Flows held for a later export. */
  pending: number
  ms: number
  /**
   * Where the time went: taking the live maps out (swapMs), reading and merging them, with the
   * exports of flows that ended before they were read (mergeMs), expiring and exporting the
   * cache (expireMs), writing the snapshot (commitMs).
   */
  phases: {swapMs: number; mergeMs: number; expireMs: number; commitMs: number}
  /**
   * What the meter counted since the previous drain, per interface and direction (key
   * `ifindex * 2 + direction`): the packets and IP bytes of the entries taken, before any
   * expiry, as estimates of the traffic (a flow counted 1 packet in N, times N). The metrics
   * compare it with the interfaces' own counters.
   */
  seen: Map<number, InterfaceTally>
  /** Entries taken from each family's flow maps: how full they got since the previous drain. */
  takenByFamily: Record<Family, number>
}

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

/** A live flow map the last drain of a set could not read: its flows are lost. */
interface UnreadMap {
  family: Family
  /** Entries it held, when they could still be counted. */
  entries?: number
  error: string
}

export interface FinalDrainReport extends DrainReport {
  unread: UnreadMap[]
}

/** Sends a batch of ended flows to every output; called synchronously during the drain. */
export type ExportSink = (batch: FlowBatch) => void

export class MeterSetDrainer {
  readonly set: MeterSet
  readonly observationDomainId: number
  readonly netns: string
  private readonly store: FlowStoreType
  private readonly caches: FamilyCaches
  private readonly batches: Record<Family, FlowBatch>
  /** The drain running now (or the last one): entries merged by it carry it in `gen`. */
  private gen = 0
  private offsetNs = 0
  private policy: DrainPolicy = {idleTimeoutNs: Infinity, activeTimeoutNs: Infinity}
  private nowNs = 0
  private exported: Record<number, number> = {}
  private seen = new Map<number, InterfaceTally>()
  private marks = new Uint8Array(0)
  /** Each flow's cache entry (or -1), for one read batch. */
  private found = new Int32Array(READ_BATCH)
  private readonly sample = emptySample()

  private constructor(set: MeterSet, netns: string, domain: number, store: FlowStoreType) {
    this.set = set
    this.netns = netns
    this.observationDomainId = domain
    this.store = store
    this.caches = store.newCaches()
    const batch = (family: Family) => {
      const b = new FlowBatch(family, EXPORT_BATCH)
      b.netns = netns
      b.observationDomainId = domain
      return b
    }
    this.batches = {4: batch(4), 6: batch(6)}
    this.gen = store.gen
  }

  /** Opens the meter set's maps, loads the flows held for it, and finishes a drain a crash cut short. */
  static open(set: MeterSet, netns: string, observationDomainId: number, sink: ExportSink): MeterSetDrainer {
    const store = FlowStore.open(set)
    try {
      const drainer = new MeterSetDrainer(set, netns, observationDomainId, store)
      drainer.recover(sink)
      return drainer
    } catch (error) {
      store.close()
      throw error
    }
  }

  /** Which meter set this drainer opened (MeterSet.identity() of the set it found pinned). */
  get identity(): number {
    return this.store.identity
  }

  /** Flows each flow map of the set this drainer holds can take. */
  get capacity(): number {
    return this.store.capacity
  }

  /** One of the set's maps, from the directory this drainer holds. */
  openMap(name: string): BpfMap {
    return this.store.openMap(name)
  }

  /** Flows held in the cache now. */
  get pending(): number {
    return this.caches[4].size + this.caches[6].size
  }

  close(): void {
    this.store.close()
  }

  private recover(sink: ExportSink): void {
    this.store.loadSnapshot(this.caches)
    this.store.removeStrayChunks()
    const leftovers = this.store.leftovers()
    if (leftovers.length === 0) return
    this.startClock()
    try {
      for (const l of leftovers) {
        this.gen = Math.max(this.gen, l.gen)
        this.merge(l.family, l.map, false, sink)
      }
      this.flushBatches(sink)
      this.store.commit(this.gen, this.caches)
    } finally {
      for (const l of leftovers) l.map.close()
    }
  }

  /**
   * One drain of this meter set. With `force` (shutdown, detach), every flow is exported now,
   * the flows held in the cache included.
   */
  drain(policy: DrainPolicy, sink: ExportSink, force = false): DrainReport {
    const started = performance.now()
    this.policy = policy
    this.startClock()
    const gen = this.gen + 1
    this.gen = gen
    let taken = 0
    const takenByFamily: Record<Family, number> = {4: 0, 6: 0}
    const drained: BpfMap[] = []
    const phases = {swapMs: 0, mergeMs: 0, expireMs: 0, commitMs: 0}
    let t = started
    const lap = (phase: keyof typeof phases) => {
      const now = performance.now()
      phases[phase] += now - t
      t = now
    }
    try {
      for (const family of FAMILIES) {
        const map = this.store.swapOut(family, gen)
        drained.push(map)
        lap('swapMs')
        const n = this.merge(family, map, force, sink)
        takenByFamily[family] = n
        taken += n
        lap('mergeMs')
      }
      this.flushBatches(sink)
      this.nowNs = Number(monotonicNowNs())
      for (const family of FAMILIES) this.expire(family, force, gen, sink)
      lap('expireMs')
      this.store.commit(gen, this.caches)
      lap('commitMs')
    } finally {
      for (const m of drained) m.close()
      // The sample's next hop is a view of what it was last read from, perhaps a slab the
      // cache has since given back: let that go with the cache's own references.
      this.sample.nextHopBytes = NO_NEXT_HOP
      this.sample.nextHopOffset = 0
    }
    return {taken, exported: this.exported, pending: this.pending, ms: performance.now() - started, phases, seen: this.seen, takenByFamily}
  }

  /**
   * The last drain of a meter set whose pins are gone (detached, replaced by another set at its
   * path, bpffs remounted). The maps live on while this drainer holds them: each live map is
   * taken out without a pin (there is no directory left for one) and read, and every flow, read
   * or held in the cache, is exported now (forced end, unless it ended otherwise). Nothing is
   * committed: there are no pins left to commit into. A live map that cannot be taken out is
   * read in place; one that cannot be read at all is named in `unread`. Close the drainer after.
   */
  finalDrain(policy: DrainPolicy, sink: ExportSink): FinalDrainReport {
    const started = performance.now()
    this.policy = policy
    this.startClock()
    this.gen++
    let taken = 0
    const takenByFamily: Record<Family, number> = {4: 0, 6: 0}
    const unread: UnreadMap[] = []
    const phases = {swapMs: 0, mergeMs: 0, expireMs: 0, commitMs: 0}
    let t = started
    const lap = (phase: keyof typeof phases) => {
      const now = performance.now()
      phases[phase] += now - t
      t = now
    }
    try {
      for (const family of FAMILIES) {
        let map: BpfMap | undefined
        try {
          try {
            map = this.store.swapOut(family)
          } catch {
            // (No memory for a fresh map, say.) The programs of a detached set are gone: the
            // live map is not written any more, and can be read where it is.
            map = this.store.families[family].openLive()
          }
          lap('swapMs')
          const n = this.merge(family, map, true, sink)
          takenByFamily[family] = n
          taken += n
          lap('mergeMs')
        } catch (error) {
          unread.push({family, error: (error as Error).message, entries: countQuietly(map)})
        } finally {
          map?.close()
        }
      }
      this.flushBatches(sink)
      this.nowNs = Number(monotonicNowNs())
      for (const family of FAMILIES) this.expire(family, true, this.gen, sink)
      lap('expireMs')
    } finally {
      this.sample.nextHopBytes = NO_NEXT_HOP
      this.sample.nextHopOffset = 0
    }
    return {taken, exported: this.exported, pending: this.pending, ms: performance.now() - started, phases, seen: this.seen, takenByFamily, unread}
  }

  private startClock(): void {
    this.offsetNs = Number(clockOffsetNs())
    this.nowNs = Number(monotonicNowNs())
    this.exported = {}
    this.seen = new Map()
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
   * Merges every entry of a drained flow map into the cache. A flow not held in the cache that
   * has already ended when read (every flow with `direct`, i.e. forced drains; otherwise one read
   * after its idle or active timeout, as after a daemon restart), or that finds the cache full, is
   * exported as it is read.
   */
  private merge(family: Family, map: BpfMap, direct: boolean, sink: ExportSink): number {
    const cache = this.caches[family]
    const batch = this.batches[family]
    const seen = this.seen
    const gen = this.gen
    const keySize = map.info.keySize
    let found = this.found
    let lookup: FoundKeys | undefined
    return forEachFlow(
      map,
      (keys, ko, sample, i) => {
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
            fillCounters(batch, j, sample, reason, this.offsetNs)
            this.exported[reason] = (this.exported[reason] ?? 0) + 1
            return
          }
          idx = cache.insertFound(lookup!, i)
        }
        cache.merge(idx, sample)
        cache.gen[idx] = gen
      },
      {
        batchEntries: READ_BATCH,
        readAhead: true,
        onBatch: (keys, n) => {
          // (A read batch can outgrow READ_BATCH: a read retries with room for a whole hash bucket.)
          if (found.length < n) found = this.found = new Int32Array(n)
          lookup = cache.findMany(keys, 0, keySize, n, found)
        },
      },
    )
  }

  private flushBatches(sink: ExportSink): void {
    for (const family of FAMILIES) if (this.batches[family].length) this.flushBatch(this.batches[family], sink)
  }

  private flushBatch(batch: FlowBatch, sink: ExportSink): void {
    sink(batch)
    batch.clear()
  }

  private expire(family: Family, force: boolean, gen: number, sink: ExportSink): void {
    const cache = this.caches[family]
    const batch = this.batches[family]
    const sample = this.sample
    // Ended entries are marked and removed together afterwards (one compaction of the cache):
    // removing them one by one costs an index repair each.
    const ended = this.endedMarks(cache.size)
    let count = 0
    for (let idx = 0; idx < cache.size; idx++) {
      cache.read(idx, sample)
      const reason = this.endReason(sample.firstNs, sample.lastNs, sample.tcpFlags, cache.gen[idx] < gen, force)
      if (!reason) continue
      if (batch.full) this.flushBatch(batch, sink)
      const j = batch.length++
      fillKey(batch, j, cache.slabOf(idx), cache.recordAt(idx))
      fillCounters(batch, j, sample, reason, this.offsetNs)
      this.exported[reason] = (this.exported[reason] ?? 0) + 1
      ended[idx] = 1
      count++
    }
    if (batch.length) this.flushBatch(batch, sink)
    if (count === cache.size) cache.clear()
    else if (count) cache.removeMarked(ended)
  }

  /** A zeroed mark per cache entry, reused between drains. */
  private endedMarks(size: number): Uint8Array {
    if (this.marks.length < size) this.marks = new Uint8Array(Math.max(size, 2 * this.marks.length))
    else this.marks.fill(0, 0, size)
    return this.marks
  }
}

/** Entries in `map`, or undefined when it cannot be read (or was not opened). */
function countQuietly(map: BpfMap | undefined): number | undefined {
  try {
    return map?.count()
  } catch {
    return undefined
  }
}

/** The key columns of batch row `j` from kernel key bytes at `ko`. */
function fillKey(batch: FlowBatch, j: number, keys: Uint8Array, ko: number): void {
  batch.ifindex[j] = readU32(keys, ko + KEY.ifindex.offset)
  batch.direction[j] = keys[ko + KEY.direction.offset]
  batch.proto[j] = keys[ko + KEY.proto.offset]
  batch.vlanId[j] = keys[ko + KEY.vlanId.offset] | (keys[ko + KEY.vlanId.offset + 1] << 8)
  batch.innerVlanId[j] = keys[ko + KEY.innerVlanId.offset] | (keys[ko + KEY.innerVlanId.offset + 1] << 8)
  batch.samplingInterval[j] = keySamplingInterval(keys, ko)
  batch.sport[j] = (keys[ko + KEY.sport.offset] << 8) | keys[ko + KEY.sport.offset + 1]
  batch.dport[j] = (keys[ko + KEY.dport.offset] << 8) | keys[ko + KEY.dport.offset + 1]
  const len = batch.addrLen
  const src = batch.src
  const dst = batch.dst
  for (let k = 0, at = j * len, from = ko + srcOffset(batch.family); k < len; k++) {
    src[at + k] = keys[from + k]
    dst[at + k] = keys[from + len + k]
  }
}

/** The counter columns of batch row `j` (times turned from CLOCK_MONOTONIC ns into epoch µs). */
function fillCounters(batch: FlowBatch, j: number, s: FlowSample, reason: number, offsetNs: number): void {
  batch.packets[j] = s.packets
  batch.bytes[j] = s.bytes
  batch.startUs[j] = (s.firstNs + offsetNs) / 1000
  batch.endUs[j] = (s.lastNs + offsetNs) / 1000
  batch.tcpFlags[j] = s.tcpFlags
  batch.tos[j] = s.tos
  batch.peerIfindex[j] = s.peerIfindex
  batch.minTtl[j] = s.minTtl
  batch.maxTtl[j] = s.maxTtl
  batch.fwdStatus[j] = s.fwdStatus
  const len = batch.addrLen
  for (let k = 0; k < len; k++) batch.nextHop[j * len + k] = s.nextHopBytes[s.nextHopOffset + k]
  batch.endReason[j] = reason
}
