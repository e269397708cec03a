// SPDX-License-Identifier: GPL-2.0
/*
 * tcptop - TCP bytes sent and received per process and connection, summed
 * in the kernel per (pid, addresses, ports); user space reads and resets the
 * table on every interval.
 *
 * Variants, best first: kprobes on tcp_sendmsg and tcp_recvmsg, entry and
 * return (BCC and libbpf-tools hook tcp_sendmsg's size and tcp_cleanup_rbuf,
 * which count what was asked to send and what a MSG_PEEK only looked at;
 * here a send counts what it returned, and a receive what it consumed: how
 * far it moved the socket's copied_seq, which a peek does not); then
 * sock:sock_send_length and sock:sock_recv_length (Linux 6.3+; what
 * sock_sendmsg()/sock_recvmsg() returned, peeks left out) via tp_btf, raw_tp
 * or the classic tracepoint.  Receives that bypass tcp_recvmsg and
 * sock_recvmsg (splice, kTLS) are not seen.  Both run in the process that
 * sends or reads, so the current task is the flow's owner.
 */
#include "pytrace.h"
#include "filter.h"

#define MSG_PEEK 2

struct tcptop_key {
	__u8 saddr[16];
	__u8 daddr[16];
	__u32 pid;
	__u16 family;
	__u16 lport;
	__u16 dport;
	__u16 pad;
	__u32 netns;		/* the socket's, with labels (filter.h pt_labels); else 0 */
	__u64 cgroup_id;	/* the task's, with labels; else 0 (a flow is not split by it then) */
};

struct tcptop_val {
	__u64 sent;
	__u64 received;
	char comm[TASK_COMM_LEN];	/* of the task that first moved bytes */
};

const volatile __u32 targ_pid = 0;	/* -p: tgid; 0 = all */
const volatile __u16 targ_family = 0;	/* -4/-6; 0 = both */
/* Sends/receives not counted because the flow table was full. */
__u64 missed = 0;

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 10240);
	__type(key, struct tcptop_key);
	__type(value, struct tcptop_val);
} flows SEC(".maps");

static __always_inline int account(const struct sock *sk, __s64 bytes, bool rx)
{
	struct tcptop_key key = {};
	struct tcptop_val *v;
	__u32 pid;
	__u16 family;

	if (!sk || bytes <= 0)
		return 0;
	pid = bpf_get_current_pid_tgid() >> 32;
	if (targ_pid && pid != targ_pid)
		return 0;
	if (!pt_task_sk_wanted(sk))	/* the task's cgroup, the socket's netns */
		return 0;
	family = BPF_CORE_READ(sk, __sk_common.skc_family);
	if (family != AF_INET && family != AF_INET6)
		return 0;
	if (targ_family && family != targ_family)
		return 0;

	key.pid = pid;
	key.family = family;
	key.cgroup_id = pt_task_cgroup_label();
	key.netns = pt_sk_netns_label(sk);
	key.lport = sk_sport(sk);
	key.dport = sk_dport(sk);
	sk_read_addrs(sk, family, key.saddr, key.daddr);

	v = bpf_map_lookup_elem(&flows, &key);
	if (!v) {
		struct tcptop_val zero = {};

		bpf_get_current_comm(zero.comm, sizeof(zero.comm));
		bpf_map_update_elem(&flows, &key, &zero, BPF_NOEXIST);
		v = bpf_map_lookup_elem(&flows, &key);
		if (!v) {
			__sync_fetch_and_add(&missed, 1);
			return 0;
		}
	}
	if (rx)
		__sync_fetch_and_add(&v->received, bytes);
	else
		__sync_fetch_and_add(&v->sent, bytes);
	return 0;
}

/* A tcp_sendmsg/tcp_recvmsg call in flight, by thread. */
struct call {
	__u64 sk;
	__u32 copied_seq;	/* tcp_recvmsg: at entry */
	__u32 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);	/* a thread killed mid-call cannot leak */
	__uint(max_entries, 16384);
	__type(key, __u32);
	__type(value, struct call);
} calls SEC(".maps");

static __always_inline int call_begin(const struct sock *sk)
{
	__u32 tid = bpf_get_current_pid_tgid();
	struct call c = {
		.sk = (__u64)sk,
		.copied_seq = BPF_CORE_READ((const struct tcp_sock *)sk, copied_seq),
	};

	bpf_map_update_elem(&calls, &tid, &c, BPF_ANY);
	return 0;
}

static __always_inline int call_end(long ret, bool rx)
{
	__u32 tid = bpf_get_current_pid_tgid();
	struct call *c = bpf_map_lookup_elem(&calls, &tid);
	const struct sock *sk;

	if (!c)
		return 0;
	sk = (const struct sock *)c->sk;
	if (ret > 0) {
		if (rx)		/* consumed: a MSG_PEEK leaves copied_seq where it was */
			account(sk, (__u32)(BPF_CORE_READ((const struct tcp_sock *)sk, copied_seq) -
					    c->copied_seq), true);
		else
			account(sk, ret, false);
	}
	bpf_map_delete_elem(&calls, &tid);
	return 0;
}

SEC("kprobe/tcp_sendmsg")
int BPF_KPROBE(tcptop_kprobe_send, struct sock *sk)
{
	return call_begin(sk);
}

SEC("kretprobe/tcp_sendmsg")
int BPF_KRETPROBE(tcptop_kretprobe_send, int ret)
{
	return call_end(ret, false);
}

SEC("kprobe/tcp_recvmsg")
int BPF_KPROBE(tcptop_kprobe_recv, struct sock *sk)
{
	return call_begin(sk);
}

SEC("kretprobe/tcp_recvmsg")
int BPF_KRETPROBE(tcptop_kretprobe_recv, int ret)
{
	return call_end(ret, true);
}

/* sock_sendmsg/sock_recvmsg of any socket: keep TCP; a peek consumes nothing. */
static __always_inline int from_tp(const struct sock *sk, int ret, int flags, bool rx)
{
	if (ret <= 0 || (rx && (flags & MSG_PEEK)))
		return 0;
	if (BPF_CORE_READ(sk, sk_protocol) != IPPROTO_TCP)
		return 0;
	return account(sk, ret, rx);
}

TP_BTF_AND_RAW_TP("sock_send_length", tcptop_tp_btf_send, tcptop_raw_tp_send,
		  from_tp(sk, ret, flags, false),
		  struct sock *sk, int ret, int flags)

TP_BTF_AND_RAW_TP("sock_recv_length", tcptop_tp_btf_recv, tcptop_raw_tp_recv,
		  from_tp(sk, ret, flags, true),
		  struct sock *sk, int ret, int flags)

static __always_inline int from_classic(struct trace_event_raw_sock_msg_length *ctx, bool rx)
{
	if (ctx->ret <= 0 || ctx->protocol != IPPROTO_TCP || (rx && (ctx->flags & MSG_PEEK)))
		return 0;
	return account(ctx->sk, ctx->ret, rx);
}

SEC("tracepoint/sock/sock_send_length")
int tcptop_tracepoint_send(struct trace_event_raw_sock_msg_length *ctx)
{
	return from_classic(ctx, false);
}

SEC("tracepoint/sock/sock_recv_length")
int tcptop_tracepoint_recv(struct trace_event_raw_sock_msg_length *ctx)
{
	return from_classic(ctx, true);
}

char LICENSE[] SEC("license") = "GPL";
