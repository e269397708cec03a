/* SPDX-License-Identifier: GPL-2.0 */
/*
 * sockstate.h - TCP state changes from sock:inet_sock_set_state, reached the
 * three ways a kernel may allow, best first:
 *
 *   tp_btf      the socket as a BTF pointer; no tracefs needed;
 *   raw_tp      the same arguments, read through probe reads;
 *   tracepoint  the classic one (needs tracefs): the event's own copies of
 *               family, ports and addresses, and the socket's address.
 *
 * A tool that wants every change of TCP sockets (tcpstates, tcplife) writes
 * one handler for a struct sock_state_change and lets
 *
 *     SOCK_STATE_PROGRAMS(tool, handler)
 *
 * define tool_tp_btf, tool_raw_tp and tool_tracepoint, each calling
 *
 *     static __always_inline int handler(const struct sock_state_change *c)
 *
 * for TCP sockets only.  The Python side loads exactly one of the three.
 */
#ifndef __PYTRACE_SOCKSTATE_H
#define __PYTRACE_SOCKSTATE_H

#include "pytrace.h"

struct sock_state_change {
	/* The socket.  From the classic tracepoint only its address: read
	 * through it with BPF_CORE_READ, which works for either. */
	const struct sock *sk;
	/* The classic tracepoint's copies of the addresses, NULL otherwise. */
	const void *tp_saddr;
	const void *tp_daddr;
	int oldstate;
	int newstate;
	__u16 family;
	__u16 sport;		/* host order */
	__u16 dport;
	/* sk is a BTF pointer (tp_btf): fields can be loaded directly. */
	__u8 direct;
};

/* From tp_btf/raw_tp arguments; false when the socket is not TCP. */
static __always_inline bool sock_state_of_sk(struct sock_state_change *c, const struct sock *sk,
					     int oldstate, int newstate)
{
	if (BPF_CORE_READ(sk, sk_protocol) != IPPROTO_TCP)
		return false;
	c->sk = sk;
	c->tp_saddr = c->tp_daddr = 0;
	c->direct = 0;
	c->oldstate = oldstate;
	c->newstate = newstate;
	c->family = BPF_CORE_READ(sk, __sk_common.skc_family);
	c->sport = sk_sport(sk);
	c->dport = sk_dport(sk);
	return true;
}

/* From tp_btf arguments: the same, by direct (BTF-checked) loads, which
 * cost a plain load each instead of a helper call. */
static __always_inline bool sock_state_of_btf(struct sock_state_change *c, const struct sock *sk,
					      int oldstate, int newstate)
{
	if (sk->sk_protocol != IPPROTO_TCP)
		return false;
	c->sk = sk;
	c->tp_saddr = c->tp_daddr = 0;
	c->direct = 1;
	c->oldstate = oldstate;
	c->newstate = newstate;
	c->family = sk->__sk_common.skc_family;
	c->sport = sk_sport(sk);	/* beyond struct sock: a probe read */
	c->dport = bpf_ntohs(sk->__sk_common.skc_dport);
	return true;
}

/* From the classic tracepoint's record; false when the socket is not TCP. */
static __always_inline bool sock_state_of_tp(struct sock_state_change *c,
					     const struct trace_event_raw_inet_sock_set_state *ctx)
{
	int v6 = ctx->family == AF_INET6;

	if (ctx->protocol != IPPROTO_TCP)
		return false;
	c->sk = ctx->skaddr;
	c->direct = 0;
	c->tp_saddr = v6 ? (const void *)ctx->saddr_v6 : (const void *)ctx->saddr;
	c->tp_daddr = v6 ? (const void *)ctx->daddr_v6 : (const void *)ctx->daddr;
	c->oldstate = ctx->oldstate;
	c->newstate = ctx->newstate;
	c->family = ctx->family;
	c->sport = ctx->sport;
	c->dport = ctx->dport;
	return true;
}

/* The local and remote addresses (16 bytes each, v4 in the first 4, the rest 0). */
static __always_inline void sock_state_addrs(const struct sock_state_change *c, __u8 *saddr, __u8 *daddr)
{
	__builtin_memset(saddr, 0, 16);
	__builtin_memset(daddr, 0, 16);
	if (c->direct) {
		if (c->family == AF_INET) {
			*(__u32 *)saddr = c->sk->__sk_common.skc_rcv_saddr;
			*(__u32 *)daddr = c->sk->__sk_common.skc_daddr;
		} else {
			__builtin_memcpy(saddr, &c->sk->__sk_common.skc_v6_rcv_saddr, 16);
			__builtin_memcpy(daddr, &c->sk->__sk_common.skc_v6_daddr, 16);
		}
	} else {
		tp_or_sk_addrs(c->tp_saddr, c->tp_daddr, c->sk, c->family, saddr, daddr);
	}
}

#define SOCK_STATE_PROGRAMS(tool, handler)                                          \
	SEC("tp_btf/inet_sock_set_state")                                           \
	int BPF_PROG(tool##_tp_btf, const struct sock *sk, int oldstate, int newstate) \
	{                                                                           \
		struct sock_state_change c;                                         \
                                                                                    \
		return sock_state_of_btf(&c, sk, oldstate, newstate) ? handler(&c) : 0; \
	}                                                                           \
	SEC("raw_tp/inet_sock_set_state")                                           \
	int BPF_PROG(tool##_raw_tp, const struct sock *sk, int oldstate, int newstate) \
	{                                                                           \
		struct sock_state_change c;                                         \
                                                                                    \
		return sock_state_of_sk(&c, sk, oldstate, newstate) ? handler(&c) : 0; \
	}                                                                           \
	SEC("tracepoint/sock/inet_sock_set_state")                                  \
	int tool##_tracepoint(struct trace_event_raw_inet_sock_set_state *ctx)      \
	{                                                                           \
		struct sock_state_change c;                                         \
                                                                                    \
		return sock_state_of_tp(&c, ctx) ? handler(&c) : 0;                 \
	}

#endif /* __PYTRACE_SOCKSTATE_H */
