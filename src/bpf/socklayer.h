/* SPDX-License-Identifier: GPL-2.0 */
/*
 * socklayer.h - what the socket-layer tools (sockstat, sofamily, soprotocol,
 * soconnect, soaccept, soconnlat, so1stbyte, socketio, socksize, sockrmem,
 * udpconnect) share.  They see sockets from the system-call side, where only
 * an fd and a user pointer are at hand:
 *
 *  - a struct sockaddr from user memory, as family / port / address;
 *  - the family, type and protocol of the socket behind an fd (sockfd.h walk);
 *  - connect() followed from sys_enter_connect to sys_exit_connect, per thread
 *    (the map is declared by each tool with CONNECT_CALLS(), so a tool that
 *    does not pair calls does not carry it);
 *  - counts and log2 histograms kept in hash maps, one per key.
 */
#ifndef __PYTRACE_SOCKLAYER_H
#define __PYTRACE_SOCKLAYER_H

#include "sockfd.h"
#include "filter.h"

#ifndef AF_UNSPEC
#define AF_UNSPEC 0
#endif
#ifndef SOCK_STREAM
#define SOCK_STREAM 1
#endif
#ifndef SOCK_DGRAM
#define SOCK_DGRAM 2
#endif
#ifndef EINPROGRESS
#define EINPROGRESS 115
#endif

/* A socket address as the tools report it: port in host order, v4 in addr[0..3]. */
struct pt_sockaddr {
	__u16 family;
	__u16 port;
	__u8 addr[16];
};

/*
 * Read a user struct sockaddr.  Returns its family (AF_INET and AF_INET6 are
 * decoded, other families leave port/addr zero), or -1 if unreadable.
 */
static __always_inline int read_user_sockaddr(const void *uaddr, struct pt_sockaddr *out)
{
	__u16 family = 0;

	if (!uaddr || bpf_probe_read_user(&family, sizeof(family), uaddr))
		return -1;
	out->family = family;
	if (family == AF_INET) {
		struct sockaddr_in sa = {};

		if (bpf_probe_read_user(&sa, sizeof(sa), uaddr))
			return -1;
		out->port = bpf_ntohs(sa.sin_port);
		__builtin_memcpy(out->addr, &sa.sin_addr, 4);
	} else if (family == AF_INET6) {
		struct sockaddr_in6 sa = {};

		if (bpf_probe_read_user(&sa, sizeof(sa), uaddr))
			return -1;
		out->port = bpf_ntohs(sa.sin6_port);
		__builtin_memcpy(out->addr, &sa.sin6_addr, 16);
	}
	return family;
}

/* The same from a kernel struct sockaddr (kprobe arguments). */
static __always_inline int read_kernel_sockaddr(const void *kaddr, struct pt_sockaddr *out)
{
	__u16 family = 0;

	if (!kaddr || bpf_probe_read_kernel(&family, sizeof(family), kaddr))
		return -1;
	out->family = family;
	if (family == AF_INET) {
		const struct sockaddr_in *sa = kaddr;

		out->port = bpf_ntohs(BPF_CORE_READ(sa, sin_port));
		bpf_probe_read_kernel(out->addr, 4, &sa->sin_addr);
	} else if (family == AF_INET6) {
		const struct sockaddr_in6 *sa = kaddr;

		out->port = bpf_ntohs(BPF_CORE_READ(sa, sin6_port));
		bpf_probe_read_kernel(out->addr, 16, &sa->sin6_addr);
	}
	return family;
}

/* The peer of a connected socket, from the socket itself. */
static __always_inline void sk_peer(const struct sock *sk, struct pt_sockaddr *out)
{
	__u8 local[16];

	out->family = BPF_CORE_READ(sk, __sk_common.skc_family);
	out->port = sk_dport(sk);
	if (out->family == AF_INET || out->family == AF_INET6)
		sk_read_addrs(sk, out->family, local, out->addr);
}

struct sock_info {
	__u16 family;
	__u16 type;		/* SOCK_STREAM, SOCK_DGRAM, ... */
	__u16 protocol;		/* IPPROTO_TCP, IPPROTO_UDP, ... */
	__u16 lport;		/* host order, 0 if none */
	char proto_name[16];	/* sk->sk_prot->name: "TCP", "UDPv6", "UNIX"... */
};

/* Facts about a socket, from its struct socket (may be NULL) and struct sock. */
static __always_inline void sock_facts(const struct socket *sock, const struct sock *sk,
				       struct sock_info *out)
{
	const struct proto *prot;

