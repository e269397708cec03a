// SPDX-License-Identifier: GPL-2.0
/*
 * tcplife_text - the CLI's text lines of tcplife records in the default
 * columns, formatted in the reader's context (see textfmt.h for why and
 * how).  Loaded by tools/tcplife.py only for those (not -w, --csv, -T/-t or
 * --json); its lines equal tools/tcplife.py's CPython rows byte for byte:
 *
 *   %-5d %-10.10s %s%-15s %-5d %-15s %-5d %5d %5d %d.%02d
 *   pid comm ip laddr lport raddr rport tx_kb rx_kb ms
 *
 * with ip "" for IPv4 and IPv6 and "?" for any other family, and MS rounded
 * to hundredths.
 */
#include "textfmt.h"
#include "tcplife.h"

static __always_inline __u32 format(const struct tcplife_event *e, char *buf, __u32 pos)
{
	struct name16 comm;
	/* hundredths of a ms, rounded: (span_us + 5) / 10 without its overflow */
	__u64 hundredths = e->span_us / 10 + (e->span_us % 10 + 5) / 10;

	name16(&comm, e->comm);
	if (name16_check(&comm))
		return TEXT_REFUSED;
	FIELD(put_udec(buf, pos, e->pid), 5, 5);
	put_name16(buf, pos, &comm);			/* %-10.10s: its first 10 */
	pos = put_c(buf, text_sync(pos + 10), ' ');
	if (e->family != AF_INET && e->family != AF_INET6)
		pos = put_c(buf, pos, '?');
	FIELD(put_addr(buf, pos, e->family, e->saddr), 15, 39);
	FIELD(put_udec(buf, pos, e->lport), 5, 5);
	FIELD(put_addr(buf, pos, e->family, e->daddr), 15, 39);
	FIELD(put_udec(buf, pos, e->rport), 5, 5);
	pos = put_c(buf, put_udec_right(buf, pos, e->tx_b >> 10, 5), ' ');
	pos = put_c(buf, put_udec_right(buf, pos, e->rx_b >> 10, 5), ' ');
	pos = put_udec(buf, pos, hundredths / 100);
	pos = put_c(buf, pos, '.');
	pos = put_dec2(buf, pos, hundredths % 100);
	return put_c(buf, pos, '\n');
}

/* tcplife_text(struct text_args *) */
TEXT_PROGRAM(tcplife_text, struct tcplife_event, format)

char LICENSE[] SEC("license") = "GPL";
