// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * flowctl's flow meter: a tc (clsact) classifier that counts packets and bytes per flow.
 *
 * It never changes a packet or its fate. Every path returns TC_ACT_UNSPEC, which in direct-action
 * mode means "no verdict": the packet goes on to the next filter of the chain and then on its way,
 * exactly as if the meter were not there. Malformed packets are simply not counted.
 *
 * Maps (pinned by user space under <pin root>/<namespace>/maps/; layouts in flowctl.h):
 *   flows4, flows6  ARRAY_OF_MAPS[1]: the flow hash the program writes now, per address family
 *                   (see FLOW_MAPS below for how flows are taken out).
 *   overflow        packets and bytes that found the flow map full, per interface and direction.
 *   skip_socks      socket cookies whose packets are not metered (the daemon's own IPFIX sockets).
 *   frags           the ports of datagrams in fragments, and whether the sampler took them, from
 *                   their first fragment.
 *   settings        what user space sets: the sampling interval (see SAMPLING below).
 *   meter_stats     per-CPU counters: flows created, packets the sampler skipped, packets that
 *                   found the flow map full.
 *   handshakes      the times of TCP handshake packets (SYN, SYN+ACK, the first ACK), which the
 *                   daemon pairs into round-trip times (see HANDSHAKES below).
 *   pending, drain_state   the daemon's snapshot and journal, never touched here.
 *   meta            the layout version and capacity of the meter set.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include <stddef.h>

#include "flowctl.h"
#include "packet.h"

#ifndef FLOWCTL_CAPACITY
#define FLOWCTL_CAPACITY 1048576
#endif
/* The snapshot's chunk size: the header's, or that of the meter set being reloaded (an older
 * set keeps the size it was made with). */
#ifndef FLOWCTL_PENDING_CHUNK_BYTES
#define FLOWCTL_PENDING_CHUNK_BYTES PENDING_CHUNK_BYTES
#endif
/* The daemon holds at most twice the capacity per family (see src/daemon/drain.ts); its snapshot
 * takes this many chunks per slot, and the pending map has room for two slots. */
#define RECORDS_PER_CHUNK(rec)                                                                     \
	((FLOWCTL_PENDING_CHUNK_BYTES - sizeof(struct pending_chunk_header)) / sizeof(rec))
#define CHUNKS_FOR(rec)                                                                            \
	((2ULL * FLOWCTL_CAPACITY + RECORDS_PER_CHUNK(rec) - 1) / RECORDS_PER_CHUNK(rec))
#define PENDING_CHUNKS (2 * (CHUNKS_FOR(struct pending_flow4) + CHUNKS_FOR(struct pending_flow6)))

#define AF_INET_ 2
#define AF_INET6_ 10

/* IPv6 extension headers walked to find the transport header. */
#define NEXTHDR_HOP 0
#define NEXTHDR_ROUTING 43
#define NEXTHDR_FRAGMENT 44
#define NEXTHDR_AUTH 51
#define NEXTHDR_DEST 60
#define MAX_IPV6_EXT_HEADERS 6
#define MAX_VLAN_TAGS 2

/* A header offset never exceeds this; the mask gives the verifier a bound for packet pointers. */
#define MAX_HEADER_OFFSET 0x3ff
/* How much of a packet a pull brings into the linear part: every header we read, with room. */
#define MAX_PULL 256

/*
 * The flow maps of one address family. `flows<F>` is a one-slot ARRAY_OF_MAPS holding the hash
 * the program writes now. User space takes flows out by putting a fresh, empty hash in the slot:
 * that update returns only after every program that might still hold the old one has finished
 * (synchronize_rcu), so the old hash can then be read at leisure and dropped whole, without losing
 * a packet and without deleting entries one by one. The hashes are allocated per flow
 * (BPF_F_NO_PREALLOC) and shared by every CPU: memory follows the flows present, not capacity x CPUs.
 */
#define FLOW_MAPS(fam)                                                                             \
	struct flow_map##fam {                                                                     \
		__uint(type, BPF_MAP_TYPE_HASH);                                                   \
		__uint(max_entries, FLOWCTL_CAPACITY);                                             \
		__uint(map_flags, BPF_F_NO_PREALLOC);                                              \
		__type(key, struct flow_key##fam);                                                 \
		__type(value, struct flow_value##fam);                                             \
	};                                                                                         \
	struct flow_map##fam flows##fam##_live SEC(".maps");                                       \
	struct {                                                                                   \
		__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);                                          \
		__uint(max_entries, 1);                                                            \
		__type(key, __u32);                                                                \
		__array(values, struct flow_map##fam);                                             \
	} flows##fam SEC(".maps") = {                                                              \
	        .values = {[0] = &flows##fam##_live},                                              \
	};

FLOW_MAPS(4)
FLOW_MAPS(6)

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096); /* interface-directions per namespace */
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct overflow_key);
	__type(value, struct overflow_value);
} overflow SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 256);
	__type(key, __u64);
	__type(value, __u8);
} skip_socks SEC(".maps");

