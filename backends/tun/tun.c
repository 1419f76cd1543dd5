/* backends/tun — the LAN side on a kernel TUN interface (IFF_TUN | IFF_NO_PI).
 *
 * With IFF_VNET_HDR and the TSO offloads on (backends/tun/__init__.py), the
 * kernel hands over whole TCP super-segments of up to 64 KiB in one read,
 * with a virtio-net header saying how to cut them (what wireguard-go does
 * to pass 10 Gbit/s in user space): one syscall per 64 KiB instead of one
 * per 1,400 bytes, and the LAN host's stack segments nothing. Here they are
 * cut into MTU-sized packets — headers copied, IPv4 ID, lengths and TCP
 * sequence advanced, checksums computed — before the worker seals them.
 * Packets written back carry a virtio-net header saying "no offload".
 *
 * The interface itself is created and addressed by the control plane
 * through pyroute2 (backends/tun/__init__.py).
 */
#include "p3dp.h"
#include "p3_backend.h"

#include <errno.h>
#include <linux/if_tun.h>
#include <linux/virtio_net.h>
#include <net/if.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/uio.h>
#include <unistd.h>

enum {
    VNET_HDR_BYTES = sizeof(struct virtio_net_hdr),
    SUPER_BYTES = 65536 + VNET_HDR_BYTES,
    TCP_FLAG_FIN = 0x01,
    TCP_FLAG_PSH = 0x08,
    TCP_FLAG_CWR = 0x80
};

struct tun_state {
    int vnet;                     /* IFF_VNET_HDR is on */
    uint8_t *super;               /* the last read, header included */
    uint32_t super_len;           /* octets of packet after the header */
    /* a super-segment being cut (pending > 0) */
    uint32_t pending;             /* payload octets not yet emitted */
    uint32_t next_payload;        /* offset of the next payload octet in the packet */
    uint32_t hdr_len;             /* IP + TCP header octets */
    uint32_t gso_size;
    uint32_t segment;             /* index of the next segment */
    uint32_t l4_off;              /* where TCP starts */
    uint64_t cut_segments;        /* statistics */
};

/* ---- checksums (RFC 1071) -------------------------------------------- */

static uint64_t sum_bytes(const uint8_t *p, size_t len, uint64_t sum)
{
    while (len >= 8) {
        uint64_t v;
        memcpy(&v, p, 8);
        sum += (v & 0xffffffffu) + (v >> 32);
        p += 8;
        len -= 8;
    }
    while (len >= 2) {
        uint16_t v;
        memcpy(&v, p, 2);
        sum += v;
        p += 2;
        len -= 2;
    }
    if (len)
        sum += *p; /* little-endian: the odd octet is the high half of a big-endian word */
    return sum;
}

static uint16_t fold(uint64_t sum)
{
    while (sum >> 16)
        sum = (sum & 0xffff) + (sum >> 16);
    return (uint16_t)sum;
}

static uint16_t be16(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }
static void put_be16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)(v >> 8); p[1] = (uint8_t)v; }
static uint32_t be32(const uint8_t *p) { return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3]; }
static void put_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24); p[1] = (uint8_t)(v >> 16); p[2] = (uint8_t)(v >> 8); p[3] = (uint8_t)v;
}

static void ipv4_header_checksum(uint8_t *ip)
{
    unsigned ihl = (ip[0] & 0x0f) * 4u;
    ip[10] = ip[11] = 0;
    uint16_t c = (uint16_t)~fold(sum_bytes(ip, ihl, 0));
    memcpy(ip + 10, &c, 2);
}

/* The TCP checksum of a whole segment (pseudo-header included). */
static void tcp_checksum(uint8_t *pkt, uint32_t l4_off, uint32_t len)
{
    uint8_t *tcp = pkt + l4_off;
    uint32_t tcp_len = len - l4_off;
    uint64_t sum = 0;
    tcp[16] = tcp[17] = 0;
    if ((pkt[0] >> 4) == 4)
        sum = sum_bytes(pkt + 12, 8, 0);
    else
        sum = sum_bytes(pkt + 8, 32, 0);
    uint8_t pseudo[8] = { (uint8_t)(tcp_len >> 24), (uint8_t)(tcp_len >> 16), (uint8_t)(tcp_len >> 8),
                          (uint8_t)tcp_len, 0, 0, 0, 6 };
    sum = sum_bytes(pseudo, 8, sum);
    sum = sum_bytes(tcp, tcp_len, sum);
    uint16_t c = (uint16_t)~fold(sum);
    memcpy(tcp + 16, &c, 2);
}

/* ---- cutting a super-segment ----------------------------------------- */

static int start_gso(struct tun_state *st, const struct virtio_net_hdr *h)
{
    const uint8_t *pkt = st->super + VNET_HDR_BYTES;
    uint32_t l4 = h->csum_start;
    if (l4 + 20 > st->super_len || h->gso_size == 0)
        return -1;
    uint32_t tcp_hdr = (pkt[l4 + 12] >> 4) * 4u;
    if (tcp_hdr < 20 || l4 + tcp_hdr > st->super_len)
        return -1;
    st->l4_off = l4;
    st->hdr_len = l4 + tcp_hdr;
    st->gso_size = h->gso_size;
    st->next_payload = st->hdr_len;
    st->pending = st->super_len - st->hdr_len;
    st->segment = 0;
    return st->pending ? 0 : -1;
}

