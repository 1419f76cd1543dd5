/*
 * lookaside.c — the lookaside driver: turns a synchronous crypto core into
 * an asynchronous engine behind the vtable of p3_backend.h (docs/engines.md).
 *
 * The device: one thread that serves a submission ring and writes a
 * completion ring, both in a MAP_SHARED region (what a PCI device would see
 * through DMA), and calls the core for each op. It honours a per-op latency
 * (doorbell to completion) and a throughput cap, and takes injected faults:
 * error completions, timeouts (the device hangs on a descriptor until
 * reset), corrupted output (a bit flipped after the device computed its
 * completion checksum — what a bad DMA write looks like — or, for open, a
 * bit flipped in the tag it read, so authentication fails) and "device gone"
 * (the present register reads 0).
 *
 * The driver (the vtable): enqueue writes descriptors and rings the
 * doorbell; dequeue returns completions in submission order, checks each
 * one's checksum over the output it names, notices a hung device (oldest op
 * older than timeout_us) or a missing one, resets the device, and hands the
 * in-flight ops back with status -P3R_ACCEL_FAULT and the fault kind so the dataplane
 * re-runs them on the fallback engine. A reset waits for the device to
 * acknowledge at an op boundary, so after it nothing writes into the
 * packets' buffers any more.
 *
 * Two cores use it: the PKCS#11 engine (backends/pkcs11/pkcs11_engine.c: the
 * thread calls C_Encrypt / C_Decrypt, so the packet worker never blocks in
 * the token) and the accelerator simulator (simulators/accelerator/accel.c:
 * OpenSSL on the device's session). This file names neither.
 *
 * Threading: one host thread drives an engine instance (the ctx's owner);
 * the device thread touches an op's buffers only while that op is in flight.
 */
#include "p3dp.h"
#include "p3_backend.h"
#include "bytes.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

/* An idle device parks for at most PARK_NS: the doorbell, a reset, stop and
 * an injected fault all wake it sooner. */
enum { DEFAULT_SLOTS = 1024, DEFAULT_TIMEOUT_US = 100000, IDLE_POLL_NS = 200000, PARK_NS = 10000000 };
enum { CPL_OK = 0, CPL_AUTH = 1, CPL_ERROR = 2 };

struct p3_crypto_sa {
    uint32_t cipher;
    int direction;
    void *key;                    /* the core's key: the device's session, keyed once at install */
    uint8_t salt[4];
};

/* A descriptor as the device reads it. */
struct accel_desc {
    struct p3_crypto_op *op;
    uint64_t submit_ns;
};

/* A completion as the device writes it. */
struct accel_cpl {
    uint32_t code;                /* CPL_* */
    uint64_t checksum;            /* over the output the op names (seg dst, seal tag) */
};

/* The region both sides see. Indices run freely; slot = index & mask. */
struct accel_shared {
    _Atomic uint32_t present;     /* the "present" register: 0 = device gone */
    _Atomic uint32_t sq_tail;     /* driver: descriptors submitted (doorbell) */
    _Atomic uint32_t done;        /* device: descriptors completed */
    _Atomic uint32_t reset_req;   /* driver bumps; device discards its queue and echoes */
    _Atomic uint32_t reset_ack;
    _Atomic uint32_t sleeping;    /* device parked on the doorbell */
    _Atomic uint32_t stop;
    /* fault injection register (written by the control path, read by the device) */
    pthread_mutex_t fault_lock;
    uint32_t fault_kind, fault_after, fault_count;
    _Atomic uint32_t fault_armed;
};

struct accel_pending {
    struct p3_crypto_op *op;
    uint64_t submit_ns;
    uint32_t sqi;                 /* the device descriptor index */
    uint8_t on_device;            /* 0: already completed by the driver (fault) */
};

