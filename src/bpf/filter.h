/* SPDX-License-Identifier: GPL-2.0 */
/*
 * filter.h - whose events a tool reports, and whose they were: the cgroup
 * (v2, with its descendants), the network namespace, and BCC's pinned
 * --cgroupmap/--mntnsmap sets.  The Python half is core/containers.py
 * (resolution of --cgroup, --netns, --container) and core/tracer.py.
 *
 * Every switch is const volatile rodata, written before load: the verifier
 * knows its value, so the branches of a filter that is off are dead code it
 * removes.  What is left with every filter off is one load of pt_on and a
 * jump the verifier has made unconditional (the cost of any other pytrace
 * filter, such as -4/-6); events with labels (cgroup_id, netns) store zeros
 * there unless pt_labels.
 *
 * Whose is an event?
 *
 *   pt_task_wanted()      the current task: for what runs in the process the
 *                         event belongs to (system calls, uprobes, the start
 *                         of a connect remembered until its outcome);
 *   pt_task_sk_wanted(sk) a task's system call on a socket: the task's cgroup
 *                         and mount namespace, the socket's network namespace;
 *   pt_sk_wanted(sk)      a socket, in any context, softirq included: its
 *                         cgroup (the creating task's, or for an accepted
 *                         socket the listener's) and its network namespace.
 *                         Mount namespaces belong to tasks: --mntnsmap is
 *                         not applied to sockets.
 *
 * Cgroups with descendants, on 5.8+ kernels: the helper that gives the
 * current task's ancestor at a level (bpf_get_current_ancestor_cgroup_id)
 * is refused to tracing programs before 6.0 and knows nothing of sockets,
 * and bpf_current_task_under_cgroup() wants a cgroup fd per target, one
 * helper call each.  So the cgroup is read from the kernel's own structures
 * (task->cgroups->dfl_cgrp, or sk->sk_cgrp_data) and its ancestor at level L
 * is taken from the cgroup's ancestor array, which every kernel keeps:
 * ->ancestor_ids[L] (ids, before 6.1) or ->ancestors[L]->kn->id (6.1+),
 * chosen by CO-RE.  A target at level L matches exactly the cgroups whose
 * ancestor at L is the target, i.e. the target and its descendants.
 *
 * The targets are the set pt_cgroups (id -> 1), which user space keeps up to
 * date as containers come and go; key 0 (no cgroup has id 0) holds the
 * levels at which the set has members, one bit each, so a match costs one
 * ancestor read and one lookup per level in use (one, usually).
 */
#ifndef __PYTRACE_FILTER_H
#define __PYTRACE_FILTER_H

#include "pytrace.h"

const volatile bool pt_on = false;		/* some filter below is on: with none, one test */
const volatile bool pt_by_cgroup = false;	/* --cgroup, --container: pt_cgroups */
const volatile __u32 pt_netns = 0;		/* --netns: the inode; 0: any */
const volatile bool pt_by_cgroupmap = false;	/* --cgroupmap: pt_cgroupmap */
const volatile bool pt_by_mntnsmap = false;	/* --mntnsmap: pt_mntnsmap */
const volatile bool pt_labels = false;		/* fill the events' cgroup_id (and netns) */

#define PT_CGROUP_LEVELS 32

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, __u64);
	__type(value, __u32);
} pt_cgroups SEC(".maps");

/* BCC's pinned sets (a hash of cgroup ids, of mount namespace inodes): the
 * user's own map is put in their place before load (bpf_map__reuse_fd);
 * these small ones are only what an unused filter leaves. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, __u64);
	__type(value, __u64);
} pt_cgroupmap SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, __u64);
	__type(value, __u32);
} pt_mntnsmap SEC(".maps");

/* Kernels before 6.1 keep the ancestors' ids, not pointers. */
struct cgroup___ids {
	__u64 ancestor_ids[0];
} __attribute__((preserve_access_index));

/* Kernels before 5.15 (unless backported) pack classid/prioidx in place of
 * the socket's cgroup while net_cls/net_prio (v1) are in use. */
struct sock_cgroup_data___val {
	__u64 val;
} __attribute__((preserve_access_index));

static __always_inline struct cgroup *pt_task_cgroup(void)
{
	struct task_struct *t = (struct task_struct *)bpf_get_current_task();

	return BPF_CORE_READ(t, cgroups, dfl_cgrp);
}

/* The cgroup of a socket, NULL if the kernel does not know it (or sk is a
 * request or time-wait socket, which have no cgroup). */
static __always_inline struct cgroup *pt_sk_cgroup(const struct sock *sk)
{
	__u64 v = 0;
	__u8 state;

	if (!sk)
		return 0;
	state = BPF_CORE_READ(sk, __sk_common.skc_state);
	if (state == TCP_TIME_WAIT || state == TCP_NEW_SYN_RECV)
		return 0;
	bpf_probe_read_kernel(&v, sizeof(v), (const void *)sk +
			      bpf_core_field_offset(struct sock, sk_cgrp_data));
	if (!bpf_core_field_exists(struct sock_cgroup_data, cgroup) && (v & 3))
		return 0;
	return (struct cgroup *)v;
}

static __always_inline __u64 pt_cgroup_id(const struct cgroup *cg)
{
	return cg ? BPF_CORE_READ(cg, kn, id) : 0;
}

