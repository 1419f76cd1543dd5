/*
 * ctx.c — the dataplane context: peers (sessions), SA tables, buckets,
 * counters. Control-path code: it may allocate; the burst path (packet.c)
 * only reads these tables.
 *
 * Lookups are open-addressing hash tables of slot indexes (+1, 0 = empty),
 * rebuilt on removal (removal is rare and off the packet path).
 */
#include "p3dp_internal.h"

#include <openssl/crypto.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const uint32_t default_buckets[] = { 64, 128, 256, 512, 1024 };

static uint32_t pow2_at_least(uint32_t n)
{
    uint32_t p = 16;
    while (p < n)
        p <<= 1;
    return p;
}

static uint32_t mix32(uint32_t x)
{
    x ^= x >> 16; x *= 0x7feb352dU; x ^= x >> 15; x *= 0x846ca68bU; x ^= x >> 16;
    return x;
}

static uint32_t addr_hash(int family, const uint8_t *addr, uint16_t port)
{
    uint32_t h = 2166136261u ^ (uint32_t)family;
    size_t n = family == 6 ? 16 : 4;
    for (size_t i = 0; i < n; i++)
        h = (h ^ addr[i]) * 16777619u;
    return mix32(h ^ port);
}

static int addr_len(int family)
{
    return family == 6 ? 16 : 4;
}

void p3dp_count_drop(p3dp_counters *c, int status)
{
    int slot = -status - 200;
    if (slot >= 0 && slot < P3DP_DROP_SLOTS)
        c->drops[slot]++;
}

static int engine_start(const p3dp_ctx *ctx, uint32_t kind, const p3dp_engine_params *params,
                        const struct p3_crypto_engine **engine, void **state);

uint32_t p3dp_lane_of(uint32_t peer_id, uint32_t lanes)
{
    return lanes ? peer_id % lanes : 0;
}

p3dp_ctx *p3dp_ctx_new(uint32_t max_peers, uint32_t max_inbound_sas)
{
    p3dp_ctx *ctx;
    uint32_t ph, sh;

    if (max_peers == 0 || max_inbound_sas == 0 || max_peers > (1u << 24) || max_inbound_sas > (1u << 24))
        return NULL;
    ctx = calloc(1, sizeof(*ctx));
    if (!ctx)
        return NULL;
    ph = pow2_at_least(max_peers * 2);
    sh = pow2_at_least(max_inbound_sas * 2);
    ctx->max_peers = max_peers;
    ctx->max_sas = max_inbound_sas;
    ctx->peer_hash_mask = ph - 1;
    ctx->sa_hash_mask = sh - 1;
    ctx->peers = calloc(max_peers, sizeof(*ctx->peers));
    ctx->peer_by_id = calloc(ph, sizeof(uint32_t));
    ctx->peer_by_addr = calloc(ph, sizeof(uint32_t));
    ctx->in_sas = calloc(max_inbound_sas, sizeof(*ctx->in_sas));
    ctx->sa_by_id = calloc(sh, sizeof(uint32_t));
    ctx->backends = &p3_backends;
    if (engine_start(ctx, P3DP_ENGINE_AESNI, NULL, &ctx->engine, &ctx->engine_state) != 0)
        ctx->engine_state = NULL;
    ctx->engine_kind = P3DP_ENGINE_AESNI;
    ctx->fallback_kind = P3DP_ENGINE_NONE;
    if (!ctx->peers || !ctx->peer_by_id || !ctx->peer_by_addr || !ctx->in_sas || !ctx->sa_by_id ||
        !ctx->engine_state) {
        p3dp_ctx_free(ctx);
        return NULL;
    }
    memcpy(ctx->buckets, default_buckets, sizeof(default_buckets));
    ctx->nbuckets = sizeof(default_buckets) / sizeof(default_buckets[0]);
    return ctx;
}

void p3dp_sa_crypto_free(p3dp_ctx *ctx, struct p3dp_sa *sa)
{
    if (sa->crypto)
        ctx->engine->sa_free(ctx->engine_state, sa->crypto);
    if (sa->crypto_fb)
        ctx->fallback->sa_free(ctx->fallback_state, sa->crypto_fb);
    sa->crypto = NULL;
    sa->crypto_fb = NULL;
}

