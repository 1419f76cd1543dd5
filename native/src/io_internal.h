/* io_internal.h — what the socket I/O backends share (native/src/io.c). */
#ifndef P3_IO_INTERNAL_H
#define P3_IO_INTERNAL_H

#include "p3_backend.h"

#include <sys/socket.h>

struct p3_io_msgs {
    struct mmsghdr msgs[P3_IO_MAX_BURST];
    struct iovec iov[P3_IO_MAX_BURST];
    struct sockaddr_storage names[P3_IO_MAX_BURST];
};

/* Fill ss for (family, addr, port) as a socket of socket_family wants it
 * (IPv4-mapped on a dual-stack IPv6 socket). */
socklen_t p3_io_sockaddr(struct sockaddr_storage *ss, int socket_family, int family,
                         const uint8_t *addr, uint16_t port);
void p3_io_peer_from_sockaddr(const struct sockaddr_storage *ss, struct p3_iobuf *b);

/* recvmmsg/sendmmsg bursts shared by the UDP and raw ESP backends. */
int p3_io_mmsg_rx(struct p3_io *io, struct p3_iobuf *bufs, unsigned n);
int p3_io_mmsg_tx(struct p3_io *io, struct p3_iobuf *bufs, unsigned n, int with_port);

#endif
