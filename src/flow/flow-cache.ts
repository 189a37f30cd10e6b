/**
 * The daemon's table of flows taken from the kernel and not yet exported, keyed by the kernel's
 * own key bytes. Columns in typed arrays, an open-addressing index with linear probing: a million
 * flows cost about 120 bytes each and no garbage. Entries are kept dense (a removal moves the last
 * entry into the hole), so a scan over 0..size-1 sees every flow. The columns start small and
 * double as flows arrive, up to `maxEntries`: the daemon's memory follows the flows it holds.
 */
import {firstPacketWins, mergeTtl} from './record.js'

const INITIAL_ENTRIES = 1024

/** What one source (a kernel map entry, a snapshot record) says about a flow. */
export interface FlowSample {
  packets: number
  bytes: number
  /** CLOCK_MONOTONIC ns as doubles: exact to tens of ns for years of uptime. */
  firstNs: number
  lastNs: number
  tcpFlags: number
  tos: number
  peerIfindex: number
  minTtl: number
  maxTtl: number
  fwdStatus: number
  /** `addrLen` bytes at `nextHopOffset` of `nextHopBytes`. */
  nextHopBytes: Uint8Array
  nextHopOffset: number
}

export class FlowCache {
  readonly keySize: number
  readonly addrLen: number
  /** The most entries it will hold; `full` beyond. */
  readonly maxEntries: number
  size = 0
  /** Entries the columns have room for now. */
  private room = 0
  keys!: Uint8Array
  packets!: Float64Array
  bytes!: Float64Array
  firstNs!: Float64Array
  lastNs!: Float64Array
  /** The drain that last merged packets into the entry. */
  gen!: Float64Array
  tcpFlags!: Uint8Array
  tos!: Uint8Array
  peerIfindex!: Uint32Array
  minTtl!: Uint8Array
  maxTtl!: Uint8Array
  fwdStatus!: Uint8Array
  /** `addrLen` bytes per entry. */
  nextHop!: Uint8Array
  private slots!: Int32Array
  private mask = 0

  constructor(keySize: number, addrLen: number, maxEntries: number) {
    this.keySize = keySize
    this.addrLen = addrLen
    this.maxEntries = maxEntries
    this.resize(Math.min(INITIAL_ENTRIES, Math.max(1, maxEntries)))
  }

  get full(): boolean {
    return this.size >= this.maxEntries
  }

  /** Reallocates the columns for `room` entries, keeping the first `size`, and rebuilds the index. */
  private resize(room: number): void {
    const n = this.size
    const grow = <T extends Float64Array | Uint8Array | Uint32Array>(old: T | undefined, make: (len: number) => T, per = 1): T => {
      const next = make(room * per)
      if (old) next.set(old.subarray(0, n * per))
      return next
    }
    this.keys = grow(this.keys, (l) => new Uint8Array(l), this.keySize)
    this.packets = grow(this.packets, (l) => new Float64Array(l))
    this.bytes = grow(this.bytes, (l) => new Float64Array(l))
    this.firstNs = grow(this.firstNs, (l) => new Float64Array(l))
    this.lastNs = grow(this.lastNs, (l) => new Float64Array(l))
    this.gen = grow(this.gen, (l) => new Float64Array(l))
    this.tcpFlags = grow(this.tcpFlags, (l) => new Uint8Array(l))
    this.tos = grow(this.tos, (l) => new Uint8Array(l))
    this.peerIfindex = grow(this.peerIfindex, (l) => new Uint32Array(l))
    this.minTtl = grow(this.minTtl, (l) => new Uint8Array(l))
    this.maxTtl = grow(this.maxTtl, (l) => new Uint8Array(l))
    this.fwdStatus = grow(this.fwdStatus, (l) => new Uint8Array(l))
    this.nextHop = grow(this.nextHop, (l) => new Uint8Array(l), this.addrLen)
    this.room = room
    let slots = 1
    while (slots < room * 2) slots <<= 1
    this.slots = new Int32Array(slots) // entry index + 1; 0 = empty
    this.mask = slots - 1
    for (let i = 0; i < n; i++) {
      let s = this.hash(this.keys, i * this.keySize) & this.mask
      while (this.slots[s] !== 0) s = (s + 1) & this.mask
      this.slots[s] = i + 1
    }
  }

  /** FNV-1a over the key bytes. */
  private hash(key: Uint8Array, off: number): number {
    let h = 0x811c9dc5
    for (let i = 0; i < this.keySize; i++) h = Math.imul(h ^ key[off + i], 0x01000193)
    return (h ^ (h >>> 15)) >>> 0
  }

