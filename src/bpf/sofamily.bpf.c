// SPDX-License-Identifier: GPL-2.0
/*
 * sofamily - new sockets by address family and process: sockets created
 * (socket()), connects and accepts, counted in the kernel (the book's
 * sofamily.bt counts connects and accepts; socket() is an extra).
 *
 * Hooks: the syscall tracepoints, as in the book.  connect: the family of the
 * address the caller passes (read from user memory at sys_enter_connect).
 * accept: the family of the new socket, found through its fd at
 * sys_exit_accept/accept4 (the peer address argument may be NULL).
 */
#include "socklayer.h"

enum { K_SOCKET, K_CONNECT, K_ACCEPT };	/* as KINDS in tools/sofamily.py */

struct sofamily_key {
	__u32 pid;
	__u16 family;
	__u8 kind;
	__u8 pad;
	char comm[TASK_COMM_LEN];
};

const volatile __u32 targ_tgid = 0;

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 10240);
	__type(key, struct sofamily_key);
	__type(value, __u64);
} counts SEC(".maps");

static __always_inline int count(__u8 kind, __u16 family)
{
	struct sofamily_key key = {};

	if (!pt_proc_wanted(targ_tgid))
		return 0;
	key.pid = bpf_get_current_pid_tgid() >> 32;
	key.family = family;
	key.kind = kind;
	bpf_get_current_comm(key.comm, sizeof(key.comm));
	count_key(&counts, &key);
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_socket")
int sofamily_socket(struct trace_event_raw_sys_enter *ctx)
{
	return count(K_SOCKET, (__u16)ctx->args[0]);
}

SEC("tracepoint/syscalls/sys_enter_connect")
int sofamily_connect(struct trace_event_raw_sys_enter *ctx)
{
	struct pt_sockaddr sa = {};

	if (read_user_sockaddr((const void *)ctx->args[1], &sa) < 0)
		return 0;
	return count(K_CONNECT, sa.family);
}

static __always_inline int accepted(long ret)
{
	struct sock_info si = {};

	if (ret < 0 || !fd_sock_info(ret, &si))
		return 0;
	return count(K_ACCEPT, si.family);
}

SEC("tracepoint/syscalls/sys_exit_accept4")
int sofamily_accept4(struct trace_event_raw_sys_exit *ctx)
{
	return accepted(ctx->ret);
}

SEC("tracepoint/syscalls/sys_exit_accept")
int sofamily_accept(struct trace_event_raw_sys_exit *ctx)
{
	return accepted(ctx->ret);
}

char LICENSE[] SEC("license") = "GPL";
