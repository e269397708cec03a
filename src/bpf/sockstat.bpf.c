// SPDX-License-Identifier: GPL-2.0
/*
 * sockstat - counts of socket system calls and of socket sends/receives,
 * printed per interval (the book's sockstat.bt).
 *
 * The syscalls are counted at their sys_enter tracepoints.  Sends and
 * receives: the book uses kprobes on sock_sendmsg/sock_recvmsg; the "kprobe"
 * variant hooks the family operations they call (SOCK_OPS_IO in socklayer.h:
 * sock_sendmsg is inlined on some builds).  Since 6.3 the sock:sock_send_length and
 * sock:sock_recv_length tracepoints fire at the same place, once per call
 * through sock_sendmsg/sock_recvmsg (reached via tp_btf or the classic
 * tracepoint).  Counters are per-CPU, summed by user space.
 */
#include "socklayer.h"

/* counter index: keep in step with COUNTERS in tools/sockstat.py */
enum { C_SOCKET, C_SOCKETPAIR, C_BIND, C_CONNECT, C_ACCEPT, C_ACCEPT4, C_SEND, C_RECV, C_MAX };

const volatile __u32 targ_tgid = 0;

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, C_MAX);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

static __always_inline int hit(__u32 idx)
{
	__u64 *v;

	if (!pt_proc_wanted(targ_tgid))
		return 0;
	v = bpf_map_lookup_elem(&counters, &idx);
	if (v)
		*v += 1;	/* per-CPU: no other writer */
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_socket")
int sockstat_socket(void *ctx) { return hit(C_SOCKET); }

SEC("tracepoint/syscalls/sys_enter_socketpair")
int sockstat_socketpair(void *ctx) { return hit(C_SOCKETPAIR); }

SEC("tracepoint/syscalls/sys_enter_bind")
int sockstat_bind(void *ctx) { return hit(C_BIND); }

SEC("tracepoint/syscalls/sys_enter_connect")
int sockstat_connect(void *ctx) { return hit(C_CONNECT); }

SEC("tracepoint/syscalls/sys_enter_accept")
int sockstat_accept(void *ctx) { return hit(C_ACCEPT); }

SEC("tracepoint/syscalls/sys_enter_accept4")
int sockstat_accept4(void *ctx) { return hit(C_ACCEPT4); }

/* kernels before 6.3: the family operations (socklayer.h, SOCK_OPS_IO) */
#define SOCKSTAT_KPROBE(tool, fn, dir)                                          \
	SEC("kprobe/" #fn)                                                      \
	int BPF_KPROBE(tool##_kprobe_##fn) { return hit(dir == IO_SEND ? C_SEND : C_RECV); }
SOCK_OPS_IO(SOCKSTAT_KPROBE, sockstat)

SEC("tp_btf/sock_send_length")
int BPF_PROG(sockstat_tp_btf_send) { return hit(C_SEND); }

SEC("tp_btf/sock_recv_length")
int BPF_PROG(sockstat_tp_btf_recv) { return hit(C_RECV); }

SEC("tracepoint/sock/sock_send_length")
int sockstat_tp_send(void *ctx) { return hit(C_SEND); }

SEC("tracepoint/sock/sock_recv_length")
int sockstat_tp_recv(void *ctx) { return hit(C_RECV); }

char LICENSE[] SEC("license") = "GPL";
