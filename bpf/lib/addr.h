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

#endif
