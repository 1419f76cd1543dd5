/* The DPDK ports' link layer (backends/dpdk/src/netstack.c): ARP (RFC 826),
 * neighbour discovery (RFC 4861), echo replies, the Ethernet and IP
 * classification, neighbour resolution with its rate limit, and truncated
 * frames of every length. Frames are built octet by octet here and the
 * replies checked the same way, with checksums recomputed independently. */
#include "ntest.h"
#include "netstack.h"

#include <arpa/inet.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

static const uint8_t OUR_MAC[6] = {0x02, 0x00, 0x00, 0x00, 0x00, 0x01};
static const uint8_t HOST_MAC[6] = {0x02, 0x00, 0x00, 0x00, 0x00, 0xaa};
static const uint8_t OTHER_MAC[6] = {0x02, 0x00, 0x00, 0x00, 0x00, 0xbb};
static const uint8_t BCAST[6] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff};

static const uint64_t T0 = 1000000;   /* an arbitrary monotonic start, in ms */

/* ---- addresses and ports ---- */

static void a4(uint8_t out[4], const char *s)
{
    if (inet_pton(AF_INET, s, out) != 1)
        abort();
}

static void a6(uint8_t out[16], const char *s)
{
    if (inet_pton(AF_INET6, s, out) != 1)
        abort();
}

/* 192.0.2.1/24 via 192.0.2.254 */
static void port4(struct p3ns_port *p, int lan)
{
    uint8_t addr[4], gw[4];
    a4(addr, "192.0.2.1");
    a4(gw, "192.0.2.254");
    if (p3ns_port_init(p, OUR_MAC, 4, addr, 24, gw, lan) != 0)
        abort();
}

/* 2001:db8::1/64 via fe80::1 (a router's usual link-local address) */
static void port6(struct p3ns_port *p, int lan)
{
    uint8_t addr[16], gw[16];
    a6(addr, "2001:db8::1");
    a6(gw, "fe80::1");
    if (p3ns_port_init(p, OUR_MAC, 6, addr, 64, gw, lan) != 0)
        abort();
}

/* ---- frame building, independent of netstack.c ---- */

static uint16_t rd16(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }

static void wr16(uint8_t *p, unsigned v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}

/* RFC 1071 one's-complement sum, finished: 0 over data that carries a valid checksum. */
static uint16_t cksum(uint32_t sum, const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        sum += (i & 1) ? p[i] : (uint32_t)p[i] << 8;
    while (sum >> 16)
        sum = (sum & 0xffff) + (sum >> 16);
    return (uint16_t)~sum;
}

/* ICMPv6 checksum over the RFC 8200 §8.1 pseudo-header of the IPv6 packet at ip. */
static uint16_t icmp6_cksum(const uint8_t *ip)
{
    uint32_t n = rd16(ip + 4), sum = n + 58;
    for (int i = 8; i < 40; i += 2)
        sum += rd16(ip + i);
    return cksum(sum, ip + 40, n);
}

static size_t eth(uint8_t *f, const uint8_t dst[6], const uint8_t src[6], unsigned type)
{
    memcpy(f, dst, 6);
    memcpy(f + 6, src, 6);
    wr16(f + 12, type);
    return 14;
}

static size_t arp(uint8_t *f, const uint8_t eth_dst[6], unsigned op, const uint8_t sha[6], const char *spa,
                  const char *tpa)
{
    uint8_t *a = f + eth(f, eth_dst, sha, 0x0806);
    static const uint8_t head[6] = {0, 1, 8, 0, 6, 4};
    memcpy(a, head, 6);
    wr16(a + 6, op);
    memcpy(a + 8, sha, 6);
    a4(a + 14, spa);
    memset(a + 18, 0, 6);
    a4(a + 24, tpa);
    return 42;
}

/* IPv4 packet with a valid header checksum and proto's payload. */
static size_t ip4(uint8_t *f, const uint8_t eth_dst[6], const char *src, const char *dst, unsigned proto,
                  const uint8_t *payload, size_t n)
{
    uint8_t *ip = f + eth(f, eth_dst, HOST_MAC, 0x0800);
    memset(ip, 0, 20);
    ip[0] = 0x45;
    wr16(ip + 2, 20 + n);
    wr16(ip + 4, 0x1234);
    ip[8] = 64;
    ip[9] = (uint8_t)proto;
    a4(ip + 12, src);
    a4(ip + 16, dst);
    wr16(ip + 10, cksum(0, ip, 20));
    memcpy(ip + 20, payload, n);
    return 14 + 20 + n;
}

static size_t echo4(uint8_t *f, const uint8_t eth_dst[6], const char *src, const char *dst, size_t data_len)
{
    uint8_t icmp[200] = {8, 0, 0, 0, 0x42, 0x42, 0, 7};
    for (size_t i = 0; i < data_len; i++)
        icmp[8 + i] = (uint8_t)(i * 7 + 1);
    wr16(icmp + 2, cksum(0, icmp, 8 + data_len));
    return ip4(f, eth_dst, src, dst, 1, icmp, 8 + data_len);
}

static size_t udp4(uint8_t *f, const uint8_t eth_dst[6], const char *src, const char *dst)
{
    uint8_t udp[12] = {0x13, 0x88, 0x13, 0x88, 0, 12, 0, 0, 'p', 'i', 'n', 'g'};
    return ip4(f, eth_dst, src, dst, 17, udp, sizeof(udp));
}

/* IPv6 packet with next header nh and payload; ICMPv6 gets its checksum. */
static size_t ip6(uint8_t *f, const uint8_t eth_dst[6], const char *src, const char *dst, unsigned nh,
                  unsigned hop, const uint8_t *payload, size_t n)
{
    uint8_t *ip = f + eth(f, eth_dst, HOST_MAC, 0x86dd);
    memset(ip, 0, 40);
    ip[0] = 0x60;
    wr16(ip + 4, n);
    ip[6] = (uint8_t)nh;
    ip[7] = (uint8_t)hop;
    a6(ip + 8, src);
    a6(ip + 24, dst);
    memcpy(ip + 40, payload, n);
    if (nh == 58)
        wr16(ip + 42, icmp6_cksum(ip));
    return 14 + 40 + n;
}

