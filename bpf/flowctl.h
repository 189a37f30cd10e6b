/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The one definition of what flowctl keeps in the kernel. TypeScript reads it through
 * src/bpf/layout.generated.ts, which `npm run gen:layout` generates from the BTF of the compiled
 * meter (as bpf2go does for Go); test/bpf/layout.test.ts regenerates it and fails if the committed
 * file is stale. Constants are enums so that they reach the BTF too.
 *
 * Change a struct here, bump FLOWCTL_LAYOUT_VERSION, and run `npm run gen:layout`. A flowctl that
 * meets a meter set of another layout version refuses to read it and says how to re-attach.
 */
#ifndef FLOWCTL_H
#define FLOWCTL_H

enum flowctl_layout {
	/* 1: per-CPU preallocated flow maps. 2: shared flow maps allocated per flow, both
	 * interfaces, next hop, TTL, inner VLAN, fragments, pending flows as a snapshot.
	 * 3: packet sampling (the `settings` map, each key's sampling_interval, the sampling
	 * decision of a fragmented datagram in `frags`), per-CPU counters (`meter_stats`).
	 * 4: TCP handshake timing (the `handshakes` map). */
	FLOWCTL_LAYOUT_VERSION = 4,
	/* Bytes of one value of the `pending` map (a chunk of the daemon's snapshot) in a new meter
	 * set: with the kernel's element header (about 56 bytes with the key) it fits a 32 KiB
	 * allocation; 32768 took 64 KiB per chunk (measured). Meter sets made with 32768 keep it:
	 * the daemon reads a set's chunk size from its pending map. */
	PENDING_CHUNK_BYTES = 32704,
	/* Entries of the fragment map (datagrams in reassembly at once, per namespace). */
	FRAG_MAP_ENTRIES = 8192,
	/* The largest 1-in-N sampling interval: what a key's u16 sampling_interval holds. */
	SAMPLING_INTERVAL_MAX = 65535,
	/* Entries of the handshake map (TCP handshakes being timed at once, per namespace): the
	 * daemon takes each out within a few drains, least recently used goes first when full. An
	 * LRU hash is preallocated: 4096 entries took 0.6 MB of kernel memory per namespace (8192:
	 * 1.18 MB, measured), about what `frags` takes. */
	HANDSHAKE_MAP_ENTRIES = 4096,
};

/* handshake_times.role: which side's packet an entry timed. */
enum handshake_role {
	HANDSHAKE_INITIATOR = 1, /* a SYN without ACK (and the initiator's first ACK after it) */
	HANDSHAKE_RESPONDER = 2, /* a SYN+ACK */
};

/* Values of flow_key.direction: the IPFIX flowDirection (IE 61) encoding. */
enum flow_direction {
	FLOW_DIR_INGRESS = 0,
	FLOW_DIR_EGRESS = 1,
};

/*
 * flow_value.fwd_status: the IPFIX forwardingStatus (IE 89, RFC 7270) the meter can tell from the
 * kernel's routing table when a flow is created: the top two bits are the status, the rest a
 * reason.
 */
enum flow_fwd_status {
	FWD_STATUS_UNKNOWN = 0,
	FWD_STATUS_FORWARDED = 64,        /* a route out of another interface */
	FWD_STATUS_DROPPED = 128,         /* forwarding is off on the interface, or no route */
	FWD_STATUS_DROP_UNROUTABLE = 131, /* blackhole, unreachable, prohibit */
	FWD_STATUS_FOR_US = 195,          /* addressed to this host */
};

/*
 * One unidirectional flow seen on one interface in one direction. IPv4 and IPv6 flows live in
 * maps of their own: hashing a key wide enough for IPv6 costs every IPv4 packet more, and most
 * traffic is IPv4. Both keys begin with the same 16 bytes. Addresses and ports are network
 * order, as they stand in the packet. For ICMP and ICMPv6, sport is 0 and dport holds type and
 * code (type in its first byte), the NetFlow convention. Every byte takes part in the hash, so
 * the program zeroes the whole key.
 */
