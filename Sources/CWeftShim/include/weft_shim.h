/* C helpers for weftd: the parts of libbpf and Linux that are awkward to
 * reach from Swift (option structs built by macros, va_list logging,
 * per-thread setns). The map layouts come from weft_abi.h, shared with bpf/. */
#ifndef WEFT_SHIM_H
#define WEFT_SHIM_H

#include <stdint.h>
#include <stddef.h>
#include <sys/socket.h>
#include <bpf/libbpf.h>
#include <bpf/bpf.h>
#include <bpf/btf.h>
#include "weft_abi.h"

/* libbpf's messages are routed to this callback (level: 0 warn, 1 info, 2 debug). */
typedef void (*weft_log_fn)(int level, const char *message);
void weft_bpf_set_logger(weft_log_fn fn);

/* Opens an ELF object held in memory; maps marked LIBBPF_PIN_BY_NAME are
 * pinned (or reused) under pin_root. Returns NULL and sets errno on failure. */
struct bpf_object *weft_bpf_open_mem(const void *buf, size_t len, const char *name, const char *pin_root);

/* Link and program facts from the kernel. Return 0 or -errno. */
int weft_link_info(int link_fd, uint32_t *prog_id, uint64_t *cgroup_id, uint32_t *attach_type);
int weft_prog_id(int prog_fd, uint32_t *prog_id);
/* Run count and total run time (ns) of a program (kernel BPF stats). */
int weft_prog_stats(int prog_fd, uint64_t *run_cnt, uint64_t *run_time_ns);
/* Turns on run-time statistics while the returned fd stays open. */
int weft_enable_run_time_stats(void);
/* Programs effective on a cgroup for one attach type (inherited ones included). */
int weft_cgroup_effective_progs(int cgroup_fd, int attach_type, uint32_t *ids, uint32_t *count);

/* Attaches prog_fd as the sk_msg verdict of the sockhash map_fd, replacing
 * one an earlier weftd attached to the same pinned map. Returns 0 or -errno. */
int weft_sockmap_attach_msg_verdict(int prog_fd, int map_fd);

/* Sets glibc's fixed trim and mmap thresholds (mallopt). Returns 1 on
 * success, 0 where glibc refused. */
int weft_malloc_thresholds(int trim_bytes, int mmap_bytes);

/* The process's nice value: its main thread's, as `nice` or systemd's Nice=
 * set it. -100 on failure. */
int weft_process_nice(void);

/* The calling thread's nice value (Linux: per thread), or -100 on failure. */
int weft_thread_nice(void);

/* Sets the calling thread's nice value (the kernel clamps it to -20..19).
 * Returns 0, or -errno (EACCES: raising priority needs CAP_SYS_NICE). */
int weft_thread_set_nice(int nice);

/* Creates a socket inside the network namespace netns_fd, then returns the
 * calling thread to home_fd. Sockets keep the netns they were created in,
 * so everything after socket() can happen on any thread.
 * Returns the fd or -errno. */
int weft_socket_in_netns(int netns_fd, int home_fd, int domain, int type);

/* Binds fd to addr16 (IPv4-mapped for IPv4 when family is AF_INET) and port,
 * then listens. Returns 0 or -errno. */
int weft_bind_listen(int fd, int family, const uint8_t addr16[16], uint16_t port, int backlog);

/* Binds a datagram socket (IPV6_V6ONLY for AF_INET6) and makes it
 * non-blocking. Returns 0 or -errno. */
int weft_bind_datagram(int fd, int family, const uint8_t addr16[16], uint16_t port);

/* Connects fd to addr16:port, waiting at most timeout_ms. Leaves the socket
 * non-blocking. Returns 0 or -errno (ETIMEDOUT, ECONNREFUSED, ...). */
int weft_connect_timeout(int fd, int family, const uint8_t addr16[16], uint16_t port, int timeout_ms);

/* The network namespace cookie of a socket, or 0 when unavailable. */
uint64_t weft_socket_netns_cookie(int fd);

/* The network namespace cookie of a netns given by fd (creates a throwaway
 * socket inside it). 0 when unavailable. */
uint64_t weft_netns_cookie_of(int netns_fd, int home_fd);

/* Setting SO_MARK needs CAP_NET_ADMIN. Returns 0 or -errno. */
int weft_set_mark(int fd, uint32_t mark);

/* CPUs this process may run on (sched_getaffinity), at least 1. A weftd
 * pinned with taskset or systemd's CPUAffinity= runs that many event loops,
 * not one per CPU of the machine. */
int weft_affinity_cpu_count(void);

/* 1 when path is on a bpffs mount, 0 when not, -errno on error. */
int weft_is_bpffs(const char *path);
/* 1 when path is on a cgroup2 mount. */
int weft_is_cgroup2(const char *path);

#endif
