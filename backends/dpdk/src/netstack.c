/*
 * netstack.c — the link layer of a DPDK port (netstack.h): Ethernet, ARP
 * (RFC 826), IPv6 neighbour discovery (RFC 4861) and echo replies.
 *
 * Frames are read in place and never written: replies and requests go to the
 * caller's separate buffer. Every length is checked before the octets it
 * covers are read, so any truncated or hostile frame is only a DROP.
 *
 * The neighbour table is filled from slot 0 upwards and slots are only ever
 * reused, never freed, so the used slots are always a prefix of the array: a
 * lookup stops at the first free slot (a WAN port has one or two entries).
 */
#include "netstack.h"
#include "bytes.h"

#include <stdbool.h>
#include <string.h>

enum {
    ARP_LEN = 28, ARP_REQUEST = 1, ARP_REPLY = 2,  /* Ethernet/IPv4 ARP (RFC 826) */
    IP4_HLEN = 20, IP6_HLEN = 40, PROTO_ICMP = 1, PROTO_ICMPV6 = 58, ECHO_TTL = 64,
    ICMP_ECHO_REPLY = 0, ICMP_ECHO_REQUEST = 8, ICMPV6_ECHO_REQUEST = 128, ICMPV6_ECHO_REPLY = 129,
    ND_SOLICIT = 135, ND_ADVERT = 136,
    ND_LEN = 24,                    /* type, code, checksum, flags/reserved, target */
    ND_OPT_SOURCE_LLA = 1, ND_OPT_TARGET_LLA = 2,  /* RFC 4861 §4.6.1 */
    ND_MSG_LEN = ND_LEN + 8,        /* what we send: the message and one link-layer option */
    ND_HOP_LIMIT = 255,             /* RFC 4861 §7.1.1: proves the sender is on-link */
    NA_ROUTER = 0x80, NA_SOLICITED = 0x40, NA_OVERRIDE = 0x20,   /* RFC 4861 §4.4 */
    STATE_FREE = 0, STATE_INCOMPLETE = 1, STATE_KNOWN = 2
};

static const uint8_t BROADCAST_MAC[6] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
/* RFC 4291 §2.7.1: all-nodes, and the solicited-node prefix ff02::1:ff00:0/104 */
static const uint8_t ALL_NODES[16] = {0xff, 0x02, [15] = 0x01};
static const uint8_t SOLICITED_NODE[13] = {0xff, 0x02, [11] = 0x01, [12] = 0xff};

/* One received frame being classified, and where its answer may go. */
struct rx {
    struct p3ns_port *port;
    const uint8_t *frame;
    uint32_t len;
    uint64_t now_ms;
    bool unicast;                   /* Ethernet destination was our own MAC */
    uint8_t *reply;
    uint32_t reply_cap;
    uint32_t *reply_len;
};

/* ICMPv6 checksum over the pseudo-header of RFC 8200 §8.1 (bytes.h, memory order); 0 when a
 * received one is valid. */
static uint16_t icmp6_checksum(const uint8_t src[16], const uint8_t dst[16], const uint8_t *icmp, uint32_t n)
{
    return p3_csum_fold(p3_csum_add(p3_csum_pseudo(6, src, dst, PROTO_ICMPV6, n), icmp, n));
}

static unsigned addr_len(const struct p3ns_port *port) { return port->family == 4 ? 4 : 16; }

static bool is_zero(const uint8_t *p, unsigned n)
{
    for (unsigned i = 0; i < n; i++)
        if (p[i])
            return false;
    return true;
}

static bool is_ours(const struct p3ns_port *port, const uint8_t *a) { return memcmp(a, port->addr, addr_len(port)) == 0; }

/* IPv4 169.254/16 (RFC 3927) or IPv6 fe80::/10 (RFC 4291 §2.5.6): on-link, never forwarded. */
static bool is_link_local(const struct p3ns_port *port, const uint8_t *a)
{
    if (port->family == 4)
        return a[0] == 169 && a[1] == 254;
    return a[0] == 0xfe && (a[1] & 0xc0) == 0x80;
}

