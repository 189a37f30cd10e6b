// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * LAYOUT 1 REFERENCE, NOT A METER: flowctl's meter as of commit e7c18bb (per-CPU preallocated flow
 * maps), kept verbatim apart from its header's name, only so that `npm run bench` can measure
 * today's program against it in the same run (misc/bench/kernel.ts, misc/bench/memory.ts).
 * flowctl never attaches it.
 */
/*
 * flowctl's flow meter: a tc (clsact) classifier that counts packets and bytes per flow.
 *
 * It never changes a packet or its fate. Every path returns TC_ACT_UNSPEC, which in direct-action
 * mode means "no verdict": the packet goes on to the next filter of the chain and then on its way,
 * exactly as if the meter were not there. Malformed packets are simply not counted.
 *
 * Maps (pinned by user space under /sys/fs/bpf/flowctl/<namespace>/maps/), for each address
 * family F (4 and 6):
 *   flowsF         ARRAY_OF_MAPS[1]: the flow map the program writes now (flowsF_a or flowsF_b).
 *   flowsF_a, _b   the two per-CPU flow maps. User space takes flows out by pointing flowsF at the
 *                  other one: that update returns only after every program that might still hold
 *                  the old map has finished (synchronize_rcu), so the old map can then be read and
 *                  emptied without losing a packet counted meanwhile.
 *   pendingF       the daemon's, not touched here (see flowctl.h).
 * and once:
 *   overflow       packets and bytes that found the flow map full, per interface and direction.
 *   skip_socks     socket cookies whose packets are not metered (the daemon's own IPFIX sockets).
 *   drain_state    the daemon's journal (see flowctl.h).
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include <stddef.h>

#include "flowctl-v1.h"

#ifndef FLOWCTL_CAPACITY
#define FLOWCTL_CAPACITY 65536
#endif
#ifndef FLOWCTL_PENDING_CAPACITY
#define FLOWCTL_PENDING_CAPACITY (2 * FLOWCTL_CAPACITY)
#endif

#define ETH_P_8021Q_ 0x8100
#define ETH_P_8021AD_ 0x88A8
#define ETH_P_IP_ 0x0800
#define ETH_P_IPV6_ 0x86DD

#define IPPROTO_ICMPV6_ 58
#define IPPROTO_SCTP_ 132
#define IPPROTO_UDPLITE_ 136

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

/* The flow maps of one address family: two per-CPU hashes and the one-slot map that selects
 * the hash the program writes now. */
#define FLOW_MAPS(fam, key_type)                                          \
	struct flow_map##fam {                                            \
		__uint(type, BPF_MAP_TYPE_PERCPU_HASH);                   \
		__uint(max_entries, FLOWCTL_CAPACITY);                    \
		__type(key, key_type);                                    \
		__type(value, struct flow_counters);                      \
	};                                                                \
	struct flow_map##fam flows##fam##_a SEC(".maps");                 \
	struct flow_map##fam flows##fam##_b SEC(".maps");                 \
	struct {                                                          \
		__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);                 \
		__uint(max_entries, 1);                                   \
		__type(key, __u32);                                       \
		__array(values, struct flow_map##fam);                    \
	} flows##fam SEC(".maps") = {                                     \
		.values = { [0] = &flows##fam##_a },                      \
	};                                                                \
	struct {                                                          \
		__uint(type, BPF_MAP_TYPE_HASH);                          \
		__uint(max_entries, FLOWCTL_PENDING_CAPACITY);            \
		__type(key, key_type);                                    \
		__type(value, struct flow_record);                        \
	} pending##fam SEC(".maps");

FLOW_MAPS(4, struct flow_key4)
FLOW_MAPS(6, struct flow_key6)

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 4096); /* interface-directions per namespace */
	__type(key, struct overflow_key);
	__type(value, struct overflow_counters);
} overflow SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 256);
	__type(key, __u64);
	__type(value, __u8);
} skip_socks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct drain_state);
} drain_state SEC(".maps");

