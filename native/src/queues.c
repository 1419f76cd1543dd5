/* queues.c — message rings and the IKE rate limit between the control plane
 * and the worker lanes (queues.h, docs/runtime.md "Queues"). */
#include "queues.h"
#include "p3dp_internal.h"

#include <stdlib.h>
#include <string.h>

/* ---- message rings ---------------------------------------------------- */

int p3_msgring_init(struct p3_msgring *r, unsigned slots, uint32_t slot_bytes)
{
    memset(r, 0, sizeof(*r));
    if (slots == 0 || (slots & (slots - 1)) != 0 || slot_bytes == 0)
        return -P3R_DP_BAD_ARGUMENT;
    r->slots = slots;
    r->slot_bytes = slot_bytes;
    r->info = calloc(slots, sizeof(*r->info));
    /* calloc: pages of slots never used are never touched */
    r->data = calloc(slots, slot_bytes);
    if (!r->info || !r->data) {
        p3_msgring_free(r);
        return -P3R_DP_TABLE_FULL;
    }
    return 0;
}

void p3_msgring_free(struct p3_msgring *r)
{
    free(r->info);
    free(r->data);
    r->info = NULL;
    r->data = NULL;
}

int p3_msgring_put(struct p3_msgring *r, const p3dp_worker_msg *info, const uint8_t *head, uint32_t head_len,
                   const uint8_t *body, uint32_t body_len)
{
    if ((uint64_t)head_len + body_len > r->slot_bytes)
        return -P3R_DP_TOO_BIG;
    unsigned h = atomic_load_explicit(&r->head, memory_order_relaxed);
    unsigned t = atomic_load_explicit(&r->tail, memory_order_acquire);
    if (h - t >= r->slots)
        return -P3R_DP_TABLE_FULL;
    unsigned i = h & (r->slots - 1);
    uint8_t *slot = r->data + (size_t)i * r->slot_bytes;
    if (head_len)
        memcpy(slot, head, head_len);
    if (body_len)
        memcpy(slot + head_len, body, body_len);
    r->info[i] = *info;
    r->info[i].len = head_len + body_len;
    atomic_store_explicit(&r->head, h + 1, memory_order_release);
    return 0;
}

const p3dp_worker_msg *p3_msgring_peek(struct p3_msgring *r, unsigned k, const uint8_t **data)
{
    unsigned t = atomic_load_explicit(&r->tail, memory_order_relaxed);
    unsigned h = atomic_load_explicit(&r->head, memory_order_acquire);
    if (h - t <= k)
        return NULL;
    unsigned i = (t + k) & (r->slots - 1);
    *data = r->data + (size_t)i * r->slot_bytes;
    return &r->info[i];
}

void p3_msgring_pop(struct p3_msgring *r, unsigned n)
{
    unsigned t = atomic_load_explicit(&r->tail, memory_order_relaxed);
    atomic_store_explicit(&r->tail, t + n, memory_order_release);
}

unsigned p3_msgring_count(struct p3_msgring *r)
{
    return atomic_load_explicit(&r->head, memory_order_acquire) - atomic_load_explicit(&r->tail, memory_order_acquire);
}

/* ---- the IKE rate limit --------------------------------------------- */

void p3_ike_limit_init(struct p3_ike_limit *lim, uint64_t hash_k0, uint64_t hash_k1)
{
    memset(lim, 0, sizeof(*lim));
    lim->hash_k0 = hash_k0;
    lim->hash_k1 = hash_k1;
    p3_ike_limit_set(lim, P3_IKE_GLOBAL_RATE, P3_IKE_GLOBAL_BURST, P3_IKE_SOURCE_RATE, P3_IKE_SOURCE_BURST);
}

void p3_ike_limit_set(struct p3_ike_limit *lim, uint32_t global_rate, uint32_t global_burst, uint32_t source_rate,
                      uint32_t source_burst)
{
    lim->global_rate = global_rate;
    lim->global_burst = global_burst ? global_burst : 1;
    lim->source_rate = source_rate;
    lim->source_burst = source_burst ? source_burst : 1;
    /* start full: the first messages after a (re)configuration pass */
    lim->global_millitokens = (uint64_t)lim->global_burst * 1000u;
    lim->global_last_ms = 0;
    for (unsigned i = 0; i < P3_IKE_SOURCES; i++)
        lim->source[i].family = 0;
}

/* Tokens earned since *last_ms at rate per second, capped at burst (all in thousandths). */
static uint64_t refill(uint64_t millitokens, uint64_t *last_ms, uint64_t now_ms, uint32_t rate, uint32_t burst)
{
    uint64_t cap = (uint64_t)burst * 1000u;
    if (millitokens > cap)
        millitokens = cap;
    if (now_ms > *last_ms) {
        uint64_t earned = (now_ms - *last_ms) * rate;   /* rate per second = rate thousandths per ms */
        millitokens = earned >= cap - millitokens ? cap : millitokens + earned;
    }
    *last_ms = now_ms;
    return millitokens;
}

static struct p3_ike_source *source_bucket(struct p3_ike_limit *lim, int family, const uint8_t *addr,
                                           uint64_t now_ms)
{
    uint64_t a, b;
    memcpy(&a, addr, 8);
    memcpy(&b, addr + 8, 8);
    uint64_t h = p3dp_siphash24(lim->hash_k0, lim->hash_k1, a ^ (b * 0x9e3779b97f4a7c15ull) ^ (uint64_t)family);
    struct p3_ike_source *s = &lim->source[h & (P3_IKE_SOURCES - 1)];
    if (s->family == family && memcmp(s->addr, addr, 16) == 0)
        return s;
    /* Another sender holds the slot. It is taken over once that sender has
     * been quiet long enough to have a full bucket again; until then both
     * share it, so a busy sender cannot get fresh tokens by having its slot
     * taken. */
    uint64_t last = s->last_ms;
    uint64_t tokens = s->family ? refill(s->millitokens, &last, now_ms, lim->source_rate, lim->source_burst) : 0;
    if (!s->family || tokens >= (uint64_t)lim->source_burst * 1000u) {
        memcpy(s->addr, addr, 16);
        s->family = (uint8_t)family;
        s->millitokens = (uint32_t)((uint64_t)lim->source_burst * 1000u);
        s->last_ms = now_ms;
    }
    return s;
}

static int limit_allow(struct p3_ike_limit *lim, int family, const uint8_t *addr, uint64_t now_ms, int global)
{
    struct p3_ike_source *s = NULL;
    if (lim->source_rate) {
        s = source_bucket(lim, family, addr, now_ms);
        uint64_t last = s->last_ms;
        s->millitokens = (uint32_t)refill(s->millitokens, &last, now_ms, lim->source_rate, lim->source_burst);
        s->last_ms = last;
        if (s->millitokens < 1000u)
            return 0;
    }
    if (global && lim->global_rate) {
        lim->global_millitokens = refill(lim->global_millitokens, &lim->global_last_ms, now_ms, lim->global_rate,
                                         lim->global_burst);
        if (lim->global_millitokens < 1000u)
            return 0;
        lim->global_millitokens -= 1000u;
    }
    if (s)
        s->millitokens -= 1000u;
    return 1;
}

int p3_ike_limit_allow(struct p3_ike_limit *lim, int family, const uint8_t *addr, uint64_t now_ms)
{
    return limit_allow(lim, family, addr, now_ms, 1);
}

int p3_ike_limit_allow_source(struct p3_ike_limit *lim, int family, const uint8_t *addr, uint64_t now_ms)
{
    return limit_allow(lim, family, addr, now_ms, 0);
}
