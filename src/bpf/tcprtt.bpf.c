// SPDX-License-Identifier: GPL-2.0
/*
 * tcprtt - histogram of the smoothed RTT of established TCP connections,
 * sampled on every segment received (the top of tcp_rcv_established()).
 *
 * Variants, best first: fentry and kprobe on tcp_rcv_established (what
 * libbpf-tools uses), then the tcp:tcp_probe tracepoint, which the kernel
 * calls at the top of that same function, via tp_btf or the classic
 * tracepoint.  All aggregate in the kernel; user space reads the map.
 */
#include "pytrace.h"
#include "filter.h"

#define MAX_SLOTS 27

struct tcprtt_key {
	__u8 addr[16];		/* zero unless -b/-B */
	__u16 family;
	__u16 pad[3];
};

struct tcprtt_hist {
	__u64 latency;		/* sum, in the histogram's unit */
	__u64 cnt;
	__u32 slots[MAX_SLOTS];
};

const volatile bool targ_laddr_hist = false;	/* -b */
const volatile bool targ_raddr_hist = false;	/* -B */
const volatile bool targ_ms = false;		/* -m */
const volatile __u16 targ_sport = 0;		/* -p */
const volatile __u16 targ_dport = 0;		/* -P */
const volatile __u16 targ_lfamily = 0;		/* -a: family of targ_laddr */
const volatile __u8 targ_laddr[16] = {};
const volatile __u16 targ_rfamily = 0;		/* -A */
const volatile __u8 targ_raddr[16] = {};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 10240);
	__type(key, struct tcprtt_key);
	__type(value, struct tcprtt_hist);
} hists SEC(".maps");

static const struct tcprtt_hist zero_hist;

static __always_inline bool addr_matches(const volatile __u8 *want,
					 __u16 want_family, const __u8 *addr,
					 __u16 family)
{
	if (!want_family)
		return true;
	if (want_family != family)
		return false;
	if (family == AF_INET)
		return *(const volatile __u32 *)want == *(const __u32 *)addr;
	return ((const volatile __u64 *)want)[0] == ((const __u64 *)addr)[0] &&
	       ((const volatile __u64 *)want)[1] == ((const __u64 *)addr)[1];
}

/*
 * sport/dport in host order; addresses 16 bytes (v4 in the first 4);
 * srtt_us is tp->srtt_us >> 3, i.e. microseconds.
 */
static __always_inline int account(const struct sock *sk, __u16 family, __u16 sport, __u16 dport,
				   const __u8 *saddr, const __u8 *daddr,
				   __u64 srtt_us)
{
	struct tcprtt_key key = {};
	struct tcprtt_hist *h;
	__u64 v = srtt_us;

	if (family != AF_INET && family != AF_INET6)
		return 0;
	if (targ_sport && targ_sport != sport)
		return 0;
	if (targ_dport && targ_dport != dport)
		return 0;
	if (!addr_matches(targ_laddr, targ_lfamily, saddr, family) ||
	    !addr_matches(targ_raddr, targ_rfamily, daddr, family))
		return 0;
	/* filter.h: the socket's cgroup and netns; a record without one passes none */
	if (pt_on && (!sk || !pt_sk_wanted(sk)))
		return 0;

	if (targ_laddr_hist) {
		__builtin_memcpy(key.addr, saddr, 16);
		key.family = family;
	} else if (targ_raddr_hist) {
		__builtin_memcpy(key.addr, daddr, 16);
		key.family = family;
	}

	h = bpf_map_lookup_elem(&hists, &key);
	if (!h) {
		bpf_map_update_elem(&hists, &key, &zero_hist, BPF_NOEXIST);
		h = bpf_map_lookup_elem(&hists, &key);
		if (!h)
			return 0;
	}
	if (targ_ms)
		v /= 1000;
	__u32 slot = log2_slot(v);
	if (slot >= MAX_SLOTS)
		slot = MAX_SLOTS - 1;
	__sync_fetch_and_add(&h->slots[slot], 1);
	__sync_fetch_and_add(&h->latency, v);
	__sync_fetch_and_add(&h->cnt, 1);
	return 0;
}

static __always_inline int from_sock(struct sock *sk)
{
	__u8 saddr[16] = {}, daddr[16] = {};
	__u16 family = BPF_CORE_READ(sk, __sk_common.skc_family);
	struct tcp_sock *tp = (struct tcp_sock *)sk;

	if (family != AF_INET && family != AF_INET6)
		return 0;
	sk_read_addrs(sk, family, saddr, daddr);
	return account(sk, family, sk_sport(sk), sk_dport(sk),
		       saddr, daddr, BPF_CORE_READ(tp, srtt_us) >> 3);
}

SEC("fentry/tcp_rcv_established")
int BPF_PROG(tcprtt_fentry, struct sock *sk)
{
	return from_sock(sk);
}

SEC("kprobe/tcp_rcv_established")
int BPF_KPROBE(tcprtt_kprobe, struct sock *sk)
{
	return from_sock(sk);
}

SEC("tp_btf/tcp_probe")
int BPF_PROG(tcprtt_tp_btf, struct sock *sk, struct sk_buff *skb)
{
	return from_sock(sk);
}

SEC("tracepoint/tcp/tcp_probe")
int tcprtt_tracepoint(struct trace_event_raw_tcp_probe *ctx)
{
	__u8 saddr[16] = {}, daddr[16] = {};
	__u16 family = tcp_probe_family(ctx);

	/* saddr/daddr hold a sockaddr_in or sockaddr_in6 */
	/* (ctx memory cannot be read at a computed offset: copy with a helper) */
	if (family == AF_INET) {
		bpf_probe_read_kernel(saddr, 4, &ctx->saddr[4]);
		bpf_probe_read_kernel(daddr, 4, &ctx->daddr[4]);
	} else {
		bpf_probe_read_kernel(saddr, 16, &ctx->saddr[8]);
		bpf_probe_read_kernel(daddr, 16, &ctx->daddr[8]);
	}
	return account(bpf_core_field_exists(ctx->skaddr) ? BPF_CORE_READ(ctx, skaddr) : 0,
		       family, ctx->sport, ctx->dport, saddr, daddr, ctx->srtt);
}

char LICENSE[] SEC("license") = "GPL";
