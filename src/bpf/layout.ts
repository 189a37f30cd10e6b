/**
 * The one place TypeScript reads and writes flowctl's kernel bytes. Every offset comes from
 * layout.generated.ts, which misc/gen-layout.ts generates from bpf/flowctl.h (the header is the
 * single definition); the drain, dump, status, the daemon and its metrics all go through here.
 */
import {addressLength, DIRECTION_EGRESS, directionName, type Family, type FlowCounters, type FlowKey, type FlowSample} from '../flow/record.js'
import type {FlowRecordLayout} from '../flow/record-slabs.js'
import {formatAddress} from '../util/address.js'
import type {FieldLayout, StructLayout} from './layout-types.js'
import {
  DRAIN_STATE,
  FLOWCTL_LAYOUT_VERSION,
  FLOW_DIR_EGRESS,
  FLOW_DIR_INGRESS,
  FLOW_KEY4,
  FLOW_KEY6,
  FLOW_VALUE4,
  FLOW_VALUE6,
  FRAG_KEY,
  FRAG_MAP_ENTRIES,
  FRAG_PORTS,
  HANDSHAKE_KEY,
  HANDSHAKE_MAP_ENTRIES,
  HANDSHAKE_TIMES,
  METER_META,
  METER_SETTINGS,
  METER_STATS,
  OVERFLOW_KEY,
  OVERFLOW_VALUE,
  PENDING_CHUNK_BYTES,
  PENDING_CHUNK_HEADER,
  PENDING_FLOW4,
  PENDING_FLOW6,
  SAMPLING_INTERVAL_MAX,
} from './layout.generated.js'
import type {BpfMap} from './libbpf.js'

export {
  DRAIN_STATE,
  FLOW_KEY4,
  FLOW_KEY6,
  FLOW_VALUE4,
  FLOW_VALUE6,
  FRAG_KEY,
  FRAG_MAP_ENTRIES,
  FRAG_PORTS,
  HANDSHAKE_KEY,
  HANDSHAKE_MAP_ENTRIES,
  HANDSHAKE_TIMES,
  METER_META,
  METER_SETTINGS,
  METER_STATS,
  OVERFLOW_KEY,
  OVERFLOW_VALUE,
  PENDING_CHUNK_BYTES,
  SAMPLING_INTERVAL_MAX,
}

export const LAYOUT_VERSION = FLOWCTL_LAYOUT_VERSION

/**
 * The members both families' structs share at the same offsets (the keys up to `src`, the values
 * up to `nextHop`): checked here once, so the hot paths may use one table for both.
 */
function sharedPrefix<A extends StructLayout, B extends StructLayout>(a: A, b: B, upTo: string): A['fields'] {
  for (const [name, f] of Object.entries<FieldLayout>(a.fields)) {
    if (name === upTo) break
    const g = name in b.fields ? b.fields[name] : undefined
    if (g?.offset !== f.offset || g.size !== f.size) throw new Error(`bpf/flowctl.h: ${a.name}.${name} and ${b.name}.${name} differ`)
  }
  return a.fields
}

/** Throws when two things the code takes to be one differ in the header (typed as numbers: they are checked, not assumed). */
function agree(what: string, a: number, b: number): void {
  if (a !== b) throw new Error(`bpf/flowctl.h: ${what} differ (${a}, ${b})`)
}

/** Offsets in a flow key of either family (src and dst: see srcOffset, dstOffset). */
export const KEY = sharedPrefix(FLOW_KEY4, FLOW_KEY6, 'src')
/** Offsets in a flow value of either family (nextHop: same offset, family-sized). */
export const VALUE = sharedPrefix(FLOW_VALUE4, FLOW_VALUE6, 'nextHop')
agree('the next_hop offsets of flow_value4 and flow_value6', FLOW_VALUE4.fields.nextHop.offset, FLOW_VALUE6.fields.nextHop.offset)
// A key's direction is enum flow_direction in the kernel and IPFIX flowDirection once decoded (directionName).
agree('FLOW_DIR_INGRESS and flowDirection ingress', FLOW_DIR_INGRESS, 0)
agree('FLOW_DIR_EGRESS and flowDirection egress', FLOW_DIR_EGRESS, DIRECTION_EGRESS)

