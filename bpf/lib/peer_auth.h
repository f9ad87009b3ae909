/* SPDX-License-Identifier: Apache-2.0 */
/*
 * PeerAuthentication STRICT, in the kernel: a connection into a meshed
 * workload is let in only from the node proxy (which has authenticated the
 * peer with mutual TLS, or knows it from its cgroup on this node). Enforcing it
 * here rather than only in weftd means a plaintext client cannot reach a STRICT
 * workload by dialling its port directly, from another node or from an
 * unmeshed process beside it, and a stopped or restarting weftd opens no gap:
 * the program and its maps stay pinned.
 *
 * Only a connection's first packet (SYN without ACK) is judged: everything
 * after it belongs to a connection already let in, and a dropped SYN leaves
 * nothing behind. A workload talking to itself (same cgroup) is always let in.
 */
#ifndef WEFT_LIB_PEER_AUTH_H
#define WEFT_LIB_PEER_AUTH_H

#include "common.h"
#include "maps.h"

#define CG_SKB_DROP 0
#define CG_SKB_PASS 1

#define WEFT_ETH_P_IP   0x0800
#define WEFT_ETH_P_IPV6 0x86DD
#define WEFT_IPPROTO_TCP 6
#define WEFT_TCP_FLAG_SYN 0x02
#define WEFT_TCP_FLAG_ACK 0x10
/* The deepest cgroup level looked at for an entry (systemd trees are shallow). */
#define WEFT_MTLS_MAX_LEVEL 16

/* Wire formats, spelled out to keep the object free of libc headers. */
struct weft_ip4_hdr {
	__u8  ver_ihl;
	__u8  tos;
	__be16 tot_len;
	__be16 id;
	__be16 frag_off;
	__u8  ttl;
	__u8  protocol;
	__be16 check;
	__be32 saddr;
	__be32 daddr;
};

struct weft_ip6_hdr {
	__be32 ver_tc_flow;
	__be16 payload_len;
	__u8  nexthdr;
	__u8  hop_limit;
	__u32 saddr[4];
	__u32 daddr[4];
};

/* The TCP ports and flags (the first 14 bytes of the header). */
struct weft_tcp_head {
	__be16 source;
	__be16 dest;
	__be32 seq;
	__be32 ack_seq;
	__u8  doff;
	__u8  flags;
};

struct weft_syn {
	struct bpf_sock_tuple reply;   /* the dialling socket's view: local = its source */
	__u32 tuple_size;
	__u16 dport;                   /* host order */
	int   is_syn;
};

/* Parses a SYN. Returns 0 when the packet is TCP and was parsed; -1 when it
 * is not TCP; -2 when it is IPv6 whose TCP header could not be found (extension
 * headers beyond what is walked here): callers treat that as a SYN to an
 * unknown port, so that extension headers cannot be used to slip past STRICT. */
static __always_inline int peer_auth_parse(struct __sk_buff *skb, struct weft_syn *syn)
{
	struct weft_tcp_head tcp;
	__u32 off;

	if (skb->protocol == bpf_htons(WEFT_ETH_P_IP)) {
		struct weft_ip4_hdr ip;

		if (bpf_skb_load_bytes(skb, 0, &ip, sizeof(ip)))
			return -1;
		if (ip.protocol != WEFT_IPPROTO_TCP)
			return -1;
		/* A non-first fragment carries no TCP header; a SYN is never fragmented. */
		if (ip.frag_off & bpf_htons(0x1FFF))
			return -1;
		off = (ip.ver_ihl & 0x0F) * 4;
		if (bpf_skb_load_bytes(skb, off, &tcp, sizeof(tcp)))
			return -1;
		syn->reply.ipv4.saddr = ip.daddr;
		syn->reply.ipv4.daddr = ip.saddr;
		syn->reply.ipv4.sport = tcp.dest;
		syn->reply.ipv4.dport = tcp.source;
		syn->tuple_size = sizeof(syn->reply.ipv4);
	} else if (skb->protocol == bpf_htons(WEFT_ETH_P_IPV6)) {
		struct weft_ip6_hdr ip;
		__u8 next;
		int i;

		if (bpf_skb_load_bytes(skb, 0, &ip, sizeof(ip)))
			return -1;
		next = ip.nexthdr;
		off = sizeof(ip);
		/* Hop-by-hop, routing and destination options, a few deep. */
#pragma unroll
		for (i = 0; i < 4; i++) {
			__u8 ext[2];

			if (next != 0 && next != 43 && next != 60)
				break;
			if (bpf_skb_load_bytes(skb, off, ext, sizeof(ext)))
				return -2;
			next = ext[0];
			off += (ext[1] + 1) * 8;
		}
		if (next == 0 || next == 43 || next == 60 || next == 44)
			return -2;
		if (next != WEFT_IPPROTO_TCP)
			return -1;
		if (bpf_skb_load_bytes(skb, off, &tcp, sizeof(tcp)))
			return -2;
		__builtin_memcpy(syn->reply.ipv6.saddr, ip.daddr, 16);
		__builtin_memcpy(syn->reply.ipv6.daddr, ip.saddr, 16);
		syn->reply.ipv6.sport = tcp.dest;
		syn->reply.ipv6.dport = tcp.source;
		syn->tuple_size = sizeof(syn->reply.ipv6);
	} else {
		return -1;
	}
	syn->dport = bpf_ntohs(tcp.dest);
	syn->is_syn = (tcp.flags & WEFT_TCP_FLAG_SYN) && !(tcp.flags & WEFT_TCP_FLAG_ACK);
	return 0;
}

