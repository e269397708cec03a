// SPDX-License-Identifier: GPL-2.0
/*
 * solisten - listen() on TCP sockets: port, address and the effective
 * backlog.
 *
 * The backlog reported is sk_max_ack_backlog as inet_listen() left it, i.e.
 * after __sys_listen() clamped the caller's value to net.core.somaxconn (of
 * the socket's netns).  Every variant reads it after the listen:
 *
 *  fentry      fexit inet_listen (libbpf-tools).
 *  kprobe      kprobe + kretprobe inet_listen (BCC hooks the entry).
 *  tracepoint  sys_enter_listen (the fd) + sys_exit_listen (the result), the
 *              socket found with the fd walk (sockfd.h).
 *  tp_btf      inet_sock_set_state CLOSE->LISTEN, which runs inside
 *              listen(): only listens that succeed on a socket not yet
 *              listening (no change of backlog on a listening socket).
 */
#include "events.h"
#include "sockfd.h"
#include "conntrack.h"

struct solisten_event {
	__u64 ts_ns;
	__u64 cgroup_id;	/* the task's (filter.h labels) */
	__u32 pid;
	__u32 netns;
	__u32 backlog;		/* effective: sk_max_ack_backlog */
	__s32 ret;		/* listen()'s result */
	__u16 family;
	__u16 lport;
	__u8 laddr[16];
	char comm[TASK_COMM_LEN];
};

const volatile __u32 filter_pid = 0;		/* -p */

/* listen() in flight, by thread id: the socket (kprobe) or the fd (syscall). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 10240);
	__type(key, __u32);
	__type(value, __u64);
} inflight SEC(".maps");

struct solisten_event _event_type = {};

static __always_inline int report(const struct sock *sk, int ret)
{
	struct solisten_event *e;
	__u16 family;
	__u32 netns;
	__u8 ignored[16];
	__u64 now;

	if (!sk || !sk_is_inet_tcp(sk, &family))
		return 0;
	if (!pt_task_sk_wanted(sk))
		return 0;
	netns = sk_netns(sk);

	e = event_reserve(struct solisten_event);
	if (!e)
		return 0;
	now = bpf_ktime_get_ns();
	e->ts_ns = now;
	e->pid = bpf_get_current_pid_tgid() >> 32;
	e->cgroup_id = pt_task_cgroup_label();
	e->netns = netns;
	e->backlog = BPF_CORE_READ(sk, sk_max_ack_backlog);
	e->ret = ret;
	e->family = family;
	e->lport = sk_sport(sk);
	sk_read_addrs(sk, family, e->laddr, ignored);
	bpf_get_current_comm(e->comm, sizeof(e->comm));
	event_submit(e, now);
	return 0;
}

SEC("fexit/inet_listen")
int BPF_PROG(solisten_fexit, struct socket *sock, int backlog, int ret)
{
	if (!tgid_wanted(filter_pid))
		return 0;
	return report(BPF_CORE_READ(sock, sk), ret);
}

SEC("kprobe/inet_listen")
int BPF_KPROBE(solisten_kprobe, struct socket *sock)
{
	__u32 tid = current_tid();
	__u64 val = (__u64)sock;

	if (tgid_wanted(filter_pid))
		bpf_map_update_elem(&inflight, &tid, &val, BPF_ANY);
	return 0;
}

SEC("kretprobe/inet_listen")
int BPF_KRETPROBE(solisten_kretprobe, int ret)
{
	__u32 tid = current_tid();
	__u64 *val = bpf_map_lookup_elem(&inflight, &tid);
	struct socket *sock;

	if (!val)
		return 0;
	sock = (struct socket *)*val;
	bpf_map_delete_elem(&inflight, &tid);
	return report(BPF_CORE_READ(sock, sk), ret);
}

SEC("tracepoint/syscalls/sys_enter_listen")
int solisten_tp_enter(struct trace_event_raw_sys_enter *ctx)
{
	__u32 tid = current_tid();
	__u64 fd = (int)ctx->args[0];

	if (tgid_wanted(filter_pid))
		bpf_map_update_elem(&inflight, &tid, &fd, BPF_ANY);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_listen")
int solisten_tp_exit(struct trace_event_raw_sys_exit *ctx)
{
	__u32 tid = current_tid();
	__u64 *fd = bpf_map_lookup_elem(&inflight, &tid);
	int ret = ctx->ret;
	struct sock *sk;

	if (!fd)
		return 0;
	sk = fd_to_sock((int)*fd);
	bpf_map_delete_elem(&inflight, &tid);
	return report(sk, ret);
}

SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(solisten_tp_btf, struct sock *sk, int oldstate, int newstate)
{
	if (oldstate != TCP_CLOSE || newstate != TCP_LISTEN ||
	    !tgid_wanted(filter_pid))
		return 0;
	return report(sk, 0);
}

char LICENSE[] SEC("license") = "GPL";
