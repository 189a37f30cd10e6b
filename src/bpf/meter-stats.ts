/**
 * The one reader of a meter set's per-CPU counters (struct meter_stats, the `meter_stats` map):
 * what the program counted beside the flows, summed over every CPU's copy.
 *
 *  - flowsCreated: flows inserted into each family's live flow map since the set was made. The
 *    program counts one only after a successful insert, so a sum that did not change between two
 *    reads means no flow was created in between: if it is the sum read before the previous swap,
 *    the live map that swap put in place is still empty (taking it out would only cost a fresh
 *    map). An insert whose count is not visible yet is found at the next read: a skipped swap
 *    leaves its flow in the live map, where the next drain takes it. The growth since a swap is
 *    also an upper bound on what the live map holds (against its max_entries).
 *  - packetsNotSampled: IP packets the sampler skipped (see meter.bpf.c, SAMPLING).
 *  - packetsOverflowed: packets that found their flow map full (the overflow map has them per
 *    interface): one number that tells whether a map overflowed since the last read.
 */
import type {Family} from '../flow/record.js'
import {METER_STATS, readU64} from './layout.js'
import {numPossibleCpus, type BpfMap} from './libbpf.js'

export interface MeterStats {
  flowsCreated: Record<Family, number>
  packetsNotSampled: number
  packetsOverflowed: number
}

const ZERO_KEY = Buffer.alloc(4)

/**
 * The counters of the meter set `from` opens (a MeterSet, or what a FlowStore holds), summed over
 * CPUs. Null when the map cannot be opened (the set was detached meanwhile); a failed read throws.
 * Every count only grows, and each CPU's copy is read at its own instant: a sum is never more than
 * what was counted by the time the read returns.
 */
export function readMeterStats(from: {openMap(name: string): BpfMap}): MeterStats | null {
  let map: BpfMap
  try {
    map = from.openMap('meter_stats')
  } catch {
    return null
  }
  try {
    return new MeterStatsReader(map).read()
  } finally {
    map.close()
  }
}

/**
 * The counters of one meter set read again and again through its `meter_stats` map, held open
 * (the daemon reads them before every drain and between drains: one lookup, about 1.5 µs, each
 * time). The map is the caller's: it closes it.
 */
export class MeterStatsReader {
  private readonly values: Buffer
  /** Bytes of one CPU's copy: each is rounded up to 8 bytes. */
  private readonly stride: number

  constructor(private readonly map: BpfMap) {
    this.values = Buffer.alloc(map.valueBytes)
    this.stride = map.valueBytes / numPossibleCpus()
  }

  /** The counters now, summed over CPUs (see readMeterStats). */
  read(): MeterStats {
    const values = this.map.lookup(ZERO_KEY, this.values)!
    const f = METER_STATS.fields
    const stats: MeterStats = {flowsCreated: {4: 0, 6: 0}, packetsNotSampled: 0, packetsOverflowed: 0}
    for (let at = 0; at < values.length; at += this.stride) {
      stats.flowsCreated[4] += readU64(values, at + f.flows4Created.offset)
      stats.flowsCreated[6] += readU64(values, at + f.flows6Created.offset)
      stats.packetsNotSampled += readU64(values, at + f.packetsNotSampled.offset)
      stats.packetsOverflowed += readU64(values, at + f.packetsOverflowed.offset)
    }
    return stats
  }
}
