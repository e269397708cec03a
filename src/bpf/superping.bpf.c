// SPDX-License-Identifier: GPL-2.0
/*
 * superping - ICMP echo (ping) latency measured in the kernel, IPv4 and IPv6:
 * from the echo request leaving to its echo reply arriving, so user-space
 * scheduling of the ping process is not part of it.
 *
 * Variants, best first:
 *  - kprobe: __ip_local_out / ip6_send_skb (request out of the IP layer)
 *    and icmp_rcv / icmpv6_rcv (reply in), as the book's superping.bt, but
 *    for IPv4 one call further in: ip_send_skb() is inlined into
 *    ip_push_pending_frames() on some builds (Debian's 6.1), where ping
 *    sockets send, and a kprobe on it never sees a ping there;
 *  - tp_btf / raw_tp: net_dev_queue (request handed to the device) and
 *    netif_receive_skb (reply off the device).  This is measured at device
 *    level, so it excludes the local IP stack and includes the qdisc.
 *
 * One ping is one round trip: the request is remembered where it leaves a
 * socket (skb->sk set: the namespace that sent it), on the first device it
 * is queued to there (a bridge's port after the bridge is the same skb).  On
 * its way through other namespaces (veth pairs, a router, a bridge, VXLAN)
 * the device-level hooks see it again, without a socket: with all_crossings
 * each of those is remembered too, keyed by its namespace, and its reply
 * there is reported as a crossing (crossing = true), inner hops first.
 *
 * Requests are remembered by (netns, family, id, seq, pinged address), so
 * pings from different namespaces or to different hosts cannot be confused;
 * the reply is matched on its source address.  The pinging task (pid, comm)
 * is taken at the request, which is sent in its context.
 */
#include "events.h"
#include "skbinfo.h"
#include "filter.h"

#define ICMP_ECHOREPLY_ 0
#define ICMP_ECHO_ 8
#define ICMPV6_ECHO_REQUEST_ 128
#define ICMPV6_ECHO_REPLY_ 129

struct superping_event {
	__u64 ts_ns;		/* reply seen */
	__u64 latency_ns;
	__u64 cgroup_id;	/* the sender's (filter.h labels) */
	__u32 netns;
	__u32 pid;		/* sender of the request */
	__u16 family;
	__u16 id;		/* host order */
	__u16 seq;
	bool crossing;		/* a namespace the request crossed, not the one that sent it */
	__u8 pad;
	__u8 saddr[16];		/* request source (this host) */
	__u8 daddr[16];		/* request destination (the pinged host) */
	char comm[TASK_COMM_LEN];
};

struct ping_key {
	__u32 netns;
	__u16 family;
	__u16 id;		/* network order, as on the wire */
	__u16 seq;
	__u16 pad;
	__u8 peer[16];
};

struct ping_start {
	__u64 ts_ns;
	__u64 skb;		/* the request's skb where it was first queued */
	__u64 cgroup_id;
	__u32 pid;
	bool crossing;
	__u8 pad[3];
	__u8 local[16];
	char comm[TASK_COMM_LEN];
};

const volatile __u32 targ_tgid = 0;	/* -p: requests of this process only */
const volatile __u16 target_family = 0;
const volatile bool all_crossings = false;	/* -w: every namespace crossing, not only the round trip */

/* LRU: a request never answered must not stay forever. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct ping_key);
	__type(value, struct ping_start);
} requests SEC(".maps");

struct superping_event _event_type = {};

/*
 * Is the packet at nh an echo request (dir 0) or reply (dir 1)?  Fills the
 * key (with peer = the remote end) and the IP facts; false if not.
 */
static __always_inline bool echo_at(const unsigned char *nh, int want_reply, __u32 netns,
				    struct ping_key *key, struct pkt_ip *ip)
{
	struct { __u8 type, code; __u16 csum; __be16 id, seq; } icmp;
	__u8 want;

	if (!ip_header_at(nh, ip))
		return false;
	if (target_family && ip->family != target_family)
		return false;
	if (ip->family == AF_INET) {
		if (ip->proto != PT_IPPROTO_ICMP)
			return false;
		want = want_reply ? ICMP_ECHOREPLY_ : ICMP_ECHO_;
	} else {
		if (ip->proto != PT_IPPROTO_ICMPV6)
			return false;
		want = want_reply ? ICMPV6_ECHO_REPLY_ : ICMPV6_ECHO_REQUEST_;
	}
	if (bpf_probe_read_kernel(&icmp, sizeof(icmp), nh + ip->l4off) || icmp.type != want ||
	    icmp.code != 0)
		return false;
	key->netns = netns;
	key->family = ip->family;
	key->id = icmp.id;
	key->seq = icmp.seq;
	__builtin_memcpy(key->peer, want_reply ? ip->saddr : ip->daddr, 16);
	return true;
}

