/* ntest.h — the smallest test runner: CHECK records a failure and goes on,
 * NTEST_MAIN runs the listed tests and exits non-zero if any check failed. */
#ifndef NTEST_H
#define NTEST_H

#include <stdio.h>
#include <stdlib.h>

static int ntest_failures;
static int ntest_checks;

#define CHECK(cond)                                                              \
    do {                                                                         \
        ntest_checks++;                                                          \
        if (!(cond)) {                                                           \
            ntest_failures++;                                                    \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
        }                                                                        \
    } while (0)

#define CHECK_EQ(a, b)                                                           \
    do {                                                                         \
        long long ntest_a = (long long)(a), ntest_b = (long long)(b);            \
        ntest_checks++;                                                          \
        if (ntest_a != ntest_b) {                                                \
            ntest_failures++;                                                    \
            fprintf(stderr, "%s:%d: CHECK_EQ failed: %s == %lld, %s == %lld\n",   \
                    __FILE__, __LINE__, #a, ntest_a, #b, ntest_b);               \
        }                                                                        \
    } while (0)

typedef void (*ntest_fn)(void);
struct ntest_case { const char *name; ntest_fn fn; };

#define NTEST(name) { #name, name }

#define NTEST_MAIN(...)                                                          \
    int main(void)                                                               \
    {                                                                            \
        static const struct ntest_case cases[] = { __VA_ARGS__ };                \
        size_t n = sizeof(cases) / sizeof(cases[0]);                             \
        for (size_t i = 0; i < n; i++) {                                         \
            int before = ntest_failures;                                         \
            cases[i].fn();                                                       \
            printf("%s %s\n", ntest_failures == before ? "ok  " : "FAIL", cases[i].name); \
        }                                                                        \
        printf("%s: %zu tests, %d checks, %d failed\n", __FILE__, n, ntest_checks, ntest_failures); \
        return ntest_failures ? 1 : 0;                                           \
    }

#endif
