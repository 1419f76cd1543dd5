/*
 * worker.c — the packet worker: bursts LAN -> route -> seal -> WAN and
 * WAN -> open -> LAN or the control queue (DESIGN.md §1, STYLE.md
 * ipsec-secgw). No Python on the packet path, no lock on the fast path.
 *
 * One worker thread owns the dataplane context while it runs. The control
 * plane changes the context (SAs, peers, keys) only while the worker is
 * parked: p3dp_worker_pause() asks the worker to stop between two bursts
 * and waits until it has; p3dp_worker_resume() lets it go on. The fast path
 * only reads one atomic flag per loop.
 *
 * Control-channel and IKE packets go to Python through a single-producer
 * single-consumer ring, signalled by an eventfd (p3dp_worker_notify_fd).
 */
#define _GNU_SOURCE /* struct mmsghdr in io_internal.h */
#include "p3dp.h"
#include "p3dp_internal.h"
#include "io_internal.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum {
    WORKER_BURST = 64,
    WORKER_BUF_BYTES = 65536,
    RING_SLOTS = 256,
    RING_SLOT_BYTES = 16384
};

struct ring_slot {
    p3dp_worker_msg info;
    uint8_t data[RING_SLOT_BYTES];
};

struct p3dp_worker {
    p3dp_ctx *ctx;
    const p3dp_routes *routes;
    p3dp_flows *flows;
    struct p3_io lan, wan, esp;
    int has_esp;
    int wake_fd;       /* worker waits on it in poll: a pause request */
    int notify_fd;     /* Python waits on it: messages in the ring */
    pthread_t thread;
    int started;
    atomic_int stop;
    atomic_int pause_req;
    int parked;
    pthread_mutex_t park_lock;
    pthread_cond_t park_cond;
    pthread_mutex_t caller_lock;  /* serializes control-plane callers */
    /* to Python */
    struct ring_slot *ring;
    atomic_uint ring_head;  /* next slot the worker writes */
    atomic_uint ring_tail;  /* next slot Python reads */
    /* burst buffers */
    struct p3_iobuf lan_in[WORKER_BURST], wan_out[WORKER_BURST];
    struct p3_iobuf wan_in[WORKER_BURST], lan_out[WORKER_BURST];
    p3dp_pkt pkts[WORKER_BURST];
    uint8_t addrs[WORKER_BURST * 16];
    uint32_t peers[WORKER_BURST];
    uint8_t *buffers;
    p3dp_worker_stats stats;
};

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void bind_buffers(struct p3_iobuf *bufs, uint8_t *base)
{
    for (unsigned i = 0; i < WORKER_BURST; i++) {
        memset(&bufs[i], 0, sizeof(bufs[i]));
        bufs[i].data = base + (size_t)i * WORKER_BUF_BYTES;
        bufs[i].cap = WORKER_BUF_BYTES;
    }
}

p3dp_worker *p3dp_worker_new(p3dp_ctx *ctx, const p3dp_routes *routes, p3dp_flows *flows,
                             const p3dp_worker_config *cfg)
{
    if (!ctx || !routes || !cfg || cfg->lan_fd < 0 || cfg->wan_fd < 0)
        return NULL;
    p3dp_worker *w = calloc(1, sizeof(*w));
    if (!w)
        return NULL;
    w->ctx = ctx;
    w->routes = routes;
    w->flows = flows;
    w->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    w->notify_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    /* LAN in, WAN out, LAN out. WAN in needs none: the socket backends
     * receive into their own memory and point wan_in[] at it. */
    w->buffers = malloc((size_t)3 * WORKER_BURST * WORKER_BUF_BYTES);
    w->ring = calloc(RING_SLOTS, sizeof(struct ring_slot));
    if (w->wake_fd < 0 || w->notify_fd < 0 || !w->buffers || !w->ring ||
        p3_io_open(&w->lan, P3_IO_TUN, cfg->lan_fd, 0) != 0 ||
        p3_io_open(&w->wan, P3_IO_UDP, cfg->wan_fd, 0) != 0) {
        p3dp_worker_free(w);
        return NULL;
    }
    if (cfg->esp_fd >= 0) {
        if (p3_io_open(&w->esp, P3_IO_ESP, cfg->esp_fd, cfg->esp_family) != 0) {
            p3dp_worker_free(w);
            return NULL;
        }
        w->has_esp = 1;
    }
    bind_buffers(w->lan_in, w->buffers);
    bind_buffers(w->wan_out, w->buffers + (size_t)1 * WORKER_BURST * WORKER_BUF_BYTES);
    bind_buffers(w->lan_out, w->buffers + (size_t)2 * WORKER_BURST * WORKER_BUF_BYTES);
    pthread_mutex_init(&w->park_lock, NULL);
    pthread_cond_init(&w->park_cond, NULL);
    pthread_mutex_init(&w->caller_lock, NULL);
    return w;
}