static bool prefix_match(const uint8_t *a, const uint8_t *b, unsigned bits)
{
    unsigned bytes = bits / 8, rest = bits % 8;
    if (memcmp(a, b, bytes) != 0)
        return false;
    return rest == 0 || ((a[bytes] ^ b[bytes]) & (0xff00 >> rest)) == 0;
}

static bool is_on_link(const struct p3ns_port *port, const uint8_t *a)
{
    return !port->has_gateway || is_link_local(port, a) || prefix_match(a, port->addr, port->prefix_len);
}

int p3ns_port_init(struct p3ns_port *port, const uint8_t mac[6], int family, const uint8_t *addr,
                   unsigned prefix_len, const uint8_t *gateway, int lan)
{
    if (!port || !mac || !addr || (family != 4 && family != 6) || prefix_len > (family == 4 ? 32u : 128u))
        return -1;
    memset(port, 0, sizeof(*port));
    memcpy(port->mac, mac, 6);
    port->family = (uint8_t)family;
    port->lan = lan != 0;
    memcpy(port->addr, addr, addr_len(port));
    port->prefix_len = (uint8_t)prefix_len;
    if (gateway) {
        port->has_gateway = 1;
        memcpy(port->gateway, gateway, addr_len(port));
    }
    return 0;
}

void p3ns_eth_header(uint8_t *frame, const uint8_t dst[6], const uint8_t src[6], uint16_t ethertype)
{
    memcpy(frame, dst, 6);
    memcpy(frame + 6, src, 6);
    p3_put_be16(frame + 12, ethertype);
}

/* ---- neighbour table ---- */

static struct p3ns_neigh *neigh_find(struct p3ns_port *port, const uint8_t *a)
{
    /* Constant-length compares: this runs for every packet sent. */
    bool v4 = port->family == 4;
    for (unsigned i = 0; i < P3NS_NEIGH_SLOTS && port->neigh[i].state != STATE_FREE; i++) {
        const uint8_t *e = port->neigh[i].addr;
        if (v4 ? memcmp(e, a, 4) == 0 : memcmp(e, a, 16) == 0)
            return &port->neigh[i];
    }
    return NULL;
}

/* When an entry last proved useful: an answer for a known one, our last
 * question for an incomplete one (so an address still being asked for is
 * not pushed out by the next unknown one). */
static uint64_t neigh_age_key(const struct p3ns_neigh *e)
{
    return e->state == STATE_KNOWN ? e->confirmed_ms : e->asked_ms;
}

/* A slot for a new address: the first free one, else the least recently confirmed. */
static struct p3ns_neigh *neigh_claim(struct p3ns_port *port, const uint8_t *a)
{
    struct p3ns_neigh *e = &port->neigh[0];
    for (unsigned i = 0; i < P3NS_NEIGH_SLOTS; i++) {
        if (port->neigh[i].state == STATE_FREE) {
            e = &port->neigh[i];
            break;
        }
        if (neigh_age_key(&port->neigh[i]) < neigh_age_key(e))
            e = &port->neigh[i];
    }
    memset(e, 0, sizeof(*e));
    memcpy(e->addr, a, addr_len(port));
    e->state = STATE_INCOMPLETE;
    return e;
}

/* Records that a has link-layer address mac. create: add an entry when there
 * is none (RFC 826 "am I the target?"; RFC 4861 §7.2.3); otherwise only an
 * existing one is updated (RFC 826 merge; RFC 4861 §7.2.5). override: a known
 * entry may change its MAC (RFC 4861 §7.2.5 O flag; ARP always overrides).
 * Returns true when the table was updated. */
static bool neigh_learn(struct p3ns_port *port, const uint8_t *a, const uint8_t mac[6], uint64_t now_ms,
                        bool create, bool override)
{
    struct p3ns_neigh *e;
    if ((mac[0] & 1) || is_zero(mac, 6))    /* never bind an address to a group or null MAC */
        return false;
    e = neigh_find(port, a);
    if (!e) {
        if (!create)
            return false;
        e = neigh_claim(port, a);
    }
    bool same = e->state == STATE_KNOWN && memcmp(e->mac, mac, 6) == 0;
    if (e->state == STATE_KNOWN && !same && !override)
        return false;
    if (!same)
        port->learned++;
    memcpy(e->mac, mac, 6);
    e->state = STATE_KNOWN;
    e->confirmed_ms = now_ms;
    return true;
}