	if (sock)
		out->type = BPF_CORE_READ(sock, type);
	else
		out->type = BPF_CORE_READ(sk, sk_type);
	out->family = BPF_CORE_READ(sk, __sk_common.skc_family);
	out->protocol = BPF_CORE_READ(sk, sk_protocol);
	if (out->family == AF_INET || out->family == AF_INET6)
		out->lport = sk_sport(sk);
	prot = BPF_CORE_READ(sk, __sk_common.skc_prot);
	if (prot)
		bpf_probe_read_kernel_str(out->proto_name, sizeof(out->proto_name), prot->name);
}

/* The socket behind fd in the current task: false if fd is not a socket. */
static __always_inline bool fd_sock_info(int fd, struct sock_info *out)
{
	struct socket *sock = fd_to_socket(fd);
	struct sock *sk;

	if (!sock)
		return false;
	sk = BPF_CORE_READ(sock, sk);
	if (!sk)
		return false;
	sock_facts(sock, sk, out);
	return true;
}

/* Add 1 to the u64 count of key in a hash map. */
static __always_inline void count_key(void *map, const void *key)
{
	__u64 one = 1, *v = bpf_map_lookup_elem(map, key);

	if (v) {
		__sync_fetch_and_add(v, 1);
	} else if (bpf_map_update_elem(map, key, &one, BPF_NOEXIST)) {
		v = bpf_map_lookup_elem(map, key);	/* another CPU made it */
		if (v)
			__sync_fetch_and_add(v, 1);
	}
}

/* -- connect() from enter to exit ---------------------------------------------- */

struct connect_call {
	__u64 ts_ns;		/* sys_enter_connect */
	__s32 fd;
	__s32 ustack;		/* user stack id, if the tool keeps one */
	struct pt_sockaddr sa;	/* the address the caller passed */
};

/* Calls in flight by thread id; LRU so a thread killed mid-call cannot leak. */
#define CONNECT_CALLS(name)                                    \
	struct {                                               \
		__uint(type, BPF_MAP_TYPE_LRU_HASH);           \
		__uint(max_entries, 16384);                    \
		__type(key, __u32);                            \
		__type(value, struct connect_call);            \
	} name SEC(".maps")

/*
 * At sys_enter_connect: read the address the caller passed; record the call
 * if its family is IPv4 or IPv6 (the chapter's tools trace IP connects).
 * Returns the recorded call (in the map) or NULL.
 */
static __always_inline struct connect_call *connect_enter(void *calls, int fd, const void *uaddr)
{
	struct connect_call c = {};
	__u32 tid = current_tid();
	int family = read_user_sockaddr(uaddr, &c.sa);

	if (family != AF_INET && family != AF_INET6)
		return NULL;
	c.ts_ns = bpf_ktime_get_ns();
	c.fd = fd;
	c.ustack = -1;
	if (bpf_map_update_elem(calls, &tid, &c, BPF_ANY))
		return NULL;
	return bpf_map_lookup_elem(calls, &tid);
}

/* -- log2 histograms -------------------------------------------------------------- */

#define HIST_SLOTS 32

struct log2_hist {
	__u64 slots[HIST_SLOTS];
	__u64 count;
	__u64 sum;
};

static const struct log2_hist zero_log2_hist;

/* Add value v to the histogram of key in a hash map of struct log2_hist. */
static __always_inline void hist_add(void *hists, const void *key, __u64 v)
{
	struct log2_hist *h = bpf_map_lookup_elem(hists, key);
	__u32 slot;

	if (!h) {
		bpf_map_update_elem(hists, key, &zero_log2_hist, BPF_NOEXIST);
		h = bpf_map_lookup_elem(hists, key);
		if (!h)
			return;
	}
	slot = log2_slot(v);
	if (slot >= HIST_SLOTS)
		slot = HIST_SLOTS - 1;
	__sync_fetch_and_add(&h->slots[slot], 1);
	__sync_fetch_and_add(&h->count, 1);
	__sync_fetch_and_add(&h->sum, v);
}

/* -- socket sends and receives ------------------------------------------------ */

#define IO_SEND 0
#define IO_RECV 1

/*
 * SOCK_IO_PROGRAMS(tool) defines the programs of every hook variant that sees
 * socket sends and receives (socketio, socksize), calling the tool's
 *     static __always_inline int on_io(struct sock *sk, int dir, long ret)
 * with ret = bytes or -errno:
 *   tool_tp_btf_send/recv   tp_btf sock_send_length / sock_recv_length (6.3+)
 *   tool_tp_send/recv       the same tracepoints, classic
 *   tool_kprobe_<op> + tool_kretprobe_<op>
 *                           the family operations of SOCK_OPS_IO, for older
 *                           kernels (the socket is remembered per thread)
 * All fire once per call through sock_sendmsg()/sock_recvmsg(): every socket
 * send/receive system call, and kernel users of sockets (the kprobes: of IP
 * and Unix sockets).
 */