/* ---- the ring to Python ---------------------------------------------- */

static void ring_push(p3dp_worker *w, const p3dp_pkt *pkt)
{
    unsigned head = atomic_load_explicit(&w->ring_head, memory_order_relaxed);
    unsigned tail = atomic_load_explicit(&w->ring_tail, memory_order_acquire);
    const uint8_t *data = pkt->out_buf;
    uint32_t len = pkt->out_len;
    if (pkt->kind == P3DP_KIND_IKE) {
        data = pkt->in_buf + pkt->payload_off;
        len = pkt->in_len - pkt->payload_off;
    }
    if (head - tail >= RING_SLOTS || len > RING_SLOT_BYTES) {
        w->stats.control_queue_drops++;
        return;
    }
    struct ring_slot *slot = &w->ring[head % RING_SLOTS];
    memcpy(slot->data, data, len);
    slot->info.len = len;
    slot->info.kind = pkt->kind;
    slot->info.peer = pkt->peer;
    slot->info.family = pkt->family;
    slot->info.port = pkt->port;
    memcpy(slot->info.addr, pkt->addr, 16);
    atomic_store_explicit(&w->ring_head, head + 1, memory_order_release);
    uint64_t one = 1;
    if (write(w->notify_fd, &one, sizeof(one)) < 0 && errno != EAGAIN)
        w->stats.io_errors++;
}

int p3dp_worker_recv(p3dp_worker *w, uint8_t *buf, size_t cap, p3dp_worker_msg *info)
{
    unsigned tail = atomic_load_explicit(&w->ring_tail, memory_order_relaxed);
    unsigned head = atomic_load_explicit(&w->ring_head, memory_order_acquire);
    if (tail == head) {
        uint64_t drain;
        if (read(w->notify_fd, &drain, sizeof(drain)) < 0 && errno != EAGAIN)
            return -901;
        /* a message may have landed between the check and the drain */
        head = atomic_load_explicit(&w->ring_head, memory_order_acquire);
        if (tail == head)
            return 0;
    }
    struct ring_slot *slot = &w->ring[tail % RING_SLOTS];
    if (slot->info.len > cap)
        return -205;
    memcpy(buf, slot->data, slot->info.len);
    *info = slot->info;
    atomic_store_explicit(&w->ring_tail, tail + 1, memory_order_release);
    return (int)slot->info.len;
}

int p3dp_worker_notify_fd(const p3dp_worker *w)
{
    return w->notify_fd;
}

/* ---- LAN -> WAN ------------------------------------------------------ */

static void inner_destination(const uint8_t *pkt, uint32_t len, int *family, uint8_t *addr16)
{
    *family = 0;
    if (len >= 20 && (pkt[0] >> 4) == 4) {
        *family = 4;
        memcpy(addr16, pkt + 16, 4);
    } else if (len >= 40 && (pkt[0] >> 4) == 6) {
        *family = 6;
        memcpy(addr16, pkt + 24, 16);
    }
}

static void lan_to_wan(p3dp_worker *w)
{
    int n = w->lan.ops->rx_burst(&w->lan, w->lan_in, WORKER_BURST);
    if (n <= 0) {
        if (n < 0)
            w->stats.io_errors++;
        return;
    }
    w->stats.lan_rx_packets += (uint64_t)n;
    size_t m = 0;
    for (int i = 0; i < n; i++) {
        int family;
        uint8_t dst[16];
        inner_destination(w->lan_in[i].data, w->lan_in[i].len, &family, dst);
        uint32_t peer = family ? p3dp_route_lookup(w->routes, family, dst) : P3DP_NO_PEER;
        if (peer == P3DP_NO_PEER) {
            w->stats.no_route_drops++;
            continue;
        }
        p3dp_pkt *p = &w->pkts[m];
        memset(p, 0, sizeof(*p));
        p->in_buf = w->lan_in[i].data;
        p->in_len = w->lan_in[i].len;
        p->out_buf = w->wan_out[m].data;
        p->out_cap = w->wan_out[m].cap;
        p->peer = peer;
        p->kind = P3DP_KIND_DATA;
        m++;
    }
    if (!m)
        return;
    p3dp_seal_burst(w->ctx, w->pkts, m, 0);
    if (w->flows)
        p3dp_flows_observe_burst(w->flows, w->pkts, m, P3DP_FLOW_FROM_LAN, now_ms());
    /* Sealed packets go out of the UDP socket, or of the raw ESP socket in
     * ESP mode; either way the kernel writes the outer IP (and UDP) header. */
    struct p3_io *out = w->has_esp ? &w->esp : &w->wan;
    size_t k = 0;
    for (size_t i = 0; i < m; i++) {
        if (w->pkts[i].status != 0)
            continue;
        const struct p3dp_peer *peer = p3dp_find_peer(w->ctx, w->pkts[i].peer);
        if (!peer)
            continue;
        struct p3_iobuf *b = &w->wan_out[k];
        if (b->data != w->pkts[i].out_buf) {
            memcpy(b->data, w->pkts[i].out_buf, w->pkts[i].out_len);
        }
        b->len = w->pkts[i].out_len;
        b->family = peer->cfg.family;
        b->port = peer->cfg.remote_port;
        memcpy(b->addr, peer->cfg.remote_addr, 16);
        k++;
    }
    if (k) {
        int sent = out->ops->tx_burst(out, w->wan_out, (unsigned)k);
        if (sent < 0)
            w->stats.io_errors++;
        else
            w->stats.wan_tx_packets += (uint64_t)sent;
    }
}

