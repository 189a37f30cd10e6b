/**
 * Biflows (RFC 5103): the two directions of a connection joined into one record, for the
 * collectors and flow logs that ask for them. The meter counts uniflows; the pairing is done on
 * the flows a round of drains ends (held from the batches the drains hand over, up to
 * MAX_HELD_ROWS per meter set and family), by a hash join, and only for the outputs that want
 * biflows: the others get the uniflows as they were.
 *
 * Which uniflows are one connection: the same namespace and observation domain (the batch's),
 * protocol, VLAN tags and sampling interval, swapped addresses and ports (ICMP: an echo request
 * and its reply; other ICMP messages stay alone), and mirrored interfaces:
 *   - the same interface in the opposite direction (one interface metered both ways), first;
 *   - else the same direction on the flow's peer interface, whose own peer is the flow's
 *     interface (the ingress of each side of a router: an ingress flow's peer is where it leaves).
 * Every uniflow is in exactly one record (a pair, or alone with zero reverse counts), so every
 * packet and byte is counted once, as in the uniflows.
 *
 * The forward direction is the initiator's. The meter keeps the OR of a flow's TCP flags: a side
 * whose flags hold SYN without ACK sent only the opening SYN (it opened the connection); when both
 * sides saw SYN (the SYN and the SYN-ACK), the earlier first packet is the SYN; a side with SYN
 * beside one without opened it. Without any SYN, the connection began before the record, and
 * which side opened it is not known: biflowDirection arbitrary (0), the earlier first packet
 * forward. For other protocols the side seen first opened it (ICMP: the echo request).
 */
import {FlowBatch} from './batch.js'
import type {Family} from './record.js'

/** IPFIX biflowDirection (IE 239) values, RFC 5103 §6.3. */
export const BIFLOW_DIRECTION = {
  arbitrary: 0,
  initiator: 1,
  reverseInitiator: 2,
  perimeter: 3,
} as const

const TCP = 6
const ICMP = 1
const ICMPV6 = 58
const TCP_SYN = 0x02
const TCP_ACK = 0x10

/** ICMP echo request and reply types, each with the other (v4: 8 and 0; v6: 128 and 129). */
const ECHO_REQUEST: Record<number, number> = {[ICMP]: 8, [ICMPV6]: 128}
const ECHO_REPLY: Record<number, number> = {[ICMP]: 0, [ICMPV6]: 129}

/**
 * The ports the reverse of row `i` has (sport, dport as the meter keys them), or undefined when
 * no flow is its reverse (ICMP other than echo).
 */
function reversePorts(b: FlowBatch, i: number): [number, number] | undefined {
  const proto = b.proto[i]
  if (proto !== ICMP && proto !== ICMPV6) return [b.dport[i], b.sport[i]]
  // The meter keeps ICMP's type * 256 + code in the destination port, and no source port.
  const type = b.dport[i] >> 8
  const code = b.dport[i] & 0xff
  if (type === ECHO_REQUEST[proto]) return [0, (ECHO_REPLY[proto] << 8) | code]
  if (type === ECHO_REPLY[proto]) return [0, (ECHO_REQUEST[proto] << 8) | code]
  return undefined
}

function isEchoReply(b: FlowBatch, i: number): boolean {
  const proto = b.proto[i]
  return (proto === ICMP || proto === ICMPV6) && b.dport[i] >> 8 === ECHO_REPLY[proto]
}

/** The forward row of a pair and its biflowDirection (see the module comment). */
function orient(b: FlowBatch, i: number, j: number): [number, number, number] {
  const earlier = b.startUs[j] < b.startUs[i] ? j : i
  const later = earlier === i ? j : i
  if (b.proto[i] === TCP) {
    const fi = b.tcpFlags[i]
    const fj = b.tcpFlags[j]
    const openedI = (fi & (TCP_SYN | TCP_ACK)) === TCP_SYN
    const openedJ = (fj & (TCP_SYN | TCP_ACK)) === TCP_SYN
    if (openedI !== openedJ) return openedI ? [i, j, BIFLOW_DIRECTION.initiator] : [j, i, BIFLOW_DIRECTION.initiator]
    const synI = (fi & TCP_SYN) !== 0
    const synJ = (fj & TCP_SYN) !== 0
    if (synI && synJ) return [earlier, later, BIFLOW_DIRECTION.initiator]
    if (synI !== synJ) return synI ? [i, j, BIFLOW_DIRECTION.initiator] : [j, i, BIFLOW_DIRECTION.initiator]
    return [earlier, later, BIFLOW_DIRECTION.arbitrary]
  }
  if (isEchoReply(b, i) !== isEchoReply(b, j)) return isEchoReply(b, i) ? [j, i, BIFLOW_DIRECTION.initiator] : [i, j, BIFLOW_DIRECTION.initiator]
  return [earlier, later, BIFLOW_DIRECTION.initiator]
}