struct ethhdr_ {
	__u8 dst[6];
	__u8 src[6];
	__be16 proto;
};

struct vlanhdr_ {
	__be16 tci;
	__be16 proto;
};

struct iphdr_ {
	__u8 ver_ihl;
	__u8 tos;
	__be16 tot_len;
	__be16 id;
	__be16 frag_off;
	__u8 ttl;
	__u8 protocol;
	__be16 check;
	__u8 saddr[4];
	__u8 daddr[4];
};

struct ipv6hdr_ {
	__be32 ver_tc_flow;
	__be16 payload_len;
	__u8 nexthdr;
	__u8 hop_limit;
	__u8 saddr[16];
	__u8 daddr[16];
};

struct ipv6_opt_ {
	__u8 nexthdr;
	__u8 hdrlen;
	__be16 frag_off; /* fragment header only: offset << 3 | flags */
	__be32 _rest;
};

/* Ports of TCP, UDP, UDP-Lite and SCTP; type and code of ICMP in the first two bytes. */
struct ports_ {
	__be16 sport;
	__be16 dport;
};

/* The first 14 bytes of a TCP header: ports, seq, ack, data offset, flags. */
struct tcphdr_ {
	__be16 sport;
	__be16 dport;
	__be32 seq;
	__be32 ack;
	__u8 doff_res;
	__u8 flags;
};

/* Runs only when the flow map is full, so its own hash lookup costs nothing in normal operation. */
static __always_inline void count_overflow(__u32 ifindex, __u8 direction, __u64 packets, __u64 bytes)
{
	struct overflow_key key = { .ifindex = ifindex, .direction = direction };
	struct overflow_counters *o = bpf_map_lookup_elem(&overflow, &key);

	if (!o) {
		struct overflow_counters init = { .packets = packets, .bytes = bytes };

		if (!bpf_map_update_elem(&overflow, &key, &init, BPF_NOEXIST))
			return;
		o = bpf_map_lookup_elem(&overflow, &key);
		if (!o)
			return;
	}
	o->packets += packets;
	o->bytes += bytes;
}

/* What the parser learned beyond the key. */
struct packet_info {
	__u32 l3_off;
	__u32 l4_off;
	__u32 l4_hdr_len;
	__u32 ip_len;
	__u8 ip_version;
	__u8 tos;
	__u8 tcp_flags;
};

