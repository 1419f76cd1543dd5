/* Crypto engines through the public API (p3dp.h): the accelerator
 * simulator gives the same bytes as AES-NI, every injected fault is re-run
 * on the fallback with nothing lost, recovery, forgeries stay forgeries, and
 * (under ASan) the device thread, rings and SA states are freed cleanly. */
#include "ntest.h"
#include "p3dp.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { N = 96, ROOM = 2048 };

static uint8_t inner[N][1500], wire[N][ROOM], opened[N][ROOM];
static size_t inner_len[N];

static void fill(uint8_t *p, size_t n, uint8_t seed)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (uint8_t)(seed + i * 7);
}

static p3dp_ctx *site(int is_a, uint32_t engine, uint32_t fallback, uint32_t timeout_us, uint32_t recover_ms)
{
    p3dp_ctx *ctx = p3dp_ctx_new(4, 8);
    p3dp_engine_params params;
    p3dp_peer_config c;
    p3dp_sa_config s;
    uint8_t hp[16], x[4] = { 192, 0, 2, 1 }, y[4] = { 198, 51, 100, 2 };

    memset(&params, 0, sizeof(params));
    params.timeout_us = timeout_us;
    params.recover_ms = recover_ms;
    if (engine != P3DP_ENGINE_AESNI)
        CHECK_EQ(p3dp_ctx_set_engine(ctx, engine, &params, fallback), 0);
    memset(&c, 0, sizeof(c));
    c.peer_id = is_a ? 2 : 1;
    c.family = 4;
    c.encap = P3DP_ENCAP_UDP;
    c.local_port = c.remote_port = P3DP_UDP_PORT;
    c.mtu = 1500;
    memcpy(c.local_addr, is_a ? x : y, 4);
    memcpy(c.remote_addr, is_a ? y : x, 4);
    CHECK_EQ(p3dp_peer_add(ctx, &c), 0);
    fill(hp, 16, 42);
    CHECK_EQ(p3dp_peer_set_hp_keys(ctx, c.peer_id, is_a ? hp : NULL, is_a ? NULL : hp), 0);
    memset(&s, 0, sizeof(s));
    s.p3_id = 0x7001;
    s.peer_id = c.peer_id;
    s.cipher = P3DP_AES_256_GCM;
    fill(s.key, 32, 1);
    fill(s.salt, 4, 2);
    fill(s.obfs_key, 16, 3);
    CHECK_EQ(is_a ? p3dp_sa_add_outbound(ctx, &s, 0) : p3dp_sa_add_inbound(ctx, &s), 0);
    return ctx;
}

static void make_inners(void)
{
    for (size_t i = 0; i < N; i++) {
        size_t len = 20 + (i * 97) % 1400;
        fill(inner[i], len, (uint8_t)i);
        inner[i][0] = 0x45;
        inner[i][2] = (uint8_t)(len >> 8);
        inner[i][3] = (uint8_t)len;
        inner_len[i] = len;
    }
}

static size_t seal_all(p3dp_ctx *a, p3dp_pkt *pkts)
{
    memset(pkts, 0, N * sizeof(*pkts));
    for (size_t i = 0; i < N; i++) {
        pkts[i].in_buf = inner[i];
        pkts[i].in_len = (uint32_t)inner_len[i];
        pkts[i].out_buf = wire[i];
        pkts[i].out_cap = ROOM;
        pkts[i].peer = 2;
    }
    return p3dp_seal_burst(a, pkts, N, 0);
}

/* Opens what seal_all wrote; returns how many came back identical to the inner packets. */
static size_t open_all(p3dp_ctx *b, const p3dp_pkt *sealed)
{
    static p3dp_pkt pkts[N];
    size_t same = 0;
    uint8_t x[4] = { 192, 0, 2, 1 };
    memset(pkts, 0, sizeof(pkts));
    for (size_t i = 0; i < N; i++) {
        pkts[i].in_buf = wire[i];
        pkts[i].in_len = sealed[i].out_len;
        pkts[i].out_buf = opened[i];
        pkts[i].out_cap = ROOM;
        pkts[i].family = 4;
        pkts[i].port = P3DP_UDP_PORT;
        memcpy(pkts[i].addr, x, 4);
    }
    p3dp_open_burst(b, pkts, N, 0);
    for (size_t i = 0; i < N; i++)
        same += pkts[i].status == 0 && pkts[i].out_len == inner_len[i] &&
                memcmp(opened[i], inner[i], inner_len[i]) == 0;
    return same;
}

