/*
 * packet.c — seal_burst / open_burst: framing, obfuscation, header
 * protection, anti-replay, counters (DESIGN.md §3, docs/dataplane.md).
 *
 * A burst is cut into chunks of P3DP_BURST_CHUNK packets. Each chunk runs
 * the stages of ipsec-secgw: classify + frame (prepare) → crypto enqueue →
 * crypto dequeue → finish (header protection, replay window, counters).
 * Nothing here allocates, and no key is expanded per packet.
 *
 * Frame (plaintext) = inner ‖ padding ‖ pad_len(2) ‖ next_header(1), of a
 * bucket's length F. On the wire the ciphertext is the frame rotated left by
 * r = 16 * (SipHash(obfs_key, seq) mod (F / 16)), whole AES blocks.
 *
 * Seal writes the inner packet, padding and trailer straight to their
 * rotated places in the output (the one copy a non-in-place seal needs
 * anyway) and encrypts there in place, as one contiguous stream. Open
 * decrypts the two halves of the ciphertext directly to their unrotated
 * places, without a copy. Block-aligned rotation keeps both halves on AES
 * block boundaries, so OpenSSL's stitched AES-NI+GHASH path runs on them
 * (an unaligned split falls back to its slow byte-wise path: measured 2x).
 */
#include "p3dp_internal.h"

#include <openssl/crypto.h>
#include <stdlib.h>
#include <string.h>

struct seal_job {
    p3dp_pkt *pkt;
    struct p3dp_peer *peer;
    struct p3dp_sa *sa;
    uint8_t *p3;
    uint32_t frame_len;
    uint32_t outer_bytes;
    uint32_t rot;
    uint8_t next_header;
};

struct open_job {
    p3dp_pkt *pkt;
    struct p3dp_peer *peer;
    struct p3dp_sa *sa;
    uint32_t frame_len;
    uint32_t p3_len;
};

/* ---- outer headers ---- */

uint32_t p3dp_write_ip_header(uint8_t *out, int family, const uint8_t *src, const uint8_t *dst, uint16_t sport,
                              uint16_t dport, const uint8_t *payload, uint32_t payload_len)
{
    int udp = dport != 0;
    uint8_t proto = udp ? 17 : 50;
    uint32_t ip_bytes = family == 6 ? 40 : 20;
    uint32_t l4_len = payload_len + (udp ? 8 : 0);
    uint8_t *u = out + ip_bytes;

    if (family == 4) {
        out[0] = 0x45;
        out[1] = 0;
        p3_put_be16(out + 2, (uint16_t)(ip_bytes + l4_len));
        p3_put_be16(out + 4, 0);              /* RFC 6864: atomic datagram, DF set */
        p3_put_be16(out + 6, 0x4000);
        out[8] = 64;
        out[9] = proto;
        p3_put_be16(out + 10, 0);
        memcpy(out + 12, src, 4);
        memcpy(out + 16, dst, 4);
        p3_csum_store(out + 10, p3_csum_fold(p3_csum_add(0, out, 20)));
    } else {
        p3_put_be32(out, 0x60000000u);
        p3_put_be16(out + 4, (uint16_t)l4_len);
        out[6] = proto;
        out[7] = 64;
        memcpy(out + 8, src, 16);
        memcpy(out + 24, dst, 16);
    }
    if (!udp)
        return ip_bytes;
    p3_put_be16(u, sport);
    p3_put_be16(u + 2, dport);
    p3_put_be16(u + 4, (uint16_t)l4_len);
    p3_put_be16(u + 6, 0);
    if (family == 6) {
        /* IPv6 needs a UDP checksum (RFC 8200 §8.1); over IPv4 zero is
         * allowed for UDP-encapsulated ESP (RFC 3948 §2.1). The header is
         * 8 octets (even), so the payload may be summed apart from it. */
        uint64_t sum = p3_csum_add(p3_csum_pseudo(6, src, dst, 17, l4_len), u, 8);
        uint16_t cs = p3_csum_fold(p3_csum_add(sum, payload, payload_len));
        p3_csum_store(u + 6, cs ? cs : 0xffff);
    }
    return ip_bytes + 8;
}