struct accel_engine {
    const struct p3_lookaside_core *core;   /* what does the crypto */
    void *core_state;
    struct accel_shared *sh;
    struct accel_desc *sq;        /* in the shared region */
    struct accel_cpl *cq;
    size_t region_bytes;
    uint32_t slots, mask;
    uint64_t latency_ns, op_interval_ns, timeout_ns;
    /* driver side */
    struct accel_pending *pend;
    uint32_t head, tail;          /* pending ops, submission order */
    uint32_t sq_next;
    uint32_t empty_polls;
    /* device side */
    pthread_t thread;
    int thread_started;
    pthread_mutex_t bell_lock;
    pthread_cond_t bell;
    uint32_t dev_head;
    int hung;
    uint64_t next_free_ns;
    /* known-answer op for health() */
    struct p3_crypto_sa *kat_sa;
    uint8_t kat_in[64], kat_out[64], kat_tag[16], kat_expect[80];
};

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void nap_us(unsigned us)
{
    struct timespec ts = { 0, (long)us * 1000 };
    nanosleep(&ts, NULL);
}

/* FNV-1a style over 64-bit words in four independent lanes (the multiply
 * chains run in parallel), folded at the end: a cheap completion checksum
 * that catches flipped bits in transit. It is not a MAC: a device computing
 * a wrong result and checksumming it is not caught here (docs/engines.md). */
static uint64_t sum_bytes(uint64_t h, const uint8_t *p, size_t len)
{
    const uint64_t prime = 0x100000001b3ULL;
    uint64_t lane[4] = { h, h ^ 0x9e3779b97f4a7c15ULL, h ^ 0xc2b2ae3d27d4eb4fULL, h ^ 0x165667b19e3779f9ULL };

    while (len >= 32) {
        for (int i = 0; i < 4; i++) {
            uint64_t w;
            memcpy(&w, p + 8 * i, 8);
            lane[i] = (lane[i] ^ w) * prime;
        }
        p += 32;
        len -= 32;
    }
    h = lane[0];
    for (int i = 1; i < 4; i++)
        h = (h ^ lane[i]) * prime;
    while (len >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        h = (h ^ w) * prime;
        p += 8;
        len -= 8;
    }
    while (len--)
        h = (h ^ *p++) * prime;
    return h;
}

static uint64_t op_checksum(const struct p3_crypto_op *op)
{
    uint64_t h = 0xcbf29ce484222325ULL;
    for (unsigned i = 0; i < op->nseg; i++)
        h = sum_bytes(h, op->seg[i].dst, op->seg[i].len);
    if (op->op == P3_CRYPTO_SEAL)
        h = sum_bytes(h, op->tag, 16);
    return h;
}

/* ---- the device ---- */

/* RFC 4106 AES-GCM through the core; tag_flip flips a bit of the tag the
 * device read (the corrupted-input fault). Returns CPL_*. */
static uint32_t device_gcm(struct accel_engine *e, struct p3_crypto_op *op, int tag_flip)
{
    uint8_t iv[12];
    int rc;

    if (op->sa->direction != op->op)
        return CPL_ERROR;
    memcpy(iv, op->sa->salt, 4);
    p3_put_be64(iv + 4, op->seq);
    rc = e->core->gcm(e->core_state, op->sa->key, iv, op, tag_flip);
    return rc == 0 ? CPL_OK : rc == -P3R_DP_AUTH_FAILED ? CPL_AUTH : CPL_ERROR;
}

/* The fault the next op gets, consuming the injection register. */
static uint32_t device_next_fault(struct accel_shared *sh)
{
    uint32_t kind = P3DP_FAULT_NONE;

    if (!atomic_load_explicit(&sh->fault_armed, memory_order_acquire))
        return P3DP_FAULT_NONE;
    pthread_mutex_lock(&sh->fault_lock);
    if (sh->fault_after) {
        sh->fault_after--;
    } else if (sh->fault_kind == P3DP_FAULT_GONE) {
        kind = P3DP_FAULT_GONE;
    } else if (sh->fault_count) {
        kind = sh->fault_kind;
        if (--sh->fault_count == 0)
            atomic_store(&sh->fault_armed, 0);
    }
    pthread_mutex_unlock(&sh->fault_lock);
    return kind;
}

static int device_gone_armed(struct accel_shared *sh)
{
    int gone;
    if (!atomic_load_explicit(&sh->fault_armed, memory_order_acquire))
        return 0;
    pthread_mutex_lock(&sh->fault_lock);
    gone = sh->fault_kind == P3DP_FAULT_GONE && sh->fault_after == 0;
    pthread_mutex_unlock(&sh->fault_lock);
    return gone;
}

