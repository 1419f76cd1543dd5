/* io_internal.h — what the socket I/O backends share (native/src/io.c,
 * backends/udp/udp.c, backends/esp/esp.c). */
#ifndef P3_IO_INTERNAL_H
#define P3_IO_INTERNAL_H

#include "p3_backend.h"

#include <sys/socket.h>

enum {
    P3_IO_RX_MSGS = 64,              /* datagrams (or GRO trains) per recvmmsg: a whole burst */
    P3_IO_RX_BYTES = 65536,          /* room for one GRO train */
    P3_IO_GSO_MAX_SEGMENTS = 64      /* UDP_SEGMENT: the kernel's limit (UDP_MAX_SEGMENTS) */
};

struct p3_io_msgs {
    /* receive: the backend's own memory; bufs[] point into it */
    struct mmsghdr rx_msgs[P3_IO_RX_MSGS];
    struct iovec rx_iov[P3_IO_RX_MSGS];
    struct sockaddr_storage rx_names[P3_IO_RX_MSGS];
    uint8_t rx_control[P3_IO_RX_MSGS][64];
    uint8_t *rx_mem;                 /* P3_IO_RX_MSGS * P3_IO_RX_BYTES */
    unsigned rx_count, rx_next;      /* received trains not yet handed out */
    uint32_t rx_offset;              /* within train rx_next */
    uint16_t rx_segment[P3_IO_RX_MSGS];
    /* send */
    struct mmsghdr tx_msgs[P3_IO_MAX_BURST];
    struct iovec tx_iov[P3_IO_MAX_BURST];
    struct sockaddr_storage tx_names[P3_IO_MAX_BURST];
    uint8_t tx_control[P3_IO_MAX_BURST][64];
    int gso;                         /* UDP_SEGMENT may be used */
};

/* Fill ss for (family, addr, port) as a socket of socket_family wants it
 * (IPv4-mapped on a dual-stack IPv6 socket). */
socklen_t p3_io_sockaddr(struct sockaddr_storage *ss, int socket_family, int family,
                         const uint8_t *addr, uint16_t port);
void p3_io_peer_from_sockaddr(const struct sockaddr_storage *ss, struct p3_iobuf *b);

/* recvmmsg/sendmmsg bursts shared by the UDP and raw ESP backends. Receive
 * points bufs[].data into the backend's memory (valid until the next call)
 * and splits GRO trains; send groups equal-sized datagrams to one peer into
 * UDP_SEGMENT trains when gso is on. */
int p3_io_mmsg_rx(struct p3_io *io, struct p3_iobuf *bufs, unsigned n);
int p3_io_mmsg_tx(struct p3_io *io, struct p3_iobuf *bufs, unsigned n, int with_port);

#endif