/* ---- frames we write ---- */

/* The reply buffer when n octets fit in it, else NULL (the frame is then dropped). */
static uint8_t *reply_room(struct rx *rx, uint32_t n)
{
    if (!rx->reply || n > rx->reply_cap || n > P3NS_MAX_REPLY)
        return NULL;
    *rx->reply_len = n;
    return rx->reply;
}

static void put_ip6_header(uint8_t *ip, const uint8_t src[16], const uint8_t dst[16], uint16_t payload_len,
                           uint8_t hop_limit)
{
    memset(ip, 0, 4);
    ip[0] = 0x60;
    p3_put_be16(ip + 4, payload_len);
    ip[6] = PROTO_ICMPV6;
    ip[7] = hop_limit;
    memcpy(ip + 8, src, 16);
    memcpy(ip + 24, dst, 16);
}

/* An Ethernet/IPv4 ARP packet from us (RFC 826 "Packet format"); 42 octets. */
static uint32_t write_arp(const struct p3ns_port *port, uint8_t *out, const uint8_t eth_dst[6], uint16_t op,
                          const uint8_t tha[6], const uint8_t tpa[4])
{
    uint8_t *a = out + P3NS_ETH_HLEN;
    p3ns_eth_header(out, eth_dst, port->mac, P3NS_ETHERTYPE_ARP);
    p3_put_be16(a, 1);                            /* hardware: Ethernet */
    p3_put_be16(a + 2, P3NS_ETHERTYPE_IPV4);
    a[4] = 6;
    a[5] = 4;
    p3_put_be16(a + 6, op);
    memcpy(a + 8, port->mac, 6);
    memcpy(a + 14, port->addr, 4);
    memcpy(a + 18, tha, 6);
    memcpy(a + 24, tpa, 4);
    return P3NS_ETH_HLEN + ARP_LEN;
}

/* A neighbour solicitation or advertisement from our address with one
 * link-layer address option carrying our MAC (RFC 4861 §4.3, §4.4, §4.6.1); 86 octets. */
static uint32_t write_nd(const struct p3ns_port *port, uint8_t *out, const uint8_t eth_dst[6],
                         const uint8_t ip_dst[16], uint8_t type, uint8_t flags, const uint8_t target[16])
{
    uint8_t *ip = out + P3NS_ETH_HLEN, *icmp = ip + IP6_HLEN;
    p3ns_eth_header(out, eth_dst, port->mac, P3NS_ETHERTYPE_IPV6);
    put_ip6_header(ip, port->addr, ip_dst, ND_MSG_LEN, ND_HOP_LIMIT);
    memset(icmp, 0, ND_LEN);
    icmp[0] = type;
    icmp[4] = flags;
    memcpy(icmp + 8, target, 16);
    icmp[ND_LEN] = type == ND_SOLICIT ? ND_OPT_SOURCE_LLA : ND_OPT_TARGET_LLA;
    icmp[ND_LEN + 1] = 1;                   /* length in units of 8 octets */
    memcpy(icmp + ND_LEN + 2, port->mac, 6);
    p3_csum_store(icmp + 2, icmp6_checksum(ip + 8, ip + 24, icmp, ND_MSG_LEN));
    return P3NS_ETH_HLEN + IP6_HLEN + ND_MSG_LEN;
}

/* ---- ARP (RFC 826) ---- */

