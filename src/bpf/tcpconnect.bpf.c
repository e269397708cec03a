// SPDX-License-Identifier: GPL-2.0
/*
 * tcpconnect - active TCP connects with the task that made them, printed when
 * they are made (as BCC), and how they ended: connected, refused, timed out,
 * aborted.  Optionally UDP connect()s (--udp) and the DNS answers that named
 * the addresses connected to (-d).
 *
 * Each attempt gives two records (phase):
 *   CONNECT  when connect() sends the SYN: the moment BCC prints it, with the
 *            local port chosen.  -c counts these, so attempts still pending
 *            at Ctrl-C are counted.
 *   RESULT   when its outcome is known (SYN_SENT -> ESTABLISHED or CLOSE),
 *            with the task remembered at its start (conntrack.h).
 *
 *  kprobe      start: kprobe tcp_v4_connect/tcp_v6_connect (BCC's hook);
 *              CONNECT: their kretprobe (a failed call is never printed,
 *              as in BCC); outcome: raw_tp inet_sock_set_state.
 *  tp_btf      start and outcome: inet_sock_set_state (CLOSE->SYN_SENT runs
 *              inside connect(), before the local port is chosen); CONNECT:
 *              the SYN queued to a device (net:net_dev_queue, whose skb->sk
 *              is the connecting socket; skipped at once while no connect is
 *              waiting to be announced), or the outcome, whichever is first.
 *  tracepoint  the same through the classic tracepoints.
 *
 * A failed attempt carries the socket's sk_err, which tcp_done_with_error()
 * sets before the change to CLOSE: ECONNREFUSED for a RST, ETIMEDOUT (or an
 * ICMP error) when the SYNs went unanswered; 0 when the socket was closed
 * before the handshake finished.  An attempt that ends in connect() itself
 * before any SYN left (no local port free) is not reported, as in BCC.  UDP
 * connect()s (--udp) come from the connect syscall tracepoints, with the
 * fd -> socket walk (sockfd.h): CONNECT and RESULT at once.
 *
 * -d: UDP datagrams from port 53 are copied (up to 512 bytes) into the
 * dns_events ring as they are received (net:netif_receive_skb, only loaded
 * with -d); user space parses the answers and fills query/query_age_us of
 * the records that connect to an address they named (the kernel leaves them
 * zero).
 *
 * Whose connects (filter.h): the task's cgroup and namespaces, at the start.
 *
 * With do_count set, CONNECTs are counted per (saddr, daddr, dport) in the
 * counts map instead of streamed.
 */
#include "events.h"
#include "socklayer.h"
#include "conntrack.h"

#define PHASE_CONNECT 1
#define PHASE_RESULT 2
#define QUERY_LEN 80
#define DNS_MAX 512

struct tcpconnect_event {
	__u64 ts_ns;		/* CONNECT: the SYN sent; RESULT: the outcome known */
	__u64 start_ns;		/* connect() */
	__u64 cgroup_id;	/* the connecting task's (filter.h labels) */
	__u64 query_age_us;	/* -d: the DNS answer's age at connect() (user space) */
	__u32 pid;
	__u32 uid;
	__u32 netns;		/* the connecting task's (filter.h labels) */
	__s32 error;		/* errno the attempt failed with, 0 if none */
	__u16 family;
	__u16 sport;
	__u16 dport;
	__u8 proto;		/* IPPROTO_TCP, or IPPROTO_UDP */
	__u8 ok;		/* RESULT: 1 connected */
	__u8 phase;		/* PHASE_CONNECT or PHASE_RESULT */
	__u8 pad[3];
	__u8 saddr[16];
	__u8 daddr[16];
	char comm[TASK_COMM_LEN];
	char query[QUERY_LEN];	/* -d: the name the address answered (user space) */
};

/* -d: one UDP datagram from port 53, as received. */
struct tcpconnect_dns {
	__u64 ts_ns;
	__u32 len;		/* bytes of payload kept */
	__u32 pad;
	__u8 payload[DNS_MAX];
};

/* Count mode key (-c); sport stays 0 unless count_sport (-s). */
struct tcpconnect_key {
	__u8 saddr[16];
	__u8 daddr[16];
	__u16 family;
	__u16 dport;
	__u16 sport;
	__u8 proto;
	__u8 pad;
};

/* The socket side of one attempt. */
struct conn_tuple {
	__u8 saddr[16];
	__u8 daddr[16];
	__u16 family;
	__u16 sport;
	__u16 dport;
	__u8 proto;
};

const volatile __u32 filter_pid = 0;		/* -p */
const volatile __u32 filter_uid = 0xffffffff;	/* -u; all ones: any */
const volatile __u16 target_family = 0;		/* -4/-6 */
const volatile __u16 dports[MAX_PORTS] = {};	/* -P */
const volatile __u32 n_dports = 0;
const volatile bool do_count = false;		/* -c */
const volatile bool count_sport = false;	/* -s */

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 10240);
	__type(key, struct tcpconnect_key);
	__type(value, __u64);
} counts SEC(".maps");