/* Least recently used goes first: a datagram whose last fragment never came is forgotten. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, FRAG_MAP_ENTRIES);
	__type(key, struct frag_key);
	__type(value, struct frag_ports);
} frags SEC(".maps");

/* Written by user space (`meter attach --sampling`), read once per packet: an ARRAY lookup of a
 * constant key, which the verifier inlines into a bounds check and an address. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct meter_settings);
} settings SEC(".maps");

/* One element per CPU (40 bytes each: 5 KiB on 128 CPUs), so that counting a packet the sampler
 * skipped costs a plain add to a cache line no other CPU writes; the lookup is inlined too. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct meter_stats);
} meter_stats SEC(".maps");

#ifndef FLOWCTL_NO_RTT
/* Least recently used goes first: a handshake the daemon never completes is forgotten. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, HANDSHAKE_MAP_ENTRIES);
	__type(key, struct handshake_key);
	__type(value, struct handshake_times);
} handshakes SEC(".maps");
#endif

/* The daemon's: never touched by the program (see flowctl.h). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, PENDING_CHUNKS);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, __u32);
	__type(value, __u8[FLOWCTL_PENDING_CHUNK_BYTES]);
} pending SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct drain_state);
} drain_state SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct meter_meta);
} meta SEC(".maps");

/* This CPU's counters. Never NULL for key 0 of an array, but the verifier wants the check. */
static __always_inline struct meter_stats *cpu_stats(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&meter_stats, &zero);
}

/* Runs only when the flow map is full, so its own hash lookup costs nothing in normal operation. */
static __always_inline void count_overflow(__u32 ifindex, __u8 direction, __u64 packets,
                                           __u64 bytes)
{
	struct overflow_key key = {.ifindex = ifindex, .direction = direction};
	struct overflow_value *o = bpf_map_lookup_elem(&overflow, &key);
	struct meter_stats *stats = cpu_stats();

	if (stats)
		stats->packets_overflowed += packets;

	if (!o) {
		struct overflow_value init = {.packets = packets, .bytes = bytes};

		if (!bpf_map_update_elem(&overflow, &key, &init, BPF_NOEXIST))
			return;
		o = bpf_map_lookup_elem(&overflow, &key);
		if (!o)
			return;
	}
	__sync_fetch_and_add(&o->packets, packets);
	__sync_fetch_and_add(&o->bytes, bytes);
}

/* What the parser learned beyond the key. */
struct packet_info {
	__u32 l3_off;
	__u32 l4_off;
	__u32 l4_hdr_len;
	__u32 ip_len;
	__u32 frag_id;
	__u8 ip_version;
	__u8 tos;
	__u8 ttl;
	__u8 tcp_flags;
	__u8 frag; /* FRAG_FIRST or FRAG_LATER for a fragment of a larger datagram, else 0 */
};

enum { FRAG_FIRST = 1, FRAG_LATER = 2 };

enum parse_result {
	PARSE_OK,
	PARSE_NOT_IP,    /* or malformed: not a flow */
	PARSE_NEED_PULL, /* headers lie beyond the linear data: pull them in and parse again */
};

/*
 * Headers are read straight from the packet. The verifier accepts a packet read only after a
 * comparison of the read's end with data_end, so each header gets a pointer and that check.
 * Offsets are masked to give the verifier an upper bound on the variable part of the pointer.
 * When the check fails on a packet whose data continues in paged fragments, the caller pulls
 * the headers into the linear part and parses again; on a packet that really ends there, the
 * header is missing and `missing` says what to do.
 */
#define HEADER(T, var, offset, missing)                                                            \
	T *var = data + ((offset)&MAX_HEADER_OFFSET);                                              \
	if ((void *)(var + 1) > data_end) {                                                        \
		if (may_pull && skb->len > (__u32)(data_end - data))                               \
			return PARSE_NEED_PULL;                                                    \
		missing;                                                                           \
	}

static __always_inline int is_ipv6_ext_header(__u8 nexthdr)
{
	return nexthdr == NEXTHDR_HOP || nexthdr == NEXTHDR_ROUTING || nexthdr == NEXTHDR_DEST ||
	       nexthdr == NEXTHDR_FRAGMENT || nexthdr == NEXTHDR_AUTH;
}

/* What ipv6_ext_headers() found, packed in its return value (see there). */
#define EXT_OFF_MASK 0xffffULL     /* the transport header's offset (< 14 + 8 + 40 + 6 * 2048) */
#define EXT_NEXTHDR_SHIFT 16       /* 8 bits: the header after the last one walked */
#define EXT_NO_L4 (1ULL << 24)     /* no transport header to read: a later fragment, or cut short */
#define EXT_FRAG_SHIFT 25          /* 2 bits: FRAG_FIRST, FRAG_LATER or 0 */
#define EXT_NEED_PULL (1ULL << 27) /* as PARSE_NEED_PULL */
                                   /* bits 32-63: the fragment header's identification */

