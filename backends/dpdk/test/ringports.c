/*
 * ringports.c — ring-backed DPDK ports for the forwarding benchmark
 * (bench/dpdk_forward.py) and the in-process tests of the port backend
 * (tests/integration/test_dpdk_ring_ports.py), docs/dpdk.md. Not used by
 * the gateway: built as its own test library, build/libp3dpdk_test.so,
 * linked against libp3dpdk.so for the one EAL of the process.
 *
 * Two ethdev ports made from rings (rte_eth_from_rings): "p3b_lan" and
 * "p3b_wan". The gateway's worker polls them like any DPDK port; a traffic
 * thread on another core keeps the LAN port's receive ring full of inner
 * packets built from templates (whole Ethernet frames) and drains what the
 * worker transmits on the WAN port, counting it. The worker's core is the
 * one measured: it does the whole P3 path (link layer, route lookup, seal
 * with padding and relocation, outer IP/UDP, next-hop MAC). For the other
 * direction the traffic thread seals fresh packets itself (with the
 * dataplane's own p3dp_seal_burst, handed over as a function pointer, on a
 * context of its own: the far peer) onto the WAN port's receive ring and
 * counts what the worker opens and sends out of the LAN port.
 */
#define _GNU_SOURCE               /* pthread_setaffinity_np */
#define ALLOW_EXPERIMENTAL_API    /* rte_thread_register (experimental in 22.11) */

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <rte_eal.h>
#include <rte_eth_ring.h>
#include <rte_ethdev.h>
#include <rte_lcore.h>
#include <rte_mbuf.h>
#include <rte_mempool.h>
#include <rte_ring.h>

#include "eal.h"
#include "p3dp.h"
#include "ringports.h"

enum { RING_SLOTS = 1024, FEED = 32, DRAIN = 64, MAX_TEMPLATES = 64, TEMPLATE_BYTES = 2048 };

enum { MAX_Q = 8 };

static struct {
    unsigned nq;
    struct rte_ring *lan_rx[MAX_Q], *lan_tx[MAX_Q], *wan_rx[MAX_Q], *wan_tx[MAX_Q];
    struct rte_mempool *pool;
    pthread_t thread;
    atomic_int stop;
    int running;
    unsigned ntemplates;
    uint32_t lens[MAX_TEMPLATES];
    uint8_t frames[MAX_TEMPLATES][TEMPLATE_BYTES];
    uint64_t fed, sunk, sunk_bytes;
    uint64_t ring_full;           /* the receive ring had no room for a burst: the worker is the slower side */
    int cpu;
    int lan_port, wan_port;
    /* the sealing traffic source (p3_dpdk_bench_start_sealed) */
    size_t (*seal)(p3dp_ctx *ctx, p3dp_pkt *pkts, size_t n, uint32_t flags);
    p3dp_ctx *seal_ctx;
    uint32_t seal_peer;
    uint8_t eth[14];
} b = { .lan_port = -1, .wan_port = -1 };

/* How often the traffic thread found the receive ring too full for a burst
 * (since the last start): non-zero means the worker, not the traffic
 * source, set the pace. */
uint64_t p3_dpdk_bench_ring_full(void)
{
    return b.ring_full;
}

/* Tests: a port the test side drives itself (the far end of a net_memif
 * pair, say), one queue each way. Its id, or -1. */
int p3_dpdk_test_port_up(const char *name, uint8_t *mac)
{
    struct rte_eth_conf conf;
    struct rte_ether_addr addr;
    uint16_t id;
    memset(&conf, 0, sizeof(conf));
    if (!b.pool || rte_eth_dev_get_port_by_name(name, &id) != 0 ||
        rte_eth_dev_configure(id, 1, 1, &conf) != 0 ||
        rte_eth_rx_queue_setup(id, 0, 256, rte_eth_dev_socket_id(id), NULL, b.pool) != 0 ||
        rte_eth_tx_queue_setup(id, 0, 256, rte_eth_dev_socket_id(id), NULL) != 0 || rte_eth_dev_start(id) != 0 ||
        rte_eth_macaddr_get(id, &addr) != 0)
        return -1;
    memcpy(mac, addr.addr_bytes, 6);
    return id;
}