/* A neighbour solicitation or advertisement; lla_type 0 for no link-layer option. */
static size_t nd(uint8_t *f, const uint8_t eth_dst[6], const char *src, const char *dst, unsigned hop,
                 unsigned type, unsigned flags, const char *target, unsigned lla_type, const uint8_t lla[6])
{
    uint8_t m[32] = {(uint8_t)type, 0, 0, 0, (uint8_t)flags};
    a6(m + 8, target);
    if (lla_type) {
        m[24] = (uint8_t)lla_type;
        m[25] = 1;
        memcpy(m + 26, lla, 6);
    }
    return ip6(f, eth_dst, src, dst, 58, hop, m, lla_type ? 32 : 24);
}

static size_t echo6(uint8_t *f, const uint8_t eth_dst[6], const char *src, const char *dst)
{
    uint8_t m[40] = {128, 0, 0, 0, 0x11, 0x22, 0, 1};
    for (int i = 8; i < 40; i++)
        m[i] = (uint8_t)i;
    return ip6(f, eth_dst, src, dst, 58, 64, m, sizeof(m));
}

static size_t udp6(uint8_t *f, const uint8_t eth_dst[6], const char *src, const char *dst)
{
    uint8_t udp[12] = {0x13, 0x88, 0x13, 0x88, 0, 12, 0, 0, 'p', 'i', 'n', 'g'};
    return ip6(f, eth_dst, src, dst, 17, 64, udp, sizeof(udp));
}

/* ---- running frames through a port ---- */

struct result {
    enum p3ns_verdict v;
    uint8_t reply[P3NS_MAX_REPLY];
    uint32_t reply_len, l3_off, l3_len;
};

static struct result input(struct p3ns_port *p, const uint8_t *frame, size_t len, uint64_t now)
{
    struct result r;
    memset(&r, 0xee, sizeof(r));
    r.v = p3ns_input(p, frame, (uint32_t)len, now, r.reply, sizeof(r.reply), &r.reply_len, &r.l3_off, &r.l3_len);
    return r;
}

static int resolve(struct p3ns_port *p, const uint8_t *dst, uint64_t now, uint8_t mac[6], uint8_t req[P3NS_MAX_REPLY],
                   uint32_t *req_len)
{
    return p3ns_resolve(p, dst, now, mac, req, P3NS_MAX_REPLY, req_len);
}

static bool known_as(struct p3ns_port *p, const uint8_t *addr, const uint8_t mac[6], uint64_t now)
{
    uint8_t got[6], req[P3NS_MAX_REPLY];
    uint32_t req_len = 99;
    return resolve(p, addr, now, got, req, &req_len) == 1 && memcmp(got, mac, 6) == 0 && req_len == 0;
}

/* ---- ARP ---- */

static void test_arp_request_for_us_is_answered_and_asker_learned(void)
{
    struct p3ns_port p;
    uint8_t f[64], asker[4];
    port4(&p, 1);
    size_t n = arp(f, BCAST, 1, HOST_MAC, "192.0.2.7", "192.0.2.1");
    struct result r = input(&p, f, n, T0);
    CHECK_EQ(r.v, P3NS_REPLY);
    CHECK_EQ(r.reply_len, 42);
    const uint8_t *o = r.reply, *a = o + 14;
    CHECK(memcmp(o, HOST_MAC, 6) == 0);            /* straight back to the asker */
    CHECK(memcmp(o + 6, OUR_MAC, 6) == 0);
    CHECK_EQ(rd16(o + 12), 0x0806);
    CHECK_EQ(rd16(a), 1);
    CHECK_EQ(rd16(a + 2), 0x0800);
    CHECK_EQ(a[4], 6);
    CHECK_EQ(a[5], 4);
    CHECK_EQ(rd16(a + 6), 2);                      /* reply */
    CHECK(memcmp(a + 8, OUR_MAC, 6) == 0);
    CHECK(memcmp(a + 14, (const uint8_t[]){192, 0, 2, 1}, 4) == 0);
    CHECK(memcmp(a + 18, HOST_MAC, 6) == 0);
    CHECK(memcmp(a + 24, (const uint8_t[]){192, 0, 2, 7}, 4) == 0);
    CHECK_EQ(p.arp_replies, 1);
    a4(asker, "192.0.2.7");
    CHECK(known_as(&p, asker, HOST_MAC, T0 + 10));
    CHECK_EQ(p.requests_sent, 0);
}

static void test_arp_request_for_another_address_gets_no_reply(void)
{
    struct p3ns_port p;
    uint8_t f[64], asker[4], mac[6], req[P3NS_MAX_REPLY];
    uint32_t req_len;
    port4(&p, 1);
    size_t n = arp(f, BCAST, 1, HOST_MAC, "192.0.2.7", "192.0.2.99");
    struct result r = input(&p, f, n, T0);
    CHECK_EQ(r.v, P3NS_DROP);
    CHECK_EQ(r.reply_len, 0);
    CHECK_EQ(p.arp_replies, 0);
    /* Nor does a stranger's question add it to the table (RFC 826). */
    a4(asker, "192.0.2.7");
    CHECK_EQ(resolve(&p, asker, T0, mac, req, &req_len), 0);
}

