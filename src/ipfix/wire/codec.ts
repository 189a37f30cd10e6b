/**
 * Field values of every RFC 7012 §3.1 abstract type, to and from their RFC 7011 §6 encoding, and
 * the structured types of RFC 6313 (basicList, subTemplateList, subTemplateMultiList).
 *
 * Value conventions (what `readValue` returns, what `writeValue` accepts):
 *
 * | abstract type                               | value                                                        |
 * | ------------------------------------------- | ------------------------------------------------------------ |
 * | unsigned8/16/32, signed8/16/32              | number (encode also accepts a bigint)                        |
 * | unsigned64, signed64                        | bigint when decoding, at any (reduced) length; encode takes number or bigint |
 * | float32, float64                            | number (float64 in 4 bytes is sent as float32, §6.2)         |
 * | boolean                                     | boolean: true = 1, false = 2 on the wire (§6.1.5); other octets are a DecodeError |
 * | macAddress                                  | 'aa:bb:cc:dd:ee:ff', lower case (encode also takes '-' separators or a 6-byte Buffer) |
 * | string                                      | string (UTF-8). A fixed-length field is padded with zero bytes when encoding and its trailing zero bytes are dropped when decoding; ill-formed UTF-8 decodes with U+FFFD (RFC 7011 §6.1.6: detect and ignore) |
 * | octetArray                                  | Buffer (a copy, never a view of the message)                 |
 * | dateTimeSeconds                             | number, seconds since 1970 (encoded modulo 2^32, §5.2)       |
 * | dateTimeMilliseconds                        | number, milliseconds since 1970 (encode also takes a bigint) |
 * | dateTimeMicroseconds, dateTimeNanoseconds   | bigint NANOseconds since 1970, sent as an NTP timestamp (§6.1.9, §6.1.10); microseconds are rounded to the microsecond and have the 11 low fraction bits zero |
 * | ipv4Address, ipv6Address                    | canonical text (RFC 5952 for IPv6), as src/flow/address.ts writes it |
 * | basicList                                   | {@link BasicList}                                            |
 * | subTemplateList                             | {@link SubTemplateList}                                      |
 * | subTemplateMultiList                        | {@link SubTemplateMultiList}                                 |
 *
 * NTP era (RFC 7011 §5.2): timestamps are written modulo 2^32 seconds ("as if the NTP era is
 * implicit"); when read, a seconds field with its top bit clear is taken to be in era 1 (from
 * 2036-02-07), as RFC 4330 §3 does, so times from 1968-01-20 to 2104 read back as written.
 *
 * Variable length (§7): 65535 as the field length; the value is preceded by one octet of length
 * (< 255) or by 255 and two octets of length. Encoding uses the short form whenever it can;
 * decoding accepts both. Lists are encoded the same way.
 */
import {formatAddress, parseAddress} from '../../util/address.js'
import {allowedLengths, isListType, isValidLength, isVariableType, resolveElement, VARIABLE_LENGTH, type AbstractType} from './elements.js'
import {CodecError, DecodeError} from './errors.js'
import type {Template, TemplateField} from './template.js'

/** RFC 6313 §4.4 list semantics. */
export const ListSemantic = {
  noneOf: 0,
  exactlyOneOf: 1,
  oneOrMoreOf: 2,
  allOf: 3,
  ordered: 4,
  undefined: 255,
} as const

const SEMANTIC_NAMES = new Map<number, string>(Object.entries(ListSemantic).map(([name, n]) => [n, name]))

/** The name of a list semantic ('allOf'), or its number in text when unassigned. */
export function semanticName(semantic: number): string {
  return SEMANTIC_NAMES.get(semantic) ?? String(semantic)
}

/** A data record's values keyed by element name (a name repeated in the template gets '#2', '#3'...). */
export type RecordFields = Record<string, FieldValue>

/** RFC 6313 §4.5.1: a list of values of one Information Element. */
export interface BasicList {
  readonly kind: 'basicList'
  semantic: number
  /** The element of every value, its length in the list (65535 = each value variable-length) and its PEN. */
  field: TemplateField
  values: FieldValue[]
}

