// SPDX-License-Identifier: GPL-2.0
/*
 * tunnelmon - VXLAN traffic on an underlay device, per tunnel and overlay pair.
 *
 * Every frame that crosses the underlay device (tc clsact ingress and egress,
 * or XDP ingress) is parsed across the encapsulation boundary:
 *
 *   outer Ethernet -> outer IPv4/IPv6 -> UDP to the VXLAN port -> VXLAN
 *   -> inner Ethernet -> inner IPv4/IPv6
 *
 * and counted in `stats`, keyed by (outer src/dst, inner src/dst, VNI).  As in
 * BCC's tunnel_monitor the key is seen from this host: on ingress the
 * addresses are swapped, so a conversation's two directions share one key
 * and land in its tx and rx counters.
 *
 * The outer and the inner IP header are parsed by the same program, the IP
 * parser, which the entry program reaches through a tail call and which
 * tail-calls itself once more for the inner header.  The parse state (where
 * the next header is, what was found so far) travels between them in a
 * per-CPU scratch slot: a tail call keeps the CPU, and nothing else runs on
 * it in between (tc and XDP run with bottom halves disabled).
 *
 * Frames that are not VXLAN are only counted by kind (anomalies.skipped);
 * truncated or malformed ones are counted by kind too (anomalies.malformed).
 * Every frame passes: the monitor never changes what the device does.  The
 * tc programs return TC_ACT_UNSPEC, "no verdict": the filters after ours on
 * the hook (another monitor, an administrator's) still see every frame.
 *
 * User space fills the program arrays (tc_parsers / xdp_parsers) with the IP
 * parser's fd after load: a tail call to an empty slot falls through and is
 * counted as malformed.tailcall_failed.
 */
#include "pytrace.h"

#define ETH_HLEN 14
#define ETH_P_IP 0x0800
#define ETH_P_IPV6 0x86DD
#define ETH_P_8021Q 0x8100
#define ETH_P_8021AD 0x88A8
#define VXLAN_HLEN 8
#define VXLAN_FLAG_I 0x08	/* RFC 7348: the VNI field is valid */
#define IP_MF 0x2000
#define IP_OFFSET 0x1FFF
#define NEXTHDR_HOP 0
#define NEXTHDR_ROUTING 43
#define NEXTHDR_FRAGMENT 44
#define NEXTHDR_DEST 60
#define IPV6_EXT_MAX 4		/* extension headers walked before giving up */
#define MAX_HDR_OFF 1024	/* headers starting beyond this are not parsed */
#define PULL_LEN 256		/* tc: make this much of the frame linear */
#define TC_ACT_UNSPEC (-1)
#define PARSER_IP 0		/* slot of the IP parser in the program arrays */

const volatile __u16 vxlan_port = 4789;

enum { DIR_EGRESS = 0, DIR_INGRESS = 1 };
enum { STAGE_OUTER = 0, STAGE_INNER = 1 };
enum { PARSE_DONE = 0, PARSE_AGAIN = 1 };

/* The stats key, from this host's point of view (src = local side). */
struct tunnel_key {
	__u8 outer_src[16];	/* IPv4 in the first 4 bytes */
	__u8 outer_dst[16];
	__u8 inner_src[16];
	__u8 inner_dst[16];
	__u32 vni;
	__u8 outer_family;	/* AF_INET or AF_INET6 */
	__u8 inner_family;
	__u16 pad;
};

struct tunnel_counters {
	__u64 tx_pkts;
	__u64 tx_bytes;
	__u64 rx_pkts;
	__u64 rx_bytes;
};

/* Frames that are not VXLAN on the configured port (nothing wrong with them). */
struct tunnel_skipped {
	__u64 not_ip;		/* outer ethertype is neither IPv4 nor IPv6 */
	__u64 not_udp;		/* outer IP carries something else than UDP */
	__u64 other_port;	/* UDP, but not to the VXLAN port */
	__u64 fragment;		/* outer IP fragment: no UDP header to read */
};

/* Frames that claimed to be something and were not, by where the parse stopped. */
struct tunnel_malformed {
	__u64 trunc_eth;	/* shorter than an Ethernet (+VLAN) header */
	__u64 trunc_ip;		/* outer IP header cut short */
	__u64 bad_ip;		/* outer IP version/header length inconsistent */
	__u64 trunc_udp;
	__u64 trunc_vxlan;	/* UDP to the VXLAN port, but no full VXLAN header */
	__u64 bad_vxlan;	/* VXLAN header without the I (valid VNI) flag */
	__u64 trunc_inner_eth;
	__u64 inner_not_ip;	/* the encapsulated frame is not IPv4/IPv6 */
	__u64 trunc_inner_ip;
	__u64 bad_inner_ip;
	__u64 too_deep;		/* headers beyond MAX_HDR_OFF or too many IPv6 extensions */
	__u64 tailcall_failed;	/* program array slot empty: should not happen */
	__u64 state_mismatch;	/* scratch slot belonged to another frame: should not happen */
	__u64 map_full;		/* stats had no room for a new key */
};