static void test_arp_reply_teaches_the_sender(void)
{
    struct p3ns_port p;
    uint8_t f[64], host[4];
    port4(&p, 0);
    size_t n = arp(f, OUR_MAC, 2, HOST_MAC, "192.0.2.254", "192.0.2.1");
    memcpy(f + 14 + 18, OUR_MAC, 6);
    CHECK_EQ(input(&p, f, n, T0).v, P3NS_CONSUMED);
    CHECK_EQ(p.learned, 1);
    a4(host, "192.0.2.254");
    CHECK(known_as(&p, host, HOST_MAC, T0 + 1));
    /* A later reply with a new MAC (the neighbour's card was changed) wins. */
    n = arp(f, OUR_MAC, 2, OTHER_MAC, "192.0.2.254", "192.0.2.1");
    CHECK_EQ(input(&p, f, n, T0 + 2).v, P3NS_CONSUMED);
    CHECK(known_as(&p, host, OTHER_MAC, T0 + 3));
}

static void test_arp_request_from_awaited_neighbour_completes_its_entry(void)
{
    struct p3ns_port p;
    uint8_t f[64], host[4], mac[6], req[P3NS_MAX_REPLY];
    uint32_t req_len;
    port4(&p, 1);
    a4(host, "192.0.2.9");
    CHECK_EQ(resolve(&p, host, T0, mac, req, &req_len), 0);
    /* It asks about someone else, but we were waiting for it: merged (RFC 826). */
    size_t n = arp(f, BCAST, 1, HOST_MAC, "192.0.2.9", "192.0.2.50");
    struct result r = input(&p, f, n, T0 + 5);
    CHECK_EQ(r.v, P3NS_CONSUMED);
    CHECK_EQ(r.reply_len, 0);
    CHECK(known_as(&p, host, HOST_MAC, T0 + 6));
}

static void test_arp_probe_and_claims_on_our_address_teach_nothing(void)
{
    struct p3ns_port p;
    uint8_t f[64], ours[4], mac[6], req[P3NS_MAX_REPLY];
    uint32_t req_len;
    port4(&p, 1);
    /* RFC 5227 probe: answered (we defend the address), nothing learned. */
    size_t n = arp(f, BCAST, 1, HOST_MAC, "0.0.0.0", "192.0.2.1");
    struct result r = input(&p, f, n, T0);
    CHECK_EQ(r.v, P3NS_REPLY);
    CHECK(memcmp(r.reply + 14 + 24, (const uint8_t[]){0, 0, 0, 0}, 4) == 0);
    CHECK_EQ(p.learned, 0);
    n = arp(f, BCAST, 2, HOST_MAC, "192.0.2.1", "192.0.2.1");
    CHECK_EQ(input(&p, f, n, T0).v, P3NS_DROP);
    CHECK_EQ(p.learned, 0);
    a4(ours, "192.0.2.1");
    CHECK_EQ(resolve(&p, ours, T0, mac, req, &req_len), 0);
}

/* ---- resolution ---- */

static void test_resolve_of_unknown_address_asks_once_per_retry_interval(void)
{
    struct p3ns_port p;
    uint8_t dst[4], mac[6], req[P3NS_MAX_REPLY];
    uint32_t req_len;
    port4(&p, 1);
    a4(dst, "192.0.2.33");
    CHECK_EQ(resolve(&p, dst, T0, mac, req, &req_len), 0);
    CHECK_EQ(req_len, 42);
    CHECK(memcmp(req, BCAST, 6) == 0);
    CHECK(memcmp(req + 6, OUR_MAC, 6) == 0);
    CHECK_EQ(rd16(req + 12), 0x0806);
    CHECK_EQ(rd16(req + 14 + 6), 1);                 /* request */
    CHECK(memcmp(req + 14 + 8, OUR_MAC, 6) == 0);
    CHECK(memcmp(req + 14 + 14, (const uint8_t[]){192, 0, 2, 1}, 4) == 0);
    CHECK(memcmp(req + 14 + 24, dst, 4) == 0);
    CHECK_EQ(resolve(&p, dst, T0 + 1, mac, req, &req_len), 0);
    CHECK_EQ(req_len, 0);
    CHECK_EQ(resolve(&p, dst, T0 + P3NS_RETRY_MS - 1, mac, req, &req_len), 0);
    CHECK_EQ(req_len, 0);
    CHECK_EQ(resolve(&p, dst, T0 + P3NS_RETRY_MS, mac, req, &req_len), 0);
    CHECK_EQ(req_len, 42);
    CHECK_EQ(p.requests_sent, 2);
    /* Too small a buffer: no request, no crash. */
    CHECK_EQ(p3ns_resolve(&p, dst, T0 + 5 * P3NS_RETRY_MS, mac, req, 10, &req_len), 0);
    CHECK_EQ(req_len, 0);
}

static void test_off_link_destination_resolves_the_gateway(void)
{
    struct p3ns_port p;
    uint8_t f[64], dst[4], gw[4], mac[6], req[P3NS_MAX_REPLY];
    uint32_t req_len;
    port4(&p, 0);
    a4(dst, "203.0.113.9");
    a4(gw, "192.0.2.254");
    CHECK_EQ(resolve(&p, dst, T0, mac, req, &req_len), 0);
    CHECK_EQ(req_len, 42);
    CHECK(memcmp(req + 14 + 24, gw, 4) == 0);        /* who has the gateway? */
    size_t n = arp(f, OUR_MAC, 2, OTHER_MAC, "192.0.2.254", "192.0.2.1");
    CHECK_EQ(input(&p, f, n, T0 + 3).v, P3NS_CONSUMED);
    CHECK(known_as(&p, dst, OTHER_MAC, T0 + 4));
    a4(dst, "198.51.100.200");
    CHECK(known_as(&p, dst, OTHER_MAC, T0 + 4));
}

