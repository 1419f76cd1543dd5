/*
 * cryptodev.c — the DPDK cryptodev crypto engine (docs/engines.md,
 * "The DPDK cryptodev engine"): lookaside AES-GCM through rte_cryptodev
 * enqueue/dequeue bursts, on whatever PMD the EAL arguments bring up
 * (crypto_openssl or crypto_aesni_gcm virtual devices in tests, QAT or
 * another PMD on an appliance — the code does not name the driver).
 *
 * Built on its own (build/libp3dpdk.so) so DPDK headers and flags
 * never reach the main extension; ctx.c dlopens it at set_engine time and
 * takes the vtable from p3_cryptodev_open(), the one exported function.
 *
 * The EAL is initialised once per process (DPDK cannot do it twice): the
 * first engine's EAL arguments win, later engines reuse the device and take
 * the next free queue pair. Each engine owns one queue pair, used only by the
 * worker thread that runs its context's bursts.
 *
 * Buffers: the dataplane's packets are not mbufs and a cipher stream may be
 * several segments (obfuscation), so each op's stream is gathered into an
 * mbuf, processed in place, and scattered back to the segments at dequeue.
 * The device therefore never writes into a packet: an op abandoned after a
 * timeout can complete later without harm (its mbuf is freed then).
 */
/* rte_cryptodev_sym_session_pool_create is still "experimental" in DPDK
 * 22.11 (the only way to make a session pool there). */
#define ALLOW_EXPERIMENTAL_API

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/crypto.h>
#include <rte_common.h>
#include <rte_crypto.h>
#include <rte_cryptodev.h>
#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_lcore.h>
#include <rte_mbuf.h>
#include <rte_mempool.h>

#include "p3dp.h"
#include "p3_backend.h"
#include "eal.h"

enum {
    MAX_QPS = 8,
    QP_DESCRIPTORS = 2048,
    MAX_INFLIGHT = 256,           /* ops one engine keeps on its queue pair */
    REFUSED_MAX = 64,
    SESSIONS = 8192,              /* two per SA direction pair, shared by all engines */
    TAG_LEN = 16,
    AAD_LEN = 16,                 /* Flags ‖ ID ‖ seq (DESIGN.md wire format) */
    IV_LEN = 12,                  /* RFC 4106 §4: salt(4) ‖ explicit IV(8) */
    /* The op's private area: IV, AAD, and the caller's op. */
    IV_OFF = sizeof(struct rte_crypto_op) + sizeof(struct rte_crypto_sym_op),
    AAD_OFF = IV_OFF + 16,
    OP_PRIV = AAD_OFF + AAD_LEN - IV_OFF,
    /* An mbuf holds the longest stream and its tag in one segment. */
    MBUF_ROOM = RTE_PKTMBUF_HEADROOM + P3DP_MAX_FRAME_BYTES + 64 + TAG_LEN,
};

/* One device for the process, set up with the EAL. */
static struct {
    pthread_mutex_t lock;
    int eal_state;                /* the device: 0 not tried, 1 up, -1 failed (cannot retry) */
    int dev;
    uint16_t nb_qps;
    uint8_t qp_used[MAX_QPS];
    struct rte_mempool *sess_pool;
    unsigned pools;               /* names the per-engine pools */
} g = { .lock = PTHREAD_MUTEX_INITIALIZER, .dev = -1 };

struct p3_crypto_sa {
    void *sess;
    uint8_t salt[4];
};

struct cdev_engine {
    int dev;
    uint16_t qp;
    struct rte_mempool *op_pool, *mbuf_pool;
    uint32_t inflight;            /* ops given to the device, not yet handed back */
    uint32_t stale;               /* ops abandoned after a timeout, still on the device */
    uint64_t timeout_ns;
    struct p3_crypto_sa *kat_sa;  /* the health probe's session */
    struct {
        struct p3_crypto_op *op;
        uint64_t t_ns;
    } pending[MAX_INFLIGHT];      /* ops in flight, in enqueue order */
    uint32_t head, tail;
    struct p3_crypto_op *refused[64];  /* handed back as faults without reaching the device */
    uint16_t nrefused;
};

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void say(const char *what)
{
    fprintf(stderr, "p3hw cryptodev: %s\n", what);
}

