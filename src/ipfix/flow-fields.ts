/**
 * How each exportable information element is read from a FlowBatch and written into a record.
 * Times come from epoch microseconds; NTP-format times (RFC 7011 §6.1.9-10) count from 1900.
 */
import type {FlowBatch} from '../flow/batch.js'
import {isIcmp} from '../flow/protocols.js'
import {elementByName, naturalLength, type InformationElement} from './elements.js'
import {exportableElement} from './exportable.js'

export type FieldWriter = (b: FlowBatch, i: number, buf: Buffer, off: number) => void

/**
 * Writes the field of `count` consecutive flows from `from`, the first at `off` and each next
 * one `stride` bytes (a record) further: the encoder calls it once per field and message, and
 * its loop reads one typed column, so no call is made per field and record. The bytes are
 * exactly what `write` would put there.
 */
export type ColumnWriter = (b: FlowBatch, from: number, count: number, buf: Buffer, off: number, stride: number) => void

export interface BoundField {
  element: InformationElement
  length: number
  write: FieldWriter
  writeColumn: ColumnWriter
  /** The largest value a reduced-size counter field can hold (packet and octet deltas only). */
  counterMax?: {packets?: number; bytes?: number}
}

const NTP_EPOCH_OFFSET_S = 2_208_988_800 // 1900-01-01 to 1970-01-01
const TWO_32 = 4_294_967_296

/**
 * A non-negative integer below 2^53 as 8 big-endian bytes, byte by byte: the hot path avoids
 * Buffer's bounds-checked writers (small enough for V8 to inline).
 */
function putU64(buf: Buffer, off: number, v: number): void {
  const hi = Math.floor(v / TWO_32) >>> 0
  const lo = v % TWO_32
  buf[off] = hi >>> 24
  buf[off + 1] = hi >>> 16
  buf[off + 2] = hi >>> 8
  buf[off + 3] = hi
  buf[off + 4] = lo >>> 24
  buf[off + 5] = lo >>> 16
  buf[off + 6] = lo >>> 8
  buf[off + 7] = lo
}

/** Big-endian unsigned integer in `len` bytes; a value too large for a reduced size is sent as the maximum. */
export function putUint(buf: Buffer, off: number, len: number, value: number): void {
  if (len === 8) {
    buf.writeUInt32BE(Math.floor(value / TWO_32) >>> 0, off)
    buf.writeUInt32BE(value >>> 0, off + 4)
    return
  }
  const max = 2 ** (8 * len) - 1
  const v = value > max ? max : value
  if (len <= 6) buf.writeUIntBE(v, off, len)
  else {
    buf[off] = Math.floor(v / 2 ** 48) & 0xff
    buf.writeUIntBE(v % 2 ** 48, off + 1, 6)
  }
}

function putNtp(buf: Buffer, off: number, epochUs: number, micro: boolean): void {
  const seconds = Math.floor(epochUs / 1e6)
  let fraction = Math.floor(((epochUs - seconds * 1e6) / 1e6) * TWO_32)
  if (fraction >= TWO_32) fraction = TWO_32 - 1
  // dateTimeMicroseconds: the 11 least significant fraction bits are zero (microsecond resolution).
  if (micro) fraction = fraction - (fraction % 2048)
  buf.writeUInt32BE((seconds + NTP_EPOCH_OFFSET_S) >>> 0, off)
  buf.writeUInt32BE(fraction >>> 0, off + 4)
}

type ValueOf = (b: FlowBatch, i: number) => number

/** A column writer that calls `write` for each flow: for the fields without a loop of their own. */
function eachRecord(write: FieldWriter): ColumnWriter {
  return (b, from, count, buf, off, stride) => {
    for (let r = 0; r < count; r++) write(b, from + r, buf, off + r * stride)
  }
}

/**
 * The elements whose value is a FlowBatch column, divided (and floored) by `divisor` when it is
 * not 1, or, with `direction`, the column where the flow has that direction and 0 elsewhere.
 * Each must equal its NUMERIC entry.
 */
interface ColumnSource {
  column: (b: FlowBatch) => ArrayLike<number>
  divisor: number
  direction?: number
}

