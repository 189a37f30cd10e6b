/**
 * How each exportable information element is read from a FlowBatch and written into a record.
 * Times come from epoch microseconds; NTP-format times (RFC 7011 §6.1.9-10) count from 1900.
 */
import type {FlowBatch} from '../flow/batch.js'
import {isIcmp} from '../flow/protocols.js'
import {elementByName, naturalLength, type InformationElement} from './elements.js'
import {exportableElement} from './exportable.js'

export type FieldWriter = (b: FlowBatch, i: number, buf: Buffer, off: number) => void

export interface BoundField {
  element: InformationElement
  length: number
  write: FieldWriter
  /** The largest value a reduced-size counter field can hold (packet and octet deltas only). */
  counterMax?: {packets?: number; bytes?: number}
}

const NTP_EPOCH_OFFSET_S = 2_208_988_800 // 1900-01-01 to 1970-01-01
const TWO_32 = 4_294_967_296

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

function unsigned(valueOf: ValueOf, len: number): FieldWriter {
  return (b, i, buf, off) => putUint(buf, off, len, valueOf(b, i))
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
    return {
      element,
      length: len,
      write: (b, i, buf, off) => {
        const column = b[address]
        buf.set(column.subarray(i * b.addrLen, (i + 1) * b.addrLen), off)
      },
    }
  }
  const ntp = NTP_TIME[canonical]
  if (ntp) return {element, length: len, write: (b, i, buf, off) => putNtp(buf, off, b[ntp.column][i], ntp.micro)}
  const valueOf = NUMERIC[canonical]
  if (!valueOf) throw new Error(`no writer for ${canonical}`)
  const field: BoundField = {element, length: len, write: unsigned(valueOf, len)}
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