function keyLayout(family: Family): typeof FLOW_KEY4 | typeof FLOW_KEY6 {
  return family === 4 ? FLOW_KEY4 : FLOW_KEY6
}

function valueLayout(family: Family): typeof FLOW_VALUE4 | typeof FLOW_VALUE6 {
  return family === 4 ? FLOW_VALUE4 : FLOW_VALUE6
}

export function srcOffset(family: Family): number {
  return keyLayout(family).fields.src.offset
}

function dstOffset(family: Family): number {
  return keyLayout(family).fields.dst.offset
}

const TWO_32 = 4_294_967_296

/** A u64 the kernel wrote (host order: little-endian on every target we load on), as a double. */
export function readU64(buf: Uint8Array, off: number): number {
  return (
    (buf[off] | (buf[off + 1] << 8) | (buf[off + 2] << 16)) +
    buf[off + 3] * 16777216 +
    ((buf[off + 4] | (buf[off + 5] << 8) | (buf[off + 6] << 16)) + buf[off + 7] * 16777216) * TWO_32
  )
}

export function readU32(buf: Uint8Array, off: number): number {
  return (buf[off] | (buf[off + 1] << 8) | (buf[off + 2] << 16)) + buf[off + 3] * 16777216
}

export function writeU64(buf: Uint8Array, off: number, value: number): void {
  // ToUint32 is the value modulo 2^32, exactly, for any integer a double holds.
  const lo = value >>> 0
  const hi = (value - lo) / TWO_32
  writeU32(buf, off, lo)
  writeU32(buf, off + 4, hi)
}

export function writeU32(buf: Uint8Array, off: number, value: number): void {
  buf[off] = value
  buf[off + 1] = value >>> 8
  buf[off + 2] = value >>> 16
  buf[off + 3] = value >>> 24
}

/**
 * The N of the 1-in-N sampling a key's packets were counted at: 1 for every packet, and for the
 * keys of a layout-2 meter set carried over, which hold 0 there.
 */
export function keySamplingInterval(key: Uint8Array, off: number): number {
  return key[off + KEY.samplingInterval.offset] | (key[off + KEY.samplingInterval.offset + 1] << 8) || 1
}

/**
 * The family's flow key from a flow_key6-shaped one at `at` (the drop hook's and the handshake
 * map's keys: an IPv4 address in the first 4 bytes of each address), as the flow maps key it. A
 * whole allocation (not a slice of Node's pool), as the flow cache's key lookups prefer.
 */
export function familyKeyOf(keys: Buffer, at: number, family: Family): Buffer {
  const key = Buffer.alloc(family === 6 ? FLOW_KEY6.size : FLOW_KEY4.size)
  if (family === 6) {
    keys.copy(key, 0, at, at + FLOW_KEY6.size)
    return key
  }
  // The two keys share everything before src.
  const src4 = FLOW_KEY4.fields.src.offset
  const src6 = at + FLOW_KEY6.fields.src.offset
  const dst6 = at + FLOW_KEY6.fields.dst.offset
  keys.copy(key, 0, at, at + src4)
  keys.copy(key, src4, src6, src6 + 4)
  keys.copy(key, FLOW_KEY4.fields.dst.offset, dst6, dst6 + 4)
  return key
}

/** The key's (ifindex, direction) as one number: ifindex * 2 + direction. */
export function interfaceSlot(key: Uint8Array, off: number): number {
  return readU32(key, off + KEY.ifindex.offset) * 2 + key[off + KEY.direction.offset]
}

export function decodeFlowKey(family: Family, buf: Buffer, off = 0): FlowKey {
  return {
    family,
    ifindex: buf.readUInt32LE(off + KEY.ifindex.offset),
    direction: directionName(buf[off + KEY.direction.offset]),
    proto: buf[off + KEY.proto.offset],
    vlanId: buf.readUInt16LE(off + KEY.vlanId.offset),
    innerVlanId: buf.readUInt16LE(off + KEY.innerVlanId.offset),
    samplingInterval: keySamplingInterval(buf, off),
    sport: buf.readUInt16BE(off + KEY.sport.offset),
    dport: buf.readUInt16BE(off + KEY.dport.offset),
    src: formatAddress(family, buf, off + srcOffset(family)),
    dst: formatAddress(family, buf, off + dstOffset(family)),
  }
}

