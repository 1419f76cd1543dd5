/* The anti-replay window (replay.c) at its edges: RFC 4303 §3.4.3 with the
 * RFC 6479 word ring, and the SipHash of the rotation (obfs.c). */
#include "ntest.h"
#include "p3dp_internal.h"

#include <string.h>

static void test_fresh_window_accepts_any_seq_but_zero(void)
{
    struct p3dp_replay w;
    memset(&w, 0, sizeof(w));
    CHECK_EQ(p3dp_replay_check(&w, 0), -P3R_DP_TOO_OLD);
    CHECK_EQ(p3dp_replay_check(&w, 1), 0);
    CHECK_EQ(p3dp_replay_check(&w, UINT64_MAX - 1), 0);
}

static void test_duplicates_inside_the_window_are_replays(void)
{
    struct p3dp_replay w;
    memset(&w, 0, sizeof(w));
    for (uint64_t s = 1; s <= 3000; s += 2)
        CHECK_EQ(p3dp_replay_update(&w, s), 0);
    CHECK_EQ(p3dp_replay_check(&w, 2999), -P3R_DP_REPLAY);
    CHECK_EQ(p3dp_replay_check(&w, 2998), 0);               /* never seen, inside */
    CHECK_EQ(p3dp_replay_update(&w, 2998), 0);
    CHECK_EQ(p3dp_replay_update(&w, 2998), -P3R_DP_REPLAY);
}

static void test_window_edge_is_exactly_the_advertised_width(void)
{
    struct p3dp_replay w;
    uint64_t top = 100000;
    memset(&w, 0, sizeof(w));
    CHECK_EQ(p3dp_replay_update(&w, top), 0);
    CHECK(P3DP_REPLAY_WINDOW >= 1024);
    CHECK_EQ(p3dp_replay_check(&w, top - (P3DP_REPLAY_WINDOW - 1)), 0);
    CHECK_EQ(p3dp_replay_check(&w, top - P3DP_REPLAY_WINDOW), -P3R_DP_TOO_OLD);
    /* every seq in the window is accepted once, in any order */
    for (uint64_t s = top - 1; s > top - P3DP_REPLAY_WINDOW; s--)
        CHECK_EQ(p3dp_replay_update(&w, s), 0);
    for (uint64_t s = top - 1; s > top - P3DP_REPLAY_WINDOW; s -= 97)
        CHECK_EQ(p3dp_replay_check(&w, s), -P3R_DP_REPLAY);
}

static void test_jumps_clear_stale_words(void)
{
    struct p3dp_replay w;
    memset(&w, 0, sizeof(w));
    for (uint64_t s = 1; s <= 2100; s++)
        CHECK_EQ(p3dp_replay_update(&w, s), 0);
    /* a jump of exactly one ring must not leave old bits that look like replays */
    CHECK_EQ(p3dp_replay_update(&w, 2100 + 64 * 32), 0);
    CHECK_EQ(p3dp_replay_check(&w, 2100 + 64 * 32 - 1), 0);
    CHECK_EQ(p3dp_replay_check(&w, 2100 + 64 * 31), 0);
    CHECK_EQ(p3dp_replay_update(&w, 2100 + 64 * 32 + 70), 0);
    CHECK_EQ(p3dp_replay_check(&w, 2100 + 64 * 32 + 6), 0);
    CHECK_EQ(p3dp_replay_check(&w, 2100 + 64 * 32), -P3R_DP_REPLAY);
}

static void test_siphash_matches_the_paper_vector(void)
{
    /* SipHash-2-4, key 00..0f, message 00..07: 0x93f5f5799a932462 */
    uint64_t k0 = 0x0706050403020100ull, k1 = 0x0f0e0d0c0b0a0908ull;
    CHECK(p3dp_siphash24(k0, k1, 0x0706050403020100ull) == 0x93f5f5799a932462ull);
}

NTEST_MAIN(NTEST(test_fresh_window_accepts_any_seq_but_zero),
           NTEST(test_duplicates_inside_the_window_are_replays),
           NTEST(test_window_edge_is_exactly_the_advertised_width),
           NTEST(test_jumps_clear_stale_words),
           NTEST(test_siphash_matches_the_paper_vector))