/** RFC 6313 §4.5.2: a list of data records of one template. */
export interface SubTemplateList {
  readonly kind: 'subTemplateList'
  semantic: number
  templateId: number
  records: RecordFields[]
  /** The undecoded records, when the template was not known at decoding (then `records` is empty). */
  raw?: Buffer
}

export interface SubTemplateMultiListEntry {
  templateId: number
  records: RecordFields[]
  /** The undecoded records, when the template was not known at decoding (then `records` is empty). */
  raw?: Buffer
}

/** RFC 6313 §4.5.3: blocks of data records, each block of one template. */
export interface SubTemplateMultiList {
  readonly kind: 'subTemplateMultiList'
  semantic: number
  entries: SubTemplateMultiListEntry[]
}

export type FieldValue = number | bigint | boolean | string | Buffer | BasicList | SubTemplateList | SubTemplateMultiList

/** Finds the template a subTemplateList or subTemplateMultiList names. */
export type TemplateLookup = (templateId: number) => Template | undefined

const NTP_UNIX_OFFSET = 2208988800n
const NS_PER_S = 1_000_000_000n
const TWO32N = 0x1_0000_0000n
const LIMITS = [1, 2 ** 8, 2 ** 16, 2 ** 24, 2 ** 32, 2 ** 40, 2 ** 48, 2 ** 56, 2 ** 64]

// -------------------------------------------------------------------------------------------------
// Elements

function lengthProblem(type: AbstractType, length: number): string {
  if (length === VARIABLE_LENGTH) return `variable length (65535) is not valid for ${type}`
  const allowed = allowedLengths(type)
  const which = allowed === 'any' ? 'any length' : allowed.length === 1 ? `${allowed[0]}` : `${allowed[0]} to ${allowed[allowed.length - 1]}`
  return `field length ${length} is not valid for ${type} (allowed: ${which})`
}

// -------------------------------------------------------------------------------------------------
// NTP time

/**
 * Epoch nanoseconds to NTP seconds (modulo 2^32) and fraction. With `micro`, the time is rounded
 * to the microsecond and the 11 least significant fraction bits are zero (RFC 7011 §6.1.9).
 */
export function epochNsToNtp(epochNs: bigint, micro = false): {seconds: number; fraction: number} {
  let secs: bigint
  let fraction: number
  if (micro) {
    const us = divRound(epochNs, 1000n)
    secs = floorDiv(us, 1_000_000n)
    const rem = Number(us - secs * 1_000_000n)
    // units of 2^-21 s, that is 2^11 units of 2^-32 s: < 2^21 for any rem < 10^6
    fraction = Math.round((rem * 2 ** 21) / 1e6) * 2048
  } else {
    secs = floorDiv(epochNs, NS_PER_S)
    const rem = epochNs - secs * NS_PER_S
    fraction = Number(divRound(rem * TWO32N, NS_PER_S)) // at most 4294967292 for rem < 10^9
  }
  const ntpSecs = (((secs + NTP_UNIX_OFFSET) % TWO32N) + TWO32N) % TWO32N
  return {seconds: Number(ntpSecs), fraction}
}

/**
 * NTP seconds and fraction to epoch nanoseconds. Seconds with the top bit clear are taken to be in
 * NTP era 1 (2036 onwards). With `micro`, the 11 least significant fraction bits are ignored and
 * the time is rounded to the microsecond (RFC 7011 §6.1.9: they MUST be ignored).
 */
export function ntpToEpochNs(seconds: number, fraction: number, micro = false): bigint {
  let secs = BigInt(seconds >>> 0)
  if (secs < 0x8000_0000n) secs += TWO32N
  const unix = secs - NTP_UNIX_OFFSET
  if (micro) {
    const us = Math.round(((fraction >>> 11) * 1e6) / 2 ** 21)
    return unix * NS_PER_S + BigInt(us) * 1000n
  }
  return unix * NS_PER_S + divRound(BigInt(fraction >>> 0) * NS_PER_S, TWO32N)
}

