/* Seal/open round trips, tampering, anti-replay, rekey, and a bounded fuzz
 * loop over open_burst — all through the public API (p3dp.h). */
#include "ntest.h"
#include "p3dp.h"

#include <stdlib.h>
#include <string.h>

static const uint32_t ciphers[] = { P3DP_AES_128_GCM, P3DP_AES_256_GCM, P3DP_AES_128_CCM,
                                    P3DP_AES_256_CCM, P3DP_AES_128_CTR, P3DP_AES_256_CTR };

struct pair {
    p3dp_ctx *a, *b;        /* a seals to b */
};

static void fill(uint8_t *p, size_t n, uint8_t seed)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (uint8_t)(seed + i * 7);
}

static void peer_cfg(p3dp_peer_config *c, uint32_t id, int family, int encap, int local_is_a)
{
    memset(c, 0, sizeof(*c));
    c->peer_id = id;
    c->family = (uint8_t)family;
    c->encap = (uint8_t)encap;
    c->local_port = P3DP_UDP_PORT;
    c->remote_port = P3DP_UDP_PORT;
    c->mtu = 1500;
    if (family == 4) {
        uint8_t x[4] = { 192, 0, 2, 1 }, y[4] = { 198, 51, 100, 2 };
        memcpy(c->local_addr, local_is_a ? x : y, 4);
        memcpy(c->remote_addr, local_is_a ? y : x, 4);
    } else {
        c->local_addr[0] = 0x20; c->local_addr[1] = 0x01; c->local_addr[15] = local_is_a ? 1 : 2;
        c->remote_addr[0] = 0x20; c->remote_addr[1] = 0x01; c->remote_addr[15] = local_is_a ? 2 : 1;
    }
}

static void sa_cfg(p3dp_sa_config *s, uint32_t id, uint32_t peer, uint32_t cipher, uint8_t seed)
{
    memset(s, 0, sizeof(*s));
    s->p3_id = id;
    s->peer_id = peer;
    s->cipher = cipher;
    fill(s->key, sizeof(s->key), seed);
    fill(s->salt, sizeof(s->salt), (uint8_t)(seed + 1));
    fill(s->auth_key, sizeof(s->auth_key), (uint8_t)(seed + 2));
    fill(s->obfs_key, sizeof(s->obfs_key), (uint8_t)(seed + 3));
}

static struct pair pair_new(uint32_t cipher, int family, int encap)
{
    struct pair p = { p3dp_ctx_new(8, 16), p3dp_ctx_new(8, 16) };
    p3dp_peer_config c;
    p3dp_sa_config s;
    uint8_t hp[16];
    fill(hp, 16, 99);
    peer_cfg(&c, 7, family, encap, 1);
    CHECK_EQ(p3dp_peer_add(p.a, &c), 0);
    peer_cfg(&c, 9, family, encap, 0);
    CHECK_EQ(p3dp_peer_add(p.b, &c), 0);
    CHECK_EQ(p3dp_peer_set_hp_keys(p.a, 7, hp, NULL), 0);
    CHECK_EQ(p3dp_peer_set_hp_keys(p.b, 9, NULL, hp), 0);
    sa_cfg(&s, 0x1001, 7, cipher, 1);
    CHECK_EQ(p3dp_sa_add_outbound(p.a, &s, 0), 0);
    s.peer_id = 9;
    CHECK_EQ(p3dp_sa_add_inbound(p.b, &s), 0);
    return p;
}

static void pair_free(struct pair *p)
{
    p3dp_ctx_free(p->a);
    p3dp_ctx_free(p->b);
}

/* An IPv4 (or IPv6) inner packet of exactly len octets. */
static size_t make_inner(uint8_t *buf, size_t len, int family, uint8_t seed)
{
    fill(buf, len, seed);
    if (family == 4) {
        buf[0] = 0x45;
        buf[2] = (uint8_t)(len >> 8);
        buf[3] = (uint8_t)len;
    } else {
        buf[0] = 0x60;
        buf[4] = (uint8_t)((len - 40) >> 8);
        buf[5] = (uint8_t)(len - 40);
    }
    return len;
}

static uint8_t inner[1600], wire[2048], opened[2048];
static uint16_t open_port = P3DP_UDP_PORT;   /* the sender's port as a socket reports it */

static int seal_one(p3dp_ctx *ctx, uint32_t peer, const uint8_t *in, size_t len, uint32_t flags, size_t *out_len)
{
    p3dp_pkt pkt;
    memset(&pkt, 0, sizeof(pkt));
    pkt.in_buf = in;
    pkt.in_len = (uint32_t)len;
    pkt.out_buf = wire;
    pkt.out_cap = sizeof(wire);
    pkt.peer = peer;
    p3dp_seal_burst(ctx, &pkt, 1, flags);
    *out_len = pkt.out_len;
    return pkt.status;
}