static void device_wait_until(uint64_t due)
{
    for (;;) {
        uint64_t t = now_ns();
        if (t >= due)
            return;
        if (due - t > 200000)
            nap_us((unsigned)((due - t) / 2000));
    }
}

static void *device_main(void *arg)
{
    struct accel_engine *e = arg;
    struct accel_shared *sh = e->sh;
    uint64_t idle_since = 0;

    while (!atomic_load(&sh->stop)) {
        uint32_t req = atomic_load_explicit(&sh->reset_req, memory_order_acquire);
        uint32_t tail, fault, code;
        struct accel_desc d;
        struct p3_crypto_op *op;

        if (req != atomic_load(&sh->reset_ack)) {
            /* Reset: forget everything submitted; the driver has already
             * handed those ops to the fallback. */
            e->dev_head = atomic_load_explicit(&sh->sq_tail, memory_order_acquire);
            atomic_store_explicit(&sh->done, e->dev_head, memory_order_release);
            e->hung = 0;
            e->next_free_ns = 0;
            atomic_store_explicit(&sh->reset_ack, req, memory_order_release);
            continue;
        }
        if (device_gone_armed(sh)) {
            atomic_store(&sh->present, 0);
            nap_us(200);
            continue;
        }
        atomic_store(&sh->present, 1);
        tail = atomic_load_explicit(&sh->sq_tail, memory_order_acquire);
        if (e->hung || e->dev_head == tail) {
            /* Poll the ring for a while (a device polls its doorbell
             * register), then park until the doorbell rings. */
            uint64_t t = now_ns();
            if (!idle_since)
                idle_since = t;
            if (t - idle_since < IDLE_POLL_NS)
                continue;
            /* Park on the doorbell (bounded, so reset and stop are seen). */
            pthread_mutex_lock(&e->bell_lock);
            atomic_store(&sh->sleeping, 1);
            if (atomic_load(&sh->sq_tail) == e->dev_head || e->hung) {
                struct timespec ts;
                clock_gettime(CLOCK_REALTIME, &ts);
                ts.tv_nsec += PARK_NS;
                if (ts.tv_nsec >= 1000000000) {
                    ts.tv_sec++;
                    ts.tv_nsec -= 1000000000;
                }
                pthread_cond_timedwait(&e->bell, &e->bell_lock, &ts);
            }
            atomic_store(&sh->sleeping, 0);
            pthread_mutex_unlock(&e->bell_lock);
            continue;
        }
        idle_since = 0;
        d = e->sq[e->dev_head & e->mask];
        op = d.op;
        fault = device_next_fault(sh);
        if (fault == P3DP_FAULT_GONE)
            continue;                     /* seen at the top of the loop */
        if (fault == P3DP_FAULT_TIMEOUT) {
            e->hung = 1;                  /* never completes; the driver resets */
            continue;
        }
        {
            uint64_t due = d.submit_ns + e->latency_ns;
            if (e->op_interval_ns) {
                if (e->next_free_ns > due)
                    due = e->next_free_ns;
                e->next_free_ns = due + e->op_interval_ns;
            }
            if (due > now_ns())
                device_wait_until(due);
        }
        if (fault == P3DP_FAULT_ERROR) {
            code = CPL_ERROR;
            e->cq[e->dev_head & e->mask].checksum = 0;
        } else {
            int flip_tag = fault == P3DP_FAULT_CORRUPT && op->op == P3_CRYPTO_OPEN;
            code = device_gcm(e, op, flip_tag);
            e->cq[e->dev_head & e->mask].checksum = code == CPL_OK ? op_checksum(op) : 0;
            if (fault == P3DP_FAULT_CORRUPT && op->op == P3_CRYPTO_SEAL && op->nseg)
                op->seg[0].dst[op->seg[0].len / 2] ^= 0x04;   /* after the checksum: a bad DMA write */
        }
        e->cq[e->dev_head & e->mask].code = code;
        e->dev_head++;
        atomic_store_explicit(&sh->done, e->dev_head, memory_order_release);
    }
    return NULL;
}

/* ---- the driver ---- */

