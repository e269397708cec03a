// SPDX-License-Identifier: GPL-2.0
/*
 * tcpnagle - how TCP's Nagle setting is used on the transmit path, and how
 * long data waits before it is sent, in the kernel.
 *
 * Two variants that do not measure the same thing:
 *
 *  kprobe (exact, the book's tcpnagle.bt): kprobe tcp_write_xmit counts its
 *  nonagle argument (ON, OFF, CORK, PUSH...); kretprobe sees whether it
 *  sent nothing while data was queued ("blocked"), and times each socket
 *  from the first blocked return to the next unblocked one.
 *
 *  sockops (an APPROXIMATION, for kernels without kprobes; Linux 6.15+):
 *  BPF TX timestamping.  Sockets that become established while it runs (in
 *  the watched cgroup) get SK_BPF_CB_TX_TIMESTAMPING; at each sendmsg
 *  (TSTAMP_SENDMSG_CB) the socket's nonagle setting is counted and the
 *  last skb of the send is marked for timestamps; then
 *    blocked   = sendmsg -> handed to the device queue (TSTAMP_SCHED_CB):
 *                the time the data was held by TCP (Nagle, cork, cwnd, rwnd)
 *    xmit      = device queue -> driver (TSTAMP_SND_SW_CB)
 *    acked     = driver -> acknowledged by the peer (TSTAMP_ACK_CB)
 *  keyed by socket and the skb's timestamp key (the sequence number of its
 *  last byte).  tcp_write_xmit's calls and return value are not seen, so
 *  this is not the original's "blocked" time; data appended to an skb still
 *  held re-keys it, and the earlier send is then not timed.
 */
#include "pytrace.h"
#include "socklayer.h"		/* count_key(), struct log2_hist, hist_add() */

#ifndef SOL_SOCKET
#define SOL_SOCKET 1
#endif

enum { H_BLOCKED = 0, H_XMIT = 1, H_ACKED = 2 };

const volatile __u32 targ_tgid = 0;	/* -p: sends (kprobe: calls) in this process's context */
const volatile bool targ_ms = false;

/* nonagle value -> calls (kprobe) or sends (sockops) */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64);
	__type(key, __u32);
	__type(value, __u64);
} nagle SEC(".maps");

/* H_* -> histogram */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 8);
	__type(key, __u32);
	__type(value, struct log2_hist);
} hists SEC(".maps");

static __always_inline void add_delay(__u32 which, __u64 delta_ns)
{
	hist_add(&hists, &which, targ_ms ? delta_ns / 1000000 : delta_ns / 1000);
}

static __always_inline bool tgid_ok(void)
{
	return !targ_tgid || (bpf_get_current_pid_tgid() >> 32) == targ_tgid;
}

/* -- kprobe: exact ---------------------------------------------------------------- */

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 10240);
	__type(key, __u32);		/* tid */
	__type(value, __u64);		/* sk */
} calls SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 10240);
	__type(key, __u64);		/* sk */
	__type(value, __u64);		/* first blocked return */
} blocked_since SEC(".maps");

SEC("kprobe/tcp_write_xmit")
int BPF_KPROBE(tcpnagle_kprobe, struct sock *sk, unsigned int mss_now, int nonagle)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid(), flags = nonagle;
	__u64 skp = (__u64)sk;

	if (!tgid_ok())
		return 0;
	count_key(&nagle, &flags);
	bpf_map_update_elem(&calls, &tid, &skp, BPF_ANY);
	return 0;
}

SEC("kretprobe/tcp_write_xmit")
int BPF_KRETPROBE(tcpnagle_kretprobe, long ret)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	__u64 *skp = bpf_map_lookup_elem(&calls, &tid), sk, now, *since;

	if (!skp)
		return 0;
	sk = *skp;
	bpf_map_delete_elem(&calls, &tid);
	now = bpf_ktime_get_ns();
	since = bpf_map_lookup_elem(&blocked_since, &sk);
	if (ret & 0xff) {		/* blocked: data queued, nothing in flight */
		if (!since)
			bpf_map_update_elem(&blocked_since, &sk, &now, BPF_NOEXIST);
	} else if (since) {
		add_delay(H_BLOCKED, now - *since);
		bpf_map_delete_elem(&blocked_since, &sk);
	}
	return 0;
}

