// SPDX-License-Identifier: GPL-2.0
/*
 * tcplife - one line per TCP socket when it closes: who owned it, its
 * addresses and ports, the payload bytes it sent and received, and how long
 * it lived.
 *
 * Hook: the sock:inet_sock_set_state tracepoint (what BCC and libbpf-tools
 * tcplife use), reached via tp_btf, raw_tp or the classic tracepoint
 * (sockstate.h); the Python side loads exactly one.  Per socket, one map
 * entry lives from the first early state (SYN_SENT, SYN_RECV, ESTABLISHED) to
 * CLOSE, and the only record sent to user space is the one at CLOSE.
 *
 * Bytes: tcp_sock->bytes_acked and ->bytes_received (RFC 4898 counters, the
 * ones TCP_INFO reports) count sequence space, and SYN and FIN each take one
 * sequence number.  What the application sent and received is what remains
 * after taking those out, which this program does exactly:
 *
 *  - bytes_acked is the sum of the advances of snd_una.  An active opener's
 *    snd_una starts at its ISN, so the ACK of its SYN adds 1; a passively
 *    opened child starts at ISN + 1 and never counts its SYN-ACK.  So: -1 if
 *    the socket opened actively (we saw SYN_SENT) and anything was acked.
 *  - Our FIN takes the sequence number write_seq had when the socket entered
 *    FIN_WAIT1 or LAST_ACK (the state is set just before the FIN is queued,
 *    in tcp_close_state()/tcp_send_fin()).  We remember that number; the FIN
 *    is in bytes_acked iff snd_una has moved past it by CLOSE.
 *  - bytes_received is the sum of the advances of rcv_nxt, which include the
 *    peer's FIN once it is taken in order; tcp_fin() marks the socket
 *    SOCK_DONE at that moment (and nothing else sets that flag on a TCP
 *    socket), so: -1 if SOCK_DONE.  The peer's SYN is never counted (rcv_nxt
 *    is set, not advanced, at the handshake).
 *
 * PID: a socket's state changes run partly in process context (connect,
 * close, shutdown) and partly in softirq, where the current task is whoever
 * happened to run.  The owner is cached at the changes only a system call
 * makes: ->SYN_SENT (connect), ->FIN_WAIT1 and ->LAST_ACK (close/shutdown),
 * and used at CLOSE, which is often in softirq.
 *
 * Whose (filter.h): the socket's cgroup and network namespace, judged at its
 * birth, so only the sockets reported take map space.
 */
#include "events.h"
#include "sockstate.h"
#include "filter.h"

struct tcplife_event {
	__u64 ts_ns;		/* CLOCK_MONOTONIC at close */
	__u64 span_us;		/* from the last early state (as BCC) to CLOSE */
	__u64 rx_b;		/* payload bytes received */
	__u64 tx_b;		/* payload bytes sent and acknowledged */
	__u64 cgroup_id;	/* the socket's (filter.h labels) */
	__u32 pid;
	__u32 netns;		/* the socket's (filter.h labels) */
	__u16 family;
	__u16 lport;
	__u16 rport;
	__u16 pad;
	__u8 saddr[16];
	__u8 daddr[16];
	char comm[TASK_COMM_LEN];
};

/* What we keep per socket between its birth and CLOSE. */
struct tcplife_conn {
	__u64 birth_ns;
	__u32 pid;
	__u32 fin_seq;		/* sequence number of our FIN (CONN_FIN_SENT) */
	__u32 flags;
	char comm[TASK_COMM_LEN];
};

#define CONN_ACTIVE 1		/* opened by connect(): the SYN is in bytes_acked */
#define CONN_FIN_SENT 2		/* fin_seq is valid */
#define CONN_HAVE_PID 4		/* pid/comm came from a system call */

/* Filters, set by the loader before load. */
const volatile __u16 target_family = 0;	/* 0: both */
const volatile __u32 target_pid = 0;	/* 0: all */
const volatile __u16 lports[MAX_PORTS] = {};
const volatile __u32 n_lports = 0;
const volatile __u16 rports[MAX_PORTS] = {};
const volatile __u32 n_rports = 0;

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	/* allocated on insert: see _PREALLOC_ONLY in core/barelibbpf.py */
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, __u64);
	__type(value, struct tcplife_conn);
} conns SEC(".maps");

/* Anchor the event type in BTF so user space can decode it. */
struct tcplife_event _event_type = {};

/* enum sock_flags has begun SOCK_DEAD, SOCK_DONE since Linux 2.6.  A constant,
 * not bpf_core_enum_value(): that relocation makes libbpf search the kernel's
 * whole BTF for the enum, ~0.6 ms of every start-up for a value that has
 * never moved. */
#define SOCK_DONE_BIT 1

static __always_inline void take_owner(struct tcplife_conn *c)
{
	c->pid = bpf_get_current_pid_tgid() >> 32;
	bpf_get_current_comm(c->comm, sizeof(c->comm));
	c->flags |= CONN_HAVE_PID;
}

