/* queues.h — what goes between the control plane and a worker lane
 * (native/src/worker.c, docs/runtime.md "Queues"):
 *
 * * p3_msgring: a single-producer single-consumer ring of messages, each a
 *   p3dp_worker_msg header and up to slot_bytes of data. Up (lane → control
 *   plane): one ring for control-channel packets, one for IKE. Down
 *   (control plane → lane): control packets to seal, LAN packets to inject,
 *   outer packets to send. Several producers serialize outside.
 * * p3_ike_limit: token buckets that an IKE message must pass before it is
 *   queued up: one for all sources, and one per source address in a fixed
 *   table (no allocation, bounded memory, whatever the sources).
 */
#ifndef P3_QUEUES_H
#define P3_QUEUES_H

#include "p3dp.h"

#include <stdatomic.h>
#include <stdint.h>

struct p3_msgring {
    _Alignas(64) atomic_uint head;   /* next slot the producer writes */
    _Alignas(64) atomic_uint tail;   /* next slot the consumer reads */
    unsigned slots;                  /* a power of two */
    uint32_t slot_bytes;
    p3dp_worker_msg *info;           /* slots headers */
    uint8_t *data;                   /* slots * slot_bytes */
};

/* 0, or -P3R_DP_BAD_ARGUMENT (slots not a power of two), -P3R_DP_TABLE_FULL (no memory). */
int p3_msgring_init(struct p3_msgring *r, unsigned slots, uint32_t slot_bytes);
void p3_msgring_free(struct p3_msgring *r);
/* Producer: queue info (its len is set here) with the data head ‖ body.
 * -P3R_DP_TOO_BIG when it does not fit a slot, -P3R_DP_TABLE_FULL when the ring is full. */
int p3_msgring_put(struct p3_msgring *r, const p3dp_worker_msg *info, const uint8_t *head, uint32_t head_len,
                   const uint8_t *body, uint32_t body_len);
/* Consumer: the k-th oldest message (its header; *data points at its bytes) or NULL; messages
 * stay queued, and their memory untouched, until p3_msgring_pop takes the n oldest. */
const p3dp_worker_msg *p3_msgring_peek(struct p3_msgring *r, unsigned k, const uint8_t **data);
void p3_msgring_pop(struct p3_msgring *r, unsigned n);
/* Messages queued (either side may ask; the answer may be stale at once). */
unsigned p3_msgring_count(struct p3_msgring *r);

enum { P3_IKE_SOURCES = 1024 };    /* per-source buckets: a power of two */

struct p3_ike_source {
    uint8_t addr[16];
    uint8_t family;
    uint32_t millitokens;
    uint64_t last_ms;
};

struct p3_ike_limit {
    /* rates in messages per second, bursts in messages; a rate of 0 turns that limit off */
    uint32_t global_rate, global_burst, source_rate, source_burst;
    uint64_t global_millitokens, global_last_ms;
    uint64_t hash_k0, hash_k1;       /* random: a sender cannot aim at another's bucket */
    struct p3_ike_source source[P3_IKE_SOURCES];
};

/* Defaults (docs/runtime.md "Queues"): the responder answers a few hundred
 * initial exchanges a second in Python; one sender gets a small share. */
enum { P3_IKE_GLOBAL_RATE = 400, P3_IKE_GLOBAL_BURST = 200, P3_IKE_SOURCE_RATE = 20, P3_IKE_SOURCE_BURST = 40 };

void p3_ike_limit_init(struct p3_ike_limit *lim, uint64_t hash_k0, uint64_t hash_k1);
void p3_ike_limit_set(struct p3_ike_limit *lim, uint32_t global_rate, uint32_t global_burst, uint32_t source_rate,
                      uint32_t source_burst);
/* 1 when a message from (family, addr) at now_ms may be queued (a token is taken from its
 * source's bucket and the global one), 0 when a bucket is empty. */
int p3_ike_limit_allow(struct p3_ike_limit *lim, int family, const uint8_t *addr, uint64_t now_ms);
/* The same, with the per-source bucket only (a request that brought a valid cookie back). */
int p3_ike_limit_allow_source(struct p3_ike_limit *lim, int family, const uint8_t *addr, uint64_t now_ms);

#endif
