/*
 * ethdev.c — the DPDK port backend (docs/dpdk.md): the worker's LAN and WAN
 * I/O on two rte_ethdev ports instead of a TUN and a socket, in the style
 * of DPDK's l3fwd / ipsec-secgw (STYLE.md).
 *
 * Receive: rte_eth_rx_burst; each frame goes through the port's link layer
 * (netstack.c: ARP, neighbour discovery, echo) and the IP packets are handed
 * to the worker in place — bufs[].data points into the mbuf, behind the
 * Ethernet header — and the mbufs are freed at the next burst (the same
 * "valid until the next call" rule as the socket backends).
 *
 * Transmit: the worker borrows mbufs (tx_alloc) and seals or opens straight
 * into them; tx_burst finds the next hop's MAC, prepends the Ethernet header
 * in the mbuf's headroom (rte_pktmbuf_prepend: no copy) and calls
 * rte_eth_tx_burst. Buffers the worker filled in its own memory (control
 * packets from the control plane) are copied into an mbuf first.
 *
 * The LAN port carries inner IP packets; the WAN port whole outer IP packets
 * (the worker writes and parses the outer IP/UDP header itself:
 * P3DP_OUT_IP / P3DP_IN_IP). Each worker thread has its own queue on both
 * ports (RSS spreads received traffic over them) and registers with the EAL
 * so the mempool's per-lcore cache is used. The link layer's state (the
 * neighbour table) is the port's, shared by its queues under a spinlock
 * taken once per burst.
 */
#define ALLOW_EXPERIMENTAL_API    /* rte_thread_register (experimental in 22.11) */

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <rte_common.h>
#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_ethdev.h>
#include <rte_lcore.h>
#include <rte_mbuf.h>
#include <rte_mempool.h>
#include <rte_prefetch.h>

#include "p3dp.h"
#include "p3_backend.h"
#include "eal.h"
#include "netstack.h"

enum {
    BURST = P3_IO_MAX_BURST,
    RX_DESC = 1024,
    TX_DESC = 1024,
    POOL_MBUFS = 8191,            /* 2^n - 1: the mempool's best size */
    POOL_CACHE = 256,
    /* Room for the largest sealed frame of a 1500-octet LAN MTU with the
     * biggest padding bucket and the outer headers. */
    DATA_ROOM = RTE_PKTMBUF_HEADROOM + 2048,
    TX_RETRIES = 16,
    /* Packets held while their next hop is being resolved, as Linux's
     * unres_qlen does: the first packets to a new neighbour are not lost. */
    PENDING = 16,
    PENDING_MS = 3000,
};

/* One ethdev port: what its queues share. */
struct port {
    uint16_t id;
    uint16_t mtu;
    atomic_uint open_queues;      /* the last queue closed stops the port */
    struct rte_mempool *pool;
    pthread_spinlock_t ns_lock;   /* the link layer below */
    struct p3ns_port ns;
};

/* One queue of a port: a worker's p3_io state. */
struct portq {
    struct port *port;
    uint16_t q;
    struct rte_mbuf *held[BURST];  /* the last receive burst's IP packets */
    unsigned nheld;
    struct {
        struct rte_mbuf *m;
        uint64_t since_ms;
    } pending[PENDING];           /* waiting for a MAC, oldest first */
    unsigned npending;
    uint64_t neighbour_drops, link_drops, tx_full_drops, replies, late_sent;
};

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* Sends one frame the link layer wrote (a reply or a resolution request). */
static void send_link_frame(struct portq *p, const uint8_t *frame, uint32_t len)
{
    struct rte_mbuf *m = rte_pktmbuf_alloc(p->port->pool);
    char *dst;
    if (!m) {
        p->tx_full_drops++;
        return;
    }
    dst = rte_pktmbuf_append(m, (uint16_t)len);
    if (!dst) {
        rte_pktmbuf_free(m);
        return;
    }
    memcpy(dst, frame, len);
    if (rte_eth_tx_burst(p->port->id, p->q, &m, 1) != 1) {
        rte_pktmbuf_free(m);
        p->tx_full_drops++;
        return;
    }
    p->replies++;
}

