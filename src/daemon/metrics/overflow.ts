/**
 * The overflow map as the metrics read it: packets and bytes the meter could not record (flow map
 * full), per interface and direction, through the layout's accessor (src/bpf/layout.ts).
 */
import {readOverflow} from '../../bpf/layout.js'
import type {MeterSet} from '../../bpf/meter-set.js'
import {directionName, type DirectionName} from '../../flow/record.js'

export interface NotMetered {
  ifindex: number
  direction: DirectionName
  packets: number
  bytes: number
}

/**
 * The overflow counters of a meter set, or null when its map cannot be opened
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
    return readOverflow(map).map((o) => ({ifindex: o.ifindex, direction: directionName(o.direction), packets: o.packets, bytes: o.bytes}))
  } finally {
    map.close()
  }
}
