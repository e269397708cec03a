/* SPDX-License-Identifier: GPL-2.0 */
/*
 * sockfd.h - from a file descriptor of the current task to its struct sock.
 *
 * Syscall tracepoints (sys_enter_connect, sys_exit_accept4, sys_enter_listen,
 * ...) see only an fd.  Where kprobes on the protocol functions are missing,
 * the socket behind it is found by walking task->files->fdt->fd[fd]: a
 * struct file whose inode is a socket, and whose private_data is the
 * struct socket.
 */
#ifndef __PYTRACE_SOCKFD_H
#define __PYTRACE_SOCKFD_H

#include "pytrace.h"

#define PT_S_IFMT 00170000
#define PT_S_IFSOCK 0140000

/* The struct socket behind fd in the current task, or NULL if it is not a socket. */
static __always_inline struct socket *fd_to_socket(int fd)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct fdtable *fdt = BPF_CORE_READ(task, files, fdt);
	struct file **fds, *file = NULL;
	unsigned int max_fds;

	if (!fdt || fd < 0)
		return NULL;
	max_fds = BPF_CORE_READ(fdt, max_fds);
	if ((unsigned int)fd >= max_fds)
		return NULL;
	fds = BPF_CORE_READ(fdt, fd);
	bpf_probe_read_kernel(&file, sizeof(file), &fds[fd]);
	if (!file)
		return NULL;
	if ((BPF_CORE_READ(file, f_inode, i_mode) & PT_S_IFMT) != PT_S_IFSOCK)
		return NULL;
	return (struct socket *)BPF_CORE_READ(file, private_data);
}

/* The struct sock behind fd in the current task, or NULL. */
static __always_inline struct sock *fd_to_sock(int fd)
{
	struct socket *sock = fd_to_socket(fd);

	return sock ? BPF_CORE_READ(sock, sk) : NULL;
}

#endif /* __PYTRACE_SOCKFD_H */
