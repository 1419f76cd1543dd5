/*
 * p3_backend.h — backend vtables of the native dataplane (DESIGN.md §1, §5).
 *
 * Crypto engine: the stage between framing and output in the style of DPDK
 * ipsec-secgw / cryptodev. The packet path fills p3_crypto_op descriptors,
 * enqueues a burst, and dequeues completed ones. A lookaside engine (a
 * cryptodev, an accelerator) completes later; the synchronous AES-NI engine
 * completes every op inside enqueue, and dequeue hands them back at once.
 *
 * Ops are never reordered within one SA by an engine (anti-replay and the
 * sequence counters assume it).
 */
#ifndef P3_BACKEND_H
#define P3_BACKEND_H

#include <stddef.h>
#include <stdint.h>
#include "p3dp.h"
#include "p3_reasons.h"

enum { P3_CRYPTO_SEAL = 1, P3_CRYPTO_OPEN = 2 };

/* Maximum pieces of one cipher stream: obfuscation builds the frame from
 * (inner tail, padding copied from the inner, trailer, inner head). */
enum { P3_CRYPTO_MAX_SEGS = 8 };

/* A stretch of the cipher stream: len octets read at src, written at dst.
 * Segments are processed in order; their concatenation is the stream. */
struct p3_crypto_seg {
    const uint8_t *src;
    uint8_t *dst;
    uint32_t len;
};

/* Engine-private state of one SA, prepared once at install (key schedule,
 * contexts); the per-packet path never allocates or expands a key. */
struct p3_crypto_sa;

struct p3_crypto_op {
    struct p3_crypto_sa *sa;
    uint64_t seq;                 /* the explicit IV (RFC 4106/4309/3686) */
    uint8_t aad[16];              /* Flags ‖ ID ‖ seq, unmasked */
    uint8_t *tag;                 /* seal: ICV written here; open: ICV read here */
    uint32_t stream_len;          /* sum of seg[].len */
    uint8_t op;                   /* P3_CRYPTO_SEAL / P3_CRYPTO_OPEN */
    uint8_t nseg;
    int16_t status;               /* set by the engine: 0 or -reason (-P3R_DP_AUTH_FAILED auth, -P3R_DP_CRYPTO_ENGINE engine,
                                     -P3R_ACCEL_FAULT a lookaside device fault) */
    uint8_t fault;                /* with -P3R_ACCEL_FAULT: P3DP_FAULT_* of p3dp.h (error, timeout, corrupt, gone) */
    void *user;                   /* the caller's packet */
    struct p3_crypto_seg seg[P3_CRYPTO_MAX_SEGS];
};

struct p3_crypto_engine {
    const char *name;
    /* Prepare an SA: cipher P3DP_AES_*, direction P3_CRYPTO_SEAL/OPEN.
     * Returns NULL on failure. */
    struct p3_crypto_sa *(*sa_new)(void *engine, uint32_t cipher, int direction,
                                   const uint8_t *key, const uint8_t *salt,
                                   const uint8_t *auth_key);
    /* Wipe the SA's keys and free it. */
    void (*sa_free)(void *engine, struct p3_crypto_sa *sa);
    /* Accept up to n ops; returns how many were taken. */
    uint16_t (*enqueue)(void *engine, struct p3_crypto_op **ops, uint16_t n);
    /* Return up to n completed ops, in enqueue order. */
    uint16_t (*dequeue)(void *engine, struct p3_crypto_op **ops, uint16_t n);
    void (*engine_free)(void *engine);
    /* Lookaside engines: 0 when the device is present and passes a
     * known-answer op, else -P3R_ACCEL_FAULT. NULL for synchronous engines (always ready).
     * The dataplane probes it to return from the fallback (docs/engines.md). */
    int (*health)(void *engine);
    /* Optional (lookaside engines): arm an injected fault, as
     * p3_lookaside_inject. NULL: the engine takes none. */
    void (*inject)(void *engine, uint32_t fault, uint32_t after_ops, uint32_t count);
};

/* ---- The lookaside driver (native/src/lookaside.c, docs/engines.md) ----
 * Descriptor rings in shared memory served by the engine's own thread (the
 * "device"), with latency, a throughput cap, injected faults, a health
 * probe; the crypto itself is a core's. AES-GCM only. The PKCS#11 engine
 * (backends/pkcs11) and the accelerator simulator (simulators/accelerator)
 * are such cores. */
