/* SPDX-License-Identifier: GPL-2.0 */
/*
 * textfmt.h - text lines formatted in BPF, in the reader's own context.
 *
 * Why: under a connection storm the CLI reader's CPU time is the tracer's
 * cost to the traced workload, and formatting a line in CPython takes ~4x
 * what the same line takes here (bench/README.md, items 27-29).  So a tool's
 * <tool>_text.bpf.c holds one SEC("syscall") program that the reader runs
 * with bpf_prog_test_run_opts() on each drained batch: it copies each ring
 * record from the reader's memory (bpf_copy_from_user), writes its line into
 * the mmapable `text` array, and the reader writes those bytes to stdout.
 * Nothing runs in the traced tasks' context, and the kernel half of the
 * tracer is unchanged.  Needs syscall programs and bpf_loop (5.17+); the
 * Python side (core/kerneltext.py) falls back to its own renderer where the
 * object does not load.
 *
 * The lines must equal the CPython renderer's byte for byte
 * (tests/test_kerneltext.py).  A record this code cannot format the same
 * way (a command name that is not plain ASCII, whose invalid UTF-8 CPython
 * replaces) stops the run there; the reader runs the program again from
 * that record, and formats it itself when it is refused first in a run.
 *
 * Every store is buf[pos & TEXT_MASK]: the verifier then knows each one is
 * inside the map value whatever pos is, and the batch stops while more
 * than TEXT_LINE_MAX bytes are free, so no line wraps over another.  The
 * helpers take the position and return the one after what they wrote.
 */
#ifndef __PYTRACE_TEXTFMT_H
#define __PYTRACE_TEXTFMT_H

#include "pytrace.h"

#define TEXT_BYTES (256 << 10)
#define TEXT_MASK (TEXT_BYTES - 1)
#define TEXT_LINE_MAX 256	/* no line is longer */
#define TEXT_MAX_RECORDS 1024	/* per run: bounds the program's time */

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__uint(map_flags, BPF_F_MMAPABLE);
	__type(key, __u32);
	__type(value, char[TEXT_BYTES]);
} text SEC(".maps");

/* The program's context, in and out (a syscall program's context is copied
 * back to the caller).  Layout: core/kerneltext.py's TextArgs. */
struct text_args {
	__u64 src;	/* in: address of the first record's ring header */
	__u32 n;	/* in: records there */
	__u32 stride;	/* in: bytes from one record's header to the next */
	__u32 done;	/* out: records formatted (if < n: the next one was refused,
			 * or TEXT_MAX_RECORDS or the text array ran out; the
			 * reader runs it again from there, and a record refused
			 * first in a run is its own to format) */
	__u32 len;	/* out: bytes of text written */
};

/*
 * The write position lives in .bss, not in a register or on the stack, and
 * every field ends by storing it there and loading it back (text_sync).
 * Why: the verifier follows each path through the format code separately,
 * with the exact position it leads to; a line's fields have up to a few
 * dozen lengths each, so the paths multiply across fields (and the bpf_loop
 * callback never converges).  A value loaded from a map is unknown to the
 * verifier, so after each sync every path is the same state again.  It
 * costs a store and a load per field.
 */
__u32 text_pos;

static __always_inline __u32 text_sync(__u32 pos)
{
	*(volatile __u32 *)&text_pos = pos;
	return *(volatile __u32 *)&text_pos;
}

static __always_inline __u32 put_c(char *buf, __u32 pos, char c)
{
	buf[pos & TEXT_MASK] = c;
	return pos + 1;
}

/* Spaces from start up to max bytes on (unconditional stores: no branch),
 * for a field of width <= max that is then written over them. */
static __always_inline void put_blank(char *buf, __u32 start, int max)
{
#pragma unroll
	for (int i = 0; i < max; i++)
		buf[(start + i) & TEXT_MASK] = ' ';
}

/* End of a left-aligned field begun at start (%-Ns): at least width on. */
static __always_inline __u32 pad_to(__u32 start, __u32 pos, __u32 width)
{
	if (pos < start + width)
		pos = start + width;
	return text_sync(pos);
}

/* v in decimal (%d of an unsigned value): count the digits, then write
 * them from the last one back. */
