/**
 * Kernel flow keys and values built by hand, as the meter would write them, for tests that fill
 * flow maps directly (no traffic).
 */
import {FLOW_KEY4, FLOW_VALUE4, KEY, METER_STATS, readU64, VALUE, writeU64} from '../../src/bpf/layout.js'
import type {BpfMap} from '../../src/bpf/libbpf.js'
import type {Family} from '../../src/flow/record.js'

/**
 * A struct flow_key4 on ifindex 3, ingress, between two 198.18.0.0/15 hosts, counted at sampling
 * interval 1 as the meter writes it (`samplingInterval` 0: as a layout-2 meter wrote it).
 */
export function flowKey4(sport: number, over: {proto?: number; dport?: number; src?: number[]; dst?: number[]; samplingInterval?: number} = {}): Buffer {
  const k = Buffer.alloc(FLOW_KEY4.size)
  k.writeUInt32LE(3, KEY.ifindex.offset)
  k.writeUInt16LE(over.samplingInterval ?? 1, KEY.samplingInterval.offset)
  k[KEY.proto.offset] = over.proto ?? 6
  k.writeUInt16BE(sport, KEY.sport.offset)
  k.writeUInt16BE(over.dport ?? 80, KEY.dport.offset)
  k.set(over.src ?? [198, 18, 50, 1], FLOW_KEY4.fields.src.offset)
  k.set(over.dst ?? [198, 18, 50, 2], FLOW_KEY4.fields.dst.offset)
  return k
}

/** What a test says a flow counted (CLOCK_MONOTONIC ns times). */
export interface FlowCounts {
  packets: number
  bytes: number
  first: number
  last: number
  flags?: number
  peer?: number
  /** Lowest and highest TTL; 64 and 64 when not given. */
  ttl?: [number, number]
}

/** A struct flow_value4 holding `f`. */
export function flowValue4(f: FlowCounts): Buffer {
  const v = Buffer.alloc(FLOW_VALUE4.size)
  writeU64(v, VALUE.packets.offset, f.packets)
  writeU64(v, VALUE.bytes.offset, f.bytes)
  writeU64(v, VALUE.firstSeenNs.offset, f.first)
  writeU64(v, VALUE.lastSeenNs.offset, f.last)
  v[VALUE.tcpFlags.offset] = f.flags ?? 0
  v.writeUInt32LE(f.peer ?? 0, VALUE.peerIfindex.offset)
  v[VALUE.minTtl.offset] = f.ttl?.[0] ?? 64
  v[VALUE.maxTtl.offset] = f.ttl?.[1] ?? 64
  return v
}

/**
 * Adds `n` to the flows the program counts as created in `family`'s live map (meter_stats, CPU
 * 0's copy), as the meter does for each flow it inserts: for flows written into a live map by
 * hand. A daemon takes a live map out only when that count moved (src/daemon/live-maps.ts).
 */
export function countCreated(from: {openMap(name: string): BpfMap}, family: Family, n: number): void {
  const map = from.openMap('meter_stats')
  try {
    const key = Buffer.alloc(4)
    const values = map.lookup(key)!
    const at = family === 4 ? METER_STATS.fields.flows4Created.offset : METER_STATS.fields.flows6Created.offset
    writeU64(values, at, readU64(values, at) + n)
    map.update(key, values)
  } finally {
    map.close()
  }
}
