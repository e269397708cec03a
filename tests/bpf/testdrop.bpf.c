// SPDX-License-Identifier: GPL-2.0
/*
 * testdrop - test scaffolding, not a tool: a tc program that drops chosen
 * TCP data segments, to make real retransmissions (and drops) for the
 * tcpretrans/tcpdrop tests.  Loaded by tests/dropper.py.
 *
 * Attach it at the RECEIVER's ingress: a drop at the sender's own egress is
 * seen by TCP as a local transmit error and resent by the probe timer, not
 * as a retransmission (see HOOKS.md).
 *
 * It counts the segments that carry payload to port target_port (with
 * data_only off: every segment to it, pure ACKs too), lets the first `skip`
 * of them through, drops the next `count`, and lets the rest through.  The sequence numbers of the dropped segments are kept in .bss
 * so a test can name the exact segment that has to be retransmitted.
 */
#include "pytrace.h"

#define TC_ACT_OK 0
#define TC_ACT_SHOT 2
#define ETH_HLEN 14
#define ETH_P_IP 0x0800
#define ETH_P_IPV6 0x86DD
#define MAX_DROPS 16

const volatile __u16 target_port = 0;	/* destination port, host order */
const volatile __u32 skip = 0;
const volatile __u32 count = 0;
const volatile bool data_only = true;

__u32 seen = 0;				/* data segments to target_port */
__u32 dropped = 0;
__u32 dropped_seq[MAX_DROPS] = {};	/* host order */

SEC("tc")
int testdrop_ingress(struct __sk_buff *skb)
{
	__u16 proto = bpf_ntohs(skb->protocol);
	__u32 l4, payload, n;
	__u8 nexthdr;
	struct tcphdr th;

	if (proto == ETH_P_IP) {
		struct iphdr ip;

		if (bpf_skb_load_bytes(skb, ETH_HLEN, &ip, sizeof(ip)))
			return TC_ACT_OK;
		if (ip.protocol != IPPROTO_TCP)
			return TC_ACT_OK;
		l4 = ETH_HLEN + ip.ihl * 4;
		payload = bpf_ntohs(ip.tot_len) - ip.ihl * 4;
	} else if (proto == ETH_P_IPV6) {
		struct ipv6hdr ip6;

		if (bpf_skb_load_bytes(skb, ETH_HLEN, &ip6, sizeof(ip6)))
			return TC_ACT_OK;
		nexthdr = ip6.nexthdr;
		if (nexthdr != IPPROTO_TCP)
			return TC_ACT_OK;
		l4 = ETH_HLEN + sizeof(ip6);
		payload = bpf_ntohs(ip6.payload_len);
	} else {
		return TC_ACT_OK;
	}
	if (bpf_skb_load_bytes(skb, l4, &th, sizeof(th)))
		return TC_ACT_OK;
	if (bpf_ntohs(th.dest) != target_port)
		return TC_ACT_OK;
	if (data_only && payload <= th.doff * 4)
		return TC_ACT_OK;

	/* Plain increments (clang 14 cannot use an atomic add's result for
	 * the default CPU version): a test's one flow arrives in order. */
	n = seen++;
	if (n < skip || n >= skip + count)
		return TC_ACT_OK;
	n = dropped++;
	if (n < MAX_DROPS)
		dropped_seq[n] = bpf_ntohl(th.seq);
	return TC_ACT_SHOT;
}

char LICENSE[] SEC("license") = "GPL";

/*
 * Two programs for the loader's memory of refusals (tests/test_matrix.py):
 * one every verifier accepts, one every verifier refuses (a load through a
 * pointer made from a random number).
 */
SEC("tracepoint/sock/inet_sock_set_state")
int testdrop_accepted(void *ctx)
{
	return 0;
}

SEC("tracepoint/sock/inet_sock_set_state")
int testdrop_refused(void *ctx)
{
	__u64 *p = (__u64 *)(long)bpf_get_prandom_u32();

	return *p;
}

/*
 * An XDP program that passes everything: attached to a veth it gives the
 * device a NAPI context, which before 5.13 only XDP did (tests/test_netsize.py
 * needs napi_gro_receive_entry to fire).
 */
SEC("xdp")
int testdrop_xdp_pass(struct xdp_md *ctx)
{
	return XDP_PASS;
}
