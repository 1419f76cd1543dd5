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
#include "bytes.h"

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
    uint64_t merged_segments;
};

/* ---- checksums (RFC 1071) and byte order: native/src/bytes.h ---------- */

static void ipv4_header_checksum(uint8_t *ip)
{
    unsigned ihl = (ip[0] & 0x0f) * 4u;
    ip[10] = ip[11] = 0;
    p3_csum_store(ip + 10, p3_csum_fold(p3_csum_add(0, ip, ihl)));
}

/* The TCP checksum of a whole segment (pseudo-header included). */
static void tcp_checksum(uint8_t *pkt, uint32_t l4_off, uint32_t len)
{
    uint8_t *tcp = pkt + l4_off;
    uint32_t tcp_len = len - l4_off;
    int v4 = (pkt[0] >> 4) == 4;
    tcp[16] = tcp[17] = 0;
    uint64_t sum = p3_csum_pseudo(v4 ? 4 : 6, pkt + (v4 ? 12 : 8), pkt + (v4 ? 16 : 24), 6, tcp_len);
    p3_csum_store(tcp + 16, p3_csum_fold(p3_csum_add(sum, tcp, tcp_len)));
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
    uint32_t seq0 = p3_get_be32(src + st->l4_off + 4);
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
            p3_put_be16(out + 2, (uint16_t)len);
            p3_put_be16(out + 4, (uint16_t)(p3_get_be16(src + 4) + st->segment));
            ipv4_header_checksum(out);
        } else {
            p3_put_be16(out + 4, (uint16_t)(len - 40));
        }
        uint8_t *tcp = out + st->l4_off;
        p3_put_be32(tcp + 4, seq0 + st->segment * st->gso_size);
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
    uint16_t c = p3_csum_fold(p3_csum_add(0, pkt + start, len - start));
    if (c == 0 && h->csum_offset == 6)
        c = 0xffff; /* UDP: a computed zero is sent as all ones (RFC 768) */
    p3_csum_store(pkt + at, c);
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
            return got ? (int)got : -P3R_OS_ERROR;
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

/* ---- coalescing on the way out (GRO toward the LAN) ----------------------
 * Consecutive packets of one TCP flow whose sequence numbers follow on and
 * whose headers agree are written as one super-segment with a virtio-net
 * GSO header: the kernel then forwards and delivers 64 KiB at a time
 * instead of 45 packets. Only plain data segments merge (ACK, optionally
 * PSH on the last); anything else is written alone, unchanged. */

struct tcp_view {
    uint32_t ip_len, l4_off, hdr_len, payload, seq;
    int family;
    uint8_t flags;
};

enum { TCP_FLAG_ACK = 0x10, MERGE_MAX_SEGMENTS = 64 };

static int tcp_view(const uint8_t *p, uint32_t len, struct tcp_view *v)
{
    if (len < 40)
        return -1;
    if ((p[0] >> 4) == 4) {
        if ((p[0] & 0x0f) != 5 || p[9] != 6 || (p3_get_be16(p + 6) & 0x3fff) != 0)
            return -1; /* options, not TCP, or a fragment */
        v->family = 4;
        v->ip_len = p3_get_be16(p + 2);
        v->l4_off = 20;
    } else if ((p[0] >> 4) == 6) {
        if (len < 60 || p[6] != 6)
            return -1; /* extension headers: not merged */
        v->family = 6;
        v->ip_len = 40u + p3_get_be16(p + 4);
        v->l4_off = 40;
    } else {
        return -1;
    }
    if (v->ip_len != len)
        return -1;
    uint32_t doff = (p[v->l4_off + 12] >> 4) * 4u;
    if (doff < 20 || v->l4_off + doff > len)
        return -1;
    v->hdr_len = v->l4_off + doff;
    v->payload = len - v->hdr_len;
    v->seq = p3_get_be32(p + v->l4_off + 4);
    v->flags = p[v->l4_off + 13];
    return 0;
}

/* Can b follow a (the group's head h, total payload so far) in one super-segment? */
static int mergeable(const uint8_t *h, const struct tcp_view *hv, uint32_t merged_payload,
                     const uint8_t *b, const struct tcp_view *bv)
{
    if (bv->family != hv->family || bv->hdr_len != hv->hdr_len || bv->payload == 0 ||
        bv->payload > hv->payload || bv->seq != hv->seq + merged_payload ||
        hv->hdr_len + merged_payload + bv->payload > 65535)
        return 0;
    if ((bv->flags & (uint8_t)~TCP_FLAG_PSH) != TCP_FLAG_ACK)
        return 0;
    if (hv->family == 4) {
        /* version/ihl/tos, TTL/protocol, addresses */
        if (h[1] != b[1] || memcmp(h + 8, b + 8, 2) != 0 || memcmp(h + 12, b + 12, 8) != 0)
            return 0;
    } else if (memcmp(h, b, 4) != 0 || memcmp(h + 6, b + 6, 34) != 0) {
        return 0;
    }
    const uint8_t *ht = h + hv->l4_off, *bt = b + bv->l4_off;
    /* ports; ack and data offset; window; urgent pointer and options (the
     * flags were checked by the caller: PSH may differ on the last) */
    return memcmp(ht, bt, 4) == 0 && memcmp(ht + 8, bt + 8, 5) == 0 && memcmp(ht + 14, bt + 14, 2) == 0 &&
           memcmp(ht + 18, bt + 18, hv->hdr_len - hv->l4_off - 18) == 0;
}

