// SPDX-License-Identifier: GPL-2.0
/*
 * sofdsnoop - file descriptors passed over Unix sockets (SCM_RIGHTS), as
 * BCC's sofdsnoop: one record per descriptor sent or received, with the
 * task, the socket it went through, the descriptor and the file it names.
 *
 * Variants, best first:
 *  - kprobe, as BCC: __scm_send (the kernel's copy of the sender's control
 *    messages, at the send) and scm_detach_fds entry/return (the receiver's
 *    new descriptors, written to its control buffer); the syscall
 *    tracepoints sys_enter/exit_sendmsg and recvmsg say which socket;
 *  - tracepoint, for kernels without kprobes: the syscall tracepoints alone.
 *    sys_enter_sendmsg reads the sender's control messages from its
 *    struct user_msghdr, and the record is made at sys_exit_sendmsg if the
 *    send succeeded; sys_exit_recvmsg reads the control messages the kernel
 *    wrote back to the receiver.
 *
 * A record names its file from the kernel's struct file (found through the
 * task's descriptor table): "socket:[ino]", "pipe:[ino]", "anon_inode:[...]"
 * as /proc/PID/fd shows them, else the path's components, walked up through
 * the dentries and mounts (at most NAME_PARTS of them).  A received file is
 * the sent struct file itself: the record of the send, kept by file, names
 * the sender (peer_pid, peer_comm, peer_fd) in the record of the receive.
 *
 * sendmmsg/recvmmsg and io_uring are not traced (as in BCC).
 */
#include "events.h"
#include "sockfd.h"
#include "filter.h"

#define SOL_SOCKET_ 1
#define SCM_RIGHTS_ 1
#define MAX_FDS 16		/* descriptors recorded per control message */
#define MAX_CMSGS 4		/* control messages looked at per call */
#define NAME_PARTS 12
#define NAME_PART_LEN 48

#define PT_S_IFIFO 0010000
#define PIPEFS_MAGIC_ 0x50495045
#define ANON_INODE_FS_MAGIC_ 0x09041934

enum { ACTION_SEND, ACTION_RECV };
enum { FILE_PATH, FILE_SOCKET, FILE_PIPE, FILE_ANON };

struct sofdsnoop_event {
	__u64 ts_ns;
	__u64 sock_ino;		/* the socket's inode (0: unknown) */
	__u64 ino;		/* the passed file's inode */
	__u64 cgroup_id;	/* the task's (filter.h labels) */
	__u32 netns;		/* the task's (filter.h labels) */
	__u32 pad2;
	__u32 pid;
	__u32 tid;
	__s32 sock_fd;		/* the socket the call was made on (-1: unknown) */
	__s32 fd;		/* send: the sender's descriptor; receive: the new one */
	__u32 peer_pid;		/* receive: the sender (0: not seen) */
	__s32 peer_fd;		/* receive: the descriptor in the sender (-1: not seen) */
	__u16 action;		/* ACTION_SEND, ACTION_RECV */
	__u16 kind;		/* FILE_* */
	__u8 deleted;		/* a path whose file was unlinked */
	__u8 depth;		/* path components in name */
	__u16 pad;
	char comm[TASK_COMM_LEN];
	char peer_comm[TASK_COMM_LEN];
	char name[NAME_PARTS * NAME_PART_LEN];	/* components, innermost first; anon: its name */
};

/* A send seen at its start: what to report at its end (tracepoint variant). */
struct pending_send {
	__s32 sock_fd;
	__u32 n;
	__s32 fds[MAX_FDS];
};

struct sender {
	__u32 pid;
	__s32 fd;
	char comm[TASK_COMM_LEN];
};

const volatile __u32 targ_tgid = 0;
const volatile __u32 targ_tid = 0;
const volatile char targ_comm[TASK_COMM_LEN] = {};	/* -n: commands containing this */
const volatile __u32 targ_comm_len = 0;