static void release_held(struct portq *p)
{
    for (unsigned i = 0; i < p->nheld; i++)
        if (p->held[i])                 /* NULL: handed to another worker (rx_keep) */
            rte_pktmbuf_free(p->held[i]);
    p->nheld = 0;
}

static void release_pending(struct portq *p)
{
    for (unsigned i = 0; i < p->npending; i++)
        rte_pktmbuf_free(p->pending[i].m);
    p->npending = 0;
}

static void flush_pending(struct portq *p, uint64_t now);

static int port_rx(struct p3_io *io, struct p3_iobuf *bufs, unsigned n)
{
    struct portq *p = io->state;
    struct port *port = p->port;
    struct rte_mbuf *mbufs[BURST];
    uint8_t reply[P3NS_MAX_REPLY];
    uint64_t now = 0;
    unsigned k = 0;
    uint16_t got;

    release_held(p);
    got = rte_eth_rx_burst(port->id, p->q, mbufs, (uint16_t)RTE_MIN(n, (unsigned)BURST));
    if (!got && !p->npending)
        return 0;
    now = now_ms();
    /* The headers of the whole burst are read next: start their loads now (l3fwd does the same). */
    for (uint16_t i = 0; i < got; i++)
        rte_prefetch0(rte_pktmbuf_mtod(mbufs[i], void *));
    pthread_spin_lock(&port->ns_lock);
    for (uint16_t i = 0; i < got; i++) {
        struct rte_mbuf *m = mbufs[i];
        const uint8_t *frame = rte_pktmbuf_mtod(m, const uint8_t *);
        uint32_t reply_len = 0, l3_off = 0, l3_len = 0;
        enum p3ns_verdict v;
        if (m->nb_segs != 1) {              /* no scattered receive is configured */
            p->link_drops++;
            rte_pktmbuf_free(m);
            continue;
        }
        v = p3ns_input(&port->ns, frame, rte_pktmbuf_data_len(m), now, reply, sizeof(reply), &reply_len, &l3_off,
                       &l3_len);
        if (v == P3NS_IP) {
            struct p3_iobuf *b = &bufs[k++];
            b->data = (uint8_t *)frame + l3_off;
            b->len = l3_len;
            b->cap = l3_len;
            b->family = port->ns.family;
            b->port = 0;
            b->handle = m;
            p->held[p->nheld++] = m;
            continue;
        }
        if (v == P3NS_REPLY)
            send_link_frame(p, reply, reply_len);
        else if (v == P3NS_DROP)
            p->link_drops++;
        rte_pktmbuf_free(m);
    }
    if (p->npending)
        flush_pending(p, now);
    pthread_spin_unlock(&port->ns_lock);
    return (int)k;
}

static int port_tx_alloc(struct p3_io *io, struct p3_iobuf *bufs, unsigned n)
{
    struct portq *p = io->state;
    struct rte_mbuf *mbufs[BURST];
    if (n > BURST)
        n = BURST;
    if (rte_pktmbuf_alloc_bulk(p->port->pool, mbufs, n) != 0)
        return 0;
    for (unsigned i = 0; i < n; i++) {
        bufs[i].data = rte_pktmbuf_mtod(mbufs[i], uint8_t *);
        bufs[i].cap = rte_pktmbuf_tailroom(mbufs[i]);
        bufs[i].len = 0;
        bufs[i].handle = mbufs[i];
    }
    return (int)n;
}

/* Another worker takes this received buffer: the next burst must not free it. */
static void port_rx_keep(struct p3_io *io, struct p3_iobuf *buf)
{
    struct portq *p = io->state;
    for (unsigned i = 0; i < p->nheld; i++)
        if (p->held[i] == buf->handle) {
            p->held[i] = NULL;
            return;
        }
}

