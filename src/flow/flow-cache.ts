/**
 * The daemon's table of flows taken from the kernel and not yet exported, keyed by the kernel's
 * own key bytes.
 *
 * Each entry is a record laid out as the kernel's snapshot record (key, then value: the layout
 * is given by the caller, src/bpf/flow-store.ts, from the generated kernel layout), and the
 * records sit in chunks exactly as the snapshot's `pending` map holds them. So committing a drain
 * hands the cache's own memory to the kernel (no per-flow work), and merging one flow touches one
 * record (one or two cache lines) instead of a dozen columns. Chunks come in slabs of up to
 * SLAB_CHUNKS, contiguous, allocated as flows arrive: memory follows the flows held, and growing
 * never copies more than the first slab.
 *
 * The index is open addressing with linear probing over entry numbers. Keys are hashed and
 * compared as 32-bit words (every kernel key is a multiple of 4 bytes), and each entry keeps its
 * hash: growing, removing and compacting never hash a key again. Entries are kept dense (a
 * removal moves the last entry into the hole), so a scan over 0..size-1 sees every flow.
 */
import {firstPacketWins, maxTtlOf, minTtlOf} from './record.js'

/** Where the fields of a flow record are, in bytes (src/bpf/layout.ts builds it from the kernel's). */
export interface FlowRecordLayout {
  keySize: number
  /** Bytes of one record; a multiple of 8. */
  recordSize: number
  /** Offset of the value in a record (the key is at 0). */
  valueAt: number
  /** Offsets of the value's fields, from the value's start. u64: packets, bytes, firstNs, lastNs; u32: tcpFlags, peerIfindex; u8: the rest. */
  fields: {
    packets: number
    bytes: number
    firstNs: number
    lastNs: number
    tcpFlags: number
    peerIfindex: number
    tos: number
    minTtl: number
    maxTtl: number
    fwdStatus: number
    nextHop: number
  }
  /** Bytes of the next hop address. */
  addrLen: number
  /** Bytes of one chunk, and of the header before its first record. */
  chunkBytes: number
  chunkHeader: number
  /** Decodes the value at `off` of `buf` into `into` (the same reader as for the kernel's values). */
  readValue(buf: Uint8Array, off: number, into: FlowSample): FlowSample
}

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

/** Chunks per slab: one batch update of the snapshot map writes a slab (8 MiB of 32 KiB chunks). */
export const SLAB_CHUNKS = 256
const SLAB_SHIFT = 8
const FIRST_SLAB_CHUNKS = 4
const TWO_32 = 4_294_967_296

export class FlowCache {
  readonly layout: FlowRecordLayout
  readonly keySize: number
  readonly addrLen: number
  readonly recordsPerChunk: number
  private readonly perChunkInverse: number
  /** The most entries it will hold; `full` beyond. */
  readonly maxEntries: number
  size = 0
  /** The drain that last merged packets into each entry (not part of the kernel record; 2^32 drains are 136 years at one a second). */
  gen: Uint32Array = new Uint32Array(0)
  /** Slabs of whole chunks: bytes, and the same memory as 32-bit words. */
  private slabs: Buffer[] = []
  private slabWords: Int32Array[] = []
  /** Chunks allocated so far (the first slab may be short of SLAB_CHUNKS). */
  private chunksAllocated = 0
  private readonly keyWords: number
  private readonly recordWords: number
  private readonly chunkWords: number
  /** Each entry's key hash. */
  private hashes = new Int32Array(0)
  /**
   * The index: a pair of words per slot, the entry's index + 1 (0: empty) and its key's hash, so
   * that a probe passes other keys by their hash, in the same cache line, without reading their
   * records.
   */
  private slots = new Int32Array(0)
  private mask = 0
  /** Word views of the last key buffer looked up (the drain passes one batch buffer again and again). */
  private viewOf?: Uint8Array
  private view: Int32Array<ArrayBufferLike> = new Int32Array(0)
  private viewLead = 0
  /** Where `keyAt` found the key's words. */
  private keyWords_: Int32Array<ArrayBufferLike> = new Int32Array(0)
  /** An aligned copy of a key whose bytes are not at a multiple of 4. */
  private readonly scratchWords: Int32Array
  private readonly scratch: Uint8Array
  /** The keys of the last `findMany` and their hashes. */
  private batchKeys: Uint8Array = new Uint8Array(0)
  private batchOff = 0
  private batchStride = 0
  private batchHashes = new Int32Array(0)
  /** Whether `batchHashes` holds the last findMany's hashes (it skips them when the cache is empty). */
  private batchHashed = false
  /** Where `findMany` reads each candidate's first word into, so that the read is not optimized away. */
  private touch = 0

