/*
 * p3dp.h — the one public C API of the p3hw native dataplane.
 *
 * The block between the P3DP_CDEF markers is also the cffi cdef source
 * (native/build_dataplane.py reads it), so it holds only declarations that
 * cffi parses: no preprocessor lines, no inline functions.
 *
 * Error codes: every function that can fail returns 0 or a negative number
 * whose absolute value is the number of a reason code in p3hw/reasons.py
 * (-203 is P3-E203, DP_REPLAY).
 */
#ifndef P3DP_H
#define P3DP_H

#include <stddef.h>
#include <stdint.h>

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

/* --- Routing table (native/src/route.c) -------------------------------
 * Longest-prefix match, IPv4 and IPv6, prefix -> peer id (spec §2.1.3).
 * Lookups never block on an update: readers see either the old or the new
 * table. Addresses and prefixes are in network byte order (4 or 16 octets).
 * family is 4 or 6. */
typedef struct p3dp_routes p3dp_routes;

p3dp_routes *p3dp_routes_new(void);
void p3dp_routes_free(p3dp_routes *routes);
/* Add or replace prefix/len -> peer. -214 bad argument (host bits set, len
 * out of range, family, peer > P3DP_ROUTE_PEER_MAX), -213 table full. */
int p3dp_route_add(p3dp_routes *routes, int family, const uint8_t *prefix,
                   unsigned int prefix_len, uint32_t peer);
/* -210 when the exact prefix is not present. */
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

/* P3DP_CDEF_END */

/* P3DP_FLOWS_PENDING: moved inside the cdef block once integrated. */
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
    uint64_t tracked;    /* of those, packets that created, refreshed or closed a flow */
    uint64_t ignored;    /* of those, packets not trackable (P3DP_FLOW_IGNORED) */
    uint64_t created;    /* flows created */
    uint64_t closed;     /* TCP flows ended by FIN both ways or RST */
    uint64_t evicted;    /* live flows pushed out because the table was full */
    uint64_t expired;    /* flows found idle past their timeout and reused */
    uint64_t entries;    /* entries in use now (idle ones included until reused) */
    uint32_t capacity;
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
 * P3DP_FLOW_TRACKED/CLOSED/IGNORED result, or -214 on a bad argument. */
int p3dp_flows_observe(p3dp_flows *flows, uint32_t peer, const uint8_t *packet, size_t len,
                       int direction, uint64_t now_ms);
/* Writes the termination packets of the peer's live flows back to back into
 * out (out_lens[i] = length of packet i) and forgets those flows. Returns the
 * number of packets written; *done says what they are. A flow whose packets
 * do not fit stays (done->flows_remaining): call again with a fresh buffer.
 * -205 when nothing fits at all, -214 on a bad argument. */
int p3dp_flows_terminate(p3dp_flows *flows, uint32_t peer, uint64_t now_ms, uint8_t *out,
                         size_t out_cap, size_t *out_lens, size_t max_packets,
                         p3dp_flows_terminated *done);
/* Forgets the peer's flows without writing anything; returns how many. */
size_t p3dp_flows_forget(p3dp_flows *flows, uint32_t peer);
/* Live (not idle past timeout) flows of the peer. */
size_t p3dp_flows_count(p3dp_flows *flows, uint32_t peer, uint64_t now_ms);
void p3dp_flows_stats_get(p3dp_flows *flows, p3dp_flows_stats *stats);




#ifdef __cplusplus
}
#endif
#endif /* P3DP_H */