static void port_buf_free(struct p3_io *io, struct p3_iobuf *buf)
{
    (void)io;
    rte_pktmbuf_free(buf->handle);
    buf->handle = NULL;
}

static void port_tx_release(struct p3_io *io, struct p3_iobuf *bufs, unsigned n)
{
    (void)io;
    for (unsigned i = 0; i < n; i++)
        if (bufs[i].handle) {
            rte_pktmbuf_free(bufs[i].handle);
            bufs[i].handle = NULL;
        }
}

/* The IP destination of a packet the worker hands over (inner on the LAN,
 * outer on the WAN): NULL when it is not an IP packet of the port's family. */
static const uint8_t *ip_destination(const struct port *p, const uint8_t *ip, uint32_t len)
{
    if (p->ns.family == 4 && len >= 20 && ip[0] >> 4 == 4)
        return ip + 16;
    if (p->ns.family == 6 && len >= 40 && ip[0] >> 4 == 6)
        return ip + 24;
    return NULL;
}

/* The next hop's MAC for m (an IP packet), and the Ethernet header in its
 * headroom: 1 ready to send, 0 no MAC yet (a request went out when due),
 * -1 not sendable (dropped by the caller). */
static int frame(struct portq *p, struct rte_mbuf *m, uint64_t now)
{
    struct port *port = p->port;
    uint8_t req[P3NS_MAX_REPLY], mac[6];
    uint32_t req_len = 0;
    uint8_t *eth;
    const uint8_t *dst = ip_destination(port, rte_pktmbuf_mtod(m, const uint8_t *), rte_pktmbuf_data_len(m));
    if (!dst || rte_pktmbuf_data_len(m) > port->mtu)
        return -1;
    int known = p3ns_resolve(&port->ns, dst, now, mac, req, sizeof(req), &req_len);
    if (req_len)
        send_link_frame(p, req, req_len);    /* first ask, a retry, or a stale entry re-confirmed */
    if (!known)
        return 0;
    eth = (uint8_t *)rte_pktmbuf_prepend(m, P3NS_ETH_HLEN);
    if (!eth)
        return -1;
    p3ns_eth_header(eth, mac, port->ns.mac, port->ns.family == 6 ? P3NS_ETHERTYPE_IPV6 : P3NS_ETHERTYPE_IPV4);
    return 1;
}

static void send_frames(struct portq *p, struct rte_mbuf **out, unsigned k, unsigned *sent_out)
{
    unsigned sent = 0;
    for (unsigned tries = 0; sent < k && tries < TX_RETRIES; tries++)
        sent += rte_eth_tx_burst(p->port->id, p->q, out + sent, (uint16_t)(k - sent));
    if (sent < k) {
        p->tx_full_drops += k - sent;
        rte_pktmbuf_free_bulk(out + sent, k - sent);
    }
    if (sent_out)
        *sent_out += sent;
}

/* Sends what waited for a neighbour that is now known; drops what waited
 * longer than PENDING_MS (counted as neighbour drops). */
/* Caller holds the port's ns_lock. */
static void flush_pending(struct portq *p, uint64_t now)
{
    struct rte_mbuf *out[PENDING];
    unsigned k = 0, kept = 0;
    for (unsigned i = 0; i < p->npending; i++) {
        struct rte_mbuf *m = p->pending[i].m;
        int r = now - p->pending[i].since_ms > PENDING_MS ? -1 : frame(p, m, now);
        if (r > 0) {
            out[k++] = m;
        } else if (r < 0) {
            p->neighbour_drops++;
            rte_pktmbuf_free(m);
        } else {
            p->pending[kept++] = p->pending[i];
        }
    }
    p->npending = kept;
    if (k) {
        unsigned sent = 0;
        send_frames(p, out, k, &sent);
        p->late_sent += sent;
    }
}

