// SPDX-License-Identifier: GPL-2.0
/*
 * tcpstates - every TCP state change, with the time spent in the old state.
 *
 * Hook: the sock:inet_sock_set_state tracepoint, reached three ways in order
 * of preference: tp_btf (direct BTF access, no tracefs needed), raw_tp, and
 * the classic tracepoint (needs tracefs), see sockstate.h.  The Python side
 * loads exactly one.
 */
#include "events.h"
#include "sockstate.h"
#include "tcpstates.h"

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

/* Anchor the event type in BTF so user space can decode it. */
struct tcpstates_event _event_type = {};

static __always_inline int emit(const struct sock_state_change *c)
{
	struct tcpstates_event *e;
	__u64 key = (__u64)c->sk, now, *prev, delta = 0;

	if (target_family && c->family != target_family)
		return 0;
	if (!port_allowed(lports, n_lports, c->sport) ||
	    !port_allowed(rports, n_rports, c->dport))
		return 0;

	now = bpf_ktime_get_ns();
	prev = bpf_map_lookup_elem(&last_change, &key);
	if (prev)
		delta = (now - *prev) / 1000;

	e = event_reserve(struct tcpstates_event);
	if (e) {
		e->skaddr = key;
		e->ts_ns = now;
		e->delta_us = delta;
		e->pid = bpf_get_current_pid_tgid() >> 32;
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
