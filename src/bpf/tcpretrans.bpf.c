// SPDX-License-Identifier: GPL-2.0
/*
 * tcpretrans - TCP retransmissions (and, with -l, tail loss probes), one
 * record each, or counted per flow in the kernel (-c).
 *
 * Variants, best first:
 *  - tp_btf, raw_tp, classic tracepoint on tcp:tcp_retransmit_skb, the hook
 *    BCC tcpretrans prefers.  On recent kernels (6.18 here) the tracepoint also
 *    fires for attempts that failed and carries their error; those are
 *    skipped (err != 0), found by CO-RE so older kernels load the same code.
 *    A tail loss probe that resends a segment goes through the same
 *    __tcp_retransmit_skb(); it is recognised by tcp_send_loss_probe()
 *    on the kernel stack (its address range comes from kallsyms, as rodata).
 *    With -l such a retransmission gives an L record followed by its R
 *    record, the order BCC prints them in.  A probe that sends new data
 *    instead retransmits nothing and is not seen by this variant.
 *  - kprobe on tcp_retransmit_skb (R) and tcp_send_loss_probe (L): BCC's
 *    fallback for kernels without the tracepoint and its -l hook.  It sees
 *    every probe attempt, and a retransmission when tcp_retransmit_skb()
 *    returns 0 (kretprobe: as the tracepoint, not the attempts that fail),
 *    but not the TLP retransmissions (which bypass tcp_retransmit_skb()).
 *
 * Counting (-c) is done here, per flow: retransmissions and, separately,
 * how many of them (kprobe: how many probe calls) were tail loss probes.
 * With the tracepoint, retrans counts what __tcp_retransmit_skb() adds to
 * the socket's tcpi_total_retrans: the skb's segment count (tcp_skb_pcount,
 * more than one when unsent writes were merged into a GSO skb), TLPs
 * included.  The tests check it against that counter.  The kernel also
 * counts an attempt whose transmit then failed; such attempts are not
 * retransmissions on the wire and are left out here.
 *
 * Whose (filter.h): the socket's cgroup and network namespace (timers and
 * softirq retransmit for no task).
 */
#include "events.h"
#include "filter.h"

#define RETRANSMIT 1
#define TLP 2
#define STACK_SCAN 16		/* frames searched for tcp_send_loss_probe */

struct tcpretrans_event {
	__u64 ts_ns;
	__u64 skaddr;
	__u64 cgroup_id;	/* the socket's (filter.h labels) */
	__u32 pid;
	__u32 seq;		/* first sequence number of the segment */
	__u32 netns;		/* the socket's (filter.h labels) */
	__u16 family;
	__u16 lport;
	__u16 rport;
	__u8 state;
	__u8 type;		/* RETRANSMIT or TLP */
	__u8 saddr[16];
	__u8 daddr[16];
};

struct tcpretrans_flow {
	__u8 saddr[16];
	__u8 daddr[16];
	__u16 family;
	__u16 lport;
	__u16 rport;
	__u16 pad;
};

struct tcpretrans_count {
	__u64 retrans;
	__u64 tlp;
};

/* Settings, written by the loader before load. */
const volatile __u16 target_family = 0;	/* 0: both */
const volatile bool count_mode = false;		/* -c: count, emit nothing */
const volatile bool lossprobe = false;		/* -l: emit TLP records */
const volatile __u64 tlp_start = 0;		/* tcp_send_loss_probe's text */
const volatile __u64 tlp_end = 0;

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 10240);
	__type(key, struct tcpretrans_flow);
	__type(value, struct tcpretrans_count);
} flows SEC(".maps");

/* Anchor the event type in BTF so user space can decode it. */
struct tcpretrans_event _event_type = {};

static const struct tcpretrans_count zero_count;

/* Is this retransmission sent by tcp_send_loss_probe()? */
static __always_inline bool from_loss_probe(void *ctx)
{
	__u64 ips[STACK_SCAN];
	long n;

	if (!tlp_start)
		return false;
	n = bpf_get_stack(ctx, ips, sizeof(ips), 0);
	if (n <= 0)
		return false;
#pragma unroll
	for (int i = 0; i < STACK_SCAN; i++) {
		if (i * 8 >= n)
			break;
		if (ips[i] >= tlp_start && ips[i] < tlp_end)
			return true;
	}
	return false;
}

/* Where a record's fields come from: the socket, or the classic
 * tracepoint's own copies (then tp_saddr is set). */
struct origin {
	const struct sock *sk;
	const struct sk_buff *skb;
	const void *tp_saddr;
	const void *tp_daddr;
	__u16 family;
	__u16 lport;
	__u16 rport;
	__u8 state;
};

