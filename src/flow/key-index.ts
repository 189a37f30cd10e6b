/**
 * The flow cache's index: from a kernel key's bytes to the number of the record that holds it
 * (record-slabs.ts). Open addressing with linear probing over record numbers; keys are hashed and
 * compared as 32-bit words (every kernel key is a multiple of 4 bytes), and each record's hash is
 * kept beside the record, and its high bits in the slot: growing, removing and compacting never
 * hash a key again.
 *
 * Lookups come a read batch at a time (`findMany`), in passes, so that the memory reads of
 * different keys overlap; what a lookup learnt (the keys' hashes) goes back to the caller in a
 * FoundKeys, which `insert` takes for the keys that were not there.
 */
import {releaseMemory} from '../sys/heap.js'
import type {RecordSlabs} from './record-slabs.js'

/**
 * What one `findMany` looked up: where the keys are, and their hashes for inserting those not
 * found. It stays valid while the keys' buffer is unchanged and no record is removed.
 */
export class FoundKeys {
  constructor(
    readonly keys: Uint8Array,
    readonly off: number,
    readonly stride: number,
    readonly count: number,
    /** Each key's hash; null when nothing was there to find (the keys inserted get hashed then). */
    readonly hashes: Int32Array | null,
  ) {}
}

export class KeyIndex {
  private readonly records: RecordSlabs
  private readonly keyWords: number
  /** Each record's key hash. */
  private hashes = new Int32Array(0)
  /**
   * A word per slot: the record's number + 1 in its low bits (`entryMask`; 0: empty) and the high
   * bits of its key's hash in the others (`tagMask`), so that a probe passes other keys by their
   * hash without reading their records. (A word, not a pair of number and whole hash: half the
   * index's memory, 8 MB at 1 M flows; with 6 to 10 bits of tag a probe reads another key's record
   * once in 64 to 1024 slots passed.)
   */
  private slots = new Int32Array(0)
  private mask = 0
  private readonly entryMask: number
  private readonly tagMask: number
  /** Word views of the last key buffer looked up (the drain passes one read batch buffer again and again). */
  private viewOf?: Uint8Array
  private view: Int32Array<ArrayBufferLike> = new Int32Array(0)
  private viewLead = 0
  /** Where `keyAt` found the key's words (read right after it). */
  private keyWords_: Int32Array<ArrayBufferLike> = new Int32Array(0)
  /** An aligned copy of a key whose bytes are not at a multiple of 4. */
  private readonly scratchWords: Int32Array
  private readonly scratch: Uint8Array
  /** Where `findMany` reads each candidate's first word into, so that the read is not optimized away. */
  private touch = 0

  constructor(records: RecordSlabs) {
    this.records = records
    this.keyWords = records.keyWords
    let bits = 1
    while (bits < 31 && 2 ** bits <= records.maxRecords + 1) bits++
    this.entryMask = 2 ** bits - 1
    this.tagMask = ~this.entryMask
    this.scratchWords = new Int32Array(this.keyWords)
    this.scratch = new Uint8Array(this.scratchWords.buffer)
  }

  /** Sizes the index for records 0..`room`-1, keeping those of 0..`used`-1. */
  fit(room: number, used: number): void {
    const hashes = new Int32Array(room)
    hashes.set(this.hashes.subarray(0, used))
    releaseMemory(this.hashes.buffer)
    this.hashes = hashes
    // At most 70 % of the slots in use when the records are all used: probes stay short (they
    // pass other keys by the tag kept in the slot), and the slots take 6 to 12 bytes per record.
    let slots = 1
    while (slots * 0.7 < room) slots <<= 1
    if (slots !== this.slots.length) {
      releaseMemory(this.slots.buffer)
      this.slots = new Int32Array(slots)
      this.mask = slots - 1
      this.reindex(used)
    }
  }

  /** Rebuilds the index of records 0..`used`-1 from their stored hashes. */
  reindex(used: number): void {
    this.slots.fill(0)
    for (let i = 0; i < used; i++) this.place(i, this.hashes[i])
  }

  clear(): void {
    this.slots.fill(0)
  }

  /**
   * The word index of the key at `off` of `key`, in `this.keyWords_` (set here): the key's own
   * buffer viewed as words when its bytes start at a multiple of 4, else the scratch copy (index 0).
   * The view of the last buffer is kept, and no byteOffset is read per key: V8 does not inline
   * that getter on Node's Buffer, and it cost more than hashing the key.
   */
  private keyAt(key: Uint8Array, off: number): number {
    if (this.viewOf !== key) {
      const lead = key.byteOffset & 3
      this.viewOf = key
      this.view = new Int32Array(key.buffer, key.byteOffset - lead, (key.byteLength + lead) >> 2)
      this.viewLead = lead
    }
    const b = this.viewLead + off
    if ((b & 3) === 0) {
      this.keyWords_ = this.view
      return b >> 2
    }
    this.scratch.set(key.subarray(off, off + this.keyWords * 4))
    this.keyWords_ = this.scratchWords
    return 0
  }

  /** Murmur3's 32-bit mixing over the key's words. */
  private hash(words: Int32Array, at: number): number {
    let h = 0x9747b28c
    for (let i = 0; i < this.keyWords; i++) {
      let k = Math.imul(words[at + i], 0xcc9e2d51)
      k = (k << 15) | (k >>> 17)
      h ^= Math.imul(k, 0x1b873593)
      h = (h << 13) | (h >>> 19)
      h = (Math.imul(h, 5) + 0xe6546b64) | 0
    }
    h ^= h >>> 16
    h = Math.imul(h, 0x85ebca6b)
    h ^= h >>> 13
    h = Math.imul(h, 0xc2b2ae35)
    return h ^ (h >>> 16)
  }