/* UDP connect() in flight, by thread id: enter -> exit (socklayer.h). */
CONNECT_CALLS(udp_calls);

/* Connects begun and not yet announced (no CONNECT record yet), by socket. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, __u8);
} unannounced SEC(".maps");

/* How many entries unannounced holds (about: an LRU eviction is not
 * subtracted): net_dev_queue returns at once while it is 0. */
__u64 waiting = 0;

/* kprobe variant: the socket of the tcp_v4/v6_connect() in flight, by thread. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u32);
	__type(value, __u64);
} connecting SEC(".maps");

EVENT_RING(dns_events, 256 << 10);

struct tcpconnect_event _event_type = {};
struct tcpconnect_dns _dns_type = {};

static __always_inline bool task_wanted(void)
{
	if (!tgid_wanted(filter_pid) || !pt_task_wanted())
		return false;
	if (filter_uid != 0xffffffff &&
	    (__u32)bpf_get_current_uid_gid() != filter_uid)
		return false;
	return true;
}

/* A CONNECT or RESULT record (or, in count mode, a CONNECT counted). */
static __always_inline void report(const struct conn_start *st,
				   const struct conn_tuple *t, __u8 phase,
				   bool ok, int err)
{
	struct tcpconnect_event *e;
	__u64 now;

	if (target_family && t->family != target_family)
		return;
	if (!port_allowed(dports, n_dports, t->dport))
		return;

	if (do_count) {
		struct tcpconnect_key key = {};
		__u64 one = 1, *n;

		if (phase != PHASE_CONNECT)
			return;
		__builtin_memcpy(key.saddr, t->saddr, 16);
		__builtin_memcpy(key.daddr, t->daddr, 16);
		key.family = t->family;
		key.dport = t->dport;
		key.sport = count_sport ? t->sport : 0;
		key.proto = t->proto;
		n = bpf_map_lookup_elem(&counts, &key);
		if (n)
			__sync_fetch_and_add(n, 1);
		else
			bpf_map_update_elem(&counts, &key, &one, BPF_NOEXIST);
		return;
	}

	e = event_reserve(struct tcpconnect_event);
	if (!e)
		return;
	now = bpf_ktime_get_ns();
	e->ts_ns = now;
	e->start_ns = st->ts_ns;
	e->query_age_us = 0;
	e->pid = st->pid;
	e->uid = st->uid;
	e->cgroup_id = st->cgroup_id;
	e->netns = st->netns;
	e->error = err;
	e->family = t->family;
	e->sport = t->sport;
	e->dport = t->dport;
	e->proto = t->proto;
	e->ok = ok;
	e->phase = phase;
	e->pad[0] = e->pad[1] = e->pad[2] = 0;
	__builtin_memcpy(e->saddr, t->saddr, 16);
	__builtin_memcpy(e->daddr, t->daddr, 16);
	__builtin_memcpy(e->comm, st->comm, sizeof(e->comm));
	__builtin_memset(e->query, 0, sizeof(e->query));
	event_submit(e, now);
}

static __always_inline void sk_tuple(struct sock *sk, struct conn_tuple *t)
{
	t->family = BPF_CORE_READ(sk, __sk_common.skc_family);
	t->sport = sk_sport(sk);
	t->dport = sk_dport(sk);
	t->proto = IPPROTO_TCP;
	sk_read_addrs(sk, t->family, t->saddr, t->daddr);
}

/* Start following a connect of sk (conntrack.h), to be announced. */
static __always_inline void begin(struct sock *sk)
{
	__u64 key = (__u64)sk;
	__u8 one = 1;

	conn_begin(sk);
	if (!bpf_map_update_elem(&unannounced, &key, &one, BPF_NOEXIST))
		__sync_fetch_and_add(&waiting, 1);
}

/* The CONNECT record of sk, if its connect is waiting for one (once: the
 * delete decides which of two racing hooks reports it). */
static __always_inline void announce(struct sock *sk)
{
	struct conn_tuple t = {};
	struct conn_start *st;
	__u64 key = (__u64)sk;

	if (bpf_map_delete_elem(&unannounced, &key))
		return;
	__sync_fetch_and_add(&waiting, -1);
	st = bpf_map_lookup_elem(&conn_starts, &key);
	if (!st)
		return;
	sk_tuple(sk, &t);
	report(st, &t, PHASE_CONNECT, false, 0);
}

/* Forget a connect that will never be announced. */
static __always_inline void drop_unannounced(struct sock *sk)
{
	__u64 key = (__u64)sk;

	if (!bpf_map_delete_elem(&unannounced, &key))
		__sync_fetch_and_add(&waiting, -1);
}

