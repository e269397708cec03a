// SPDX-License-Identifier: GPL-2.0
/*
 * soaccept - IP accept() calls with the peer's address and port and the
 * result (the book's soaccept.bt).
 *
 * Hooks: sys_enter_accept/accept4 remember the listening fd per thread;
 * sys_exit_accept/accept4 report the call.  On success the peer comes from
 * the new socket itself (through its fd), so it is known even when the
 * caller passed no address buffer; on failure the listening socket gives the
 * family and local port.  Only AF_INET and AF_INET6 sockets are reported.
 */
#include "events.h"
#include "socklayer.h"

struct soaccept_event {
	__u64 ts_ns;
	__u64 cgroup_id;	/* the task's (filter.h labels) */
	__u32 netns;		/* the task's (filter.h labels) */
	__u32 pid;
	__s32 ret;		/* the new fd, or -errno */
	__s32 listen_fd;
	__u16 family;
	__u16 port;		/* peer port */
	__u16 lport;		/* local (listening) port */
	__u16 pad;
	__u8 addr[16];		/* peer address */
	char comm[TASK_COMM_LEN];
};

const volatile __u32 targ_tgid = 0;
const volatile __u16 lports[MAX_PORTS] = {};
const volatile __u32 n_lports = 0;

/* accept() in flight: the listening fd, by thread id */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u32);
	__type(value, __s32);
} calls SEC(".maps");

struct soaccept_event _event_type = {};

static __always_inline int enter(int fd)
{
	__u32 tid = current_tid();

	if (pt_proc_wanted(targ_tgid))
		bpf_map_update_elem(&calls, &tid, &fd, BPF_ANY);
	return 0;
}

static __always_inline int leave(long ret)
{
	__u32 tid = current_tid();
	__s32 *lfd = bpf_map_lookup_elem(&calls, &tid);
	struct pt_sockaddr peer = {};
	struct soaccept_event *e;
	struct sock_info si = {};
	struct sock *sk;
	__u64 now;

	if (!lfd)
		return 0;
	if (!fd_sock_info(*lfd, &si))
		goto out;
	if (si.family != AF_INET && si.family != AF_INET6)
		goto out;
	if (!port_allowed(lports, n_lports, si.lport))
		goto out;
	if (ret >= 0) {
		sk = fd_to_sock(ret);
		if (sk)
			sk_peer(sk, &peer);
	}
	e = event_reserve(struct soaccept_event);
	if (!e)
		goto out;
	now = bpf_ktime_get_ns();
	e->ts_ns = now;
	e->pid = bpf_get_current_pid_tgid() >> 32;
	e->cgroup_id = pt_task_cgroup_label();
	e->netns = pt_task_netns_label();
	e->ret = ret;
	e->listen_fd = *lfd;
	e->family = si.family;
	e->lport = si.lport;
	e->port = peer.port;
	__builtin_memcpy(e->addr, peer.addr, 16);
	bpf_get_current_comm(e->comm, sizeof(e->comm));
	event_submit(e, now);
out:
	bpf_map_delete_elem(&calls, &tid);
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_accept4")
int soaccept_enter4(struct trace_event_raw_sys_enter *ctx) { return enter(ctx->args[0]); }

SEC("tracepoint/syscalls/sys_enter_accept")
int soaccept_enter(struct trace_event_raw_sys_enter *ctx) { return enter(ctx->args[0]); }

SEC("tracepoint/syscalls/sys_exit_accept4")
int soaccept_exit4(struct trace_event_raw_sys_exit *ctx) { return leave(ctx->ret); }

SEC("tracepoint/syscalls/sys_exit_accept")
int soaccept_exit(struct trace_event_raw_sys_exit *ctx) { return leave(ctx->ret); }

char LICENSE[] SEC("license") = "GPL";
