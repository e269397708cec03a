// SPDX-License-Identifier: GPL-2.0
/*
 * netsize - packet size histograms per network device, in the kernel, at
 * the four points of the book's netsize.bt:
 *
 *   recv      net:netif_receive_skb      received, after GRO merged segments
 *   send      net:net_dev_queue          sent, before GSO/TSO splits them
 *   nic_recv  net:napi_gro_receive_entry received as the NIC delivered them
 *                                        (NAPI devices only, before GRO)
 *   nic_send  net:net_dev_xmit           handed to the driver (still one
 *                                        super-packet where the device does TSO)
 *
 * so the gap between recv and nic_recv shows GRO at work, and between send
 * and the wire MTU, GSO/TSO.  Sizes are skb->len: the link-layer header is
 * included on transmit, not on receive (drivers pull it).
 *
 * Variants: tp_btf and raw_tp of those tracepoints.  (The classic
 * tracepoint of net_dev_xmit fires after the driver may have freed the skb,
 * so it cannot name the device's namespace.)
 */
#include "skbinfo.h"
#include "socklayer.h"		/* struct log2_hist, hist_add() */

enum { RECV = 0, SEND = 1, NIC_RECV = 2, NIC_SEND = 3 };

struct netsize_key {
	struct dev_id dev;
	__u32 kind;		/* RECV, SEND, NIC_RECV, NIC_SEND */
};

const volatile char targ_dev[PT_IFNAMSIZ] = {};
const volatile __u32 targ_netns = 0;

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, struct netsize_key);
	__type(value, struct log2_hist);
} hists SEC(".maps");

static __always_inline int account(const struct net_device *dev, __u32 kind, __u32 len)
{
	struct netsize_key key = {};

	dev_id_of(dev, &key.dev);
	if (!dev_wanted(targ_dev, targ_netns, &key.dev))
		return 0;
	key.kind = kind;
	hist_add(&hists, &key, len);
	return 0;
}

static __always_inline int of_skb(const struct sk_buff *skb, __u32 kind)
{
	return account(BPF_CORE_READ(skb, dev), kind, BPF_CORE_READ(skb, len));
}

TP_BTF_AND_RAW_TP("netif_receive_skb", netsize_tp_btf_recv, netsize_raw_tp_recv,
		  of_skb(skb, RECV),
		  struct sk_buff *skb)

TP_BTF_AND_RAW_TP("net_dev_queue", netsize_tp_btf_send, netsize_raw_tp_send,
		  of_skb(skb, SEND),
		  struct sk_buff *skb)

TP_BTF_AND_RAW_TP("napi_gro_receive_entry", netsize_tp_btf_nic_recv, netsize_raw_tp_nic_recv,
		  of_skb(skb, NIC_RECV),
		  struct sk_buff *skb)

/* net_dev_xmit(skb, rc, dev, skb_len): the skb may be gone; dev and skb_len are the tracepoint's own. */
TP_BTF_AND_RAW_TP("net_dev_xmit", netsize_tp_btf_nic_send, netsize_raw_tp_nic_send,
		  account(dev, NIC_SEND, len),
		  struct sk_buff *skb, int rc, struct net_device *dev, unsigned int len)

char LICENSE[] SEC("license") = "GPL";
