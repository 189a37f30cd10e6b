/**
 * How far V8 lets the heap grow between full collections. By default it lets the heap reach up
 * to 4 times what was live after the last one (and further while a collection is under way): a
 * process whose live memory is bounded but that makes garbage fast, as `ipfix listen` does under
 * a flood of templates that push older ones out, then sits at hundreds of megabytes of garbage,
 * once at 650 MB for 33 MB live. The limit on the command line (--max-old-space-size) cannot be
 * set once the process runs, but the growing factor is read at each collection: 1.5 keeps that
 * flood near 160 MB.
 */
import {setFlagsFromString} from 'node:v8'

/** Lets the heap grow by at most `percent` % over what was live before the next full collection. */
export function limitHeapGrowth(percent = 50): void {
  setFlagsFromString(`--heap-growing-percent=${percent}`)
}

/**
 * Gives an ArrayBuffer's memory back now rather than at V8's next full collection. A buffer
 * outside V8's heap (a Buffer, a typed array's memory) is freed only when the collector finds its
 * ArrayBuffer dead, and a long-lived one is found dead only by a full collection, which V8 starts
 * after some 64 MiB more of such memory: until then a slab or an arena the daemon let go of stays
 * in its RSS beside the ones that replace it. Detaching it (a structured clone that transfers it)
 * hands the memory to a new ArrayBuffer that nothing holds, and a young one: the next scavenge
 * (every couple of MiB of allocation) frees it. Every view of `buffer` is empty afterwards: call
 * it only once nothing reads the buffer any more.
 */
export function releaseMemory(buffer: ArrayBufferLike): void {
  if (buffer instanceof ArrayBuffer && buffer.byteLength > 0) structuredClone(buffer, {transfer: [buffer]})
}
