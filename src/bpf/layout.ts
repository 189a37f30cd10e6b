/**
 * The TypeScript mirror of bpf/flowctl.h: the byte layout of every key and value flowctl keeps in
 * the kernel, and the one place that turns those bytes into flows. The bpftool JSON path (dump)
 * and the batch syscall path (daemon) both decode here. test/bpf/layout.test.ts compares these
 * offsets with the BTF of the compiled object and fails if the two drift.
 */
import {addressLength, directionName, emptyCounters, mergeCounters, type Family, type FlowCounters, type FlowKey} from '../flow/record.js'
import {formatAddress} from '../util/address.js'

/** Must equal FLOWCTL_LAYOUT_VERSION in bpf/flowctl.h. */
export const LAYOUT_VERSION = 1

export interface FieldSpec {
  readonly name: string
  readonly offset: number
  readonly size: number
}

export interface StructSpec {
  readonly name: string
  readonly size: number
  readonly fields: readonly FieldSpec[]
}

function struct(name: string, size: number, fields: [string, number, number][]): StructSpec {
  return {name, size, fields: fields.map(([n, offset, s]) => ({name: n, offset, size: s}))}
}

const KEY_HEAD: [string, number, number][] = [
  ['ifindex', 0, 4],
  ['direction', 4, 1],
  ['proto', 5, 1],
  ['vlan_id', 6, 2],
  ['sport', 8, 2],
  ['dport', 10, 2],
]

export const FLOW_KEY4 = struct('flow_key4', 20, [...KEY_HEAD, ['src', 12, 4], ['dst', 16, 4]])
export const FLOW_KEY6 = struct('flow_key6', 44, [...KEY_HEAD, ['src', 12, 16], ['dst', 28, 16]])

export const FLOW_COUNTERS = struct('flow_counters', 40, [
  ['packets', 0, 8],
  ['bytes', 8, 8],
  ['first_seen_ns', 16, 8],
  ['last_seen_ns', 24, 8],
  ['tcp_flags', 32, 1],
  ['ip_tos', 33, 1],
  ['_pad', 34, 6],
])

export const FLOW_RECORD = struct('flow_record', 48, [
  ['packets', 0, 8],
  ['bytes', 8, 8],
  ['first_seen_ns', 16, 8],
  ['last_seen_ns', 24, 8],
  ['drain_gen', 32, 8],
  ['tcp_flags', 40, 1],
  ['ip_tos', 41, 1],
  ['_pad', 42, 6],
])

export const OVERFLOW_KEY = struct('overflow_key', 8, [
  ['ifindex', 0, 4],
  ['direction', 4, 4],
])

export const OVERFLOW_COUNTERS = struct('overflow_counters', 16, [
  ['packets', 0, 8],
  ['bytes', 8, 8],
])

export const DRAIN_STATE = struct('drain_state', 16, [
  ['gen', 0, 8],
  ['in_progress', 8, 4],
  ['_pad', 12, 4],
])

export const ALL_STRUCTS = [FLOW_KEY4, FLOW_KEY6, FLOW_COUNTERS, FLOW_RECORD, OVERFLOW_KEY, OVERFLOW_COUNTERS, DRAIN_STATE]

/** Byte offsets, named for the hot paths that read fields without building objects. */
export const K = {ifindex: 0, direction: 4, proto: 5, vlanId: 6, sport: 8, dport: 10, src: 12} as const
export const C = {packets: 0, bytes: 8, firstSeen: 16, lastSeen: 24, tcpFlags: 32, ipTos: 33} as const
export const R = {packets: 0, bytes: 8, firstSeen: 16, lastSeen: 24, drainGen: 32, tcpFlags: 40, ipTos: 41} as const

export function keySpec(family: Family): StructSpec {
  return family === 4 ? FLOW_KEY4 : FLOW_KEY6
}

/** Offset of the destination address in a key of this family. */
export function dstOffset(family: Family): number {
  return K.src + addressLength(family)
}

/** The kernel pads each CPU's slot of a per-CPU value to 8 bytes. */
export function perCpuStride(valueSize: number): number {
  return Math.ceil(valueSize / 8) * 8
}

