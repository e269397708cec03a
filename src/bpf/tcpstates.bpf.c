// SPDX-License-Identifier: GPL-2.0
/*
 * tcpstates - every TCP state change, with the time spent in the old state.
 *
 * Hook: the sock:inet_sock_set_state tracepoint, reached three ways in order
 * of preference: tp_btf (direct BTF access, no tracefs needed), raw_tp, and
 * the classic tracepoint (needs tracefs).  The Python side loads exactly one.
 */
#include "events.h"

struct tcpstates_event {
	__u64 skaddr;
	__u64 ts_ns;
	__u64 delta_us;		/* time in oldstate; 0 for the first change seen */
	__u32 pid;
	__u16 family;
	__u16 sport;
	__u16 dport;
	__u8 oldstate;
	__u8 newstate;
	__u8 saddr[16];
	__u8 daddr[16];
	char comm[TASK_COMM_LEN];
};

/* Filters, set by the loader before load. */
const volatile __u16 target_family = 0;	/* 0: both */
const volatile __u16 lports[MAX_PORTS] = {};
const volatile __u32 n_lports = 0;
const volatile __u16 rports[MAX_PORTS] = {};
const volatile __u32 n_rports = 0;

/* Last state-change time per socket, to compute the MS column. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, __u64);
} last_change SEC(".maps");

/* Anchor the event type in BTF so user space can decode it. */
struct tcpstates_event _event_type = {};

static __always_inline int emit(const void *skaddr, __u16 family, __u16 sport,
				__u16 dport, int oldstate, int newstate,
				const struct sock *sk, const void *tp_saddr,
				const void *tp_daddr)
{
	struct tcpstates_event *e;
	__u64 key = (__u64)skaddr, now, *prev, delta = 0;

	if (target_family && family != target_family)
		return 0;
	if (!port_allowed(lports, n_lports, sport) ||
	    !port_allowed(rports, n_rports, dport))
		return 0;

	now = bpf_ktime_get_ns();
	prev = bpf_map_lookup_elem(&last_change, &key);
	if (prev)
		delta = (now - *prev) / 1000;

	e = event_reserve(struct tcpstates_event);
	if (e) {
		e->skaddr = key;
		e->ts_ns = now;
		e->delta_us = delta;
		e->pid = bpf_get_current_pid_tgid() >> 32;
		e->family = family;
		e->sport = sport;
		e->dport = dport;
		e->oldstate = oldstate;
		e->newstate = newstate;
		if (sk) {
			sk_read_addrs(sk, family, e->saddr, e->daddr);
		} else {
			bpf_probe_read_kernel(e->saddr, 16, tp_saddr);
			bpf_probe_read_kernel(e->daddr, 16, tp_daddr);
		}
		bpf_get_current_comm(e->comm, sizeof(e->comm));
		event_submit(e, now);
	}

	if (newstate == TCP_CLOSE)
		bpf_map_delete_elem(&last_change, &key);
	else
		bpf_map_update_elem(&last_change, &key, &now, BPF_ANY);
	return 0;
}

static __always_inline int from_sock(const struct sock *sk, int oldstate,
				     int newstate)
{
	if (BPF_CORE_READ(sk, sk_protocol) != IPPROTO_TCP)
		return 0;
	return emit(sk, BPF_CORE_READ(sk, __sk_common.skc_family),
		    sk_sport(sk), sk_dport(sk),
		    oldstate, newstate, sk, 0, 0);
}

SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(tcpstates_tp_btf, const struct sock *sk, int oldstate, int newstate)
{
	return from_sock(sk, oldstate, newstate);
}

SEC("raw_tp/inet_sock_set_state")
int BPF_PROG(tcpstates_raw_tp, const struct sock *sk, int oldstate, int newstate)
{
	return from_sock(sk, oldstate, newstate);
}

SEC("tracepoint/sock/inet_sock_set_state")
int tcpstates_tracepoint(struct trace_event_raw_inet_sock_set_state *ctx)
{
	int v6 = ctx->family == AF_INET6;

	if (ctx->protocol != IPPROTO_TCP)
		return 0;
	return emit(ctx->skaddr, ctx->family, ctx->sport, ctx->dport,
		    ctx->oldstate, ctx->newstate, 0,
		    v6 ? (void *)ctx->saddr_v6 : (void *)ctx->saddr,
		    v6 ? (void *)ctx->daddr_v6 : (void *)ctx->daddr);
}

char LICENSE[] SEC("license") = "GPL";
