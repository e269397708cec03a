// SPDX-License-Identifier: GPL-2.0
/*
 * count - one generic classic-tracepoint program behind `pytrace count` and
 * `pytrace stackcount`.
 *
 * A classic tracepoint program receives the tracepoint's raw record, whatever
 * the tracepoint, so one precompiled program serves any of them: it is
 * attached once per tracepoint named on the command line, and the BPF cookie
 * of each attachment is the probe's index.  Kernels before 5.15 have no
 * cookies (and the record's common_type is not set yet when a program runs):
 * there, up to FIXED_PROBES tracepoints get a program each,
 * count_tracepoint_<index>, the same code with the index built in.  What to read from a record (the
 * filter's fields and the key's fields) differs per tracepoint; user space
 * takes offsets, sizes and kinds from tracefs `format` files and passes them
 * here as rodata, indexed by that cookie.  So "count failed connects by
 * errno" is `count syscalls:sys_exit_connect --filter 'ret<0' --by ret` and
 * needs no compiler.
 *
 * Counts are kept in a hash keyed by probe, optional process, optional
 * kernel/user stack ids, and up to MAX_KEYS field values (32 bytes each:
 * integers as 8 bytes, strings up to 31 characters).
 */
#include "pytrace.h"
#include "filter.h"

#define MAX_PROBES 1024
#define MAX_CONDS 4
#define MAX_KEYS 4
#define VAL_LEN 32
#define MAX_STACK_DEPTH 127

/* field reference: offset | size << 16 | kind << 24 | signed << 28 */
#define KIND_INT 1
#define KIND_CHARS 2
#define KIND_DATALOC 3

enum { CMP_EQ, CMP_NE, CMP_LE, CMP_GE, CMP_LT, CMP_GT, CMP_AND };	/* as core/tracepoints.py OPS */

/* Per probe (index = cookie): where the filter's and the key's fields are. */
const volatile __u32 cond_refs[MAX_PROBES * MAX_CONDS] = {};
const volatile __u32 key_refs[MAX_PROBES * MAX_KEYS] = {};
/* The filter, the same for every probe: all conditions must hold. */
const volatile __u32 n_conds = 0;
const volatile __u32 n_keys = 0;
const volatile __u8 cond_ops[MAX_CONDS] = {};
const volatile __s64 cond_ints[MAX_CONDS] = {};
const volatile __u64 cond_strs[MAX_CONDS * VAL_LEN / 8] = {};	/* zero padded */
const volatile __u32 targ_tgid = 0;
const volatile bool per_process = false;
const volatile bool kernel_stacks = false;
const volatile bool user_stacks = false;
const volatile __u32 kstack_skip = 0;
const volatile __s32 targ_cpu = -1;		/* stackcount -c: only this CPU; -1 all */

struct count_key {
	__u32 probe;
	__s32 kstack;		/* stack id; -1 not collected, other < 0: -errno */
	__s32 ustack;
	__u32 pid;		/* 0 unless per_process */
	char comm[TASK_COMM_LEN];
	__u8 vals[MAX_KEYS * VAL_LEN];
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 10240);
	__type(key, struct count_key);
	__type(value, __u64);
} counts SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_STACK_TRACE);
	__uint(max_entries, 8192);	/* set to 1 by user space when no stacks are kept */
	__uint(key_size, sizeof(__u32));
	__uint(value_size, MAX_STACK_DEPTH * sizeof(__u64));
} stacks SEC(".maps");

/*
 * One row of stackcount's output, as its library and --json have it: what
 * user space makes of a counts entry once its stacks are read (frames and
 * addresses, innermost first, 0 ending a stack).  Not used here: declared
 * for its BTF, from which the row type is generated (tools/stackcount.py).
 */
struct stackcount_row {
	__u64 count;
	__s32 pid;		/* -P, -U: the process; -1 when not counted per process */
	__s32 kstack_error;	/* 0; an errno when the stack was not kept; -1 not collected */
	__s32 ustack_error;
	__u32 pad;
	char comm[TASK_COMM_LEN];
	char tracepoint[64];
	__u64 kstack[MAX_STACK_DEPTH];
	__u64 ustack[MAX_STACK_DEPTH];
};

struct stackcount_row _stackcount_row = {};

/*
 * User stacks: each frame kept as its ELF file's build id and file offset,
 * so that a process that exited before the print is still named
 * (core/usyms.py).  A map of its own: kernel stacks stay 8 bytes a frame.
 */
struct {
	__uint(type, BPF_MAP_TYPE_STACK_TRACE);
	__uint(max_entries, 8192);	/* set to 1 by user space when no user stacks are kept */
	__uint(map_flags, BPF_F_STACK_BUILD_ID);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, MAX_STACK_DEPTH * sizeof(struct bpf_stack_build_id));
} ustacks SEC(".maps");

/* Hits that found the counts table full: reported, never lost silently. */
__u64 dropped = 0;

static __always_inline int read_int(void *ctx, __u32 ref, __s64 *out)
{
	__u32 off = ref & 0xffff, size = (ref >> 16) & 0xff;
	__u64 v = 0;

	if (size > 8)
		return -1;
	if (bpf_probe_read_kernel(&v, size, ctx + off))
		return -1;
	if ((ref >> 28) & 1 && size < 8) {
		int sh = 64 - size * 8;

		v = (__u64)((__s64)(v << sh) >> sh);
	}
	*out = v;
	return 0;
}

