/* p3dp_internal.h — structures shared by the dataplane core's C files. */
#ifndef P3DP_INTERNAL_H
#define P3DP_INTERNAL_H

#include "p3dp.h"
#include "p3_backend.h"
#include "bytes.h"

#include <openssl/evp.h>

/* RFC 6479 anti-replay window: a ring of 64-bit words; one word of the
 * ring is always being reused, so the usable window is 2048 - 64 bits. */
enum { REPLAY_WORDS = 32, REPLAY_BITS = REPLAY_WORDS * 64 };

struct p3dp_replay {
    uint64_t top;                 /* highest authenticated seq (0: none yet) */
    uint64_t bitmap[REPLAY_WORDS];
};

int p3dp_replay_check(const struct p3dp_replay *w, uint64_t seq);    /* 0, -P3R_DP_REPLAY, -P3R_DP_TOO_OLD */
int p3dp_replay_update(struct p3dp_replay *w, uint64_t seq);         /* check + mark */

struct p3dp_sa {
    uint32_t p3_id;
    uint32_t peer_id;
    uint32_t cipher;
    int direction;
    int in_use;
    struct p3_crypto_sa *crypto;      /* the engine's state */
    struct p3_crypto_sa *crypto_fb;   /* the fallback engine's, prepared at install too */
    uint64_t obfs_k0, obfs_k1;    /* SipHash key of the rotation (spec §2.1.5) */
    uint64_t next_seq;            /* outbound */
    struct p3dp_replay replay;    /* inbound */
    p3dp_counters counters;
};

struct p3dp_peer {
    p3dp_peer_config cfg;
    int in_use;
    uint16_t outer_header_bytes;  /* IP (+ UDP) */
    uint32_t frame_cap;           /* largest frame that fits the path MTU */
    struct p3dp_hp *hp_out, *hp_in, *hp_in_previous;
    struct p3dp_sa *out_current, *out_pending;
    uint64_t switch_after_seq;
};

enum { P3DP_BURST_CHUNK = 64 };

struct p3dp_ctx {
    uint32_t max_peers, max_sas;
    struct p3dp_peer *peers;
    uint32_t *peer_by_id;         /* open addressing: slot index + 1, 0 empty */
    uint32_t *peer_by_addr;
    uint32_t peer_hash_mask;
    struct p3dp_sa *in_sas;
    uint32_t *sa_by_id;
    uint32_t sa_hash_mask;
    uint32_t buckets[P3DP_MAX_BUCKETS];
    size_t nbuckets;
    uint8_t local_v4[4], local_v6[16];
    int has_local_v4, has_local_v6;
    p3dp_counters counters;
    const struct p3_backends *backends;        /* the table this context was handed (p3_backend.h) */
    const struct p3_crypto_engine *engine;
    void *engine_state;
    const struct p3_crypto_engine *fallback;   /* NULL: none (docs/engines.md) */
    void *fallback_state;
    uint32_t engine_kind, fallback_kind;       /* P3DP_ENGINE_* */
    int on_fallback;                           /* the engine failed: ops go to the fallback */
    uint32_t recover_ms;                       /* probe interval back to the engine (0: never) */
    uint64_t next_probe_ms;
    p3dp_engine_status engine_status;
    struct p3_crypto_op ops[P3DP_BURST_CHUNK];
};

/* ctx.c */
struct p3dp_peer *p3dp_find_peer(const p3dp_ctx *ctx, uint32_t peer_id);
struct p3dp_peer *p3dp_find_peer_by_addr(const p3dp_ctx *ctx, int family, const uint8_t *addr,
                                         uint16_t port);
struct p3dp_sa *p3dp_find_inbound_sa(const p3dp_ctx *ctx, uint32_t p3_id);
void p3dp_count_drop(p3dp_counters *c, int status);
/* Writes an IPv4/IPv6 header, and a UDP header when dport is not 0 (else
 * protocol 50, ESP), for payload_len octets of payload (summed for the IPv6
 * UDP checksum; it need not follow the header yet). Returns the header
 * length (20/40, + 8 with UDP). packet.c. */
uint32_t p3dp_write_ip_header(uint8_t *out, int family, const uint8_t *src, const uint8_t *dst, uint16_t sport,
                              uint16_t dport, const uint8_t *payload, uint32_t payload_len);
/* A received outer packet, as p3dp_parse_outer reads it (pointers into the packet). */
struct p3dp_outer {
    int family;                 /* 4 or 6 */
    const uint8_t *src;         /* sender's address: 4 or 16 octets */
    const uint8_t *dst;         /* where it was sent to */
    uint16_t src_port;          /* UDP ports, host order; 0 for raw ESP */
    uint16_t dst_port;
    const uint8_t *payload;     /* the ESP or UDP payload: P3 bytes, or an IKE message behind the marker */
    uint32_t payload_len;
    int ike;                    /* the UDP payload starts with the non-ESP marker (RFC 3948) */
};
/* The one outer-header parser (packet.c), used by open and by the worker's
 * lane choice: IPv4 or IPv6 (no extension headers), then UDP or ESP.
 * With verify, the IPv4 header checksum and a UDP checksum are checked too
 * (a zero UDP checksum is refused over IPv6, RFC 8200 §8.1). Returns 0 or
 * -P3R_DP_BAD_HEADER. */
int p3dp_parse_outer(const uint8_t *in, uint32_t len, int verify, struct p3dp_outer *o);
/* Wipe and free an SA's engine states (both engines). */
void p3dp_sa_crypto_free(p3dp_ctx *ctx, struct p3dp_sa *sa);
/* Engine failover (ctx.c): a fault of kind P3DP_FAULT_* moves the context
 * to the fallback; the poll, at each burst, returns to the engine once it
 * passes its health probe (if recover_ms). */
void p3dp_engine_fault(p3dp_ctx *ctx, unsigned fault);
void p3dp_engine_poll(p3dp_ctx *ctx);

/* hp.c: header protection (DESIGN.md §3, RFC 9001 §5.4 style). */
struct p3dp_hp;
struct p3dp_hp *p3dp_hp_new(const uint8_t *hp_key);
void p3dp_hp_free(struct p3dp_hp *hp);
int p3dp_hp_mask(struct p3dp_hp *hp, const uint8_t *sample, uint8_t *mask);

/* obfs.c: buckets and rotation (spec §2.1.5). */
uint32_t p3dp_bucket_frame_len(const p3dp_ctx *ctx, const struct p3dp_peer *peer, uint32_t needed);
uint32_t p3dp_rotation(const struct p3dp_sa *sa, uint64_t seq, uint32_t frame_len);
uint64_t p3dp_siphash24(uint64_t k0, uint64_t k1, uint64_t msg);

#endif