#define SOCK_IO_PROGRAMS(tool)                                                  \
	struct {                                                                \
		__uint(type, BPF_MAP_TYPE_LRU_HASH);                            \
		__uint(max_entries, 16384);                                     \
		__type(key, __u32);                                             \
		__type(value, __u64);                                           \
	} tool##_io_calls SEC(".maps");                                         \
                                                                                \
	SEC("tp_btf/sock_send_length")                                          \
	int BPF_PROG(tool##_tp_btf_send, struct sock *sk, int ret, int flags)   \
	{                                                                       \
		return on_io(sk, IO_SEND, ret);                                 \
	}                                                                       \
	SEC("tp_btf/sock_recv_length")                                          \
	int BPF_PROG(tool##_tp_btf_recv, struct sock *sk, int ret, int flags)   \
	{                                                                       \
		return on_io(sk, IO_RECV, ret);                                 \
	}                                                                       \
	SEC("tracepoint/sock/sock_send_length")                                 \
	int tool##_tp_send(struct trace_event_raw_sock_msg_length *ctx)         \
	{                                                                       \
		return on_io(ctx->sk, IO_SEND, ctx->ret);                       \
	}                                                                       \
	SEC("tracepoint/sock/sock_recv_length")                                 \
	int tool##_tp_recv(struct trace_event_raw_sock_msg_length *ctx)         \
	{                                                                       \
		return on_io(ctx->sk, IO_RECV, ctx->ret);                       \
	}                                                                       \
	static __always_inline int tool##_io_begin(struct socket *sock)         \
	{                                                                       \
		__u32 tid = current_tid();                                      \
		__u64 sk = (__u64)BPF_CORE_READ(sock, sk);                      \
                                                                                \
		if (sk)                                                         \
			bpf_map_update_elem(&tool##_io_calls, &tid, &sk, BPF_ANY); \
		return 0;                                                       \
	}                                                                       \
	static __always_inline int tool##_io_end(int dir, long ret)             \
	{                                                                       \
		__u32 tid = current_tid();                                      \
		__u64 *sk = bpf_map_lookup_elem(&tool##_io_calls, &tid);        \
                                                                                \
		if (!sk)                                                        \
			return 0;                                               \
		on_io((struct sock *)*sk, dir, ret);                            \
		bpf_map_delete_elem(&tool##_io_calls, &tid);                    \
		return 0;                                                       \
	}                                                                       \
	SOCK_OPS_IO(SOCK_OPS_IO_PAIR, tool)

/* a kprobe and a kretprobe on one family operation (SOCK_OPS_IO) */
#define SOCK_OPS_IO_PAIR(tool, fn, dir)                                         \
	SEC("kprobe/" #fn)                                                      \
	int BPF_KPROBE(tool##_kprobe_##fn, struct socket *sock)                 \
	{                                                                       \
		return tool##_io_begin(sock);                                   \
	}                                                                       \
	SEC("kretprobe/" #fn)                                                   \
	int BPF_KRETPROBE(tool##_kretprobe_##fn, int ret)                       \
	{                                                                       \
		return tool##_io_end(dir, ret);                                 \
	}

/*
 * The family operations the kprobe variants hook, for kernels before 6.3
 * (no sock:sock_send_length).  Not the book's sock_sendmsg(): some builds
 * inline it into __sys_sendto() (Debian's 6.1: a kprobe there never sees a
 * send() or sendto()), but the call through sock->ops is never inlined.
 * IP and Unix sockets; SOCK_OPS_IO(X, tool) expands X(tool, function, dir)
 * for each, and core/socklayer.py's SOCK_OPS_IO names the same functions.
 * unix_seqpacket_* call the dgram ones, so a call is counted once.
 */
#define SOCK_OPS_IO(X, tool)                                                    \
	X(tool, inet_sendmsg, IO_SEND) X(tool, inet6_sendmsg, IO_SEND)          \
	X(tool, unix_stream_sendmsg, IO_SEND) X(tool, unix_dgram_sendmsg, IO_SEND) \
	X(tool, inet_recvmsg, IO_RECV) X(tool, inet6_recvmsg, IO_RECV)          \
	X(tool, unix_stream_recvmsg, IO_RECV) X(tool, unix_dgram_recvmsg, IO_RECV)

#endif /* __PYTRACE_SOCKLAYER_H */
