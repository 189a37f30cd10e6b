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
export const DIRECTION_INGRESS = 0
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
  ipTos: number
}

export function emptyCounters(): FlowCounters {
  return {packets: 0, bytes: 0, firstSeenNs: 0n, lastSeenNs: 0n, tcpFlags: 0, ipTos: 0}
}

/**
 * Adds `from` into `into`: sums, earliest first-seen, latest last-seen, OR of flags. The TOS is
 * the first packet's: it goes with the earliest first-seen.
 */
export function mergeCounters(into: FlowCounters, from: FlowCounters): FlowCounters {
  into.packets += from.packets
  into.bytes += from.bytes
  if (from.firstSeenNs && (!into.firstSeenNs || from.firstSeenNs < into.firstSeenNs)) {
    into.firstSeenNs = from.firstSeenNs
    into.ipTos = from.ipTos
  }
  if (from.lastSeenNs > into.lastSeenNs) into.lastSeenNs = from.lastSeenNs
  into.tcpFlags |= from.tcpFlags
  return into
}
