// SPDX-License-Identifier: GPL-2.0
/*
 * sockrmem - socket receive buffer fill: histograms of the memory queued on
 * a socket (sk_rmem_alloc) and of its limit (sk_rcvbuf) at each receive,
 * plus an event whenever a receive queue is full or a protocol exceeds its
 * memory limit (the book's sormem.bt).
 *
 * Variants: the book's kprobe on sock_recvmsg (the buffer as the receive
 * starts); where kprobes are missing, the receive system calls (read,
 * readv, recvfrom, recvmsg, recvmmsg) at entry with the fd -> socket walk,
 * which samples the same moment for receives made by system calls (not for
 * in-kernel socket users).  Events: sock:sock_rcvqueue_full and
 * sock:sock_exceed_buf_limit.  The first fires only where a protocol queues
 * through __sock_queue_rcv_skb (ping, raw, ...): UDP and TCP drop on their
 * own checks (see nstat UdpRcvbufErrors, TcpExtTCPRcvQDrop).
 */
#include "events.h"
#include "socklayer.h"

enum { H_RMEM_ALLOC, H_RMEM_LIMIT };
enum { EV_RCVQUEUE_FULL, EV_EXCEED_BUF_LIMIT };

struct sockrmem_event {
	__u64 ts_ns;
	__s64 allocated;	/* exceed_buf_limit: pages of the protocol */
	__u32 pid;		/* the current task, often not the socket's owner */
	__u32 kind;		/* EV_* */
	__s32 rmem_alloc;
	__s32 rcvbuf;		/* rcvqueue_full */
	__u32 truesize;		/* rcvqueue_full: the skb that did not fit */
	__s32 sysctl_rmem;	/* exceed_buf_limit */
	__s32 mem_kind;		/* exceed_buf_limit: 0 send, 1 receive */
	__u32 pad;
	char proto[32];		/* exceed_buf_limit */
	char comm[TASK_COMM_LEN];
};

const volatile __u32 targ_tgid = 0;

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, struct log2_hist);
} hists SEC(".maps");

struct sockrmem_event _event_type = {};

static __always_inline int sample(const struct sock *sk)
{
	__u32 k;

	if (!sk)
		return 0;
	k = H_RMEM_ALLOC;
	hist_add(&hists, &k, (__u32)BPF_CORE_READ(sk, sk_backlog.rmem_alloc.counter));
	k = H_RMEM_LIMIT;
	hist_add(&hists, &k, (__u32)BPF_CORE_READ(sk, sk_rcvbuf));
	return 0;
}

SEC("kprobe/sock_recvmsg")
int BPF_KPROBE(sockrmem_kprobe, struct socket *sock)
{
	if (!pt_proc_wanted(targ_tgid))
		return 0;
	return sample(BPF_CORE_READ(sock, sk));
}

static __always_inline int from_fd(int fd)
{
	if (!pt_proc_wanted(targ_tgid))
		return 0;
	return sample(fd_to_sock(fd));
}

#define RECV_ENTER(name)                                                       \
	SEC("tracepoint/syscalls/sys_enter_" #name)                            \
	int sockrmem_##name(struct trace_event_raw_sys_enter *ctx)             \
	{                                                                      \
		return from_fd(ctx->args[0]);                                  \
	}

RECV_ENTER(read)
RECV_ENTER(readv)
RECV_ENTER(recvfrom)
RECV_ENTER(recvmsg)
RECV_ENTER(recvmmsg)

/* The events' classic records name no socket, and they come from softirq:
 * whose they are is unknown, so none passes a filter (filter.h). */
static __always_inline struct sockrmem_event *new_event(__u32 kind)
{
	struct sockrmem_event *e;

	if (pt_on)		/* any filter (filter.h) */
		return NULL;
	e = event_reserve(struct sockrmem_event);
	if (!e)
		return NULL;
	__builtin_memset(e, 0, sizeof(*e));
	e->ts_ns = bpf_ktime_get_ns();
	e->pid = bpf_get_current_pid_tgid() >> 32;
	e->kind = kind;
	bpf_get_current_comm(e->comm, sizeof(e->comm));
	return e;
}

SEC("tracepoint/sock/sock_rcvqueue_full")
int sockrmem_rcvqueue_full(struct trace_event_raw_sock_rcvqueue_full *ctx)
{
	struct sockrmem_event *e = new_event(EV_RCVQUEUE_FULL);

	if (!e)
		return 0;
	e->rmem_alloc = ctx->rmem_alloc;
	e->rcvbuf = ctx->sk_rcvbuf;
	e->truesize = ctx->truesize;
	event_submit(e, e->ts_ns);
	return 0;
}

SEC("tracepoint/sock/sock_exceed_buf_limit")
int sockrmem_exceed_buf_limit(struct trace_event_raw_sock_exceed_buf_limit *ctx)
{
	struct sockrmem_event *e = new_event(EV_EXCEED_BUF_LIMIT);

	if (!e)
		return 0;
	e->rmem_alloc = ctx->rmem_alloc;
	e->allocated = ctx->allocated;
	e->sysctl_rmem = ctx->sysctl_rmem;
	e->mem_kind = ctx->kind;
	bpf_probe_read_kernel_str(e->proto, sizeof(e->proto), ctx->name);
	event_submit(e, e->ts_ns);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
