/*
 * flows.c — flow tracking for login termination (spec §2.1.7).
 *
 * Every inner packet the dataplane tunnels is shown to p3dp_flows_observe.
 * We remember, per peer, which TCP connections and which other "flows"
 * (UDP, ICMP echo, other protocols) cross the tunnel, and for TCP the
 * sequence numbers each end has sent and acknowledged. When the session to
 * that peer fails, p3dp_flows_terminate writes, for each live flow, the
 * packet that makes the local end give up at once:
 *   TCP      a RST as if sent by the remote end, with SEQ = the local end's
 *            RCV.NXT (RFC 793 §3.4, RFC 5961 §3.2: exactly RCV.NXT resets,
 *            anything else in the window only draws a challenge ACK);
 *   other    ICMP destination unreachable (host, RFC 792) or ICMPv6
 *            destination unreachable (address, RFC 4443 §3.1), quoting the
 *            local end's first packet of the flow.
 * Decisions and what the Linux stack does with each: docs/flows.md.
 *
 * Memory is fixed at creation: FLOWS_SHARDS shards, each a chained hash
 * table over a preallocated entry array with its own LRU list and lock.
 * Nothing is allocated per packet.
 */
#include "flows.h"
#include "bytes.h"

#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#define NIL UINT32_MAX

#define ERR_TOO_BIG (-P3R_DP_TOO_BIG)     /* P3-E205 DP_TOO_BIG */
#define ERR_BAD_ARGUMENT (-P3R_DP_BAD_ARGUMENT) /* P3-E214 DP_BAD_ARGUMENT */

#define PROTO_ICMP 1u
#define PROTO_TCP 6u
#define PROTO_UDP 17u
#define PROTO_DCCP 33u
#define PROTO_ICMPV6 58u
#define PROTO_SCTP 132u
#define PROTO_UDPLITE 136u

#define TCP_FIN 0x01u
#define TCP_SYN 0x02u
#define TCP_RST 0x04u
#define TCP_ACK 0x10u

/* What a flow has seen (struct flow.seen). */
enum {
    SEEN_LOCAL_SEQ = 1,   /* tcp.local_next is valid */
    SEEN_LOCAL_ACK = 2,   /* tcp.local_ack is valid */
    SEEN_REMOTE_SEQ = 4,  /* tcp.remote_next is valid */
    SEEN_LOCAL_FIN = 8,
    SEEN_REMOTE_FIN = 16
};

/* Key of a flow, oriented by our LAN: "local" is the end on our side of
 * the tunnel whatever the direction of the packet. Padded to 48 octets and
 * always zero-filled so that it hashes and compares as plain memory. */
struct flow_key {
    uint8_t local_addr[16];
    uint8_t remote_addr[16];
    uint32_t peer;
    uint16_t local_port;   /* host order; the echo identifier for ICMP echo */
    uint16_t remote_port;
    uint8_t family;        /* 4 or 6 */
    uint8_t proto;
    uint8_t zero[6];
};

struct tcp_track {
    uint32_t local_next;   /* highest SEQ + SEG.LEN sent by the local end: its SND.NXT */
    uint32_t local_ack;    /* highest ACK sent by the local end: its RCV.NXT as last announced */
    uint32_t remote_next;  /* highest SEQ + SEG.LEN sent by the remote end */
    uint32_t remote_ack;   /* highest ACK sent by the remote end */
    uint16_t local_window; /* latest window field of each end, unscaled */
    uint16_t remote_window;
};

struct flow {
    struct flow_key key;
    uint64_t last_seen_ms;
    uint32_t hash;
    uint32_t chain_next;   /* next entry in the same hash bucket */
    uint32_t lru_prev;     /* towards the most recently used */
    uint32_t lru_next;     /* towards the least recently used */
    uint8_t seen;
    uint8_t quote_len;     /* non-TCP: octets of the local end's first packet kept */
    union {
        struct tcp_track tcp;
        uint8_t quote[FLOWS_QUOTE_MAX];
    } u;
};

struct shard {
    atomic_flag lock;
    uint32_t size;         /* entries owned by this shard */
    uint32_t used;
    uint32_t bucket_mask;
    uint32_t free_head;
    uint32_t lru_head;     /* most recently used */
    uint32_t lru_tail;     /* least recently used: the next to evict */
    uint32_t *buckets;
    struct flow *entries;
    uint64_t tracked, closed, created, evicted, expired;
} __attribute__((aligned(64)));

struct p3dp_flows {
    struct shard shards[FLOWS_SHARDS];
    uint64_t hash_seed;
    uint64_t tcp_idle_ms;
    uint64_t other_idle_ms;
    uint32_t capacity;
    uint8_t unreachable_code_v4;
    uint8_t unreachable_code_v6;
    _Atomic uint64_t ignored;
    _Atomic uint64_t stale_resets;
};

/* A packet taken apart: pointers into the caller's buffer. */
struct parsed {
    uint8_t family;
    uint8_t proto;
    const uint8_t *src;
    const uint8_t *dst;
    const uint8_t *l4;     /* upper-layer header */
    size_t l4_len;         /* octets from l4 to the end of the IP packet */
    size_t ip_len;         /* the IP packet's own length (header + payload) */
};

/* ---- small helpers ------------------------------------------------------ */

