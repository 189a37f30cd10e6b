/**
 * Addresses on the wire (RFC 7011 §6.1.7, §6.1.8): MAC addresses as their 6 octets, IPv4 and IPv6
 * addresses as their 4 and 16 in network order; as text, the canonical form src/util/address.ts
 * writes (RFC 5952 for IPv6).
 */
import {formatAddress, parseAddress} from '../../util/address.js'
import {CodecError} from './errors.js'
import {describeValue, type FieldValue} from './field-values.js'

/** Writes a MAC address given as 'aa:bb:cc:dd:ee:ff' (or with '-' separators) or as a 6-byte Buffer. */
export function writeMacAddress(buf: Buffer, off: number, value: FieldValue): void {
  if (Buffer.isBuffer(value) && value.length === 6) {
    value.copy(buf, off)
    return
  }
  if (typeof value === 'string' && /^[0-9a-f]{2}([:-][0-9a-f]{2}){5}$/i.test(value.trim())) {
    Buffer.from(
      value
        .trim()
        .split(/[:-]/)
        .map((h) => parseInt(h, 16)),
    ).copy(buf, off)
    return
  }
  throw new CodecError(`macAddress value must be 'aa:bb:cc:dd:ee:ff', not ${describeValue(value)}`)
}

/** A MAC address as 'aa:bb:cc:dd:ee:ff', lower case. */
export function readMacAddress(buf: Buffer, off: number): string {
  return Array.from(buf.subarray(off, off + 6), (b) => b.toString(16).padStart(2, '0')).join(':')
}

/** Writes an IP address of `family` given as text; refuses one of the other family. */
export function writeIpAddress(buf: Buffer, off: number, family: 4 | 6, value: FieldValue): void {
  if (typeof value !== 'string') throw new CodecError(`ipv${family}Address value must be a string, not ${describeValue(value)}`)
  let parsed: {family: 4 | 6; bytes: Buffer}
  try {
    parsed = parseAddress(value)
  } catch (err) {
    throw new CodecError(`ipv${family}Address value '${value}' is not an IPv${family} address`, {cause: err})
  }
  if (parsed.family !== family) throw new CodecError(`ipv${family}Address value '${value}' is not an IPv${family} address`)
  parsed.bytes.copy(buf, off)
}

export function readIpAddress(buf: Buffer, off: number, family: 4 | 6): string {
  return formatAddress(family, buf, off)
}
