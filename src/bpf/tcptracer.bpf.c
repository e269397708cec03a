// SPDX-License-Identifier: GPL-2.0
/*
 * tcptracer - TCP connections as they are made and ended: C (connect
 * completed), A (accept), X (close).
 *
 *  C  the connecting task is remembered at the start of connect()
 *     (conntrack.h) and reported when the socket becomes ESTABLISHED.
 *  A  the accepting task, when accept() returns the new socket.
 *  X  when an established connection starts closing: ESTABLISHED or
 *     CLOSE_WAIT -> FIN_WAIT1, LAST_ACK (close() or shutdown()) or CLOSE
 *     (abort, reset, timeout).  The task is current when it holds the
 *     socket lock (the change runs in its system call); a reset or timeout
 *     handled in softirq gets the task seen at C or A instead, or 0.
 *
 *  kprobe      start of C: kprobe tcp_v4/v6_connect; A: kretprobe
 *              inet_csk_accept; C and X: raw_tp inet_sock_set_state.
 *  tracepoint  C and X: sock:inet_sock_set_state (CLOSE->SYN_SENT is the
 *              start); A: sys_exit_accept4/sys_exit_accept with the fd
 *              walk (sockfd.h).
 *
 * Whose (filter.h): at C and A the task's (at the start of the connect, and
 * in accept()); at X the task's when it holds the socket, else that of the
 * task remembered at C or A, else the socket's (cgroup, netns; not the mount
 * namespace, which only a task has).  CGROUP labels are the socket's.
 *
 * BCC reports X from tcp_close(), so at close() only; here shutdown(SHUT_WR)
 * and a reset also count as the end, and a close by process exit is seen.
 */
#include "events.h"
#include "sockfd.h"
#include "conntrack.h"

struct tcptracer_event {
	__u64 ts_ns;
	__u64 cgroup_id;	/* the socket's (filter.h labels) */
	__u32 pid;
	__u32 netns;
	__u16 family;
	__u16 sport;
	__u16 dport;
	__u8 type;		/* 'C', 'A' or 'X' */
	__u8 pad;
	__u8 saddr[16];
	__u8 daddr[16];
	char comm[TASK_COMM_LEN];
};

const volatile __u32 filter_pid = 0;		/* -p */
const volatile __u16 target_family = 0;		/* -4/-6 */

/* The task of each connection seen at C or A, for an X from softirq. */
struct owner {
	__u32 pid;
	char comm[TASK_COMM_LEN];
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, struct owner);
} owners SEC(".maps");

struct tcptracer_event _event_type = {};

static __always_inline void emit(const struct sock *sk, __u8 type,
				 const struct owner *who)
{
	struct tcptracer_event *e;
	__u16 family, sport, dport;
	__u32 netns;
	__u64 now;

	if (filter_pid && who->pid != filter_pid)
		return;
	if (!sk_is_inet_tcp(sk, &family))
		return;
	if (target_family && family != target_family)
		return;
	netns = sk_netns(sk);
	sport = sk_sport(sk);
	dport = sk_dport(sk);
	if (!sport || !dport)	/* not a connection (yet, or any more) */
		return;

	e = event_reserve(struct tcptracer_event);
	if (!e)
		return;
	now = bpf_ktime_get_ns();
	e->ts_ns = now;
	e->pid = who->pid;
	e->cgroup_id = pt_sk_cgroup_label(sk);
	e->netns = netns;
	e->family = family;
	e->sport = sport;
	e->dport = dport;
	e->type = type;
	e->pad = 0;
	sk_read_addrs(sk, family, e->saddr, e->daddr);
	__builtin_memcpy(e->comm, who->comm, sizeof(e->comm));
	event_submit(e, now);
}

static __always_inline void current_owner(struct owner *who)
{
	who->pid = bpf_get_current_pid_tgid() >> 32;
	bpf_get_current_comm(who->comm, sizeof(who->comm));
}

static __always_inline void remember(const struct sock *sk, const struct owner *who)
{
	__u64 key = (__u64)sk;

	bpf_map_update_elem(&owners, &key, who, BPF_ANY);
}