static void test_simulator_matches_aesni_byte_for_byte(void)
{
    static uint8_t ref[N][ROOM];
    static p3dp_pkt pkts[N];
    size_t ref_len[N];
    p3dp_ctx *a = site(1, P3DP_ENGINE_AESNI, P3DP_ENGINE_NONE, 0, 0);
    p3dp_ctx *s = site(1, P3DP_ENGINE_ACCEL_SIM, P3DP_ENGINE_AESNI, 2000000, 0);
    p3dp_ctx *b = site(0, P3DP_ENGINE_ACCEL_SIM, P3DP_ENGINE_AESNI, 2000000, 0);
    p3dp_engine_status st;

    make_inners();
    CHECK_EQ(seal_all(a, pkts), N);
    for (size_t i = 0; i < N; i++) {
        memcpy(ref[i], wire[i], pkts[i].out_len);
        ref_len[i] = pkts[i].out_len;
    }
    CHECK_EQ(seal_all(s, pkts), N);
    for (size_t i = 0; i < N; i++)
        CHECK(pkts[i].out_len == ref_len[i] && memcmp(ref[i], wire[i], ref_len[i]) == 0);
    CHECK_EQ(open_all(b, pkts), N);
    p3dp_ctx_engine_status(s, &st);
    CHECK_EQ(st.engine, P3DP_ENGINE_ACCEL_SIM);
    CHECK_EQ(st.engine_ops, N);
    CHECK_EQ(st.failovers, 0);
    p3dp_ctx_free(a);
    p3dp_ctx_free(s);
    p3dp_ctx_free(b);
}

static void test_each_fault_is_rerun_on_the_fallback(void)
{
    static p3dp_pkt pkts[N];
    for (uint32_t fault = P3DP_FAULT_ERROR; fault <= P3DP_FAULT_GONE; fault++) {
        for (int side = 0; side < 2; side++) {
            uint32_t t = fault == P3DP_FAULT_TIMEOUT ? 20000 : 2000000;
            p3dp_ctx *a = site(1, P3DP_ENGINE_ACCEL_SIM, P3DP_ENGINE_AESNI, side ? 2000000 : t, 0);
            p3dp_ctx *b = site(0, P3DP_ENGINE_ACCEL_SIM, P3DP_ENGINE_AESNI, side ? t : 2000000, 0);
            p3dp_ctx *faulty = side ? b : a;
            p3dp_engine_status st;

            make_inners();
            CHECK_EQ(p3dp_accel_inject(faulty, fault, 7, 2), 0);
            CHECK_EQ(seal_all(a, pkts), N);
            CHECK_EQ(open_all(b, pkts), N);
            p3dp_ctx_engine_status(faulty, &st);
            CHECK_EQ(st.on_fallback, 1);
            CHECK_EQ(st.reason, -P3R_ACCEL_FAULT);
            CHECK_EQ(st.last_fault, fault);
            CHECK_EQ(st.failovers, 1);
            CHECK(st.rerun_ops >= 1);
            CHECK_EQ(st.engine_ops + st.fallback_ops, N);   /* every op done once, by one of them */
            /* Removing the SA while on the fallback wipes both engines' states. */
            CHECK_EQ(p3dp_sa_remove(faulty, side ? P3DP_DIR_IN : P3DP_DIR_OUT, side ? 1 : 2, 0x7001), 0);
            p3dp_ctx_free(a);
            p3dp_ctx_free(b);       /* a gone device's thread is joined here too */
        }
    }
}

