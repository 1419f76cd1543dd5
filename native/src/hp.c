/*
 * hp.c — header protection of the P3 ID and seq (DESIGN.md §3).
 *
 * mask = AES-128-ECB(hp_key, sample), sample = the 16 octets following the
 * seq field (the first ciphertext octets), as in QUIC (RFC 9001 §5.4.3);
 * ID ‖ seq are XORed with mask[0..11]. The ECB context is keyed once when
 * the key is installed.
 */
#include "p3dp_internal.h"

#include <openssl/evp.h>

EVP_CIPHER_CTX *p3dp_hp_new(const uint8_t *hp_key)
{
    EVP_CIPHER_CTX *hp = EVP_CIPHER_CTX_new();
    if (!hp)
        return NULL;
    if (!EVP_EncryptInit_ex(hp, EVP_aes_128_ecb(), NULL, hp_key, NULL) ||
        !EVP_CIPHER_CTX_set_padding(hp, 0)) {
        EVP_CIPHER_CTX_free(hp);
        return NULL;
    }
    return hp;
}

void p3dp_hp_free(EVP_CIPHER_CTX *hp)
{
    EVP_CIPHER_CTX_free(hp);   /* cleanses the key schedule */
}

int p3dp_hp_mask(EVP_CIPHER_CTX *hp, const uint8_t *sample, uint8_t *mask)
{
    int outl = 0;
    if (!EVP_EncryptUpdate(hp, mask, &outl, sample, 16) || outl != 16)
        return -215;
    return 0;
}
