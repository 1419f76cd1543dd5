/*
 * netstack.h — the little link layer a DPDK port needs (docs/dpdk.md):
 * Ethernet framing, ARP (RFC 826) for IPv4 and neighbour discovery
 * (RFC 4861) for IPv6, and echo replies so an operator can ping the port.
 *
 * A DPDK port has no kernel behind it, so nobody else answers "who has
 * 192.0.2.1?" or finds the MAC of the next hop. This file does that and
 * nothing more; it is plain C with no DPDK in it, so the native tests run it
 * under ASan+UBSan (native/tests/test_netstack.c).
 *
 * Single-threaded: a port's state belongs to the worker that polls it.
 */
#ifndef P3_NETSTACK_H
#define P3_NETSTACK_H

#include <stdint.h>

enum {
    P3NS_ETH_HLEN = 14,
    P3NS_NEIGH_SLOTS = 256,        /* neighbours per port; the least recently confirmed is replaced */
    P3NS_REACHABLE_MS = 300000,    /* after this an entry is still used but re-confirmed */
    P3NS_RETRY_MS = 1000,          /* at most one request per address per second */
    P3NS_MAX_REPLY = 128           /* the longest frame p3ns_input or p3ns_resolve writes */
};

enum { P3NS_ETHERTYPE_IPV4 = 0x0800, P3NS_ETHERTYPE_ARP = 0x0806, P3NS_ETHERTYPE_IPV6 = 0x86dd };

struct p3ns_neigh {
    uint8_t addr[16];
    uint8_t mac[6];
    uint8_t state;                 /* 0 free, 1 incomplete (asked, no answer), 2 known */
    uint64_t confirmed_ms;         /* when an answer (or a request from it) was last seen */
    uint64_t asked_ms;             /* when we last sent a request for it */
};

struct p3ns_port {
    uint8_t mac[6];
    uint8_t family;                /* 4 or 6: the family the port serves */
    uint8_t lan;                   /* 1: LAN (protected) side, any IP destination is for the
                                      dataplane; 0: WAN side, only our own address is */
    uint8_t addr[16];              /* our address on this port (IPv4: first 4 octets) */
    uint8_t prefix_len;            /* on-link prefix of addr */
    uint8_t has_gateway;
    uint8_t gateway[16];           /* next hop for destinations outside addr/prefix_len */
    struct p3ns_neigh neigh[P3NS_NEIGH_SLOTS];
    /* counters */
    uint64_t arp_replies, nd_adverts, echo_replies, requests_sent, learned, dropped;
};

/* Sets up a port: addr/prefix_len on it, optional gateway (NULL for none;
 * then every destination is on-link). 0, or -1 on a bad family/prefix. */
int p3ns_port_init(struct p3ns_port *port, const uint8_t mac[6], int family, const uint8_t *addr,
                   unsigned prefix_len, const uint8_t *gateway, int lan);

enum p3ns_verdict {
    P3NS_DROP = 0,      /* not ours, malformed, or of no interest: the caller counts and frees it */
    P3NS_IP = 1,        /* an IP packet for the dataplane: it starts at frame + *l3_off and
                           is *l3_len octets long (Ethernet padding cut off by the IP length) */
    P3NS_REPLY = 2,     /* a frame to send back was written to reply (*reply_len octets):
                           ARP reply, neighbour advertisement, echo reply */
    P3NS_CONSUMED = 3   /* handled (a neighbour learned), nothing to send */
};

/* Classifies one received Ethernet frame.
 *  - Ethernet destination must be our MAC, broadcast, or multicast (else DROP).
 *  - ARP: a request for our address is answered (REPLY) and its sender
 *    learned; a reply, or a request for another address whose sender we are
 *    waiting for, updates the table (CONSUMED). Only the port's family.
 *  - IPv6 ICMPv6 (hop limit 255 as RFC 4861 §7.1.1 requires): a neighbour
 *    solicitation for our address is answered with a solicited advertisement
 *    carrying our MAC (REPLY), and the source link-layer option learned; an
 *    advertisement updates the table (CONSUMED). Checksums are verified.
 *  - IPv4/IPv6 addressed to our address: ICMP/ICMPv6 echo request → echo reply
 *    (REPLY); on the WAN port other protocols are IP (the dataplane checks
 *    them); on the LAN port other traffic to us is DROP (the gateway runs no
 *    services on its LAN address).
 *  - Other IP: IP on the LAN port, DROP on the WAN port.
 *  - IP packets of the other family, or with a bad header length: DROP. */
enum p3ns_verdict p3ns_input(struct p3ns_port *port, const uint8_t *frame, uint32_t len, uint64_t now_ms,
                             uint8_t *reply, uint32_t reply_cap, uint32_t *reply_len, uint32_t *l3_off,
                             uint32_t *l3_len);

/* The MAC for an IP destination on this port (through the gateway when it
 * is off-link). Returns 1 with mac set when known. Returns 0 when not known
 * (or known but older than P3NS_REACHABLE_MS: then 1 is returned and a
 * request may still be written); whenever a request is due (none sent for
 * this address in the last P3NS_RETRY_MS) an ARP request or a neighbour
 * solicitation (to the solicited-node multicast address) is written to req
 * and *req_len set, else *req_len = 0. */
int p3ns_resolve(struct p3ns_port *port, const uint8_t *dst, uint64_t now_ms, uint8_t mac[6], uint8_t *req,
                 uint32_t req_cap, uint32_t *req_len);

/* Writes the 14-octet Ethernet header at frame. */
void p3ns_eth_header(uint8_t *frame, const uint8_t dst[6], const uint8_t src[6], uint16_t ethertype);

#endif
