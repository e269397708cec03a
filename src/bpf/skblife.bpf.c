// SPDX-License-Identifier: GPL-2.0
/*
 * skblife - lifespan of socket buffers (struct sk_buff): from their
 * allocation to their free in the slab allocator, as a log2 histogram in
 * the kernel (the book's skblife.bt).
 *
 * kmem:kmem_cache_alloc/kmem_cache_free fire for every slab object in the
 * system, so which ones are skbs must be decided cheaply, by comparing
 * cache pointers (the tracepoints carry the cache since 6.1), not names.
 * The caches are learned from the allocations made in __alloc_skb() (its
 * address range is rodata from kallsyms), by name, once each:
 *  - skbuff_head_cache (skbuff_cache in newer kernels): plain skbs and
 *    clones, also allocated elsewhere (build_skb(), NAPI);
 *  - skbuff_small_head: small data heads, not skbs;
 *  - any other cache there is the fclone cache (skbs with a clone slot,
 *    e.g. TCP's), usually merged with unrelated caches of its size and then
 *    named after one of them: its objects count only when allocated there.
 * Before the first __alloc_skb() from the head cache, skbs allocated
 * elsewhere are not seen.
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

/* Learned from __alloc_skb()'s allocations (see above); 0 until then. */
__u64 head_cache = 0;
__u64 small_head_cache = 0;
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
static const char NEW_HEAD_NAME[] = "skbuff_cache";
static const char SMALL_HEAD_NAME[] = "skbuff_small_head";

/* Does the NUL-terminated buf equal want (a string literal of n bytes with its NUL)? */
static __always_inline bool str_is(const char *buf, const char *want, int n)
{
	for (int i = 0; i < n; i++)
		if (buf[i] != want[i])
			return false;
	return true;
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

/* A cache __alloc_skb() allocated from, seen for the first time: which is it? */
static __always_inline void learn(__u64 s)
{
	char name[24] = {};

	bpf_probe_read_kernel_str(name, sizeof(name), BPF_CORE_READ((struct kmem_cache *)s, name));
	if (str_is(name, HEAD_NAME, sizeof(HEAD_NAME)) || str_is(name, NEW_HEAD_NAME, sizeof(NEW_HEAD_NAME)))
		head_cache = s;
	else if (str_is(name, SMALL_HEAD_NAME, sizeof(SMALL_HEAD_NAME)))
		small_head_cache = s;
	else
		fclone_cache = s;
}

/* kmem_cache_alloc(call_site, ptr, s, gfp_flags, node) */
static __always_inline int on_alloc(__u64 call_site, __u64 ptr, __u64 s)
{
	/* before 6.1 the third argument was the size, not the cache */
	REFUSE_WITHOUT(struct trace_event_raw_kmem_cache_alloc, node);
	if (!ptr || !s)
		return 0;
	if (s == head_cache) {
		birth(ptr);
	} else if (call_site >= alloc_skb_lo && call_site < alloc_skb_hi && s != small_head_cache) {
		if (s != fclone_cache)
			learn(s);
		if (s == head_cache || s == fclone_cache)
			birth(ptr);
	}
	return 0;
}

/* kmem_cache_free(call_site, ptr, s) */
static __always_inline int on_free(__u64 ptr, __u64 s)
{
	REFUSE_WITHOUT(struct trace_event_raw_kmem_cache_alloc, node);
	if (s == head_cache || (s == fclone_cache && s))
		death(ptr);
	return 0;
}

/* raw_tp only: a tp_btf program's read of the `const void *ptr` argument is
 * refused by verifiers before 6.18 (6.1, 6.12: "is not a struct"), and tp_btf
 * would buy nothing here (the cache's name is read with CO-RE either way) */
SEC("raw_tp/kmem_cache_alloc")
int BPF_PROG(skblife_raw_tp_alloc, unsigned long call_site, const void *ptr, struct kmem_cache *s)
{
	return on_alloc(call_site, (__u64)ptr, (__u64)s);
}

SEC("raw_tp/kmem_cache_free")
int BPF_PROG(skblife_raw_tp_free, unsigned long call_site, const void *ptr, const struct kmem_cache *s)
{
	return on_free((__u64)ptr, (__u64)s);
}

char LICENSE[] SEC("license") = "GPL";
