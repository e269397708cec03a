// SPDX-License-Identifier: GPL-2.0
/*
 * tcpdrop - TCP packets the kernel dropped, with the reason it gives and the
 * kernel stack of the drop.
 *
 * Hook: skb:kfree_skb, which carries a drop reason (enum skb_drop_reason)
 * since Linux 5.17; BCC tcpdrop uses the same tracepoint on such kernels.
 * Variants: tp_btf, raw_tp, classic tracepoint.  Only real drops are kept
 * (reason above SKB_DROP_REASON_NOT_SPECIFIED, whose value CO-RE takes from
 * the running kernel: the numbering differs between kernels), and only TCP
 * over IPv4/IPv6, judged from the packet's own headers at skb->head +
 * network_header, so drops before any socket lookup (NO_SOCKET) are seen.
 *
 * The socket, when there is one, is the tracepoint's rx_sk (the receiving
 * socket, newer kernels) or else skb->sk (the sending socket: set on
 * transmit, and still set on a packet that crossed a veth pair).  The
 * network namespace (for --netns-id) is the device's, else the socket's.
 * The stack is taken whole (no frames skipped); user space removes the
 * tracing frames above the function that dropped the packet.
 */
#include "events.h"

#define MAX_STACK 48

struct tcpdrop_event {
	__u64 ts_ns;
	__u64 skaddr;		/* 0: no socket */
	__u32 netns;		/* inode number of the network namespace */
	__u32 pid;
	__u32 reason;		/* enum skb_drop_reason */
	__s32 stack_bytes;	/* bpf_get_stack()'s result */
	__u16 family;
	__u16 sport;
	__u16 dport;
	__u8 state;		/* 0: no socket */
	__u8 tcpflags;
	__u8 saddr[16];
	__u8 daddr[16];
	__u64 stack[MAX_STACK];
};

const volatile __u16 target_family = 0;	/* 0: both */
const volatile __u32 target_netns = 0;		/* 0: all */

/* Anchor the event type in BTF so user space can decode it. */
struct tcpdrop_event _event_type = {};

static __always_inline int on_drop(void *ctx, const struct sk_buff *skb,
				   __u32 reason, const struct sock *sk)
{
	struct tcpdrop_event *e;
	unsigned char *head;
	__u16 nh, family;
	__u32 thoff, netns;
	__u8 first, flags;
	struct tcphdr th;
	__u64 now;

	if (reason <= bpf_core_enum_value(enum skb_drop_reason,
					  SKB_DROP_REASON_NOT_SPECIFIED))
		return 0;
	head = BPF_CORE_READ(skb, head);
	nh = BPF_CORE_READ(skb, network_header);
	if (nh == (__u16)~0U)	/* no network header set yet */
		return 0;
	if (bpf_probe_read_kernel(&first, 1, head + nh))
		return 0;
	if ((first >> 4) == 4) {
		struct iphdr ip;

		if (bpf_probe_read_kernel(&ip, sizeof(ip), head + nh) ||
		    ip.protocol != IPPROTO_TCP)
			return 0;
		family = AF_INET;
		thoff = nh + ip.ihl * 4;
	} else if ((first >> 4) == 6) {
		struct ipv6hdr ip6;

		if (bpf_probe_read_kernel(&ip6, sizeof(ip6), head + nh) ||
		    ip6.nexthdr != IPPROTO_TCP)
			return 0;
		family = AF_INET6;
		thoff = nh + sizeof(ip6);
	} else {
		return 0;
	}
	if (target_family && family != target_family)
		return 0;
	if (bpf_probe_read_kernel(&th, sizeof(th), head + thoff))
		return 0;
	/* the flag byte (CWR..FIN) is byte 13 of the TCP header */
	bpf_probe_read_kernel(&flags, 1, head + thoff + 13);

	if (!sk)
		sk = BPF_CORE_READ(skb, sk);
	netns = BPF_CORE_READ(skb, dev, nd_net.net, ns.inum);
	if (!netns && sk)
		netns = BPF_CORE_READ(sk, __sk_common.skc_net.net, ns.inum);
	if (target_netns && netns != target_netns)
		return 0;
	now = bpf_ktime_get_ns();
	e = event_reserve(struct tcpdrop_event);
	if (!e)
		return 0;
	e->ts_ns = now;
	e->skaddr = (__u64)sk;
	e->netns = netns;
	e->pid = bpf_get_current_pid_tgid() >> 32;
	e->reason = reason;
	e->family = family;
	e->sport = bpf_ntohs(th.source);
	e->dport = bpf_ntohs(th.dest);
	e->state = sk ? BPF_CORE_READ(sk, __sk_common.skc_state) : 0;
	e->tcpflags = flags;
	__builtin_memset(e->saddr, 0, 16);
	__builtin_memset(e->daddr, 0, 16);
	if (family == AF_INET) {
		bpf_probe_read_kernel(e->saddr, 4, head + nh + offsetof(struct iphdr, saddr));
		bpf_probe_read_kernel(e->daddr, 4, head + nh + offsetof(struct iphdr, daddr));
	} else {
		bpf_probe_read_kernel(e->saddr, 16, head + nh + offsetof(struct ipv6hdr, saddr));
		bpf_probe_read_kernel(e->daddr, 16, head + nh + offsetof(struct ipv6hdr, daddr));
	}
	e->stack_bytes = bpf_get_stack(ctx, e->stack, sizeof(e->stack), 0);
	event_submit(e, now);
	return 0;
}

/*
 * tp_btf/raw_tp: kfree_skb(skb, location, reason[, rx_sk]).  rx_sk came
 * with the classic tracepoint's rx_sk field; where it is missing, the CO-RE
 * check turns the read of the fourth argument into dead code.
 */
static __always_inline int from_args(u64 *ctx)
{
	const struct sock *rx_sk = 0;

	if (!bpf_core_field_exists(struct trace_event_raw_kfree_skb, reason))
		return 0;
	if (bpf_core_field_exists(struct trace_event_raw_kfree_skb, rx_sk))
		rx_sk = (const struct sock *)ctx[3];
	return on_drop(ctx, (const struct sk_buff *)ctx[0], (__u32)ctx[2], rx_sk);
}

SEC("tp_btf/kfree_skb")
int tcpdrop_tp_btf(u64 *ctx)
{
	return from_args(ctx);
}

SEC("raw_tp/kfree_skb")
int tcpdrop_raw_tp(u64 *ctx)
{
	return from_args(ctx);
}

SEC("tracepoint/skb/kfree_skb")
int tcpdrop_tracepoint(struct trace_event_raw_kfree_skb *ctx)
{
	const struct sock *rx_sk = 0;

	if (!bpf_core_field_exists(ctx->reason))
		return 0;
	if (bpf_core_field_exists(ctx->rx_sk))
		rx_sk = ctx->rx_sk;
	return on_drop(ctx, ctx->skbaddr, ctx->reason, rx_sk);
}

char LICENSE[] SEC("license") = "GPL";