/* Writes IPv4/IPv6 (+ UDP) in front of p3_len octets already at out + header bytes. */
static void write_outer(const struct p3dp_peer *peer, uint8_t *out, uint32_t p3_len)
{
    const p3dp_peer_config *c = &peer->cfg;
    int udp = c->encap == P3DP_ENCAP_UDP;
    p3dp_write_ip_header(out, c->family, c->local_addr, c->remote_addr, udp ? c->local_port : 0,
                         udp ? c->remote_port : 0, out + peer->outer_header_bytes, p3_len);
}

int p3dp_parse_outer(const uint8_t *in, uint32_t len, int verify, struct p3dp_outer *o)
{
    uint32_t ip_bytes, total;
    uint8_t proto;

    if (len < 20)
        return -P3R_DP_BAD_HEADER;
    if (in[0] >> 4 == 4) {
        ip_bytes = (uint32_t)(in[0] & 15) * 4;
        total = p3_get_be16(in + 2);
        if (ip_bytes < 20 || total < ip_bytes || total > len)
            return -P3R_DP_BAD_HEADER;
        if (verify && p3_csum_fold(p3_csum_add(0, in, ip_bytes)) != 0)
            return -P3R_DP_BAD_HEADER;
        if (p3_get_be16(in + 6) & 0x3fff)
            return -P3R_DP_BAD_HEADER;                /* a fragment: reassembly is the OS's job */
        proto = in[9];
        o->family = 4;
        o->src = in + 12;
        o->dst = in + 16;
    } else if (in[0] >> 4 == 6) {
        ip_bytes = 40;
        if (len < 40)
            return -P3R_DP_BAD_HEADER;
        total = 40u + p3_get_be16(in + 4);
        if (total > len)
            return -P3R_DP_BAD_HEADER;
        proto = in[6];                  /* no extension headers on our tunnel */
        o->family = 6;
        o->src = in + 8;
        o->dst = in + 24;
    } else {
        return -P3R_DP_BAD_HEADER;
    }
    if (proto == 50) {
        o->src_port = 0;
        o->dst_port = 0;
        o->payload = in + ip_bytes;
        o->payload_len = total - ip_bytes;
        o->ike = 0;
        return 0;
    }
    if (proto == 17) {
        const uint8_t *u = in + ip_bytes;
        uint32_t udp_len;
        if (total - ip_bytes < 8)
            return -P3R_DP_BAD_HEADER;
        udp_len = p3_get_be16(u + 4);
        if (udp_len < 8 || udp_len > total - ip_bytes)
            return -P3R_DP_BAD_HEADER;
        if (verify && (p3_get_be16(u + 6) != 0 || o->family == 6)) {
            if (p3_get_be16(u + 6) == 0 ||
                p3_csum_fold(p3_csum_add(p3_csum_pseudo(o->family, o->src, o->dst, 17, udp_len), u, udp_len)) != 0)
                return -P3R_DP_BAD_HEADER;
        }
        o->src_port = p3_get_be16(u);
        o->dst_port = p3_get_be16(u + 2);
        o->payload = u + 8;
        o->payload_len = udp_len - 8;
        o->ike = o->payload_len >= 4 && !(o->payload[0] | o->payload[1] | o->payload[2] | o->payload[3]);
        return 0;
    }
    return -P3R_DP_BAD_HEADER;
}

/* ---- inner packet ---- */

/* next_header for an inner packet, or -P3R_DP_BAD_INNER when it is not a whole IP packet. */
static int inner_next_header(const uint8_t *p, uint32_t len)
{
    if (len >= 20 && p[0] >> 4 == 4 && (p[0] & 15) >= 5 && p3_get_be16(p + 2) == len)
        return 4;
    if (len >= 40 && p[0] >> 4 == 6 && 40u + p3_get_be16(p + 4) == len)
        return 41;
    return -P3R_DP_BAD_INNER;
}

/* In and out are never the same memory (rotation writes out of order). */
static int overlaps(const uint8_t *a, uint32_t a_len, const uint8_t *b, uint32_t b_len)
{
    uintptr_t a0 = (uintptr_t)a, b0 = (uintptr_t)b;
    if (!a || !b || !a_len || !b_len)
        return 0;
    return a0 < b0 + b_len && b0 < a0 + a_len;
}

