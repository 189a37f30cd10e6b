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
