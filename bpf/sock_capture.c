/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Capture of meshed workloads' TCP connections, attached to each workload's
 * cgroup (v2). connect() is rewritten to the node proxy's outbound listener on
 * loopback and the original destination is recorded; sockops links the
 * established 4-tuple to that record so the proxy can find it on accept();
 * getpeername() gives the application back the address it dialled. UDP to
 * port 53 goes to weftd's DNS server instead (lib/dns.h).
 *
 * The same cgroups carry cgroup_skb/ingress (lib/peer_auth.h), which enforces
 * PeerAuthentication STRICT on connections into meshed workloads: capture and
 * its enforcement are attached, adopted and checked as one set of hooks.
 *
 * weft_sockops also enters a captured connection's socket, and a meshed
 * workload's end of a connection from the proxy, in weft_socks; with
 * weft_proxy_sockops (on weftd's own cgroup) entering the proxy's ends and
 * weft_msg_redirect (on the map), same-node legs skip the TCP/IP stack
 * (lib/redirect.h).
 *
 * Loopback is the right target in every network namespace: a workload in its
 * own netns (a container, a pod) reaches the listener weftd opened inside that
 * netns, the way Istio ambient's in-pod redirection does.
 */
#include "lib/common.h"
#include "lib/maps.h"
#include "lib/addr.h"
#include "lib/capture.h"
#include "lib/dns.h"
#include "lib/peer_auth.h"
#include "lib/redirect.h"

char _license[] SEC("license") = "Dual BSD/GPL";

/* The node proxy marks its own sockets; never capture them, or it would
 * connect to itself forever. */
static __always_inline int sock_is_proxy(struct bpf_sock_addr *ctx, const struct weft_config *cfg)
{
	struct bpf_sock *sk = ctx->sk;

	return sk && cfg->proxy_mark != 0 && sk->mark == cfg->proxy_mark;
}

SEC("cgroup/connect4")
int weft_sock4_connect(struct bpf_sock_addr *ctx)
{
	const struct weft_config *cfg;
	__u32 dst_ip = ctx->user_ip4;
	__u16 dst_port = bpf_ntohs((__u16)ctx->user_port);
	__u8 addr[16];

	/* UDP: only DNS is captured; raw sockets are not proxied. */
	if (ctx->type == SOCK_DGRAM)
		return dns_redirect4(ctx);
	if (ctx->type != SOCK_STREAM)
		return SYS_PROCEED;
	cfg = capture_config();
	if (!cfg)
		return SYS_REJECT;
	if (sock_is_proxy(ctx, cfg))
		return SYS_PROCEED;
	/* Already addressed to the proxy: leave it, or we would loop. */
	if (ip4_is_loopback(dst_ip) && dst_port == cfg->outbound_port)
		return SYS_PROCEED;
	if (capture_port_excluded(dst_port) || capture_cidr4_excluded(dst_ip))
		return SYS_PROCEED;

	addr_from_v4(addr, dst_ip);
	if (capture_record(ctx, addr, dst_port, AF_INET))
		return SYS_REJECT;
	ctx->user_ip4 = bpf_htonl(WEFT_PROXY_IP4);
	ctx->user_port = bpf_htons(cfg->outbound_port);
	return SYS_PROCEED;
}

SEC("cgroup/connect6")
int weft_sock6_connect(struct bpf_sock_addr *ctx)
{
	const struct weft_config *cfg;
	__u32 ip6[4];
	__u16 dst_port = bpf_ntohs((__u16)ctx->user_port);
	__u8 addr[16];
	int mapped;

	if (ctx->type == SOCK_DGRAM)
		return dns_redirect6(ctx);
	if (ctx->type != SOCK_STREAM)
		return SYS_PROCEED;
	cfg = capture_config();
	if (!cfg)
		return SYS_REJECT;
	if (sock_is_proxy(ctx, cfg))
		return SYS_PROCEED;

	ip6[0] = ctx->user_ip6[0];
	ip6[1] = ctx->user_ip6[1];
	ip6[2] = ctx->user_ip6[2];
	ip6[3] = ctx->user_ip6[3];
	mapped = ip6_is_v4_mapped(ip6[0], ip6[1], ip6[2]);

	if (mapped) {
		/* ::ffff:a.b.c.d on a dual-stack socket is IPv4 on the wire, and
		 * must obey the IPv4 exclusions exactly as connect4 does. */
		if (ip4_is_loopback(ip6[3]) && dst_port == cfg->outbound_port)
			return SYS_PROCEED;
		if (capture_port_excluded(dst_port) || capture_cidr4_excluded(ip6[3]))
			return SYS_PROCEED;
	} else {
		if (ip6_is_loopback(ip6[0], ip6[1], ip6[2], ip6[3]) && dst_port == cfg->outbound_port)
			return SYS_PROCEED;
		if (capture_port_excluded(dst_port) || capture_cidr6_excluded(ip6))
			return SYS_PROCEED;
	}

	addr_from_v6(addr, ip6);
	if (capture_record(ctx, addr, dst_port, AF_INET6))
		return SYS_REJECT;
	redirect6_to_loopback(ctx, mapped, cfg->outbound_port);
	return SYS_PROCEED;
}

/* Resolvers that address each datagram (sendto) rather than connect. */
SEC("cgroup/sendmsg4")
int weft_sock4_sendmsg(struct bpf_sock_addr *ctx)
{
	return dns_redirect4(ctx);
}

SEC("cgroup/sendmsg6")
int weft_sock6_sendmsg(struct bpf_sock_addr *ctx)
{
	return dns_redirect6(ctx);
}

/* Resolver libraries drop replies from an address they did not ask. */
SEC("cgroup/recvmsg4")
int weft_sock4_recvmsg(struct bpf_sock_addr *ctx)
{
	const struct weft_orig_dst *orig = dns_reply_origin(ctx, bpf_ntohs((__u16)ctx->user_port));

	if (orig && orig->family == AF_INET)
		restore4(ctx, orig);
	return SYS_PROCEED;
}

SEC("cgroup/recvmsg6")
int weft_sock6_recvmsg(struct bpf_sock_addr *ctx)
{
	const struct weft_orig_dst *orig = dns_reply_origin(ctx, bpf_ntohs((__u16)ctx->user_port));

	if (orig && orig->family == AF_INET6)
		restore6(ctx, orig);
	return SYS_PROCEED;
}

/* The record getpeername() restores: a captured TCP connection's, or a
 * captured DNS socket's resolver. */
static __always_inline struct weft_orig_dst *peer_record(struct bpf_sock_addr *ctx)
{
	__u64 cookie = bpf_get_socket_cookie(ctx);
	struct weft_orig_dst *orig = bpf_map_lookup_elem(&WEFT_MAP_ORIG_DST, &cookie);

	return orig ? orig : bpf_map_lookup_elem(&WEFT_MAP_DNS_ORIG, &cookie);
}

/* Applications that log or check their peer must see the address they dialled,
 * not the proxy. */
SEC("cgroup/getpeername4")
int weft_sock4_getpeername(struct bpf_sock_addr *ctx)
{
	struct weft_orig_dst *orig = peer_record(ctx);

	if (orig && orig->family == AF_INET)
		restore4(ctx, orig);
	return SYS_PROCEED;
}

SEC("cgroup/getpeername6")
int weft_sock6_getpeername(struct bpf_sock_addr *ctx)
{
	struct weft_orig_dst *orig = peer_record(ctx);

	if (orig && orig->family == AF_INET6)
		restore6(ctx, orig);
	return SYS_PROCEED;
}

SEC("sockops")
int weft_sockops(struct bpf_sock_ops *skops)
{
	__u64 cookie;
	struct weft_orig_dst *orig;
	struct weft_tuple_key key;

	if (skops->family != AF_INET && skops->family != AF_INET6)
		return 1;

	switch (skops->op) {
	case BPF_SOCK_OPS_TCP_CONNECT_CB:
		/* Ask for state changes on captured sockets only, so that their
		 * records are removed however the connection ends (refused,
		 * reset or closed): the maps cannot grow with dead entries. */
		cookie = bpf_get_socket_cookie(skops);
		if (bpf_map_lookup_elem(&WEFT_MAP_ORIG_DST, &cookie))
			bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags | BPF_SOCK_OPS_STATE_CB_FLAG);
		break;
	case BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB:
		cookie = bpf_get_socket_cookie(skops);
		orig = bpf_map_lookup_elem(&WEFT_MAP_ORIG_DST, &cookie);
		if (!orig)
			break;
		sockops_tuple_key(skops, &key);
		/* On failure the proxy finds no record and closes the
		 * connection: it never guesses a destination. */
		bpf_map_update_elem(&WEFT_MAP_TUPLE, &key, orig, BPF_ANY);
		/* Its peer is the proxy's listener on loopback. */
		if (redirect_enabled(capture_config()))
			redirect_join(skops, &key);
		break;
	case BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB:
		/* A connection into the workload: joins only when it came from
		 * a socket already in the map (the proxy's, on this node). */
		if (!redirect_enabled(capture_config()) || !redirect_local_peer(skops))
			break;
		sockops_tuple_key(skops, &key);
		if (redirect_from_proxy(&key))
			redirect_join(skops, &key);
		break;
	case BPF_SOCK_OPS_STATE_CB:
		if (skops->args[1] != BPF_TCP_CLOSE)
			break;
		cookie = bpf_get_socket_cookie(skops);
		bpf_map_delete_elem(&WEFT_MAP_ORIG_DST, &cookie);
		sockops_tuple_key(skops, &key);
		bpf_map_delete_elem(&WEFT_MAP_TUPLE, &key);
		redirect_leave(&key);
		break;
	}
	return 1;
}