/*
 * Every variant's state hook.  begin: take CLOSE->SYN_SENT as the start (the
 * kprobe variant starts in tcp_v4/v6_connect instead).
 */
static __always_inline int on_state(struct sock *sk, int oldstate,
				    int newstate, bool track_begin)
{
	struct conn_tuple t = {};
	struct conn_start st;
	__u64 key = (__u64)sk;
	__u16 family;
	int err = 0;

	if (oldstate == TCP_CLOSE && newstate == TCP_SYN_SENT) {
		if (track_begin && task_wanted() && sk_is_inet_tcp(sk, &family))
			begin(sk);
		return 0;
	}
	if (oldstate != TCP_SYN_SENT ||
	    (newstate != TCP_ESTABLISHED && newstate != TCP_CLOSE))
		return 0;
	if (newstate == TCP_CLOSE)
		err = BPF_CORE_READ(sk, sk_err);
	if (bpf_map_lookup_elem(&unannounced, &key)) {
		/* no SYN was seen leaving: announced now, unless connect()
		 * failed before sending any (closed, no error) */
		if (newstate == TCP_ESTABLISHED || err)
			announce(sk);
		else
			drop_unannounced(sk);
		if (!(newstate == TCP_ESTABLISHED || err)) {
			conn_take(sk, &st);
			return 0;
		}
	}
	if (!conn_take(sk, &st))
		return 0;
	sk_tuple(sk, &t);
	report(&st, &t, PHASE_RESULT, newstate == TCP_ESTABLISHED, err);
	return 0;
}

/* A packet queued to a device: the SYN of a connect waiting to be announced? */
static __always_inline int on_dev_queue(const struct sk_buff *skb)
{
	struct sock *sk;
	__u64 key;

	if (!waiting)
		return 0;
	sk = BPF_CORE_READ(skb, sk);
	if (!sk)
		return 0;
	key = (__u64)sk;
	if (bpf_map_lookup_elem(&unannounced, &key))
		announce(sk);
	return 0;
}

static __always_inline int connect_entry(struct sock *sk)
{
	__u32 tid = current_tid();
	__u64 skp = (__u64)sk;

	if (!task_wanted())
		return 0;
	begin(sk);
	bpf_map_update_elem(&connecting, &tid, &skp, BPF_ANY);
	return 0;
}

static __always_inline int connect_return(int ret)
{
	__u32 tid = current_tid();
	struct conn_start st;
	__u64 *skp = bpf_map_lookup_elem(&connecting, &tid);
	struct sock *sk;

	if (!skp)
		return 0;
	sk = (struct sock *)*skp;
	bpf_map_delete_elem(&connecting, &tid);
	if (ret == 0) {
		announce(sk);
	} else {		/* failed before any SYN: never printed (BCC) */
		drop_unannounced(sk);
		conn_take(sk, &st);
	}
	return 0;
}

SEC("kprobe/tcp_v4_connect")
int BPF_KPROBE(tcpconnect_kprobe_v4, struct sock *sk)
{
	return connect_entry(sk);
}

SEC("kprobe/tcp_v6_connect")
int BPF_KPROBE(tcpconnect_kprobe_v6, struct sock *sk)
{
	return connect_entry(sk);
}

SEC("kretprobe/tcp_v4_connect")
int BPF_KRETPROBE(tcpconnect_kretprobe_v4, int ret)
{
	return connect_return(ret);
}

SEC("kretprobe/tcp_v6_connect")
int BPF_KRETPROBE(tcpconnect_kretprobe_v6, int ret)
{
	return connect_return(ret);
}

SEC("raw_tp/inet_sock_set_state")
int BPF_PROG(tcpconnect_raw_tp, struct sock *sk, int oldstate, int newstate)
{
	return on_state(sk, oldstate, newstate, false);
}

SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(tcpconnect_tp_btf, struct sock *sk, int oldstate, int newstate)
{
	return on_state(sk, oldstate, newstate, true);
}

SEC("tp_btf/net_dev_queue")
int BPF_PROG(tcpconnect_tp_btf_syn, struct sk_buff *skb)
{
	return on_dev_queue(skb);
}

SEC("tracepoint/sock/inet_sock_set_state")
int tcpconnect_tracepoint(struct trace_event_raw_inet_sock_set_state *ctx)
{
	if (ctx->protocol != IPPROTO_TCP)
		return 0;
	return on_state((struct sock *)ctx->skaddr, ctx->oldstate,
			ctx->newstate, true);
}

SEC("tracepoint/net/net_dev_queue")
int tcpconnect_tracepoint_syn(struct trace_event_raw_net_dev_template *ctx)
{
	return on_dev_queue((const struct sk_buff *)ctx->skbaddr);
}