/* A string field into buf (VAL_LEN bytes, zeroed by the caller). */
static __always_inline void read_str(void *ctx, __u32 ref, void *buf)
{
	__u32 off = ref & 0xffff, size = (ref >> 16) & 0xff;
	const char *src = ctx + off;

	if (((ref >> 24) & 0xf) == KIND_DATALOC) {
		__u32 loc = 0;

		bpf_probe_read_kernel(&loc, sizeof(loc), ctx + off);
		src = ctx + (loc & 0xffff);
		size = VAL_LEN;
	}
	if (size > VAL_LEN)
		size = VAL_LEN;
	bpf_probe_read_kernel_str(buf, size, src);
}

static __always_inline bool cond_holds(void *ctx, __u32 ref, int i)
{
	__u8 op = cond_ops[i];

	if (((ref >> 24) & 0xf) == KIND_INT) {
		__s64 v = 0, c = cond_ints[i];
		bool sgn = (ref >> 28) & 1;

		if (read_int(ctx, ref, &v))
			return false;
		switch (op) {
		case CMP_EQ: return v == c;
		case CMP_NE: return v != c;
		case CMP_LE: return sgn ? v <= c : (__u64)v <= (__u64)c;
		case CMP_GE: return sgn ? v >= c : (__u64)v >= (__u64)c;
		case CMP_LT: return sgn ? v < c : (__u64)v < (__u64)c;
		case CMP_GT: return sgn ? v > c : (__u64)v > (__u64)c;
		case CMP_AND: return (v & c) != 0;
		}
		return false;
	}

	__u64 buf[VAL_LEN / 8] = {};
	bool eq = true;

	read_str(ctx, ref, buf);
#pragma unroll
	for (int w = 0; w < VAL_LEN / 8; w++)
		if (buf[w] != cond_strs[i * (VAL_LEN / 8) + w])
			eq = false;
	return op == CMP_EQ ? eq : !eq;
}

static __always_inline int count_hit(void *ctx, __u32 probe)
{
	__u64 *val, one = 1;
	struct count_key key;

	if (probe >= MAX_PROBES)
		return 0;
	probe &= MAX_PROBES - 1;	/* the same, in a form every verifier keeps (a power of two) */
	if (targ_tgid && (bpf_get_current_pid_tgid() >> 32) != targ_tgid)
		return 0;
	if (!pt_task_wanted())		/* the current task's (filter.h) */
		return 0;
	if (targ_cpu >= 0 && bpf_get_smp_processor_id() != (__u32)targ_cpu)
		return 0;

#pragma unroll
	for (int i = 0; i < MAX_CONDS; i++) {
		if (i < n_conds && !cond_holds(ctx, cond_refs[probe * MAX_CONDS + i], i))
			return 0;
	}

	__builtin_memset(&key, 0, sizeof(key));
	key.probe = probe;
	key.kstack = key.ustack = -1;
#pragma unroll
	for (int i = 0; i < MAX_KEYS; i++) {
		__u32 ref = key_refs[probe * MAX_KEYS + i];

		if (i >= n_keys)
			break;
		if (((ref >> 24) & 0xf) == KIND_INT) {
			__s64 v = 0;

			read_int(ctx, ref, &v);
			__builtin_memcpy(&key.vals[i * VAL_LEN], &v, sizeof(v));
		} else {
			read_str(ctx, ref, &key.vals[i * VAL_LEN]);
		}
	}
	if (per_process) {
		key.pid = bpf_get_current_pid_tgid() >> 32;
		bpf_get_current_comm(key.comm, sizeof(key.comm));
	}
	if (kernel_stacks)
		key.kstack = bpf_get_stackid(ctx, &stacks, kstack_skip & BPF_F_SKIP_FIELD_MASK);
	if (user_stacks)
		key.ustack = bpf_get_stackid(ctx, &ustacks, BPF_F_USER_STACK);

	val = bpf_map_lookup_elem(&counts, &key);
	if (val) {
		__sync_fetch_and_add(val, 1);
		return 0;
	}
	if (bpf_map_update_elem(&counts, &key, &one, BPF_NOEXIST) == 0)
		return 0;
	val = bpf_map_lookup_elem(&counts, &key);	/* another CPU made it first */
	if (val)
		__sync_fetch_and_add(val, 1);
	else
		__sync_fetch_and_add(&dropped, 1);
	return 0;
}

SEC("tracepoint")
int count_tracepoint(void *ctx)
{
	__u64 cookie;

	/* where the kernel has no cookies, user space does not attach this one */
	if (!bpf_core_enum_value_exists(enum bpf_func_id, BPF_FUNC_get_attach_cookie))
		return 0;
	cookie = bpf_get_attach_cookie(ctx);
	return cookie < MAX_PROBES ? count_hit(ctx, cookie) : 0;
}

/* count_tracepoint_<i>: probe i, for kernels without cookies (FIXED_PROBES in tools/count.py) */
#define FIXED(i)							\
	SEC("tracepoint")						\
	int count_tracepoint_##i(void *ctx)				\
	{								\
		return count_hit(ctx, i);				\
	}
FIXED(0) FIXED(1) FIXED(2) FIXED(3) FIXED(4) FIXED(5) FIXED(6) FIXED(7)
FIXED(8) FIXED(9) FIXED(10) FIXED(11) FIXED(12) FIXED(13) FIXED(14) FIXED(15)

char LICENSE[] SEC("license") = "GPL";