  constructor(layout: FlowRecordLayout, maxEntries: number) {
    if (layout.keySize % 4 || layout.recordSize % 8 || layout.chunkBytes % 8 || layout.chunkHeader % 8 || layout.valueAt % 8) {
      throw new Error(
        `flow cache: keys (${layout.keySize} B) must be whole 32-bit words and records (${layout.recordSize} B), chunks and values 8-byte aligned`,
      )
    }
    const f = layout.fields
    if ([f.packets, f.bytes, f.firstNs, f.lastNs].some((o) => o % 8) || [f.tcpFlags, f.peerIfindex].some((o) => o % 4)) {
      throw new Error("flow cache: the value's u64 fields must be 8-byte and its u32 fields 4-byte aligned")
    }
    this.layout = layout
    this.keySize = layout.keySize
    this.addrLen = layout.addrLen
    this.keyWords = layout.keySize / 4
    this.recordWords = layout.recordSize / 4
    this.chunkWords = layout.chunkBytes / 4
    this.recordsPerChunk = Math.floor((layout.chunkBytes - layout.chunkHeader) / layout.recordSize)
    this.perChunkInverse = 1 / this.recordsPerChunk
    this.maxEntries = maxEntries
    this.scratchWords = new Int32Array(this.keyWords)
    this.scratch = new Uint8Array(this.scratchWords.buffer)
    this.grow()
  }

  get full(): boolean {
    return this.size >= this.maxEntries
  }

  /** Entries the allocated chunks hold (memory follows it). */
  get room(): number {
    return this.chunksAllocated * this.recordsPerChunk
  }

  /** Chunks the entries now held fill (the last one possibly in part). */
  get chunks(): number {
    return Math.ceil(this.size / this.recordsPerChunk)
  }

  /** The slab holding chunk `c`, and the chunk's byte offset in it. */
  chunkSlab(c: number): Buffer {
    return this.slabs[Math.floor(c / SLAB_CHUNKS)]
  }

  chunkOffset(c: number): number {
    return (c % SLAB_CHUNKS) * this.layout.chunkBytes
  }

  /** Entry `idx`'s value, decoded into `into`. */
  read(idx: number, into: FlowSample): FlowSample {
    return this.layout.readValue(this.slabOf(idx), this.recordAt(idx) + this.layout.valueAt, into)
  }

  /**
   * The chunk of entry `idx`: floor(idx / recordsPerChunk) by a multiplication (a division is
   * several times slower, and this runs for every flow). The half keeps a product that should be
   * a whole k from rounding to just below it; it is exact for any idx below 2^31.
   */
  private chunkOf(idx: number): number {
    return ((idx + 0.5) * this.perChunkInverse) | 0
  }

  /** The slab holding entry `idx`'s record (see `recordAt` for where in it). */
  slabOf(idx: number): Buffer {
    return this.slabs[this.chunkOf(idx) >> SLAB_SHIFT]
  }

  /** The byte offset of entry `idx`'s record (its key; the value is `layout.valueAt` further) in `slabOf(idx)`. */
  recordAt(idx: number): number {
    return 4 * this.wordAt(idx)
  }

  /** The word offset of entry `idx`'s record in its slab. */
  private wordAt(idx: number): number {
    const c = this.chunkOf(idx)
    return (c & (SLAB_CHUNKS - 1)) * this.chunkWords + (this.layout.chunkHeader >> 2) + (idx - c * this.recordsPerChunk) * this.recordWords
  }

  private wordsOf(idx: number): Int32Array {
    return this.slabWords[this.chunkOf(idx) >> SLAB_SHIFT]
  }