static void device_reset(struct accel_engine *e)
{
    uint32_t want = atomic_fetch_add(&e->sh->reset_req, 1) + 1;
    pthread_mutex_lock(&e->bell_lock);
    pthread_cond_signal(&e->bell);
    pthread_mutex_unlock(&e->bell_lock);
    /* The device acknowledges between two ops: after this no op's buffer is
     * touched by it. Its thread is ours, so this always returns. */
    while (atomic_load_explicit(&e->sh->reset_ack, memory_order_acquire) != want)
        nap_us(20);
    e->sq_next = atomic_load(&e->sh->sq_tail);
}

/* Every op still on the device comes back as a fault of this kind. */
static void fail_in_flight(struct accel_engine *e, uint8_t kind)
{
    for (uint32_t i = e->head; i != e->tail; i++) {
        struct accel_pending *p = &e->pend[i & e->mask];
        if (!p->on_device)
            continue;
        p->on_device = 0;
        p->op->status = -P3R_ACCEL_FAULT;
        p->op->fault = kind;
    }
    device_reset(e);
}

static uint16_t accel_enqueue(void *engine, struct p3_crypto_op **ops, uint16_t n)
{
    struct accel_engine *e = engine;
    int present = atomic_load_explicit(&e->sh->present, memory_order_acquire);
    uint64_t t = now_ns();
    uint16_t taken = 0;

    while (taken < n && e->tail - e->head < e->slots) {
        struct p3_crypto_op *op = ops[taken];
        struct accel_pending *p = &e->pend[e->tail & e->mask];
        p->op = op;
        p->submit_ns = t;
        op->fault = P3DP_FAULT_NONE;
        if (!present) {
            /* A device that is gone takes nothing: the op comes back as a fault. */
            p->on_device = 0;
            op->status = -P3R_ACCEL_FAULT;
            op->fault = P3DP_FAULT_GONE;
        } else {
            p->on_device = 1;
            p->sqi = e->sq_next;
            e->sq[e->sq_next & e->mask] = (struct accel_desc){ op, t };
            e->sq_next++;
        }
        e->tail++;
        taken++;
    }
    if (present && taken) {
        /* seq_cst store then load, and the device does the same on
         * sleeping then sq_tail (Dekker): one of the two sees the other, so
         * a doorbell is never lost. */
        atomic_store(&e->sh->sq_tail, e->sq_next);
        if (atomic_load(&e->sh->sleeping)) {       /* the doorbell */
            pthread_mutex_lock(&e->bell_lock);
            pthread_cond_signal(&e->bell);
            pthread_mutex_unlock(&e->bell_lock);
        }
    }
    return taken;
}

static uint16_t accel_dequeue(void *engine, struct p3_crypto_op **ops, uint16_t n)
{
    struct accel_engine *e = engine;
    uint16_t given = 0;

    while (given < n && e->head != e->tail) {
        struct accel_pending *p = &e->pend[e->head & e->mask];
        struct p3_crypto_op *op = p->op;
        uint32_t done;

        if (!p->on_device) {
            ops[given++] = op;
            e->head++;
            continue;
        }
        done = atomic_load_explicit(&e->sh->done, memory_order_acquire);
        if ((int32_t)(done - p->sqi) > 0) {
            const struct accel_cpl *c = &e->cq[p->sqi & e->mask];
            if (c->code == CPL_ERROR) {
                op->status = -P3R_ACCEL_FAULT;
                op->fault = P3DP_FAULT_ERROR;
            } else if (c->code == CPL_AUTH) {
                op->status = -P3R_DP_AUTH_FAILED;      /* the dataplane confirms it on the fallback */
            } else if (c->checksum != op_checksum(op)) {
                op->status = -P3R_ACCEL_FAULT;
                op->fault = P3DP_FAULT_CORRUPT;
            } else {
                op->status = 0;
            }
            ops[given++] = op;
            e->head++;
            continue;
        }
        if (!atomic_load_explicit(&e->sh->present, memory_order_acquire)) {
            fail_in_flight(e, P3DP_FAULT_GONE);
            continue;
        }
        if (now_ns() - p->submit_ns > e->timeout_ns) {
            fail_in_flight(e, P3DP_FAULT_TIMEOUT);
            continue;
        }
        break;
    }
    if (!given && e->head != e->tail && ++e->empty_polls % 64 == 0)
        sched_yield();      /* still waiting on the device: let its thread have this core if it shares it */
    return given;
}