static __always_inline void emit(const struct origin *o, __u8 type, __u64 now)
{
	struct tcpretrans_event *e;
	__u32 seq = 0;

	e = event_reserve(struct tcpretrans_event);
	if (!e)
		return;
	if (o->skb)	/* TCP_SKB_CB(skb)->seq: first member of skb->cb */
		bpf_probe_read_kernel(&seq, sizeof(seq),
				      (void *)o->skb + bpf_core_field_offset(struct sk_buff, cb));
	e->ts_ns = now;
	e->skaddr = (__u64)o->sk;
	e->pid = bpf_get_current_pid_tgid() >> 32;
	e->seq = seq;
	e->cgroup_id = pt_sk_cgroup_label(o->sk);
	e->netns = pt_sk_netns_label(o->sk);
	e->family = o->family;
	e->lport = o->lport;
	e->rport = o->rport;
	e->state = o->state;
	e->type = type;
	__builtin_memset(e->saddr, 0, 16);
	__builtin_memset(e->daddr, 0, 16);
	tp_or_sk_addrs(o->tp_saddr, o->tp_daddr, o->sk, o->family, e->saddr, e->daddr);
	event_submit(e, now);
}

/* tcp_skb_pcount(skb): TCP_SKB_CB(skb)->tcp_gso_segs, at least 1. */
static __always_inline __u32 skb_segs(const struct sk_buff *skb)
{
	__u16 segs = 0;

	if (skb)
		bpf_probe_read_kernel(&segs, sizeof(segs), (void *)skb +
				      bpf_core_field_offset(struct sk_buff, cb) +
				      bpf_core_field_offset(struct tcp_skb_cb, tcp_gso_segs));
	return segs ? segs : 1;
}

static __always_inline void count(const struct origin *o, bool retrans, bool tlp)
{
	struct tcpretrans_flow key = {};
	struct tcpretrans_count *c;

	tp_or_sk_addrs(o->tp_saddr, o->tp_daddr, o->sk, o->family, key.saddr, key.daddr);
	key.family = o->family;
	key.lport = o->lport;
	key.rport = o->rport;
	c = bpf_map_lookup_elem(&flows, &key);
	if (!c) {
		bpf_map_update_elem(&flows, &key, &zero_count, BPF_NOEXIST);
		c = bpf_map_lookup_elem(&flows, &key);
		if (!c) {	/* map full: not counted, so say so */
			__sync_fetch_and_add(&lost_events, 1);
			return;
		}
	}
	if (retrans)
		__sync_fetch_and_add(&c->retrans, skb_segs(o->skb));
	if (tlp)
		__sync_fetch_and_add(&c->tlp, 1);
}

/* type RETRANSMIT: a segment was resent (tracepoint or kprobe);
 * type TLP: tcp_send_loss_probe() was called (kprobe only). */
static __always_inline int handle(void *ctx, const struct origin *o, int type,
				  bool check_stack)
{
	bool tlp;

	if (o->family != AF_INET && o->family != AF_INET6)
		return 0;
	if (target_family && o->family != target_family)
		return 0;
	if (!pt_sk_wanted(o->sk))
		return 0;
	tlp = type == TLP || (check_stack && from_loss_probe(ctx));
	if (count_mode) {
		count(o, type == RETRANSMIT, tlp);
		return 0;
	}
	if (type == TLP && !lossprobe)
		return 0;

	__u64 now = bpf_ktime_get_ns();

	if (tlp && lossprobe)
		emit(o, TLP, now);
	if (type == RETRANSMIT)
		emit(o, RETRANSMIT, now);
	return 0;
}

static __always_inline int from_sock(void *ctx, const struct sock *sk,
				     const struct sk_buff *skb, int type,
				     bool check_stack)
{
	struct origin o = {
		.sk = sk,
		.skb = skb,
		.family = BPF_CORE_READ(sk, __sk_common.skc_family),
		.lport = sk_sport(sk),
		.rport = sk_dport(sk),
		.state = BPF_CORE_READ(sk, __sk_common.skc_state),
	};

	return handle(ctx, &o, type, check_stack);
}

/*
 * tp_btf/raw_tp: the third argument (err) exists only where the classic
 * tracepoint has the err field (they were added together); reading a
 * missing argument would be rejected, and the CO-RE check makes the read
 * dead code there.
 */
