/**
 * Reading a big map while working on what was read: the batch reads run in a worker thread
 * (src/bpf/read-ahead-worker.ts), a few read batches ahead, into a shared ring, while the
 * caller's thread handles the batch before. A drain of a million flows spends about as long in the
 * kernel's batch reads as in its own per-flow work; one after the other they add up, side by
 * side the slower of the two sets the pace. The caller stays synchronous: it blocks (Atomics.wait)
 * only when the next batch is not read yet.
 *
 * Reads only: a map read this way is one no program writes any more (a drained flow map), so
 * the crash-safety of the drain is the same as with BpfMap.forEachBatch.
 */
import {Worker} from 'node:worker_threads'

import {BpfError} from '../errors.js'
import {ENOENT, ENOSPC, lookupBatchAsync, type BpfMap} from './libbpf.js'
import {ABORT, BUSY, COUNT, CTRL_WORDS, EMPTY, ERRNO, FAILED, LAST, SLOTS, STATE, slotBytes} from './read-ahead-protocol.js'

/** How long the caller waits for one read batch before it calls the reader thread dead. */
const ANSWER_MS = 30_000

export class ReadAhead {
  private static instance?: ReadAhead
  private worker?: Worker
  private ctrlBuffer = new SharedArrayBuffer(CTRL_WORDS * 4)
  private ctrl = new Int32Array(this.ctrlBuffer)
  private data = new SharedArrayBuffer(0)
  private shape = ''
  private keyViews: Buffer[] = []
  private valueViews: Buffer[] = []
  /** Set when the thread failed: the next read starts a new one. */
  private broken = false

  /** The process's reader (one thread, started at its first read, never keeping the process alive). */
  static shared(): ReadAhead {
    ReadAhead.instance ??= new ReadAhead()
    return ReadAhead.instance
  }

  private thread(): Worker {
    if (this.worker && !this.broken) return this.worker
    if (this.worker) {
      // A thread that stopped answering may still write into its ring: the next one gets its own.
      void this.worker.terminate()
      this.ctrlBuffer = new SharedArrayBuffer(CTRL_WORDS * 4)
      this.ctrl = new Int32Array(this.ctrlBuffer)
      this.data = new SharedArrayBuffer(0)
      this.shape = ''
    }
    this.broken = false
    const worker = new Worker(new URL('./read-ahead-worker.js', import.meta.url))
    worker.unref()
    worker.on('error', () => (this.broken = true))
    worker.on('exit', () => (this.broken = true))
    this.worker = worker
    return worker
  }

  /**
   * Reads every entry of `map` as BpfMap.forEachBatch does (lookups only, read batches of
   * `batchEntries`, `onBatch` with views that are reused: copy what you keep), with the next
   * batches read meanwhile. Returns the entries read.
   */
  forEachBatch(map: BpfMap, onBatch: (keys: Buffer, values: Buffer, count: number) => void, batchEntries = 8192): number {
    const keySize = map.info.keySize
    const valueSize = map.valueBytes
    const worker = this.thread()
    this.ensureRing(keySize, valueSize, batchEntries)
    const ctrl = this.ctrl
    for (let s = 0; s < SLOTS; s++) {
      ctrl[s * 3 + STATE] = EMPTY
      ctrl[s * 3 + COUNT] = 0
      ctrl[s * 3 + ERRNO] = 0
    }
    ctrl[ABORT] = 0
    ctrl[BUSY] = 1
    worker.postMessage({fd: map.fd, keySize, valueSize, batchEntries, ctrl: this.ctrlBuffer, data: this.data})
    let total = 0
    let finished = false
    try {
      for (let i = 0; ; i++) {
        const slot = i % SLOTS
        const at = slot * 3 + STATE
        let state = Atomics.load(ctrl, at)
        while (state === EMPTY) {
          if (Atomics.wait(ctrl, at, EMPTY, ANSWER_MS) === 'timed-out' && Atomics.load(ctrl, at) === EMPTY) {
            this.broken = true
            throw new Error(`reading map ${map.info.name}: the map reader thread did not answer in ${ANSWER_MS / 1000} s`)
          }
          state = Atomics.load(ctrl, at)
        }
        if (state === FAILED) throw new BpfError(`reading map ${map.info.name} in batches`, ctrl[slot * 3 + ERRNO])
        const n = ctrl[slot * 3 + COUNT]
        if (n > 0) {
          total += n
          onBatch(this.keyViews[slot], this.valueViews[slot], n)
        }
        if (state === LAST) {
          finished = true
          return total
        }
        Atomics.store(ctrl, at, EMPTY)
        Atomics.notify(ctrl, at)
      }
    } finally {
      if (!finished) {
        Atomics.store(ctrl, ABORT, 1)
        for (let s = 0; s < SLOTS; s++) Atomics.notify(ctrl, s * 3 + STATE)
      }
      // The thread lets go of the ring (and of the map's fd) before the caller may close the map.
      if (Atomics.load(ctrl, BUSY) && Atomics.wait(ctrl, BUSY, 1, ANSWER_MS) === 'timed-out') this.broken = true
    }
  }

