// SPDX-License-Identifier: GPL-2.0
/*
 * socksize - socket send and receive sizes as log2 histograms per process
 * and direction (the book's socksize.bt).
 *
 * Hooks: see SOCK_IO_PROGRAMS in socklayer.h.  The size is what the call
 * returned; failed calls (ret < 0) are left out, as in the book.
 */
#include "socklayer.h"

struct socksize_key {
	__u32 pid;
	__u32 dir;		/* IO_SEND, IO_RECV */
	char comm[TASK_COMM_LEN];
};

const volatile __u32 targ_tgid = 0;
const volatile bool per_pid = true;	/* false: by command name only */

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 10240);
	__type(key, struct socksize_key);
	__type(value, struct log2_hist);
} hists SEC(".maps");

static __always_inline int on_io(struct sock *sk, int dir, long ret)
{
	struct socksize_key key = {};

	if (ret < 0 || !pt_proc_wanted(targ_tgid))
		return 0;
	if (per_pid)
		key.pid = bpf_get_current_pid_tgid() >> 32;
	key.dir = dir;
	bpf_get_current_comm(key.comm, sizeof(key.comm));
	hist_add(&hists, &key, ret);
	return 0;
}

SOCK_IO_PROGRAMS(socksize)

char LICENSE[] SEC("license") = "GPL";