static int gcm_capable(int dev)
{
    const struct rte_cryptodev_symmetric_capability *cap;
    struct rte_cryptodev_sym_capability_idx idx = {
        .type = RTE_CRYPTO_SYM_XFORM_AEAD, .algo.aead = RTE_CRYPTO_AEAD_AES_GCM,
    };
    cap = rte_cryptodev_sym_capability_get((uint8_t)dev, &idx);
    return cap && rte_cryptodev_sym_capability_check_aead(cap, 16, TAG_LEN, AAD_LEN, IV_LEN) == 0 &&
           rte_cryptodev_sym_capability_check_aead(cap, 32, TAG_LEN, AAD_LEN, IV_LEN) == 0;
}

/* EAL up, the first AES-GCM capable device configured with its queue pairs
 * and started. Caller holds g.lock. 0 or -P3R_CRYPTODEV. */
static int device_up(const char *eal_args)
{
    struct rte_cryptodev_info info;
    struct rte_cryptodev_config conf = { .socket_id = SOCKET_ID_ANY };
    struct rte_cryptodev_qp_conf qconf = { .nb_descriptors = QP_DESCRIPTORS };

    if (g.eal_state)
        return g.eal_state > 0 ? 0 : -P3R_CRYPTODEV;
    g.eal_state = -1;
    /* Shared with the port backend (eal.c): whichever starts first brings
     * the EAL up with the one dpdk_eal_args of the configuration. */
    if (p3_dpdk_eal_up(eal_args, "cryptodev") != 0)
        return -P3R_CRYPTODEV;
    for (uint8_t d = 0; d < rte_cryptodev_count(); d++)
        if (gcm_capable(d)) {
            g.dev = d;
            break;
        }
    if (g.dev < 0) {
        say("no crypto device with AES-GCM (give one with --vdev=crypto_openssl0 or a PCI device)");
        return -P3R_CRYPTODEV;
    }
    rte_cryptodev_info_get((uint8_t)g.dev, &info);
    g.nb_qps = info.max_nb_queue_pairs < MAX_QPS ? (uint16_t)info.max_nb_queue_pairs : MAX_QPS;
    conf.nb_queue_pairs = g.nb_qps;
    conf.socket_id = rte_cryptodev_socket_id((uint8_t)g.dev);
    g.sess_pool = rte_cryptodev_sym_session_pool_create("p3_sess", SESSIONS,
            rte_cryptodev_sym_get_private_session_size((uint8_t)g.dev), 0, 0, conf.socket_id);
    if (!g.sess_pool || g.nb_qps == 0 || rte_cryptodev_configure((uint8_t)g.dev, &conf) < 0) {
        say("crypto device configuration failed");
        return -P3R_CRYPTODEV;
    }
    qconf.mp_session = g.sess_pool;
    for (uint16_t q = 0; q < g.nb_qps; q++)
        if (rte_cryptodev_queue_pair_setup((uint8_t)g.dev, q, &qconf, conf.socket_id) < 0) {
            say("crypto queue pair setup failed");
            return -P3R_CRYPTODEV;
        }
    if (rte_cryptodev_start((uint8_t)g.dev) < 0) {
        say("crypto device start failed");
        return -P3R_CRYPTODEV;
    }
    g.eal_state = 1;
    return 0;
}

