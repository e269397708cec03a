// SPDX-License-Identifier: GPL-2.0
/*
 * so1stbyte - time from an IP connect() to the first byte read on that
 * socket, as log2 histograms per process (the book's so1stbyte.bt).
 *
 * sys_enter_connect starts the clock for (process, fd); a connect that
 * fails (other than EINPROGRESS) or a close() of the fd stops it.  The read
 * system calls (read, readv, pread64, recvfrom, recvmsg, recvmmsg) note the
 * fd at entry if its clock runs; at exit, the first one that returns data
 * (ret > 0, so EAGAIN from a non-blocking socket does not count) records the
 * time.
 */
#include "socklayer.h"

struct fd_key {
	__u32 tgid;
	__s32 fd;
};

struct so1stbyte_key {
	__u32 pid;
	char comm[TASK_COMM_LEN];
};

const volatile __u32 targ_tgid = 0;
const volatile bool targ_ms = false;

/* connect() start time per (process, fd), until the first byte arrives */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct fd_key);
	__type(value, __u64);
} starts SEC(".maps");

/* the fd of a connect or read in flight, by thread id */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u32);
	__type(value, __s32);
} connecting SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u32);
	__type(value, __s32);
} reading SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, struct so1stbyte_key);
	__type(value, struct log2_hist);
} hists SEC(".maps");

static __always_inline struct fd_key fd_key_of(int fd)
{
	struct fd_key k = { .tgid = bpf_get_current_pid_tgid() >> 32, .fd = fd };

	return k;
}

SEC("tracepoint/syscalls/sys_enter_connect")
int so1stbyte_connect(struct trace_event_raw_sys_enter *ctx)
{
	struct pt_sockaddr sa = {};
	struct fd_key k = fd_key_of(ctx->args[0]);
	__u32 tid = current_tid();
	__u64 now;
	int family;

	if (!pt_proc_wanted(targ_tgid))
		return 0;
	family = read_user_sockaddr((const void *)ctx->args[1], &sa);
	if (family != AF_INET && family != AF_INET6)
		return 0;
	now = bpf_ktime_get_ns();
	bpf_map_update_elem(&starts, &k, &now, BPF_ANY);
	bpf_map_update_elem(&connecting, &tid, &k.fd, BPF_ANY);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_connect")
int so1stbyte_connect_exit(struct trace_event_raw_sys_exit *ctx)
{
	__u32 tid = current_tid();
	__s32 *fd = bpf_map_lookup_elem(&connecting, &tid);
	struct fd_key k;

	if (!fd)
		return 0;
	if (ctx->ret != 0 && ctx->ret != -EINPROGRESS) {
		k = fd_key_of(*fd);
		bpf_map_delete_elem(&starts, &k);
	}
	bpf_map_delete_elem(&connecting, &tid);
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_close")
int so1stbyte_close(struct trace_event_raw_sys_enter *ctx)
{
	struct fd_key k = fd_key_of(ctx->args[0]);

	bpf_map_delete_elem(&starts, &k);
	return 0;
}

static __always_inline int read_enter(int fd)
{
	struct fd_key k = fd_key_of(fd);
	__u32 tid = current_tid();

	if (bpf_map_lookup_elem(&starts, &k))
		bpf_map_update_elem(&reading, &tid, &k.fd, BPF_ANY);
	return 0;
}

static __always_inline int read_exit(long ret)
{
	struct so1stbyte_key key = {};
	__u32 tid = current_tid();
	__s32 *fd = bpf_map_lookup_elem(&reading, &tid);
	struct fd_key k;
	__u64 *start, delta;

	if (!fd)
		return 0;
	k = fd_key_of(*fd);
	bpf_map_delete_elem(&reading, &tid);
	if (ret <= 0)
		return 0;
	start = bpf_map_lookup_elem(&starts, &k);
	if (!start)
		return 0;
	delta = (bpf_ktime_get_ns() - *start) / 1000;
	key.pid = k.tgid;
	bpf_get_current_comm(key.comm, sizeof(key.comm));
	hist_add(&hists, &key, targ_ms ? delta / 1000 : delta);
	bpf_map_delete_elem(&starts, &k);
	return 0;
}

#define READ_CALL(name)                                                        \
	SEC("tracepoint/syscalls/sys_enter_" #name)                            \
	int so1stbyte_enter_##name(struct trace_event_raw_sys_enter *ctx)      \
	{                                                                      \
		return read_enter(ctx->args[0]);                               \
	}                                                                      \
	SEC("tracepoint/syscalls/sys_exit_" #name)                             \
	int so1stbyte_exit_##name(struct trace_event_raw_sys_exit *ctx)        \
	{                                                                      \
		return read_exit(ctx->ret);                                    \
	}

READ_CALL(read)
READ_CALL(readv)
READ_CALL(pread64)
READ_CALL(recvfrom)
READ_CALL(recvmsg)
READ_CALL(recvmmsg)

char LICENSE[] SEC("license") = "GPL";
