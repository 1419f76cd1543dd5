/* route.c — longest-prefix match, IPv4 and IPv6: destination -> peer id.
 *
 * Spec §2.1.3: a primary matches the destination of every intercepted packet
 * against the P3 System routing table to pick the secondary; §2.1.1: a primary
 * serves thousands of secondaries, each with its own subnets. So lookups are
 * on the per-packet path (bursts, no locks) and updates happen while the
 * workers keep forwarding.
 *
 * Structure (both families, one code path): a leaf-pushed multibit trie.
 *   IPv4: a root of 2^24 entries indexed by the top 24 bits (DIR-24-8), and
 *         256-entry nodes for the last octet of prefixes longer than /24.
 *   IPv6: a root of 2^16 entries (first two octets), then one 256-entry node
 *         per further octet: at most 15 steps for a /128.
 * An entry is one uint32_t:
 *   0                      no route
 *   1 .. 0x7fffffff        leaf: peer id + 1
 *   0x80000000 | node      child node index (more specific prefixes below)
 * so "entry - 1" of a leaf or an empty entry is the answer (0 - 1 is
 * P3DP_NO_PEER). A prefix covering several entries of a node is expanded over
 * them (controlled prefix expansion); when a child node is created its 256
 * entries inherit the parent entry (leaf pushing), so a lookup only ever
 * follows child links and returns the leaf it ends on.
 *
 * Writer-only shadow state: a depth (prefix length + 1, 0 = none) per entry,
 * which says which prefix an entry currently expands, and a hash set of the
 * exact prefixes (count, delete, finding the covering prefix). Writers are
 * serialized by a mutex.
 *
 * Readers never block and never see a torn or half-built state:
 *   - every entry changes by one atomic 32-bit store, from its old correct
 *     value to its new correct value;
 *   - a child node is filled completely before the release store that links
 *     it, and readers load entries with acquire;
 *   - nodes are NEVER unlinked or reused: once an entry points to a child it
 *     does so until p3dp_routes_free. A node whose prefixes were all deleted
 *     simply holds the inherited values again. So no reader can ever hold a
 *     freed or repurposed node and no grace period (epoch, RCU, quiescent
 *     state) is needed: any thread, registered or not, may look up.
 *     The cost: inner-node memory is retained until p3dp_routes_free. It is
 *     bounded by the distinct paths ever used (a gateway's routes come from
 *     its configuration, and churn re-adds the same prefixes on the same
 *     paths) and by the node pool cap (-P3R_DP_TABLE_FULL when full). See docs/routing.md.
 *
 * Node pools and the IPv4 root are reserved with mmap(MAP_NORESERVE): the
 * kernel hands out zero pages on first touch, so an empty table costs almost
 * nothing and the pools never move (readers index them without locks).
 */
#include "p3dp.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#define ENTRY_CHILD 0x80000000u
#define NODE_ENTRIES 256u

/* Caps: "table full" (-P3R_DP_TABLE_FULL) rather than unbounded growth. */
#define V4_MAX_NODES (1u << 16) /* 64 MiB of tbl8 address space, touched lazily */
#define V6_MAX_NODES (1u << 20) /* 1 GiB of node address space, touched lazily */
#define MAX_ROUTES_PER_FAMILY (1u << 21)

enum {
    ERR_NOT_FOUND = -P3R_DP_ROUTE_NOT_FOUND,  /* P3-E217: no such prefix (delete) */
    ERR_TABLE_FULL = -P3R_DP_TABLE_FULL, /* P3-E213 DP_TABLE_FULL */
    ERR_BAD_ARG = -P3R_DP_BAD_ARGUMENT     /* P3-E214 DP_BAD_ARGUMENT */
};

struct route_rec {
    struct route_rec *next;
    uint8_t prefix[16];
    uint8_t len;
    uint32_t peer;
};

struct lpm_trie {
    unsigned int width_bits; /* 32 or 128 */
    unsigned int root_bits;  /* 24 or 16 */
    uint32_t *root;          /* 2^root_bits entries, read by lookups */
    uint8_t *root_depth;     /* writer only */
    uint32_t *pool;          /* max_nodes * 256 entries, read by lookups */
    uint8_t *pool_depth;     /* writer only */
    uint32_t nodes_used;
    uint32_t max_nodes;
    /* Exact prefix set (writer only, under the mutex). */
    struct route_rec **buckets;
    size_t nbuckets;
    size_t count; /* read by p3dp_route_count without the mutex */
};