/*
 * Walks the IPv6 extension headers from `off`, where one of type `nexthdr` begins, to the
 * transport header. A fixed bound on the walk: the verifier needs one, and a longer chain is
 * counted under its last header reached, with no ports.
 *
 * A global function (not static, never inlined), so that the verifier checks it once, on its own,
 * instead of carrying each of its paths (each header type at each of its steps, fragment or not)
 * through the rest of the program with values it tracks exactly, where few ever merged: inlined,
 * the ingress program took 724 k instructions processed for 1.9 k, 0.9 s of kernel time to load.
 * It returns what it found packed in one scalar, not through memory, so the caller's verifier
 * state gets unknown values after the call on every kernel. Only packets with extension headers
 * call it: a call on every packet's path cost about 10 ns a packet here (BPF_PROG_TEST_RUN).
 */
__noinline __u64 ipv6_ext_headers(struct __sk_buff *skb, __u32 off, __u32 nexthdr, int may_pull)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	__u64 no_l4 = 0;
	__u64 frag = 0;
	__u64 frag_id = 0;

#pragma unroll
	for (int i = 0; i < MAX_IPV6_EXT_HEADERS; i++) {
		if (!is_ipv6_ext_header(nexthdr))
			break;
		struct ipv6_opt_ *opt = data + (off & MAX_HEADER_OFFSET);

		if ((void *)(opt + 1) > data_end) {
			if (may_pull && skb->len > (__u32)(data_end - data))
				return EXT_NEED_PULL;
			no_l4 = EXT_NO_L4;
			break;
		}
		if (nexthdr == NEXTHDR_FRAGMENT) {
			__u16 fo = bpf_ntohs(opt->frag_off);

			if (fo & 0xfff8) {
				no_l4 = EXT_NO_L4; /* not the first fragment */
				frag = FRAG_LATER;
			} else if (fo & 1) {
				frag = FRAG_FIRST;
			}
			frag_id = bpf_ntohl(opt->frag_id);
			off += 8;
		} else if (nexthdr == NEXTHDR_AUTH) {
			off += (opt->hdrlen + 2) * 4;
		} else {
			off += (opt->hdrlen + 1) * 8;
		}
		nexthdr = opt->nexthdr;
	}
	return (off & EXT_OFF_MASK) | (__u64)(nexthdr & 0xff) << EXT_NEXTHDR_SHIFT | no_l4 |
	       frag << EXT_FRAG_SHIFT | frag_id << 32;
}

/* Parses into an IPv6-shaped key (an IPv4 address takes the first 4 bytes of each address). */
static __always_inline int parse(struct __sk_buff *skb, struct flow_key6 *key,
                                 struct packet_info *pi, int may_pull)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	__u32 off = sizeof(struct ethhdr_);
	__u16 proto;
	int have_l4 = 1;
	int tags = 0;

	HEADER(struct ethhdr_, eth, 0, return PARSE_NOT_IP);
	proto = bpf_ntohs(eth->proto);

	/* An offloaded tag is outside the packet, in skb->vlan_tci; it is the outermost one. The
	 * next tag (in the packet) is QinQ's inner, customer tag. */
	if (skb->vlan_present) {
		key->vlan_id = skb->vlan_tci & 0x0fff;
		tags = 1;
	}
