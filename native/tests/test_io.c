/* The I/O backends' offloads: TSO super-segments from the TUN are cut into
 * valid packets, consecutive segments are coalesced back on the way into the
 * TUN, and UDP GSO trains sent on loopback come back out of GRO as the same
 * datagrams, in order, whatever the burst size. */
#define _GNU_SOURCE
#include "ntest.h"
#include "p3dp.h"
#include "p3_backend.h"

#include <arpa/inet.h>
#include <linux/virtio_net.h>
#include <netinet/in.h>
#include <netinet/udp.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

enum { HDR = sizeof(struct virtio_net_hdr), BUF = 65536 };

static uint8_t bufmem[64][BUF];

static void bind_bufs(struct p3_iobuf *b, unsigned n)
{
    for (unsigned i = 0; i < n; i++) {
        memset(&b[i], 0, sizeof(b[i]));
        b[i].data = bufmem[i];
        b[i].cap = BUF;
    }
}

/* An independent RFC 1071 checksum, big-endian words. */
static uint16_t csum(const uint8_t *p, size_t len, uint32_t sum)
{
    for (size_t i = 0; i + 1 < len; i += 2)
        sum += (uint32_t)(p[i] << 8 | p[i + 1]);
    if (len & 1)
        sum += (uint32_t)p[len - 1] << 8;
    while (sum >> 16)
        sum = (sum & 0xffff) + (sum >> 16);
    return (uint16_t)sum;
}

static int tcp_checksum_ok(const uint8_t *pkt, size_t len)
{
    int v4 = (pkt[0] >> 4) == 4;
    size_t l4 = v4 ? 20 : 40;
    uint32_t sum = v4 ? csum(pkt + 12, 8, 0) : csum(pkt + 8, 32, 0);
    sum += 6 + (uint32_t)(len - l4);
    return csum(pkt + l4, len - l4, sum) == 0xffff;
}

/* IPv4 (or IPv6) + TCP header, ACK|PSH|FIN, then payload bytes i % 251. */
static size_t make_super(uint8_t *p, int v4, size_t payload, uint32_t seq)
{
    size_t l4 = v4 ? 20 : 40, len = l4 + 20 + payload;
    memset(p, 0, l4 + 20);
    if (v4) {
        p[0] = 0x45;
        p[2] = (uint8_t)(len >> 8);
        p[3] = (uint8_t)len;
        p[4] = 0x12;
        p[5] = 0x34;
        p[6] = 0x40; /* DF */
        p[8] = 64;
        p[9] = 6;
        uint8_t src[4] = { 10, 2, 0, 2 }, dst[4] = { 10, 1, 0, 2 };
        memcpy(p + 12, src, 4);
        memcpy(p + 16, dst, 4);
    } else {
        p[0] = 0x60;
        p[4] = (uint8_t)((len - 40) >> 8);
        p[5] = (uint8_t)(len - 40);
        p[6] = 6;
        p[7] = 64;
        p[8] = 0xfd;
        p[23] = 2;
        p[24] = 0xfd;
        p[39] = 1;
    }
    uint8_t *t = p + l4;
    t[0] = 0x9c; t[1] = 0x40; t[2] = 0x14; t[3] = 0x51; /* ports 40000 -> 5201 */
    t[4] = (uint8_t)(seq >> 24); t[5] = (uint8_t)(seq >> 16); t[6] = (uint8_t)(seq >> 8); t[7] = (uint8_t)seq;
    t[11] = 7;
    t[12] = 0x50;
    t[13] = 0x19; /* ACK PSH FIN */
    t[14] = 0xff;
    for (size_t i = 0; i < payload; i++)
        p[l4 + 20 + i] = (uint8_t)(i % 251);
    return len;
}