function floorDiv(a: bigint, b: bigint): bigint {
  const q = a / b
  return a % b !== 0n && a < 0n !== b < 0n ? q - 1n : q
}

/** a / b rounded half up (b > 0). */
function divRound(a: bigint, b: bigint): bigint {
  return floorDiv(2n * a + b, 2n * b)
}

// -------------------------------------------------------------------------------------------------
// Encoding

function need(buf: Buffer, off: number, n: number): void {
  if (off < 0 || off + n > buf.length) throw new CodecError(`buffer too small: ${n} bytes at offset ${off} of ${buf.length}`)
}

function toBigInt(value: FieldValue, type: AbstractType): bigint {
  if (typeof value === 'bigint') return value
  if (typeof value === 'number') {
    if (!Number.isSafeInteger(value)) throw new CodecError(`${type} value ${value} is not an integer (use a bigint beyond 2^53)`)
    return BigInt(value)
  }
  throw new CodecError(`${type} value must be a number or bigint, not ${describe(value)}`)
}

function describe(value: unknown): string {
  if (Buffer.isBuffer(value)) return `a ${value.length}-byte Buffer`
  if (value && typeof value === 'object' && 'kind' in value) return `a ${String((value as {kind: unknown}).kind)}`
  return typeof value === 'string' ? `the string '${value.length > 40 ? `${value.slice(0, 40)}...` : value}'` : `${typeof value} ${String(value)}`
}

function writeBigBE(buf: Buffer, off: number, length: number, v: bigint): void {
  for (let i = length - 1; i >= 0; i--) {
    buf[off + i] = Number(v & 0xffn)
    v >>= 8n
  }
}

function writeInteger(buf: Buffer, off: number, type: AbstractType, length: number, value: FieldValue): void {
  const signed = type.startsWith('signed')
  if (typeof value === 'number' && length <= 6) {
    if (!Number.isInteger(value)) throw new CodecError(`${type} value ${value} is not an integer`)
    const limit = LIMITS[length]
    if (signed ? value < -limit / 2 || value >= limit / 2 : value < 0 || value >= limit) {
      throw new CodecError(`${type} value ${value} does not fit in ${length} byte${length === 1 ? '' : 's'}`)
    }
    if (signed) buf.writeIntBE(value, off, length)
    else buf.writeUIntBE(value, off, length)
    return
  }
  const v = toBigInt(value, type)
  const bits = BigInt(length * 8)
  const limit = 1n << bits
  if (signed ? v < -(limit >> 1n) || v >= limit >> 1n : v < 0n || v >= limit) {
    throw new CodecError(`${type} value ${v} does not fit in ${length} byte${length === 1 ? '' : 's'}`)
  }
  writeBigBE(buf, off, length, v < 0n ? v + limit : v)
}

function macBytes(value: FieldValue): Buffer {
  if (Buffer.isBuffer(value) && value.length === 6) return value
  if (typeof value === 'string' && /^[0-9a-f]{2}([:-][0-9a-f]{2}){5}$/i.test(value.trim())) {
    return Buffer.from(
      value
        .trim()
        .split(/[:-]/)
        .map((h) => parseInt(h, 16)),
    )
  }
  throw new CodecError(`macAddress value must be 'aa:bb:cc:dd:ee:ff', not ${describe(value)}`)
}

function addressBytes(value: FieldValue, family: 4 | 6): Buffer {
  if (typeof value !== 'string') throw new CodecError(`ipv${family}Address value must be a string, not ${describe(value)}`)
  let parsed: {family: 4 | 6; bytes: Buffer}
  try {
    parsed = parseAddress(value)
  } catch (err) {
    throw new CodecError(`ipv${family}Address value '${value}' is not an IPv${family} address`, {cause: err})
  }
  if (parsed.family !== family) throw new CodecError(`ipv${family}Address value '${value}' is not an IPv${family} address`)
  return parsed.bytes
}