/* Tests: one frame out of a test port. 0, or -1. */
int p3_dpdk_test_send(int port, const uint8_t *frame, uint32_t len)
{
    struct rte_mbuf *m = b.pool ? rte_pktmbuf_alloc(b.pool) : NULL;
    char *room;
    if (!m || len > TEMPLATE_BYTES || !(room = rte_pktmbuf_append(m, (uint16_t)len))) {
        rte_pktmbuf_free(m);
        return -1;
    }
    memcpy(room, frame, len);
    if (rte_eth_tx_burst((uint16_t)port, 0, &m, 1) != 1) {
        rte_pktmbuf_free(m);
        return -1;
    }
    return 0;
}

/* Copies a received frame out and frees it: its length, -1 when it does not fit. */
static int copy_out(struct rte_mbuf *m, uint8_t *buf, uint32_t cap)
{
    uint32_t len = rte_pktmbuf_pkt_len(m);
    int rc = -1;
    if (len <= cap && m->nb_segs == 1) {
        memcpy(buf, rte_pktmbuf_mtod(m, const uint8_t *), len);
        rc = (int)len;
    }
    rte_pktmbuf_free(m);
    return rc;
}

/* Tests: the next frame a test port received: its length, 0 none, -1 too long. */
int p3_dpdk_test_recv(int port, uint8_t *buf, uint32_t cap)
{
    struct rte_mbuf *m;
    if (rte_eth_rx_burst((uint16_t)port, 0, &m, 1) != 1)
        return 0;
    return copy_out(m, buf, cap);
}

static struct rte_ring *ring_of(int ring, unsigned q)
{
    if (q >= b.nq)
        return NULL;
    switch (ring) {
    case 0: return b.lan_rx[q];   /* what the LAN port receives on queue q */
    case 1: return b.lan_tx[q];   /* what it sent on queue q */
    case 2: return b.wan_rx[q];
    case 3: return b.wan_tx[q];
    default: return NULL;
    }
}

/* Tests: one frame onto a port's receive ring (0 LAN, 2 WAN). 0, or -1. */
int p3_dpdk_ring_put(int ring, unsigned q, const uint8_t *frame, uint32_t len)
{
    struct rte_ring *r = ring_of(ring, q);
    struct rte_mbuf *m;
    char *room;
    if (!r || !b.pool || len > TEMPLATE_BYTES || !(m = rte_pktmbuf_alloc(b.pool)))
        return -1;
    room = rte_pktmbuf_append(m, (uint16_t)len);
    if (!room) {
        rte_pktmbuf_free(m);
        return -1;
    }
    if (len)
        memcpy(room, frame, len);
    if (rte_ring_enqueue(r, m) != 0) {     /* the worker may take it at once */
        rte_pktmbuf_free(m);
        return -1;
    }
    return 0;
}

/* Tests: the next frame a port sent (1 LAN, 3 WAN), copied to buf: its
 * length, 0 when none, -1 when it does not fit (it is dropped). */
int p3_dpdk_ring_get(int ring, unsigned q, uint8_t *buf, uint32_t cap)
{
    struct rte_ring *r = ring_of(ring, q);
    struct rte_mbuf *m;
    if (!r)
        return -1;
    if (rte_ring_dequeue(r, (void **)&m) != 0)
        return 0;
    return copy_out(m, buf, cap);
}

/* EAL up, nq rings each way on each port, two ring ports of nq queues.
 * 0, or -1 with the reason on stderr. */
int p3_dpdk_bench_ports(const char *eal_args, unsigned nq)
{
    unsigned flags = RING_F_SP_ENQ | RING_F_SC_DEQ;
    char name[RTE_RING_NAMESIZE];
    struct rte_ring **sets[4] = { b.lan_rx, b.lan_tx, b.wan_rx, b.wan_tx };
    static const char *const set_names[4] = { "lrx", "ltx", "wrx", "wtx" };
    if (p3_dpdk_eal_up(eal_args, "bench") != 0)
        return -1;
    if (b.pool)
        return nq == b.nq ? 0 : -1;
    if (nq < 1 || nq > MAX_Q)
        return -1;
    b.nq = nq;
    for (unsigned s = 0; s < 4; s++)
        for (unsigned q = 0; q < nq; q++) {
            snprintf(name, sizeof(name), "p3b_%s%u", set_names[s], q);
            sets[s][q] = rte_ring_create(name, RING_SLOTS, (int)rte_socket_id(), flags);
            if (!sets[s][q]) {
                fprintf(stderr, "p3hw bench: no memory for the rings (raise -m)\n");
                return -1;
            }
        }
    b.pool = rte_pktmbuf_pool_create("p3b_gen", 4095, 256, 0, RTE_PKTMBUF_HEADROOM + TEMPLATE_BYTES,
                                     (int)rte_socket_id());
    if (!b.pool) {
        fprintf(stderr, "p3hw bench: no memory for the pool (raise -m)\n");
        return -1;
    }
    b.lan_port = rte_eth_from_rings("p3b_lan", b.lan_rx, nq, b.lan_tx, nq, (unsigned)rte_socket_id());
    b.wan_port = rte_eth_from_rings("p3b_wan", b.wan_rx, nq, b.wan_tx, nq, (unsigned)rte_socket_id());
    if (b.lan_port < 0 || b.wan_port < 0) {
        fprintf(stderr, "p3hw bench: cannot make ring ports\n");
        return -1;
    }
    return 0;
}