static int open_one(p3dp_ctx *ctx, const uint8_t *in, size_t len, uint32_t flags, p3dp_pkt *pkt,
                    int family)
{
    memset(pkt, 0, sizeof(*pkt));
    pkt->in_buf = in;
    pkt->in_len = (uint32_t)len;
    pkt->out_buf = opened;
    pkt->out_cap = sizeof(opened);
    if (!(flags & P3DP_IN_IP)) {
        /* as a UDP socket would report the sender */
        pkt->family = (uint8_t)family;
        pkt->port = open_port;
        if (family == 4) {
            uint8_t x[4] = { 192, 0, 2, 1 };
            memcpy(pkt->addr, x, 4);
        } else {
            pkt->addr[0] = 0x20; pkt->addr[1] = 0x01; pkt->addr[15] = 1;
        }
    }
    p3dp_open_burst(ctx, pkt, 1, flags);
    return pkt->status;
}

static void test_round_trip_every_cipher_family_and_size(void)
{
    static const size_t sizes[] = { 20, 21, 40, 41, 60, 61, 125, 509, 1000, 1397, 1400 };
    for (size_t c = 0; c < sizeof(ciphers) / sizeof(ciphers[0]); c++) {
        for (int outer = 4; outer <= 6; outer += 2) {
            for (int encap = P3DP_ENCAP_UDP; encap <= P3DP_ENCAP_ESP; encap++) {
                struct pair p = pair_new(ciphers[c], outer, encap);
                for (int fam = 4; fam <= 6; fam += 2) {
                    for (size_t s = 0; s < sizeof(sizes) / sizeof(sizes[0]); s++) {
                        size_t len = sizes[s], wlen;
                        p3dp_pkt pkt;
                        if (fam == 6 && len < 40)
                            continue;
                        make_inner(inner, len, fam, (uint8_t)s);
                        CHECK_EQ(seal_one(p.a, 7, inner, len, P3DP_OUT_IP, &wlen), 0);
                        CHECK(wlen <= 1500);
                        CHECK_EQ(open_one(p.b, wire, wlen, P3DP_IN_IP, &pkt, outer), 0);
                        CHECK_EQ(pkt.out_len, len);
                        CHECK_EQ(pkt.peer, 9);
                        CHECK(memcmp(opened, inner, len) == 0);
                    }
                }
                pair_free(&p);
            }
        }
    }
}

static void test_any_flipped_bit_is_rejected_and_counted(void)
{
    struct pair p = pair_new(P3DP_AES_128_GCM, 4, P3DP_ENCAP_UDP);
    size_t wlen;
    uint8_t orig[2048];
    p3dp_counters before, after;
    make_inner(inner, 100, 4, 3);
    CHECK_EQ(seal_one(p.a, 7, inner, 100, 0, &wlen), 0);
    memcpy(orig, wire, wlen);
    p3dp_ctx_counters(p.b, &before);
    for (size_t bit = 0; bit < wlen * 8; bit++) {
        p3dp_pkt pkt;
        memcpy(wire, orig, wlen);
        wire[bit / 8] ^= (uint8_t)(1u << (bit % 8));
        if (bit == 0) {
            /* Flags 01 00 00 00 -> 00 00 00 00 is the RFC 3948 non-ESP
             * marker: handed back as an IKE message, not opened. */
            CHECK_EQ(open_one(p.b, wire, wlen, 0, &pkt, 4), 0);
            CHECK_EQ(pkt.kind, P3DP_KIND_IKE);
            CHECK_EQ(pkt.out_len, 0);
        } else {
            CHECK(open_one(p.b, wire, wlen, 0, &pkt, 4) < 0);
        }
    }
    p3dp_ctx_counters(p.b, &after);
    CHECK_EQ(after.opened_packets, before.opened_packets);
    {
        uint64_t drops = 0;
        for (int i = 0; i < P3DP_DROP_SLOTS; i++)
            drops += after.drops[i] - before.drops[i];
        CHECK_EQ(drops, wlen * 8 - 1);
        CHECK_EQ(after.drops[0], 31);   /* flags: version and reserved bits */
        CHECK_EQ(after.ike_packets, 1);
        /* the masked ID and the HP sample (first 16 ciphertext octets) -> unknown ID */
        CHECK_EQ(after.drops[1], 32 + 128);
        /* seq 1 with its low bit flipped is 0, never valid: too old */
        CHECK_EQ(after.drops[4], 1);
        /* the other seq bits, the rest of the ciphertext and the ICV -> authentication */
        CHECK_EQ(after.drops[2], wlen * 8 - 32 - 32 - 128 - 1);
    }
    {
        p3dp_pkt pkt;
        CHECK_EQ(open_one(p.b, orig, wlen, 0, &pkt, 4), 0);   /* the original still opens */
    }
    pair_free(&p);
}

