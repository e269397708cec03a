// SPDX-License-Identifier: GPL-2.0
/*
 * rowfmt: ring buffer records -> text lines, in user space, by a small op program.
 *
 * Why this exists: the CLI's text path formats every record it drains; in
 * CPython that is ~2 us a record (unpack to a tuple, then % formatting),
 * which under a connection storm on 2 cores takes CPU from the traced
 * workload.  A formatter in BPF (tried before) depended on each kernel's
 * verifier; this one depends on nothing but libc.
 *
 * It knows no tool.  core/rowfmt.py compiles a tool's shown columns into
 * ops (spec/text.py: each column's conversion declares its native form in
 * core/convert.py), and this loop runs them over a batch of records exactly
 * as they lie in the ring (header, record, padding: `stride` bytes each).
 *
 * A record this code cannot print exactly as the CPython path would (a
 * command name that is not ASCII, an address family it does not know, a
 * number beyond a name table) is not guessed at: rowfmt_run() stops before
 * it and says so, and the caller prints that one record the CPython way.
 * tests/test_rowfmt.py holds the two paths to the same bytes.
 */
#include <arpa/inet.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#define EXPORT __attribute__((visibility("default")))

enum rf_kind {
	RF_LIT = 1,	/* pool[a, a + b) */
	RF_UDEC = 2,	/* unsigned field, (v >> shift) / div, in decimal */
	RF_SDEC = 3,	/* signed field, in decimal */
	RF_HEX = 4,	/* unsigned field, lower-case hex */
	RF_FIXED = 5,	/* unsigned field: (v + add) / div "." ((v + add) / fdiv) % 10^digits */
	RF_TEXT = 6,	/* char[size] up to its NUL, cut to `cut` bytes */
	RF_ADDR = 7,	/* 16-byte address; family: the field at off2 (size2 bytes) */
	RF_NAME = 8,	/* names[a + v] (an offset and length in pool) for v < b */
	RF_HMS = 9,	/* unsigned ns field + a (the clock's offset): local HH:MM:SS */
};

/* One op; the layout is core/rowfmt.py's _Op (ctypes), field for field. */
struct rf_op {
	uint8_t kind;
	uint8_t size;		/* the field's bytes: 1, 2, 4, 8 (TEXT: the array's) */
	uint8_t size2;		/* ADDR: the family field's bytes */
	uint8_t left;		/* pad on the right (printf's "-") */
	uint8_t digits;		/* FIXED: decimals */
	uint8_t shift;		/* UDEC */
	uint16_t off;		/* the field's offset in the record */
	uint16_t off2;		/* ADDR: the family field's offset */
	uint16_t width;		/* pad to this many bytes (0: no padding) */
	uint16_t cut;		/* TEXT: at most this many bytes (0xffff: all) */
	uint16_t pad_;
	uint64_t a, b;		/* LIT: pool offset, length; NAME: first entry, entries;
				   FIXED: add, div; UDEC: div; HMS: offset */
	uint64_t c;		/* FIXED: fdiv */
};

#define DEFER (-1)	/* this record is printed by the caller */
#define SLACK 16	/* copies go in 16-byte chunks: out needs this much beyond a line */

static const char SPACES[16] = "                ";
static const char PAIRS[] =
	"00010203040506070809101112131415161718192021222324252627282930313233343536373839"
	"40414243444546474849505152535455565758596061626364656667686970717273747576777879"
	"8081828384858687888990919293949596979899";

static uint64_t get_u(const unsigned char *p, unsigned size)
{
	uint8_t u8; uint16_t u16; uint32_t u32; uint64_t u64;

	switch (size) {
	case 1: memcpy(&u8, p, 1); return u8;
	case 2: memcpy(&u16, p, 2); return u16;
	case 4: memcpy(&u32, p, 4); return u32;
	default: memcpy(&u64, p, 8); return u64;
	}
}