/* ---- seal ---- */

/* Writes len octets at logical frame offset `at` into the rotated frame. */
static void put_rotated(uint8_t *ct, uint32_t frame_len, uint32_t rot, uint32_t at,
                        const uint8_t *src, uint32_t len)
{
    uint32_t pos = at >= rot ? at - rot : at + frame_len - rot;
    uint32_t first = frame_len - pos < len ? frame_len - pos : len;
    if (!len)
        return;
    memcpy(ct + pos, src, first);
    if (first < len)
        memcpy(ct, src + first, len - first);
}

/* The plaintext frame, rotated, at its place in the output: padding from the
 * packet's own bytes (spec §2.1.5 step 2: the inner packet repeated; cover
 * traffic without payload uses its unmasked header), trailer, inner packet.
 * Written again before a failover re-run: an in-place engine may have left
 * anything in the buffer. */
static void seal_write_frame(const struct seal_job *job)
{
    const p3dp_pkt *pkt = job->pkt;
    uint32_t inner_len = pkt->in_len, frame_len = job->frame_len, rot = job->rot;
    uint32_t pad_len = frame_len - inner_len - 3;
    uint8_t *ct = job->p3 + P3DP_P3_HEADER_BYTES, trailer[3];
    const uint8_t *src = inner_len ? pkt->in_buf : job->p3;
    uint32_t src_len = inner_len ? inner_len : P3DP_P3_HEADER_BYTES;
    uint32_t done = 0;

    while (done < pad_len) {
        uint32_t chunk = pad_len - done < src_len ? pad_len - done : src_len;
        put_rotated(ct, frame_len, rot, inner_len + done, src, chunk);
        done += chunk;
    }
    p3_put_be16(trailer, (uint16_t)pad_len);
    trailer[2] = job->next_header;
    put_rotated(ct, frame_len, rot, frame_len - 3, trailer, 3);
    put_rotated(ct, frame_len, rot, 0, pkt->in_buf, inner_len);
}

static struct p3dp_sa *current_outbound(struct p3dp_peer *peer, struct p3dp_sa **retired, size_t *nretired)
{
    struct p3dp_sa *cur = peer->out_current;
    if (peer->out_pending &&
        (!cur || peer->switch_after_seq == 0 || cur->next_seq > peer->switch_after_seq)) {
        /* The retired SA may still be in this chunk's ops: it is wiped
         * when the chunk is done. */
        if (cur)
            retired[(*nretired)++] = cur;
        peer->out_current = peer->out_pending;
        peer->out_pending = NULL;
        cur = peer->out_current;
    }
    return cur;
}

static int seal_prepare(p3dp_ctx *ctx, p3dp_pkt *pkt, uint32_t flags, struct p3_crypto_op *op,
                        struct seal_job *job, struct p3dp_sa **retired, size_t *nretired)
{
    struct p3dp_peer *peer = p3dp_find_peer(ctx, pkt->peer);
    struct p3dp_sa *sa;
    uint32_t inner_len = pkt->in_len, frame_len, outer, total, rot;
    uint8_t *p3, *ct;
    uint64_t seq;
    int next_header;