static void sa_wipe(p3dp_ctx *ctx, struct p3dp_sa *sa)
{
    p3dp_sa_crypto_free(ctx, sa);
    OPENSSL_cleanse(sa, sizeof(*sa));
}

static void outbound_free(p3dp_ctx *ctx, struct p3dp_sa *sa)
{
    if (!sa)
        return;
    sa_wipe(ctx, sa);
    free(sa);
}

static void peer_wipe(p3dp_ctx *ctx, struct p3dp_peer *peer)
{
    p3dp_hp_free(peer->hp_out);
    p3dp_hp_free(peer->hp_in);
    p3dp_hp_free(peer->hp_in_previous);
    outbound_free(ctx, peer->out_current);
    outbound_free(ctx, peer->out_pending);
    memset(peer, 0, sizeof(*peer));
}

void p3dp_ctx_free(p3dp_ctx *ctx)
{
    if (!ctx)
        return;
    if (ctx->peers)
        for (uint32_t i = 0; i < ctx->max_peers; i++)
            if (ctx->peers[i].in_use)
                peer_wipe(ctx, &ctx->peers[i]);
    if (ctx->in_sas)
        for (uint32_t i = 0; i < ctx->max_sas; i++)
            if (ctx->in_sas[i].in_use)
                sa_wipe(ctx, &ctx->in_sas[i]);
    if (ctx->engine_state)
        ctx->engine->engine_free(ctx->engine_state);
    if (ctx->fallback_state)
        ctx->fallback->engine_free(ctx->fallback_state);
    free(ctx->peers);
    free(ctx->peer_by_id);
    free(ctx->peer_by_addr);
    free(ctx->in_sas);
    free(ctx->sa_by_id);
    free(ctx);
}

int p3dp_ctx_set_local_address(p3dp_ctx *ctx, int family, const uint8_t *addr)
{
    if (!ctx || !addr)
        return -P3R_DP_BAD_ARGUMENT;
    if (family == 4) {
        memcpy(ctx->local_v4, addr, 4);
        ctx->has_local_v4 = 1;
    } else if (family == 6) {
        memcpy(ctx->local_v6, addr, 16);
        ctx->has_local_v6 = 1;
    } else {
        return -P3R_DP_BAD_ARGUMENT;
    }
    return 0;
}

int p3dp_ctx_set_buckets(p3dp_ctx *ctx, const uint32_t *frame_sizes, size_t n)
{
    if (!ctx || (n && !frame_sizes) || n > P3DP_MAX_BUCKETS)
        return -P3R_DP_BAD_ARGUMENT;
    for (size_t i = 0; i < n; i++) {
        if (frame_sizes[i] < P3DP_MIN_FRAME_BYTES || frame_sizes[i] > P3DP_MAX_FRAME_BYTES ||
            frame_sizes[i] % 16)
            return -P3R_DP_BAD_ARGUMENT;        /* whole AES blocks (obfs.c) */
        if (i && frame_sizes[i] <= frame_sizes[i - 1])
            return -P3R_DP_BAD_ARGUMENT;
    }
    memcpy(ctx->buckets, frame_sizes, n * sizeof(uint32_t));
    ctx->nbuckets = n;
    return 0;
}

size_t p3dp_ctx_get_buckets(const p3dp_ctx *ctx, uint32_t *frame_sizes, size_t cap)
{
    size_t n = ctx->nbuckets < cap ? ctx->nbuckets : cap;
    memcpy(frame_sizes, ctx->buckets, n * sizeof(uint32_t));
    return ctx->nbuckets;
}

void p3dp_ctx_counters(const p3dp_ctx *ctx, p3dp_counters *out)
{
    *out = ctx->counters;
}

/* ---- peers ---- */

struct p3dp_peer *p3dp_find_peer(const p3dp_ctx *ctx, uint32_t peer_id)
{
    uint32_t h = mix32(peer_id) & ctx->peer_hash_mask;
    for (;;) {
        uint32_t slot = ctx->peer_by_id[h];
        if (!slot)
            return NULL;
        if (ctx->peers[slot - 1].cfg.peer_id == peer_id)
            return &ctx->peers[slot - 1];
        h = (h + 1) & ctx->peer_hash_mask;
    }
}

