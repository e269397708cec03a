// SPDX-License-Identifier: GPL-2.0
/*
 * tcppktlat - how long received TCP data waits in a socket before a thread
 * reads it: from the arrival of the oldest unread segment (the top of
 * tcp_rcv_established(), where the tcp:tcp_probe tracepoint sits) to the
 * moment a reader copies it out (tcp_rcv_space_adjust(), called by
 * tcp_recvmsg() for each chunk it copies, in the reader's context).
 *
 * A socket's clock starts at the first segment with payload that arrives
 * while nothing is pending, and stops at the next read: the latency is
 * that of the oldest data the read took (libbpf-tools' tcppktlat restarts
 * it at every segment, which measures the newest instead and hides a
 * reader that falls behind a burst).  Segments that arrive while the reader
 * is copying start the next measurement.
 *
 * Variants, best first, all keyed the same way per socket:
 *   tp_btf      tcp_probe(sk, skb), tcp_rcv_space_adjust(sk), tcp_destroy_sock(sk)
 *   raw_tp      the same tracepoints where tp_btf is refused
 *   tracepoint  the classic tracepoints (tracefs), keyed by the socket cookie
 *               they carry (tcp_probe has no socket pointer)
 *   kprobe      tcp_rcv_established, tcp_rcv_space_adjust, inet_csk_destroy_sock
 * tcp_destroy_sock (inet_csk_destroy_sock) forgets a socket that is freed
 * with unread data, so that its address reused by a new socket cannot
 * inherit the old clock.
 *
 * Whose (filter.h): the reader's, a task's system call on a socket: its
 * cgroup and mount namespace, the socket's network namespace.
 */
#include "events.h"
#include "filter.h"

/* Widest fields first: no holes for the ring to carry. */
struct tcppktlat_event {
	__u64 ts_ns;		/* the read */
	__u64 latency_ns;	/* arrival of the oldest unread segment -> the read */
	__u64 cgroup_id;	/* the reader's (filter.h labels) */
	__u8 saddr[16];
	__u8 daddr[16];
	char comm[TASK_COMM_LEN];
	__u32 pid;		/* the reader */
	__u32 tid;
	__u32 netns;		/* the socket's (filter.h labels) */
	__u16 family;
	__u16 sport;
	__u16 dport;
	__u16 pad[3];		/* to the struct's 8-byte end: no tail padding to leak */
};

/* Filters, set by the loader before load. */
const volatile __u32 target_pid = 0;		/* -p */
const volatile __u32 target_tid = 0;		/* -t */
const volatile __u16 target_lport = 0;		/* -l */
const volatile __u16 target_rport = 0;		/* -r */
const volatile __u16 target_family = 0;		/* -4/-6 */
const volatile __u64 min_ns = 0;		/* min_us */

/* Arrival time of the oldest unread segment, per socket (its address, or
 * its cookie for the classic tracepoints).  LRU: sockets whose data is
 * never read (nor the socket destroyed while traced) age out. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, __u64);
} arrived SEC(".maps");

/* Anchor the event type in BTF so user space can decode it. */
struct tcppktlat_event _event_type = {};

static __always_inline bool flow_wanted(__u16 family, __u16 lport, __u16 rport)
{
	if (family != AF_INET && family != AF_INET6)
		return false;
	if (target_family && family != target_family)
		return false;
	if (target_lport && lport != target_lport)
		return false;
	return !target_rport || rport == target_rport;
}

/* A segment with payload arrived: start the socket's clock unless data
 * older than it is still unread. */
static __always_inline void arrival(__u64 key)
{
	__u64 now = bpf_ktime_get_ns();

	bpf_map_update_elem(&arrived, &key, &now, BPF_NOEXIST);
}

/* The payload length of the segment at the top of tcp_rcv_established():
 * skb->data is its TCP header there, whose data offset is the high nibble
 * of byte 12 (in 32-bit words). */
static __always_inline __u32 payload_len(struct sk_buff *skb)
{
	unsigned char *th = BPF_CORE_READ(skb, data);
	__u32 len = BPF_CORE_READ(skb, len);
	__u8 off = 0;

	bpf_probe_read_kernel(&off, 1, th + 12);
	off = (off >> 4) * 4;
	return len > off ? len - off : 0;
}

static __always_inline int on_segment(struct sock *sk, struct sk_buff *skb)
{
	if (!flow_wanted(BPF_CORE_READ(sk, __sk_common.skc_family), sk_sport(sk), sk_dport(sk)))
		return 0;
	if (payload_len(skb))
		arrival((__u64)sk);
	return 0;
}