struct tunnel_anomalies {
	struct tunnel_skipped skipped;
	struct tunnel_malformed malformed;
};

/* Carried from one program to the next in the per-CPU scratch slot. */
struct parse_state {
	__u32 off;		/* offset of the next IP header in the frame */
	__u32 ifindex;		/* with len: which frame this state belongs to */
	__u32 len;		/* frame length: the byte count */
	__u32 segs;		/* packets this frame stands for (GSO) */
	__u16 proto;		/* ethertype of the next IP header, host order */
	__u8 stage;
	__u8 dir;
	__u32 vni;
	__u8 outer_family;
	__u8 inner_family;
	__u16 pad;
	__u8 outer_src[16];	/* as on the wire: not yet oriented */
	__u8 outer_dst[16];
	__u8 inner_src[16];
	__u8 inner_dst[16];
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 10240);
	__type(key, struct tunnel_key);
	__type(value, struct tunnel_counters);
} stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct tunnel_anomalies);
} anomalies SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct parse_state);
} scratch SEC(".maps");

/* A program array belongs to one program type: one for tc, one for XDP. */
struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} tc_parsers SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} xdp_parsers SEC(".maps");

static const struct tunnel_counters zero_counters;

#define COUNT(field)                                                      \
	do {                                                              \
		__u32 __zero = 0;                                         \
		struct tunnel_anomalies *__a =                            \
			bpf_map_lookup_elem(&anomalies, &__zero);         \
		if (__a)                                                  \
			__a->field++; /* per-CPU: no atomics needed */    \
	} while (0)

struct vlan_tag {
	__be16 tci;
	__be16 proto;
};

/*
 * Skip up to two VLAN tags after an Ethernet header at *off; returns the
 * ethertype in host order, or 0 if the frame ends inside a tag.
 */
static __always_inline __u16 skip_vlans(void *data, void *data_end, __u32 *off,
					 __u16 proto)
{
#pragma unroll
	for (int i = 0; i < 2; i++) {
		if (proto != ETH_P_8021Q && proto != ETH_P_8021AD)
			break;
		__u32 o = *off;
		if (o > MAX_HDR_OFF)
			return 0;
		struct vlan_tag *tag = data + o;
		if ((void *)(tag + 1) > data_end)
			return 0;
		proto = bpf_ntohs(tag->proto);
		*off = o + sizeof(*tag);
	}
	return proto;
}

/*
 * The entry programs: parse the outer Ethernet header and start the state.
 * Returns 0 when the IP parser should run.
 */
static __always_inline int start(void *data, void *data_end, __u8 dir,
				 __u32 ifindex, __u32 len, __u32 segs)
{
	struct parse_state *st;
	struct ethhdr *eth = data;
	__u32 zero = 0, off = ETH_HLEN;
	__u16 proto;

	if ((void *)(eth + 1) > data_end) {
		COUNT(malformed.trunc_eth);
		return -1;
	}
	proto = skip_vlans(data, data_end, &off, bpf_ntohs(eth->h_proto));
	if (!proto) {
		COUNT(malformed.trunc_eth);
		return -1;
	}
	if (proto != ETH_P_IP && proto != ETH_P_IPV6) {
		COUNT(skipped.not_ip);
		return -1;
	}
	st = bpf_map_lookup_elem(&scratch, &zero);
	if (!st)
		return -1;
	__builtin_memset(st, 0, sizeof(*st));
	st->off = off;
	st->proto = proto;
	st->dir = dir;
	st->stage = STAGE_OUTER;
	st->ifindex = ifindex;
	st->len = len;
	st->segs = segs ? segs : 1;
	return 0;
}

/* Count a parsed inner packet under its oriented key. */
static __always_inline void account(struct parse_state *st)
{
	struct tunnel_key key = {};
	struct tunnel_counters *c;
	bool rx = st->dir == DIR_INGRESS;

	/* src is always this host's side: swap what arrived */
	__builtin_memcpy(key.outer_src, rx ? st->outer_dst : st->outer_src, 16);
	__builtin_memcpy(key.outer_dst, rx ? st->outer_src : st->outer_dst, 16);
	__builtin_memcpy(key.inner_src, rx ? st->inner_dst : st->inner_src, 16);
	__builtin_memcpy(key.inner_dst, rx ? st->inner_src : st->inner_dst, 16);
	key.vni = st->vni;
	key.outer_family = st->outer_family;
	key.inner_family = st->inner_family;

	c = bpf_map_lookup_elem(&stats, &key);
	if (!c) {
		bpf_map_update_elem(&stats, &key, &zero_counters, BPF_NOEXIST);
		c = bpf_map_lookup_elem(&stats, &key);
		if (!c) {
			COUNT(malformed.map_full);
			return;
		}
	}
	if (rx) {
		__sync_fetch_and_add(&c->rx_pkts, st->segs);
		__sync_fetch_and_add(&c->rx_bytes, st->len);
	} else {
		__sync_fetch_and_add(&c->tx_pkts, st->segs);
		__sync_fetch_and_add(&c->tx_bytes, st->len);
	}
}