static __always_inline int on_change(const struct sock_state_change *ch)
{
	const struct sock *sk = ch->sk;
	const struct tcp_sock *tp = (const struct tcp_sock *)sk;
	int oldstate = ch->oldstate, newstate = ch->newstate;
	__u16 family = ch->family, lport = ch->sport, rport = ch->dport;
	struct tcplife_conn *c;
	struct tcplife_event *e;
	__u64 key = (__u64)sk, now;
	__u64 tx, rx;

	/* The hot path: most changes need nothing from us. */
	switch (newstate) {
	case TCP_SYN_SENT:
	case TCP_SYN_RECV:
	case TCP_ESTABLISHED:
	case TCP_FIN_WAIT1:
	case TCP_LAST_ACK:
	case TCP_CLOSE:
		break;
	default:
		return 0;
	}

	if (newstate < TCP_FIN_WAIT1) {
		/* Birth (again): like BCC, the lifespan runs from the last
		 * early state.  Filters apply here, so only sockets we report
		 * take map space; a client's local port is still 0 at
		 * SYN_SENT, so with -L it is born at ESTABLISHED instead. */
		if (target_family && family != target_family)
			return 0;
		if (!port_allowed(lports, n_lports, lport) ||
		    !port_allowed(rports, n_rports, rport))
			return 0;
		if (!pt_sk_wanted(sk))
			return 0;
		now = bpf_ktime_get_ns();
		c = bpf_map_lookup_elem(&conns, &key);
		if (c) {
			c->birth_ns = now;
			if (oldstate == TCP_SYN_SENT)
				c->flags |= CONN_ACTIVE;
			return 0;
		}
		struct tcplife_conn fresh = { .birth_ns = now };

		if (newstate == TCP_SYN_SENT || oldstate == TCP_SYN_SENT)
			fresh.flags = CONN_ACTIVE;
		if (newstate == TCP_SYN_SENT)
			take_owner(&fresh);
		/* A full map means this session's record will never be sent:
		 * count it with the ring's losses, so it is not lost silently;
		 * once, at its first chance (ESTABLISHED tries again, and is the
		 * first chance only of a client that -L skipped at SYN_SENT). */
		if (bpf_map_update_elem(&conns, &key, &fresh, BPF_ANY) &&
		    (newstate != TCP_ESTABLISHED ||
		     (oldstate == TCP_SYN_SENT && n_lports)))
			__sync_fetch_and_add(&lost_events, 1);
		return 0;
	}

	c = bpf_map_lookup_elem(&conns, &key);
	if (!c)
		return 0;

	if (newstate != TCP_CLOSE) {
		/* FIN_WAIT1 / LAST_ACK: close() or shutdown() is running, and
		 * our FIN is about to take the sequence number write_seq. */
		take_owner(c);
		c->fin_seq = BPF_CORE_READ(tp, write_seq);
		c->flags |= CONN_FIN_SENT;
		return 0;
	}

	/* CLOSE: report and forget. */
	if (target_pid) {
		__u32 pid = (c->flags & CONN_HAVE_PID) ?
			c->pid : bpf_get_current_pid_tgid() >> 32;

		if (pid != target_pid)
			goto forget;
	}

	tx = BPF_CORE_READ(tp, bytes_acked);
	rx = BPF_CORE_READ(tp, bytes_received);
	if ((c->flags & CONN_ACTIVE) && tx)
		tx--;
	if ((c->flags & CONN_FIN_SENT) && tx &&
	    (__s32)(BPF_CORE_READ(tp, snd_una) - c->fin_seq) > 0)
		tx--;
	if ((BPF_CORE_READ(sk, __sk_common.skc_flags) & (1UL << SOCK_DONE_BIT)) && rx)
		rx--;

	now = bpf_ktime_get_ns();
	e = event_reserve(struct tcplife_event);
	if (!e)
		goto forget;
	e->ts_ns = now;
	e->span_us = (now - c->birth_ns) / 1000;
	e->rx_b = rx;
	e->tx_b = tx;
	e->family = family;
	e->lport = lport;
	e->rport = rport;
	e->pad = 0;
	e->cgroup_id = pt_sk_cgroup_label(sk);
	e->netns = pt_sk_netns_label(sk);
	if (c->flags & CONN_HAVE_PID) {
		e->pid = c->pid;
		__builtin_memcpy(e->comm, c->comm, sizeof(e->comm));
	} else {
		e->pid = bpf_get_current_pid_tgid() >> 32;
		bpf_get_current_comm(e->comm, sizeof(e->comm));
	}
	sock_state_addrs(ch, e->saddr, e->daddr);
	event_submit(e, now);
forget:
	bpf_map_delete_elem(&conns, &key);
	return 0;
}

/* tcplife_tp_btf, tcplife_raw_tp, tcplife_tracepoint */
SOCK_STATE_PROGRAMS(tcplife, on_change)

char LICENSE[] SEC("license") = "GPL";