static enum p3ns_verdict arp_input(struct rx *rx)
{
    struct p3ns_port *port = rx->port;
    const uint8_t *a = rx->frame + P3NS_ETH_HLEN;
    if (port->family != 4 || rx->len < P3NS_ETH_HLEN + ARP_LEN)
        return P3NS_DROP;
    if (p3_get_be16(a) != 1 || p3_get_be16(a + 2) != P3NS_ETHERTYPE_IPV4 || a[4] != 6 || a[5] != 4)
        return P3NS_DROP;
    uint16_t op = p3_get_be16(a + 6);
    const uint8_t *sha = a + 8, *spa = a + 14, *tpa = a + 24;
    bool for_us = is_ours(port, tpa);
    if (op != ARP_REQUEST && op != ARP_REPLY)
        return P3NS_DROP;
    /* Merge the sender (RFC 826 "Packet Reception"): always when it is in
     * the table, added when we are the target. A probe (sender 0.0.0.0,
     * RFC 5227 §2.1.1) or a claim on our own address teaches nothing. */
    bool learned = !is_zero(spa, 4) && !is_ours(port, spa) && neigh_learn(port, spa, sha, rx->now_ms, for_us, true);
    if (op == ARP_REQUEST && for_us && !(sha[0] & 1)) {
        uint8_t *out = reply_room(rx, P3NS_ETH_HLEN + ARP_LEN);
        if (out) {
            /* Swap the fields and answer the asker directly (RFC 826). */
            write_arp(port, out, sha, ARP_REPLY, sha, spa);
            port->arp_replies++;
            return P3NS_REPLY;
        }
    }
    return learned ? P3NS_CONSUMED : P3NS_DROP;
}

/* ---- IPv4 ---- */

static enum p3ns_verdict echo4_reply(struct rx *rx, const uint8_t *ip, uint32_t ihl, uint32_t total)
{
    struct p3ns_port *port = rx->port;
    const uint8_t *icmp = ip + ihl;
    uint32_t n = total - ihl;
    /* RFC 792: checksum over the whole message; no reply to a group or unset source (RFC 1122 §3.2.2.6). */
    if (icmp[1] != 0 || p3_csum_fold(p3_csum_add(0, icmp, n)) != 0 || ip[12] >= 224 || is_zero(ip + 12, 4))
        return P3NS_DROP;
    uint8_t *out = reply_room(rx, P3NS_ETH_HLEN + IP4_HLEN + n);
    if (!out)
        return P3NS_DROP;
    uint8_t *rip = out + P3NS_ETH_HLEN, *ricmp = rip + IP4_HLEN;
    p3ns_eth_header(out, rx->frame + 6, port->mac, P3NS_ETHERTYPE_IPV4);
    /* Options of the request are not echoed (RFC 1122 §3.2.2.6 makes that a SHOULD). */
    memset(rip, 0, IP4_HLEN);
    rip[0] = 0x45;
    rip[1] = ip[1];
    p3_put_be16(rip + 2, (uint16_t)(IP4_HLEN + n));
    memcpy(rip + 4, ip + 4, 2);             /* identification */
    rip[8] = ECHO_TTL;
    rip[9] = PROTO_ICMP;
    memcpy(rip + 12, port->addr, 4);
    memcpy(rip + 16, ip + 12, 4);
    p3_csum_store(rip + 10, p3_csum_fold(p3_csum_add(0, rip, IP4_HLEN)));
    memcpy(ricmp, icmp, n);
    ricmp[0] = ICMP_ECHO_REPLY;
    p3_put_be16(ricmp + 2, 0);
    p3_csum_store(ricmp + 2, p3_csum_fold(p3_csum_add(0, ricmp, n)));
    port->echo_replies++;
    return P3NS_REPLY;
}

static enum p3ns_verdict ip4_input(struct rx *rx, uint32_t *l3_off, uint32_t *l3_len)
{
    struct p3ns_port *port = rx->port;
    const uint8_t *ip = rx->frame + P3NS_ETH_HLEN;
    uint32_t avail = rx->len - P3NS_ETH_HLEN;
    if (port->family != 4 || avail < IP4_HLEN || ip[0] >> 4 != 4)
        return P3NS_DROP;
    uint32_t ihl = (ip[0] & 0x0fu) * 4, total = p3_get_be16(ip + 2);
    if (ihl < IP4_HLEN || total < ihl || total > avail || p3_csum_fold(p3_csum_add(0, ip, ihl)) != 0)
        return P3NS_DROP;                   /* RFC 1812 §5.2.2 header validation */
    /* IP that came as a link-layer broadcast or multicast is not ours (RFC 1812 §5.3.4). */
    if (!rx->unicast)
        return P3NS_DROP;
    bool to_us = is_ours(port, ip + 16);
    bool whole = (p3_get_be16(ip + 6) & 0x3fff) == 0;     /* neither MF nor a fragment offset */
    if (to_us && ip[9] == PROTO_ICMP && whole && total - ihl >= 8 && ip[ihl] == ICMP_ECHO_REQUEST)
        return echo4_reply(rx, ip, ihl, total);
    /* WAN: only our own address is the dataplane's. LAN: everything else
     * is, but link-local traffic is never forwarded (RFC 3927 §7). */
    if (port->lan ? to_us || is_link_local(port, ip + 12) || is_link_local(port, ip + 16) : !to_us)
        return P3NS_DROP;
    *l3_off = P3NS_ETH_HLEN;
    *l3_len = total;
    return P3NS_IP;
}