static __always_inline __u32 put_udec(char *buf, __u32 pos, __u64 v)
{
	__u64 p = 10;
	__u32 n = 1, end;

#pragma unroll
	for (int i = 0; i < 19; i++) {
		if (v >= p)
			n++;
		p *= 10;
	}
	end = pos + n - 1;
#pragma unroll
	for (int i = 0; i < 20; i++) {
		if (i < n) {
			buf[(end - i) & TEXT_MASK] = '0' + v % 10;
			v /= 10;
		}
	}
	return text_sync(pos + n);
}

/* v in lower-case hex, no leading zeros (%x) with at most max digits:
 * count the digits, then write them from the last one back. */
static __always_inline __u32 put_hex_max(char *buf, __u32 pos, __u64 v, int max)
{
	__u32 n = 1, end;

#pragma unroll
	for (int i = 1; i < max; i++) {
		if (v >> (i * 4))
			n++;
	}
	end = pos + n - 1;
#pragma unroll
	for (int i = 0; i < max; i++) {
		if (i < n) {
			__u8 x = v & 15;

			buf[(end - i) & TEXT_MASK] = x < 10 ? '0' + x : 'a' - 10 + x;
			v >>= 4;
		}
	}
	return text_sync(pos + n);
}

static __always_inline __u32 put_hex(char *buf, __u32 pos, __u64 v)
{
	return put_hex_max(buf, pos, v, 16);
}

/* Three digits, zero-padded (%03d of a value < 1000). */
static __always_inline __u32 put_dec3(char *buf, __u32 pos, __u32 v)
{
	pos = put_c(buf, pos, '0' + v / 100 % 10);
	pos = put_c(buf, pos, '0' + v / 10 % 10);
	return put_c(buf, pos, '0' + v % 10);
}

/* 0 if the NUL-terminated string of at most max bytes is plain ASCII (the
 * same bytes once CPython has decoded and encoded it again), else -1. */
static __always_inline int check_ascii(const char *s, int max)
{
#pragma unroll
	for (int i = 0; i < max; i++) {
		if (!s[i])
			return 0;
		if ((__u8)s[i] >= 0x80)
			return -1;
	}
	return 0;
}

/* A NUL-terminated string of at most max bytes. */
static __always_inline __u32 put_str(char *buf, __u32 pos, const char *s, int max)
{
#pragma unroll
	for (int i = 0; i < max; i++) {
		if (!s[i])
			break;
		pos = put_c(buf, pos, s[i]);
	}
	return text_sync(pos);
}

static __always_inline __u32 put_ipv4(char *buf, __u32 pos, const __u8 *a)
{
#pragma unroll
	for (int i = 0; i < 4; i++) {
		__u8 b = a[i];

		if (i)
			pos = put_c(buf, pos, '.');
		if (b >= 100)
			pos = put_c(buf, pos, '0' + b / 100);
		if (b >= 10)
			pos = put_c(buf, pos, '0' + b / 10 % 10);
		pos = text_sync(put_c(buf, pos, '0' + b % 10));
	}
	return pos;
}

/*
 * An IPv6 address as glibc's inet_ntop() writes it (what the CPython
 * renderer prints): the longest run of two or more zero groups (the first
 * of equally long ones) compressed to "::", and the last 32 bits as IPv4 for
 * ::a.b.c.d and ::ffff:a.b.c.d.
 *
 * Which groups are zero is one of 256 patterns, and the loader writes the
 * plan of each into ipv6_plan (core/kerneltext.ipv6_plan()): worked out here
 * with branches, the verifier would follow every pattern through the
 * printing on its own path (over a million instructions).  A plan holds, for
 * group i, two bits at 2i (IPV6_*), then the flags below.
 */
#define IPV6_GROUP 0		/* ":" unless first, then the group in hex */
#define IPV6_SKIP 1		/* inside the compressed run */
#define IPV6_RUN 2		/* first group of the run: ":" */
#define IPV6_TRAILING_COLON (1 << 16)	/* the run reaches the end: one more ":" */
#define IPV6_V4 (1 << 17)	/* ::a.b.c.d: the last two groups as IPv4 */
#define IPV6_V4_IF_FFFF (1 << 18)	/* so if group 5 is ffff (::ffff:a.b.c.d) */

