/* Flow tracking and login termination (spec §2.1.7): the packets that
 * p3dp_flows_terminate writes carry the addresses, ports, sequence numbers
 * and checksums a local stack accepts; closed, idle and foreign flows get
 * nothing; the table stays bounded; bad packets never crash it. */
#include "ntest.h"
#include "p3dp.h"
#include "flows.h"

#include <arpa/inet.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

enum { F_FIN = 1, F_SYN = 2, F_RST = 4, F_PSH = 8, F_ACK = 16 };
enum { HOUR_MS = 3600 * 1000, MINUTE_MS = 60 * 1000 };

/* ---- packets, built and checked independently of flows.c ---------------- */

struct endpoint {
    int family;
    uint8_t addr[16];
    uint16_t port;
};

static struct endpoint ep(const char *addr, uint16_t port)
{
    struct endpoint e;
    memset(&e, 0, sizeof(e));
    e.family = strchr(addr, ':') ? 6 : 4;
    CHECK(inet_pton(e.family == 4 ? AF_INET : AF_INET6, addr, e.addr) == 1);
    e.port = port;
    return e;
}

static uint16_t rd16(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }
static uint32_t rd32(const uint8_t *p) { return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3]; }
static void wr16(uint8_t *p, uint32_t v) { p[0] = (uint8_t)(v >> 8); p[1] = (uint8_t)v; }
static void wr32(uint8_t *p, uint32_t v) { wr16(p, v >> 16); wr16(p + 2, v); }

/* RFC 1071 sum, folded; a region that carries its own correct checksum
 * sums to 0xffff. */
static uint32_t ones_sum(uint32_t acc, const uint8_t *p, size_t n)
{
    for (size_t i = 0; i + 1 < n; i += 2)
        acc += rd16(p + i);
    if (n & 1)
        acc += (uint32_t)p[n - 1] << 8;
    while (acc >> 16)
        acc = (acc & 0xffff) + (acc >> 16);
    return acc;
}

/* Checksum of an upper-layer segment including its pseudo header. */
static uint32_t l4_sum(const uint8_t *ip, const uint8_t *l4, size_t l4_len, uint8_t proto)
{
    uint8_t pseudo[40];
    size_t n;
    if ((ip[0] >> 4) == 4) {
        memcpy(pseudo, ip + 12, 8);
        pseudo[8] = 0;
        pseudo[9] = proto;
        wr16(pseudo + 10, (uint32_t)l4_len);
        n = 12;
    } else {
        memcpy(pseudo, ip + 8, 32);
        wr32(pseudo + 32, (uint32_t)l4_len);
        memset(pseudo + 36, 0, 3);
        pseudo[39] = proto;
        n = 40;
    }
    return ones_sum(ones_sum(0, pseudo, n), l4, l4_len);
}

/* An IP packet from a to b carrying an upper-layer segment of l4_len. */
static size_t ip_packet(uint8_t *buf, const struct endpoint *a, const struct endpoint *b,
                        uint8_t proto, size_t l4_len)
{
    if (a->family == 4) {
        memset(buf, 0, 20);
        buf[0] = 0x45;
        wr16(buf + 2, (uint32_t)(20 + l4_len));
        wr16(buf + 4, 0x1234);
        buf[8] = 63;
        buf[9] = proto;
        memcpy(buf + 12, a->addr, 4);
        memcpy(buf + 16, b->addr, 4);
        wr16(buf + 10, ~ones_sum(0, buf, 20) & 0xffff);
        return 20;
    }
    memset(buf, 0, 40);
    buf[0] = 0x60;
    wr16(buf + 4, (uint32_t)l4_len);
    buf[6] = proto;
    buf[7] = 63;
    memcpy(buf + 8, a->addr, 16);
    memcpy(buf + 24, b->addr, 16);
    return 40;
}

static size_t tcp_packet(uint8_t *buf, const struct endpoint *a, const struct endpoint *b,
                         uint32_t seq, uint32_t ack, uint8_t flags, size_t payload)
{
    size_t ip = ip_packet(buf, a, b, 6, 20 + payload);
    uint8_t *th = buf + ip;
    memset(th, 0, 20 + payload);
    wr16(th, a->port);
    wr16(th + 2, b->port);
    wr32(th + 4, seq);
    wr32(th + 8, ack);
    th[12] = 5 << 4;
    th[13] = flags;
    wr16(th + 14, 64240);
    for (size_t i = 0; i < payload; i++)
        th[20 + i] = (uint8_t)('a' + i % 26);
    wr16(th + 16, ~l4_sum(buf, th, 20 + payload, 6) & 0xffff);
    return ip + 20 + payload;
}

static size_t udp_packet(uint8_t *buf, const struct endpoint *a, const struct endpoint *b,
                         size_t payload)
{
    size_t ip = ip_packet(buf, a, b, 17, 8 + payload);
    uint8_t *uh = buf + ip;
    wr16(uh, a->port);
    wr16(uh + 2, b->port);
    wr16(uh + 4, (uint32_t)(8 + payload));
    wr16(uh + 6, 0);
    for (size_t i = 0; i < payload; i++)
        uh[8 + i] = (uint8_t)i;
    wr16(uh + 6, ~l4_sum(buf, uh, 8 + payload, 17) & 0xffff);
    return ip + 8 + payload;
}

static int observe(p3dp_flows *flows, uint32_t peer, const uint8_t *pkt, size_t len, int dir,
                   uint64_t now_ms)
{
    return p3dp_flows_observe(flows, peer, pkt, len, dir, now_ms);
}

/* One TCP segment, shown to the tracker in the given direction. */
static int seg(p3dp_flows *flows, uint32_t peer, const struct endpoint *a, const struct endpoint *b,
               int dir, uint32_t seq, uint32_t ack, uint8_t flags, size_t payload)
{
    uint8_t pkt[1600];
    size_t len = tcp_packet(pkt, a, b, seq, ack, flags, payload);
    return observe(flows, peer, pkt, len, dir, 1000);
}

/* Handshake and a little data both ways; the local end opens. Afterwards
 * the local end has sent up to 1101 and acknowledged up to 5201. */
static void established_flow(p3dp_flows *flows, uint32_t peer, const struct endpoint *local,
                             const struct endpoint *remote)
{
    const int out = P3DP_FLOW_FROM_LAN, in = P3DP_FLOW_TO_LAN;
    CHECK_EQ(seg(flows, peer, local, remote, out, 1000, 0, F_SYN, 0), P3DP_FLOW_TRACKED);
    CHECK_EQ(seg(flows, peer, remote, local, in, 5000, 1001, F_SYN | F_ACK, 0), P3DP_FLOW_TRACKED);
    CHECK_EQ(seg(flows, peer, local, remote, out, 1001, 5001, F_ACK, 0), P3DP_FLOW_TRACKED);
    CHECK_EQ(seg(flows, peer, local, remote, out, 1001, 5001, F_ACK | F_PSH, 100), P3DP_FLOW_TRACKED);
    CHECK_EQ(seg(flows, peer, remote, local, in, 5001, 1101, F_ACK | F_PSH, 200), P3DP_FLOW_TRACKED);
    CHECK_EQ(seg(flows, peer, local, remote, out, 1101, 5201, F_ACK, 0), P3DP_FLOW_TRACKED);
}

struct out_buf {
    uint8_t bytes[64 * P3DP_FLOWS_MAX_PACKET];
    size_t lens[64];
    size_t offs[64];
    int n;
    p3dp_flows_terminated done;
};

static void terminate(p3dp_flows *flows, uint32_t peer, uint64_t now_ms, struct out_buf *o)
{
    memset(o, 0, sizeof(*o));
    o->n = p3dp_flows_terminate(flows, peer, now_ms, o->bytes, sizeof(o->bytes), o->lens, 64, &o->done);
    size_t off = 0;
    for (int i = 0; i < o->n; i++) {
        o->offs[i] = off;
        off += o->lens[i];
    }
}

/* Checks that pkt is a well-formed RST from remote to local with this SEQ
 * (and ACK, when ack_expected is non-zero). */