struct flow_key4 {
	__u32 ifindex;
	__u8 direction;
	__u8 proto;
	__u16 vlan_id; /* host order; 0 when untagged; the outermost tag (802.1Q or 802.1ad) */
	__be16 sport;
	__be16 dport;
	__u16 inner_vlan_id; /* host order; QinQ: the customer tag behind the outer one; else 0 */
	__u16 sampling_interval; /* the N of the 1-in-N sampling the packets were counted at (1: all);
	                          * part of the key, so that a flow's record holds one rate only.
	                          * 0 in the keys of a layout-2 meter set (carried over): read it as 1. */
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
	__u16 inner_vlan_id;
	__u16 sampling_interval;
	__u8 src[16];
	__u8 dst[16];
};

/*
 * What the meter counted for a flow. One value per flow shared by every CPU (memory grows with
 * flows, not with capacity x CPUs): packets and bytes are added atomically, the rest written only
 * when it changes, so CPUs hitting one flow rarely contend for its cache line.
 * Times are CLOCK_MONOTONIC nanoseconds: first_seen from the precise clock when the flow is
 * created (exact to the microsecond), last_seen from the coarse clock (one jiffy, 4 ms at HZ=250),
 * never before first_seen.
 * The fields from peer_ifindex on are the first packet's, set when the flow is created.
 */
#define FLOW_VALUE_COMMON                                                                               \
	__u64 packets; /* wire packets: a GSO/GRO super-packet counts as its segments */                \
	__u64 bytes;   /* IP bytes (header + payload) on the wire: octetDeltaCount */                   \
	__u64 first_seen_ns;                                                                            \
	__u64 last_seen_ns;                                                                             \
	__u32 tcp_flags; /* OR of the TCP flags byte of every packet (32 bits for atomics) */           \
	__u32 peer_ifindex; /* the other interface: out (ingress flows), in (egress flows); 0 = none */ \
	__u8 tos;           /* IPv4 TOS / IPv6 traffic class */                                         \
	__u8 min_ttl;       /* IPv4 TTL / IPv6 hop limit, lowest and highest seen */                    \
	__u8 max_ttl;                                                                                   \
	__u8 fwd_status; /* enum flow_fwd_status */

struct flow_value4 {
	FLOW_VALUE_COMMON
	__u8 next_hop[4]; /* the gateway towards dst; 0 when directly connected or unknown */
};

struct flow_value6 {
	FLOW_VALUE_COMMON
	__u8 next_hop[16];
};

/* Packets and bytes that could not be recorded because the flow map was full. */
struct overflow_key {
	__u32 ifindex;
	__u32 direction;
};

struct overflow_value {
	__u64 packets;
	__u64 bytes;
};

/*
 * The ports of a fragmented datagram, remembered from its first fragment so that the later ones
 * (which carry no transport header) count under the same flow, and whether the sampler took it
 * (a datagram is sampled whole: see meter.bpf.c). Keyed by what identifies a datagram in
 * reassembly (RFC 791, RFC 8200): addresses, protocol, identification.
 */
struct frag_key {
	__u8 src[16];
	__u8 dst[16];
	__u32 id;
	__u8 proto;
	__u8 family;
	__u16 _pad;
};

struct frag_ports {
	__be16 sport;
	__be16 dport;
	__u16 sampling_interval; /* the N the first fragment was counted at; 0: the sampler skipped it */
	__u16 _pad;
};

/*
 * Flows the daemon took out of the flow maps and holds until they end, kept in the kernel so a
 * daemon killed with SIGKILL loses none: a snapshot of its flow cache, in chunks of the `pending`
 * map (key: slot << 24 | chunk index). Each chunk is a header and records of one family.
 */
struct pending_chunk_header {
	__u32 family;  /* 4 or 6 */
	__u32 records; /* pending_flow4 or pending_flow6 records after the header */
};

struct pending_flow4 {
	struct flow_key4 key;
	struct flow_value4 value;
};

struct pending_flow6 {
	struct flow_key6 key;
	struct flow_value6 value;
};

/*
 * A TCP handshake as one interface and direction saw it, in the `handshakes` map: keyed by the flow
 * key of the packet (the IPv6-shaped one: an IPv4 address in the first 4 bytes of each address)
 * and its family. Written only by handshake packets: a SYN (again by a retransmitted one, which
 * restarts the timing), a SYN+ACK, and the initiator's first ACK after its SYN. The daemon pairs
 * an initiator's entry with the responder's (addresses and ports reversed) to tell the two round
 * trips, and deletes both.
 */
struct handshake_key {
	struct flow_key6 flow;
	__u32 family; /* 4 or 6 */
};