struct p3dp_peer *p3dp_find_peer_by_addr(const p3dp_ctx *ctx, int family, const uint8_t *addr,
                                         uint16_t port)
{
    uint32_t h = addr_hash(family, addr, port) & ctx->peer_hash_mask;
    for (;;) {
        uint32_t slot = ctx->peer_by_addr[h];
        const struct p3dp_peer *p;
        if (!slot)
            return NULL;
        p = &ctx->peers[slot - 1];
        if (p->cfg.family == family && p->cfg.remote_port == port &&
            memcmp(p->cfg.remote_addr, addr, (size_t)addr_len(family)) == 0)
            return (struct p3dp_peer *)p;
        h = (h + 1) & ctx->peer_hash_mask;
    }
}

static void peer_index_insert(p3dp_ctx *ctx, uint32_t slot)
{
    const struct p3dp_peer *p = &ctx->peers[slot];
    uint32_t h = mix32(p->cfg.peer_id) & ctx->peer_hash_mask;
    while (ctx->peer_by_id[h])
        h = (h + 1) & ctx->peer_hash_mask;
    ctx->peer_by_id[h] = slot + 1;
    h = addr_hash(p->cfg.family, p->cfg.remote_addr, p->cfg.remote_port) & ctx->peer_hash_mask;
    while (ctx->peer_by_addr[h])
        h = (h + 1) & ctx->peer_hash_mask;
    ctx->peer_by_addr[h] = slot + 1;
}

static void peer_index_rebuild(p3dp_ctx *ctx)
{
    memset(ctx->peer_by_id, 0, (ctx->peer_hash_mask + 1) * sizeof(uint32_t));
    memset(ctx->peer_by_addr, 0, (ctx->peer_hash_mask + 1) * sizeof(uint32_t));
    for (uint32_t i = 0; i < ctx->max_peers; i++)
        if (ctx->peers[i].in_use)
            peer_index_insert(ctx, i);
}

int p3dp_peer_add(p3dp_ctx *ctx, const p3dp_peer_config *cfg)
{
    struct p3dp_peer *peer = NULL;
    uint32_t slot = 0, min_mtu;
    uint16_t header;

    if (!ctx || !cfg || (cfg->family != 4 && cfg->family != 6) || cfg->peer_id == P3DP_NO_PEER ||
        (cfg->encap != P3DP_ENCAP_UDP && cfg->encap != P3DP_ENCAP_ESP))
        return -P3R_DP_BAD_ARGUMENT;
    header = (uint16_t)((cfg->family == 6 ? 40 : 20) + (cfg->encap == P3DP_ENCAP_UDP ? 8 : 0));
    min_mtu = header + P3DP_P3_HEADER_BYTES + P3DP_MIN_FRAME_BYTES + P3DP_ICV_BYTES;
    if (cfg->mtu < min_mtu)
        return -P3R_DP_BAD_ARGUMENT;
    if (p3dp_find_peer(ctx, cfg->peer_id))
        return -P3R_DP_SA_EXISTS;
    if (p3dp_find_peer_by_addr(ctx, cfg->family, cfg->remote_addr,
                               cfg->encap == P3DP_ENCAP_UDP ? cfg->remote_port : 0))
        return -P3R_DP_SA_EXISTS;
    for (slot = 0; slot < ctx->max_peers; slot++)
        if (!ctx->peers[slot].in_use) {
            peer = &ctx->peers[slot];
            break;
        }
    if (!peer)
        return -P3R_DP_TABLE_FULL;
    memset(peer, 0, sizeof(*peer));
    peer->cfg = *cfg;
    if (cfg->family == 4) {
        memset(peer->cfg.local_addr + 4, 0, 12);
        memset(peer->cfg.remote_addr + 4, 0, 12);
    }
    if (cfg->encap == P3DP_ENCAP_ESP) {
        peer->cfg.local_port = 0;
        peer->cfg.remote_port = 0;
    }
    peer->outer_header_bytes = header;
    /* Whole AES blocks: keeps the rotated halves block-aligned (obfs.c). */
    peer->frame_cap = (cfg->mtu - header - P3DP_P3_HEADER_BYTES - P3DP_ICV_BYTES) & ~15u;
    if (peer->frame_cap > P3DP_MAX_FRAME_BYTES)
        peer->frame_cap = P3DP_MAX_FRAME_BYTES & ~15u;
    peer->in_use = 1;
    peer_index_insert(ctx, slot);
    return 0;
}

