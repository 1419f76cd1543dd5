/* cpu.c — ABI stamp and the CPU features the crypto engines can use. */
#include "p3dp.h"

#include <cpuid.h>

#define P3DP_ABI_VERSION 10u

uint32_t p3dp_abi_version(void)
{
    return P3DP_ABI_VERSION;
}

uint32_t p3dp_cpu_features(void)
{
    unsigned int eax = 0, ebx = 0, ecx = 0, edx = 0;
    uint32_t features = 0;

    if (__get_cpuid(1, &eax, &ebx, &ecx, &edx)) {
        if (ecx & bit_AES)
            features |= P3DP_CPU_AESNI;
        if (ecx & bit_PCLMUL)
            features |= P3DP_CPU_PCLMUL;
        if (ecx & bit_RDRND)
            features |= P3DP_CPU_RDRAND;
    }
    if (__get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx)) {
        if (ebx & bit_AVX2)
            features |= P3DP_CPU_AVX2;
        if (ebx & bit_AVX512F)
            features |= P3DP_CPU_AVX512F;
        if (ebx & bit_RDSEED)
            features |= P3DP_CPU_RDSEED;
        if (ecx & bit_VAES)
            features |= P3DP_CPU_VAES;
        if (ecx & bit_VPCLMULQDQ)
            features |= P3DP_CPU_VPCLMULQDQ;
    }
    return features;
}