static void accel_sa_free(void *engine, struct p3_crypto_sa *sa)
{
    struct accel_engine *e = engine;
    if (!sa)
        return;
    if (sa->key)
        e->core->key_free(e->core_state, sa->key);   /* wiped (or destroyed in the token) by the core */
    OPENSSL_cleanse(sa, sizeof(*sa));
    free(sa);
}

/* Session create: the key goes into the device's session, once. GCM only,
 * as on most lookaside devices we target. */
static struct p3_crypto_sa *accel_sa_new(void *engine, uint32_t cipher, int direction, const uint8_t *key,
                                         const uint8_t *salt, const uint8_t *auth_key)
{
    struct accel_engine *e = engine;
    struct p3_crypto_sa *sa;

    (void)auth_key;
    if ((cipher != P3DP_AES_128_GCM && cipher != P3DP_AES_256_GCM) ||
        (direction != P3_CRYPTO_SEAL && direction != P3_CRYPTO_OPEN))
        return NULL;
    sa = calloc(1, sizeof(*sa));
    if (!sa)
        return NULL;
    sa->cipher = cipher;
    sa->direction = direction;
    memcpy(sa->salt, salt, 4);
    sa->key = e->core->key_new(e->core_state, cipher, direction == P3_CRYPTO_SEAL, key);
    if (!sa->key) {
        free(sa);
        return NULL;
    }
    return sa;
}

/* A fixed AES-128-GCM op through the device, compared with the host's own
 * result computed at start-up. Called only between bursts (nothing else in
 * flight). */
static int accel_health(void *engine)
{
    struct accel_engine *e = engine;
    struct p3_crypto_op op, *done = NULL;

    if (!atomic_load(&e->sh->present))
        return -P3R_ACCEL_FAULT;
    memset(&op, 0, sizeof(op));
    op.sa = e->kat_sa;
    op.seq = 1;
    op.tag = e->kat_tag;
    op.stream_len = sizeof(e->kat_in);
    op.op = P3_CRYPTO_SEAL;
    op.nseg = 1;
    op.seg[0] = (struct p3_crypto_seg){ e->kat_in, e->kat_out, sizeof(e->kat_in) };
    struct p3_crypto_op *one = &op;
    if (accel_enqueue(e, &one, 1) != 1)
        return -P3R_ACCEL_FAULT;
    while (accel_dequeue(e, &done, 1) == 0)
        ;
    if (op.status != 0 || CRYPTO_memcmp(e->kat_out, e->kat_expect, 64) != 0 ||
        CRYPTO_memcmp(e->kat_tag, e->kat_expect + 64, 16) != 0)
        return -P3R_ACCEL_FAULT;
    return 0;
}

static void accel_engine_free(void *engine)
{
    struct accel_engine *e = engine;
    if (!e)
        return;
    if (e->thread_started) {
        atomic_store(&e->sh->stop, 1);
        pthread_mutex_lock(&e->bell_lock);
        pthread_cond_signal(&e->bell);
        pthread_mutex_unlock(&e->bell_lock);
        pthread_join(e->thread, NULL);
    }
    accel_sa_free(e, e->kat_sa);
    if (e->core->close)
        e->core->close(e->core_state);
    if (e->sh) {
        pthread_mutex_destroy(&e->sh->fault_lock);
        munmap(e->sh, e->region_bytes);
    }
    pthread_mutex_destroy(&e->bell_lock);
    pthread_cond_destroy(&e->bell);
    free(e->pend);
    free(e);
}

/* The host's reference for the known-answer op. */
static int kat_reference(const uint8_t *key, const uint8_t *salt, const uint8_t *in, uint8_t *out)
{
    EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
    uint8_t iv[12], aad[16] = { 0 };
    int outl, ok;
    memcpy(iv, salt, 4);
    p3_put_be64(iv + 4, 1);
    ok = c && EVP_EncryptInit_ex(c, EVP_aes_128_gcm(), NULL, key, iv) &&
         EVP_EncryptUpdate(c, NULL, &outl, aad, 16) && EVP_EncryptUpdate(c, out, &outl, in, 64) &&
         EVP_EncryptFinal_ex(c, out + 64, &outl) &&
         EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_AEAD_GET_TAG, 16, out + 64);
    EVP_CIPHER_CTX_free(c);
    return ok ? 0 : -1;
}

