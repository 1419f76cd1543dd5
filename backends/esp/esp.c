/* backends/esp — raw ESP transport: IP protocol 50, exactly the spec's
 * figure (§2.1.4). The kernel writes the outer IP header on send; an IPv4
 * raw socket hands the header back on receive (the dataplane parses it,
 * P3DP_IN_IP), an IPv6 one does not (the address comes from recvmmsg). */
#define _GNU_SOURCE /* recvmmsg, sendmmsg */
#include "p3dp.h"
#include "p3_backend.h"
#include "io_internal.h"

static int esp_rx(struct p3_io *io, struct p3_iobuf *bufs, unsigned n)
{
    int got = p3_io_mmsg_rx(io, bufs, n);
    for (int i = 0; i < got; i++)
        bufs[i].port = 0;
    return got;
}

static int esp_tx(struct p3_io *io, struct p3_iobuf *bufs, unsigned n)
{
    return p3_io_mmsg_tx(io, bufs, n, 0);
}

const struct p3_io_ops p3_io_esp_ops = { .name = "esp", .rx_burst = esp_rx, .tx_burst = esp_tx };