static struct p3_crypto_sa *cdev_sa_new(void *engine, uint32_t cipher, int direction, const uint8_t *key,
                                        const uint8_t *salt, const uint8_t *auth_key)
{
    struct cdev_engine *e = engine;
    struct p3_crypto_sa *sa;
    struct rte_crypto_sym_xform x = { .type = RTE_CRYPTO_SYM_XFORM_AEAD };
    (void)auth_key;
    if (cipher != P3DP_AES_128_GCM && cipher != P3DP_AES_256_GCM)
        return NULL;                       /* the device is used for AES-GCM only */
    sa = calloc(1, sizeof(*sa));
    if (!sa)
        return NULL;
    x.aead.op = direction == P3_CRYPTO_SEAL ? RTE_CRYPTO_AEAD_OP_ENCRYPT : RTE_CRYPTO_AEAD_OP_DECRYPT;
    x.aead.algo = RTE_CRYPTO_AEAD_AES_GCM;
    x.aead.key.data = key;
    x.aead.key.length = cipher == P3DP_AES_128_GCM ? 16 : 32;
    x.aead.iv.offset = IV_OFF;
    x.aead.iv.length = IV_LEN;
    x.aead.digest_length = TAG_LEN;
    x.aead.aad_length = AAD_LEN;
    sa->sess = rte_cryptodev_sym_session_create((uint8_t)e->dev, &x, g.sess_pool);
    if (!sa->sess) {
        free(sa);
        return NULL;
    }
    memcpy(sa->salt, salt, 4);
    return sa;
}

static void cdev_sa_free(void *engine, struct p3_crypto_sa *sa)
{
    struct cdev_engine *e = engine;
    if (!sa)
        return;
    /* The PMD clears its session private data (the key schedule) on free. */
    rte_cryptodev_sym_session_free((uint8_t)e->dev, sa->sess);
    memset(sa, 0, sizeof(*sa));
    free(sa);
}

static void put_be64(uint8_t *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--, v >>= 8)
        p[i] = (uint8_t)v;
}

/* Fills a device op from ours: the stream gathered into the mbuf, the tag
 * (open) after it. */
static int fill(struct cdev_engine *e, struct rte_crypto_op *cop, struct p3_crypto_op *op)
{
    struct rte_mbuf *m = rte_pktmbuf_alloc(e->mbuf_pool);
    uint8_t *data, *priv = (uint8_t *)cop;
    uint32_t at = 0;
    if (!m)
        return -1;
    data = (uint8_t *)rte_pktmbuf_append(m, (uint16_t)(op->stream_len + TAG_LEN));
    if (!data) {
        rte_pktmbuf_free(m);
        return -1;
    }
    for (unsigned i = 0; i < op->nseg; i++) {
        memcpy(data + at, op->seg[i].src, op->seg[i].len);
        at += op->seg[i].len;
    }
    if (op->op == P3_CRYPTO_OPEN)
        memcpy(data + op->stream_len, op->tag, TAG_LEN);
    memcpy(priv + IV_OFF, op->sa->salt, 4);
    put_be64(priv + IV_OFF + 4, op->seq);
    memcpy(priv + AAD_OFF, op->aad, AAD_LEN);
    rte_crypto_op_attach_sym_session(cop, op->sa->sess);
    cop->sym->m_src = m;
    cop->sym->m_dst = NULL;
    cop->sym->aead.data.offset = 0;
    cop->sym->aead.data.length = op->stream_len;
    cop->sym->aead.digest.data = data + op->stream_len;
    cop->sym->aead.digest.phys_addr = rte_pktmbuf_iova_offset(m, op->stream_len);
    cop->sym->aead.aad.data = priv + AAD_OFF;
    cop->sym->aead.aad.phys_addr = cop->phys_addr + AAD_OFF;
    return 0;
}

/* Nothing of ours is on the device and it takes nothing (it is gone, or
 * every slot is held by ops abandoned after a timeout): the ops are handed
 * back at once as faults, so the dataplane re-runs them on the fallback (or
 * drops them with a reason) instead of waiting for a device that will not
 * answer. */
static uint16_t refuse(struct cdev_engine *e, struct p3_crypto_op **ops, uint16_t n)
{
    uint16_t k = 0;
    while (k < n && e->nrefused < REFUSED_MAX) {
        ops[k]->status = -P3R_ACCEL_FAULT;
        ops[k]->fault = e->stale ? P3DP_FAULT_TIMEOUT : P3DP_FAULT_GONE;
        e->refused[e->nrefused++] = ops[k++];
    }
    return k;
}