/**
 * One flow value as a FlowSample, reusing `into` (the drain's hot path makes no object per flow).
 * `buf` holds the value at `off`.
 */
export function readFlowSample(buf: Uint8Array, off: number, into: FlowSample): FlowSample {
  into.packets = readU64(buf, off + VALUE.packets.offset)
  into.bytes = readU64(buf, off + VALUE.bytes.offset)
  into.firstNs = readU64(buf, off + VALUE.firstSeenNs.offset)
  into.lastNs = readU64(buf, off + VALUE.lastSeenNs.offset)
  into.tcpFlags = buf[off + VALUE.tcpFlags.offset]
  into.peerIfindex = readU32(buf, off + VALUE.peerIfindex.offset)
  into.tos = buf[off + VALUE.tos.offset]
  into.minTtl = buf[off + VALUE.minTtl.offset]
  into.maxTtl = buf[off + VALUE.maxTtl.offset]
  into.fwdStatus = buf[off + VALUE.fwdStatus.offset]
  into.nextHopBytes = buf
  into.nextHopOffset = off + VALUE.nextHop.offset
  return into
}

export function emptySample(): FlowSample {
  return {
    packets: 0,
    bytes: 0,
    firstNs: 0,
    lastNs: 0,
    tcpFlags: 0,
    tos: 0,
    peerIfindex: 0,
    minTtl: 0,
    maxTtl: 0,
    fwdStatus: 0,
    nextHopBytes: new Uint8Array(16),
    nextHopOffset: 0,
  }
}

/** A flow value as FlowCounters, for people-facing commands. */
export function decodeFlowValue(family: Family, buf: Buffer, off = 0): FlowCounters {
  const s = readFlowSample(buf, off, emptySample())
  const hop = Buffer.from(buf.subarray(s.nextHopOffset, s.nextHopOffset + addressLength(family)))
  return {
    packets: s.packets,
    bytes: s.bytes,
    firstSeenNs: buf.readBigUInt64LE(off + VALUE.firstSeenNs.offset),
    lastSeenNs: buf.readBigUInt64LE(off + VALUE.lastSeenNs.offset),
    tcpFlags: s.tcpFlags,
    ipTos: s.tos,
    peerIfindex: s.peerIfindex,
    fwdStatus: s.fwdStatus,
    nextHop: hop.every((b) => b === 0) ? '' : formatAddress(family, hop, 0),
    minTtl: s.minTtl,
    maxTtl: s.maxTtl,
  }
}

/**
 * A snapshot record of `family` (struct pending_flow<F>: key, then value) and its chunks of
 * `chunkBytes` (the meter set's: see MeterSet.pendingChunkBytes), for the
 * daemon's flow cache, which keeps its entries in exactly this form (src/flow/flow-cache.ts).
 */
export function flowRecordLayout(family: Family, chunkBytes: number = PENDING_CHUNK_BYTES): FlowRecordLayout {
  const record = pendingFlowLayout(family)
  const v = valueLayout(family).fields
  return {
    keySize: record.fields.key.size,
    recordSize: record.size,
    valueAt: record.fields.value.offset,
    fields: {
      packets: v.packets.offset,
      bytes: v.bytes.offset,
      firstNs: v.firstSeenNs.offset,
      lastNs: v.lastSeenNs.offset,
      tcpFlags: v.tcpFlags.offset,
      peerIfindex: v.peerIfindex.offset,
      tos: v.tos.offset,
      minTtl: v.minTtl.offset,
      maxTtl: v.maxTtl.offset,
      fwdStatus: v.fwdStatus.offset,
      nextHop: v.nextHop.offset,
    },
    addrLen: v.nextHop.size,
    chunkBytes,
    chunkHeader: PENDING_CHUNK_HEADER.size,
    readValue: readFlowSample,
  }
}