  /** Makes room for more entries: the first slab doubles until full size, then whole slabs are added. */
  private grow(): void {
    const chunkBytes = this.layout.chunkBytes
    if (this.slabs.length === 1 && this.chunksAllocated < SLAB_CHUNKS) {
      const chunks = Math.min(SLAB_CHUNKS, this.chunksAllocated * 2)
      const slab = Buffer.allocUnsafeSlow(chunks * chunkBytes)
      this.slabs[0].copy(slab)
      this.setSlab(0, slab)
      this.chunksAllocated = chunks
    } else {
      const chunks = this.slabs.length === 0 ? Math.min(FIRST_SLAB_CHUNKS, Math.max(1, Math.ceil(this.maxEntries / this.recordsPerChunk))) : SLAB_CHUNKS
      this.setSlab(this.slabs.length, Buffer.allocUnsafeSlow(chunks * chunkBytes))
      this.chunksAllocated += chunks
    }
    this.fitColumns()
  }

  /** Sizes the hash and drain columns and the index to the room the slabs give, keeping the entries. */
  private fitColumns(): void {
    const room = this.room
    const hashes = new Int32Array(room)
    hashes.set(this.hashes.subarray(0, this.size))
    this.hashes = hashes
    const gen = new Uint32Array(room)
    gen.set(this.gen.subarray(0, this.size))
    this.gen = gen
    // At most 70 % of the slots in use when the chunks are full: probes stay short (they pass
    // other keys by the hash kept in the slot), and the index takes 8 to 16 bytes per entry.
    let slots = 1
    while (slots * 0.7 < room) slots <<= 1
    if (2 * slots !== this.slots.length) {
      this.slots = new Int32Array(2 * slots)
      this.mask = slots - 1
      this.reindex()
    }
  }

  /**
   * Gives back the slabs the entries no longer need, keeping room for twice as many: after a
   * burst of flows has been exported, the daemon's memory follows the flows it still holds.
   */
  private shrink(): void {
    if (this.slabs.length <= 1) return
    // With more than one slab, the first is full size (grow() fills it before adding others).
    const want = Math.ceil((2 * this.size) / this.recordsPerChunk)
    let keep = 1
    while (keep < this.slabs.length && keep * SLAB_CHUNKS < want) keep++
    if (keep === this.slabs.length) return
    this.slabs.length = keep
    this.slabWords.length = keep
    this.chunksAllocated = keep * SLAB_CHUNKS
    this.fitColumns()
  }

  private setSlab(i: number, slab: Buffer): void {
    this.slabs[i] = slab
    this.slabWords[i] = new Int32Array(slab.buffer, slab.byteOffset, slab.length >> 2)
  }

