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




#ifdef __cplusplus
}
#endif
#endif /* P3DP_H */