static int port_tx(struct p3_io *io, struct p3_iobuf *bufs, unsigned n)
{
    struct portq *p = io->state;
    struct rte_mbuf *out[BURST];
    uint64_t now = now_ms();
    unsigned k = 0, sent = 0;

    if (n > BURST)
        n = BURST;
    pthread_spin_lock(&p->port->ns_lock);
    for (unsigned i = 0; i < n; i++) {
        struct p3_iobuf *b = &bufs[i];
        struct rte_mbuf *m = b->handle;
        b->handle = NULL;
        if (!m) {
            /* the worker's own memory: copied once into an mbuf */
            char *room;
            m = rte_pktmbuf_alloc(p->port->pool);
            if (!m || b->len > rte_pktmbuf_tailroom(m)) {
                rte_pktmbuf_free(m);
                p->tx_full_drops++;
                continue;
            }
            room = rte_pktmbuf_append(m, (uint16_t)b->len);
            memcpy(room, b->data, b->len);
        } else {
            m->data_off = (uint16_t)(b->data - (uint8_t *)m->buf_addr);
            m->data_len = (uint16_t)b->len;
            m->pkt_len = b->len;
        }
        int r = frame(p, m, now);
        if (r > 0) {
            out[k++] = m;
        } else if (r == 0 && p->npending < PENDING) {
            p->pending[p->npending].m = m;     /* sent once the neighbour answers */
            p->pending[p->npending++].since_ms = now;
        } else {
            if (r == 0)
                p->neighbour_drops++;
            else
                p->link_drops++;
            rte_pktmbuf_free(m);
        }
    }
    pthread_spin_unlock(&p->port->ns_lock);
    send_frames(p, out, k, &sent);
    return (int)sent;
}

/* Whether this thread registered itself (and so unregisters at exit). */
static __thread int registered;

static void port_thread_enter(struct p3_io *io)
{
    (void)io;
    /* An lcore id for the worker thread: the mempool's per-lcore cache. */
    if (rte_lcore_id() != LCORE_ID_ANY)
        return;
    if (rte_thread_register() == 0)
        registered = 1;
    else
        fprintf(stderr, "p3hw dpdk: the worker thread could not register with the EAL: %s "
                        "(mbufs come from the shared pool)\n", rte_strerror(rte_errno));
}

static void port_thread_exit(struct p3_io *io)
{
    struct portq *p = io->state;
    release_held(p);
    release_pending(p);
    if (registered) {
        rte_thread_unregister();
        registered = 0;
    }
}

static void port_stats(const struct p3_io *io, uint64_t *neighbour_drops, uint64_t *replies, uint64_t *link_drops,
                       uint64_t *tx_full, uint64_t *late_tx)
{
    const struct portq *p = io->state;
    *late_tx += p->late_sent;
    *neighbour_drops += p->neighbour_drops;
    *replies += p->replies;
    *link_drops += p->link_drops;
    *tx_full += p->tx_full_drops;
}

static void port_close(struct p3_io *io)
{
    struct portq *p = io->state;
    if (!p)
        return;
    release_held(p);
    release_pending(p);
    if (atomic_fetch_sub(&p->port->open_queues, 1) == 1) {
        rte_eth_dev_stop(p->port->id);
        rte_eth_dev_close(p->port->id);
        pthread_spin_destroy(&p->port->ns_lock);
        free(p->port);
    }
    free(p);
    io->state = NULL;
}

