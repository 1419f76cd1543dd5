/*
 * p3dp.h — the one public C API of the p3hw native dataplane.
 *
 * The block between the P3DP_CDEF markers is also the cffi cdef source
 * (native/build_dataplane.py reads it), so it holds only declarations that
 * cffi parses: no preprocessor lines, no inline functions.
 *
 * Error codes: every function that can fail returns 0 or a negative number
 * whose absolute value is the number of a reason code in p3hw/reasons.py
 * (-P3R_DP_REPLAY is P3-E203, DP_REPLAY).
 */
#ifndef P3DP_H
#define P3DP_H

#include <stddef.h>
#include <stdint.h>
#include "p3_reasons.h"

#ifdef __cplusplus
extern "C" {
#endif

/* P3DP_CDEF_BEGIN */

/* ABI stamp: bumped whenever a declaration in this block changes.
 * p3hw/dataplane.py refuses an extension whose stamp differs. */
uint32_t p3dp_abi_version(void);

/* CPU features the crypto engines can use; bits of P3DP_CPU_*. */
uint32_t p3dp_cpu_features(void);

enum {
    P3DP_CPU_AESNI  = 1,
    P3DP_CPU_PCLMUL = 2,
    P3DP_CPU_AVX2   = 4,
    P3DP_CPU_VAES   = 8,
    P3DP_CPU_VPCLMULQDQ = 16,
    P3DP_CPU_RDRAND = 32,
    P3DP_CPU_RDSEED = 64,
    P3DP_CPU_AVX512F = 128
};

/* ---- Dataplane core (ctx.c: peers and SAs, packet.c, replay.c, hp.c, obfs.c) ----
 * Wire format and inner frame: DESIGN.md §3; decisions: docs/dataplane.md.
 * Threading: a p3dp_ctx is owned by one thread at a time. Control calls
 * (peers, SAs, keys, buckets) and bursts on the same ctx must be serialized
 * by the caller (the worker applies control updates between bursts). */

typedef struct p3dp_ctx p3dp_ctx;

enum {
    P3DP_AES_128_GCM = 1,
    P3DP_AES_256_GCM = 2,
    P3DP_AES_128_CCM = 3,
    P3DP_AES_256_CCM = 4,
    P3DP_AES_128_CTR = 5,   /* RFC 3686 + HMAC-SHA-256-128 (RFC 4868) */
    P3DP_AES_256_CTR = 6
};

enum {
    P3DP_ENCAP_UDP = 1,     /* outer IP + UDP (port 5653 by default) + P3 */
    P3DP_ENCAP_ESP = 2      /* outer IP protocol 50 + P3 */
};

enum {
    P3DP_DIR_IN = 1,
    P3DP_DIR_OUT = 2
};

/* seal_burst flags */
enum { P3DP_OUT_IP = 1 };   /* write the outer IP (and UDP) header too */
/* open_burst flags */
enum { P3DP_IN_IP = 1 };    /* buffers start with the outer IP header */

/* p3dp_pkt.kind */
enum {
    P3DP_KIND_DATA = 0,     /* seal: an inner IP packet; open: for the LAN */
    P3DP_KIND_CONTROL = 1,  /* open: inner destination is this P3 system */
    P3DP_KIND_DUMMY = 2,    /* seal: cover traffic (next_header 59); open: received cover traffic */
    P3DP_KIND_IKE = 3       /* open: UDP payload behind the non-ESP marker (RFC 3948) */
};

enum {
    P3DP_HEADROOM_BYTES = 64,   /* largest outer overhead before the ciphertext: IPv6 40 + UDP 8 + P3 16 */
    P3DP_P3_HEADER_BYTES = 16,  /* Flags 4 + ID 4 + seq 8 */
    P3DP_ICV_BYTES = 16,
    P3DP_MIN_FRAME_BYTES = 32,  /* smallest bucket: keeps the 16-octet HP sample inside the ciphertext */
    P3DP_MAX_BUCKETS = 16,
    P3DP_MAX_FRAME_BYTES = 65000,
    P3DP_UDP_PORT = 5653,
    P3DP_REPLAY_WINDOW = 1984,  /* usable anti-replay window (2048-bit bitmap, RFC 6479) */
    P3DP_DROP_SLOTS = 24        /* p3dp_counters.drops[i] counts reason P3-E(200+i) */
};

typedef struct p3dp_peer_config {
    uint32_t peer_id;
    uint8_t family;            /* 4 or 6: the outer address family */
    uint8_t encap;             /* P3DP_ENCAP_* */
    uint16_t local_port;       /* UDP ports, host order (ignored for ESP) */
    uint16_t remote_port;
    uint16_t mtu;              /* path MTU of outer packets, octets */
    uint8_t local_addr[16];    /* network order; IPv4 uses the first 4 octets */
    uint8_t remote_addr[16];
} p3dp_peer_config;

typedef struct p3dp_sa_config {
    uint32_t p3_id;            /* allocated by the receiver of this SA */
    uint32_t peer_id;
    uint32_t cipher;           /* P3DP_AES_* */
    uint8_t key[32];           /* 16 or 32 octets used, by cipher */
    uint8_t salt[4];           /* GCM 4, CCM 3, CTR nonce 4 */
    uint8_t auth_key[32];      /* CTR only: HMAC-SHA-256 key */
    uint8_t obfs_key[16];      /* spec §2.1.5 obfuscation key */
} p3dp_sa_config;

/* One packet of a burst. The result is written to out_buf (never in place:
 * out_buf must not overlap in_buf). */
typedef struct p3dp_pkt {
    const uint8_t *in_buf;     /* seal: inner IP packet; open: received bytes */
    uint8_t *out_buf;          /* seal: sealed packet; open: inner packet */
    uint32_t in_len;
    uint32_t out_cap;
    uint32_t out_len;          /* set by the call */
    uint32_t peer;             /* seal: destination peer (routing stage); open: set to the sender */
    int32_t status;            /* set: 0 or -reason (P3-E2xx) */
    uint8_t kind;              /* P3DP_KIND_*: seal input, open output */
    uint8_t family;            /* open: sender's outer family (input without P3DP_IN_IP, else set);
                                  seal: set to the destination peer's */
    uint16_t port;             /* open: sender's UDP port, 0 for raw ESP (same rule); seal: set to the
                                  destination's (ignored for ESP) */
    uint8_t addr[16];          /* open: sender's outer address (same rule); seal: set to the destination's */
    uint32_t payload_off;      /* open, KIND_IKE: offset in in_buf of the IKE message */
    uint32_t p3_id;            /* set: the SA used (unmasked ID) */
    uint64_t seq;              /* set: the sequence number used */
} p3dp_pkt;

typedef struct p3dp_counters {
    uint64_t sealed_packets;   /* per SA: wire P3 bytes; per ctx: the same summed */
    uint64_t sealed_bytes;
    uint64_t opened_packets;
    uint64_t opened_bytes;
    uint64_t control_packets;  /* opened, to the control queue */
    uint64_t dummy_packets;    /* opened cover traffic */
    uint64_t ike_packets;      /* non-ESP-marker packets handed back */
    uint64_t drops[24];        /* by reason: drops[i] is P3-E(200+i) */
} p3dp_counters;

p3dp_ctx *p3dp_ctx_new(uint32_t max_peers, uint32_t max_inbound_sas);
void p3dp_ctx_free(p3dp_ctx *ctx);
/* This P3 system's own inner address (family 4 or 6): an opened packet to it goes to the control queue. */
int p3dp_ctx_set_local_address(p3dp_ctx *ctx, int family, const uint8_t *addr);
/* Frame-size buckets (plaintext frame = ciphertext octets), ascending, each >= P3DP_MIN_FRAME_BYTES
 * and a multiple of 16. Each peer adds its own cap (path MTU minus overhead,
 * rounded down to 16) as the last bucket. */
int p3dp_ctx_set_buckets(p3dp_ctx *ctx, const uint32_t *frame_sizes, size_t n);
size_t p3dp_ctx_get_buckets(const p3dp_ctx *ctx, uint32_t *frame_sizes, size_t cap);
void p3dp_ctx_counters(const p3dp_ctx *ctx, p3dp_counters *out);

int p3dp_peer_add(p3dp_ctx *ctx, const p3dp_peer_config *cfg);
/* Removes the peer and wipes all its SAs and header-protection keys. */
int p3dp_peer_remove(p3dp_ctx *ctx, uint32_t peer_id);
/* The worker (lane) of `lanes` that owns a peer: its context holds the
 * peer's SAs, and the other workers hand its packets over (docs/dpdk.md,
 * "Several workers"). The one place this rule is written; 0 for lanes 0. */
uint32_t p3dp_lane_of(uint32_t peer_id, uint32_t lanes);
/* Header-protection keys (16 octets each; NULL leaves one unchanged). A new
 * hp_in becomes current and the current one is kept as previous. */
int p3dp_peer_set_hp_keys(p3dp_ctx *ctx, uint32_t peer_id, const uint8_t *hp_out, const uint8_t *hp_in);
/* Forget the previous inbound hp key (after the rekey grace period). */
int p3dp_peer_drop_previous_hp_key(p3dp_ctx *ctx, uint32_t peer_id);
/* The seq the peer's current outbound SA will seal next (0 without one). */
uint64_t p3dp_peer_next_seq(const p3dp_ctx *ctx, uint32_t peer_id);
/* The P3 ID of the peer's current outbound SA (0 without one). */
uint32_t p3dp_peer_outbound_id(const p3dp_ctx *ctx, uint32_t peer_id);

int p3dp_sa_add_inbound(p3dp_ctx *ctx, const p3dp_sa_config *cfg);
/* Adds an outbound SA. Without a current one it is current at once; else it
 * is pending and becomes current once the current SA has sealed
 * switch_after_seq (0: at once). A newer pending SA replaces an older one. */
int p3dp_sa_add_outbound(p3dp_ctx *ctx, const p3dp_sa_config *cfg, uint64_t switch_after_seq);
/* Removes an SA and wipes its keys (OPENSSL_cleanse). */
int p3dp_sa_remove(p3dp_ctx *ctx, int direction, uint32_t peer_id, uint32_t p3_id);
int p3dp_sa_counters(const p3dp_ctx *ctx, int direction, uint32_t peer_id, uint32_t p3_id, p3dp_counters *out);
/* Test and tooling hook: start the outbound SA's sequence at seq (>= its current). */
int p3dp_sa_set_next_seq(p3dp_ctx *ctx, uint32_t peer_id, uint32_t p3_id, uint64_t seq);

/* Seal n inner packets (each to pkts[i].peer). Returns how many succeeded. */
size_t p3dp_seal_burst(p3dp_ctx *ctx, p3dp_pkt *pkts, size_t n, uint32_t flags);
/* Open n received packets. Returns how many succeeded (status 0, any kind). */
size_t p3dp_open_burst(p3dp_ctx *ctx, p3dp_pkt *pkts, size_t n, uint32_t flags);

/* Bare primitives (OpenSSL EVP), for test vectors and tools. cipher is
 * P3DP_AES_*_GCM or *_CCM. Return 0, -P3R_DP_AUTH_FAILED on a bad tag, -P3R_DP_BAD_CIPHER/-P3R_DP_BAD_ARGUMENT on bad arguments. */
int p3dp_aead_seal(uint32_t cipher, const uint8_t *key, const uint8_t *nonce, size_t nonce_len,
                   const uint8_t *aad, size_t aad_len, const uint8_t *in, size_t len,
                   uint8_t *out, uint8_t *tag, size_t tag_len);
int p3dp_aead_open(uint32_t cipher, const uint8_t *key, const uint8_t *nonce, size_t nonce_len,
                   const uint8_t *aad, size_t aad_len, const uint8_t *in, size_t len,
                   uint8_t *out, const uint8_t *tag, size_t tag_len);
/* AES-CTR with a full 16-octet initial counter block; key_len 16 or 32. */
int p3dp_aes_ctr(const uint8_t *key, size_t key_len, const uint8_t *counter_block,
                 const uint8_t *in, size_t len, uint8_t *out);
/* HMAC-SHA-256 of data under key (32 octets out), for the CTR suite's reference. */
int p3dp_hmac_sha256(const uint8_t *key, size_t key_len, const uint8_t *data, size_t len, uint8_t *out);

/* --- Routing table (native/src/route.c) -------------------------------
 * Longest-prefix match, IPv4 and IPv6, prefix -> peer id (spec §2.1.3).
 * Lookups never block on an update: readers see either the old or the new
 * table. Addresses and prefixes are in network byte order (4 or 16 octets).
 * family is 4 or 6. */
typedef struct p3dp_routes p3dp_routes;

p3dp_routes *p3dp_routes_new(void);
void p3dp_routes_free(p3dp_routes *routes);
/* Add or replace prefix/len -> peer. -P3R_DP_BAD_ARGUMENT bad argument (host bits set, len
 * out of range, family, peer > P3DP_ROUTE_PEER_MAX), -P3R_DP_TABLE_FULL table full. */
int p3dp_route_add(p3dp_routes *routes, int family, const uint8_t *prefix,
                   unsigned int prefix_len, uint32_t peer);
/* -P3R_DP_ROUTE_NOT_FOUND (DP_ROUTE_NOT_FOUND) when the exact prefix is not present. */
int p3dp_route_del(p3dp_routes *routes, int family, const uint8_t *prefix,
                   unsigned int prefix_len);
/* The peer of the longest matching prefix, or P3DP_NO_PEER. */
uint32_t p3dp_route_lookup(const p3dp_routes *routes, int family, const uint8_t *addr);
/* Looks up n addresses (each 16 octets apart; IPv4 uses the first 4 octets
 * of its slot) into peers[]. Returns n (0 when family is not 4 or 6). */
size_t p3dp_route_lookup_burst(const p3dp_routes *routes, int family, const uint8_t *addrs,
                               size_t n, uint32_t *peers);
size_t p3dp_route_count(const p3dp_routes *routes, int family);

/* Peer ids are 31 bits: the table packs peer, "no route" and child links
 * into one 32-bit entry so a lookup is one load per trie level. */
enum { P3DP_NO_PEER = 0xffffffff, P3DP_ROUTE_PEER_MAX = 0x7ffffffe };

/* --- Flow tracking for login termination (native/src/flows.c) ---------
 * Spec §2.1.7; decisions in docs/flows.md. The dataplane shows every inner
 * packet it tunnels (the bare IP packet, no virtio-net header) to
 * p3dp_flows_observe; when the session to a peer fails, the runtime calls
 * p3dp_flows_terminate for that peer and writes the packets it returns into
 * the TUN: a RST for each live TCP flow (as if from the remote end, SEQ =
 * the local end's RCV.NXT, RFC 5961 §3.2) and an ICMP host / ICMPv6 address
 * unreachable for each other flow the local end sent on.
 * Thread-safe: the table is sharded, each shard behind its own spinlock;
 * nothing is allocated after p3dp_flows_new. Times are caller-supplied
 * milliseconds from any monotonic clock. */
typedef struct p3dp_flows p3dp_flows;

enum {
    P3DP_FLOW_FROM_LAN = 0,       /* observe: from our LAN, into the tunnel */
    P3DP_FLOW_TO_LAN = 1,         /* observe: out of the tunnel, to our LAN */
    P3DP_FLOW_TRACKED = 0,        /* observe result: a flow was created or refreshed */
    P3DP_FLOW_CLOSED = 1,         /* observe result: a TCP flow ended (FIN both ways, or RST) */
    P3DP_FLOW_IGNORED = 2,        /* observe result: malformed, truncated, a later fragment,
                                     an ICMP error, multicast or broadcast */
    P3DP_FLOWS_MAX_PACKET = 256,  /* no packet written by terminate is longer */
    P3DP_FLOWS_MAX_CAPACITY = 16777216
};

typedef struct p3dp_flows_stats {
    uint64_t observed;   /* packets shown to observe */
    uint64_t tracked;    /* of those, packets of a trackable kind (not ignored) */
    uint64_t ignored;    /* of those, packets not trackable (P3DP_FLOW_IGNORED) */
    uint64_t created;    /* flows created */
    uint64_t closed;     /* TCP flows ended by FIN both ways or RST */
    uint64_t evicted;    /* live flows pushed out because the table was full */
    uint64_t expired;    /* flows found idle past their timeout and reused */
    uint64_t entries;    /* entries in use now (idle ones included until reused) */
    uint32_t capacity;
    uint64_t stale_resets; /* RSTs answering segments of connections no flow knows (reset_stale) */
} p3dp_flows_stats;

typedef struct p3dp_flows_terminated {
    uint32_t tcp_flows_reset;    /* TCP flows that got RSTs */
    uint32_t tcp_resets;         /* RST packets written (one or two per flow) */
    uint32_t icmp_unreachables;  /* ICMP / ICMPv6 destination unreachable written */
    uint32_t flows_silent;       /* flows forgotten with nothing to send: idle past
                                    their timeout, or non-TCP never sent by our side */
    uint32_t flows_remaining;    /* flows that did not fit out/max_packets: call again */
} p3dp_flows_terminated;

/* capacity: total flows (16 .. P3DP_FLOWS_MAX_CAPACITY); a flow idle longer
 * than its timeout is not live. NULL on a bad argument or no memory. */
p3dp_flows *p3dp_flows_new(uint32_t capacity, uint64_t tcp_idle_ms, uint64_t other_idle_ms);
void p3dp_flows_free(p3dp_flows *flows);
/* direction: P3DP_FLOW_FROM_LAN or P3DP_FLOW_TO_LAN. Returns a
 * P3DP_FLOW_TRACKED/CLOSED/IGNORED result, or -P3R_DP_BAD_ARGUMENT on a bad argument. */
int p3dp_flows_observe(p3dp_flows *flows, uint32_t peer, const uint8_t *packet, size_t len,
                       int direction, uint64_t now_ms);
/* Writes the termination packets of the peer's live flows back to back into
 * out (out_lens[i] = length of packet i) and forgets those flows. Returns the
 * number of packets written; *done says what they are. A flow whose packets
 * do not fit stays (done->flows_remaining): call again with a fresh buffer.
 * -P3R_DP_TOO_BIG when nothing fits at all, -P3R_DP_BAD_ARGUMENT on a bad argument.
 * peer P3DP_NO_PEER: every peer's flows (after a restart, those of the
 * previous run loaded by p3dp_flows_import). */
int p3dp_flows_terminate(p3dp_flows *flows, uint32_t peer, uint64_t now_ms, uint8_t *out,
                         size_t out_cap, size_t *out_lens, size_t max_packets,
                         p3dp_flows_terminated *done);
/* Forgets the peer's flows without writing anything; returns how many. */
size_t p3dp_flows_forget(p3dp_flows *flows, uint32_t peer);
/* Login termination across restarts (docs/flows.md "After a restart").
 * A TCP segment from the LAN (ACK set, no SYN or RST) that the tunnel could
 * not carry (seal failed: no session) and that belongs to no flow this table
 * knows is a connection of an earlier session: writes into out (cap >= 60)
 * the RST its sender accepts (SEQ = the segment's ACK, RFC 793 §3.4, which is
 * the sender's RCV.NXT exactly, RFC 5961 §3.2) and returns its length; 0 when
 * the packet is anything else. -P3R_DP_BAD_ARGUMENT on a bad argument. */
int p3dp_flows_reset_stale(p3dp_flows *flows, uint32_t peer, const uint8_t *packet, size_t len,
                           uint64_t now_ms, uint8_t *out, size_t cap);
/* The live flows as a byte string (a versioned header, then fixed records):
 * written into out when it fits, and *needed set to the size either way.
 * Returns the flow count, -P3R_DP_TOO_BIG when out is too small. */
int p3dp_flows_export(p3dp_flows *flows, uint64_t now_ms, uint8_t *out, size_t cap, size_t *needed);
/* Loads flows written by p3dp_flows_export (of this build) into the table,
 * each aged by extra_idle_ms more (the time between export and import);
 * flows idle past their timeout then are skipped. Returns how many were
 * loaded; -P3R_DP_BAD_ARGUMENT when the bytes are not an export of this
 * format. */
int p3dp_flows_import(p3dp_flows *flows, const uint8_t *in, size_t len, uint64_t now_ms,
                      uint64_t extra_idle_ms);
/* Live (not idle past timeout) flows of the peer. */
size_t p3dp_flows_count(p3dp_flows *flows, uint32_t peer, uint64_t now_ms);
void p3dp_flows_stats_get(p3dp_flows *flows, p3dp_flows_stats *stats);
/* The worker's hook, right after p3dp_seal_burst (P3DP_FLOW_FROM_LAN: each
 * pkts[i].in_buf) or p3dp_open_burst (P3DP_FLOW_TO_LAN: each out_buf), for
 * the packets with status 0 and kind P3DP_KIND_DATA only: what really
 * crossed the tunnel. Returns how many were tracked (not ignored). */
size_t p3dp_flows_observe_burst(p3dp_flows *flows, const p3dp_pkt *pkts, size_t n,
                                int direction, uint64_t now_ms);
/* The ICMP codes of the unreachables terminate writes. Default 1 (host
 * unreachable, RFC 792) and ICMPv6 3 (address unreachable, RFC 4443). Linux
 * treats those as soft errors: only sockets with IP(V6)_RECVERR see them.
 * IPv4 code 13 (communication administratively prohibited, RFC 1812
 * §5.2.7.1) fails every connected UDP socket with EHOSTUNREACH; see
 * docs/flows.md. Set before the table is in use. -P3R_DP_BAD_ARGUMENT unless
 * v4_code <= 15 and v6_code <= 7. */
int p3dp_flows_set_unreachable_codes(p3dp_flows *flows, unsigned int v4_code, unsigned int v6_code);

/* --- Packet worker (native/src/worker.c) -------------------------------
 * Bursts LAN (TUN) -> route -> seal -> WAN (UDP or raw ESP) and WAN ->
 * open -> LAN or the control plane. One thread owns the context while it
 * runs: the control plane changes SAs and peers only between
 * p3dp_worker_pause() and p3dp_worker_resume() (the worker parks between
 * two bursts; its fast path reads one atomic flag). Control-channel packets
 * and IKE messages go to the control plane through two rings (control first;
 * IKE rate-limited before it is queued) whose eventfd is
 * p3dp_worker_notify_fd(). The control plane's packets go down through a
 * ring per worker (p3dp_worker_send_control, _send_lan): no pause. */
typedef struct p3dp_worker p3dp_worker;

typedef struct p3dp_worker_config {
    int lan_fd;        /* TUN (IFF_TUN | IFF_NO_PI), non-blocking */
    int wan_fd;        /* UDP socket bound to the P3 port, non-blocking */
    int esp_fd;        /* raw IP protocol 50 socket for the ESP transport, or -1 */
    int esp_family;    /* 4 or 6: the raw socket's family */
    /* DPDK ports instead (docs/dpdk.md): with dpdk_lan_port set, the
     * descriptors above are unused; the worker polls two ethdev ports. */
    const char *dpdk_library;     /* path of libp3dpdk.so; NULL or "": the loader's search */
    const char *eal_args;         /* EAL arguments (used once per process) */
    const char *dpdk_lan_port;    /* DPDK device names: a vdev name or a PCI address */
    const char *dpdk_wan_port;
    uint8_t family;               /* 4 or 6: the ports' address family (inner follows outer) */
    uint8_t lan_prefix_len;
    uint8_t wan_prefix_len;
    uint8_t has_lan_gateway;      /* next hops for destinations off the ports' prefixes */
    uint8_t has_wan_gateway;
    uint16_t udp_port;            /* the local P3 UDP port (IKE, UDP transport) */
    uint16_t mtu;                 /* the ports' MTU; 0: 1500 */
    uint8_t lan_addr[16];         /* the gateway's address on the LAN (answers ARP/ND) */
    uint8_t wan_addr[16];         /* the local outer address (Appendix A `ip`) */
    uint8_t lan_gateway[16];
    uint8_t wan_gateway[16];
} p3dp_worker_config;

typedef struct p3dp_worker_msg {
    uint32_t len;
    uint32_t peer;     /* P3DP_KIND_CONTROL: the session it came through */
    uint8_t kind;      /* P3DP_KIND_CONTROL or P3DP_KIND_IKE */
    uint8_t family;    /* sender's outer address */
    uint16_t port;
    uint8_t addr[16];
} p3dp_worker_msg;

typedef struct p3dp_worker_stats {
    uint64_t lan_rx_packets;
    uint64_t lan_tx_packets;
    uint64_t wan_rx_packets;
    uint64_t wan_tx_packets;
    uint64_t no_route_drops;       /* LAN packets no remote subnet matched */
    uint64_t control_queue_drops;  /* the control plane's queue was full */
    uint64_t io_errors;
    /* DPDK ports only (docs/dpdk.md) */
    uint64_t neighbour_drops;      /* no MAC for the next hop yet: dropped, a request sent */
    uint64_t link_replies;         /* ARP replies, neighbour advertisements, echo replies sent */
    uint64_t link_drops;           /* frames not for the gateway or malformed */
    uint64_t tx_full_drops;        /* the port's transmit queue was full */
    uint64_t handoffs;             /* packets handed to the worker owning their peer */
    uint64_t handoff_drops;        /* ... dropped because that worker's ring was full */
    /* queues (docs/runtime.md "Queues") */
    uint64_t pauses;               /* p3dp_worker_pause calls */
    uint64_t control_sent;         /* control packets sealed by the worker and handed to the WAN */
    uint64_t send_queue_drops;     /* sends refused: the worker's down queue was full */
    uint64_t ike_rate_drops;       /* IKE messages over the global or per-source rate, not queued */
    uint64_t ike_queue_drops;      /* IKE messages dropped: the IKE queue was full */
    uint64_t ike_cookies_sent;     /* IKE_SA_INIT answered with a COOKIE by the worker */
} p3dp_worker_stats;

/* Several workers (DPDK ports only, docs/dpdk.md "Several workers"):
 * worker i runs on queue i of both ports with its own context ctx[i] and
 * flow table flows[i], and owns the peers with peer_id % n == i: the
 * control plane adds each peer to that context only. A packet received by
 * another worker is handed to the owner through a ring. cpu[i] >= 0 pins
 * worker i to that CPU. */
enum { P3DP_MAX_WORKERS = 8 };
typedef struct p3dp_worker_lanes {
    uint32_t n;
    p3dp_ctx *ctx[8];
    p3dp_flows *flows[8];
    int32_t cpu[8];
} p3dp_worker_lanes;
p3dp_worker *p3dp_worker_new_lanes(const p3dp_worker_lanes *lanes, const p3dp_routes *routes,
                                   const p3dp_worker_config *cfg, int *err);

/* NULL on bad descriptors or no memory (*err, if given, = -P3R_DP_BAD_ARGUMENT / -P3R_DP_TABLE_FULL), or
 * when the DPDK ports cannot start (-P3R_DPDK_UNAVAILABLE no DPDK or EAL, -P3R_DPDK_PORT a port).
 * routes and flows (may be NULL) must outlive the worker. */
p3dp_worker *p3dp_worker_new(p3dp_ctx *ctx, const p3dp_routes *routes, p3dp_flows *flows,
                             const p3dp_worker_config *cfg, int *err);
void p3dp_worker_free(p3dp_worker *w);
int p3dp_worker_start(p3dp_worker *w);
void p3dp_worker_stop(p3dp_worker *w);
/* Park the worker between bursts (returns when it is parked); every pause
 * must be followed by a resume. Without a running thread both are no-ops
 * apart from serializing control-plane callers. */
int p3dp_worker_pause(p3dp_worker *w);
void p3dp_worker_resume(p3dp_worker *w);
int p3dp_worker_notify_fd(const p3dp_worker *w);
/* Take one message for the control plane: its length, 0 when none, -P3R_DP_TOO_BIG if
 * cap is too small. */
int p3dp_worker_recv(p3dp_worker *w, uint8_t *buf, size_t cap, p3dp_worker_msg *info);
/* Send bytes as they are out of the WAN socket (via_esp: the raw ESP one): IKE.
 * On DPDK ports the worker writes the IP (and UDP) header and sends them from
 * its own thread; -P3R_DP_TABLE_FULL when its queue is full. */
int p3dp_worker_send(p3dp_worker *w, int via_esp, int family, const uint8_t *addr, uint16_t port,
                     const uint8_t *data, uint32_t len);
/* A control-channel packet for peer_id: the inner IP packet (control-key sealed, with its
 * predefined IP/TCP header). Queued for the worker owning the peer, which seals it with the
 * peer's data SA between two bursts and sends it like data; the worker is woken, not paused.
 * 0, -P3R_DP_TABLE_FULL when the queue is full (counted: send_queue_drops), -P3R_DP_TOO_BIG.
 * Sealing failures are counted in the context's drops by reason. */
int p3dp_worker_send_control(p3dp_worker *w, uint32_t peer_id, const uint8_t *inner, uint32_t len);
/* An IP packet into the LAN (flow termination's RSTs and ICMP errors): written by the worker to
 * the TUN (with its virtio-net header when offloads are on) or out of the DPDK LAN port.
 * 0, -P3R_DP_TABLE_FULL (counted), -P3R_DP_TOO_BIG. */
int p3dp_worker_send_lan(p3dp_worker *w, const uint8_t *data, uint32_t len);
/* IKE messages pass two token buckets in each worker before they are queued for the control
 * plane: all sources together (global_rate messages per second, bursts of global_burst) and
 * each source address (source_rate, source_burst). A rate of 0 turns that bucket off.
 * Pauses the worker to apply them. Defaults: 400/s burst 200, 20/s burst 40 per source. */
int p3dp_worker_set_ike_limits(p3dp_worker *w, uint32_t global_rate, uint32_t global_burst,
                               uint32_t source_rate, uint32_t source_burst);
/* IKE_SA_INIT cookies answered by the worker (RFC 7296 §2.6). P3DP_COOKIES_UNDER_LOAD: when an
 * IKE message was rate-limited or the IKE queue was half full in the last second, a request
 * without a valid COOKIE notify is answered with one and not queued; one with a valid cookie
 * passes the per-source limit only. P3DP_COOKIES_ALWAYS: at all times (tests). The cookie is
 * p3dp_ike_cookie's with this secret (1..64 octets) and version; the secret set before stays
 * valid beside it (a rotation fails no exchange in flight). Pauses the worker to apply. */
enum { P3DP_COOKIES_OFF = 0, P3DP_COOKIES_UNDER_LOAD = 1, P3DP_COOKIES_ALWAYS = 2 };
int p3dp_worker_set_ike_cookies(p3dp_worker *w, int mode, uint8_t version, const uint8_t *secret,
                                size_t secret_len);
/* The IKE cookie of an IKE_SA_INIT request, as the responder (p3hw/protocol/handshake.py) makes
 * it: version(1) ‖ HMAC-SHA-256(secret, Ni ‖ IPi ‖ SPIi)[0:16], IPi 4 or 16 octets (family 4/6).
 * 17 octets to out. 0 or -P3R_DP_BAD_ARGUMENT. */
int p3dp_ike_cookie(const uint8_t *secret, size_t secret_len, uint8_t version, const uint8_t *nonce,
                    size_t nonce_len, int family, const uint8_t *addr, const uint8_t *spi_i, uint8_t *out);
/* 1 when the worker polls DPDK ports, else 0. */
int p3dp_worker_is_dpdk(const p3dp_worker *w);
void p3dp_worker_get_stats(const p3dp_worker *w, p3dp_worker_stats *out);

/* --- Hardware RNG (backends/rng/rng.c) --- */
enum {
    P3DP_RNG_RDSEED = 1,             /* conditioned entropy source output */
    P3DP_RNG_RDRAND = 2,             /* the DRBG it reseeds */
    P3DP_RNG_E_HEALTH = 604,         /* returned negated: the source kept failing (P3-E604) */
    P3DP_RNG_E_UNAVAILABLE = 605     /* returned negated: the CPU lacks the instruction (P3-E605) */
};
/* Fill out[0..len) from RDSEED or RDRAND, retrying each 64-bit step at most
 * max_retries times when the CPU reports no data (CF = 0). Returns len, or
 * -P3R_RNG_HEALTH / -P3R_RNG_UNAVAILABLE; *retries_used (if not NULL) counts the CF = 0 steps. */
int p3dp_rng_fill(int source, uint8_t *out, size_t len, uint32_t max_retries, uint64_t *retries_used);

/* --- Crypto engines and failover (native/src/ctx.c, native/src/lookaside.c, docs/engines.md) ---
 * A context seals and opens through one engine; with a fallback engine
 * configured, an op the engine fails (error completion, timeout, corrupted
 * output, device gone) is re-run on the fallback, the engine is marked
 * failed (P3-E609 ACCEL_FAULT) and later ops go straight to the fallback.
 * With recover_ms, the engine is probed (known-answer op) that often and
 * used again once it passes. Every SA holds state for both engines,
 * prepared at install; both are wiped at removal. */
enum {
    P3DP_ENGINE_NONE = 0,       /* fallback only: no fallback */
    P3DP_ENGINE_AESNI = 1,      /* OpenSSL EVP, synchronous (the default) */
    P3DP_ENGINE_ACCEL_SIM = 2,  /* the accelerator simulator (lookaside, AES-GCM) */
    P3DP_ENGINE_PKCS11 = 3,     /* a PKCS#11 token, CKM_AES_GCM (lookaside, AES-GCM) */
    P3DP_ENGINE_CRYPTODEV = 4   /* a DPDK cryptodev (lookaside, AES-GCM; build/libp3dpdk.so) */
};

/* Fault kinds of a lookaside engine: what it reports with status -P3R_ACCEL_FAULT
 * (P3-E609), what p3dp_accel_inject arms, what p3dp_engine_status counts. */
enum {
    P3DP_FAULT_NONE = 0,
    P3DP_FAULT_ERROR = 1,       /* the device completed the op with an error */
    P3DP_FAULT_TIMEOUT = 2,     /* no completion within timeout_us: the device was reset */
    P3DP_FAULT_CORRUPT = 3,     /* output failed its completion checksum, or open's auth
                                   failed on the engine but passed on the fallback */
    P3DP_FAULT_GONE = 4,        /* the device disappeared */
    P3DP_FAULT_KINDS = 5        /* the number of kinds (p3dp_engine_status.faults) */
};

typedef struct p3dp_engine_params {
    uint32_t latency_us;        /* accel-sim: doorbell to completion, per op */
    uint32_t max_ops_per_s;     /* accel-sim: throughput cap (0: none) */
    uint32_t timeout_us;        /* an op not completed by then is a timeout fault (0: 100000) */
    uint32_t recover_ms;        /* probe a failed engine this often and return to it (0: never) */
    uint32_t ring_slots;        /* accel-sim: descriptor ring size, power of two (0: 1024) */
    const char *module_path;    /* pkcs11: the module to dlopen; cryptodev: libp3dpdk.so */
    const char *token_label;    /* pkcs11 */
    const char *pin;            /* pkcs11: user PIN (not kept after login) */
    const char *eal_args;       /* cryptodev: DPDK EAL arguments (used once per process) */
} p3dp_engine_params;

typedef struct p3dp_engine_status {
    uint32_t engine;            /* P3DP_ENGINE_* in use as the primary */
    uint32_t fallback;          /* P3DP_ENGINE_* or NONE */
    uint32_t on_fallback;       /* 1: the engine failed, ops go to the fallback */
    int32_t reason;             /* 0, or -P3R_ACCEL_FAULT (ACCEL_FAULT) once the engine has failed */
    uint32_t last_fault;        /* P3DP_FAULT_* of the latest fault */
    uint64_t failovers;         /* moves from the engine to the fallback */
    uint64_t recoveries;        /* returns from the fallback to the engine */
    uint64_t rerun_ops;         /* ops re-run on the fallback after the engine failed them */
    uint64_t engine_ops;        /* ops completed by the engine */
    uint64_t fallback_ops;      /* ops completed by the fallback (re-runs included) */
    uint64_t faults[5];         /* faulted ops by P3DP_FAULT_* */
    uint64_t forged_opens;      /* open auth failures confirmed by the fallback (real forgeries) */
} p3dp_engine_status;

/* Choose the engine (P3DP_ENGINE_*) and fallback (AESNI or NONE) before any
 * peer is added (-P3R_DP_BAD_ARGUMENT otherwise). -P3R_DP_CRYPTO_ENGINE when the engine cannot start, -P3R_DP_BAD_CIPHER
 * when it was not built in, pkcs11: -P3R_PKCS11_MODULE..-P3R_PKCS11_OPERATION, cryptodev: -P3R_CRYPTODEV. */
int p3dp_ctx_set_engine(p3dp_ctx *ctx, uint32_t engine, const p3dp_engine_params *params, uint32_t fallback);
void p3dp_ctx_engine_status(const p3dp_ctx *ctx, p3dp_engine_status *out);
/* Lookaside engines only (accel-sim, pkcs11; -P3R_DP_BAD_ARGUMENT otherwise): after after_ops good ops, the
 * next count ops get fault (P3DP_FAULT_GONE: gone until FAULT_NONE is armed). */
int p3dp_accel_inject(p3dp_ctx *ctx, uint32_t fault, uint32_t after_ops, uint32_t count);
/* PKCS#11 engine only (-P3R_DP_BAD_ARGUMENT otherwise): of the context's *total SA keys,
 * *sealed are token objects with CKA_SENSITIVE true and CKA_EXTRACTABLE
 * false whose CKA_VALUE the token refuses to read out. */
int p3dp_pkcs11_sealed_keys(const p3dp_ctx *ctx, uint32_t *sealed, uint32_t *total);

/* P3DP_CDEF_END */

#ifdef __cplusplus
}
#endif
#endif /* P3DP_H */