/**
 * The biflowDirection of a direction seen alone: TCP with SYN and no ACK opened the connection;
 * other TCP cannot tell (the flags are OR-ed: a SYN then ACKs look like a SYN-ACK then ACKs); an
 * ICMP echo reply answers the other side; any other flow seen alone was seen first.
 */
function loneDirection(b: FlowBatch, i: number): number {
  if (b.proto[i] === TCP) return (b.tcpFlags[i] & (TCP_SYN | TCP_ACK)) === TCP_SYN ? BIFLOW_DIRECTION.initiator : BIFLOW_DIRECTION.arbitrary
  return isEchoReply(b, i) ? BIFLOW_DIRECTION.reverseInitiator : BIFLOW_DIRECTION.initiator
}

/** Copies row `i` of `from` to row `j` of `to` (the same family): every column (a column added to FlowBatch belongs here too). */
function copyRow(from: FlowBatch, i: number, to: FlowBatch, j: number): void {
  to.ifindex[j] = from.ifindex[i]
  to.direction[j] = from.direction[i]
  to.proto[j] = from.proto[i]
  to.vlanId[j] = from.vlanId[i]
  to.innerVlanId[j] = from.innerVlanId[i]
  to.samplingInterval[j] = from.samplingInterval[i]
  to.sport[j] = from.sport[i]
  to.dport[j] = from.dport[i]
  to.packets[j] = from.packets[i]
  to.bytes[j] = from.bytes[i]
  to.startUs[j] = from.startUs[i]
  to.endUs[j] = from.endUs[i]
  to.tcpFlags[j] = from.tcpFlags[i]
  to.tos[j] = from.tos[i]
  to.endReason[j] = from.endReason[i]
  to.peerIfindex[j] = from.peerIfindex[i]
  to.minTtl[j] = from.minTtl[i]
  to.maxTtl[j] = from.maxTtl[i]
  to.fwdStatus[j] = from.fwdStatus[i]
  to.setRtt(j, from.rttClientUs(i), from.rttServerUs(i))
  copyDrops(from, i, to, j)
  // Byte by byte: a subarray per address would be an object per row.
  const len = from.addrLen
  for (let k = 0, f = i * len, t = j * len; k < len; k++, f++, t++) {
    to.src[t] = from.src[f]
    to.dst[t] = from.dst[f]
    to.nextHop[t] = from.nextHop[f]
  }
}

/** The drops of row `i` (meter attach --drops), if it has any; the drop columns are made only for a row that has. */
function copyDrops(from: FlowBatch, i: number, to: FlowBatch, j: number): void {
  const reason = from.drops?.reason[i]
  if (reason !== undefined) {
    const drops = to.dropsColumns()
    drops.packets[j] = from.drops!.packets[i]
    drops.bytes[j] = from.drops!.bytes[i]
    drops.reason[j] = reason
  } else if (to.drops) {
    to.drops.packets[j] = 0
    to.drops.bytes[j] = 0
    to.drops.reason[j] = undefined
  }
}

/** Row `j` of a reverse batch for a direction seen alone: the forward's key, nothing counted. */
function emptyReverse(from: FlowBatch, i: number, to: FlowBatch, j: number): void {
  copyRow(from, i, to, j)
  to.packets[j] = 0
  to.bytes[j] = 0
  to.startUs[j] = 0
  to.endUs[j] = 0
  to.tcpFlags[j] = 0
  to.tos[j] = 0
  to.minTtl[j] = 0
  to.maxTtl[j] = 0
  if (to.drops) {
    to.drops.packets[j] = 0
    to.drops.bytes[j] = 0
    to.drops.reason[j] = undefined
  }
}

/**
 * A batch of `from`'s meter set and family holding the rows of `held`, with room for twice its
 * capacity (up to MAX_HELD_ROWS), or for `more` rows besides.
 */
function grown(from: FlowBatch, held: FlowBatch | undefined, more?: number): FlowBatch {
  const rows = more === undefined ? Math.min(MAX_HELD_ROWS, Math.max(1024, 2 * (held?.capacity ?? 0))) : (held?.length ?? 0) + Math.max(more, from.length, 1)
  const into = new FlowBatch(from.family, rows)
  into.netns = from.netns
  into.observationDomainId = from.observationDomainId
  if (held) for (let i = 0; i < held.length; i++) copyRow(held, i, into, into.length++)
  return into
}

