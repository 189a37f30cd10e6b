/**
 * A flow as the meter keys and counts it, independent of how the kernel stores it: the address
 * family, the direction on the metered interface, the decoded key and the counters. `src/bpf`
 * decodes kernel bytes into these; `src/view` shows them; the daemon's hot path uses the typed
 * columns of FlowBatch and FlowCache instead, with the same rules.
 */

export type Family = 4 | 6
export const FAMILIES: readonly Family[] = [4, 6]

/** Which side of the metered interface the packets were seen on (IPFIX flowDirection 0 and 1). */
export type DirectionName = 'ingress' | 'egress'
/** flowDirection of egress (ingress is 0); the kernel's enum flow_direction has the same values (src/bpf/layout.ts checks). */
export const DIRECTION_EGRESS = 1

export function directionName(d: number): DirectionName {
  return d === DIRECTION_EGRESS ? 'egress' : 'ingress'
}

export function addressLength(family: Family): number {
  return family === 4 ? 4 : 16
}

export interface FlowKey {
  family: Family
  ifindex: number
  direction: DirectionName
  proto: number
  vlanId: number
  /** QinQ: the inner (customer) VLAN tag; 0 when there is none. */
  innerVlanId: number
  /** The N of the 1-in-N packet sampling its packets were counted at (1: every packet); counts are raw. */
  samplingInterval: number
  /** Host-order port; 0 for protocols without ports and for ICMP. */
  sport: number
  /** Host-order port; for ICMP and ICMPv6, type * 256 + code. */
  dport: number
  src: string
  dst: string
}

/** What was counted for a flow. */
export interface FlowCounters {
  packets: number
  bytes: number
  /** CLOCK_MONOTONIC ns; 0n when unknown. */
  firstSeenNs: bigint
  lastSeenNs: bigint
  tcpFlags: number
  /** The fields below are the first packet's (see firstPacketWins). */
  ipTos: number
  /** The other interface: out for an ingress flow, in for an egress flow; 0 when none. */
  peerIfindex: number
  /** IPFIX forwardingStatus (RFC 7270) as the meter found it when the flow began. */
  fwdStatus: number
  /** The gateway towards the destination, as text; '' when directly connected or unknown. */
  nextHop: string
  /** Lowest and highest TTL / hop limit of any packet. */
  minTtl: number
  maxTtl: number
}

export function emptyCounters(): FlowCounters {
  return {packets: 0, bytes: 0, firstSeenNs: 0n, lastSeenNs: 0n, tcpFlags: 0, ipTos: 0, peerIfindex: 0, fwdStatus: 0, nextHop: '', minTtl: 0, maxTtl: 0}
}

/**
 * What one source (a kernel map entry, a snapshot record) says about a flow, as the hot path
 * reads it: numbers only, reused from one flow to the next (src/bpf/layout.ts readFlowSample).
 */
export interface FlowSample {
  packets: number
  bytes: number
  /** CLOCK_MONOTONIC ns as doubles: exact to tens of ns for years of uptime. */
  firstNs: number
  lastNs: number
  tcpFlags: number
  tos: number
  peerIfindex: number
  minTtl: number
  maxTtl: number
  fwdStatus: number
  /** The next hop's bytes (as many as the family's addresses have) at `nextHopOffset` of `nextHopBytes`. */
  nextHopBytes: Uint8Array
  nextHopOffset: number
}

/**
 * Whether counts of a flow first seen at `fromFirst` carry the merged flow's first-packet fields
 * (TOS, interfaces, next hop, forwarding status) over what it holds from `intoFirst`: the
 * earliest first-seen wins; 0 is unknown. The one rule for every merge (FlowCache, the flow
 * objects of dump, the snapshot).
 */
export function firstPacketWins(intoFirst: number | bigint, fromFirst: number | bigint): boolean {
  return fromFirst !== 0 && fromFirst !== 0n && (intoFirst === 0 || intoFirst === 0n || fromFirst < intoFirst)
}

/*
 * Merging two TTL ranges, where 0/0 means "no packet yet": one function per end, so that the
 * drain's per-flow merge allocates nothing.
 */
export function minTtlOf(intoMin: number, intoMax: number, fromMin: number, fromMax: number): number {
  if (fromMax === 0 && fromMin === 0) return intoMin
  if (intoMax === 0 && intoMin === 0) return fromMin
  return Math.min(intoMin, fromMin)
}

export function maxTtlOf(intoMin: number, intoMax: number, fromMin: number, fromMax: number): number {
  if (fromMax === 0 && fromMin === 0) return intoMax
  if (intoMax === 0 && intoMin === 0) return fromMax
  return Math.max(intoMax, fromMax)
}

/**
 * Adds `from` into `into`: sums, latest last-seen, OR of flags, the TTL range, and the first
 * packet's fields from whichever was first seen earlier.
 */
export function mergeCounters(into: FlowCounters, from: FlowCounters): FlowCounters {
  into.packets += from.packets
  into.bytes += from.bytes
  if (firstPacketWins(into.firstSeenNs, from.firstSeenNs)) {
    into.firstSeenNs = from.firstSeenNs
    into.ipTos = from.ipTos
    into.peerIfindex = from.peerIfindex
    into.fwdStatus = from.fwdStatus
    into.nextHop = from.nextHop
  }
  if (from.lastSeenNs > into.lastSeenNs) into.lastSeenNs = from.lastSeenNs
  into.tcpFlags |= from.tcpFlags
  const [min, max] = [into.minTtl, into.maxTtl]
  into.minTtl = minTtlOf(min, max, from.minTtl, from.maxTtl)
  into.maxTtl = maxTtlOf(min, max, from.minTtl, from.maxTtl)
  return into
}