static const struct p3_io_ops lan_ops = {
    .name = "dpdk-lan", .rx_burst = port_rx, .tx_burst = port_tx, .tx_alloc = port_tx_alloc,
    .tx_release = port_tx_release, .thread_enter = port_thread_enter, .thread_exit = port_thread_exit,
    .rx_keep = port_rx_keep, .buf_free = port_buf_free, .link_stats = port_stats, .close = port_close,
};
/* The WAN port's thread hooks are the LAN port's (one registration per thread). */
static const struct p3_io_ops wan_ops = {
    .name = "dpdk-wan", .rx_burst = port_rx, .tx_burst = port_tx, .tx_alloc = port_tx_alloc,
    .tx_release = port_tx_release, .thread_exit = port_thread_exit, .rx_keep = port_rx_keep,
    .buf_free = port_buf_free, .link_stats = port_stats, .close = port_close,
};

static struct rte_mempool *shared_pool(void)
{
    static struct rte_mempool *pool;
    if (!pool)
        pool = rte_pktmbuf_pool_create("p3_ports", POOL_MBUFS, POOL_CACHE, 0, DATA_ROOM, (int)rte_socket_id());
    return pool;
}

/* Configures and starts one port with nq receive and nq transmit queues;
 * with more than one, RSS spreads received traffic over them by addresses
 * and ports when the device can (net_af_packet spreads by its kernel
 * fanout, qpairs=N in its vdev arguments). */
static int port_up(const char *name, int lan, const struct p3dp_worker_config *cfg, unsigned nq, struct port **out)
{
    struct rte_eth_conf conf;
    struct rte_eth_dev_info info;
    struct rte_ether_addr mac;
    struct port *p;
    uint16_t id;
    const uint8_t *addr = lan ? cfg->lan_addr : cfg->wan_addr;
    const uint8_t *gw = lan ? (cfg->has_lan_gateway ? cfg->lan_gateway : NULL)
                            : (cfg->has_wan_gateway ? cfg->wan_gateway : NULL);
    unsigned prefix = lan ? cfg->lan_prefix_len : cfg->wan_prefix_len;

    if (!name || !*name || rte_eth_dev_get_port_by_name(name, &id) != 0) {
        fprintf(stderr, "p3hw dpdk: no DPDK port named '%s' (the EAL arguments must bring it up, "
                        "e.g. --vdev=net_af_packet0,iface=eth1)\n", name ? name : "");
        return -P3R_DPDK_PORT;
    }
    if (rte_eth_dev_info_get(id, &info) != 0 || info.max_rx_queues < nq || info.max_tx_queues < nq) {
        fprintf(stderr, "p3hw dpdk: port %s has fewer than %u queues in each direction, one per worker "
                        "(net_af_packet: add qpairs=%u to its --vdev)\n", name, nq, nq);
        return -P3R_DPDK_PORT;
    }
    p = calloc(1, sizeof(*p));
    if (!p)
        return -P3R_DPDK_PORT;
    p->id = id;
    p->mtu = cfg->mtu ? cfg->mtu : 1500;
    p->pool = shared_pool();
    pthread_spin_init(&p->ns_lock, PTHREAD_PROCESS_PRIVATE);
    memset(&conf, 0, sizeof(conf));
    if (nq > 1 && info.flow_type_rss_offloads) {
        conf.rxmode.mq_mode = RTE_ETH_MQ_RX_RSS;
        conf.rx_adv_conf.rss_conf.rss_hf = (RTE_ETH_RSS_IP | RTE_ETH_RSS_UDP | RTE_ETH_RSS_TCP) &
                                           info.flow_type_rss_offloads;
    }
    if (!p->pool) {
        fprintf(stderr, "p3hw dpdk: no memory for the packet pool (raise -m in the EAL arguments)\n");
        goto fail;
    }
    if (rte_eth_dev_configure(id, (uint16_t)nq, (uint16_t)nq, &conf) != 0) {
        fprintf(stderr, "p3hw dpdk: port %s cannot be configured with %u queue pair(s)\n", name, nq);
        goto fail;
    }
    for (uint16_t q = 0; q < nq; q++)
        if (rte_eth_rx_queue_setup(id, q, RX_DESC, rte_eth_dev_socket_id(id), NULL, p->pool) != 0 ||
            rte_eth_tx_queue_setup(id, q, TX_DESC, rte_eth_dev_socket_id(id), NULL) != 0) {
            fprintf(stderr, "p3hw dpdk: port %s: queue %u cannot be set up\n", name, q);
            goto fail;
        }
    /* Not every driver can set the MTU (net_ring cannot): the worker never
     * sends more than p->mtu anyway. */
    (void)rte_eth_dev_set_mtu(id, p->mtu);
    if (rte_eth_dev_start(id) != 0) {
        fprintf(stderr, "p3hw dpdk: port %s does not start\n", name);
        goto fail;
    }
    /* Neighbour discovery uses multicast; a LAN port routes for hosts that
     * address it by its MAC, which the link layer filters itself. */
    (void)rte_eth_allmulticast_enable(id);
    if (rte_eth_macaddr_get(id, &mac) != 0 ||
        p3ns_port_init(&p->ns, mac.addr_bytes, cfg->family, addr, prefix, gw, lan) != 0) {
        fprintf(stderr, "p3hw dpdk: port %s: bad address or prefix\n", name);
        rte_eth_dev_stop(id);
        goto fail;
    }
    *out = p;
    return 0;
fail:
    pthread_spin_destroy(&p->ns_lock);
    free(p);
    return -P3R_DPDK_PORT;
}

