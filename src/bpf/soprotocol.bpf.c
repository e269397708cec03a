// SPDX-License-Identifier: GPL-2.0
/*
 * soprotocol - connects and accepts by transport protocol and process,
 * counted in the kernel (the book's soprotocol.bt).
 *
 * Variants: the book's kprobes on security_socket_connect/accept (the
 * struct socket is their first argument; for accept it is the listening
 * socket), and, where kprobes are missing, the syscall tracepoints with the
 * fd -> socket walk: sys_enter_connect on the connecting socket,
 * sys_exit_accept/accept4 on the accepted one.  (lsm/socket_connect would be
 * the natural replacement but BPF LSM is refused on such kernels.)
 */
#include "socklayer.h"

enum { K_CONNECT, K_ACCEPT };	/* as KINDS in tools/soprotocol.py */

struct soprotocol_key {
	__u32 pid;
	__u16 protocol;
	__u8 kind;
	__u8 type;		/* SOCK_STREAM, SOCK_DGRAM, ... */
	__u16 family;
	__u16 pad;
	char comm[TASK_COMM_LEN];
	char proto_name[16];	/* the kernel's struct proto name: TCP, UDPv6, ... */
};

const volatile __u32 targ_tgid = 0;

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 10240);
	__type(key, struct soprotocol_key);
	__type(value, __u64);
} counts SEC(".maps");

static __always_inline int count(__u8 kind, const struct sock_info *si)
{
	struct soprotocol_key key = {};

	key.pid = bpf_get_current_pid_tgid() >> 32;
	key.kind = kind;
	key.protocol = si->protocol;
	key.type = si->type;
	key.family = si->family;
	__builtin_memcpy(key.proto_name, si->proto_name, sizeof(key.proto_name));
	bpf_get_current_comm(key.comm, sizeof(key.comm));
	count_key(&counts, &key);
	return 0;
}

static __always_inline int from_socket(__u8 kind, struct socket *sock)
{
	struct sock_info si = {};
	struct sock *sk;

	if (!pt_proc_wanted(targ_tgid) || !sock)
		return 0;
	sk = BPF_CORE_READ(sock, sk);
	if (!sk)
		return 0;
	sock_facts(sock, sk, &si);
	return count(kind, &si);
}

SEC("kprobe/security_socket_connect")
int BPF_KPROBE(soprotocol_kprobe_connect, struct socket *sock)
{
	return from_socket(K_CONNECT, sock);
}

SEC("kprobe/security_socket_accept")
int BPF_KPROBE(soprotocol_kprobe_accept, struct socket *sock)
{
	return from_socket(K_ACCEPT, sock);
}

SEC("tracepoint/syscalls/sys_enter_connect")
int soprotocol_connect(struct trace_event_raw_sys_enter *ctx)
{
	if (!pt_proc_wanted(targ_tgid))
		return 0;
	return from_socket(K_CONNECT, fd_to_socket(ctx->args[0]));
}

static __always_inline int accepted(long ret)
{
	if (ret < 0 || !pt_proc_wanted(targ_tgid))
		return 0;
	return from_socket(K_ACCEPT, fd_to_socket(ret));
}

SEC("tracepoint/syscalls/sys_exit_accept4")
int soprotocol_accept4(struct trace_event_raw_sys_exit *ctx)
{
	return accepted(ctx->ret);
}

SEC("tracepoint/syscalls/sys_exit_accept")
int soprotocol_accept(struct trace_event_raw_sys_exit *ctx)
{
	return accepted(ctx->ret);
}

char LICENSE[] SEC("license") = "GPL";
