/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Same-node legs, socket to socket. A meshed workload's connection to the node
 * proxy, and the proxy's connection to a meshed workload on the same node,
 * are loopback TCP: every write runs the TCP/IP output path and then, inside
 * the writer's own system call, its peer's input path. When both ends of such
 * a connection are in weft_socks, sk_msg hands the bytes to the peer socket's
 * receive queue instead (the sockmap redirect Cilium and Merbridge use).
 *
 * Why this cannot route around policy or capture: bytes go only to the socket
 * whose 4-tuple, in the same network namespace, is the exact reverse of the
 * writer's, which is where TCP would have delivered them anyway. Connection
 * setup still takes the TCP path, so capture (connect4/6), the proxy's
 * original-destination lookup and PeerAuthentication's check of the SYN
 * (cgroup_skb/ingress) see every connection; so do FIN and RST.
 *
 * Why bytes cannot be reordered: a receiver reads what was redirected to it
 * before what TCP queued, so one direction of a connection must use one path
 * from its first byte to its last. A socket joins at establishment, before it
 * has written anything (a socket that already has, say with TCP Fast Open,
 * stays out), and its first write decides its path for good (weft_sock_path):
 * redirected if the peer is in the map by then, TCP otherwise. A peer that
 * joins late (its handshake ACK still queued when the first write came) thus
 * costs that connection the fast path, never its order.
 *
 * Why a slow reader cannot pin the node's memory: a redirected write never
 * waits, whatever the receiver has left unread, so TCP's flow control is gone
 * with the TCP path. Before each write the peer's unread redirected bytes are
 * read (redirect_peer_backlog); past WEFT_REDIRECT_BACKLOG_MAX, or when they
 * cannot be read, the writer goes back to TCP for good, which is order-safe
 * (a receiver drains redirected bytes first) and brings flow control back.
 */
#ifndef WEFT_LIB_REDIRECT_H
#define WEFT_LIB_REDIRECT_H

#include "common.h"
#include "maps.h"
#include "addr.h"
#include <bpf/bpf_core_read.h>

/* The two kernel fields read, relocated against the running kernel's BTF
 * (CO-RE): a kernel without them leaves every connection on TCP. */
struct sock___weft {
	void *sk_user_data;
} __attribute__((preserve_access_index));

struct sk_psock___weft {
	__u32 msg_tot_len;
} __attribute__((preserve_access_index));

/* Flag bits the kernel keeps in the low bits of sk_user_data. */
#define WEFT_SK_USER_DATA_PTRMASK (~7UL)

static __always_inline int redirect_enabled(const struct weft_config *cfg)
{
	return cfg && (cfg->flags & WEFT_CFG_SOCKET_REDIRECT);
}

/* Only a loopback peer, or the node's own address, can be a same-node leg;
 * other sockets would never find their peer in the map, so stay out of it. */
static __always_inline int redirect_local_peer(struct bpf_sock_ops *skops)
{
	if (skops->family == AF_INET)
		return skops->remote_ip4 == skops->local_ip4 || ip4_is_loopback(skops->remote_ip4);
	if (skops->remote_ip6[0] == skops->local_ip6[0] && skops->remote_ip6[1] == skops->local_ip6[1] &&
	    skops->remote_ip6[2] == skops->local_ip6[2] && skops->remote_ip6[3] == skops->local_ip6[3])
		return 1;
	if (ip6_is_v4_mapped(skops->remote_ip6[0], skops->remote_ip6[1], skops->remote_ip6[2]))
		return ip4_is_loopback(skops->remote_ip6[3]);
	return ip6_is_loopback(skops->remote_ip6[0], skops->remote_ip6[1], skops->remote_ip6[2], skops->remote_ip6[3]);
}

static __always_inline void tuple_key_reversed(const struct weft_tuple_key *key, struct weft_tuple_key *rev)
{
	__builtin_memset(rev, 0, sizeof(*rev));
	rev->netns_cookie = key->netns_cookie;
	__builtin_memcpy(rev->src_addr, key->dst_addr, 16);
	__builtin_memcpy(rev->dst_addr, key->src_addr, 16);
	rev->src_port = key->dst_port;
	rev->dst_port = key->src_port;
}