/* -- sockops TX timestamping: the approximation ------------------------------------ */

/*
 * Weak: kernels before 6.2 and 6.15 lack these kfuncs, and libbpf resolves
 * the externs of the whole object at load, the kprobe variant's too; weak,
 * they resolve to nothing there and only the sockops program needs them.
 */
extern void *bpf_cast_to_kern_ctx(void *obj) __ksym __weak;
extern int bpf_sock_ops_enable_tx_tstamp(struct bpf_sock_ops_kern *skops, __u64 flags) __ksym __weak;

struct tx_key {
	__u64 sk;
	__u32 tskey;		/* skb_shinfo(skb)->tskey: sequence number of the skb's last byte */
	__u32 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);	/* skbs re-keyed or never acked age out */
	__uint(max_entries, 65536);
	__type(key, struct tx_key);
	__type(value, __u64);			/* time of the previous step */
} steps SEC(".maps");

static __always_inline bool tx_key_of(struct bpf_sock_ops_kern *kern, struct tx_key *key)
{
	struct sk_buff *skb = BPF_CORE_READ(kern, skb);
	const struct skb_shared_info *shinfo;

	if (!skb)
		return false;
	shinfo = (const void *)(BPF_CORE_READ(skb, head) + BPF_CORE_READ(skb, end));
	key->sk = (__u64)BPF_CORE_READ(kern, sk);
	key->tskey = BPF_CORE_READ(shinfo, tskey);
	key->pad = 0;
	return key->tskey != 0;
}

/* A timestamp step: add its delay to hist `which`, remember now for the next one. */
static __always_inline void step(struct bpf_sock_ops_kern *kern, __u32 which, bool last)
{
	struct tx_key key;
	__u64 *prev, now;

	if (!tx_key_of(kern, &key))
		return;
	prev = bpf_map_lookup_elem(&steps, &key);
	if (!prev)
		return;
	now = bpf_ktime_get_ns();
	add_delay(which, now - *prev);
	if (last)
		bpf_map_delete_elem(&steps, &key);
	else
		*prev = now;
}

SEC("sockops")
int tcpnagle_sockops(struct bpf_sock_ops *skops)
{
	struct bpf_sock_ops_kern *kern;
	struct tcp_sock *tp;
	struct tx_key key;
	__u32 flags;
	__u64 now;
	int on;

	switch (skops->op) {
	case BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB:
	case BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB:
		on = SK_BPF_CB_TX_TIMESTAMPING;
		bpf_setsockopt(skops, SOL_SOCKET, SK_BPF_CB_FLAGS, &on, sizeof(on));
		break;
	case BPF_SOCK_OPS_TSTAMP_SENDMSG_CB:
		if (!tgid_ok())
			break;
		kern = bpf_cast_to_kern_ctx(skops);
		tp = (struct tcp_sock *)BPF_CORE_READ(kern, sk);
		flags = BPF_CORE_READ_BITFIELD_PROBED(tp, nonagle);
		count_key(&nagle, &flags);
		if (bpf_sock_ops_enable_tx_tstamp(kern, 0) || !tx_key_of(kern, &key))
			break;
		now = bpf_ktime_get_ns();
		bpf_map_update_elem(&steps, &key, &now, BPF_ANY);
		break;
	case BPF_SOCK_OPS_TSTAMP_SCHED_CB:
		step(bpf_cast_to_kern_ctx(skops), H_BLOCKED, false);
		break;
	case BPF_SOCK_OPS_TSTAMP_SND_SW_CB:
		step(bpf_cast_to_kern_ctx(skops), H_XMIT, false);
		break;
	case BPF_SOCK_OPS_TSTAMP_ACK_CB:
		step(bpf_cast_to_kern_ctx(skops), H_ACKED, true);
		break;
	}
	return 1;
}

char LICENSE[] SEC("license") = "GPL";
