/**
 * Taking flows out of one meter set and deciding when each is exported.
 *
 * A drain, per address family: the idle flow map is processed (normally empty; it holds flows
 * after a crash or a flush), then the live map is swapped out and processed. Processing a map
 * reads it in chunks; each chunk is merged into the flow cache and written to the kernel's
 * pending map before it is deleted from the flow map, so that at every instant each count is in
 * the kernel at least once. Each pass is journaled (drain_state: its generation, in progress)
 * and stamps the pending records it writes with that generation; a daemon that finds a pass in
 * progress at start resumes it, skipping the entries it had already merged. Exporting happens
 * after the pass, and a flow leaves the pending map only after it was sent: a SIGKILL at the
 * wrong moment can make a flow be sent twice, never lost.
 *
 * Expiry per flow, with IPFIX flowEndReason (IE 136):
 *   idle timeout (1): no packet for idleTimeout;
 *   active timeout (2): the flow is older than activeTimeout: exported, and its next packets
 *     start a new record (so a long flow goes out every interval, as deltas);
 *   end of flow (3): FIN or RST seen, and no packet in the latest drain;
 *   forced end (4): shutdown, or the meter is detached;
 *   lack of resources (5): the cache (and the pending map behind it) is full: a new flow is
 *     exported at once instead of being held.
 */
import {C, DRAIN_STATE, FLOW_RECORD, K, R} from '../bpf/layout.js'
import {FAMILIES, type Family} from '../flow/record.js'
import {type BpfMap, numPossibleCpus} from '../bpf/libbpf.js'
import {type FamilyMaps, type MeterSet} from '../bpf/meter-set.js'
import {FlowBatch, END_REASON} from '../flow/batch.js'
import {FlowCache} from '../flow/flow-cache.js'
import {TCP_FIN, TCP_RST} from '../flow/protocols.js'
import {clockOffsetNs, monotonicNowNs} from '../sys/clock.js'

export const CHUNK = 8192
const TWO_32 = 4_294_967_296

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
   * What the meter counted since the previous drain, per interface and direction (key
   * `ifindex * 2 + direction`): the packets and IP bytes of the entries taken, before any
   * expiry. The metrics compare it with the interfaces' own counters.
   */
  seen: Map<number, {packets: number; bytes: number}>
  /** Entries taken from each family's flow maps: how full they got since the previous drain. */
  takenByFamily: Record<Family, number>
}

/** Sends a batch of ended flows to every output; called synchronously during the drain. */
export type ExportSink = (batch: FlowBatch) => void

interface FamilyState {
  family: Family
  maps: FamilyMaps
  cache: FlowCache
  batch: FlowBatch
  keySize: number
  /** Keys of the flows in `batch` that are in the pending map, to delete once sent. */
  pendingKeys: Buffer
  pendingCount: number
  /** Buffers for writing a chunk to the pending map. */
  recordKeys: Buffer
  recordValues: Buffer
}

function u64(buf: Buffer, off: number): number {
  return buf.readUInt32LE(off) + buf.readUInt32LE(off + 4) * TWO_32
}

/** The u64 at byte `off` of a batch buffer seen as host-order 32-bit words (see `words`). */
function u64w(w: Uint32Array, off: number): number {
  return w[off >>> 2] + w[(off >>> 2) + 1] * TWO_32
}

/**
 * A batch buffer as host-order 32-bit words, for reading counters without Buffer's bounds-checked
 * methods. The batch buffers are whole allocations, so aligned; the values are in the kernel's
 * (host) byte order.
 */
function words(buf: Buffer): Uint32Array {
  if (buf.byteOffset % 4) throw new Error('batch buffer not aligned')
  return new Uint32Array(buf.buffer, buf.byteOffset, buf.length >>> 2)
}

function putU64(buf: Buffer, off: number, value: number): void {
  buf.writeUInt32LE(value >>> 0, off)
  buf.writeUInt32LE(Math.floor(value / TWO_32), off + 4)
}