static void test_recovery_returns_to_the_device(void)
{
    static p3dp_pkt pkts[N];
    p3dp_ctx *a = site(1, P3DP_ENGINE_ACCEL_SIM, P3DP_ENGINE_AESNI, 2000000, 1);
    p3dp_ctx *b = site(0, P3DP_ENGINE_AESNI, P3DP_ENGINE_NONE, 0, 0);
    p3dp_engine_status st;
    struct timespec pause = { 0, 2000000 };
    int rounds = 0;

    make_inners();
    CHECK_EQ(p3dp_accel_inject(a, P3DP_FAULT_GONE, 3, 1), 0);
    CHECK_EQ(seal_all(a, pkts), N);
    CHECK_EQ(open_all(b, pkts), N);
    CHECK_EQ(p3dp_accel_inject(a, P3DP_FAULT_NONE, 0, 0), 0);
    do {
        nanosleep(&pause, NULL);
        CHECK_EQ(seal_all(a, pkts), N);
        CHECK_EQ(open_all(b, pkts), N);
        p3dp_ctx_engine_status(a, &st);
    } while (st.on_fallback && ++rounds < 200);
    CHECK_EQ(st.on_fallback, 0);
    CHECK_EQ(st.recoveries, 1);
    CHECK_EQ(st.faults[P3DP_FAULT_GONE] >= 1, 1);
    p3dp_ctx_free(a);
    p3dp_ctx_free(b);
}

static void test_forgery_is_confirmed_on_the_fallback(void)
{
    static p3dp_pkt pkts[N];
    p3dp_ctx *a = site(1, P3DP_ENGINE_AESNI, P3DP_ENGINE_NONE, 0, 0);
    p3dp_ctx *b = site(0, P3DP_ENGINE_ACCEL_SIM, P3DP_ENGINE_AESNI, 2000000, 0);
    p3dp_engine_status st;
    p3dp_counters c;

    make_inners();
    CHECK_EQ(seal_all(a, pkts), N);
    wire[5][pkts[5].out_len - 1] ^= 1;
    CHECK_EQ(open_all(b, pkts), N - 1);
    p3dp_ctx_engine_status(b, &st);
    CHECK_EQ(st.forged_opens, 1);
    CHECK_EQ(st.failovers, 0);
    p3dp_ctx_counters(b, &c);
    CHECK_EQ(c.drops[2], 1);        /* P3-E202 */
    p3dp_ctx_free(a);
    p3dp_ctx_free(b);
}

static void test_engine_arguments(void)
{
    p3dp_ctx *ctx = p3dp_ctx_new(2, 2);
    p3dp_engine_params bad;
    memset(&bad, 0, sizeof(bad));
    bad.ring_slots = 100;           /* not a power of two */
    CHECK_EQ(p3dp_ctx_set_engine(ctx, P3DP_ENGINE_ACCEL_SIM, &bad, P3DP_ENGINE_AESNI), -P3R_DP_CRYPTO_ENGINE);
    CHECK_EQ(p3dp_ctx_set_engine(ctx, 99, NULL, P3DP_ENGINE_AESNI), -P3R_DP_BAD_CIPHER);
    CHECK_EQ(p3dp_ctx_set_engine(ctx, P3DP_ENGINE_ACCEL_SIM, NULL, P3DP_ENGINE_ACCEL_SIM), -P3R_DP_BAD_ARGUMENT);
    CHECK_EQ(p3dp_accel_inject(ctx, P3DP_FAULT_ERROR, 0, 1), -P3R_DP_BAD_ARGUMENT);
    CHECK_EQ(p3dp_ctx_set_engine(ctx, P3DP_ENGINE_ACCEL_SIM, NULL, P3DP_ENGINE_NONE), 0);
    CHECK_EQ(p3dp_ctx_set_engine(ctx, P3DP_ENGINE_ACCEL_SIM, NULL, P3DP_ENGINE_AESNI), 0);   /* replaces it */
    CHECK_EQ(p3dp_accel_inject(ctx, 9, 0, 1), -P3R_DP_BAD_ARGUMENT);
    p3dp_ctx_free(ctx);
}

NTEST_MAIN(NTEST(test_engine_arguments),
           NTEST(test_simulator_matches_aesni_byte_for_byte),
           NTEST(test_each_fault_is_rerun_on_the_fallback),
           NTEST(test_recovery_returns_to_the_device),
           NTEST(test_forgery_is_confirmed_on_the_fallback))