/* queue q of port p as a p3_io. */
static int queue_io(struct port *p, uint16_t q, const struct p3_io_ops *ops, int family, uint32_t open_flags,
                    struct p3_io *io)
{
    struct portq *pq = calloc(1, sizeof(*pq));
    if (!pq)
        return -P3R_DPDK_PORT;
    pq->port = p;
    pq->q = q;
    atomic_fetch_add(&p->open_queues, 1);
    memset(io, 0, sizeof(*io));
    io->ops = ops;
    io->fd = -1;
    io->family = family;
    io->open_flags = open_flags;
    io->state = pq;
    return 0;
}

int p3_dpdk_ports_open(const struct p3dp_worker_config *cfg, unsigned nq, struct p3_io *lan, struct p3_io *wan);

/* The entry point the worker's loader looks up after dlopen. */
int p3_dpdk_ports_open(const struct p3dp_worker_config *cfg, unsigned nq, struct p3_io *lan, struct p3_io *wan)
{
    struct port *lp = NULL, *wp = NULL;
    int rc;
    if ((cfg->family != 4 && cfg->family != 6) || nq < 1 || nq > P3DP_MAX_WORKERS)
        return -P3R_DPDK_PORT;
    if (p3_dpdk_eal_up(cfg->eal_args, "dpdk") != 0)
        return -P3R_DPDK_UNAVAILABLE;
    if (cfg->dpdk_lan_port && cfg->dpdk_wan_port && strcmp(cfg->dpdk_lan_port, cfg->dpdk_wan_port) == 0) {
        fprintf(stderr, "p3hw dpdk: the LAN and WAN ports must be two ports (both are '%s')\n",
                cfg->dpdk_lan_port);
        return -P3R_DPDK_PORT;
    }
    rc = port_up(cfg->dpdk_lan_port, 1, cfg, nq, &lp);
    if (rc == 0)
        rc = port_up(cfg->dpdk_wan_port, 0, cfg, nq, &wp);
    if (rc != 0) {
        if (lp) {
            rte_eth_dev_stop(lp->id);
            pthread_spin_destroy(&lp->ns_lock);
            free(lp);
        }
        return rc;
    }
    for (unsigned q = 0; q < nq && rc == 0; q++) {
        rc = queue_io(lp, (uint16_t)q, &lan_ops, cfg->family, 0, &lan[q]);
        if (rc == 0)
            rc = queue_io(wp, (uint16_t)q, &wan_ops, cfg->family, P3DP_IN_IP, &wan[q]);
    }
    /* (no memory for a few bytes: the process is in worse trouble than this) */
    return rc;
}
