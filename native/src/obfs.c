/*
 * obfs.c — the data manipulation of spec §2.1.5.
 *
 * 1. Size buckets: a frame is padded up to the next bucket (the context's
 *    list, then the peer's cap = path MTU minus overhead).
 * 2. Padding is copied from the packet's own bytes (packet.c).
 * 3. Relocation: the frame is rotated left by
 *    16 * (SipHash-2-4(obfs_key, seq) mod (frame_len / 16)) octets before
 *    sealing and back after opening (packet.c).
 */
#include "p3dp_internal.h"

uint32_t p3dp_bucket_frame_len(const p3dp_ctx *ctx, const struct p3dp_peer *peer, uint32_t needed)
{
    if (needed < P3DP_MIN_FRAME_BYTES)
        needed = P3DP_MIN_FRAME_BYTES;
    for (size_t i = 0; i < ctx->nbuckets; i++) {
        if (ctx->buckets[i] >= peer->frame_cap)
            break;
        if (ctx->buckets[i] >= needed)
            return ctx->buckets[i];
    }
    return needed <= peer->frame_cap ? peer->frame_cap : 0;
}

static inline uint64_t rotl(uint64_t x, int b)
{
    return (x << b) | (x >> (64 - b));
}

#define SIPROUND                                                          \
    do {                                                                  \
        v0 += v1; v1 = rotl(v1, 13); v1 ^= v0; v0 = rotl(v0, 32);          \
        v2 += v3; v3 = rotl(v3, 16); v3 ^= v2;                             \
        v0 += v3; v3 = rotl(v3, 21); v3 ^= v0;                             \
        v2 += v1; v1 = rotl(v1, 17); v1 ^= v2; v2 = rotl(v2, 32);          \
    } while (0)

/* SipHash-2-4 (Aumasson & Bernstein) of one 8-octet little-endian word. */
uint64_t p3dp_siphash24(uint64_t k0, uint64_t k1, uint64_t msg)
{
    uint64_t v0 = k0 ^ 0x736f6d6570736575ull;
    uint64_t v1 = k1 ^ 0x646f72616e646f6dull;
    uint64_t v2 = k0 ^ 0x6c7967656e657261ull;
    uint64_t v3 = k1 ^ 0x7465646279746573ull;
    uint64_t last = (uint64_t)8 << 56;

    v3 ^= msg; SIPROUND; SIPROUND; v0 ^= msg;
    v3 ^= last; SIPROUND; SIPROUND; v0 ^= last;
    v2 ^= 0xff;
    SIPROUND; SIPROUND; SIPROUND; SIPROUND;
    return v0 ^ v1 ^ v2 ^ v3;
}

/* Rotation in whole 16-octet blocks (docs/dataplane.md): F/16 possible
 * offsets, and both pieces of the cipher stream stay block-aligned. */
uint32_t p3dp_rotation(const struct p3dp_sa *sa, uint64_t seq, uint32_t frame_len)
{
    uint32_t blocks = frame_len / 16;
    return (uint32_t)(p3dp_siphash24(sa->obfs_k0, sa->obfs_k1, seq) % blocks) * 16;
}