struct sofdsnoop_event _event_type = {};

/* per thread: the socket of the current sendmsg/recvmsg, and its user msghdr */
struct call {
	__s32 sock_fd;
	__u32 pad;
	__u64 umsg;		/* struct user_msghdr __user * (recvmsg) */
	__u64 ucontrol;		/* kprobe: where scm_detach_fds writes (user) */
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 10240);
	__type(key, __u32);
	__type(value, struct call);
} calls SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 10240);
	__type(key, __u32);
	__type(value, struct pending_send);
} sends SEC(".maps");

/* struct file * -> its last sender: names the sender of a received file */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, struct sender);
} senders SEC(".maps");

static const struct pending_send zero_send;

static __always_inline bool comm_wanted(const char *comm)
{
	if (!targ_comm_len)
		return true;
	for (int i = 0; i < TASK_COMM_LEN; i++) {
		bool hit = true;

		if (i + targ_comm_len > TASK_COMM_LEN - 1)
			return false;
		for (int j = 0; j < TASK_COMM_LEN - 1; j++) {
			if (j >= targ_comm_len)
				break;
			if (comm[(i + j) & (TASK_COMM_LEN - 1)] != targ_comm[j]) {
				hit = false;
				break;
			}
		}
		if (hit)
			return true;
	}
	return false;
}

static __always_inline bool task_wanted(void)
{
	__u64 id = bpf_get_current_pid_tgid();

	if (targ_tid && (__u32)id != targ_tid)
		return false;
	if (!targ_tid && targ_tgid && (id >> 32) != targ_tgid)
		return false;
	return pt_task_wanted();	/* --cgroup, --netns, --container... (filter.h) */
}

/* The struct file behind fd in the current task, or NULL. */
static __always_inline struct file *fd_file(int fd)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct fdtable *fdt = BPF_CORE_READ(task, files, fdt);
	struct file **fds, *file = NULL;

	if (!fdt || fd < 0 || (unsigned int)fd >= BPF_CORE_READ(fdt, max_fds))
		return NULL;
	fds = BPF_CORE_READ(fdt, fd);
	bpf_probe_read_kernel(&file, sizeof(file), &fds[fd]);
	return file;
}

/* What the file is, and its name (see the top of the file). */
static __noinline int file_name(struct file *file, struct sofdsnoop_event *e)
{
	struct inode *inode;
	struct dentry *dentry, *parent, *root;
	struct vfsmount *vfsmnt;
	struct mount *mnt, *mnt_parent;
	const unsigned char *part;
	unsigned long magic;
	__u32 mode, depth;

	if (!file || !e)
		return 0;
	inode = BPF_CORE_READ(file, f_inode);
	mode = BPF_CORE_READ(inode, i_mode);
	magic = BPF_CORE_READ(inode, i_sb, s_magic);
	e->ino = BPF_CORE_READ(inode, i_ino);
	dentry = BPF_CORE_READ(file, f_path.dentry);
	if ((mode & PT_S_IFMT) == PT_S_IFSOCK) {
		e->kind = FILE_SOCKET;
		return 0;
	}
	if ((mode & PT_S_IFMT) == PT_S_IFIFO && magic == PIPEFS_MAGIC_) {
		e->kind = FILE_PIPE;
		return 0;
	}
	if (magic == ANON_INODE_FS_MAGIC_) {
		e->kind = FILE_ANON;
		part = BPF_CORE_READ(dentry, d_name.name);
		bpf_probe_read_kernel_str(e->name, NAME_PART_LEN, part);
		return 0;
	}
	e->kind = FILE_PATH;
	e->deleted = BPF_CORE_READ(inode, __i_nlink) == 0;
	vfsmnt = BPF_CORE_READ(file, f_path.mnt);
	mnt = (struct mount *)((void *)vfsmnt - bpf_core_field_offset(struct mount, mnt));
	/*
	 * One component per turn, innermost first.  Every turn reads the same way
	 * (a mount's top crossed to where it is mounted, then one dentry up), so
	 * the verifier's states of a turn do not depend on the path taken before.
	 */
	for (depth = 0; depth < NAME_PARTS; depth++) {
		root = BPF_CORE_READ(vfsmnt, mnt_root);
		if (dentry == root) {
			mnt_parent = BPF_CORE_READ(mnt, mnt_parent);
			if (mnt_parent == mnt)
				break;		/* the top of the topmost mount: "/" */
			dentry = BPF_CORE_READ(mnt, mnt_mountpoint);
			mnt = mnt_parent;
			vfsmnt = (struct vfsmount *)((void *)mnt + bpf_core_field_offset(struct mount, mnt));
		}
		parent = BPF_CORE_READ(dentry, d_parent);
		if (parent == dentry)
			break;
		part = BPF_CORE_READ(dentry, d_name.name);
		bpf_probe_read_kernel_str(&e->name[depth * NAME_PART_LEN], NAME_PART_LEN, part);
		dentry = parent;
	}
	e->depth = depth;
	return 0;
}

