/*
 * ringports.h — the entry points of the DPDK test library
 * (build/libp3dpdk_test.so, ringports.c). The text between the markers is
 * also the cffi cdef of simulators/ringports.py, so the declarations are
 * written once. Plain C types only: cffi parses it as it is.
 */
#ifndef P3_DPDK_RINGPORTS_H
#define P3_DPDK_RINGPORTS_H

#include <stdint.h>

/* RINGPORTS_CDEF_BEGIN */
/* Ring-backed ports "p3b_lan" and "p3b_wan", nq queues each way; the EAL comes up with eal_args. */
int p3_dpdk_bench_ports(const char *eal_args, unsigned nq);
int p3_dpdk_bench_port(int wan, char *name, uint8_t *mac);
/* The traffic thread: LAN receive ring kept full of frames, the WAN's output counted. */
int p3_dpdk_bench_start(const uint8_t *frames, const uint32_t *lens, unsigned n, const uint8_t *wan_frame,
                        uint32_t wan_len, int cpu);
void p3_dpdk_bench_stop(uint64_t *fed, uint64_t *sunk, uint64_t *sunk_bytes);
uint64_t p3_dpdk_bench_ring_full(void);
/* The other way: fresh packets sealed with seal_fn (p3dp_seal_burst) on ctx onto the WAN receive ring. */
int p3_dpdk_bench_start_sealed(void *seal_fn, void *ctx, uint32_t peer, const uint8_t *frames, const uint32_t *lens,
                               unsigned n, const uint8_t *eth, int cpu);
/* One frame onto / off a ring (0 lan_rx, 1 lan_tx, 2 wan_rx, 3 wan_tx) of queue q. */
int p3_dpdk_ring_put(int ring, unsigned q, const uint8_t *frame, uint32_t len);
int p3_dpdk_ring_get(int ring, unsigned q, uint8_t *buf, uint32_t cap);
/* A port the test side drives itself. */
int p3_dpdk_test_port_up(const char *name, uint8_t *mac);
int p3_dpdk_test_send(int port, const uint8_t *frame, uint32_t len);
int p3_dpdk_test_recv(int port, uint8_t *buf, uint32_t cap);
/* RINGPORTS_CDEF_END */

#endif
