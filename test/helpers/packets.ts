/**
 * Frames built byte by byte from the protocol specs (RFC 791, 8200, 793, 768, 4960, 792,
 * IEEE 802.1Q), for feeding the meter through BPF_PROG_TEST_RUN. Checksums are left zero: the
 * meter never looks at them.
 */
import {parseAddress} from '../../src/util/address.js'

const MAC_A = [0x02, 0, 0, 0, 0, 1]
const MAC_B = [0x02, 0, 0, 0, 0, 2]

export function ethernet(ethertype: number, payload: Buffer, vlanTags: {tpid: number; vid: number}[] = []): Buffer {
  const tags = vlanTags.map(({tpid, vid}, i) => {
    const t = Buffer.alloc(4)
    t.writeUInt16BE(vid & 0x0fff, 0)
    t.writeUInt16BE(i + 1 < vlanTags.length ? vlanTags[i + 1].tpid : ethertype, 2)
    return {tpid, bytes: t}
  })
  const head = Buffer.alloc(12)
  head.set(MAC_B, 0)
  head.set(MAC_A, 6)
  const parts: Buffer[] = [head]
  const type = Buffer.alloc(2)
  type.writeUInt16BE(tags.length ? tags[0].tpid : ethertype)
  parts.push(type)
  for (const t of tags) parts.push(t.bytes)
  parts.push(payload)
  return Buffer.concat(parts)
}

export function ipv4(
  proto: number,
  src: string,
  dst: string,
  payload: Buffer,
  options: {tos?: number; fragOffset?: number; moreFragments?: boolean; ipOptions?: Buffer; totalLength?: number; id?: number} = {},
): Buffer {
  const opts = options.ipOptions ?? Buffer.alloc(0)
  if (opts.length % 4) throw new Error('IPv4 options must be a multiple of 4 bytes')
  const ihl = 5 + opts.length / 4
  const h = Buffer.alloc(20)
  h[0] = 0x40 | ihl
  h[1] = options.tos ?? 0
  h.writeUInt16BE(options.totalLength ?? ihl * 4 + payload.length, 2)
  h.writeUInt16BE(options.id ?? 0x1234, 4)
  h.writeUInt16BE(((options.fragOffset ?? 0) / 8) | (options.moreFragments ? 0x2000 : 0), 6)
  h[8] = 64
  h[9] = proto
  h.set(parseAddress(src).bytes, 12)
  h.set(parseAddress(dst).bytes, 16)
  return Buffer.concat([h, opts, payload])
}

export interface Ipv6Extension {
  type: number // the header's own protocol number (0 hop-by-hop, 43 routing, 44 fragment, 60 dest, 51 AH)
  /** For the fragment header: offset in bytes (multiple of 8), the M flag, and the identification. */
  fragOffset?: number
  moreFragments?: boolean
  id?: number
  /** Length of a generic extension header in 8-byte units beyond the first 8 (hdr ext len). */
  extLen?: number
}

export function ipv6(proto: number, src: string, dst: string, payload: Buffer, options: {trafficClass?: number; extensions?: Ipv6Extension[]} = {}): Buffer {
  const exts = options.extensions ?? []
  const extBufs = exts.map((e, i) => {
    const next = i + 1 < exts.length ? exts[i + 1].type : proto
    if (e.type === 44) {
      const f = Buffer.alloc(8)
      f[0] = next
      f.writeUInt16BE((((e.fragOffset ?? 0) / 8) << 3) | (e.moreFragments ? 1 : 0), 2)
      f.writeUInt32BE(e.id ?? 0, 4)
      return f
    }
    if (e.type === 51) {
      // AH: payload length in 4-byte units minus 2; 12 bytes of header + 12 of ICV = 24 -> 4
      const a = Buffer.alloc(24)
      a[0] = next
      a[1] = 24 / 4 - 2
      return a
    }
    const len = 8 * (1 + (e.extLen ?? 0))
    const x = Buffer.alloc(len)
    x[0] = next
    x[1] = e.extLen ?? 0
    return x
  })
  const ext = Buffer.concat(extBufs)
  const h = Buffer.alloc(40)
  h.writeUInt32BE((6 << 28) | ((options.trafficClass ?? 0) << 20), 0)
  h.writeUInt16BE(ext.length + payload.length, 4)
  h[6] = exts.length ? exts[0].type : proto
  h[7] = 64
  h.set(parseAddress(src).bytes, 8)
  h.set(parseAddress(dst).bytes, 24)
  return Buffer.concat([h, ext, payload])
}

export function tcp(sport: number, dport: number, flags: number, payload = Buffer.alloc(0), options = Buffer.alloc(0)): Buffer {
  const h = Buffer.alloc(20)
  h.writeUInt16BE(sport, 0)
  h.writeUInt16BE(dport, 2)
  h.writeUInt32BE(1000, 4)
  h[12] = ((20 + options.length) / 4) << 4
  h[13] = flags
  h.writeUInt16BE(65535, 14)
  return Buffer.concat([h, options, payload])
}

export function udp(sport: number, dport: number, payload = Buffer.alloc(0)): Buffer {
  const h = Buffer.alloc(8)
  h.writeUInt16BE(sport, 0)
  h.writeUInt16BE(dport, 2)
  h.writeUInt16BE(8 + payload.length, 4)
  return Buffer.concat([h, payload])
}

export function sctp(sport: number, dport: number, payload = Buffer.alloc(0)): Buffer {
  const h = Buffer.alloc(12)
  h.writeUInt16BE(sport, 0)
  h.writeUInt16BE(dport, 2)
  return Buffer.concat([h, payload])
}

export function icmp(type: number, code: number, payload = Buffer.alloc(0)): Buffer {
  const h = Buffer.alloc(8)
  h[0] = type
  h[1] = code
  return Buffer.concat([h, payload])
}

export const ETH_IPV4 = 0x0800
export const ETH_IPV6 = 0x86dd
export const ETH_ARP = 0x0806
export const TPID_8021Q = 0x8100
export const TPID_8021AD = 0x88a8
