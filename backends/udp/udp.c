/* backends/udp — the default transport: P3 over UDP port 5653 (DESIGN.md §3),
 * bursts with recvmmsg/sendmmsg, and segmentation offload both ways: sealed
 * packets of one size to one peer leave as one UDP_SEGMENT train (one skb
 * through the stack instead of up to 64), and with UDP_GRO on the socket
 * trains arrive whole and are split here. IKE shares the socket behind the
 * non-ESP marker; the dataplane tells the two apart on open. */
#define _GNU_SOURCE /* recvmmsg, sendmmsg */
#include "p3dp.h"
#include "p3_backend.h"
#include "io_internal.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/udp.h>
#include <string.h>

#ifndef SOL_UDP
#define SOL_UDP 17
#endif

static unsigned hand_out(struct p3_io_msgs *m, struct p3_iobuf *bufs, unsigned n)
{
    unsigned got = 0;
    while (got < n && m->rx_next < m->rx_count) {
        struct mmsghdr *msg = &m->rx_msgs[m->rx_next];
        uint8_t *train = m->rx_mem + (size_t)m->rx_next * P3_IO_RX_BYTES;
        uint32_t total = msg->msg_len, seg = m->rx_segment[m->rx_next];
        uint32_t left = total - m->rx_offset;
        uint32_t len = seg && seg < left ? seg : left;
        bufs[got].data = train + m->rx_offset;
        bufs[got].len = len;
        bufs[got].cap = len;
        p3_io_peer_from_sockaddr(&m->rx_names[m->rx_next], &bufs[got]);
        got++;
        m->rx_offset += len;
        if (m->rx_offset >= total) {
            m->rx_next++;
            m->rx_offset = 0;
        }
    }
    return got;
}

int p3_io_mmsg_rx(struct p3_io *io, struct p3_iobuf *bufs, unsigned n)
{
    struct p3_io_msgs *m = io->state;
    /* Hand out what the last receive left; the next receive would overwrite
     * the memory those packets point into, so it waits for the next call. */
    unsigned got = hand_out(m, bufs, n);
    if (got)
        return (int)got;
    for (unsigned i = 0; i < P3_IO_RX_MSGS; i++) {
        m->rx_iov[i].iov_base = m->rx_mem + (size_t)i * P3_IO_RX_BYTES;
        m->rx_iov[i].iov_len = P3_IO_RX_BYTES;
        memset(&m->rx_msgs[i].msg_hdr, 0, sizeof(m->rx_msgs[i].msg_hdr));
        m->rx_msgs[i].msg_hdr.msg_iov = &m->rx_iov[i];
        m->rx_msgs[i].msg_hdr.msg_iovlen = 1;
        m->rx_msgs[i].msg_hdr.msg_name = &m->rx_names[i];
        m->rx_msgs[i].msg_hdr.msg_namelen = sizeof(m->rx_names[i]);
        m->rx_msgs[i].msg_hdr.msg_control = m->rx_control[i];
        m->rx_msgs[i].msg_hdr.msg_controllen = sizeof(m->rx_control[i]);
    }
    int r = recvmmsg(io->fd, m->rx_msgs, P3_IO_RX_MSGS, MSG_DONTWAIT, NULL);
    if (r < 0)
        return (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) ? 0 : -P3R_OS_ERROR;
    for (int i = 0; i < r; i++) {
        m->rx_segment[i] = 0;
        struct msghdr *h = &m->rx_msgs[i].msg_hdr;
        for (struct cmsghdr *c = CMSG_FIRSTHDR(h); c; c = CMSG_NXTHDR(h, c)) {
            if (c->cmsg_level == SOL_UDP && c->cmsg_type == UDP_GRO) {
                int seg;
                memcpy(&seg, CMSG_DATA(c), sizeof(seg));
                m->rx_segment[i] = (uint16_t)seg;
            }
        }
    }
    m->rx_count = (unsigned)r;
    m->rx_next = 0;
    m->rx_offset = 0;
    return (int)hand_out(m, bufs, n);
}

