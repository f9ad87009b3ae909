#define _GNU_SOURCE
#include "weft_shim.h"

#include <errno.h>
#include <malloc.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <netinet/in.h>
#include <sys/resource.h>
#include <sys/statfs.h>
#include <linux/magic.h>

#ifndef SO_NETNS_COOKIE
#define SO_NETNS_COOKIE 71
#endif
#ifndef BPF_FS_MAGIC
#define BPF_FS_MAGIC 0xcafe4a11
#endif
#ifndef CGROUP2_SUPER_MAGIC
#define CGROUP2_SUPER_MAGIC 0x63677270
#endif

static weft_log_fn weft_logger;

static int weft_libbpf_print(enum libbpf_print_level level, const char *fmt, va_list args)
{
	char buf[1024];
	size_t len;

	if (!weft_logger)
		return 0;
	vsnprintf(buf, sizeof(buf), fmt, args);
	len = strlen(buf);
	while (len > 0 && buf[len - 1] == '\n')
		buf[--len] = 0;
	weft_logger(level == LIBBPF_WARN ? 0 : level == LIBBPF_INFO ? 1 : 2, buf);
	return (int)len;
}

void weft_bpf_set_logger(weft_log_fn fn)
{
	weft_logger = fn;
	libbpf_set_print(weft_libbpf_print);
}

struct bpf_object *weft_bpf_open_mem(const void *buf, size_t len, const char *name, const char *pin_root)
{
	LIBBPF_OPTS(bpf_object_open_opts, opts, .object_name = name, .pin_root_path = pin_root);
	struct bpf_object *obj = bpf_object__open_mem(buf, len, &opts);

	if (libbpf_get_error(obj)) {
		errno = -(int)libbpf_get_error(obj);
		return NULL;
	}
	return obj;
}

int weft_link_info(int link_fd, uint32_t *prog_id, uint64_t *cgroup_id, uint32_t *attach_type)
{
	struct bpf_link_info info;
	__u32 len = sizeof(info);

	memset(&info, 0, sizeof(info));
	if (bpf_obj_get_info_by_fd(link_fd, &info, &len))
		return -errno;
	*prog_id = info.prog_id;
	*cgroup_id = info.type == BPF_LINK_TYPE_CGROUP ? info.cgroup.cgroup_id : 0;
	*attach_type = info.type == BPF_LINK_TYPE_CGROUP ? info.cgroup.attach_type : 0;
	return 0;
}

int weft_sockmap_attach_msg_verdict(int prog_fd, int map_fd)
{
	__u32 ids[8], count = 8, flags = 0, i;

	if (bpf_prog_attach(prog_fd, map_fd, BPF_SK_MSG_VERDICT, 0) == 0)
		return 0;
	if (bpf_prog_query(map_fd, BPF_SK_MSG_VERDICT, 0, &flags, ids, &count))
		return -errno;
	for (i = 0; i < count && i < 8; i++) {
		int old = bpf_prog_get_fd_by_id(ids[i]);

		if (old >= 0) {
			bpf_prog_detach2(old, map_fd, BPF_SK_MSG_VERDICT);
			close(old);
		}
	}
	if (bpf_prog_attach(prog_fd, map_fd, BPF_SK_MSG_VERDICT, 0))
		return -errno;
	return 0;
}

int weft_prog_id(int prog_fd, uint32_t *prog_id)
{
	struct bpf_prog_info info;
	__u32 len = sizeof(info);

	memset(&info, 0, sizeof(info));
	if (bpf_obj_get_info_by_fd(prog_fd, &info, &len))
		return -errno;
	*prog_id = info.id;
	return 0;
}

int weft_prog_stats(int prog_fd, uint64_t *run_cnt, uint64_t *run_time_ns)
{
	struct bpf_prog_info info;
	__u32 len = sizeof(info);

	memset(&info, 0, sizeof(info));
	if (bpf_obj_get_info_by_fd(prog_fd, &info, &len))
		return -errno;
	*run_cnt = info.run_cnt;
	*run_time_ns = info.run_time_ns;
	return 0;
}

int weft_enable_run_time_stats(void)
{
	/* The kernel counts run time only while some fd asks it to (or the
	 * kernel.bpf_stats_enabled sysctl is set); weftd holds this fd. */
	int fd = bpf_enable_stats(BPF_STATS_RUN_TIME);
	return fd < 0 ? -errno : fd;
}

int weft_cgroup_effective_progs(int cgroup_fd, int attach_type, uint32_t *ids, uint32_t *count)
{
	__u32 flags = 0;

	if (bpf_prog_query(cgroup_fd, (enum bpf_attach_type)attach_type, BPF_F_QUERY_EFFECTIVE, &flags, ids, count))
		return -errno;
	return 0;
}

int weft_socket_in_netns(int netns_fd, int home_fd, int domain, int type)
{
	int fd, err;

	if (setns(netns_fd, CLONE_NEWNET))
		return -errno;
	fd = socket(domain, type | SOCK_CLOEXEC, 0);
	err = fd < 0 ? -errno : 0;
	if (setns(home_fd, CLONE_NEWNET)) {
		/* A thread stranded in a workload's netns would open every later
		 * socket there. That must never happen quietly. */
		fprintf(stderr, "weftd: cannot return to the node network namespace: %s\n", strerror(errno));
		abort();
	}
	return fd < 0 ? err : fd;
}

