// SPDX-License-Identifier: GPL-2.0
/*
 * soconnect - IP connect() calls with the address, port, result and the
 * time spent in the call (the book's soconnect.bt).
 *
 * Hooks: sys_enter_connect records the address the caller passes (read from
 * user memory then, before the call can change it) and the start time, per
 * thread; sys_exit_connect emits the call with its return value.  A
 * non-blocking connect returns at once with EINPROGRESS: its latency is
 * that of the call, not of the handshake (soconnlat follows it further).
 */
#include "events.h"
#include "socklayer.h"

struct soconnect_event {
	__u64 ts_ns;		/* CLOCK_MONOTONIC at sys_exit_connect */
	__u64 lat_ns;		/* time in connect() */
	__u64 cgroup_id;	/* the task's (filter.h labels) */
	__u32 netns;		/* the task's (filter.h labels) */
	__u32 pad;
	__u32 pid;
	__u32 tid;
	__s32 fd;
	__s32 ret;		/* 0 or -errno */
	__u16 family;
	__u16 port;
	__u8 addr[16];
	char comm[TASK_COMM_LEN];
};

const volatile __u32 targ_tgid = 0;
const volatile __u16 rports[MAX_PORTS] = {};
const volatile __u32 n_rports = 0;

CONNECT_CALLS(calls);

struct soconnect_event _event_type = {};

SEC("tracepoint/syscalls/sys_enter_connect")
int soconnect_enter(struct trace_event_raw_sys_enter *ctx)
{
	if (pt_proc_wanted(targ_tgid))
		connect_enter(&calls, ctx->args[0], (const void *)ctx->args[1]);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_connect")
int soconnect_exit(struct trace_event_raw_sys_exit *ctx)
{
	__u32 tid = current_tid();
	struct connect_call *c = bpf_map_lookup_elem(&calls, &tid);
	struct soconnect_event *e;
	__u64 now;

	if (!c)
		return 0;
	if (!port_allowed(rports, n_rports, c->sa.port))
		goto out;
	e = event_reserve(struct soconnect_event);
	if (!e)
		goto out;
	now = bpf_ktime_get_ns();
	e->ts_ns = now;
	e->lat_ns = now - c->ts_ns;
	e->pid = bpf_get_current_pid_tgid() >> 32;
	e->tid = tid;
	e->cgroup_id = pt_task_cgroup_label();
	e->netns = pt_task_netns_label();
	e->pad = 0;
	e->fd = c->fd;
	e->ret = ctx->ret;
	e->family = c->sa.family;
	e->port = c->sa.port;
	__builtin_memcpy(e->addr, c->sa.addr, 16);
	bpf_get_current_comm(e->comm, sizeof(e->comm));
	event_submit(e, now);
out:
	bpf_map_delete_elem(&calls, &tid);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