static void cut_and_merge(int v4)
{
    int sv[2];
    CHECK(socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sv) == 0);
    struct p3_io io;
    memset(&io, 0, sizeof(io));
    io.ops = &p3_io_tun_ops;
    io.fd = sv[1];
    CHECK(p3_io_tun_setup_vnet(&io, 1) == 0);

    static uint8_t msg[HDR + BUF];
    const size_t payload = 20000, mss = 1360, l4 = v4 ? 20 : 40;
    size_t len = make_super(msg + HDR, v4, payload, 1000);
    struct virtio_net_hdr h;
    memset(&h, 0, sizeof(h));
    h.flags = VIRTIO_NET_HDR_F_NEEDS_CSUM;
    h.gso_type = v4 ? VIRTIO_NET_HDR_GSO_TCPV4 : VIRTIO_NET_HDR_GSO_TCPV6;
    h.hdr_len = (uint16_t)(l4 + 20);
    h.gso_size = (uint16_t)mss;
    h.csum_start = (uint16_t)l4;
    h.csum_offset = 16;
    memcpy(msg, &h, HDR);
    CHECK(write(sv[0], msg, HDR + len) == (ssize_t)(HDR + len));

    /* read in small bursts: a super-segment spans calls */
    struct p3_iobuf bufs[64];
    bind_bufs(bufs, 64);
    unsigned expected = (unsigned)((payload + mss - 1) / mss), got = 0;
    while (got < expected) {
        int r = io.ops->rx_burst(&io, bufs + got, 5);
        if (r <= 0)
            break;
        got += (unsigned)r;
    }
    CHECK_EQ(got, expected);
    size_t seen = 0;
    for (unsigned i = 0; i < got; i++) {
        const uint8_t *p = bufs[i].data;
        size_t chunk = payload - seen < mss ? payload - seen : mss;
        CHECK_EQ(bufs[i].len, l4 + 20 + chunk);
        uint32_t seq = (uint32_t)p[l4 + 4] << 24 | (uint32_t)p[l4 + 5] << 16 | (uint32_t)p[l4 + 6] << 8 | p[l4 + 7];
        CHECK_EQ(seq, 1000 + seen);
        CHECK(tcp_checksum_ok(p, bufs[i].len));
        if (v4) {
            CHECK_EQ(csum(p, 20, 0), 0xffff);
            CHECK_EQ((p[2] << 8 | p[3]), bufs[i].len);
            CHECK_EQ((p[4] << 8 | p[5]), 0x1234 + i);
        }
        int last = i == got - 1;
        CHECK_EQ(!!(p[l4 + 13] & 0x01), last); /* FIN only on the last */
        CHECK_EQ(!!(p[l4 + 13] & 0x08), last); /* PSH only on the last */
        CHECK(memcmp(p + l4 + 20, msg + HDR + l4 + 20 + seen, chunk) == 0);
        seen += chunk;
    }

    /* Write the segments minus the FIN one back: they merge into one super-segment. */
    for (unsigned i = 0; i < got; i++)
        bufs[i].data[l4 + 13] &= (uint8_t)~0x01;
    CHECK_EQ(io.ops->tx_burst(&io, bufs, got), got);
    ssize_t r = read(sv[0], msg, sizeof(msg));
    CHECK_EQ(r, (ssize_t)(HDR + len));
    memcpy(&h, msg, HDR);
    CHECK_EQ(h.gso_type, v4 ? VIRTIO_NET_HDR_GSO_TCPV4 : VIRTIO_NET_HDR_GSO_TCPV6);
    CHECK_EQ(h.gso_size, mss);
    CHECK_EQ(h.flags, VIRTIO_NET_HDR_F_NEEDS_CSUM);
    CHECK_EQ(h.csum_start, l4);
    for (size_t i = 0; i < payload; i++)
        if (msg[HDR + l4 + 20 + i] != (uint8_t)(i % 251)) {
            CHECK(0);
            break;
        }
    /* nothing else was written */
    CHECK(recv(sv[0], msg, sizeof(msg), MSG_DONTWAIT) < 0);

    /* Another flow in the middle breaks the run: three writes. */
    bind_bufs(bufs, 3);
    for (unsigned i = 0; i < 3; i++)
        bufs[i].len = (uint32_t)make_super(bufs[i].data, v4, mss, 5000 + (uint32_t)(i * mss));
    for (unsigned i = 0; i < 3; i++)
        bufs[i].data[l4 + 13] = 0x10;
    bufs[1].data[l4 + 1] ^= 1; /* other source port */
    CHECK_EQ(io.ops->tx_burst(&io, bufs, 3), 3);
    int writes = 0;
    while (recv(sv[0], msg, sizeof(msg), MSG_DONTWAIT) > 0)
        writes++;
    CHECK_EQ(writes, 3);

    p3_io_tun_teardown(&io);
    free(io.state);
    close(sv[0]);
    close(sv[1]);
}