SEC("cgroup_skb/ingress")
int weft_inbound_ingress(struct __sk_buff *skb)
{
	struct weft_syn syn = {};
	__u64 receiver = 0;
	__u32 mode;
	int parsed = peer_auth_parse(skb, &syn);

	if (parsed == -1 || (parsed == 0 && !syn.is_syn))
		return CG_SKB_PASS;
	/* IPv6 whose TCP header is out of reach: judged as a SYN to any port. */
	mode = peer_auth_mode(skb, parsed == 0 ? syn.dport : 0, &receiver);
	if (!mode)
		return CG_SKB_PASS;
	if (parsed == 0 && peer_auth_trusted_sender(skb, &syn, receiver))
		return CG_SKB_PASS;
	if (mode == WEFT_MTLS_STRICT) {
		peer_auth_count(receiver, 1);
		return CG_SKB_DROP;
	}
	if (parsed == 0)
		peer_auth_count(receiver, 0);
	return CG_SKB_PASS;
}

/*
 * On weftd's own cgroup: the proxy's ends of same-node legs join weft_socks.
 * Only sockets that are the proxy's by construction: accepted on the outbound
 * listener's port, or dialled with the proxy's mark (which takes
 * CAP_NET_ADMIN to set). Anything else started in weftd's cgroup is left alone.
 */
