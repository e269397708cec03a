// SPDX-License-Identifier: GPL-2.0
/*
 * udpconnect - connect() calls on UDP sockets, with the destination (the
 * book's udpconnect.bt).  UDP has no handshake and no state change to trace,
 * so the call itself is the event.
 *
 * Variants: the book's kprobes on ip4_datagram_connect/ip6_datagram_connect
 * (the protocol's connect, given the socket and a kernel copy of the
 * address), and, where kprobes are missing, connect() from sys_enter (the
 * address read from user memory) to sys_exit (the fd walk: SOCK_DGRAM,
 * IPPROTO_UDP/UDPLITE).  Both report the call whatever its result, with the
 * local port the socket has once connect() bound it (inet_dgram_connect()
 * autobinds before the protocol's connect, where the kprobes fire);
 * AF_UNSPEC "connects" (disconnects) are not reported.
 */
#include "events.h"
#include "socklayer.h"

#define PT_IPPROTO_UDPLITE 136

struct udpconnect_event {
	__u64 ts_ns;
	__u64 cgroup_id;	/* the task's (filter.h labels) */
	__u32 pid;
	__u32 tid;
	__u32 netns;		/* the socket's (filter.h labels) */
	__u16 family;		/* of the destination */
	__u16 port;
	__u16 lport;		/* once connect() bound the socket */
	__u16 protocol;
	__u8 addr[16];
	char comm[TASK_COMM_LEN];
};

const volatile __u32 targ_tgid = 0;
const volatile __u16 rports[MAX_PORTS] = {};
const volatile __u32 n_rports = 0;

struct udpconnect_event _event_type = {};

static __always_inline int emit(const struct sock *sk, const struct pt_sockaddr *sa)
{
	struct udpconnect_event *e;
	__u16 proto;
	__u64 now;

	if (sa->family != AF_INET && sa->family != AF_INET6)
		return 0;
	if (BPF_CORE_READ(sk, sk_type) != SOCK_DGRAM)
		return 0;
	proto = BPF_CORE_READ(sk, sk_protocol);
	if (proto != IPPROTO_UDP && proto != PT_IPPROTO_UDPLITE)
		return 0;
	if (!port_allowed(rports, n_rports, sa->port))
		return 0;
	if (!pt_task_sk_wanted(sk))
		return 0;
	e = event_reserve(struct udpconnect_event);
	if (!e)
		return 0;
	now = bpf_ktime_get_ns();
	e->ts_ns = now;
	e->pid = bpf_get_current_pid_tgid() >> 32;
	e->tid = current_tid();
	e->cgroup_id = pt_task_cgroup_label();
	e->netns = pt_sk_netns_label(sk);
	e->family = sa->family;
	e->port = sa->port;
	e->lport = sk_sport(sk);
	e->protocol = proto;
	__builtin_memcpy(e->addr, sa->addr, 16);
	bpf_get_current_comm(e->comm, sizeof(e->comm));
	event_submit(e, now);
	return 0;
}

static __always_inline int from_kernel(const struct sock *sk, const void *uaddr)
{
	struct pt_sockaddr sa = {};

	if (!tgid_wanted(targ_tgid) || read_kernel_sockaddr(uaddr, &sa) < 0)
		return 0;
	return emit(sk, &sa);
}

SEC("kprobe/ip4_datagram_connect")
int BPF_KPROBE(udpconnect_kprobe_v4, struct sock *sk, struct sockaddr *uaddr)
{
	return from_kernel(sk, uaddr);
}

SEC("kprobe/ip6_datagram_connect")
int BPF_KPROBE(udpconnect_kprobe_v6, struct sock *sk, struct sockaddr *uaddr)
{
	return from_kernel(sk, uaddr);
}

CONNECT_CALLS(calls);

SEC("tracepoint/syscalls/sys_enter_connect")
int udpconnect_tracepoint(struct trace_event_raw_sys_enter *ctx)
{
	if (tgid_wanted(targ_tgid))
		connect_enter(&calls, ctx->args[0], (const void *)ctx->args[1]);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_connect")
int udpconnect_tracepoint_exit(struct trace_event_raw_sys_exit *ctx)
{
	__u32 tid = current_tid();
	struct connect_call *c = bpf_map_lookup_elem(&calls, &tid);
	struct sock *sk;

	if (!c)
		return 0;
	sk = fd_to_sock(c->fd);
	if (sk)
		emit(sk, &c->sa);
	bpf_map_delete_elem(&calls, &tid);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