function octets(value: FieldValue, type: AbstractType): Buffer {
  if (type === 'string') {
    if (typeof value !== 'string') throw new CodecError(`string value must be a string, not ${describe(value)}`)
    return Buffer.from(value, 'utf8')
  }
  if (Buffer.isBuffer(value)) return value
  if (value instanceof Uint8Array) return Buffer.from(value.buffer, value.byteOffset, value.byteLength)
  throw new CodecError(`octetArray value must be a Buffer, not ${describe(value)}`)
}

function asList<K extends 'basicList' | 'subTemplateList' | 'subTemplateMultiList'>(value: FieldValue, kind: K): Extract<FieldValue, {kind: K}> {
  if (value && typeof value === 'object' && !Buffer.isBuffer(value) && (value as {kind?: unknown}).kind === kind) {
    return value as Extract<FieldValue, {kind: K}>
  }
  throw new CodecError(`${kind} value must be a ${kind} object, not ${describe(value)}`)
}

function checkSemantic(semantic: number, kind: string): void {
  if (!Number.isInteger(semantic) || semantic < 0 || semantic > 255) throw new CodecError(`${kind} semantic ${semantic} is not an octet`)
}

function listTemplate(templateId: number, templates: TemplateLookup | undefined, kind: string): Template | undefined {
  if (!Number.isInteger(templateId) || templateId < 256 || templateId > 65535) throw new CodecError(`${kind} template ID ${templateId} is not in 256-65535`)
  return templates?.(templateId)
}

/** Size of the content of a value, without any variable-length prefix. */
function contentSize(type: AbstractType, length: number, value: FieldValue, templates?: TemplateLookup): number {
  switch (type) {
    case 'octetArray':
    case 'string':
      return length === VARIABLE_LENGTH ? octets(value, type).length : length
    case 'basicList': {
      const list = asList(value, 'basicList')
      let n = 5 + (list.field.enterpriseNumber === undefined ? 0 : 4)
      for (const v of list.values) n += valueSize(list.field.element.type, list.field.length, v, templates)
      return n
    }
    case 'subTemplateList': {
      const list = asList(value, 'subTemplateList')
      return 3 + recordsSize(list.templateId, list.records, list.raw, templates, 'subTemplateList')
    }
    case 'subTemplateMultiList': {
      const list = asList(value, 'subTemplateMultiList')
      let n = 1
      for (const e of list.entries) n += 4 + recordsSize(e.templateId, e.records, e.raw, templates, 'subTemplateMultiList')
      return n
    }
    default:
      return length
  }
}

function recordsSize(templateId: number, records: RecordFields[], raw: Buffer | undefined, templates: TemplateLookup | undefined, kind: string): number {
  const t = listTemplate(templateId, templates, kind)
  if (!t) {
    if (raw && records.length === 0) return raw.length
    throw new CodecError(`${kind} names template ${templateId}, which is not known`)
  }
  let n = 0
  for (const r of records) n += recordSize(t, r, templates)
  return n
}

/**
 * The number of bytes `writeValue` writes for this value: the field length, or for a
 * variable-length field its content and the 1- or 3-byte length prefix.
 */
export function valueSize(type: AbstractType, length: number, value: FieldValue, templates?: TemplateLookup): number {
  if (length !== VARIABLE_LENGTH) return length
  if (!isVariableType(type)) throw new CodecError(lengthProblem(type, length))
  const n = contentSize(type, length, value, templates)
  return n + (n < 255 ? 1 : 3)
}

/**
 * Writes one field value in a field of `length` bytes (VARIABLE_LENGTH: variable-length encoding)
 * and returns the new offset. Throws CodecError when the value does not fit the type or length, or
 * the buffer is too small. `templates` resolves the templates of sub-template lists.
 */
