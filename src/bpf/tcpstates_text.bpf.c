// SPDX-License-Identifier: GPL-2.0
/*
 * tcpstates_text - the CLI's text lines of tcpstates records, formatted in
 * the reader's context (see textfmt.h for why and how).  Loaded by
 * tools/tcpstates.py only for the plain text output (no -T/-t, no JSON);
 * its lines equal tools/tcpstates.py's CPython rows byte for byte:
 *
 *   %-16x %-7d %-16s %-Ws %-5d %-Ws %-5d %-11s -> %-11s %d.%03d
 *   skaddr pid comm laddr lport raddr rport old new ms.us
 *
 * with W the address width (15, or 39 for -w/-6).
 */
#include "textfmt.h"
#include "tcpstates.h"

const volatile __u32 addr_width = 15;

/* core/net.STATE_NAMES of states 0-15, 12 bytes each (NUL-padded but for
 * NEW_SYN_RECV, which fills its 12).  Not static: clang gives a static
 * array no BTF variable, and libbpf then rejects the .rodata section. */
const char state_names[16 * 12] =
	"0\0\0\0\0\0\0\0\0\0\0\0" "ESTABLISHED\0" "SYN_SENT\0\0\0\0" "SYN_RECV\0\0\0\0"
	"FIN_WAIT1\0\0\0" "FIN_WAIT2\0\0\0" "TIME_WAIT\0\0\0" "CLOSE\0\0\0\0\0\0\0"
	"CLOSE_WAIT\0\0" "LAST_ACK\0\0\0\0" "LISTEN\0\0\0\0\0\0" "CLOSING\0\0\0\0\0"
	"NEW_SYN_RECV" "13\0\0\0\0\0\0\0\0\0\0" "14\0\0\0\0\0\0\0\0\0\0" "15\0\0\0\0\0\0\0\0\0\0";

/* A field of at least width bytes (width <= max), then one space. */
#define FIELD(put, width, max)                                                \
	do {                                                                  \
		__u32 start = pos;                                            \
		put_blank(buf, start, max);                                   \
		pos = put;                                                    \
		pos = put_c(buf, pad_to(start, pos, width), ' ');             \
	} while (0)

static __always_inline __u32 format(const struct tcpstates_event *e, char *buf, __u32 pos)
{
	if (check_ascii(e->comm, TASK_COMM_LEN))
		return TEXT_REFUSED;
	FIELD(put_hex(buf, pos, e->skaddr), 16, 16);
	FIELD(put_udec(buf, pos, e->pid), 7, 7);
	FIELD(put_str(buf, pos, e->comm, TASK_COMM_LEN), 16, 16);
	FIELD(put_addr(buf, pos, e->family, e->saddr), addr_width, 39);
	FIELD(put_udec(buf, pos, e->sport), 5, 5);
	FIELD(put_addr(buf, pos, e->family, e->daddr), addr_width, 39);
	FIELD(put_udec(buf, pos, e->dport), 5, 5);
	FIELD(put_str(buf, pos, state_names + (e->oldstate & 15) * 12, 12), 11, 11);
	pos = put_c(buf, pos, '-');
	pos = put_c(buf, pos, '>');
	pos = put_c(buf, pos, ' ');
	FIELD(put_str(buf, pos, state_names + (e->newstate & 15) * 12, 12), 11, 11);
	pos = put_udec(buf, pos, e->delta_us / 1000);
	pos = put_c(buf, pos, '.');
	pos = put_dec3(buf, pos, e->delta_us % 1000);
	return put_c(buf, pos, '\n');
}

/* tcpstates_text(struct text_args *) */
TEXT_PROGRAM(tcpstates_text, struct tcpstates_event, format)

char LICENSE[] SEC("license") = "GPL";