static unsigned emit_segments(struct tun_state *st, struct p3_iobuf *bufs, unsigned n)
{
    const uint8_t *src = st->super + VNET_HDR_BYTES;
    unsigned got = 0;
    uint32_t seq0 = be32(src + st->l4_off + 4);
    while (st->pending && got < n) {
        uint32_t chunk = st->pending < st->gso_size ? st->pending : st->gso_size;
        uint32_t len = st->hdr_len + chunk;
        uint8_t *out = bufs[got].data;
        if (len > bufs[got].cap)
            return got;
        memcpy(out, src, st->hdr_len);
        memcpy(out + st->hdr_len, src + st->next_payload, chunk);
        int last = chunk == st->pending;
        if ((out[0] >> 4) == 4) {
            put_be16(out + 2, (uint16_t)len);
            put_be16(out + 4, (uint16_t)(be16(src + 4) + st->segment));
            ipv4_header_checksum(out);
        } else {
            put_be16(out + 4, (uint16_t)(len - 40));
        }
        uint8_t *tcp = out + st->l4_off;
        put_be32(tcp + 4, seq0 + st->segment * st->gso_size);
        if (!last)
            tcp[13] &= (uint8_t)~(TCP_FLAG_FIN | TCP_FLAG_PSH);
        if (st->segment)
            tcp[13] &= (uint8_t)~TCP_FLAG_CWR;
        tcp_checksum(out, st->l4_off, len);
        bufs[got].len = len;
        got++;
        st->segment++;
        st->next_payload += chunk;
        st->pending -= chunk;
        st->cut_segments++;
    }
    return got;
}

/* A packet without GSO whose checksum the kernel left to us: the field holds
 * the pseudo-header sum; sum from csum_start to the end and store. */
static int finish_checksum(uint8_t *pkt, uint32_t len, const struct virtio_net_hdr *h)
{
    uint32_t start = h->csum_start, at = (uint32_t)h->csum_start + h->csum_offset;
    if (start >= len || at + 2 > len)
        return -1;
    uint16_t c = (uint16_t)~fold(sum_bytes(pkt + start, len - start, 0));
    if (c == 0 && h->csum_offset == 6)
        c = 0xffff; /* UDP: a computed zero is sent as all ones (RFC 768) */
    memcpy(pkt + at, &c, 2);
    return 0;
}

/* ---- the vtable -------------------------------------------------------- */

static int tun_rx(struct p3_io *io, struct p3_iobuf *bufs, unsigned n)
{
    struct tun_state *st = io->state;
    unsigned got = 0;
    while (got < n) {
        if (st->pending) {
            got += emit_segments(st, bufs + got, n - got);
            if (st->pending)
                break;
            continue;
        }
        uint8_t *dst = st->vnet ? st->super : bufs[got].data;
        size_t cap = st->vnet ? SUPER_BYTES : bufs[got].cap;
        ssize_t r = read(io->fd, dst, cap);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                break;
            return got ? (int)got : -901;
        }
        if (!st->vnet) {
            if (r == 0)
                break;
            bufs[got++].len = (uint32_t)r;
            continue;
        }
        if ((size_t)r <= VNET_HDR_BYTES)
            continue;
        struct virtio_net_hdr h;
        memcpy(&h, st->super, VNET_HDR_BYTES);
        st->super_len = (uint32_t)r - VNET_HDR_BYTES;
        uint8_t gso = h.gso_type & (uint8_t)~VIRTIO_NET_HDR_GSO_ECN;
        if (gso == VIRTIO_NET_HDR_GSO_TCPV4 || gso == VIRTIO_NET_HDR_GSO_TCPV6) {
            if (start_gso(st, &h) != 0)
                st->pending = 0; /* malformed: dropped */
            continue;
        }
        uint8_t *pkt = st->super + VNET_HDR_BYTES;
        if ((h.flags & VIRTIO_NET_HDR_F_NEEDS_CSUM) && finish_checksum(pkt, st->super_len, &h) != 0)
            continue;
        if (st->super_len > bufs[got].cap)
            continue;
        memcpy(bufs[got].data, pkt, st->super_len);
        bufs[got++].len = st->super_len;
    }
    return (int)got;
}

static int tun_tx(struct p3_io *io, struct p3_iobuf *bufs, unsigned n)
{
    struct tun_state *st = io->state;
    static const struct virtio_net_hdr no_offload; /* all zero: a finished packet */
    unsigned done = 0;
    for (unsigned i = 0; i < n; i++) {
        ssize_t w;
        if (st->vnet) {
            struct iovec iov[2] = { { (void *)&no_offload, VNET_HDR_BYTES }, { bufs[i].data, bufs[i].len } };
            w = writev(io->fd, iov, 2) - (ssize_t)VNET_HDR_BYTES;
        } else {
            w = write(io->fd, bufs[i].data, bufs[i].len);
        }
        if (w == (ssize_t)bufs[i].len)
            done++;
        /* EAGAIN (the interface queue is full) or EIO (interface down):
         * the packet is dropped like on a full NIC ring. */
    }
    return (int)done;
}

int p3_io_tun_setup(struct p3_io *io)
{
    struct tun_state *st = calloc(1, sizeof(*st));
    if (!st)
        return -213;
    struct ifreq ifr;
    memset(&ifr, 0, sizeof(ifr));
    if (ioctl(io->fd, TUNGETIFF, &ifr) == 0 && (ifr.ifr_flags & IFF_VNET_HDR)) {
        st->vnet = 1;
        st->super = malloc(SUPER_BYTES);
        if (!st->super) {
            free(st);
            return -213;
        }
    }
    io->state = st;
    return 0;
}

void p3_io_tun_teardown(struct p3_io *io)
{
    struct tun_state *st = io->state;
    if (st)
        free(st->super);
}

const struct p3_io_ops p3_io_tun_ops = { "tun", tun_rx, tun_tx };