static void test_replay_too_old_and_far_future(void)
{
    struct pair p = pair_new(P3DP_AES_256_GCM, 6, P3DP_ENCAP_UDP);
    static uint8_t first[2048];
    size_t wlen, first_len;
    p3dp_pkt pkt;
    make_inner(inner, 60, 6, 5);
    CHECK_EQ(seal_one(p.a, 7, inner, 60, 0, &first_len), 0);
    memcpy(first, wire, first_len);
    CHECK_EQ(open_one(p.b, first, first_len, 0, &pkt, 6), 0);
    CHECK_EQ(open_one(p.b, first, first_len, 0, &pkt, 6), -P3R_DP_REPLAY);
    /* Far future: accepted, and the window moves past the first packet. */
    CHECK_EQ(p3dp_sa_set_next_seq(p.a, 7, 0x1001, 1 + P3DP_REPLAY_WINDOW + 5), 0);
    CHECK_EQ(seal_one(p.a, 7, inner, 60, 0, &wlen), 0);
    CHECK_EQ(open_one(p.b, wire, wlen, 0, &pkt, 6), 0);
    CHECK_EQ(open_one(p.b, first, first_len, 0, &pkt, 6), -P3R_DP_TOO_OLD);
    pair_free(&p);
}

static void test_rekey_switch_and_old_sa_until_removed(void)
{
    struct pair p = pair_new(P3DP_AES_128_GCM, 4, P3DP_ENCAP_ESP);
    p3dp_sa_config s;
    size_t wlen;
    p3dp_pkt pkt;
    open_port = 0;   /* raw ESP has no port */
    make_inner(inner, 80, 4, 1);
    sa_cfg(&s, 0x2002, 9, P3DP_AES_128_GCM, 50);
    CHECK_EQ(p3dp_sa_add_inbound(p.b, &s), 0);
    s.peer_id = 7;
    CHECK_EQ(p3dp_sa_add_outbound(p.a, &s, 3), 0);
    for (int i = 1; i <= 5; i++) {
        CHECK_EQ(seal_one(p.a, 7, inner, 80, 0, &wlen), 0);
        CHECK_EQ(open_one(p.b, wire, wlen, 0, &pkt, 4), 0);
        CHECK_EQ(pkt.p3_id, i <= 3 ? 0x1001 : 0x2002);
        CHECK_EQ(pkt.seq, i <= 3 ? i : i - 3);
    }
    CHECK_EQ(p3dp_sa_remove(p.b, P3DP_DIR_IN, 9, 0x1001), 0);
    CHECK_EQ(p3dp_sa_remove(p.b, P3DP_DIR_IN, 9, 0x1001), -P3R_DP_SA_NOT_FOUND);
    open_port = P3DP_UDP_PORT;
    pair_free(&p);
}

static uint32_t rng_state = 12345;
static uint32_t rnd(void)
{
    rng_state ^= rng_state << 13; rng_state ^= rng_state >> 17; rng_state ^= rng_state << 5;
    return rng_state;
}

static void test_fuzz_open_burst_only_counts_drops(void)
{
    enum { N = 32 };
    /* `make fuzz` runs many more rounds through P3DP_FUZZ_ROUNDS. */
    const char *env = getenv("P3DP_FUZZ_ROUNDS");
    int rounds = env ? atoi(env) : 400;
    struct pair p = pair_new(P3DP_AES_128_CTR, 4, P3DP_ENCAP_UDP);
    static uint8_t bufs[N][1600], outs[N][1600];
    p3dp_pkt pkts[N];
    uint64_t opened_ok = 0;
    for (int round = 0; round < rounds; round++) {
        size_t wlen;
        make_inner(inner, 20 + rnd() % 1300, 4, (uint8_t)round);
        CHECK_EQ(seal_one(p.a, 7, inner, (size_t)(inner[2] << 8 | inner[3]), P3DP_OUT_IP, &wlen), 0);
        for (int i = 0; i < N; i++) {
            size_t len = wlen;
            memcpy(bufs[i], wire, wlen);
            switch (rnd() % 4) {
            case 0: len = rnd() % 1600; for (size_t k = 0; k < len; k++) bufs[i][k] = (uint8_t)rnd(); break;
            case 1: for (int k = 0, f = 1 + rnd() % 8; k < f; k++) bufs[i][rnd() % wlen] ^= (uint8_t)(1 + rnd() % 255); break;
            case 2: len = rnd() % (wlen + 1); break;
            default: break;   /* the genuine packet, possibly a replay */
            }
            memset(&pkts[i], 0, sizeof(pkts[i]));
            pkts[i].in_buf = bufs[i];
            pkts[i].in_len = (uint32_t)len;
            pkts[i].out_buf = outs[i];
            pkts[i].out_cap = (uint32_t)(rnd() % 2 ? sizeof(outs[i]) : rnd() % 1600);
        }
        opened_ok += p3dp_open_burst(p.b, pkts, N, P3DP_IN_IP);
    }
    {
        p3dp_counters c;
        uint64_t drops = 0;
        p3dp_ctx_counters(p.b, &c);
        for (int i = 0; i < P3DP_DROP_SLOTS; i++)
            drops += c.drops[i];
        CHECK_EQ(c.opened_packets + c.ike_packets, opened_ok);
        CHECK_EQ(c.opened_packets + c.ike_packets + drops, (uint64_t)N * (uint64_t)rounds);
        CHECK(c.opened_packets <= (uint64_t)rounds);   /* each genuine packet opens at most once */
    }
    pair_free(&p);
}