/* ---- WAN -> LAN ------------------------------------------------------ */

static void wan_to_lan(p3dp_worker *w, struct p3_io *in)
{
    int n = in->ops->rx_burst(in, w->wan_in, WORKER_BURST);
    if (n <= 0) {
        if (n < 0)
            w->stats.io_errors++;
        return;
    }
    w->stats.wan_rx_packets += (uint64_t)n;
    for (int i = 0; i < n; i++) {
        p3dp_pkt *p = &w->pkts[i];
        memset(p, 0, sizeof(*p));
        p->in_buf = w->wan_in[i].data;
        p->in_len = w->wan_in[i].len;
        p->out_buf = w->lan_out[i].data;
        p->out_cap = w->lan_out[i].cap;
        p->family = w->wan_in[i].family;
        p->port = w->wan_in[i].port;
        memcpy(p->addr, w->wan_in[i].addr, 16);
    }
    p3dp_open_burst(w->ctx, w->pkts, (size_t)n, in->open_flags);
    if (w->flows)
        p3dp_flows_observe_burst(w->flows, w->pkts, (size_t)n, P3DP_FLOW_TO_LAN, now_ms());
    unsigned k = 0;
    for (int i = 0; i < n; i++) {
        p3dp_pkt *p = &w->pkts[i];
        if (p->status != 0)
            continue;
        switch (p->kind) {
        case P3DP_KIND_DATA:
            w->lan_out[k].data = p->out_buf;
            w->lan_out[k].len = p->out_len;
            k++;
            break;
        case P3DP_KIND_CONTROL:
        case P3DP_KIND_IKE:
            ring_push(w, p);
            break;
        default:
            break;
        }
    }
    if (k) {
        int written = w->lan.ops->tx_burst(&w->lan, w->lan_out, k);
        if (written < 0)
            w->stats.io_errors++;
        else
            w->stats.lan_tx_packets += (uint64_t)written;
    }
    /* lan_out[].data may now point into pkts' out buffers: restore them. */
    bind_buffers(w->lan_out, w->buffers + (size_t)2 * WORKER_BURST * WORKER_BUF_BYTES);
}

/* ---- the loop ---------------------------------------------------------- */

static void park_if_asked(p3dp_worker *w)
{
    if (!atomic_load_explicit(&w->pause_req, memory_order_acquire))
        return;
    pthread_mutex_lock(&w->park_lock);
    w->parked = 1;
    pthread_cond_broadcast(&w->park_cond);
    while (atomic_load_explicit(&w->pause_req, memory_order_acquire) &&
           !atomic_load_explicit(&w->stop, memory_order_acquire))
        pthread_cond_wait(&w->park_cond, &w->park_lock);
    w->parked = 0;
    pthread_mutex_unlock(&w->park_lock);
}

