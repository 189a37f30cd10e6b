/** IP addresses between their text form and the bytes the kernel keeps (network order). */
import {isIPv4, isIPv6} from 'node:net'

import ipaddr from 'ipaddr.js'

import {InvalidInputError} from '../errors.js'

export function formatIPv4(buf: Uint8Array, off = 0): string {
  return `${buf[off]}.${buf[off + 1]}.${buf[off + 2]}.${buf[off + 3]}`
}

/** RFC 5952 text (ipaddr.js): lower case, the longest run of zero groups compressed. */
export function formatIPv6(buf: Uint8Array, off = 0): string {
  const bytes = Array.from(buf.subarray(off, off + 16))
  // An IPv4-mapped address is written the way people know it.
  if (bytes.slice(0, 10).every((b) => b === 0) && bytes[10] === 0xff && bytes[11] === 0xff) return `::ffff:${formatIPv4(buf, off + 12)}`
  return ipaddr.fromByteArray(bytes).toString()
}

export function formatAddress(family: 4 | 6, buf: Uint8Array, off = 0): string {
  return family === 4 ? formatIPv4(buf, off) : formatIPv6(buf, off)
}

/** Parses an IPv4 or IPv6 address into its family and 4 or 16 network-order bytes. */
export function parseAddress(text: string, what = 'address'): {family: 4 | 6; bytes: Buffer} {
  const t = text.trim()
  if (isIPv4(t)) return {family: 4, bytes: Buffer.from(t.split('.').map(Number))}
  if (isIPv6(t)) return {family: 6, bytes: parseIPv6(t)}
  throw new InvalidInputError(`invalid ${what} '${text}': expected an IPv4 or IPv6 address`)
}

/**
 * 16 network-order bytes of an IPv6 address (a zone, `%eth0`, is dropped). A dotted IPv4 tail is
 * turned into its two groups first: ipaddr.js reads `::10.0.0.1` as `::ffff:10.0.0.1`, which is
 * another address.
 */
function parseIPv6(text: string): Buffer {
  const t = text
    .split('%')[0]
    .replace(
      /(\d+)\.(\d+)\.(\d+)\.(\d+)$/,
      (_m, a: string, b: string, c: string, d: string) => `${((Number(a) << 8) | Number(b)).toString(16)}:${((Number(c) << 8) | Number(d)).toString(16)}`,
    )
  return Buffer.from(ipaddr.IPv6.parse(t).toByteArray())
}

/** The canonical text of an address, so that "2001:DB8::0:1" and "2001:db8::1" compare equal. */
export function canonicalAddress(text: string, what = 'address'): string {
  const {family, bytes} = parseAddress(text, what)
  return formatAddress(family, bytes)
}
