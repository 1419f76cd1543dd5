/* The ABI stamp and CPU report are stable and self-consistent. */
#include "ntest.h"
#include "p3dp.h"

#include <cpuid.h>

static void test_abi_version_is_nonzero(void)
{
    CHECK(p3dp_abi_version() >= 1);
}

static void test_cpu_report_matches_cpuid(void)
{
    unsigned int a = 0, b = 0, c = 0, d = 0;
    uint32_t f = p3dp_cpu_features();
    CHECK(__get_cpuid(1, &a, &b, &c, &d));
    (void)a; (void)b; (void)d;
    CHECK_EQ(!!(f & P3DP_CPU_AESNI), !!(c & bit_AES));
    /* VAES is only useful with AES-NI: never reported alone. */
    CHECK(!(f & P3DP_CPU_VAES) || (f & P3DP_CPU_AESNI));
}

NTEST_MAIN(NTEST(test_abi_version_is_nonzero), NTEST(test_cpu_report_matches_cpuid))