/* Sequence-space comparison, RFC 793 §3.3 (modulo 2^32). */
static inline bool seq_after(uint32_t a, uint32_t b) { return (int32_t)(a - b) > 0; }

static inline void lock_shard(struct shard *s)
{
    while (atomic_flag_test_and_set_explicit(&s->lock, memory_order_acquire)) {
#if defined(__x86_64__) || defined(__i386__)
        __builtin_ia32_pause();
#endif
    }
}

static inline void unlock_shard(struct shard *s)
{
    atomic_flag_clear_explicit(&s->lock, memory_order_release);
}

static bool v4_unicast(const uint8_t *a)
{
    /* Not 0/8 (this network), 224/4 multicast, 240/4 reserved and broadcast:
     * RFC 1122 §3.2.2 forbids ICMP errors about packets to or from those. */
    return a[0] != 0 && a[0] < 224;
}

static bool v6_unicast(const uint8_t *a)
{
    static const uint8_t unspecified[16];
    return a[0] != 0xff && memcmp(a, unspecified, 16) != 0;
}

/* ---- parsing ------------------------------------------------------------ */

static bool parse_ipv4(const uint8_t *pkt, size_t len, struct parsed *p)
{
    if (len < 20)
        return false;
    size_t ihl = (size_t)(pkt[0] & 0x0f) * 4;
    size_t total = p3_get_be16(pkt + 2);
    if (ihl < 20 || total < ihl || total > len)
        return false;
    /* A fragment other than the first has no upper-layer header. */
    if ((p3_get_be16(pkt + 6) & 0x1fff) != 0)
        return false;
    p->family = 4;
    p->proto = pkt[9];
    p->src = pkt + 12;
    p->dst = pkt + 16;
    p->l4 = pkt + ihl;
    p->l4_len = total - ihl;
    p->ip_len = total;
    return true;
}

static bool parse_ipv6(const uint8_t *pkt, size_t len, struct parsed *p)
{
    if (len < 40)
        return false;
    size_t total = 40 + (size_t)p3_get_be16(pkt + 4);
    /* A zero payload length means a jumbogram (RFC 2675): not on a TUN. */
    if (total == 40 && pkt[6] != 59)
        return false;
    if (total > len)
        return false;
    uint8_t next = pkt[6];
    size_t off = 40;
    /* Walk the extension headers (RFC 8200 §4) to the upper layer; a bound
     * on their number keeps a hostile chain from costing more. */
    for (int hops = 0; hops < 8; hops++) {
        size_t hlen;
        if (next == 0 || next == 43 || next == 60) {          /* hop-by-hop, routing, dest opts */
            if (off + 2 > total)
                return false;
            hlen = ((size_t)pkt[off + 1] + 1) * 8;
        } else if (next == 44) {                             /* fragment */
            if (off + 8 > total)
                return false;
            if ((p3_get_be16(pkt + off + 2) & 0xfff8) != 0)
                return false;                                /* not the first fragment */
            hlen = 8;
        } else if (next == 51) {                             /* AH, RFC 4302 §2.2 */
            if (off + 2 > total)
                return false;
            hlen = ((size_t)pkt[off + 1] + 2) * 4;
        } else {
            break;
        }
        if (off + hlen > total)
            return false;
        next = pkt[off];
        off += hlen;
    }
    if (next == 0 || next == 43 || next == 60 || next == 44 || next == 51)
        return false;                                        /* chain too long */
    p->family = 6;
    p->proto = next;
    p->src = pkt + 8;
    p->dst = pkt + 24;
    p->l4 = pkt + off;
    p->l4_len = total - off;
    p->ip_len = total;
    return true;
}

static bool parse_packet(const uint8_t *pkt, size_t len, struct parsed *p)
{
    if (len < 1)
        return false;
    switch (pkt[0] >> 4) {
    case 4: return parse_ipv4(pkt, len, p);
    case 6: return parse_ipv6(pkt, len, p);
    default: return false;
    }
}

/* Fills key ports from the upper-layer header; false when the packet is
 * not worth a flow (truncated header, ICMP error, neighbour discovery). */
static bool key_ports(const struct parsed *p, bool from_lan, struct flow_key *k)
{
    uint16_t sport = 0, dport = 0;
    switch (p->proto) {
    case PROTO_TCP:
        /* Data offset: at least the 20-octet header, within the packet. */
        if (p->l4_len < 20 || (p->l4[12] >> 4) < 5 || (size_t)(p->l4[12] >> 4) * 4 > p->l4_len)
            return false;
        sport = p3_get_be16(p->l4);
        dport = p3_get_be16(p->l4 + 2);
        break;
    case PROTO_UDP:
    case PROTO_UDPLITE:
        if (p->l4_len < 8)
            return false;
        sport = p3_get_be16(p->l4);
        dport = p3_get_be16(p->l4 + 2);
        break;
    case PROTO_SCTP:
    case PROTO_DCCP:
        if (p->l4_len < 8)
            return false;
        sport = p3_get_be16(p->l4);
        dport = p3_get_be16(p->l4 + 2);
        break;
    case PROTO_ICMP:
        if (p->family != 4 || p->l4_len < 8)
            return false;
        /* Errors (3 unreachable, 4 quench, 5 redirect, 11 time exceeded,
         * 12 parameter problem) are never answered by an error. */
        if (p->l4[0] == 3 || p->l4[0] == 4 || p->l4[0] == 5 || p->l4[0] == 11 || p->l4[0] == 12)
            return false;
        if (p->l4[0] == 0 || p->l4[0] == 8)                   /* echo reply / request */
            sport = dport = p3_get_be16(p->l4 + 4);
        break;
    case PROTO_ICMPV6:
        if (p->family != 6 || p->l4_len < 8)
            return false;
        /* Types below 128 are errors (RFC 4443 §2.1); 130-137 and 143 are
         * MLD and neighbour discovery, link-local business. */
        if (p->l4[0] < 128 || (p->l4[0] >= 130 && p->l4[0] <= 137) || p->l4[0] == 143)
            return false;
        if (p->l4[0] == 128 || p->l4[0] == 129)
            sport = dport = p3_get_be16(p->l4 + 4);
        break;
    default:
        break;
    }
    k->local_port = from_lan ? sport : dport;
    k->remote_port = from_lan ? dport : sport;
    return true;
}

