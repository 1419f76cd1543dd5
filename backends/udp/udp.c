/* backends/udp — the default transport: P3 over UDP port 5653 (DESIGN.md §3),
 * bursts with recvmmsg/sendmmsg. IKE shares the socket behind the non-ESP
 * marker; the dataplane tells the two apart on open. */
#define _GNU_SOURCE /* recvmmsg, sendmmsg */
#include "p3dp.h"
#include "p3_backend.h"
#include "io_internal.h"

#include <errno.h>
#include <string.h>

int p3_io_mmsg_rx(struct p3_io *io, struct p3_iobuf *bufs, unsigned n)
{
    struct p3_io_msgs *m = io->state;
    if (n > P3_IO_MAX_BURST)
        n = P3_IO_MAX_BURST;
    for (unsigned i = 0; i < n; i++) {
        m->iov[i].iov_base = bufs[i].data;
        m->iov[i].iov_len = bufs[i].cap;
        memset(&m->msgs[i].msg_hdr, 0, sizeof(m->msgs[i].msg_hdr));
        m->msgs[i].msg_hdr.msg_iov = &m->iov[i];
        m->msgs[i].msg_hdr.msg_iovlen = 1;
        m->msgs[i].msg_hdr.msg_name = &m->names[i];
        m->msgs[i].msg_hdr.msg_namelen = sizeof(m->names[i]);
    }
    int got = recvmmsg(io->fd, m->msgs, n, MSG_DONTWAIT, NULL);
    if (got < 0)
        return (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) ? 0 : -901;
    for (int i = 0; i < got; i++) {
        bufs[i].len = m->msgs[i].msg_len;
        p3_io_peer_from_sockaddr(&m->names[i], &bufs[i]);
    }
    return got;
}

int p3_io_mmsg_tx(struct p3_io *io, struct p3_iobuf *bufs, unsigned n, int with_port)
{
    struct p3_io_msgs *m = io->state;
    if (n > P3_IO_MAX_BURST)
        n = P3_IO_MAX_BURST;
    for (unsigned i = 0; i < n; i++) {
        m->iov[i].iov_base = bufs[i].data;
        m->iov[i].iov_len = bufs[i].len;
        memset(&m->msgs[i].msg_hdr, 0, sizeof(m->msgs[i].msg_hdr));
        m->msgs[i].msg_hdr.msg_iov = &m->iov[i];
        m->msgs[i].msg_hdr.msg_iovlen = 1;
        m->msgs[i].msg_hdr.msg_name = &m->names[i];
        m->msgs[i].msg_hdr.msg_namelen =
            p3_io_sockaddr(&m->names[i], io->family, bufs[i].family, bufs[i].addr,
                           with_port ? bufs[i].port : 0);
    }
    unsigned done = 0;
    while (done < n) {
        int sent = sendmmsg(io->fd, m->msgs + done, n - done, 0);
        if (sent < 0) {
            if (errno == EINTR)
                continue;
            /* A full socket buffer or an unreachable peer drops the rest of
             * the burst, as a NIC queue would; the caller counts it. */
            break;
        }
        done += (unsigned)sent;
    }
    return (int)done;
}

static int udp_rx(struct p3_io *io, struct p3_iobuf *bufs, unsigned n)
{
    return p3_io_mmsg_rx(io, bufs, n);
}

static int udp_tx(struct p3_io *io, struct p3_iobuf *bufs, unsigned n)
{
    return p3_io_mmsg_tx(io, bufs, n, 1);
}

const struct p3_io_ops p3_io_udp_ops = { "udp", udp_rx, udp_tx };