static __always_inline int on_state(struct sock *sk, int oldstate,
				    int newstate, bool track_begin)
{
	struct owner who = {};
	struct conn_start st;
	__u64 key = (__u64)sk;
	__u16 family;

	if (!sk_is_inet_tcp(sk, &family))
		return 0;
	if (oldstate == TCP_CLOSE && newstate == TCP_SYN_SENT) {
		if (track_begin && pt_task_sk_wanted(sk))
			conn_begin(sk);
		return 0;
	}
	if (oldstate == TCP_SYN_SENT) {
		if (conn_take(sk, &st) && newstate == TCP_ESTABLISHED) {
			who.pid = st.pid;
			__builtin_memcpy(who.comm, st.comm, sizeof(who.comm));
			remember(sk, &who);
			emit(sk, 'C', &who);
		}
		return 0;
	}
	if ((oldstate == TCP_ESTABLISHED || oldstate == TCP_CLOSE_WAIT) &&
	    (newstate == TCP_FIN_WAIT1 || newstate == TCP_LAST_ACK ||
	     newstate == TCP_CLOSE)) {
		if (sk_owned_by_user(sk)) {
			if (!pt_task_sk_wanted(sk))
				goto out;
			current_owner(&who);
		} else {
			/* remembered at C or A only if wanted then */
			struct owner *o = bpf_map_lookup_elem(&owners, &key);

			if (o)
				__builtin_memcpy(&who, o, sizeof(who));
			else if (pt_by_mntnsmap || !pt_sk_wanted(sk))
				goto out;
		}
		emit(sk, 'X', &who);
	}
out:
	if (newstate == TCP_CLOSE)
		bpf_map_delete_elem(&owners, &key);
	return 0;
}

static __always_inline int on_accept(const struct sock *sk)
{
	struct owner who = {};
	__u16 family;

	if (!sk || !sk_is_inet_tcp(sk, &family))	/* accept() of any socket */
		return 0;
	if (!pt_task_sk_wanted(sk))
		return 0;
	current_owner(&who);
	remember(sk, &who);
	emit(sk, 'A', &who);
	return 0;
}

/* -- kprobe variant ---------------------------------------------------------- */

SEC("kprobe/tcp_v4_connect")
int BPF_KPROBE(tcptracer_kprobe_v4, struct sock *sk)
{
	if (pt_task_sk_wanted(sk))
		conn_begin(sk);
	return 0;
}

SEC("kprobe/tcp_v6_connect")
int BPF_KPROBE(tcptracer_kprobe_v6, struct sock *sk)
{
	if (pt_task_sk_wanted(sk))
		conn_begin(sk);
	return 0;
}

SEC("kretprobe/inet_csk_accept")
int BPF_KRETPROBE(tcptracer_kretprobe_accept, struct sock *newsk)
{
	return on_accept(newsk);
}

SEC("raw_tp/inet_sock_set_state")
int BPF_PROG(tcptracer_raw_tp, struct sock *sk, int oldstate, int newstate)
{
	return on_state(sk, oldstate, newstate, false);
}

/* -- tracepoint variant ------------------------------------------------------ */

SEC("tracepoint/sock/inet_sock_set_state")
int tcptracer_tracepoint(struct trace_event_raw_inet_sock_set_state *ctx)
{
	if (ctx->protocol != IPPROTO_TCP)
		return 0;
	return on_state((struct sock *)ctx->skaddr, ctx->oldstate,
			ctx->newstate, true);
}

SEC("tracepoint/syscalls/sys_exit_accept4")
int tcptracer_tp_accept4(struct trace_event_raw_sys_exit *ctx)
{
	return ctx->ret < 0 ? 0 : on_accept(fd_to_sock(ctx->ret));
}

SEC("tracepoint/syscalls/sys_exit_accept")
int tcptracer_tp_accept(struct trace_event_raw_sys_exit *ctx)
{
	return ctx->ret < 0 ? 0 : on_accept(fd_to_sock(ctx->ret));
}

char LICENSE[] SEC("license") = "GPL";