/**
 * The most rows held for one meter set and family before they are paired without waiting for the
 * end of the drain: a bound on the memory held (70 bytes an IPv4 row, 106 an IPv6 one: 4.6 and 7 MB;
 * the biflows made of them take twice that again, reused from one flush to the next).
 */
export const MAX_HELD_ROWS = 65_536

/**
 * Joins the uniflows of batches into biflows. One per daemon: the batch it returns (and its
 * reverse) is reused by the next call for the same family, as the drain reuses its batches.
 *
 * A drain hands its ended flows over in batches of a bounded size, in no order that keeps the two
 * directions of a connection together: `hold` copies each batch's rows, by meter set and family,
 * and `flush` pairs all that was held since (the daemon calls it at the end of each round of
 * drains), so that both directions meet whichever batches they came in. The two directions of a
 * connection may also end one round apart (their last packets, or their active timeouts, straddle
 * a drain): a direction left alone waits for the next flush, once, to meet its reverse there;
 * a final flush (the daemon stops) keeps nothing back.
 */
export class BiflowPairer {
  private readonly out: Partial<Record<Family, FlowBatch>> = {}
  /** Rows held until the next flush, by meter set, observation domain and family. */
  private readonly held = new Map<string, FlowBatch>()
  /** Directions a flush left alone, kept for the next one (they go out then, paired or not). */
  private carried = new Map<string, FlowBatch>()
  /** The directions the pair() under way left alone and kept back (made at the first one). */
  private carry: FlowBatch | undefined

  /** Copies the batch's rows, to be paired at the next flush with the others its meter set's drain ends. */
  hold(batch: FlowBatch, send: (biflows: FlowBatch) => void): void {
    if (batch.length === 0) return
    const key = `${batch.observationDomainId}|${batch.family}|${batch.netns}`
    let into = this.held.get(key)
    for (let i = 0; i < batch.length; i++) {
      if (!into || into.length === into.capacity) {
        if (into && into.capacity >= MAX_HELD_ROWS) {
          send(this.pair(into))
          into.length = 0
        } else into = grown(batch, into)
        this.held.set(key, into)
      }
      copyRow(batch, i, into, into.length++)
    }
  }

  /**
   * Pairs what was held since the last flush, with the directions the last flush left alone, and
   * hands the biflows to `send`, a batch per meter set and family. A direction held since the last
   * flush that is still alone is kept for the next one, unless `final`.
   */
  flush(send: (biflows: FlowBatch) => void, final = false): void {
    const carried = new Map<string, FlowBatch>()
    for (const key of new Set([...this.carried.keys(), ...this.held.keys()])) {
      const before = this.carried.get(key)
      const fresh = this.held.get(key)
      // The carried rows first, then the fresh ones: only those may wait another round.
      const rows = before && fresh ? grown(before, before, fresh.length) : (before ?? fresh!)
      if (before && fresh) for (let i = 0; i < fresh.length; i++) copyRow(fresh, i, rows, rows.length++)
      send(this.pair(rows, final || !fresh ? Infinity : rows.length - fresh.length))
      const kept = this.takeCarry()
      if (kept) carried.set(key, kept)
    }
    this.held.clear()
    this.carried = carried
  }

  /** The directions the last pair() kept back, and none kept from now. */
  private takeCarry(): FlowBatch | undefined {
    const kept = this.carry
    this.carry = undefined
    return kept
  }

  /**
   * The batch's uniflows as biflows: each row a forward direction, its reverse in `reverse` at
   * the same row, and its biflowDirection. The rows from `carryFrom` on that are left alone go to
   * `this.carry` instead (flush).
   */
  pair(batch: FlowBatch, carryFrom = Infinity): FlowBatch {
    const out = this.outFor(batch.family, batch.length)
    const reverse = out.reverse!
    const directions = out.biflowDirection!
    out.netns = reverse.netns = batch.netns
    out.observationDomainId = reverse.observationDomainId = batch.observationDomainId
    const partner = pairRows(batch)
    const done = new Uint8Array(batch.length)
    let n = 0
    for (let i = 0; i < batch.length; i++) {
      if (done[i]) continue
      done[i] = 1
      const j = partner[i]
      if (j < 0 && i >= carryFrom) {
        this.carry ??= grown(batch, undefined, batch.length - carryFrom)
        copyRow(batch, i, this.carry, this.carry.length++)
        continue
      }
      if (j < 0) {
        copyRow(batch, i, out, n)
        emptyReverse(batch, i, reverse, n)
        directions[n++] = loneDirection(batch, i)
        continue
      }
      done[j] = 1
      const [forward, back, direction] = orient(batch, i, j)
      copyRow(batch, forward, out, n)
      copyRow(batch, back, reverse, n)
      directions[n++] = direction
    }
    out.length = reverse.length = n
    return out
  }

