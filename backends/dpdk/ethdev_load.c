/*
 * ethdev_load.c — loads the DPDK port backend for the worker (docs/dpdk.md).
 *
 * The ports live in build/libp3dpdk.so with the cryptodev engine, so that
 * DPDK headers and flags stay out of this extension (cryptodev_load.c does
 * the same for the engine). A machine built without DPDK has no library:
 * the worker then reports P3-E606 and the gateway says so.
 */
#include "p3dp.h"
#include "p3_backend.h"

#include <dlfcn.h>
#include <stdio.h>

int p3_dpdk_ports_load(const struct p3dp_worker_config *cfg, unsigned nq, struct p3_io *lan, struct p3_io *wan)
{
    const char *path = cfg->dpdk_library && *cfg->dpdk_library ? cfg->dpdk_library : "libp3dpdk.so";
    p3_dpdk_ports_open_fn open_fn;
    /* Never unloaded: the EAL keeps threads and memory for the life of the process. */
    void *lib = dlopen(path, RTLD_NOW | RTLD_LOCAL | RTLD_NODELETE);
    if (!lib) {
        fprintf(stderr, "p3hw dpdk: %s (build it with `make -C native dpdk`; needs libdpdk-dev)\n", dlerror());
        return -P3R_DPDK_UNAVAILABLE;
    }
    *(void **)&open_fn = dlsym(lib, "p3_dpdk_ports_open");
    if (!open_fn) {
        fprintf(stderr, "p3hw dpdk: %s is not the p3hw DPDK library\n", path);
        dlclose(lib);
        return -P3R_DPDK_UNAVAILABLE;
    }
    return open_fn(cfg, nq, lan, wan);
}
