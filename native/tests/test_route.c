/* Routing table (route.c): longest-prefix match for IPv4 and IPv6, updates
 * that restore covering routes, argument checks, agreement with a brute-force
 * reference, and lookups that stay correct while a writer changes the table. */
#include "ntest.h"
#include "p3dp.h"

#include <arpa/inet.h>
#include <pthread.h>
#include <stdbool.h>
#include <string.h>

static uint32_t v4(p3dp_routes *r, const char *addr)
{
    uint8_t a[4];
    if (inet_pton(AF_INET, addr, a) != 1)
        abort();
    return p3dp_route_lookup(r, 4, a);
}

static uint32_t v6(p3dp_routes *r, const char *addr)
{
    uint8_t a[16];
    if (inet_pton(AF_INET6, addr, a) != 1)
        abort();
    return p3dp_route_lookup(r, 6, a);
}

static int add4(p3dp_routes *r, const char *prefix, unsigned int len, uint32_t peer)
{
    uint8_t a[4];
    if (inet_pton(AF_INET, prefix, a) != 1)
        abort();
    return p3dp_route_add(r, 4, a, len, peer);
}

static int del4(p3dp_routes *r, const char *prefix, unsigned int len)
{
    uint8_t a[4];
    if (inet_pton(AF_INET, prefix, a) != 1)
        abort();
    return p3dp_route_del(r, 4, a, len);
}

static int add6(p3dp_routes *r, const char *prefix, unsigned int len, uint32_t peer)
{
    uint8_t a[16];
    if (inet_pton(AF_INET6, prefix, a) != 1)
        abort();
    return p3dp_route_add(r, 6, a, len, peer);
}

static int del6(p3dp_routes *r, const char *prefix, unsigned int len)
{
    uint8_t a[16];
    if (inet_pton(AF_INET6, prefix, a) != 1)
        abort();
    return p3dp_route_del(r, 6, a, len);
}

static void test_empty_table_routes_nothing(void)
{
    p3dp_routes *r = p3dp_routes_new();
    CHECK(r != NULL);
    CHECK_EQ(v4(r, "10.1.2.3"), P3DP_NO_PEER);
    CHECK_EQ(v6(r, "2001:db8::1"), P3DP_NO_PEER);
    CHECK_EQ(p3dp_route_count(r, 4), 0);
    CHECK_EQ(p3dp_route_count(r, 6), 0);
    p3dp_routes_free(r);
}

static void test_ipv4_longest_nested_prefix_wins(void)
{
    p3dp_routes *r = p3dp_routes_new();
    CHECK_EQ(add4(r, "10.0.0.0", 8, 1), 0);
    CHECK_EQ(add4(r, "10.1.0.0", 16, 2), 0);
    CHECK_EQ(add4(r, "10.1.2.0", 24, 3), 0);
    CHECK_EQ(add4(r, "10.1.2.128", 25, 4), 0);
    CHECK_EQ(add4(r, "10.1.2.200", 30, 5), 0);
    CHECK_EQ(v4(r, "10.9.9.9"), 1);
    CHECK_EQ(v4(r, "10.1.9.9"), 2);
    CHECK_EQ(v4(r, "10.1.2.1"), 3);
    CHECK_EQ(v4(r, "10.1.2.129"), 4);
    CHECK_EQ(v4(r, "10.1.2.201"), 5);
    CHECK_EQ(v4(r, "10.1.2.204"), 4);
    CHECK_EQ(v4(r, "11.0.0.1"), P3DP_NO_PEER);
    /* Added in the other order: a short prefix added after longer ones must
     * not overwrite them. */
    CHECK_EQ(add4(r, "172.16.5.0", 24, 7), 0);
    CHECK_EQ(add4(r, "172.16.5.64", 26, 8), 0);
    CHECK_EQ(add4(r, "172.16.0.0", 12, 6), 0);
    CHECK_EQ(v4(r, "172.16.5.65"), 8);
    CHECK_EQ(v4(r, "172.16.5.1"), 7);
    CHECK_EQ(v4(r, "172.31.255.255"), 6);
    CHECK_EQ(v4(r, "172.32.0.0"), P3DP_NO_PEER);
    CHECK_EQ(p3dp_route_count(r, 4), 8);
    p3dp_routes_free(r);
}