export function writeValue(buf: Buffer, off: number, type: AbstractType, length: number, value: FieldValue, templates?: TemplateLookup): number {
  if (!isValidLength(type, length)) throw new CodecError(lengthProblem(type, length))
  if (length === VARIABLE_LENGTH) {
    const n = contentSize(type, length, value, templates)
    if (n > 65535) throw new CodecError(`${type} value of ${n} bytes is longer than a variable-length field can carry (65535)`)
    const prefix = n < 255 ? 1 : 3
    need(buf, off, prefix + n)
    if (prefix === 1) {
      buf[off] = n
    } else {
      buf[off] = 255
      buf.writeUInt16BE(n, off + 1)
    }
    return writeContent(buf, off + prefix, type, n, value, templates)
  }
  need(buf, off, length)
  if (isListType(type)) {
    const n = contentSize(type, length, value, templates)
    if (n !== length) throw new CodecError(`${type} value of ${n} bytes does not fill its fixed field length ${length}`)
  }
  return writeContent(buf, off, type, length, value, templates)
}

/** Writes the content of a value in exactly `length` bytes (the buffer is known to be large enough). */
function writeContent(buf: Buffer, off: number, type: AbstractType, length: number, value: FieldValue, templates?: TemplateLookup): number {
  switch (type) {
    case 'unsigned8':
    case 'unsigned16':
    case 'unsigned32':
    case 'unsigned64':
    case 'signed8':
    case 'signed16':
    case 'signed32':
    case 'signed64':
      writeInteger(buf, off, type, length, value)
      break
    case 'float32':
    case 'float64': {
      if (typeof value !== 'number') throw new CodecError(`${type} value must be a number, not ${describe(value)}`)
      if (length === 4) {
        if (Number.isFinite(value) && !Number.isFinite(Math.fround(value))) throw new CodecError(`${type} value ${value} does not fit in a float32`)
        buf.writeFloatBE(value, off)
      } else {
        buf.writeDoubleBE(value, off)
      }
      break
    }
    case 'boolean':
      if (typeof value !== 'boolean') throw new CodecError(`boolean value must be true or false, not ${describe(value)}`)
      buf[off] = value ? 1 : 2
      break
    case 'macAddress':
      macBytes(value).copy(buf, off)
      break
    case 'ipv4Address':
      addressBytes(value, 4).copy(buf, off)
      break
    case 'ipv6Address':
      addressBytes(value, 6).copy(buf, off)
      break
    case 'string': {
      const bytes = octets(value, type)
      if (bytes.length > length) throw new CodecError(`string of ${bytes.length} UTF-8 bytes is longer than its field (${length} bytes)`)
      bytes.copy(buf, off)
      buf.fill(0, off + bytes.length, off + length)
      break
    }
    case 'octetArray': {
      const bytes = octets(value, type)
      if (bytes.length !== length) throw new CodecError(`octetArray of ${bytes.length} bytes does not match its field length ${length}`)
      bytes.copy(buf, off)
      break
    }
    case 'dateTimeSeconds': {
      const v = toBigInt(value, type)
      if (v < 0n) throw new CodecError(`dateTimeSeconds value ${v} is before 1970`)
      buf.writeUInt32BE(Number(v % TWO32N), off)
      break
    }
    case 'dateTimeMilliseconds': {
      const v = toBigInt(value, type)
      if (v < 0n) throw new CodecError(`dateTimeMilliseconds value ${v} is before 1970`)
      writeBigBE(buf, off, 8, v)
      break
    }
    case 'dateTimeMicroseconds':
    case 'dateTimeNanoseconds': {
      const ns = toBigInt(value, type)
      const {seconds, fraction} = epochNsToNtp(ns, type === 'dateTimeMicroseconds')
      buf.writeUInt32BE(seconds, off)
      buf.writeUInt32BE(fraction, off + 4)
      break
    }
    case 'basicList': {
      const list = asList(value, 'basicList')
      checkSemantic(list.semantic, 'basicList')
      const {element, length: elementLength, enterpriseNumber} = list.field
      if (!Number.isInteger(element.id) || element.id < 0 || element.id > 0x7fff) throw new CodecError(`basicList element id ${element.id} is not in 0-32767`)
      if (!isValidLength(element.type, elementLength)) throw new CodecError(`basicList of ${element.name}: ${lengthProblem(element.type, elementLength)}`)
      let p = off
      buf[p++] = list.semantic
      buf.writeUInt16BE(element.id | (enterpriseNumber === undefined ? 0 : 0x8000), p)
      buf.writeUInt16BE(elementLength, p + 2)
      p += 4
      if (enterpriseNumber !== undefined) {
        buf.writeUInt32BE(enterpriseNumber, p)
        p += 4
      }
      for (const v of list.values) p = writeValue(buf, p, element.type, elementLength, v, templates)
      break
    }
    case 'subTemplateList': {
      const list = asList(value, 'subTemplateList')
      checkSemantic(list.semantic, 'subTemplateList')
      buf[off] = list.semantic
      buf.writeUInt16BE(list.templateId, off + 1)
      writeRecords(buf, off + 3, list.templateId, list.records, list.raw, templates, 'subTemplateList')
      break
    }
    case 'subTemplateMultiList': {
      const list = asList(value, 'subTemplateMultiList')
      checkSemantic(list.semantic, 'subTemplateMultiList')
      let p = off
      buf[p++] = list.semantic
      for (const e of list.entries) {
        const end = writeRecords(buf, p + 4, e.templateId, e.records, e.raw, templates, 'subTemplateMultiList')
        if (end - p > 65535) throw new CodecError(`subTemplateMultiList block of template ${e.templateId} is longer than 65535 bytes`)
        buf.writeUInt16BE(e.templateId, p)
        buf.writeUInt16BE(end - p, p + 2)
        p = end
      }
      break
    }
  }
  return off + length
}

