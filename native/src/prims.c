/*
 * prims.c — bare AEAD / CTR / HMAC primitives over OpenSSL EVP, for test
 * vectors and tools (p3hw.dataplane.aead_seal, aead_open, aes_ctr). Not the
 * packet path: each call builds and frees its own context.
 */
#include "p3dp_internal.h"

#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/crypto.h>
#include <string.h>

static const EVP_CIPHER *aead_cipher(uint32_t cipher, int *ccm)
{
    *ccm = cipher == P3DP_AES_128_CCM || cipher == P3DP_AES_256_CCM;
    switch (cipher) {
    case P3DP_AES_128_GCM: return EVP_aes_128_gcm();
    case P3DP_AES_256_GCM: return EVP_aes_256_gcm();
    case P3DP_AES_128_CCM: return EVP_aes_128_ccm();
    case P3DP_AES_256_CCM: return EVP_aes_256_ccm();
    default: return NULL;
    }
}

static int aead(int enc, uint32_t cipher, const uint8_t *key, const uint8_t *nonce, size_t nonce_len,
                const uint8_t *aad, size_t aad_len, const uint8_t *in, size_t len,
                uint8_t *out, uint8_t *tag, size_t tag_len)
{
    int ccm, outl, rc = -P3R_DP_CRYPTO_ENGINE;
    const EVP_CIPHER *evp = aead_cipher(cipher, &ccm);
    EVP_CIPHER_CTX *c;
    uint8_t final_block[16];

    if (!evp)
        return -P3R_DP_BAD_CIPHER;
    if (!key || !nonce || (!aad && aad_len) || (!in && len) || (!out && len) || !tag ||
        len > 0x7fffffff || aad_len > 0x7fffffff || nonce_len == 0 || nonce_len > 64)
        return -P3R_DP_BAD_ARGUMENT;
    if (ccm ? (nonce_len < 7 || nonce_len > 13 || tag_len < 4 || tag_len > 16 || (tag_len & 1))
            : (tag_len < 4 || tag_len > 16))
        return -P3R_DP_BAD_ARGUMENT;
    c = EVP_CIPHER_CTX_new();
    if (!c)
        return -P3R_DP_CRYPTO_ENGINE;
    if (!EVP_CipherInit_ex(c, evp, NULL, NULL, NULL, enc) ||
        !EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_AEAD_SET_IVLEN, (int)nonce_len, NULL))
        goto out;
    if (ccm && !EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_AEAD_SET_TAG, (int)tag_len, enc ? NULL : tag))
        goto out;
    if (!EVP_CipherInit_ex(c, NULL, NULL, key, nonce, enc))
        goto out;
    if (ccm && !EVP_CipherUpdate(c, NULL, &outl, NULL, (int)len))
        goto out;
    if (aad_len && !EVP_CipherUpdate(c, NULL, &outl, aad, (int)aad_len))
        goto out;
    if (!ccm && !enc && !EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_AEAD_SET_TAG, (int)tag_len, tag))
        goto out;
    if (!EVP_CipherUpdate(c, out, &outl, in, (int)len)) {
        rc = enc ? -P3R_DP_CRYPTO_ENGINE : -P3R_DP_AUTH_FAILED;
        goto out;
    }
    if (!(ccm && !enc) && EVP_CipherFinal_ex(c, final_block, &outl) <= 0) {
        rc = enc ? -P3R_DP_CRYPTO_ENGINE : -P3R_DP_AUTH_FAILED;
        goto out;
    }
    if (enc && !EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_AEAD_GET_TAG, (int)tag_len, tag))
        goto out;
    rc = 0;
out:
    EVP_CIPHER_CTX_free(c);
    if (rc && !enc && out)
        OPENSSL_cleanse(out, len);      /* never hand back unauthenticated plaintext */
    return rc;
}

int p3dp_aead_seal(uint32_t cipher, const uint8_t *key, const uint8_t *nonce, size_t nonce_len,
                   const uint8_t *aad, size_t aad_len, const uint8_t *in, size_t len,
                   uint8_t *out, uint8_t *tag, size_t tag_len)
{
    return aead(1, cipher, key, nonce, nonce_len, aad, aad_len, in, len, out, tag, tag_len);
}

int p3dp_aead_open(uint32_t cipher, const uint8_t *key, const uint8_t *nonce, size_t nonce_len,
                   const uint8_t *aad, size_t aad_len, const uint8_t *in, size_t len,
                   uint8_t *out, const uint8_t *tag, size_t tag_len)
{
    uint8_t tag_copy[16];
    if (!tag || tag_len > 16)
        return -P3R_DP_BAD_ARGUMENT;
    memcpy(tag_copy, tag, tag_len);
    return aead(0, cipher, key, nonce, nonce_len, aad, aad_len, in, len, out, tag_copy, tag_len);
}

int p3dp_aes_ctr(const uint8_t *key, size_t key_len, const uint8_t *counter_block,
                 const uint8_t *in, size_t len, uint8_t *out)
{
    const EVP_CIPHER *evp = key_len == 16 ? EVP_aes_128_ctr() : key_len == 32 ? EVP_aes_256_ctr() : NULL;
    EVP_CIPHER_CTX *c;
    int outl, rc = -P3R_DP_CRYPTO_ENGINE;

    if (!evp)
        return -P3R_DP_BAD_CIPHER;
    if (!key || !counter_block || (len && (!in || !out)) || len > 0x7fffffff)
        return -P3R_DP_BAD_ARGUMENT;
    c = EVP_CIPHER_CTX_new();
    if (!c)
        return -P3R_DP_CRYPTO_ENGINE;
    if (EVP_EncryptInit_ex(c, evp, NULL, key, counter_block) &&
        EVP_EncryptUpdate(c, out, &outl, in, (int)len))
        rc = 0;
    EVP_CIPHER_CTX_free(c);
    return rc;
}

int p3dp_hmac_sha256(const uint8_t *key, size_t key_len, const uint8_t *data, size_t len, uint8_t *out)
{
    size_t outl = 0;
    if (!key || !out || (len && !data))
        return -P3R_DP_BAD_ARGUMENT;
    if (!EVP_Q_mac(NULL, "HMAC", NULL, "SHA256", NULL, key, key_len, data, len, out, 32, &outl) || outl != 32)
        return -P3R_DP_CRYPTO_ENGINE;
    return 0;
}