/* ---- IPv6 and neighbour discovery (RFC 4861) ---- */

static enum p3ns_verdict nd_input(struct rx *rx, const uint8_t *ip, uint32_t total)
{
    struct p3ns_port *port = rx->port;
    const uint8_t *icmp = ip + IP6_HLEN, *src = ip + 8, *dst = ip + 24, *target = icmp + 8;
    uint32_t n = total - IP6_HLEN;
    uint8_t type = icmp[0];
    /* Validation of RFC 4861 §7.1.1 (NS) and §7.1.2 (NA). */
    if (ip[7] != ND_HOP_LIMIT || n < ND_LEN || icmp[1] != 0 || icmp6_checksum(src, dst, icmp, n) != 0 ||
        target[0] == 0xff)
        return P3NS_DROP;
    const uint8_t *lla = NULL;
    for (uint32_t off = ND_LEN; off < n;) {
        uint32_t opt_len = n - off >= 2 ? icmp[off + 1] * 8u : 0;
        if (opt_len == 0 || opt_len > n - off)
            return P3NS_DROP;               /* every option must have a length > 0 */
        if (icmp[off] == (type == ND_SOLICIT ? ND_OPT_SOURCE_LLA : ND_OPT_TARGET_LLA) && opt_len == 8)
            lla = icmp + off + 2;           /* Ethernet: RFC 2464 §8 */
        off += opt_len;
    }
    bool src_unspecified = is_zero(src, 16);
    if (type == ND_ADVERT) {
        if (((icmp[4] & NA_SOLICITED) && dst[0] == 0xff) || !lla)
            return P3NS_DROP;
        /* §7.2.5: only an entry we have is updated; without O a known MAC stays. */
        return neigh_learn(port, target, lla, rx->now_ms, false, icmp[4] & NA_OVERRIDE) ? P3NS_CONSUMED
                                                                                         : P3NS_DROP;
    }
    if (src_unspecified && (memcmp(dst, SOLICITED_NODE, sizeof(SOLICITED_NODE)) != 0 || lla))
        return P3NS_DROP;                   /* duplicate address detection has no source option */
    if (!is_ours(port, target))
        return P3NS_DROP;                   /* §7.2.3: not one of our addresses */
    /* §7.2.3: the source option creates or updates the solicitor's entry. */
    bool learned = !src_unspecified && lla && neigh_learn(port, src, lla, rx->now_ms, true, true);
    uint8_t *out = reply_room(rx, P3NS_ETH_HLEN + IP6_HLEN + ND_MSG_LEN);
    if (!out)
        return learned ? P3NS_CONSUMED : P3NS_DROP;
    /* §7.2.4: to the solicitor, solicited and overriding (we are the only
     * owner of our address); to all nodes without S when it had no address yet.
     * R tells the hosts on the LAN side that we route for them (§4.4). */
    uint8_t flags = NA_OVERRIDE | (port->lan ? NA_ROUTER : 0);
    if (src_unspecified) {
        static const uint8_t all_nodes_mac[6] = {0x33, 0x33, 0, 0, 0, 1};   /* RFC 2464 §7 */
        write_nd(port, out, all_nodes_mac, ALL_NODES, ND_ADVERT, flags, port->addr);
    } else {
        write_nd(port, out, rx->frame + 6, src, ND_ADVERT, flags | NA_SOLICITED, port->addr);
    }
    port->nd_adverts++;
    return P3NS_REPLY;
}