static void test_stale_entry_is_still_used_and_polled_directly(void)
{
    struct p3ns_port p;
    uint8_t f[64], host[4], mac[6], req[P3NS_MAX_REPLY];
    uint32_t req_len;
    port4(&p, 1);
    size_t n = arp(f, BCAST, 1, HOST_MAC, "192.0.2.7", "192.0.2.1");
    CHECK_EQ(input(&p, f, n, T0).v, P3NS_REPLY);
    a4(host, "192.0.2.7");
    uint64_t later = T0 + P3NS_REACHABLE_MS;
    CHECK_EQ(resolve(&p, host, later, mac, req, &req_len), 1);
    CHECK(memcmp(mac, HOST_MAC, 6) == 0);
    CHECK_EQ(req_len, 42);
    CHECK(memcmp(req, HOST_MAC, 6) == 0);            /* unicast poll, RFC 1122 §2.3.2.1 */
    CHECK_EQ(resolve(&p, host, later + 1, mac, req, &req_len), 1);
    CHECK_EQ(req_len, 0);
    /* Its answer makes the entry fresh again. */
    n = arp(f, OUR_MAC, 2, HOST_MAC, "192.0.2.7", "192.0.2.1");
    CHECK_EQ(input(&p, f, n, later + 5).v, P3NS_CONSUMED);
    CHECK(known_as(&p, host, HOST_MAC, later + P3NS_RETRY_MS * 10));
}

static void test_group_destinations_need_no_request(void)
{
    struct p3ns_port p4, p6;
    uint8_t a[16], mac[6], req[P3NS_MAX_REPLY];
    uint32_t req_len;
    port4(&p4, 1);
    port6(&p6, 1);
    a4(a, "224.1.2.3");
    CHECK_EQ(resolve(&p4, a, T0, mac, req, &req_len), 1);
    CHECK(memcmp(mac, (const uint8_t[]){0x01, 0x00, 0x5e, 0x01, 0x02, 0x03}, 6) == 0);
    a4(a, "192.0.2.255");
    CHECK_EQ(resolve(&p4, a, T0, mac, req, &req_len), 1);
    CHECK(memcmp(mac, BCAST, 6) == 0);
    a6(a, "ff02::1:ff00:abcd");
    CHECK_EQ(resolve(&p6, a, T0, mac, req, &req_len), 1);
    CHECK(memcmp(mac, (const uint8_t[]){0x33, 0x33, 0xff, 0x00, 0xab, 0xcd}, 6) == 0);
    CHECK_EQ(req_len, 0);
    CHECK_EQ(p4.requests_sent + p6.requests_sent, 0);
}

static void test_full_table_replaces_least_recently_confirmed(void)
{
    struct p3ns_port p;
    uint8_t f[64], host[4], mac[6], req[P3NS_MAX_REPLY];
    char name[32];
    uint32_t req_len;
    uint8_t lladdr[6] = {0x02, 0x10, 0, 0, 0, 0};
    CHECK(p3ns_port_init(&p, OUR_MAC, 4, (const uint8_t[]){10, 0, 0, 1}, 16, NULL, 1) == 0);
    /* Neighbour i answers at time T0 + i; the one at i = 0 is the oldest. */
    for (int i = 0; i <= P3NS_NEIGH_SLOTS; i++) {
        snprintf(name, sizeof(name), "10.0.%d.%d", 1 + i / 250, 1 + i % 250);
        lladdr[5] = (uint8_t)i;
        lladdr[4] = (uint8_t)(i >> 8);
        size_t n = arp(f, BCAST, 1, lladdr, name, "10.0.0.1");
        CHECK_EQ(input(&p, f, n, T0 + (uint64_t)i).v, P3NS_REPLY);
        if (i == P3NS_NEIGH_SLOTS - 1) {
            /* Table full; neighbour 0 speaks again, so neighbour 1 is now the oldest. */
            lladdr[4] = lladdr[5] = 0;
            n = arp(f, BCAST, 1, lladdr, "10.0.1.1", "10.0.0.1");
            CHECK_EQ(input(&p, f, n, T0 + 280).v, P3NS_REPLY);
        }
    }
    CHECK_EQ(p.learned, P3NS_NEIGH_SLOTS + 1);
    a4(host, "10.0.2.7");                            /* i = 256, the newest */
    lladdr[4] = 1;
    lladdr[5] = 0;
    CHECK(known_as(&p, host, lladdr, T0 + 300));
    a4(host, "10.0.1.1");                            /* i = 0, confirmed again */
    lladdr[4] = lladdr[5] = 0;
    CHECK(known_as(&p, host, lladdr, T0 + 300));
    a4(host, "10.0.1.3");                            /* i = 2, now the oldest left */
    lladdr[5] = 2;
    CHECK(known_as(&p, host, lladdr, T0 + 300));
    a4(host, "10.0.1.2");                            /* i = 1: replaced */
    CHECK_EQ(resolve(&p, host, T0 + 300, mac, req, &req_len), 0);
    CHECK_EQ(req_len, 42);
}

static void test_on_link_check_uses_the_whole_prefix(void)
{
    struct p3ns_port p;
    uint8_t addr[4], gw[4], dst[4], mac[6], req[P3NS_MAX_REPLY];
    uint32_t req_len;
    a4(addr, "192.0.2.65");
    a4(gw, "192.0.2.126");
    CHECK_EQ(p3ns_port_init(&p, OUR_MAC, 4, addr, 26, gw, 0), 0);   /* 192.0.2.64/26 */
    a4(dst, "192.0.2.100");
    CHECK_EQ(resolve(&p, dst, T0, mac, req, &req_len), 0);
    CHECK(memcmp(req + 14 + 24, dst, 4) == 0);       /* on-link: asked for itself */
    a4(dst, "192.0.2.130");
    CHECK_EQ(resolve(&p, dst, T0, mac, req, &req_len), 0);
    CHECK(memcmp(req + 14 + 24, gw, 4) == 0);        /* same /24, other /26: the gateway */
    a4(dst, "192.0.2.127");                          /* the /26's broadcast */
    CHECK_EQ(resolve(&p, dst, T0, mac, req, &req_len), 1);
    CHECK(memcmp(mac, BCAST, 6) == 0);
    /* Without a gateway every destination is on-link. */
    CHECK_EQ(p3ns_port_init(&p, OUR_MAC, 4, addr, 26, NULL, 0), 0);
    a4(dst, "203.0.113.9");
    CHECK_EQ(resolve(&p, dst, T0, mac, req, &req_len), 0);
    CHECK(memcmp(req + 14 + 24, dst, 4) == 0);
}

