// SPDX-License-Identifier: GPL-2.0
/*
 * soconnlat - IP connect() latency as log2 histograms, per calling user
 * stack and process (the book's soconnlat.bt).
 *
 * A blocking connect ends at sys_exit_connect.  A non-blocking one returns
 * EINPROGRESS there and is taken as done at the thread's next poll, select
 * or epoll wait that returns ready descriptors (as the book does; a wait for
 * unrelated descriptors in between ends it early).  The user stack is taken
 * at sys_enter_connect; it goes past the first frame only where the calling
 * code keeps frame pointers.  Its frames are kept as build id and file
 * offset (BPF_F_STACK_BUILD_ID), so they can be named after the process
 * exited: the usual case for short-lived clients (core/usyms.py).
 */
#include "socklayer.h"

#define MAX_STACK_DEPTH 127

struct soconnlat_key {
	__s32 ustack;		/* stack id; -1 when stacks are off, other < 0: -errno */
	__u32 pid;
	char comm[TASK_COMM_LEN];
};

const volatile __u32 targ_tgid = 0;
const volatile bool user_stacks = true;
const volatile bool targ_ms = false;

CONNECT_CALLS(calls);

struct {
	__uint(type, BPF_MAP_TYPE_STACK_TRACE);
	__uint(max_entries, 2048);
	__uint(map_flags, BPF_F_STACK_BUILD_ID);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, MAX_STACK_DEPTH * sizeof(struct bpf_stack_build_id));
} stacks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, struct soconnlat_key);
	__type(value, struct log2_hist);
} hists SEC(".maps");

SEC("tracepoint/syscalls/sys_enter_connect")
int soconnlat_enter(struct trace_event_raw_sys_enter *ctx)
{
	struct connect_call *c;

	if (!pt_proc_wanted(targ_tgid))
		return 0;
	c = connect_enter(&calls, ctx->args[0], (const void *)ctx->args[1]);
	if (c && user_stacks)
		c->ustack = bpf_get_stackid(ctx, &stacks, BPF_F_USER_STACK);
	return 0;
}

static __always_inline void done(__u32 tid, const struct connect_call *c)
{
	struct soconnlat_key key = {};
	__u64 delta = (bpf_ktime_get_ns() - c->ts_ns) / 1000;

	key.ustack = c->ustack;
	key.pid = bpf_get_current_pid_tgid() >> 32;
	bpf_get_current_comm(key.comm, sizeof(key.comm));
	hist_add(&hists, &key, targ_ms ? delta / 1000 : delta);
	bpf_map_delete_elem(&calls, &tid);
}

SEC("tracepoint/syscalls/sys_exit_connect")
int soconnlat_exit(struct trace_event_raw_sys_exit *ctx)
{
	__u32 tid = current_tid();
	struct connect_call *c = bpf_map_lookup_elem(&calls, &tid);

	if (c && ctx->ret != -EINPROGRESS)
		done(tid, c);
	return 0;
}

/* A wait that returned ready descriptors ends a non-blocking connect. */
static __always_inline int waited(long ret)
{
	__u32 tid = current_tid();
	struct connect_call *c;

	if (ret <= 0)
		return 0;
	c = bpf_map_lookup_elem(&calls, &tid);
	if (c)
		done(tid, c);
	return 0;
}

#define WAIT_EXIT(name)                                                        \
	SEC("tracepoint/syscalls/sys_exit_" #name)                             \
	int soconnlat_##name(struct trace_event_raw_sys_exit *ctx)             \
	{                                                                      \
		return waited(ctx->ret);                                       \
	}

WAIT_EXIT(poll)
WAIT_EXIT(ppoll)
WAIT_EXIT(select)
WAIT_EXIT(pselect6)
WAIT_EXIT(epoll_wait)
WAIT_EXIT(epoll_pwait)
WAIT_EXIT(epoll_pwait2)

char LICENSE[] SEC("license") = "GPL";