/** The daemon's journal (struct drain_state). */
export interface DrainState {
  /** Drains committed. */
  gen: number
  /** Which half of the pending map holds the snapshot of drain `gen`. */
  slot: number
  /** Chunks of that snapshot. */
  chunks: number
  flows4: number
  flows6: number
}

const ZERO_KEY = Buffer.alloc(4)

export function readDrainState(map: BpfMap): DrainState {
  const v = map.lookup(ZERO_KEY, Buffer.alloc(DRAIN_STATE.size))!
  const f = DRAIN_STATE.fields
  return {
    gen: readU64(v, f.gen.offset),
    slot: readU32(v, f.slot.offset),
    chunks: readU32(v, f.chunks.offset),
    flows4: readU64(v, f.flows4.offset),
    flows6: readU64(v, f.flows6.offset),
  }
}

/** One update of one array element: the commit point of a drain. */
export function writeDrainState(map: BpfMap, s: DrainState): void {
  const v = Buffer.alloc(DRAIN_STATE.size)
  const f = DRAIN_STATE.fields
  writeU64(v, f.gen.offset, s.gen)
  writeU32(v, f.slot.offset, s.slot)
  writeU32(v, f.chunks.offset, s.chunks)
  writeU64(v, f.flows4.offset, s.flows4)
  writeU64(v, f.flows6.offset, s.flows6)
  map.update(ZERO_KEY, v)
}

export interface MeterMeta {
  layoutVersion: number
  capacity: number
}

export function readMeterMeta(map: BpfMap): MeterMeta {
  const v = map.lookup(ZERO_KEY, Buffer.alloc(METER_META.size))!
  return {layoutVersion: readU32(v, METER_META.fields.layoutVersion.offset), capacity: readU32(v, METER_META.fields.capacity.offset)}
}

export function writeMeterMeta(map: BpfMap, meta: MeterMeta): void {
  const v = Buffer.alloc(METER_META.size)
  writeU32(v, METER_META.fields.layoutVersion.offset, meta.layoutVersion)
  writeU32(v, METER_META.fields.capacity.offset, meta.capacity)
  map.update(ZERO_KEY, v)
}

/** What user space tells the meter (struct meter_settings); 0 in a field means its default. */
export interface MeterSettings {
  /** Count 1 packet in N, at random; 0 and 1: every packet. */
  samplingInterval: number
}

export function readMeterSettings(map: BpfMap): MeterSettings {
  const v = map.lookup(ZERO_KEY, Buffer.alloc(METER_SETTINGS.size))!
  return {samplingInterval: readU32(v, METER_SETTINGS.fields.samplingInterval.offset)}
}

/** One update of the one element: a packet sees the old settings or the new, never a mix. */
export function writeMeterSettings(map: BpfMap, settings: MeterSettings): void {
  const v = Buffer.alloc(METER_SETTINGS.size)
  writeU32(v, METER_SETTINGS.fields.samplingInterval.offset, settings.samplingInterval)
  map.update(ZERO_KEY, v)
}

/*
 * The pending map holds the daemon's snapshot in chunks of PENDING_CHUNK_BYTES: a header (family,
 * records) and that many pending_flow<F> records (key, then value).
 */
export const CHUNK_HEADER = PENDING_CHUNK_HEADER

export function pendingFlowLayout(family: Family): typeof PENDING_FLOW4 | typeof PENDING_FLOW6 {
  return family === 4 ? PENDING_FLOW4 : PENDING_FLOW6
}

export function recordsPerChunk(family: Family): number {
  return Math.floor((PENDING_CHUNK_BYTES - PENDING_CHUNK_HEADER.size) / pendingFlowLayout(family).size)
}

/** The pending map key of chunk `index` of snapshot slot `slot` (0 or 1). */
export function chunkKey(slot: number, index: number): number {
  return ((slot << 24) | index) >>> 0
}

/** Chunks the pending map must hold: two snapshots of up to twice the capacity of each family. */
export function pendingChunks(capacity: number): number {
  const per = (family: Family) => Math.ceil((2 * capacity) / recordsPerChunk(family))
  return 2 * (per(4) + per(6))
}
