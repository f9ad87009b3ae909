/* SPDX-License-Identifier: Apache-2.0 */
/* Address helpers shared by the sock hooks. */
#ifndef WEFT_LIB_ADDR_H
#define WEFT_LIB_ADDR_H

#include "common.h"

/* Store an IPv4 address (network order) as ::ffff:a.b.c.d. */
static __always_inline void addr_from_v4(__u8 dst[16], __u32 ip4)
{
	__u32 *w = (__u32 *)dst;
	w[0] = 0;
	w[1] = 0;
	w[2] = bpf_htonl(0x0000ffff);
	w[3] = ip4;
}

static __always_inline void addr_from_v6(__u8 dst[16], const __u32 ip6[4])
{
	__u32 *w = (__u32 *)dst;
	w[0] = ip6[0];
	w[1] = ip6[1];
	w[2] = ip6[2];
	w[3] = ip6[3];
}

static __always_inline int ip6_is_v4_mapped(__u32 w0, __u32 w1, __u32 w2)
{
	return w0 == 0 && w1 == 0 && w2 == bpf_htonl(0x0000ffff);
}

static __always_inline int ip4_is_loopback(__u32 ip4)
{
	return (bpf_ntohl(ip4) >> 24) == 127;
}

static __always_inline int ip6_is_loopback(__u32 w0, __u32 w1, __u32 w2, __u32 w3)
{
	return w0 == 0 && w1 == 0 && w2 == 0 && w3 == bpf_htonl(1);
}

/*
 * A connection's key from a context that carries a socket's addresses and
 * ports, struct bpf_sock_ops or struct sk_msg_md (local_port in host order,
 * remote_port in network order in the top half, as both give them): `src`
 * and `dst` are `local` or `remote`, which end goes first. A macro, as the
 * two contexts are different types with the same fields. A dual-stack socket
 * talking IPv4 already holds the ::ffff: forms in its IPv6 fields.
 */
#define tuple_port_local(ctx)  ((__u16)(ctx)->local_port)
#define tuple_port_remote(ctx) ((__u16)bpf_ntohl((ctx)->remote_port))
#define tuple_key_from(ctx, key, src, dst)                                                       \
	do {                                                                                     \
		__builtin_memset((key), 0, sizeof(*(key)));                                      \
		(key)->netns_cookie = bpf_get_netns_cookie(ctx);                                 \
		if ((ctx)->family == AF_INET) {                                                  \
			addr_from_v4((key)->src_addr, (ctx)->src##_ip4);                         \
			addr_from_v4((key)->dst_addr, (ctx)->dst##_ip4);                         \
		} else {                                                                         \
			__u32 s_[4] = { (ctx)->src##_ip6[0], (ctx)->src##_ip6[1], (ctx)->src##_ip6[2], \
					(ctx)->src##_ip6[3] };                                   \
			__u32 d_[4] = { (ctx)->dst##_ip6[0], (ctx)->dst##_ip6[1], (ctx)->dst##_ip6[2], \
					(ctx)->dst##_ip6[3] };                                   \
			addr_from_v6((key)->src_addr, s_);                                       \
			addr_from_v6((key)->dst_addr, d_);                                       \
		}                                                                                \
		(key)->src_port = tuple_port_##src(ctx);                                         \
		(key)->dst_port = tuple_port_##dst(ctx);                                         \
	} while (0)

static __always_inline void sockops_tuple_key(struct bpf_sock_ops *skops, struct weft_tuple_key *key)
{
	tuple_key_from(skops, key, local, remote);
}

#endif
