/*
 * hp.c — header protection of the P3 ID and seq (DESIGN.md §3).
 *
 * mask = AES-128-ECB(hp_key, sample), sample = the 16 octets following the
 * seq field (the first ciphertext octets), as in QUIC (RFC 9001 §5.4.3);
 * ID ‖ seq are XORed with mask[0..11].
 *
 * One AES block per packet: through EVP the call overhead (parameter
 * lookups) costs more than the block itself, so with AES-NI the key is
 * expanded here once (FIPS-197 §5.2 key expansion with AESKEYGENASSIST) and
 * each mask is ten AESENC rounds. Without AES-NI, an EVP ECB context keyed
 * once does the same.
 */
#include "p3dp_internal.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>
#include <wmmintrin.h>

struct p3dp_hp {
    __m128i round_keys[11];   /* first: the struct is allocated 16-aligned */
    int use_aesni;
    EVP_CIPHER_CTX *evp;
};

__attribute__((target("aes,sse2")))
static __m128i expand_step(__m128i key, __m128i assist)
{
    assist = _mm_shuffle_epi32(assist, 0xff);
    key = _mm_xor_si128(key, _mm_slli_si128(key, 4));
    key = _mm_xor_si128(key, _mm_slli_si128(key, 4));
    key = _mm_xor_si128(key, _mm_slli_si128(key, 4));
    return _mm_xor_si128(key, assist);
}

#define EXPAND(i, rcon) \
    rk[i] = expand_step(rk[(i) - 1], _mm_aeskeygenassist_si128(rk[(i) - 1], rcon))

__attribute__((target("aes,sse2")))
static void expand_key_aesni(__m128i *rk, const uint8_t *key)
{
    rk[0] = _mm_loadu_si128((const __m128i *)(const void *)key);
    EXPAND(1, 0x01); EXPAND(2, 0x02); EXPAND(3, 0x04); EXPAND(4, 0x08); EXPAND(5, 0x10);
    EXPAND(6, 0x20); EXPAND(7, 0x40); EXPAND(8, 0x80); EXPAND(9, 0x1b); EXPAND(10, 0x36);
}

__attribute__((target("aes,sse2")))
static void encrypt_block_aesni(const __m128i *rk, const uint8_t *in, uint8_t *out)
{
    __m128i x = _mm_xor_si128(_mm_loadu_si128((const __m128i *)(const void *)in), rk[0]);
    for (int i = 1; i < 10; i++)
        x = _mm_aesenc_si128(x, rk[i]);
    x = _mm_aesenclast_si128(x, rk[10]);
    _mm_storeu_si128((__m128i *)(void *)out, x);
}

struct p3dp_hp *p3dp_hp_new(const uint8_t *hp_key)
{
    struct p3dp_hp *hp = aligned_alloc(16, sizeof(struct p3dp_hp));
    if (!hp)
        return NULL;
    memset(hp, 0, sizeof(*hp));
    if (p3dp_cpu_features() & P3DP_CPU_AESNI) {
        hp->use_aesni = 1;
        expand_key_aesni(hp->round_keys, hp_key);
        return hp;
    }
    hp->evp = EVP_CIPHER_CTX_new();
    if (!hp->evp || !EVP_EncryptInit_ex(hp->evp, EVP_aes_128_ecb(), NULL, hp_key, NULL) ||
        !EVP_CIPHER_CTX_set_padding(hp->evp, 0)) {
        p3dp_hp_free(hp);
        return NULL;
    }
    return hp;
}

void p3dp_hp_free(struct p3dp_hp *hp)
{
    if (!hp)
        return;
    EVP_CIPHER_CTX_free(hp->evp);   /* cleanses its key schedule */
    OPENSSL_cleanse(hp, sizeof(*hp));
    free(hp);
}

int p3dp_hp_mask(struct p3dp_hp *hp, const uint8_t *sample, uint8_t *mask)
{
    int outl = 0;
    if (hp->use_aesni) {
        encrypt_block_aesni(hp->round_keys, sample, mask);
        return 0;
    }
    if (!EVP_EncryptUpdate(hp->evp, mask, &outl, sample, 16) || outl != 16)
        return -P3R_DP_CRYPTO_ENGINE;
    return 0;
}