static void sa_index_rebuild(p3dp_ctx *ctx);

int p3dp_peer_remove(p3dp_ctx *ctx, uint32_t peer_id)
{
    struct p3dp_peer *peer = ctx ? p3dp_find_peer(ctx, peer_id) : NULL;
    if (!peer)
        return -P3R_DP_SA_NOT_FOUND;
    for (uint32_t i = 0; i < ctx->max_sas; i++)
        if (ctx->in_sas[i].in_use && ctx->in_sas[i].peer_id == peer_id)
            sa_wipe(ctx, &ctx->in_sas[i]);
    peer_wipe(ctx, peer);
    peer_index_rebuild(ctx);
    sa_index_rebuild(ctx);
    return 0;
}

int p3dp_peer_set_hp_keys(p3dp_ctx *ctx, uint32_t peer_id, const uint8_t *hp_out, const uint8_t *hp_in)
{
    struct p3dp_peer *peer = ctx ? p3dp_find_peer(ctx, peer_id) : NULL;
    struct p3dp_hp *new_out = NULL, *new_in = NULL;
    if (!peer)
        return -P3R_DP_SA_NOT_FOUND;
    if (hp_out && !(new_out = p3dp_hp_new(hp_out)))
        return -P3R_DP_CRYPTO_ENGINE;
    if (hp_in && !(new_in = p3dp_hp_new(hp_in))) {
        p3dp_hp_free(new_out);
        return -P3R_DP_CRYPTO_ENGINE;
    }
    if (new_out) {
        p3dp_hp_free(peer->hp_out);
        peer->hp_out = new_out;
    }
    if (new_in) {
        p3dp_hp_free(peer->hp_in_previous);
        peer->hp_in_previous = peer->hp_in;
        peer->hp_in = new_in;
    }
    return 0;
}

int p3dp_peer_drop_previous_hp_key(p3dp_ctx *ctx, uint32_t peer_id)
{
    struct p3dp_peer *peer = ctx ? p3dp_find_peer(ctx, peer_id) : NULL;
    if (!peer)
        return -P3R_DP_SA_NOT_FOUND;
    p3dp_hp_free(peer->hp_in_previous);
    peer->hp_in_previous = NULL;
    return 0;
}

uint64_t p3dp_peer_next_seq(const p3dp_ctx *ctx, uint32_t peer_id)
{
    const struct p3dp_peer *peer = p3dp_find_peer(ctx, peer_id);
    return peer && peer->out_current ? peer->out_current->next_seq : 0;
}

uint32_t p3dp_peer_outbound_id(const p3dp_ctx *ctx, uint32_t peer_id)
{
    const struct p3dp_peer *peer = p3dp_find_peer(ctx, peer_id);
    return peer && peer->out_current ? peer->out_current->p3_id : 0;
}

/* ---- SAs ---- */

struct p3dp_sa *p3dp_find_inbound_sa(const p3dp_ctx *ctx, uint32_t p3_id)
{
    uint32_t h = mix32(p3_id) & ctx->sa_hash_mask;
    for (;;) {
        uint32_t slot = ctx->sa_by_id[h];
        if (!slot)
            return NULL;
        if (ctx->in_sas[slot - 1].p3_id == p3_id)
            return &ctx->in_sas[slot - 1];
        h = (h + 1) & ctx->sa_hash_mask;
    }
}

static void sa_index_insert(p3dp_ctx *ctx, uint32_t slot)
{
    uint32_t h = mix32(ctx->in_sas[slot].p3_id) & ctx->sa_hash_mask;
    while (ctx->sa_by_id[h])
        h = (h + 1) & ctx->sa_hash_mask;
    ctx->sa_by_id[h] = slot + 1;
}

static void sa_index_rebuild(p3dp_ctx *ctx)
{
    memset(ctx->sa_by_id, 0, (ctx->sa_hash_mask + 1) * sizeof(uint32_t));
    for (uint32_t i = 0; i < ctx->max_sas; i++)
        if (ctx->in_sas[i].in_use)
            sa_index_insert(ctx, i);
}

