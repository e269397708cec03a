// SPDX-License-Identifier: GPL-2.0
/*
 * tcpsubnet - TCP bytes sent, summed per destination subnet in the kernel.
 *
 * The subnets are rodata: per family, (network, mask) pairs in the user's
 * order with their index in the user's list; the first that matches the
 * socket's remote address wins, like BCC's generated if-chain.  An IPv6
 * socket talking to a v4-mapped address (::ffff:a.b.c.d) is matched against
 * the IPv4 subnets, since that is where its packets go.  Bytes go to a
 * per-CPU counter per subnet index; user space sums the CPUs.
 *
 * Variants, best first: kprobe on tcp_sendmsg (BCC's hook; counts the size
 * asked for), then sock:sock_send_length (Linux 6.3+; what sock_sendmsg()
 * returned, so the bytes really queued) via tp_btf, raw_tp or the classic
 * tracepoint.
 */
#include "pytrace.h"
#include "filter.h"

#define MAX_SUBNETS 32

/* Addresses and masks as they lie in memory (network order), net = net & mask. */
const volatile __u32 n4 = 0;
const volatile __u32 net4[MAX_SUBNETS] = {};
const volatile __u32 mask4[MAX_SUBNETS] = {};
const volatile __u32 idx4[MAX_SUBNETS] = {};
const volatile __u32 n6 = 0;
const volatile __u64 net6[2 * MAX_SUBNETS] = {};	/* two halves per subnet */
const volatile __u64 mask6[2 * MAX_SUBNETS] = {};
const volatile __u32 idx6[MAX_SUBNETS] = {};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, MAX_SUBNETS);
	__type(key, __u32);
	__type(value, __u64);
} subnet_bytes SEC(".maps");

static __always_inline void add(__u32 idx, __u64 bytes)
{
	__u64 *v = bpf_map_lookup_elem(&subnet_bytes, &idx);

	/* per CPU, but a preempted sender on the same CPU could interleave */
	if (v)
		__sync_fetch_and_add(v, bytes);
}

static __always_inline void match4(__u32 daddr, __u64 bytes)
{
	for (int i = 0; i < MAX_SUBNETS; i++) {
		if (i >= n4)
			return;
		if ((daddr & mask4[i]) == net4[i]) {
			add(idx4[i], bytes);
			return;
		}
	}
}

static __always_inline void match6(__u64 hi, __u64 lo, __u64 bytes)
{
	for (int i = 0; i < MAX_SUBNETS; i++) {
		if (i >= n6)
			return;
		if ((hi & mask6[2 * i]) == net6[2 * i] &&
		    (lo & mask6[2 * i + 1]) == net6[2 * i + 1]) {
			add(idx6[i], bytes);
			return;
		}
	}
}

static __always_inline int account(const struct sock *sk, __s64 bytes)
{
	__u16 family;

	if (!sk || bytes <= 0)
		return 0;
	if (!pt_task_sk_wanted(sk))	/* -N/--netns: the socket's; the task's cgroup */
		return 0;
	family = BPF_CORE_READ(sk, __sk_common.skc_family);
	if (family == AF_INET) {
		match4(BPF_CORE_READ(sk, __sk_common.skc_daddr), bytes);
	} else if (family == AF_INET6) {
		__u64 a[2] = {};

		BPF_CORE_READ_INTO(&a, sk, __sk_common.skc_v6_daddr);
		/* ::ffff:a.b.c.d: bytes 0-9 zero, 10-11 0xff, then the IPv4 address */
		if (a[0] == 0 && (__u32)a[1] == bpf_htonl(0x0000ffff))
			match4(a[1] >> 32, bytes);
		else
			match6(a[0], a[1], bytes);
	}
	return 0;
}

SEC("kprobe/tcp_sendmsg")
int BPF_KPROBE(tcpsubnet_kprobe, struct sock *sk, struct msghdr *msg, size_t size)
{
	return account(sk, size);
}

static __always_inline int from_tp(const struct sock *sk, int ret)
{
	if (ret <= 0 || BPF_CORE_READ(sk, sk_protocol) != IPPROTO_TCP)
		return 0;
	return account(sk, ret);
}

TP_BTF_AND_RAW_TP("sock_send_length", tcpsubnet_tp_btf, tcpsubnet_raw_tp,
		  from_tp(sk, ret),
		  struct sock *sk, int ret, int flags)

SEC("tracepoint/sock/sock_send_length")
int tcpsubnet_tracepoint(struct trace_event_raw_sock_msg_length *ctx)
{
	if (ctx->ret <= 0 || ctx->protocol != IPPROTO_TCP)
		return 0;
	return account(ctx->sk, ctx->ret);
}

char LICENSE[] SEC("license") = "GPL";