#pragma unroll
	for (int i = 0; i < MAX_VLAN_TAGS; i++) {
		if (proto != ETH_P_8021Q_ && proto != ETH_P_8021AD_)
			break;
		HEADER(struct vlanhdr_, vlan, off, return PARSE_NOT_IP);
		if (tags == 0)
			key->vlan_id = bpf_ntohs(vlan->tci) & 0x0fff;
		else if (tags == 1)
			key->inner_vlan_id = bpf_ntohs(vlan->tci) & 0x0fff;
		tags++;
		proto = bpf_ntohs(vlan->proto);
		off += sizeof(*vlan);
	}
	pi->l3_off = off;

	if (proto == ETH_P_IP_) {
		HEADER(struct iphdr_, ip, off, return PARSE_NOT_IP);
		__u32 ihl = (ip->ver_ihl & 0x0f) * 4;
		__u16 frag_off = bpf_ntohs(ip->frag_off);

		if ((ip->ver_ihl >> 4) != 4 || ihl < sizeof(*ip))
			return PARSE_NOT_IP;
		pi->ip_version = 4;
		key->proto = ip->protocol;
		*(__u32 *)key->src = *(__u32 *)ip->saddr;
		*(__u32 *)key->dst = *(__u32 *)ip->daddr;
		pi->tos = ip->tos;
		pi->ttl = ip->ttl;
		pi->ip_len = bpf_ntohs(ip->tot_len);
		/* A fragment other than the first carries no transport header: what stands where
		 * the ports would be is payload. The first one (offset 0, more fragments) has it. */
		if (frag_off & 0x1fff) {
			have_l4 = 0;
			pi->frag = FRAG_LATER;
		} else if (frag_off & 0x2000) {
			pi->frag = FRAG_FIRST;
		}
		pi->frag_id = bpf_ntohs(ip->id);
		off += ihl;
	} else if (proto == ETH_P_IPV6_) {
		HEADER(struct ipv6hdr_, ip6, off, return PARSE_NOT_IP);
		__u32 vtf = bpf_ntohl(ip6->ver_tc_flow);
		__u8 nexthdr = ip6->nexthdr;

		if ((vtf >> 28) != 6)
			return PARSE_NOT_IP;
		pi->ip_version = 6;
		__builtin_memcpy(key->src, ip6->saddr, 16);
		__builtin_memcpy(key->dst, ip6->daddr, 16);
		pi->tos = (vtf >> 20) & 0xff;
		pi->ttl = ip6->hop_limit;
		pi->ip_len = bpf_ntohs(ip6->payload_len) + sizeof(*ip6);
		off += sizeof(*ip6);

		if (is_ipv6_ext_header(nexthdr)) {
			__u64 walk = ipv6_ext_headers(skb, off, nexthdr, may_pull);

			if (walk & EXT_NEED_PULL)
				return PARSE_NEED_PULL;
			off = walk & EXT_OFF_MASK;
			nexthdr = walk >> EXT_NEXTHDR_SHIFT;
			if (walk & EXT_NO_L4)
				have_l4 = 0;
			pi->frag = (walk >> EXT_FRAG_SHIFT) & 3;
			pi->frag_id = walk >> 32;
		}
		key->proto = nexthdr;
	} else {
		return PARSE_NOT_IP;
	}
	pi->l4_off = off;
	if (!have_l4)
		return PARSE_OK;

	/* A transport header cut short in a packet that ends there: counted, without ports. */
	switch (key->proto) {
	case IPPROTO_TCP: {
		HEADER(struct tcphdr_, tcp, off, return PARSE_OK);
		key->sport = tcp->sport;
		key->dport = tcp->dport;
		pi->tcp_flags = tcp->flags;
		pi->l4_hdr_len = (tcp->doff_res >> 4) * 4;
		break;
	}
	case IPPROTO_UDP:
	case IPPROTO_UDPLITE_:
	case IPPROTO_SCTP_: {
		HEADER(struct ports_, ports, off, return PARSE_OK);
		key->sport = ports->sport;
		key->dport = ports->dport;
		pi->l4_hdr_len = key->proto == IPPROTO_SCTP_ ? 12 : 8;
		break;
	}
	case IPPROTO_ICMP:
	case IPPROTO_ICMPV6_: {
		HEADER(struct ports_, icmp, off, return PARSE_OK);
		key->dport = icmp->sport; /* type and code, in this order */
		pi->l4_hdr_len = 8;
		break;
	}
	}
	return PARSE_OK;
}

/*
 * The ports of fragmented datagrams, and their sampling decision: the first fragment leaves both
 * here, the later ones (no transport header) take them, so a datagram counts under one flow and
 * is sampled whole. `rate` is the N this packet is counted at, 0 when the sampler skipped it; a
 * later fragment gets its datagram's. A later fragment that arrives first, or whose first
 * fragment was lost, keeps ports 0 and its own draw.
 */
static __always_inline void fragment_ports(struct flow_key6 *key, const struct packet_info *pi,
                                           __u16 *rate)
{
	struct frag_key fk = {};

	__builtin_memcpy(fk.src, key->src, 16);
	__builtin_memcpy(fk.dst, key->dst, 16);
	fk.id = pi->frag_id;
	fk.proto = key->proto;
	fk.family = pi->ip_version;
	if (pi->frag == FRAG_FIRST) {
		struct frag_ports ports = {
		        .sport = key->sport,
		        .dport = key->dport,
		        .sampling_interval = *rate,
		};

		bpf_map_update_elem(&frags, &fk, &ports, BPF_ANY);
		return;
	}
	struct frag_ports *known = bpf_map_lookup_elem(&frags, &fk);

	if (known) {
		key->sport = known->sport;
		key->dport = known->dport;
		*rate = known->sampling_interval;
	}
}

/*
 * Where the flow goes on from here, asked of the kernel's routing table once, when the flow is
 * created (never per packet). At ingress: the interface it leaves by, the gateway, and whether
 * it is forwarded at all. At egress: the gateway; the interface it came in by is the skb's.
 */
static __always_inline void route(struct __sk_buff *skb, const struct flow_key6 *key,
                                  const struct packet_info *pi, __u8 direction,
                                  struct flow_value6 *v)
{
	struct bpf_fib_lookup fib = {};
	int rc;