static uint16_t cdev_enqueue(void *engine, struct p3_crypto_op **ops, uint16_t n)
{
    struct cdev_engine *e = engine;
    struct rte_crypto_op *cops[64];
    uint16_t room = (uint16_t)(MAX_INFLIGHT - e->inflight - e->stale), done, filled = 0;
    if (n == 0)
        return 0;
    if (e->nrefused)
        return e->inflight ? 0 : refuse(e, ops, n);   /* keep the order: refused ones come back first */
    if (n > room)
        n = room;
    if (n > 64)
        n = 64;
    if (n == 0 || rte_crypto_op_bulk_alloc(e->op_pool, RTE_CRYPTO_OP_TYPE_SYMMETRIC, cops, n) != n)
        return e->inflight ? 0 : refuse(e, ops, n ? n : 1);
    while (filled < n && fill(e, cops[filled], ops[filled]) == 0)
        filled++;
    done = rte_cryptodev_enqueue_burst((uint8_t)e->dev, e->qp, cops, filled);
    for (uint16_t i = done; i < n; i++) {
        if (i < filled)
            rte_pktmbuf_free(cops[i]->sym->m_src);
        rte_crypto_op_free(cops[i]);
    }
    if (done) {
        uint64_t t = now_ns();
        for (uint16_t i = 0; i < done; i++) {
            e->pending[e->tail % MAX_INFLIGHT].op = ops[i];
            e->pending[e->tail++ % MAX_INFLIGHT].t_ns = t;
        }
        e->inflight += done;
    } else if (e->inflight == 0) {
        return refuse(e, ops, n);
    }
    return done;
}

/* Hands our op back: output scattered to the segments, the tag (seal) to op->tag. */
static void complete(struct rte_crypto_op *cop, struct p3_crypto_op *op)
{
    struct rte_mbuf *m = cop->sym->m_src;
    const uint8_t *data = rte_pktmbuf_mtod(m, const uint8_t *);
    uint32_t at = 0;
    switch (cop->status) {
    case RTE_CRYPTO_OP_STATUS_SUCCESS:
        for (unsigned i = 0; i < op->nseg; i++) {
            memcpy(op->seg[i].dst, data + at, op->seg[i].len);
            at += op->seg[i].len;
        }
        if (op->op == P3_CRYPTO_SEAL)
            memcpy(op->tag, data + op->stream_len, TAG_LEN);
        op->status = 0;
        break;
    case RTE_CRYPTO_OP_STATUS_AUTH_FAILED:
        op->status = -P3R_DP_AUTH_FAILED;
        break;
    default:
        op->status = -P3R_ACCEL_FAULT;
        op->fault = P3DP_FAULT_ERROR;
        break;
    }
}

static uint16_t cdev_dequeue(void *engine, struct p3_crypto_op **ops, uint16_t n)
{
    struct cdev_engine *e = engine;
    struct rte_crypto_op *cops[64];
    uint16_t got, out = 0;
    if (n > 64)
        n = 64;
    if (e->nrefused && n) {
        /* Only made while nothing was in flight: they are next in order. */
        uint16_t k = e->nrefused < n ? e->nrefused : n;
        memcpy(ops, e->refused, k * sizeof(ops[0]));
        memmove(e->refused, e->refused + k, (size_t)(e->nrefused - k) * sizeof(ops[0]));
        e->nrefused = (uint16_t)(e->nrefused - k);
        return k;
    }
    if (e->inflight + e->stale == 0 || n == 0)
        return 0;
    got = rte_cryptodev_dequeue_burst((uint8_t)e->dev, e->qp, cops, n);
    for (uint16_t i = 0; i < got; i++) {
        if (e->stale) {
            /* Completed after its timeout: the packet was already re-run or dropped. */
            e->stale--;
        } else {
            /* A queue pair returns ops in enqueue order (rte_cryptodev.h). */
            struct p3_crypto_op *op = e->pending[e->head++ % MAX_INFLIGHT].op;
            complete(cops[i], op);
            ops[out++] = op;
            e->inflight--;
        }
        rte_pktmbuf_free(cops[i]->sym->m_src);
        rte_crypto_op_free(cops[i]);
    }
    if (out == 0 && e->inflight && now_ns() - e->pending[e->head % MAX_INFLIGHT].t_ns > e->timeout_ns) {
        /* The device is hung: every op in flight goes back as a timeout
         * fault (the dataplane re-runs it on the fallback). Their late
         * completions only touch this engine's mbufs and are dropped. */
        while (out < n && e->inflight) {
            struct p3_crypto_op *op = e->pending[e->head++ % MAX_INFLIGHT].op;
            op->status = -P3R_ACCEL_FAULT;
            op->fault = P3DP_FAULT_TIMEOUT;
            ops[out++] = op;
            e->inflight--;
            e->stale++;
        }
    }
    return out;
}