    if (!peer)
        return -P3R_DP_NO_ROUTE;
    /* The destination goes into the descriptor: the caller sends the packet
     * without looking the peer up again. */
    pkt->family = peer->cfg.family;
    pkt->port = peer->cfg.remote_port;
    memcpy(pkt->addr, peer->cfg.remote_addr, sizeof(pkt->addr));
    if ((!pkt->in_buf && inner_len) || overlaps(pkt->in_buf, inner_len, pkt->out_buf, pkt->out_cap))
        return -P3R_DP_BAD_ARGUMENT;
    sa = current_outbound(peer, retired, nretired);
    if (!sa || !peer->hp_out)
        return -P3R_DP_SA_NOT_FOUND;
    if (pkt->kind == P3DP_KIND_DUMMY)
        next_header = 59;
    else if (pkt->kind == P3DP_KIND_DATA)
        next_header = inner_next_header(pkt->in_buf, inner_len);
    else
        next_header = -P3R_DP_BAD_ARGUMENT;
    if (next_header < 0)
        return next_header;
    if (inner_len > P3DP_MAX_FRAME_BYTES)
        return -P3R_DP_TOO_BIG;
    frame_len = p3dp_bucket_frame_len(ctx, peer, inner_len + 3);
    if (!frame_len)
        return -P3R_DP_TOO_BIG;
    outer = (flags & P3DP_OUT_IP) ? peer->outer_header_bytes : 0;
    total = outer + P3DP_P3_HEADER_BYTES + frame_len + P3DP_ICV_BYTES;
    if (!pkt->out_buf || total > pkt->out_cap)
        return -P3R_DP_TOO_BIG;
    if (sa->next_seq == UINT64_MAX) {
        sa->counters.drops[12]++;
        return -P3R_DP_SEQ_EXHAUSTED;                    /* seq never wraps: rekey (DESIGN.md §3) */
    }
    seq = sa->next_seq++;

    p3 = pkt->out_buf + outer;
    p3[0] = 1; p3[1] = 0; p3[2] = 0; p3[3] = 0;   /* Flags: version 1, reserved zero */
    p3_put_be32(p3 + 4, sa->p3_id);
    p3_put_be64(p3 + 8, seq);
    ct = p3 + P3DP_P3_HEADER_BYTES;
    rot = p3dp_rotation(sa, seq, frame_len);

    job->pkt = pkt;
    job->p3 = p3;
    job->frame_len = frame_len;
    job->rot = rot;
    job->next_header = (uint8_t)next_header;
    seal_write_frame(job);

    memcpy(op->aad, p3, 16);
    op->sa = ctx->on_fallback ? sa->crypto_fb : sa->crypto;
    op->seq = seq;
    op->tag = ct + frame_len;
    op->stream_len = frame_len;
    op->op = P3_CRYPTO_SEAL;
    op->nseg = 1;
    op->status = 0;
    op->fault = 0;
    op->user = job;
    op->seg[0] = (struct p3_crypto_seg){ ct, ct, frame_len };

    job->peer = peer;
    job->sa = sa;
    job->outer_bytes = outer;
    pkt->p3_id = sa->p3_id;
    pkt->seq = seq;
    return 0;
}

static int seal_finish(p3dp_ctx *ctx, struct p3_crypto_op *op, uint32_t flags)
{
    struct seal_job *job = op->user;
    p3dp_pkt *pkt = job->pkt;
    uint32_t p3_len = P3DP_P3_HEADER_BYTES + job->frame_len + P3DP_ICV_BYTES;
    uint8_t mask[16];
    int rc = op->status;

    if (!rc)
        rc = p3dp_hp_mask(job->peer->hp_out, job->p3 + P3DP_P3_HEADER_BYTES, mask);
    if (rc) {
        pkt->status = rc;
        pkt->out_len = 0;
        p3dp_count_drop(&ctx->counters, rc);
        p3dp_count_drop(&job->sa->counters, rc);
        return 0;
    }
    for (int i = 0; i < 12; i++)
        job->p3[4 + i] ^= mask[i];
    if (flags & P3DP_OUT_IP)
        write_outer(job->peer, pkt->out_buf, p3_len);
    pkt->out_len = job->outer_bytes + p3_len;
    pkt->status = 0;
    job->sa->counters.sealed_packets++;
    job->sa->counters.sealed_bytes += p3_len;
    ctx->counters.sealed_packets++;
    ctx->counters.sealed_bytes += p3_len;
    return 1;
}

static int open_finish(p3dp_ctx *ctx, struct p3_crypto_op *op);

static int finish(p3dp_ctx *ctx, struct p3_crypto_op *op, uint32_t flags, int sealing)
{
    return sealing ? seal_finish(ctx, op, flags) : open_finish(ctx, op);
}

static struct p3dp_sa *op_sa(const struct p3_crypto_op *op, int sealing)
{
    return sealing ? ((struct seal_job *)op->user)->sa : ((struct open_job *)op->user)->sa;
}

