// SPDX-License-Identifier: GPL-2.0
/*
 * tcpconnect - active TCP connects with the task that made them and how they
 * ended: connected, refused, timed out, aborted.  Optionally UDP connect()s.
 *
 * A connect is reported once its outcome is known (SYN_SENT->ESTABLISHED or
 * SYN_SENT->CLOSE), with the task remembered at its start (conntrack.h):
 *
 *  kprobe      start: kprobe tcp_v4_connect/tcp_v6_connect (BCC's hook);
 *              outcome: raw_tp inet_sock_set_state.
 *  tp_btf      start and outcome: inet_sock_set_state (CLOSE->SYN_SENT runs
 *              inside connect(), in the connecting task).
 *  tracepoint  the same through the classic tracepoint.
 *
 * A failed attempt carries the socket's sk_err, which tcp_done_with_error()
 * sets before the change to CLOSE: ECONNREFUSED for a RST, ETIMEDOUT (or an
 * ICMP error) when the SYNs went unanswered; 0 when the socket was closed
 * before the handshake finished.  UDP connect()s (--udp) come from the
 * connect syscall tracepoints, with the fd -> socket walk (sockfd.h).
 *
 * Whose connects (filter.h): the task's cgroup and namespaces, at the start.
 *
 * With do_count set, attempts are counted per (saddr, daddr, dport) in the
 * counts map instead of streamed.
 */
#include "events.h"
#include "socklayer.h"
#include "conntrack.h"

struct tcpconnect_event {
	__u64 ts_ns;		/* when the outcome was known */
	__u64 start_ns;		/* connect() */
	__u64 cgroup_id;	/* the connecting task's (filter.h labels) */
	__u32 pid;
	__u32 uid;
	__u32 netns;		/* the connecting task's (filter.h labels) */
	__s32 error;		/* errno the attempt failed with, 0 if none */
	__u16 family;
	__u16 sport;
	__u16 dport;
	__u8 proto;		/* IPPROTO_TCP, or IPPROTO_UDP */
	__u8 ok;		/* 1: connected */
	__u8 saddr[16];
	__u8 daddr[16];
	char comm[TASK_COMM_LEN];
};

/* Count mode key (-c); sport stays 0 unless count_sport (-s). */
struct tcpconnect_key {
	__u8 saddr[16];
	__u8 daddr[16];
	__u16 family;
	__u16 dport;
	__u16 sport;
	__u8 proto;
	__u8 pad;
};

/* The socket side of one attempt. */
struct conn_tuple {
	__u8 saddr[16];
	__u8 daddr[16];
	__u16 family;
	__u16 sport;
	__u16 dport;
	__u8 proto;
};

const volatile __u32 filter_pid = 0;		/* -p */
const volatile __u32 filter_uid = 0xffffffff;	/* -u; all ones: any */
const volatile __u16 target_family = 0;		/* -4/-6 */
const volatile __u16 dports[MAX_PORTS] = {};	/* -P */
const volatile __u32 n_dports = 0;
const volatile bool do_count = false;		/* -c */
const volatile bool count_sport = false;	/* -s */

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 10240);
	__type(key, struct tcpconnect_key);
	__type(value, __u64);
} counts SEC(".maps");

/* UDP connect() in flight, by thread id: enter -> exit (socklayer.h). */
CONNECT_CALLS(udp_calls);

struct tcpconnect_event _event_type = {};

static __always_inline bool task_wanted(void)
{
	if (!tgid_wanted(filter_pid) || !pt_task_wanted())
		return false;
	if (filter_uid != 0xffffffff &&
	    (__u32)bpf_get_current_uid_gid() != filter_uid)
		return false;
	return true;
}

static __always_inline void finish(const struct conn_start *st,
				   const struct conn_tuple *t, bool ok, int err)
{
	struct tcpconnect_event *e;
	__u64 now;

	if (target_family && t->family != target_family)
		return;
	if (!port_allowed(dports, n_dports, t->dport))
		return;

	if (do_count) {
		struct tcpconnect_key key = {};
		__u64 one = 1, *n;

		__builtin_memcpy(key.saddr, t->saddr, 16);
		__builtin_memcpy(key.daddr, t->daddr, 16);
		key.family = t->family;
		key.dport = t->dport;
		key.sport = count_sport ? t->sport : 0;
		key.proto = t->proto;
		n = bpf_map_lookup_elem(&counts, &key);
		if (n)
			__sync_fetch_and_add(n, 1);
		else
			bpf_map_update_elem(&counts, &key, &one, BPF_NOEXIST);
		return;
	}

	e = event_reserve(struct tcpconnect_event);
	if (!e)
		return;
	now = bpf_ktime_get_ns();
	e->ts_ns = now;
	e->start_ns = st->ts_ns;
	e->pid = st->pid;
	e->uid = st->uid;
	e->cgroup_id = st->cgroup_id;
	e->netns = st->netns;
	e->error = err;
	e->family = t->family;
	e->sport = t->sport;
	e->dport = t->dport;
	e->proto = t->proto;
	e->ok = ok;
	__builtin_memcpy(e->saddr, t->saddr, 16);
	__builtin_memcpy(e->daddr, t->daddr, 16);
	__builtin_memcpy(e->comm, st->comm, sizeof(e->comm));
	event_submit(e, now);
}