struct p3dp_routes {
    pthread_mutex_t writer; /* serializes add/del; lookups never take it */
    struct lpm_trie v4;
    struct lpm_trie v6;
};

/* --- memory ------------------------------------------------------------- */

static void *reserve(size_t bytes)
{
    void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    return p == MAP_FAILED ? NULL : p;
}

static void release(void *p, size_t bytes)
{
    if (p)
        munmap(p, bytes);
}

static size_t root_entries(const struct lpm_trie *t)
{
    return (size_t)1 << t->root_bits;
}

static int trie_init(struct lpm_trie *t, unsigned int width_bits, unsigned int root_bits,
                     uint32_t max_nodes)
{
    memset(t, 0, sizeof(*t));
    t->width_bits = width_bits;
    t->root_bits = root_bits;
    t->max_nodes = max_nodes;
    t->root = reserve(root_entries(t) * sizeof(uint32_t));
    t->root_depth = reserve(root_entries(t));
    t->pool = reserve((size_t)max_nodes * NODE_ENTRIES * sizeof(uint32_t));
    t->pool_depth = reserve((size_t)max_nodes * NODE_ENTRIES);
    t->nbuckets = 1024;
    t->buckets = calloc(t->nbuckets, sizeof(*t->buckets));
    if (!t->root || !t->root_depth || !t->pool || !t->pool_depth || !t->buckets)
        return -1;
    return 0;
}

static void trie_destroy(struct lpm_trie *t)
{
    release(t->root, root_entries(t) * sizeof(uint32_t));
    release(t->root_depth, root_entries(t));
    release(t->pool, (size_t)t->max_nodes * NODE_ENTRIES * sizeof(uint32_t));
    release(t->pool_depth, (size_t)t->max_nodes * NODE_ENTRIES);
    if (t->buckets) {
        for (size_t i = 0; i < t->nbuckets; i++) {
            struct route_rec *r = t->buckets[i];
            while (r) {
                struct route_rec *next = r->next;
                free(r);
                r = next;
            }
        }
        free(t->buckets);
    }
}

p3dp_routes *p3dp_routes_new(void)
{
    p3dp_routes *routes = calloc(1, sizeof(*routes));
    if (!routes)
        return NULL;
    pthread_mutex_init(&routes->writer, NULL);
    if (trie_init(&routes->v4, 32, 24, V4_MAX_NODES) != 0 ||
        trie_init(&routes->v6, 128, 16, V6_MAX_NODES) != 0) {
        p3dp_routes_free(routes);
        return NULL;
    }
    return routes;
}

void p3dp_routes_free(p3dp_routes *routes)
{
    if (!routes)
        return;
    trie_destroy(&routes->v4);
    trie_destroy(&routes->v6);
    pthread_mutex_destroy(&routes->writer);
    free(routes);
}

/* --- exact prefix set (writer side) ------------------------------------- */

static size_t prefix_hash(const uint8_t *prefix, unsigned int len)
{
    uint64_t h = 1469598103934665603ull ^ len; /* FNV-1a */
    for (unsigned int i = 0; i < 16; i++) {
        h ^= prefix[i];
        h *= 1099511628211ull;
    }
    return (size_t)(h ^ (h >> 29));
}

static struct route_rec **set_find(struct lpm_trie *t, const uint8_t *prefix, unsigned int len)
{
    struct route_rec **link = &t->buckets[prefix_hash(prefix, len) & (t->nbuckets - 1)];
    for (; *link; link = &(*link)->next)
        if ((*link)->len == len && memcmp((*link)->prefix, prefix, 16) == 0)
            return link;
    return link;
}

