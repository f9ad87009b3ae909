/* SPDX-License-Identifier: Apache-2.0 */
/* The capture decision and the bookkeeping shared by connect4 and connect6. */
#ifndef WEFT_LIB_CAPTURE_H
#define WEFT_LIB_CAPTURE_H

#include "common.h"
#include "maps.h"
#include "addr.h"

#define WEFT_PROXY_IP4 0x7f000001 /* 127.0.0.1, host order */

static __always_inline const struct weft_config *capture_config(void)
{
	__u32 zero = 0;
	const struct weft_config *cfg = bpf_map_lookup_elem(&WEFT_MAP_CONFIG, &zero);

	/* A config written by another ABI, or none yet, cannot be trusted to
	 * name the proxy: callers fail closed. */
	if (!cfg || cfg->abi_version != WEFT_ABI_VERSION || cfg->outbound_port == 0)
		return 0;
	return cfg;
}

static __always_inline int capture_port_excluded(__u16 port)
{
	return bpf_map_lookup_elem(&WEFT_MAP_EXCL_PORTS, &port) != 0;
}

static __always_inline int capture_cidr4_excluded(__u32 ip4)
{
	struct weft_cidr4_key key = { .prefixlen = 32 };

	__builtin_memcpy(key.addr, &ip4, 4);
	return bpf_map_lookup_elem(&WEFT_MAP_EXCL_CIDR4, &key) != 0;
}

static __always_inline int capture_cidr6_excluded(const __u32 ip6[4])
{
	struct weft_cidr6_key key = { .prefixlen = 128 };

	addr_from_v6(key.addr, ip6);
	return bpf_map_lookup_elem(&WEFT_MAP_EXCL_CIDR6, &key) != 0;
}

/* Stores where a socket really wanted to go in `map`, keyed by its cookie,
 * with who asked (cgroup, netns, pid). Returns the map update's result. */
static __always_inline int orig_record(void *map, struct bpf_sock_addr *ctx, const __u8 addr[16], __u16 port, __u16 family)
{
	struct weft_orig_dst orig = {};
	__u64 cookie = bpf_get_socket_cookie(ctx);

	__builtin_memcpy(orig.addr, addr, 16);
	orig.port = port;
	orig.family = family;
	orig.pid = bpf_get_current_pid_tgid() >> 32;
	orig.cgroup_id = bpf_get_current_cgroup_id();
	orig.netns_cookie = bpf_get_netns_cookie(ctx);
	return bpf_map_update_elem(map, &cookie, &orig, BPF_ANY);
}

/*
 * Remember where the socket really wanted to go. If the record cannot be
 * stored the caller rejects the connect(): a redirected connection whose
 * destination the proxy cannot learn would be dropped anyway, and letting it
 * through unredirected would bypass the mesh.
 */
static __always_inline int capture_record(struct bpf_sock_addr *ctx, const __u8 addr[16], __u16 port, __u16 family)
{
	return orig_record(&WEFT_MAP_ORIG_DST, ctx, addr, port, family);
}

/* Point an IPv6 socket at weftd on loopback: ::ffff:127.0.0.1 when it was
 * talking IPv4 (dual stack), ::1 otherwise. */
static __always_inline void redirect6_to_loopback(struct bpf_sock_addr *ctx, int mapped, __u16 port)
{
	ctx->user_ip6[0] = 0;
	ctx->user_ip6[1] = 0;
	ctx->user_ip6[2] = mapped ? bpf_htonl(0x0000ffff) : 0;
	ctx->user_ip6[3] = mapped ? bpf_htonl(WEFT_PROXY_IP4) : bpf_htonl(1);
	ctx->user_port = bpf_htons(port);
}

/* Give a socket address back what a record says it originally was (for
 * getpeername on any socket, recvmsg on DNS sockets). */
static __always_inline void restore4(struct bpf_sock_addr *ctx, const struct weft_orig_dst *orig)
{
	__u32 ip4;

	__builtin_memcpy(&ip4, &orig->addr[12], 4);
	ctx->user_ip4 = ip4;
	ctx->user_port = bpf_htons(orig->port);
}

static __always_inline void restore6(struct bpf_sock_addr *ctx, const struct weft_orig_dst *orig)
{
	__u32 w[4];

	__builtin_memcpy(w, orig->addr, 16);
	ctx->user_ip6[0] = w[0];
	ctx->user_ip6[1] = w[1];
	ctx->user_ip6[2] = w[2];
	ctx->user_ip6[3] = w[3];
	ctx->user_port = bpf_htons(orig->port);
}

#endif