struct p3dp_engine_params;
struct p3_lookaside_core {
    /* The device's session for one SA key (16 or 32 octets, cipher
     * P3DP_AES_*_GCM); NULL on failure. Called on the control path. */
    void *(*key_new)(void *core, uint32_t cipher, int encrypt, const uint8_t *key);
    /* Wipe (or destroy in the device) a key from key_new. */
    void (*key_free)(void *core, void *key);
    /* One RFC 4106 op on the device thread, iv = salt ‖ seq; tag_flip: flip
     * a bit of the tag read (the corrupted-input fault). 0,
     * -P3R_DP_AUTH_FAILED, or another negative reason (a device error). */
    int (*gcm)(void *core, void *key, const uint8_t *iv, struct p3_crypto_op *op, int tag_flip);
    /* Optional: free the core (after the device thread has stopped). */
    void (*close)(void *core);
};
/* A lookaside engine over core (its state core_state, owned from here on:
 * closed on failure too); use it with p3_lookaside_driver. NULL on bad
 * parameters (ring_slots not a power of two in 2..65536) or no memory. */
void *p3_lookaside_new(const struct p3dp_engine_params *params, const struct p3_lookaside_core *core,
                       void *core_state);
extern const struct p3_crypto_engine p3_lookaside_driver;
/* Arm a fault: after `after_ops` good ops the next `count` ops fail with
 * `fault` (P3DP_FAULT_GONE: the device is gone until P3DP_FAULT_NONE is armed). */
void p3_lookaside_inject(void *engine, uint32_t fault, uint32_t after_ops, uint32_t count);
/* The core state an engine was made with, and the core key of one of its SAs. */
void *p3_lookaside_core_state(void *engine);
void *p3_lookaside_key(const struct p3_crypto_sa *sa);

/* ---- The backend table (backends/registry.c) ----
 * The core never names a concrete backend: ctx.c starts crypto engines and
 * worker.c loads the DPDK ports through the table it is handed, and
 * backends/registry.c is the one place that lists them. Each backend
 * exports its entry from its own folder. */
struct p3_engine_backend {
    uint32_t kind;              /* P3DP_ENGINE_* */
    /* Start an instance: 0 with *engine and *state set, or a negative reason. */
    int (*start)(const struct p3dp_engine_params *params, const struct p3_crypto_engine **engine, void **state);
    /* Optional: 1 when an SA's key exists only inside the device (PKCS#11:
     * a sensitive, non-extractable token object), else 0. */
    int (*key_sealed_in)(void *state, struct p3_crypto_sa *sa);
};

struct p3dp_worker_config;
struct p3_io;
struct p3_backends {
    const struct p3_engine_backend *const *engines;   /* NULL-terminated */
    /* The DPDK port backend: nq queues on each port, lan[i] and wan[i] are
     * queue i. 0, or -P3R_DPDK_UNAVAILABLE (no DPDK, EAL), -P3R_DPDK_PORT. */
    int (*dpdk_ports_load)(const struct p3dp_worker_config *cfg, unsigned nq, struct p3_io *lan,
                           struct p3_io *wan);
};

/* The table the extension is built with (backends/registry.c). */
extern const struct p3_backends p3_backends;
/* The engines it lists, each from its backend's folder. */
extern const struct p3_engine_backend p3_aesni_backend;        /* backends/aesni/aesni.c */
extern const struct p3_engine_backend p3_pkcs11_backend;       /* backends/pkcs11/pkcs11_engine.c */
extern const struct p3_engine_backend p3_cryptodev_backend;    /* backends/dpdk/cryptodev_load.c */
extern const struct p3_engine_backend p3_accel_sim_backend;    /* simulators/accelerator/accel.c */

/* ---- Packet I/O backends (backends/tun, backends/udp, backends/esp) ----
 * A burst in, a burst out; the worker (native/src/worker.c) drives them.
 * The descriptors are opened by the control plane (Python: TUN through
 * /dev/net/tun and pyroute2, sockets bound to port 5653) and handed over. */
enum { P3_IO_TUN = 1, P3_IO_UDP = 2, P3_IO_ESP = 3 };
enum { P3_IO_MAX_BURST = 64 };

struct p3_iobuf {
    uint8_t *data;
    uint32_t len;
    uint32_t cap;
    uint8_t family;     /* WAN: peer's address family, 4 or 6 */
    uint16_t port;      /* WAN: peer's UDP port, host order (0 for ESP) */
    uint8_t addr[16];   /* WAN: peer's address, network order */
    void *handle;       /* the backend's own buffer behind data (a DPDK mbuf), or NULL */
};