/*
 * After the outer IP header: UDP to the VXLAN port, the VXLAN header and the
 * inner Ethernet header.  Leaves the state pointing at the inner IP header.
 */
static __always_inline int parse_vxlan(void *data, void *data_end,
				       struct parse_state *st, __u32 off)
{
	struct udphdr *udp;
	struct ethhdr *eth;
	__u8 *vx;
	__u16 proto;

	if (off > MAX_HDR_OFF) {
		COUNT(malformed.too_deep);
		return PARSE_DONE;
	}
	udp = data + off;
	if ((void *)(udp + 1) > data_end) {
		COUNT(malformed.trunc_udp);
		return PARSE_DONE;
	}
	if (bpf_ntohs(udp->dest) != vxlan_port) {
		COUNT(skipped.other_port);
		return PARSE_DONE;
	}
	vx = (void *)(udp + 1);
	if ((void *)(vx + VXLAN_HLEN) > data_end) {
		COUNT(malformed.trunc_vxlan);
		return PARSE_DONE;
	}
	if (!(vx[0] & VXLAN_FLAG_I)) {
		COUNT(malformed.bad_vxlan);
		return PARSE_DONE;
	}
	st->vni = ((__u32)vx[4] << 16) | ((__u32)vx[5] << 8) | vx[6];
	eth = (void *)(vx + VXLAN_HLEN);
	if ((void *)(eth + 1) > data_end) {
		COUNT(malformed.trunc_inner_eth);
		return PARSE_DONE;
	}
	off += sizeof(*udp) + VXLAN_HLEN + ETH_HLEN;
	proto = skip_vlans(data, data_end, &off, bpf_ntohs(eth->h_proto));
	if (!proto) {
		COUNT(malformed.trunc_inner_eth);
		return PARSE_DONE;
	}
	if (proto != ETH_P_IP && proto != ETH_P_IPV6) {
		COUNT(malformed.inner_not_ip);
		return PARSE_DONE;
	}
	st->off = off;
	st->proto = proto;
	st->stage = STAGE_INNER;
	return PARSE_AGAIN;
}

/*
 * The IP parser, for the outer and the inner header alike: reads the header
 * at st->off, records its addresses for the current stage, then either goes
 * on to VXLAN (outer) or counts the packet (inner).
 */
static __always_inline int parse_ip(void *data, void *data_end,
				    struct parse_state *st)
{
	bool inner = st->stage == STAGE_INNER;
	__u32 off = st->off;
	__u8 l4proto, family;
	__u8 *src, *dst;

	if (off > MAX_HDR_OFF) {
		COUNT(malformed.too_deep);
		return PARSE_DONE;
	}
	src = inner ? st->inner_src : st->outer_src;
	dst = inner ? st->inner_dst : st->outer_dst;