enum parse_result {
	PARSE_OK,
	PARSE_NOT_IP,	/* or malformed: not a flow */
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
#define HEADER(T, var, offset, missing)                                   \
	T *var = data + ((offset) & MAX_HEADER_OFFSET);                   \
	if ((void *)(var + 1) > data_end) {                               \
		if (may_pull && skb->len > (__u32)(data_end - data))      \
			return PARSE_NEED_PULL;                           \
		missing;                                                  \
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

	HEADER(struct ethhdr_, eth, 0, return PARSE_NOT_IP);
	proto = bpf_ntohs(eth->proto);

	/* An offloaded tag is outside the packet, in skb->vlan_tci; it is the outermost one. */
	if (skb->vlan_present)
		key->vlan_id = skb->vlan_tci & 0x0fff;
#pragma unroll
	for (int i = 0; i < MAX_VLAN_TAGS; i++) {
		if (proto != ETH_P_8021Q_ && proto != ETH_P_8021AD_)
			break;
		HEADER(struct vlanhdr_, vlan, off, return PARSE_NOT_IP);
		if (!key->vlan_id)
			key->vlan_id = bpf_ntohs(vlan->tci) & 0x0fff;
		proto = bpf_ntohs(vlan->proto);
		off += sizeof(*vlan);
	}
	pi->l3_off = off;

	if (proto == ETH_P_IP_) {
		HEADER(struct iphdr_, ip, off, return PARSE_NOT_IP);
		__u32 ihl = (ip->ver_ihl & 0x0f) * 4;

		if ((ip->ver_ihl >> 4) != 4 || ihl < sizeof(*ip))
			return PARSE_NOT_IP;
		pi->ip_version = 4;
		key->proto = ip->protocol;
		*(__u32 *)key->src = *(__u32 *)ip->saddr;
		*(__u32 *)key->dst = *(__u32 *)ip->daddr;
		pi->tos = ip->tos;
		pi->ip_len = bpf_ntohs(ip->tot_len);
		/* A fragment other than the first carries no transport header: what stands
		 * where the ports would be is payload. */
		if (bpf_ntohs(ip->frag_off) & 0x1fff)
			have_l4 = 0;
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
		pi->ip_len = bpf_ntohs(ip6->payload_len) + sizeof(*ip6);
		off += sizeof(*ip6);

		/* A fixed bound on the walk: the verifier needs one, and a longer chain is
		 * counted under its last header reached, with no ports. */
#pragma unroll
		for (int i = 0; i < MAX_IPV6_EXT_HEADERS; i++) {
			if (nexthdr != NEXTHDR_HOP && nexthdr != NEXTHDR_ROUTING &&
			    nexthdr != NEXTHDR_DEST && nexthdr != NEXTHDR_FRAGMENT &&
			    nexthdr != NEXTHDR_AUTH)
				break;
			HEADER(struct ipv6_opt_, opt, off, { have_l4 = 0; break; });
			if (nexthdr == NEXTHDR_FRAGMENT) {
				if (bpf_ntohs(opt->frag_off) & 0xfff8)
					have_l4 = 0; /* not the first fragment */
				off += 8;
			} else if (nexthdr == NEXTHDR_AUTH) {
				off += (opt->hdrlen + 2) * 4;
			} else {
				off += (opt->hdrlen + 1) * 8;
			}
			nexthdr = opt->nexthdr;
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

/* Adds one packet (or one GSO super-packet's segments) to its flow in the live map of `outer`. */
static __always_inline void count(void *outer, const void *key, __u32 ifindex, __u8 direction,
				  const struct packet_info *pi, __u64 packets, __u64 bytes)
{
	__u32 zero = 0;
	void *flow_map = bpf_map_lookup_elem(outer, &zero);

	if (!flow_map)
		return;

	/* Coarse time: 1 ns instead of 20 per call, at the resolution of a jiffy (4 ms). */
	__u64 now = bpf_ktime_get_coarse_ns();
	struct flow_counters *c = bpf_map_lookup_elem(flow_map, key);

	if (!c) {
		struct flow_counters init = {
			.packets = packets,
			.bytes = bytes,
			.first_seen_ns = now,
			.last_seen_ns = now,
			.tcp_flags = pi->tcp_flags,
			.ip_tos = pi->tos,
		};

		if (!bpf_map_update_elem(flow_map, key, &init, BPF_NOEXIST))
			return;
		/* Another CPU created it first: count into this CPU's (zeroed) slot of it. */
		c = bpf_map_lookup_elem(flow_map, key);
		if (!c) {
			count_overflow(ifindex, direction, packets, bytes); /* the map is full */
			return;
		}
	}
	if (!c->first_seen_ns) {
		c->first_seen_ns = now;
		c->ip_tos = pi->tos;
	}
	c->packets += packets;
	c->bytes += bytes;
	c->last_seen_ns = now;
	c->tcp_flags |= pi->tcp_flags;
}

static __always_inline void meter(struct __sk_buff *skb, __u8 direction)
{
	struct flow_key6 key;
	struct packet_info pi = {};
	int res;

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

	if (pi.ip_version == 4) {
		struct flow_key4 key4;

		__builtin_memcpy(&key4, &key, offsetof(struct flow_key4, src));
		__builtin_memcpy(key4.src, key.src, 4);
		__builtin_memcpy(key4.dst, key.dst, 4);
		count(&flows4, &key4, key.ifindex, direction, &pi, packets, bytes);
	} else {
		count(&flows6, &key, key.ifindex, direction, &pi, packets, bytes);
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