const COLUMN: Record<string, ColumnSource> = {
  sourceTransportPort: {column: (b) => b.sport, divisor: 1},
  destinationTransportPort: {column: (b) => b.dport, divisor: 1},
  protocolIdentifier: {column: (b) => b.proto, divisor: 1},
  tcpControlBits: {column: (b) => b.tcpFlags, divisor: 1},
  octetDeltaCount: {column: (b) => b.bytes, divisor: 1},
  packetDeltaCount: {column: (b) => b.packets, divisor: 1},
  flowStartSeconds: {column: (b) => b.startUs, divisor: 1e6},
  flowEndSeconds: {column: (b) => b.endUs, divisor: 1e6},
  flowStartMilliseconds: {column: (b) => b.startUs, divisor: 1e3},
  flowEndMilliseconds: {column: (b) => b.endUs, divisor: 1e3},
  ingressInterface: {column: (b) => b.ifindex, divisor: 1, direction: 0},
  egressInterface: {column: (b) => b.ifindex, divisor: 1, direction: 1},
  flowDirection: {column: (b) => b.direction, divisor: 1},
  flowEndReason: {column: (b) => b.endReason, divisor: 1},
  ipClassOfService: {column: (b) => b.tos, divisor: 1},
  vlanId: {column: (b) => b.vlanId, divisor: 1},
  dot1qVlanId: {column: (b) => b.vlanId, divisor: 1},
}

/** The column writer of a ColumnSource in `len` bytes, clamped and stored as `unsigned` does. */
function unsignedColumn(source: ColumnSource, len: number, write: FieldWriter): ColumnWriter {
  if (len !== 1 && len !== 2 && len !== 4 && len !== 8) return eachRecord(write)
  const max = 2 ** (8 * len) - 1
  const {divisor} = source
  const direction = source.direction ?? -1
  return (b, from, count, buf, off, stride) => {
    const col = source.column(b)
    const dir = b.direction
    for (let r = 0, p = off; r < count; r++, p += stride) {
      const i = from + r
      let v = divisor === 1 ? col[i] : Math.floor(col[i] / divisor)
      if (direction >= 0 && dir[i] !== direction) v = 0
      if (len === 8) {
        putU64(buf, p, v)
        continue
      }
      if (v > max) v = max
      if (len === 4) {
        buf[p] = v >>> 24
        buf[p + 1] = v >>> 16
        buf[p + 2] = v >>> 8
        buf[p + 3] = v
      } else if (len === 2) {
        buf[p] = v >>> 8
        buf[p + 1] = v
      } else buf[p] = v
    }
  }
}

function addressColumn(column: 'src' | 'dst'): ColumnWriter {
  return (b, from, count, buf, off, stride) => {
    const len = b.addrLen
    const col = column === 'src' ? b.src : b.dst
    for (let r = 0, p = off, at = from * len; r < count; r++, p += stride, at += len) {
      for (let k = 0; k < len; k++) buf[p + k] = col[at + k]
    }
  }
}

/**
 * A field of `len` bytes holding valueOf's number, as putUint writes it. The common lengths
 * store bytes directly (a Uint8Array store keeps the low 8 bits), which is several times faster
 * than Buffer's checked writers on the encoder's hot path.
 */
function unsigned(valueOf: ValueOf, len: number): FieldWriter {
  switch (len) {
    case 1:
      return (b, i, buf, off) => {
        const v = valueOf(b, i)
        buf[off] = v > 0xff ? 0xff : v
      }
    case 2:
      return (b, i, buf, off) => {
        const v = valueOf(b, i)
        const c = v > 0xffff ? 0xffff : v
        buf[off] = c >>> 8
        buf[off + 1] = c
      }
    case 4:
      return (b, i, buf, off) => {
        const v = valueOf(b, i)
        const c = v > 0xffffffff ? 0xffffffff : v
        buf[off] = c >>> 24
        buf[off + 1] = c >>> 16
        buf[off + 2] = c >>> 8
        buf[off + 3] = c
      }
    case 8:
      return (b, i, buf, off) => putU64(buf, off, valueOf(b, i))
    default:
      return (b, i, buf, off) => putUint(buf, off, len, valueOf(b, i))
  }
}

function copyAddress(from: Uint8Array, len: number, i: number, buf: Buffer, off: number): void {
  for (let k = 0, at = i * len; k < len; k++) buf[off + k] = from[at + k]
}

/** Copies a flow's address from its FlowBatch column (no subarray made per record). */
function addressWriter(column: 'src' | 'dst'): FieldWriter {
  return column === 'src' ? (b, i, buf, off) => copyAddress(b.src, b.addrLen, i, buf, off) : (b, i, buf, off) => copyAddress(b.dst, b.addrLen, i, buf, off)
}

const icmpOnly = (family: 4 | 6, pick: (dport: number) => number): ValueOf => (b, i) =>
  b.family === family && isIcmp(b.proto[i]) ? pick(b.dport[i]) : 0