static void add_segment_cmsg(struct msghdr *h, uint8_t *control, uint16_t seg)
{
    h->msg_control = control;
    h->msg_controllen = CMSG_SPACE(sizeof(uint16_t));
    struct cmsghdr *c = CMSG_FIRSTHDR(h);
    c->cmsg_level = SOL_UDP;
    c->cmsg_type = UDP_SEGMENT;
    c->cmsg_len = CMSG_LEN(sizeof(uint16_t));
    memcpy(CMSG_DATA(c), &seg, sizeof(seg));
}

static int same_peer(const struct p3_iobuf *a, const struct p3_iobuf *b)
{
    return a->family == b->family && a->port == b->port && memcmp(a->addr, b->addr, 16) == 0;
}

int p3_io_mmsg_tx(struct p3_io *io, struct p3_iobuf *bufs, unsigned n, int with_port)
{
    struct p3_io_msgs *m = io->state;
    if (n > P3_IO_MAX_BURST)
        n = P3_IO_MAX_BURST;
    unsigned nmsg = 0;
    for (unsigned i = 0; i < n;) {
        /* A train: datagrams of the head's size to the same peer (the last
         * may be shorter), while the whole stays under 64 KiB. */
        unsigned count = 1;
        uint32_t total = bufs[i].len;
        if (m->gso && with_port) {
            while (i + count < n && count < P3_IO_GSO_MAX_SEGMENTS && same_peer(&bufs[i], &bufs[i + count]) &&
                   bufs[i + count].len <= bufs[i].len && total + bufs[i + count].len <= 65000 &&
                   bufs[i + count - 1].len == bufs[i].len) {
                total += bufs[i + count].len;
                count++;
            }
        }
        struct msghdr *h = &m->tx_msgs[nmsg].msg_hdr;
        memset(h, 0, sizeof(*h));
        for (unsigned k = 0; k < count; k++) {
            m->tx_iov[i + k].iov_base = bufs[i + k].data;
            m->tx_iov[i + k].iov_len = bufs[i + k].len;
        }
        h->msg_iov = &m->tx_iov[i];
        h->msg_iovlen = count;
        h->msg_name = &m->tx_names[nmsg];
        h->msg_namelen = p3_io_sockaddr(&m->tx_names[nmsg], io->family, bufs[i].family, bufs[i].addr,
                                        with_port ? bufs[i].port : 0);
        if (count > 1)
            add_segment_cmsg(h, m->tx_control[nmsg], (uint16_t)bufs[i].len);
        m->tx_msgs[nmsg].msg_len = count; /* remembered: datagrams in this message */
        nmsg++;
        i += count;
    }
    unsigned sent_msgs = 0, sent = 0;
    unsigned counts[P3_IO_MAX_BURST];
    for (unsigned k = 0; k < nmsg; k++)
        counts[k] = m->tx_msgs[k].msg_len;
    while (sent_msgs < nmsg) {
        int r = sendmmsg(io->fd, m->tx_msgs + sent_msgs, nmsg - sent_msgs, 0);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EIO && m->gso) {
                /* The route's device cannot take UDP GSO: stop using it. */
                m->gso = 0;
            }
            /* A full socket buffer or an unreachable peer drops the rest of
             * the burst, as a NIC queue would; the caller counts it. */
            break;
        }
        for (int k = 0; k < r; k++)
            sent += counts[sent_msgs + (unsigned)k];
        sent_msgs += (unsigned)r;
    }
    return (int)sent;
}

static int udp_rx(struct p3_io *io, struct p3_iobuf *bufs, unsigned n)
{
    return p3_io_mmsg_rx(io, bufs, n);
}

static int udp_tx(struct p3_io *io, struct p3_iobuf *bufs, unsigned n)
{
    return p3_io_mmsg_tx(io, bufs, n, 1);
}

const struct p3_io_ops p3_io_udp_ops = { .name = "udp", .rx_burst = udp_rx, .tx_burst = udp_tx };
