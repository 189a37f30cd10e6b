/** IP protocol numbers and names, TCP flag bits. */
import {InvalidInputError} from '../errors.js'

const NAMES: Record<number, string> = {
  1: 'icmp',
  2: 'igmp',
  4: 'ipip',
  6: 'tcp',
  17: 'udp',
  41: 'ipv6',
  47: 'gre',
  50: 'esp',
  51: 'ah',
  58: 'icmpv6',
  89: 'ospf',
  103: 'pim',
  112: 'vrrp',
  115: 'l2tp',
  132: 'sctp',
  136: 'udplite',
}

const NUMBERS = new Map<string, number>(Object.entries(NAMES).map(([n, name]) => [name, Number(n)]))
NUMBERS.set('ipv6-icmp', 58)
NUMBERS.set('icmp6', 58)

export function protocolName(proto: number): string {
  return NAMES[proto] ?? String(proto)
}

export function parseProtocol(text: string): number {
  const t = text.trim().toLowerCase()
  if (/^\d+$/.test(t) && Number(t) <= 255) return Number(t)
  const n = NUMBERS.get(t)
  if (n === undefined) throw new InvalidInputError(`invalid protocol '${text}': expected a number 0-255 or a name such as tcp, udp, icmp, icmpv6, sctp`)
  return n
}

export function isIcmp(proto: number): boolean {
  return proto === 1 || proto === 58
}

/** The TCP flags that end a connection (the others are only shown: tcpFlagsText). */
export const TCP_FIN = 0x01
export const TCP_RST = 0x04

/** nfdump's notation widened to 8 bits: CWR ECE URG ACK PSH RST SYN FIN, '.' where unset. */
export function tcpFlagsText(flags: number): string {
  const letters = 'CEUAPRSF'
  let out = ''
  for (let bit = 7; bit >= 0; bit--) out += flags & (1 << bit) ? letters[7 - bit] : '.'
  return out
}