/* One op through the fallback engine, waited for. */
static void run_on_fallback(p3dp_ctx *ctx, struct p3_crypto_op *op, int sealing)
{
    struct p3_crypto_op *done = NULL;

    op->sa = op_sa(op, sealing)->crypto_fb;
    op->status = 0;
    op->fault = 0;
    if (ctx->fallback->enqueue(ctx->fallback_state, &op, 1) != 1) {
        op->status = -P3R_DP_CRYPTO_ENGINE;
        return;
    }
    while (ctx->fallback->dequeue(ctx->fallback_state, &done, 1) == 0)
        ;
    ctx->engine_status.fallback_ops++;
}

/* The engine failed this op (docs/engines.md): re-run it on the fallback so
 * the packet is not lost. A seal frame is written again first (an in-place
 * engine may have left anything there); the same key, seq and plaintext give
 * the same ciphertext, and the engine's output was never sent. An open that
 * failed on the engine is only a forgery if the fallback agrees; if the
 * fallback opens it, the engine corrupted it. */
static void rerun_on_fallback(p3dp_ctx *ctx, struct p3_crypto_op *op, int sealing)
{
    int engine_rc = op->status;
    unsigned fault = op->fault;

    if (sealing)
        seal_write_frame(op->user);
    run_on_fallback(ctx, op, sealing);
    ctx->engine_status.rerun_ops++;
    if (!sealing && op->status == -P3R_DP_AUTH_FAILED) {
        /* The fallback says forged: it is, whatever the engine said. Not
         * blamed on the engine, so forged packets cannot push traffic off
         * it (a token may report a bad tag as a general error). */
        ctx->engine_status.forged_opens++;
        return;
    }
    if (engine_rc == -P3R_DP_AUTH_FAILED)
        fault = P3DP_FAULT_CORRUPT;
    p3dp_engine_fault(ctx, fault ? fault : P3DP_FAULT_ERROR);
}

static int engine_failed_op(const struct p3_crypto_op *op, int sealing)
{
    return op->status == -P3R_ACCEL_FAULT || op->status == -P3R_DP_CRYPTO_ENGINE || (!sealing && op->status == -P3R_DP_AUTH_FAILED);
}

/* A lookaside engine gets ops in batches of this many while the rest of the
 * chunk is still being prepared, so the device and the host overlap. */
enum { EARLY_BATCH = 16 };

/* Whether ops go to the engine before the chunk is fully prepared. */
static int enqueue_early(const p3dp_ctx *ctx)
{
    return !ctx->on_fallback && ctx->engine->health != NULL;
}

static uint16_t early_enqueue(p3dp_ctx *ctx, struct p3_crypto_op **ops, uint16_t nops, uint16_t queued)
{
    if (nops - queued < EARLY_BATCH)
        return queued;
    return (uint16_t)(queued + ctx->engine->enqueue(ctx->engine_state, ops + queued, (uint16_t)(nops - queued)));
}

/* Runs the prepared ops (the first `queued` already enqueued on the engine
 * by the prepare loop) through the engine and finishes them in order. With
 * a fallback, an op the engine fails is re-run there before it is finished,
 * and once the engine has failed, the ops not yet given to it go straight to
 * the fallback (after the ones in flight are back, so order holds). */
static size_t run_ops(p3dp_ctx *ctx, struct p3_crypto_op **ops, uint16_t n, uint16_t queued, uint32_t flags,
                      int sealing)
{
    struct p3_crypto_op *done[P3DP_BURST_CHUNK];
    int on_fallback = ctx->on_fallback;
    const struct p3_crypto_engine *eng = on_fallback ? ctx->fallback : ctx->engine;
    void *state = on_fallback ? ctx->fallback_state : ctx->engine_state;
    int guarded = !on_fallback && ctx->fallback;
    uint64_t *completed = on_fallback ? &ctx->engine_status.fallback_ops : &ctx->engine_status.engine_ops;
    uint16_t finished = 0;
    size_t ok = 0;

    while (finished < n) {
        uint16_t got;
        if (queued < n) {
            if (guarded && ctx->on_fallback) {
                if (finished == queued) {
                    for (uint16_t i = queued; i < n; i++) {
                        run_on_fallback(ctx, ops[i], sealing);
                        ok += (size_t)finish(ctx, ops[i], flags, sealing);
                    }
                    return ok;
                }
            } else {
                queued += eng->enqueue(state, ops + queued, (uint16_t)(n - queued));
            }
        }
        got = eng->dequeue(state, done, (uint16_t)(n - finished));
        for (uint16_t i = 0; i < got; i++) {
            struct p3_crypto_op *op = done[i];
            if (guarded && engine_failed_op(op, sealing)) {
                rerun_on_fallback(ctx, op, sealing);
            } else if (op->status == -P3R_ACCEL_FAULT) {
                /* No fallback: the packet is lost, the fault recorded. */
                p3dp_engine_fault(ctx, op->fault);
                op->status = -P3R_DP_CRYPTO_ENGINE;
            } else {
                (*completed)++;
            }
            ok += (size_t)finish(ctx, op, flags, sealing);
        }
        finished += got;
    }
    return ok;
}