const NUMERIC: Record<string, ValueOf> = {
  sourceTransportPort: (b, i) => b.sport[i],
  destinationTransportPort: (b, i) => b.dport[i],
  protocolIdentifier: (b, i) => b.proto[i],
  tcpControlBits: (b, i) => b.tcpFlags[i],
  octetDeltaCount: (b, i) => b.bytes[i],
  packetDeltaCount: (b, i) => b.packets[i],
  flowStartSeconds: (b, i) => Math.floor(b.startUs[i] / 1e6),
  flowEndSeconds: (b, i) => Math.floor(b.endUs[i] / 1e6),
  flowStartMilliseconds: (b, i) => Math.floor(b.startUs[i] / 1e3),
  flowEndMilliseconds: (b, i) => Math.floor(b.endUs[i] / 1e3),
  flowDurationMilliseconds: (b, i) => Math.floor((b.endUs[i] - b.startUs[i]) / 1e3),
  flowDurationMicroseconds: (b, i) => Math.floor(b.endUs[i] - b.startUs[i]),
  ingressInterface: (b, i) => (b.direction[i] === 0 ? b.ifindex[i] : 0),
  egressInterface: (b, i) => (b.direction[i] === 1 ? b.ifindex[i] : 0),
  flowDirection: (b, i) => b.direction[i],
  flowEndReason: (b, i) => b.endReason[i],
  ipClassOfService: (b, i) => b.tos[i],
  ipDiffServCodePoint: (b, i) => b.tos[i] >> 2,
  ipPrecedence: (b, i) => b.tos[i] >> 5,
  vlanId: (b, i) => b.vlanId[i],
  dot1qVlanId: (b, i) => b.vlanId[i],
  ipVersion: (b) => b.family,
  observationDomainId: (b) => b.observationDomainId,
  icmpTypeCodeIPv4: icmpOnly(4, (d) => d),
  icmpTypeIPv4: icmpOnly(4, (d) => d >> 8),
  icmpCodeIPv4: icmpOnly(4, (d) => d & 0xff),
  icmpTypeCodeIPv6: icmpOnly(6, (d) => d),
  icmpTypeIPv6: icmpOnly(6, (d) => d >> 8),
  icmpCodeIPv6: icmpOnly(6, (d) => d & 0xff),
}

const ADDRESS: Record<string, 'src' | 'dst'> = {
  sourceIPv4Address: 'src',
  destinationIPv4Address: 'dst',
  sourceIPv6Address: 'src',
  destinationIPv6Address: 'dst',
}

const NTP_TIME: Record<string, {column: 'startUs' | 'endUs'; micro: boolean}> = {
  flowStartMicroseconds: {column: 'startUs', micro: true},
  flowEndMicroseconds: {column: 'endUs', micro: true},
  flowStartNanoseconds: {column: 'startUs', micro: false},
  flowEndNanoseconds: {column: 'endUs', micro: false},
}

/** The writer of one template field; the element must be exportable and the length valid. */
export function bindField(name: string, length?: number): BoundField {
  const exportable = exportableElement(name)
  const element = elementByName(name)
  if (!exportable || !element) throw new Error(`flowctl cannot export information element '${name}'`)
  const len = length ?? naturalLength(element.type)
  const canonical = exportable.name
  const address = ADDRESS[canonical]
  if (address) {
    return {element, length: len, write: addressWriter(address), writeColumn: addressColumn(address)}
  }
  const ntp = NTP_TIME[canonical]
  if (ntp) {
    const write: FieldWriter = (b, i, buf, off) => putNtp(buf, off, b[ntp.column][i], ntp.micro)
    return {element, length: len, write, writeColumn: eachRecord(write)}
  }
  const valueOf = NUMERIC[canonical]
  if (!valueOf) throw new Error(`no writer for ${canonical}`)
  const write = unsigned(valueOf, len)
  const column = COLUMN[canonical]
  const field: BoundField = {element, length: len, write, writeColumn: column ? unsignedColumn(column, len, write) : eachRecord(write)}
  if (len < 8 && (canonical === 'octetDeltaCount' || canonical === 'packetDeltaCount')) {
    field.counterMax = {[canonical === 'octetDeltaCount' ? 'bytes' : 'packets']: 2 ** (8 * len) - 1}
  }
  return field
}

/** The address family a set of fields ties a template to, if any. */
export function templateFamily(fieldNames: readonly string[]): 4 | 6 | undefined {
  for (const n of fieldNames) {
    const f = exportableElement(n)?.family
    if (f) return f
  }
  return undefined
}