export class MeterSetDrainer {
  readonly set: MeterSet
  readonly observationDomainId: number
  readonly netns: string
  private readonly families: FamilyState[]
  private readonly drainState: BpfMap
  private readonly cpus = numPossibleCpus()
  private gen = 0
  private offsetNs = 0
  /** Set while a pass runs: entries already stamped with it are not merged again. */
  private passGen = 0
  /** The drain in progress: its policy, clock, and what it exported. */
  private policy: DrainPolicy = {idleTimeoutNs: Infinity, activeTimeoutNs: Infinity}
  private nowNs = 0
  private exported: Record<number, number> = {}
  private seen = new Map<number, {packets: number; bytes: number}>()

  private constructor(set: MeterSet, netns: string, domain: number, families: FamilyState[], drainState: BpfMap) {
    this.set = set
    this.netns = netns
    this.observationDomainId = domain
    this.families = families
    this.drainState = drainState
  }

  /** Opens the meter set's maps, reads back held flows, and finishes a pass a crash interrupted. */
  static open(set: MeterSet, netns: string, observationDomainId: number, sink: ExportSink): MeterSetDrainer {
    const families: FamilyState[] = []
    let drainState: BpfMap | undefined
    try {
      for (const family of FAMILIES) {
        const maps = set.openFamily(family)
        const keySize = maps.pending.info.keySize
        const batch = new FlowBatch(family, CHUNK)
        batch.netns = netns
        batch.observationDomainId = observationDomainId
        families.push({
          family,
          maps,
          keySize,
          cache: new FlowCache(keySize, maps.pending.info.maxEntries),
          batch,
          pendingKeys: Buffer.alloc(CHUNK * keySize),
          pendingCount: 0,
          recordKeys: Buffer.alloc(CHUNK * keySize),
          recordValues: Buffer.alloc(CHUNK * FLOW_RECORD.size),
        })
      }
      drainState = set.openMap('drain_state')
    } catch (error) {
      for (const f of families) f.maps.close()
      throw error
    }
    const drainer = new MeterSetDrainer(set, netns, observationDomainId, families, drainState)
    drainer.recover(sink)
    return drainer
  }

  /** Flows held in the cache now. */
  get pending(): number {
    return this.families.reduce((n, f) => n + f.cache.size, 0)
  }

  close(): void {
    for (const f of this.families) f.maps.close()
    this.drainState.close()
  }

  private readJournal(): {gen: number; inProgress: boolean} {
    const value = this.drainState.lookup(Buffer.alloc(4))!
    return {gen: u64(value, 0), inProgress: value.readUInt32LE(8) !== 0}
  }

  private writeJournal(gen: number, inProgress: boolean): void {
    const value = Buffer.alloc(DRAIN_STATE.size)
    putU64(value, 0, gen)
    value.writeUInt32LE(inProgress ? 1 : 0, 8)
    this.drainState.update(Buffer.alloc(4), value)
  }