static void set_grow(struct lpm_trie *t)
{
    size_t nb = t->nbuckets * 2;
    struct route_rec **buckets = calloc(nb, sizeof(*buckets));
    if (!buckets)
        return; /* keep the old size: slower chains, still correct */
    for (size_t i = 0; i < t->nbuckets; i++) {
        struct route_rec *r = t->buckets[i];
        while (r) {
            struct route_rec *next = r->next;
            size_t b = prefix_hash(r->prefix, r->len) & (nb - 1);
            r->next = buckets[b];
            buckets[b] = r;
            r = next;
        }
    }
    free(t->buckets);
    t->buckets = buckets;
    t->nbuckets = nb;
}

/* --- prefix helpers ----------------------------------------------------- */

/* Copies the prefix into a zero-padded 16-octet key and checks that no bit
 * beyond len is set (a route with host bits set is a configuration mistake,
 * not something to silently mask). */
static bool load_prefix(uint8_t key[16], const uint8_t *prefix, unsigned int octets,
                        unsigned int len)
{
    memset(key, 0, 16);
    memcpy(key, prefix, octets);
    for (unsigned int bit = len; bit < octets * 8; bit++)
        if (key[bit / 8] & (0x80u >> (bit % 8)))
            return false;
    return true;
}

static void mask_prefix(uint8_t out[16], const uint8_t key[16], unsigned int len)
{
    memset(out, 0, 16);
    memcpy(out, key, len / 8);
    if (len % 8)
        out[len / 8] = key[len / 8] & (uint8_t)(0xffu << (8 - len % 8));
}

static uint32_t root_index(const struct lpm_trie *t, const uint8_t *key)
{
    uint32_t idx = 0;
    for (unsigned int i = 0; i < t->root_bits / 8; i++)
        idx = (idx << 8) | key[i];
    return idx;
}

/* Level that holds a prefix of length len: 0 is the root, level k >= 1 is the
 * node for octet root_bits/8 + k - 1. */
static unsigned int level_of(const struct lpm_trie *t, unsigned int len)
{
    return len <= t->root_bits ? 0 : (len - t->root_bits + 7) / 8;
}

static uint32_t load_entry(const uint32_t *e)
{
    return __atomic_load_n(e, __ATOMIC_ACQUIRE);
}

static void store_entry(uint32_t *e, uint32_t v)
{
    __atomic_store_n(e, v, __ATOMIC_RELEASE);
}

static uint32_t *node_entries(const struct lpm_trie *t, uint32_t node)
{
    return t->pool + (size_t)node * NODE_ENTRIES;
}

static uint8_t *node_depths(const struct lpm_trie *t, uint32_t node)
{
    return t->pool_depth + (size_t)node * NODE_ENTRIES;
}

/* --- painting ----------------------------------------------------------- */

/* Sets every entry under *e that is governed by a prefix no longer than the
 * new one (depth <= new depth) to the new leaf. */
static void paint_add(struct lpm_trie *t, uint32_t *e, uint8_t *depth, uint32_t leaf,
                      uint8_t new_depth)
{
    uint32_t cur = *e; /* writers are serialized: a plain read of our own state */
    if (cur & ENTRY_CHILD) {
        uint32_t node = cur & ~ENTRY_CHILD;
        uint32_t *ce = node_entries(t, node);
        uint8_t *cd = node_depths(t, node);
        for (unsigned int i = 0; i < NODE_ENTRIES; i++)
            paint_add(t, &ce[i], &cd[i], leaf, new_depth);
    } else if (*depth <= new_depth) {
        *depth = new_depth;
        if (cur != leaf)
            store_entry(e, leaf);
    }
}

/* Hands every entry under *e that the deleted prefix governed (depth equal to
 * its depth) to the covering prefix (or to "no route"). */
static void paint_del(struct lpm_trie *t, uint32_t *e, uint8_t *depth, uint8_t old_depth,
                      uint32_t leaf, uint8_t new_depth)
{
    uint32_t cur = *e;
    if (cur & ENTRY_CHILD) {
        uint32_t node = cur & ~ENTRY_CHILD;
        uint32_t *ce = node_entries(t, node);
        uint8_t *cd = node_depths(t, node);
        for (unsigned int i = 0; i < NODE_ENTRIES; i++)
            paint_del(t, &ce[i], &cd[i], old_depth, leaf, new_depth);
    } else if (*depth == old_depth) {
        *depth = new_depth;
        store_entry(e, leaf);
    }
}

