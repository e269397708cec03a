// SPDX-License-Identifier: GPL-2.0
/*
 * skbdrop - packets the kernel dropped, any protocol, counted in the kernel
 * by drop reason, protocol and kernel stack (the book's skbdrop.bt counts
 * skb:kfree_skb by stack; the reason came later, with Linux 5.17).
 *
 * Hook: skb:kfree_skb through tp_btf, raw_tp or the classic tracepoint
 * (kfreeskb.h reads all three, shared with tcpdrop).  Every kfree_skb is
 * a drop; with no_unspecified those without a specific reason
 * (NOT_SPECIFIED: plain kfree_skb() calls) are left out.
 *
 * The protocol is skb->protocol (the ethertype) and, for IPv4/IPv6, the
 * transport protocol from the packet's network header.  The stack is taken
 * whole into a stack map (user space removes the tracing frames), or not at
 * all with no_stacks.
 */
#include "kfreeskb.h"
#include "socklayer.h"		/* count_key() */

struct skbdrop_key {
	__u32 reason;		/* enum skb_drop_reason */
	__s32 kstack;		/* stack id; -1: not collected; other < 0: -errno */
	__u16 ethertype;	/* host order; 0: unknown */
	__u8 ipproto;		/* IPv4/IPv6 only */
	__u8 pad;
};

const volatile bool no_stacks = false;
const volatile bool no_unspecified = false;
const volatile __u32 target_netns = 0;

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 10240);
	__type(key, struct skbdrop_key);
	__type(value, __u64);
} drops SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_STACK_TRACE);
	__uint(max_entries, 4096);	/* 1 when no_stacks (set by user space) */
	__uint(key_size, sizeof(__u32));
	__uint(value_size, 127 * sizeof(__u64));
} stacks SEC(".maps");

static __always_inline int on_drop(void *ctx, const struct kfree_skb_call *c)
{
	const struct sk_buff *skb = c->skb;	/* (a local: BPF_CORE_READ must not see c->) */
	struct skbdrop_key key = {};
	struct pkt_ip ip;

	if (c->reason < drop_reason_unspecified() ||
	    (no_unspecified && c->reason == drop_reason_unspecified()))
		return 0;
	if (target_netns && skb_netns(skb, c->rx_sk) != target_netns)
		return 0;
	key.reason = c->reason;
	key.ethertype = skb_ethertype(skb);
	if ((key.ethertype == PT_ETH_P_IP || key.ethertype == PT_ETH_P_IPV6) &&
	    ip_header_at(skb_nh(skb), &ip))
		key.ipproto = ip.proto;
	key.kstack = no_stacks ? -1 : bpf_get_stackid(ctx, &stacks, 0);
	count_key(&drops, &key);
	return 0;
}

/* tp_btf, raw_tp and the classic tracepoint: kfreeskb.h reads the arguments. */
KFREE_SKB_PROGRAMS(skbdrop, on_drop)

char LICENSE[] SEC("license") = "GPL";