	fib.family = pi->ip_version == 4 ? AF_INET_ : AF_INET6_;
	fib.l4_protocol = key->proto;
	fib.sport = key->sport;
	fib.dport = key->dport;
	fib.ifindex = key->ifindex; /* tot_len 0: no MTU check */
	if (pi->ip_version == 4) {
		fib.tos = pi->tos;
		__builtin_memcpy(&fib.ipv4_src, key->src, 4);
		__builtin_memcpy(&fib.ipv4_dst, key->dst, 4);
	} else {
		__builtin_memcpy(fib.ipv6_src, key->src, 16);
		__builtin_memcpy(fib.ipv6_dst, key->dst, 16);
	}

	if (direction == FLOW_DIR_EGRESS) {
		v->peer_ifindex = skb->ingress_ifindex; /* 0: sent by this host */
		v->fwd_status = v->peer_ifindex ? FWD_STATUS_FORWARDED : FWD_STATUS_UNKNOWN;
		rc = bpf_fib_lookup(skb, &fib, sizeof(fib), BPF_FIB_LOOKUP_OUTPUT);
	} else {
		rc = bpf_fib_lookup(skb, &fib, sizeof(fib), 0);
		/* With forwarding off on this interface the kernel answers before looking at
		 * routes: ask again as output, which tells traffic for this host from the rest. */
		if (rc == BPF_FIB_LKUP_RET_FWD_DISABLED) {
			fib.ifindex = key->ifindex;
			rc = bpf_fib_lookup(skb, &fib, sizeof(fib), BPF_FIB_LOOKUP_OUTPUT);
			v->fwd_status = rc == BPF_FIB_LKUP_RET_NOT_FWDED ? FWD_STATUS_FOR_US
			                                                 : FWD_STATUS_DROPPED;
			return;
		}
		switch (rc) {
		case BPF_FIB_LKUP_RET_SUCCESS:
		case BPF_FIB_LKUP_RET_NO_NEIGH:
			v->peer_ifindex = fib.ifindex;
			v->fwd_status = FWD_STATUS_FORWARDED;
			break;
		case BPF_FIB_LKUP_RET_NOT_FWDED:
			v->fwd_status = FWD_STATUS_FOR_US; /* local, broadcast or multicast */
			return;
		case BPF_FIB_LKUP_RET_BLACKHOLE:
		case BPF_FIB_LKUP_RET_UNREACHABLE:
		case BPF_FIB_LKUP_RET_PROHIBIT:
			v->fwd_status = FWD_STATUS_DROP_UNROUTABLE;
			return;
		default:
			return;
		}
	}
	if (rc != BPF_FIB_LKUP_RET_SUCCESS && rc != BPF_FIB_LKUP_RET_NO_NEIGH)
		return;
	/* The lookup leaves the destination in place for a directly connected one and puts the
	 * gateway there otherwise. */
	__u32 dst[4];

	__builtin_memcpy(dst, key->dst, 16);
	if (pi->ip_version == 4) {
		if (fib.ipv4_dst != dst[0])
			__builtin_memcpy(v->next_hop, &fib.ipv4_dst, 4);
	} else if (fib.ipv6_dst[0] != dst[0] || fib.ipv6_dst[1] != dst[1] ||
	           fib.ipv6_dst[2] != dst[2] || fib.ipv6_dst[3] != dst[3]) {
		__builtin_memcpy(v->next_hop, fib.ipv6_dst, 16);
	}
}

#define TCP_SYN 0x02
#define TCP_ACK 0x10

/*
 * HANDSHAKES. The round trips of a TCP connection as the router sees them: from the client's SYN
 * to the server's SYN+ACK (the server's side), and from that to the client's first ACK (the
 * client's side). The meter writes the time of each into `handshakes` under the packet's flow key;
 * the daemon pairs the two directions. Only handshake packets write it: a packet with SYN (in a new
 * flow, at the precise time the flow's creation reads anyway; in an existing one, a retransmitted
 * SYN or SYN+ACK, which restarts the timing, at a fresh reading of that clock), and the first ACK
 * of a flow that had SYN without ACK (found where the flow's TCP flags change, or where a flow is
 * created by a bare ACK: a handshake whose SYN the previous drain took out). Every other packet of
 * a known flow pays one test of its flags; a new flow made by a bare ACK pays a lookup. Built
 * without any of it with -DFLOWCTL_NO_RTT (the bench's side-by-side). A connection that reuses the
 * ports of one whose flow is still in the live map gets its SYN timed but not its ACK (the flow
 * has ACK already): no round trip for it.
 */
static __always_inline void handshake_key_of(struct handshake_key *hk, const struct flow_key6 *key6,
                                             int ipv6)
{
	__builtin_memcpy(&hk->flow, key6, sizeof(*key6));
	hk->family = ipv6 ? 6 : 4;
}

/* A TCP segment without payload, as the initiator's first ACK is: a flow created by one may be
 * the rest of a handshake whose SYN the previous drain took out. (Only these look the handshake
 * up on a new flow's path: the first packet of a flow that carries data never completes one.) */