static socklen_t weft_sockaddr(int family, const uint8_t addr16[16], uint16_t port, struct sockaddr_storage *ss)
{
	memset(ss, 0, sizeof(*ss));
	if (family == AF_INET) {
		struct sockaddr_in *sin = (struct sockaddr_in *)ss;

		sin->sin_family = AF_INET;
		sin->sin_port = htons(port);
		memcpy(&sin->sin_addr, addr16 + 12, 4);
		return sizeof(*sin);
	} else {
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;

		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons(port);
		memcpy(&sin6->sin6_addr, addr16, 16);
		return sizeof(*sin6);
	}
}

int weft_bind_listen(int fd, int family, const uint8_t addr16[16], uint16_t port, int backlog)
{
	struct sockaddr_storage ss;
	socklen_t len = weft_sockaddr(family, addr16, port, &ss);
	int one = 1;

	if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)))
		return -errno;
	if (family == AF_INET6 && setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one)))
		return -errno;
	if (bind(fd, (struct sockaddr *)&ss, len))
		return -errno;
	if (listen(fd, backlog))
		return -errno;
	if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK))
		return -errno;
	return 0;
}

int weft_bind_datagram(int fd, int family, const uint8_t addr16[16], uint16_t port)
{
	struct sockaddr_storage ss;
	socklen_t len = weft_sockaddr(family, addr16, port, &ss);
	int one = 1;

	if (family == AF_INET6 && setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one)))
		return -errno;
	if (bind(fd, (struct sockaddr *)&ss, len))
		return -errno;
	if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK))
		return -errno;
	return 0;
}

int weft_connect_timeout(int fd, int family, const uint8_t addr16[16], uint16_t port, int timeout_ms)
{
	struct sockaddr_storage ss;
	socklen_t len = weft_sockaddr(family, addr16, port, &ss);
	struct pollfd pfd = { .fd = fd, .events = POLLOUT };
	int err = 0;
	socklen_t errlen = sizeof(err);
	int rc;

	if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK))
		return -errno;
	if (connect(fd, (struct sockaddr *)&ss, len) == 0)
		return 0;
	if (errno != EINPROGRESS)
		return -errno;
	do {
		rc = poll(&pfd, 1, timeout_ms);
	} while (rc < 0 && errno == EINTR);
	if (rc == 0)
		return -ETIMEDOUT;
	if (rc < 0)
		return -errno;
	if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &errlen))
		return -errno;
	return -err;
}

uint64_t weft_socket_netns_cookie(int fd)
{
	uint64_t cookie = 0;
	socklen_t len = sizeof(cookie);

	if (getsockopt(fd, SOL_SOCKET, SO_NETNS_COOKIE, &cookie, &len))
		return 0;
	return cookie;
}

uint64_t weft_netns_cookie_of(int netns_fd, int home_fd)
{
	int fd = weft_socket_in_netns(netns_fd, home_fd, AF_INET, SOCK_DGRAM);
	uint64_t cookie;

	if (fd < 0)
		return 0;
	cookie = weft_socket_netns_cookie(fd);
	close(fd);
	return cookie;
}

int weft_set_mark(int fd, uint32_t mark)
{
	if (setsockopt(fd, SOL_SOCKET, SO_MARK, &mark, sizeof(mark)))
		return -errno;
	return 0;
}

int weft_is_bpffs(const char *path)
{
	struct statfs st;

	if (statfs(path, &st))
		return -errno;
	return st.f_type == BPF_FS_MAGIC;
}

int weft_is_cgroup2(const char *path)
{
	struct statfs st;

	if (statfs(path, &st))
		return -errno;
	return st.f_type == CGROUP2_SUPER_MAGIC;
}

int weft_affinity_cpu_count(void)
{
    cpu_set_t set;
    CPU_ZERO(&set);
    if (sched_getaffinity(0, sizeof(set), &set) != 0)
        return 1;
    int n = CPU_COUNT(&set);
    return n > 0 ? n : 1;
}

int weft_malloc_thresholds(int trim_bytes, int mmap_bytes)
{
    return mallopt(M_TRIM_THRESHOLD, trim_bytes) == 1 && mallopt(M_MMAP_THRESHOLD, mmap_bytes) == 1;
}

/* PRIO_PROCESS with a thread id names that thread alone on Linux; with the
 * process id, its main thread. */
static int nice_of(id_t id)
{
    errno = 0;
    int nice = getpriority(PRIO_PROCESS, id);
    return (nice == -1 && errno != 0) ? -100 : nice;
}

int weft_process_nice(void)
{
    return nice_of((id_t)getpid());
}

int weft_thread_nice(void)
{
    return nice_of((id_t)gettid());
}

int weft_thread_set_nice(int nice)
{
    return setpriority(PRIO_PROCESS, (id_t)gettid(), nice) == 0 ? 0 : -errno;
}
