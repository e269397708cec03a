// SPDX-License-Identifier: GPL-2.0
/*
 * vnet - per-hop packet records for virtualized networks (vNetTracer-style).
 *
 * One copy of this object is loaded per trace point (a device, in a network
 * namespace, in one direction), with the point's identity and the packet
 * selector in rodata; every copy writes into the same ring buffer (user space
 * creates it once and swaps it in before load), so points come and go while
 * the others keep running.
 *
 * Hooks, one per method of a point:
 *  - tc clsact ingress/egress (vnet_tc): returns TC_ACT_UNSPEC, so filters
 *    after ours (other points on the same hook) still run;
 *  - XDP (vnet_xdp, ingress only): returns XDP_PASS; reads the frame with
 *    bpf_xdp_load_bytes (5.18+), before that as kernel memory;
 *  - the device tracepoints net_dev_queue (egress) and netif_receive_skb
 *    (ingress), as tp_btf, raw_tp or classic tracepoint: they fire for every
 *    device of every namespace, so the point's ifindex and netns inode are
 *    compared first.
 *
 * Packet identity: the skb pointer is no identity (it changes when XDP makes
 * veth copy the packet, and across hosts), so the ID is a hash of header
 * fields no hop rewrites: addresses, protocol, ports, IP length, IPv4 id and
 * fragment word (IPv6 flow label), TCP seq/ack/flags, and for UDP and ICMP the
 * first 8 bytes after the L4 header.  TTL, TOS and checksums are left out.
 * A VXLAN packet (UDP to one of vxlan_ports) is identified by its INNER
 * headers, so the same packet has the same ID before, inside and after the
 * tunnel.  The selector and the 1-in-N flow sampling also look at the inner
 * headers; sampling hashes the flow symmetrically, so both directions of a
 * sampled flow are kept (the skew estimate needs both).
 */
#include "events.h"

#define TC_ACT_UNSPEC (-1)
#define ETH_HLEN 14
#define ETH_P_IP 0x0800
#define ETH_P_IPV6 0x86DD
#define ETH_P_8021Q 0x8100
#define ETH_P_8021AD 0x88A8
#define VXLAN_HLEN 8
#ifndef IPPROTO_ICMP
#define IPPROTO_ICMP 1
#endif
#ifndef IPPROTO_ICMPV6
#define IPPROTO_ICMPV6 58
#endif

#define MAX_PFX 16		/* address prefixes in the selector */
#define MAX_VXLAN_PORTS 4

/* selector roles: a prefix or port may match either end, the source, or the
 * destination; each role that is present must be matched by one entry. */
#define ROLE_ANY 1
#define ROLE_SRC 2
#define ROLE_DST 4

struct vnet_record {
	__u64 ts_ns;		/* bpf_ktime_get_ns() */
	__u64 pkt_id;		/* hash of the invariant (inner) header fields */
	__u32 point;		/* the point's id (user space maps it to a label) */
	__u32 netns;		/* inode of the point's network namespace */
	__u32 ifindex;
	__u32 len;		/* bytes of the packet as this hook sees it */
	__u32 ip_len;		/* length of the identified (inner) IP packet */
	__u32 cpu;
	__u16 sport;
	__u16 dport;
	__u8 family;
	__u8 proto;
	__u8 encap;		/* 1: seen VXLAN-encapsulated at this point */
	__u8 dir;		/* 0 ingress, 1 egress */
	__u8 saddr[16];
	__u8 daddr[16];
};

/* The point, set by the loader. */
const volatile __u32 point_id = 0;
const volatile __u32 point_ifindex = 0;
const volatile __u32 point_netns = 0;
const volatile __u8 point_dir = 0;
const volatile __u8 has_eth = 1;	/* tc/XDP: frames start with Ethernet */

