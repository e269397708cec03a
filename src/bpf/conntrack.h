/* SPDX-License-Identifier: GPL-2.0 */
/*
 * conntrack.h - what the connection tools (tcpconnect, tcpconnlat, tcptracer,
 * solisten) share: active connects followed from connect() to their outcome,
 * and a few facts about a socket.
 *
 * Where kprobes on tcp_v4_connect are missing, the one moment of an active
 * open that runs in the connecting task is the CLOSE->SYN_SENT change of
 * sock:inet_sock_set_state, inside tcp_v4/v6_connect() (the local port is not
 * chosen yet).  The outcome, SYN_SENT->ESTABLISHED or SYN_SENT->CLOSE, usually
 * runs in softirq, where the current task is unrelated.  So the task is
 * remembered at the start, keyed by the socket's address, and taken back at
 * the outcome.  With kprobes the start is tcp_v4/v6_connect() itself.
 */
#ifndef __PYTRACE_CONNTRACK_H
#define __PYTRACE_CONNTRACK_H

#include "filter.h"

struct conn_start {
	__u64 ts_ns;		/* CLOCK_MONOTONIC of connect() */
	__u64 cgroup_id;	/* the task's, with pt_labels (filter.h) */
	__u32 pid;		/* tgid of the connecting task */
	__u32 uid;
	__u32 netns;		/* the task's, with pt_labels */
	char comm[TASK_COMM_LEN];
};

/*
 * LRU: a connect whose outcome is never seen (connect() failed before any
 * SYN, or the tool started in the middle) must not fill the map for good.
 */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, struct conn_start);
} conn_starts SEC(".maps");

/* The current task and time, as the start of a connect. */
static __always_inline void conn_start_now(struct conn_start *st)
{
	st->ts_ns = bpf_ktime_get_ns();
	st->pid = bpf_get_current_pid_tgid() >> 32;
	st->uid = (__u32)bpf_get_current_uid_gid();
	st->cgroup_id = pt_task_cgroup_label();
	st->netns = pt_task_netns_label();
	bpf_get_current_comm(st->comm, sizeof(st->comm));
}

/* Remember the current task as the one connecting sk (process context only). */
static __always_inline void conn_begin(const void *sk)
{
	struct conn_start st = {};
	__u64 key = (__u64)sk;

	conn_start_now(&st);
	bpf_map_update_elem(&conn_starts, &key, &st, BPF_ANY);
}

/* The start of sk's connect, removed from the map; false if none was seen. */
static __always_inline bool conn_take(const void *sk, struct conn_start *out)
{
	__u64 key = (__u64)sk;
	struct conn_start *st = bpf_map_lookup_elem(&conn_starts, &key);

	if (!st)
		return false;
	__builtin_memcpy(out, st, sizeof(*out));
	bpf_map_delete_elem(&conn_starts, &key);
	return true;
}

/*
 * True when a task holds the socket lock, i.e. the state change runs in the
 * owner's process context (a system call, or backlog processing in
 * release_sock()).  Changes made in softirq happen only while nobody owns the
 * socket; there the current task has nothing to do with it.
 */
static __always_inline bool sk_owned_by_user(const struct sock *sk)
{
	return BPF_CORE_READ(sk, sk_lock.owned) != 0;
}

static __always_inline bool sk_is_inet_tcp(const struct sock *sk, __u16 *family)
{
	*family = BPF_CORE_READ(sk, __sk_common.skc_family);
	return (*family == AF_INET || *family == AF_INET6) &&
	       BPF_CORE_READ(sk, sk_protocol) == IPPROTO_TCP;
}

#endif /* __PYTRACE_CONNTRACK_H */
