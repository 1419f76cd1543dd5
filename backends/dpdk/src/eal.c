/*
 * eal.c — DPDK's environment abstraction layer, up once per process
 * (docs/dpdk.md). The cryptodev engine and the port backend live in the same
 * library and both start here, so the first one's arguments must name every
 * device either needs (the gateway passes the one dpdk_eal_args to both).
 */
#define _GNU_SOURCE               /* sched_{get,set}affinity */

#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <rte_eal.h>
#include <rte_errno.h>

#include "eal.h"

enum { MAX_ARGS = 64 };

static pthread_mutex_t eal_lock = PTHREAD_MUTEX_INITIALIZER;
static int eal_state;             /* 0 not tried, 1 up, -1 failed (DPDK cannot retry) */

/* Splits args on blanks into argv (argv[0] is a program name). */
static int split_args(char *args, char **argv)
{
    int argc = 0;
    argv[argc++] = (char *)"p3hw";
    for (char *save = NULL, *tok = strtok_r(args, " \t\n", &save); tok; tok = strtok_r(NULL, " \t\n", &save)) {
        if (argc >= MAX_ARGS - 1)
            return -1;
        argv[argc++] = tok;
    }
    argv[argc] = NULL;
    return argc;
}

int p3_dpdk_eal_up(const char *eal_args, const char *who)
{
    char *copy, *argv[MAX_ARGS];
    int argc, have_cpus, rc = -1;
    cpu_set_t cpus;

    pthread_mutex_lock(&eal_lock);
    if (eal_state) {
        rc = eal_state > 0 ? 0 : -1;
        if (rc)
            fprintf(stderr, "p3hw %s: the EAL failed to start earlier in this process\n", who);
        goto out;
    }
    eal_state = -1;
    copy = strdup(eal_args && *eal_args ? eal_args : P3_DPDK_DEFAULT_EAL_ARGS);
    if (!copy)
        goto out;
    argc = split_args(copy, argv);
    if (argc < 0) {
        fprintf(stderr, "p3hw %s: too many EAL arguments (at most %d)\n", who, MAX_ARGS - 2);
        free(copy);
        goto out;
    }
    /* EAL pins the calling thread to its main lcore; the control plane's
     * thread keeps the CPUs it had (the packet worker is its own thread). */
    have_cpus = sched_getaffinity(0, sizeof(cpus), &cpus) == 0;
    optind = 1;
    if (rte_eal_init(argc, argv) < 0) {
        if (rte_errno != EALREADY) {
            fprintf(stderr, "p3hw %s: EAL initialisation failed: %s\n", who, rte_strerror(rte_errno));
            free(copy);
            goto out;
        }
        /* Something else in this process (an embedding application) brought
         * the EAL up: its arguments must have brought our devices too. */
        fprintf(stderr, "p3hw %s: the EAL was already initialised in this process; using its devices\n", who);
        free(copy);
    } else if (have_cpus) {
        sched_setaffinity(0, sizeof(cpus), &cpus);
    }
    /* argv strings may be kept by the EAL: copy is not freed. */
    eal_state = 1;
    rc = 0;
out:
    pthread_mutex_unlock(&eal_lock);
    return rc;
}