/* A reader copied data out of sk: report how long the oldest of it waited. */
static __always_inline int on_read(struct sock *sk, __u64 key)
{
	__u64 id = bpf_get_current_pid_tgid(), now, *since, waited;
	struct tcppktlat_event *e;
	__u16 family;

	since = bpf_map_lookup_elem(&arrived, &key);
	if (!since)
		return 0;
	now = bpf_ktime_get_ns();
	waited = now - *since;
	bpf_map_delete_elem(&arrived, &key);

	if (target_pid && (id >> 32) != target_pid)
		return 0;
	if (target_tid && (__u32)id != target_tid)
		return 0;
	if (waited < min_ns)
		return 0;
	if (!pt_task_sk_wanted(sk))
		return 0;
	family = BPF_CORE_READ(sk, __sk_common.skc_family);
	e = event_reserve(struct tcppktlat_event);
	if (!e)
		return 0;
	e->ts_ns = now;
	e->latency_ns = waited;
	e->pid = id >> 32;
	e->tid = (__u32)id;
	e->cgroup_id = pt_task_cgroup_label();
	e->netns = pt_sk_netns_label(sk);
	e->family = family;
	e->sport = sk_sport(sk);
	e->dport = sk_dport(sk);
	__builtin_memset(e->pad, 0, sizeof(e->pad));
	sk_read_addrs(sk, family, e->saddr, e->daddr);
	bpf_get_current_comm(e->comm, sizeof(e->comm));
	event_submit(e, now);
	return 0;
}

static __always_inline int on_destroy(__u64 key)
{
	bpf_map_delete_elem(&arrived, &key);
	return 0;
}

/* tp_btf and raw_tp: the tracepoints' own arguments */
TP_BTF_AND_RAW_TP("tcp_probe", tcppktlat_tp_btf_segment, tcppktlat_raw_tp_segment,
		  on_segment(sk, skb), struct sock *sk, struct sk_buff *skb)
TP_BTF_AND_RAW_TP("tcp_rcv_space_adjust", tcppktlat_tp_btf_read, tcppktlat_raw_tp_read,
		  on_read(sk, (__u64)sk), struct sock *sk)
TP_BTF_AND_RAW_TP("tcp_destroy_sock", tcppktlat_tp_btf_destroy, tcppktlat_raw_tp_destroy,
		  on_destroy((__u64)sk), struct sock *sk)

/* The classic tracepoints: tcp_probe copies the flow and the payload length
 * but not the socket, so every program keys by the cookie both carry. */
SEC("tracepoint/tcp/tcp_probe")
int tcppktlat_tracepoint_segment(struct trace_event_raw_tcp_probe *ctx)
{
	REFUSE_WITHOUT(struct trace_event_raw_tcp_probe, sock_cookie);
	if (!flow_wanted(tcp_probe_family(ctx), ctx->sport, ctx->dport))
		return 0;
	if (ctx->data_len)
		arrival(BPF_CORE_READ(ctx, sock_cookie));
	return 0;
}

SEC("tracepoint/tcp/tcp_rcv_space_adjust")
int tcppktlat_tracepoint_read(struct trace_event_raw_tcp_event_sk *ctx)
{
	REFUSE_WITHOUT(struct trace_event_raw_tcp_event_sk, sock_cookie);
	return on_read((struct sock *)ctx->skaddr, BPF_CORE_READ(ctx, sock_cookie));
}

SEC("tracepoint/tcp/tcp_destroy_sock")
int tcppktlat_tracepoint_destroy(struct trace_event_raw_tcp_event_sk *ctx)
{
	REFUSE_WITHOUT(struct trace_event_raw_tcp_event_sk, sock_cookie);
	return on_destroy(BPF_CORE_READ(ctx, sock_cookie));
}

/* kprobes: the functions that hold the tracepoints */
SEC("kprobe/tcp_rcv_established")
int BPF_KPROBE(tcppktlat_kprobe_segment, struct sock *sk, struct sk_buff *skb)
{
	return on_segment(sk, skb);
}

SEC("kprobe/tcp_rcv_space_adjust")
int BPF_KPROBE(tcppktlat_kprobe_read, struct sock *sk)
{
	return on_read(sk, (__u64)sk);
}

SEC("kprobe/inet_csk_destroy_sock")
int BPF_KPROBE(tcppktlat_kprobe_destroy, struct sock *sk)
{
	return on_destroy((__u64)sk);
}

char LICENSE[] SEC("license") = "GPL";
