/* eal.h — the DPDK environment, brought up once per process and shared by
 * the cryptodev engine (cryptodev.c) and the port backend (ethdev.c). */
#ifndef P3_DPDK_EAL_H
#define P3_DPDK_EAL_H

/* What the EAL gets when the configuration gives no dpdk_eal_args. */
#define P3_DPDK_DEFAULT_EAL_ARGS "--no-huge -m 256 --no-shconf --no-pci"

/* Initialises the EAL with eal_args (split on blanks) the first time; later
 * calls return the first call's result, whatever their arguments (DPDK
 * cannot initialise twice). The calling thread keeps its CPU affinity.
 * 0, or -1 with the reason on stderr prefixed by who. Thread-safe. */
int p3_dpdk_eal_up(const char *eal_args, const char *who);

#endif