/* ---- IPv6 neighbour discovery ---- */

static void test_solicitation_for_us_gets_solicited_advert(void)
{
    struct p3ns_port p;
    uint8_t f[128], host[16], ours[16], sol[16];
    port6(&p, 0);
    a6(host, "2001:db8::7");
    a6(ours, "2001:db8::1");
    a6(sol, "ff02::1:ff00:1");
    const uint8_t sol_mac[6] = {0x33, 0x33, 0xff, 0, 0, 1};
    size_t n = nd(f, sol_mac, "2001:db8::7", "ff02::1:ff00:1", 255, 135, 0, "2001:db8::1", 1, HOST_MAC);
    struct result r = input(&p, f, n, T0);
    CHECK_EQ(r.v, P3NS_REPLY);
    CHECK_EQ(r.reply_len, 14 + 40 + 32);
    const uint8_t *o = r.reply, *ip = o + 14, *icmp = ip + 40;
    CHECK(memcmp(o, HOST_MAC, 6) == 0);
    CHECK(memcmp(o + 6, OUR_MAC, 6) == 0);
    CHECK_EQ(rd16(o + 12), 0x86dd);
    CHECK_EQ(ip[0] >> 4, 6);
    CHECK_EQ(rd16(ip + 4), 32);
    CHECK_EQ(ip[6], 58);
    CHECK_EQ(ip[7], 255);
    CHECK(memcmp(ip + 8, ours, 16) == 0);
    CHECK(memcmp(ip + 24, host, 16) == 0);           /* to the solicitor's unicast address */
    CHECK_EQ(icmp[0], 136);
    CHECK_EQ(icmp[1], 0);
    CHECK_EQ(icmp6_cksum(ip), 0);
    CHECK_EQ(icmp[4] & 0x60, 0x60);                  /* solicited, override */
    CHECK_EQ(icmp[4] & 0x80, 0);                     /* WAN port: not a router */
    CHECK(memcmp(icmp + 8, ours, 16) == 0);
    CHECK_EQ(icmp[24], 2);                           /* target link-layer address option */
    CHECK_EQ(icmp[25], 1);
    CHECK(memcmp(icmp + 26, OUR_MAC, 6) == 0);
    CHECK_EQ(p.nd_adverts, 1);
    CHECK(known_as(&p, host, HOST_MAC, T0 + 1));     /* its source option was learned */
}

static void test_lan_port_advertises_itself_as_router(void)
{
    struct p3ns_port p;
    uint8_t f[128];
    port6(&p, 1);
    size_t n = nd(f, OUR_MAC, "fe80::7", "2001:db8::1", 255, 135, 0, "2001:db8::1", 0, NULL);
    struct result r = input(&p, f, n, T0);
    CHECK_EQ(r.v, P3NS_REPLY);
    CHECK_EQ(r.reply[14 + 40 + 4] & 0xe0, 0xe0);
    CHECK(memcmp(r.reply, HOST_MAC, 6) == 0);       /* no option: back to the frame's sender */
}

static void test_duplicate_address_probe_gets_advert_to_all_nodes(void)
{
    struct p3ns_port p;
    uint8_t f[128], all_nodes[16];
    port6(&p, 0);
    a6(all_nodes, "ff02::1");
    const uint8_t sol_mac[6] = {0x33, 0x33, 0xff, 0, 0, 1};
    size_t n = nd(f, sol_mac, "::", "ff02::1:ff00:1", 255, 135, 0, "2001:db8::1", 0, NULL);
    struct result r = input(&p, f, n, T0);
    CHECK_EQ(r.v, P3NS_REPLY);
    CHECK(memcmp(r.reply, (const uint8_t[]){0x33, 0x33, 0, 0, 0, 1}, 6) == 0);
    CHECK(memcmp(r.reply + 14 + 24, all_nodes, 16) == 0);
    CHECK_EQ(r.reply[14 + 40 + 4] & 0x60, 0x20);    /* override, not solicited (RFC 4861 §7.2.4) */
    CHECK_EQ(icmp6_cksum(r.reply + 14), 0);
    CHECK_EQ(p.learned, 0);
    /* A probe must not carry a source link-layer option (§7.1.1). */
    n = nd(f, sol_mac, "::", "ff02::1:ff00:1", 255, 135, 0, "2001:db8::1", 1, HOST_MAC);
    CHECK_EQ(input(&p, f, n, T0).v, P3NS_DROP);
}

static void test_invalid_solicitations_are_dropped(void)
{
    struct p3ns_port p;
    uint8_t f[128];
    port6(&p, 0);
    const uint8_t sol_mac[6] = {0x33, 0x33, 0xff, 0, 0, 1};
    size_t n = nd(f, sol_mac, "2001:db8::7", "ff02::1:ff00:1", 64, 135, 0, "2001:db8::1", 1, HOST_MAC);
    CHECK_EQ(input(&p, f, n, T0).v, P3NS_DROP);      /* routed from afar: hop limit not 255 */
    n = nd(f, sol_mac, "2001:db8::7", "ff02::1:ff00:1", 255, 135, 0, "2001:db8::1", 1, HOST_MAC);
    f[14 + 40 + 30] ^= 1;                            /* a flipped bit: checksum fails */
    CHECK_EQ(input(&p, f, n, T0).v, P3NS_DROP);
    n = nd(f, sol_mac, "2001:db8::7", "ff02::1:ff00:9", 255, 135, 0, "2001:db8::9", 1, HOST_MAC);
    CHECK_EQ(input(&p, f, n, T0).v, P3NS_DROP);      /* someone else's address */
    n = nd(f, sol_mac, "2001:db8::7", "ff02::1:ff00:1", 255, 135, 0, "2001:db8::1", 1, HOST_MAC);
    f[14 + 40 + 25] = 0;                             /* an option of length zero */
    wr16(f + 14 + 42, 0);
    wr16(f + 14 + 42, icmp6_cksum(f + 14));
    CHECK_EQ(input(&p, f, n, T0).v, P3NS_DROP);
    CHECK_EQ(p.nd_adverts, 0);
    CHECK_EQ(p.learned, 0);
}

