/* SPDX-License-Identifier: Apache-2.0 */
/*
 * DNS capture (the way Merbridge and Cilium do it): a meshed workload's UDP
 * packets to port 53 go to weftd's DNS server on loopback instead, and the
 * replies come back looking as if the resolver it asked had sent them, so
 * neither the application nor its resolver library needs to know.
 *
 * connect() covers resolvers that connect their UDP socket (glibc, musl),
 * sendmsg() those that address each datagram; recvmsg() puts the resolver's
 * address back on the replies; getpeername() does for connected sockets.
 * DNS over TCP goes through the ordinary TCP capture.
 */
#ifndef WEFT_LIB_DNS_H
#define WEFT_LIB_DNS_H

#include "common.h"
#include "maps.h"
#include "addr.h"
#include "capture.h"

#define WEFT_DNS_PORT 53

/* Whether this UDP destination is a resolver to capture. Loopback resolvers
 * (127.0.0.53, systemd-resolved) are captured too, unlike TCP's default
 * loopback exclusion: names must resolve the same wherever the node's
 * resolver lives. An excluded port 53 turns DNS capture off. */
static __always_inline const struct weft_config *dns_capture_config(struct bpf_sock_addr *ctx, __u16 dst_port)
{
	const struct weft_config *cfg;
	struct bpf_sock *sk = ctx->sk;

	if (ctx->type != SOCK_DGRAM || dst_port != WEFT_DNS_PORT)
		return 0;
	cfg = capture_config();
	if (!cfg || cfg->dns_port == 0)
		return 0;
	if (sk && cfg->proxy_mark != 0 && sk->mark == cfg->proxy_mark)
		return 0;
	if (capture_port_excluded(dst_port))
		return 0;
	return cfg;
}

/* Remember the resolver for this socket. Failure to remember is not fatal
 * here (unlike TCP): the reply would then carry weftd's loopback address
 * and the resolver library would drop it and retry, never bypass the mesh. */
static __always_inline void dns_record(struct bpf_sock_addr *ctx, const __u8 addr[16], __u16 port, __u16 family)
{
	orig_record(&WEFT_MAP_DNS_ORIG, ctx, addr, port, family);
}

static __always_inline int dns_redirect4(struct bpf_sock_addr *ctx)
{
	__u32 dst_ip = ctx->user_ip4;
	__u16 dst_port = bpf_ntohs((__u16)ctx->user_port);
	const struct weft_config *cfg = dns_capture_config(ctx, dst_port);
	__u8 addr[16];

	if (!cfg)
		return SYS_PROCEED;
	if (ip4_is_loopback(dst_ip) && dst_port == cfg->dns_port)
		return SYS_PROCEED;
	addr_from_v4(addr, dst_ip);
	dns_record(ctx, addr, dst_port, AF_INET);
	ctx->user_ip4 = bpf_htonl(WEFT_PROXY_IP4);
	ctx->user_port = bpf_htons(cfg->dns_port);
	return SYS_PROCEED;
}

static __always_inline int dns_redirect6(struct bpf_sock_addr *ctx)
{
	__u16 dst_port = bpf_ntohs((__u16)ctx->user_port);
	const struct weft_config *cfg = dns_capture_config(ctx, dst_port);
	__u32 ip6[4];
	__u8 addr[16];

	if (!cfg)
		return SYS_PROCEED;
	ip6[0] = ctx->user_ip6[0];
	ip6[1] = ctx->user_ip6[1];
	ip6[2] = ctx->user_ip6[2];
	ip6[3] = ctx->user_ip6[3];
	if (ip6_is_v4_mapped(ip6[0], ip6[1], ip6[2]) ? ip4_is_loopback(ip6[3]) && dst_port == cfg->dns_port
	                                              : ip6_is_loopback(ip6[0], ip6[1], ip6[2], ip6[3]) && dst_port == cfg->dns_port)
		return SYS_PROCEED;
	addr_from_v6(addr, ip6);
	dns_record(ctx, addr, dst_port, AF_INET6);
	redirect6_to_loopback(ctx, ip6_is_v4_mapped(ip6[0], ip6[1], ip6[2]), cfg->dns_port);
	return SYS_PROCEED;
}

/* A reply from weftd's DNS server to a socket we redirected: give it the
 * resolver's address back. Anything else is left alone. */
static __always_inline const struct weft_orig_dst *dns_reply_origin(struct bpf_sock_addr *ctx, __u16 src_port)
{
	const struct weft_config *cfg = capture_config();
	__u64 cookie;

	if (!cfg || cfg->dns_port == 0 || src_port != cfg->dns_port)
		return 0;
	cookie = bpf_get_socket_cookie(ctx);
	return bpf_map_lookup_elem(&WEFT_MAP_DNS_ORIG, &cookie);
}

#endif
