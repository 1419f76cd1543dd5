/*
 * worker.c — the packet workers: bursts LAN -> route -> seal -> WAN and
 * WAN -> open -> LAN or the control queue (DESIGN.md §1, STYLE.md
 * ipsec-secgw). No Python on the packet path, no lock on the fast path.
 *
 * A p3dp_worker is one or more worker threads ("lanes"). Each lane owns a
 * dataplane context while it runs: with the kernel backends there is one
 * lane; on DPDK ports there may be several, lane i polling queue i of both
 * ports (RSS spreads the traffic) with its own context, flow table and
 * burst buffers. Lane i owns the peers with peer_id % n == i (the control
 * plane installs a peer in that lane's context only), so an SA's sequence
 * numbers, replay window and cipher state are only ever touched by one
 * thread. A packet received by another lane is handed to the owner through
 * a single-producer single-consumer ring (one per pair of lanes), as VPP
 * hands packets to an SA's thread.
 *
 * The control plane changes contexts (SAs, peers, keys) only while every
 * lane is parked: p3dp_worker_pause() asks the lanes to stop between two
 * bursts and waits until all have; p3dp_worker_resume() lets them go on.
 * The fast path only reads one atomic flag per loop.
 *
 * Queues (queues.h, docs/runtime.md "Queues"). Up, to Python: per lane,
 * one ring for control-channel packets (authenticated: they opened under a
 * data SA) and one for IKE, signalled by one eventfd
 * (p3dp_worker_notify_fd); p3dp_worker_recv empties the control rings
 * first. IKE passes a global and a per-source token bucket before it is
 * queued, so a flood of spoofed IKE_SA_INIT never takes the place of the
 * control channel. Down, from Python: per lane, one ring of control packets
 * to seal for a peer of that lane, LAN packets to inject and (DPDK) outer
 * packets to send; the lane empties it between bursts and before it parks,
 * so a control message never pauses the data path and is sealed with the
 * keys that were current when it was queued.
 */
#define _GNU_SOURCE /* struct mmsghdr in io_internal.h, pthread_setaffinity_np */
#include "p3dp.h"
#include "p3dp_internal.h"
#include "io_internal.h"
#include "queues.h"
#include "ike_cookie.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum {
    WORKER_BURST = 64,
    WORKER_BUF_BYTES = 65536,
    /* up: control-channel packets and IKE messages for Python */
    UP_CONTROL_SLOTS = 256,
    UP_IKE_SLOTS = 256,   /* holds the rate limit's whole burst */
    UP_SLOT_BYTES = 16384,
    /* down: what the control plane sends through a lane (a port's or a
     * socket's transmit path has one owner, the lane's thread) */
    DOWN_SLOTS = 1024,
    DOWN_SLOT_BYTES = 4096,
    /* down messages one drain takes at most, so data keeps flowing */
    DOWN_DRAIN_MAX = 256,
    /* IKE load: cookies are demanded for this long after a rate or queue drop */
    IKE_LOAD_MS = 1000,
    /* COOKIE replies a lane sends per second at most (bursts of half that).
     * Under a spoofed flood most go to addresses that never asked, and a
     * reply to an on-link address that never resolves holds the socket's
     * send buffer (the data's too) in the neighbour queue for seconds:
     * uncapped, a 100 kpps flood filled it and the session was lost. */
    COOKIE_REPLY_RATE = 1000,
    COOKIE_SECRET_MAX = 64,
    /* DPDK ports are polled; after this many empty polls a lane naps,
     * up to IDLE_NAP_MAX_US, so an idle gateway does not hold a core. */
    IDLE_POLLS = 1024,
    IDLE_NAP_MAX_US = 200,
    /* Packets in flight from one lane to another (a power of two). */
    HANDOFF_SLOTS = 1024
};

/* The IKE cookie secrets (ike_cookie.h): changed only while the lanes are parked. */
struct cookie_keys {
    int mode;                     /* P3DP_COOKIES_* */
    uint8_t version[2];           /* [0] current, [1] previous */
    size_t len[2];                /* 0: none */
    uint8_t secret[2][COOKIE_SECRET_MAX];
};

/* What a down message is (p3dp_worker_msg.kind on the down ring). */
enum { DOWN_CONTROL = 1, DOWN_LAN = 2, DOWN_WAN = 3 };

/* One lane's packets for another: single producer, single consumer. */
struct handoff {
    _Alignas(64) atomic_uint head;   /* next slot the producer writes */
    _Alignas(64) atomic_uint tail;   /* next slot the consumer reads */
    struct p3_iobuf item[HANDOFF_SLOTS];
};

struct lane {
    p3dp_worker *w;
    unsigned index;
    int cpu;
    p3dp_ctx *ctx;
    p3dp_flows *flows;
    struct p3_io lan, wan, esp;
    pthread_t thread;
    int started;
    /* to Python */
    struct p3_msgring up_control, up_ike;
    struct p3_ike_limit ike_limit;
    uint64_t ike_load_until_ms;   /* demand cookies until then */
    struct p3_ike_limit cookie_limit;   /* COOKIE replies (global bucket only) */
    uint8_t cookie_out[WORKER_BURST][48 + 4 + P3_IKE_COOKIE_REPLY_BYTES];
    struct p3_iobuf cookie_send[WORKER_BURST];
    /* from Python */
    struct p3_msgring down;
    pthread_mutex_t down_lock;    /* control-plane producers */
    /* from the other lanes: their LAN and WAN packets for peers of this lane */
    struct handoff *in_lan[P3DP_MAX_WORKERS], *in_wan[P3DP_MAX_WORKERS];
    /* burst buffers */
    struct p3_iobuf lan_in[WORKER_BURST], wan_out[WORKER_BURST];
    struct p3_iobuf wan_in[WORKER_BURST], lan_out[WORKER_BURST];
    struct p3_iobuf send[WORKER_BURST];  /* what goes out, in order */
    struct p3_iobuf mine[WORKER_BURST];  /* this burst's input for this lane */
    uint8_t handed[WORKER_BURST];        /* mine[i] came from another lane: free it after */
    p3dp_pkt pkts[WORKER_BURST];
    uint8_t stale_rst[WORKER_BURST][64];  /* RSTs for connections of an earlier session */
    uint8_t *buffers;
    p3dp_worker_stats stats;
};