/* Finds the entries of the level that holds key/len, creating child nodes on
 * the way (each filled with its parent entry before it is linked). Returns the
 * first entry of the expanded range, its depth slot, and the range length. */
static int locate(struct lpm_trie *t, const uint8_t *key, unsigned int len, bool create,
                  uint32_t **entries, uint8_t **depths, uint32_t *span)
{
    unsigned int level = level_of(t, len);
    uint32_t *e = t->root;
    uint8_t *d = t->root_depth;
    uint32_t idx = root_index(t, key);

    if (level == 0) {
        *entries = e + idx;
        *depths = d + idx;
        *span = (uint32_t)1 << (t->root_bits - len);
        return 0;
    }
    for (unsigned int k = 1; k <= level; k++) {
        uint32_t cur = e[idx];
        uint32_t node;
        if (cur & ENTRY_CHILD) {
            node = cur & ~ENTRY_CHILD;
        } else {
            if (!create)
                return ERR_NOT_FOUND;
            /* Nodes made on the way so far stay: they hold inherited values,
             * so lookups through them are unchanged. */
            if (t->nodes_used >= t->max_nodes)
                return ERR_TABLE_FULL;
            node = t->nodes_used++;
            uint32_t *ne = node_entries(t, node);
            uint8_t *nd = node_depths(t, node);
            for (unsigned int i = 0; i < NODE_ENTRIES; i++) {
                ne[i] = cur;
                nd[i] = d[idx];
            }
            store_entry(&e[idx], ENTRY_CHILD | node); /* release: node is complete */
        }
        e = node_entries(t, node);
        d = node_depths(t, node);
        idx = key[t->root_bits / 8 + k - 1];
    }
    unsigned int level_end = t->root_bits + 8 * level;
    *span = (uint32_t)1 << (level_end - len);
    *entries = e + idx;
    *depths = d + idx;
    return 0;
}

/* --- public API ------------------------------------------------------------ */

static struct lpm_trie *trie_for(p3dp_routes *routes, int family)
{
    if (family == 4)
        return &routes->v4;
    if (family == 6)
        return &routes->v6;
    return NULL;
}

int p3dp_route_add(p3dp_routes *routes, int family, const uint8_t *prefix,
                   unsigned int prefix_len, uint32_t peer)
{
    if (!routes || !prefix)
        return ERR_BAD_ARG;
    struct lpm_trie *t = trie_for(routes, family);
    uint8_t key[16];
    if (!t || prefix_len > t->width_bits || peer > P3DP_ROUTE_PEER_MAX ||
        !load_prefix(key, prefix, t->width_bits / 8, prefix_len))
        return ERR_BAD_ARG;

    pthread_mutex_lock(&routes->writer);
    int rc = 0;
    struct route_rec **link = set_find(t, key, prefix_len);
    struct route_rec *rec = *link;
    if (!rec) {
        if (t->count >= MAX_ROUTES_PER_FAMILY) {
            rc = ERR_TABLE_FULL;
            goto out;
        }
        rec = calloc(1, sizeof(*rec));
        if (!rec) {
            rc = ERR_TABLE_FULL;
            goto out;
        }
    }
    uint32_t *entries;
    uint8_t *depths;
    uint32_t span;
    rc = locate(t, key, prefix_len, true, &entries, &depths, &span);
    if (rc != 0) {
        if (!*link)
            free(rec);
        goto out;
    }
    for (uint32_t i = 0; i < span; i++)
        paint_add(t, &entries[i], &depths[i], peer + 1, (uint8_t)(prefix_len + 1));
    if (!*link) {
        memcpy(rec->prefix, key, 16);
        rec->len = (uint8_t)prefix_len;
        *link = rec;
        __atomic_store_n(&t->count, t->count + 1, __ATOMIC_RELAXED);
        if (t->count > t->nbuckets)
            set_grow(t);
    }
    rec->peer = peer;
out:
    pthread_mutex_unlock(&routes->writer);
    return rc;
}