void *p3_lookaside_new(const struct p3dp_engine_params *params, const struct p3_lookaside_core *core,
                       void *core_state)
{
    static const uint8_t kat_key[16] = { 0x50, 0x33, 0x2d, 0x4b, 0x41, 0x54, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10 };
    static const uint8_t kat_salt[4] = { 0xca, 0xfe, 0xba, 0xbe };
    struct accel_engine *e;
    uint32_t slots = params && params->ring_slots ? params->ring_slots : DEFAULT_SLOTS;

    if (slots < 2 || slots > 65536 || (slots & (slots - 1)) || !(e = calloc(1, sizeof(*e)))) {
        if (core->close)
            core->close(core_state);
        return NULL;
    }
    e->core = core;
    e->core_state = core_state;
    pthread_mutex_init(&e->bell_lock, NULL);
    pthread_cond_init(&e->bell, NULL);
    e->slots = slots;
    e->mask = slots - 1;
    e->latency_ns = params ? (uint64_t)params->latency_us * 1000 : 0;
    e->op_interval_ns = params && params->max_ops_per_s ? 1000000000ULL / params->max_ops_per_s : 0;
    e->timeout_ns = (uint64_t)(params && params->timeout_us ? params->timeout_us : DEFAULT_TIMEOUT_US) * 1000;
    e->region_bytes = sizeof(struct accel_shared) + slots * (sizeof(struct accel_desc) + sizeof(struct accel_cpl));
    e->sh = mmap(NULL, e->region_bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    e->pend = calloc(slots, sizeof(*e->pend));
    if (e->sh == MAP_FAILED || !e->pend) {
        if (e->sh == MAP_FAILED)
            e->sh = NULL;
        accel_engine_free(e);
        return NULL;
    }
    e->sq = (struct accel_desc *)(e->sh + 1);
    e->cq = (struct accel_cpl *)(e->sq + slots);
    pthread_mutex_init(&e->sh->fault_lock, NULL);
    atomic_store(&e->sh->present, 1);
    for (unsigned i = 0; i < sizeof(e->kat_in); i++)
        e->kat_in[i] = (uint8_t)(i * 29 + 3);
    e->kat_sa = accel_sa_new(e, P3DP_AES_128_GCM, P3_CRYPTO_SEAL, kat_key, kat_salt, NULL);
    if (!e->kat_sa || kat_reference(kat_key, kat_salt, e->kat_in, e->kat_expect) ||
        pthread_create(&e->thread, NULL, device_main, e)) {
        accel_engine_free(e);
        return NULL;
    }
    e->thread_started = 1;
    return e;
}

void *p3_lookaside_core_state(void *engine)
{
    return ((struct accel_engine *)engine)->core_state;
}

void *p3_lookaside_key(const struct p3_crypto_sa *sa)
{
    return sa ? sa->key : NULL;
}

void p3_lookaside_inject(void *engine, uint32_t fault, uint32_t after_ops, uint32_t count)
{
    struct accel_engine *e = engine;
    struct accel_shared *sh = e->sh;
    pthread_mutex_lock(&sh->fault_lock);
    sh->fault_kind = fault;
    sh->fault_after = after_ops;
    sh->fault_count = fault == P3DP_FAULT_NONE ? 0 : (count ? count : 1);
    atomic_store_explicit(&sh->fault_armed, fault != P3DP_FAULT_NONE, memory_order_release);
    pthread_mutex_unlock(&sh->fault_lock);
    pthread_mutex_lock(&e->bell_lock);
    pthread_cond_signal(&e->bell);
    pthread_mutex_unlock(&e->bell_lock);
    if (fault == P3DP_FAULT_NONE) {
        /* The device is back: wait until it says so, so the next probe sees it. */
        while (!atomic_load(&sh->present))
            nap_us(50);
    }
}

const struct p3_crypto_engine p3_lookaside_driver = {
    .name = "lookaside",
    .sa_new = accel_sa_new,
    .sa_free = accel_sa_free,
    .enqueue = accel_enqueue,
    .dequeue = accel_dequeue,
    .engine_free = accel_engine_free,
    .health = accel_health,
    .inject = p3_lookaside_inject,
};