/* ---- table -------------------------------------------------------------- */

static uint32_t key_hash(const struct p3dp_flows *flows, const struct flow_key *k)
{
    uint64_t words[sizeof(*k) / 8];
    memcpy(words, k, sizeof(words));
    uint64_t h = flows->hash_seed;
    for (size_t i = 0; i < sizeof(words) / 8; i++) {
        h ^= words[i];
        h *= 0x9e3779b97f4a7c15ull;
        h ^= h >> 29;
    }
    h *= 0xbf58476d1ce4e5b9ull;
    h ^= h >> 32;
    return (uint32_t)h;
}

static struct shard *shard_of(struct p3dp_flows *flows, uint32_t hash)
{
    return &flows->shards[hash >> 28 & (FLOWS_SHARDS - 1)];
}

static bool flow_expired(const struct p3dp_flows *flows, const struct flow *f, uint64_t now_ms)
{
    uint64_t idle = f->key.proto == PROTO_TCP ? flows->tcp_idle_ms : flows->other_idle_ms;
    return now_ms > f->last_seen_ms && now_ms - f->last_seen_ms > idle;
}

static void lru_unlink(struct shard *s, uint32_t i)
{
    struct flow *f = &s->entries[i];
    if (f->lru_prev != NIL)
        s->entries[f->lru_prev].lru_next = f->lru_next;
    else
        s->lru_head = f->lru_next;
    if (f->lru_next != NIL)
        s->entries[f->lru_next].lru_prev = f->lru_prev;
    else
        s->lru_tail = f->lru_prev;
}

static void lru_push_head(struct shard *s, uint32_t i)
{
    struct flow *f = &s->entries[i];
    f->lru_prev = NIL;
    f->lru_next = s->lru_head;
    if (s->lru_head != NIL)
        s->entries[s->lru_head].lru_prev = i;
    else
        s->lru_tail = i;
    s->lru_head = i;
}

/* Removes entry i from its bucket and the LRU list and frees it. */
static void shard_remove(struct shard *s, uint32_t i)
{
    struct flow *f = &s->entries[i];
    uint32_t *link = &s->buckets[f->hash & s->bucket_mask];
    while (*link != i)
        link = &s->entries[*link].chain_next;
    *link = f->chain_next;
    lru_unlink(s, i);
    f->chain_next = s->free_head;
    s->free_head = i;
    s->used--;
}

static uint32_t shard_find(const struct shard *s, const struct flow_key *k, uint32_t hash)
{
    for (uint32_t i = s->buckets[hash & s->bucket_mask]; i != NIL; i = s->entries[i].chain_next) {
        const struct flow *f = &s->entries[i];
        if (f->hash == hash && memcmp(&f->key, k, sizeof(*k)) == 0)
            return i;
    }
    return NIL;
}

/* Which entry a full shard gives up: among the FLOWS_EVICT_SCAN least
 * recently used, an idle one, else a non-TCP one, else the oldest. A burst
 * of short UDP flows (DNS) thus does not push out long TCP connections,
 * whose RST is what spec §2.1.7 asks for first. */
static uint32_t pick_victim(const struct p3dp_flows *flows, const struct shard *s, uint64_t now_ms)
{
    uint32_t non_tcp = NIL;
    uint32_t i = s->lru_tail;
    for (unsigned int n = 0; n < FLOWS_EVICT_SCAN && i != NIL; n++, i = s->entries[i].lru_prev) {
        const struct flow *f = &s->entries[i];
        if (flow_expired(flows, f, now_ms))
            return i;
        if (non_tcp == NIL && f->key.proto != PROTO_TCP)
            non_tcp = i;
    }
    return non_tcp != NIL ? non_tcp : s->lru_tail;
}

/* A free entry, giving one up when the shard is full. */
static uint32_t shard_alloc(struct p3dp_flows *flows, struct shard *s, uint64_t now_ms)
{
    if (s->free_head == NIL) {
        uint32_t victim = pick_victim(flows, s, now_ms);
        if (flow_expired(flows, &s->entries[victim], now_ms))
            s->expired++;
        else
            s->evicted++;
        shard_remove(s, victim);
    }
    uint32_t i = s->free_head;
    s->free_head = s->entries[i].chain_next;
    s->used++;
    return i;
}