  private recover(sink: ExportSink): void {
    for (const f of this.families) {
      f.maps.pending.forEachBatch((keys, values, n) => {
        for (let i = 0; i < n; i++) {
          const idx = f.cache.insert(keys, i * f.keySize)
          const o = i * FLOW_RECORD.size
          f.cache.packets[idx] = u64(values, o + R.packets)
          f.cache.bytes[idx] = u64(values, o + R.bytes)
          f.cache.firstNs[idx] = u64(values, o + R.firstSeen)
          f.cache.lastNs[idx] = u64(values, o + R.lastSeen)
          f.cache.gen[idx] = u64(values, o + R.drainGen)
          f.cache.tcpFlags[idx] = values[o + R.tcpFlags]
          f.cache.tos[idx] = values[o + R.ipTos]
        }
      })
    }
    const journal = this.readJournal()
    this.gen = journal.gen
    if (journal.inProgress) {
      // Resume the interrupted pass: the map it was reading is the idle one now.
      this.startClock()
      this.passGen = journal.gen
      for (const f of this.families) this.processMap(f, f.maps.idle(), false, sink)
      this.flushLackOfResources(sink)
      this.writeJournal(this.gen, false)
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
    let taken = 0
    const takenByFamily: Record<Family, number> = {4: 0, 6: 0}
    const passesStart = this.gen + 1
    for (const f of this.families) {
      const n = this.pass(f, () => f.maps.idle(), force, sink) + this.pass(f, () => f.maps.swap(), force, sink)
      takenByFamily[f.family] = n
      taken += n
    }
    this.writeJournal(this.gen, false)
    this.nowNs = Number(monotonicNowNs())
    for (const f of this.families) this.expire(f, force, passesStart, sink)
    return {taken, exported: this.exported, pending: this.pending, ms: performance.now() - started, seen: this.seen, takenByFamily}
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

  /** Journals a new pass, then processes the map `open` yields (the swap happens after the journal entry). */
  private pass(f: FamilyState, open: () => BpfMap, force: boolean, sink: ExportSink): number {
    this.gen++
    this.passGen = this.gen
    this.writeJournal(this.gen, true)
    const taken = this.processMap(f, open(), force, sink)
    this.flushLackOfResources(sink)
    return taken
  }

  /**
   * Merges every entry of a quiescent flow map into the cache (and the pending map), chunk by
   * chunk, deleting each chunk from the flow map once it is safe elsewhere. A flow not held in
   * the cache that has already ended when read (every flow with `direct`, i.e. forced drains;
   * otherwise one read after its idle or active timeout, as after a daemon restart) skips the
   * pending map and is exported as it is read, before its chunk is deleted: the same flows leave
   * with the same reasons as through the cache, with two map writes fewer each.
   */
  private processMap(f: FamilyState, map: BpfMap, direct: boolean, sink: ExportSink): number {
    const {cache, keySize, batch} = f
    const stride = map.valueBytes / this.cpus
    const cpus = this.cpus
    const seen = this.seen
    return map.forEachBatch(
      (keys, values, n) => {
        let records = 0
        const w = words(values)
        for (let i = 0; i < n; i++) {
          const ko = i * keySize
          // Sum the CPUs' slots.
          let packets = 0
          let bytes = 0
          let first = 0
          let last = 0
          let flags = 0
          let tos = 0
          for (let cpu = 0; cpu < cpus; cpu++) {
            const o = i * cpus * stride + cpu * stride
            const f0 = u64w(w, o + C.firstSeen)
            if (f0 === 0) continue
            packets += u64w(w, o + C.packets)
            bytes += u64w(w, o + C.bytes)
            if (first === 0 || f0 < first) {
              first = f0
              tos = values[o + C.ipTos]
            }
            const l0 = u64w(w, o + C.lastSeen)
            if (l0 > last) last = l0
            flags |= values[o + C.tcpFlags]
          }
          let idx = cache.find(keys, ko)
          if (idx >= 0 && cache.gen[idx] === this.passGen) continue // merged before a crash
          const slot = ((keys[ko + K.ifindex] | (keys[ko + K.ifindex + 1] << 8) | (keys[ko + K.ifindex + 2] << 16)) + keys[ko + K.ifindex + 3] * 16777216) * 2 + keys[ko + K.direction]
          const tally = seen.get(slot)
          if (tally) {
            tally.packets += packets
            tally.bytes += bytes
          } else seen.set(slot, {packets, bytes})
          if (idx < 0) {
            const ended = this.endReason(first, last, flags, false, direct)
            if (ended || cache.full) {
              // Not held: out now (it has ended, or there is no room to hold it).
              if (batch.full) this.flushBatch(f, sink)
              const reason = ended || END_REASON.lackOfResources
              this.fillFromKey(batch, batch.length, keys, ko)
              this.fillCounters(batch, batch.length, packets, bytes, first, last, flags, tos, reason)
              batch.length++
              this.exported[reason] = (this.exported[reason] ?? 0) + 1
              continue
            }
            idx = cache.insert(keys, ko)
            cache.firstNs[idx] = first
            cache.tos[idx] = tos
          } else if (first && (!cache.firstNs[idx] || first < cache.firstNs[idx])) {
            cache.firstNs[idx] = first
            cache.tos[idx] = tos
          }
          cache.packets[idx] += packets
          cache.bytes[idx] += bytes
          if (last > cache.lastNs[idx]) cache.lastNs[idx] = last
          cache.tcpFlags[idx] |= flags
          cache.gen[idx] = this.passGen
          if (!direct) records = this.stageRecord(f, idx, records)
        }
        if (records) f.maps.pending.updateBatch(f.recordKeys, f.recordValues, records)
        if (batch.length) this.flushBatch(f, sink)
        map.deleteBatch(keys, n)
      },
      {chunk: CHUNK},
    )
  }

  private stageRecord(f: FamilyState, idx: number, records: number): number {
    const {cache, keySize} = f
    const keys = cache.keys
    const from = idx * keySize
    const to = records * keySize
    for (let k = 0; k < keySize; k++) f.recordKeys[to + k] = keys[from + k]
    const o = records * FLOW_RECORD.size
    const v = f.recordValues
    putU64(v, o + R.packets, cache.packets[idx])
    putU64(v, o + R.bytes, cache.bytes[idx])
    putU64(v, o + R.firstSeen, cache.firstNs[idx])
    putU64(v, o + R.lastSeen, cache.lastNs[idx])
    putU64(v, o + R.drainGen, cache.gen[idx])
    v[o + R.tcpFlags] = cache.tcpFlags[idx]
    v[o + R.ipTos] = cache.tos[idx]
    v.fill(0, o + R.ipTos + 1, o + FLOW_RECORD.size)
    return records + 1
  }

  private flushLackOfResources(sink: ExportSink): void {
    for (const f of this.families) if (f.batch.length) this.flushBatch(f, sink)
  }

  /** Sends the batch, then forgets the pending records of the flows in it. */
  private flushBatch(f: FamilyState, sink: ExportSink): void {
    sink(f.batch)
    if (f.pendingCount) f.maps.pending.deleteBatch(f.pendingKeys, f.pendingCount)
    f.batch.clear()
    f.pendingCount = 0
  }

  private expire(f: FamilyState, force: boolean, passesStart: number, sink: ExportSink): void {
    const {cache, batch, keySize} = f
    for (let idx = cache.size - 1; idx >= 0; idx--) {
      const reason = this.endReason(cache.firstNs[idx], cache.lastNs[idx], cache.tcpFlags[idx], cache.gen[idx] < passesStart, force)
      if (!reason) continue
      if (batch.full) this.flushBatch(f, sink)
      const j = batch.length++
      this.fillFromKey(batch, j, cache.keys, idx * keySize)
      this.fillCounters(batch, j, cache.packets[idx], cache.bytes[idx], cache.firstNs[idx], cache.lastNs[idx], cache.tcpFlags[idx], cache.tos[idx], reason)
      const from = idx * keySize
      const to = f.pendingCount * keySize
      for (let k = 0; k < keySize; k++) f.pendingKeys[to + k] = cache.keys[from + k]
      f.pendingCount++
      this.exported[reason] = (this.exported[reason] ?? 0) + 1
      cache.remove(idx)
    }
    if (batch.length) this.flushBatch(f, sink)
  }

  private fillFromKey(batch: FlowBatch, j: number, keys: Uint8Array, ko: number): void {
    batch.ifindex[j] = keys[ko + K.ifindex] | (keys[ko + K.ifindex + 1] << 8) | (keys[ko + K.ifindex + 2] << 16) | (keys[ko + K.ifindex + 3] * 16777216)
    batch.direction[j] = keys[ko + K.direction]
    batch.proto[j] = keys[ko + K.proto]
    batch.vlanId[j] = keys[ko + K.vlanId] | (keys[ko + K.vlanId + 1] << 8)
    batch.sport[j] = (keys[ko + K.sport] << 8) | keys[ko + K.sport + 1]
    batch.dport[j] = (keys[ko + K.dport] << 8) | keys[ko + K.dport + 1]
    const len = batch.addrLen
    const src = batch.src
    const dst = batch.dst
    for (let k = 0, at = j * len, from = ko + K.src; k < len; k++) {
      src[at + k] = keys[from + k]
      dst[at + k] = keys[from + len + k]
    }
  }

  private fillCounters(batch: FlowBatch, j: number, packets: number, bytes: number, first: number, last: number, flags: number, tos: number, reason: number): void {
    batch.packets[j] = packets
    batch.bytes[j] = bytes
    batch.startUs[j] = (first + this.offsetNs) / 1000
    batch.endUs[j] = (last + this.offsetNs) / 1000
    batch.tcpFlags[j] = flags
    batch.tos[j] = tos
    batch.endReason[j] = reason
  }
}
