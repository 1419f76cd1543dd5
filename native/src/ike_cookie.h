/* ike_cookie.h — IKE_SA_INIT cookies answered by the worker (RFC 7296 §2.6;
 * docs/runtime.md "Queues"). Under load the worker answers an IKE_SA_INIT
 * request that carries no valid COOKIE notify with one, without queueing it
 * for the control plane, and queues the requests that bring a valid cookie
 * back. The cookie is the responder's (p3hw/protocol/handshake.py), computed
 * the same way with the same secret, which the control plane sets:
 *
 *   cookie = version(1) ‖ HMAC-SHA-256(secret, Ni ‖ IPi ‖ SPIi)[0:16]
 *
 * IPi is the initiator's address as 4 or 16 octets. */
#ifndef P3_IKE_COOKIE_H
#define P3_IKE_COOKIE_H

#include <stdint.h>

enum {
    P3_IKE_HEADER_BYTES = 28,
    P3_IKE_COOKIE_BYTES = 17,
    /* the reply: IKE header and one Notify payload */
    P3_IKE_COOKIE_REPLY_BYTES = P3_IKE_HEADER_BYTES + 8 + P3_IKE_COOKIE_BYTES
};

/* What the worker needs of an IKE_SA_INIT request (pointers into it). */
struct p3_ike_init {
    const uint8_t *spi_i;         /* 8 octets */
    const uint8_t *nonce;
    uint32_t nonce_len;
    const uint8_t *cookie;        /* the COOKIE notify's data when it is the first payload, else NULL */
    uint32_t cookie_len;
};

/* 1 when msg (the IKE message, after the non-ESP marker) is a well-formed IKE_SA_INIT
 * request with a nonce, *v filled; 0 for anything else (other exchanges, responses,
 * malformed: left to the control plane's parser). */
int p3_ike_parse_init(const uint8_t *msg, uint32_t len, struct p3_ike_init *v);
/* The reply to the request v: IKE_SA_INIT response, SPIr zero, N(COOKIE). Writes
 * P3_IKE_COOKIE_REPLY_BYTES octets. */
void p3_ike_cookie_reply(const struct p3_ike_init *v, const uint8_t *cookie, uint8_t *out);

#endif