static void check_rst(const uint8_t *pkt, size_t len, const struct endpoint *local,
                      const struct endpoint *remote, uint32_t seq, uint32_t ack_expected)
{
    size_t ip = local->family == 4 ? 20 : 40;
    CHECK_EQ(len, ip + 20);
    if (local->family == 4) {
        CHECK_EQ(pkt[0], 0x45);
        CHECK_EQ(rd16(pkt + 2), len);
        CHECK_EQ(pkt[9], 6);
        CHECK(pkt[8] > 0);
        CHECK_EQ(ones_sum(0, pkt, 20), 0xffff);           /* header checksum */
        CHECK(memcmp(pkt + 12, remote->addr, 4) == 0);
        CHECK(memcmp(pkt + 16, local->addr, 4) == 0);
    } else {
        CHECK_EQ(pkt[0] >> 4, 6);
        CHECK_EQ(rd16(pkt + 4), 20);
        CHECK_EQ(pkt[6], 6);
        CHECK(pkt[7] > 0);
        CHECK(memcmp(pkt + 8, remote->addr, 16) == 0);
        CHECK(memcmp(pkt + 24, local->addr, 16) == 0);
    }
    const uint8_t *th = pkt + ip;
    CHECK_EQ(rd16(th), remote->port);
    CHECK_EQ(rd16(th + 2), local->port);
    CHECK_EQ(rd32(th + 4), seq);
    CHECK(th[13] & F_RST);
    CHECK(!(th[13] & (F_SYN | F_FIN)));
    if (ack_expected) {
        CHECK(th[13] & F_ACK);
        CHECK_EQ(rd32(th + 8), ack_expected);
    }
    CHECK_EQ(l4_sum(pkt, th, 20, 6), 0xffff);               /* TCP checksum */
}

/* ---- TCP ---------------------------------------------------------------- */

static void test_v4_established_flow_gets_rst_at_last_ack_sent_by_local_end(void)
{
    p3dp_flows *flows = p3dp_flows_new(1024, HOUR_MS, MINUTE_MS);
    struct endpoint local = ep("10.1.0.5", 40000), remote = ep("10.2.0.7", 80);
    established_flow(flows, 3, &local, &remote);
    CHECK_EQ(p3dp_flows_count(flows, 3, 2000), 1);
    struct out_buf o;
    terminate(flows, 3, 2000, &o);
    CHECK_EQ(o.n, 1);
    CHECK_EQ(o.done.tcp_flows_reset, 1);
    CHECK_EQ(o.done.tcp_resets, 1);
    CHECK_EQ(o.done.icmp_unreachables, 0);
    check_rst(o.bytes, o.lens[0], &local, &remote, 5201, 1101);
    /* Terminated flows are forgotten. */
    CHECK_EQ(p3dp_flows_count(flows, 3, 2000), 0);
    terminate(flows, 3, 2000, &o);
    CHECK_EQ(o.n, 0);
    p3dp_flows_free(flows);
}

static void test_v6_established_flow_gets_rst_with_v6_pseudo_header_checksum(void)
{
    p3dp_flows *flows = p3dp_flows_new(1024, HOUR_MS, MINUTE_MS);
    struct endpoint local = ep("fd00:1::5", 40001), remote = ep("fd00:2::7", 443);
    established_flow(flows, 8, &local, &remote);
    struct out_buf o;
    terminate(flows, 8, 2000, &o);
    CHECK_EQ(o.n, 1);
    CHECK_EQ(o.done.tcp_resets, 1);
    check_rst(o.bytes, o.lens[0], &local, &remote, 5201, 1101);
    p3dp_flows_free(flows);
}

static void test_remote_opened_flow_is_reset_towards_local_server(void)
{
    /* The local end is the server: the SYN comes out of the tunnel. */
    p3dp_flows *flows = p3dp_flows_new(1024, HOUR_MS, MINUTE_MS);
    struct endpoint local = ep("10.1.0.9", 22), remote = ep("10.2.0.3", 51515);
    const int out = P3DP_FLOW_FROM_LAN, in = P3DP_FLOW_TO_LAN;
    seg(flows, 1, &remote, &local, in, 700, 0, F_SYN, 0);
    seg(flows, 1, &local, &remote, out, 9000, 701, F_SYN | F_ACK, 0);
    seg(flows, 1, &remote, &local, in, 701, 9001, F_ACK, 0);
    seg(flows, 1, &local, &remote, out, 9001, 701, F_ACK | F_PSH, 40);
    struct out_buf o;
    terminate(flows, 1, 2000, &o);
    CHECK_EQ(o.n, 1);
    check_rst(o.bytes, o.lens[0], &local, &remote, 701, 9041);
    p3dp_flows_free(flows);
}

static void test_unacknowledged_remote_data_adds_a_second_rst_at_its_end(void)
{
    /* The local end got 300 more octets but has not ACKed them yet
     * (delayed ACK): its RCV.NXT is 5501, not the 5201 it announced. */
    p3dp_flows *flows = p3dp_flows_new(1024, HOUR_MS, MINUTE_MS);
    struct endpoint local = ep("10.1.0.5", 40000), remote = ep("10.2.0.7", 80);
    established_flow(flows, 3, &local, &remote);
    seg(flows, 3, &remote, &local, P3DP_FLOW_TO_LAN, 5201, 1101, F_ACK, 300);
    struct out_buf o;
    terminate(flows, 3, 2000, &o);
    CHECK_EQ(o.n, 2);
    CHECK_EQ(o.done.tcp_flows_reset, 1);
    CHECK_EQ(o.done.tcp_resets, 2);
    check_rst(o.bytes + o.offs[0], o.lens[0], &local, &remote, 5201, 1101);
    check_rst(o.bytes + o.offs[1], o.lens[1], &local, &remote, 5501, 1101);
    p3dp_flows_free(flows);
}

static void test_retransmission_does_not_move_sequence_back(void)
{
    p3dp_flows *flows = p3dp_flows_new(1024, HOUR_MS, MINUTE_MS);
    struct endpoint local = ep("10.1.0.5", 40000), remote = ep("10.2.0.7", 80);
    established_flow(flows, 3, &local, &remote);
    /* Old segments both ways arrive again (retransmitted or reordered). */
    seg(flows, 3, &remote, &local, P3DP_FLOW_TO_LAN, 5001, 1101, F_ACK | F_PSH, 200);
    seg(flows, 3, &local, &remote, P3DP_FLOW_FROM_LAN, 1001, 5001, F_ACK | F_PSH, 100);
    struct out_buf o;
    terminate(flows, 3, 2000, &o);
    CHECK_EQ(o.n, 1);
    check_rst(o.bytes, o.lens[0], &local, &remote, 5201, 1101);
    p3dp_flows_free(flows);
}

static void test_sequence_numbers_wrap_around(void)
{
    p3dp_flows *flows = p3dp_flows_new(1024, HOUR_MS, MINUTE_MS);
    struct endpoint local = ep("10.1.0.5", 40002), remote = ep("10.2.0.7", 80);
    const int out = P3DP_FLOW_FROM_LAN, in = P3DP_FLOW_TO_LAN;
    seg(flows, 3, &local, &remote, out, 0xfffffff0u, 0, F_SYN, 0);
    seg(flows, 3, &remote, &local, in, 0xffffff00u, 0xfffffff1u, F_SYN | F_ACK, 0);
    seg(flows, 3, &local, &remote, out, 0xfffffff1u, 0xffffff01u, F_ACK, 0);
    seg(flows, 3, &remote, &local, in, 0xffffff01u, 0xfffffff1u, F_ACK, 1000);
    seg(flows, 3, &local, &remote, out, 0xfffffff1u, 0x000002e9u, F_ACK, 0);
    struct out_buf o;
    terminate(flows, 3, 2000, &o);
    CHECK_EQ(o.n, 1);
    check_rst(o.bytes, o.lens[0], &local, &remote, 0x000002e9u, 0xfffffff1u);
    p3dp_flows_free(flows);
}