  private sameKey(index: number, key: Uint8Array, off: number): boolean {
    const base = index * this.keySize
    for (let i = 0; i < this.keySize; i++) if (this.keys[base + i] !== key[off + i]) return false
    return true
  }

  /** The entry holding this key, or -1. */
  find(key: Uint8Array, off = 0): number {
    for (let s = this.hash(key, off) & this.mask; ; s = (s + 1) & this.mask) {
      const e = this.slots[s]
      if (e === 0) return -1
      if (this.sameKey(e - 1, key, off)) return e - 1
    }
  }

  /** Adds a zeroed entry for a key that is not there; the caller checks `full` first. */
  insert(key: Uint8Array, off = 0): number {
    if (this.full) throw new Error('flow cache is full')
    if (this.size === this.room) this.resize(Math.min(this.maxEntries, this.room * 2))
    const index = this.size++
    this.keys.set(key.subarray(off, off + this.keySize), index * this.keySize)
    this.packets[index] = 0
    this.bytes[index] = 0
    this.firstNs[index] = 0
    this.lastNs[index] = 0
    this.gen[index] = 0
    this.tcpFlags[index] = 0
    this.tos[index] = 0
    this.peerIfindex[index] = 0
    this.minTtl[index] = 0
    this.maxTtl[index] = 0
    this.fwdStatus[index] = 0
    this.nextHop.fill(0, index * this.addrLen, (index + 1) * this.addrLen)
    let s = this.hash(key, off) & this.mask
    while (this.slots[s] !== 0) s = (s + 1) & this.mask
    this.slots[s] = index + 1
    return index
  }

  /**
   * Adds what `from` counted into entry `idx`: sums, latest last-seen, OR of flags, the TTL range,
   * and the first packet's fields from whichever was seen first (record.ts, firstPacketWins).
   */
  merge(idx: number, from: FlowSample): void {
    this.packets[idx] += from.packets
    this.bytes[idx] += from.bytes
    if (firstPacketWins(this.firstNs[idx], from.firstNs)) {
      this.firstNs[idx] = from.firstNs
      this.tos[idx] = from.tos
      this.peerIfindex[idx] = from.peerIfindex
      this.fwdStatus[idx] = from.fwdStatus
      const len = this.addrLen
      for (let k = 0, at = idx * len; k < len; k++) this.nextHop[at + k] = from.nextHopBytes[from.nextHopOffset + k]
    }
    if (from.lastNs > this.lastNs[idx]) this.lastNs[idx] = from.lastNs
    this.tcpFlags[idx] |= from.tcpFlags
    const [min, max] = mergeTtl(this.minTtl[idx], this.maxTtl[idx], from.minTtl, from.maxTtl)
    this.minTtl[idx] = min
    this.maxTtl[idx] = max
  }

  private slotOf(index: number): number {
    for (let s = this.hash(this.keys, index * this.keySize) & this.mask; ; s = (s + 1) & this.mask) {
      if (this.slots[s] === index + 1) return s
      if (this.slots[s] === 0) throw new Error('flow cache index is corrupt')
    }
  }

  /** Removes an entry; the last entry moves into its place (so iterate downwards when removing). */
  remove(index: number): void {
    this.unindex(this.slotOf(index))
    const last = this.size - 1
    if (index !== last) {
      this.slots[this.slotOf(last)] = index + 1
      this.keys.copyWithin(index * this.keySize, last * this.keySize, (last + 1) * this.keySize)
      this.nextHop.copyWithin(index * this.addrLen, last * this.addrLen, (last + 1) * this.addrLen)
      for (const col of [this.packets, this.bytes, this.firstNs, this.lastNs, this.gen, this.tcpFlags, this.tos, this.peerIfindex, this.minTtl, this.maxTtl, this.fwdStatus]) {
        col[index] = col[last]
      }
    }
    this.size = last
  }

  /** Empties slot `s` and shifts back the entries of its probe run (no tombstones). */
  private unindex(s: number): void {
    let hole = s
    for (let next = (s + 1) & this.mask; this.slots[next] !== 0; next = (next + 1) & this.mask) {
      const home = this.hash(this.keys, (this.slots[next] - 1) * this.keySize) & this.mask
      // Move the entry back into the hole unless its home lies (cyclically) after the hole.
      const distHole = (hole - home) & this.mask
      const distNext = (next - home) & this.mask
      if (distHole <= distNext) {
        this.slots[hole] = this.slots[next]
        hole = next
      }
    }
    this.slots[hole] = 0
  }

  clear(): void {
    this.slots.fill(0)
    this.size = 0
  }
}
