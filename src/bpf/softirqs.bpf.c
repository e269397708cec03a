// SPDX-License-Identifier: GPL-2.0
/*
 * softirqs - time spent in each soft IRQ vector: count and total per vector,
 * and with -d a log2 histogram of the time of each softirq run.
 *
 * Hooks: the irq:softirq_entry/softirq_exit tracepoints, reached as tp_btf
 * (what libbpf-tools uses; no tracefs needed), raw_tp, or classic tracepoint
 * (what BCC uses).  A softirq run never migrates and runs of one CPU never
 * overlap, so one start timestamp per CPU is enough, and the per-CPU stats
 * need no atomics.  User space sums the CPUs.  -c CPU: runs on other CPUs
 * are never timed (their start is not taken).  -C (events) needs nothing
 * more: the counts are kept anyway.
 */
#include "pytrace.h"

#define MAX_SLOTS 27
#define MAX_VECS 16		/* NR_SOFTIRQS is 10; room for a few more */

struct softirq_stat {
	__u64 count;		/* softirq runs that ended */
	__u64 total_ns;		/* their total time, always in ns */
	__u32 slots[MAX_SLOTS];	/* -d: log2 of each run's time in usecs (ns with -N) */
};

const volatile bool targ_dist = false;	/* -d */
const volatile bool targ_ns = false;	/* -N: histogram unit */
const volatile __s32 targ_cpu = -1;	/* -c: only this CPU; -1 all */

/* Start of the softirq running on this CPU; 0 when none was seen starting. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} start SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, MAX_VECS);
	__type(key, __u32);
	__type(value, struct softirq_stat);
} stats SEC(".maps");

static __always_inline int on_entry(void)
{
	__u32 zero = 0;
	__u64 *ts;

	if (targ_cpu >= 0 && bpf_get_smp_processor_id() != (__u32)targ_cpu)
		return 0;
	ts = bpf_map_lookup_elem(&start, &zero);

	if (ts)
		*ts = bpf_ktime_get_ns();
	return 0;
}

static __always_inline int on_exit(__u32 vec)
{
	__u32 zero = 0;
	__u64 *ts = bpf_map_lookup_elem(&start, &zero);
	struct softirq_stat *st;
	__u64 delta;

	/* no start seen: the run began before we attached */
	if (!ts || !*ts)
		return 0;
	delta = bpf_ktime_get_ns() - *ts;
	*ts = 0;
	st = bpf_map_lookup_elem(&stats, &vec);
	if (!st)
		return 0;
	st->count++;
	st->total_ns += delta;
	if (targ_dist) {
		__u32 slot = log2_slot(targ_ns ? delta : delta / 1000);

		if (slot >= MAX_SLOTS)
			slot = MAX_SLOTS - 1;
		st->slots[slot]++;
	}
	return 0;
}

TP_BTF_AND_RAW_TP("softirq_entry", softirqs_tp_btf_entry, softirqs_raw_tp_entry,
		  on_entry(),
		  unsigned int vec_nr)

TP_BTF_AND_RAW_TP("softirq_exit", softirqs_tp_btf_exit, softirqs_raw_tp_exit,
		  on_exit(vec_nr),
		  unsigned int vec_nr)

SEC("tracepoint/irq/softirq_entry")
int softirqs_tracepoint_entry(struct trace_event_raw_softirq *ctx)
{
	return on_entry();
}

SEC("tracepoint/irq/softirq_exit")
int softirqs_tracepoint_exit(struct trace_event_raw_softirq *ctx)
{
	return on_exit(ctx->vec);
}

char LICENSE[] SEC("license") = "GPL";
