/**
 * The flow cache's records: each flow a record laid out as the kernel's snapshot record (key, then
 * value: the layout is given by the caller, src/bpf/flow-store.ts, from the generated kernel
 * layout), and the records in chunks exactly as the snapshot's `pending` map holds them. So
 * committing a drain hands the cache's own memory to the kernel (no per-flow work), and merging
 * one flow touches one record (one or two cache lines) instead of a dozen columns.
 *
 * Chunks come in slabs of up to SLAB_CHUNKS, contiguous, allocated as flows arrive: memory follows
 * the flows held, and growing never copies more than the first slab. Records are numbered densely
 * from 0 (entry numbers); which numbers are in use is the cache's business (flow-cache.ts).
 */
import {releaseMemory} from '../sys/heap.js'
import {firstPacketWins, maxTtlOf, minTtlOf, type FlowSample} from './record.js'

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

/** Chunks per slab: one batch update of the snapshot map writes a slab (8 MiB of 32 KiB chunks). */
export const SLAB_CHUNKS = 256
const SLAB_SHIFT = 8
const FIRST_SLAB_CHUNKS = 4
const TWO_32 = 4_294_967_296

export class RecordSlabs {
  readonly layout: FlowRecordLayout
  readonly recordsPerChunk: number
  /** 32-bit words of a key (every kernel key is a multiple of 4 bytes). */
  readonly keyWords: number
  private readonly recordWords: number
  private readonly chunkWords: number
  private readonly headerWords: number
  private readonly perChunkInverse: number
  /** Chunks of the first slab when it is made: no more than `maxRecords` need. */
  private readonly firstSlabChunks: number
  /** Slabs of whole chunks: bytes, and the same memory as 32-bit words. */
  private slabs: Buffer[] = []
  private slabWords: Int32Array[] = []
  /** Chunks allocated so far (the first slab may be short of SLAB_CHUNKS). */
  private chunksAllocated = 0

  /** The most records it will be asked to hold. */
  readonly maxRecords: number

  constructor(layout: FlowRecordLayout, maxRecords: number) {
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
    this.maxRecords = maxRecords
    this.keyWords = layout.keySize / 4
    this.recordWords = layout.recordSize / 4
    this.chunkWords = layout.chunkBytes / 4
    this.headerWords = layout.chunkHeader / 4
    this.recordsPerChunk = Math.floor((layout.chunkBytes - layout.chunkHeader) / layout.recordSize)
    this.perChunkInverse = 1 / this.recordsPerChunk
    this.firstSlabChunks = Math.min(FIRST_SLAB_CHUNKS, Math.max(1, Math.ceil(maxRecords / this.recordsPerChunk)))
    this.grow()
  }

  /** Records the allocated chunks hold (memory follows it). */
  get room(): number {
    return this.chunksAllocated * this.recordsPerChunk
  }

  /** The slab holding chunk `c`, and the chunk's byte offset in it. */
  chunkSlab(c: number): Buffer {
    return this.slabs[Math.floor(c / SLAB_CHUNKS)]
  }

  chunkOffset(c: number): number {
    return (c % SLAB_CHUNKS) * this.layout.chunkBytes
  }

  /**
   * The chunk of record `idx`: floor(idx / recordsPerChunk) by a multiplication (a division is
   * several times slower, and this runs for every flow). The half keeps a product that should be
   * a whole k from rounding to just below it; it is exact for any idx below 2^31.
   */
  private chunkOf(idx: number): number {
    return ((idx + 0.5) * this.perChunkInverse) | 0
  }

  /** The slab holding record `idx` (see `recordAt` for where in it). */
  slabOf(idx: number): Buffer {
    return this.slabs[this.chunkOf(idx) >> SLAB_SHIFT]
  }

  /** The byte offset of record `idx` (its key; the value is `layout.valueAt` further) in `slabOf(idx)`. */
  recordAt(idx: number): number {
    return 4 * this.wordAt(idx)
  }

  /** The word offset of record `idx` in its slab. */
  private wordAt(idx: number): number {
    const c = this.chunkOf(idx)
    return (c & (SLAB_CHUNKS - 1)) * this.chunkWords + this.headerWords + (idx - c * this.recordsPerChunk) * this.recordWords
  }

  private wordsOf(idx: number): Int32Array {
    return this.slabWords[this.chunkOf(idx) >> SLAB_SHIFT]
  }

