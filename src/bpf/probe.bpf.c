// SPDX-License-Identifier: GPL-2.0
/*
 * probe - one trivial program per hook kind, loaded one at a time by
 * `pytrace doctor` and by the loader (core/features.py) to learn which hook
 * kinds this kernel accepts.  Each targets a function or tracepoint that
 * every network-capable kernel has.
 */
#include "pytrace.h"

__u64 hits = 0;

SEC("fentry/tcp_v4_connect")
int BPF_PROG(probe_fentry) { __sync_fetch_and_add(&hits, 1); return 0; }

SEC("kprobe/tcp_v4_connect")
int BPF_KPROBE(probe_kprobe) { __sync_fetch_and_add(&hits, 1); return 0; }

SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(probe_tp_btf) { __sync_fetch_and_add(&hits, 1); return 0; }

SEC("raw_tp/inet_sock_set_state")
int BPF_PROG(probe_raw_tp) { __sync_fetch_and_add(&hits, 1); return 0; }

SEC("tracepoint/sock/inet_sock_set_state")
int probe_tracepoint(void *ctx) { __sync_fetch_and_add(&hits, 1); return 0; }

SEC("lsm/socket_connect")
int BPF_PROG(probe_lsm) { return 0; }

char LICENSE[] SEC("license") = "GPL";