static void test_ipv6_longest_nested_prefix_wins(void)
{
    p3dp_routes *r = p3dp_routes_new();
    CHECK_EQ(add6(r, "2001:db8::", 32, 1), 0);
    CHECK_EQ(add6(r, "2001:db8:1::", 48, 2), 0);
    CHECK_EQ(add6(r, "2001:db8:1:ff00::", 56, 3), 0);
    CHECK_EQ(add6(r, "2001:db8:1:ff10::", 60, 4), 0);
    CHECK_EQ(add6(r, "2001:db8:1:ff10::8", 125, 5), 0);
    CHECK_EQ(add6(r, "2000::", 3, 9), 0);
    CHECK_EQ(v6(r, "2001:db8:5::1"), 1);
    CHECK_EQ(v6(r, "2001:db8:1::1"), 2);
    CHECK_EQ(v6(r, "2001:db8:1:ff01::1"), 3);
    CHECK_EQ(v6(r, "2001:db8:1:ff1f::1"), 4);
    CHECK_EQ(v6(r, "2001:db8:1:ff10::f"), 5);
    CHECK_EQ(v6(r, "2001:db8:1:ff10::7"), 4);
    CHECK_EQ(v6(r, "3fff::1"), 9);
    CHECK_EQ(v6(r, "4000::1"), P3DP_NO_PEER);
    CHECK_EQ(v6(r, "fe80::1"), P3DP_NO_PEER);
    p3dp_routes_free(r);
}

static void test_default_route_catches_everything_else(void)
{
    p3dp_routes *r = p3dp_routes_new();
    uint8_t zero[16] = {0};
    CHECK_EQ(p3dp_route_add(r, 4, zero, 0, 42), 0);
    CHECK_EQ(p3dp_route_add(r, 6, zero, 0, 43), 0);
    CHECK_EQ(add4(r, "192.0.2.0", 24, 5), 0);
    CHECK_EQ(add6(r, "2001:db8::", 32, 6), 0);
    CHECK_EQ(v4(r, "1.2.3.4"), 42);
    CHECK_EQ(v4(r, "255.255.255.255"), 42);
    CHECK_EQ(v4(r, "192.0.2.77"), 5);
    CHECK_EQ(v6(r, "::1"), 43);
    CHECK_EQ(v6(r, "ffff::1"), 43);
    CHECK_EQ(v6(r, "2001:db8::77"), 6);
    /* Without the default, only the specific routes remain. */
    CHECK_EQ(p3dp_route_del(r, 4, zero, 0), 0);
    CHECK_EQ(p3dp_route_del(r, 6, zero, 0), 0);
    CHECK_EQ(v4(r, "1.2.3.4"), P3DP_NO_PEER);
    CHECK_EQ(v4(r, "192.0.2.77"), 5);
    CHECK_EQ(v6(r, "::1"), P3DP_NO_PEER);
    CHECK_EQ(v6(r, "2001:db8::77"), 6);
    p3dp_routes_free(r);
}

