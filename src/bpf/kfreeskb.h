/* SPDX-License-Identifier: GPL-2.0 */
/*
 * kfreeskb.h - the skb:kfree_skb tracepoint as the drop tools (tcpdrop,
 * skbdrop) read it, from any of its three hooks: tp_btf, raw_tp (the
 * arguments of the tracepoint call) and the classic tracepoint (its record).
 *
 * The drop reason (enum skb_drop_reason) came with Linux 5.17: the programs
 * refuse to load without it (REFUSE_WITHOUT; the tools' floor says why),
 * rather than load and see nothing.  The receiving socket (rx_sk) came with
 * 6.12; where the kernel lacks it, its CO-RE check makes the read dead code.  The reason
 * numbers differ between kernels, so NOT_SPECIFIED (a kfree_skb() without
 * a reason) is taken from the running kernel too.
 */
#ifndef __PYTRACE_KFREESKB_H
#define __PYTRACE_KFREESKB_H

#include "skbinfo.h"

struct kfree_skb_call {
	const struct sk_buff *skb;
	const void *location;		/* where it was freed */
	__u32 reason;			/* enum skb_drop_reason */
	const struct sock *rx_sk;	/* the receiving socket, or NULL */
};

/* enum skb_drop_reason's NOT_SPECIFIED on this kernel: reasons above it name a cause. */
static __always_inline __u32 drop_reason_unspecified(void)
{
	return bpf_core_enum_value(enum skb_drop_reason, SKB_DROP_REASON_NOT_SPECIFIED);
}

/* tp_btf / raw_tp: kfree_skb(skb, location, reason[, rx_sk]). */
static __always_inline void kfree_skb_from_args(u64 *ctx, struct kfree_skb_call *c)
{
	c->skb = (const struct sk_buff *)ctx[0];
	c->location = (const void *)ctx[1];
	c->reason = (__u32)ctx[2];
	c->rx_sk = 0;
	if (bpf_core_field_exists(struct trace_event_raw_kfree_skb, rx_sk))
		c->rx_sk = (const struct sock *)ctx[3];
}

/* The classic tracepoint's record. */
static __always_inline void kfree_skb_from_record(struct trace_event_raw_kfree_skb *ctx,
						  struct kfree_skb_call *c)
{
	c->skb = ctx->skbaddr;
	c->location = ctx->location;
	c->reason = ctx->reason;
	c->rx_sk = 0;
	if (bpf_core_field_exists(ctx->rx_sk))
		c->rx_sk = ctx->rx_sk;
}

/*
 * The three programs reaching skb:kfree_skb (tp_btf, raw_tp, classic
 * tracepoint), named <tool>_tp_btf, <tool>_raw_tp and <tool>_tracepoint, each
 * calling handler(ctx, &call) with the arguments read the same way.
 */
#define KFREE_SKB_PROGRAMS(tool, handler)                                           \
	SEC("tp_btf/kfree_skb")                                                     \
	int tool##_tp_btf(u64 *ctx)                                                 \
	{                                                                           \
		struct kfree_skb_call c;                                            \
                                                                                    \
		REFUSE_WITHOUT(struct trace_event_raw_kfree_skb, reason);           \
		kfree_skb_from_args(ctx, &c);                                       \
		return handler(ctx, &c);                                            \
	}                                                                           \
	SEC("raw_tp/kfree_skb")                                                     \
	int tool##_raw_tp(u64 *ctx)                                                 \
	{                                                                           \
		struct kfree_skb_call c;                                            \
                                                                                    \
		REFUSE_WITHOUT(struct trace_event_raw_kfree_skb, reason);           \
		kfree_skb_from_args(ctx, &c);                                       \
		return handler(ctx, &c);                                            \
	}                                                                           \
	SEC("tracepoint/skb/kfree_skb")                                             \
	int tool##_tracepoint(struct trace_event_raw_kfree_skb *ctx)                \
	{                                                                           \
		struct kfree_skb_call c;                                            \
                                                                                    \
		REFUSE_WITHOUT(struct trace_event_raw_kfree_skb, reason);           \
		kfree_skb_from_record(ctx, &c);                                     \
		return handler(ctx, &c);                                            \
	}

#endif /* __PYTRACE_KFREESKB_H */