static __always_inline int is_bare_segment(const struct packet_info *pi)
{
	return pi->ip_len == pi->l4_off - pi->l3_off + pi->l4_hdr_len;
}

static __always_inline void time_syn(const struct flow_key6 *key6, int ipv6, __u8 flags, __u64 now)
{
#ifndef FLOWCTL_NO_RTT
	struct handshake_key hk;
	struct handshake_times t = {
	        .syn_ns = now,
	        .role = flags & TCP_ACK ? HANDSHAKE_RESPONDER : HANDSHAKE_INITIATOR,
	};

	handshake_key_of(&hk, key6, ipv6);
	bpf_map_update_elem(&handshakes, &hk, &t, BPF_ANY);
#endif
}

static __always_inline void time_ack(const struct flow_key6 *key6, int ipv6, __u64 now)
{
#ifndef FLOWCTL_NO_RTT
	struct handshake_key hk;

	handshake_key_of(&hk, key6, ipv6);
	struct handshake_times *t = bpf_map_lookup_elem(&handshakes, &hk);

	if (t && t->role == HANDSHAKE_INITIATOR && !t->ack_ns)
		t->ack_ns = now;
#endif
}

/*
 * Adds one packet (or one GSO super-packet's segments) to its flow in the live map of `outer`.
 * The value is one per flow, shared by every CPU: packets and bytes are added atomically; the
 * rest is written only when it changes, so two CPUs counting one flow rarely write the same cache
 * line (measured: 1.5x the cost of a lone CPU, against 3.4x writing every field each time).
 */
static __always_inline void count(struct __sk_buff *skb, void *outer, const void *key,
                                  const struct flow_key6 *key6, const struct packet_info *pi,
                                  __u8 direction, __u64 packets, __u64 bytes, int ipv6)
{
	__u32 zero = 0;
	void *flow_map = bpf_map_lookup_elem(outer, &zero);

	if (!flow_map)
		return;
	/* flow_value4 is flow_value6 with a shorter next_hop: the fields read here coincide. */
	struct flow_value6 *v = bpf_map_lookup_elem(flow_map, key);

	if (!v) {
		/* The precise clock, once per flow: flowStart is exact, and it costs ~20 ns. */
		__u64 now = bpf_ktime_get_ns();
		struct flow_value6 init = {
		        .packets = packets,
		        .bytes = bytes,
		        .first_seen_ns = now,
		        .last_seen_ns = now,
		        .tcp_flags = pi->tcp_flags,
		        .tos = pi->tos,
		        .min_ttl = pi->ttl,
		        .max_ttl = pi->ttl,
		};

		if (pi->tcp_flags & TCP_SYN)
			time_syn(key6, ipv6, pi->tcp_flags, now);
		else if (pi->tcp_flags == TCP_ACK && is_bare_segment(pi))
			time_ack(key6, ipv6, now);
		route(skb, key6, pi, direction, &init);
		if (!bpf_map_update_elem(flow_map, key, &init, BPF_NOEXIST)) {
			/* Counted only here, after the insert: the daemon reads an unchanged count as
			 * "the live map got no flow since", and skips taking it out. */
			struct meter_stats *stats = cpu_stats();

			if (stats) {
				if (ipv6)
					stats->flows6_created++;
				else
					stats->flows4_created++;
			}
			return;
		}
		/* Another CPU created it first (count into it), or the map is full. */
		v = bpf_map_lookup_elem(flow_map, key);
		if (!v) {
			count_overflow(key6->ifindex, direction, packets, bytes);
			return;
		}
	}
	__sync_fetch_and_add(&v->packets, packets);
	__sync_fetch_and_add(&v->bytes, bytes);
	/* The coarse clock (1 ns instead of 20, one jiffy of resolution); it may lag first_seen,
	 * which came from the precise one, so it only ever moves last_seen forward. */
	__u64 now = bpf_ktime_get_coarse_ns();

	if (now > v->last_seen_ns)
		v->last_seen_ns = now;
	if ((v->tcp_flags | pi->tcp_flags) != v->tcp_flags) {
		/* The initiator's first ACK: its flow had SYN and no ACK until now. */
		if ((v->tcp_flags & (TCP_SYN | TCP_ACK)) == TCP_SYN &&
		    (pi->tcp_flags & (TCP_SYN | TCP_ACK)) == TCP_ACK)
			time_ack(key6, ipv6, bpf_ktime_get_ns());
		__sync_fetch_and_or(&v->tcp_flags, (__u32)pi->tcp_flags);
	}
	/* A SYN in a known flow: retransmitted; the timing starts again from it. */
	if (pi->tcp_flags & TCP_SYN)
		time_syn(key6, ipv6, pi->tcp_flags, bpf_ktime_get_ns());
	if (pi->ttl < v->min_ttl)
		v->min_ttl = pi->ttl;
	if (pi->ttl > v->max_ttl)
		v->max_ttl = pi->ttl;
}

