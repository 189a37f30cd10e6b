/**
 * Kernel timestamps to wall-clock time. The meter stamps packets with CLOCK_MONOTONIC (coarse);
 * the offset to CLOCK_REALTIME is read with clock_gettime, both clocks back to back, so the
 * conversion is exact to a microsecond or so (Date.now() alone would give 1 ms steps).
 * The offset is read again on every call to `clockOffset`: NTP may slew the wall clock.
 */
import koffi from 'koffi'

const CLOCK_REALTIME = 0
const CLOCK_MONOTONIC = 1

let clockGettime: ((clock: number, ts: Buffer) => number) | undefined

function gettime(): (clock: number, ts: Buffer) => number {
  if (!clockGettime) {
    const libc = koffi.load('libc.so.6')
    clockGettime = libc.func('int clock_gettime(int clockid, void *tp)')
  }
  return clockGettime
}

function readNs(clock: number, ts: Buffer): bigint {
  gettime()(clock, ts)
  return ts.readBigInt64LE(0) * 1_000_000_000n + ts.readBigInt64LE(8)
}

/** CLOCK_MONOTONIC now, in ns: the clock of the kernel's timestamps. */
export function monotonicNowNs(): bigint {
  return process.hrtime.bigint()
}

/** Wall-clock ns minus monotonic ns, measured now: add it to a kernel timestamp to get epoch ns. */
export function clockOffsetNs(): bigint {
  const ts = Buffer.alloc(16)
  let best: bigint | undefined
  let bestSpan: bigint | undefined
  // The pair read with the least time between its two monotonic reads wins.
  for (let i = 0; i < 5; i++) {
    const m1 = readNs(CLOCK_MONOTONIC, ts)
    const real = readNs(CLOCK_REALTIME, ts)
    const m2 = readNs(CLOCK_MONOTONIC, ts)
    const span = m2 - m1
    if (bestSpan === undefined || span < bestSpan) {
      bestSpan = span
      best = real - (m1 + span / 2n)
    }
  }
  return best!
}

/** Converts a CLOCK_MONOTONIC ns timestamp to epoch milliseconds (with fraction). */
export function monotonicToEpochMs(ns: bigint, offsetNs: bigint): number {
  if (ns === 0n) return 0
  return Number(ns + offsetNs) / 1e6
}