static void flow_reset_state(struct flow *f)
{
    f->seen = 0;
    f->quote_len = 0;
    memset(&f->u.tcp, 0, sizeof(f->u.tcp));
}

static uint64_t random_seed(void)
{
    uint64_t seed = 0;
    if (getrandom(&seed, sizeof(seed), GRND_NONBLOCK) != (ssize_t)sizeof(seed)) {
        /* The seed only spreads hash chains; a weak one is not a security
         * hole on a table bounded in size and in chain work per packet. */
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        seed = (uint64_t)ts.tv_nsec * 0x9e3779b97f4a7c15ull ^ (uint64_t)ts.tv_sec;
    }
    return seed | 1;
}

p3dp_flows *p3dp_flows_new(uint32_t capacity, uint64_t tcp_idle_ms, uint64_t other_idle_ms)
{
    if (capacity < FLOWS_SHARDS || capacity > P3DP_FLOWS_MAX_CAPACITY || tcp_idle_ms == 0 ||
        other_idle_ms == 0)
        return NULL;
    struct p3dp_flows *flows = aligned_alloc(64, sizeof(*flows));
    if (!flows)
        return NULL;
    memset(flows, 0, sizeof(*flows));
    flows->capacity = capacity;
    flows->tcp_idle_ms = tcp_idle_ms;
    flows->other_idle_ms = other_idle_ms;
    flows->hash_seed = random_seed();
    flows->unreachable_code_v4 = 1;   /* host unreachable (RFC 792) */
    flows->unreachable_code_v6 = 3;   /* address unreachable (RFC 4443 §3.1) */
    atomic_init(&flows->ignored, 0);
    atomic_init(&flows->stale_resets, 0);
    for (uint32_t si = 0; si < FLOWS_SHARDS; si++) {
        struct shard *s = &flows->shards[si];
        atomic_flag_clear(&s->lock);
        s->size = capacity / FLOWS_SHARDS + (si < capacity % FLOWS_SHARDS ? 1 : 0);
        uint32_t nbuckets = 1;
        while (nbuckets < s->size)
            nbuckets <<= 1;
        s->bucket_mask = nbuckets - 1;
        s->buckets = malloc(sizeof(uint32_t) * nbuckets);
        s->entries = calloc(s->size, sizeof(struct flow));
        if (!s->buckets || !s->entries) {
            p3dp_flows_free(flows);
            return NULL;
        }
        for (uint32_t b = 0; b < nbuckets; b++)
            s->buckets[b] = NIL;
        for (uint32_t i = 0; i < s->size; i++)
            s->entries[i].chain_next = i + 1 < s->size ? i + 1 : NIL;
        s->free_head = 0;
        s->lru_head = s->lru_tail = NIL;
    }
    return flows;
}

void p3dp_flows_free(p3dp_flows *flows)
{
    if (!flows)
        return;
    for (uint32_t si = 0; si < FLOWS_SHARDS; si++) {
        free(flows->shards[si].buckets);
        free(flows->shards[si].entries);
    }
    free(flows);
}

/* ---- observing ---------------------------------------------------------- */

static void track_tcp(struct flow *f, const struct parsed *p, bool from_lan)
{
    const uint8_t *th = p->l4;
    uint8_t flags = th[13];
    uint32_t seq = p3_get_be32(th + 4);
    uint32_t ack = p3_get_be32(th + 8);
    uint16_t window = p3_get_be16(th + 14);
    size_t payload = p->l4_len - (size_t)(th[12] >> 4) * 4;   /* key_ports checked the offset */
    /* SEG.LEN counts SYN and FIN (RFC 793 §3.3). */
    uint32_t seg_end = seq + (uint32_t)payload + !!(flags & TCP_SYN) + !!(flags & TCP_FIN);
    struct tcp_track *t = &f->u.tcp;

    /* A fresh SYN on a known 4-tuple is a new connection (the old one
     * went through TIME-WAIT): start over. */
    if ((flags & (TCP_SYN | TCP_ACK)) == TCP_SYN)
        flow_reset_state(f);

    /* Highest, not latest: a retransmission must not move RCV.NXT back. */
    if (from_lan) {
        if (!(f->seen & SEEN_LOCAL_SEQ) || seq_after(seg_end, t->local_next))
            t->local_next = seg_end;
        if ((flags & TCP_ACK) && (!(f->seen & SEEN_LOCAL_ACK) || seq_after(ack, t->local_ack))) {
            t->local_ack = ack;
            f->seen |= SEEN_LOCAL_ACK;
        }
        t->local_window = window;
        f->seen |= SEEN_LOCAL_SEQ | ((flags & TCP_FIN) ? SEEN_LOCAL_FIN : 0);
    } else {
        if (!(f->seen & SEEN_REMOTE_SEQ) || seq_after(seg_end, t->remote_next))
            t->remote_next = seg_end;
        if (flags & TCP_ACK)
            t->remote_ack = ack;
        t->remote_window = window;
        f->seen |= SEEN_REMOTE_SEQ | ((flags & TCP_FIN) ? SEEN_REMOTE_FIN : 0);
    }
}

/* The flow a packet belongs to, oriented by our LAN; false for what is not
 * tracked (malformed, an ICMP error, a non-unicast end). */