/* The id of cg's ancestor at level (level <= cg->level; cg itself at its own). */
static __always_inline __u64 pt_cgroup_ancestor(const struct cgroup *cg, __u32 level)
{
	const void *slot;
	__u64 id = 0;

	if (bpf_core_field_exists(struct cgroup, ancestors)) {
		struct cgroup *a = 0;

		slot = (const void *)cg + bpf_core_field_offset(struct cgroup, ancestors) + level * sizeof(a);
		bpf_probe_read_kernel(&a, sizeof(a), slot);
		return pt_cgroup_id(a);
	}
	slot = (const void *)cg + bpf_core_field_offset(struct cgroup___ids, ancestor_ids) + level * sizeof(id);
	bpf_probe_read_kernel(&id, sizeof(id), slot);
	return id;
}

/* cg is one of pt_cgroups or a descendant of one. */
static __always_inline bool pt_cgroup_in_set(const struct cgroup *cg)
{
	__u64 key = 0, id;
	__u32 *levels, mask, top;

	if (!cg)
		return false;
	levels = bpf_map_lookup_elem(&pt_cgroups, &key);
	if (!levels)
		return false;
	mask = *levels;
	top = BPF_CORE_READ(cg, level);
	for (__u32 i = 0; i < PT_CGROUP_LEVELS; i++) {
		if (i > top)
			break;
		if (!(mask & (1U << i)))
			continue;
		id = pt_cgroup_ancestor(cg, i);
		if (id && bpf_map_lookup_elem(&pt_cgroups, &id))
			return true;
	}
	return false;
}

static __always_inline __u32 pt_task_netns(void)
{
	struct task_struct *t = (struct task_struct *)bpf_get_current_task();

	return BPF_CORE_READ(t, nsproxy, net_ns, ns.inum);
}

static __always_inline __u32 pt_task_mntns(void)
{
	struct task_struct *t = (struct task_struct *)bpf_get_current_task();

	return BPF_CORE_READ(t, nsproxy, mnt_ns, ns.inum);
}

/* BCC's --cgroupmap: the exact cgroup id is in the user's set. */
static __always_inline bool pt_in_cgroupmap(__u64 id)
{
	return bpf_map_lookup_elem(&pt_cgroupmap, &id) != 0;
}

/*
 * The current task passes every filter that is on; in a system call on a
 * socket (sk non-NULL), the network namespace is the socket's (they differ
 * after setns()), the rest the task's.
 */
static __always_inline bool pt_task_sk_wanted(const struct sock *sk)
{
	if (!pt_on)
		return true;
	if (pt_by_cgroup && !pt_cgroup_in_set(pt_task_cgroup()))
		return false;
	if (pt_netns && (sk ? sk_netns(sk) : pt_task_netns()) != pt_netns)
		return false;
	if (pt_by_cgroupmap && !pt_in_cgroupmap(pt_cgroup_id(pt_task_cgroup())))
		return false;
	if (pt_by_mntnsmap) {
		__u64 ns = pt_task_mntns();

		if (!bpf_map_lookup_elem(&pt_mntnsmap, &ns))
			return false;
	}
	return true;
}

static __always_inline bool pt_task_wanted(void)
{
	return pt_task_sk_wanted(0);
}

/* -p PID (tgid_wanted) and every filter of the current task. */
static __always_inline bool pt_proc_wanted(__u32 tgid)
{
	return tgid_wanted(tgid) && pt_task_wanted();
}

/* A socket's cgroup passes the cgroup filters that are on (any context). */
static __always_inline bool pt_sk_cgroup_wanted(const struct sock *sk)
{
	if (!pt_on)
		return true;
	if (pt_by_cgroup && !pt_cgroup_in_set(pt_sk_cgroup(sk)))
		return false;
	if (pt_by_cgroupmap && !pt_in_cgroupmap(pt_cgroup_id(pt_sk_cgroup(sk))))
		return false;
	return true;
}

/* A socket passes every filter that is on (any context). */
static __always_inline bool pt_sk_wanted(const struct sock *sk)
{
	if (!pt_on)
		return true;
	if (!pt_sk_cgroup_wanted(sk))
		return false;
	if (pt_netns && sk_netns(sk) != pt_netns)
		return false;
	return true;
}

/* Some cgroup filter is on (one that a packet without a socket cannot pass). */
#define pt_by_any_cgroup (pt_by_cgroup || pt_by_cgroupmap)

/* Labels: the event's cgroup id (and network namespace), 0 unless asked for
 * (an event type carries `__u64 cgroup_id` and, unless it always reports
 * its namespace, `__u32 netns`). */
static __always_inline __u64 pt_task_cgroup_label(void)
{
	return pt_labels ? pt_cgroup_id(pt_task_cgroup()) : 0;
}

static __always_inline __u64 pt_sk_cgroup_label(const struct sock *sk)
{
	return pt_labels ? pt_cgroup_id(pt_sk_cgroup(sk)) : 0;
}

static __always_inline __u32 pt_task_netns_label(void)
{
	return pt_labels ? pt_task_netns() : 0;
}

static __always_inline __u32 pt_sk_netns_label(const struct sock *sk)
{
	return pt_labels ? sk_netns(sk) : 0;
}

#endif /* __PYTRACE_FILTER_H */
