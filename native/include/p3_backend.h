/*
 * p3_backend.h — backend vtables of the native dataplane (DESIGN.md §1, §5).
 *
 * Crypto engine: the stage between framing and output in the style of DPDK
 * ipsec-secgw / cryptodev. The packet path fills p3_crypto_op descriptors,
 * enqueues a burst, and dequeues completed ones. A lookaside engine (a
 * cryptodev, an accelerator) completes later; the synchronous AES-NI engine
 * completes every op inside enqueue, and dequeue hands them back at once.
 *
 * Ops are never reordered within one SA by an engine (anti-replay and the
 * sequence counters assume it).
 */
#ifndef P3_BACKEND_H
#define P3_BACKEND_H

#include <stddef.h>
#include <stdint.h>

enum { P3_CRYPTO_SEAL = 1, P3_CRYPTO_OPEN = 2 };

/* Maximum pieces of one cipher stream: obfuscation builds the frame from
 * (inner tail, padding copied from the inner, trailer, inner head). */
enum { P3_CRYPTO_MAX_SEGS = 8 };

/* A stretch of the cipher stream: len octets read at src, written at dst.
 * Segments are processed in order; their concatenation is the stream. */
struct p3_crypto_seg {
    const uint8_t *src;
    uint8_t *dst;
    uint32_t len;
};

/* Engine-private state of one SA, prepared once at install (key schedule,
 * contexts); the per-packet path never allocates or expands a key. */
struct p3_crypto_sa;

struct p3_crypto_op {
    struct p3_crypto_sa *sa;
    uint64_t seq;                 /* the explicit IV (RFC 4106/4309/3686) */
    uint8_t aad[16];              /* Flags ‖ ID ‖ seq, unmasked */
    uint8_t *tag;                 /* seal: ICV written here; open: ICV read here */
    uint32_t stream_len;          /* sum of seg[].len */
    uint8_t op;                   /* P3_CRYPTO_SEAL / P3_CRYPTO_OPEN */
    uint8_t nseg;
    int16_t status;               /* set by the engine: 0 or -reason (-202 auth, -215 engine) */
    void *user;                   /* the caller's packet */
    struct p3_crypto_seg seg[P3_CRYPTO_MAX_SEGS];
};

struct p3_crypto_engine {
    const char *name;
    /* Prepare an SA: cipher P3DP_AES_*, direction P3_CRYPTO_SEAL/OPEN.
     * Returns NULL on failure. */
    struct p3_crypto_sa *(*sa_new)(void *engine, uint32_t cipher, int direction,
                                   const uint8_t *key, const uint8_t *salt,
                                   const uint8_t *auth_key);
    /* Wipe the SA's keys and free it. */
    void (*sa_free)(void *engine, struct p3_crypto_sa *sa);
    /* Accept up to n ops; returns how many were taken. */
    uint16_t (*enqueue)(void *engine, struct p3_crypto_op **ops, uint16_t n);
    /* Return up to n completed ops, in enqueue order. */
    uint16_t (*dequeue)(void *engine, struct p3_crypto_op **ops, uint16_t n);
    void (*engine_free)(void *engine);
};

/* The AES-NI engine (backends/aesni/aesni.c): OpenSSL EVP, synchronous.
 * scratch_bytes sizes its bounce buffer for ciphers that need one contiguous
 * stream (CCM). Returns the engine state for the vtable's calls. */
void *p3_aesni_engine_new(size_t scratch_bytes);
extern const struct p3_crypto_engine p3_aesni_engine;

#endif /* P3_BACKEND_H */
