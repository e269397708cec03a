/* SPDX-License-Identifier: GPL-2.0 */
/*
 * pytrace.h - what every pytrace BPF program shares.
 *
 * - the includes (vmlinux.h for CO-RE, libbpf's helper headers);
 * - (the event ring buffer lives in events.h, for tools that stream events);
 * - small filters (port lists, the process) whose settings are const
 *   volatile rodata, written by the Python loader before load so the
 *   verifier sees constants.
 */
#ifndef __PYTRACE_H
#define __PYTRACE_H

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_endian.h>

#ifndef AF_INET
#define AF_INET 2
#endif
#ifndef AF_INET6
#define AF_INET6 10
#endif
#ifndef IPPROTO_TCP
#define IPPROTO_TCP 6
#endif
#ifndef IPPROTO_UDP
#define IPPROTO_UDP 17
#endif
#define TASK_COMM_LEN 16

/*
 * Port lists (-L/-D style filters): up to MAX_PORTS ports in rodata.
 * n == 0 means "no filter".
 */
#define MAX_PORTS 16

static __always_inline bool port_allowed(const volatile __u16 *ports, __u32 n,
					 __u16 port)
{
	if (n == 0)
		return true;
#pragma unroll
	for (int i = 0; i < MAX_PORTS; i++) {
		if (i < n && ports[i] == port)
			return true;
	}
	return false;
}

/* -p PID: the process (thread group) to trace, 0 for all; each tool declares
 * a `const volatile __u32` for it and passes it here. */
static __always_inline bool tgid_wanted(__u32 targ)
{
	return !targ || (bpf_get_current_pid_tgid() >> 32) == targ;
}

/* The current thread's id: the key of calls followed from entry to exit. */
static __always_inline __u32 current_tid(void)
{
	return (__u32)bpf_get_current_pid_tgid();
}

/* Copy a socket's addresses (v4 into the first 4 bytes) from sock_common. */
static __always_inline void sk_read_addrs(const struct sock *sk, __u16 family,
					  __u8 *saddr, __u8 *daddr)
{
	if (family == AF_INET) {
		BPF_CORE_READ_INTO((__u32 *)saddr, sk, __sk_common.skc_rcv_saddr);
		BPF_CORE_READ_INTO((__u32 *)daddr, sk, __sk_common.skc_daddr);
	} else {
		BPF_CORE_READ_INTO((struct in6_addr *)saddr, sk,
				   __sk_common.skc_v6_rcv_saddr);
		BPF_CORE_READ_INTO((struct in6_addr *)daddr, sk,
				   __sk_common.skc_v6_daddr);
	}
}

/*
 * Local port in host order as the tracepoints report it: inet_sport stays set
 * until the socket is freed, while skc_num is cleared when it is unhashed.
 */
static __always_inline __u16 sk_sport(const struct sock *sk)
{
	return bpf_ntohs(BPF_CORE_READ((const struct inet_sock *)sk, inet_sport));
}

/* Addresses from a classic tracepoint's own copies when it has them
 * (tp_saddr non-NULL: ctx memory, which can only be read at a computed
 * offset by helper), else from the socket. */
static __always_inline void tp_or_sk_addrs(const void *tp_saddr, const void *tp_daddr,
					   const struct sock *sk, __u16 family,
					   __u8 *saddr, __u8 *daddr)
{
	if (tp_saddr) {
		__u32 len = family == AF_INET ? 4 : 16;

		bpf_probe_read_kernel(saddr, len, tp_saddr);
		bpf_probe_read_kernel(daddr, len, tp_daddr);
	} else {
		sk_read_addrs(sk, family, saddr, daddr);
	}
}

/* Inode number of the socket's network namespace (as in /proc/PID/ns/net). */
static __always_inline __u32 sk_netns(const struct sock *sk)
{
	return BPF_CORE_READ(sk, __sk_common.skc_net.net, ns.inum);
}

/* Remote port in host order. */
static __always_inline __u16 sk_dport(const struct sock *sk)
{
	return bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport));
}

/* log2 histogram slot for a value (0 and 1 share slot 0, like the BCC tools). */
static __always_inline __u32 log2_slot(__u64 v)
{
	__u32 r = 0;

	if (v >> 32) { v >>= 32; r += 32; }
	if (v >> 16) { v >>= 16; r += 16; }
	if (v >> 8) { v >>= 8; r += 8; }
	if (v >> 4) { v >>= 4; r += 4; }
	if (v >> 2) { v >>= 2; r += 2; }
	if (v >> 1) { r += 1; }
	return r;
}

/*
 * The address family of a classic tcp:tcp_probe record (tcprtt, tcpwin): its
 * own field where it has one (5.10 has none), else that of the sockaddr the
 * record keeps (sa_family comes first in either).
 */
static __always_inline __u16 tcp_probe_family(const struct trace_event_raw_tcp_probe *ctx)
{
	__u16 family = 0;

	if (bpf_core_field_exists(ctx->family))
		return BPF_CORE_READ(ctx, family);
	bpf_probe_read_kernel(&family, sizeof(family), ctx->saddr);
	return family;
}

/*
 * REFUSE_WITHOUT(type, field): for a program written for a newer shape of
 * its hook (a tracepoint that gained arguments, say), make the verifier
 * refuse it on kernels whose BTF lacks that field (or type), instead of it
 * loading and reading the old arguments as if they were the new, or seeing
 * nothing.  Where the field is missing, libbpf turns its offset into an
 * instruction the verifier rejects, on the only path CO-RE leaves; where it
 * exists, that path is gone.  Costs nothing at run time; the refusal is
 * remembered per boot (core/features.py) and explained by the variant's floor.
 */
#define REFUSE_WITHOUT(type, field)					\
	do {								\
		if (!bpf_core_field_exists(type, field))		\
			return bpf_core_field_offset(type, field);	\
	} while (0)

/*
 * One handler on a tracepoint reached two ways, as two programs: tp_btf
 * (BTF-typed arguments, no tracefs) and raw_tp (where tp_btf is refused).
 * The Python side loads one of them.  args are the tracepoint's arguments
 * as BPF_PROG takes them; result, the expression both programs return,
 * may only read them with BPF_CORE_READ-style accesses that suit both.
 */
#define TP_BTF_AND_RAW_TP(tp, btf_prog, raw_prog, result, args...)	\
	SEC("tp_btf/" tp)						\
	int BPF_PROG(btf_prog, ##args)					\
	{								\
		return result;						\
	}								\
	SEC("raw_tp/" tp)						\
	int BPF_PROG(raw_prog, ##args)					\
	{								\
		return result;						\
	}

#endif /* __PYTRACE_H */