  /** Rebuilds the index from the entries' stored hashes. */
  private reindex(): void {
    this.slots.fill(0)
    const mask = this.mask
    for (let i = 0; i < this.size; i++) {
      const h = this.hashes[i]
      let s = h & mask
      while (this.slots[2 * s] !== 0) s = (s + 1) & mask
      this.slots[2 * s] = i + 1
      this.slots[2 * s + 1] = h
    }
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
    this.scratch.set(key.subarray(off, off + this.keySize))
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

  private sameKey(index: number, words: Int32Array, at: number): boolean {
    const mine = this.wordsOf(index)
    const base = this.wordAt(index)
    for (let i = 0; i < this.keyWords; i++) if (mine[base + i] !== words[at + i]) return false
    return true
  }

  /** The entry holding this key, or -1. */
  find(key: Uint8Array, off = 0): number {
    const at = this.keyAt(key, off)
    const words = this.keyWords_
    return this.findHashed(this.hash(words, at), words, at)
  }

  private findHashed(h: number, words: Int32Array, at: number): number {
    for (let s = h & this.mask; ; s = (s + 1) & this.mask) {
      const e = this.slots[2 * s]
      if (e === 0) return -1
      if (this.slots[2 * s + 1] === h && this.sameKey(e - 1, words, at)) return e - 1
    }
  }

  /**
   * Looks up `count` keys at once, the i-th at `off + i * stride` of `keys`, writing each one's
   * entry (or -1) to `found[i]`; `insertFound(i)` then adds a key that was not there. Done in
   * passes (hash every key, then read every slot, then compare every candidate) so that the
   * memory reads of different keys overlap: with a million entries each is a cache miss, and one
   * key at a time they would be waited for one after another.
   */
  findMany(keys: Uint8Array, off: number, stride: number, count: number, found: Int32Array): void {
    if (this.batchHashes.length < count) this.batchHashes = new Int32Array(count)
    const hashes = this.batchHashes
    this.batchKeys = keys
    this.batchOff = off
    this.batchStride = stride
    this.batchHashed = this.size > 0
    if (!this.batchHashed) {
      // Nothing to find (a backlog read into an empty cache): hash only the keys inserted.
      found.fill(-1, 0, count)
      return
    }
    const at0 = this.keyAt(keys, off)
    const words = this.keyWords_
    const aligned = words !== this.scratchWords && stride % 4 === 0
    if (!aligned) {
      // Rare (no kernel buffer is unaligned): one key at a time.
      for (let i = 0; i < count; i++) {
        const at = this.keyAt(keys, off + i * stride)
        hashes[i] = this.hash(this.keyWords_, at)
        found[i] = this.findHashed(hashes[i], this.keyWords_, at)
      }
      return
    }
    const step = stride >> 2
    for (let i = 0; i < count; i++) hashes[i] = this.hash(words, at0 + i * step)
    const slots = this.slots
    const mask = this.mask
    // The first entry of the key's probe run with the key's hash: its record is almost surely the key's.
    for (let i = 0; i < count; i++) {
      const h = hashes[i]
      let s = h & mask
      let e = slots[2 * s]
      while (e !== 0 && slots[2 * s + 1] !== h) {
        s = (s + 1) & mask
        e = slots[2 * s]
      }
      found[i] = e - 1
    }
    for (let i = 0; i < count; i++) {
      const e = found[i]
      if (e >= 0) this.touch ^= this.wordsOf(e)[this.wordAt(e)]
    }
    for (let i = 0; i < count; i++) {
      const e = found[i]
      if (e >= 0 && !this.sameKey(e, words, at0 + i * step)) found[i] = this.findHashed(hashes[i], words, at0 + i * step)
    }
  }

  /** Inserts key `i` of the last `findMany`, which was not there; the keys buffer must not have changed since. */
  insertFound(i: number): number {
    const at = this.keyAt(this.batchKeys, this.batchOff + i * this.batchStride)
    const words = this.keyWords_
    return this.insertHashed(this.batchHashed ? this.batchHashes[i] : this.hash(words, at), words, at)
  }

  /** Adds a zeroed entry for a key that is not there; the caller checks `full` first. */
  insert(key: Uint8Array, off = 0): number {
    const at = this.keyAt(key, off)
    const words = this.keyWords_
    return this.insertHashed(this.hash(words, at), words, at)
  }

  private insertHashed(h: number, words: Int32Array, at: number): number {
    if (this.full) throw new Error('flow cache is full')
    if (this.size === this.room) this.grow()
    const index = this.size++
    const mine = this.wordsOf(index)
    const base = this.wordAt(index)
    for (let i = 0; i < this.keyWords; i++) mine[base + i] = words[at + i]
    mine.fill(0, base + this.keyWords, base + this.recordWords)
    this.hashes[index] = h
    this.gen[index] = 0
    let s = h & this.mask
    while (this.slots[2 * s] !== 0) s = (s + 1) & this.mask
    this.slots[2 * s] = index + 1
    this.slots[2 * s + 1] = h
    return index
  }

  /**
   * Merges `sample` into the entry of `key`, adding one when there is none; returns the entry,
   * or -1 when the key is new and the cache is full (nothing merged).
   */
  add(key: Uint8Array, off: number, sample: FlowSample): number {
    const at = this.keyAt(key, off)
    const words = this.keyWords_
    const h = this.hash(words, at)
    let idx = this.findHashed(h, words, at)
    if (idx < 0) {
      if (this.full) return -1
      idx = this.insertHashed(h, words, at)
    }
    this.merge(idx, sample)
    return idx
  }

  /**
   * Adds what `from` counted into entry `idx`: sums, latest last-seen, OR of flags, the TTL range,
   * and the first packet's fields from whichever was seen first (record.ts, firstPacketWins).
   */
  merge(idx: number, from: FlowSample): void {
    const w = this.wordsOf(idx)
    const b = this.slabOf(idx)
    const v = this.wordAt(idx) + (this.layout.valueAt >> 2)
    const f = this.layout.fields
    addU64(w, v + (f.packets >> 2), from.packets)
    addU64(w, v + (f.bytes >> 2), from.bytes)
    const vb = v * 4
    if (firstPacketWins(readU64(w, v + (f.firstNs >> 2)), from.firstNs)) {
      writeU64(w, v + (f.firstNs >> 2), from.firstNs)
      b[vb + f.tos] = from.tos
      w[v + (f.peerIfindex >> 2)] = from.peerIfindex
      b[vb + f.fwdStatus] = from.fwdStatus
      for (let k = 0, at = vb + f.nextHop; k < this.addrLen; k++) b[at + k] = from.nextHopBytes[from.nextHopOffset + k]
    }
    if (from.lastNs > readU64(w, v + (f.lastNs >> 2))) writeU64(w, v + (f.lastNs >> 2), from.lastNs)
    w[v + (f.tcpFlags >> 2)] |= from.tcpFlags
    const min = b[vb + f.minTtl]
    const max = b[vb + f.maxTtl]
    b[vb + f.minTtl] = minTtlOf(min, max, from.minTtl, from.maxTtl)
    b[vb + f.maxTtl] = maxTtlOf(min, max, from.minTtl, from.maxTtl)
  }

  private slotOf(index: number): number {
    for (let s = this.hashes[index] & this.mask; ; s = (s + 1) & this.mask) {
      if (this.slots[2 * s] === index + 1) return s
      if (this.slots[2 * s] === 0) throw new Error('flow cache index is corrupt')
    }
  }

  /** Copies entry `from` over entry `to` (its record, hash and gen; not the index). */
  private moveEntry(from: number, to: number): void {
    const src = this.wordsOf(from)
    const dst = this.wordsOf(to)
    const s = this.wordAt(from)
    const d = this.wordAt(to)
    if (src === dst) dst.copyWithin(d, s, s + this.recordWords)
    else for (let i = 0; i < this.recordWords; i++) dst[d + i] = src[s + i]
    this.hashes[to] = this.hashes[from]
    this.gen[to] = this.gen[from]
  }

  /** Removes an entry; the last entry moves into its place (so iterate downwards when removing). */
  remove(index: number): void {
    this.unindex(this.slotOf(index))
    const last = this.size - 1
    if (index !== last) {
      this.slots[2 * this.slotOf(last)] = index + 1
      this.moveEntry(last, index)
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
    this.reindex()
    this.shrink()
  }

  /** Empties slot `s` and shifts back the entries of its probe run (no tombstones). */
  private unindex(s: number): void {
    let hole = s
    for (let next = (s + 1) & this.mask; this.slots[2 * next] !== 0; next = (next + 1) & this.mask) {
      const home = this.slots[2 * next + 1] & this.mask
      // Move the entry back into the hole unless its home lies (cyclically) after the hole.
      const distHole = (hole - home) & this.mask
      const distNext = (next - home) & this.mask
      if (distHole <= distNext) {
        this.slots[2 * hole] = this.slots[2 * next]
        this.slots[2 * hole + 1] = this.slots[2 * next + 1]
        hole = next
      }
    }
    this.slots[2 * hole] = 0
    this.slots[2 * hole + 1] = 0
  }

  clear(): void {
    this.slots.fill(0)
    this.size = 0
    this.shrink()
  }
}

/* u64 fields as two little-endian 32-bit words (the kernel's byte order on every target we load on). */
function readU64(w: Int32Array, at: number): number {
  return (w[at] >>> 0) + (w[at + 1] >>> 0) * TWO_32
}

function writeU64(w: Int32Array, at: number, value: number): void {
  const lo = value >>> 0 // ToUint32 is the value modulo 2^32, exactly
  w[at] = lo
  w[at + 1] = (value - lo) / TWO_32
}

function addU64(w: Int32Array, at: number, add: number): void {
  writeU64(w, at, readU64(w, at) + add)
}