static enum p3ns_verdict echo6_reply(struct rx *rx, const uint8_t *ip, uint32_t total)
{
    struct p3ns_port *port = rx->port;
    const uint8_t *icmp = ip + IP6_HLEN;
    uint32_t n = total - IP6_HLEN;
    /* RFC 4443 §4.1/§4.2: a valid request from a unicast source gets its data back. */
    if (icmp[1] != 0 || icmp6_checksum(ip + 8, ip + 24, icmp, n) != 0 || ip[8] == 0xff || is_zero(ip + 8, 16))
        return P3NS_DROP;
    uint8_t *out = reply_room(rx, P3NS_ETH_HLEN + IP6_HLEN + n);
    if (!out)
        return P3NS_DROP;
    uint8_t *rip = out + P3NS_ETH_HLEN, *ricmp = rip + IP6_HLEN;
    p3ns_eth_header(out, rx->frame + 6, port->mac, P3NS_ETHERTYPE_IPV6);
    put_ip6_header(rip, port->addr, ip + 8, (uint16_t)n, ECHO_TTL);
    memcpy(ricmp, icmp, n);
    ricmp[0] = ICMPV6_ECHO_REPLY;
    p3_put_be16(ricmp + 2, 0);
    p3_csum_store(ricmp + 2, icmp6_checksum(rip + 8, rip + 24, ricmp, n));
    port->echo_replies++;
    return P3NS_REPLY;
}

static enum p3ns_verdict ip6_input(struct rx *rx, uint32_t *l3_off, uint32_t *l3_len)
{
    struct p3ns_port *port = rx->port;
    const uint8_t *ip = rx->frame + P3NS_ETH_HLEN;
    uint32_t avail = rx->len - P3NS_ETH_HLEN;
    if (port->family != 6 || avail < IP6_HLEN || ip[0] >> 4 != 6)
        return P3NS_DROP;
    uint32_t total = IP6_HLEN + p3_get_be16(ip + 4);
    if (total > avail)
        return P3NS_DROP;
    bool to_us = is_ours(port, ip + 24);
    /* Neighbour discovery comes multicast too; the rest must be sent to our MAC. */
    if (ip[6] == PROTO_ICMPV6 && total >= IP6_HLEN + 8) {
        uint8_t type = ip[IP6_HLEN];
        if (type == ND_SOLICIT || type == ND_ADVERT)
            return nd_input(rx, ip, total);
        if (type == ICMPV6_ECHO_REQUEST && to_us && rx->unicast)
            return echo6_reply(rx, ip, total);
    }
    if (!rx->unicast)
        return P3NS_DROP;                   /* RFC 1812 §5.3.4, as for IPv4 */
    /* As for IPv4; link-local addresses are never forwarded (RFC 4291 §2.5.6). */
    if (port->lan ? to_us || is_link_local(port, ip + 8) || is_link_local(port, ip + 24) : !to_us)
        return P3NS_DROP;
    *l3_off = P3NS_ETH_HLEN;
    *l3_len = total;
    return P3NS_IP;
}

/* ---- entry points ---- */

enum p3ns_verdict p3ns_input(struct p3ns_port *port, const uint8_t *frame, uint32_t len, uint64_t now_ms,
                             uint8_t *reply, uint32_t reply_cap, uint32_t *reply_len, uint32_t *l3_off,
                             uint32_t *l3_len)
{
    struct rx rx = {port, frame, len, now_ms, false, reply, reply_cap, reply_len};
    enum p3ns_verdict v = P3NS_DROP;
    *reply_len = 0;
    *l3_off = 0;
    *l3_len = 0;
    /* Ours, broadcast or multicast (the group bit); a group source is invalid (IEEE 802.3 §3.2.3). */
    if (len >= P3NS_ETH_HLEN && !(frame[6] & 1)) {
        rx.unicast = memcmp(frame, port->mac, 6) == 0;
        if (rx.unicast || (frame[0] & 1)) {
            switch (p3_get_be16(frame + 12)) {
            case P3NS_ETHERTYPE_ARP: v = arp_input(&rx); break;
            case P3NS_ETHERTYPE_IPV4: v = ip4_input(&rx, l3_off, l3_len); break;
            case P3NS_ETHERTYPE_IPV6: v = ip6_input(&rx, l3_off, l3_len); break;
            default: break;
            }
        }
    }
    if (v == P3NS_DROP)
        port->dropped++;
    return v;
}

