/* SPDX-License-Identifier: GPL-2.0 */
/* tcplife.h - the tcplife record: written by tcplife.bpf.c, read by the CLI's
 * text formatter tcplife_text.bpf.c (and decoded by Python from BTF). */
#ifndef __PYTRACE_TCPLIFE_H
#define __PYTRACE_TCPLIFE_H

#include "pytrace.h"

struct tcplife_event {
	__u64 ts_ns;		/* CLOCK_MONOTONIC at close */
	__u64 span_us;		/* from the last early state (as BCC) to CLOSE */
	__u64 rx_b;		/* payload bytes received */
	__u64 tx_b;		/* payload bytes sent and acknowledged */
	__u32 pid;
	__u16 family;
	__u16 lport;
	__u16 rport;
	__u16 pad;
	__u8 saddr[16];
	__u8 daddr[16];
	char comm[TASK_COMM_LEN];
};

#endif /* __PYTRACE_TCPLIFE_H */