static void test_connecting_flow_gets_rst_acking_its_syn(void)
{
    /* SYN-SENT: only the SYN went out. RFC 793 §3.9 and Linux accept the RST
     * when its ACK acknowledges the SYN. */
    p3dp_flows *flows = p3dp_flows_new(1024, HOUR_MS, MINUTE_MS);
    struct endpoint local = ep("10.1.0.5", 40003), remote = ep("10.2.0.7", 80);
    seg(flows, 2, &local, &remote, P3DP_FLOW_FROM_LAN, 77777, 0, F_SYN, 0);
    struct out_buf o;
    terminate(flows, 2, 2000, &o);
    CHECK_EQ(o.n, 1);
    check_rst(o.bytes, o.lens[0], &local, &remote, 0, 77778);
    p3dp_flows_free(flows);
}

static void test_flows_closed_by_fin_both_ways_or_rst_get_nothing(void)
{
    p3dp_flows *flows = p3dp_flows_new(1024, HOUR_MS, MINUTE_MS);
    const int out = P3DP_FLOW_FROM_LAN, in = P3DP_FLOW_TO_LAN;
    struct endpoint local = ep("10.1.0.5", 41000), remote = ep("10.2.0.7", 80);
    established_flow(flows, 4, &local, &remote);
    CHECK_EQ(seg(flows, 4, &local, &remote, out, 1101, 5201, F_FIN | F_ACK, 0), P3DP_FLOW_TRACKED);
    CHECK_EQ(seg(flows, 4, &remote, &local, in, 5201, 1102, F_FIN | F_ACK, 0), P3DP_FLOW_CLOSED);

    struct endpoint local2 = ep("10.1.0.5", 41001);
    established_flow(flows, 4, &local2, &remote);
    CHECK_EQ(seg(flows, 4, &remote, &local2, in, 5201, 0, F_RST, 0), P3DP_FLOW_CLOSED);

    struct endpoint local3 = ep("fd00:1::5", 41002), remote3 = ep("fd00:2::7", 80);
    established_flow(flows, 4, &local3, &remote3);
    CHECK_EQ(seg(flows, 4, &local3, &remote3, out, 1101, 5201, F_RST | F_ACK, 0), P3DP_FLOW_CLOSED);

    CHECK_EQ(p3dp_flows_count(flows, 4, 2000), 0);
    struct out_buf o;
    terminate(flows, 4, 2000, &o);
    CHECK_EQ(o.n, 0);
    p3dp_flows_stats stats;
    p3dp_flows_stats_get(flows, &stats);
    CHECK_EQ(stats.closed, 3);
    CHECK_EQ(stats.entries, 0);
    p3dp_flows_free(flows);
}

static void test_half_closed_flow_is_still_reset(void)
{
    p3dp_flows *flows = p3dp_flows_new(1024, HOUR_MS, MINUTE_MS);
    struct endpoint local = ep("10.1.0.5", 42000), remote = ep("10.2.0.7", 80);
    established_flow(flows, 4, &local, &remote);
    /* The remote end closed its side; the local end ACKs the FIN and goes
     * on sending (CLOSE-WAIT). */
    seg(flows, 4, &remote, &local, P3DP_FLOW_TO_LAN, 5201, 1101, F_FIN | F_ACK, 0);
    seg(flows, 4, &local, &remote, P3DP_FLOW_FROM_LAN, 1101, 5202, F_ACK, 10);
    struct out_buf o;
    terminate(flows, 4, 2000, &o);
    CHECK_EQ(o.n, 1);
    check_rst(o.bytes, o.lens[0], &local, &remote, 5202, 1111);
    p3dp_flows_free(flows);
}

static void test_new_syn_on_same_ports_starts_a_new_connection(void)
{
    p3dp_flows *flows = p3dp_flows_new(1024, HOUR_MS, MINUTE_MS);
    struct endpoint local = ep("10.1.0.5", 43000), remote = ep("10.2.0.7", 80);
    established_flow(flows, 4, &local, &remote);
    /* The old connection's numbers must not leak into the new one, even
     * though 5201 is "after" the new ISN in sequence space. */
    seg(flows, 4, &local, &remote, P3DP_FLOW_FROM_LAN, 3000000000u, 0, F_SYN, 0);
    seg(flows, 4, &remote, &local, P3DP_FLOW_TO_LAN, 100, 3000000001u, F_SYN | F_ACK, 0);
    seg(flows, 4, &local, &remote, P3DP_FLOW_FROM_LAN, 3000000001u, 101, F_ACK, 0);
    struct out_buf o;
    terminate(flows, 4, 2000, &o);
    CHECK_EQ(o.n, 1);
    check_rst(o.bytes, o.lens[0], &local, &remote, 101, 3000000001u);
    p3dp_flows_free(flows);
}

/* ---- other protocols ------------------------------------------------------ */

static void check_unreachable_code(const uint8_t *pkt, size_t len, const struct endpoint *local,
                                   const struct endpoint *remote, const uint8_t *orig,
                                   size_t orig_len, int code)
{
    size_t ip = local->family == 4 ? 20 : 40;
    size_t quote = orig_len < FLOWS_QUOTE_MAX ? orig_len : FLOWS_QUOTE_MAX;
    CHECK_EQ(len, ip + 8 + quote);
    const uint8_t *icmp = pkt + ip;
    if (local->family == 4) {
        CHECK(len <= 576);                                   /* RFC 1812 §4.3.2.3 */
        CHECK_EQ(rd16(pkt + 2), len);
        CHECK_EQ(pkt[9], 1);
        CHECK_EQ(ones_sum(0, pkt, 20), 0xffff);
        CHECK(memcmp(pkt + 12, remote->addr, 4) == 0);
        CHECK(memcmp(pkt + 16, local->addr, 4) == 0);
        CHECK_EQ(icmp[0], 3);                                /* destination unreachable */
        CHECK_EQ(icmp[1], code);
        CHECK_EQ(ones_sum(0, icmp, len - ip), 0xffff);
        /* RFC 792: the original IP header and at least 64 bits of data. */
        CHECK(quote >= (size_t)(orig[0] & 15) * 4 + 8);
    } else {
        CHECK(len <= 1280);                                  /* RFC 4443 §2.4(c) */
        CHECK_EQ(rd16(pkt + 4), len - 40);
        CHECK_EQ(pkt[6], 58);
        CHECK(memcmp(pkt + 8, remote->addr, 16) == 0);
        CHECK(memcmp(pkt + 24, local->addr, 16) == 0);
        CHECK_EQ(icmp[0], 1);                                /* destination unreachable */
        CHECK_EQ(icmp[1], code);
        CHECK_EQ(l4_sum(pkt, icmp, len - ip, 58), 0xffff);
    }
    CHECK_EQ(rd32(icmp + 4), 0);                             /* unused */
    CHECK(memcmp(icmp + 8, orig, quote) == 0);
}

/* With the default codes: host unreachable (v4), address unreachable (v6). */
static void check_unreachable(const uint8_t *pkt, size_t len, const struct endpoint *local,
                              const struct endpoint *remote, const uint8_t *orig, size_t orig_len)
{
    check_unreachable_code(pkt, len, local, remote, orig, orig_len, local->family == 4 ? 1 : 3);
}

static void test_unreachable_codes_can_be_chosen(void)
{
    p3dp_flows *flows = p3dp_flows_new(1024, HOUR_MS, MINUTE_MS);
    CHECK_EQ(p3dp_flows_set_unreachable_codes(flows, 16, 1), -P3R_DP_BAD_ARGUMENT);
    CHECK_EQ(p3dp_flows_set_unreachable_codes(flows, 13, 8), -P3R_DP_BAD_ARGUMENT);
    CHECK_EQ(p3dp_flows_set_unreachable_codes(NULL, 13, 1), -P3R_DP_BAD_ARGUMENT);
    CHECK_EQ(p3dp_flows_set_unreachable_codes(flows, 13, 1), 0);
    struct endpoint local = ep("10.1.0.5", 5353), remote = ep("10.2.0.53", 53);
    struct endpoint local6 = ep("fd00:1::5", 5353), remote6 = ep("fd00:2::53", 53);
    uint8_t pkt[200], pkt6[200];
    size_t len = udp_packet(pkt, &local, &remote, 20);
    size_t len6 = udp_packet(pkt6, &local6, &remote6, 20);
    observe(flows, 5, pkt, len, P3DP_FLOW_FROM_LAN, 10);
    observe(flows, 6, pkt6, len6, P3DP_FLOW_FROM_LAN, 10);
    struct out_buf o;
    terminate(flows, 5, 40, &o);
    CHECK_EQ(o.n, 1);
    check_unreachable_code(o.bytes, o.lens[0], &local, &remote, pkt, len, 13);
    terminate(flows, 6, 40, &o);
    CHECK_EQ(o.n, 1);
    check_unreachable_code(o.bytes, o.lens[0], &local6, &remote6, pkt6, len6, 1);
    p3dp_flows_free(flows);
}