SEC("sockops")
int weft_proxy_sockops(struct bpf_sock_ops *skops)
{
	const struct weft_config *cfg;
	struct weft_tuple_key key;
	struct bpf_sock *sk;

	if (skops->family != AF_INET && skops->family != AF_INET6)
		return 1;
	if (skops->op == BPF_SOCK_OPS_STATE_CB) {
		if (skops->args[1] == BPF_TCP_CLOSE) {
			sockops_tuple_key(skops, &key);
			redirect_leave(&key);
		}
		return 1;
	}
	if (skops->op != BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB && skops->op != BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB)
		return 1;
	cfg = capture_config();
	if (!redirect_enabled(cfg) || !redirect_local_peer(skops))
		return 1;
	if (skops->op == BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB) {
		if (skops->local_port != cfg->outbound_port)
			return 1;
	} else {
		sk = skops->sk;
		if (!sk || cfg->proxy_mark == 0 || sk->mark != cfg->proxy_mark)
			return 1;
	}
	sockops_tuple_key(skops, &key);
	if (skops->op == BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB) {
		/* For the destination's end, which joins when it sees this. */
		__u8 one = 1;

		bpf_map_update_elem(&WEFT_MAP_PROXY_DIALS, &key, &one, BPF_ANY);
	}
	redirect_join(skops, &key);
	return 1;
}

/* On weft_socks: every write of a joined socket. */
SEC("sk_msg")
int weft_msg_redirect(struct sk_msg_md *msg)
{
	struct weft_tuple_key peer;
	__u32 *path, backlog;

	if (!msg->sk)
		return SK_PASS;
	path = bpf_sk_storage_get(&WEFT_MAP_SOCK_PATH, msg->sk, 0, 0);
	if (!path || *path == WEFT_PATH_TCP)
		return SK_PASS;
	redirect_msg_peer_key(msg, &peer);
	backlog = redirect_peer_backlog(&peer);
	if (backlog >= WEFT_REDIRECT_BACKLOG_MAX || msg->size > WEFT_REDIRECT_BACKLOG_MAX - backlog) {
		/* The peer is not keeping up, or cannot be asked: TCP for
		 * good, and its flow control (see lib/redirect.h). */
		*path = WEFT_PATH_TCP;
		return SK_PASS;
	}
	if (bpf_msg_redirect_hash(msg, &WEFT_MAP_SOCKS, &peer, BPF_F_INGRESS) == SK_PASS) {
		*path = WEFT_PATH_REDIRECT;
		return SK_PASS;
	}
	/* No peer at the first write: TCP for good. A peer gone later has
	 * closed, and TCP answers that with a reset. */
	if (*path == WEFT_PATH_UNDECIDED)
		*path = WEFT_PATH_TCP;
	return SK_PASS;
}
