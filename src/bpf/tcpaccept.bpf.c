// SPDX-License-Identifier: GPL-2.0
/*
 * tcpaccept - TCP connections returned by accept(), with the accepting task.
 *
 *  kprobe      kretprobe inet_csk_accept (BCC): the new sock is its return
 *              value, in the accepting task.
 *  tracepoint  sys_exit_accept4 and sys_exit_accept: the new fd is the
 *              return value; its socket is found with the fd walk
 *              (sockfd.h).  The passive state changes run in softirq and
 *              know no task, so they cannot serve here.  accepts made
 *              through io_uring do not pass the syscall tracepoints.
 */
#include "events.h"
#include "sockfd.h"
#include "conntrack.h"

struct tcpaccept_event {
	__u64 ts_ns;
	__u64 cgroup_id;	/* the accepting task's (filter.h labels) */
	__u32 pid;
	__u32 netns;		/* the socket's (filter.h labels) */
	__u16 family;
	__u16 lport;
	__u16 rport;
	__u16 pad;
	__u8 laddr[16];
	__u8 raddr[16];
	char comm[TASK_COMM_LEN];
};

const volatile __u32 filter_pid = 0;		/* -p */
const volatile __u16 target_family = 0;		/* -4/-6 */
const volatile __u16 lports[MAX_PORTS] = {};	/* -P */
const volatile __u32 n_lports = 0;

struct tcpaccept_event _event_type = {};

static __always_inline int report(const struct sock *sk)
{
	struct tcpaccept_event *e;
	__u16 family, lport;
	__u64 now;

	if (!sk || !sk_is_inet_tcp(sk, &family))
		return 0;
	if (target_family && family != target_family)
		return 0;
	lport = BPF_CORE_READ(sk, __sk_common.skc_num);
	if (!port_allowed(lports, n_lports, lport))
		return 0;
	if (!pt_task_sk_wanted(sk))
		return 0;

	e = event_reserve(struct tcpaccept_event);
	if (!e)
		return 0;
	now = bpf_ktime_get_ns();
	e->ts_ns = now;
	e->pid = bpf_get_current_pid_tgid() >> 32;
	e->cgroup_id = pt_task_cgroup_label();
	e->netns = pt_sk_netns_label(sk);
	e->family = family;
	e->lport = lport;
	e->rport = sk_dport(sk);
	e->pad = 0;
	sk_read_addrs(sk, family, e->laddr, e->raddr);
	bpf_get_current_comm(e->comm, sizeof(e->comm));
	event_submit(e, now);
	return 0;
}

SEC("kretprobe/inet_csk_accept")
int BPF_KRETPROBE(tcpaccept_kretprobe, struct sock *newsk)
{
	if (!tgid_wanted(filter_pid))
		return 0;
	return report(newsk);
}

static __always_inline int on_exit(long ret)
{
	if (ret < 0 || !tgid_wanted(filter_pid))	/* EAGAIN and friends */
		return 0;
	return report(fd_to_sock(ret));
}

SEC("tracepoint/syscalls/sys_exit_accept4")
int tcpaccept_tp_accept4(struct trace_event_raw_sys_exit *ctx)
{
	return on_exit(ctx->ret);
}

SEC("tracepoint/syscalls/sys_exit_accept")
int tcpaccept_tp_accept(struct trace_event_raw_sys_exit *ctx)
{
	return on_exit(ctx->ret);
}

char LICENSE[] SEC("license") = "GPL";
