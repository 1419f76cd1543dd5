/* The queues between the control plane and a worker lane (queues.c): the
 * message rings (order, capacity, wrap-around, one producer and one
 * consumer thread) and the IKE rate limit (global and per-source buckets,
 * refill, fixed memory whatever the sources), and the IKE_SA_INIT parser and
 * COOKIE reply the worker answers floods with (ike_cookie.c). */
#include "ntest.h"
#include "ike_cookie.h"
#include "queues.h"

#include <pthread.h>
#include <string.h>

static p3dp_worker_msg msg_for(uint32_t peer)
{
    p3dp_worker_msg m;
    memset(&m, 0, sizeof(m));
    m.kind = 1;
    m.peer = peer;
    return m;
}

static void test_ring_keeps_order_and_refuses_when_full(void)
{
    struct p3_msgring r;
    CHECK_EQ(p3_msgring_init(&r, 8, 64), 0);
    for (uint32_t i = 0; i < 8; i++) {
        p3dp_worker_msg m = msg_for(i);
        uint8_t body[4] = { (uint8_t)i, 1, 2, 3 };
        CHECK_EQ(p3_msgring_put(&r, &m, NULL, 0, body, sizeof(body)), 0);
    }
    p3dp_worker_msg m = msg_for(99);
    CHECK_EQ(p3_msgring_put(&r, &m, NULL, 0, (const uint8_t *)"x", 1), -P3R_DP_TABLE_FULL);
    CHECK_EQ(p3_msgring_count(&r), 8);
    const uint8_t *data;
    /* peek does not take: the k-th message is there until popped */
    const p3dp_worker_msg *third = p3_msgring_peek(&r, 2, &data);
    CHECK(third != NULL && third->peer == 2 && third->len == 4 && data[0] == 2);
    CHECK(p3_msgring_peek(&r, 8, &data) == NULL);
    for (uint32_t i = 0; i < 8; i++) {
        const p3dp_worker_msg *got = p3_msgring_peek(&r, 0, &data);
        CHECK(got != NULL && got->peer == i && data[0] == i);
        p3_msgring_pop(&r, 1);
    }
    CHECK(p3_msgring_peek(&r, 0, &data) == NULL);
    p3_msgring_free(&r);
}

static void test_ring_joins_head_and_body_and_refuses_what_does_not_fit(void)
{
    struct p3_msgring r;
    CHECK_EQ(p3_msgring_init(&r, 4, 16), 0);
    p3dp_worker_msg m = msg_for(7);
    CHECK_EQ(p3_msgring_put(&r, &m, (const uint8_t *)"head", 4, (const uint8_t *)"body", 4), 0);
    CHECK_EQ(p3_msgring_put(&r, &m, (const uint8_t *)"0123456789", 10, (const uint8_t *)"0123456", 7),
             -P3R_DP_TOO_BIG);
    const uint8_t *data;
    const p3dp_worker_msg *got = p3_msgring_peek(&r, 0, &data);
    CHECK(got != NULL && got->len == 8 && memcmp(data, "headbody", 8) == 0);
    CHECK_EQ(p3_msgring_count(&r), 1);
    p3_msgring_free(&r);
    CHECK_EQ(p3_msgring_init(&r, 6, 16), -P3R_DP_BAD_ARGUMENT);   /* not a power of two */
}

static void test_ring_wraps_many_times(void)
{
    struct p3_msgring r;
    CHECK_EQ(p3_msgring_init(&r, 4, 8), 0);
    uint32_t next_out = 0, bad = 0;
    for (uint32_t i = 0; i < 10000; i++) {
        p3dp_worker_msg m = msg_for(i);
        CHECK_EQ(p3_msgring_put(&r, &m, NULL, 0, (const uint8_t *)&i, sizeof(i)), 0);
        if (i % 3 == 2) {
            /* take several at once, as the lane does after sealing a burst */
            unsigned n = p3_msgring_count(&r);
            for (unsigned k = 0; k < n; k++) {
                const uint8_t *data;
                const p3dp_worker_msg *got = p3_msgring_peek(&r, k, &data);
                uint32_t v;
                memcpy(&v, data, sizeof(v));
                bad += !got || got->peer != next_out || v != next_out;
                next_out++;
            }
            p3_msgring_pop(&r, n);
        }
    }
    CHECK_EQ(bad, 0);
    p3_msgring_free(&r);
}

enum { THREADED_MESSAGES = 200000 };

static void *produce(void *arg)
{
    struct p3_msgring *r = arg;
    for (uint32_t i = 0; i < THREADED_MESSAGES;) {
        p3dp_worker_msg m = msg_for(i);
        uint8_t body[64];
        memset(body, (int)(i & 0xff), sizeof(body));
        if (p3_msgring_put(r, &m, NULL, 0, body, 1 + i % 64) == 0)
            i++;
    }
    return NULL;
}

