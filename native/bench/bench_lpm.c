/* bench_lpm.c — LPM lookup rate of route.c on one core (issue 3 benchmark).
 *
 * Builds 10,000 random IPv4 and 10,000 random IPv6 prefixes, then for about
 * two seconds per family looks up, in bursts of 64, random addresses that
 * each fall inside one of the prefixes (so every lookup walks to a route, as
 * forwarded traffic does). Prints one JSON line.
 *
 * Build and run (from native/; see docs/routing.md):
 *   cc -O2 -Iinclude -o build/bench_lpm bench/bench_lpm.c src/route.c -pthread && build/bench_lpm
 */
#include "p3dp.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

enum {
    PREFIXES = 10000,
    ADDRESSES = 1 << 20, /* 16 MiB of addresses: larger than the caches */
    BURST = 64
};

static uint64_t rng_state = 0x5eed;

static uint64_t rng(void)
{
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull); /* splitmix64 */
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

struct prefix {
    uint8_t bytes[16];
    unsigned int len;
};

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Resident memory now, from /proc/self/statm (pages). */
static double resident_mib(void)
{
    long pages = 0, resident = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (f) {
        if (fscanf(f, "%ld %ld", &pages, &resident) != 2)
            resident = 0;
        fclose(f);
    }
    return (double)resident * (double)sysconf(_SC_PAGESIZE) / (1024.0 * 1024.0);
}

static void keep_prefix_bits(uint8_t *a, const struct prefix *p, unsigned int octets)
{
    for (unsigned int bit = 0; bit < octets * 8; bit++) {
        uint8_t m = (uint8_t)(0x80u >> (bit % 8));
        if (bit < p->len)
            a[bit / 8] = (uint8_t)((a[bit / 8] & ~m) | (p->bytes[bit / 8] & m));
    }
}

/* IPv4: lengths /8../32 uniformly (a quarter longer than /24, which need a
 * second-level node). IPv6: /16../64 uniformly plus one in ten /128 hosts.
 * All bits random: the worst case for node sharing. */
static void random_prefix(int family, struct prefix *p)
{
    unsigned int octets = family == 4 ? 4 : 16;
    memset(p->bytes, 0, sizeof(p->bytes));
    if (family == 4)
        p->len = 8 + (unsigned int)(rng() % 25);
    else
        p->len = rng() % 10 == 0 ? 128 : 16 + (unsigned int)(rng() % 49);
    for (unsigned int i = 0; i < octets; i++)
        p->bytes[i] = (uint8_t)rng();
    for (unsigned int bit = p->len; bit < octets * 8; bit++)
        p->bytes[bit / 8] &= (uint8_t)~(0x80u >> (bit % 8));
}

static double bench_family(p3dp_routes *routes, int family, size_t *installed, double *table_mib)
{
    unsigned int octets = family == 4 ? 4 : 16;
    struct prefix *prefixes = calloc(PREFIXES, sizeof(*prefixes));
    uint8_t *addrs = calloc(ADDRESSES, 16);
    if (!prefixes || !addrs) {
        fprintf(stderr, "bench_lpm: out of memory\n");
        exit(1);
    }
    double rss_before = resident_mib();
    /* Distinct prefixes: a random repeat (likely among short ones) is drawn again. */
    for (size_t i = 0; i < PREFIXES;) {
        random_prefix(family, &prefixes[i]);
        int rc = p3dp_route_add(routes, family, prefixes[i].bytes, prefixes[i].len,
                                (uint32_t)i);
        if (rc != 0) {
            fprintf(stderr, "bench_lpm: route add failed: %d\n", rc);
            exit(1);
        }
        if (p3dp_route_count(routes, family) == i + 1)
            i++;
    }
    *installed = p3dp_route_count(routes, family);
    *table_mib = resident_mib() - rss_before;
    for (size_t i = 0; i < ADDRESSES; i++) {
        uint8_t *a = addrs + 16 * i;
        for (unsigned int k = 0; k < octets; k++)
            a[k] = (uint8_t)rng();
        keep_prefix_bits(a, &prefixes[rng() % PREFIXES], octets);
    }

    uint32_t peers[BURST];
    uint64_t lookups = 0, misses = 0, checksum = 0;
    size_t pos = 0;
    double start = now_s(), elapsed = 0;
    while (elapsed < 2.0) {
        for (int b = 0; b < 1024; b++) {
            p3dp_route_lookup_burst(routes, family, addrs + 16 * pos, BURST, peers);
            for (int k = 0; k < BURST; k++) {
                misses += peers[k] == P3DP_NO_PEER;
                checksum += peers[k];
            }
            pos = (pos + BURST) % ADDRESSES;
            lookups += BURST;
        }
        elapsed = now_s() - start;
    }
    if (misses) {
        fprintf(stderr, "bench_lpm: %llu lookups found no route (checksum %llu)\n",
                (unsigned long long)misses, (unsigned long long)checksum);
        exit(1);
    }
    free(prefixes);
    free(addrs);
    return (double)lookups / elapsed;
}

int main(void)
{
    p3dp_routes *routes = p3dp_routes_new();
    if (!routes) {
        fprintf(stderr, "bench_lpm: cannot create the table\n");
        return 1;
    }
    size_t v4_prefixes = 0, v6_prefixes = 0;
    double v4_mib = 0, v6_mib = 0;
    double v4_rate = bench_family(routes, 4, &v4_prefixes, &v4_mib);
    double v6_rate = bench_family(routes, 6, &v6_prefixes, &v6_mib);
    printf("{\"v4_lookups_per_s\": %.0f, \"v6_lookups_per_s\": %.0f, \"v4_prefixes\": %zu, "
           "\"v6_prefixes\": %zu, \"v4_table_mib\": %.1f, \"v6_table_mib\": %.1f}\n",
           v4_rate, v6_rate, v4_prefixes, v6_prefixes, v4_mib, v6_mib);
    p3dp_routes_free(routes);
    return 0;
}
