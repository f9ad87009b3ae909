/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Every map, defined once. All are pinned by name so that a restarted weftd,
 * and programs still attached from before the restart, share one set of maps:
 * capture keeps working (and keeps failing closed) while weftd is away.
 */
#ifndef WEFT_LIB_MAPS_H
#define WEFT_LIB_MAPS_H

#include "common.h"

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct weft_config);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} WEFT_MAP_CONFIG SEC(".maps");

/* LRU: under pressure the oldest record goes, never the new connection. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, WEFT_ORIG_DST_MAX);
	__type(key, __u64);                       /* socket cookie */
	__type(value, struct weft_orig_dst);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} WEFT_MAP_ORIG_DST SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, WEFT_TUPLE_MAX);
	__type(key, struct weft_tuple_key);
	__type(value, struct weft_orig_dst);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} WEFT_MAP_TUPLE SEC(".maps");

/* The resolver a workload's DNS socket addressed, by socket cookie: replies
 * from weftd's DNS server are given that address back. A separate map, so
 * that a flood of DNS sockets cannot evict TCP connections' records. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, WEFT_DNS_ORIG_MAX);
	__type(key, __u64);                       /* socket cookie */
	__type(value, struct weft_orig_dst);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} WEFT_MAP_DNS_ORIG SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, WEFT_EXCL_PORTS_MAX);
	__type(key, __u16);                       /* destination port, host order */
	__type(value, __u8);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} WEFT_MAP_EXCL_PORTS SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, WEFT_EXCL_CIDR_MAX);
	__type(key, struct weft_cidr4_key);
	__type(value, __u8);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} WEFT_MAP_EXCL_CIDR4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, WEFT_EXCL_CIDR_MAX);
	__type(key, struct weft_cidr6_key);
	__type(value, __u8);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} WEFT_MAP_EXCL_CIDR6 SEC(".maps");

/* Plain hash, not LRU: a STRICT entry must never be evicted to make room. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, WEFT_MTLS_MODE_MAX);
	__type(key, struct weft_mtls_key);
	__type(value, struct weft_mtls_value);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} WEFT_MAP_MTLS_MODE SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct weft_proxy_id);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} WEFT_MAP_PROXY_ID SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_PERCPU_HASH);
	__uint(max_entries, WEFT_INBOUND_STATS_MAX);
	__type(key, __u64);                       /* workload cgroup id */
	__type(value, struct weft_inbound_stats);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} WEFT_MAP_INBOUND_STATS SEC(".maps");

/* Not LRU (a sockhash cannot be): a full map leaves new connections on the
 * TCP path, which is slower but the same in every other respect. Entries go
 * when their socket closes. The key is struct weft_tuple_key with src the
 * socket's own end. */
struct {
	__uint(type, BPF_MAP_TYPE_SOCKHASH);
	__uint(max_entries, WEFT_SOCKS_MAX);
	__type(key, struct weft_tuple_key);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} WEFT_MAP_SOCKS SEC(".maps");

/* Socket-local storage, freed with the socket: the path a joined socket's
 * writes take (WEFT_PATH_*), decided at its first write. */
struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} WEFT_MAP_SOCK_PATH SEC(".maps");

/* Where each joined socket is in kernel memory, by its key: the only way
 * for its peer's sk_msg to read how much it has left unread (see
 * redirect_peer_backlog). Deleted at close; LRU as a backstop. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, WEFT_SOCKS_MAX);
	__type(key, struct weft_tuple_key);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} WEFT_MAP_SOCK_ADDR SEC(".maps");

/* Same-node connections the proxy dialled, by its own end, until the
 * destination's end has seen them (a hint: LRU, nothing depends on it). */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, WEFT_PROXY_DIALS_MAX);
	__type(key, struct weft_tuple_key);
	__type(value, __u8);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} WEFT_MAP_PROXY_DIALS SEC(".maps");

#endif
