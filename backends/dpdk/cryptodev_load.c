/*
 * cryptodev_load.c — starts the DPDK cryptodev engine for ctx.c
 * (docs/engines.md, "The DPDK cryptodev engine").
 *
 * The engine itself (backends/dpdk/src/cryptodev.c) is its own shared
 * library, build/libp3dpdk.so, so that DPDK headers and flags stay out
 * of this extension; it is loaded here at set_engine time and hands over its
 * vtable through p3_cryptodev_open(). A machine built without DPDK has no
 * library: the engine then reports itself unavailable (P3-E608, DESIGN.md §2).
 */
#include "p3dp.h"
#include "p3_backend.h"

#include <dlfcn.h>
#include <stdio.h>

typedef int (*cryptodev_open_fn)(const struct p3dp_engine_params *params, const char *eal_args,
                                 const struct p3_crypto_engine **vtable, void **state);

static int cryptodev_start(const struct p3dp_engine_params *params, const struct p3_crypto_engine **engine,
                           void **state)
{
    const char *path = params && params->module_path && *params->module_path ? params->module_path
                                                                               : "libp3dpdk.so";
    void *lib;
    cryptodev_open_fn open_fn;

    *state = NULL;
    /* Never unloaded: the EAL it initialises keeps threads and memory for
     * the life of the process. */
    lib = dlopen(path, RTLD_NOW | RTLD_LOCAL | RTLD_NODELETE);
    if (!lib) {
        fprintf(stderr, "p3hw cryptodev: %s (build it with `make -C native dpdk`; needs libdpdk-dev)\n",
                dlerror());
        return -P3R_CRYPTODEV;
    }
    *(void **)&open_fn = dlsym(lib, "p3_cryptodev_open");
    if (!open_fn) {
        fprintf(stderr, "p3hw cryptodev: %s is not the p3hw cryptodev library\n", path);
        dlclose(lib);
        return -P3R_CRYPTODEV;
    }
    return open_fn(params, params ? params->eal_args : NULL, engine, state);
}

const struct p3_engine_backend p3_cryptodev_backend = {
    .kind = P3DP_ENGINE_CRYPTODEV,
    .start = cryptodev_start,
};
