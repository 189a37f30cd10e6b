/**
 * Biflows (RFC 5103): the two directions of a connection joined into one record, for the
 * collectors and flow logs that ask for them. The meter counts uniflows; the pairing is done on
 * the flows a drain ends together (one FlowBatch handed to the outputs), by a hash join, and only
 * for the outputs that want biflows: the others get the uniflows as they were.
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

/** The address bytes of row `i` of an address column as a string (a Map key). */
function addressKey(col: Uint8Array, i: number, len: number): string {
  let s = ''
  for (let k = i * len, end = k + len; k < end; k++) s += String.fromCharCode(col[k])
  return s
}

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

/** Copies row `i` of `from` to row `j` of `to` (the same family). */
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
  const len = from.addrLen
  to.src.set(from.src.subarray(i * len, (i + 1) * len), j * len)
  to.dst.set(from.dst.subarray(i * len, (i + 1) * len), j * len)
  to.nextHop.set(from.nextHop.subarray(i * len, (i + 1) * len), j * len)
}

/** Row `j` of a reverse batch for a direction seen alone: the forward's key, nothing counted. */
function emptyReverse(from: FlowBatch, i: number, to: FlowBatch, j: number): void {
  copyRow(from, i, to, j)
  to.packets[j] = 0
  to.bytes[j] = 0
  to.startUs[j] = 0
  to.endUs[j] = 0
  to.tcpFlags[j] = 0
  to.minTtl[j] = 0
  to.maxTtl[j] = 0
}

/**
 * Joins the uniflows of batches into biflows. One per daemon: the batch it returns (and its
 * reverse) is reused by the next call for the same family, as the drain reuses its batches.
 */
export class BiflowPairer {
  private readonly out: Partial<Record<Family, FlowBatch>> = {}

  /**
   * The batch's uniflows as biflows: each row a forward direction, its reverse in `reverse` at
   * the same row, and its biflowDirection.
   */
  pair(batch: FlowBatch): FlowBatch {
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

/**
 * Each row's partner row (-1: none): the same interface's opposite direction first, over the
 * whole batch; then, among the rows still alone, the peer interface's same direction.
 */
function pairRows(b: FlowBatch): Int32Array {
  const n = b.length
  const len = b.addrLen
  const partner = new Int32Array(n).fill(-1)
  // Rows by key; rows of the same key (a flow exported twice in one batch) chained through next.
  const head = new Map<string, number>()
  const next = new Int32Array(n).fill(-1)
  const src: string[] = new Array<string>(n)
  const dst: string[] = new Array<string>(n)
  const common = (i: number) => `${b.proto[i]}|${b.vlanId[i]}|${b.innerVlanId[i]}|${b.samplingInterval[i]}`
  const key = (i: number, ifindex: number, direction: number, sport: number, dport: number, from: string, to: string) =>
    `${common(i)}|${ifindex}|${direction}|${sport}|${dport}|${from}|${to}`
  for (let i = n - 1; i >= 0; i--) {
    src[i] = addressKey(b.src, i, len)
    dst[i] = addressKey(b.dst, i, len)
    const k = key(i, b.ifindex[i], b.direction[i], b.sport[i], b.dport[i], src[i], dst[i])
    const first = head.get(k)
    if (first !== undefined) next[i] = first
    head.set(k, i)
  }
  const take = (i: number, k: string, fits: (j: number) => boolean) => {
    for (let j = head.get(k) ?? -1; j >= 0; j = next[j]) {
      if (j === i || partner[j] >= 0 || !fits(j)) continue
      partner[i] = j
      partner[j] = i
      return
    }
  }
  const ports = new Array<[number, number] | undefined>(n)
  for (let i = 0; i < n; i++) ports[i] = reversePorts(b, i)
  for (let i = 0; i < n; i++) {
    const p = ports[i]
    if (partner[i] >= 0 || !p) continue
    take(i, key(i, b.ifindex[i], b.direction[i] ^ 1, p[0], p[1], dst[i], src[i]), () => true)
  }
  for (let i = 0; i < n; i++) {
    const p = ports[i]
    const peer = b.peerIfindex[i]
    if (partner[i] >= 0 || !p || peer === 0 || peer === b.ifindex[i]) continue
    take(i, key(i, peer, b.direction[i], p[0], p[1], dst[i], src[i]), (j) => b.peerIfindex[j] === b.ifindex[i])
  }
  return partner
}