static void test_host_routes_match_only_their_address(void)
{
    p3dp_routes *r = p3dp_routes_new();
    CHECK_EQ(add4(r, "10.0.0.0", 8, 1), 0);
    CHECK_EQ(add4(r, "10.20.30.40", 32, 2), 0);
    CHECK_EQ(add4(r, "255.255.255.255", 32, 3), 0);
    CHECK_EQ(add6(r, "2001:db8::", 32, 4), 0);
    CHECK_EQ(add6(r, "2001:db8::dead:beef", 128, 5), 0);
    CHECK_EQ(add6(r, "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 128, 6), 0);
    CHECK_EQ(v4(r, "10.20.30.40"), 2);
    CHECK_EQ(v4(r, "10.20.30.41"), 1);
    CHECK_EQ(v4(r, "10.20.30.39"), 1);
    CHECK_EQ(v4(r, "255.255.255.255"), 3);
    CHECK_EQ(v4(r, "255.255.255.254"), P3DP_NO_PEER);
    CHECK_EQ(v6(r, "2001:db8::dead:beef"), 5);
    CHECK_EQ(v6(r, "2001:db8::dead:beee"), 4);
    CHECK_EQ(v6(r, "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"), 6);
    CHECK_EQ(v6(r, "ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe"), P3DP_NO_PEER);
    p3dp_routes_free(r);
}

static void test_delete_restores_the_covering_route(void)
{
    p3dp_routes *r = p3dp_routes_new();
    CHECK_EQ(add4(r, "10.0.0.0", 8, 1), 0);
    CHECK_EQ(add4(r, "10.1.0.0", 16, 2), 0);
    CHECK_EQ(add4(r, "10.1.2.0", 24, 3), 0);
    CHECK_EQ(add4(r, "10.1.2.0", 28, 4), 0);
    /* Remove the middle: the /24's addresses fall back to the /16, the /28
     * keeps its own. */
    CHECK_EQ(del4(r, "10.1.2.0", 24), 0);
    CHECK_EQ(v4(r, "10.1.2.100"), 2);
    CHECK_EQ(v4(r, "10.1.2.5"), 4);
    CHECK_EQ(del4(r, "10.1.2.0", 28), 0);
    CHECK_EQ(v4(r, "10.1.2.5"), 2);
    CHECK_EQ(del4(r, "10.1.0.0", 16), 0);
    CHECK_EQ(v4(r, "10.1.2.5"), 1);
    CHECK_EQ(del4(r, "10.0.0.0", 8), 0);
    CHECK_EQ(v4(r, "10.1.2.5"), P3DP_NO_PEER);
    CHECK_EQ(p3dp_route_count(r, 4), 0);

    CHECK_EQ(add6(r, "2001:db8::", 32, 1), 0);
    CHECK_EQ(add6(r, "2001:db8:aa00::", 40, 2), 0);
    CHECK_EQ(add6(r, "2001:db8:aabb::", 48, 3), 0);
    CHECK_EQ(add6(r, "2001:db8:aabb:cc00::", 56, 4), 0);
    CHECK_EQ(del6(r, "2001:db8:aabb::", 48), 0);
    CHECK_EQ(v6(r, "2001:db8:aabb:1::1"), 2);
    CHECK_EQ(v6(r, "2001:db8:aabb:cc01::1"), 4);
    CHECK_EQ(del6(r, "2001:db8:aa00::", 40), 0);
    CHECK_EQ(v6(r, "2001:db8:aabb:1::1"), 1);
    CHECK_EQ(del6(r, "2001:db8:aabb:cc00::", 56), 0);
    CHECK_EQ(v6(r, "2001:db8:aabb:cc01::1"), 1);
    CHECK_EQ(p3dp_route_count(r, 6), 1);
    p3dp_routes_free(r);
}

static void test_add_of_existing_prefix_replaces_its_peer(void)
{
    p3dp_routes *r = p3dp_routes_new();
    CHECK_EQ(add4(r, "10.0.0.0", 8, 1), 0);
    CHECK_EQ(add4(r, "10.1.0.0", 16, 2), 0);
    CHECK_EQ(add4(r, "10.0.0.0", 8, 9), 0);
    CHECK_EQ(v4(r, "10.2.0.1"), 9);
    CHECK_EQ(v4(r, "10.1.0.1"), 2);
    CHECK_EQ(p3dp_route_count(r, 4), 2);
    /* The replaced peer is what the covering route restores to. */
    CHECK_EQ(del4(r, "10.1.0.0", 16), 0);
    CHECK_EQ(v4(r, "10.1.0.1"), 9);

    CHECK_EQ(add6(r, "2001:db8::", 32, 1), 0);
    CHECK_EQ(add6(r, "2001:db8::", 32, P3DP_ROUTE_PEER_MAX), 0);
    CHECK_EQ(v6(r, "2001:db8::1"), P3DP_ROUTE_PEER_MAX);
    CHECK_EQ(p3dp_route_count(r, 6), 1);
    p3dp_routes_free(r);
}

static void test_bad_arguments_are_rejected_with_reason_codes(void)
{
    p3dp_routes *r = p3dp_routes_new();
    /* Host bits set beyond the prefix length: P3-E214. */
    CHECK_EQ(add4(r, "10.1.2.3", 24, 1), -P3R_DP_BAD_ARGUMENT);
    CHECK_EQ(add4(r, "10.128.0.0", 8, 1), -P3R_DP_BAD_ARGUMENT);
    CHECK_EQ(add6(r, "2001:db8::1", 64, 1), -P3R_DP_BAD_ARGUMENT);
    CHECK_EQ(add6(r, "2001:db8:8000::", 32, 1), -P3R_DP_BAD_ARGUMENT);
    CHECK_EQ(del4(r, "10.1.2.3", 24), -P3R_DP_BAD_ARGUMENT);
    /* Length out of range, unknown family, peer out of range, NULLs. */
    uint8_t zero[16] = {0};
    CHECK_EQ(p3dp_route_add(r, 4, zero, 33, 1), -P3R_DP_BAD_ARGUMENT);
    CHECK_EQ(p3dp_route_add(r, 6, zero, 129, 1), -P3R_DP_BAD_ARGUMENT);
    CHECK_EQ(p3dp_route_add(r, 5, zero, 8, 1), -P3R_DP_BAD_ARGUMENT);
    CHECK_EQ(p3dp_route_add(r, 4, zero, 8, P3DP_NO_PEER), -P3R_DP_BAD_ARGUMENT);
    CHECK_EQ(p3dp_route_add(r, 4, zero, 8, P3DP_ROUTE_PEER_MAX + 1), -P3R_DP_BAD_ARGUMENT);
    CHECK_EQ(p3dp_route_add(NULL, 4, zero, 8, 1), -P3R_DP_BAD_ARGUMENT);
    CHECK_EQ(p3dp_route_add(r, 4, NULL, 8, 1), -P3R_DP_BAD_ARGUMENT);
    CHECK_EQ(p3dp_route_del(r, 0, zero, 8), -P3R_DP_BAD_ARGUMENT);
    CHECK_EQ(p3dp_route_del(r, 4, zero, 40), -P3R_DP_BAD_ARGUMENT);
    /* Deleting what is not there: P3-E217. A covering or covered prefix of a
     * present one is a different prefix. */
    CHECK_EQ(add4(r, "10.0.0.0", 8, 1), 0);
    CHECK_EQ(del4(r, "10.0.0.0", 16), -P3R_DP_ROUTE_NOT_FOUND);
    CHECK_EQ(del4(r, "10.0.0.0", 7), -P3R_DP_ROUTE_NOT_FOUND);
    CHECK_EQ(del4(r, "11.0.0.0", 8), -P3R_DP_ROUTE_NOT_FOUND);
    CHECK_EQ(del6(r, "2001:db8::", 32), -P3R_DP_ROUTE_NOT_FOUND);
    /* Nothing changed by the rejected calls. */
    CHECK_EQ(p3dp_route_count(r, 4), 1);
    CHECK_EQ(p3dp_route_count(r, 6), 0);
    CHECK_EQ(v4(r, "10.1.2.3"), 1);
    CHECK_EQ(v6(r, "2001:db8::1"), P3DP_NO_PEER);
    CHECK_EQ(p3dp_route_lookup(r, 5, zero), P3DP_NO_PEER);
    uint32_t peers[1] = {7};
    CHECK_EQ(p3dp_route_lookup_burst(r, 5, zero, 1, peers), 0);
    CHECK_EQ(peers[0], 7);
    p3dp_routes_free(r);
}

static void test_full_node_pool_refuses_new_paths_but_keeps_working(void)
{
    p3dp_routes *r = p3dp_routes_new();
    uint8_t p[4] = {10, 0, 0, 0};
    /* Every /25 in its own /24 needs one second-level node; the IPv4 pool
     * holds 65536 of them. */
    unsigned int added = 0;
    int rc = 0;
    for (unsigned int i = 0; i < 70000 && rc == 0; i++) {
        p[1] = (uint8_t)(i >> 8);
        p[2] = (uint8_t)i;
        p[0] = (uint8_t)(10 + (i >> 16));
        rc = p3dp_route_add(r, 4, p, 25, i);
        added += rc == 0;
    }
    CHECK_EQ(rc, -P3R_DP_TABLE_FULL);
    CHECK_EQ(added, 65536);
    CHECK_EQ(p3dp_route_count(r, 4), 65536);
    /* Existing paths still take routes: replace, delete, re-add. */
    uint8_t first[4] = {10, 0, 0, 0};
    CHECK_EQ(p3dp_route_add(r, 4, first, 25, 77), 0);
    CHECK_EQ(p3dp_route_lookup(r, 4, first), 77);
    uint8_t second_half[4] = {10, 0, 0, 128};
    CHECK_EQ(p3dp_route_add(r, 4, second_half, 26, 78), 0);
    CHECK_EQ(p3dp_route_lookup(r, 4, second_half), 78);
    CHECK_EQ(p3dp_route_del(r, 4, first, 25), 0);
    CHECK_EQ(p3dp_route_lookup(r, 4, first), P3DP_NO_PEER);
    CHECK_EQ(p3dp_route_add(r, 4, first, 25, 79), 0);
    CHECK_EQ(p3dp_route_lookup(r, 4, first), 79);
    /* Routes that need no new node are still accepted. */
    uint8_t short_prefix[4] = {192, 168, 0, 0};
    CHECK_EQ(p3dp_route_add(r, 4, short_prefix, 16, 80), 0);
    uint8_t host[4] = {192, 168, 1, 1};
    CHECK_EQ(p3dp_route_lookup(r, 4, host), 80);
    p3dp_routes_free(r);
}

/* --- randomized check against a brute-force reference ------------------- */

static uint64_t rng_state;

static uint64_t rng(void)
{
    /* splitmix64: fixed seed, reproducible on every run */
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

struct ref_route {
    uint8_t prefix[16];
    unsigned int len;
    uint32_t peer;
    bool present;
};

static bool prefix_covers(const uint8_t *prefix, unsigned int len, const uint8_t *addr)
{
    for (unsigned int bit = 0; bit < len; bit++) {
        uint8_t m = (uint8_t)(0x80u >> (bit % 8));
        if ((prefix[bit / 8] & m) != (addr[bit / 8] & m))
            return false;
    }
    return true;
}

static uint32_t ref_lookup(const struct ref_route *rt, size_t n, const uint8_t *addr)
{
    int best = -1;
    uint32_t peer = P3DP_NO_PEER;
    for (size_t i = 0; i < n; i++)
        if (rt[i].present && (int)rt[i].len > best && prefix_covers(rt[i].prefix, rt[i].len, addr)) {
            best = (int)rt[i].len;
            peer = rt[i].peer;
        }
    return peer;
}

static void clear_host_bits(uint8_t *p, unsigned int len, unsigned int octets)
{
    for (unsigned int bit = len; bit < octets * 8; bit++)
        p[bit / 8] &= (uint8_t)~(0x80u >> (bit % 8));
}

/* Random bits, but mostly under a few shared stems so that prefixes nest. */
static void random_prefix(uint8_t *p, unsigned int octets, unsigned int *len)
{
    for (unsigned int i = 0; i < 16; i++)
        p[i] = (uint8_t)rng();
    if (rng() % 4) {
        p[0] = octets == 4 ? 10 : 0x20;
        p[1] = (uint8_t)(rng() % 3);
        if (octets == 16)
            p[2] = (uint8_t)(rng() % 3);
    }
    unsigned int width = octets * 8;
    *len = (unsigned int)(rng() % (width + 1));
    if (rng() % 3 == 0 && *len < width - 4)
        *len = width - (unsigned int)(rng() % 5); /* plenty of near-host routes */
    clear_host_bits(p, *len, octets);
    for (unsigned int i = octets; i < 16; i++)
        p[i] = 0;
}

static void random_address(const struct ref_route *rt, size_t n, unsigned int octets, uint8_t *a)
{
    memset(a, 0, 16);
    for (unsigned int i = 0; i < octets; i++)
        a[i] = (uint8_t)rng();
    if (rng() % 4 != 0) {
        /* Inside a random route: keep its prefix bits, random host bits. */
        const struct ref_route *r = &rt[rng() % n];
        for (unsigned int bit = 0; bit < r->len; bit++) {
            uint8_t m = (uint8_t)(0x80u >> (bit % 8));
            a[bit / 8] = (uint8_t)((a[bit / 8] & ~m) | (r->prefix[bit / 8] & m));
        }
    }
}

static size_t check_against_reference(p3dp_routes *r, int family, const struct ref_route *rt,
                                      size_t n, unsigned int samples)
{
    unsigned int octets = family == 4 ? 4 : 16;
    size_t mismatches = 0;
    enum { BURST = 64 };
    uint8_t addrs[BURST * 16];
    uint32_t peers[BURST];
    for (unsigned int s = 0; s < samples; s += BURST) {
        for (unsigned int i = 0; i < BURST; i++)
            random_address(rt, n, octets, addrs + 16 * i);
        CHECK_EQ(p3dp_route_lookup_burst(r, family, addrs, BURST, peers), BURST);
        for (unsigned int i = 0; i < BURST; i++) {
            uint32_t want = ref_lookup(rt, n, addrs + 16 * i);
            if (peers[i] != want || p3dp_route_lookup(r, family, addrs + 16 * i) != want)
                mismatches++;
        }
    }
    return mismatches;
}

static size_t ref_count(const struct ref_route *rt, size_t n)
{
    size_t c = 0;
    for (size_t i = 0; i < n; i++)
        c += rt[i].present;
    return c;
}

static void random_table_matches_brute_force(int family)
{
    enum { N = 3000, SAMPLES = 4096 };
    unsigned int octets = family == 4 ? 4 : 16;
    static struct ref_route rt[N];
    p3dp_routes *r = p3dp_routes_new();
    rng_state = (uint64_t)family * 1000003u;

    /* Fill: duplicates of an earlier prefix are replacements. */
    for (size_t i = 0; i < N; i++) {
        random_prefix(rt[i].prefix, octets, &rt[i].len);
        rt[i].peer = (uint32_t)(rng() % 100000);
        rt[i].present = true;
        for (size_t j = 0; j < i; j++)
            if (rt[j].present && rt[j].len == rt[i].len && !memcmp(rt[j].prefix, rt[i].prefix, 16))
                rt[j].present = false;
        CHECK_EQ(p3dp_route_add(r, family, rt[i].prefix, rt[i].len, rt[i].peer), 0);
    }
    CHECK_EQ(p3dp_route_count(r, family), ref_count(rt, N));
    CHECK_EQ(check_against_reference(r, family, rt, N, SAMPLES), 0);

    /* Delete about half, in random order. */
    for (size_t k = 0; k < N; k++) {
        size_t i = rng() % N;
        if (!rt[i].present || rng() % 2)
            continue;
        CHECK_EQ(p3dp_route_del(r, family, rt[i].prefix, rt[i].len), 0);
        rt[i].present = false;
        CHECK_EQ(p3dp_route_del(r, family, rt[i].prefix, rt[i].len), -P3R_DP_ROUTE_NOT_FOUND);
    }
    CHECK_EQ(p3dp_route_count(r, family), ref_count(rt, N));
    CHECK_EQ(check_against_reference(r, family, rt, N, SAMPLES), 0);

    /* Re-add some of the deleted ones and re-point some present ones. */
    for (size_t i = 0; i < N; i++) {
        if (rng() % 3)
            continue;
        bool taken = false;
        for (size_t j = 0; j < N && !rt[i].present; j++)
            if (j != i && rt[j].present && rt[j].len == rt[i].len &&
                !memcmp(rt[j].prefix, rt[i].prefix, 16))
                taken = true;
        if (taken)
            continue;
        rt[i].peer = (uint32_t)(rng() % 100000);
        rt[i].present = true;
        CHECK_EQ(p3dp_route_add(r, family, rt[i].prefix, rt[i].len, rt[i].peer), 0);
    }
    CHECK_EQ(p3dp_route_count(r, family), ref_count(rt, N));
    CHECK_EQ(check_against_reference(r, family, rt, N, SAMPLES), 0);

    /* Delete everything: the table is empty again. */
    for (size_t i = 0; i < N; i++)
        if (rt[i].present) {
            CHECK_EQ(p3dp_route_del(r, family, rt[i].prefix, rt[i].len), 0);
            rt[i].present = false;
        }
    CHECK_EQ(p3dp_route_count(r, family), 0);
    CHECK_EQ(check_against_reference(r, family, rt, N, 1024), 0);
    p3dp_routes_free(r);
}

static void test_ipv4_random_table_matches_brute_force(void)
{
    random_table_matches_brute_force(4);
}

static void test_ipv6_random_table_matches_brute_force(void)
{
    random_table_matches_brute_force(6);
}

/* --- lookups during updates ------------------------------------------------ */

/* The writer repeatedly adds and deletes many specific routes (each one
 * creating trie nodes on first use) under fixed covering routes, and flips a
 * /16 between two peers. For every address the reader can compute the only
 * answers that any table state the writer passes through could give: the
 * covering peer, or the peer of the specific route that contains it. Any other
 * value (P3DP_NO_PEER from a half-built node, a stale neighbour, a wrong
 * restoration) is counted as a violation. */
enum {
    COVER_PEER = 1,
    FLIP_PEER_A = 7,
    FLIP_PEER_B = 8,
    SPECIFIC_BASE = 1000,
    SPECIFICS = 2048,
    ROUNDS = 6
};

struct concurrent_run {
    p3dp_routes *routes;
    int stop;
    unsigned long lookups;
    unsigned long violations;
    unsigned long specific_seen;
};

/* 10.<i/256>.<i%256>.16/28 -> SPECIFIC_BASE + i, and
 * 2001:db8:<i>:<i>:100::/72 -> SPECIFIC_BASE + i, for i < SPECIFICS. */
static void specific_v4(unsigned int i, uint8_t *p)
{
    p[0] = 10;
    p[1] = (uint8_t)(i >> 8);
    p[2] = (uint8_t)i;
    p[3] = 16;
}

static void specific_v6(unsigned int i, uint8_t *p)
{
    static const uint8_t stem[4] = {0x20, 0x01, 0x0d, 0xb8};
    memset(p, 0, 16);
    memcpy(p, stem, 4);
    p[4] = (uint8_t)(i >> 8);
    p[5] = (uint8_t)i;
    p[6] = (uint8_t)(i >> 8);
    p[7] = (uint8_t)i;
    p[8] = 1;
}

static bool allowed_v4(const uint8_t *a, uint32_t got)
{
    bool flip = a[1] == 1; /* 10.1.0.0/16 flips between two peers */
    bool base_ok = flip ? (got == FLIP_PEER_A || got == FLIP_PEER_B) : got == COVER_PEER;
    unsigned int i = ((unsigned int)a[1] << 8) | a[2];
    bool in_specific = i < SPECIFICS && (a[3] & 0xf0) == 16;
    return base_ok || (in_specific && got == SPECIFIC_BASE + i);
}

static bool allowed_v6(const uint8_t *a, uint32_t got)
{
    unsigned int i = ((unsigned int)a[4] << 8) | a[5];
    bool in_specific = i < SPECIFICS && a[6] == a[4] && a[7] == a[5] && a[8] == 1;
    return got == COVER_PEER || (in_specific && got == SPECIFIC_BASE + i);
}

static void *concurrent_reader(void *arg)
{
    struct concurrent_run *run = arg;
    uint64_t s = 12345;
    enum { BURST = 32 };
    uint8_t addrs[BURST * 16];
    uint32_t peers[BURST];
    while (!__atomic_load_n(&run->stop, __ATOMIC_ACQUIRE)) {
        for (int family = 4; family <= 6; family += 2) {
            for (unsigned int k = 0; k < BURST; k++) {
                uint8_t *a = addrs + 16 * k;
                s = s * 6364136223846793005ull + 1442695040888963407ull;
                unsigned int i = (unsigned int)(s >> 33) % SPECIFICS;
                uint8_t host = (uint8_t)(s >> 20);
                if (family == 4) {
                    specific_v4(i, a);
                    a[3] = (s >> 60) & 1 ? (uint8_t)(16 | (host & 15)) : host;
                } else {
                    specific_v6(i, a);
                    if ((s >> 60) & 1)
                        a[8] = host; /* often outside the /72 */
                    a[15] = host;
                }
            }
            p3dp_route_lookup_burst(run->routes, family, addrs, BURST, peers);
            for (unsigned int k = 0; k < BURST; k++) {
                const uint8_t *a = addrs + 16 * k;
                bool ok = family == 4 ? allowed_v4(a, peers[k]) : allowed_v6(a, peers[k]);
                run->violations += !ok;
                run->specific_seen += peers[k] >= SPECIFIC_BASE;
            }
            run->lookups += BURST;
        }
    }
    return NULL;
}

static void test_lookups_during_updates_see_old_or_new_route(void)
{
    struct concurrent_run run = {0};
    run.routes = p3dp_routes_new();
    CHECK_EQ(add4(run.routes, "10.0.0.0", 8, COVER_PEER), 0);
    CHECK_EQ(add4(run.routes, "10.1.0.0", 16, FLIP_PEER_A), 0);
    CHECK_EQ(add6(run.routes, "2001:db8::", 32, COVER_PEER), 0);

    pthread_t reader;
    CHECK_EQ(pthread_create(&reader, NULL, concurrent_reader, &run), 0);
    uint8_t p[16];
    for (unsigned int round = 0; round < ROUNDS; round++) {
        for (unsigned int i = 0; i < SPECIFICS; i++) {
            specific_v4(i, p);
            CHECK_EQ(p3dp_route_add(run.routes, 4, p, 28, SPECIFIC_BASE + i), 0);
            specific_v6(i, p);
            CHECK_EQ(p3dp_route_add(run.routes, 6, p, 72, SPECIFIC_BASE + i), 0);
            if (i % 256 == 0)
                CHECK_EQ(add4(run.routes, "10.1.0.0", 16, (i / 256) % 2 ? FLIP_PEER_A : FLIP_PEER_B), 0);
        }
        for (unsigned int i = 0; i < SPECIFICS; i++) {
            specific_v4(i, p);
            CHECK_EQ(p3dp_route_del(run.routes, 4, p, 28), 0);
            specific_v6(i, p);
            CHECK_EQ(p3dp_route_del(run.routes, 6, p, 72), 0);
        }
    }
    __atomic_store_n(&run.stop, 1, __ATOMIC_RELEASE);
    CHECK_EQ(pthread_join(reader, NULL), 0);

    printf("     concurrent: %lu lookups, %lu saw a specific route, %lu violations\n",
           run.lookups, run.specific_seen, run.violations);
    CHECK(run.lookups > 0);
    CHECK_EQ(run.violations, 0);
    /* After the writer is done only the covering routes are left. */
    CHECK_EQ(v4(run.routes, "10.0.0.20"), COVER_PEER);
    CHECK_EQ(v6(run.routes, "2001:db8:0:0:100::1"), COVER_PEER);
    CHECK_EQ(p3dp_route_count(run.routes, 4), 2);
    CHECK_EQ(p3dp_route_count(run.routes, 6), 1);
    p3dp_routes_free(run.routes);
}

NTEST_MAIN(NTEST(test_empty_table_routes_nothing),
           NTEST(test_ipv4_longest_nested_prefix_wins),
           NTEST(test_ipv6_longest_nested_prefix_wins),
           NTEST(test_default_route_catches_everything_else),
           NTEST(test_host_routes_match_only_their_address),
           NTEST(test_delete_restores_the_covering_route),
           NTEST(test_add_of_existing_prefix_replaces_its_peer),
           NTEST(test_bad_arguments_are_rejected_with_reason_codes),
           NTEST(test_full_node_pool_refuses_new_paths_but_keeps_working),
           NTEST(test_ipv4_random_table_matches_brute_force),
           NTEST(test_ipv6_random_table_matches_brute_force),
           NTEST(test_lookups_during_updates_see_old_or_new_route))