export function decodeFlowKey(family: Family, buf: Buffer, off = 0): FlowKey {
  return {
    family,
    ifindex: buf.readUInt32LE(off + K.ifindex),
    direction: directionName(buf[off + K.direction]),
    proto: buf[off + K.proto],
    vlanId: buf.readUInt16LE(off + K.vlanId),
    sport: buf.readUInt16BE(off + K.sport),
    dport: buf.readUInt16BE(off + K.dport),
    src: formatAddress(family, buf, off + K.src),
    dst: formatAddress(family, buf, off + dstOffset(family)),
  }
}

/** The key bytes of a flow, for deleting it by key. Addresses must already be family-sized bytes. */
export function encodeFlowKey(
  family: Family,
  fields: {ifindex: number; direction: number; proto: number; vlanId: number; sport: number; dport: number; src: Uint8Array; dst: Uint8Array},
): Buffer {
  const buf = Buffer.alloc(keySpec(family).size)
  buf.writeUInt32LE(fields.ifindex, K.ifindex)
  buf[K.direction] = fields.direction
  buf[K.proto] = fields.proto
  buf.writeUInt16LE(fields.vlanId, K.vlanId)
  buf.writeUInt16BE(fields.sport, K.sport)
  buf.writeUInt16BE(fields.dport, K.dport)
  buf.set(fields.src, K.src)
  buf.set(fields.dst, dstOffset(family))
  return buf
}

/** Sums the per-CPU slots of one flow_counters value (`cpus` slots of `stride` bytes at `off`). */
export function decodePerCpuCounters(buf: Buffer, off: number, cpus: number, stride = perCpuStride(FLOW_COUNTERS.size)): FlowCounters {
  const total = emptyCounters()
  for (let cpu = 0; cpu < cpus; cpu++) {
    const o = off + cpu * stride
    const first = buf.readBigUInt64LE(o + C.firstSeen)
    if (!first) continue // this CPU never saw the flow
    mergeCounters(total, {
      packets: Number(buf.readBigUInt64LE(o + C.packets)),
      bytes: Number(buf.readBigUInt64LE(o + C.bytes)),
      firstSeenNs: first,
      lastSeenNs: buf.readBigUInt64LE(o + C.lastSeen),
      tcpFlags: buf[o + C.tcpFlags],
      ipTos: buf[o + C.ipTos],
    })
  }
  return total
}

export function decodeFlowRecord(buf: Buffer, off = 0): FlowCounters & {drainGen: bigint} {
  return {
    packets: Number(buf.readBigUInt64LE(off + R.packets)),
    bytes: Number(buf.readBigUInt64LE(off + R.bytes)),
    firstSeenNs: buf.readBigUInt64LE(off + R.firstSeen),
    lastSeenNs: buf.readBigUInt64LE(off + R.lastSeen),
    drainGen: buf.readBigUInt64LE(off + R.drainGen),
    tcpFlags: buf[off + R.tcpFlags],
    ipTos: buf[off + R.ipTos],
  }
}

export function encodeFlowRecord(c: FlowCounters, drainGen: bigint, buf = Buffer.alloc(FLOW_RECORD.size), off = 0): Buffer {
  buf.writeBigUInt64LE(BigInt(c.packets), off + R.packets)
  buf.writeBigUInt64LE(BigInt(c.bytes), off + R.bytes)
  buf.writeBigUInt64LE(c.firstSeenNs, off + R.firstSeen)
  buf.writeBigUInt64LE(c.lastSeenNs, off + R.lastSeen)
  buf.writeBigUInt64LE(drainGen, off + R.drainGen)
  buf[off + R.tcpFlags] = c.tcpFlags
  buf[off + R.ipTos] = c.ipTos
  buf.fill(0, off + R.ipTos + 1, off + FLOW_RECORD.size)
  return buf
}

export function decodePerCpuOverflow(buf: Buffer, off: number, cpus: number): {packets: number; bytes: number} {
  const stride = perCpuStride(OVERFLOW_COUNTERS.size)
  let packets = 0
  let bytes = 0
  for (let cpu = 0; cpu < cpus; cpu++) {
    packets += Number(buf.readBigUInt64LE(off + cpu * stride))
    bytes += Number(buf.readBigUInt64LE(off + cpu * stride + 8))
  }
  return {packets, bytes}
}