static bool flow_key_of(uint32_t peer, const uint8_t *packet, size_t len, bool from_lan, struct parsed *p,
                        struct flow_key *key)
{
    memset(key, 0, sizeof(*key));
    if (!parse_packet(packet, len, p) || !key_ports(p, from_lan, key))
        return false;
    const uint8_t *local = from_lan ? p->src : p->dst;
    const uint8_t *remote = from_lan ? p->dst : p->src;
    /* Only unicast ends can be told anything (RFC 1122 §3.2.2, RFC 4443
     * §2.4(e)); TCP has no other kind. */
    if (!(p->family == 4 ? v4_unicast(local) && v4_unicast(remote)
                         : v6_unicast(local) && v6_unicast(remote)))
        return false;
    size_t alen = p->family == 4 ? 4 : 16;
    memcpy(key->local_addr, local, alen);
    memcpy(key->remote_addr, remote, alen);
    key->peer = peer;
    key->family = p->family;
    key->proto = p->proto;
    return true;
}

int p3dp_flows_observe(p3dp_flows *flows, uint32_t peer, const uint8_t *packet, size_t len,
                       int direction, uint64_t now_ms)
{
    if (!flows || !packet || (direction != P3DP_FLOW_FROM_LAN && direction != P3DP_FLOW_TO_LAN))
        return ERR_BAD_ARGUMENT;
    bool from_lan = direction == P3DP_FLOW_FROM_LAN;
    struct parsed p;
    struct flow_key key;
    if (!flow_key_of(peer, packet, len, from_lan, &p, &key))
        goto ignored;

    uint32_t hash = key_hash(flows, &key);
    struct shard *s = shard_of(flows, hash);
    uint8_t tcp_flags = p.proto == PROTO_TCP ? p.l4[13] : 0;
    int result = P3DP_FLOW_TRACKED;

    lock_shard(s);
    uint32_t i = shard_find(s, &key, hash);
    if (tcp_flags & TCP_RST) {
        /* Either end gave up: nothing left to terminate. */
        if (i != NIL) {
            shard_remove(s, i);
            s->closed++;
        }
        result = P3DP_FLOW_CLOSED;
        goto done;
    }
    struct flow *f;
    if (i == NIL) {
        i = shard_alloc(flows, s, now_ms);
        f = &s->entries[i];
        f->key = key;
        f->hash = hash;
        flow_reset_state(f);
        f->chain_next = s->buckets[hash & s->bucket_mask];
        s->buckets[hash & s->bucket_mask] = i;
        lru_push_head(s, i);
        s->created++;
    } else {
        f = &s->entries[i];
        if (flow_expired(flows, f, now_ms)) {
            /* Idle past its timeout: whatever comes now is a new flow. */
            flow_reset_state(f);
            s->expired++;
        }
        if (s->lru_head != i) {
            lru_unlink(s, i);
            lru_push_head(s, i);
        }
    }
    f->last_seen_ms = now_ms;
    if (p.proto == PROTO_TCP) {
        track_tcp(f, &p, from_lan);
        if ((f->seen & (SEEN_LOCAL_FIN | SEEN_REMOTE_FIN)) == (SEEN_LOCAL_FIN | SEEN_REMOTE_FIN)) {
            shard_remove(s, i);
            s->closed++;
            result = P3DP_FLOW_CLOSED;
        }
    } else if (from_lan && f->quote_len == 0) {
        /* The unreachable will be about a packet the local end sent: keep
         * the head of its first one. */
        size_t n = p.ip_len < FLOWS_QUOTE_MAX ? p.ip_len : FLOWS_QUOTE_MAX;
        memcpy(f->u.quote, packet, n);
        f->quote_len = (uint8_t)n;
    }
done:
    s->tracked++;
    unlock_shard(s);
    return result;

ignored:
    atomic_fetch_add_explicit(&flows->ignored, 1, memory_order_relaxed);
    return P3DP_FLOW_IGNORED;
}

size_t p3dp_flows_observe_burst(p3dp_flows *flows, const p3dp_pkt *pkts, size_t n,
                                int direction, uint64_t now_ms)
{
    if (!flows || !pkts || (direction != P3DP_FLOW_FROM_LAN && direction != P3DP_FLOW_TO_LAN))
        return 0;
    bool from_lan = direction == P3DP_FLOW_FROM_LAN;
    size_t tracked = 0;
    for (size_t i = 0; i < n; i++) {
        const p3dp_pkt *pkt = &pkts[i];
        /* Dropped packets, cover traffic and control messages never
         * reached an enterprise host. */
        if (pkt->status != 0 || pkt->kind != P3DP_KIND_DATA)
            continue;
        const uint8_t *ip = from_lan ? pkt->in_buf : pkt->out_buf;
        uint32_t len = from_lan ? pkt->in_len : pkt->out_len;
        if (!ip)
            continue;
        int result = p3dp_flows_observe(flows, pkt->peer, ip, len, direction, now_ms);
        if (result == P3DP_FLOW_TRACKED || result == P3DP_FLOW_CLOSED)
            tracked++;
    }
    return tracked;
}

/* ---- generating --------------------------------------------------------- */

/* The IP header of a generated packet, from the remote end (or the
 * unreachable destination) to the local end. Returns its length. */