struct p3dp_worker {
    unsigned nlanes;
    struct lane lanes[P3DP_MAX_WORKERS];
    const p3dp_routes *routes;
    int has_esp;
    int dpdk;          /* lanes poll DPDK ports (docs/dpdk.md) */
    p3dp_worker_config dpdk_cfg;  /* addresses and port for the headers of control sends */
    int wake_fd;       /* the kernel lane waits on it in poll: a pause request, a down message */
    struct cookie_keys cookies;
    int notify_fd;     /* Python waits on it: messages in a ring */
    int started;
    unsigned next_ring;           /* where p3dp_worker_recv looks first */
    atomic_int stop;
    atomic_int pause_req;
    unsigned parked;
    pthread_mutex_t park_lock;
    pthread_cond_t park_cond;
    pthread_mutex_t caller_lock;  /* serializes control-plane callers */
    atomic_uint_fast64_t pauses;          /* p3dp_worker_pause calls */
    atomic_uint_fast64_t send_queue_drops;  /* down messages refused: the lane's ring was full */
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

static uint8_t *lane_memory(struct lane *l, int which)
{
    return l->buffers + (size_t)which * WORKER_BURST * WORKER_BUF_BYTES;
}

static void fail(int *err, int rc)
{
    if (err)
        *err = rc;
}

static int lane_init(struct lane *l, p3dp_worker *w, unsigned index, p3dp_ctx *ctx, p3dp_flows *flows, int cpu)
{
    l->w = w;
    l->index = index;
    l->ctx = ctx;
    l->flows = flows;
    l->cpu = cpu;
    l->lan.fd = l->wan.fd = l->esp.fd = -1;
    /* LAN in, WAN out, LAN out. WAN in needs none: the backends receive
     * into their own memory and point wan_in[] at it. */
    l->buffers = malloc((size_t)3 * WORKER_BURST * WORKER_BUF_BYTES);
    pthread_mutex_init(&l->down_lock, NULL);
    uint64_t seed[2] = { 0, 0 };
    if (getrandom(seed, sizeof(seed), 0) != (ssize_t)sizeof(seed))
        seed[0] = now_ms() ^ (uintptr_t)l;   /* no entropy yet: still differs per run */
    p3_ike_limit_init(&l->ike_limit, seed[0], seed[1]);
    p3_ike_limit_init(&l->cookie_limit, seed[1], seed[0]);
    p3_ike_limit_set(&l->cookie_limit, COOKIE_REPLY_RATE, COOKIE_REPLY_RATE / 2, 0, 0);
    if (!l->buffers || p3_msgring_init(&l->up_control, UP_CONTROL_SLOTS, UP_SLOT_BYTES) != 0 ||
        p3_msgring_init(&l->up_ike, UP_IKE_SLOTS, UP_SLOT_BYTES) != 0 ||
        p3_msgring_init(&l->down, DOWN_SLOTS, DOWN_SLOT_BYTES) != 0)
        return -P3R_DP_TABLE_FULL;
    for (unsigned j = 0; j < w->nlanes; j++) {
        if (j == index)
            continue;
        l->in_lan[j] = calloc(1, sizeof(struct handoff));
        l->in_wan[j] = calloc(1, sizeof(struct handoff));
        if (!l->in_lan[j] || !l->in_wan[j])
            return -P3R_DP_TABLE_FULL;
    }
    bind_buffers(l->lan_in, lane_memory(l, 0));
    bind_buffers(l->wan_out, lane_memory(l, 1));
    bind_buffers(l->lan_out, lane_memory(l, 2));
    return 0;
}

p3dp_worker *p3dp_worker_new_lanes(const p3dp_worker_lanes *lanes, const p3dp_routes *routes,
                                   const p3dp_worker_config *cfg, int *err)
{
    int dpdk = cfg && cfg->dpdk_lan_port && *cfg->dpdk_lan_port;
    int rc = 0;
    fail(err, 0);
    if (!lanes || !routes || !cfg || lanes->n < 1 || lanes->n > P3DP_MAX_WORKERS ||
        (!dpdk && (lanes->n != 1 || cfg->lan_fd < 0 || cfg->wan_fd < 0))) {
        fail(err, -P3R_DP_BAD_ARGUMENT);
        return NULL;
    }
    for (unsigned i = 0; i < lanes->n; i++)
        if (!lanes->ctx[i]) {
            fail(err, -P3R_DP_BAD_ARGUMENT);
            return NULL;
        }
    p3dp_worker *w = calloc(1, sizeof(*w));
    if (!w) {
        fail(err, -P3R_DP_TABLE_FULL);
        return NULL;
    }
    w->nlanes = lanes->n;
    w->routes = routes;
    w->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    w->notify_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    pthread_mutex_init(&w->park_lock, NULL);
    pthread_cond_init(&w->park_cond, NULL);
    pthread_mutex_init(&w->caller_lock, NULL);
    for (unsigned i = 0; i < w->nlanes && rc == 0; i++)
        rc = lane_init(&w->lanes[i], w, i, lanes->ctx[i], lanes->flows[i], lanes->cpu[i]);
    if (rc == 0 && (w->wake_fd < 0 || w->notify_fd < 0))
        rc = -P3R_DP_TABLE_FULL;
    if (rc != 0) {
        p3dp_worker_free(w);
        fail(err, rc);
        return NULL;
    }
    struct lane *l0 = &w->lanes[0];
    if (dpdk) {
        struct p3_io lan[P3DP_MAX_WORKERS], wan[P3DP_MAX_WORKERS];
        rc = l0->ctx->backends->dpdk_ports_load(cfg, w->nlanes, lan, wan);
        if (rc != 0) {
            p3dp_worker_free(w);
            fail(err, rc);
            return NULL;
        }
        for (unsigned i = 0; i < w->nlanes; i++) {
            w->lanes[i].lan = lan[i];
            w->lanes[i].wan = wan[i];
        }
        w->dpdk = 1;
        w->dpdk_cfg = *cfg;
        /* the caller's strings are not kept */
        w->dpdk_cfg.dpdk_library = w->dpdk_cfg.eal_args = NULL;
        w->dpdk_cfg.dpdk_lan_port = w->dpdk_cfg.dpdk_wan_port = NULL;
    } else {
        if (p3_io_open(&l0->lan, P3_IO_TUN, cfg->lan_fd, 0) != 0 ||
            p3_io_open(&l0->wan, P3_IO_UDP, cfg->wan_fd, 0) != 0) {
            p3dp_worker_free(w);
            fail(err, -P3R_DP_BAD_ARGUMENT);
            return NULL;
        }
        if (cfg->esp_fd >= 0) {
            if (p3_io_open(&l0->esp, P3_IO_ESP, cfg->esp_fd, cfg->esp_family) != 0) {
                p3dp_worker_free(w);
                fail(err, -P3R_DP_BAD_ARGUMENT);
                return NULL;
            }
            w->has_esp = 1;
        }
    }
    return w;
}

p3dp_worker *p3dp_worker_new(p3dp_ctx *ctx, const p3dp_routes *routes, p3dp_flows *flows,
                             const p3dp_worker_config *cfg, int *err)
{
    p3dp_worker_lanes one;
    memset(&one, 0, sizeof(one));
    one.n = 1;
    one.ctx[0] = ctx;
    one.flows[0] = flows;
    one.cpu[0] = -1;
    return p3dp_worker_new_lanes(&one, routes, cfg, err);
}

/* ---- the rings to Python --------------------------------------------- */

/* Queues an opened control packet or an IKE message on ring; counts a drop
 * when it is full. 1 when queued. */
static int up_push(struct p3_msgring *ring, const p3dp_pkt *pkt, uint64_t *drops)
{
    const uint8_t *data = pkt->out_buf;
    uint32_t len = pkt->out_len;
    if (pkt->kind == P3DP_KIND_IKE) {
        data = pkt->in_buf + pkt->payload_off;
        len = pkt->in_len - pkt->payload_off;
    }
    p3dp_worker_msg info;
    memset(&info, 0, sizeof(info));
    info.kind = pkt->kind;
    info.peer = pkt->peer;
    info.family = pkt->family;
    info.port = pkt->port;
    memcpy(info.addr, pkt->addr, 16);
    if (p3_msgring_put(ring, &info, NULL, 0, data, len) != 0) {
        (*drops)++;
        return 0;
    }
    return 1;
}

static void notify_control_plane(struct lane *l)
{
    uint64_t one = 1;
    if (write(l->w->notify_fd, &one, sizeof(one)) < 0 && errno != EAGAIN)
        l->stats.io_errors++;
}

/* The first lane from `start` on with a message on its control ring (ike = 0)
 * or IKE ring (ike = 1), or NULL. */
static struct lane *ring_with_message(p3dp_worker *w, unsigned start, int ike)
{
    for (unsigned k = 0; k < w->nlanes; k++) {
        struct lane *l = &w->lanes[(start + k) % w->nlanes];
        if (p3_msgring_count(ike ? &l->up_ike : &l->up_control))
            return l;
    }
    return NULL;
}

/* Control-channel packets first (they are authenticated and carry the
 * sessions' rekeys and heartbeats), then IKE. */
static struct p3_msgring *next_message(p3dp_worker *w)
{
    for (int ike = 0; ike < 2; ike++) {
        struct lane *l = ring_with_message(w, w->next_ring, ike);
        if (l) {
            /* the lanes take turns, so a busy one does not hide the others' messages */
            w->next_ring = (l->index + 1) % w->nlanes;
            return ike ? &l->up_ike : &l->up_control;
        }
    }
    return NULL;
}

int p3dp_worker_recv(p3dp_worker *w, uint8_t *buf, size_t cap, p3dp_worker_msg *info)
{
    struct p3_msgring *ring = next_message(w);
    if (!ring) {
        uint64_t drain;
        if (read(w->notify_fd, &drain, sizeof(drain)) < 0 && errno != EAGAIN)
            return -P3R_OS_ERROR;
        /* a message may have landed between the check and the drain */
        ring = next_message(w);
        if (!ring)
            return 0;
    }
    const uint8_t *data;
    const p3dp_worker_msg *slot = p3_msgring_peek(ring, 0, &data);
    if (slot->len > cap)
        return -P3R_DP_TOO_BIG;
    memcpy(buf, data, slot->len);
    *info = *slot;
    p3_msgring_pop(ring, 1);
    return (int)info->len;
}

int p3dp_worker_notify_fd(const p3dp_worker *w)
{
    return w->notify_fd;
}

/* ---- hand-off between lanes ------------------------------------------- */

static int handoff_push(struct handoff *h, const struct p3_iobuf *b)
{
    unsigned head = atomic_load_explicit(&h->head, memory_order_relaxed);
    unsigned tail = atomic_load_explicit(&h->tail, memory_order_acquire);
    if (head - tail >= HANDOFF_SLOTS)
        return -1;
    h->item[head % HANDOFF_SLOTS] = *b;
    atomic_store_explicit(&h->head, head + 1, memory_order_release);
    return 0;
}

/* Moves up to room handed-in packets into l->mine[from..]: how many. */
static unsigned handoff_take(struct lane *l, struct handoff **inbox, unsigned from, unsigned room)
{
    unsigned got = 0;
    for (unsigned j = 0; j < l->w->nlanes && got < room; j++) {
        struct handoff *h = inbox[j];
        if (!h)
            continue;
        unsigned tail = atomic_load_explicit(&h->tail, memory_order_relaxed);
        unsigned head = atomic_load_explicit(&h->head, memory_order_acquire);
        for (; tail != head && got < room; tail++, got++) {
            l->mine[from + got] = h->item[tail % HANDOFF_SLOTS];
            l->handed[from + got] = 1;
        }
        atomic_store_explicit(&h->tail, tail, memory_order_release);
    }
    return got;
}

/* Hands b to the lane owning its peer (that lane's inbox from this one);
 * dropped and counted when the inbox is full. */
static void hand_to(struct lane *l, struct p3_io *in, struct handoff **owner_inbox, struct p3_iobuf *b)
{
    /* Kept first: once it is in the ring the owner may free it at once. */
    in->ops->rx_keep(in, b);
    if (handoff_push(owner_inbox[l->index], b) != 0) {
        in->ops->buf_free(in, b);
        l->stats.handoff_drops++;
        return;
    }
    l->stats.handoffs++;
}

/* Frees what other lanes handed in, once processed. */
static void free_handed(struct lane *l, struct p3_io *io, unsigned n)
{
    for (unsigned i = 0; i < n; i++)
        if (l->handed[i]) {
            io->ops->buf_free(io, &l->mine[i]);
            l->handed[i] = 0;
        }
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
 * written in place) when it lends them, else the lane's memory. */
static struct p3_iobuf *out_buffers(struct lane *l, struct p3_io *out, struct p3_iobuf *mine, size_t m)
{
    if (!out->ops->tx_alloc)
        return mine;
    if ((size_t)out->ops->tx_alloc(out, mine, (unsigned)m) == m)
        return mine;
    /* the pool ran dry: this burst goes through the lane's memory */
    l->stats.io_errors++;
    bind_buffers(mine, lane_memory(l, mine == l->wan_out ? 1 : 2));
    return mine;
}

/* Hands the send list to out; lent buffers not on it go back. */
static void transmit(struct lane *l, struct p3_io *out, struct p3_iobuf *lent, size_t nlent, size_t k,
                     uint64_t *counter)
{
    if (k) {
        int sent = out->ops->tx_burst(out, l->send, (unsigned)k);
        if (sent < 0)
            l->stats.io_errors++;
        else
            *counter += (uint64_t)sent;
    }
    if (out->ops->tx_release)
        out->ops->tx_release(out, lent, (unsigned)nlent);
}

/* TCP segments from the LAN that no session could carry and no flow knows
 * belong to connections of an earlier session (the daemon restarted, or the
 * session was lost): a RST back makes the LAN host give up now instead of at
 * its own timeout (spec §2.1.7 1), docs/flows.md "After a restart"). */
static void reset_stale(struct lane *l, size_t m)
{
    uint64_t now = now_ms();
    unsigned k = 0;
    for (size_t i = 0; i < m; i++) {
        const p3dp_pkt *p = &l->pkts[i];
        if (p->status == 0 || p->kind != P3DP_KIND_DATA)
            continue;
        int len = p3dp_flows_reset_stale(l->flows, p->peer, p->in_buf, p->in_len, now, l->stale_rst[k],
                                         sizeof(l->stale_rst[k]));
        if (len <= 0)
            continue;
        l->send[k] = (struct p3_iobuf){ .data = l->stale_rst[k], .len = (uint32_t)len,
                                        .cap = sizeof(l->stale_rst[k]) };
        k++;
    }
    if (!k)
        return;
    int sent = l->lan.ops->tx_burst(&l->lan, l->send, k);
    if (sent < 0)
        l->stats.io_errors++;
    else
        l->stats.lan_tx_packets += (uint64_t)sent;
}

/* Seals l->pkts[0..m) (peer and input filled in) and sends them out of the
 * WAN: the UDP socket, or the raw ESP socket in ESP mode (the kernel writes
 * the outer IP and UDP header), or the DPDK WAN port (the seal writes them:
 * P3DP_OUT_IP). observe: show them to the flow tracker (LAN traffic; the
 * control plane's own packets are not enterprise connections). How many
 * were handed to the WAN. */
static size_t seal_and_send(struct lane *l, size_t m, int observe)
{
    p3dp_worker *w = l->w;
    struct p3_io *out = w->has_esp ? &l->esp : &l->wan;
    uint32_t flags = w->dpdk ? P3DP_OUT_IP : 0;
    struct p3_iobuf *ob = out_buffers(l, out, l->wan_out, m);
    for (size_t i = 0; i < m; i++) {
        l->pkts[i].out_buf = ob[i].data;
        l->pkts[i].out_cap = ob[i].cap;
    }
    p3dp_seal_burst(l->ctx, l->pkts, m, flags);
    if (observe && l->flows)
        p3dp_flows_observe_burst(l->flows, l->pkts, m, P3DP_FLOW_FROM_LAN, now_ms());
    size_t k = 0;
    for (size_t i = 0; i < m; i++) {
        if (l->pkts[i].status != 0)
            continue;
        struct p3_iobuf *b = &l->send[k++];
        *b = ob[i];
        ob[i].handle = NULL;          /* now the send list's */
        b->len = l->pkts[i].out_len;
        b->family = l->pkts[i].family;    /* the seal wrote the destination */
        b->port = l->pkts[i].port;
        memcpy(b->addr, l->pkts[i].addr, 16);
    }
    transmit(l, out, ob, m, k, &l->stats.wan_tx_packets);
    return k;
}

static void lan_to_wan(struct lane *l)
{
    p3dp_worker *w = l->w;
    int n = l->lan.ops->rx_burst(&l->lan, l->lan_in, WORKER_BURST);
    if (n < 0) {
        l->stats.io_errors++;
        n = 0;
    }
    l->stats.lan_rx_packets += (uint64_t)n;
    size_t m = 0;
    for (int i = 0; i < n; i++) {
        int family;
        uint8_t dst[16];
        inner_destination(l->lan_in[i].data, l->lan_in[i].len, &family, dst);
        uint32_t peer = family ? p3dp_route_lookup(w->routes, family, dst) : P3DP_NO_PEER;
        if (peer == P3DP_NO_PEER) {
            l->stats.no_route_drops++;
            continue;
        }
        unsigned owner = p3dp_lane_of(peer, w->nlanes);
        if (owner != l->index) {
            struct p3_iobuf b = l->lan_in[i];
            memcpy(b.addr, &peer, sizeof(peer));   /* the route's answer travels with it */
            hand_to(l, &l->lan, w->lanes[owner].in_lan, &b);
            continue;
        }
        l->mine[m] = l->lan_in[i];
        memcpy(l->mine[m].addr, &peer, sizeof(peer));
        l->handed[m++] = 0;
    }
    if (w->nlanes > 1)
        m += handoff_take(l, l->in_lan, (unsigned)m, (unsigned)(WORKER_BURST - m));
    if (!m)
        return;
    for (size_t i = 0; i < m; i++) {
        p3dp_pkt *p = &l->pkts[i];
        memset(p, 0, sizeof(*p));
        p->in_buf = l->mine[i].data;
        p->in_len = l->mine[i].len;
        memcpy(&p->peer, l->mine[i].addr, sizeof(p->peer));
        p->kind = P3DP_KIND_DATA;
    }
    size_t sent = seal_and_send(l, m, 1);
    if (l->flows && sent < m)
        reset_stale(l, m);
    if (w->nlanes > 1)
        free_handed(l, &l->lan, (unsigned)m);
}

/* ---- WAN -> LAN ------------------------------------------------------ */

/* The lane owning the session a received outer packet (P3DP_IN_IP) belongs
 * to: found in the lanes' contexts by sender address and port. IKE messages
 * and packets of no session stay where they are. Contexts change only while
 * every lane is parked, so reading another lane's peer table is safe. */
static unsigned wan_owner(const struct lane *l, const struct p3_iobuf *b)
{
    struct p3dp_outer o;
    uint8_t addr[16];
    if (p3dp_parse_outer(b->data, b->len, 0, &o) != 0 || o.ike)
        return l->index;                 /* not ours to place, or IKE behind the non-ESP marker */
    int family = o.family;
    uint16_t port = o.src_port;
    memset(addr, 0, sizeof(addr));
    memcpy(addr, o.src, family == 6 ? 16 : 4);
    for (unsigned k = 0; k < l->w->nlanes; k++) {
        unsigned j = (l->index + k) % l->w->nlanes;
        if (p3dp_find_peer_by_addr(l->w->lanes[j].ctx, family, addr, port))
            return j;
    }
    return l->index;
}

/* ---- IKE admission: rate limits and cookies (queues.h, ike_cookie.h) --- */

/* 1 when cookie (cookie_len octets) is what this worker gives the request v from (family, addr). */
static int cookie_valid(const struct cookie_keys *k, const struct p3_ike_init *v, int family, const uint8_t *addr)
{
    if (!v->cookie || v->cookie_len != P3_IKE_COOKIE_BYTES)
        return 0;
    for (int i = 0; i < 2; i++) {
        uint8_t expected[P3_IKE_COOKIE_BYTES];
        if (!k->len[i] || v->cookie[0] != k->version[i])
            continue;
        if (p3dp_ike_cookie(k->secret[i], k->len[i], k->version[i], v->nonce, v->nonce_len, family, addr, v->spi_i,
                            expected) != 0)
            return 0;
        uint8_t diff = 0;                  /* constant time: the cookie is a MAC */
        for (unsigned j = 0; j < P3_IKE_COOKIE_BYTES; j++)
            diff |= (uint8_t)(expected[j] ^ v->cookie[j]);
        return diff == 0;
    }
    return 0;
}

/* Writes a COOKIE reply to p's sender into the lane's next reply slot (sent after the burst). */
static void cookie_reply(struct lane *l, const p3dp_pkt *p, const struct p3_ike_init *v, unsigned *nreplies,
                         uint64_t now)
{
    p3dp_worker *w = l->w;
    const struct cookie_keys *k = &w->cookies;
    if (*nreplies >= WORKER_BURST || !p3_ike_limit_allow(&l->cookie_limit, p->family, p->addr, now)) {
        l->stats.ike_rate_drops++;
        return;
    }
    uint8_t cookie[P3_IKE_COOKIE_BYTES];
    if (p3dp_ike_cookie(k->secret[0], k->len[0], k->version[0], v->nonce, v->nonce_len, p->family, p->addr, v->spi_i,
                        cookie) != 0)
        return;
    uint8_t *buf = l->cookie_out[*nreplies];
    uint8_t ike[4 + P3_IKE_COOKIE_REPLY_BYTES];
    memset(ike, 0, 4);                     /* the non-ESP marker (RFC 3948) */
    p3_ike_cookie_reply(v, cookie, ike + 4);
    uint32_t len = 0;
    if (w->dpdk) {
        /* no kernel below: the outer header is written here, as for the control plane's IKE */
        const p3dp_worker_config *c = &w->dpdk_cfg;
        if (p->family != c->family)
            return;
        len = p3dp_write_ip_header(buf, p->family, c->wan_addr, p->addr, c->udp_port, p->port, ike, sizeof(ike));
    }
    memcpy(buf + len, ike, sizeof(ike));
    len += sizeof(ike);
    struct p3_iobuf *b = &l->cookie_send[(*nreplies)++];
    memset(b, 0, sizeof(*b));
    b->data = buf;
    b->len = b->cap = len;
    b->family = p->family;
    b->port = p->port;
    memcpy(b->addr, p->addr, 16);
    l->stats.ike_cookies_sent++;
}

/* Whether the IKE message p may go up to the control plane. Under load (or
 * always, by configuration) an IKE_SA_INIT request must bring a valid cookie
 * back: without one it is answered with a cookie here; with one it has shown
 * its source address is real and passes the per-source limit only.
 * Everything else passes both rate limits. */
static int ike_admit(struct lane *l, const p3dp_pkt *p, unsigned *nreplies, uint64_t now)
{
    const struct cookie_keys *k = &l->w->cookies;
    int loaded = k->mode == P3DP_COOKIES_ALWAYS ||
                 (k->mode == P3DP_COOKIES_UNDER_LOAD &&
                  (now < l->ike_load_until_ms || p3_msgring_count(&l->up_ike) >= UP_IKE_SLOTS / 2));
    struct p3_ike_init v;
    if (loaded && k->len[0] && p3_ike_parse_init(p->in_buf + p->payload_off, p->in_len - p->payload_off, &v)) {
        if (!cookie_valid(k, &v, p->family, p->addr)) {
            cookie_reply(l, p, &v, nreplies, now);
            return 0;
        }
        if (!p3_ike_limit_allow_source(&l->ike_limit, p->family, p->addr, now)) {
            l->stats.ike_rate_drops++;
            return 0;
        }
        return 1;
    }
    if (!p3_ike_limit_allow(&l->ike_limit, p->family, p->addr, now)) {
        l->stats.ike_rate_drops++;
        l->ike_load_until_ms = now + IKE_LOAD_MS;
        return 0;
    }
    return 1;
}

static void wan_to_lan(struct lane *l, struct p3_io *in)
{
    p3dp_worker *w = l->w;
    int n = in->ops->rx_burst(in, l->wan_in, WORKER_BURST);
    if (n < 0) {
        l->stats.io_errors++;
        n = 0;
    }
    l->stats.wan_rx_packets += (uint64_t)n;
    unsigned m = 0;
    for (int i = 0; i < n; i++) {
        if (w->nlanes > 1) {
            unsigned owner = wan_owner(l, &l->wan_in[i]);
            if (owner != l->index) {
                hand_to(l, in, w->lanes[owner].in_wan, &l->wan_in[i]);
                continue;
            }
        }
        l->mine[m] = l->wan_in[i];
        l->handed[m++] = 0;
    }
    if (w->nlanes > 1)
        m += handoff_take(l, l->in_wan, m, WORKER_BURST - m);
    if (!m)
        return;
    struct p3_iobuf *ob = out_buffers(l, &l->lan, l->lan_out, m);
    for (unsigned i = 0; i < m; i++) {
        p3dp_pkt *p = &l->pkts[i];
        memset(p, 0, sizeof(*p));
        p->in_buf = l->mine[i].data;
        p->in_len = l->mine[i].len;
        p->out_buf = ob[i].data;
        p->out_cap = ob[i].cap;
        p->family = l->mine[i].family;
        p->port = l->mine[i].port;
        memcpy(p->addr, l->mine[i].addr, 16);
    }
    p3dp_open_burst(l->ctx, l->pkts, m, in->open_flags);
    if (l->flows)
        p3dp_flows_observe_burst(l->flows, l->pkts, m, P3DP_FLOW_TO_LAN, now_ms());
    size_t k = 0;
    int queued = 0;
    unsigned nreplies = 0;
    uint64_t now = 0;
    for (unsigned i = 0; i < m; i++) {
        p3dp_pkt *p = &l->pkts[i];
        if (p->status != 0)
            continue;
        switch (p->kind) {
        case P3DP_KIND_DATA:
            l->send[k] = ob[i];
            ob[i].handle = NULL;
            /* the inner packet may start anywhere in the output buffer */
            l->send[k].data = p->out_buf;
            l->send[k].len = p->out_len;
            k++;
            break;
        case P3DP_KIND_CONTROL:
            queued |= up_push(&l->up_control, p, &l->stats.control_queue_drops);
            break;
        case P3DP_KIND_IKE:
            /* Unauthenticated: limited before it costs the control plane anything. */
            if (!now)
                now = now_ms();
            if (!ike_admit(l, p, &nreplies, now))
                break;
            if (up_push(&l->up_ike, p, &l->stats.ike_queue_drops))
                queued = 1;
            else
                l->ike_load_until_ms = now + IKE_LOAD_MS;
            break;
        default:
            break;
        }
    }
    if (queued)
        notify_control_plane(l);
    transmit(l, &l->lan, ob, m, k, &l->stats.lan_tx_packets);
    if (nreplies && l->wan.ops->tx_burst(&l->wan, l->cookie_send, nreplies) < 0)
        l->stats.io_errors++;
    if (w->nlanes > 1)
        free_handed(l, in, m);
}

/* ---- what the control plane sends ------------------------------------ */

/* Sends the lane's down messages, oldest first: control packets are sealed
 * for their peer in bursts; LAN packets go out of the TUN or LAN port as
 * they are (the TUN backend adds its "no offload" virtio-net header); WAN
 * packets (DPDK: IKE with the outer header written) out of the WAN port. */
static void drain_down(struct lane *l, unsigned max)
{
    unsigned k = 0;
    size_t m = 0;
    for (; k < max; k++) {
        const uint8_t *data;
        const p3dp_worker_msg *info = p3_msgring_peek(&l->down, k, &data);
        if (!info)
            break;
        if (info->kind == DOWN_CONTROL) {
            p3dp_pkt *p = &l->pkts[m++];
            memset(p, 0, sizeof(*p));
            p->in_buf = data;
            p->in_len = info->len;
            p->peer = info->peer;
            p->kind = P3DP_KIND_DATA;
            if (m == WORKER_BURST) {
                l->stats.control_sent += seal_and_send(l, m, 0);
                m = 0;
            }
            continue;
        }
        /* in order: the control packets before it leave first */
        if (m) {
            l->stats.control_sent += seal_and_send(l, m, 0);
            m = 0;
        }
        struct p3_io *out = info->kind == DOWN_LAN ? &l->lan : &l->wan;
        l->send[0] = (struct p3_iobuf){ .data = (uint8_t *)data, .len = info->len, .cap = info->len };
        if (out->ops->tx_burst(out, l->send, 1) != 1)
            l->stats.io_errors++;
        else if (info->kind == DOWN_LAN)
            l->stats.lan_tx_packets++;
        else
            l->stats.wan_tx_packets++;
    }
    if (m)
        l->stats.control_sent += seal_and_send(l, m, 0);
    if (k)
        p3_msgring_pop(&l->down, k);
}

/* ---- the loops ---------------------------------------------------------- */

static void park_if_asked(struct lane *l)
{
    p3dp_worker *w = l->w;
    if (!atomic_load_explicit(&w->pause_req, memory_order_acquire))
        return;
    /* What was queued before the pause is sealed with the keys of before it. */
    drain_down(l, DOWN_SLOTS);
    pthread_mutex_lock(&w->park_lock);
    w->parked++;
    pthread_cond_broadcast(&w->park_cond);
    while (atomic_load_explicit(&w->pause_req, memory_order_acquire) &&
           !atomic_load_explicit(&w->stop, memory_order_acquire))
        pthread_cond_wait(&w->park_cond, &w->park_lock);
    w->parked--;
    pthread_mutex_unlock(&w->park_lock);
}

/* Kernel backends (one lane): wait in poll() on the descriptors. */
static void kernel_loop(struct lane *l)
{
    p3dp_worker *w = l->w;
    struct pollfd fds[4];
    nfds_t nfds = 3;
    fds[0] = (struct pollfd){ .fd = l->lan.fd, .events = POLLIN };
    fds[1] = (struct pollfd){ .fd = l->wan.fd, .events = POLLIN };
    fds[2] = (struct pollfd){ .fd = w->wake_fd, .events = POLLIN };
    if (w->has_esp) {
        fds[3] = (struct pollfd){ .fd = l->esp.fd, .events = POLLIN };
        nfds = 4;
    }
    while (!atomic_load_explicit(&w->stop, memory_order_acquire)) {
        park_if_asked(l);
        drain_down(l, DOWN_DRAIN_MAX);
        /* more down messages than one drain takes: look at the sockets, do not wait */
        int r = poll(fds, nfds, p3_msgring_count(&l->down) ? 0 : 200);
        if (r < 0) {
            if (errno != EINTR)
                l->stats.io_errors++;
            continue;
        }
        if (fds[2].revents & POLLIN) {
            uint64_t drain;
            if (read(w->wake_fd, &drain, sizeof(drain)) < 0 && errno != EAGAIN)
                l->stats.io_errors++;
        }
        /* Drain each ready source in bursts, alternating so that neither
         * direction starves the other. */
        for (int round = 0; round < 64; round++) {
            int busy = 0;
            drain_down(l, DOWN_DRAIN_MAX);
            if (fds[0].revents & POLLIN) {
                uint64_t before = l->stats.lan_rx_packets;
                lan_to_wan(l);
                busy |= l->stats.lan_rx_packets != before;
            }
            if (fds[1].revents & POLLIN) {
                uint64_t before = l->stats.wan_rx_packets;
                wan_to_lan(l, &l->wan);
                busy |= l->stats.wan_rx_packets != before;
            }
            if (nfds == 4 && (fds[3].revents & POLLIN)) {
                uint64_t before = l->stats.wan_rx_packets;
                wan_to_lan(l, &l->esp);
                busy |= l->stats.wan_rx_packets != before;
            }
            if (!busy || atomic_load_explicit(&w->pause_req, memory_order_relaxed))
                break;
        }
    }
}

/* DPDK ports: poll both queues of this lane in turn (l3fwd's main loop). A
 * lane with no traffic naps a little longer each time, up to
 * IDLE_NAP_MAX_US, and is back to busy polling at the first packet. */
static void poll_loop(struct lane *l)
{
    p3dp_worker *w = l->w;
    unsigned idle = 0, nap_us = 1;
    while (!atomic_load_explicit(&w->stop, memory_order_acquire)) {
        park_if_asked(l);
        uint64_t before = l->stats.lan_rx_packets + l->stats.wan_rx_packets + l->stats.handoffs;
        uint64_t sent_before = l->stats.wan_tx_packets + l->stats.lan_tx_packets;
        drain_down(l, DOWN_DRAIN_MAX);
        lan_to_wan(l);
        wan_to_lan(l, &l->wan);
        if (l->stats.lan_rx_packets + l->stats.wan_rx_packets + l->stats.handoffs != before ||
            l->stats.wan_tx_packets + l->stats.lan_tx_packets != sent_before) {
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

static void *lane_main(void *arg)
{
    struct lane *l = arg;
    char name[16];
    /* "p3-worker0": how top -H, perf and ps name the thread */
    snprintf(name, sizeof(name), "p3-worker%u", l->index);
    pthread_setname_np(pthread_self(), name);
    if (l->cpu >= 0) {
        cpu_set_t set;
        CPU_ZERO(&set);
        CPU_SET(l->cpu, &set);
        if (pthread_setaffinity_np(pthread_self(), sizeof(set), &set) != 0)
            l->stats.io_errors++;
    }
    if (l->lan.ops->thread_enter)
        l->lan.ops->thread_enter(&l->lan);
    if (l->w->dpdk)
        poll_loop(l);
    else
        kernel_loop(l);
    if (l->lan.ops->thread_exit)
        l->lan.ops->thread_exit(&l->lan);
    if (l->wan.ops->thread_exit)
        l->wan.ops->thread_exit(&l->wan);
    return NULL;
}

int p3dp_worker_start(p3dp_worker *w)
{
    if (w->started)
        return 0;
    atomic_store(&w->stop, 0);
    for (unsigned i = 0; i < w->nlanes; i++) {
        if (pthread_create(&w->lanes[i].thread, NULL, lane_main, &w->lanes[i]) != 0) {
            p3dp_worker_stop(w);
            return -P3R_OS_ERROR;
        }
        w->lanes[i].started = 1;
        w->started = 1;
    }
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
    for (unsigned i = 0; i < w->nlanes; i++)
        if (w->lanes[i].started) {
            pthread_join(w->lanes[i].thread, NULL);
            w->lanes[i].started = 0;
        }
    w->started = 0;
}

int p3dp_worker_pause(p3dp_worker *w)
{
    pthread_mutex_lock(&w->caller_lock);
    atomic_fetch_add_explicit(&w->pauses, 1, memory_order_relaxed);
    if (!w->started)
        return 0;
    atomic_store_explicit(&w->pause_req, 1, memory_order_release);
    uint64_t one = 1;
    if (write(w->wake_fd, &one, sizeof(one)) < 0 && errno != EAGAIN) {
        atomic_store(&w->pause_req, 0);
        pthread_mutex_unlock(&w->caller_lock);
        return -P3R_OS_ERROR;
    }
    pthread_mutex_lock(&w->park_lock);
    while (w->parked < w->nlanes)
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
    memset(out, 0, sizeof(*out));
    out->pauses = atomic_load_explicit(&w->pauses, memory_order_relaxed);
    out->send_queue_drops = atomic_load_explicit(&w->send_queue_drops, memory_order_relaxed);
    for (unsigned i = 0; i < w->nlanes; i++) {
        const struct lane *l = &w->lanes[i];
        const p3dp_worker_stats *s = &l->stats;
        out->lan_rx_packets += s->lan_rx_packets;
        out->lan_tx_packets += s->lan_tx_packets;
        out->wan_rx_packets += s->wan_rx_packets;
        out->wan_tx_packets += s->wan_tx_packets;
        out->no_route_drops += s->no_route_drops;
        out->control_queue_drops += s->control_queue_drops;
        out->io_errors += s->io_errors;
        out->handoffs += s->handoffs;
        out->handoff_drops += s->handoff_drops;
        out->control_sent += s->control_sent;
        out->ike_rate_drops += s->ike_rate_drops;
        out->ike_queue_drops += s->ike_queue_drops;
        out->ike_cookies_sent += s->ike_cookies_sent;
        if (!w->dpdk)
            continue;
        const struct p3_io *ports[2] = { &l->lan, &l->wan };
        uint64_t *tx[2] = { &out->lan_tx_packets, &out->wan_tx_packets };
        for (int k = 0; k < 2; k++)
            if (ports[k]->ops && ports[k]->ops->link_stats)
                ports[k]->ops->link_stats(ports[k], &out->neighbour_drops, &out->link_replies,
                                          &out->link_drops, &out->tx_full_drops, tx[k]);
    }
}

int p3dp_worker_is_dpdk(const p3dp_worker *w)
{
    return w->dpdk;
}

/* Queues a down message for lane l and wakes it. -P3R_DP_TABLE_FULL (counted) when its ring is full. */
static int down_put(p3dp_worker *w, struct lane *l, const p3dp_worker_msg *info, const uint8_t *head,
                    uint32_t head_len, const uint8_t *data, uint32_t len)
{
    pthread_mutex_lock(&l->down_lock);
    int rc = p3_msgring_put(&l->down, info, head, head_len, data, len);
    pthread_mutex_unlock(&l->down_lock);
    if (rc == -P3R_DP_TABLE_FULL)
        atomic_fetch_add_explicit(&w->send_queue_drops, 1, memory_order_relaxed);
    if (rc == 0 && !w->dpdk) {
        /* the kernel lane sleeps in poll(); DPDK lanes poll anyway */
        uint64_t one = 1;
        if (write(w->wake_fd, &one, sizeof(one)) < 0 && errno != EAGAIN)
            return -P3R_OS_ERROR;
    }
    return rc;
}

int p3dp_worker_send_control(p3dp_worker *w, uint32_t peer_id, const uint8_t *inner, uint32_t len)
{
    if (!inner || len == 0)
        return -P3R_DP_BAD_ARGUMENT;
    p3dp_worker_msg info;
    memset(&info, 0, sizeof(info));
    info.kind = DOWN_CONTROL;
    info.peer = peer_id;
    return down_put(w, &w->lanes[peer_id % w->nlanes], &info, NULL, 0, inner, len);
}

int p3dp_worker_send_lan(p3dp_worker *w, const uint8_t *data, uint32_t len)
{
    if (!data || len == 0)
        return -P3R_DP_BAD_ARGUMENT;
    p3dp_worker_msg info;
    memset(&info, 0, sizeof(info));
    info.kind = DOWN_LAN;
    return down_put(w, &w->lanes[0], &info, NULL, 0, data, len);
}

int p3dp_worker_send(p3dp_worker *w, int via_esp, int family, const uint8_t *addr, uint16_t port,
                     const uint8_t *data, uint32_t len)
{
    /* Called from the control plane's thread while the lane may be inside
     * tx_burst: the backends' mmsg arrays belong to the lane, so this is
     * one plain sendto with its own address (sockets are thread-safe). */
    struct lane *l0 = &w->lanes[0];
    struct p3_io *out = via_esp && w->has_esp ? &l0->esp : &l0->wan;
    if (family != 4 && family != 6)
        return -P3R_DP_BAD_ARGUMENT;
    if (w->dpdk) {
        /* No kernel below: the outer IP (and UDP) header is written here. */
        uint8_t head[48];
        const p3dp_worker_config *c = &w->dpdk_cfg;
        if (family != c->family)
            return -P3R_DP_BAD_ARGUMENT;
        uint32_t head_len = p3dp_write_ip_header(head, family, c->wan_addr, addr, via_esp ? 0 : c->udp_port,
                                                 via_esp ? 0 : port, data, len);
        p3dp_worker_msg info;
        memset(&info, 0, sizeof(info));
        info.kind = DOWN_WAN;
        return down_put(w, &w->lanes[0], &info, head, head_len, data, len);
    }
    struct sockaddr_storage ss;
    socklen_t sl = p3_io_sockaddr(&ss, out->family, family, addr, out == &l0->esp ? 0 : port);
    return sendto(out->fd, data, len, 0, (struct sockaddr *)&ss, sl) == (ssize_t)len ? 0 : -P3R_OS_ERROR;
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
    for (unsigned i = 0; i < w->nlanes; i++) {
        struct lane *l = &w->lanes[i];
        /* packets still waiting in hand-off rings go back to the port */
        for (unsigned j = 0; j < w->nlanes; j++) {
            struct handoff *hs[2] = { l->in_lan[j], l->in_wan[j] };
            struct p3_io *io[2] = { &l->lan, &l->wan };
            for (int d = 0; d < 2; d++) {
                if (!hs[d])
                    continue;
                unsigned tail = atomic_load(&hs[d]->tail), head = atomic_load(&hs[d]->head);
                for (; tail != head; tail++)
                    if (io[d]->ops && io[d]->ops->buf_free)
                        io[d]->ops->buf_free(io[d], &hs[d]->item[tail % HANDOFF_SLOTS]);
                free(hs[d]);
            }
        }
        p3_io_close(&l->lan);
        p3_io_close(&l->wan);
        p3_io_close(&l->esp);
        free(l->buffers);
        p3_msgring_free(&l->up_control);
        p3_msgring_free(&l->up_ike);
        p3_msgring_free(&l->down);
        pthread_mutex_destroy(&l->down_lock);
    }
    pthread_mutex_destroy(&w->park_lock);
    pthread_cond_destroy(&w->park_cond);
    pthread_mutex_destroy(&w->caller_lock);
    explicit_bzero(&w->cookies, sizeof(w->cookies));
    free(w);
}

int p3dp_worker_set_ike_limits(p3dp_worker *w, uint32_t global_rate, uint32_t global_burst, uint32_t source_rate,
                               uint32_t source_burst)
{
    int rc = p3dp_worker_pause(w);
    if (rc != 0)
        return rc;
    for (unsigned i = 0; i < w->nlanes; i++)
        p3_ike_limit_set(&w->lanes[i].ike_limit, global_rate, global_burst, source_rate, source_burst);
    p3dp_worker_resume(w);
    return 0;
}

int p3dp_worker_set_ike_cookies(p3dp_worker *w, int mode, uint8_t version, const uint8_t *secret, size_t secret_len)
{
    if (mode < P3DP_COOKIES_OFF || mode > P3DP_COOKIES_ALWAYS ||
        (mode != P3DP_COOKIES_OFF && (!secret || secret_len == 0 || secret_len > COOKIE_SECRET_MAX)))
        return -P3R_DP_BAD_ARGUMENT;
    int rc = p3dp_worker_pause(w);
    if (rc != 0)
        return rc;
    struct cookie_keys *k = &w->cookies;
    k->mode = mode;
    if (mode != P3DP_COOKIES_OFF &&
        !(k->len[0] == secret_len && k->version[0] == version && memcmp(k->secret[0], secret, secret_len) == 0)) {
        /* the current secret becomes the previous one: its cookies stay valid */
        memcpy(k->secret[1], k->secret[0], sizeof(k->secret[1]));
        k->len[1] = k->len[0];
        k->version[1] = k->version[0];
        memset(k->secret[0], 0, sizeof(k->secret[0]));
        memcpy(k->secret[0], secret, secret_len);
        k->len[0] = secret_len;
        k->version[0] = version;
    }
    p3dp_worker_resume(w);
    return 0;
}