/* The ports' names as the EAL knows them (the worker opens them by name)
 * and their MACs: 0, or -1. Each name buffer holds RTE_ETH_NAME_MAX_LEN. */
int p3_dpdk_bench_port(int wan, char *name, uint8_t *mac)
{
    struct rte_ether_addr addr;
    int id = wan ? b.wan_port : b.lan_port;
    if (id < 0 || rte_eth_dev_get_name_by_port((uint16_t)id, name) != 0 ||
        rte_eth_macaddr_get((uint16_t)id, &addr) != 0)
        return -1;
    memcpy(mac, addr.addr_bytes, 6);
    return 0;
}

static void feed(struct rte_ring *lan_rx)
{
    struct rte_mbuf *m[FEED];
    static unsigned next;
    if (rte_ring_free_count(lan_rx) < FEED) {
        b.ring_full++;
        return;
    }
    if (rte_pktmbuf_alloc_bulk(b.pool, m, FEED) != 0)
        return;
    for (unsigned i = 0; i < FEED; i++) {
        unsigned t = next++ % b.ntemplates;
        memcpy(rte_pktmbuf_append(m[i], (uint16_t)b.lens[t]), b.frames[t], b.lens[t]);
    }
    unsigned put = rte_ring_enqueue_burst(lan_rx, (void **)m, FEED, NULL);
    b.fed += put;
    if (put < FEED)
        rte_pktmbuf_free_bulk(m + put, FEED - put);
}

static void drain(struct rte_ring *r, int count)
{
    struct rte_mbuf *m[DRAIN];
    unsigned got = rte_ring_dequeue_burst(r, (void **)m, DRAIN, NULL);
    if (!got)
        return;
    if (count) {
        b.sunk += got;
        for (unsigned i = 0; i < got; i++)
            b.sunk_bytes += rte_pktmbuf_pkt_len(m[i]);
    }
    rte_pktmbuf_free_bulk(m, got);
}

/* Seals FEED fresh packets (the templates are inner packets) into mbufs,
 * Ethernet header first, onto the WAN port's receive ring. */
static void feed_sealed(struct rte_ring *wan_rx)
{
    struct rte_mbuf *m[FEED], *ok[FEED];
    p3dp_pkt pkts[FEED];
    static unsigned next;
    unsigned k = 0;
    if (rte_ring_free_count(wan_rx) < FEED) {
        b.ring_full++;
        return;
    }
    if (rte_pktmbuf_alloc_bulk(b.pool, m, FEED) != 0)
        return;
    memset(pkts, 0, sizeof(pkts));
    for (unsigned i = 0; i < FEED; i++) {
        unsigned t = next++ % b.ntemplates;
        pkts[i].in_buf = b.frames[t];
        pkts[i].in_len = b.lens[t];
        pkts[i].out_buf = rte_pktmbuf_mtod(m[i], uint8_t *) + sizeof(b.eth);
        pkts[i].out_cap = rte_pktmbuf_tailroom(m[i]) - (uint32_t)sizeof(b.eth);
        pkts[i].peer = b.seal_peer;
        pkts[i].kind = P3DP_KIND_DATA;
    }
    b.seal(b.seal_ctx, pkts, FEED, P3DP_OUT_IP);
    for (unsigned i = 0; i < FEED; i++) {
        if (pkts[i].status != 0) {
            rte_pktmbuf_free(m[i]);
            continue;
        }
        memcpy(rte_pktmbuf_mtod(m[i], uint8_t *), b.eth, sizeof(b.eth));
        rte_pktmbuf_append(m[i], (uint16_t)(sizeof(b.eth) + pkts[i].out_len));
        ok[k++] = m[i];
    }
    unsigned put = rte_ring_enqueue_burst(wan_rx, (void **)ok, k, NULL);
    b.fed += put;
    if (put < k)
        rte_pktmbuf_free_bulk(ok + put, k - put);
}

