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

/* core/net.STATE_NAMES of states 0-15 as "%-11s " prints them, space-padded
 * to 16 bytes (two word stores); NEW_SYN_RECV, the one name of 12, takes
 * one more byte.  Not static: see octet_text. */
const char state_text[16 * 16] =
	"0               " "ESTABLISHED     " "SYN_SENT        " "SYN_RECV        "
	"FIN_WAIT1       " "FIN_WAIT2       " "TIME_WAIT       " "CLOSE           "
	"CLOSE_WAIT      " "LAST_ACK        " "LISTEN          " "CLOSING         "
	"NEW_SYN_RECV    " "13              " "14              " "15              ";
#define NEW_SYN_RECV 12

static __always_inline __u32 put_state(char *buf, __u32 pos, __u8 state)
{
	const __u64 *t = (const __u64 *)(state_text + (state & 15) * 16);

	put_u64(buf, pos, t[0]);
	put_u64(buf, pos + 8, t[1]);
	return text_sync(pos + 12 + ((state & 15) == NEW_SYN_RECV));
}

static __always_inline __u32 format(const struct tcpstates_event *e, char *buf, __u32 pos)
{
	struct name16 comm;

	name16(&comm, e->comm);
	if (name16_check(&comm))
		return TEXT_REFUSED;
	FIELD(put_hex(buf, pos, e->skaddr), 16, 16);
	FIELD(put_udec(buf, pos, e->pid), 7, 7);
	pos = put_c(buf, put_name16(buf, pos, &comm), ' ');
	FIELD(put_addr(buf, pos, e->family, e->saddr), addr_width, 39);
	FIELD(put_udec(buf, pos, e->sport), 5, 5);
	FIELD(put_addr(buf, pos, e->family, e->daddr), addr_width, 39);
	FIELD(put_udec(buf, pos, e->dport), 5, 5);
	pos = put_state(buf, pos, e->oldstate);
	pos = put_c(buf, pos, '-');
	pos = put_c(buf, pos, '>');
	pos = put_c(buf, pos, ' ');
	pos = put_state(buf, pos, e->newstate);
	pos = put_udec(buf, pos, e->delta_us / 1000);
	pos = put_c(buf, pos, '.');
	pos = put_dec3(buf, pos, e->delta_us % 1000);
	return put_c(buf, pos, '\n');
}

/* tcpstates_text(struct text_args *) */
TEXT_PROGRAM(tcpstates_text, struct tcpstates_event, format)

char LICENSE[] SEC("license") = "GPL";
