/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The one definition of every map key and value that crosses the line between
 * the eBPF programs in bpf/ and weftd (Swift, through the CWeftShim target).
 * Both sides compile this exact file, so a layout change cannot drift: the
 * Swift unit tests also assert the sizes below.
 *
 * Addresses are always 16 bytes. IPv4 is stored IPv4-mapped (::ffff:a.b.c.d)
 * so that a v4 socket and a v6 socket talking to a v4-mapped address produce
 * the same key; ports are in host byte order.
 */
#ifndef WEFT_ABI_H
#define WEFT_ABI_H

#include <linux/types.h>

#define WEFT_ABI_VERSION 1

/* Map names, also the names of their pins under /sys/fs/bpf/weft/<node>/maps. */
#define WEFT_MAP_CONFIG        weft_config
#define WEFT_MAP_ORIG_DST      weft_orig_dst
#define WEFT_MAP_TUPLE         weft_tuple
#define WEFT_MAP_EXCL_PORTS    weft_excl_ports
#define WEFT_MAP_EXCL_CIDR4    weft_excl_cidr4
#define WEFT_MAP_EXCL_CIDR6    weft_excl_cidr6
#define WEFT_MAP_DNS_ORIG      weft_dns_orig
#define WEFT_MAP_MTLS_MODE     weft_mtls_mode
#define WEFT_MAP_PROXY_ID      weft_proxy_id
#define WEFT_MAP_INBOUND_STATS weft_inbound_stats
#define WEFT_MAP_SOCKS         weft_socks
#define WEFT_MAP_SOCK_PATH     weft_sock_path
#define WEFT_MAP_PROXY_DIALS   weft_proxy_dials
#define WEFT_MAP_SOCK_ADDR     weft_sock_addr

/* Sizes: LRU maps evict the oldest entry rather than refusing a new
 * connection, and entries are also deleted when the socket closes. */
#define WEFT_ORIG_DST_MAX      65536
#define WEFT_TUPLE_MAX         65536
#define WEFT_EXCL_PORTS_MAX    256
#define WEFT_EXCL_CIDR_MAX     256
/* UDP sockets have no close callback to clean up after: LRU only. */
#define WEFT_DNS_ORIG_MAX      16384
/* One entry per meshed namespace slice, workload cgroup and port override. */
#define WEFT_MTLS_MODE_MAX     16384
#define WEFT_INBOUND_STATS_MAX 4096
/* Sockets of same-node legs (a meshed workload and the node proxy). Full:
 * new connections simply take the TCP path. */
#define WEFT_SOCKS_MAX         65536
#define WEFT_PROXY_DIALS_MAX   16384

/* weft_config is an array with a single element at key 0. */
struct weft_config {
	__u32 abi_version;       /* WEFT_ABI_VERSION; 0 means "not configured yet" */
	__u32 proxy_mark;        /* SO_MARK carried by the node proxy's own sockets */
	__u16 outbound_port;     /* node proxy outbound listener, on loopback */
	__u16 flags;             /* WEFT_CFG_* */
	__u16 dns_port;          /* weftd's DNS server on loopback (UDP); 0: DNS not captured */
	__u16 _pad;
};

#define WEFT_CFG_CAPTURE_IPV6  (1u << 0)
/* Same-node legs between a meshed workload and the node proxy move socket to
 * socket (sockmap) instead of through the TCP/IP stack: see lib/redirect.h. */
#define WEFT_CFG_SOCKET_REDIRECT (1u << 1)

/* weft_sock_path: how a joined socket's writes travel, fixed at the first. */
#define WEFT_PATH_UNDECIDED    0
#define WEFT_PATH_REDIRECT     1
#define WEFT_PATH_TCP          2

/* Redirected bytes a receiver may leave unread before its peer's writes go
 * back to TCP for good, and TCP's flow control with them. About what TCP
 * itself lets a connection hold (receive and send buffers). */
#define WEFT_REDIRECT_BACKLOG_MAX (4u << 20)

/* What a captured connect() originally asked for, keyed by socket cookie
 * (weft_orig_dst) and, once established, by 4-tuple (weft_tuple). A captured
 * DNS socket's resolver is kept the same way in weft_dns_orig. */
struct weft_orig_dst {
	__u8  addr[16];          /* original destination, IPv4-mapped for IPv4 */
	__u16 port;              /* original destination port */
	__u16 family;            /* AF_INET or AF_INET6: the socket's own family */
	__u32 pid;               /* tgid that called connect(), for diagnostics only */
	__u64 cgroup_id;         /* cgroup v2 id of the socket: names the workload */
	__u64 netns_cookie;      /* network namespace of the socket */
};

/*
 * Also the key of weft_socks (the sockets of same-node legs), where src is the
 * socket's own end and dst its peer's.
 *
 * A 4-tuple alone is not unique on a node: two workloads in their own network
 * namespaces can both dial from 127.0.0.1:40000 to 127.0.0.1:15001. The netns
 * cookie makes the key unique node-wide.
 */
struct weft_tuple_key {
	__u64 netns_cookie;
	__u8  src_addr[16];      /* the workload's end of the redirected connection */
	__u8  dst_addr[16];      /* the proxy listener's address */
	__u16 src_port;
	__u16 dst_port;
	__u32 _pad;
};

/* Prefix keys for the LPM tries of excluded destinations. */
struct weft_cidr4_key {
	__u32 prefixlen;
	__u8  addr[4];
};

struct weft_cidr6_key {
	__u32 prefixlen;
	__u8  addr[16];
};

/*
 * PeerAuthentication, enforced in the kernel on connections *into* meshed
 * workloads (cgroup_skb/ingress). Keyed by a cgroup id (a workload's, or a
 * namespace slice's for workloads weftd has not identified yet) and a port (0:
 * every port without its own entry). The most specific entry wins: the
 * socket's own cgroup before its ancestors, a port before 0.
 */
#define WEFT_MTLS_PERMISSIVE   1
#define WEFT_MTLS_STRICT       2
#define WEFT_MTLS_DISABLE      3

struct weft_mtls_key {
	__u64 cgroup_id;
	__u16 port;              /* host order; 0: any port */
	__u16 _pad[3];
};

struct weft_mtls_value {
	__u32 mode;              /* WEFT_MTLS_* */
	__u32 _pad;
};

/*
 * Who the node proxy is, for the STRICT check: a connection into a STRICT
 * workload is let in only when the socket that dialled it is on this node,
 * carries the proxy's mark, and belongs to weftd's cgroup. The mark alone
 * could be set by any process with CAP_NET_ADMIN or CAP_NET_RAW; the cgroup
 * alone by anything started beside weftd.
 */
struct weft_proxy_id {
	__u64 cgroup_id;         /* weftd's cgroup v2 id; 0: not written yet */
	__u32 mark;              /* the proxy's SO_MARK */
	__u32 _pad;
};

/* Per workload cgroup (per CPU): what PeerAuthentication did. */
struct weft_inbound_stats {
	__u64 plaintext_accepted;  /* PERMISSIVE/DISABLE: a connection not from the proxy */
	__u64 strict_refused;      /* STRICT: a connection not from the proxy, dropped */
};

#endif /* WEFT_ABI_H */