  /** Makes room for more records: the first slab doubles until full size, then whole slabs are added. */
  grow(): void {
    const chunkBytes = this.layout.chunkBytes
    if (this.slabs.length === 1 && this.chunksAllocated < SLAB_CHUNKS) {
      const chunks = Math.min(SLAB_CHUNKS, this.chunksAllocated * 2)
      const slab = Buffer.allocUnsafeSlow(chunks * chunkBytes)
      const old = this.slabs[0]
      old.copy(slab)
      this.setSlab(0, slab)
      releaseMemory(old.buffer)
      this.chunksAllocated = chunks
    } else {
      const chunks = this.slabs.length === 0 ? this.firstSlabChunks : SLAB_CHUNKS
      this.setSlab(this.slabs.length, Buffer.allocUnsafeSlow(chunks * chunkBytes))
      this.chunksAllocated += chunks
    }
  }

  /**
   * Gives back the slabs records 0..`used`-1 do not need, keeping room for twice as many: after a
   * burst of flows has been exported, the daemon's memory follows the flows it still holds.
   * Returns whether the room changed.
   */
  shrink(used: number): boolean {
    if (this.slabs.length <= 1) return false
    // With more than one slab, the first is full size (grow() fills it before adding others).
    const want = Math.ceil((2 * used) / this.recordsPerChunk)
    let keep = 1
    while (keep < this.slabs.length && keep * SLAB_CHUNKS < want) keep++
    if (keep === this.slabs.length) return false
    // (Nothing reads them any more: the records in use are all in the slabs kept.)
    for (const slab of this.slabs.slice(keep)) releaseMemory(slab.buffer)
    this.slabs.length = keep
    this.slabWords.length = keep
    this.chunksAllocated = keep * SLAB_CHUNKS
    return true
  }

  /** Records a slab holds (the first one once others follow it). */
  get recordsPerSlab(): number {
    return SLAB_CHUNKS * this.recordsPerChunk
  }

  /**
   * Gives back every slab past the one holding record `used` - 1 (the first slab stays), their
   * memory at once: records from `used` on are gone. Returns whether the room changed.
   */
  releaseFrom(used: number): boolean {
    const keep = Math.max(1, Math.ceil(used / this.recordsPerSlab))
    if (keep >= this.slabs.length) return false
    for (const slab of this.slabs.slice(keep)) releaseMemory(slab.buffer)
    this.slabs.length = keep
    this.slabWords.length = keep
    this.chunksAllocated = keep * SLAB_CHUNKS
    return true
  }

  private setSlab(i: number, slab: Buffer): void {
    this.slabs[i] = slab
    this.slabWords[i] = new Int32Array(slab.buffer, slab.byteOffset, slab.length >> 2)
  }

  /** Record `idx`'s value, decoded into `into`. */
  read(idx: number, into: FlowSample): FlowSample {
    return this.layout.readValue(this.slabOf(idx), this.recordAt(idx) + this.layout.valueAt, into)
  }

  /** Whether record `idx` holds the key whose words are at `at` of `words`. */
  sameKey(idx: number, words: Int32Array, at: number): boolean {
    const mine = this.wordsOf(idx)
    const base = this.wordAt(idx)
    for (let i = 0; i < this.keyWords; i++) if (mine[base + i] !== words[at + i]) return false
    return true
  }

  /** The first word of record `idx`: reading it brings the record into the CPU's cache. */
  firstWord(idx: number): number {
    return this.wordsOf(idx)[this.wordAt(idx)]
  }

  /** Makes record `idx` the key at `at` of `words` with a zeroed value. */
  reset(idx: number, words: Int32Array, at: number): void {
    const mine = this.wordsOf(idx)
    const base = this.wordAt(idx)
    for (let i = 0; i < this.keyWords; i++) mine[base + i] = words[at + i]
    mine.fill(0, base + this.keyWords, base + this.recordWords)
  }

  /** Copies record `from` over record `to`. */
  copy(from: number, to: number): void {
    const src = this.wordsOf(from)
    const dst = this.wordsOf(to)
    const s = this.wordAt(from)
    const d = this.wordAt(to)
    if (src === dst) dst.copyWithin(d, s, s + this.recordWords)
    else for (let i = 0; i < this.recordWords; i++) dst[d + i] = src[s + i]
  }

  /**
   * Adds what `from` counted into record `idx`: sums, latest last-seen, OR of flags, the TTL range,
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
      for (let k = 0, at = vb + f.nextHop; k < this.layout.addrLen; k++) b[at + k] = from.nextHopBytes[from.nextHopOffset + k]
    }
    if (from.lastNs > readU64(w, v + (f.lastNs >> 2))) writeU64(w, v + (f.lastNs >> 2), from.lastNs)
    w[v + (f.tcpFlags >> 2)] |= from.tcpFlags
    const min = b[vb + f.minTtl]
    const max = b[vb + f.maxTtl]
    b[vb + f.minTtl] = minTtlOf(min, max, from.minTtl, from.maxTtl)
    b[vb + f.maxTtl] = maxTtlOf(min, max, from.minTtl, from.maxTtl)
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