static void test_udp_flow_gets_icmp_host_unreachable_quoting_first_packet(void)
{
    p3dp_flows *flows = p3dp_flows_new(1024, HOUR_MS, MINUTE_MS);
    struct endpoint local = ep("10.1.0.5", 5353), remote = ep("10.2.0.53", 53);
    uint8_t first[1600], later[1600], reply[1600];
    size_t first_len = udp_packet(first, &local, &remote, 20);
    size_t later_len = udp_packet(later, &local, &remote, 900);
    size_t reply_len = udp_packet(reply, &remote, &local, 400);
    CHECK_EQ(observe(flows, 5, first, first_len, P3DP_FLOW_FROM_LAN, 10), P3DP_FLOW_TRACKED);
    CHECK_EQ(observe(flows, 5, reply, reply_len, P3DP_FLOW_TO_LAN, 20), P3DP_FLOW_TRACKED);
    CHECK_EQ(observe(flows, 5, later, later_len, P3DP_FLOW_FROM_LAN, 30), P3DP_FLOW_TRACKED);
    CHECK_EQ(p3dp_flows_count(flows, 5, 40), 1);
    struct out_buf o;
    terminate(flows, 5, 40, &o);
    CHECK_EQ(o.n, 1);
    CHECK_EQ(o.done.icmp_unreachables, 1);
    CHECK_EQ(o.done.tcp_resets, 0);
    check_unreachable(o.bytes, o.lens[0], &local, &remote, first, first_len);
    p3dp_flows_free(flows);
}

static void test_udp6_flow_gets_icmpv6_address_unreachable(void)
{
    p3dp_flows *flows = p3dp_flows_new(1024, HOUR_MS, MINUTE_MS);
    struct endpoint local = ep("fd00:1::5", 5000), remote = ep("fd00:2::9", 6000);
    uint8_t pkt[1600];
    size_t len = udp_packet(pkt, &local, &remote, 1200);
    CHECK_EQ(observe(flows, 6, pkt, len, P3DP_FLOW_FROM_LAN, 10), P3DP_FLOW_TRACKED);
    struct out_buf o;
    terminate(flows, 6, 40, &o);
    CHECK_EQ(o.n, 1);
    CHECK_EQ(o.done.icmp_unreachables, 1);
    check_unreachable(o.bytes, o.lens[0], &local, &remote, pkt, len);
    p3dp_flows_free(flows);
}

static void test_ping_flow_gets_unreachable_quoting_echo_request(void)
{
    p3dp_flows *flows = p3dp_flows_new(1024, HOUR_MS, MINUTE_MS);
    struct endpoint local = ep("10.1.0.5", 0), remote = ep("10.2.0.1", 0);
    uint8_t pkt[100];
    size_t ip = ip_packet(pkt, &local, &remote, 1, 16);
    memset(pkt + ip, 0, 16);
    pkt[ip] = 8;                                             /* echo request */
    wr16(pkt + ip + 4, 0xbeef);
    wr16(pkt + ip + 2, ~ones_sum(0, pkt + ip, 16) & 0xffff);
    CHECK_EQ(observe(flows, 5, pkt, ip + 16, P3DP_FLOW_FROM_LAN, 10), P3DP_FLOW_TRACKED);
    struct out_buf o;
    terminate(flows, 5, 40, &o);
    CHECK_EQ(o.n, 1);
    check_unreachable(o.bytes, o.lens[0], &local, &remote, pkt, ip + 16);
    p3dp_flows_free(flows);
}

static void test_flow_only_received_by_local_end_gets_no_icmp(void)
{
    /* An ICMP error is about a packet the local end sent; there is none. */
    p3dp_flows *flows = p3dp_flows_new(1024, HOUR_MS, MINUTE_MS);
    struct endpoint local = ep("10.1.0.5", 9000), remote = ep("10.2.0.8", 9001);
    uint8_t pkt[200];
    size_t len = udp_packet(pkt, &remote, &local, 50);
    CHECK_EQ(observe(flows, 5, pkt, len, P3DP_FLOW_TO_LAN, 10), P3DP_FLOW_TRACKED);
    struct out_buf o;
    terminate(flows, 5, 40, &o);
    CHECK_EQ(o.n, 0);
    CHECK_EQ(o.done.flows_silent, 1);
    CHECK_EQ(p3dp_flows_count(flows, 5, 40), 0);
    p3dp_flows_free(flows);
}

static void test_icmp_errors_multicast_and_broadcast_are_not_tracked(void)
{
    p3dp_flows *flows = p3dp_flows_new(1024, HOUR_MS, MINUTE_MS);
    struct endpoint local = ep("10.1.0.5", 5000);
    struct endpoint mcast = ep("239.1.2.3", 5000), bcast = ep("255.255.255.255", 67);
    struct endpoint mcast6 = ep("ff02::fb", 5353), local6 = ep("fd00:1::5", 5353);
    uint8_t pkt[200];
    size_t len = udp_packet(pkt, &local, &mcast, 10);
    CHECK_EQ(observe(flows, 5, pkt, len, P3DP_FLOW_FROM_LAN, 10), P3DP_FLOW_IGNORED);
    len = udp_packet(pkt, &local, &bcast, 10);
    CHECK_EQ(observe(flows, 5, pkt, len, P3DP_FLOW_FROM_LAN, 10), P3DP_FLOW_IGNORED);
    len = udp_packet(pkt, &local6, &mcast6, 10);
    CHECK_EQ(observe(flows, 5, pkt, len, P3DP_FLOW_FROM_LAN, 10), P3DP_FLOW_IGNORED);
    /* An ICMP time exceeded from the local side. */
    struct endpoint remote = ep("10.2.0.1", 0);
    size_t ip = ip_packet(pkt, &local, &remote, 1, 36);
    memset(pkt + ip, 0, 36);
    pkt[ip] = 11;
    CHECK_EQ(observe(flows, 5, pkt, ip + 36, P3DP_FLOW_FROM_LAN, 10), P3DP_FLOW_IGNORED);
    p3dp_flows_stats stats;
    p3dp_flows_stats_get(flows, &stats);
    CHECK_EQ(stats.ignored, 4);
    CHECK_EQ(stats.entries, 0);
    p3dp_flows_free(flows);
}

static void test_tcp_with_bad_data_offset_is_ignored(void)
{
    p3dp_flows *flows = p3dp_flows_new(1024, HOUR_MS, MINUTE_MS);
    struct endpoint local = ep("10.1.0.5", 40000), remote = ep("10.2.0.7", 80);
    uint8_t pkt[100];
    size_t len = tcp_packet(pkt, &local, &remote, 1, 0, F_SYN, 0);
    pkt[20 + 12] = 4 << 4;                                   /* 16 octets: too short */
    CHECK_EQ(observe(flows, 1, pkt, len, P3DP_FLOW_FROM_LAN, 10), P3DP_FLOW_IGNORED);
    pkt[20 + 12] = 6 << 4;                                   /* 24 octets: past the end */
    CHECK_EQ(observe(flows, 1, pkt, len, P3DP_FLOW_FROM_LAN, 10), P3DP_FLOW_IGNORED);
    pkt[20 + 12] = 5 << 4;
    CHECK_EQ(observe(flows, 1, pkt, len, P3DP_FLOW_FROM_LAN, 10), P3DP_FLOW_TRACKED);
    p3dp_flows_free(flows);
}