/* The selector and sampling, the same for every point. */
const volatile __u8 sel_proto = 0;	/* 0: any */
const volatile __u32 pfx_addr[MAX_PFX * 4] = {};
const volatile __u32 pfx_mask[MAX_PFX * 4] = {};
const volatile __u8 pfx_family[MAX_PFX] = {};
const volatile __u8 pfx_role[MAX_PFX] = {};
const volatile __u32 n_pfx = 0;
const volatile __u8 pfx_roles = 0;	/* OR of the roles present */
const volatile __u16 port_num[MAX_PORTS] = {};
const volatile __u8 port_role[MAX_PORTS] = {};
const volatile __u32 n_port = 0;
const volatile __u8 port_roles = 0;
const volatile __u32 sample_n = 1;	/* keep 1 in N flows */
const volatile __u16 vxlan_ports[MAX_VXLAN_PORTS] = { 4789, 8472 };
const volatile __u32 n_vxlan_ports = 2;

struct vnet_record _record_type = {};

/* Where packet bytes come from: the helper differs per hook, the parser not. */
enum src_kind { SRC_TC, SRC_XDP, SRC_KERN };

struct src {
	void *ctx;		/* __sk_buff or xdp_md */
	const __u8 *base;	/* SRC_KERN: the network header in skb->head */
};

/* The parsed (inner, when encapsulated) packet. */
struct pkt {
	__u8 saddr[16];
	__u8 daddr[16];
	__u32 ip_len;
	__u32 ipid;		/* v4: id | frag_off << 16; v6: flow label */
	__u32 seq;
	__u32 ack;
	__u64 extra;		/* UDP/ICMP: 8 bytes after the L4 header */
	__u16 sport;
	__u16 dport;
	__u8 family;
	__u8 proto;
	__u8 tcpflags;
	__u8 encap;
};

/* n bytes of an XDP frame at off: by the helper where it exists (5.18+,
 * fragments too), else read as the kernel memory it is (the linear part) */
static __always_inline int xdp_load(struct xdp_md *ctx, __u32 off, void *dst, __u32 n)
{
	__u64 data, end;

	if (bpf_core_enum_value_exists(enum bpf_func_id, BPF_FUNC_xdp_load_bytes))
		return bpf_xdp_load_bytes(ctx, off, dst, n);
	data = ctx->data;
	end = ctx->data_end;
	if (data + off + n > end)
		return -1;
	return bpf_probe_read_kernel(dst, n, (const void *)(long)(data + off));
}

static __always_inline int load(int kind, struct src *s, __u32 off, void *dst, __u32 n)
{
	if (kind == SRC_TC)
		return bpf_skb_load_bytes(s->ctx, off, dst, n);
	if (kind == SRC_XDP)
		return xdp_load(s->ctx, off, dst, n);
	return bpf_probe_read_kernel(dst, n, s->base + off);
}

struct l4hdr {			/* the first 14 bytes of TCP; UDP and ICMP use 8 */
	__be16 sport;
	__be16 dport;
	__be32 seq;
	__be32 ack;
	__u8 doff;
	__u8 flags;
};

/*
 * Parse an IP packet at off (eth_proto in network order).  Returns the offset
 * of the UDP payload when the packet is VXLAN (for the caller to go inside),
 * 0 when done, -1 when not IP.
 */
static __always_inline int parse_ip(int kind, struct src *s, __u32 off, __be16 eth_proto,
				    struct pkt *p)
{
	struct l4hdr l4 = {};
	__u32 l4off;
	bool frag = false;

