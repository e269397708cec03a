// SPDX-License-Identifier: GPL-2.0
/*
 * tcpsynbl - histograms of the SYN backlog (accept queue) length of TCP
 * listeners, one per backlog limit (sk_max_ack_backlog), in the kernel.
 *
 * Variants, best first:
 *  - fentry / kprobe on tcp_v4_syn_recv_sock and tcp_v6_syn_recv_sock (what
 *    libbpf-tools and BCC use): called on the listener for each completed
 *    handshake, before the new socket is queued, so the value is the queue
 *    length the connection found;
 *  - tp_btf / raw_tp sk_data_ready on listeners: the listener is woken after
 *    the connection was queued, so every value is one more than the
 *    original's, and connections refused because the queue was full never
 *    get there (they are not freed by kfree_skb either: nstat shows them as
 *    TcpExtListenOverflows).
 *
 * A v4 connection to a dual-stack v6 listener passes through both
 * syn_recv_sock functions; it is counted once, by the v6 one.
 */
#include "socklayer.h"		/* struct log2_hist, hist_add() */

struct tcpsynbl_key {
	__u64 backlog_max;
	__u32 after_enqueue;	/* sampled after the connection was queued (+1): sk_data_ready */
	__u32 pad;
};

const volatile __u16 target_family = 0;		/* 0: both (family of the listener) */
const volatile __u16 lports[MAX_PORTS] = {};	/* listener ports, host order */
const volatile __u32 n_lports = 0;

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, struct tcpsynbl_key);
	__type(value, struct log2_hist);
} hists SEC(".maps");

static __always_inline int account(const struct sock *sk, bool from_v4_fn, bool after_enqueue)
{
	struct tcpsynbl_key key = {};
	__u16 family = BPF_CORE_READ(sk, __sk_common.skc_family);

	if (from_v4_fn && family == AF_INET6)
		return 0;	/* the v6 function counts it */
	if (target_family && family != target_family)
		return 0;
	if (!port_allowed(lports, n_lports, BPF_CORE_READ(sk, __sk_common.skc_num)))
		return 0;
	if (!pt_sk_wanted(sk))		/* the listener's cgroup and netns (filter.h) */
		return 0;
	key.backlog_max = BPF_CORE_READ(sk, sk_max_ack_backlog);
	key.after_enqueue = after_enqueue;
	hist_add(&hists, &key, BPF_CORE_READ(sk, sk_ack_backlog));
	return 0;
}

SEC("fentry/tcp_v4_syn_recv_sock")
int BPF_PROG(tcpsynbl_fentry_v4, const struct sock *sk)
{
	return account(sk, true, false);
}

SEC("fentry/tcp_v6_syn_recv_sock")
int BPF_PROG(tcpsynbl_fentry_v6, const struct sock *sk)
{
	return account(sk, false, false);
}

SEC("kprobe/tcp_v4_syn_recv_sock")
int BPF_KPROBE(tcpsynbl_kprobe_v4, const struct sock *sk)
{
	return account(sk, true, false);
}

SEC("kprobe/tcp_v6_syn_recv_sock")
int BPF_KPROBE(tcpsynbl_kprobe_v6, const struct sock *sk)
{
	return account(sk, false, false);
}

/* sk_data_ready fires for every socket that gets data: keep listeners. */
static __always_inline int data_ready(const struct sock *sk)
{
	if (BPF_CORE_READ(sk, __sk_common.skc_state) != TCP_LISTEN ||
	    BPF_CORE_READ(sk, sk_protocol) != IPPROTO_TCP)
		return 0;
	return account(sk, false, true);
}

TP_BTF_AND_RAW_TP("sk_data_ready", tcpsynbl_tp_btf, tcpsynbl_raw_tp,
		  data_ready(sk),
		  const struct sock *sk)

char LICENSE[] SEC("license") = "GPL";
