// SPDX-License-Identifier: GPL-2.0
/*
 * testcount - test scaffolding, not a tool: an administrator's own tc
 * filters, to check that pytrace's tc programs coexist with them.  Loaded by
 * tests/test_tc_coexist.py and attached with plain bpf_tc_attach at the
 * priority and handle a test chooses (as a network plugin or an
 * administrator would), never through pytrace's core/netattach.
 *
 * Both programs count the IPv4 frames they see; testcount_ok then ends the
 * filter chain (TC_ACT_OK, what `tc ... action ok` does), testcount_pass lets
 * the filters after it run (TC_ACT_UNSPEC, `action continue`).
 */
#include "pytrace.h"

#define TC_ACT_UNSPEC (-1)
#define TC_ACT_OK 0
#define ETH_P_IP 0x0800

__u64 ok_frames = 0;
__u64 pass_frames = 0;

SEC("tc")
int testcount_ok(struct __sk_buff *skb)
{
	if (skb->protocol == bpf_htons(ETH_P_IP))
		__sync_fetch_and_add(&ok_frames, 1);
	return TC_ACT_OK;
}

SEC("tc")
int testcount_pass(struct __sk_buff *skb)
{
	if (skb->protocol == bpf_htons(ETH_P_IP))
		__sync_fetch_and_add(&pass_frames, 1);
	return TC_ACT_UNSPEC;
}

char LICENSE[] SEC("license") = "GPL";