static size_t write_ip_header(uint8_t *out, const struct flow_key *k, uint8_t proto,
                              size_t payload_len, uint8_t tos)
{
    if (k->family == 4) {
        memset(out, 0, 20);
        out[0] = 0x45;
        out[1] = tos;
        p3_put_be16(out + 2, (uint16_t)(20 + payload_len));
        p3_put_be16(out + 6, 0x4000);          /* DF; the ID is then free (RFC 6864 §4.1) */
        out[8] = FLOWS_TTL;
        out[9] = proto;
        memcpy(out + 12, k->remote_addr, 4);
        memcpy(out + 16, k->local_addr, 4);
        p3_csum_store(out + 10, p3_csum_fold(p3_csum_add(0, out, 20)));
        return 20;
    }
    memset(out, 0, 40);
    out[0] = 0x60;
    p3_put_be16(out + 4, (uint16_t)payload_len);
    out[6] = proto;
    out[7] = FLOWS_TTL;
    memcpy(out + 8, k->remote_addr, 16);
    memcpy(out + 24, k->local_addr, 16);
    return 40;
}

static size_t ip_header_len(const struct flow_key *k) { return k->family == 4 ? 20 : 40; }

static size_t write_rst(uint8_t *out, const struct flow *f, uint32_t seq)
{
    const struct flow_key *k = &f->key;
    size_t ip = write_ip_header(out, k, PROTO_TCP, 20, 0);
    uint8_t *th = out + ip;
    memset(th, 0, 20);
    p3_put_be16(th, k->remote_port);
    p3_put_be16(th + 2, k->local_port);
    p3_put_be32(th + 4, seq);
    th[12] = 5 << 4;
    th[13] = TCP_RST;
    /* With the ACK bit, ACK = the local end's SND.NXT: what a SYN-SENT or
     * SYN-RECEIVED end requires before it believes a RST (RFC 793 §3.9;
     * Linux tcp_rcv_synsent_state_process, tcp_check_req). An established
     * end checks only SEQ. Without anything seen from the local end we
     * cannot name it, and leave ACK out. */
    if (f->seen & SEEN_LOCAL_SEQ) {
        th[13] |= TCP_ACK;
        p3_put_be32(th + 8, f->u.tcp.local_next);
    }
    p3_csum_store(th + 16, p3_csum_fold(p3_csum_add(p3_csum_pseudo(k->family, out + (k->family == 4 ? 12 : 8),
                                                                   out + (k->family == 4 ? 16 : 24), PROTO_TCP, 20),
                                                    th, 20)));
    return ip + 20;
}

/* The SEQ values to reset a TCP flow with: the local end's last announced
 * RCV.NXT (its latest ACK) and, when the remote end is known to have sent
 * more that the local end has not acknowledged yet (a delayed ACK), the end
 * of that data too: one of them is RCV.NXT exactly, the other at worst draws
 * a challenge ACK (RFC 5961 §3.2). */
static size_t rst_seqs(const struct flow *f, uint32_t seqs[2])
{
    size_t n = 0;
    const struct tcp_track *t = &f->u.tcp;
    if (f->seen & SEEN_LOCAL_ACK)
        seqs[n++] = t->local_ack;
    if ((f->seen & SEEN_REMOTE_SEQ) && (n == 0 || seq_after(t->remote_next, t->local_ack)))
        seqs[n++] = t->remote_next;
    if (n == 0)
        seqs[n++] = 0;   /* SYN-SENT: only the ACK field is checked */
    return n;
}

static size_t write_unreachable(uint8_t *out, const struct p3dp_flows *flows, const struct flow *f)
{
    const struct flow_key *k = &f->key;
    size_t icmp_len = 8 + f->quote_len;
    size_t ip;
    uint8_t *icmp;
    if (k->family == 4) {
        /* Type 3, by default code 1 host unreachable (RFC 792); TOS 0xc0
         * as Linux marks its own ICMP errors (RFC 1812 §4.3.2.5). */
        ip = write_ip_header(out, k, PROTO_ICMP, icmp_len, 0xc0);
        icmp = out + ip;
        memset(icmp, 0, 8);
        icmp[0] = 3;
        icmp[1] = flows->unreachable_code_v4;
        memcpy(icmp + 8, f->u.quote, f->quote_len);
        p3_csum_store(icmp + 2, p3_csum_fold(p3_csum_add(0, icmp, icmp_len)));
    } else {
        /* Type 1, by default code 3 address unreachable (RFC 4443 §3.1). */
        ip = write_ip_header(out, k, PROTO_ICMPV6, icmp_len, 0);
        icmp = out + ip;
        memset(icmp, 0, 8);
        icmp[0] = 1;
        icmp[1] = flows->unreachable_code_v6;
        memcpy(icmp + 8, f->u.quote, f->quote_len);
        p3_csum_store(icmp + 2, p3_csum_fold(p3_csum_add(p3_csum_pseudo(6, out + 8, out + 24, PROTO_ICMPV6,
                                                                        (uint32_t)icmp_len),
                                                         icmp, icmp_len)));
    }
    return ip + icmp_len;
}

