/**
 * The daemon's table of flows taken from the kernel and not yet exported, keyed by the kernel's
 * own key bytes: records laid out as the kernel's snapshot chunks (record-slabs.ts) and an index
 * from key to record (key-index.ts). The records in use are kept dense, 0..size-1 (a removal
 * moves the last record into the hole), so a scan over them sees every flow, and the first
 * `chunks` chunks are the snapshot as it is written back.
 *
 * The drain looks a read batch of keys up at once (`findMany`) and inserts the flows it did not
 * find with what that lookup returned (`insertFound`).
 */
import {releaseMemory} from '../sys/heap.js'
import {KeyIndex, type FoundKeys} from './key-index.js'
import {RecordSlabs, type FlowRecordLayout} from './record-slabs.js'
import type {FlowSample} from './record.js'

export class FlowCache {
  readonly recordsPerChunk: number
  /** The most entries it will hold; `full` beyond. */
  readonly maxEntries: number
  size = 0
  /** The drain that last merged packets into each entry (not part of the kernel record; 2^32 drains are 136 years at one a second). */
  gen: Uint32Array = new Uint32Array(0)
  private readonly records: RecordSlabs
  private readonly index: KeyIndex

  constructor(layout: FlowRecordLayout, maxEntries: number) {
    this.records = new RecordSlabs(layout, maxEntries)
    this.index = new KeyIndex(this.records)
    this.recordsPerChunk = this.records.recordsPerChunk
    this.maxEntries = maxEntries
    this.fitColumns()
  }

  get full(): boolean {
    return this.size >= this.maxEntries
  }

  /** Entries the allocated chunks hold (memory follows it). */
  get room(): number {
    return this.records.room
  }

  /** Chunks the entries now held fill (the last one possibly in part). */
  get chunks(): number {
    return Math.ceil(this.size / this.recordsPerChunk)
  }

  /** The slab holding chunk `c`, and the chunk's byte offset in it. */
  chunkSlab(c: number): Buffer {
    return this.records.chunkSlab(c)
  }

  chunkOffset(c: number): number {
    return this.records.chunkOffset(c)
  }

  /** The slab holding entry `idx`'s record (see `recordAt` for where in it). */
  slabOf(idx: number): Buffer {
    return this.records.slabOf(idx)
  }

  /** The byte offset of entry `idx`'s record (its key; the value is `layout.valueAt` further) in `slabOf(idx)`. */
  recordAt(idx: number): number {
    return this.records.recordAt(idx)
  }

  /** Entry `idx`'s value, decoded into `into`. */
  read(idx: number, into: FlowSample): FlowSample {
    return this.records.read(idx, into)
  }

  /** Sizes the drain column and the index to the room the slabs give, keeping the entries. */
  private fitColumns(): void {
    const room = this.records.room
    const gen = new Uint32Array(room)
    gen.set(this.gen.subarray(0, this.size))
    releaseMemory(this.gen.buffer)
    this.gen = gen
    this.index.fit(room, this.size)
  }

  /**
   * Looks up `count` keys at once, the i-th at `off + i * stride` of `keys`, writing each one's
   * entry (or -1) to `found[i]`. What it returns lets `insertFound` add a key that was not there,
   * as long as `keys` is not changed and no entry is removed meanwhile.
   */
  findMany(keys: Uint8Array, off: number, stride: number, count: number, found: Int32Array): FoundKeys {
    return this.index.findMany(keys, off, stride, count, found, this.size === 0)
  }

  /** Adds a zeroed entry for key `i` of `lookup`, which was not found; the caller checks `full` first. */
  insertFound(lookup: FoundKeys, i: number): number {
    const idx = this.newEntry()
    this.index.insert(idx, lookup, i)
    return idx
  }

  /** The number of a new entry, its drain 0, once there is room for it. */
  private newEntry(): number {
    if (this.full) throw new Error('flow cache is full')
    if (this.size === this.records.room) {
      this.records.grow()
      this.fitColumns()
    }
    const idx = this.size++
    this.gen[idx] = 0
    return idx
  }

  /**
   * Merges `sample` into the entry of `key`, adding one when there is none; returns the entry,
   * or -1 when the key is new and the cache is full (nothing merged).
   */
  add(key: Uint8Array, off: number, sample: FlowSample): number {
    const h = this.index.hashKey(key, off)
    let idx = this.index.find(key, off, h)
    if (idx < 0) {
      if (this.full) return -1
      idx = this.newEntry()
      this.index.insertKey(idx, key, off, h)
    }
    this.records.merge(idx, sample)
    return idx
  }

  /**
   * Adds what `from` counted into entry `idx`: sums, latest last-seen, OR of flags, the TTL range,
   * and the first packet's fields from whichever was seen first (record.ts, firstPacketWins).
   */
  merge(idx: number, from: FlowSample): void {
    this.records.merge(idx, from)
  }

  /** Copies entry `from` over entry `to` (its record, hash and gen; the caller mends the index). */
  private moveEntry(from: number, to: number): void {
    this.records.copy(from, to)
    this.index.move(from, to)
    this.gen[to] = this.gen[from]
  }

  /** Removes an entry; the last entry moves into its place (so iterate downwards when removing). */
  remove(idx: number): void {
    const last = this.size - 1
    this.index.remove(idx, last)
    if (idx !== last) {
      this.records.copy(last, idx)
      this.gen[idx] = this.gen[last]
    }
    this.size = last
  }

  /**
   * Removes every entry whose byte in `marked` is not 0, keeping the others in their order, in
   * one pass and one rebuild of the index: cheaper than `remove` one by one once many go.
   */
  removeMarked(marked: Uint8Array): void {
    let kept = 0
    for (let i = 0; i < this.size; i++) {
      if (marked[i]) continue
      if (kept !== i) this.moveEntry(i, kept)
      kept++
    }
    if (kept === this.size) return
    this.size = kept
    this.index.reindex(kept)
    this.shrink()
  }

  /**
   * Removes every entry, a slab's worth at a time from the last: `visit(from, to)` sees entries
   * from..to-1 (in their order), and once it has returned they are gone, and their slab with them.
   * For a scan that exports every flow (a forced drain): the cache's memory goes back as its flows
   * leave instead of after the last, so that it is not held beside all the messages they make.
   * If `visit` throws, the entries it was given then and those before them stay.
   */
  removeEachSlab(visit: (from: number, to: number) => void): void {
    const perSlab = this.records.recordsPerSlab
    let released = false
    try {
      while (this.size > 0) {
        const from = Math.floor((this.size - 1) / perSlab) * perSlab
        visit(from, this.size)
        this.size = from
        if (this.records.releaseFrom(from)) released = true
      }
    } finally {
      if (this.size > 0) {
        // Cut short: the index still points at the entries gone.
        if (released) this.fitColumns()
        this.index.reindex(this.size)
      }
    }
    this.index.clear()
    if (released) this.fitColumns()
  }

  clear(): void {
    this.index.clear()
    this.size = 0
    this.shrink()
  }

  /** Gives back the slabs the entries no longer need (RecordSlabs.shrink). */
  private shrink(): void {
    if (this.records.shrink(this.size)) this.fitColumns()
  }
}
