// SPDX-License-Identifier: GPL-2.0
/*
 * qdisclat - queueing latency in the queueing disciplines: from a packet's
 * enqueue (qdisc:qdisc_enqueue) to its dequeue (qdisc:qdisc_dequeue, same
 * skb), as a histogram per qdisc (kind and handle) and device, in the
 * kernel.  The book's qdisc-fq.bt, qdisc-cbq.bt, ... do this per qdisc kind
 * with kprobes on <kind>_enqueue/<kind>_dequeue; these two tracepoints
 * (Linux 5.15) cover every kind at once.
 *
 * Not seen: packets that bypass the queue (a work-conserving qdisc such as
 * pfifo_fast with an empty queue sends at once, without enqueue/dequeue),
 * and devices without a qdisc (noqueue: veth and lo by default).  A bulk
 * dequeue (several skbs at once, on a device with one tx queue) reports the
 * first skb and how many are chained to it through skb->next: each is
 * counted, up to BULK_MAX (a longer chain's tail ages out of the LRU map).
 * Dequeue attempts that found nothing (skb NULL) are skipped.
 *
 * Variants: tp_btf, raw_tp and the classic tracepoints.
 */
#include "skbinfo.h"
#include "socklayer.h"		/* struct log2_hist, hist_add() */

#define QDISC_KIND_LEN 16
#define BULK_MAX 64		/* skbs of one bulk dequeue followed */

struct qdisc_id {
	char kind[QDISC_KIND_LEN];	/* qdisc->ops->id: "tbf", "fq_codel", ... */
	__u32 handle;			/* major:minor, as tc shows it */
	__u32 parent;
	struct dev_id dev;
};

struct enqueued {
	__u64 ts_ns;
	struct qdisc_id q;
};

const volatile char targ_dev[PT_IFNAMSIZ] = {};
const volatile __u32 targ_netns = 0;
const volatile bool targ_ns = false;	/* nanoseconds, not microseconds */

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, struct enqueued);
} queued SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, struct qdisc_id);
	__type(value, struct log2_hist);
} hists SEC(".maps");

static __always_inline int enqueue(const struct Qdisc *qdisc, const struct netdev_queue *txq,
				   const void *skb)
{
	struct enqueued e = {};
	__u64 key = (__u64)skb;
	const struct Qdisc_ops *ops;

	dev_id_of(BPF_CORE_READ(txq, dev), &e.q.dev);
	if (!dev_wanted(targ_dev, targ_netns, &e.q.dev))
		return 0;
	ops = BPF_CORE_READ(qdisc, ops);
	if (ops)
		bpf_probe_read_kernel_str(e.q.kind, sizeof(e.q.kind), ops->id);
	e.q.handle = BPF_CORE_READ(qdisc, handle);
	e.q.parent = BPF_CORE_READ(qdisc, parent);
	e.ts_ns = bpf_ktime_get_ns();
	bpf_map_update_elem(&queued, &key, &e, BPF_ANY);
	return 0;
}

static __always_inline int dequeue(const void *skb)
{
	__u64 key = (__u64)skb, delta;
	struct enqueued *e;

	if (!skb)
		return 0;
	e = bpf_map_lookup_elem(&queued, &key);
	if (!e)
		return 0;
	delta = bpf_ktime_get_ns() - e->ts_ns;
	hist_add(&hists, &e->q, targ_ns ? delta : delta / 1000);
	bpf_map_delete_elem(&queued, &key);
	return 0;
}

/* Every skb of a (bulk) dequeue: packets of them, chained by skb->next. */
static __always_inline int dequeue_all(const struct sk_buff *skb, int packets)
{
	for (int i = 0; i < BULK_MAX && i < packets && skb; i++) {
		dequeue(skb);
		skb = BPF_CORE_READ(skb, next);
	}
	return 0;
}

TP_BTF_AND_RAW_TP("qdisc_enqueue", qdisclat_tp_btf_enqueue, qdisclat_raw_tp_enqueue,
		  enqueue(qdisc, txq, skb),
		  struct Qdisc *qdisc, const struct netdev_queue *txq, struct sk_buff *skb)

TP_BTF_AND_RAW_TP("qdisc_dequeue", qdisclat_tp_btf_dequeue, qdisclat_raw_tp_dequeue,
		  dequeue_all(skb, packets),
		  struct Qdisc *qdisc, const struct netdev_queue *txq, int packets, struct sk_buff *skb)

SEC("tracepoint/qdisc/qdisc_enqueue")
int qdisclat_tracepoint_enqueue(struct trace_event_raw_qdisc_enqueue *ctx)
{
	return enqueue(ctx->qdisc, ctx->txq, ctx->skbaddr);
}

SEC("tracepoint/qdisc/qdisc_dequeue")
int qdisclat_tracepoint_dequeue(struct trace_event_raw_qdisc_dequeue *ctx)
{
	return dequeue_all(ctx->skbaddr, ctx->packets);
}

char LICENSE[] SEC("license") = "GPL";