static void test_advert_completes_a_pending_resolution(void)
{
    struct p3ns_port p;
    uint8_t f[128], dst[16], gw[16], group[16], mac[6], req[P3NS_MAX_REPLY];
    uint32_t req_len;
    port6(&p, 0);
    a6(dst, "2001:db8:ffff::5");                     /* off-link: through fe80::1 */
    a6(gw, "fe80::1");
    a6(group, "ff02::1:ff00:1");
    CHECK_EQ(resolve(&p, dst, T0, mac, req, &req_len), 0);
    CHECK_EQ(req_len, 14 + 40 + 32);
    const uint8_t *ip = req + 14, *icmp = ip + 40;
    CHECK(memcmp(req, (const uint8_t[]){0x33, 0x33, 0xff, 0, 0, 1}, 6) == 0);
    CHECK_EQ(rd16(req + 12), 0x86dd);
    CHECK_EQ(ip[7], 255);
    CHECK(memcmp(ip + 24, group, 16) == 0);          /* solicited-node group of fe80::1 */
    CHECK_EQ(icmp[0], 135);
    CHECK_EQ(icmp6_cksum(ip), 0);
    CHECK(memcmp(icmp + 8, gw, 16) == 0);
    CHECK_EQ(icmp[24], 1);                           /* our source link-layer address */
    CHECK(memcmp(icmp + 26, OUR_MAC, 6) == 0);
    /* The router answers. */
    size_t n = nd(f, OUR_MAC, "fe80::1", "2001:db8::1", 255, 136, 0x60 | 0x80, "fe80::1", 2, OTHER_MAC);
    CHECK_EQ(input(&p, f, n, T0 + 2).v, P3NS_CONSUMED);
    CHECK(known_as(&p, dst, OTHER_MAC, T0 + 3));
    /* An advert without override does not move a known entry (§7.2.5). */
    n = nd(f, OUR_MAC, "fe80::1", "2001:db8::1", 255, 136, 0x40, "fe80::1", 2, HOST_MAC);
    CHECK_EQ(input(&p, f, n, T0 + 4).v, P3NS_DROP);
    CHECK(known_as(&p, gw, OTHER_MAC, T0 + 5));
    /* Nor is an advert for an address we never asked about kept. */
    n = nd(f, OUR_MAC, "fe80::9", "2001:db8::1", 255, 136, 0x60, "fe80::9", 2, HOST_MAC);
    CHECK_EQ(input(&p, f, n, T0 + 4).v, P3NS_DROP);
}

/* ---- echo ---- */

static void test_ipv4_echo_request_gets_valid_reply(void)
{
    struct p3ns_port p;
    uint8_t f[256];
    port4(&p, 0);
    size_t n = echo4(f, OUR_MAC, "198.51.100.20", "192.0.2.1", 56);
    struct result r = input(&p, f, n, T0);
    CHECK_EQ(r.v, P3NS_REPLY);
    CHECK_EQ(r.reply_len, n);
    const uint8_t *o = r.reply, *ip = o + 14, *icmp = ip + 20;
    CHECK(memcmp(o, HOST_MAC, 6) == 0);
    CHECK(memcmp(o + 6, OUR_MAC, 6) == 0);
    CHECK_EQ(rd16(o + 12), 0x0800);
    CHECK_EQ(ip[0], 0x45);
    CHECK_EQ(rd16(ip + 2), 20 + 8 + 56);
    CHECK_EQ(ip[9], 1);
    CHECK(ip[8] > 1);
    CHECK_EQ(cksum(0, ip, 20), 0);
    CHECK(memcmp(ip + 12, f + 14 + 16, 4) == 0);
    CHECK(memcmp(ip + 16, f + 14 + 12, 4) == 0);
    CHECK_EQ(icmp[0], 0);
    CHECK_EQ(icmp[1], 0);
    CHECK_EQ(cksum(0, icmp, 8 + 56), 0);
    CHECK(memcmp(icmp + 4, f + 14 + 20 + 4, 4 + 56) == 0);   /* identifier, sequence, data */
    CHECK_EQ(p.echo_replies, 1);
    /* An odd length: the last octet counts as the high half of a word (RFC 1071). */
    n = echo4(f, OUR_MAC, "198.51.100.20", "192.0.2.1", 31);
    r = input(&p, f, n, T0);
    CHECK_EQ(r.v, P3NS_REPLY);
    CHECK_EQ(cksum(0, r.reply + 14 + 20, 8 + 31), 0);
    CHECK_EQ(p.echo_replies, 2);
    /* A bad ICMP checksum, or a reply that would not fit, is not answered. */
    f[n - 1] ^= 0xff;
    CHECK_EQ(input(&p, f, n, T0).v, P3NS_DROP);
    n = echo4(f, OUR_MAC, "198.51.100.20", "192.0.2.1", 150);
    CHECK_EQ(input(&p, f, n, T0).v, P3NS_DROP);
    CHECK_EQ(p.echo_replies, 2);
}

