/*
 * registry.c — the backend table (p3_backend.h): the one place that names
 * the crypto engines and the DPDK port loader the extension is built with.
 * The core (native/src) is handed this table and names none of them; a
 * backend compiled out still has its entry and reports itself unavailable.
 */
#include "p3dp.h"
#include "p3_backend.h"

#include <stddef.h>

static const struct p3_engine_backend *const engines[] = {
    &p3_aesni_backend,
    &p3_accel_sim_backend,
    &p3_pkcs11_backend,
    &p3_cryptodev_backend,
    NULL,
};

const struct p3_backends p3_backends = {
    .engines = engines,
    .dpdk_ports_load = p3_dpdk_ports_load,
};
