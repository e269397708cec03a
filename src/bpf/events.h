/* SPDX-License-Identifier: GPL-2.0 */
/* events.h - the event ring buffer shared by every event-streaming tool. */
#ifndef __PYTRACE_EVENTS_H
#define __PYTRACE_EVENTS_H

#include "pytrace.h"

/*
 * Event ring buffer with batched wakeups.
 *
 * The kernel's default ring-buffer policy wakes the reader whenever it has
 * caught up, which under a connection storm means one IRQ-work self-IPI per
 * event (very expensive on virtual machines).  Instead every record is
 * submitted with BPF_RB_NO_WAKEUP and the reader drains the ring on a short
 * timer (see core/ringbuf.py).  Two exceptions keep latency and loss bounded:
 *
 *  - the first record after an idle gap longer than rb_idle_ns wakes the
 *    reader at once, so a lone event is printed immediately;
 *  - a record that takes the unread data across a multiple of rb_wake_bytes
 *    wakes the reader, so a burst cannot overrun the ring between two timer
 *    ticks (once per crossing: never one wakeup per record).
 *
 * Reserve failures are counted in lost_events (.bss), which the reader maps
 * and reports: nothing is lost silently.
 */
const volatile __u64 rb_idle_ns = 5000000;
const volatile __u64 rb_wake_bytes = 1 << 20;

__u64 lost_events = 0;
__u64 last_event_ns = 0;

#define EVENT_RING(name, bytes)                                        \
	struct {                                                       \
		__uint(type, BPF_MAP_TYPE_RINGBUF);                    \
		__uint(max_entries, bytes);                            \
	} name SEC(".maps")

/* 8 MiB.  Head room matters more than the reader's speed: the kernel reads
 * the consumer position before it takes the ring's lock, so a producer that
 * is preempted (or whose vCPU is descheduled) in between compares against a
 * stale position and may find the ring "full".  The reader maps the data
 * once (core/ringbuf.py), so this costs it 8 MiB of resident memory. */
EVENT_RING(events, 8 << 20);

/*
 * The spare ring: a small second ring that takes a record the main ring
 * refused.  On 6.15+ kernels the ring's lock is a resilient spinlock whose
 * acquisition can fail under contention although the ring has room (an
 * 8-worker connection storm lost a few records in 300k that way, retries or
 * not); the spare's lock is only taken after such a failure, so it is all
 * but uncontended.  It also adds head room when the main ring is really
 * full.  A spare record carries, after the tool's struct, the main ring's
 * producer position at the time of its reservation: the reader puts it back
 * exactly where it belongs in the main ring's order (core/ringbuf.py).
 */
EVENT_RING(events_spare, 64 << 10);

/*
 * Reserve a record of the given type, or count the loss and return NULL.
 * Up to four attempts on the main ring (one retry turned about a third of
 * the failures above into successes, three retries most), then the spare.
 * A success costs nothing extra.
 */
#define EVENT_RESERVE_TRIES 4
#define event_reserve(type) ((type *)__event_reserve(sizeof(type)))

static __always_inline void *__event_reserve(__u64 bytes)
{
	__u64 pos;
	void *e;

#pragma unroll
	for (int i = 0; i < EVENT_RESERVE_TRIES; i++) {
		e = bpf_ringbuf_reserve(&events, bytes, 0);
		if (e)
			return e;
	}
	pos = bpf_ringbuf_query(&events, BPF_RB_PROD_POS);
	e = bpf_ringbuf_reserve(&events_spare, bytes + sizeof(pos), 0);
	if (e) {
		__builtin_memcpy(e + bytes, &pos, sizeof(pos));
		return e;
	}
	__sync_fetch_and_add(&lost_events, 1);
	return NULL;
}

/* Submit a reserved record; now is bpf_ktime_get_ns() (the caller has it). */
#define event_submit(e, now) __event_submit((e), (now), sizeof(*(e)) + 8)

static __always_inline void __event_submit(void *e, __u64 now, __u64 rec_bytes)
{
	__u64 flags = BPF_RB_NO_WAKEUP;
	__u64 last = last_event_ns;
	__u64 avail, mask = ~(rb_wake_bytes - 1);

	if (now - last > rb_idle_ns) {
		flags = BPF_RB_FORCE_WAKEUP;
	} else {
		/* Wake once each time the unread data crosses a multiple of
		 * rb_wake_bytes (a power of two), not for every record above it:
		 * a reader that is behind would otherwise get an IPI per event. */
		avail = bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA);
		if ((avail & mask) != ((avail - rec_bytes) & mask))
			flags = BPF_RB_FORCE_WAKEUP;
	}
	/* Only write the shared cache line when it changes meaningfully: a
	 * store per event from every CPU would bounce it between them. */
	if (now - last > rb_idle_ns / 4)
		last_event_ns = now;
	bpf_ringbuf_submit(e, flags);
}

#endif /* __PYTRACE_EVENTS_H */