	if (eth_proto == bpf_htons(ETH_P_IP)) {
		struct iphdr ip;

		if (load(kind, s, off, &ip, sizeof(ip)) || ip.version != 4 || ip.ihl < 5)
			return -1;
		p->family = AF_INET;
		__builtin_memset(p->saddr, 0, 32);
		__builtin_memcpy(p->saddr, &ip.saddr, 4);
		__builtin_memcpy(p->daddr, &ip.daddr, 4);
		p->ip_len = bpf_ntohs(ip.tot_len);
		p->ipid = bpf_ntohs(ip.id) | ((__u32)bpf_ntohs(ip.frag_off) << 16);
		p->proto = ip.protocol;
		frag = bpf_ntohs(ip.frag_off) & 0x1fff;	/* not the first fragment */
		l4off = off + ip.ihl * 4;
	} else if (eth_proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr ip6;

		if (load(kind, s, off, &ip6, sizeof(ip6)) || ip6.version != 6)
			return -1;
		p->family = AF_INET6;
		__builtin_memcpy(p->saddr, &ip6.saddr, 16);
		__builtin_memcpy(p->daddr, &ip6.daddr, 16);
		p->ip_len = bpf_ntohs(ip6.payload_len) + sizeof(ip6);
		p->ipid = ((__u32)(ip6.flow_lbl[0] & 0x0f) << 16) |
			  ((__u32)ip6.flow_lbl[1] << 8) | ip6.flow_lbl[2];
		l4off = off + sizeof(ip6);
		p->proto = ip6.nexthdr;
		/* skip hop-by-hop, routing, fragment and destination options */
#pragma unroll
		for (int i = 0; i < 4; i++) {
			struct { __u8 next; __u8 len; __be16 frag_off; } ext;

			if (p->proto != 0 && p->proto != 43 && p->proto != 44 && p->proto != 60)
				break;
			if (load(kind, s, l4off, &ext, sizeof(ext)))
				return -1;
			if (p->proto == 44) {
				frag = bpf_ntohs(ext.frag_off) & 0xfff8;
				l4off += 8;
			} else {
				l4off += (ext.len + 1) * 8;
			}
			p->proto = ext.next;
		}
	} else {
		return -1;
	}
	p->sport = p->dport = 0;
	p->seq = p->ack = 0;
	p->tcpflags = 0;
	p->extra = 0;
	if (frag)
		return 0;

	if (p->proto == IPPROTO_TCP) {
		if (load(kind, s, l4off, &l4, sizeof(l4)))
			return 0;
		p->seq = bpf_ntohl(l4.seq);
		p->ack = bpf_ntohl(l4.ack);
		p->tcpflags = l4.flags;
	} else if (p->proto == IPPROTO_UDP) {
		if (load(kind, s, l4off, &l4, 8))
			return 0;
		/* may be shorter than 8 bytes: then extra stays 0 */
		load(kind, s, l4off + 8, &p->extra, sizeof(p->extra));
	} else if (p->proto == IPPROTO_ICMP || p->proto == IPPROTO_ICMPV6) {
		load(kind, s, l4off, &p->extra, sizeof(p->extra));
		return 0;
	} else {
		return 0;
	}
	p->sport = bpf_ntohs(l4.sport);
	p->dport = bpf_ntohs(l4.dport);

	if (p->proto == IPPROTO_UDP && !p->encap) {
#pragma unroll
		for (int i = 0; i < MAX_VXLAN_PORTS; i++)
			if (i < n_vxlan_ports && p->dport == vxlan_ports[i])
				return l4off + 8;
	}
	return 0;
}

/* Parse the frame: Ethernet (+ up to two VLAN tags) or bare IP, then IP, then
 * the inner frame of a VXLAN packet.  0 when p holds an IP packet. */
