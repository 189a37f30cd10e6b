/**
 * The one reviewed table from the kernel's drop reasons (enum skb_drop_reason, by name: the
 * numbers change between kernels, see src/bpf/btf.ts) to IPFIX forwardingStatus "dropped" codes
 * (IE 89, RFC 7270 section 4.12). docs/drop-reasons.md has the table and its sources; a test
 * checks that every name here is one the running kernel has.
 */

/** RFC 7270 section 4.12: status "dropped" (10 in the top two bits), with a reason. */
export const DROPPED = {
  unknown: 128,
  aclDeny: 129,
  aclDrop: 130,
  unroutable: 131,
  adjacency: 132,
  fragmentationAndDfSet: 133,
  badHeaderChecksum: 134,
  badTotalLength: 135,
  badHeaderLength: 136,
  badTtl: 137,
  policer: 138,
  wred: 139,
  rpf: 140,
  forUs: 141,
  badOutputInterface: 142,
  hardware: 143,
} as const

/** The name the flow log and `top` show for a drop whose TTL ran out (the kernel says IP_INHDR). */
export const TTL_EXPIRED = 'TTL_EXPIRED'

/** The name of a drop's reason: TTL_EXPIRED, the kernel's (`names`, from its BTF), or the number when the kernel's enum did not name it. */
export function dropReasonName(reason: number, ttlExpired: boolean, names: ReadonlyMap<number, string>): string {
  if (ttlExpired) return TTL_EXPIRED
  return names.get(reason) ?? `REASON_${reason}`
}

/** Kernel reason names (without SKB_DROP_REASON_) with a code of their own; all others are 128. */
export const DROP_REASON_CODES: Readonly<Record<string, number>> = {
  // A firewall rule said drop (nftables, iptables, a netfilter hook).
  NETFILTER_DROP: DROPPED.aclDeny,
  // No route, or a route that says unreachable / prohibit / blackhole.
  IP_INNOROUTES: DROPPED.unroutable,
  IP_OUTNOROUTES: DROPPED.unroutable,
  IP_INADDRERRORS: DROPPED.unroutable,
  IP_RPFILTER: DROPPED.rpf,
  // Larger than the next hop's MTU with DF set (IPv4), or any too-big packet (IPv6).
  PKT_TOO_BIG: DROPPED.fragmentationAndDfSet,
  IP_CSUM: DROPPED.badHeaderChecksum,
  // A malformed IP header (and, with the TTL flag, an expired TTL: see TTL_EXPIRED).
  IP_INHDR: DROPPED.badHeaderLength,
  // Queue disciplines: their queue was full or an AQM dropped early.
  QDISC_DROP: DROPPED.wred,
  QDISC_OVERLIMIT: DROPPED.policer,
  QDISC_CONGESTED: DROPPED.wred,
  // A tc filter or BPF program said drop.
  TC_INGRESS: DROPPED.aclDrop,
  TC_EGRESS: DROPPED.aclDrop,
  BPF_CGROUP_EGRESS: DROPPED.aclDrop,
  XDP: DROPPED.aclDrop,
  XFRM_POLICY: DROPPED.aclDeny,
  IP_INVALID_SOURCE: DROPPED.rpf,
}

/** The forwardingStatus of a drop: TTL_EXPIRED, a name in the table, or 128. */
export function forwardingStatusOfDrop(name: string): number {
  if (name === TTL_EXPIRED) return DROPPED.badTtl
  return DROP_REASON_CODES[name] ?? DROPPED.unknown
}
