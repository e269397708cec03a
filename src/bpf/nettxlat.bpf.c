// SPDX-License-Identifier: GPL-2.0
/*
 * nettxlat - network device transmit latency: from the packet being handed
 * to the driver (net:net_dev_start_xmit) to the driver freeing it after
 * transmission (skb:consume_skb on the same skb), as a histogram per device,
 * in the kernel (the book's nettxlat.bt, per device as nettxlat-dev.bt).
 *
 * A start is forgotten when the same skb is queued again (net:net_dev_queue)
 * so a recycled skb address never pairs with an old timestamp.  Virtual
 * devices with no transmit completion (veth, lo) hand the skb on instead:
 * it is consumed wherever the receiving side finishes with it, so their
 * numbers measure something else entirely.
 *
 * Variants: tp_btf, raw_tp and the classic tracepoints (the book's).
 */
#include "skbinfo.h"
#include "socklayer.h"		/* struct log2_hist, hist_add() */

struct xmit_start {
	__u64 ts_ns;
	struct dev_id dev;
};

const volatile char targ_dev[PT_IFNAMSIZ] = {};
const volatile __u32 targ_netns = 0;
const volatile bool targ_ns = false;	/* histograms in nanoseconds, not microseconds */

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);	/* skbs never consumed must not pile up */
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, struct xmit_start);
} starts SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, struct dev_id);
	__type(value, struct log2_hist);
} hists SEC(".maps");

static __always_inline int start_xmit(const void *skb, const struct dev_id *dev)
{
	struct xmit_start st = {};
	__u64 key = (__u64)skb;

	if (!dev_wanted(targ_dev, targ_netns, dev))
		return 0;
	st.ts_ns = bpf_ktime_get_ns();
	st.dev = *dev;
	bpf_map_update_elem(&starts, &key, &st, BPF_ANY);
	return 0;
}

static __always_inline int consumed(const void *skb)
{
	__u64 key = (__u64)skb, delta;
	struct xmit_start *st = bpf_map_lookup_elem(&starts, &key);

	if (!st)
		return 0;
	delta = bpf_ktime_get_ns() - st->ts_ns;
	hist_add(&hists, &st->dev, targ_ns ? delta : delta / 1000);
	bpf_map_delete_elem(&starts, &key);
	return 0;
}

static __always_inline int queued(const void *skb)
{
	__u64 key = (__u64)skb;

	bpf_map_delete_elem(&starts, &key);
	return 0;
}

static __always_inline int start_dev(const struct sk_buff *skb, const struct net_device *dev)
{
	struct dev_id id = {};

	dev_id_of(dev, &id);
	return start_xmit(skb, &id);
}

TP_BTF_AND_RAW_TP("net_dev_start_xmit", nettxlat_tp_btf_start, nettxlat_raw_tp_start,
		  start_dev(skb, dev),
		  const struct sk_buff *skb, const struct net_device *dev)

TP_BTF_AND_RAW_TP("consume_skb", nettxlat_tp_btf_consume, nettxlat_raw_tp_consume,
		  consumed(skb),
		  struct sk_buff *skb)

TP_BTF_AND_RAW_TP("net_dev_queue", nettxlat_tp_btf_queue, nettxlat_raw_tp_queue,
		  queued(skb),
		  struct sk_buff *skb)

/* Classic tracepoints: the name from the record, the namespace from the skb's device. */
SEC("tracepoint/net/net_dev_start_xmit")
int nettxlat_tracepoint_start(struct trace_event_raw_net_dev_start_xmit *ctx)
{
	const struct sk_buff *skb = ctx->skbaddr;
	struct dev_id id = {};

	tp_data_loc_str(ctx, ctx->__data_loc_name, id.name);
	id.netns = dev_netns(BPF_CORE_READ(skb, dev));
	return start_xmit(skb, &id);
}

SEC("tracepoint/skb/consume_skb")
int nettxlat_tracepoint_consume(struct trace_event_raw_consume_skb *ctx)
{
	return consumed(ctx->skbaddr);
}

SEC("tracepoint/net/net_dev_queue")
int nettxlat_tracepoint_queue(struct trace_event_raw_net_dev_template *ctx)
{
	return queued(ctx->skbaddr);
}

char LICENSE[] SEC("license") = "GPL";
