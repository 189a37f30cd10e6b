/**
 * The shared memory between src/bpf/read-ahead.ts (the caller's thread) and
 * src/bpf/read-ahead-worker.ts (the thread that reads the map): a ring of SLOTS read batches,
 * each with its state, entry count and errno in `ctrl`, and its keys then values in `data`.
 */
export const SLOTS = 3

/** ctrl[slot * 3 + STATE]: who owns the slot. */
export const STATE = 0
export const COUNT = 1
export const ERRNO = 2
/** ctrl[BUSY]: 1 while the worker serves a read; ctrl[ABORT]: the caller gave up on it. */
export const BUSY = SLOTS * 3
export const ABORT = BUSY + 1
export const CTRL_WORDS = ABORT + 1

/** The caller may fill it no more; the worker may fill it. */
export const EMPTY = 0
/** Holds COUNT entries, and more follow. */
export const FULL = 1
/** Holds COUNT entries (maybe 0), the map's last. */
export const LAST = 2
/** The read failed with ERRNO; nothing more follows. */
export const FAILED = 3

export interface ReadRequest {
  fd: number
  keySize: number
  valueSize: number
  /** Entries per slot: one read batch (one bpf() call). */
  batchEntries: number
  ctrl: SharedArrayBuffer
  data: SharedArrayBuffer
}

/** Bytes of one slot (keys, then values), kept a multiple of 8 so every slot's keys are aligned. */
export function slotBytes(r: Pick<ReadRequest, 'keySize' | 'valueSize' | 'batchEntries'>): number {
  return Math.ceil((r.batchEntries * (r.keySize + r.valueSize)) / 8) * 8
}