static void test_ring_between_two_threads_loses_and_reorders_nothing(void)
{
    struct p3_msgring r;
    CHECK_EQ(p3_msgring_init(&r, 64, 64), 0);
    pthread_t t;
    CHECK_EQ(pthread_create(&t, NULL, produce, &r), 0);
    uint32_t expect = 0, bad = 0;
    while (expect < THREADED_MESSAGES) {
        const uint8_t *data;
        const p3dp_worker_msg *got = p3_msgring_peek(&r, 0, &data);
        if (!got)
            continue;
        bad += got->peer != expect || got->len != 1 + expect % 64 || data[got->len - 1] != (uint8_t)(expect & 0xff);
        p3_msgring_pop(&r, 1);
        expect++;
    }
    pthread_join(t, NULL);
    CHECK_EQ(bad, 0);
    p3_msgring_free(&r);
}

static const uint8_t *addr4(uint32_t v)
{
    static uint8_t a[16];
    memset(a, 0, sizeof(a));
    a[0] = (uint8_t)(v >> 24);
    a[1] = (uint8_t)(v >> 16);
    a[2] = (uint8_t)(v >> 8);
    a[3] = (uint8_t)v;
    return a;
}

static void test_one_source_gets_its_burst_then_its_rate(void)
{
    static struct p3_ike_limit lim;
    p3_ike_limit_init(&lim, 1, 2);
    p3_ike_limit_set(&lim, 0, 0, 10, 5);            /* no global limit; 10/s, burst 5 per source */
    uint64_t t = 1000000;
    unsigned passed = 0;
    for (int i = 0; i < 100; i++)
        passed += (unsigned)p3_ike_limit_allow(&lim, 4, addr4(0xC0000201), t);
    CHECK_EQ(passed, 5);
    /* another source is not held back by the first */
    CHECK_EQ(p3_ike_limit_allow(&lim, 4, addr4(0xC0000202), t), 1);
    /* one second later: ten more (capped by the burst of five) */
    passed = 0;
    for (int i = 0; i < 100; i++)
        passed += (unsigned)p3_ike_limit_allow(&lim, 4, addr4(0xC0000201), t + 1000);
    CHECK_EQ(passed, 5);
    /* 300 ms later: three tokens earned */
    passed = 0;
    for (int i = 0; i < 100; i++)
        passed += (unsigned)p3_ike_limit_allow(&lim, 4, addr4(0xC0000201), t + 1300);
    CHECK_EQ(passed, 3);
}

static void test_global_bucket_caps_a_spoofed_flood(void)
{
    static struct p3_ike_limit lim;
    p3_ike_limit_init(&lim, 3, 4);
    p3_ike_limit_set(&lim, 100, 50, 20, 40);
    uint64_t t = 5000;
    unsigned passed = 0;
    /* ten seconds of 10,000 messages a second, each from a new address */
    for (uint32_t i = 0; i < 100000; i++)
        passed += (unsigned)p3_ike_limit_allow(&lim, 4, addr4(0x0A000000u + i), t + i / 10);
    /* the burst, then 100 a second */
    CHECK(passed >= 50 + 100 * 10 - 2 && passed <= 50 + 100 * 10 + 1);
}

static void test_a_busy_source_cannot_refill_by_losing_its_slot(void)
{
    static struct p3_ike_limit lim;
    p3_ike_limit_init(&lim, 5, 6);
    p3_ike_limit_set(&lim, 0, 0, 1, 2);
    uint64_t t = 1000;
    const uint32_t busy = 0x0A0A0A0A;
    unsigned busy_passed = 0;
    /* the busy sender alternates with thousands of others, some sharing its slot */
    for (uint32_t i = 0; i < 50000; i++) {
        busy_passed += (unsigned)p3_ike_limit_allow(&lim, 4, addr4(busy), t);
        (void)p3_ike_limit_allow(&lim, 4, addr4(0x14000000u + i), t);
    }
    /* no time passed: at most the burst of two (one, if a sender sharing its
     * slot came first), however many others came */
    CHECK(busy_passed >= 1 && busy_passed <= 2);
}

static void test_ipv6_sources_are_told_apart(void)
{
    static struct p3_ike_limit lim;
    p3_ike_limit_init(&lim, 7, 8);
    p3_ike_limit_set(&lim, 0, 0, 1, 1);
    uint8_t a[16] = { 0x20, 0x01, 0x0d, 0xb8 }, b[16] = { 0x20, 0x01, 0x0d, 0xb8 };
    a[15] = 1;
    b[15] = 2;
    CHECK_EQ(p3_ike_limit_allow(&lim, 6, a, 10), 1);
    CHECK_EQ(p3_ike_limit_allow(&lim, 6, a, 10), 0);
    CHECK_EQ(p3_ike_limit_allow(&lim, 6, b, 10), 1);
}