  private findHashed(h: number, words: Int32Array, at: number): number {
    const tag = h & this.tagMask
    for (let s = h & this.mask; ; s = (s + 1) & this.mask) {
      const e = this.slots[s]
      if (e === 0) return -1
      const idx = (e & this.entryMask) - 1
      if ((e & this.tagMask) === tag && this.records.sameKey(idx, words, at)) return idx
    }
  }

  /**
   * Looks up `count` keys at once, the i-th at `off + i * stride` of `keys`, writing each one's
   * record (or -1) to `found[i]`; `empty`: no record is in use, nothing to find. Done in passes
   * (hash every key, then read every slot, then compare every candidate) so that the memory reads
   * of different keys overlap: with a million records each is a cache miss, and one key at a
   * time they would be waited for one after another.
   */
  findMany(keys: Uint8Array, off: number, stride: number, count: number, found: Int32Array, empty: boolean): FoundKeys {
    if (empty) {
      // Nothing to find (a backlog read into an empty cache): hash only the keys inserted.
      found.fill(-1, 0, count)
      return new FoundKeys(keys, off, stride, count, null)
    }
    const hashes = new Int32Array(count)
    const at0 = this.keyAt(keys, off)
    const words = this.keyWords_
    if (words === this.scratchWords || stride % 4 !== 0) {
      // Rare (no kernel buffer is unaligned): one key at a time.
      for (let i = 0; i < count; i++) {
        const at = this.keyAt(keys, off + i * stride)
        hashes[i] = this.hash(this.keyWords_, at)
        found[i] = this.findHashed(hashes[i], this.keyWords_, at)
      }
      return new FoundKeys(keys, off, stride, count, hashes)
    }
    const step = stride >> 2
    for (let i = 0; i < count; i++) hashes[i] = this.hash(words, at0 + i * step)
    const slots = this.slots
    const mask = this.mask
    const tagMask = this.tagMask
    // The first record of the key's probe run with the key's tag: it is almost surely the key's.
    for (let i = 0; i < count; i++) {
      const h = hashes[i]
      const tag = h & tagMask
      let s = h & mask
      let e = slots[s]
      while (e !== 0 && (e & tagMask) !== tag) {
        s = (s + 1) & mask
        e = slots[s]
      }
      found[i] = (e & this.entryMask) - 1
    }
    const records = this.records
    for (let i = 0; i < count; i++) {
      const e = found[i]
      if (e >= 0) this.touch ^= records.firstWord(e)
    }
    for (let i = 0; i < count; i++) {
      const e = found[i]
      if (e >= 0 && !records.sameKey(e, words, at0 + i * step)) found[i] = this.findHashed(hashes[i], words, at0 + i * step)
    }
    return new FoundKeys(keys, off, stride, count, hashes)
  }

  /** Makes record `idx` (not in use) key `i` of `lookup`, which was not found, and indexes it. */
  insert(idx: number, lookup: FoundKeys, i: number): void {
    const off = lookup.off + i * lookup.stride
    this.insertKey(idx, lookup.keys, off, lookup.hashes ? lookup.hashes[i] : this.hashKey(lookup.keys, off))
  }

  /** The hash of the key at `off` of `key`, for `find` and `insertKey`. */
  hashKey(key: Uint8Array, off: number): number {
    const at = this.keyAt(key, off)
    return this.hash(this.keyWords_, at)
  }

  /** The record holding the key at `off` of `key`, whose hash is `h`, or -1. */
  find(key: Uint8Array, off: number, h: number): number {
    const at = this.keyAt(key, off)
    return this.findHashed(h, this.keyWords_, at)
  }

  /** Makes record `idx` (not in use) the key at `off` of `key`, whose hash is `h`, and indexes it. */
  insertKey(idx: number, key: Uint8Array, off: number, h: number): void {
    const at = this.keyAt(key, off)
    this.records.reset(idx, this.keyWords_, at)
    this.hashes[idx] = h
    this.place(idx, h)
  }

  private place(idx: number, h: number): void {
    let s = h & this.mask
    while (this.slots[s] !== 0) s = (s + 1) & this.mask
    this.slots[s] = (h & this.tagMask) | (idx + 1)
  }

  private slotOf(idx: number): number {
    for (let s = this.hashes[idx] & this.mask; ; s = (s + 1) & this.mask) {
      if ((this.slots[s] & this.entryMask) === idx + 1) return s
      if (this.slots[s] === 0) throw new Error('flow cache index is corrupt')
    }
  }

  /** Takes record `idx` out of the index, and indexes record `last` (the last in use) as `idx`: the caller moves it there. */
  remove(idx: number, last: number): void {
    this.unindex(this.slotOf(idx))
    if (idx === last) return
    const s = this.slotOf(last)
    this.slots[s] = (this.slots[s] & this.tagMask) | (idx + 1)
    this.hashes[idx] = this.hashes[last]
  }

  /** Carries record `from`'s hash to record `to` (compaction: reindex() once done). */
  move(from: number, to: number): void {
    this.hashes[to] = this.hashes[from]
  }

  /** Empties slot `s` and shifts back the records of its probe run (no tombstones). */
  private unindex(s: number): void {
    let hole = s
    for (let next = (s + 1) & this.mask; this.slots[next] !== 0; next = (next + 1) & this.mask) {
      const home = this.hashes[(this.slots[next] & this.entryMask) - 1] & this.mask
      // Move the record back into the hole unless its home lies (cyclically) after the hole.
      const distHole = (hole - home) & this.mask
      const distNext = (next - home) & this.mask
      if (distHole <= distNext) {
        this.slots[hole] = this.slots[next]
        hole = next
      }
    }
    this.slots[hole] = 0
  }
}