/*
 * Every variant's state hook.  begin: take CLOSE->SYN_SENT as the start (the
 * kprobe variant starts in tcp_v4/v6_connect instead).
 */
static __always_inline int on_state(struct sock *sk, int oldstate,
				    int newstate, bool begin)
{
	struct conn_tuple t = {};
	struct conn_start st;
	__u16 family;

	if (oldstate == TCP_CLOSE && newstate == TCP_SYN_SENT) {
		if (begin && task_wanted() && sk_is_inet_tcp(sk, &family))
			conn_begin(sk);
		return 0;
	}
	if (oldstate != TCP_SYN_SENT ||
	    (newstate != TCP_ESTABLISHED && newstate != TCP_CLOSE))
		return 0;
	if (!conn_take(sk, &st))
		return 0;

	t.family = BPF_CORE_READ(sk, __sk_common.skc_family);
	t.sport = sk_sport(sk);
	t.dport = sk_dport(sk);
	t.proto = IPPROTO_TCP;
	sk_read_addrs(sk, t.family, t.saddr, t.daddr);
	if (newstate == TCP_ESTABLISHED)
		finish(&st, &t, true, 0);
	else
		finish(&st, &t, false, BPF_CORE_READ(sk, sk_err));
	return 0;
}

SEC("kprobe/tcp_v4_connect")
int BPF_KPROBE(tcpconnect_kprobe_v4, struct sock *sk)
{
	if (task_wanted())
		conn_begin(sk);
	return 0;
}

SEC("kprobe/tcp_v6_connect")
int BPF_KPROBE(tcpconnect_kprobe_v6, struct sock *sk)
{
	if (task_wanted())
		conn_begin(sk);
	return 0;
}

SEC("raw_tp/inet_sock_set_state")
int BPF_PROG(tcpconnect_raw_tp, struct sock *sk, int oldstate, int newstate)
{
	return on_state(sk, oldstate, newstate, false);
}

SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(tcpconnect_tp_btf, struct sock *sk, int oldstate, int newstate)
{
	return on_state(sk, oldstate, newstate, true);
}

SEC("tracepoint/sock/inet_sock_set_state")
int tcpconnect_tracepoint(struct trace_event_raw_inet_sock_set_state *ctx)
{
	if (ctx->protocol != IPPROTO_TCP)
		return 0;
	return on_state((struct sock *)ctx->skaddr, ctx->oldstate,
			ctx->newstate, true);
}

/* -- UDP (--udp) ------------------------------------------------------------ */

SEC("tracepoint/syscalls/sys_enter_connect")
int tcpconnect_udp_enter(struct trace_event_raw_sys_enter *ctx)
{
	int fd = (int)ctx->args[0];
	struct socket *sock;
	struct sock *sk;

	if (!task_wanted())
		return 0;
	sock = fd_to_socket(fd);
	if (!sock || BPF_CORE_READ(sock, type) != SOCK_DGRAM)
		return 0;
	sk = BPF_CORE_READ(sock, sk);
	if (!sk || BPF_CORE_READ(sk, sk_protocol) != IPPROTO_UDP)
		return 0;
	/* The destination as the caller gave it (on failure the socket may
	 * not hold it); AF_UNSPEC, a disconnect, is not kept. */
	connect_enter(&udp_calls, fd, (const void *)ctx->args[1]);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_connect")
int tcpconnect_udp_exit(struct trace_event_raw_sys_exit *ctx)
{
	struct conn_tuple t = {};
	struct conn_start st = {};
	struct connect_call *c;
	struct sock *sk;
	__u32 tid = current_tid();
	long ret = ctx->ret;
	__u16 skfamily;

	c = bpf_map_lookup_elem(&udp_calls, &tid);
	if (!c)
		return 0;
	sk = fd_to_sock(c->fd);
	if (sk) {
		skfamily = BPF_CORE_READ(sk, __sk_common.skc_family);
		if (ret == 0) {
			/* connected: the socket's own view is authoritative
			 * (e.g. a v4 destination on a v6 socket is v4-mapped) */
			t.family = skfamily;
			t.dport = sk_dport(sk);
			sk_read_addrs(sk, skfamily, t.saddr, t.daddr);
		} else {
			t.family = c->sa.family;
			t.dport = c->sa.port;
			__builtin_memcpy(t.daddr, c->sa.addr, 16);
			if (skfamily == c->sa.family) {
				__u8 ignored[16];

				sk_read_addrs(sk, skfamily, t.saddr, ignored);
			}
		}
		t.sport = sk_sport(sk);
		t.proto = IPPROTO_UDP;
		conn_start_now(&st);	/* UDP connects at once */
		finish(&st, &t, ret == 0, ret < 0 ? -ret : 0);
	}
	bpf_map_delete_elem(&udp_calls, &tid);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
