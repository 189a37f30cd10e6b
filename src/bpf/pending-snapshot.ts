/**
 * The daemon's snapshot as the kernel keeps it: the `pending` map's chunks (bpf/flowctl.h: a
 * header, family and records, then that many records of one family), keyed by chunkKey(slot,
 * index), in one of two slots. Which slot and how many chunks make the committed snapshot is
 * drain_state's to say (flow-store.ts): this module writes, reads and deletes chunks as told.
 *
 * The flow cache keeps its entries as such chunks already (src/flow/record-slabs.ts), so a write
 * hands the kernel the caches' own memory, a slab per batch update.
 */
import type {FlowCache} from '../flow/flow-cache.js'
import {SLAB_CHUNKS} from '../flow/record-slabs.js'
import {FAMILIES, type Family} from '../flow/record.js'
import {CHUNK_HEADER, chunkKey, pendingFlowLayout, readU32, writeU32, type DrainState} from './layout.js'
import type {BpfMap} from './libbpf.js'

/** Chunks written or deleted per batch syscall (8 MiB of values). */
const CHUNKS_PER_CALL = 256

/** Sees one record of a snapshot: its family, and its key's and value's offsets in `buf`. */
export type SnapshotRecordVisitor = (family: Family, buf: Buffer, keyAt: number, valueAt: number) => void

export class PendingSnapshot {
  /** This meter set's chunk size (older sets keep a larger one: bpf/flowctl.h). */
  readonly chunkBytes: number

  /** `path`: where the map is pinned, for messages. */
  constructor(
    private readonly pending: BpfMap,
    private readonly path: string,
  ) {
    this.chunkBytes = pending.info.valueSize
  }

  /** Calls `onRecord` with each record of the snapshot `state` names; a chunk missing is an error. */
  forEachRecord(state: DrainState, onRecord: SnapshotRecordVisitor): void {
    const key = Buffer.alloc(4)
    const chunk = Buffer.alloc(this.chunkBytes)
    for (let i = 0; i < state.chunks; i++) {
      key.writeUInt32LE(chunkKey(state.slot, i))
      if (!this.pending.lookup(key, chunk)) throw new Error(`the daemon's snapshot in ${this.path} lacks chunk ${i} of ${state.chunks}`)
      forEachChunkRecord(chunk, 0, onRecord)
    }
  }

  /** A copy of the snapshot `state` names, its chunks end to end; undefined when a chunk is gone already. */
  copy(state: DrainState): Buffer | undefined {
    const copy = Buffer.alloc(state.chunks * this.chunkBytes)
    const key = Buffer.alloc(4)
    for (let i = 0; i < state.chunks; i++) {
      key.writeUInt32LE(chunkKey(state.slot, i))
      if (!this.pending.lookup(key, copy.subarray(i * this.chunkBytes, (i + 1) * this.chunkBytes))) return undefined
    }
    return copy
  }

  /** Calls `onRecord` with each record of a copy (`copy`). */
  forEachCopiedRecord(copy: Buffer, onRecord: SnapshotRecordVisitor): void {
    for (let at = 0; at < copy.length; at += this.chunkBytes) forEachChunkRecord(copy, at, onRecord)
  }

  /**
   * Writes what the caches hold as chunks `chunkKey(slot, 0..)`: the caches keep their entries as
   * chunks of snapshot records already, so this writes each chunk's header and hands the kernel
   * the caches' own memory, a slab per batch update. Returns the chunks written.
   */
  write(slot: number, caches: Record<Family, FlowCache>): number {
    const keys = Buffer.alloc(SLAB_CHUNKS * 4)
    let written = 0
    for (const family of FAMILIES) {
      const cache = caches[family]
      const chunks = cache.chunks
      for (let from = 0; from < chunks;) {
        const slab = cache.chunkSlab(from)
        const first = cache.chunkOffset(from)
        let n = 0
        // The chunks of one slab are contiguous: one batch call for as many as it holds.
        for (let c = from; c < chunks && cache.chunkSlab(c) === slab; c++, n++) {
          const at = cache.chunkOffset(c)
          writeU32(slab, at + CHUNK_HEADER.fields.family.offset, family)
          writeU32(slab, at + CHUNK_HEADER.fields.records.offset, Math.min(cache.recordsPerChunk, cache.size - c * cache.recordsPerChunk))
          keys.writeUInt32LE(chunkKey(slot, written + n), n * 4)
        }
        this.pending.updateBatch(keys, slab.subarray(first, first + n * this.chunkBytes), n)
        written += n
        from += n
      }
    }
    return written
  }

  /** Deletes chunks 0..`chunks`-1 of `slot`. */
  delete(slot: number, chunks: number): void {
    const keys = Buffer.alloc(CHUNKS_PER_CALL * 4)
    for (let from = 0; from < chunks; from += CHUNKS_PER_CALL) {
      const n = Math.min(CHUNKS_PER_CALL, chunks - from)
      for (let i = 0; i < n; i++) keys.writeUInt32LE(chunkKey(slot, from + i), i * 4)
      this.pending.deleteBatch(keys, n)
    }
  }

  /** Removes every chunk the snapshot `state` names does not use (left by a daemon killed between a commit and its clean-up). */
  removeStray(state: DrainState): void {
    const stray: number[] = []
    this.pending.forEachBatch(
      (keys, _v, n) => {
        for (let i = 0; i < n; i++) {
          const k = keys.readUInt32LE(i * 4)
          if (k >>> 24 !== state.slot || (k & 0xffffff) >= state.chunks) stray.push(k)
        }
      },
      {batchEntries: 64},
    )
    for (const k of stray) {
      const key = Buffer.alloc(4)
      key.writeUInt32LE(k)
      this.pending.delete(key)
    }
  }

  close(): void {
    this.pending.close()
  }
}

/** Calls `onRecord` with each record of the snapshot chunk at `at` in `buf`. */
function forEachChunkRecord(buf: Buffer, at: number, onRecord: SnapshotRecordVisitor): void {
  const family = readU32(buf, at + CHUNK_HEADER.fields.family.offset) as Family
  const records = readU32(buf, at + CHUNK_HEADER.fields.records.offset)
  const layout = pendingFlowLayout(family)
  for (let r = 0; r < records; r++) {
    const record = at + CHUNK_HEADER.size + r * layout.size
    onRecord(family, buf, record + layout.fields.key.offset, record + layout.fields.value.offset)
  }
}
