// SPDX-License-Identifier: GPL-2.0
/*
 * tcpstates - every TCP state change, with the time spent in the old state.
 *
 * Hook: the sock:inet_sock_set_state tracepoint, reached three ways in order
 * of preference: tp_btf (direct BTF access, no tracefs needed), raw_tp, and
 * the classic tracepoint (needs tracefs), see sockstate.h.  The Python side
 * loads exactly one.
 *
 * Whose (filter.h): the socket's cgroup and network namespace (a change in
 * softirq runs in whichever task was interrupted).
 */
#include "events.h"
#include "sockstate.h"
#include "filter.h"

/* Widest fields first: no holes for the ring to carry. */
struct tcpstates_event {
	__u64 skaddr;
	__u64 ts_ns;
	__u64 delta_us;		/* time in oldstate; 0 for the first change seen */
	__u64 cgroup_id;	/* the socket's (filter.h labels) */
	__u8 saddr[16];
	__u8 daddr[16];
	char comm[TASK_COMM_LEN];
	__u32 pid;
	__u32 netns;		/* the socket's (filter.h labels) */
	__u16 family;
	__u16 sport;
	__u16 dport;
	__u8 oldstate;
	__u8 newstate;
};

/* Filters, set by the loader before load. */
const volatile __u16 target_family = 0;	/* 0: both */
const volatile __u16 lports[MAX_PORTS] = {};
const volatile __u32 n_lports = 0;
const volatile __u16 rports[MAX_PORTS] = {};
const volatile __u32 n_rports = 0;

/* Last state-change time per socket, to compute the MS column. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	/* allocated on insert: see _PREALLOC_ONLY in core/barelibbpf.py */
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, __u64);
	__type(value, __u64);
} last_change SEC(".maps");

/*
 * A passive child's first change, LISTEN (its state as a clone of the
 * listener) -> SYN_RECV, held until its next change: kernels
 * before 6.13 or so (6.1 and 6.12 do) set that state in
 * inet_csk_clone_lock() before they copy the peer's address and port into
 * the child, so the change carries the listener's (no peer, port 0).  The
 * next change (SYN_RECV -> ESTABLISHED, microseconds later, or -> CLOSE)
 * completes it and sends it first.  LRU: a child that never changes again
 * ages out.
 */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, __u64);
	__type(value, struct tcpstates_event);
} held SEC(".maps");

/* Anchor the event type in BTF so user space can decode it. */
struct tcpstates_event _event_type = {};

static __always_inline bool wanted(const struct sock *sk, __u16 family, __u16 sport, __u16 dport)
{
	if (target_family && family != target_family)
		return false;
	return port_allowed(lports, n_lports, sport) && port_allowed(rports, n_rports, dport) &&
	       pt_sk_wanted(sk);
}

/* Send a held LISTEN -> SYN_RECV of socket key, completed with c's flow. */
static __always_inline void send_held(__u64 key, const struct sock_state_change *c, __u64 now)
{
	struct tcpstates_event *h = bpf_map_lookup_elem(&held, &key), *e;

	if (!h)
		return;
	if (wanted(c->sk, c->family, c->sport, c->dport)) {
		e = event_reserve(struct tcpstates_event);
		if (e) {
			__builtin_memcpy(e, h, sizeof(*e));
			e->sport = c->sport;
			e->dport = c->dport;
			sock_state_addrs(c, e->saddr, e->daddr);
			event_submit(e, now);
		}
	}
	bpf_map_delete_elem(&held, &key);
}

static __always_inline int emit(const struct sock_state_change *c)
{
	struct tcpstates_event *e;
	__u64 key = (__u64)c->sk, now, *prev, delta = 0;
	bool hold = c->oldstate == TCP_LISTEN && c->newstate == TCP_SYN_RECV && !c->dport;

	now = bpf_ktime_get_ns();
	if (c->oldstate == TCP_SYN_RECV)
		send_held(key, c, now);
	if (!hold && !wanted(c->sk, c->family, c->sport, c->dport))
		return 0;

	prev = bpf_map_lookup_elem(&last_change, &key);
	if (prev)
		delta = (now - *prev) / 1000;

	if (hold) {
		struct tcpstates_event h = {
			.skaddr = key, .ts_ns = now, .delta_us = delta, .family = c->family,
			.oldstate = c->oldstate, .newstate = c->newstate,
			.cgroup_id = pt_sk_cgroup_label(c->sk), .netns = pt_sk_netns_label(c->sk),
		};

		h.pid = bpf_get_current_pid_tgid() >> 32;
		bpf_get_current_comm(h.comm, sizeof(h.comm));
		bpf_map_update_elem(&held, &key, &h, BPF_ANY);
	} else if ((e = event_reserve(struct tcpstates_event))) {
		e->skaddr = key;
		e->ts_ns = now;
		e->delta_us = delta;
		e->pid = bpf_get_current_pid_tgid() >> 32;
		e->cgroup_id = pt_sk_cgroup_label(c->sk);
		e->netns = pt_sk_netns_label(c->sk);
		e->family = c->family;
		e->sport = c->sport;
		e->dport = c->dport;
		e->oldstate = c->oldstate;
		e->newstate = c->newstate;
		sock_state_addrs(c, e->saddr, e->daddr);
		bpf_get_current_comm(e->comm, sizeof(e->comm));
		event_submit(e, now);
	}

	/* Update in place: a hash update replaces the element (a free-list
	 * round trip), several times slower than a store. */
	if (c->newstate == TCP_CLOSE) {
		if (prev)
			bpf_map_delete_elem(&last_change, &key);
	} else if (prev) {
		*prev = now;
	} else {
		bpf_map_update_elem(&last_change, &key, &now, BPF_ANY);
	}
	return 0;
}

/* tcpstates_tp_btf, tcpstates_raw_tp, tcpstates_tracepoint */
SOCK_STATE_PROGRAMS(tcpstates, emit)

char LICENSE[] SEC("license") = "GPL";
