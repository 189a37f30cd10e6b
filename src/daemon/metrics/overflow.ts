/**
 * The overflow map as the metrics read it: packets and bytes the meter could not record (flow map
 * full), per interface and direction. One call, so that the kernel layout behind it can change
 * (a generated accessor in src/bpf) without touching the metrics.
 */
import {decodePerCpuOverflow} from '../../bpf/layout.js'
import type {MeterSet} from '../../bpf/meter-set.js'
import {directionName, type DirectionName} from '../../flow/record.js'

export interface NotMetered {
  ifindex: number
  direction: DirectionName
  packets: number
  bytes: number
}

/**
 * The overflow counters of a meter set (summed over CPUs), or null when its map cannot be opened
 * (the meter was detached meanwhile). A failed read throws.
 */
export function readNotMetered(set: MeterSet): NotMetered[] | null {
  let map
  try {
    map = set.openMap('overflow')
  } catch {
    return null
  }
  try {
    const out: NotMetered[] = []
    const stride = map.valueBytes
    map.forEachBatch((keys, values, n) => {
      for (let i = 0; i < n; i++) {
        const o = decodePerCpuOverflow(values, i * stride, stride / 16)
        out.push({ifindex: keys.readUInt32LE(i * 8), direction: directionName(keys.readUInt32LE(i * 8 + 4)), ...o})
      }
    })
    return out
  } finally {
    map.close()
  }
}