static void test_ipv6_extension_headers_and_fragments(void)
{
    p3dp_flows *flows = p3dp_flows_new(1024, HOUR_MS, MINUTE_MS);
    struct endpoint local = ep("fd00:1::5", 7000), remote = ep("fd00:2::9", 7001);
    /* IPv6 | hop-by-hop (8) | fragment, first (8) | UDP */
    uint8_t pkt[200];
    uint8_t udp[100];
    size_t ulen = udp_packet(udp, &local, &remote, 30) - 40;
    ip_packet(pkt, &local, &remote, 0, 16 + ulen);
    uint8_t *hbh = pkt + 40, *frag = pkt + 48;
    memset(hbh, 0, 16);
    hbh[0] = 44;                          /* next: fragment */
    hbh[2] = 1;                           /* PadN filling the header */
    hbh[3] = 4;
    frag[0] = 17;
    wr16(frag + 2, 0x0001);               /* offset 0, more fragments */
    wr32(frag + 4, 0x11223344);
    memcpy(pkt + 56, udp + 40, ulen);
    size_t len = 56 + ulen;
    CHECK_EQ(observe(flows, 6, pkt, len, P3DP_FLOW_FROM_LAN, 10), P3DP_FLOW_TRACKED);
    /* A later fragment carries no ports. */
    wr16(frag + 2, (64 << 3) | 1);
    CHECK_EQ(observe(flows, 6, pkt, len, P3DP_FLOW_FROM_LAN, 10), P3DP_FLOW_IGNORED);
    struct out_buf o;
    terminate(flows, 6, 40, &o);
    CHECK_EQ(o.n, 1);
    /* The quote carries the extension headers and the UDP ports. */
    const uint8_t *quoted = o.bytes + 48;
    CHECK_EQ(quoted[6], 0);
    CHECK_EQ(rd16(quoted + 56), 7000);
    CHECK_EQ(rd16(quoted + 58), 7001);
    CHECK_EQ(l4_sum(o.bytes, o.bytes + 40, o.lens[0] - 40, 58), 0xffff);
    p3dp_flows_free(flows);
}

static void test_burst_hook_sees_only_data_that_crossed_the_tunnel(void)
{
    p3dp_flows *flows = p3dp_flows_new(1024, HOUR_MS, MINUTE_MS);
    struct endpoint local = ep("10.1.0.5", 40000), remote = ep("10.2.0.7", 80);
    struct endpoint other = ep("10.1.0.5", 40001);
    uint8_t syn[100], synack[100], ack[100], dropped[100], cover[100];
    p3dp_pkt out[4], in[1];
    memset(out, 0, sizeof(out));
    memset(in, 0, sizeof(in));
    /* Sealed burst: the SYN went out; a SYN of another flow was dropped
     * (no SA); a cover packet and a bare ACK, both sealed. */
    out[0].in_buf = syn;
    out[0].in_len = (uint32_t)tcp_packet(syn, &local, &remote, 1000, 0, F_SYN, 0);
    out[0].peer = 7;
    out[1].in_buf = dropped;
    out[1].in_len = (uint32_t)tcp_packet(dropped, &other, &remote, 1, 0, F_SYN, 0);
    out[1].peer = 7;
    out[1].status = -P3R_DP_SA_NOT_FOUND;
    out[2].in_buf = cover;
    out[2].in_len = (uint32_t)udp_packet(cover, &other, &remote, 10);
    out[2].peer = 7;
    out[2].kind = P3DP_KIND_DUMMY;
    /* Opened burst: the SYN-ACK, delivered to the LAN. */
    in[0].out_buf = synack;
    in[0].out_len = (uint32_t)tcp_packet(synack, &remote, &local, 5000, 1001, F_SYN | F_ACK, 0);
    in[0].peer = 7;
    CHECK_EQ(p3dp_flows_observe_burst(flows, out, 3, P3DP_FLOW_FROM_LAN, 1000), 1);
    CHECK_EQ(p3dp_flows_observe_burst(flows, in, 1, P3DP_FLOW_TO_LAN, 1000), 1);
    out[3].in_buf = ack;
    out[3].in_len = (uint32_t)tcp_packet(ack, &local, &remote, 1001, 5001, F_ACK, 0);
    out[3].peer = 7;
    CHECK_EQ(p3dp_flows_observe_burst(flows, out + 3, 1, P3DP_FLOW_FROM_LAN, 1000), 1);
    CHECK_EQ(p3dp_flows_observe_burst(flows, out, 1, 9, 1000), 0);
    CHECK_EQ(p3dp_flows_count(flows, 7, 1000), 1);
    struct out_buf o;
    terminate(flows, 7, 1000, &o);
    CHECK_EQ(o.n, 1);
    check_rst(o.bytes, o.lens[0], &local, &remote, 5001, 1001);
    p3dp_flows_free(flows);
}

/* ---- peers, idleness, capacity ------------------------------------------- */

static void test_terminate_touches_only_that_peers_flows(void)
{
    p3dp_flows *flows = p3dp_flows_new(1024, HOUR_MS, MINUTE_MS);
    struct endpoint local = ep("10.1.0.5", 40000), remote = ep("10.2.0.7", 80);
    struct endpoint remote_b = ep("10.3.0.7", 80);
    established_flow(flows, 1, &local, &remote);
    established_flow(flows, 2, &local, &remote_b);
    struct out_buf o;
    terminate(flows, 1, 2000, &o);
    CHECK_EQ(o.n, 1);
    check_rst(o.bytes, o.lens[0], &local, &remote, 5201, 1101);
    CHECK_EQ(p3dp_flows_count(flows, 2, 2000), 1);
    CHECK_EQ(p3dp_flows_forget(flows, 2), 1);
    CHECK_EQ(p3dp_flows_count(flows, 2, 2000), 0);
    terminate(flows, 2, 2000, &o);
    CHECK_EQ(o.n, 0);
    p3dp_flows_free(flows);
}

static void test_idle_flows_are_not_terminated(void)
{
    p3dp_flows *flows = p3dp_flows_new(1024, 10 * MINUTE_MS, MINUTE_MS);
    struct endpoint local = ep("10.1.0.5", 40000), remote = ep("10.2.0.7", 80);
    established_flow(flows, 1, &local, &remote);             /* at t = 1 s */
    uint8_t pkt[200];
    struct endpoint ul = ep("10.1.0.5", 999), ur = ep("10.2.0.7", 999);
    size_t len = udp_packet(pkt, &ul, &ur, 10);
    observe(flows, 1, pkt, len, P3DP_FLOW_FROM_LAN, 1000);
    /* Two minutes later the UDP flow is idle, the TCP one is not. */
    CHECK_EQ(p3dp_flows_count(flows, 1, 1000 + 2 * MINUTE_MS), 1);
    struct out_buf o;
    terminate(flows, 1, 1000 + 2 * MINUTE_MS, &o);
    CHECK_EQ(o.n, 1);
    CHECK_EQ(o.done.tcp_resets, 1);
    CHECK_EQ(o.done.flows_silent, 1);
    /* Eleven minutes of silence: the TCP flow is gone too. */
    established_flow(flows, 1, &local, &remote);
    terminate(flows, 1, 1000 + 11 * MINUTE_MS, &o);
    CHECK_EQ(o.n, 0);
    CHECK_EQ(o.done.flows_silent, 1);
    p3dp_flows_free(flows);
}

static void test_full_table_evicts_oldest_and_keeps_busy_flow(void)
{
    const uint32_t capacity = 64;
    p3dp_flows *flows = p3dp_flows_new(capacity, HOUR_MS, MINUTE_MS);
    struct endpoint local = ep("10.1.0.5", 40000), remote = ep("10.2.0.7", 80);
    established_flow(flows, 9, &local, &remote);
    uint8_t pkt[200];
    for (int i = 0; i < 2000; i++) {
        struct endpoint a = ep("10.1.0.6", (uint16_t)(1000 + i)), b = ep("10.2.0.8", 53);
        size_t len = udp_packet(pkt, &a, &b, 10);
        CHECK_EQ(observe(flows, 1, pkt, len, P3DP_FLOW_FROM_LAN, 1000), P3DP_FLOW_TRACKED);
        /* The busy flow keeps sending. */
        seg(flows, 9, &local, &remote, P3DP_FLOW_FROM_LAN, 1101, 5201, F_ACK, 0);
    }
    p3dp_flows_stats stats;
    p3dp_flows_stats_get(flows, &stats);
    CHECK_EQ(stats.capacity, capacity);
    CHECK(stats.entries <= capacity);
    CHECK(stats.entries >= capacity - FLOWS_SHARDS);
    CHECK_EQ(stats.created, 2001);
    CHECK_EQ(stats.evicted, stats.created - stats.entries);
    CHECK_EQ(p3dp_flows_count(flows, 9, 1000), 1);
    struct out_buf o;
    terminate(flows, 9, 1000, &o);
    CHECK_EQ(o.n, 1);
    check_rst(o.bytes, o.lens[0], &local, &remote, 5201, 1101);
    p3dp_flows_free(flows);
}

