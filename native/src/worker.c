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
    RING_SLOT_BYTES = 16384,
    /* DPDK ports: packets the control plane sends, queued for the worker
     * (a port's transmit queue has one owner, the worker thread). */
    TXQ_SLOTS = 64,
    TXQ_SLOT_BYTES = 4096,
    /* DPDK ports are polled; after this many empty polls the worker naps,
     * up to IDLE_NAP_MAX_US, so an idle gateway does not hold a core. */
    IDLE_POLLS = 1024,
    IDLE_NAP_MAX_US = 200
};

struct txq_slot {
    uint32_t len;
    uint8_t to_lan;
    uint8_t data[TXQ_SLOT_BYTES];
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
    int dpdk;          /* lan and wan are DPDK ports, polled (docs/dpdk.md) */
    p3dp_worker_config dpdk_cfg;  /* addresses and port for the headers of control sends */
    struct txq_slot *txq;
    atomic_uint txq_head, txq_tail;
    pthread_mutex_t txq_lock;     /* control-plane producers */
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
    struct p3_iobuf send[WORKER_BURST];  /* what goes out, in order */
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

static int fail(int *err, int rc)
{
    if (err)
        *err = rc;
    return rc;
}

p3dp_worker *p3dp_worker_new(p3dp_ctx *ctx, const p3dp_routes *routes, p3dp_flows *flows,
                             const p3dp_worker_config *cfg, int *err)
{
    int dpdk = cfg && cfg->dpdk_lan_port && *cfg->dpdk_lan_port;
    int rc;
    fail(err, 0);
    if (!ctx || !routes || !cfg || (!dpdk && (cfg->lan_fd < 0 || cfg->wan_fd < 0))) {
        fail(err, -214);
        return NULL;
    }
    p3dp_worker *w = calloc(1, sizeof(*w));
    if (!w) {
        fail(err, -213);
        return NULL;
    }
    w->ctx = ctx;
    w->routes = routes;
    w->flows = flows;
    w->lan.fd = w->wan.fd = w->esp.fd = -1;
    w->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    w->notify_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    pthread_mutex_init(&w->park_lock, NULL);
    pthread_cond_init(&w->park_cond, NULL);
    pthread_mutex_init(&w->caller_lock, NULL);
    pthread_mutex_init(&w->txq_lock, NULL);
    /* LAN in, WAN out, LAN out. WAN in needs none: the backends receive
     * into their own memory and point wan_in[] at it. */
    w->buffers = malloc((size_t)3 * WORKER_BURST * WORKER_BUF_BYTES);
    w->ring = calloc(RING_SLOTS, sizeof(struct ring_slot));
    if (w->wake_fd < 0 || w->notify_fd < 0 || !w->buffers || !w->ring) {
        p3dp_worker_free(w);
        fail(err, -213);
        return NULL;
    }
    if (dpdk) {
        w->txq = calloc(TXQ_SLOTS, sizeof(struct txq_slot));
        rc = w->txq ? p3_dpdk_ports_load(cfg, &w->lan, &w->wan) : -213;
        if (rc != 0) {
            p3dp_worker_free(w);
            fail(err, rc);
            return NULL;
        }
        w->dpdk = 1;
        w->dpdk_cfg = *cfg;
        /* the caller's strings are not kept */
        w->dpdk_cfg.dpdk_library = w->dpdk_cfg.eal_args = NULL;
        w->dpdk_cfg.dpdk_lan_port = w->dpdk_cfg.dpdk_wan_port = NULL;
    } else {
        if (p3_io_open(&w->lan, P3_IO_TUN, cfg->lan_fd, 0) != 0 ||
            p3_io_open(&w->wan, P3_IO_UDP, cfg->wan_fd, 0) != 0) {
            p3dp_worker_free(w);
            fail(err, -214);
            return NULL;
        }
        if (cfg->esp_fd >= 0) {
            if (p3_io_open(&w->esp, P3_IO_ESP, cfg->esp_fd, cfg->esp_family) != 0) {
                p3dp_worker_free(w);
                fail(err, -214);
                return NULL;
            }
            w->has_esp = 1;
        }
    }
    bind_buffers(w->lan_in, w->buffers);
    bind_buffers(w->wan_out, w->buffers + (size_t)1 * WORKER_BURST * WORKER_BUF_BYTES);
    bind_buffers(w->lan_out, w->buffers + (size_t)2 * WORKER_BURST * WORKER_BUF_BYTES);
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

/* Output buffers for a burst of m packets: the backend's own (DPDK mbufs,
 * written in place) when it lends them, else the worker's memory. */
static struct p3_iobuf *out_buffers(p3dp_worker *w, struct p3_io *out, struct p3_iobuf *mine, size_t m)
{
    if (!out->ops->tx_alloc)
        return mine;
    if ((size_t)out->ops->tx_alloc(out, mine, (unsigned)m) == m)
        return mine;
    /* the pool ran dry: this burst goes through the worker's memory */
    w->stats.io_errors++;
    bind_buffers(mine, mine == w->wan_out ? w->buffers + (size_t)1 * WORKER_BURST * WORKER_BUF_BYTES
                                          : w->buffers + (size_t)2 * WORKER_BURST * WORKER_BUF_BYTES);
    return mine;
}

/* Hands the send list to out; lent buffers not on it go back. */
static void transmit(p3dp_worker *w, struct p3_io *out, struct p3_iobuf *lent, size_t nlent, size_t k,
                     uint64_t *counter)
{
    if (k) {
        int sent = out->ops->tx_burst(out, w->send, (unsigned)k);
        if (sent < 0)
            w->stats.io_errors++;
        else
            *counter += (uint64_t)sent;
    }
    if (out->ops->tx_release)
        out->ops->tx_release(out, lent, (unsigned)nlent);
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
    /* Sealed packets go out of the UDP socket, or of the raw ESP socket in
     * ESP mode (the kernel writes the outer IP and UDP header), or of the
     * DPDK WAN port (the seal writes them: P3DP_OUT_IP). */
    struct p3_io *out = w->has_esp ? &w->esp : &w->wan;
    uint32_t flags = w->dpdk ? P3DP_OUT_IP : 0;
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
        p->peer = peer;
        p->kind = P3DP_KIND_DATA;
        m++;
    }
    if (!m)
        return;
    struct p3_iobuf *ob = out_buffers(w, out, w->wan_out, m);
    for (size_t i = 0; i < m; i++) {
        w->pkts[i].out_buf = ob[i].data;
        w->pkts[i].out_cap = ob[i].cap;
    }
    p3dp_seal_burst(w->ctx, w->pkts, m, flags);
    if (w->flows)
        p3dp_flows_observe_burst(w->flows, w->pkts, m, P3DP_FLOW_FROM_LAN, now_ms());
    size_t k = 0;
    for (size_t i = 0; i < m; i++) {
        if (w->pkts[i].status != 0)
            continue;
        const struct p3dp_peer *peer = p3dp_find_peer(w->ctx, w->pkts[i].peer);
        if (!peer)
            continue;
        struct p3_iobuf *b = &w->send[k++];
        *b = ob[i];
        ob[i].handle = NULL;          /* now the send list's */
        b->len = w->pkts[i].out_len;
        b->family = peer->cfg.family;
        b->port = peer->cfg.remote_port;
        memcpy(b->addr, peer->cfg.remote_addr, 16);
    }
    transmit(w, out, ob, m, k, &w->stats.wan_tx_packets);
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
    struct p3_iobuf *ob = out_buffers(w, &w->lan, w->lan_out, (size_t)n);
    for (int i = 0; i < n; i++) {
        p3dp_pkt *p = &w->pkts[i];
        memset(p, 0, sizeof(*p));
        p->in_buf = w->wan_in[i].data;
        p->in_len = w->wan_in[i].len;
        p->out_buf = ob[i].data;
        p->out_cap = ob[i].cap;
        p->family = w->wan_in[i].family;
        p->port = w->wan_in[i].port;
        memcpy(p->addr, w->wan_in[i].addr, 16);
    }
    p3dp_open_burst(w->ctx, w->pkts, (size_t)n, in->open_flags);
    if (w->flows)
        p3dp_flows_observe_burst(w->flows, w->pkts, (size_t)n, P3DP_FLOW_TO_LAN, now_ms());
    size_t k = 0;
    for (int i = 0; i < n; i++) {
        p3dp_pkt *p = &w->pkts[i];
        if (p->status != 0)
            continue;
        switch (p->kind) {
        case P3DP_KIND_DATA:
            w->send[k] = ob[i];
            ob[i].handle = NULL;
            /* the inner packet may start anywhere in the output buffer */
            w->send[k].data = p->out_buf;
            w->send[k].len = p->out_len;
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
    transmit(w, &w->lan, ob, (size_t)n, k, &w->stats.lan_tx_packets);
}

/* ---- control-plane sends on DPDK ports ------------------------------- */

/* Sends what the control plane queued (p3dp_worker_send / _send_lan), from
 * the worker thread that owns the ports' transmit queues. */
static void drain_txq(p3dp_worker *w)
{
    unsigned tail = atomic_load_explicit(&w->txq_tail, memory_order_relaxed);
    unsigned head = atomic_load_explicit(&w->txq_head, memory_order_acquire);
    for (; tail != head; tail++) {
        struct txq_slot *slot = &w->txq[tail % TXQ_SLOTS];
        struct p3_io *out = slot->to_lan ? &w->lan : &w->wan;
        w->send[0] = (struct p3_iobuf){ .data = slot->data, .len = slot->len, .cap = slot->len };
        if (out->ops->tx_burst(out, w->send, 1) != 1)
            w->stats.io_errors++;
        else if (slot->to_lan)
            w->stats.lan_tx_packets++;
        else
            w->stats.wan_tx_packets++;
    }
    atomic_store_explicit(&w->txq_tail, tail, memory_order_release);
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

/* Kernel backends: wait in poll() on the descriptors. */
static void kernel_loop(p3dp_worker *w)
{
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
}

/* DPDK ports: poll both in turn (l3fwd's main loop). A gateway with no
 * traffic naps a little longer each time, up to IDLE_NAP_MAX_US, and is back
 * to busy polling at the first packet. */
static void poll_loop(p3dp_worker *w)
{
    unsigned idle = 0, nap_us = 1;
    while (!atomic_load_explicit(&w->stop, memory_order_acquire)) {
        park_if_asked(w);
        uint64_t before = w->stats.lan_rx_packets + w->stats.wan_rx_packets;
        lan_to_wan(w);
        wan_to_lan(w, &w->wan);
        drain_txq(w);
        if (w->stats.lan_rx_packets + w->stats.wan_rx_packets != before) {
            idle = 0;
            nap_us = 1;
        } else if (++idle >= IDLE_POLLS) {
            struct timespec ts = { 0, (long)nap_us * 1000 };
            nanosleep(&ts, NULL);
            if (nap_us < IDLE_NAP_MAX_US)
                nap_us *= 2;
        }
    }
}

static void *worker_main(void *arg)
{
    p3dp_worker *w = arg;
    if (w->lan.ops->thread_enter)
        w->lan.ops->thread_enter(&w->lan);
    if (w->dpdk)
        poll_loop(w);
    else
        kernel_loop(w);
    if (w->lan.ops->thread_exit)
        w->lan.ops->thread_exit(&w->lan);
    if (w->wan.ops->thread_exit)
        w->wan.ops->thread_exit(&w->wan);
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
    if (w->dpdk) {
        const struct p3_io *ports[2] = { &w->lan, &w->wan };
        uint64_t *tx[2] = { &out->lan_tx_packets, &out->wan_tx_packets };
        for (int i = 0; i < 2; i++)
            if (ports[i]->ops->link_stats)
                ports[i]->ops->link_stats(ports[i], &out->neighbour_drops, &out->link_replies,
                                          &out->link_drops, &out->tx_full_drops, tx[i]);
    }
}

int p3dp_worker_is_dpdk(const p3dp_worker *w)
{
    return w->dpdk;
}

/* Queues a packet for the worker to send (DPDK ports). -213 when full. */
static int txq_put(p3dp_worker *w, int to_lan, const uint8_t *head, uint32_t head_len, const uint8_t *data,
                   uint32_t len)
{
    int rc = 0;
    if (head_len + len > TXQ_SLOT_BYTES)
        return -205;
    pthread_mutex_lock(&w->txq_lock);
    unsigned head_i = atomic_load_explicit(&w->txq_head, memory_order_relaxed);
    unsigned tail = atomic_load_explicit(&w->txq_tail, memory_order_acquire);
    if (head_i - tail >= TXQ_SLOTS) {
        rc = -213;
    } else {
        struct txq_slot *slot = &w->txq[head_i % TXQ_SLOTS];
        memcpy(slot->data, head, head_len);
        memcpy(slot->data + head_len, data, len);
        slot->len = head_len + len;
        slot->to_lan = (uint8_t)to_lan;
        atomic_store_explicit(&w->txq_head, head_i + 1, memory_order_release);
    }
    pthread_mutex_unlock(&w->txq_lock);
    return rc;
}

int p3dp_worker_send_lan(p3dp_worker *w, const uint8_t *data, uint32_t len)
{
    if (!w->dpdk)
        return -214;
    return txq_put(w, 1, NULL, 0, data, len);
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
    if (w->dpdk) {
        /* No kernel below: the outer IP (and UDP) header is written here. */
        uint8_t head[48];
        const p3dp_worker_config *c = &w->dpdk_cfg;
        if (family != c->family)
            return -214;
        uint32_t head_len = p3dp_write_ip_header(head, family, c->wan_addr, addr, via_esp ? 0 : c->udp_port,
                                                 via_esp ? 0 : port, data, len);
        return txq_put(w, 0, head, head_len, data, len);
    }
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
    free(w->txq);
    pthread_mutex_destroy(&w->txq_lock);
    pthread_mutex_destroy(&w->park_lock);
    pthread_cond_destroy(&w->park_cond);
    pthread_mutex_destroy(&w->caller_lock);
    free(w);
}