static int key_bytes(uint32_t cipher)
{
    switch (cipher) {
    case P3DP_AES_128_GCM: case P3DP_AES_128_CCM: case P3DP_AES_128_CTR: return 16;
    case P3DP_AES_256_GCM: case P3DP_AES_256_CCM: case P3DP_AES_256_CTR: return 32;
    default: return 0;
    }
}

static int sa_fill(p3dp_ctx *ctx, struct p3dp_sa *sa, const p3dp_sa_config *cfg, int direction)
{
    memset(sa, 0, sizeof(*sa));
    sa->crypto = ctx->engine->sa_new(ctx->engine_state, cfg->cipher,
                                     direction == P3DP_DIR_OUT ? P3_CRYPTO_SEAL : P3_CRYPTO_OPEN,
                                     cfg->key, cfg->salt, cfg->auth_key);
    if (!sa->crypto)
        return -P3R_DP_CRYPTO_ENGINE;
    if (ctx->fallback) {
        /* The fallback's state is ready before the first packet: a failover
         * never expands a key on the packet path, and no key is kept. */
        sa->crypto_fb = ctx->fallback->sa_new(ctx->fallback_state, cfg->cipher,
                                              direction == P3DP_DIR_OUT ? P3_CRYPTO_SEAL : P3_CRYPTO_OPEN,
                                              cfg->key, cfg->salt, cfg->auth_key);
        if (!sa->crypto_fb) {
            p3dp_sa_crypto_free(ctx, sa);
            return -P3R_DP_CRYPTO_ENGINE;
        }
    }
    sa->p3_id = cfg->p3_id;
    sa->peer_id = cfg->peer_id;
    sa->cipher = cfg->cipher;
    sa->direction = direction;
    sa->obfs_k0 = p3_get_le64(cfg->obfs_key);
    sa->obfs_k1 = p3_get_le64(cfg->obfs_key + 8);
    sa->next_seq = 1;
    sa->in_use = 1;
    return 0;
}

static int sa_config_check(const p3dp_ctx *ctx, const p3dp_sa_config *cfg)
{
    if (!ctx || !cfg || cfg->p3_id == 0)
        return -P3R_DP_BAD_ARGUMENT;
    if (!key_bytes(cfg->cipher))
        return -P3R_DP_BAD_CIPHER;
    if (!p3dp_find_peer(ctx, cfg->peer_id))
        return -P3R_DP_SA_NOT_FOUND;
    return 0;
}

int p3dp_sa_add_inbound(p3dp_ctx *ctx, const p3dp_sa_config *cfg)
{
    int rc = sa_config_check(ctx, cfg);
    if (rc)
        return rc;
    if (p3dp_find_inbound_sa(ctx, cfg->p3_id))
        return -P3R_DP_SA_EXISTS;
    for (uint32_t slot = 0; slot < ctx->max_sas; slot++) {
        if (ctx->in_sas[slot].in_use)
            continue;
        rc = sa_fill(ctx, &ctx->in_sas[slot], cfg, P3DP_DIR_IN);
        if (rc)
            return rc;
        sa_index_insert(ctx, slot);
        return 0;
    }
    return -P3R_DP_TABLE_FULL;
}

int p3dp_sa_add_outbound(p3dp_ctx *ctx, const p3dp_sa_config *cfg, uint64_t switch_after_seq)
{
    struct p3dp_peer *peer;
    struct p3dp_sa *sa;
    int rc = sa_config_check(ctx, cfg);
    if (rc)
        return rc;
    peer = p3dp_find_peer(ctx, cfg->peer_id);
    if ((peer->out_current && peer->out_current->p3_id == cfg->p3_id) ||
        (peer->out_pending && peer->out_pending->p3_id == cfg->p3_id))
        return -P3R_DP_SA_EXISTS;    /* IDs are never reused within a session (DESIGN.md §3) */
    sa = malloc(sizeof(*sa));
    if (!sa)
        return -P3R_DP_TABLE_FULL;
    rc = sa_fill(ctx, sa, cfg, P3DP_DIR_OUT);
    if (rc) {
        free(sa);
        return rc;
    }
    if (!peer->out_current) {
        peer->out_current = sa;
        return 0;
    }
    outbound_free(ctx, peer->out_pending);
    peer->out_pending = sa;
    peer->switch_after_seq = switch_after_seq;
    return 0;
}