static __always_inline int parse(int kind, struct src *s, __u32 off, __be16 eth_proto,
				 bool eth, struct pkt *p)
{
	struct ethhdr eh;
	int inner;

	p->encap = 0;
	if (eth) {
		if (load(kind, s, off, &eh, sizeof(eh)))
			return -1;
		eth_proto = eh.h_proto;
		off += ETH_HLEN;
#pragma unroll
		for (int i = 0; i < 2; i++) {
			if (eth_proto != bpf_htons(ETH_P_8021Q) && eth_proto != bpf_htons(ETH_P_8021AD))
				break;
			if (load(kind, s, off + 2, &eth_proto, sizeof(eth_proto)))
				return -1;
			off += 4;
		}
	}
	inner = parse_ip(kind, s, off, eth_proto, p);
	if (inner <= 0)
		return inner;
	/* VXLAN: 8-byte header, then the inner Ethernet frame */
	if (load(kind, s, inner + VXLAN_HLEN, &eh, sizeof(eh)))
		return 0;	/* too short: keep the outer packet */
	{
		struct pkt outer = *p;

		p->encap = 1;
		if (parse_ip(kind, s, inner + VXLAN_HLEN + ETH_HLEN, eh.h_proto, p) < 0) {
			*p = outer;	/* not IP inside: identify the outer packet */
			p->encap = 0;
		}
	}
	return 0;
}

/* Does addr (16 bytes, v4 in the first 4) fall in prefix i? */
static __always_inline bool pfx_match(int i, const __u8 *addr, __u8 family)
{
	__u32 w;

	if (pfx_family[i] != family)
		return false;
#pragma unroll
	for (int k = 0; k < 4; k++) {
		__builtin_memcpy(&w, addr + 4 * k, 4);
		if ((w & pfx_mask[i * 4 + k]) != pfx_addr[i * 4 + k])
			return false;
	}
	return true;
}

static __always_inline __u64 mix(__u64 h, __u64 v)
{
	h ^= v;
	h *= 0xff51afd7ed558ccdULL;
	return h ^ (h >> 32);
}

static __always_inline __u64 fmix(__u64 h)
{
	h ^= h >> 33;
	h *= 0xc4ceb9fe1a85ec53ULL;
	return h ^ (h >> 33);
}

static __always_inline __u64 addr_hash(__u64 h, const __u8 *a)
{
	__u64 lo, hi;

	__builtin_memcpy(&lo, a, 8);
	__builtin_memcpy(&hi, a + 8, 8);
	return mix(mix(h, lo), hi);
}

static __always_inline bool selected(const struct pkt *p)
{
	__u8 hit = 0;

	if (sel_proto && p->proto != sel_proto)
		return false;
	if (n_pfx) {
#pragma unroll
		for (int i = 0; i < MAX_PFX; i++) {
			if (i >= n_pfx)
				break;
			if ((pfx_role[i] & (ROLE_ANY | ROLE_SRC)) && pfx_match(i, p->saddr, p->family))
				hit |= pfx_role[i];
			if ((pfx_role[i] & (ROLE_ANY | ROLE_DST)) && pfx_match(i, p->daddr, p->family))
				hit |= pfx_role[i];
		}
		if ((hit & pfx_roles) != pfx_roles)
			return false;
	}
	if (n_port) {
		hit = 0;
#pragma unroll
		for (int i = 0; i < MAX_PORTS; i++) {
			if (i >= n_port)
				break;
			if ((port_role[i] & (ROLE_ANY | ROLE_SRC)) && port_num[i] == p->sport)
				hit |= port_role[i];
			if ((port_role[i] & (ROLE_ANY | ROLE_DST)) && port_num[i] == p->dport)
				hit |= port_role[i];
		}
		if ((hit & port_roles) != port_roles)
			return false;
	}
	if (sample_n > 1) {
		/* symmetric in the two ends: both directions of a flow share it */
		__u64 a = mix(addr_hash(0, p->saddr), p->sport);
		__u64 b = mix(addr_hash(0, p->daddr), p->dport);
		__u64 h = fmix((a ^ b) + p->proto);

		if (h % sample_n)
			return false;
	}
	return true;
}

static __always_inline __u64 packet_id(const struct pkt *p)
{
	__u64 h = 0x9e3779b97f4a7c15ULL;

	h = addr_hash(h, p->saddr);
	h = addr_hash(h, p->daddr);
	h = mix(h, ((__u64)p->family << 40) | ((__u64)p->proto << 32) |
		   ((__u64)p->sport << 16) | p->dport);
	h = mix(h, ((__u64)p->ip_len << 32) | p->ipid);
	h = mix(h, ((__u64)p->seq << 32) | p->ack);
	h = mix(h, p->tcpflags);
	h = mix(h, p->extra);
	return fmix(h);
}

