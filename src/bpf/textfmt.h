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
 * Every store is at buf + (pos & TEXT_MASK), of a byte or of a word (the
 * value has TEXT_SLACK bytes past TEXT_BYTES): the verifier then knows each
 * one is inside the map value whatever pos is, and the batch stops while
 * more than TEXT_LINE_MAX bytes are free, so no line wraps over another.
 * The helpers take the position and return the one after what they wrote.
 *
 * Per line the work is word stores, table loads and multiplications: a
 * division costs ~10x a multiplication, a branch per byte adds up, and the
 * first version (a byte per store, digits by division) took 193 ns a
 * tcpstates line against 98 now (bench/README.md, item 30).
 */
#ifndef __PYTRACE_TEXTFMT_H
#define __PYTRACE_TEXTFMT_H

#include "pytrace.h"

#define TEXT_BYTES (256 << 10)
#define TEXT_MASK (TEXT_BYTES - 1)
#define TEXT_SLACK 64		/* past TEXT_BYTES: a word stored at any masked position fits */
#define TEXT_LINE_MAX 256	/* no line is longer */
#define TEXT_MAX_RECORDS 1024	/* per run: bounds the program's time */

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__uint(map_flags, BPF_F_MMAPABLE);
	__type(key, __u32);
	__type(value, char[TEXT_BYTES + TEXT_SLACK]);
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

/* Several bytes in one store (x86 and arm64 store unaligned words at no
 * cost; the verifier allows it where alignment is not strict).  What is
 * stored past the text written so far is written over or never counted. */
static __always_inline void put_u64(char *buf, __u32 pos, __u64 w)
{
	*(__u64 *)(buf + (pos & TEXT_MASK)) = w;
}

static __always_inline void put_u32(char *buf, __u32 pos, __u32 w)
{
	*(__u32 *)(buf + (pos & TEXT_MASK)) = w;
}

#define SPACES 0x2020202020202020ULL

/* Spaces from start up to max bytes on (a word at a time, no branch), for
 * a field of width <= max that is then written over them. */
static __always_inline void put_blank(char *buf, __u32 start, int max)
{
#pragma unroll
	for (int i = 0; i < max; i += 8)
		put_u64(buf, start + i, SPACES);
}

/* v / 10 for any v below 2^32, without a division: v * ceil(2^35 / 10)
 * >> 35 is exact there, and a division is ~10x the multiplication. */
static __always_inline __u64 div10(__u64 v)
{
	return (v * 0xCCCCCCCDULL) >> 35;
}

/* The digit character of a nibble, without a branch: 39 = 'a' - '0' - 10. */
static __always_inline char hex_char(__u32 x)
{
	return '0' + x + (((__s32)(9 - x) >> 31) & 39);
}

/* End of a left-aligned field begun at start (%-Ns): at least width on. */
static __always_inline __u32 pad_to(__u32 start, __u32 pos, __u32 width)
{
	if (pos < start + width)
		pos = start + width;
	return text_sync(pos);
}

/* The number of decimal digits of v. */
static __always_inline __u32 udec_len(__u64 v)
{
	__u64 p = 10;
	__u32 n = 1;

#pragma unroll
	for (int i = 0; i < 19; i++) {
		if (v >= p)
			n++;
		p *= 10;
	}
	return n;
}

/* v in decimal (%d of an unsigned value): count the digits, then write
 * them from the last one back. */
static __always_inline __u32 put_udec(char *buf, __u32 pos, __u64 v)
{
	__u32 n = udec_len(v), end;

	end = pos + n - 1;
	if (v >> 32) {		/* a 64-bit value: divisions (rare in a line) */
#pragma unroll
		for (int i = 0; i < 20; i++) {
			if (i < n) {
				buf[(end - i) & TEXT_MASK] = '0' + v % 10;
				v /= 10;
			}
		}
	} else {
#pragma unroll
		for (int i = 0; i < 10; i++) {
			if (i < n) {
				__u64 q = div10(v);

				buf[(end - i) & TEXT_MASK] = '0' + (v - q * 10);
				v = q;
			}
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
			buf[(end - i) & TEXT_MASK] = hex_char(v & 15);
			v >>= 4;
		}
	}
	return text_sync(pos + n);
}

static __always_inline __u32 put_hex(char *buf, __u32 pos, __u64 v)
{
	return put_hex_max(buf, pos, v, 16);
}

/* v in decimal, right-aligned in width bytes (%<width>d of an unsigned
 * value; width a constant). */
static __always_inline __u32 put_udec_right(char *buf, __u32 pos, __u64 v, __u32 width)
{
	__u32 n = udec_len(v);

	put_blank(buf, pos, width);
	if (n < width)
		pos += width - n;
	return put_udec(buf, pos, v);
}

/* Two digits, zero-padded (%02d of a value < 100). */
static __always_inline __u32 put_dec2(char *buf, __u32 pos, __u32 v)
{
	__u64 tens = div10(v);

	pos = put_c(buf, pos, '0' + tens);
	return put_c(buf, pos, '0' + (v - tens * 10));
}