static void *traffic(void *arg)
{
    (void)arg;
    if (b.cpu >= 0) {
        cpu_set_t set;
        CPU_ZERO(&set);
        CPU_SET(b.cpu, &set);
        pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
    }
    rte_thread_register();
    while (!atomic_load_explicit(&b.stop, memory_order_relaxed))
        for (unsigned q = 0; q < b.nq; q++) {
            if (b.seal) {                /* WAN -> LAN: count what leaves the LAN port */
                feed_sealed(b.wan_rx[q]);
                drain(b.lan_tx[q], 1);
                drain(b.wan_tx[q], 0);
            } else {                     /* LAN -> WAN */
                feed(b.lan_rx[q]);
                drain(b.wan_tx[q], 1);
                drain(b.lan_tx[q], 0);
            }
        }
    rte_thread_unregister();
    return NULL;
}

/* Copies the templates in and resets the counters: 0, or -1. */
static int load_templates(const uint8_t *frames, const uint32_t *lens, unsigned n, int cpu)
{
    if (!b.pool || b.running || n == 0 || n > MAX_TEMPLATES)
        return -1;
    for (unsigned i = 0; i < n; i++) {
        if (lens[i] > TEMPLATE_BYTES)
            return -1;
        memcpy(b.frames[i], frames + (size_t)i * TEMPLATE_BYTES, lens[i]);
        b.lens[i] = lens[i];
    }
    b.ntemplates = n;
    b.fed = b.sunk = b.sunk_bytes = b.ring_full = 0;
    b.cpu = cpu;
    return 0;
}

static int launch(void)
{
    atomic_store(&b.stop, 0);
    if (pthread_create(&b.thread, NULL, traffic, NULL) != 0)
        return -1;
    b.running = 1;
    return 0;
}

/* Starts the traffic thread (pinned to cpu when >= 0): LAN -> WAN. wan_frame,
 * when given, is put on the WAN port's receive ring first: the peer
 * announcing itself (an ARP request for our address), so the worker knows
 * its MAC. */
int p3_dpdk_bench_start(const uint8_t *frames, const uint32_t *lens, unsigned n, const uint8_t *wan_frame,
                        uint32_t wan_len, int cpu)
{
    if (load_templates(frames, lens, n, cpu) != 0)
        return -1;
    b.seal = NULL;
    if (wan_frame && wan_len <= TEMPLATE_BYTES) {
        struct rte_mbuf *m = rte_pktmbuf_alloc(b.pool);
        if (!m)
            return -1;
        memcpy(rte_pktmbuf_append(m, (uint16_t)wan_len), wan_frame, wan_len);
        if (rte_ring_enqueue(b.wan_rx[0], m) != 0)
            rte_pktmbuf_free(m);
    }
    return launch();
}

/* The other direction: the traffic thread seals fresh packets from the
 * templates (inner packets) for `peer` of ctx with seal_fn (the dataplane's
 * p3dp_seal_burst), puts them on the WAN port's receive ring behind eth (14
 * octets: our WAN MAC, the peer's, 0x0800 or 0x86dd) and counts what the
 * worker sends out of the LAN port. ctx belongs to the traffic thread. */
int p3_dpdk_bench_start_sealed(void *seal_fn, void *ctx, uint32_t peer, const uint8_t *frames, const uint32_t *lens,
                               unsigned n, const uint8_t *eth, int cpu)
{
    if (!seal_fn || !ctx || load_templates(frames, lens, n, cpu) != 0)
        return -1;
    *(void **)&b.seal = seal_fn;
    b.seal_ctx = ctx;
    b.seal_peer = peer;
    memcpy(b.eth, eth, sizeof(b.eth));
    return launch();
}

/* Stops the traffic thread: packets fed to the LAN port, and packets and
 * octets (whole frames) taken from the WAN port. */
void p3_dpdk_bench_stop(uint64_t *fed, uint64_t *sunk, uint64_t *sunk_bytes)
{
    if (b.running) {
        atomic_store(&b.stop, 1);
        pthread_join(b.thread, NULL);
        b.running = 0;
    }
    *fed = b.fed;
    *sunk = b.sunk;
    *sunk_bytes = b.sunk_bytes;
}
