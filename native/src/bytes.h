/*
 * bytes.h — the one place for network byte order and the Internet checksum.
 *
 * Every C file of the dataplane, its backends and the DPDK library reads and
 * writes big-endian fields and sums checksums through these helpers; none
 * writes its own (issue 11).
 */
#ifndef P3_BYTES_H
#define P3_BYTES_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* ---- big-endian fields ---------------------------------------------------- */

static inline uint16_t p3_get_be16(const uint8_t *p)
{
    return (uint16_t)(p[0] << 8 | p[1]);
}

static inline uint32_t p3_get_be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static inline uint64_t p3_get_be64(const uint8_t *p)
{
    return (uint64_t)p3_get_be32(p) << 32 | p3_get_be32(p + 4);
}

static inline uint64_t p3_get_le64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

static inline void p3_put_be16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}

static inline void p3_put_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static inline void p3_put_be64(uint8_t *p, uint64_t v)
{
    p3_put_be32(p, (uint32_t)(v >> 32));
    p3_put_be32(p + 4, (uint32_t)v);
}

/* ---- the Internet checksum (RFC 1071) --------------------------------------
 *
 * Summed 8 octets at a time in host order: the one's-complement sum is
 * byte-order independent (RFC 1071 §2(B)), so the folded result is stored
 * back as it lies in memory (p3_csum_store), never through p3_put_be16.
 * Every piece added but the last must have an even length. A received
 * header or datagram that carries its checksum is valid when
 * p3_csum_fold(p3_csum_add(...)) over it is 0. */

static inline uint64_t p3_csum_add(uint64_t sum, const uint8_t *p, size_t len)
{
    while (len >= 8) {
        uint64_t v;
        memcpy(&v, p, 8);
        sum += v;
        sum += sum < v;
        p += 8;
        len -= 8;
    }
    if (len >= 4) {
        uint32_t v;
        memcpy(&v, p, 4);
        sum += v;
        sum += sum < v;
        p += 4;
        len -= 4;
    }
    if (len >= 2) {
        uint16_t v;
        memcpy(&v, p, 2);
        sum += v;
        sum += sum < v;
        p += 2;
        len -= 2;
    }
    if (len) {
        uint16_t v = 0;
        memcpy(&v, p, 1);          /* the odd octet is padded with a zero after it */
        sum += v;
        sum += sum < v;
    }
    return sum;
}

/* The checksum (complemented, folded) in memory order. */
static inline uint16_t p3_csum_fold(uint64_t sum)
{
    sum = (sum & 0xffffffffu) + (sum >> 32);
    sum = (sum & 0xffffffffu) + (sum >> 32);
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    return (uint16_t)~sum;
}

/* Writes a checksum from p3_csum_fold into its field. */
static inline void p3_csum_store(uint8_t *field, uint16_t csum)
{
    memcpy(field, &csum, 2);
}

/* The sum of the pseudo header of TCP, UDP and ICMPv6: RFC 793 §3.1 (IPv4,
 * 4-octet addresses) and RFC 8200 §8.1 (IPv6, 16-octet addresses). */
static inline uint64_t p3_csum_pseudo(int family, const uint8_t *src, const uint8_t *dst, uint8_t proto,
                                      uint32_t l4_len)
{
    uint8_t pseudo[40];
    size_t alen = family == 6 ? 16 : 4, plen;
    memcpy(pseudo, src, alen);
    memcpy(pseudo + alen, dst, alen);
    if (family == 6) {
        p3_put_be32(pseudo + 32, l4_len);
        p3_put_be32(pseudo + 36, proto);
        plen = 40;
    } else {
        pseudo[8] = 0;
        pseudo[9] = proto;
        p3_put_be16(pseudo + 10, (uint16_t)l4_len);
        plen = 12;
    }
    return p3_csum_add(0, pseudo, plen);
}

#endif