struct handshake_times {
	__u64 syn_ns; /* CLOCK_MONOTONIC: the latest SYN (initiator) or SYN+ACK (responder) */
	__u64 ack_ns; /* initiator: its first ACK after that SYN; 0 until then, and for a responder */
	__u32 role;   /* enum handshake_role */
	__u32 _pad;
};

/*
 * The daemon's journal, one element, written in one update (atomic for readers). `gen` counts
 * committed drains; `slot` says which half of the pending map holds the snapshot of drain `gen`
 * in `chunks` chunks. A drained flow map stays pinned as drain<F>_<gen> until the snapshot that
 * includes it is committed, so a crash at any moment loses nothing: the next daemon reads the
 * snapshot and merges the drain maps of a later generation.
 */
struct drain_state {
	__u64 gen;
	__u32 slot;
	__u32 chunks;
	__u64 flows4;
	__u64 flows6;
};

/*
 * What user space tells the program, one element of the `settings` array, read once per packet.
 * A field that is 0 means its default, so that room taken by a later setting (from `_reserved`)
 * changes nothing for a meter set that never wrote it, and the map keeps its shape.
 */
struct meter_settings {
	__u32 sampling_interval; /* count 1 packet in N, at random (0 or 1: every packet) */
	__u32 _reserved[7];
};

/*
 * What the program counts beside the flows, one element of the per-CPU `meter_stats` array: each
 * CPU adds to its own copy without atomics; a reader sums the copies. Every count only grows.
 */
struct meter_stats {
	/* Flows inserted into the live flow map of each family (never on an existing flow's path):
	 * unchanged between two reads, no flow was created in between. */
	__u64 flows4_created;
	__u64 flows6_created;
	/* Wire packets of IP the sampler skipped (a GSO super-packet counts as its segments). */
	__u64 packets_not_sampled;
	/* Wire packets counted in `overflow` because their flow map was full. */
	__u64 packets_overflowed;
	/* Not a count: this CPU's random generator for the sampler (0 until its first draw). */
	__u64 sampler_state;
};

/* What the meter set is: written once when it is created. */
struct meter_meta {
	__u32 layout_version; /* FLOWCTL_LAYOUT_VERSION of the flowctl that created it */
	__u32 capacity;       /* flows each flow map may hold */
};

/*
 * DROPS (bpf/drops.bpf.c, a separate program on the kfree_skb tracepoint, off unless asked for).
 * Not part of a meter set's layout: the meter never reads these maps, so a set without them is
 * the same set. The hook's own maps are global, pinned under <pin root>/drops/; a namespace with
 * drops on has its current drops hash in `drop_maps` (by its netns inode) and a `drops` marker
 * (struct drop_set) pinned in its meter set's maps directory.
 */
enum drop_settings {
	/* Entries of one namespace's drops hash between two drains. */
	DROPS_MAP_ENTRIES = 65536,
	/* Namespaces that may have drops on at once. */
	DROP_NETNS_MAX = 4096,
	/* drop_key.flags: the kernel reported IP_INHDR for a packet it was forwarding with a TTL
	 * of 1 or 0 (it has no reason of its own for an expired TTL). */
	DROP_FLAG_TTL_EXPIRED = 1,
};

/* A dropped packet's flow, as the meter keys it (IPv4: addresses in the first 4 bytes of
 * src and dst), and why the kernel dropped it. */
struct drop_key {
	struct flow_key6 flow;
	__u32 reason; /* enum skb_drop_reason of the running kernel */
	__u8 family;  /* 4 or 6 */
	__u8 flags;   /* DROP_FLAG_* */
	__u16 _pad;
};

struct drop_value {
	__u64 packets; /* wire packets (a GSO super-packet counts as its segments) */
	__u64 bytes;   /* IP bytes */
};

/* drop_netns: a namespace whose drops are counted, by its netns inode. */
struct drop_netns {
	__u32 sampling_interval; /* count 1 drop in N, at random (the meter set's N; 0 or 1: all) */
	__u32 _reserved;
};

/* Per-CPU counters of the hook (`drop_stats`): drops it could not record. */
struct drop_stats {
	__u64 lost_packets; /* the namespace's drops hash was full */
	__u64 counted_packets;
};

/* The `drops` marker in a meter set's maps directory: drops are on for its namespace. */
struct drop_set {
	__u32 netns_inode;
	__u32 sampling_interval;
};

#endif