static __always_inline int from_args(u64 *ctx)
{
	if (bpf_core_field_exists(struct trace_event_raw_tcp_retransmit_skb, err) &&
	    (int)ctx[2] != 0)
		return 0;
	return from_sock(ctx, (const struct sock *)ctx[0],
			 (const struct sk_buff *)ctx[1], RETRANSMIT, true);
}

TP_BTF_AND_RAW_TP("tcp_retransmit_skb", tcpretrans_tp_btf, tcpretrans_raw_tp, from_args(ctx))

/*
 * The classic record's type before it was split off (with err) from the
 * tcp_event_sk_skb class it shared with tcp_send_reset: 6.1 and 6.12 have
 * only this one, and 5.10's has no family either.  The same fields; CO-RE
 * reads whichever the kernel has.
 */
struct trace_event_raw_tcp_event_sk_skb___old {
	struct trace_entry ent;
	const void *skbaddr;
	const void *skaddr;
	int state;
	__u16 sport;
	__u16 dport;
	__u16 family;		/* not in 5.10's: then the socket's */
	__u8 saddr[4];
	__u8 daddr[4];
	__u8 saddr_v6[16];
	__u8 daddr_v6[16];
} __attribute__((preserve_access_index));

/* Fill an origin from a classic record r of either type: by probe reads,
 * since the compiler merges the two (alike) into one walk of a moved
 * context pointer, which the verifier refuses to load through. */
#define ORIGIN_OF_RECORD(o, r)							\
	do {									\
		const struct sock *sk_ = BPF_CORE_READ(r, skaddr);		\
		__u16 family_ = bpf_core_field_exists((r)->family) ?		\
			BPF_CORE_READ(r, family) :				\
			BPF_CORE_READ(sk_, __sk_common.skc_family);		\
		int v6 = family_ == AF_INET6;					\
										\
		(o).sk = sk_;							\
		(o).skb = BPF_CORE_READ(r, skbaddr);				\
		(o).tp_saddr = v6 ? (void *)(r)->saddr_v6 : (void *)(r)->saddr;	\
		(o).tp_daddr = v6 ? (void *)(r)->daddr_v6 : (void *)(r)->daddr;	\
		(o).family = family_;						\
		(o).lport = BPF_CORE_READ(r, sport);				\
		(o).rport = BPF_CORE_READ(r, dport);				\
		(o).state = BPF_CORE_READ(r, state);				\
	} while (0)

SEC("tracepoint/tcp/tcp_retransmit_skb")
int tcpretrans_tracepoint(void *ctx)
{
	struct origin o = {};

	if (bpf_core_type_exists(struct trace_event_raw_tcp_retransmit_skb)) {
		struct trace_event_raw_tcp_retransmit_skb *r = ctx;

		if (bpf_core_field_exists(r->err) && BPF_CORE_READ(r, err) != 0)
			return 0;
		ORIGIN_OF_RECORD(o, r);
	} else {
		struct trace_event_raw_tcp_event_sk_skb___old *r = ctx;

		ORIGIN_OF_RECORD(o, r);
	}
	return handle(ctx, &o, RETRANSMIT, true);
}

/* tcp_retransmit_skb() in flight, by thread: it counts (and the tracepoint
 * fires) only for a resend that went out; one that failed (the original
 * still in the device queue, -EBUSY) is not a retransmission. */
struct resend {
	__u64 sk;
	__u64 skb;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__type(value, struct resend);
} resends SEC(".maps");

SEC("kprobe/tcp_retransmit_skb")
int BPF_KPROBE(tcpretrans_kprobe, struct sock *sk, struct sk_buff *skb)
{
	__u32 tid = bpf_get_current_pid_tgid();
	struct resend r = { .sk = (__u64)sk, .skb = (__u64)skb };

	bpf_map_update_elem(&resends, &tid, &r, BPF_ANY);
	return 0;
}

SEC("kretprobe/tcp_retransmit_skb")
int BPF_KRETPROBE(tcpretrans_kretprobe, int ret)
{
	__u32 tid = bpf_get_current_pid_tgid();
	struct resend *r = bpf_map_lookup_elem(&resends, &tid);
	struct resend copy;

	if (!r)
		return 0;
	copy = *r;
	bpf_map_delete_elem(&resends, &tid);
	if (ret != 0)
		return 0;
	return from_sock(ctx, (const struct sock *)copy.sk, (const struct sk_buff *)copy.skb, RETRANSMIT, false);
}

SEC("kprobe/tcp_send_loss_probe")
int BPF_KPROBE(tcpretrans_kprobe_tlp, struct sock *sk)
{
	return from_sock(ctx, sk, 0, TLP, false);
}

char LICENSE[] SEC("license") = "GPL";
