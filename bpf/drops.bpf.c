// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * flowctl's drop hook: counts the packets the kernel frees as dropped, per flow and reason, in the
 * namespaces that asked for it (`meter attach --drops`).
 *
 * One program for the whole host on the kfree_skb tracepoint (args: skb, location, reason). It
 * only reads. A namespace not in `drop_netns` costs one hash lookup per dropped skb; an skb freed
 * as consumed (SKB_CONSUMED) costs one comparison. The skb's fields are read with CO-RE: the
 * structs below name only what is read, and libbpf (bpftool prog load) finds each field in the
 * running kernel's BTF.
 *
 * Maps (pinned by user space under <pin root>/drops/maps/; layouts in flowctl.h):
 *   drop_netns   netns inode -> its sampling interval: the namespaces whose drops are counted.
 *   drop_maps    netns inode -> that namespace's current drops hash (drop_key -> drop_value);
 *                the daemon swaps in an empty one at each drain.
 *   drop_stats   per-CPU: drops counted, and drops lost to a full drops hash.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_core_read.h>

#include "flowctl.h"
#include "packet.h"

/* enum skb_drop_reason values that are the same in every kernel since 5.17. */
#define SKB_CONSUMED_ 1
/* The one reason whose number is looked up in the running kernel (CO-RE enum relocation): the
 * numbering changes between kernels. */
enum skb_drop_reason {
	SKB_DROP_REASON_IP_INHDR = 15,
};

/* skb->transport_header when unset (typeof(transport_header))~0U. */
#define HEADER_UNSET 0xffff

/* Only what is read, under the kernel's names: CO-RE relocates each field. */
struct ns_common {
	unsigned int inum;
} __attribute__((preserve_access_index));

struct net {
	struct ns_common ns;
} __attribute__((preserve_access_index));

typedef struct {
	struct net *net;
} possible_net_t;

struct net_device {
	int ifindex;
	possible_net_t nd_net;
} __attribute__((preserve_access_index));

struct skb_shared_info {
	unsigned short gso_segs;
} __attribute__((preserve_access_index));

struct sk_buff {
	struct net_device *dev;
	int skb_iif;
	__u16 vlan_tci;
	__be16 protocol;
	__u16 transport_header;
	__u16 network_header;
	unsigned int end;
	unsigned char *head;
} __attribute__((preserve_access_index));

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, DROP_NETNS_MAX);
	__type(key, __u32);
	__type(value, struct drop_netns);
} drop_netns SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH_OF_MAPS);
	__uint(max_entries, DROP_NETNS_MAX);
	__type(key, __u32);
	/* A namespace's drops hash, made by user space (flags and sizes must match). */
	__array(
	        values, struct {
		        __uint(type, BPF_MAP_TYPE_HASH);
		        __uint(map_flags, BPF_F_NO_PREALLOC);
		        __uint(max_entries, DROPS_MAP_ENTRIES);
		        __uint(key_size, sizeof(struct drop_key));
		        __uint(value_size, sizeof(struct drop_value));
	        });
} drop_maps SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct drop_stats);
} drop_stats SEC(".maps");

static __always_inline int has_ports(__u8 proto)
{
	return proto == IPPROTO_TCP_ || proto == IPPROTO_UDP_ || proto == IPPROTO_SCTP_ ||
	       proto == IPPROTO_UDPLITE_;
}

/*
 * Ports (or ICMP type and code in dport, as the meter keys them) from the transport header, and
 * that header's length as the meter counts it in each segment of a GSO packet (0: none).
 */
static __always_inline __u32 read_transport(struct drop_key *key, unsigned char *l4)
{
	__u8 proto = key->flow.proto;

	if (proto == IPPROTO_TCP_) {
		struct tcphdr_ tcp;

		if (bpf_probe_read_kernel(&tcp, sizeof(tcp), l4))
			return 0;
		key->flow.sport = tcp.sport;
		key->flow.dport = tcp.dport;
		return (tcp.doff_res >> 4) * 4;
	}
	struct ports_ ports;

	if (bpf_probe_read_kernel(&ports, sizeof(ports), l4))
		return 0;
	if (has_ports(proto)) {
		key->flow.sport = ports.sport;
		key->flow.dport = ports.dport;
		return proto == IPPROTO_SCTP_ ? 12 : 8;
	}
	if (proto == IPPROTO_ICMP_ || proto == IPPROTO_ICMPV6_) {
		key->flow.dport = ports.sport; /* type and code, in this order */
		return 8;
	}
	return 0;
}

/*
 * The flow key of the packet at skb->head + network_header, its IP bytes (0 when it is not IP),
 * and the length of the IP and transport headers each segment of a GSO packet has.
 */
