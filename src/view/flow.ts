/**
 * A flow as flowctl shows it to people and programs: namespace and interface by name, addresses
 * as text, times as epoch milliseconds.
 */
import type {FlowCounters, FlowKey} from '../flow/record.js'
import {monotonicToEpochMs} from '../sys/clock.js'
import {isIcmp, protocolName, tcpFlagsText} from '../flow/protocols.js'

export interface Flow {
  netns: string
  interface: string
  ifindex: number
  direction: 'ingress' | 'egress'
  ipVersion: 4 | 6
  src: string
  dst: string
  sport: number
  dport: number
  proto: number
  protoName: string
  icmpType?: number
  icmpCode?: number
  vlanId: number
  /** QinQ: the inner (customer) tag; 0 when none. */
  innerVlanId: number
  /** The N of the 1-in-N packet sampling it was counted at (1: every packet); packets and bytes are as counted. */
  samplingInterval: number
  tos: number
  /** The other interface of the flow (out for ingress, in for egress); 0 when none. */
  peerIfindex: number
  /** The gateway towards dst; '' when directly connected. */
  nextHop: string
  /** IPFIX forwardingStatus (RFC 7270). */
  forwardingStatus: number
  minTtl: number
  maxTtl: number
  packets: number
  bytes: number
  tcpFlags: number
  tcpFlagsText: string
  /** Epoch milliseconds of the first and last packet. */
  start: number
  end: number
}

export function toFlow(netns: string, ifname: string | undefined, key: FlowKey, c: FlowCounters, clockOffsetNs: bigint): Flow {
  const flow: Flow = {
    netns,
    interface: ifname ?? `if${key.ifindex}`,
    ifindex: key.ifindex,
    direction: key.direction,
    ipVersion: key.family,
    src: key.src,
    dst: key.dst,
    sport: key.sport,
    dport: key.dport,
    proto: key.proto,
    protoName: protocolName(key.proto),
    vlanId: key.vlanId,
    innerVlanId: key.innerVlanId,
    samplingInterval: key.samplingInterval,
    tos: c.ipTos,
    peerIfindex: c.peerIfindex,
    nextHop: c.nextHop,
    forwardingStatus: c.fwdStatus,
    minTtl: c.minTtl,
    maxTtl: c.maxTtl,
    packets: c.packets,
    bytes: c.bytes,
    tcpFlags: c.tcpFlags,
    tcpFlagsText: tcpFlagsText(c.tcpFlags),
    start: Math.round(monotonicToEpochMs(c.firstSeenNs, clockOffsetNs)),
    end: Math.round(monotonicToEpochMs(c.lastSeenNs, clockOffsetNs)),
  }
  if (isIcmp(key.proto)) {
    flow.icmpType = key.dport >> 8
    flow.icmpCode = key.dport & 0xff
  }
  return flow
}

/** "addr:port", with IPv6 in brackets; ICMP shows type/code where the port would be. */
export function endpoint(flow: Flow, side: 'src' | 'dst'): string {
  const addr = side === 'src' ? flow.src : flow.dst
  const host = flow.ipVersion === 6 ? `[${addr}]` : addr
  if (flow.icmpType !== undefined) return side === 'dst' ? `${host}:${flow.icmpType}/${flow.icmpCode}` : host
  const port = side === 'src' ? flow.sport : flow.dport
  return `${host}:${port}`
}