static __always_inline __u64 sock_inode(int sock_fd)
{
	struct file *f = fd_file(sock_fd);

	return f ? BPF_CORE_READ(f, f_inode, i_ino) : 0;
}

/*
 * One record: fd of the current task, sent or received on sock_fd.  A global
 * function (Linux 5.6+): the verifier checks it once, on its own, instead of
 * once per call site: inlined into loops of MAX_FDS calls it took Debian's
 * 5.10 and 6.1 verifiers past their million instructions (E2BIG).
 */
__noinline int report(int action, int sock_fd, int fd)
{
	struct sofdsnoop_event *e;
	struct sender *peer = NULL;
	struct file *file = fd_file(fd);
	__u64 key = (__u64)(unsigned long)file;
	__u64 id = bpf_get_current_pid_tgid();
	char comm[TASK_COMM_LEN];

	bpf_get_current_comm(comm, sizeof(comm));
	if (!comm_wanted(comm))
		return 0;
	if (action == ACTION_RECV && file)
		peer = bpf_map_lookup_elem(&senders, &key);
	e = event_reserve(struct sofdsnoop_event);
	if (!e)
		return 0;
	__builtin_memset(e, 0, sizeof(*e));
	e->ts_ns = bpf_ktime_get_ns();
	e->pid = id >> 32;
	e->tid = id;
	e->cgroup_id = pt_task_cgroup_label();
	e->netns = pt_task_netns_label();
	e->action = action;
	e->sock_fd = sock_fd;
	e->sock_ino = sock_fd >= 0 ? sock_inode(sock_fd) : 0;
	e->fd = fd;
	e->peer_fd = -1;
	__builtin_memcpy(e->comm, comm, sizeof(comm));
	if (peer) {
		e->peer_pid = peer->pid;
		e->peer_fd = peer->fd;
		__builtin_memcpy(e->peer_comm, peer->comm, sizeof(e->peer_comm));
	}
	file_name(file, e);
	event_submit(e, e->ts_ns);
	return 0;
}

/* The sender's fds are about to travel: remember who sent each file. */
static __always_inline void note_sender(int fd)
{
	struct file *file = fd_file(fd);
	__u64 key = (__u64)(unsigned long)file;
	struct sender s = {};

	if (!file)
		return;
	s.pid = bpf_get_current_pid_tgid() >> 32;
	s.fd = fd;
	bpf_get_current_comm(s.comm, sizeof(s.comm));
	bpf_map_update_elem(&senders, &key, &s, BPF_ANY);
}

/*
 * The SCM_RIGHTS descriptors of a control buffer (user or kernel memory) into
 * out, MAX_FDS at most, from its first SCM_RIGHTS message.  Returns how many.
 */
