/**
 * A meter set's packet sampling: 1 packet in N counted, at random, decided by the program before
 * it parses a packet (bpf/meter.bpf.c, SAMPLING). N lives in the set's `settings` map, which the
 * program reads once per packet: changing it is one map update, effective at the next packet,
 * with no reload and no filter touched. Each flow's key carries the N it was counted at, so a
 * change starts new records and loses no count already taken (`meter attach --sampling N`, and
 * the daemon's `sampling:` of a meter).
 */
import {InvalidInputError} from '../errors.js'
import {readMeterSettings, SAMPLING_INTERVAL_MAX, writeMeterSettings} from './layout.js'
import type {BpfMap} from './libbpf.js'

export const MIN_SAMPLING_INTERVAL = 1
/** A key holds the interval in 16 bits. */
export const MAX_SAMPLING_INTERVAL = SAMPLING_INTERVAL_MAX

/** `n` if it is a sampling interval the meter takes, else a one-line error naming `what` (the flag or key). */
export function validateSamplingInterval(n: number, what = '--sampling'): number {
  if (!Number.isInteger(n) || n < MIN_SAMPLING_INTERVAL || n > MAX_SAMPLING_INTERVAL) {
    throw new InvalidInputError(
      `invalid ${what} ${n}: expected an integer from ${MIN_SAMPLING_INTERVAL} (every packet) to ${MAX_SAMPLING_INTERVAL} (1 packet in ${MAX_SAMPLING_INTERVAL})`,
    )
  }
  return n
}

/**
 * The sampling interval of the meter set `from` opens (a MeterSet whose layout was verified, or
 * what a FlowStore holds): 1 when it samples nothing.
 */
export function readSampling(from: {openMap(name: string): BpfMap}): number {
  const map = from.openMap('settings')
  try {
    return readMeterSettings(map).samplingInterval || 1
  } finally {
    map.close()
  }
}

/**
 * Makes the meter set `from` opens count 1 packet in `n` from its next packet on (1: every
 * packet); the other settings stay as they are. Flows counted at the old rate keep their records.
 */
export function setSampling(from: {openMap(name: string): BpfMap}, n: number): void {
  validateSamplingInterval(n)
  const map = from.openMap('settings')
  try {
    writeMeterSettings(map, {...readMeterSettings(map), samplingInterval: n})
  } finally {
    map.close()
  }
}
