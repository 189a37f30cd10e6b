/**
 * How each exportable information element is written into a record: the writers are derived
 * from its declaration in EXPORTABLE_ELEMENTS (exportable-elements.ts), nothing here is per element.
 * Times come from epoch microseconds; NTP-format times (RFC 7011 §6.1.9-10) count from 1900.
 */
import type {FlowBatch} from '../../flow/batch.js'
import {elementByName, naturalLength, type InformationElement} from '../wire/elements.js'
import {exportableElement, type AddressColumn, type NumberColumn, type ValueSource} from './exportable-elements.js'

export type FieldWriter = (b: FlowBatch, i: number, buf: Buffer, off: number) => void

/**
 * Writes the field of `count` consecutive flows from `from`, the first at `off` and each next
 * one `stride` bytes (a record) further: the encoder calls it once per field and message, and
 * its loop reads one typed column, so no call is made per field and record.
 */
export type ColumnWriter = (b: FlowBatch, from: number, count: number, buf: Buffer, off: number, stride: number) => void

export interface BoundField {
  element: InformationElement
  length: number
  /** The enterprise number of an enterprise-specific field (a biflow's reverse element: 29305); absent for IANA elements. */
  enterpriseNumber?: number
  /** One flow's field: the same bytes as `writeColumn` puts there. */
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

/** `v` in `len` (1, 2, 4 or 8) bytes, clamped as putUint does: the encoder's hot path, inlined. */
function putFixed(buf: Buffer, p: number, len: number, max: number, v: number): void {
  if (len === 8) return putU64(buf, p, v)
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

/**
 * A number column in `len` (1, 2, 4 or 8) bytes: each flow's value, divided and floored when the
 * divisor is not 1. One loop per length, each its own function: V8 keeps type feedback per
 * function, and one loop serving every column and length would see every kind of typed array
 * and every branch of putFixed, and run several times slower.
 */
function numberColumn(column: NumberColumn, divisor: number, len: number): ColumnWriter {
  const max = 2 ** (8 * len) - 1
  if (divisor !== 1) {
    return (b, from, count, buf, off, stride) => {
      const col = b[column]
      for (let r = 0, p = off; r < count; r++, p += stride) putFixed(buf, p, len, max, Math.floor(col[from + r] / divisor))
    }
  }
  // putFixed with a literal length: inlined, its branches fold away.
  switch (len) {
    case 1:
      return (b, from, count, buf, off, stride) => {
        const col = b[column]
        for (let r = 0, p = off; r < count; r++, p += stride) putFixed(buf, p, 1, max, col[from + r])
      }
    case 2:
      return (b, from, count, buf, off, stride) => {
        const col = b[column]
        for (let r = 0, p = off; r < count; r++, p += stride) putFixed(buf, p, 2, max, col[from + r])
      }
    case 4:
      return (b, from, count, buf, off, stride) => {
        const col = b[column]
        for (let r = 0, p = off; r < count; r++, p += stride) putFixed(buf, p, 4, max, col[from + r])
      }
    default:
      return (b, from, count, buf, off, stride) => {
        const col = b[column]
        for (let r = 0, p = off; r < count; r++, p += stride) putFixed(buf, p, 8, max, col[from + r])
      }
  }
}

/** One number column for ingress flows, another for egress flows, in `len` (1, 2, 4 or 8) bytes. */
function directionColumn(ingress: NumberColumn, egress: NumberColumn, len: number): ColumnWriter {
  const max = 2 ** (8 * len) - 1
  return (b, from, count, buf, off, stride) => {
    const inCol = b[ingress]
    const egCol = b[egress]
    const dir = b.direction
    for (let r = 0, p = off; r < count; r++, p += stride) {
      const i = from + r
      putFixed(buf, p, len, max, dir[i] === 0 ? inCol[i] : egCol[i])
    }
  }
}

/** A column writer that calls `write` for each flow: for the fields without a loop of their own. */
function eachRecord(write: FieldWriter): ColumnWriter {
  return (b, from, count, buf, off, stride) => {
    for (let r = 0; r < count; r++) write(b, from + r, buf, off + r * stride)
  }
}

/**
 * Copies each flow's address from its FlowBatch column (no subarray made per record), a word
 * at a time: the column is read as 32-bit words (addresses are 4 or 16 bytes, at multiples of 4)
 * and each word's bytes stored in their memory order, which is the address's (little-endian
 * host, as everywhere flowctl runs). Three times faster than byte by byte, and than a DataView.
 */
function addressColumn(column: AddressColumn): ColumnWriter {
  let viewOf: Uint8Array | undefined
  let words: Int32Array<ArrayBufferLike> = new Int32Array(0)
  return (b, from, count, buf, off, stride) => {
    const col = b[column]
    if (col !== viewOf) {
      viewOf = col
      words = new Int32Array(col.buffer, col.byteOffset, col.byteLength >> 2)
    }
    const n = b.addrLen >> 2
    for (let r = 0, p = off, at = from * n; r < count; r++, p += stride, at += n) {
      for (let k = 0, q = p; k < n; k++, q += 4) {
        const v = words[at + k]
        buf[q] = v
        buf[q + 1] = v >>> 8
        buf[q + 2] = v >>> 16
        buf[q + 3] = v >>> 24
      }
    }
  }
}

function ntpColumn(column: 'startUs' | 'endUs', micro: boolean): ColumnWriter {
  return (b, from, count, buf, off, stride) => {
    const col = b[column]
    for (let r = 0, p = off; r < count; r++, p += stride) putNtp(buf, p, col[from + r], micro)
  }
}

/** The column writer of an element's value source in `len` bytes. */
export function columnWriter(value: ValueSource, len: number): ColumnWriter {
  if ('address' in value) return addressColumn(value.address)
  if ('ntpTime' in value) return ntpColumn(value.ntpTime, value.micro)
  // Computed values, and the odd lengths of reduced-size encoding (3, 5, 6, 7), are rare.
  if ('compute' in value || (len !== 1 && len !== 2 && len !== 4 && len !== 8)) return eachRecord(recordWriter(value, len))
  if ('ingress' in value) return directionColumn(value.ingress, value.egress, len)
  return numberColumn(value.column, value.divisor ?? 1, len)
}

type ValueOf = (b: FlowBatch, i: number) => number

/**
 * Each number column read by name: a per-record writer calling one of these is several times
 * faster than one indexing the batch by a column name it holds (a megamorphic keyed load).
 */
const READ: {readonly [C in NumberColumn]: ValueOf} = {
  ifindex: (b, i) => b.ifindex[i],
  peerIfindex: (b, i) => b.peerIfindex[i],
  direction: (b, i) => b.direction[i],
  proto: (b, i) => b.proto[i],
  vlanId: (b, i) => b.vlanId[i],
  innerVlanId: (b, i) => b.innerVlanId[i],
  samplingInterval: (b, i) => b.samplingInterval[i],
  sport: (b, i) => b.sport[i],
  dport: (b, i) => b.dport[i],
  packets: (b, i) => b.packets[i],
  bytes: (b, i) => b.bytes[i],
  startUs: (b, i) => b.startUs[i],
  endUs: (b, i) => b.endUs[i],
  tcpFlags: (b, i) => b.tcpFlags[i],
  tos: (b, i) => b.tos[i],
  endReason: (b, i) => b.endReason[i],
  minTtl: (b, i) => b.minTtl[i],
  maxTtl: (b, i) => b.maxTtl[i],
  fwdStatus: (b, i) => b.fwdStatus[i],
}

/** One flow's number from a value source that is not an address or a time. */
function valueReader(value: Exclude<ValueSource, {address: unknown} | {ntpTime: unknown}>): ValueOf {
  if ('compute' in value) return value.compute
  if ('ingress' in value) {
    const ingress = READ[value.ingress]
    const egress = READ[value.egress]
    return (b, i) => (b.direction[i] === 0 ? ingress(b, i) : egress(b, i))
  }
  const read = READ[value.column]
  const divisor = value.divisor ?? 1
  return divisor === 1 ? read : (b, i) => Math.floor(read(b, i) / divisor)
}

/**
 * A field of `len` bytes holding valueOf's number, as putUint writes it. The common lengths
 * store bytes directly (a Uint8Array store keeps the low 8 bits), several times faster than
 * Buffer's checked writers.
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

/**
 * The writer of one flow's field, the same bytes as columnWriter's: for the records the encoder
 * writes one at a time (a counter split over several records), where a column loop of one
 * record would cost more than the field.
 */
export function recordWriter(value: ValueSource, len: number): FieldWriter {
  if ('address' in value) {
    const column = value.address
    return (b, i, buf, off) => {
      const len = b.addrLen
      const col = b[column]
      for (let k = 0, at = i * len; k < len; k++) buf[off + k] = col[at + k]
    }
  }
  if ('ntpTime' in value) {
    const {ntpTime: column, micro} = value
    return (b, i, buf, off) => putNtp(buf, off, b[column][i], micro)
  }
  return unsigned(valueReader(value), len)
}

/**
 * The length a field of this exportable element gets when its template names none: the
 * declared default, else the registry type's natural length; undefined for an element the
 * registry or flowctl does not know.
 */
export function defaultFieldLength(name: string): number | undefined {
  const exportable = exportableElement(name)
  const element = elementByName(name)
  if (!exportable || !element) return undefined
  return exportable.defaultLength ?? naturalLength(element.type)
}

/** The writer of one template field; the element must be exportable and the length valid. */
export function bindField(name: string, length?: number): BoundField {
  const exportable = exportableElement(name)
  const element = elementByName(name)
  if (!exportable || !element) throw new Error(`flowctl cannot export information element '${name}'`)
  const len = length ?? exportable.defaultLength ?? naturalLength(element.type)
  const field: BoundField = {element, length: len, write: recordWriter(exportable.value, len), writeColumn: columnWriter(exportable.value, len)}
  // A counter column in fewer than 8 bytes: the exporter splits a flow whose count it cannot hold.
  const value = exportable.value
  if (len < 8 && 'column' in value && (value.column === 'bytes' || value.column === 'packets') && value.divisor === undefined) {
    field.counterMax = {[value.column]: 2 ** (8 * len) - 1}
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