size_t p3dp_seal_burst(p3dp_ctx *ctx, p3dp_pkt *pkts, size_t n, uint32_t flags)
{
    size_t ok = 0;

    if (!ctx || (!pkts && n))
        return 0;
    p3dp_engine_poll(ctx);
    for (size_t base = 0; base < n; base += P3DP_BURST_CHUNK) {
        struct seal_job jobs[P3DP_BURST_CHUNK];
        struct p3_crypto_op *ops[P3DP_BURST_CHUNK];
        struct p3dp_sa *retired[P3DP_BURST_CHUNK];
        size_t nretired = 0, m = n - base < P3DP_BURST_CHUNK ? n - base : P3DP_BURST_CHUNK;
        uint16_t nops = 0, queued = 0;
        int early = enqueue_early(ctx);

        for (size_t i = 0; i < m; i++) {
            p3dp_pkt *pkt = &pkts[base + i];
            struct p3_crypto_op *op = &ctx->ops[nops];
            int rc = seal_prepare(ctx, pkt, flags, op, &jobs[nops], retired, &nretired);
            if (rc) {
                pkt->status = rc;
                pkt->out_len = 0;
                p3dp_count_drop(&ctx->counters, rc);
                continue;
            }
            ops[nops++] = op;
            if (early)
                queued = early_enqueue(ctx, ops, nops, queued);
        }
        ok += run_ops(ctx, ops, nops, queued, flags, 1);
        for (size_t i = 0; i < nretired; i++) {
            struct p3dp_sa *sa = retired[i];
            p3dp_sa_crypto_free(ctx, sa);
            OPENSSL_cleanse(sa, sizeof(*sa));
            free(sa);
        }
    }
    return ok;
}

/* ---- open ---- */

/* Returns 0 with an op prepared, 1 when the packet is done without crypto
 * (IKE), or a negative reason. */
static int open_prepare(p3dp_ctx *ctx, p3dp_pkt *pkt, uint32_t flags, struct p3_crypto_op *op,
                        struct open_job *job)
{
    const uint8_t *p3;
    uint32_t p3_len, frame_len, rot, p3_id = 0;
    struct p3dp_peer *peer;
    struct p3dp_sa *sa = NULL;
    struct p3dp_hp *keys[2];
    const uint8_t *dst_addr = NULL;
    uint16_t dst_port = 0;
    uint8_t mask[16];
    uint64_t seq = 0;
    int rc;

