// SPDX-License-Identifier: GPL-2.0
/*
 * ipecn - received IP packets carrying an ECN mark: Congestion Experienced
 * (ECN field 3: the v4 TOS or v6 traffic class & 3), or with -a any ECN
 * codepoint (ECT(0), ECT(1), CE).
 *
 * Variants, best first:
 *  - kprobe ip_rcv / ipv6_rcv, as the book's ipecn.bt (IPv4 only there);
 *  - tp_btf / raw_tp / classic tracepoint net:netif_receive_skb: every
 *    packet a device hands to the stack, before the IP layer (so also
 *    packets that are then forwarded or dropped).
 */
#include "events.h"
#include "skbinfo.h"

#define ECN_CE 3

struct ipecn_event {
	__u64 ts_ns;
	__u32 netns;
	__u32 ifindex;
	__u16 family;
	__u16 len;		/* IP length (v4 total length, v6 payload + 40) */
	__u16 sport;		/* TCP/UDP, host order; 0 otherwise */
	__u16 dport;
	__u8 proto;
	__u8 ecn;		/* 1 ECT(1), 2 ECT(0), 3 CE */
	__u8 dscp;
	__u8 pad;
	__u8 saddr[16];
	__u8 daddr[16];
	char dev[PT_IFNAMSIZ];
};

const volatile bool any_ect = false;	/* -a: ECT(0)/ECT(1) too, not only CE */
const volatile __u16 target_family = 0;
const volatile __u32 target_netns = 0;

struct ipecn_event _event_type = {};

static __always_inline int on_receive(const struct sk_buff *skb, const unsigned char *nh)
{
	struct ipecn_event *e;
	struct pkt_ip ip;
	const struct net_device *dev;
	__u8 ecn;
	__u32 netns;
	__u64 now;

	if (!ip_header_at(nh, &ip))
		return 0;
	ecn = ip.dsfield & 3;
	if (any_ect ? ecn == 0 : ecn != ECN_CE)
		return 0;
	if (target_family && ip.family != target_family)
		return 0;
	dev = BPF_CORE_READ(skb, dev);
	netns = dev_netns(dev);
	if (target_netns && netns != target_netns)
		return 0;
	now = bpf_ktime_get_ns();
	e = event_reserve(struct ipecn_event);
	if (!e)
		return 0;
	e->ts_ns = now;
	e->netns = netns;
	e->ifindex = dev ? BPF_CORE_READ(dev, ifindex) : 0;
	e->family = ip.family;
	e->len = ip.len;
	l4_ports(nh + ip.l4off, ip.proto, &e->sport, &e->dport);
	e->proto = ip.proto;
	e->ecn = ecn;
	e->dscp = ip.dsfield >> 2;
	e->pad = 0;
	__builtin_memcpy(e->saddr, ip.saddr, 16);
	__builtin_memcpy(e->daddr, ip.daddr, 16);
	dev_name(dev, e->dev);
	event_submit(e, now);
	return 0;
}

/* At ip_rcv the network header is set and data points at it. */
SEC("kprobe/ip_rcv")
int BPF_KPROBE(ipecn_kprobe_ip_rcv, struct sk_buff *skb)
{
	return on_receive(skb, skb_rx_nh(skb));
}

SEC("kprobe/ipv6_rcv")
int BPF_KPROBE(ipecn_kprobe_ipv6_rcv, struct sk_buff *skb)
{
	return on_receive(skb, skb_rx_nh(skb));
}

static __always_inline int from_device(const struct sk_buff *skb)
{
	__u16 proto = skb_ethertype(skb);

	if (proto != PT_ETH_P_IP && proto != PT_ETH_P_IPV6)
		return 0;
	return on_receive(skb, skb_rx_nh(skb));
}

TP_BTF_AND_RAW_TP("netif_receive_skb", ipecn_tp_btf, ipecn_raw_tp,
		  from_device(skb),
		  struct sk_buff *skb)

SEC("tracepoint/net/netif_receive_skb")
int ipecn_tracepoint(struct trace_event_raw_net_dev_template *ctx)
{
	return from_device(ctx->skbaddr);
}

char LICENSE[] SEC("license") = "GPL";