/*
 * SAMPLING. With a sampling interval N > 1 in `settings`, a packet is counted with probability
 * 1/N, decided at random before the parser and the flow lookup: a packet not sampled costs the
 * settings lookup, a random number, a glance at its IP header (below) and an add to this CPU's
 * packets_not_sampled, and never reaches a flow map. A sampled packet is counted raw (its own
 * packets and bytes: collectors scale by N) in a flow whose key carries N, so that each record
 * says the rate it was taken at, and a change of N starts new records instead of mixing two
 * rates in one (what was counted at the old rate stays in its records, whole).
 *
 * The draw: ((u64)random32 * N) >> 32 is 0 with probability ceil(2^32 / N) / 2^32, within 2^-32
 * of 1/N (as close as random32 % N == 0 is), for a multiply and a shift instead of the division
 * a modulo compiles to. random32 comes from sampler_random(), not from bpf_get_prandom_u32(),
 * whose call alone costs half an empty program here (measured: 18 ns in BPF_PROG_TEST_RUN, where
 * an empty program takes 35 ns on a loaded machine, and an inlined array lookup 1 ns).
 *
 * Fragments are sampled per datagram: the first fragment's draw decides for the whole datagram
 * and is kept in `frags` beside its ports, and the later fragments follow it (fragment_ports).
 * A datagram is counted whole or not at all, and its later fragments always under its ports,
 * never as a flow with ports 0 beside a skipped first fragment. So a packet the draw skipped
 * that may be a fragment (IPv4 with MF or an offset; IPv6 with any extension header, since the
 * fragment header may follow others) is parsed anyway, to leave or to follow its datagram's
 * decision. Either way every packet is counted with probability 1/N: the estimate is unbiased.
 */
enum glance_result {
	GLANCE_NOT_IP,       /* not IPv4 or IPv6 (by its EtherType): never metered */
	GLANCE_UNFRAGMENTED, /* an IP packet that is no fragment: done with it */
	GLANCE_LOOK_CLOSER,  /* may be a fragment, or its headers lie beyond the linear data */
};

/* What a packet the sampler skipped is, from fixed places of its headers: no parse. The offsets
 * are masked as in HEADER: the verifier wants a bound on the part of a packet pointer that
 * varies (0, 1 or 2 VLAN tags here), or it refuses the read. */
static __always_inline int glance(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ethhdr_ *eth = data;
	__u32 off = sizeof(*eth);
	__be16 proto;

	if ((void *)(eth + 1) > data_end)
		return GLANCE_LOOK_CLOSER;
	proto = eth->proto;
#pragma unroll
	for (int i = 0; i < MAX_VLAN_TAGS; i++) {
		if (proto != bpf_htons(ETH_P_8021Q_) && proto != bpf_htons(ETH_P_8021AD_))
			break;
		struct vlanhdr_ *vlan = data + (off & MAX_HEADER_OFFSET);

		if ((void *)(vlan + 1) > data_end)
			return GLANCE_LOOK_CLOSER;
		proto = vlan->proto;
		off += sizeof(*vlan);
	}
	if (proto == bpf_htons(ETH_P_IP_)) {
		struct iphdr_ *ip = data + (off & MAX_HEADER_OFFSET);

		if ((void *)(ip + 1) > data_end)
			return GLANCE_LOOK_CLOSER;
		return ip->frag_off & bpf_htons(0x3fff) ? GLANCE_LOOK_CLOSER : GLANCE_UNFRAGMENTED;
	}
	if (proto == bpf_htons(ETH_P_IPV6_)) {
		struct ipv6hdr_ *ip6 = data + (off & MAX_HEADER_OFFSET);

		if ((void *)(ip6 + 1) > data_end)
			return GLANCE_LOOK_CLOSER;
		switch (ip6->nexthdr) {
		case NEXTHDR_HOP:
		case NEXTHDR_ROUTING:
		case NEXTHDR_FRAGMENT:
		case NEXTHDR_AUTH:
		case NEXTHDR_DEST:
			return GLANCE_LOOK_CLOSER;
		}
		return GLANCE_UNFRAGMENTED;
	}
	return GLANCE_NOT_IP;
}

/*
 * 32 random bits from this CPU's generator: SplitMix64 (a Weyl sequence through a 64-bit
 * finaliser; its high half passes BigCrush), in this CPU's meter_stats, so that the draw costs
 * two multiplies on a cache line only this CPU writes. Seeded from the kernel's generator at a
 * CPU's first draw, so no two CPUs (and no two meter sets) share a sequence.
 */
static __always_inline __u32 sampler_random(struct meter_stats *stats)
{
	__u64 z = stats->sampler_state;

	if (!z)
		z = ((__u64)bpf_get_prandom_u32() << 32) | bpf_get_prandom_u32();
	z += 0x9e3779b97f4a7c15ULL;
	stats->sampler_state = z;
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return (z ^ (z >> 31)) >> 32;
}