/* Whether the peer of `key` (own end first) is a socket the proxy dialled:
 * its hint is taken, it is needed once. The hint only decides who joins;
 * whether bytes move is decided by the map itself, so a stale hint can at
 * worst admit a socket that then finds no peer and keeps the TCP path. */
static __always_inline int redirect_from_proxy(const struct weft_tuple_key *key)
{
	struct weft_tuple_key peer;

	tuple_key_reversed(key, &peer);
	if (!bpf_map_lookup_elem(&WEFT_MAP_PROXY_DIALS, &peer))
		return 0;
	bpf_map_delete_elem(&WEFT_MAP_PROXY_DIALS, &peer);
	return 1;
}

/* Adds the socket of an established connection, keyed by `key` (own end
 * first). Any failure leaves it out: its connection keeps the TCP path. */
static __always_inline void redirect_join(struct bpf_sock_ops *skops, struct weft_tuple_key *key)
{
	struct bpf_sock *sk = skops->sk;
	struct tcp_sock *tp;
	__u64 addr;
	__u32 *path;

	if (!sk || skops->data_segs_out != 0)
		return;
	tp = bpf_skc_to_tcp_sock(sk);
	if (!tp)
		return;
	/* Before the socket is in weft_socks: a peer that finds it there
	 * must also find how to read its backlog, or it takes TCP. */
	addr = (__u64)(unsigned long)tp;
	if (bpf_map_update_elem(&WEFT_MAP_SOCK_ADDR, key, &addr, BPF_ANY) != 0)
		return;
	bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags | BPF_SOCK_OPS_STATE_CB_FLAG);
	path = bpf_sk_storage_get(&WEFT_MAP_SOCK_PATH, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (!path)
		return;
	*path = WEFT_PATH_UNDECIDED;
	if (bpf_sock_hash_update(skops, &WEFT_MAP_SOCKS, key, BPF_NOEXIST) != 0)
		*path = WEFT_PATH_TCP;
}

/* At TCP_CLOSE: the socket leaves weft_socks by itself, its address here. */
static __always_inline void redirect_leave(const struct weft_tuple_key *key)
{
	bpf_map_delete_elem(&WEFT_MAP_SOCK_ADDR, key);
}

/* Redirected bytes the socket with key `peer` has not read yet; ~0 when that
 * cannot be known. Read from kernel memory with probe reads, which fail
 * rather than fault: an address gone stale (its socket closed, the entry
 * not yet deleted) gives a wrong number or none, never a crash, and a wrong
 * number can only move a connection to TCP, where its peer has gone anyway. */
static __always_inline __u32 redirect_peer_backlog(const struct weft_tuple_key *peer)
{
	const __u64 *addr;
	struct sock___weft *sk;
	struct sk_psock___weft *psock;
	void *user_data = 0;
	__u32 len = 0;

	if (!bpf_core_field_exists(((struct sk_psock___weft *)0)->msg_tot_len))
		return ~0u;
	addr = bpf_map_lookup_elem(&WEFT_MAP_SOCK_ADDR, peer);
	if (!addr)
		return ~0u;
	sk = (struct sock___weft *)(unsigned long)*addr;
	if (bpf_core_read(&user_data, sizeof(user_data), &sk->sk_user_data))
		return ~0u;
	psock = (struct sk_psock___weft *)((unsigned long)user_data & WEFT_SK_USER_DATA_PTRMASK);
	if (!psock || bpf_core_read(&len, sizeof(len), &psock->msg_tot_len))
		return ~0u;
	return len;
}

/* The key of the peer of the socket writing `msg`: its 4-tuple reversed. */
static __always_inline void redirect_msg_peer_key(struct sk_msg_md *msg, struct weft_tuple_key *key)
{
	tuple_key_from(msg, key, remote, local);
}

#endif