int p3dp_sa_remove(p3dp_ctx *ctx, int direction, uint32_t peer_id, uint32_t p3_id)
{
    if (!ctx)
        return -P3R_DP_BAD_ARGUMENT;
    if (direction == P3DP_DIR_IN) {
        struct p3dp_sa *sa = p3dp_find_inbound_sa(ctx, p3_id);
        if (!sa || sa->peer_id != peer_id)
            return -P3R_DP_SA_NOT_FOUND;
        sa_wipe(ctx, sa);
        sa_index_rebuild(ctx);
        return 0;
    }
    if (direction == P3DP_DIR_OUT) {
        struct p3dp_peer *peer = p3dp_find_peer(ctx, peer_id);
        if (!peer)
            return -P3R_DP_SA_NOT_FOUND;
        if (peer->out_pending && peer->out_pending->p3_id == p3_id) {
            outbound_free(ctx, peer->out_pending);
            peer->out_pending = NULL;
            return 0;
        }
        if (peer->out_current && peer->out_current->p3_id == p3_id) {
            outbound_free(ctx, peer->out_current);
            peer->out_current = peer->out_pending;
            peer->out_pending = NULL;
            return 0;
        }
        return -P3R_DP_SA_NOT_FOUND;
    }
    return -P3R_DP_BAD_ARGUMENT;
}

static const struct p3dp_sa *find_sa(const p3dp_ctx *ctx, int direction, uint32_t peer_id, uint32_t p3_id)
{
    if (direction == P3DP_DIR_IN) {
        const struct p3dp_sa *sa = p3dp_find_inbound_sa(ctx, p3_id);
        return sa && sa->peer_id == peer_id ? sa : NULL;
    }
    if (direction == P3DP_DIR_OUT) {
        const struct p3dp_peer *peer = p3dp_find_peer(ctx, peer_id);
        if (!peer)
            return NULL;
        if (peer->out_current && peer->out_current->p3_id == p3_id)
            return peer->out_current;
        if (peer->out_pending && peer->out_pending->p3_id == p3_id)
            return peer->out_pending;
    }
    return NULL;
}

int p3dp_sa_counters(const p3dp_ctx *ctx, int direction, uint32_t peer_id, uint32_t p3_id, p3dp_counters *out)
{
    const struct p3dp_sa *sa = ctx ? find_sa(ctx, direction, peer_id, p3_id) : NULL;
    if (!sa)
        return -P3R_DP_SA_NOT_FOUND;
    *out = sa->counters;
    return 0;
}

int p3dp_sa_set_next_seq(p3dp_ctx *ctx, uint32_t peer_id, uint32_t p3_id, uint64_t seq)
{
    struct p3dp_sa *sa = ctx ? (struct p3dp_sa *)find_sa(ctx, P3DP_DIR_OUT, peer_id, p3_id) : NULL;
    if (!sa)
        return -P3R_DP_SA_NOT_FOUND;
    if (seq < sa->next_seq)
        return -P3R_DP_BAD_ARGUMENT;   /* a seq is never used twice under one key */
    sa->next_seq = seq;
    return 0;
}

/* ---- crypto engines (docs/engines.md) ---- */

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* The table's entry for an engine kind, or NULL. */
static const struct p3_engine_backend *engine_backend(const p3dp_ctx *ctx, uint32_t kind)
{
    for (const struct p3_engine_backend *const *b = ctx->backends->engines; *b; b++)
        if ((*b)->kind == kind)
            return *b;
    return NULL;
}

static int engine_start(const p3dp_ctx *ctx, uint32_t kind, const p3dp_engine_params *params,
                        const struct p3_crypto_engine **engine, void **state)
{
    const struct p3_engine_backend *b = engine_backend(ctx, kind);
    if (!b)
        return -P3R_DP_BAD_CIPHER;
    return b->start(params, engine, state);
}