  /** Views of a ring of SLOTS read batches of this shape; the memory is kept, and grown only when too small. */
  private ensureRing(keySize: number, valueSize: number, batchEntries: number): void {
    const shape = `${keySize}/${valueSize}/${batchEntries}`
    if (shape === this.shape) return
    const size = slotBytes({keySize, valueSize, batchEntries})
    if (this.data.byteLength < size * SLOTS) this.data = new SharedArrayBuffer(size * SLOTS)
    this.keyViews = []
    this.valueViews = []
    for (let s = 0; s < SLOTS; s++) {
      this.keyViews.push(Buffer.from(this.data, s * size, batchEntries * keySize))
      this.valueViews.push(Buffer.from(this.data, s * size + batchEntries * keySize, batchEntries * valueSize))
    }
    this.shape = shape
  }
}

/** Read batches in a ring: the one being handed over, the one being read, and one spare. */
const RING_SLOTS = 3

interface RingSlot {
  keys: Buffer
  values: Buffer
  count: Uint32Array
  inBatch: Buffer
  outBatch: Buffer
}

/** Rings not in use, by shape (`keySize/valueSize/batchEntries`): a drain after another reuses the memory. */
const idleRings = new Map<string, RingSlot[][]>()

function takeRing(keySize: number, valueSize: number, batchEntries: number): {shape: string; ring: RingSlot[]} {
  const shape = `${keySize}/${valueSize}/${batchEntries}`
  const ring = idleRings.get(shape)?.pop()
  if (ring) return {shape, ring}
  const slot = (): RingSlot => ({
    // Whole allocations (never slices of Node's pool): aligned, so callers may view them as words.
    keys: Buffer.allocUnsafeSlow(batchEntries * keySize),
    values: Buffer.allocUnsafeSlow(batchEntries * valueSize),
    count: new Uint32Array(1),
    inBatch: Buffer.alloc(Math.max(8, keySize)),
    outBatch: Buffer.alloc(Math.max(8, keySize)),
  })
  return {shape, ring: Array.from({length: RING_SLOTS}, slot)}
}

/**
 * Reads every entry of `map` as BpfMap.forEachBatch does (lookups only, read batches of
 * `batchEntries`, `onBatch` with views that are reused: copy what you keep), each next read batch
 * read in one of libuv's threads (koffi's async calls) while the caller handles the one before:
 * the overlap of ReadAhead without a thread of JavaScript of its own (a worker is a V8 isolate,
 * about 10 MB of memory). The caller awaits between read batches. Resolves with the entries read,
 * once no read is in flight any more (the caller may close the map then).
 */
export async function forEachBatchAhead(map: BpfMap, onBatch: (keys: Buffer, values: Buffer, count: number) => void, batchEntries = 8192): Promise<number> {
  const keySize = map.info.keySize
  const {shape, ring} = takeRing(keySize, map.valueBytes, batchEntries)
  const reads: Promise<number>[] = []
  let next = 0
  let handed = 0
  let inFlight: Promise<number> | undefined
  let ended = false
  // Read i + 1 starts from where read i ended (its out_batch), once read i is done and its slot
  // is free: the batch read RING_SLOTS before it has been handed over.
  const launch = (): void => {
    if (inFlight || ended || next >= handed + RING_SLOTS) return
    const i = next++
    const slot = ring[i % RING_SLOTS]
    const previous = i > 0 ? ring[(i - 1) % RING_SLOTS] : undefined
    if (previous) previous.outBatch.copy(slot.inBatch)
    slot.count[0] = batchEntries
    const read = lookupBatchAsync(map.fd, previous ? slot.inBatch : null, slot.outBatch, slot.keys, slot.values, slot.count).then(
      (rc) => {
        inFlight = undefined
        if (rc < 0) ended = true
        else launch()
        return rc
      },
      (error: unknown) => {
        inFlight = undefined
        ended = true
        throw error
      },
    )
    inFlight = read
    reads[i] = read
  }
  let total = 0
  try {
    launch()
    for (let i = 0; ; i++) {
      const rc = await reads[i]
      if (rc < 0 && rc !== -ENOENT) {
        // (ENOSPC: a hash bucket holds more entries than a read batch; flow maps never come near.)
        throw new BpfError(`reading map ${map.info.name} in batches`, -rc, rc === -ENOSPC ? `a hash bucket holds more than ${batchEntries} entries` : undefined)
      }
      const slot = ring[i % RING_SLOTS]
      const n = slot.count[0]
      if (n > 0) {
        total += n
        onBatch(slot.keys, slot.values, n)
      }
      handed = i + 1
      if (rc === -ENOENT) return total
      launch()
    }
  } finally {
    // A read still in flight writes into the ring and reads the map's fd: wait for it.
    ended = true
    await inFlight?.catch(() => {})
    const idle = idleRings.get(shape) ?? []
    idle.push(ring)
    idleRings.set(shape, idle)
  }
}
