// SPDX-License-Identifier: GPL-2.0
/*
 * skblife - lifespan of socket buffers (struct sk_buff): from their
 * allocation to their free in the slab allocator, as a log2 histogram in
 * the kernel (the book's skblife.bt).
 *
 * kmem:kmem_cache_alloc/kmem_cache_free fire for every slab object in the
 * system, so which ones are skbs must be decided cheaply, by comparing
 * pointers, not cache names:
 *  - skbuff_head_cache (plain skbs and clones) is never merged with other
 *    caches; its address is found once at start by the kmem_cache iterator
 *    (skblife_find_caches), together with skbuff_small_head (small data
 *    heads, not skbs);
 *  - skbuff_fclone_cache (skbs with a clone slot, e.g. TCP's) is usually
 *    merged with unrelated caches of its size, so its objects are told apart
 *    by where they are allocated: in __alloc_skb() (its address range is
 *    rodata from kallsyms), from a cache other than those two.  The first
 *    such allocation names the fclone cache for the free side.
 * The classic tracepoint variant has no cache pointer: it compares the name
 * of skbuff_head_cache instead, the same call-site rule otherwise.
 *
 * Not seen: skbs handed out and taken back by the per-CPU NAPI skb cache
 * (bulk allocation and free, no per-object tracepoint): they get no birth,
 * and one recycled through it may show the age of its first use.
 */
#include "pytrace.h"
#include "socklayer.h"		/* struct log2_hist, hist_add() */

const volatile __u64 alloc_skb_lo = 0;	/* [lo, hi): the text of __alloc_skb */
const volatile __u64 alloc_skb_hi = 0;
const volatile __u32 targ_tgid = 0;	/* -p: skbs allocated by this process */
const volatile bool targ_us = false;	/* microseconds, not nanoseconds */

/* Found by skblife_find_caches (run by user space before tracing starts). */
__u64 head_cache = 0;
__u64 small_head_cache = 0;
/* Learned from the first fclone allocation. */
__u64 fclone_cache = 0;

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);	/* skbs whose free we miss must age out */
	__uint(max_entries, 262144);
	__type(key, __u64);
	__type(value, __u64);
} births SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);	/* one key (0): user space reads and clears it */
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct log2_hist);
} hists SEC(".maps");

static const char HEAD_NAME[] = "skbuff_head_cache";
static const char SMALL_HEAD_NAME[] = "skbuff_small_head";

/* Does the NUL-terminated buf equal want (a string literal of n bytes with its NUL)? */
static __always_inline bool str_is(const char *buf, const char *want, int n)
{
	for (int i = 0; i < n; i++)
		if (buf[i] != want[i])
			return false;
	return true;
}

SEC("iter/kmem_cache")
int skblife_find_caches(struct bpf_iter__kmem_cache *ctx)
{
	struct kmem_cache *s = ctx->s;
	char name[24] = {};

	if (!s)
		return 0;
	bpf_probe_read_kernel_str(name, sizeof(name), BPF_CORE_READ(s, name));
	if (str_is(name, HEAD_NAME, sizeof(HEAD_NAME)))
		head_cache = (__u64)s;
	else if (str_is(name, SMALL_HEAD_NAME, sizeof(SMALL_HEAD_NAME)))
		small_head_cache = (__u64)s;
	return 0;
}

static __always_inline void birth(__u64 ptr)
{
	__u64 now = bpf_ktime_get_ns();

	if (targ_tgid && (bpf_get_current_pid_tgid() >> 32) != targ_tgid)
		return;
	bpf_map_update_elem(&births, &ptr, &now, BPF_ANY);
}

static __always_inline void death(__u64 ptr)
{
	__u64 *born = bpf_map_lookup_elem(&births, &ptr), age;
	__u32 zero = 0;

	if (!born)
		return;
	age = bpf_ktime_get_ns() - *born;
	bpf_map_delete_elem(&births, &ptr);
	hist_add(&hists, &zero, targ_us ? age / 1000 : age);
}

static __always_inline bool in_alloc_skb(__u64 call_site)
{
	return call_site >= alloc_skb_lo && call_site < alloc_skb_hi;
}

/* tp_btf / raw_tp: kmem_cache_alloc(call_site, ptr, s, gfp_flags, node) */
static __always_inline int on_alloc(__u64 call_site, __u64 ptr, __u64 s)
{
	if (!ptr)
		return 0;
	if (s == head_cache) {
		birth(ptr);
	} else if (in_alloc_skb(call_site) && s != small_head_cache) {
		if (fclone_cache != s)	/* write the shared line once, not per skb */
			fclone_cache = s;
		birth(ptr);
	}
	return 0;
}

/* kmem_cache_free(call_site, ptr, s) */
static __always_inline int on_free(__u64 ptr, __u64 s)
{
	if (s == head_cache || (s == fclone_cache && s))
		death(ptr);
	return 0;
}

TP_BTF_AND_RAW_TP("kmem_cache_alloc", skblife_tp_btf_alloc, skblife_raw_tp_alloc,
		  on_alloc(call_site, (__u64)ptr, (__u64)s),
		  unsigned long call_site, const void *ptr, struct kmem_cache *s)

TP_BTF_AND_RAW_TP("kmem_cache_free", skblife_tp_btf_free, skblife_raw_tp_free,
		  on_free((__u64)ptr, (__u64)s),
		  unsigned long call_site, const void *ptr, const struct kmem_cache *s)

/* Classic tracepoints: no cache pointer, its name (__data_loc) instead. */
static __always_inline bool record_names(const void *ctx, __u32 loc, const char *want, int n)
{
	char name[24] = {};

	bpf_probe_read_kernel_str(name, sizeof(name), (const char *)ctx + (loc & 0xFFFF));
	return str_is(name, want, n);
}

SEC("tracepoint/kmem/kmem_cache_alloc")
int skblife_tracepoint_alloc(struct trace_event_raw_kmem_cache_alloc *ctx)
{
	__u64 ptr = (__u64)ctx->ptr;
	__u32 loc = 0;

	if (!ptr)
		return 0;
	/* (copied out: the verifier refuses a load through ctx + offset) */
	bpf_probe_read_kernel(&loc, sizeof(loc), &ctx->__data_loc_name);
	if (in_alloc_skb(ctx->call_site)) {
		if (!record_names(ctx, loc, SMALL_HEAD_NAME, sizeof(SMALL_HEAD_NAME)))
			birth(ptr);
	} else if (record_names(ctx, loc, HEAD_NAME, sizeof(HEAD_NAME))) {
		birth(ptr);
	}
	return 0;
}

SEC("tracepoint/kmem/kmem_cache_free")
int skblife_tracepoint_free(struct trace_event_raw_kmem_cache_free *ctx)
{
	death((__u64)ctx->ptr);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
