/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Layout 1 (flowctl 0.1): per-CPU preallocated flow maps. Frozen: never compiled into a meter
 * again, kept only so that `meter attach --force` can carry the counts of a meter set of this
 * layout over into a new one (src/bpf/migrate.ts reads it through layout-v1.generated.ts).
 */
#ifndef FLOWCTL_V1_H
#define FLOWCTL_V1_H

#define FLOWCTL_LAYOUT_VERSION 1

/* Values of flow_key.direction: the IPFIX flowDirection (IE 61) encoding. */
#define FLOW_DIR_INGRESS 0
#define FLOW_DIR_EGRESS 1

/*
 * One unidirectional flow seen on one interface in one direction. IPv4 and IPv6 flows live in
 * maps of their own: hashing the 20-byte IPv4 key costs about 10 ns less per packet than a key
 * wide enough for IPv6, and most traffic is IPv4. Both keys begin with the same 12 bytes.
 * Addresses and ports are network order, as they stand in the packet. For ICMP and ICMPv6, sport
 * is 0 and dport holds type and code (type in its first byte), the NetFlow convention.
 * Every byte takes part in the hash, so the program zeroes the whole key.
 */
struct flow_key4 {
	__u32 ifindex;
	__u8 direction;
	__u8 proto;
	__u16 vlan_id; /* host order; 0 when untagged; the outermost tag */
	__be16 sport;
	__be16 dport;
	__u8 src[4];
	__u8 dst[4];
};

struct flow_key6 {
	__u32 ifindex;
	__u8 direction;
	__u8 proto;
	__u16 vlan_id;
	__be16 sport;
	__be16 dport;
	__u8 src[16];
	__u8 dst[16];
};

/*
 * What one CPU counted for a flow (the flow maps are per-CPU: no atomics, no cache-line
 * contention between CPUs hitting the same flow). User space sums the CPUs.
 * Times are CLOCK_MONOTONIC nanoseconds (bpf_ktime_get_coarse_ns); 0 means this CPU never saw it.
 */
struct flow_counters {
	__u64 packets; /* wire packets: a GSO/GRO super-packet counts as its segments */
	__u64 bytes;   /* IP bytes (header + payload) on the wire, what IPFIX octetDeltaCount means */
	__u64 first_seen_ns;
	__u64 last_seen_ns;
	__u8 tcp_flags; /* OR of the TCP flags byte of every packet */
	__u8 ip_tos;    /* IPv4 TOS / IPv6 traffic class of the first packet this CPU saw */
	__u8 _pad[6];
};

/*
 * A flow the daemon has taken out of the flow maps and not yet exported (the `pending` map).
 * It lives in the kernel so that a daemon killed with SIGKILL loses nothing: the next one
 * reads it back. `drain_gen` is the drain that last merged into it (see struct drain_state).
 * The pending maps are keyed like the flow maps of their family.
 */
struct flow_record {
	__u64 packets;
	__u64 bytes;
	__u64 first_seen_ns;
	__u64 last_seen_ns;
	__u64 drain_gen;
	__u8 tcp_flags;
	__u8 ip_tos;
	__u8 _pad[6];
};

/* Packets and bytes that could not be recorded because the flow map was full (per-CPU). */
struct overflow_key {
	__u32 ifindex;
	__u32 direction;
};

struct overflow_counters {
	__u64 packets;
	__u64 bytes;
};

/*
 * The daemon's journal, one element. A drain writes gen and sets in_progress before it merges
 * anything into `pending`, and clears in_progress when the drained map is empty again. After a
 * crash, a daemon that finds in_progress set skips entries whose pending record already carries
 * that gen, so a half-finished merge is never counted twice.
 */
struct drain_state {
	__u64 gen;
	__u32 in_progress;
	__u32 _pad;
};

#endif