  private outFor(family: Family, rows: number): FlowBatch {
    let out = this.out[family]
    if (!out || out.capacity < rows) {
      out = new FlowBatch(family, Math.max(rows, out ? out.capacity * 2 : 0, 1))
      out.reverse = new FlowBatch(family, out.capacity)
      out.biflowDirection = new Uint8Array(out.capacity)
      this.out[family] = out
    }
    return out
  }
}

/** One step of a multiplicative hash over 32-bit words. */
function mix(h: number, v: number): number {
  const x = Math.imul(h ^ v, 0x9e3779b1)
  return x ^ (x >>> 15)
}

/** A batch's address columns as 32-bit words (addresses are 4 or 16 bytes, at multiples of 4), for hashing and comparing. */
function words(col: Uint8Array): Int32Array {
  return new Int32Array(col.buffer, col.byteOffset, col.byteLength >> 2)
}

/**
 * Each row's partner row (-1: none): the same interface's opposite direction first, over the
 * whole batch; then, among the rows still alone, the peer interface's same direction. A hash
 * table of the rows by key (open addressing, rows of the same key in slots of their own), probed
 * with each row's reverse key: no object or string is made per row.
 */
function pairRows(b: FlowBatch): Int32Array {
  const n = b.length
  const w = b.addrLen >> 2
  const src = words(b.src)
  const dst = words(b.dst)
  const partner = new Int32Array(n).fill(-1)
  let size = 16
  while (size < 2 * n) size *= 2
  const mask = size - 1
  const slots = new Int32Array(size).fill(-1)
  /** The hash of a key: row i's protocol, VLANs and sampling interval with these interface, direction, ports and addresses. */
  const hash = (i: number, ifindex: number, direction: number, sport: number, dport: number, from: Int32Array, to: Int32Array) => {
    let h = mix(0x811c9dc5, b.proto[i] | (b.vlanId[i] << 8))
    h = mix(h, b.innerVlanId[i] | (b.samplingInterval[i] << 16))
    h = mix(h, ifindex)
    h = mix(h, direction)
    h = mix(h, (sport << 16) | dport)
    for (let k = i * w, end = k + w; k < end; k++) h = mix(h, from[k])
    for (let k = i * w, end = k + w; k < end; k++) h = mix(h, to[k])
    return h
  }
  for (let i = 0; i < n; i++) {
    let at = hash(i, b.ifindex[i], b.direction[i], b.sport[i], b.dport[i], src, dst) & mask
    while (slots[at] >= 0) at = (at + 1) & mask
    slots[at] = i
  }
  /** Whether row j is row i's reverse on this interface and direction, with these ports. */
  const reverseOf = (j: number, i: number, ifindex: number, direction: number, sport: number, dport: number) => {
    if (b.ifindex[j] !== ifindex || b.direction[j] !== direction || b.sport[j] !== sport || b.dport[j] !== dport) return false
    if (b.proto[j] !== b.proto[i] || b.vlanId[j] !== b.vlanId[i] || b.innerVlanId[j] !== b.innerVlanId[i] || b.samplingInterval[j] !== b.samplingInterval[i])
      return false
    for (let k = 0; k < w; k++) if (src[j * w + k] !== dst[i * w + k] || dst[j * w + k] !== src[i * w + k]) return false
    return true
  }
  /** Pairs row i with the first row still alone that is its reverse on this interface and direction (and whose own peer is `peerOfPartner`, unless 0). */
  const take = (i: number, ifindex: number, direction: number, sport: number, dport: number, peerOfPartner: number) => {
    // The reverse's key: swapped ports and addresses, so its hash takes row i's addresses the other way round.
    for (let at = hash(i, ifindex, direction, sport, dport, dst, src) & mask; slots[at] >= 0; at = (at + 1) & mask) {
      const j = slots[at]
      if (j === i || partner[j] >= 0 || (peerOfPartner && b.peerIfindex[j] !== peerOfPartner) || !reverseOf(j, i, ifindex, direction, sport, dport)) continue
      partner[i] = j
      partner[j] = i
      return
    }
  }
  for (let i = 0; i < n; i++) {
    const p = partner[i] < 0 ? reversePorts(b, i) : undefined
    if (p) take(i, b.ifindex[i], b.direction[i] ^ 1, p[0], p[1], 0)
  }
  for (let i = 0; i < n; i++) {
    const peer = b.peerIfindex[i]
    if (partner[i] >= 0 || peer === 0 || peer === b.ifindex[i]) continue
    const p = reversePorts(b, i)
    if (p) take(i, peer, b.direction[i], p[0], p[1], b.ifindex[i])
  }
  return partner
}
