// SPDX-License-Identifier: GPL-2.0
/*
 * tcpconnlat - latency of active TCP connects: from connect() sending the
 * SYN to the handshake completing (SYN_SENT -> ESTABLISHED).
 *
 * The connecting task and start time are remembered per socket (conntrack.h)
 * and taken back when the socket becomes ESTABLISHED, which runs in softirq.
 *
 *  fentry      start: fentry tcp_v4_connect/tcp_v6_connect (libbpf-tools);
 *              end: tp_btf inet_sock_set_state.
 *  kprobe      start: kprobe tcp_v4_connect/tcp_v6_connect (BCC);
 *              end: raw_tp inet_sock_set_state.
 *  tp_btf      start (CLOSE->SYN_SENT, inside connect()) and end from
 *              inet_sock_set_state.
 *  tracepoint  the same through the classic tracepoint.
 *
 * libbpf-tools and BCC end at tcp_rcv_state_process() in SYN_SENT, which
 * also fires for a RST; ending at ESTABLISHED times only completed
 * handshakes, whichever variant loads.  Failed connects are dropped.
 */
#include "events.h"
#include "conntrack.h"

struct tcpconnlat_event {
	__u64 ts_ns;		/* handshake complete */
	__u64 delta_ns;		/* since connect() */
	__u64 cgroup_id;	/* the connecting task's (filter.h labels) */
	__u32 pid;
	__u32 netns;		/* the connecting task's (filter.h labels) */
	__u16 family;
	__u16 sport;
	__u16 dport;
	__u16 pad;
	__u8 saddr[16];
	__u8 daddr[16];
	char comm[TASK_COMM_LEN];
};

const volatile __u32 filter_pid = 0;		/* -p */
const volatile __u16 target_family = 0;		/* -4/-6 */
const volatile __u64 min_ns = 0;		/* positional minimum latency */

struct tcpconnlat_event _event_type = {};

static __always_inline void begin(struct sock *sk)
{
	__u16 family;

	if (!tgid_wanted(filter_pid) || !pt_task_wanted())
		return;
	if (!sk_is_inet_tcp(sk, &family))
		return;
	if (target_family && family != target_family)
		return;
	conn_begin(sk);
}

static __always_inline int on_state(struct sock *sk, int oldstate,
				    int newstate, bool track_begin)
{
	struct tcpconnlat_event *e;
	struct conn_start st;
	__u64 now, delta;

	if (oldstate == TCP_CLOSE && newstate == TCP_SYN_SENT) {
		if (track_begin)
			begin(sk);
		return 0;
	}
	if (oldstate != TCP_SYN_SENT)
		return 0;
	/* SYN_SENT -> CLOSE: a failed connect, forgotten */
	if (!conn_take(sk, &st) || newstate != TCP_ESTABLISHED)
		return 0;

	now = bpf_ktime_get_ns();
	delta = now - st.ts_ns;
	if (delta < min_ns)
		return 0;
	e = event_reserve(struct tcpconnlat_event);
	if (!e)
		return 0;
	e->ts_ns = now;
	e->delta_ns = delta;
	e->pid = st.pid;
	e->cgroup_id = st.cgroup_id;
	e->netns = st.netns;
	e->family = BPF_CORE_READ(sk, __sk_common.skc_family);
	e->sport = sk_sport(sk);
	e->dport = sk_dport(sk);
	e->pad = 0;
	sk_read_addrs(sk, e->family, e->saddr, e->daddr);
	__builtin_memcpy(e->comm, st.comm, sizeof(e->comm));
	event_submit(e, now);
	return 0;
}

SEC("fentry/tcp_v4_connect")
int BPF_PROG(tcpconnlat_fentry_v4, struct sock *sk)
{
	begin(sk);
	return 0;
}

SEC("fentry/tcp_v6_connect")
int BPF_PROG(tcpconnlat_fentry_v6, struct sock *sk)
{
	begin(sk);
	return 0;
}

SEC("kprobe/tcp_v4_connect")
int BPF_KPROBE(tcpconnlat_kprobe_v4, struct sock *sk)
{
	begin(sk);
	return 0;
}

SEC("kprobe/tcp_v6_connect")
int BPF_KPROBE(tcpconnlat_kprobe_v6, struct sock *sk)
{
	begin(sk);
	return 0;
}

/* The end of the fentry variant (tp_btf exists wherever fentry does) and,
 * as raw_tp, of the kprobe variant. */
TP_BTF_AND_RAW_TP("inet_sock_set_state", tcpconnlat_tp_btf_end, tcpconnlat_raw_tp_end,
		  on_state(sk, oldstate, newstate, false),
		  struct sock *sk, int oldstate, int newstate)

SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(tcpconnlat_tp_btf, struct sock *sk, int oldstate, int newstate)
{
	return on_state(sk, oldstate, newstate, true);
}

SEC("tracepoint/sock/inet_sock_set_state")
int tcpconnlat_tracepoint(struct trace_event_raw_inet_sock_set_state *ctx)
{
	if (ctx->protocol != IPPROTO_TCP)
		return 0;
	return on_state((struct sock *)ctx->skaddr, ctx->oldstate,
			ctx->newstate, true);
}

char LICENSE[] SEC("license") = "GPL";
