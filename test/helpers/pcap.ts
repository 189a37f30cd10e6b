/**
 * A tiny classic-pcap writer (the libpcap file format, microsecond timestamps) for handing UDP
 * payloads to tools that read captures (tshark). Each datagram is wrapped in synthesized IPv4 and
 * UDP headers, and an Ethernet header for LINKTYPE_ETHERNET (1); LINKTYPE_RAW (101) starts at the
 * IP header. The IPv4 header checksum is computed (tshark flags a bad one when asked to check);
 * the UDP checksum is 0, which RFC 768 allows over IPv4 as "no checksum".
 */
import {parseAddress} from '../../src/util/address.js'

export const LINKTYPE_ETHERNET = 1
export const LINKTYPE_RAW = 101

export interface PcapDatagram {
  /** The UDP payload (an IPFIX message, say). */
  payload: Buffer
  /** IPv4 source address (default 192.0.2.1, TEST-NET-1). */
  src?: string
  /** IPv4 destination address (default 192.0.2.2). */
  dst?: string
  /** UDP source port (default 50000). */
  sport?: number
  /** UDP destination port (default 4739, the IPFIX port). */
  dport?: number
  /** Capture time in epoch milliseconds (default: 1 ms after the previous packet, from 1700000000000). */
  timeMs?: number
}

export interface PcapOptions {
  /** LINKTYPE_ETHERNET (default) or LINKTYPE_RAW. */
  linktype?: typeof LINKTYPE_ETHERNET | typeof LINKTYPE_RAW
}

/** The 24-byte global header (magic a1b2c3d4 written little-endian, version 2.4, snaplen 65535). */
function globalHeader(linktype: number): Buffer {
  const h = Buffer.alloc(24)
  h.writeUInt32LE(0xa1b2c3d4, 0)
  h.writeUInt16LE(2, 4)
  h.writeUInt16LE(4, 6)
  h.writeInt32LE(0, 8) // thiszone
  h.writeUInt32LE(0, 12) // sigfigs
  h.writeUInt32LE(65535, 16) // snaplen
  h.writeUInt32LE(linktype, 20)
  return h
}

/** RFC 791 header checksum: one's complement of the one's complement sum of the 16-bit words. */
export function ipv4Checksum(header: Buffer): number {
  let sum = 0
  for (let i = 0; i < header.length; i += 2) sum += header.readUInt16BE(i)
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16)
  return ~sum & 0xffff
}

function ipv4Address(text: string): Buffer {
  const a = parseAddress(text)
  if (a.family !== 4) throw new Error(`pcap: ${text} is not an IPv4 address`)
  return a.bytes
}

/** IPv4 + UDP headers around `d.payload` (IP identification `id`). */
export function udpPacket(d: PcapDatagram, id = 0): Buffer {
  const udpLength = 8 + d.payload.length
  if (20 + udpLength > 65535) throw new Error(`pcap: a ${d.payload.length}-byte payload does not fit in one IPv4 packet`)
  const ip = Buffer.alloc(20)
  ip[0] = 0x45 // version 4, IHL 5
  ip.writeUInt16BE(20 + udpLength, 2)
  ip.writeUInt16BE(id & 0xffff, 4)
  ip.writeUInt16BE(0x4000, 6) // DF, no fragment
  ip[8] = 64 // TTL
  ip[9] = 17 // UDP
  ipv4Address(d.src ?? '192.0.2.1').copy(ip, 12)
  ipv4Address(d.dst ?? '192.0.2.2').copy(ip, 16)
  ip.writeUInt16BE(ipv4Checksum(ip), 10)
  const udp = Buffer.alloc(8)
  udp.writeUInt16BE(d.sport ?? 50000, 0)
  udp.writeUInt16BE(d.dport ?? 4739, 2)
  udp.writeUInt16BE(udpLength, 4)
  return Buffer.concat([ip, udp, d.payload])
}

function ethernetFrame(ipPacket: Buffer): Buffer {
  const h = Buffer.alloc(14)
  Buffer.from([0x02, 0, 0, 0, 0, 2]).copy(h, 0) // locally administered MACs
  Buffer.from([0x02, 0, 0, 0, 0, 1]).copy(h, 6)
  h.writeUInt16BE(0x0800, 12)
  return Buffer.concat([h, ipPacket])
}

/** A whole pcap file holding one packet per datagram, in order. */
export function pcapFile(datagrams: readonly PcapDatagram[], options: PcapOptions = {}): Buffer {
  const linktype = options.linktype ?? LINKTYPE_ETHERNET
  const parts = [globalHeader(linktype)]
  let t = 1_700_000_000_000
  datagrams.forEach((d, i) => {
    t = d.timeMs ?? (i === 0 ? t : t + 1)
    const ipPacket = udpPacket(d, i + 1)
    const frame = linktype === LINKTYPE_ETHERNET ? ethernetFrame(ipPacket) : ipPacket
    const rec = Buffer.alloc(16)
    const seconds = Math.floor(t / 1000)
    rec.writeUInt32LE(seconds, 0)
    rec.writeUInt32LE(Math.round((t - seconds * 1000) * 1000), 4)
    rec.writeUInt32LE(frame.length, 8) // captured length
    rec.writeUInt32LE(frame.length, 12) // original length
    parts.push(rec, frame)
  })
  return Buffer.concat(parts)
}