static void test_udp_burst_does_not_push_out_tcp_connections(void)
{
    /* 16 long TCP connections, then 5000 one-shot DNS queries through a
     * table of 256: every TCP connection is still there to be reset. */
    p3dp_flows *flows = p3dp_flows_new(256, HOUR_MS, MINUTE_MS);
    struct endpoint remote = ep("10.2.0.7", 443), dns = ep("10.2.0.53", 53);
    for (int i = 0; i < 16; i++) {
        struct endpoint local = ep("10.1.0.5", (uint16_t)(20000 + i));
        established_flow(flows, 2, &local, &remote);
    }
    uint8_t pkt[200];
    for (int i = 0; i < 5000; i++) {
        struct endpoint local = ep("10.1.0.6", (uint16_t)(1024 + i));
        size_t len = udp_packet(pkt, &local, &dns, 30);
        observe(flows, 2, pkt, len, P3DP_FLOW_FROM_LAN, 2000);
    }
    p3dp_flows_stats stats;
    p3dp_flows_stats_get(flows, &stats);
    CHECK(stats.evicted > 4000);
    struct out_buf o;
    memset(&o, 0, sizeof(o));
    int resets = 0;
    for (;;) {
        int n = p3dp_flows_terminate(flows, 2, 2000, o.bytes, sizeof(o.bytes), o.lens, 64, &o.done);
        CHECK(n >= 0);
        resets += (int)o.done.tcp_flows_reset;
        if (n <= 0 || o.done.flows_remaining == 0)
            break;
    }
    CHECK_EQ(resets, 16);
    p3dp_flows_free(flows);
}

static void test_small_output_buffer_is_filled_then_resumed(void)
{
    p3dp_flows *flows = p3dp_flows_new(1024, HOUR_MS, MINUTE_MS);
    struct endpoint remote = ep("10.2.0.7", 80);
    for (int i = 0; i < 10; i++) {
        struct endpoint local = ep("10.1.0.5", (uint16_t)(30000 + i));
        established_flow(flows, 1, &local, &remote);
    }
    uint8_t out[3 * 40 + 10];
    size_t lens[8];
    p3dp_flows_terminated done;
    /* Room for no packet at all: an error, and nothing is lost. */
    CHECK_EQ(p3dp_flows_terminate(flows, 1, 2000, out, 30, lens, 8, &done), -P3R_DP_TOO_BIG);
    CHECK_EQ(done.flows_remaining, 10);
    int total = 0, calls = 0;
    for (;;) {
        int n = p3dp_flows_terminate(flows, 1, 2000, out, sizeof(out), lens, 8, &done);
        CHECK(n >= 0 && n <= 3);
        if (n <= 0)
            break;
        calls++;
        total += n;
        for (int i = 0; i < n; i++)
            CHECK_EQ(lens[i], 40);
        if (done.flows_remaining == 0)
            break;
    }
    CHECK_EQ(total, 10);
    CHECK_EQ(calls, 4);
    CHECK_EQ(p3dp_flows_count(flows, 1, 2000), 0);
    p3dp_flows_free(flows);
}

/* ---- hostile input --------------------------------------------------------- */