struct p3_io;

struct p3_io_ops {
    const char *name;
    /* Receive up to n packets without blocking; returns the count (0: none
     * ready) or a negative reason. */
    int (*rx_burst)(struct p3_io *io, struct p3_iobuf *bufs, unsigned n);
    /* Send n packets; returns how many left, or a negative reason. Buffers
     * from tx_alloc are the backend's again afterwards, sent or not. */
    int (*tx_burst)(struct p3_io *io, struct p3_iobuf *bufs, unsigned n);
    /* Optional (NULL for the kernel backends). Backends with their own packet
     * memory (DPDK) lend transmit buffers so the dataplane writes its output
     * straight into them: point bufs[i].data/cap/handle at up to n buffers,
     * with room before data for the link header; returns how many. A lent
     * buffer goes back through tx_burst or tx_release. */
    int (*tx_alloc)(struct p3_io *io, struct p3_iobuf *bufs, unsigned n);
    void (*tx_release)(struct p3_io *io, struct p3_iobuf *bufs, unsigned n);
    /* Optional: called in the worker thread before its first burst and after
     * its last (DPDK registers the thread with the EAL there). */
    void (*thread_enter)(struct p3_io *io);
    void (*thread_exit)(struct p3_io *io);
    /* Optional (DPDK, several workers): the worker hands a received buffer
     * to another worker, so the backend must not free it at the next
     * burst; buf_free frees such a buffer later, from any worker. */
    void (*rx_keep)(struct p3_io *io, struct p3_iobuf *buf);
    void (*buf_free)(struct p3_io *io, struct p3_iobuf *buf);
    /* Optional: adds the link layer's counters (DPDK ports) to these;
     * late_tx counts packets sent after waiting for a neighbour (not in
     * tx_burst's result). */
    void (*link_stats)(const struct p3_io *io, uint64_t *neighbour_drops, uint64_t *replies,
                       uint64_t *link_drops, uint64_t *tx_full, uint64_t *late_tx);
    /* Optional: frees the backend's state (p3_io_close calls it). */
    void (*close)(struct p3_io *io);
};

struct p3_io {
    const struct p3_io_ops *ops;
    int fd;              /* -1 for backends that are polled, not waited on (DPDK) */
    int family;          /* the socket's family: 4 or 6 (a v6 socket may be dual-stack) */
    uint32_t open_flags; /* flags the worker passes to p3dp_open_burst for this input */
    void *state;         /* the backend's own (mmsghdr arrays, ...) */
};

extern const struct p3_io_ops p3_io_tun_ops, p3_io_udp_ops, p3_io_esp_ops;
/* Bind fd to the backend of that kind; family matters for ESP (4 or 6). */
int p3_io_open(struct p3_io *io, int kind, int fd, int family);
void p3_io_close(struct p3_io *io);
/* TUN: notices IFF_VNET_HDR (TSO super-segments in, cut here) on the descriptor. */
int p3_io_tun_setup(struct p3_io *io);
/* The same with the virtio-net header forced on or off (tests use a socket pair). */
int p3_io_tun_setup_vnet(struct p3_io *io, int vnet);
void p3_io_tun_teardown(struct p3_io *io);

/* ---- DPDK ports (backends/dpdk/src/ethdev.c, docs/dpdk.md) ----
 * Two ethdev ports, LAN and WAN, in build/libp3dpdk.so; the worker loads it
 * with dlopen (backends/dpdk/ethdev_load.c) and polls the ports. The LAN port
 * hands out and takes inner IP packets; the WAN port whole outer IP packets
 * (the worker seals with P3DP_OUT_IP and opens with P3DP_IN_IP). Each answers
 * ARP / neighbour discovery for its own address and resolves next hops. */
/* The library's one entry point for the ports: nq queues on each port (one
 * per worker; RSS spreads the traffic), lan[i] and wan[i] are queue i.
 * 0, or -P3R_DPDK_UNAVAILABLE (no DPDK, EAL), -P3R_DPDK_PORT (a port). */
typedef int (*p3_dpdk_ports_open_fn)(const struct p3dp_worker_config *cfg, unsigned nq, struct p3_io *lan,
                                     struct p3_io *wan);
/* backends/dpdk/ethdev_load.c: dlopens the library and opens the ports (the table's dpdk_ports_load). */
int p3_dpdk_ports_load(const struct p3dp_worker_config *cfg, unsigned nq, struct p3_io *lan, struct p3_io *wan);

#endif /* P3_BACKEND_H */