static __always_inline __u32 scm_rights(const void *control, __u64 len, bool user, __s32 *out)
{
	struct cmsghdr h;
	__u64 off = 0;
	__u32 n = 0;

	for (int i = 0; i < MAX_CMSGS; i++) {
		long err;

		if (off + sizeof(h) > len)
			break;
		err = user ? bpf_probe_read_user(&h, sizeof(h), control + off)
			   : bpf_probe_read_kernel(&h, sizeof(h), control + off);
		if (err || h.cmsg_len < sizeof(h) || off + h.cmsg_len > len)
			break;
		if (h.cmsg_level == SOL_SOCKET_ && h.cmsg_type == SCM_RIGHTS_) {
			n = (h.cmsg_len - sizeof(h)) / sizeof(int);
			/* one at a time: exactly the fds, the buffer may end there */
			for (int k = 0; k < MAX_FDS; k++) {
				const void *at = control + off + sizeof(h) + k * sizeof(int);

				if (k >= n)
					return k;
				err = user ? bpf_probe_read_user(&out[k], sizeof(int), at)
					   : bpf_probe_read_kernel(&out[k], sizeof(int), at);
				if (err)
					return k;
			}
			return MAX_FDS;
		}
		off += (h.cmsg_len + 7) & ~7ULL;
	}
	return 0;
}

/* -- which socket, per thread (both variants) ------------------------------------------- */

