/* ike_cookie.c — IKE_SA_INIT parsing and the stateless COOKIE reply
 * (RFC 7296 §2.6, §3.1, §3.10; ike_cookie.h). */
#include "ike_cookie.h"
#include "p3dp.h"

#include <string.h>

enum {
    IKE_SA_INIT = 34,
    PAYLOAD_NONCE = 40,
    PAYLOAD_NOTIFY = 41,
    N_COOKIE = 16390,
    FLAG_INITIATOR = 0x08,
    FLAG_RESPONSE = 0x20,
    IKE_VERSION_2 = 0x20,
    MAX_PAYLOADS = 32
};

static uint32_t get32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

int p3_ike_parse_init(const uint8_t *msg, uint32_t len, struct p3_ike_init *v)
{
    memset(v, 0, sizeof(*v));
    if (len < P3_IKE_HEADER_BYTES || msg[17] != IKE_VERSION_2 || msg[18] != IKE_SA_INIT)
        return 0;
    static const uint8_t zero8[8];
    uint8_t flags = msg[19];
    if (!(flags & FLAG_INITIATOR) || (flags & FLAG_RESPONSE) || get32(msg + 20) != 0 ||
        memcmp(msg + 8, zero8, 8) != 0 || get32(msg + 24) != len)
        return 0;
    v->spi_i = msg;
    uint8_t next = msg[16];
    uint32_t at = P3_IKE_HEADER_BYTES;
    for (int n = 0; next != 0 && n < MAX_PAYLOADS; n++) {
        if (at + 4 > len)
            return 0;
        uint8_t type = next;
        next = msg[at];
        uint32_t plen = (uint32_t)msg[at + 2] << 8 | msg[at + 3];
        if (plen < 4 || at + plen > len)
            return 0;
        if (type == PAYLOAD_NONCE && !v->nonce) {
            v->nonce = msg + at + 4;
            v->nonce_len = plen - 4;
        } else if (type == PAYLOAD_NOTIFY && n == 0 && plen >= 8) {
            /* RFC 7296 §2.6: the COOKIE notify comes first */
            uint8_t spi_size = msg[at + 5];
            uint16_t notify = (uint16_t)(msg[at + 6] << 8 | msg[at + 7]);
            if (notify == N_COOKIE && 8u + spi_size <= plen) {
                v->cookie = msg + at + 8 + spi_size;
                v->cookie_len = plen - 8 - spi_size;
            }
        }
        at += plen;
    }
    return next == 0 && at == len && v->nonce != NULL && v->nonce_len > 0;
}

void p3_ike_cookie_reply(const struct p3_ike_init *v, const uint8_t *cookie, uint8_t *out)
{
    uint32_t total = P3_IKE_COOKIE_REPLY_BYTES;
    memcpy(out, v->spi_i, 8);
    memset(out + 8, 0, 8);                    /* SPIr zero: no state kept (§2.6) */
    out[16] = PAYLOAD_NOTIFY;
    out[17] = IKE_VERSION_2;
    out[18] = IKE_SA_INIT;
    out[19] = FLAG_RESPONSE;
    memset(out + 20, 0, 4);                   /* message id 0 */
    out[24] = (uint8_t)(total >> 24);
    out[25] = (uint8_t)(total >> 16);
    out[26] = (uint8_t)(total >> 8);
    out[27] = (uint8_t)total;
    uint8_t *n = out + P3_IKE_HEADER_BYTES;
    uint16_t plen = 8 + P3_IKE_COOKIE_BYTES;
    n[0] = 0;                                  /* no next payload */
    n[1] = 0;
    n[2] = (uint8_t)(plen >> 8);
    n[3] = (uint8_t)plen;
    n[4] = 0;                                  /* protocol id: none */
    n[5] = 0;                                  /* SPI size */
    n[6] = (uint8_t)(N_COOKIE >> 8);
    n[7] = (uint8_t)(N_COOKIE & 0xff);
    memcpy(n + 8, cookie, P3_IKE_COOKIE_BYTES);
}

int p3dp_ike_cookie(const uint8_t *secret, size_t secret_len, uint8_t version, const uint8_t *nonce,
                    size_t nonce_len, int family, const uint8_t *addr, const uint8_t *spi_i, uint8_t *out)
{
    uint8_t input[256 + 16 + 8], mac[32];
    size_t alen = family == 6 ? 16 : 4;
    if (!secret || secret_len == 0 || !nonce || nonce_len == 0 || nonce_len > 256 ||
        (family != 4 && family != 6) || !addr || !spi_i || !out)
        return -P3R_DP_BAD_ARGUMENT;
    memcpy(input, nonce, nonce_len);
    memcpy(input + nonce_len, addr, alen);
    memcpy(input + nonce_len + alen, spi_i, 8);
    int rc = p3dp_hmac_sha256(secret, secret_len, input, nonce_len + alen + 8, mac);
    if (rc != 0)
        return rc;
    out[0] = version;
    memcpy(out + 1, mac, P3_IKE_COOKIE_BYTES - 1);
    return 0;
}