/* A signed field: its bits, sign-extended from its size. */
static int64_t get_s(const unsigned char *p, unsigned size)
{
	uint64_t v = get_u(p, size);
	unsigned bits = 8 * size;

	if (bits < 64 && (v >> (bits - 1)))
		v |= ~(uint64_t)0 << bits;
	return (int64_t)v;
}

/*
 * The field texts are made in a scratch buffer, right-aligned at its end
 * (digits come out last first), then copied into the line with fixed
 * 16-byte copies, which the compiler inlines: a copy may write up to 15
 * bytes past its end, into the line's room still to be written (SLACK).
 */
struct scratch {
	char buf[80];	/* text ends at buf + 64; 16 bytes of room behind for the chunked copy */
	int64_t sec;	/* HMS: the second whose text is in hms (-1: none yet) */
	char hms[16];
};
#define END 64

/* v in decimal, ending at end; returns where it starts. */
static char *udec(char *end, uint64_t v)
{
	while (v >= 100) {
		unsigned two = (unsigned)(v % 100);

		v /= 100;
		end -= 2;
		memcpy(end, PAIRS + 2 * two, 2);
	}
	if (v >= 10) {
		end -= 2;
		memcpy(end, PAIRS + 2 * v, 2);
	} else {
		*--end = (char)('0' + v);
	}
	return end;
}

static char *hex(char *end, uint64_t v)
{
	static const char digit[] = "0123456789abcdef";

	do {
		*--end = digit[v & 15];
		v >>= 4;
	} while (v);
	return end;
}

static char *ipv4(char *end, const unsigned char *a)
{
	for (int i = 3; i >= 0; i--) {
		end = udec(end, a[i]);
		if (i)
			*--end = '.';
	}
	return end;
}

static char *put(char *dst, const char *src, size_t n)
{
	for (size_t i = 0; i < n; i += 16)
		memcpy(dst + i, src + i, 16);
	return dst + n;
}

static char *spaces(char *dst, size_t n)
{
	for (size_t i = 0; i < n; i += 16)
		memcpy(dst + i, SPACES, 16);
	return dst + n;
}

/*
 * One field's text: *text and its length (in s, or in the pool, or in the
 * record); DEFER if this code does not print it.
 */