/* Three digits, zero-padded (%03d of a value < 1000). */
static __always_inline __u32 put_dec3(char *buf, __u32 pos, __u32 v)
{
	__u64 tens = div10(v), hundreds = div10(tens);

	pos = put_c(buf, pos, '0' + hundreds);
	pos = put_c(buf, pos, '0' + (tens - hundreds * 10));
	return put_c(buf, pos, '0' + (v - tens * 10));
}

/*
 * Names of up to 16 bytes (a task's comm), 8 bytes at a time: for each
 * word, a mask of its bytes before the first NUL, found without a branch
 * per byte.  The high bit of (x - 0x01..) & ~x & 0x80.. is set for the
 * first zero byte exactly (only those above it can be wrong), so its lowest
 * set bit, moved to the bottom of that byte, less one, is the mask.
 */
#define ONES 0x0101010101010101ULL
#define HIGHS 0x8080808080808080ULL

static __always_inline __u64 before_nul(__u64 x)
{
	__u64 z = (x - ONES) & ~x & HIGHS;

	return ((z & -z) >> 7) - 1;	/* no zero byte: z is 0, the mask all ones */
}

/* The masks of a 16-byte name's two words: the second counts only if the
 * first holds no NUL. */
struct name16 {
	__u64 lo, hi, lo_mask, hi_mask;
};

/* s must be 4-byte aligned (a comm after 4-byte fields): the verifier
 * refuses a misaligned load from the stack, where the record is. */
static __always_inline void name16(struct name16 *n, const char *s)
{
	const __u32 *w = (const __u32 *)s;
	__u64 full;

	n->lo = w[0] | (__u64)w[1] << 32;
	n->hi = w[2] | (__u64)w[3] << 32;
	n->lo_mask = before_nul(n->lo);
	full = n->lo_mask + 1;			/* 0 iff the first word has no NUL */
	n->hi_mask = before_nul(n->hi) & (((full | -full) >> 63) - 1);
}

/* 0 if the name is plain ASCII (the same bytes once CPython has decoded
 * and encoded it again), else -1. */
static __always_inline int name16_check(const struct name16 *n)
{
	return ((n->lo & n->lo_mask) | (n->hi & n->hi_mask)) & HIGHS ? -1 : 0;
}

/* The name space-padded to 16 bytes (%-16s of at most 16), in two stores. */
static __always_inline __u32 put_name16(char *buf, __u32 pos, const struct name16 *n)
{
	put_u64(buf, pos, (n->lo & n->lo_mask) | (SPACES & ~n->lo_mask));
	put_u64(buf, pos + 8, (n->hi & n->hi_mask) | (SPACES & ~n->hi_mask));
	return text_sync(pos + 16);
}

/* The text of each octet, space-padded to 4 bytes, with its length at bit
 * 32: an address is four loads and stores, without a digit loop or branch.
 * Not static, like any table here: clang gives a static array no BTF
 * variable, and libbpf then rejects the .rodata section. */
#define OCTET_LEN(b) ((b) >= 100 ? 3 : (b) >= 10 ? 2 : 1)
#define OCTET_DIGITS(b)                                                       \
	((b) >= 100 ? ('0' + (b) / 100) | ('0' + (b) / 10 % 10) << 8 |       \
			      ('0' + (b) % 10) << 16 | ' ' << 24 :            \
	 (b) >= 10 ? ('0' + (b) / 10) | ('0' + (b) % 10) << 8 | 0x20200000 : \
		     ('0' + (b)) | 0x20202000)
#define OCTET(b) ((__u64)OCTET_LEN(b) << 32 | (__u32)OCTET_DIGITS(b))
#define OCTET4(b) OCTET(b), OCTET((b) + 1), OCTET((b) + 2), OCTET((b) + 3)
#define OCTET16(b) OCTET4(b), OCTET4((b) + 4), OCTET4((b) + 8), OCTET4((b) + 12)
#define OCTET64(b) OCTET16(b), OCTET16((b) + 16), OCTET16((b) + 32), OCTET16((b) + 48)
const __u64 octet_text[256] = {OCTET64(0), OCTET64(64), OCTET64(128), OCTET64(192)};

static __always_inline __u32 put_ipv4(char *buf, __u32 pos, const __u8 *a)
{
#pragma unroll
	for (int i = 0; i < 4; i++) {
		__u64 t = octet_text[a[i]];

		if (i)
			pos = put_c(buf, pos, '.');
		put_u32(buf, pos, t);
		pos += (t >> 32) & 3;
	}
	return text_sync(pos);
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

/* In a format function (its buf and pos): a left-aligned field (%-<width>s)
 * written by `put`, then one space.  width may be a setting, max is the
 * constant it is at most. */
#define FIELD(put, width, max)                                                \
	do {                                                                  \
		__u32 start = pos;                                            \
		put_blank(buf, start, max);                                   \
		pos = put;                                                    \
		pos = put_c(buf, pad_to(start, pos, width), ' ');             \
	} while (0)

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