/* Group destinations have a fixed MAC and need no request: IPv4 multicast
 * (RFC 1112 §6.4), limited or subnet broadcast, IPv6 multicast (RFC 2464 §7). */
static bool group_mac(const struct p3ns_port *port, const uint8_t *dst, uint8_t mac[6])
{
    if (port->family == 6) {
        if (dst[0] != 0xff)
            return false;
        mac[0] = mac[1] = 0x33;
        memcpy(mac + 2, dst + 12, 4);
        return true;
    }
    if ((dst[0] & 0xf0) == 0xe0) {
        const uint8_t m[6] = {0x01, 0x00, 0x5e, (uint8_t)(dst[1] & 0x7f), dst[2], dst[3]};
        memcpy(mac, m, 6);
        return true;
    }
    bool subnet_broadcast = false;
    if (port->prefix_len < 31) {            /* /31 and /32 have no broadcast address (RFC 3021) */
        uint32_t host_mask = 0xffffffffu >> port->prefix_len;
        subnet_broadcast = prefix_match(dst, port->addr, port->prefix_len) && (p3_get_be32(dst) & host_mask) == host_mask;
    }
    if (p3_get_be32(dst) != 0xffffffffu && !subnet_broadcast)
        return false;
    memcpy(mac, BROADCAST_MAC, 6);
    return true;
}

/* A question for next_hop: to everyone (ARP broadcast, NS to the solicited-node
 * group, RFC 4861 §7.2.2), or straight to the MAC we still hold for a stale
 * entry (RFC 1122 §2.3.2.1 unicast poll; RFC 4861 §7.3.3 PROBE). */
static uint32_t write_request(const struct p3ns_port *port, uint8_t *out, const uint8_t *next_hop,
                              const uint8_t *known_mac)
{
    static const uint8_t no_mac[6];
    if (port->family == 4)
        return write_arp(port, out, known_mac ? known_mac : BROADCAST_MAC, ARP_REQUEST, no_mac, next_hop);
    if (known_mac)
        return write_nd(port, out, known_mac, next_hop, ND_SOLICIT, 0, next_hop);
    uint8_t group[16];
    memcpy(group, SOLICITED_NODE, sizeof(SOLICITED_NODE));
    memcpy(group + 13, next_hop + 13, 3);
    const uint8_t group_eth[6] = {0x33, 0x33, 0xff, next_hop[13], next_hop[14], next_hop[15]};  /* RFC 2464 §7 */
    return write_nd(port, out, group_eth, group, ND_SOLICIT, 0, next_hop);
}

int p3ns_resolve(struct p3ns_port *port, const uint8_t *dst, uint64_t now_ms, uint8_t mac[6], uint8_t *req,
                 uint32_t req_cap, uint32_t *req_len)
{
    *req_len = 0;
    if (group_mac(port, dst, mac))
        return 1;
    const uint8_t *next_hop = is_on_link(port, dst) ? dst : port->gateway;
    struct p3ns_neigh *e = neigh_find(port, next_hop);
    bool fresh_entry = !e, known = e && e->state == STATE_KNOWN;
    if (known) {
        memcpy(mac, e->mac, 6);
        if (now_ms - e->confirmed_ms < P3NS_REACHABLE_MS || now_ms < e->confirmed_ms)
            return 1;
    }
    if (!e)
        e = neigh_claim(port, next_hop);
    bool due = fresh_entry || now_ms - e->asked_ms >= P3NS_RETRY_MS || now_ms < e->asked_ms;
    uint32_t need = port->family == 4 ? P3NS_ETH_HLEN + ARP_LEN : P3NS_ETH_HLEN + IP6_HLEN + ND_MSG_LEN;
    if (due && req && req_cap >= need) {
        *req_len = write_request(port, req, next_hop, known ? e->mac : NULL);
        e->asked_ms = now_ms;
        port->requests_sent++;
    }
    return known;
}