static __always_inline void emit(const struct pkt *p, __u32 len)
{
	struct vnet_record *r;
	__u64 now = bpf_ktime_get_ns();

	r = event_reserve(struct vnet_record);
	if (!r)
		return;
	r->ts_ns = now;
	r->pkt_id = packet_id(p);
	r->point = point_id;
	r->netns = point_netns;
	r->ifindex = point_ifindex;
	r->len = len;
	r->ip_len = p->ip_len;
	r->cpu = bpf_get_smp_processor_id();
	r->sport = p->sport;
	r->dport = p->dport;
	r->family = p->family;
	r->proto = p->proto;
	r->encap = p->encap;
	r->dir = point_dir;
	__builtin_memcpy(r->saddr, p->saddr, 16);
	__builtin_memcpy(r->daddr, p->daddr, 16);
	event_submit(r, now);
}

SEC("tc")
int vnet_tc(struct __sk_buff *skb)
{
	struct src s = { .ctx = skb };
	struct pkt p;

	if (parse(SRC_TC, &s, 0, skb->protocol, has_eth, &p) == 0 && selected(&p))
		emit(&p, skb->len);
	return TC_ACT_UNSPEC;
}

SEC("xdp")
int vnet_xdp(struct xdp_md *ctx)
{
	struct src s = { .ctx = ctx };
	struct pkt p;
	__be16 proto = bpf_htons(ETH_P_IP);
	__u8 first;

	if (!has_eth) {	/* bare IP: the version nibble says which */
		if (xdp_load(ctx, 0, &first, 1))
			return XDP_PASS;
		if ((first >> 4) == 6)
			proto = bpf_htons(ETH_P_IPV6);
	}
	if (parse(SRC_XDP, &s, 0, proto, has_eth, &p) == 0 && selected(&p))
		emit(&p, ctx->data_end - ctx->data);
	return XDP_PASS;
}

/* The device tracepoints: the skb's network header is set at both. */
static __always_inline int from_skb(struct sk_buff *skb)
{
	struct net_device *dev = BPF_CORE_READ(skb, dev);
	struct src s = {};
	struct pkt p;
	__u16 nh;

	if (BPF_CORE_READ(dev, ifindex) != point_ifindex)
		return 0;
	if (BPF_CORE_READ(dev, nd_net.net, ns.inum) != point_netns)
		return 0;
	nh = BPF_CORE_READ(skb, network_header);
	if (nh == (__u16)~0U)
		return 0;
	s.base = BPF_CORE_READ(skb, head) + nh;
	if (parse(SRC_KERN, &s, 0, BPF_CORE_READ(skb, protocol), false, &p) == 0 && selected(&p))
		emit(&p, BPF_CORE_READ(skb, len));
	return 0;
}

TP_BTF_AND_RAW_TP("net_dev_queue", vnet_tp_btf_queue, vnet_raw_tp_queue,
		  from_skb(skb),
		  struct sk_buff *skb)

TP_BTF_AND_RAW_TP("netif_receive_skb", vnet_tp_btf_rx, vnet_raw_tp_rx,
		  from_skb(skb),
		  struct sk_buff *skb)

SEC("tracepoint/net/net_dev_queue")
int vnet_tracepoint_queue(struct trace_event_raw_net_dev_template *ctx)
{
	return from_skb(ctx->skbaddr);
}

SEC("tracepoint/net/netif_receive_skb")
int vnet_tracepoint_rx(struct trace_event_raw_net_dev_template *ctx)
{
	return from_skb(ctx->skbaddr);
}

char LICENSE[] SEC("license") = "GPL";