static void *worker_main(void *arg)
{
    p3dp_worker *w = arg;
    struct pollfd fds[4];
    nfds_t nfds = 3;
    fds[0] = (struct pollfd){ .fd = w->lan.fd, .events = POLLIN };
    fds[1] = (struct pollfd){ .fd = w->wan.fd, .events = POLLIN };
    fds[2] = (struct pollfd){ .fd = w->wake_fd, .events = POLLIN };
    if (w->has_esp) {
        fds[3] = (struct pollfd){ .fd = w->esp.fd, .events = POLLIN };
        nfds = 4;
    }
    while (!atomic_load_explicit(&w->stop, memory_order_acquire)) {
        park_if_asked(w);
        int r = poll(fds, nfds, 200);
        if (r < 0) {
            if (errno != EINTR)
                w->stats.io_errors++;
            continue;
        }
        if (fds[2].revents & POLLIN) {
            uint64_t drain;
            if (read(w->wake_fd, &drain, sizeof(drain)) < 0 && errno != EAGAIN)
                w->stats.io_errors++;
        }
        /* Drain each ready source in bursts, alternating so that neither
         * direction starves the other. */
        for (int round = 0; round < 64; round++) {
            int busy = 0;
            if (fds[0].revents & POLLIN) {
                uint64_t before = w->stats.lan_rx_packets;
                lan_to_wan(w);
                busy |= w->stats.lan_rx_packets != before;
            }
            if (fds[1].revents & POLLIN) {
                uint64_t before = w->stats.wan_rx_packets;
                wan_to_lan(w, &w->wan);
                busy |= w->stats.wan_rx_packets != before;
            }
            if (nfds == 4 && (fds[3].revents & POLLIN)) {
                uint64_t before = w->stats.wan_rx_packets;
                wan_to_lan(w, &w->esp);
                busy |= w->stats.wan_rx_packets != before;
            }
            if (!busy || atomic_load_explicit(&w->pause_req, memory_order_relaxed))
                break;
        }
    }
    return NULL;
}

int p3dp_worker_start(p3dp_worker *w)
{
    if (w->started)
        return 0;
    atomic_store(&w->stop, 0);
    if (pthread_create(&w->thread, NULL, worker_main, w) != 0)
        return -901;
    w->started = 1;
    return 0;
}

void p3dp_worker_stop(p3dp_worker *w)
{
    if (!w->started)
        return;
    atomic_store(&w->stop, 1);
    uint64_t one = 1;
    if (write(w->wake_fd, &one, sizeof(one)) < 0) {
        /* the eventfd cannot be full with one pending write; poll times out anyway */
    }
    pthread_mutex_lock(&w->park_lock);
    pthread_cond_broadcast(&w->park_cond);
    pthread_mutex_unlock(&w->park_lock);
    pthread_join(w->thread, NULL);
    w->started = 0;
}

int p3dp_worker_pause(p3dp_worker *w)
{
    pthread_mutex_lock(&w->caller_lock);
    if (!w->started)
        return 0;
    atomic_store_explicit(&w->pause_req, 1, memory_order_release);
    uint64_t one = 1;
    if (write(w->wake_fd, &one, sizeof(one)) < 0 && errno != EAGAIN) {
        atomic_store(&w->pause_req, 0);
        pthread_mutex_unlock(&w->caller_lock);
        return -901;
    }
    pthread_mutex_lock(&w->park_lock);
    while (!w->parked)
        pthread_cond_wait(&w->park_cond, &w->park_lock);
    pthread_mutex_unlock(&w->park_lock);
    return 0;
}

void p3dp_worker_resume(p3dp_worker *w)
{
    if (w->started) {
        pthread_mutex_lock(&w->park_lock);
        atomic_store_explicit(&w->pause_req, 0, memory_order_release);
        pthread_cond_broadcast(&w->park_cond);
        pthread_mutex_unlock(&w->park_lock);
    }
    pthread_mutex_unlock(&w->caller_lock);
}

void p3dp_worker_get_stats(const p3dp_worker *w, p3dp_worker_stats *out)
{
    *out = w->stats;
}

int p3dp_worker_send(p3dp_worker *w, int via_esp, int family, const uint8_t *addr, uint16_t port,
                     const uint8_t *data, uint32_t len)
{
    /* Called from the control plane's thread while the worker may be inside
     * tx_burst: the backends' mmsg arrays belong to the worker, so this is
     * one plain sendto with its own address (sockets are thread-safe). */
    struct p3_io *out = via_esp && w->has_esp ? &w->esp : &w->wan;
    if (family != 4 && family != 6)
        return -214;
    struct sockaddr_storage ss;
    socklen_t sl = p3_io_sockaddr(&ss, out->family, family, addr, out == &w->esp ? 0 : port);
    return sendto(out->fd, data, len, 0, (struct sockaddr *)&ss, sl) == (ssize_t)len ? 0 : -901;
}

void p3dp_worker_free(p3dp_worker *w)
{
    if (!w)
        return;
    p3dp_worker_stop(w);
    if (w->wake_fd >= 0)
        close(w->wake_fd);
    if (w->notify_fd >= 0)
        close(w->notify_fd);
    p3_io_close(&w->lan);
    p3_io_close(&w->wan);
    p3_io_close(&w->esp);
    free(w->buffers);
    free(w->ring);
    pthread_mutex_destroy(&w->park_lock);
    pthread_cond_destroy(&w->park_cond);
    pthread_mutex_destroy(&w->caller_lock);
    free(w);
}