/* Frees an engine's pools after draining what the device still holds
 * (the queue pair is given back by the caller). */
static void engine_drop(struct cdev_engine *e)
{
    for (int spin = 0; spin < 1000000 && e->inflight + e->stale; spin++) {
        struct rte_crypto_op *cops[64];
        uint16_t got = rte_cryptodev_dequeue_burst((uint8_t)e->dev, e->qp, cops, 64);
        for (uint16_t i = 0; i < got; i++) {
            rte_pktmbuf_free(cops[i]->sym->m_src);
            rte_crypto_op_free(cops[i]);
            if (e->stale)
                e->stale--;
            else
                e->inflight--;
        }
    }
    if (e->kat_sa)
        cdev_sa_free(e, e->kat_sa);
    rte_mempool_free(e->op_pool);
    rte_mempool_free(e->mbuf_pool);
    free(e);
}

static void cdev_engine_free(void *engine)
{
    struct cdev_engine *e = engine;
    uint16_t qp;
    if (!e)
        return;
    qp = e->qp;
    engine_drop(e);
    pthread_mutex_lock(&g.lock);
    g.qp_used[qp] = 0;
    pthread_mutex_unlock(&g.lock);
}

/* Known answer (computed with an independent AES-GCM): AES-128 key 00..0f,
 * salt a0 a1 a2 a3, seq 0x0102030405060708, AAD 10..1f, plaintext
 * (3 * i) mod 256 for i < 64; ciphertext ‖ tag. */
static const uint8_t kat_out[80] = {
    0x1c, 0x3e, 0x9d, 0xc3, 0x37, 0xc7, 0x8e, 0xd1, 0x9e, 0xbc, 0xe9, 0x21, 0x3c, 0x23, 0x1c, 0x22,
    0x8d, 0x04, 0xb5, 0x6b, 0x95, 0x22, 0x34, 0x59, 0x23, 0x4e, 0x2b, 0xff, 0xd1, 0xf2, 0xed, 0x07,
    0x78, 0xa0, 0xfd, 0x3b, 0x76, 0xd8, 0xd9, 0xa4, 0x5a, 0x3e, 0x1d, 0xbb, 0x10, 0x81, 0x03, 0x91,
    0x1a, 0xdd, 0xd0, 0x3b, 0x06, 0x6c, 0xf9, 0x49, 0x00, 0x87, 0x65, 0x5b, 0x17, 0x0c, 0x57, 0x0f,
    0xba, 0x91, 0x3b, 0xf3, 0xf5, 0x42, 0xef, 0x68, 0x33, 0x06, 0xf2, 0x69, 0x14, 0xed, 0x9b, 0x02,
};

/* The device is present and seals the known answer right: 0, else -P3R_ACCEL_FAULT.
 * Called by the dataplane between bursts (nothing of ours in flight). */
static int cdev_health(void *engine)
{
    struct cdev_engine *e = engine;
    struct p3_crypto_op op, *done = NULL;
    uint8_t in[64], out[64], tag[TAG_LEN];
    uint64_t deadline;
    if (e->inflight)
        return -P3R_ACCEL_FAULT;
    for (unsigned i = 0; i < sizeof(in); i++)
        in[i] = (uint8_t)(3 * i);
    memset(&op, 0, sizeof(op));
    op.sa = e->kat_sa;
    op.seq = 0x0102030405060708ull;
    for (unsigned i = 0; i < AAD_LEN; i++)
        op.aad[i] = (uint8_t)(16 + i);
    op.tag = tag;
    op.stream_len = sizeof(in);
    op.op = P3_CRYPTO_SEAL;
    op.nseg = 1;
    op.seg[0].src = in;
    op.seg[0].dst = out;
    op.seg[0].len = sizeof(in);
    struct p3_crypto_op *ops[1] = { &op };
    if (cdev_enqueue(e, ops, 1) != 1)
        return -P3R_ACCEL_FAULT;
    deadline = now_ns() + e->timeout_ns;
    while (cdev_dequeue(e, &done, 1) == 0)
        if (now_ns() > deadline)
            return -P3R_ACCEL_FAULT;
    if (done != &op || op.status != 0 || CRYPTO_memcmp(out, kat_out, 64) != 0 ||
        CRYPTO_memcmp(tag, kat_out + 64, TAG_LEN) != 0)
        return -P3R_ACCEL_FAULT;
    return 0;
}