static void test_sealed_length_depends_only_on_bucket(void)
{
    struct pair p = pair_new(P3DP_AES_128_GCM, 4, P3DP_ENCAP_UDP);
    size_t a, b;
    make_inner(inner, 140, 4, 1);
    CHECK_EQ(seal_one(p.a, 7, inner, 140, 0, &a), 0);
    make_inner(inner, 250, 4, 2);
    CHECK_EQ(seal_one(p.a, 7, inner, 250, 0, &b), 0);
    CHECK_EQ(a, b);
    CHECK_EQ(a, 16 + 256 + 16);
    pair_free(&p);
}

static void test_cover_traffic_without_payload_and_overlap_refused(void)
{
    struct pair p = pair_new(P3DP_AES_128_CCM, 6, P3DP_ENCAP_UDP);
    p3dp_pkt pkt;
    memset(&pkt, 0, sizeof(pkt));
    pkt.kind = P3DP_KIND_DUMMY;
    pkt.out_buf = wire;
    pkt.out_cap = sizeof(wire);
    pkt.peer = 7;
    CHECK_EQ(p3dp_seal_burst(p.a, &pkt, 1, 0), 1);
    CHECK_EQ(pkt.out_len, 16 + 64 + 16);
    {
        p3dp_pkt opened_pkt;
        CHECK_EQ(open_one(p.b, wire, pkt.out_len, 0, &opened_pkt, 6), 0);
        CHECK_EQ(opened_pkt.kind, P3DP_KIND_DUMMY);
        CHECK_EQ(opened_pkt.out_len, 0);
    }
    /* sealing into the input buffer itself is refused, not corrupted */
    make_inner(wire, 100, 6, 1);
    pkt.kind = P3DP_KIND_DATA;
    pkt.in_buf = wire;
    pkt.in_len = 100;
    CHECK_EQ(p3dp_seal_burst(p.a, &pkt, 1, 0), 0);
    CHECK_EQ(pkt.status, -P3R_DP_BAD_ARGUMENT);
    pair_free(&p);
}

static void test_seal_names_the_destination_in_the_descriptor(void)
{
    /* The worker sends a sealed packet to the address the seal wrote into
     * its descriptor; it does not look the peer up a second time. */
    for (int family = 4; family <= 6; family += 2) {
        struct pair p = pair_new(P3DP_AES_128_GCM, family, P3DP_ENCAP_UDP);
        p3dp_peer_config c;
        p3dp_pkt pkt;
        peer_cfg(&c, 7, family, P3DP_ENCAP_UDP, 1);
        memset(&pkt, 0, sizeof(pkt));
        make_inner(inner, 100, family, 3);
        pkt.in_buf = inner;
        pkt.in_len = 100;
        pkt.out_buf = wire;
        pkt.out_cap = sizeof(wire);
        pkt.peer = 7;
        CHECK_EQ(p3dp_seal_burst(p.a, &pkt, 1, 0), 1);
        CHECK_EQ(pkt.family, family);
        CHECK_EQ(pkt.port, P3DP_UDP_PORT);
        CHECK(memcmp(pkt.addr, c.remote_addr, 16) == 0);
        pair_free(&p);
    }
}

NTEST_MAIN(NTEST(test_cover_traffic_without_payload_and_overlap_refused),
           NTEST(test_round_trip_every_cipher_family_and_size),
           NTEST(test_any_flipped_bit_is_rejected_and_counted),
           NTEST(test_replay_too_old_and_far_future),
           NTEST(test_rekey_switch_and_old_sa_until_removed),
           NTEST(test_fuzz_open_burst_only_counts_drops),
           NTEST(test_sealed_length_depends_only_on_bucket),
           NTEST(test_seal_names_the_destination_in_the_descriptor))
