/*
 * accel.c — the accelerator simulator's crypto (docs/engines.md): the
 * software device of the `accel-sim` engine. The rings, the device thread,
 * latency, the throughput cap and the injected faults are the lookaside
 * driver's (native/src/lookaside.c); this file is only what the simulated
 * device computes with: an OpenSSL AES-GCM context per SA, keyed once when
 * the SA is installed (the device's session).
 *
 * It is a test stand-in, shipped in the extension for the demo, the tests
 * and the benchmarks (the Python side: simulators/accelerator/__init__.py).
 */
#include "p3dp.h"
#include "p3_backend.h"

#include <openssl/evp.h>
#include <string.h>

static void *sim_key_new(void *core, uint32_t cipher, int encrypt, const uint8_t *key)
{
    const EVP_CIPHER *evp = cipher == P3DP_AES_128_GCM ? EVP_aes_128_gcm()
                          : cipher == P3DP_AES_256_GCM ? EVP_aes_256_gcm() : NULL;
    EVP_CIPHER_CTX *c;

    (void)core;
    if (!evp || !(c = EVP_CIPHER_CTX_new()))
        return NULL;
    if (!EVP_CipherInit_ex(c, evp, NULL, key, NULL, encrypt)) {
        EVP_CIPHER_CTX_free(c);
        return NULL;
    }
    return c;
}

static void sim_key_free(void *core, void *key)
{
    (void)core;
    EVP_CIPHER_CTX_free(key);   /* cleanses the expanded key */
}

static int sim_gcm(void *core, void *key, const uint8_t *iv, struct p3_crypto_op *op, int tag_flip)
{
    EVP_CIPHER_CTX *c = key;
    uint8_t tag[16], last[16];
    int outl;

    (void)core;
    if (!EVP_CipherInit_ex(c, NULL, NULL, NULL, iv, -1))
        return -P3R_ACCEL_FAULT;
    if (op->op == P3_CRYPTO_OPEN) {
        memcpy(tag, op->tag, 16);
        if (tag_flip)
            tag[5] ^= 0x10;
        if (!EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_AEAD_SET_TAG, 16, tag))
            return -P3R_ACCEL_FAULT;
    }
    if (!EVP_CipherUpdate(c, NULL, &outl, op->aad, 16))
        return -P3R_ACCEL_FAULT;
    for (unsigned i = 0; i < op->nseg; i++)
        if (!EVP_CipherUpdate(c, op->seg[i].dst, &outl, op->seg[i].src, (int)op->seg[i].len))
            return -P3R_ACCEL_FAULT;
    if (EVP_CipherFinal_ex(c, last, &outl) <= 0)
        return op->op == P3_CRYPTO_OPEN ? -P3R_DP_AUTH_FAILED : -P3R_ACCEL_FAULT;
    if (op->op == P3_CRYPTO_SEAL && !EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_AEAD_GET_TAG, 16, op->tag))
        return -P3R_ACCEL_FAULT;
    return 0;
}

static const struct p3_lookaside_core sim_core = {
    .key_new = sim_key_new,
    .key_free = sim_key_free,
    .gcm = sim_gcm,
};

static int accel_sim_start(const struct p3dp_engine_params *params, const struct p3_crypto_engine **engine,
                           void **state)
{
    *engine = &p3_lookaside_driver;
    *state = p3_lookaside_new(params, &sim_core, NULL);
    return *state ? 0 : -P3R_DP_CRYPTO_ENGINE;
}

const struct p3_engine_backend p3_accel_sim_backend = {
    .kind = P3DP_ENGINE_ACCEL_SIM,
    .start = accel_sim_start,
};
