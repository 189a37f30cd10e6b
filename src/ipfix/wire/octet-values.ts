/**
 * Strings and octet arrays on the wire (RFC 7011 §6.1.6, §6.1.1): their bytes, in a field of
 * fixed length or of variable length (§7, framed by the codec).
 */
import {CodecError} from './errors.js'
import {describeValue, type FieldValue} from './field-values.js'

export type OctetType = 'string' | 'octetArray'

const utf8 = new TextDecoder('utf-8', {fatal: false})

/** The bytes a string (UTF-8) or octetArray value (a Buffer or any Uint8Array) is sent as. */
export function octetsOf(value: FieldValue, type: OctetType): Buffer {
  if (type === 'string') {
    if (typeof value !== 'string') throw new CodecError(`string value must be a string, not ${describeValue(value)}`)
    return Buffer.from(value, 'utf8')
  }
  if (Buffer.isBuffer(value)) return value
  if (value instanceof Uint8Array) return Buffer.from(value.buffer, value.byteOffset, value.byteLength)
  throw new CodecError(`octetArray value must be a Buffer, not ${describeValue(value)}`)
}

/** Writes a string in a field of `length` bytes, padded with zero bytes; refuses one longer than the field. */
export function writeString(buf: Buffer, off: number, length: number, value: FieldValue): void {
  const bytes = octetsOf(value, 'string')
  if (bytes.length > length) throw new CodecError(`string of ${bytes.length} UTF-8 bytes is longer than its field (${length} bytes)`)
  bytes.copy(buf, off)
  buf.fill(0, off + bytes.length, off + length)
}

/**
 * Reads a string of `n` bytes without its trailing zero bytes (only a fixed-length field is
 * padded; a variable-length one carries exactly its string). Ill-formed UTF-8 reads as U+FFFD.
 */
export function readString(buf: Buffer, off: number, n: number): string {
  let e = off + n
  while (e > off && buf[e - 1] === 0) e--
  return utf8.decode(buf.subarray(off, e))
}

/** Writes an octetArray that fills its field of `length` bytes exactly. */
export function writeOctetArray(buf: Buffer, off: number, length: number, value: FieldValue): void {
  const bytes = octetsOf(value, 'octetArray')
  if (bytes.length !== length) throw new CodecError(`octetArray of ${bytes.length} bytes does not match its field length ${length}`)
  bytes.copy(buf, off)
}

/** Reads an octetArray of `n` bytes, as a copy (never a view of the message). */
export function readOctetArray(buf: Buffer, off: number, n: number): Buffer {
  return Buffer.from(buf.subarray(off, off + n))
}