int p3dp_flows_terminate(p3dp_flows *flows, uint32_t peer, uint64_t now_ms, uint8_t *out,
                         size_t out_cap, size_t *out_lens, size_t max_packets,
                         p3dp_flows_terminated *done)
{
    if (!flows || !done || (max_packets && (!out || !out_lens)))
        return ERR_BAD_ARGUMENT;
    memset(done, 0, sizeof(*done));
    size_t n = 0, used = 0;
    for (uint32_t si = 0; si < FLOWS_SHARDS; si++) {
        struct shard *s = &flows->shards[si];
        lock_shard(s);
        uint32_t next;
        for (uint32_t i = s->lru_head; i != NIL; i = next) {
            struct flow *f = &s->entries[i];
            next = f->lru_next;
            if (peer != P3DP_NO_PEER && f->key.peer != peer)
                continue;
            bool tcp = f->key.proto == PROTO_TCP;
            if (flow_expired(flows, f, now_ms) || (!tcp && f->quote_len == 0)) {
                /* Not live, or nothing the local end sent to quote. */
                shard_remove(s, i);
                done->flows_silent++;
                continue;
            }
            uint32_t seqs[2];
            size_t npkts = tcp ? rst_seqs(f, seqs) : 1;
            size_t bytes = tcp ? npkts * (ip_header_len(&f->key) + 20)
                               : ip_header_len(&f->key) + 8 + f->quote_len;
            if (n + npkts > max_packets || used + bytes > out_cap) {
                done->flows_remaining++;
                continue;
            }
            if (tcp) {
                for (size_t j = 0; j < npkts; j++) {
                    out_lens[n] = write_rst(out + used, f, seqs[j]);
                    used += out_lens[n++];
                }
                done->tcp_flows_reset++;
                done->tcp_resets += (uint32_t)npkts;
            } else {
                out_lens[n] = write_unreachable(out + used, flows, f);
                used += out_lens[n++];
                done->icmp_unreachables++;
            }
            shard_remove(s, i);
        }
        unlock_shard(s);
    }
    if (n == 0 && done->flows_remaining > 0)
        return ERR_TOO_BIG;
    return (int)n;
}

int p3dp_flows_set_unreachable_codes(p3dp_flows *flows, unsigned int v4_code, unsigned int v6_code)
{
    /* Codes 0-15: RFC 792, RFC 1812 §5.2.7.1; 0-7: RFC 4443 §3.1, RFC 6554. */
    if (!flows || v4_code > 15 || v6_code > 7)
        return ERR_BAD_ARGUMENT;
    flows->unreachable_code_v4 = (uint8_t)v4_code;
    flows->unreachable_code_v6 = (uint8_t)v6_code;
    return 0;
}

size_t p3dp_flows_forget(p3dp_flows *flows, uint32_t peer)
{
    if (!flows)
        return 0;
    size_t forgotten = 0;
    for (uint32_t si = 0; si < FLOWS_SHARDS; si++) {
        struct shard *s = &flows->shards[si];
        lock_shard(s);
        uint32_t next;
        for (uint32_t i = s->lru_head; i != NIL; i = next) {
            next = s->entries[i].lru_next;
            if (s->entries[i].key.peer == peer) {
                shard_remove(s, i);
                forgotten++;
            }
        }
        unlock_shard(s);
    }
    return forgotten;
}

size_t p3dp_flows_count(p3dp_flows *flows, uint32_t peer, uint64_t now_ms)
{
    if (!flows)
        return 0;
    size_t live = 0;
    for (uint32_t si = 0; si < FLOWS_SHARDS; si++) {
        struct shard *s = &flows->shards[si];
        lock_shard(s);
        for (uint32_t i = s->lru_head; i != NIL; i = s->entries[i].lru_next) {
            const struct flow *f = &s->entries[i];
            if (f->key.peer == peer && !flow_expired(flows, f, now_ms))
                live++;
        }
        unlock_shard(s);
    }
    return live;
}

void p3dp_flows_stats_get(p3dp_flows *flows, p3dp_flows_stats *stats)
{
    if (!stats)
        return;
    memset(stats, 0, sizeof(*stats));
    if (!flows)
        return;
    stats->capacity = flows->capacity;
    stats->ignored = atomic_load_explicit(&flows->ignored, memory_order_relaxed);
    stats->stale_resets = atomic_load_explicit(&flows->stale_resets, memory_order_relaxed);
    for (uint32_t si = 0; si < FLOWS_SHARDS; si++) {
        struct shard *s = &flows->shards[si];
        lock_shard(s);
        stats->entries += s->used;
        stats->tracked += s->tracked;
        stats->closed += s->closed;
        stats->created += s->created;
        stats->evicted += s->evicted;
        stats->expired += s->expired;
        unlock_shard(s);
    }
    stats->observed = stats->tracked + stats->ignored;
}

/* ---- across restarts (docs/flows.md "After a restart") ---------------- */