static __always_inline int request_out(const struct sk_buff *skb)
{
	struct ping_key key = {};
	struct ping_start st = {}, *seen;
	struct pkt_ip ip;
	__u64 id = bpf_get_current_pid_tgid();
	bool sent_here = BPF_CORE_READ(skb, sk) != NULL;

	if (targ_tgid && (id >> 32) != targ_tgid)
		return 0;
	if (!sent_here && !all_crossings)
		return 0;
	if (!echo_at(skb_nh(skb), 0, skb_netns(skb, NULL), &key, &ip))
		return 0;
	if (!pt_task_wanted())		/* the sender's cgroup and namespaces */
		return 0;
	/* the same packet queued to a further device of this namespace (a bridge, then its port) */
	seen = bpf_map_lookup_elem(&requests, &key);
	if (seen && seen->skb == (__u64)(unsigned long)skb)
		return 0;
	st.ts_ns = bpf_ktime_get_ns();
	st.skb = (__u64)(unsigned long)skb;
	st.crossing = !sent_here;
	st.cgroup_id = pt_task_cgroup_label();
	st.pid = id >> 32;
	__builtin_memcpy(st.local, ip.saddr, 16);
	bpf_get_current_comm(st.comm, sizeof(st.comm));
	bpf_map_update_elem(&requests, &key, &st, BPF_ANY);
	return 0;
}

static __always_inline int reply_in(const struct sk_buff *skb, const unsigned char *nh)
{
	struct ping_key key = {};
	struct ping_start *st;
	struct superping_event *e;
	struct pkt_ip ip;
	__u64 now;

	if (!echo_at(nh, 1, skb_netns(skb, NULL), &key, &ip))
		return 0;
	st = bpf_map_lookup_elem(&requests, &key);
	if (!st)
		return 0;
	now = bpf_ktime_get_ns();
	e = event_reserve(struct superping_event);
	if (e) {
		e->ts_ns = now;
		e->latency_ns = now - st->ts_ns;
		e->netns = key.netns;
		e->cgroup_id = st->cgroup_id;
		e->pid = st->pid;
		e->family = key.family;
		e->id = bpf_ntohs(key.id);
		e->seq = bpf_ntohs(key.seq);
		e->crossing = st->crossing;
		e->pad = 0;
		__builtin_memcpy(e->saddr, st->local, 16);
		__builtin_memcpy(e->daddr, key.peer, 16);
		__builtin_memcpy(e->comm, st->comm, sizeof(e->comm));
		event_submit(e, now);
	}
	bpf_map_delete_elem(&requests, &key);
	return 0;
}

/* -- kprobe: the IP layer, as the book's tool ---------------------------------- */

SEC("kprobe/__ip_local_out")
int BPF_KPROBE(superping_kprobe_ip_send, struct net *net, struct sock *sk, struct sk_buff *skb)
{
	return request_out(skb);
}

SEC("kprobe/ip6_send_skb")
int BPF_KPROBE(superping_kprobe_ip6_send, struct sk_buff *skb)
{
	return request_out(skb);
}

SEC("kprobe/icmp_rcv")
int BPF_KPROBE(superping_kprobe_icmp_rcv, struct sk_buff *skb)
{
	return reply_in(skb, skb_nh(skb));
}

SEC("kprobe/icmpv6_rcv")
int BPF_KPROBE(superping_kprobe_icmpv6_rcv, struct sk_buff *skb)
{
	return reply_in(skb, skb_nh(skb));
}

/* -- device level: tp_btf and raw_tp --------------------------------------------- */

TP_BTF_AND_RAW_TP("net_dev_queue", superping_tp_btf_queue, superping_raw_tp_queue,
		  request_out(skb),
		  struct sk_buff *skb)

TP_BTF_AND_RAW_TP("netif_receive_skb", superping_tp_btf_receive, superping_raw_tp_receive,
		  reply_in(skb, skb_rx_nh(skb)),
		  struct sk_buff *skb)

char LICENSE[] SEC("license") = "GPL";
