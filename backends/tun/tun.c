/* backends/tun — the LAN side on a kernel TUN interface (IFF_TUN |
 * IFF_NO_PI): one read or write per packet, bursts drained until the queue
 * is empty. The interface itself is created and addressed by the control
 * plane through pyroute2 (backends/tun/__init__.py). */
#include "p3dp.h"
#include "p3_backend.h"

#include <errno.h>
#include <unistd.h>

static int tun_rx(struct p3_io *io, struct p3_iobuf *bufs, unsigned n)
{
    unsigned got = 0;
    while (got < n) {
        ssize_t r = read(io->fd, bufs[got].data, bufs[got].cap);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                break;
            return got ? (int)got : -901;
        }
        if (r == 0)
            break;
        bufs[got].len = (uint32_t)r;
        got++;
    }
    return (int)got;
}

static int tun_tx(struct p3_io *io, struct p3_iobuf *bufs, unsigned n)
{
    unsigned done = 0;
    for (unsigned i = 0; i < n; i++) {
        ssize_t w = write(io->fd, bufs[i].data, bufs[i].len);
        if (w == (ssize_t)bufs[i].len)
            done++;
        /* EAGAIN (the interface queue is full) or EIO (interface down):
         * the packet is dropped like on a full NIC ring. */
    }
    return (int)done;
}

const struct p3_io_ops p3_io_tun_ops = { "tun", tun_rx, tun_tx };
