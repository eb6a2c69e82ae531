/* procs: featured and rankd as real processes for tests and benchmarks:
 * started with posix_spawn (never fork after grpc_init) on 127.0.0.1:0,
 * the address taken from their "<name> listening on ADDR" line, stopped
 * with SIGTERM; the CPU time they used; a small file system of their own
 * to fill. Header-only; one daemon per struct proc. Shared by the daemon
 * tests of rpc, featured, rankd_service and dvbpr and by benchmarks. */
#ifndef VR_TEST_PROCS_H
#define VR_TEST_PROCS_H

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <spawn.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

struct proc {
	pid_t pid;
	int out;            /* read end of its stdout */
	char addr[64];      /* "127.0.0.1:PORT" once ready */
	char err_path[512]; /* its stderr */
};

static inline int64_t procs_now_ms(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

/* Starts argv (NULL-terminated) with its stderr in err_path (appended). */
static inline int proc_spawn(struct proc *p, const char *err_path, char *const argv[])
{
	memset(p, 0, sizeof *p);
	p->pid = -1;
	snprintf(p->err_path, sizeof p->err_path, "%s", err_path);
	int fds[2];
	if (pipe2(fds, O_CLOEXEC))
		return -1;
	posix_spawn_file_actions_t fa;
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_adddup2(&fa, fds[1], 1);
	posix_spawn_file_actions_addopen(&fa, 2, p->err_path, O_WRONLY | O_CREAT | O_APPEND, 0644);
	posix_spawnattr_t at;
	posix_spawnattr_init(&at);
	sigset_t none, def;
	sigemptyset(&none);
	sigemptyset(&def);
	sigaddset(&def, SIGTERM);
	sigaddset(&def, SIGINT);
	posix_spawnattr_setsigmask(&at, &none);
	posix_spawnattr_setsigdefault(&at, &def);
	posix_spawnattr_setflags(&at, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
	int rc = posix_spawn(&p->pid, argv[0], &fa, &at, argv, environ);
	posix_spawn_file_actions_destroy(&fa);
	posix_spawnattr_destroy(&at);
	close(fds[1]);
	p->out = fds[0];
	if (rc) {
		p->pid = -1;
		return -1;
	}
	return 0;
}

/* Reads the "<name> listening on ADDR" line (up to ms). */
static inline int proc_wait_ready(struct proc *p, const char *name, int ms)
{
	char line[256];
	size_t n = 0;
	int64_t end = procs_now_ms() + ms;
	while (n < sizeof line - 1 && procs_now_ms() < end) {
		struct pollfd pfd = { .fd = p->out, .events = POLLIN };
		if (poll(&pfd, 1, 50) <= 0)
			continue;
		if (read(p->out, line + n, 1) <= 0)
			return -1;
		if (line[n] == '\n') {
			line[n] = 0;
			char prefix[64];
			snprintf(prefix, sizeof prefix, "%s listening on ", name);
			if (strncmp(line, prefix, strlen(prefix)))
				return -1;
			snprintf(p->addr, sizeof p->addr, "%s", line + strlen(prefix));
			return 0;
		}
		n++;
	}
	return -1;
}

/* SIGTERM, then waits up to ms; the wait status, or -1 (then SIGKILL). */
static inline int proc_stop(struct proc *p, int ms)
{
	int status = -1;
	if (p->pid > 0) {
		kill(p->pid, SIGTERM);
		int64_t end = procs_now_ms() + ms;
		for (;;) {
			pid_t r = waitpid(p->pid, &status, WNOHANG);
			if (r == p->pid)
				break;
			if (procs_now_ms() > end) {
				kill(p->pid, SIGKILL);
				waitpid(p->pid, NULL, 0);
				status = -1;
				break;
			}
			usleep(5000);
		}
		p->pid = -1;
	}
	if (p->out > 0)
		close(p->out);
	p->out = -1;
	return status;
}

/* SIGKILL, no questions asked: a crash. */
static inline void proc_kill9(struct proc *p)
{
	if (p->pid > 0) {
		kill(p->pid, SIGKILL);
		waitpid(p->pid, NULL, 0);
	}
	if (p->out > 0)
		close(p->out);
	p->pid = -1;
	p->out = -1;
}

/* Writes text to path, created anew with mode (a token file). 0 or -1. */
static inline int procs_write_file(const char *path, const char *text, mode_t mode)
{
	unlink(path);
	int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
	if (fd < 0)
		return -1;
	ssize_t n = write(fd, text, strlen(text));
	int rc = fchmod(fd, mode) || n != (ssize_t)strlen(text) ? -1 : 0;
	close(fd);
	return rc;
}

/* CPU time (user + system) process pid has used, in ms; -1 if unknown. */
static inline int64_t proc_cpu_ms(pid_t pid)
{
	char path[64], buf[1024];
	snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	ssize_t n = read(fd, buf, sizeof buf - 1);
	close(fd);
	if (n <= 0)
		return -1;
	buf[n] = 0;
	/* Fields after the command, which may hold spaces and ')'. */
	const char *p = strrchr(buf, ')');
	unsigned long long utime, stime;
	if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &utime,
			 &stime) != 2)
		return -1;
	long hz = sysconf(_SC_CLK_TCK);
	return (int64_t)((utime + stime) * 1000 / (unsigned long long)(hz > 0 ? hz : 100));
}

/* Mounts a tmpfs of size ("4m") at dir (created), in a mount namespace of
 * the calling thread's own, so that it is seen by this thread and the
 * daemons it spawns, and goes away with them (umount2(dir, MNT_DETACH)
 * when done, so that dir can be removed). 0, or -1 with the reason in why
 * (not root, or a container that refuses mounts): the caller skips. */
static inline int procs_tmpfs(const char *dir, const char *size, char *why, size_t cap)
{
	char opts[64];
	if (mkdir(dir, 0700) && errno != EEXIST) {
		snprintf(why, cap, "mkdir %s: %s", dir, strerror(errno));
		return -1;
	}
	if (unshare(CLONE_NEWNS)) {
		snprintf(why, cap, "cannot make a mount namespace (unshare: %s)", strerror(errno));
		return -1;
	}
	if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL)) {
		snprintf(why, cap, "cannot make mounts private (mount: %s)", strerror(errno));
		return -1;
	}
	snprintf(opts, sizeof opts, "size=%s,mode=0700", size);
	if (mount("tmpfs", dir, "tmpfs", 0, opts)) {
		snprintf(why, cap, "cannot mount a tmpfs at %s (mount: %s)", dir, strerror(errno));
		return -1;
	}
	return 0;
}

#endif