int p3dp_route_del(p3dp_routes *routes, int family, const uint8_t *prefix,
                   unsigned int prefix_len)
{
    if (!routes || !prefix)
        return ERR_BAD_ARG;
    struct lpm_trie *t = trie_for(routes, family);
    uint8_t key[16];
    if (!t || prefix_len > t->width_bits ||
        !load_prefix(key, prefix, t->width_bits / 8, prefix_len))
        return ERR_BAD_ARG;

    pthread_mutex_lock(&routes->writer);
    int rc = 0;
    struct route_rec **link = set_find(t, key, prefix_len);
    struct route_rec *rec = *link;
    if (!rec) {
        rc = ERR_NOT_FOUND;
        goto out;
    }
    /* The next-shorter prefix present that covers this one takes its place. */
    uint32_t leaf = 0;
    uint8_t new_depth = 0;
    for (unsigned int l = prefix_len; l-- > 0;) {
        uint8_t covering[16];
        mask_prefix(covering, key, l);
        struct route_rec *cover = *set_find(t, covering, l);
        if (cover) {
            leaf = cover->peer + 1;
            new_depth = (uint8_t)(l + 1);
            break;
        }
    }
    uint32_t *entries;
    uint8_t *depths;
    uint32_t span;
    rc = locate(t, key, prefix_len, false, &entries, &depths, &span);
    if (rc == 0) {
        for (uint32_t i = 0; i < span; i++)
            paint_del(t, &entries[i], &depths[i], (uint8_t)(prefix_len + 1), leaf, new_depth);
    }
    *link = rec->next;
    free(rec);
    __atomic_store_n(&t->count, t->count - 1, __ATOMIC_RELAXED);
out:
    pthread_mutex_unlock(&routes->writer);
    return rc;
}

size_t p3dp_route_count(const p3dp_routes *routes, int family)
{
    if (!routes)
        return 0;
    if (family == 4)
        return __atomic_load_n(&routes->v4.count, __ATOMIC_RELAXED);
    if (family == 6)
        return __atomic_load_n(&routes->v6.count, __ATOMIC_RELAXED);
    return 0;
}

/* --- lookups (lock-free, the per-packet path) ------------------------------ */

static inline uint32_t lookup_v4(const struct lpm_trie *t, const uint8_t *addr)
{
    uint32_t a = ((uint32_t)addr[0] << 24) | ((uint32_t)addr[1] << 16) |
                 ((uint32_t)addr[2] << 8) | addr[3];
    uint32_t e = load_entry(&t->root[a >> 8]);
    if (e & ENTRY_CHILD)
        e = load_entry(&t->pool[(size_t)(e & ~ENTRY_CHILD) * NODE_ENTRIES + (a & 0xffu)]);
    return e - 1; /* empty (0) becomes P3DP_NO_PEER */
}

static inline uint32_t lookup_v6(const struct lpm_trie *t, const uint8_t *addr)
{
    uint32_t e = load_entry(&t->root[((uint32_t)addr[0] << 8) | addr[1]]);
    /* At most 14 further octets: a node for octet 15 holds only leaves. */
    for (unsigned int i = 2; e & ENTRY_CHILD; i++)
        e = load_entry(&t->pool[(size_t)(e & ~ENTRY_CHILD) * NODE_ENTRIES + addr[i]]);
    return e - 1;
}

uint32_t p3dp_route_lookup(const p3dp_routes *routes, int family, const uint8_t *addr)
{
    if (!routes || !addr)
        return P3DP_NO_PEER;
    if (family == 4)
        return lookup_v4(&routes->v4, addr);
    if (family == 6)
        return lookup_v6(&routes->v6, addr);
    return P3DP_NO_PEER;
}

size_t p3dp_route_lookup_burst(const p3dp_routes *routes, int family, const uint8_t *addrs,
                               size_t n, uint32_t *peers)
{
    if (!routes || !addrs || !peers)
        return 0;
    if (family == 4) {
        for (size_t i = 0; i < n; i++)
            peers[i] = lookup_v4(&routes->v4, addrs + 16 * i);
        return n;
    }
    if (family == 6) {
        for (size_t i = 0; i < n; i++)
            peers[i] = lookup_v6(&routes->v6, addrs + 16 * i);
        return n;
    }
    return 0;
}
