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
 * network namespace (for --netns, filter.h's pt_netns) is the device's, else
 * the socket's; the cgroup (--cgroup, --container) is the socket's: drops of
 * packets without one are left out while such a filter is on.
 * The stack is taken whole (no frames skipped); user space removes the
 * tracing frames above the function that dropped the packet.
 */
#include "events.h"
#include "kfreeskb.h"
#include "filter.h"

#define MAX_STACK 48

struct tcpdrop_event {
	__u64 ts_ns;
	__u64 skaddr;		/* 0: no socket */
	__u64 cgroup_id;	/* the socket's (filter.h labels); 0: none */
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

/* Anchor the event type in BTF so user space can decode it. */
struct tcpdrop_event _event_type = {};

static __always_inline int on_drop(void *ctx, const struct kfree_skb_call *c)
{
	const struct sk_buff *skb = c->skb;	/* (a local: BPF_CORE_READ must not see c->) */
	const struct sock *sk = c->rx_sk;
	const unsigned char *nh;
	struct tcpdrop_event *e;
	struct pkt_ip ip;
	struct tcphdr th;
	__u32 netns;
	__u8 flags;
	__u64 now;

	if (c->reason <= drop_reason_unspecified())
		return 0;
	nh = skb_nh(skb);
	if (!ip_header_at(nh, &ip) || ip.proto != IPPROTO_TCP)
		return 0;
	if (target_family && ip.family != target_family)
		return 0;
	if (bpf_probe_read_kernel(&th, sizeof(th), nh + ip.l4off))
		return 0;
	/* the flag byte (CWR..FIN) is byte 13 of the TCP header */
	bpf_probe_read_kernel(&flags, 1, nh + ip.l4off + 13);

	if (!sk)
		sk = BPF_CORE_READ(skb, sk);
	netns = skb_netns(skb, sk);
	if (pt_on) {
		if (pt_netns && netns != pt_netns)
			return 0;
		if (pt_by_any_cgroup && (!sk || !pt_sk_cgroup_wanted(sk)))
			return 0;
	}
	now = bpf_ktime_get_ns();
	e = event_reserve(struct tcpdrop_event);
	if (!e)
		return 0;
	e->ts_ns = now;
	e->skaddr = (__u64)sk;
	e->netns = netns;
	e->cgroup_id = sk ? pt_sk_cgroup_label(sk) : 0;
	e->pid = bpf_get_current_pid_tgid() >> 32;
	e->reason = c->reason;
	e->family = ip.family;
	e->sport = bpf_ntohs(th.source);
	e->dport = bpf_ntohs(th.dest);
	e->state = sk ? BPF_CORE_READ(sk, __sk_common.skc_state) : 0;
	e->tcpflags = flags;
	__builtin_memcpy(e->saddr, ip.saddr, 16);
	__builtin_memcpy(e->daddr, ip.daddr, 16);
	e->stack_bytes = bpf_get_stack(ctx, e->stack, sizeof(e->stack), 0);
	event_submit(e, now);
	return 0;
}

/* tp_btf, raw_tp and the classic tracepoint: kfreeskb.h reads the arguments. */
KFREE_SKB_PROGRAMS(tcpdrop, on_drop)

char LICENSE[] SEC("license") = "GPL";