    pkt->out_len = 0;
    pkt->kind = P3DP_KIND_DATA;
    pkt->peer = P3DP_NO_PEER;
    pkt->p3_id = 0;
    pkt->seq = 0;
    if (!pkt->in_buf || overlaps(pkt->in_buf, pkt->in_len, pkt->out_buf, pkt->out_cap))
        return -P3R_DP_BAD_ARGUMENT;
    if (flags & P3DP_IN_IP) {
        struct p3dp_outer o;
        rc = p3dp_parse_outer(pkt->in_buf, pkt->in_len, 1, &o);
        if (rc)
            return rc;
        pkt->family = (uint8_t)o.family;
        memset(pkt->addr, 0, sizeof(pkt->addr));
        memcpy(pkt->addr, o.src, o.family == 6 ? 16 : 4);
        pkt->port = o.src_port;
        dst_addr = o.dst;
        dst_port = o.dst_port;
        p3 = o.payload;
        p3_len = o.payload_len;
    } else {
        if (pkt->family != 4 && pkt->family != 6)
            return -P3R_DP_BAD_ARGUMENT;
        if (pkt->family == 4)
            memset(pkt->addr + 4, 0, 12);
        p3 = pkt->in_buf;
        p3_len = pkt->in_len;
    }
    /* RFC 3948 non-ESP marker: an IKE message on the shared UDP port. */
    if (pkt->port != 0 && p3_len >= 4 && !(p3[0] | p3[1] | p3[2] | p3[3])) {
        pkt->kind = P3DP_KIND_IKE;
        pkt->payload_off = (uint32_t)(p3 - pkt->in_buf) + 4;
        pkt->status = 0;
        ctx->counters.ike_packets++;
        return 1;
    }
    if (p3_len < P3DP_P3_HEADER_BYTES + 16 + P3DP_ICV_BYTES)
        return -P3R_DP_BAD_HEADER;
    if (p3[0] != 1 || p3[1] || p3[2] || p3[3])
        return -P3R_DP_BAD_HEADER;                    /* version 1, reserved bits zero */
    peer = p3dp_find_peer_by_addr(ctx, pkt->family, pkt->addr, pkt->port);
    if (!peer || !peer->hp_in)
        return -P3R_DP_UNKNOWN_SESSION;
    /* A whole IP packet must also be addressed to this end of the session. */
    if (dst_addr && (memcmp(dst_addr, peer->cfg.local_addr, pkt->family == 6 ? 16 : 4) != 0 ||
                     dst_port != peer->cfg.local_port))
        return -P3R_DP_UNKNOWN_SESSION;
    /* Unmask with the current hp key, then the previous one (a rolled key). */
    keys[0] = peer->hp_in;
    keys[1] = peer->hp_in_previous;
    for (int k = 0; k < 2 && !sa; k++) {
        if (!keys[k])
            continue;
        if (p3dp_hp_mask(keys[k], p3 + P3DP_P3_HEADER_BYTES, mask))
            return -P3R_DP_CRYPTO_ENGINE;
        p3_id = p3_get_be32(p3 + 4) ^ p3_get_be32(mask);
        sa = p3dp_find_inbound_sa(ctx, p3_id);
        if (sa && sa->peer_id != peer->cfg.peer_id)
            sa = NULL;
    }
    if (!sa)
        return -P3R_DP_UNKNOWN_ID;
    pkt->peer = peer->cfg.peer_id;
    seq = p3_get_be64(p3 + 8) ^ p3_get_be64(mask + 4);
    pkt->p3_id = p3_id;
    pkt->seq = seq;
    rc = p3dp_replay_check(&sa->replay, seq);
    if (rc) {
        p3dp_count_drop(&sa->counters, rc);
        return rc;
    }
    frame_len = p3_len - P3DP_P3_HEADER_BYTES - P3DP_ICV_BYTES;
    if (!pkt->out_buf || frame_len > pkt->out_cap || frame_len > P3DP_MAX_FRAME_BYTES) {
        p3dp_count_drop(&sa->counters, -P3R_DP_TOO_BIG);
        return -P3R_DP_TOO_BIG;
    }
    rot = p3dp_rotation(sa, seq, frame_len);

    memcpy(op->aad, p3, 4);
    p3_put_be32(op->aad + 4, p3_id);
    p3_put_be64(op->aad + 8, seq);
    op->sa = ctx->on_fallback ? sa->crypto_fb : sa->crypto;
    op->seq = seq;
    op->tag = (uint8_t *)(uintptr_t)(p3 + P3DP_P3_HEADER_BYTES + frame_len);   /* read only */
    op->stream_len = frame_len;
    op->op = P3_CRYPTO_OPEN;
    op->nseg = 0;
    op->status = 0;
    op->fault = 0;
    op->user = job;
    /* Ciphertext octet j is frame octet (j + rot) mod F: decrypt straight
     * into place, undoing the rotation without a copy. */
    if (frame_len - rot)
        op->seg[op->nseg++] = (struct p3_crypto_seg){ p3 + P3DP_P3_HEADER_BYTES, pkt->out_buf + rot, frame_len - rot };
    if (rot)
        op->seg[op->nseg++] = (struct p3_crypto_seg){ p3 + P3DP_P3_HEADER_BYTES + frame_len - rot, pkt->out_buf, rot };