	if (st->proto == ETH_P_IP) {
		struct iphdr *ip = data + off;
		__u32 hlen;

		if ((void *)(ip + 1) > data_end) {
			if (inner)
				COUNT(malformed.trunc_inner_ip);
			else
				COUNT(malformed.trunc_ip);
			return PARSE_DONE;
		}
		hlen = ip->ihl * 4;
		if (ip->version != 4 || hlen < sizeof(*ip)) {
			if (inner)
				COUNT(malformed.bad_inner_ip);
			else
				COUNT(malformed.bad_ip);
			return PARSE_DONE;
		}
		if ((void *)ip + hlen > data_end) {
			if (inner)
				COUNT(malformed.trunc_inner_ip);
			else
				COUNT(malformed.trunc_ip);
			return PARSE_DONE;
		}
		family = AF_INET;
		__builtin_memcpy(src, &ip->saddr, 4);
		__builtin_memcpy(dst, &ip->daddr, 4);
		l4proto = ip->protocol;
		if (!inner && (bpf_ntohs(ip->frag_off) & (IP_MF | IP_OFFSET))) {
			COUNT(skipped.fragment);
			return PARSE_DONE;
		}
		off += hlen;
	} else {
		struct ipv6hdr *ip6 = data + off;

		if ((void *)(ip6 + 1) > data_end) {
			if (inner)
				COUNT(malformed.trunc_inner_ip);
			else
				COUNT(malformed.trunc_ip);
			return PARSE_DONE;
		}
		if (ip6->version != 6) {
			if (inner)
				COUNT(malformed.bad_inner_ip);
			else
				COUNT(malformed.bad_ip);
			return PARSE_DONE;
		}
		family = AF_INET6;
		__builtin_memcpy(src, &ip6->saddr, 16);
		__builtin_memcpy(dst, &ip6->daddr, 16);
		l4proto = ip6->nexthdr;
		off += sizeof(*ip6);
		if (!inner) {
			/* extension headers before UDP (rare for VXLAN, but legal) */
#pragma unroll
			for (int i = 0; i < IPV6_EXT_MAX; i++) {
				struct ipv6_opt_hdr *ext;

				if (l4proto == NEXTHDR_FRAGMENT) {
					COUNT(skipped.fragment);
					return PARSE_DONE;
				}
				if (l4proto != NEXTHDR_HOP && l4proto != NEXTHDR_ROUTING &&
				    l4proto != NEXTHDR_DEST)
					break;
				if (off > MAX_HDR_OFF) {
					COUNT(malformed.too_deep);
					return PARSE_DONE;
				}
				ext = data + off;
				if ((void *)(ext + 1) > data_end) {
					COUNT(malformed.trunc_ip);
					return PARSE_DONE;
				}
				l4proto = ext->nexthdr;
				off += (ext->hdrlen + 1) * 8;
			}
		}
	}

	if (inner) {
		st->inner_family = family;
		account(st);
		return PARSE_DONE;
	}
	st->outer_family = family;
	if (l4proto != IPPROTO_UDP) {
		/* still an extension header: more than IPV6_EXT_MAX of them */
		if (family == AF_INET6 &&
		    (l4proto == NEXTHDR_HOP || l4proto == NEXTHDR_ROUTING ||
		     l4proto == NEXTHDR_DEST))
			COUNT(malformed.too_deep);
		else
			COUNT(skipped.not_udp);
		return PARSE_DONE;
	}
	return parse_vxlan(data, data_end, st, off);
}

/* The scratch slot, if it belongs to this frame. */
static __always_inline struct parse_state *state_of(__u32 ifindex, __u32 len)
{
	__u32 zero = 0;
	struct parse_state *st = bpf_map_lookup_elem(&scratch, &zero);

	if (!st)
		return NULL;
	if (st->ifindex != ifindex || st->len != len) {
		COUNT(malformed.state_mismatch);
		return NULL;
	}
	return st;
}

/* ---- tc ------------------------------------------------------------------ */

static __always_inline int tc_start(struct __sk_buff *skb, __u8 dir)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;

	/* headers of locally built frames may sit partly in paged data */
	if (data_end - data < PULL_LEN && skb->len > data_end - data) {
		bpf_skb_pull_data(skb, skb->len < PULL_LEN ? skb->len : PULL_LEN);
		data = (void *)(long)skb->data;
		data_end = (void *)(long)skb->data_end;
	}
	if (start(data, data_end, dir, skb->ifindex, skb->len, skb->gso_segs) == 0) {
		bpf_tail_call(skb, &tc_parsers, PARSER_IP);
		COUNT(malformed.tailcall_failed);
	}
	return TC_ACT_UNSPEC;
}

SEC("tc")
int tunnelmon_tc_ingress(struct __sk_buff *skb)
{
	return tc_start(skb, DIR_INGRESS);
}

SEC("tc")
int tunnelmon_tc_egress(struct __sk_buff *skb)
{
	return tc_start(skb, DIR_EGRESS);
}

SEC("tc")
int tunnelmon_tc_ip(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct parse_state *st = state_of(skb->ifindex, skb->len);

	if (st && parse_ip(data, data_end, st) == PARSE_AGAIN) {
		bpf_tail_call(skb, &tc_parsers, PARSER_IP);
		COUNT(malformed.tailcall_failed);
	}
	return TC_ACT_UNSPEC;
}

/* ---- XDP (ingress only) ---------------------------------------------------- */

SEC("xdp")
int tunnelmon_xdp(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;

	if (start(data, data_end, DIR_INGRESS, ctx->ingress_ifindex,
		  data_end - data, 1) == 0) {
		bpf_tail_call(ctx, &xdp_parsers, PARSER_IP);
		COUNT(malformed.tailcall_failed);
	}
	return XDP_PASS;
}

SEC("xdp")
int tunnelmon_xdp_ip(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct parse_state *st = state_of(ctx->ingress_ifindex, data_end - data);

	if (st && parse_ip(data, data_end, st) == PARSE_AGAIN) {
		bpf_tail_call(ctx, &xdp_parsers, PARSER_IP);
		COUNT(malformed.tailcall_failed);
	}
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";
