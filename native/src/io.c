/* io.c — binds descriptors to I/O backends, and the address helpers that
 * the socket backends share. */
#define _GNU_SOURCE /* recvmmsg, sendmmsg */
#include "p3dp.h"
#include "p3_backend.h"
#include "io_internal.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

int p3_io_open(struct p3_io *io, int kind, int fd, int family)
{
    memset(io, 0, sizeof(*io));
    io->fd = fd;
    io->family = family;
    switch (kind) {
    case P3_IO_TUN:
        io->ops = &p3_io_tun_ops;
        return p3_io_tun_setup(io);
    case P3_IO_UDP:
        io->ops = &p3_io_udp_ops;
        break;
    case P3_IO_ESP:
        if (family != 4 && family != 6)
            return -P3R_DP_BAD_ARGUMENT;
        io->ops = &p3_io_esp_ops;
        /* An IPv4 raw socket hands us the IP header; IPv6 does not. */
        io->open_flags = family == 4 ? P3DP_IN_IP : 0;
        break;
    default:
        return -P3R_DP_BAD_ARGUMENT;
    }
    if (kind != P3_IO_TUN) {
        /* The socket's own family decides how peer addresses are written
         * (IPv4-mapped on an IPv6 socket). */
        struct sockaddr_storage ss;
        socklen_t len = sizeof(ss);
        if (getsockname(fd, (struct sockaddr *)&ss, &len) != 0)
            return -P3R_DP_BAD_ARGUMENT;
        io->family = ss.ss_family == AF_INET6 ? 6 : 4;
        struct p3_io_msgs *m = calloc(1, sizeof(*m));
        if (!m)
            return -P3R_DP_TABLE_FULL;
        m->rx_mem = malloc((size_t)P3_IO_RX_MSGS * P3_IO_RX_BYTES);
        if (!m->rx_mem) {
            free(m);
            return -P3R_DP_TABLE_FULL;
        }
        /* UDP_SEGMENT trains for the UDP transport; raw ESP sends one by one. */
        m->gso = kind == P3_IO_UDP;
        io->state = m;
    }
    return 0;
}

void p3_io_close(struct p3_io *io)
{
    if (io->ops && io->ops->close) {
        io->ops->close(io);
        return;
    }
    if (io->ops == &p3_io_tun_ops)
        p3_io_tun_teardown(io);
    else if (io->state)
        free(((struct p3_io_msgs *)io->state)->rx_mem);
    free(io->state);
    io->state = NULL;
}

socklen_t p3_io_sockaddr(struct sockaddr_storage *ss, int socket_family, int family,
                         const uint8_t *addr, uint16_t port)
{
    memset(ss, 0, sizeof(*ss));
    if (socket_family == 6) {
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons(port);
        if (family == 4) {
            /* IPv4-mapped, for a dual-stack socket */
            s6->sin6_addr.s6_addr[10] = 0xff;
            s6->sin6_addr.s6_addr[11] = 0xff;
            memcpy(&s6->sin6_addr.s6_addr[12], addr, 4);
        } else {
            memcpy(&s6->sin6_addr, addr, 16);
        }
        return sizeof(*s6);
    }
    struct sockaddr_in *s4 = (struct sockaddr_in *)ss;
    s4->sin_family = AF_INET;
    s4->sin_port = htons(port);
    memcpy(&s4->sin_addr, addr, 4);
    return sizeof(*s4);
}

void p3_io_peer_from_sockaddr(const struct sockaddr_storage *ss, struct p3_iobuf *b)
{
    memset(b->addr, 0, sizeof(b->addr));
    if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)ss;
        const uint8_t *a = s6->sin6_addr.s6_addr;
        static const uint8_t mapped[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };
        b->port = ntohs(s6->sin6_port);
        if (memcmp(a, mapped, 12) == 0) {
            b->family = 4;
            memcpy(b->addr, a + 12, 4);
        } else {
            b->family = 6;
            memcpy(b->addr, a, 16);
        }
    } else {
        const struct sockaddr_in *s4 = (const struct sockaddr_in *)ss;
        b->family = 4;
        b->port = ntohs(s4->sin_port);
        memcpy(b->addr, &s4->sin_addr, 4);
    }
}
