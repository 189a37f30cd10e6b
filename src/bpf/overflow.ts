/**
 * The one reader of a meter set's overflow map: packets and bytes the meter could not record
 * because its flow map was full, per interface and direction. The daemon sends them to its
 * collectors (IPFIX ignoredPacketTotalCount), the metrics show them (flowctl_not_metered_*) and
 * `meter status` lists them.
 */
import {directionName, type DirectionName} from '../flow/record.js'
import {OVERFLOW_KEY, OVERFLOW_VALUE, readU32, readU64} from './layout.js'
import type {BpfMap} from './libbpf.js'

export interface OverflowCount {
  ifindex: number
  direction: DirectionName
  packets: number
  bytes: number
}

/**
 * Every entry of the overflow map `from` opens: a meter set (by its path), or what a drainer holds
 * (never another set's at its path). Null when it cannot be opened (the set was detached
 * meanwhile); a failed read throws.
 */
export function readOverflow(from: {openMap(name: string): BpfMap}): OverflowCount[] | null {
  let map: BpfMap
  try {
    map = from.openMap('overflow')
  } catch {
    return null
  }
  try {
    const out: OverflowCount[] = []
    map.forEachBatch((keys, values, n) => {
      for (let i = 0; i < n; i++) {
        const k = i * OVERFLOW_KEY.size
        const v = i * OVERFLOW_VALUE.size
        out.push({
          ifindex: readU32(keys, k + OVERFLOW_KEY.fields.ifindex.offset),
          direction: directionName(readU32(keys, k + OVERFLOW_KEY.fields.direction.offset)),
          packets: readU64(values, v + OVERFLOW_VALUE.fields.packets.offset),
          bytes: readU64(values, v + OVERFLOW_VALUE.fields.bytes.offset),
        })
      }
    })
    return out
  } finally {
    map.close()
  }
}