static uint64_t rng_state = 0x243f6a8885a308d3ull;
static uint64_t rng(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

static void test_random_and_truncated_packets_never_crash(void)
{
    p3dp_flows *flows = p3dp_flows_new(256, HOUR_MS, MINUTE_MS);
    uint8_t pkt[1600], heap_copy_src[1600];
    struct endpoint l4 = ep("10.1.0.5", 1234), r4 = ep("10.2.0.7", 80);
    struct endpoint l6 = ep("fd00:1::5", 1234), r6 = ep("fd00:2::7", 80);
    long results[3] = {0, 0, 0};
    for (int iter = 0; iter < 200000; iter++) {
        size_t len;
        int kind = (int)(rng() % 4);
        if (kind == 0) {                           /* pure noise */
            len = rng() % 200;
            for (size_t i = 0; i < len; i++)
                heap_copy_src[i] = (uint8_t)rng();
            if (len)
                heap_copy_src[0] = (uint8_t)((rng() & 1 ? 0x40 : 0x60) | (heap_copy_src[0] & 15));
            /* Mostly with a consistent length field and a common next
             * header, so the noise reaches the extension-header walk and
             * the upper-layer parsers. */
            static const uint8_t next_headers[] = {0, 6, 17, 1, 58, 43, 44, 51, 60, 132};
            if (len >= 40 && (rng() % 4) != 0) {
                uint8_t nh = next_headers[rng() % sizeof(next_headers)];
                if ((heap_copy_src[0] >> 4) == 4) {
                    wr16(heap_copy_src + 2, (uint32_t)len);
                    wr16(heap_copy_src + 6, 0);
                    heap_copy_src[9] = nh;
                } else {
                    wr16(heap_copy_src + 4, (uint32_t)(len - 40));
                    heap_copy_src[6] = nh;
                }
            }
        } else {                                   /* a valid packet, then damaged */
            bool v6 = rng() & 1;
            if (kind == 1)
                len = tcp_packet(heap_copy_src, v6 ? &l6 : &l4, v6 ? &r6 : &r4, (uint32_t)rng(),
                                 (uint32_t)rng(), (uint8_t)rng(), rng() % 64);
            else
                len = udp_packet(heap_copy_src, v6 ? &l6 : &l4, v6 ? &r6 : &r4, rng() % 64);
            int flips = (int)(rng() % 4);
            for (int i = 0; i < flips; i++)
                heap_copy_src[rng() % len] ^= (uint8_t)(1u << (rng() % 8));
            if (rng() & 1)
                len = rng() % (len + 1);           /* truncated */
        }
        /* Exactly len bytes on the heap, so ASan sees any overread. */
        uint8_t *exact = malloc(len ? len : 1);
        memcpy(exact, heap_copy_src, len);
        int r = observe(flows, (uint32_t)(rng() % 3), exact, len,
                        rng() & 1 ? P3DP_FLOW_FROM_LAN : P3DP_FLOW_TO_LAN, 1000);
        free(exact);
        CHECK(r >= P3DP_FLOW_TRACKED && r <= P3DP_FLOW_IGNORED);
        if (r >= 0 && r <= 2)
            results[r]++;
        if (iter % 50000 == 49999) {
            /* Whatever got tracked, terminate writes well-formed packets. */
            for (uint32_t peer = 0; peer < 3; peer++) {
                struct out_buf o;
                terminate(flows, peer, 1000, &o);
                CHECK(o.n >= 0);
                for (int i = 0; i < o.n; i++) {
                    const uint8_t *q = o.bytes + o.offs[i];
                    CHECK(o.lens[i] <= P3DP_FLOWS_MAX_PACKET);
                    size_t ip = (q[0] >> 4) == 4 ? 20 : 40;
                    if (ip == 20)
                        CHECK_EQ(ones_sum(0, q, 20), 0xffff);
                    uint8_t proto = ip == 20 ? q[9] : q[6];
                    if (proto == 1)
                        CHECK_EQ(ones_sum(0, q + ip, o.lens[i] - ip), 0xffff);
                    else
                        CHECK_EQ(l4_sum(q, q + ip, o.lens[i] - ip, proto), 0xffff);
                }
            }
        }
    }
    (void)pkt;
    p3dp_flows_stats stats;
    p3dp_flows_stats_get(flows, &stats);
    CHECK_EQ(stats.observed, 200000);
    CHECK_EQ(stats.ignored, results[P3DP_FLOW_IGNORED]);
    CHECK(results[P3DP_FLOW_IGNORED] > 0);
    CHECK(results[P3DP_FLOW_TRACKED] > 0);
    printf("     fuzz: %ld tracked, %ld closed, %ld ignored\n", results[0], results[1], results[2]);
    p3dp_flows_free(flows);
}

static void test_bad_arguments_are_refused(void)
{
    CHECK(p3dp_flows_new(0, HOUR_MS, MINUTE_MS) == NULL);
    CHECK(p3dp_flows_new(FLOWS_SHARDS - 1, HOUR_MS, MINUTE_MS) == NULL);
    CHECK(p3dp_flows_new(1024, 0, MINUTE_MS) == NULL);
    p3dp_flows *flows = p3dp_flows_new(1024, HOUR_MS, MINUTE_MS);
    uint8_t pkt[100] = {0x45};
    CHECK_EQ(p3dp_flows_observe(NULL, 1, pkt, 20, P3DP_FLOW_FROM_LAN, 0), -P3R_DP_BAD_ARGUMENT);
    CHECK_EQ(p3dp_flows_observe(flows, 1, NULL, 20, P3DP_FLOW_FROM_LAN, 0), -P3R_DP_BAD_ARGUMENT);
    CHECK_EQ(p3dp_flows_observe(flows, 1, pkt, 20, 7, 0), -P3R_DP_BAD_ARGUMENT);
    p3dp_flows_terminated done;
    size_t lens[1];
    CHECK_EQ(p3dp_flows_terminate(NULL, 1, 0, pkt, 100, lens, 1, &done), -P3R_DP_BAD_ARGUMENT);
    CHECK_EQ(p3dp_flows_terminate(flows, 1, 0, NULL, 100, lens, 1, &done), -P3R_DP_BAD_ARGUMENT);
    CHECK_EQ(p3dp_flows_terminate(flows, 1, 0, pkt, 100, lens, 1, NULL), -P3R_DP_BAD_ARGUMENT);
    CHECK_EQ(p3dp_flows_terminate(flows, 1, 0, pkt, 100, lens, 1, &done), 0);
    p3dp_flows_free(flows);
    p3dp_flows_free(NULL);
}

/* ---- concurrency and cost --------------------------------------------------- */

struct worker_arg {
    p3dp_flows *flows;
    int id;
};

static void *observer_thread(void *p)
{
    struct worker_arg *w = p;
    uint8_t pkt[200];
    for (int i = 0; i < 20000; i++) {
        struct endpoint a = ep("10.1.0.5", (uint16_t)(10000 + i % 500)), b = ep("10.2.0.7", 80);
        size_t len = tcp_packet(pkt, &a, &b, (uint32_t)i, 1, F_ACK, 0);
        p3dp_flows_observe(w->flows, (uint32_t)w->id, pkt, len, P3DP_FLOW_FROM_LAN, 1000);
    }
    return NULL;
}

static void test_two_workers_observe_concurrently(void)
{
    p3dp_flows *flows = p3dp_flows_new(4096, HOUR_MS, MINUTE_MS);
    pthread_t t[2];
    struct worker_arg args[2] = {{flows, 1}, {flows, 2}};
    for (int i = 0; i < 2; i++)
        pthread_create(&t[i], NULL, observer_thread, &args[i]);
    for (int i = 0; i < 2; i++)
        pthread_join(t[i], NULL);
    CHECK_EQ(p3dp_flows_count(flows, 1, 1000), 500);
    CHECK_EQ(p3dp_flows_count(flows, 2, 1000), 500);
    p3dp_flows_stats stats;
    p3dp_flows_stats_get(flows, &stats);
    CHECK_EQ(stats.tracked, 40000);
    p3dp_flows_free(flows);
}

static double now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static void test_observe_cost_per_packet_is_reported(void)
{
    /* Measured, not asserted: machines are noisy (and this build has ASan). */
    enum { FLOWS = 4096, PACKETS = 1000000 };
    p3dp_flows *flows = p3dp_flows_new(65536, HOUR_MS, MINUTE_MS);
    static uint8_t pkts[FLOWS][60];
    static size_t lens[FLOWS];
    for (int i = 0; i < FLOWS; i++) {
        struct endpoint a = ep("10.1.0.5", (uint16_t)(1024 + i)), b = ep("10.2.0.7", 443);
        lens[i] = tcp_packet(pkts[i], &a, &b, 1000, 2000, F_ACK, 0);
    }
    double t0 = now_ns();
    for (int i = 0; i < PACKETS; i++) {
        int f = (int)((unsigned)i * 2654435761u % FLOWS);
        p3dp_flows_observe(flows, 1, pkts[f], lens[f], i & 1, 1000);
    }
    double ns = (now_ns() - t0) / PACKETS;
#if defined(__SANITIZE_ADDRESS__)
    const char *build = "ASan+UBSan build";
#else
    const char *build = "plain build";
#endif
    printf("     observe: %.1f ns/packet over %d flows (%s)\n", ns, FLOWS, build);
    CHECK_EQ(p3dp_flows_count(flows, 1, 1000), FLOWS);

    /* Session loss with all of them live, 256 packets per call. */
    static uint8_t out[256 * P3DP_FLOWS_MAX_PACKET];
    static size_t out_lens[256];
    p3dp_flows_terminated done;
    size_t resets = 0;
    t0 = now_ns();
    for (;;) {
        int n = p3dp_flows_terminate(flows, 1, 1000, out, sizeof(out), out_lens, 256, &done);
        CHECK(n >= 0);
        resets += done.tcp_resets;
        if (n <= 0 || done.flows_remaining == 0)
            break;
    }
    double us = (now_ns() - t0) / 1e3;
    CHECK_EQ(resets, FLOWS);
    printf("     terminate: %zu RSTs in %.0f us, 256 per call (%s)\n", resets, us, build);
    p3dp_flows_free(flows);
}


/* ---- across restarts ---------------------------------------------------- */

static void test_flows_exported_and_imported_into_a_new_table_are_reset_as_before(void)
{
    /* A daemon saves its flows; after a kill -9 the new process loads them
     * into a fresh table and resets every peer's connections. */
    p3dp_flows *before = p3dp_flows_new(1024, HOUR_MS, MINUTE_MS);
    struct endpoint local = ep("10.1.0.5", 40000), remote = ep("10.2.0.7", 80);
    struct endpoint local6 = ep("fd00:1::5", 40001), remote6 = ep("fd00:2::7", 443);
    established_flow(before, 3, &local, &remote);
    established_flow(before, 9, &local6, &remote6);
    size_t needed = 0;
    CHECK_EQ(p3dp_flows_export(before, 2000, NULL, 0, &needed), -P3R_DP_TOO_BIG);
    CHECK(needed > 0);
    static uint8_t state[8192];
    CHECK(needed <= sizeof(state));
    CHECK_EQ(p3dp_flows_export(before, 2000, state, sizeof(state), &needed), 2);
    p3dp_flows_free(before);

    p3dp_flows *after = p3dp_flows_new(1024, HOUR_MS, MINUTE_MS);
    /* A new process has a new monotonic clock: 5 s went by between the two. */
    CHECK_EQ(p3dp_flows_import(after, state, needed, 100, 5000), 2);
    struct out_buf o;
    terminate(after, P3DP_NO_PEER, 100, &o);
    CHECK_EQ(o.n, 2);
    CHECK_EQ(o.done.tcp_flows_reset, 2);
    for (int i = 0; i < o.n; i++) {
        const uint8_t *pkt = o.bytes + o.offs[i];
        if ((pkt[0] >> 4) == 4)
            check_rst(pkt, o.lens[i], &local, &remote, 5201, 1101);
        else
            check_rst(pkt, o.lens[i], &local6, &remote6, 5201, 1101);
    }
    p3dp_flows_free(after);
}

static void test_import_skips_flows_idle_past_their_timeout_and_refuses_foreign_bytes(void)
{
    p3dp_flows *before = p3dp_flows_new(1024, HOUR_MS, MINUTE_MS);
    struct endpoint local = ep("10.1.0.5", 40000), remote = ep("10.2.0.7", 80);
    established_flow(before, 3, &local, &remote);
    static uint8_t state[8192];
    size_t needed = 0;
    CHECK_EQ(p3dp_flows_export(before, 2000, state, sizeof(state), &needed), 1);
    p3dp_flows_free(before);

    p3dp_flows *after = p3dp_flows_new(1024, HOUR_MS, MINUTE_MS);
    /* Down for longer than a TCP flow may idle: nothing left to reset. */
    CHECK_EQ(p3dp_flows_import(after, state, needed, 10 * HOUR_MS, 2 * (uint64_t)HOUR_MS), 0);
    CHECK_EQ(p3dp_flows_count(after, 3, 10 * HOUR_MS), 0);
    /* Truncated, another format, garbage: refused, nothing loaded. */
    CHECK_EQ(p3dp_flows_import(after, state, needed - 1, 10 * HOUR_MS, 0), -P3R_DP_BAD_ARGUMENT);
    CHECK_EQ(p3dp_flows_import(after, state, 8, 10 * HOUR_MS, 0), -P3R_DP_BAD_ARGUMENT);
    uint8_t other[sizeof(state)];
    memcpy(other, state, needed);
    other[4] ^= 0x7f;                                       /* version */
    CHECK_EQ(p3dp_flows_import(after, other, needed, 10 * HOUR_MS, 0), -P3R_DP_BAD_ARGUMENT);
    CHECK_EQ(p3dp_flows_count(after, 3, 10 * HOUR_MS), 0);
    p3dp_flows_free(after);
}

static void test_segment_of_an_unknown_connection_gets_a_rst_at_its_ack(void)
{
    /* The sender's RCV.NXT is the ACK it sends: a RST with that SEQ and no
     * ACK is what RFC 793 §3.4 answers, and Linux accepts it exactly. */
    p3dp_flows *flows = p3dp_flows_new(1024, HOUR_MS, MINUTE_MS);
    struct endpoint local = ep("10.1.0.5", 40000), remote = ep("10.2.0.7", 80);
    uint8_t pkt[1600], rst[64];
    size_t len = tcp_packet(pkt, &local, &remote, 7000, 9000, F_ACK | F_PSH, 10);
    int n = p3dp_flows_reset_stale(flows, 3, pkt, len, 1000, rst, sizeof(rst));
    CHECK(n > 0);
    check_rst(rst, (size_t)n, &local, &remote, 9000, 0);
    CHECK(!(rst[20 + 13] & F_ACK));
    p3dp_flows_stats st;
    p3dp_flows_stats_get(flows, &st);
    CHECK_EQ(st.stale_resets, 1);

    struct endpoint local6 = ep("fd00:1::5", 40001), remote6 = ep("fd00:2::7", 443);
    len = tcp_packet(pkt, &local6, &remote6, 1, 0x80000000u, F_ACK, 0);
    n = p3dp_flows_reset_stale(flows, 3, pkt, len, 1000, rst, sizeof(rst));
    CHECK_EQ(n, 60);
    check_rst(rst, (size_t)n, &local6, &remote6, 0x80000000u, 0);
    p3dp_flows_free(flows);
}

static void test_known_flows_syns_rsts_and_other_protocols_get_no_stale_rst(void)
{
    p3dp_flows *flows = p3dp_flows_new(1024, HOUR_MS, MINUTE_MS);
    struct endpoint local = ep("10.1.0.5", 40000), remote = ep("10.2.0.7", 80);
    established_flow(flows, 3, &local, &remote);
    uint8_t pkt[1600], rst[64];
    /* A flow this session knows: its packets were only dropped for now. */
    size_t len = tcp_packet(pkt, &local, &remote, 1101, 5201, F_ACK, 0);
    CHECK_EQ(p3dp_flows_reset_stale(flows, 3, pkt, len, 2000, rst, sizeof(rst)), 0);
    /* ... but once it idled out, it is stale. */
    CHECK(p3dp_flows_reset_stale(flows, 3, pkt, len, 2000 + 2 * (uint64_t)HOUR_MS, rst, sizeof(rst)) > 0);
    struct endpoint other = ep("10.1.0.6", 40002);
    len = tcp_packet(pkt, &other, &remote, 1, 0, F_SYN, 0);
    CHECK_EQ(p3dp_flows_reset_stale(flows, 3, pkt, len, 2000, rst, sizeof(rst)), 0);
    len = tcp_packet(pkt, &other, &remote, 1, 5, F_RST | F_ACK, 0);
    CHECK_EQ(p3dp_flows_reset_stale(flows, 3, pkt, len, 2000, rst, sizeof(rst)), 0);
    len = tcp_packet(pkt, &other, &remote, 1, 0, 0, 0);          /* no ACK: no RCV.NXT to name */
    CHECK_EQ(p3dp_flows_reset_stale(flows, 3, pkt, len, 2000, rst, sizeof(rst)), 0);
    len = udp_packet(pkt, &other, &remote, 20);
    CHECK_EQ(p3dp_flows_reset_stale(flows, 3, pkt, len, 2000, rst, sizeof(rst)), 0);
    struct endpoint bcast = ep("255.255.255.255", 80);
    len = tcp_packet(pkt, &other, &bcast, 1, 5, F_ACK, 0);
    CHECK_EQ(p3dp_flows_reset_stale(flows, 3, pkt, len, 2000, rst, sizeof(rst)), 0);
    for (size_t cut = 0; cut < 40; cut++)                          /* truncated: nothing */
        CHECK_EQ(p3dp_flows_reset_stale(flows, 3, pkt, cut, 2000, rst, sizeof(rst)), 0);
    len = tcp_packet(pkt, &other, &remote, 1, 5, F_ACK, 0);
    CHECK_EQ(p3dp_flows_reset_stale(flows, 3, pkt, len, 2000, rst, 10), -P3R_DP_TOO_BIG);
    CHECK_EQ(p3dp_flows_reset_stale(NULL, 3, pkt, len, 2000, rst, sizeof(rst)), -P3R_DP_BAD_ARGUMENT);
    p3dp_flows_free(flows);
}

NTEST_MAIN(NTEST(test_v4_established_flow_gets_rst_at_last_ack_sent_by_local_end),
           NTEST(test_v6_established_flow_gets_rst_with_v6_pseudo_header_checksum),
           NTEST(test_remote_opened_flow_is_reset_towards_local_server),
           NTEST(test_unacknowledged_remote_data_adds_a_second_rst_at_its_end),
           NTEST(test_retransmission_does_not_move_sequence_back),
           NTEST(test_sequence_numbers_wrap_around),
           NTEST(test_connecting_flow_gets_rst_acking_its_syn),
           NTEST(test_flows_closed_by_fin_both_ways_or_rst_get_nothing),
           NTEST(test_half_closed_flow_is_still_reset),
           NTEST(test_new_syn_on_same_ports_starts_a_new_connection),
           NTEST(test_udp_flow_gets_icmp_host_unreachable_quoting_first_packet),
           NTEST(test_udp6_flow_gets_icmpv6_address_unreachable),
           NTEST(test_ping_flow_gets_unreachable_quoting_echo_request),
           NTEST(test_unreachable_codes_can_be_chosen),
           NTEST(test_flow_only_received_by_local_end_gets_no_icmp),
           NTEST(test_icmp_errors_multicast_and_broadcast_are_not_tracked),
           NTEST(test_tcp_with_bad_data_offset_is_ignored),
           NTEST(test_ipv6_extension_headers_and_fragments),
           NTEST(test_burst_hook_sees_only_data_that_crossed_the_tunnel),
           NTEST(test_terminate_touches_only_that_peers_flows),
           NTEST(test_idle_flows_are_not_terminated),
           NTEST(test_full_table_evicts_oldest_and_keeps_busy_flow),
           NTEST(test_udp_burst_does_not_push_out_tcp_connections),
           NTEST(test_small_output_buffer_is_filled_then_resumed),
           NTEST(test_random_and_truncated_packets_never_crash),
           NTEST(test_bad_arguments_are_refused),
           NTEST(test_two_workers_observe_concurrently),
           NTEST(test_flows_exported_and_imported_into_a_new_table_are_reset_as_before),
           NTEST(test_import_skips_flows_idle_past_their_timeout_and_refuses_foreign_bytes),
           NTEST(test_segment_of_an_unknown_connection_gets_a_rst_at_its_ack),
           NTEST(test_known_flows_syns_rsts_and_other_protocols_get_no_stale_rst),
           NTEST(test_observe_cost_per_packet_is_reported))