function writeRecords(
  buf: Buffer,
  off: number,
  templateId: number,
  records: RecordFields[],
  raw: Buffer | undefined,
  templates: TemplateLookup | undefined,
  kind: string,
): number {
  const t = listTemplate(templateId, templates, kind)
  if (!t) {
    if (raw && records.length === 0) return off + raw.copy(buf, off)
    throw new CodecError(`${kind} names template ${templateId}, which is not known`)
  }
  let p = off
  for (const r of records) p = encodeRecord(buf, p, t, r, templates)
  return p
}

// -------------------------------------------------------------------------------------------------
// Decoding

const utf8 = new TextDecoder('utf-8', {fatal: false})

/**
 * Reads one field value of a field of `length` bytes (VARIABLE_LENGTH: variable-length encoding)
 * at `off`, not reading at or beyond `end`. Throws DecodeError when the value runs past `end`, the
 * length is not valid for the type, or the content is not valid (a boolean other than 1 or 2).
 */
export function readValue(
  buf: Buffer,
  off: number,
  end: number,
  type: AbstractType,
  length: number,
  templates?: TemplateLookup,
): {value: FieldValue; next: number} {
  if (!isValidLength(type, length)) throw new DecodeError(lengthProblem(type, length), off)
  let start = off
  let n = length
  if (length === VARIABLE_LENGTH) {
    if (off + 1 > end) throw new DecodeError(`variable-length ${type} has no length octet: the record ends there`, off)
    n = buf[off]
    start = off + 1
    if (n === 255) {
      if (off + 3 > end) throw new DecodeError(`variable-length ${type} has a 3-octet length cut short`, off)
      n = buf.readUInt16BE(off + 1)
      start = off + 3
    }
  }
  if (start + n > end) throw new DecodeError(`${type} value of ${n} bytes runs past the end (${Math.max(0, end - start)} bytes left)`, off)
  return {value: readContent(buf, start, n, type, templates), next: start + n}
}