static __always_inline int call_enter(long fd, __u64 umsg)
{
	__u32 tid = bpf_get_current_pid_tgid();
	struct call c = { .sock_fd = fd, .umsg = umsg };

	if (!task_wanted())
		return 0;
	bpf_map_update_elem(&calls, &tid, &c, BPF_ANY);
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_recvmsg")
int sofdsnoop_enter_recvmsg(struct trace_event_raw_sys_enter *ctx)
{
	return call_enter(ctx->args[0], ctx->args[1]);
}

/* -- tracepoint variant ------------------------------------------------------------------ */

SEC("tracepoint/syscalls/sys_enter_sendmsg")
int sofdsnoop_tp_enter_sendmsg(struct trace_event_raw_sys_enter *ctx)
{
	__u32 tid = bpf_get_current_pid_tgid();
	struct user_msghdr hdr;
	struct pending_send *p;

	/* every task's sends are looked at: a receiver traced alone (-p) still
	 * names its sender; only the wanted ones are reported */
	if (bpf_probe_read_user(&hdr, sizeof(hdr), (void *)ctx->args[1]) || !hdr.msg_control ||
	    hdr.msg_controllen < sizeof(struct cmsghdr))
		return 0;
	if (bpf_map_update_elem(&sends, &tid, &zero_send, BPF_ANY))
		return 0;
	p = bpf_map_lookup_elem(&sends, &tid);
	if (!p)
		return 0;
	p->sock_fd = ctx->args[0];
	p->n = scm_rights(hdr.msg_control, hdr.msg_controllen, true, p->fds);
	for (int i = 0; i < MAX_FDS; i++) {
		if (i >= p->n)
			break;
		note_sender(p->fds[i]);
	}
	if (!p->n || !task_wanted())
		bpf_map_delete_elem(&sends, &tid);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_sendmsg")
int sofdsnoop_tp_exit_sendmsg(struct trace_event_raw_sys_exit *ctx)
{
	__u32 tid = bpf_get_current_pid_tgid();
	struct pending_send *p = bpf_map_lookup_elem(&sends, &tid);

	if (!p)
		return 0;
	if (ctx->ret >= 0) {
		for (int i = 0; i < MAX_FDS; i++) {
			if (i >= p->n)
				break;
			report(ACTION_SEND, p->sock_fd, p->fds[i]);
		}
	}
	bpf_map_delete_elem(&sends, &tid);
	return 0;
}

/* The descriptors the kernel wrote to the receiver's control buffer (ret >= 0). */
static __always_inline void received(const void *ucontrol, __u64 len, int sock_fd)
{
	__s32 fds[MAX_FDS] = {};
	__u32 n = scm_rights(ucontrol, len, true, fds);

	for (int i = 0; i < MAX_FDS; i++) {
		if (i >= n)
			break;
		report(ACTION_RECV, sock_fd, fds[i]);
	}
}

SEC("tracepoint/syscalls/sys_exit_recvmsg")
int sofdsnoop_tp_exit_recvmsg(struct trace_event_raw_sys_exit *ctx)
{
	__u32 tid = bpf_get_current_pid_tgid();
	struct call *c = bpf_map_lookup_elem(&calls, &tid);
	struct user_msghdr hdr;

	if (!c)
		return 0;
	if (ctx->ret >= 0 && !bpf_probe_read_user(&hdr, sizeof(hdr), (void *)c->umsg) && hdr.msg_control)
		received(hdr.msg_control, hdr.msg_controllen, c->sock_fd);	/* msg_controllen: as written */
	bpf_map_delete_elem(&calls, &tid);
	return 0;
}

/* -- kprobe variant (BCC's): the kernel's own handling of SCM_RIGHTS --------------------- */

SEC("tracepoint/syscalls/sys_enter_sendmsg")
int sofdsnoop_enter_sendmsg(struct trace_event_raw_sys_enter *ctx)
{
	return call_enter(ctx->args[0], ctx->args[1]);
}

SEC("tracepoint/syscalls/sys_exit_sendmsg")
int sofdsnoop_exit_sendmsg(struct trace_event_raw_sys_exit *ctx)
{
	__u32 tid = bpf_get_current_pid_tgid();

	bpf_map_delete_elem(&calls, &tid);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_recvmsg")
int sofdsnoop_exit_recvmsg(struct trace_event_raw_sys_exit *ctx)
{
	__u32 tid = bpf_get_current_pid_tgid();

	bpf_map_delete_elem(&calls, &tid);
	return 0;
}

/* __scm_send(sock, msg, scm): msg's control buffer is the kernel's copy of the sender's */
SEC("kprobe/__scm_send")
int BPF_KPROBE(sofdsnoop_kprobe_scm_send, struct socket *sock, struct msghdr *msg)
{
	__u32 tid = bpf_get_current_pid_tgid();
	struct call *c = bpf_map_lookup_elem(&calls, &tid);
	__s32 fds[MAX_FDS] = {};
	bool wanted = task_wanted();
	__u32 n;

	n = scm_rights(BPF_CORE_READ(msg, msg_control), BPF_CORE_READ(msg, msg_controllen), false, fds);
	for (int i = 0; i < MAX_FDS; i++) {
		if (i >= n)
			break;
		note_sender(fds[i]);		/* every sender: a receiver traced alone names it */
		if (wanted)
			report(ACTION_SEND, c ? c->sock_fd : -1, fds[i]);
	}
	return 0;
}

/* scm_detach_fds(msg, scm): the new descriptors go to msg's user control buffer */
SEC("kprobe/scm_detach_fds")
int BPF_KPROBE(sofdsnoop_kprobe_detach_fds, struct msghdr *msg)
{
	__u32 tid = bpf_get_current_pid_tgid();
	struct call *c = bpf_map_lookup_elem(&calls, &tid);

	if (c)
		c->ucontrol = (__u64)(unsigned long)BPF_CORE_READ(msg, msg_control);
	return 0;
}

SEC("kretprobe/scm_detach_fds")
int BPF_KRETPROBE(sofdsnoop_kretprobe_detach_fds)
{
	__u32 tid = bpf_get_current_pid_tgid();
	struct call *c = bpf_map_lookup_elem(&calls, &tid);

	if (c && c->ucontrol) {
		received((const void *)c->ucontrol, MAX_CMSGS * (sizeof(struct cmsghdr) + MAX_FDS * sizeof(int)),
			 c->sock_fd);
		c->ucontrol = 0;
	}
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