const volatile __u32 ipv6_plan[256];

static __always_inline __u32 put_ipv6(char *buf, __u32 pos, const __u8 *a)
{
	__u32 zeros = 0, plan;

	/* bit i set if group i is zero, without a branch: (w - 1) >> 31 of a
	 * 16-bit w is 1 only for 0 */
#pragma unroll
	for (int i = 0; i < 8; i++)
		zeros |= ((((__u32)a[2 * i] << 8 | a[2 * i + 1]) - 1) >> 31) << i;
	plan = ipv6_plan[zeros & 255];

#pragma unroll
	for (int i = 0; i < 8; i++) {
		__u32 what = (plan >> (2 * i)) & 3;

		/* decided here, without a branch before: a flag live across the
		 * first groups would double the verifier's paths through them */
		if (i == 6 && ((plan & IPV6_V4) ||
			       ((plan & IPV6_V4_IF_FFFF) &&
				((((__u32)a[10] << 8 | a[11]) ^ 0xffff) - 1) >> 31)))
			return put_ipv4(buf, put_c(buf, pos, ':'), a + 12);
		if (what == IPV6_RUN) {
			pos = text_sync(put_c(buf, pos, ':'));
		} else if (what == IPV6_GROUP) {
			if (i)
				pos = put_c(buf, pos, ':');
			pos = put_hex_max(buf, pos, (__u16)a[2 * i] << 8 | a[2 * i + 1], 4);
		}
	}
	if (plan & IPV6_TRAILING_COLON)
		pos = put_c(buf, pos, ':');
	return text_sync(pos);
}

/* The text of an address as core/net.addr_text() gives it. */
static __always_inline __u32 put_addr(char *buf, __u32 pos, __u16 family, const __u8 *a)
{
	if (family == AF_INET)
		return put_ipv4(buf, pos, a);
	if (family == AF_INET6)
		return put_ipv6(buf, pos, a);
	return text_sync(put_c(buf, pos, '?'));
}

/* What a format function returns for a record the reader must format. */
#define TEXT_REFUSED 0xffffffffu

/*
 * The program: name(struct text_args *), formatting records of type rec
 * with `__u32 fmt(const rec *, char *buf, __u32 pos)`, which returns the
 * position after the line, or TEXT_REFUSED having written nothing.
 */
#define TEXT_PROGRAM(name, rec, fmt)                                          \
	struct name##_loop {                                                  \
		__u64 src;                                                    \
		char *buf;                                                    \
		__u32 stride;                                                 \
		__u32 done;                                                   \
	};                                                                    \
	static long name##_one(__u32 i, void *ctx)                            \
	{                                                                     \
		struct name##_loop *l = ctx;                                  \
		__u32 pos = text_sync(text_pos), end;                         \
		rec r;                                                        \
									      \
		if (pos > TEXT_BYTES - TEXT_LINE_MAX)                         \
			return 1;                                             \
		if (bpf_copy_from_user(&r, sizeof(r),                         \
				       (void *)(l->src + (__u64)i * l->stride + 8))) \
			return 1;                                             \
		end = fmt(&r, l->buf, pos);                                   \
		if (end == TEXT_REFUSED)                                      \
			return 1;                                             \
		text_pos = end;                                               \
		l->done = i + 1;                                              \
		return 0;                                                     \
	}                                                                     \
	SEC("syscall")                                                        \
	int name(struct text_args *a)                                         \
	{                                                                     \
		__u32 zero = 0, n = a->n;                                     \
		struct name##_loop l = {.src = a->src, .stride = a->stride};  \
									      \
		l.buf = bpf_map_lookup_elem(&text, &zero);                    \
		if (!l.buf)                                                   \
			return -1;                                            \
		if (n > TEXT_MAX_RECORDS)                                     \
			n = TEXT_MAX_RECORDS;                                 \
		text_pos = 0;                                                 \
		bpf_loop(n, name##_one, &l, 0);                               \
		a->done = l.done;                                             \
		a->len = text_pos;                                            \
		return 0;                                                     \
	}

#endif /* __PYTRACE_TEXTFMT_H */