function readContent(buf: Buffer, off: number, n: number, type: AbstractType, templates?: TemplateLookup): FieldValue {
  switch (type) {
    case 'unsigned8':
    case 'unsigned16':
    case 'unsigned32':
      return buf.readUIntBE(off, n)
    case 'signed8':
    case 'signed16':
    case 'signed32':
      return buf.readIntBE(off, n)
    case 'unsigned64':
    case 'signed64': {
      let v = 0n
      for (let i = 0; i < n; i++) v = (v << 8n) | BigInt(buf[off + i])
      if (type === 'signed64' && n > 0 && buf[off] & 0x80) v -= 1n << BigInt(8 * n)
      return v
    }
    case 'float32':
      return buf.readFloatBE(off)
    case 'float64':
      return n === 4 ? buf.readFloatBE(off) : buf.readDoubleBE(off)
    case 'boolean': {
      const b = buf[off]
      if (b === 1) return true
      if (b === 2) return false
      throw new DecodeError(`boolean octet ${b} is neither 1 (true) nor 2 (false)`, off)
    }
    case 'macAddress':
      return Array.from(buf.subarray(off, off + 6), (b) => b.toString(16).padStart(2, '0')).join(':')
    case 'ipv4Address':
      return formatAddress(4, buf, off)
    case 'ipv6Address':
      return formatAddress(6, buf, off)
    case 'string': {
      let e = off + n
      // Only a fixed-length field is padded; a variable-length one carries exactly its string.
      while (e > off && buf[e - 1] === 0) e--
      return utf8.decode(buf.subarray(off, e))
    }
    case 'octetArray':
      return Buffer.from(buf.subarray(off, off + n))
    case 'dateTimeSeconds':
      return buf.readUInt32BE(off)
    case 'dateTimeMilliseconds':
      return Number(buf.readBigUInt64BE(off))
    case 'dateTimeMicroseconds':
    case 'dateTimeNanoseconds':
      return ntpToEpochNs(buf.readUInt32BE(off), buf.readUInt32BE(off + 4), type === 'dateTimeMicroseconds')
    case 'basicList':
      return readBasicList(buf, off, off + n)
    case 'subTemplateList': {
      if (n < 3) throw new DecodeError(`subTemplateList of ${n} bytes is shorter than its 3-byte header`, off)
      const templateId = buf.readUInt16BE(off + 1)
      const {records, raw} = readRecords(buf, off + 3, off + n, templateId, templates, 'subTemplateList')
      return raw ? {kind: 'subTemplateList', semantic: buf[off], templateId, records, raw} : {kind: 'subTemplateList', semantic: buf[off], templateId, records}
    }
    case 'subTemplateMultiList': {
      if (n < 1) throw new DecodeError('subTemplateMultiList of 0 bytes lacks its semantic octet', off)
      const entries: SubTemplateMultiListEntry[] = []
      const end = off + n
      let p = off + 1
      while (p < end) {
        if (p + 4 > end) throw new DecodeError(`subTemplateMultiList block header cut short (${end - p} bytes left)`, p)
        const templateId = buf.readUInt16BE(p)
        const blockLength = buf.readUInt16BE(p + 2)
        if (blockLength < 4) throw new DecodeError(`subTemplateMultiList block length ${blockLength} is shorter than its 4-byte header`, p)
        if (p + blockLength > end) throw new DecodeError(`subTemplateMultiList block of ${blockLength} bytes runs past the list (${end - p} bytes left)`, p)
        const {records, raw} = readRecords(buf, p + 4, p + blockLength, templateId, templates, 'subTemplateMultiList')
        entries.push(raw ? {templateId, records, raw} : {templateId, records})
        p += blockLength
      }
      return {kind: 'subTemplateMultiList', semantic: buf[off], entries}
    }
  }
}

function readBasicList(buf: Buffer, off: number, end: number): BasicList {
  if (end - off < 5) throw new DecodeError(`basicList of ${end - off} bytes is shorter than its 5-byte header`, off)
  const semantic = buf[off]
  const rawId = buf.readUInt16BE(off + 1)
  const elementLength = buf.readUInt16BE(off + 3)
  let p = off + 5
  let enterpriseNumber: number | undefined
  if (rawId & 0x8000) {
    if (end - p < 4) throw new DecodeError('basicList enterprise number cut short', p)
    enterpriseNumber = buf.readUInt32BE(p)
    p += 4
  }
  const element = resolveElement(rawId & 0x7fff, enterpriseNumber)
  if (!isValidLength(element.type, elementLength)) throw new DecodeError(`basicList of ${element.name}: ${lengthProblem(element.type, elementLength)}`, off + 3)
  if (elementLength === 0 && p < end) throw new DecodeError(`basicList of ${element.name} has element length 0 but ${end - p} bytes of content`, off + 3)
  const values: FieldValue[] = []
  while (p < end) {
    const r = readValue(buf, p, end, element.type, elementLength)
    values.push(r.value)
    p = r.next
  }
  const field: TemplateField = enterpriseNumber === undefined ? {element, length: elementLength} : {element, length: elementLength, enterpriseNumber}
  return {kind: 'basicList', semantic, field, values}
}

