/* SPDX-License-Identifier: GPL-2.0 */
/*
 * skbinfo.h - facts about a packet from its struct sk_buff, for the hooks
 * that are handed an skb (tracepoints, tp_btf, raw_tp, kprobes) rather than a
 * packet context (tc, XDP): its IP header, transport ports, device and
 * network namespace.  Shared by superping, ipecn, skbdrop, tcpdrop and the
 * device tools (netsize, nettxlat, qdisclat).
 *
 * Where the network header is depends on the hook point:
 *  - on the transmit path (ip_send_skb, net_dev_queue, ...) and from ip_rcv
 *    on, skb->head + skb->network_header (skb_nh());
 *  - at netif_receive_skb, skb->data: the driver has pulled the link header,
 *    but network_header is reset only after the tracepoint (skb_rx_nh()).
 * All reads go through bpf_probe_read_kernel (BPF_CORE_READ), so the same
 * code serves tp_btf, raw_tp, classic tracepoints and kprobes.
 */
#ifndef __PYTRACE_SKBINFO_H
#define __PYTRACE_SKBINFO_H

#include "pytrace.h"

#define PT_ETH_P_IP 0x0800
#define PT_ETH_P_IPV6 0x86DD
#define PT_IPPROTO_ICMP 1
#define PT_IPPROTO_ICMPV6 58
#define PT_IFNAMSIZ 16

/* The IP layer of a packet. */
struct pkt_ip {
	__u16 family;		/* AF_INET, AF_INET6; 0: not IP */
	__u8 proto;		/* transport protocol (v6: the first next header) */
	__u8 dsfield;		/* v4 TOS, v6 traffic class: DSCP << 2 | ECN */
	__u16 l4off;		/* transport header offset from the network header */
	__u16 len;		/* v4 total length, v6 payload length + 40 */
	__u8 saddr[16];		/* v4 in the first 4 bytes */
	__u8 daddr[16];
};

/* The network header of an skb on the transmit path, or after ip_rcv; NULL if unset. */
static __always_inline const unsigned char *skb_nh(const struct sk_buff *skb)
{
	__u16 nh = BPF_CORE_READ(skb, network_header);

	if (nh == (__u16)~0U)
		return NULL;
	return BPF_CORE_READ(skb, head) + nh;
}

/* The network header of an skb at netif_receive_skb (see above). */
static __always_inline const unsigned char *skb_rx_nh(const struct sk_buff *skb)
{
	return BPF_CORE_READ(skb, data);
}

/* skb->protocol as an ethertype in host order (0x0800, 0x86DD, ...). */
static __always_inline __u16 skb_ethertype(const struct sk_buff *skb)
{
	return bpf_ntohs(BPF_CORE_READ(skb, protocol));
}

/*
 * Parse the IPv4 or IPv6 header at nh (a kernel pointer), judged by its
 * version nibble.  Returns the family (0 if nh is not an IP header).
 */
static __always_inline int ip_header_at(const unsigned char *nh, struct pkt_ip *p)
{
	__u8 first;

	p->family = 0;
	if (!nh || bpf_probe_read_kernel(&first, 1, nh))
		return 0;
	if ((first >> 4) == 4) {
		struct iphdr ip;

		if (bpf_probe_read_kernel(&ip, sizeof(ip), nh) || ip.ihl < 5)
			return 0;
		p->proto = ip.protocol;
		p->dsfield = ip.tos;
		p->l4off = ip.ihl * 4;
		p->len = bpf_ntohs(ip.tot_len);
		__builtin_memset(p->saddr, 0, 16);
		__builtin_memset(p->daddr, 0, 16);
		__builtin_memcpy(p->saddr, &ip.saddr, 4);
		__builtin_memcpy(p->daddr, &ip.daddr, 4);
		p->family = AF_INET;
	} else if ((first >> 4) == 6) {
		struct ipv6hdr ip6;

		if (bpf_probe_read_kernel(&ip6, sizeof(ip6), nh))
			return 0;
		p->proto = ip6.nexthdr;
		/* version:4 | traffic class:8 | flow label:20 */
		p->dsfield = (ip6.priority << 4) | (ip6.flow_lbl[0] >> 4);
		p->l4off = sizeof(ip6);
		p->len = bpf_ntohs(ip6.payload_len) + sizeof(ip6);
		__builtin_memcpy(p->saddr, &ip6.saddr, 16);
		__builtin_memcpy(p->daddr, &ip6.daddr, 16);
		p->family = AF_INET6;
	}
	return p->family;
}

/* TCP/UDP ports in host order from the transport header at l4 (0 for other protocols). */
static __always_inline void l4_ports(const unsigned char *l4, __u8 proto, __u16 *sport, __u16 *dport)
{
	__be16 ports[2] = {};

	*sport = *dport = 0;
	if (proto != IPPROTO_TCP && proto != IPPROTO_UDP)
		return;
	if (bpf_probe_read_kernel(ports, sizeof(ports), l4))
		return;
	*sport = bpf_ntohs(ports[0]);
	*dport = bpf_ntohs(ports[1]);
}

/* The network namespace (inode number) of a net_device. */
static __always_inline __u32 dev_netns(const struct net_device *dev)
{
	return dev ? BPF_CORE_READ(dev, nd_net.net, ns.inum) : 0;
}

/*
 * The network namespace of a packet: its device's, else its socket's
 * (sk may be NULL: then skb->sk, set on transmit); 0 if neither is known.
 */
static __always_inline __u32 skb_netns(const struct sk_buff *skb, const struct sock *sk)
{
	__u32 ns = dev_netns(BPF_CORE_READ(skb, dev));

	if (!ns) {
		if (!sk)
			sk = BPF_CORE_READ(skb, sk);
		if (sk)
			ns = BPF_CORE_READ(sk, __sk_common.skc_net.net, ns.inum);
	}
	return ns;
}

/* A device's name into name[PT_IFNAMSIZ] ("" if dev is NULL). */
static __always_inline void dev_name(const struct net_device *dev, char *name)
{
	name[0] = 0;
	if (dev)
		bpf_probe_read_kernel_str(name, PT_IFNAMSIZ, dev->name);
}

/* A device as the device tools key it: name and network namespace (ifindex is per namespace). */
struct dev_id {
	char name[PT_IFNAMSIZ];
	__u32 netns;
};

static __always_inline void dev_id_of(const struct net_device *dev, struct dev_id *id)
{
	dev_name(dev, id->name);
	id->netns = dev_netns(dev);
}

/* A classic tracepoint's __data_loc string (e.g. the device name) into buf[PT_IFNAMSIZ]. */
static __always_inline void tp_data_loc_str(const void *ctx, __u32 loc, char *buf)
{
	buf[0] = 0;
	bpf_probe_read_kernel_str(buf, PT_IFNAMSIZ, (const char *)ctx + (loc & 0xFFFF));
}

/*
 * --dev NAME / --netns-id filters: a tool declares them as
 *   const volatile char targ_dev[PT_IFNAMSIZ]; const volatile __u32 targ_netns;
 * (empty name / 0: any).
 */
static __always_inline bool dev_wanted(const volatile char *want, __u32 want_netns,
				       const struct dev_id *id)
{
	if (want_netns && id->netns != want_netns)
		return false;
	if (!want[0])
		return true;
#pragma unroll
	for (int i = 0; i < PT_IFNAMSIZ; i++) {
		if (want[i] != id->name[i])
			return false;
		if (!want[i])
			break;
	}
	return true;
}

#endif /* __PYTRACE_SKBINFO_H */