static int field(const char **text, struct scratch *s, const struct rf_op *op,
		 const unsigned char *rec, const char *pool, const uint32_t *names)
{
	const unsigned char *p = rec + op->off;
	char *end = s->buf + END, *at;
	uint64_t v;
	int64_t sv;

	switch (op->kind) {
	case RF_LIT:
		*text = pool + op->a;
		return (int)op->b;
	case RF_UDEC:
		v = get_u(p, op->size) >> op->shift;
		at = udec(end, op->a == 1 ? v : v / op->a);
		break;
	case RF_SDEC:
		sv = get_s(p, op->size);
		at = udec(end, sv >= 0 ? (uint64_t)sv : (uint64_t)0 - (uint64_t)sv);
		if (sv < 0)
			*--at = '-';
		break;
	case RF_HEX:
		at = hex(end, get_u(p, op->size));
		break;
	case RF_FIXED: {
		static const uint64_t POW10[] = {1, 10, 100, 1000, 10000, 100000, 1000000};
		uint64_t frac;

		v = get_u(p, op->size);
		if (v > UINT64_MAX - op->a || op->digits >= sizeof(POW10) / sizeof(POW10[0]))
			return DEFER;	/* Python's integers do not wrap */
		v += op->a;
		frac = (op->c == 1 ? v : v / op->c) % POW10[op->digits];
		at = end;
		for (int i = 0; i < op->digits; i++) {
			*--at = (char)('0' + frac % 10);
			frac /= 10;
		}
		*--at = '.';
		at = udec(at, v / op->b);
		break;
	}
	case RF_TEXT: {
		unsigned len = 0, max = op->cut < op->size ? op->cut : op->size;

		while (len < op->size && p[len]) {
			if (p[len] >= 0x80)
				return DEFER;	/* decoded with replacement characters there */
			len++;
		}
		if (len > max)
			len = max;
		if (op->size >= 16 && len <= 16) {	/* one chunk, inside the field */
			*text = (const char *)p;
			return (int)len;
		}
		memcpy(s->buf, p, len);
		*text = s->buf;
		return (int)len;
	}
	case RF_ADDR:
		v = get_u(rec + op->off2, op->size2);
		if (v == AF_INET) {
			at = ipv4(end, p);
			break;
		}
		if (v == AF_INET6 && inet_ntop(AF_INET6, p, s->buf, INET6_ADDRSTRLEN)) {
			*text = s->buf;
			return (int)strlen(s->buf);
		}
		return DEFER;
	case RF_HMS: {
		struct tm tm;
		time_t sec;

		v = get_u(p, op->size);
		if (v > UINT64_MAX - op->a)
			return DEFER;
		sec = (time_t)((v + op->a) / 1000000000u);
		if (sec != s->sec) {	/* localtime_r() once a second, as cli/cliutil.Clock */
			if (!localtime_r(&sec, &tm) || tm.tm_hour > 99)
				return DEFER;
			s->hms[0] = (char)('0' + tm.tm_hour / 10); s->hms[1] = (char)('0' + tm.tm_hour % 10);
			s->hms[2] = ':';
			s->hms[3] = (char)('0' + tm.tm_min / 10); s->hms[4] = (char)('0' + tm.tm_min % 10);
			s->hms[5] = ':';
			s->hms[6] = (char)('0' + tm.tm_sec / 10); s->hms[7] = (char)('0' + tm.tm_sec % 10);
			s->sec = sec;
		}
		*text = s->hms;
		return 8;
	}
	case RF_NAME:
		v = get_u(p, op->size);
		if (v >= op->b)
			return DEFER;
		names += 2 * (op->a + v);
		if (names[1] == UINT32_MAX)
			return DEFER;
		*text = pool + names[0];
		return (int)names[1];
	default:
		return DEFER;
	}
	*text = at;
	return (int)(end - at);
}

/*
 * Lines of records first..n-1 of recs (record i at recs + i * stride + hdr)
 * into out (cap bytes), each at most `line_max` bytes.  Returns the bytes
 * written; *done: the records printed.  It stops early before a record that
 * must be printed by the caller (*deferred = 1) or when out has no room for
 * one more line and SLACK (*deferred = 0).  pool must have SLACK bytes
 * beyond its last text.
 */
EXPORT size_t rowfmt_run(const struct rf_op *ops, uint32_t nops, const char *pool,
			 const uint32_t *names, const unsigned char *recs, uint32_t stride,
			 uint32_t hdr, uint32_t first, uint32_t n, size_t line_max,
			 char *out, size_t cap, uint32_t *done, uint32_t *deferred)
{
	struct scratch s;
	char *pos = out;
	uint32_t i;

	*deferred = 0;
	s.sec = -1;
	for (i = first; i < n; i++) {
		const unsigned char *rec = recs + (size_t)i * stride + hdr;
		char *start = pos;
		uint32_t k;

		if (cap - (size_t)(pos - out) < line_max + SLACK)
			break;
		for (k = 0; k < nops; k++) {
			const struct rf_op *op = &ops[k];
			const char *text;
			int len = field(&text, &s, op, rec, pool, names);
			unsigned fill;

			if (len < 0)
				break;
			fill = op->width > len ? op->width - (unsigned)len : 0;
			if (!op->left)
				pos = spaces(pos, fill);
			pos = put(pos, text, (size_t)len);
			if (op->left)
				pos = spaces(pos, fill);
		}
		if (k < nops) {
			pos = start;
			*deferred = 1;
			break;
		}
	}
	*done = i - first;
	return (size_t)(pos - out);
}

/* The layout of struct rf_op, checked by core/rowfmt.py against its own. */
EXPORT uint32_t rowfmt_op_size(void)
{
	return sizeof(struct rf_op);
}