    job->pkt = pkt;
    job->peer = peer;
    job->sa = sa;
    job->frame_len = frame_len;
    job->p3_len = p3_len;
    return 0;
}

static int is_local(const p3dp_ctx *ctx, const uint8_t *inner, int next_header)
{
    if (next_header == 4)
        return ctx->has_local_v4 && memcmp(inner + 16, ctx->local_v4, 4) == 0;
    return ctx->has_local_v6 && memcmp(inner + 24, ctx->local_v6, 16) == 0;
}

static int open_finish(p3dp_ctx *ctx, struct p3_crypto_op *op)
{
    struct open_job *job = op->user;
    p3dp_pkt *pkt = job->pkt;
    struct p3dp_sa *sa = job->sa;
    uint8_t *frame = pkt->out_buf;
    uint32_t frame_len = job->frame_len, pad_len, inner_len;
    int rc = op->status, next_header;

    if (!rc)
        rc = p3dp_replay_update(&sa->replay, op->seq);   /* only after authentication */
    if (!rc) {
        pad_len = p3_get_be16(frame + frame_len - 3);
        next_header = frame[frame_len - 1];
        if (pad_len > frame_len - 3) {
            rc = -P3R_DP_BAD_INNER;
        } else {
            inner_len = frame_len - 3 - pad_len;
            if (next_header == 59) {
                pkt->kind = P3DP_KIND_DUMMY;
            } else if (inner_next_header(frame, inner_len) != next_header) {
                rc = -P3R_DP_BAD_INNER;
            } else {
                pkt->kind = is_local(ctx, frame, next_header) ? P3DP_KIND_CONTROL : P3DP_KIND_DATA;
            }
        }
    }
    if (rc) {
        pkt->status = rc;
        pkt->out_len = 0;
        p3dp_count_drop(&ctx->counters, rc);
        p3dp_count_drop(&sa->counters, rc);
        return 0;
    }
    pkt->status = 0;
    pkt->out_len = inner_len;
    sa->counters.opened_packets++;
    sa->counters.opened_bytes += job->p3_len;
    ctx->counters.opened_packets++;
    ctx->counters.opened_bytes += job->p3_len;
    if (pkt->kind == P3DP_KIND_CONTROL) {
        sa->counters.control_packets++;
        ctx->counters.control_packets++;
    } else if (pkt->kind == P3DP_KIND_DUMMY) {
        sa->counters.dummy_packets++;
        ctx->counters.dummy_packets++;
    }
    return 1;
}

size_t p3dp_open_burst(p3dp_ctx *ctx, p3dp_pkt *pkts, size_t n, uint32_t flags)
{
    size_t ok = 0;

    if (!ctx || (!pkts && n))
        return 0;
    p3dp_engine_poll(ctx);
    for (size_t base = 0; base < n; base += P3DP_BURST_CHUNK) {
        struct open_job jobs[P3DP_BURST_CHUNK];
        struct p3_crypto_op *ops[P3DP_BURST_CHUNK];
        size_t m = n - base < P3DP_BURST_CHUNK ? n - base : P3DP_BURST_CHUNK;
        uint16_t nops = 0, queued = 0;
        int early = enqueue_early(ctx);

        for (size_t i = 0; i < m; i++) {
            p3dp_pkt *pkt = &pkts[base + i];
            struct p3_crypto_op *op = &ctx->ops[nops];
            int rc = open_prepare(ctx, pkt, flags, op, &jobs[nops]);
            if (rc == 1) {
                ok++;
                continue;
            }
            if (rc) {
                pkt->status = rc;
                p3dp_count_drop(&ctx->counters, rc);
                continue;
            }
            ops[nops++] = op;
            if (early)
                queued = early_enqueue(ctx, ops, nops, queued);
        }
        ok += run_ops(ctx, ops, nops, queued, 0, 0);
    }
    return ok;
}
