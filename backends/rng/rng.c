/* rng.c — the CPU's hardware random number instructions, RDSEED and RDRAND.
 *
 * RDSEED returns conditioned entropy-source output (Intel SDM vol. 1
 * §7.3.17.2, NIST SP 800-90B/C); RDRAND returns output of the CTR_DRBG that
 * source reseeds (SP 800-90A). Either may report "no data" by clearing CF;
 * the SDM asks software to retry, which we do a bounded number of times per
 * 64-bit word. The statistical health tests run in Python on the bytes
 * (backends/rng/__init__.py), where a test can feed them a broken source.
 */
#include "p3dp.h"

#include <string.h>

#if defined(__x86_64__)
/* Inline assembly rather than the _rdseed64_step intrinsic, so the file
 * builds without -mrdseed and the instruction only runs after cpuid said
 * the CPU has it. */
static int rdseed64(uint64_t *value)
{
    unsigned char ok;
    __asm__ volatile("rdseed %0\n\tsetc %1" : "=r"(*value), "=qm"(ok) : : "cc");
    return ok;
}

static int rdrand64(uint64_t *value)
{
    unsigned char ok;
    __asm__ volatile("rdrand %0\n\tsetc %1" : "=r"(*value), "=qm"(ok) : : "cc");
    return ok;
}

static void cpu_relax(void)
{
    __asm__ volatile("pause");
}
#endif

int p3dp_rng_fill(int source, uint8_t *out, size_t len, uint32_t max_retries, uint64_t *retries_used)
{
    uint64_t retries = 0;
    if (retries_used)
        *retries_used = 0;
    if (out == NULL && len > 0)
        return -P3DP_RNG_E_HEALTH;
#if defined(__x86_64__)
    uint32_t features = p3dp_cpu_features();
    int (*step)(uint64_t *);
    if (source == P3DP_RNG_RDSEED && (features & P3DP_CPU_RDSEED))
        step = rdseed64;
    else if (source == P3DP_RNG_RDRAND && (features & P3DP_CPU_RDRAND))
        step = rdrand64;
    else
        return -P3DP_RNG_E_UNAVAILABLE;
    if (len > (size_t)INT32_MAX)
        return -P3DP_RNG_E_HEALTH;

    size_t done = 0;
    while (done < len) {
        uint64_t word = 0;
        uint32_t attempt = 0;
        while (!step(&word)) {
            /* CF = 0: no data this time (RDSEED underflows when many
             * callers drain the entropy source); bounded, then give up. */
            retries++;
            if (++attempt > max_retries) {
                if (retries_used)
                    *retries_used = retries;
                memset(out, 0, len); /* nothing half-random reaches a caller */
                return -P3DP_RNG_E_HEALTH;
            }
            cpu_relax();
        }
        size_t take = len - done < sizeof word ? len - done : sizeof word;
        memcpy(out + done, &word, take);
        done += take;
    }
    if (retries_used)
        *retries_used = retries;
    return (int)len;
#else
    (void)source;
    (void)max_retries;
    (void)retries;
    return -P3DP_RNG_E_UNAVAILABLE;
#endif
}