int p3dp_flows_reset_stale(p3dp_flows *flows, uint32_t peer, const uint8_t *packet, size_t len,
                           uint64_t now_ms, uint8_t *out, size_t cap)
{
    if (!flows || !packet || !out)
        return ERR_BAD_ARGUMENT;
    struct parsed p;
    struct flow f;
    memset(&f, 0, sizeof(f));
    if (!flow_key_of(peer, packet, len, true, &p, &f.key) || p.proto != PROTO_TCP)
        return 0;
    uint8_t flags = p.l4[13];
    /* A SYN opens a connection, a RST ends one: neither is stale. Without
     * ACK the segment names no RCV.NXT a RST could carry. */
    if ((flags & (TCP_SYN | TCP_RST)) || !(flags & TCP_ACK))
        return 0;
    if (cap < ip_header_len(&f.key) + 20)
        return ERR_TOO_BIG;
    f.hash = key_hash(flows, &f.key);
    struct shard *s = shard_of(flows, f.hash);
    lock_shard(s);
    uint32_t i = shard_find(s, &f.key, f.hash);
    bool known = i != NIL && !flow_expired(flows, &s->entries[i], now_ms);
    unlock_shard(s);
    if (known)
        return 0;
    /* f.seen is 0: the RST carries no ACK, as RFC 793 §3.4 asks when it
     * answers a segment that had one. */
    atomic_fetch_add_explicit(&flows->stale_resets, 1, memory_order_relaxed);
    return (int)write_rst(out, &f, p3_get_be32(p.l4 + 8));
}

/* The export format: this header, then `count` records of one build's layout
 * (the version and record size catch a file written by another build). */
#define FLOWS_EXPORT_MAGIC 0x4c463350u   /* "P3FL" */
#define FLOWS_EXPORT_VERSION 1u

struct export_header {
    uint32_t magic;
    uint32_t version;
    uint32_t record_bytes;
    uint32_t count;
};

struct export_record {
    struct flow_key key;
    uint64_t idle_ms;
    uint8_t seen;
    uint8_t quote_len;
    uint8_t zero[6];
    union {
        struct tcp_track tcp;
        uint8_t quote[FLOWS_QUOTE_MAX];
    } u;
};

int p3dp_flows_export(p3dp_flows *flows, uint64_t now_ms, uint8_t *out, size_t cap, size_t *needed)
{
    if (!flows || !needed || (cap && !out))
        return ERR_BAD_ARGUMENT;
    size_t count = 0, at = sizeof(struct export_header);
    bool fits = cap >= at;
    for (uint32_t si = 0; si < FLOWS_SHARDS; si++) {
        struct shard *s = &flows->shards[si];
        lock_shard(s);
        for (uint32_t i = s->lru_head; i != NIL; i = s->entries[i].lru_next) {
            const struct flow *f = &s->entries[i];
            if (flow_expired(flows, f, now_ms))
                continue;
            count++;
            if (fits && at + sizeof(struct export_record) <= cap) {
                struct export_record r;
                memset(&r, 0, sizeof(r));
                r.key = f->key;
                r.idle_ms = now_ms > f->last_seen_ms ? now_ms - f->last_seen_ms : 0;
                r.seen = f->seen;
                r.quote_len = f->quote_len;
                memcpy(&r.u, &f->u, sizeof(r.u));
                memcpy(out + at, &r, sizeof(r));
            } else {
                fits = false;
            }
            at += sizeof(struct export_record);
        }
        unlock_shard(s);
    }
    *needed = at;
    if (!fits || count > INT32_MAX)
        return ERR_TOO_BIG;
    struct export_header h = { FLOWS_EXPORT_MAGIC, FLOWS_EXPORT_VERSION, sizeof(struct export_record),
                               (uint32_t)count };
    memcpy(out, &h, sizeof(h));
    return (int)count;
}

int p3dp_flows_import(p3dp_flows *flows, const uint8_t *in, size_t len, uint64_t now_ms,
                      uint64_t extra_idle_ms)
{
    struct export_header h;
    if (!flows || !in || len < sizeof(h))
        return ERR_BAD_ARGUMENT;
    memcpy(&h, in, sizeof(h));
    if (h.magic != FLOWS_EXPORT_MAGIC || h.version != FLOWS_EXPORT_VERSION ||
        h.record_bytes != sizeof(struct export_record) ||
        (len - sizeof(h)) / sizeof(struct export_record) < h.count)
        return ERR_BAD_ARGUMENT;
    int loaded = 0;
    for (uint32_t n = 0; n < h.count; n++) {
        struct export_record r;
        memcpy(&r, in + sizeof(h) + (size_t)n * sizeof(r), sizeof(r));
        if ((r.key.family != 4 && r.key.family != 6) || r.quote_len > FLOWS_QUOTE_MAX)
            return ERR_BAD_ARGUMENT;
        uint64_t idle = r.idle_ms + extra_idle_ms;
        uint64_t timeout = r.key.proto == PROTO_TCP ? flows->tcp_idle_ms : flows->other_idle_ms;
        if (idle >= timeout)
            continue;
        uint32_t hash = key_hash(flows, &r.key);
        struct shard *s = shard_of(flows, hash);
        lock_shard(s);
        uint32_t i = shard_find(s, &r.key, hash);
        if (i == NIL) {
            i = shard_alloc(flows, s, now_ms);
            s->entries[i].key = r.key;
            s->entries[i].hash = hash;
            s->entries[i].chain_next = s->buckets[hash & s->bucket_mask];
            s->buckets[hash & s->bucket_mask] = i;
            lru_push_head(s, i);
            s->created++;
        }
        struct flow *f = &s->entries[i];
        f->last_seen_ms = now_ms > idle ? now_ms - idle : 0;   /* a clock that started late */
        f->seen = r.seen;
        f->quote_len = r.quote_len;
        memcpy(&f->u, &r.u, sizeof(f->u));
        unlock_shard(s);
        loaded++;
    }
    return loaded;
}