static void test_ipv6_echo_request_gets_valid_reply(void)
{
    struct p3ns_port p;
    uint8_t f[256];
    port6(&p, 1);
    size_t n = echo6(f, OUR_MAC, "2001:db8::7", "2001:db8::1");
    struct result r = input(&p, f, n, T0);
    CHECK_EQ(r.v, P3NS_REPLY);
    CHECK_EQ(r.reply_len, n);
    const uint8_t *ip = r.reply + 14, *icmp = ip + 40;
    CHECK(memcmp(r.reply, HOST_MAC, 6) == 0);
    CHECK(memcmp(ip + 8, f + 14 + 24, 16) == 0);
    CHECK(memcmp(ip + 24, f + 14 + 8, 16) == 0);
    CHECK_EQ(icmp[0], 129);
    CHECK_EQ(icmp6_cksum(ip), 0);
    CHECK(memcmp(icmp + 4, f + 14 + 40 + 4, 36) == 0);
    CHECK_EQ(p.echo_replies, 1);
}

/* ---- classification of IP traffic ---- */

static void test_lan_port_hands_other_hosts_traffic_to_dataplane_without_padding(void)
{
    struct p3ns_port p;
    uint8_t f[64] = {0};
    port4(&p, 1);
    size_t n = udp4(f, OUR_MAC, "192.0.2.7", "10.9.9.9");
    CHECK_EQ(n, 14 + 20 + 12);
    struct result r = input(&p, f, 60, T0);          /* padded to the Ethernet minimum */
    CHECK_EQ(r.v, P3NS_IP);
    CHECK_EQ(r.l3_off, 14);
    CHECK_EQ(r.l3_len, 32);
    /* Other traffic for the gateway itself is not a service it offers. */
    n = udp4(f, OUR_MAC, "192.0.2.7", "192.0.2.1");
    CHECK_EQ(input(&p, f, n, T0).v, P3NS_DROP);
    /* Nor is link-local or link-broadcast traffic forwarded. */
    n = udp4(f, OUR_MAC, "169.254.1.1", "10.9.9.9");
    CHECK_EQ(input(&p, f, n, T0).v, P3NS_DROP);
    n = udp4(f, BCAST, "192.0.2.7", "255.255.255.255");
    CHECK_EQ(input(&p, f, n, T0).v, P3NS_DROP);

    struct p3ns_port p6;
    uint8_t g[128] = {0};
    port6(&p6, 1);
    n = udp6(g, OUR_MAC, "2001:db8::7", "2001:db8:9::9");
    r = input(&p6, g, n + 6, T0);
    CHECK_EQ(r.v, P3NS_IP);
    CHECK_EQ(r.l3_off, 14);
    CHECK_EQ(r.l3_len, 40 + 12);
    n = udp6(g, OUR_MAC, "fe80::7", "2001:db8:9::9");
    CHECK_EQ(input(&p6, g, n, T0).v, P3NS_DROP);
}

static void test_wan_port_takes_only_traffic_for_its_address(void)
{
    struct p3ns_port p;
    uint8_t f[64];
    port4(&p, 0);
    size_t n = udp4(f, OUR_MAC, "203.0.113.5", "192.0.2.1");
    struct result r = input(&p, f, n, T0);
    CHECK_EQ(r.v, P3NS_IP);
    CHECK_EQ(r.l3_off, 14);
    CHECK_EQ(r.l3_len, n - 14);
    n = udp4(f, OUR_MAC, "203.0.113.5", "192.0.2.2");
    CHECK_EQ(input(&p, f, n, T0).v, P3NS_DROP);

    struct p3ns_port p6;
    uint8_t g[128];
    port6(&p6, 0);
    n = udp6(g, OUR_MAC, "2001:db8:5::5", "2001:db8::1");
    CHECK_EQ(input(&p6, g, n, T0).v, P3NS_IP);
    n = udp6(g, OUR_MAC, "2001:db8:5::5", "2001:db8::2");
    CHECK_EQ(input(&p6, g, n, T0).v, P3NS_DROP);
    /* An IPv4 frame on the IPv6 port, and ARP there, are not its business. */
    n = udp4(f, OUR_MAC, "203.0.113.5", "192.0.2.1");
    CHECK_EQ(input(&p6, f, n, T0).v, P3NS_DROP);
    n = arp(f, BCAST, 1, HOST_MAC, "192.0.2.7", "192.0.2.1");
    CHECK_EQ(input(&p6, f, n, T0).v, P3NS_DROP);
}

static void test_frame_for_another_mac_is_dropped(void)
{
    struct p3ns_port p;
    uint8_t f[64];
    port4(&p, 1);
    size_t n = udp4(f, OTHER_MAC, "192.0.2.7", "10.9.9.9");
    CHECK_EQ(input(&p, f, n, T0).v, P3NS_DROP);
    n = arp(f, OTHER_MAC, 1, HOST_MAC, "192.0.2.7", "192.0.2.1");
    CHECK_EQ(input(&p, f, n, T0).v, P3NS_DROP);
    CHECK_EQ(p.arp_replies, 0);
    CHECK_EQ(p.dropped, 2);
}

static void test_bad_ip_headers_are_dropped(void)
{
    struct p3ns_port p;
    uint8_t f[64];
    port4(&p, 0);
    size_t n = udp4(f, OUR_MAC, "203.0.113.5", "192.0.2.1");
    f[14 + 10] ^= 1;                                 /* header checksum */
    CHECK_EQ(input(&p, f, n, T0).v, P3NS_DROP);
    n = udp4(f, OUR_MAC, "203.0.113.5", "192.0.2.1");
    wr16(f + 14 + 2, 200);                           /* longer than the frame */
    wr16(f + 14 + 10, 0);
    wr16(f + 14 + 10, cksum(0, f + 14, 20));
    CHECK_EQ(input(&p, f, n, T0).v, P3NS_DROP);
    n = udp4(f, OUR_MAC, "203.0.113.5", "192.0.2.1");
    f[14] = 0x44;                                    /* header length 16 */
    CHECK_EQ(input(&p, f, n, T0).v, P3NS_DROP);
}

