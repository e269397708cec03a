/* SPDX-License-Identifier: GPL-2.0 */
/* tcpstates.h - the tcpstates record: written by tcpstates.bpf.c, read by the
 * CLI's text formatter tcpstates_text.bpf.c (and decoded by Python from BTF). */
#ifndef __PYTRACE_TCPSTATES_H
#define __PYTRACE_TCPSTATES_H

#include "pytrace.h"

/* Widest fields first: no holes for the ring to carry. */
struct tcpstates_event {
	__u64 skaddr;
	__u64 ts_ns;
	__u64 delta_us;		/* time in oldstate; 0 for the first change seen */
	__u8 saddr[16];
	__u8 daddr[16];
	char comm[TASK_COMM_LEN];
	__u32 pid;
	__u16 family;
	__u16 sport;
	__u16 dport;
	__u8 oldstate;
	__u8 newstate;
};

#endif /* __PYTRACE_TCPSTATES_H */
