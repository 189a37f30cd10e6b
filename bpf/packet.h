/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The packet headers flowctl's BPF programs read (the meter from a packet, the drop hook from a
 * freed skb), declared here once under names of our own: the kernel's UAPI headers bring more
 * than a BPF object may include.
 */
#ifndef FLOWCTL_PACKET_H
#define FLOWCTL_PACKET_H

#include <linux/types.h>

#define ETH_P_8021Q_ 0x8100
#define ETH_P_8021AD_ 0x88A8
#define ETH_P_IP_ 0x0800
#define ETH_P_IPV6_ 0x86DD

#define IPPROTO_ICMP_ 1
#define IPPROTO_TCP_ 6
#define IPPROTO_UDP_ 17
#define IPPROTO_ICMPV6_ 58
#define IPPROTO_SCTP_ 132
#define IPPROTO_UDPLITE_ 136

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
	__be32 frag_id;  /* fragment header only: the datagram's identification */
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

#endif