static int write_group(int fd, struct p3_iobuf *bufs, unsigned first, unsigned count,
                       const struct tcp_view *hv, uint32_t total_payload)
{
    uint8_t head[120];
    struct virtio_net_hdr h;
    struct iovec iov[MERGE_MAX_SEGMENTS + 2];
    const uint8_t *p = bufs[first].data;
    uint32_t len = hv->hdr_len + total_payload;

    memcpy(head, p, hv->hdr_len);
    if (hv->family == 4) {
        p3_put_be16(head + 2, (uint16_t)len);
        ipv4_header_checksum(head);
    } else {
        p3_put_be16(head + 4, (uint16_t)(len - 40));
    }
    if (count > 1 && (bufs[first + count - 1].data[hv->l4_off + 13] & TCP_FLAG_PSH))
        head[hv->l4_off + 13] |= TCP_FLAG_PSH;
    /* CHECKSUM_PARTIAL: the field holds the folded pseudo-header sum. */
    uint32_t tcp_len = len - hv->l4_off;
    int v4 = hv->family == 4;
    uint64_t sum = p3_csum_pseudo(v4 ? 4 : 6, head + (v4 ? 12 : 8), head + (v4 ? 16 : 24), 6, tcp_len);
    p3_csum_store(head + hv->l4_off + 16, (uint16_t)~p3_csum_fold(sum));

    memset(&h, 0, sizeof(h));
    h.flags = VIRTIO_NET_HDR_F_NEEDS_CSUM;
    h.gso_type = hv->family == 4 ? VIRTIO_NET_HDR_GSO_TCPV4 : VIRTIO_NET_HDR_GSO_TCPV6;
    h.hdr_len = (uint16_t)hv->hdr_len;
    h.gso_size = (uint16_t)hv->payload;
    h.csum_start = (uint16_t)hv->l4_off;
    h.csum_offset = 16;
    iov[0] = (struct iovec){ &h, VNET_HDR_BYTES };
    iov[1] = (struct iovec){ head, hv->hdr_len };
    for (unsigned i = 0; i < count; i++)
        iov[2 + i] = (struct iovec){ bufs[first + i].data + hv->hdr_len, bufs[first + i].len - hv->hdr_len };
    ssize_t w = writev(fd, iov, (int)count + 2);
    return w == (ssize_t)(VNET_HDR_BYTES + len) ? (int)count : 0;
}

static int write_one(struct tun_state *st, int fd, const struct p3_iobuf *b)
{
    static const struct virtio_net_hdr no_offload; /* all zero: a finished packet */
    ssize_t w;
    if (st->vnet) {
        struct iovec iov[2] = { { (void *)&no_offload, VNET_HDR_BYTES }, { b->data, b->len } };
        w = writev(fd, iov, 2) - (ssize_t)VNET_HDR_BYTES;
    } else {
        w = write(fd, b->data, b->len);
    }
    /* EAGAIN (the interface queue is full) or EIO (interface down): the
     * packet is dropped like on a full NIC ring. */
    return w == (ssize_t)b->len;
}

static int tun_tx(struct p3_io *io, struct p3_iobuf *bufs, unsigned n)
{
    struct tun_state *st = io->state;
    unsigned done = 0, i = 0;
    while (i < n) {
        struct tcp_view hv;
        if (!st->vnet || tcp_view(bufs[i].data, bufs[i].len, &hv) != 0 || hv.payload == 0 ||
            (hv.flags & (uint8_t)~TCP_FLAG_PSH) != TCP_FLAG_ACK) {
            done += (unsigned)write_one(st, io->fd, &bufs[i]);
            i++;
            continue;
        }
        unsigned count = 1;
        uint32_t total = hv.payload;
        while (i + count < n && count < MERGE_MAX_SEGMENTS) {
            struct tcp_view bv;
            const struct p3_iobuf *b = &bufs[i + count];
            if (bufs[i + count - 1].data[hv.l4_off + 13] & TCP_FLAG_PSH)
                break; /* PSH ends a group */
            if (tcp_view(b->data, b->len, &bv) != 0 || !mergeable(bufs[i].data, &hv, total, b->data, &bv))
                break;
            total += bv.payload;
            count++;
            if (bv.payload < hv.payload)
                break; /* a short segment can only be the last */
        }
        if (count == 1) {
            done += (unsigned)write_one(st, io->fd, &bufs[i]);
        } else {
            done += (unsigned)write_group(io->fd, bufs, i, count, &hv, total);
            st->merged_segments += count;
        }
        i += count;
    }
    return (int)done;
}

int p3_io_tun_setup(struct p3_io *io)
{
    struct ifreq ifr;
    memset(&ifr, 0, sizeof(ifr));
    int vnet = ioctl(io->fd, TUNGETIFF, &ifr) == 0 && (ifr.ifr_flags & IFF_VNET_HDR);
    return p3_io_tun_setup_vnet(io, vnet);
}

int p3_io_tun_setup_vnet(struct p3_io *io, int vnet)
{
    struct tun_state *st = calloc(1, sizeof(*st));
    if (!st)
        return -P3R_DP_TABLE_FULL;
    if (vnet) {
        st->vnet = 1;
        st->super = malloc(SUPER_BYTES);
        if (!st->super) {
            free(st);
            return -P3R_DP_TABLE_FULL;
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

const struct p3_io_ops p3_io_tun_ops = { .name = "tun", .rx_burst = tun_rx, .tx_burst = tun_tx };