/* The mode for the receiving socket's cgroup and port: its own cgroup first,
 * then each ancestor up to the root; per level, the port's entry before the
 * cgroup-wide one. 0: no entry (not a meshed workload). */
static __always_inline __u32 peer_auth_mode(struct __sk_buff *skb, __u16 port, __u64 *workload_cgroup)
{
	int level;

	*workload_cgroup = 0;
	for (level = WEFT_MTLS_MAX_LEVEL; level >= 0; level--) {
		struct weft_mtls_key key = {};
		struct weft_mtls_value *v;
		__u64 id = bpf_skb_ancestor_cgroup_id(skb, level);

		if (!id)
			continue;
		if (!*workload_cgroup)
			*workload_cgroup = id;
		key.cgroup_id = id;
		key.port = port;
		if (port) {
			v = bpf_map_lookup_elem(&WEFT_MAP_MTLS_MODE, &key);
			if (v)
				return v->mode;
		}
		key.port = 0;
		v = bpf_map_lookup_elem(&WEFT_MAP_MTLS_MODE, &key);
		if (v)
			return v->mode;
	}
	return 0;
}

/* Whether the SYN was sent by the node proxy or by the workload itself: the
 * dialling socket must be on this node, in this network namespace, still
 * connecting, and either the proxy's (mark and cgroup) or in the receiver's
 * own cgroup. A SYN from another node has no socket here at all. */
static __always_inline int peer_auth_trusted_sender(struct __sk_buff *skb, struct weft_syn *syn, __u64 receiver_cgroup)
{
	__u32 zero = 0;
	const struct weft_proxy_id *proxy = bpf_map_lookup_elem(&WEFT_MAP_PROXY_ID, &zero);
	struct bpf_sock *sk;
	int trusted = 0;

	sk = bpf_sk_lookup_tcp(skb, &syn->reply, syn->tuple_size, BPF_F_CURRENT_NETNS, 0);
	if (!sk)
		return 0;
	if (sk->state == BPF_TCP_SYN_SENT) {
		__u64 cg = bpf_sk_cgroup_id(sk);

		if (cg && cg == receiver_cgroup)
			trusted = 1;
		else if (proxy && proxy->cgroup_id && cg == proxy->cgroup_id && proxy->mark && sk->mark == proxy->mark)
			trusted = 1;
	}
	bpf_sk_release(sk);
	return trusted;
}

static __always_inline void peer_auth_count(__u64 cgroup, int refused)
{
	struct weft_inbound_stats *s = bpf_map_lookup_elem(&WEFT_MAP_INBOUND_STATS, &cgroup);

	if (!s) {
		struct weft_inbound_stats zero = {};

		bpf_map_update_elem(&WEFT_MAP_INBOUND_STATS, &cgroup, &zero, BPF_NOEXIST);
		s = bpf_map_lookup_elem(&WEFT_MAP_INBOUND_STATS, &cgroup);
		if (!s)
			return;
	}
	/* Per-CPU values: no atomics needed. */
	if (refused)
		s->strict_refused++;
	else
		s->plaintext_accepted++;
}

#endif
