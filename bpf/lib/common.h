/* SPDX-License-Identifier: Apache-2.0 */
/* Includes and small constants every Weft eBPF program needs. */
#ifndef WEFT_LIB_COMMON_H
#define WEFT_LIB_COMMON_H

#include <linux/bpf.h>
#include <linux/types.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "../weft_abi.h"

#ifndef AF_INET
#define AF_INET 2
#endif
#ifndef AF_INET6
#define AF_INET6 10
#endif
#ifndef SOCK_STREAM
#define SOCK_STREAM 1
#endif
#ifndef SOCK_DGRAM
#define SOCK_DGRAM 2
#endif

/* Return values of cgroup sock_addr programs. */
#define SYS_REJECT  0   /* the syscall fails with EPERM */
#define SYS_PROCEED 1

#endif