static const struct p3_crypto_engine cdev_vtable = {
    .name = "cryptodev",
    .sa_new = cdev_sa_new,
    .sa_free = cdev_sa_free,
    .enqueue = cdev_enqueue,
    .dequeue = cdev_dequeue,
    .engine_free = cdev_engine_free,
    .health = cdev_health,
};

static struct cdev_engine *engine_new(const struct p3dp_engine_params *params)
{
    static const uint8_t kat_key[16] = { 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15 };
    static const uint8_t kat_salt[4] = { 0xa0, 0xa1, 0xa2, 0xa3 };
    struct cdev_engine *e = calloc(1, sizeof(*e));
    char name[RTE_MEMPOOL_NAMESIZE];
    int socket = rte_cryptodev_socket_id((uint8_t)g.dev);
    uint16_t qp = 0;

    if (!e)
        return NULL;
    while (qp < g.nb_qps && g.qp_used[qp])
        qp++;
    if (qp == g.nb_qps) {
        say("every queue pair of the crypto device is taken");
        free(e);
        return NULL;
    }
    e->dev = g.dev;
    e->qp = qp;
    e->timeout_ns = (uint64_t)(params && params->timeout_us ? params->timeout_us : 100000u) * 1000u;
    snprintf(name, sizeof(name), "p3_ops%u", g.pools);
    /* In flight plus abandoned never exceed MAX_INFLIGHT, and without a
     * per-lcore cache a pool of that size never runs dry. */
    e->op_pool = rte_crypto_op_pool_create(name, RTE_CRYPTO_OP_TYPE_SYMMETRIC, MAX_INFLIGHT, 0, OP_PRIV,
                                           socket);
    snprintf(name, sizeof(name), "p3_mbuf%u", g.pools++);
    e->mbuf_pool = rte_pktmbuf_pool_create(name, MAX_INFLIGHT, 0, 0, MBUF_ROOM, socket);
    if (!e->op_pool || !e->mbuf_pool) {
        say("no memory for the crypto op and mbuf pools (raise -m in the EAL arguments)");
        rte_mempool_free(e->op_pool);
        rte_mempool_free(e->mbuf_pool);
        free(e);
        return NULL;
    }
    g.qp_used[qp] = 1;
    e->kat_sa = cdev_sa_new(e, P3DP_AES_128_GCM, P3_CRYPTO_SEAL, kat_key, kat_salt, NULL);
    if (!e->kat_sa || cdev_health(e) != 0) {
        say("the crypto device failed its AES-GCM known-answer test");
        engine_drop(e);
        g.qp_used[qp] = 0;
        return NULL;
    }
    return e;
}

/* The one entry point ctx.c looks up after dlopen: EAL and device up (once
 * per process), then an engine on a free queue pair. 0, or -P3R_CRYPTODEV with the
 * reason on stderr. */
int p3_cryptodev_open(const struct p3dp_engine_params *params, const char *eal_args,
                      const struct p3_crypto_engine **vtable, void **state);
int p3_cryptodev_open(const struct p3dp_engine_params *params, const char *eal_args,
                      const struct p3_crypto_engine **vtable, void **state)
{
    int rc;
    pthread_mutex_lock(&g.lock);
    rc = device_up(eal_args);
    *state = rc == 0 ? engine_new(params) : NULL;
    pthread_mutex_unlock(&g.lock);
    if (!*state)
        return -P3R_CRYPTODEV;
    *vtable = &cdev_vtable;
    return 0;
}
