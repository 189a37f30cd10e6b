/** IP addresses between their text form and the bytes the kernel keeps (network order). */
import {isIPv4, isIPv6} from 'node:net'

import {InvalidInputError} from '../errors.js'

export function formatIPv4(buf: Uint8Array, off = 0): string {
  return `${buf[off]}.${buf[off + 1]}.${buf[off + 2]}.${buf[off + 3]}`
}

/** RFC 5952 text: lower case, longest run (2+) of zero groups compressed, first run on ties. */
export function formatIPv6(buf: Uint8Array, off = 0): string {
  const groups: number[] = []
  for (let i = 0; i < 8; i++) groups.push((buf[off + 2 * i] << 8) | buf[off + 2 * i + 1])
  // An IPv4-mapped address is written the way people know it.
  if (groups.slice(0, 5).every((g) => g === 0) && groups[5] === 0xffff) {
    return `::ffff:${formatIPv4(buf, off + 12)}`
  }
  let bestStart = -1
  let bestLen = 0
  for (let i = 0; i < 8; ) {
    if (groups[i] !== 0) {
      i++
      continue
    }
    let j = i
    while (j < 8 && groups[j] === 0) j++
    if (j - i > bestLen && j - i >= 2) {
      bestStart = i
      bestLen = j - i
    }
    i = j
  }
  const hex = groups.map((g) => g.toString(16))
  if (bestStart < 0) return hex.join(':')
  return `${hex.slice(0, bestStart).join(':')}::${hex.slice(bestStart + bestLen).join(':')}`
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

function parseIPv6(text: string): Buffer {
  let t = text.split('%')[0]
  const out = Buffer.alloc(16)
  // A dotted IPv4 tail takes the last two groups.
  const dotted = t.match(/^(.*:)(\d+\.\d+\.\d+\.\d+)$/)
  let tail: number[] = []
  if (dotted) {
    t = `${dotted[1]}0:0`
    tail = dotted[2].split('.').map(Number)
  }
  const [head, rest] = t.includes('::') ? t.split('::') : [t, undefined]
  const headGroups = head ? head.split(':').filter((g) => g !== '') : []
  const restGroups = rest !== undefined && rest !== '' ? rest.split(':') : []
  const groups =
    rest === undefined
      ? headGroups
      : [...headGroups, ...new Array(8 - headGroups.length - restGroups.length).fill('0'), ...restGroups]
  groups.forEach((g, i) => out.writeUInt16BE(parseInt(g, 16), i * 2))
  if (tail.length) out.set(tail, 12)
  return out
}

/** The canonical text of an address, so that "2001:DB8::0:1" and "2001:db8::1" compare equal. */
export function canonicalAddress(text: string, what = 'address'): string {
  const {family, bytes} = parseAddress(text, what)
  return formatAddress(family, bytes)
}
