/**
 * The codec: a field value of any RFC 7012 §3.1 abstract type to and from its RFC 7011 §6
 * encoding, and data records of a template. What a value is in TypeScript, per type, is
 * field-values.ts; each kind of value is encoded by a module of its own (number-values.ts,
 * address-values.ts, octet-values.ts, time-values.ts, and list-values.ts for the structured types
 * of RFC 6313), to which this one dispatches by type.
 *
 * Variable length (§7): 65535 as the field length; the value is preceded by one octet of length
 * (< 255) or by 255 and two octets of length. Encoding uses the short form whenever it can;
 * decoding accepts both. Lists are encoded the same way.
 */
import {writeIpAddress, readIpAddress, readMacAddress, writeMacAddress} from './address-values.js'
import {isListType, isValidLength, isVariableType, lengthProblem, VARIABLE_LENGTH, type AbstractType} from './elements.js'
import {CodecError, DecodeError} from './errors.js'
import type {FieldValue, RecordFields, TemplateLookup} from './field-values.js'
import {listContentSize, readList, writeList, type ListCodec} from './list-values.js'
import {readBoolean, readFloat, readInteger, writeBoolean, writeFloat, writeInteger} from './number-values.js'
import {octetsOf, readOctetArray, readString, writeOctetArray, writeString} from './octet-values.js'
import type {Template, TemplateField} from './template.js'
import {readTime, writeTime} from './time-values.js'

/** What lists encode their values and records with: this codec. */
const LIST_CODEC: ListCodec = {valueSize, writeValue, readValue, recordSize, encodeRecord, decodeRecord}

function need(buf: Buffer, off: number, n: number): void {
  if (off < 0 || off + n > buf.length) throw new CodecError(`buffer too small: ${n} bytes at offset ${off} of ${buf.length}`)
}

/** Size of the content of a value, without any variable-length prefix. */
function contentSize(type: AbstractType, length: number, value: FieldValue, templates?: TemplateLookup): number {
  if (type === 'octetArray' || type === 'string') return length === VARIABLE_LENGTH ? octetsOf(value, type).length : length
  if (type === 'basicList' || type === 'subTemplateList' || type === 'subTemplateMultiList') return listContentSize(type, value, templates, LIST_CODEC)
  return length
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
    case 'float64':
      writeFloat(buf, off, type, length, value)
      break
    case 'boolean':
      writeBoolean(buf, off, value)
      break
    case 'macAddress':
      writeMacAddress(buf, off, value)
      break
    case 'ipv4Address':
      writeIpAddress(buf, off, 4, value)
      break
    case 'ipv6Address':
      writeIpAddress(buf, off, 6, value)
      break
    case 'string':
      writeString(buf, off, length, value)
      break
    case 'octetArray':
      writeOctetArray(buf, off, length, value)
      break
    case 'dateTimeSeconds':
    case 'dateTimeMilliseconds':
    case 'dateTimeMicroseconds':
    case 'dateTimeNanoseconds':
      writeTime(buf, off, type, value)
      break
    case 'basicList':
    case 'subTemplateList':
    case 'subTemplateMultiList':
      writeList(buf, off, type, value, templates, LIST_CODEC)
      break
  }
  return off + length
}

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
    case 'unsigned64':
    case 'signed8':
    case 'signed16':
    case 'signed32':
    case 'signed64':
      return readInteger(buf, off, n, type)
    case 'float32':
    case 'float64':
      return readFloat(buf, off, n, type)
    case 'boolean':
      return readBoolean(buf, off)
    case 'macAddress':
      return readMacAddress(buf, off)
    case 'ipv4Address':
      return readIpAddress(buf, off, 4)
    case 'ipv6Address':
      return readIpAddress(buf, off, 6)
    case 'string':
      return readString(buf, off, n)
    case 'octetArray':
      return readOctetArray(buf, off, n)
    case 'dateTimeSeconds':
    case 'dateTimeMilliseconds':
    case 'dateTimeMicroseconds':
    case 'dateTimeNanoseconds':
      return readTime(buf, off, type)
    case 'basicList':
    case 'subTemplateList':
    case 'subTemplateMultiList':
      return readList(buf, off, n, type, templates, LIST_CODEC)
  }
}

// -------------------------------------------------------------------------------------------------
// Records

const keyCache = new WeakMap<readonly TemplateField[], string[]>()

/** The record keys of a template's fields: the element names, a repeated name as 'name#2', 'name#3'... */
export function fieldKeys(fields: readonly TemplateField[]): string[] {
  let keys = keyCache.get(fields)
  if (keys?.length === fields.length) return keys
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
  const v = fields[key] as FieldValue | undefined
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
