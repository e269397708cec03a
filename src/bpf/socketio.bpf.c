// SPDX-License-Identifier: GPL-2.0
/*
 * socketio - socket I/O calls and bytes by process, direction, protocol and
 * port, counted in the kernel (the book's socketio.bt, which counts calls;
 * bytes are added).
 *
 * Hooks: see SOCK_IO_PROGRAMS in socklayer.h.  Every call is counted; bytes
 * are those the call moved (failed calls, e.g. EAGAIN, add none).
 */
#include "socklayer.h"

struct socketio_key {
	__u32 pid;
	__u8 dir;		/* IO_SEND, IO_RECV */
	__u8 pad;
	__u16 family;
	__u16 protocol;
	__u16 lport;		/* 0 unless keyed by local port */
	__u16 rport;
	__u16 pad2;
	char comm[TASK_COMM_LEN];
	char proto_name[16];
};

struct socketio_val {
	__u64 calls;
	__u64 bytes;
};

const volatile __u32 targ_tgid = 0;
const volatile bool key_lport = false;
const volatile __u16 targ_family = 0;

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 10240);
	__type(key, struct socketio_key);
	__type(value, struct socketio_val);
} io SEC(".maps");

static __always_inline int on_io(struct sock *sk, int dir, long ret)
{
	struct socketio_key key = {};
	struct socketio_val *v, zero = {};
	struct sock_info si = {};

	if (!sk || !pt_proc_wanted(targ_tgid))
		return 0;
	sock_facts(0, sk, &si);
	if (targ_family && si.family != targ_family)
		return 0;
	key.pid = bpf_get_current_pid_tgid() >> 32;
	key.dir = dir;
	key.family = si.family;
	key.protocol = si.protocol;
	if (si.family == AF_INET || si.family == AF_INET6) {
		key.rport = sk_dport(sk);
		if (key_lport)
			key.lport = si.lport;
	}
	__builtin_memcpy(key.proto_name, si.proto_name, sizeof(key.proto_name));
	bpf_get_current_comm(key.comm, sizeof(key.comm));
	v = bpf_map_lookup_elem(&io, &key);
	if (!v) {
		bpf_map_update_elem(&io, &key, &zero, BPF_NOEXIST);
		v = bpf_map_lookup_elem(&io, &key);
		if (!v)
			return 0;
	}
	__sync_fetch_and_add(&v->calls, 1);
	if (ret > 0)
		__sync_fetch_and_add(&v->bytes, ret);
	return 0;
}

SOCK_IO_PROGRAMS(socketio)

char LICENSE[] SEC("license") = "GPL";