/* An IKE_SA_INIT request: header, then [N(COOKIE)], SA (empty stand-in), Nonce. */
static uint32_t init_request(uint8_t *m, const uint8_t *cookie, uint32_t cookie_len)
{
    uint32_t at = 28;
    memset(m, 0, 28);
    for (int i = 0; i < 8; i++)
        m[i] = (uint8_t)(0xa0 + i);                       /* SPIi */
    m[17] = 0x20;
    m[18] = 34;
    m[19] = 0x08;                                          /* initiator */
    uint8_t *first = &m[16];
    if (cookie) {
        *first = 41;
        m[at] = 33;
        m[at + 2] = 0;
        m[at + 3] = (uint8_t)(8 + cookie_len);
        m[at + 4] = 0;
        m[at + 5] = 0;
        m[at + 6] = 0x40;
        m[at + 7] = 0x06;                                  /* 16390 */
        memcpy(m + at + 8, cookie, cookie_len);
        at += 8 + cookie_len;
    } else {
        *first = 33;
    }
    m[at] = 40;                                            /* SA (4 octets), then Nonce */
    m[at + 1] = 0;
    m[at + 2] = 0;
    m[at + 3] = 4;
    at += 4;
    m[at] = 0;
    m[at + 2] = 0;
    m[at + 3] = 4 + 32;
    for (int i = 0; i < 32; i++)
        m[at + 4 + i] = (uint8_t)i;
    at += 36;
    m[24] = 0;
    m[25] = 0;
    m[26] = (uint8_t)(at >> 8);
    m[27] = (uint8_t)at;
    return at;
}

static void test_init_request_is_parsed_and_answered_with_its_cookie(void)
{
    uint8_t m[256], reply[P3_IKE_COOKIE_REPLY_BYTES], cookie[P3_IKE_COOKIE_BYTES];
    struct p3_ike_init v;
    uint32_t len = init_request(m, NULL, 0);
    CHECK_EQ(p3_ike_parse_init(m, len, &v), 1);
    CHECK(v.spi_i == m && v.nonce_len == 32 && v.nonce[5] == 5 && v.cookie == NULL);
    const uint8_t secret[32] = { 1, 2, 3 }, addr[4] = { 198, 18, 0, 9 }, other[4] = { 198, 18, 0, 10 };
    CHECK_EQ(p3dp_ike_cookie(secret, sizeof(secret), 7, v.nonce, v.nonce_len, 4, addr, v.spi_i, cookie), 0);
    CHECK_EQ(cookie[0], 7);
    uint8_t again[P3_IKE_COOKIE_BYTES], elsewhere[P3_IKE_COOKIE_BYTES];
    p3dp_ike_cookie(secret, sizeof(secret), 7, v.nonce, v.nonce_len, 4, addr, v.spi_i, again);
    p3dp_ike_cookie(secret, sizeof(secret), 7, v.nonce, v.nonce_len, 4, other, v.spi_i, elsewhere);
    CHECK(memcmp(cookie, again, sizeof(cookie)) == 0);          /* stateless: the same request, the same cookie */
    CHECK(memcmp(cookie, elsewhere, sizeof(cookie)) != 0);      /* bound to the source address */
    p3_ike_cookie_reply(&v, cookie, reply);
    CHECK(memcmp(reply, m, 8) == 0);                            /* SPIi echoed */
    CHECK(reply[16] == 41 && reply[18] == 34 && reply[19] == 0x20);   /* N, IKE_SA_INIT, response */
    CHECK(reply[27] == P3_IKE_COOKIE_REPLY_BYTES);
    CHECK(reply[34] == 0x40 && reply[35] == 0x06 && memcmp(reply + 36, cookie, sizeof(cookie)) == 0);
    /* the retry carries the cookie first */
    len = init_request(m, cookie, sizeof(cookie));
    CHECK_EQ(p3_ike_parse_init(m, len, &v), 1);
    CHECK(v.cookie != NULL && v.cookie_len == sizeof(cookie) && memcmp(v.cookie, cookie, sizeof(cookie)) == 0);
}

static void test_other_ike_messages_are_not_parsed_as_init_requests(void)
{
    uint8_t m[256];
    struct p3_ike_init v;
    uint32_t len = init_request(m, NULL, 0);
    m[19] = 0x20;                                               /* a response */
    CHECK_EQ(p3_ike_parse_init(m, len, &v), 0);
    len = init_request(m, NULL, 0);
    m[18] = 35;                                                 /* IKE_AUTH */
    CHECK_EQ(p3_ike_parse_init(m, len, &v), 0);
    len = init_request(m, NULL, 0);
    CHECK_EQ(p3_ike_parse_init(m, len - 1, &v), 0);             /* length field disagrees */
    m[len - 33] = 200;                                          /* nonce payload runs past the end */
    CHECK_EQ(p3_ike_parse_init(m, len, &v), 0);
    CHECK_EQ(p3_ike_parse_init(m, 20, &v), 0);
}

NTEST_MAIN(NTEST(test_ring_keeps_order_and_refuses_when_full),
           NTEST(test_ring_joins_head_and_body_and_refuses_what_does_not_fit),
           NTEST(test_ring_wraps_many_times),
           NTEST(test_ring_between_two_threads_loses_and_reorders_nothing),
           NTEST(test_one_source_gets_its_burst_then_its_rate),
           NTEST(test_global_bucket_caps_a_spoofed_flood),
           NTEST(test_a_busy_source_cannot_refill_by_losing_its_slot),
           NTEST(test_ipv6_sources_are_told_apart),
           NTEST(test_init_request_is_parsed_and_answered_with_its_cookie),
           NTEST(test_other_ike_messages_are_not_parsed_as_init_requests))
