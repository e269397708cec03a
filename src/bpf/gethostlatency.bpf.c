// SPDX-License-Identifier: GPL-2.0
/*
 * gethostlatency - latency of host name lookups through libc:
 * getaddrinfo(), gethostbyname() and gethostbyname2(), timed from entry
 * (uprobe: the name asked for) to return (uretprobe), per thread.
 *
 * User space finds the libc to probe and attaches each function's own entry
 * program (its index is in the program, not in a BPF cookie: those need
 * 5.15) and the one return program to each.
 * Resolvers that bypass libc (static binaries, Go's own resolver, ...) are
 * not seen.
 */
#include "events.h"
#include "filter.h"

#define HOST_LEN 80

struct gethostlatency_event {
	__u64 ts_ns;		/* return */
	__u64 latency_ns;
	__u64 cgroup_id;	/* the task's (filter.h labels) */
	__u32 netns;		/* the task's (filter.h labels) */
	__u32 pad;
	__u32 pid;
	__u32 tid;
	__s32 ret;		/* the return value (getaddrinfo: 0 or EAI_*; the others: a pointer's low half) */
	__u32 func;		/* which function: 0 getaddrinfo, 1 gethostbyname, 2 gethostbyname2 */
	char comm[TASK_COMM_LEN];
	char host[HOST_LEN];
};

struct lookup {
	__u64 ts_ns;
	__u32 func;
	__u32 pad;
	char host[HOST_LEN];
};

const volatile __u32 targ_tgid = 0;

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);	/* a thread killed in the call must not leak */
	__uint(max_entries, 10240);
	__type(key, __u32);
	__type(value, struct lookup);
} lookups SEC(".maps");

struct gethostlatency_event _event_type = {};

static __always_inline int entry(const char *name, __u32 func)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 tid = (__u32)id;
	struct lookup l = {};

	if (targ_tgid && (id >> 32) != targ_tgid)
		return 0;
	if (!pt_task_wanted())
		return 0;
	l.ts_ns = bpf_ktime_get_ns();
	l.func = func;
	bpf_probe_read_user_str(l.host, sizeof(l.host), name);
	bpf_map_update_elem(&lookups, &tid, &l, BPF_ANY);
	return 0;
}

/* gethostlatency_entry_<function>: the order of FUNCTIONS in tools/gethostlatency.py */
#define ENTRY(function, index)						\
	SEC("uprobe")							\
	int BPF_KPROBE(gethostlatency_entry_##function, const char *name)	\
	{								\
		return entry(name, index);				\
	}

ENTRY(getaddrinfo, 0)
ENTRY(gethostbyname, 1)
ENTRY(gethostbyname2, 2)

SEC("uretprobe")
int BPF_KRETPROBE(gethostlatency_return, long ret)
{
	__u64 id = bpf_get_current_pid_tgid(), now;
	__u32 tid = (__u32)id;
	struct gethostlatency_event *e;
	struct lookup *l = bpf_map_lookup_elem(&lookups, &tid);

	if (!l)
		return 0;
	now = bpf_ktime_get_ns();
	e = event_reserve(struct gethostlatency_event);
	if (e) {
		e->ts_ns = now;
		e->latency_ns = now - l->ts_ns;
		e->pid = id >> 32;
		e->tid = tid;
		e->cgroup_id = pt_task_cgroup_label();
		e->netns = pt_task_netns_label();
		e->pad = 0;
		e->ret = (__s32)ret;
		e->func = l->func;
		bpf_get_current_comm(e->comm, sizeof(e->comm));
		__builtin_memcpy(e->host, l->host, sizeof(e->host));
		event_submit(e, now);
	}
	bpf_map_delete_elem(&lookups, &tid);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