/* -- UDP (--udp) ------------------------------------------------------------ */

SEC("tracepoint/syscalls/sys_enter_connect")
int tcpconnect_udp_enter(struct trace_event_raw_sys_enter *ctx)
{
	int fd = (int)ctx->args[0];
	struct socket *sock;
	struct sock *sk;

	if (!task_wanted())
		return 0;
	sock = fd_to_socket(fd);
	if (!sock || BPF_CORE_READ(sock, type) != SOCK_DGRAM)
		return 0;
	sk = BPF_CORE_READ(sock, sk);
	if (!sk || BPF_CORE_READ(sk, sk_protocol) != IPPROTO_UDP)
		return 0;
	/* The destination as the caller gave it (on failure the socket may
	 * not hold it); AF_UNSPEC, a disconnect, is not kept. */
	connect_enter(&udp_calls, fd, (const void *)ctx->args[1]);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_connect")
int tcpconnect_udp_exit(struct trace_event_raw_sys_exit *ctx)
{
	struct conn_tuple t = {};
	struct conn_start st = {};
	struct connect_call *c;
	struct sock *sk;
	__u32 tid = current_tid();
	long ret = ctx->ret;
	__u16 skfamily;

	c = bpf_map_lookup_elem(&udp_calls, &tid);
	if (!c)
		return 0;
	sk = fd_to_sock(c->fd);
	if (sk) {
		skfamily = BPF_CORE_READ(sk, __sk_common.skc_family);
		if (ret == 0) {
			/* connected: the socket's own view is authoritative
			 * (e.g. a v4 destination on a v6 socket is v4-mapped) */
			t.family = skfamily;
			t.dport = sk_dport(sk);
			sk_read_addrs(sk, skfamily, t.saddr, t.daddr);
		} else {
			t.family = c->sa.family;
			t.dport = c->sa.port;
			__builtin_memcpy(t.daddr, c->sa.addr, 16);
			if (skfamily == c->sa.family) {
				__u8 ignored[16];

				sk_read_addrs(sk, skfamily, t.saddr, ignored);
			}
		}
		t.sport = sk_sport(sk);
		t.proto = IPPROTO_UDP;
		conn_start_now(&st);	/* UDP connects at once */
		report(&st, &t, PHASE_CONNECT, false, 0);
		report(&st, &t, PHASE_RESULT, ret == 0, ret < 0 ? -ret : 0);
	}
	bpf_map_delete_elem(&udp_calls, &tid);
	return 0;
}

/* -- DNS answers (-d) ---------------------------------------------------------- */

#define ETH_P_IP 0x0800
#define ETH_P_IPV6 0x86DD

/* A received UDP datagram from port 53: its payload into dns_events. */
static __always_inline int on_receive(const struct sk_buff *skb)
{
	unsigned char *data = BPF_CORE_READ(skb, data);
	__u16 proto = bpf_ntohs(BPF_CORE_READ(skb, protocol));
	struct tcpconnect_dns *e;
	struct udphdr uh;
	__u32 l4off, len;
	__u8 b0, next;

	if (proto == ETH_P_IP) {
		if (bpf_probe_read_kernel(&b0, 1, data) || (b0 >> 4) != 4)
			return 0;
		bpf_probe_read_kernel(&next, 1, data + 9);
		l4off = (b0 & 0xf) * 4;
	} else if (proto == ETH_P_IPV6) {
		bpf_probe_read_kernel(&next, 1, data + 6);
		l4off = 40;
	} else {
		return 0;
	}
	if (next != IPPROTO_UDP)
		return 0;
	if (bpf_probe_read_kernel(&uh, sizeof(uh), data + l4off) || uh.source != bpf_htons(53))
		return 0;
	len = bpf_ntohs(uh.len);
	if (len <= sizeof(uh))
		return 0;
	len -= sizeof(uh);
	if (len > DNS_MAX)
		len = DNS_MAX;
	e = bpf_ringbuf_reserve(&dns_events, sizeof(*e), 0);
	if (!e)
		return 0;
	e->ts_ns = bpf_ktime_get_ns();
	e->len = len;
	e->pad = 0;
	if (bpf_probe_read_kernel(e->payload, len & (DNS_MAX * 2 - 1), data + l4off + sizeof(uh)))
		e->len = 0;
	bpf_ringbuf_submit(e, 0);
	return 0;
}

SEC("raw_tp/netif_receive_skb")
int BPF_PROG(tcpconnect_dns_raw_tp, struct sk_buff *skb)
{
	return on_receive(skb);
}

SEC("tracepoint/net/netif_receive_skb")
int tcpconnect_dns_tracepoint(struct trace_event_raw_net_dev_template *ctx)
{
	return on_receive((const struct sk_buff *)ctx->skbaddr);
}

char LICENSE[] SEC("license") = "GPL";