static void test_tso_super_segment_ipv4_is_cut_and_merged_back(void) { cut_and_merge(1); }
static void test_tso_super_segment_ipv6_is_cut_and_merged_back(void) { cut_and_merge(0); }

static int udp_socket(uint16_t *port)
{
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    if (bind(fd, (struct sockaddr *)&a, sizeof(a)) != 0)
        return -1;
    socklen_t len = sizeof(a);
    getsockname(fd, (struct sockaddr *)&a, &len);
    *port = ntohs(a.sin_port);
    int one = 1;
    setsockopt(fd, IPPROTO_UDP, UDP_GRO, &one, sizeof(one));
    return fd;
}

static void test_udp_trains_arrive_as_the_same_datagrams_in_order(void)
{
    uint16_t sport, dport;
    int s = udp_socket(&sport), d = udp_socket(&dport);
    CHECK(s >= 0 && d >= 0);
    struct p3_io tx, rx;
    CHECK(p3_io_open(&tx, P3_IO_UDP, s, 0) == 0);
    CHECK(p3_io_open(&rx, P3_IO_UDP, d, 0) == 0);
    struct p3_iobuf bufs[64];
    bind_bufs(bufs, 64);
    uint8_t lo[4] = { 127, 0, 0, 1 };
    unsigned sent_total = 0;
    for (int round = 0; round < 4; round++) {
        for (unsigned i = 0; i < 41; i++) {
            bufs[i].len = i == 40 ? 300 : 1200; /* a train of 40 and a shorter tail */
            memset(bufs[i].data, 0, bufs[i].len);
            uint32_t tag = (uint32_t)(round * 1000 + i);
            memcpy(bufs[i].data, &tag, 4);
            bufs[i].family = 4;
            bufs[i].port = dport;
            memcpy(bufs[i].addr, lo, 4);
        }
        CHECK_EQ(tx.ops->tx_burst(&tx, bufs, 41), 41);
        sent_total += 41;
    }
    /* read back in bursts of 7: trains are split across calls */
    unsigned got = 0;
    int idle = 0;
    while (got < sent_total && idle < 1000) {
        struct p3_iobuf in[7];
        memset(in, 0, sizeof(in));
        int r = rx.ops->rx_burst(&rx, in, 7);
        if (r <= 0) {
            idle++;
            usleep(1000);
            continue;
        }
        for (int i = 0; i < r; i++) {
            uint32_t tag;
            memcpy(&tag, in[i].data, 4);
            unsigned round = got / 41, idx = got % 41;
            CHECK_EQ(tag, round * 1000 + idx);
            CHECK_EQ(in[i].len, idx == 40 ? 300 : 1200);
            CHECK_EQ(in[i].port, sport);
            got++;
        }
    }
    CHECK_EQ(got, sent_total);
    p3_io_close(&tx);
    p3_io_close(&rx);
    close(s);
    close(d);
}

NTEST_MAIN(NTEST(test_tso_super_segment_ipv4_is_cut_and_merged_back),
           NTEST(test_tso_super_segment_ipv6_is_cut_and_merged_back),
           NTEST(test_udp_trains_arrive_as_the_same_datagrams_in_order))
