// SPDX-License-Identifier: GPL-2.0
/*
 * tcpwin - TCP congestion window, slow-start threshold, send window and send
 * buffer of established connections, one record per segment received (the
 * top of tcp_rcv_established()), as the book's tcpwin.bt: rows to plot.
 *
 * Variants, best first:
 *  - fentry / kprobe tcp_rcv_established (the book's hook);
 *  - tp_btf / classic tracepoint tcp:tcp_probe, which the kernel calls at the
 *    top of that same function.  The classic record carries cwnd, ssthresh,
 *    snd_wnd and srtt itself; the socket's send buffer size and queued
 *    bytes are read from skaddr (-1 before the record had it).
 *
 * Whose (filter.h): the socket's cgroup and network namespace; a classic
 * record without skaddr is nobody's, and passes no filter.
 */
#include "events.h"
#include "filter.h"

struct tcpwin_event {
	__u64 ts_ns;
	__u64 skaddr;
	__u64 cgroup_id;	/* the socket's (filter.h labels) */
	__u32 netns;		/* the socket's (filter.h labels) */
	__u32 snd_cwnd;		/* segments */
	__u32 ssthresh;		/* segments; 0x7fffffff: still in slow start */
	__u32 snd_wnd;		/* bytes the peer lets us send */
	__u32 srtt_us;
	__s32 sndbuf;		/* sk_sndbuf, bytes */
	__s32 wmem_queued;	/* sk_wmem_queued, bytes */
	__u16 family;
	__u16 lport;
	__u16 rport;
	__u16 pad;
	__u8 laddr[16];
	__u8 raddr[16];
};

const volatile __u16 target_family = 0;
const volatile __u16 lports[MAX_PORTS] = {};
const volatile __u32 n_lports = 0;
const volatile __u16 rports[MAX_PORTS] = {};
const volatile __u32 n_rports = 0;

struct tcpwin_event _event_type = {};

static __always_inline bool wanted(__u16 family, __u16 lport, __u16 rport)
{
	if (family != AF_INET && family != AF_INET6)
		return false;
	if (target_family && family != target_family)
		return false;
	return port_allowed(lports, n_lports, lport) && port_allowed(rports, n_rports, rport);
}

/*
 * Fill what the socket itself says (buffers, ports, addresses).  The record
 * is reserved by the caller, once: a callee's NULL check that the caller
 * repeats is, to 5.10's verifier, a path where the reserved record leaks.
 */
static __always_inline void fill_from_sock(struct tcpwin_event *e, const struct sock *sk, __u16 family,
					   __u64 now)
{
	e->ts_ns = now;
	e->skaddr = (__u64)sk;
	e->cgroup_id = pt_sk_cgroup_label(sk);
	e->netns = pt_sk_netns_label(sk);
	e->sndbuf = BPF_CORE_READ(sk, sk_sndbuf);
	e->wmem_queued = BPF_CORE_READ(sk, sk_wmem_queued);
	e->family = family;
	e->lport = sk_sport(sk);
	e->rport = sk_dport(sk);
	e->pad = 0;
	__builtin_memset(e->laddr, 0, 16);
	__builtin_memset(e->raddr, 0, 16);
	sk_read_addrs(sk, family, e->laddr, e->raddr);
}

static __always_inline int from_sock(const struct sock *sk)
{
	const struct tcp_sock *tp = (const struct tcp_sock *)sk;
	__u16 family = BPF_CORE_READ(sk, __sk_common.skc_family);
	struct tcpwin_event *e;
	__u64 now;

	if (!wanted(family, sk_sport(sk), sk_dport(sk)) || !pt_sk_wanted(sk))
		return 0;
	now = bpf_ktime_get_ns();
	e = event_reserve(struct tcpwin_event);
	if (!e)
		return 0;
	fill_from_sock(e, sk, family, now);
	e->snd_cwnd = BPF_CORE_READ(tp, snd_cwnd);
	e->ssthresh = BPF_CORE_READ(tp, snd_ssthresh);
	e->snd_wnd = BPF_CORE_READ(tp, snd_wnd);
	e->srtt_us = BPF_CORE_READ(tp, srtt_us) >> 3;
	event_submit(e, now);
	return 0;
}

SEC("fentry/tcp_rcv_established")
int BPF_PROG(tcpwin_fentry, struct sock *sk)
{
	return from_sock(sk);
}

SEC("kprobe/tcp_rcv_established")
int BPF_KPROBE(tcpwin_kprobe, struct sock *sk)
{
	return from_sock(sk);
}

SEC("tp_btf/tcp_probe")
int BPF_PROG(tcpwin_tp_btf, struct sock *sk, struct sk_buff *skb)
{
	return from_sock(sk);
}

/*
 * The classic record before it carried skaddr (6.1 has none; 6.12 does):
 * the flow from the record itself (saddr/daddr hold a sockaddr_in or
 * sockaddr_in6), and the socket's buffers unknown (-1).
 */
static __always_inline void fill_from_record(struct tcpwin_event *e, struct trace_event_raw_tcp_probe *ctx,
					     __u16 family, __u64 now)
{
	e->ts_ns = now;
	e->skaddr = 0;
	e->cgroup_id = 0;
	e->netns = 0;
	e->sndbuf = -1;
	e->wmem_queued = -1;
	e->family = family;
	e->lport = ctx->sport;
	e->rport = ctx->dport;
	e->pad = 0;
	__builtin_memset(e->laddr, 0, 16);
	__builtin_memset(e->raddr, 0, 16);
	if (family == AF_INET) {
		bpf_probe_read_kernel(e->laddr, 4, &((struct sockaddr_in *)ctx->saddr)->sin_addr);
		bpf_probe_read_kernel(e->raddr, 4, &((struct sockaddr_in *)ctx->daddr)->sin_addr);
	} else {
		bpf_probe_read_kernel(e->laddr, 16, &((struct sockaddr_in6 *)ctx->saddr)->sin6_addr);
		bpf_probe_read_kernel(e->raddr, 16, &((struct sockaddr_in6 *)ctx->daddr)->sin6_addr);
	}
}

SEC("tracepoint/tcp/tcp_probe")
int tcpwin_tracepoint(struct trace_event_raw_tcp_probe *ctx)
{
	__u16 family = tcp_probe_family(ctx);
	struct tcpwin_event *e;
	__u64 now;

	if (!wanted(family, ctx->sport, ctx->dport))
		return 0;
	if (pt_on && (!bpf_core_field_exists(ctx->skaddr) || !pt_sk_wanted(BPF_CORE_READ(ctx, skaddr))))
		return 0;
	now = bpf_ktime_get_ns();
	e = event_reserve(struct tcpwin_event);
	if (!e)
		return 0;
	if (bpf_core_field_exists(ctx->skaddr))
		fill_from_sock(e, BPF_CORE_READ(ctx, skaddr), family, now);
	else
		fill_from_record(e, ctx, family, now);
	e->snd_cwnd = ctx->snd_cwnd;
	e->ssthresh = ctx->ssthresh;
	e->snd_wnd = ctx->snd_wnd;
	e->srtt_us = ctx->srtt;
	event_submit(e, now);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