static __always_inline __u32 parse(struct sk_buff *skb, struct drop_key *key, __u32 *ttl,
                                   __u32 *hdr_len)
{
	unsigned char *head = BPF_CORE_READ(skb, head);
	__u16 nh = BPF_CORE_READ(skb, network_header);
	__u16 th = BPF_CORE_READ(skb, transport_header);
	__be16 protocol = BPF_CORE_READ(skb, protocol);
	unsigned char *l3 = head + nh;

	if (protocol == bpf_htons(ETH_P_IP_)) {
		struct iphdr_ ip;

		if (bpf_probe_read_kernel(&ip, sizeof(ip), l3) || (ip.ver_ihl >> 4) != 4)
			return 0;
		__u32 ihl = (ip.ver_ihl & 0x0f) * 4;

		if (ihl < sizeof(ip))
			return 0;
		key->family = 4;
		key->flow.proto = ip.protocol;
		__builtin_memcpy(key->flow.src, ip.saddr, 4);
		__builtin_memcpy(key->flow.dst, ip.daddr, 4);
		*ttl = ip.ttl;
		*hdr_len = ihl;
		/* A later fragment carries no transport header (the meter finds its ports in its
		 * fragment map; a dropped one is counted without them). */
		if (!(bpf_ntohs(ip.frag_off) & 0x1fff))
			*hdr_len += read_transport(key, th != HEADER_UNSET && th > nh ? head + th
			                                                              : l3 + ihl);
		return bpf_ntohs(ip.tot_len);
	}
	if (protocol == bpf_htons(ETH_P_IPV6_)) {
		struct ipv6hdr_ ip6;

		if (bpf_probe_read_kernel(&ip6, sizeof(ip6), l3) ||
		    (bpf_ntohl(ip6.ver_tc_flow) >> 28) != 6)
			return 0;
		key->family = 6;
		key->flow.proto = ip6.nexthdr;
		__builtin_memcpy(key->flow.src, ip6.saddr, 16);
		__builtin_memcpy(key->flow.dst, ip6.daddr, 16);
		*ttl = ip6.hop_limit;
		*hdr_len = sizeof(ip6);
		/* Extension headers are not walked: such a packet is counted under its next header,
		 * without ports. */
		if (has_ports(ip6.nexthdr) || ip6.nexthdr == IPPROTO_ICMPV6_)
			*hdr_len += read_transport(key, l3 + sizeof(ip6));
		return bpf_ntohs(ip6.payload_len) + sizeof(ip6);
	}
	return 0;
}

static __always_inline struct drop_stats *cpu_stats(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&drop_stats, &zero);
}

SEC("raw_tracepoint/kfree_skb")
int flowctl_drops(struct bpf_raw_tracepoint_args *ctx)
{
	struct sk_buff *skb = (struct sk_buff *)ctx->args[0];
	__u32 reason = (__u32)ctx->args[2];

	/* Most frees are not drops: SKB_NOT_DROPPED_YET never reaches here, SKB_CONSUMED does. */
	if (reason <= SKB_CONSUMED_)
		return 0;

	struct net_device *dev = BPF_CORE_READ(skb, dev);

	if (!dev)
		return 0;
	__u32 inum = BPF_CORE_READ(dev, nd_net.net, ns.inum);
	struct drop_netns *ns = bpf_map_lookup_elem(&drop_netns, &inum);

	if (!ns)
		return 0;
	if (ns->sampling_interval > 1 && bpf_get_prandom_u32() % ns->sampling_interval)
		return 0;

	struct drop_key key;
	__u32 ttl = 0, hdr_len = 0;

	__builtin_memset(&key, 0, sizeof(key));
	__u32 ip_len = parse(skb, &key, &ttl, &hdr_len);

	if (!ip_len)
		return 0;

	/* The meter's key: the interface it came in by (ingress), or the one it was being sent
	 * out of when it was made here (egress). */
	int iif = BPF_CORE_READ(skb, skb_iif);

	if (iif) {
		key.flow.ifindex = iif;
		key.flow.direction = FLOW_DIR_INGRESS;
	} else {
		key.flow.ifindex = BPF_CORE_READ(dev, ifindex);
		key.flow.direction = FLOW_DIR_EGRESS;
	}
	key.flow.vlan_id = BPF_CORE_READ(skb, vlan_tci) & 0x0fff;
	key.flow.sampling_interval = ns->sampling_interval > 1 ? ns->sampling_interval : 1;
	key.reason = reason;
	if (reason == bpf_core_enum_value(enum skb_drop_reason, SKB_DROP_REASON_IP_INHDR) && iif &&
	    ttl <= 1)
		key.flags = DROP_FLAG_TTL_EXPIRED;

	/* A GSO packet stands for gso_segs packets on the wire, each with its own headers. */
	unsigned char *head = BPF_CORE_READ(skb, head);
	unsigned int end = BPF_CORE_READ(skb, end);
	struct skb_shared_info *shinfo = (struct skb_shared_info *)(head + end);
	__u16 segs = BPF_CORE_READ(shinfo, gso_segs);
	__u64 packets = segs > 1 ? segs : 1;
	__u64 bytes = ip_len + (packets - 1) * hdr_len;

	struct drop_stats *stats = cpu_stats();
	void *drops = bpf_map_lookup_elem(&drop_maps, &inum);

	if (!drops)
		return 0;
	struct drop_value *v = bpf_map_lookup_elem(drops, &key);

	if (!v) {
		struct drop_value fresh = {};

		/* Another CPU may insert it first (EEXIST): either way, look it up again. */
		bpf_map_update_elem(drops, &key, &fresh, BPF_NOEXIST);
		v = bpf_map_lookup_elem(drops, &key);
		if (!v) {
			/* The drops hash is full until the next drain. */
			if (stats)
				stats->lost_packets += packets;
			return 0;
		}
	}
	__sync_fetch_and_add(&v->packets, packets);
	__sync_fetch_and_add(&v->bytes, bytes);
	if (stats)
		stats->counted_packets += packets;
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