function readRecords(
  buf: Buffer,
  off: number,
  end: number,
  templateId: number,
  templates: TemplateLookup | undefined,
  kind: string,
): {records: RecordFields[]; raw?: Buffer} {
  const t = templates?.(templateId)
  if (!t) return {records: [], raw: Buffer.from(buf.subarray(off, end))}
  const records: RecordFields[] = []
  let p = off
  while (p < end) {
    const r = decodeRecord(buf, p, end, t, templates)
    if (r.next === p) throw new DecodeError(`${kind} of template ${templateId}: its records are 0 bytes long`, p)
    records.push(r.fields)
    p = r.next
  }
  return {records}
}

// -------------------------------------------------------------------------------------------------
// Records

const keyCache = new WeakMap<readonly TemplateField[], string[]>()

/** The record keys of a template's fields: the element names, a repeated name as 'name#2', 'name#3'... */
export function fieldKeys(fields: readonly TemplateField[]): string[] {
  let keys = keyCache.get(fields)
  if (keys && keys.length === fields.length) return keys
  const seen = new Map<string, number>()
  keys = fields.map((f) => {
    const n = (seen.get(f.element.name) ?? 0) + 1
    seen.set(f.element.name, n)
    return n === 1 ? f.element.name : `${f.element.name}#${n}`
  })
  keyCache.set(fields, keys)
  return keys
}

/** The element name behind a record key ('sourceIPv4Address#2' -> 'sourceIPv4Address'). */
export function keyElementName(key: string): string {
  const hash = key.indexOf('#')
  return hash < 0 ? key : key.slice(0, hash)
}

/** The encoded size of one data record of template `t`. */
export function recordSize(t: Template, fields: RecordFields, templates?: TemplateLookup): number {
  const keys = fieldKeys(t.fields)
  let n = 0
  t.fields.forEach((f, i) => {
    n += valueSize(f.element.type, f.length, fieldOf(t, fields, keys[i]), templates)
  })
  return n
}

function fieldOf(t: Template, fields: RecordFields, key: string): FieldValue {
  const v = fields[key]
  if (v === undefined) throw new CodecError(`record for template ${t.id} lacks field ${key}`)
  return v
}

/** Writes one data record of template `t` (values keyed as `fieldKeys` names them); returns the new offset. */
export function encodeRecord(buf: Buffer, off: number, t: Template, fields: RecordFields, templates?: TemplateLookup): number {
  const keys = fieldKeys(t.fields)
  let p = off
  for (let i = 0; i < t.fields.length; i++) {
    const f = t.fields[i]
    try {
      p = writeValue(buf, p, f.element.type, f.length, fieldOf(t, fields, keys[i]), templates)
    } catch (err) {
      if (err instanceof CodecError && !err.message.startsWith('template '))
        throw new CodecError(`template ${t.id}, field ${keys[i]}: ${err.message}`, {cause: err})
      throw err
    }
  }
  return p
}

/** Reads one data record of template `t` at `off`, within `end`. */
export function decodeRecord(buf: Buffer, off: number, end: number, t: Template, templates?: TemplateLookup): {fields: RecordFields; next: number} {
  const keys = fieldKeys(t.fields)
  const fields: RecordFields = {}
  let p = off
  for (let i = 0; i < t.fields.length; i++) {
    const f = t.fields[i]
    try {
      const r = readValue(buf, p, end, f.element.type, f.length, templates)
      fields[keys[i]] = r.value
      p = r.next
    } catch (err) {
      if (err instanceof DecodeError && !err.what.startsWith('data record')) {
        throw new DecodeError(`data record of template ${t.id}, field ${keys[i]}: ${err.what}`, err.offset, {cause: err})
      }
      throw err
    }
  }
  return {fields, next: p}
}