/* Wire packets an skb stands for: a GSO/GRO super-packet is gso_segs of them. */
static __always_inline __u64 wire_packets(struct __sk_buff *skb)
{
	__u32 segs = skb->gso_segs;

	return segs > 1 ? segs : 1;
}

/* A plain add: no other CPU writes this copy, and tc programs run with softirqs off, so another
 * cannot interleave on this CPU (only a PREEMPT_RT kernel, whose softirqs are threads, could lose
 * an add to a preemption: a statistic, never a flow's count). */
static __always_inline void count_not_sampled(__u64 packets)
{
	struct meter_stats *stats = cpu_stats();

	if (stats)
		stats->packets_not_sampled += packets;
}

static __always_inline void meter(struct __sk_buff *skb, __u8 direction)
{
	struct flow_key6 key;
	struct packet_info pi = {};
	__u32 zero = 0;
	int res;

	/* The rate this packet is counted at: N when the sampler takes it (1: no sampling), 0 when
	 * it skips it (only a packet that may be a fragment gets past here with 0). */
	/* Inlined by the verifier (an array of one: a bounds check and an address); never NULL, but
	 * the verifier wants the check. */
	struct meter_settings *set = bpf_map_lookup_elem(&settings, &zero);
	__u32 interval = set ? set->sampling_interval : 1;
	__u16 rate = 1;

	if (interval > 1) {
		/* flowctl never writes more; a key's field could not hold it. */
		if (interval > SAMPLING_INTERVAL_MAX)
			interval = SAMPLING_INTERVAL_MAX;
		rate = interval;
		struct meter_stats *stats = cpu_stats();

		if (stats && ((__u64)sampler_random(stats) * interval) >> 32) {
			switch (glance(skb)) {
			case GLANCE_NOT_IP:
				return;
			case GLANCE_UNFRAGMENTED:
				stats->packets_not_sampled += wire_packets(skb);
				return;
			}
			rate = 0;
		}
	}

	__builtin_memset(&key, 0, sizeof(key));
	key.ifindex = skb->ifindex;
	key.direction = direction;

	res = parse(skb, &key, &pi, 1);
	if (res == PARSE_NEED_PULL) {
		/* Rare: a driver left headers in paged data. Pulling them into the linear part
		 * changes neither the packet's bytes nor its fate. */
		__u32 want = skb->len < MAX_PULL ? skb->len : MAX_PULL;

		if (bpf_skb_pull_data(skb, want) < 0)
			return;
		__builtin_memset(&key.proto, 0, sizeof(key) - offsetof(struct flow_key6, proto));
		pi = (struct packet_info){};
		res = parse(skb, &key, &pi, 0);
	}
	if (res != PARSE_OK)
		return;

	/* Only locally sent packets have a socket here; of those, skip the daemon's own export
	 * traffic, which would otherwise be metered and exported, and so on. */
	if (direction == FLOW_DIR_EGRESS && key.proto == IPPROTO_UDP && skb->sk) {
		__u64 cookie = bpf_get_socket_cookie(skb);

		if (bpf_map_lookup_elem(&skip_socks, &cookie))
			return;
	}
	if (pi.frag)
		fragment_ports(&key, &pi, &rate);

	/*
	 * A GSO/GRO super-packet stands for gso_segs packets on the wire, each with its own copy of
	 * the IP and transport headers. Its own IP length field may be 0 (IPv4 over 64 KiB, IPv6
	 * jumbograms), so take its length from the skb; a plain packet's from its IP header, since
	 * skb->len may include the Ethernet padding of a short frame.
	 */
	__u64 packets = 1;
	__u64 bytes = pi.ip_len;
	__u32 segs = skb->gso_segs;

	if (segs > 1) {
		packets = segs;
		bytes = (skb->len - pi.l3_off) +
		        (__u64)(segs - 1) * (pi.l4_off - pi.l3_off + pi.l4_hdr_len);
	}
	if (!rate) {
		count_not_sampled(packets);
		return;
	}
	key.sampling_interval = rate;

	if (pi.ip_version == 4) {
		struct flow_key4 key4;

		__builtin_memcpy(&key4, &key, offsetof(struct flow_key4, src));
		__builtin_memcpy(key4.src, key.src, 4);
		__builtin_memcpy(key4.dst, key.dst, 4);
		count(skb, &flows4, &key4, &key, &pi, direction, packets, bytes, 0);
	} else {
		count(skb, &flows6, &key, &key, &pi, direction, packets, bytes, 1);
	}
}

SEC("tc")
int flowctl_ingress(struct __sk_buff *skb)
{
	meter(skb, FLOW_DIR_INGRESS);
	return TC_ACT_UNSPEC;
}

SEC("tc")
int flowctl_egress(struct __sk_buff *skb)
{
	meter(skb, FLOW_DIR_EGRESS);
	return TC_ACT_UNSPEC;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