int p3dp_ctx_set_engine(p3dp_ctx *ctx, uint32_t engine, const p3dp_engine_params *params, uint32_t fallback)
{
    const struct p3_crypto_engine *e = NULL, *f = NULL;
    void *es = NULL, *fs = NULL;
    int rc;

    if (!ctx || (fallback != P3DP_ENGINE_NONE && fallback != P3DP_ENGINE_AESNI))
        return -P3R_DP_BAD_ARGUMENT;
    if (engine == P3DP_ENGINE_AESNI)
        fallback = P3DP_ENGINE_NONE;       /* nothing to fall back to but itself */
    for (uint32_t i = 0; i < ctx->max_peers; i++)
        if (ctx->peers[i].in_use)
            return -P3R_DP_BAD_ARGUMENT;                   /* SAs hold engine state: choose before peers */
    rc = engine_start(ctx, engine, params, &e, &es);
    if (rc)
        return rc;
    if (fallback != P3DP_ENGINE_NONE && (rc = engine_start(ctx, fallback, params, &f, &fs)) != 0) {
        e->engine_free(es);
        return rc;
    }
    ctx->engine->engine_free(ctx->engine_state);
    if (ctx->fallback_state)
        ctx->fallback->engine_free(ctx->fallback_state);
    ctx->engine = e;
    ctx->engine_state = es;
    ctx->fallback = f;
    ctx->fallback_state = fs;
    ctx->engine_kind = engine;
    ctx->fallback_kind = fallback;
    ctx->on_fallback = 0;
    ctx->recover_ms = params ? params->recover_ms : 0;
    memset(&ctx->engine_status, 0, sizeof(ctx->engine_status));
    return 0;
}

void p3dp_ctx_engine_status(const p3dp_ctx *ctx, p3dp_engine_status *out)
{
    *out = ctx->engine_status;
    out->engine = ctx->engine_kind;
    out->fallback = ctx->fallback_kind;
    out->on_fallback = (uint32_t)ctx->on_fallback;
}

int p3dp_accel_inject(p3dp_ctx *ctx, uint32_t fault, uint32_t after_ops, uint32_t count)
{
    if (!ctx || !ctx->engine->inject || fault > P3DP_FAULT_GONE)
        return -P3R_DP_BAD_ARGUMENT;
    ctx->engine->inject(ctx->engine_state, fault, after_ops, count);
    return 0;
}

void p3dp_engine_fault(p3dp_ctx *ctx, unsigned fault)
{
    p3dp_engine_status *s = &ctx->engine_status;
    if (fault < P3DP_FAULT_KINDS)
        s->faults[fault]++;
    s->last_fault = fault;
    s->reason = -P3R_ACCEL_FAULT;
    if (ctx->fallback && !ctx->on_fallback) {
        ctx->on_fallback = 1;
        s->failovers++;
        ctx->next_probe_ms = now_ms() + ctx->recover_ms;
    }
}

void p3dp_engine_poll(p3dp_ctx *ctx)
{
    uint64_t t;
    if (!ctx->on_fallback || !ctx->recover_ms || !ctx->engine->health)
        return;
    t = now_ms();
    if (t < ctx->next_probe_ms)
        return;
    if (ctx->engine->health(ctx->engine_state) == 0) {
        ctx->on_fallback = 0;
        ctx->engine_status.recoveries++;
    } else {
        ctx->next_probe_ms = t + ctx->recover_ms;
    }
}

int p3dp_pkcs11_sealed_keys(const p3dp_ctx *ctx, uint32_t *sealed, uint32_t *total)
{
    uint32_t s = 0, n = 0;
    const struct p3_engine_backend *b = ctx ? engine_backend(ctx, ctx->engine_kind) : NULL;
    if (!b || !b->key_sealed_in)
        return -P3R_DP_BAD_ARGUMENT;
    for (uint32_t i = 0; i < ctx->max_sas; i++)
        if (ctx->in_sas[i].in_use) {
            n++;
            s += (uint32_t)b->key_sealed_in(ctx->engine_state, ctx->in_sas[i].crypto);
        }
    for (uint32_t i = 0; i < ctx->max_peers; i++) {
        const struct p3dp_peer *peer = &ctx->peers[i];
        const struct p3dp_sa *out[2] = { peer->out_current, peer->out_pending };
        if (!peer->in_use)
            continue;
        for (int k = 0; k < 2; k++)
            if (out[k]) {
                n++;
                s += (uint32_t)b->key_sealed_in(ctx->engine_state, out[k]->crypto);
            }
    }
    *sealed = s;
    *total = n;
    return 0;
}