/* Every prefix of every kind of frame, each in a buffer of exactly its
 * length so ASan sees any read past the end. */
static void test_truncated_frames_never_crash(void)
{
    struct p3ns_port p4, p6;
    uint8_t frames[8][128];
    size_t lens[8];
    bool v6[8] = {false, false, false, false, true, true, true, true};
    const uint8_t sol_mac[6] = {0x33, 0x33, 0xff, 0, 0, 1};
    lens[0] = arp(frames[0], BCAST, 1, HOST_MAC, "192.0.2.7", "192.0.2.1");
    lens[1] = arp(frames[1], OUR_MAC, 2, HOST_MAC, "192.0.2.7", "192.0.2.1");
    lens[2] = echo4(frames[2], OUR_MAC, "192.0.2.7", "192.0.2.1", 30);
    lens[3] = udp4(frames[3], OUR_MAC, "192.0.2.7", "10.1.1.1");
    lens[4] = nd(frames[4], sol_mac, "2001:db8::7", "ff02::1:ff00:1", 255, 135, 0, "2001:db8::1", 1, HOST_MAC);
    lens[5] = nd(frames[5], OUR_MAC, "2001:db8::7", "2001:db8::1", 255, 136, 0x60, "2001:db8::7", 2, HOST_MAC);
    lens[6] = echo6(frames[6], OUR_MAC, "2001:db8::7", "2001:db8::1");
    lens[7] = udp6(frames[7], OUR_MAC, "2001:db8::7", "2001:db8:9::9");
    for (int lan = 0; lan <= 1; lan++) {
        for (int k = 0; k < 8; k++) {
            size_t top = lens[k] > 60 ? lens[k] : 60;
            for (size_t len = 0; len <= top; len++) {
                port4(&p4, lan);
                port6(&p6, lan);
                uint8_t *copy = malloc(len ? len : 1);
                memcpy(copy, frames[k], len < lens[k] ? len : lens[k]);
                if (len > lens[k])
                    memset(copy + lens[k], 0, len - lens[k]);
                struct result r = input(v6[k] ? &p6 : &p4, copy, len, T0);
                if (len < lens[k])
                    CHECK(r.v == P3NS_DROP || r.v == P3NS_CONSUMED);
                if (r.v == P3NS_IP)
                    CHECK(r.l3_off == 14 && r.l3_len >= 20 && r.l3_off + r.l3_len <= len);
                else
                    CHECK(r.l3_len == 0);
                if (r.v == P3NS_REPLY)
                    CHECK(r.reply_len >= 42 && r.reply_len <= P3NS_MAX_REPLY);
                else
                    CHECK(r.reply_len == 0);
                free(copy);
            }
        }
    }
}

static void test_port_init_rejects_bad_family_and_prefix(void)
{
    struct p3ns_port p;
    uint8_t addr[16] = {192, 0, 2, 1};
    CHECK_EQ(p3ns_port_init(&p, OUR_MAC, 5, addr, 24, NULL, 0), -1);
    CHECK_EQ(p3ns_port_init(&p, OUR_MAC, 4, addr, 33, NULL, 0), -1);
    CHECK_EQ(p3ns_port_init(&p, OUR_MAC, 6, addr, 129, NULL, 0), -1);
    CHECK_EQ(p3ns_port_init(&p, OUR_MAC, 4, addr, 32, NULL, 0), 0);
    CHECK_EQ(p3ns_port_init(&p, OUR_MAC, 6, addr, 128, NULL, 0), 0);
}

static void test_eth_header_is_written_as_given(void)
{
    uint8_t f[14];
    p3ns_eth_header(f, HOST_MAC, OUR_MAC, P3NS_ETHERTYPE_IPV6);
    CHECK(memcmp(f, HOST_MAC, 6) == 0);
    CHECK(memcmp(f + 6, OUR_MAC, 6) == 0);
    CHECK_EQ(rd16(f + 12), 0x86dd);
}

NTEST_MAIN(NTEST(test_arp_request_for_us_is_answered_and_asker_learned),
           NTEST(test_arp_request_for_another_address_gets_no_reply),
           NTEST(test_arp_reply_teaches_the_sender),
           NTEST(test_arp_request_from_awaited_neighbour_completes_its_entry),
           NTEST(test_arp_probe_and_claims_on_our_address_teach_nothing),
           NTEST(test_resolve_of_unknown_address_asks_once_per_retry_interval),
           NTEST(test_off_link_destination_resolves_the_gateway),
           NTEST(test_stale_entry_is_still_used_and_polled_directly),
           NTEST(test_group_destinations_need_no_request),
           NTEST(test_full_table_replaces_least_recently_confirmed),
           NTEST(test_on_link_check_uses_the_whole_prefix),
           NTEST(test_solicitation_for_us_gets_solicited_advert),
           NTEST(test_lan_port_advertises_itself_as_router),
           NTEST(test_duplicate_address_probe_gets_advert_to_all_nodes),
           NTEST(test_invalid_solicitations_are_dropped),
           NTEST(test_advert_completes_a_pending_resolution),
           NTEST(test_ipv4_echo_request_gets_valid_reply),
           NTEST(test_ipv6_echo_request_gets_valid_reply),
           NTEST(test_lan_port_hands_other_hosts_traffic_to_dataplane_without_padding),
           NTEST(test_wan_port_takes_only_traffic_for_its_address),
           NTEST(test_frame_for_another_mac_is_dropped),
           NTEST(test_bad_ip_headers_are_dropped),
           NTEST(test_truncated_frames_never_crash),
           NTEST(test_port_init_rejects_bad_family_and_prefix),
           NTEST(test_eth_header_is_written_as_given))
