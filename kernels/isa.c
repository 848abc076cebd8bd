/* Which instruction set the kernels run on, chosen at run time.
 *
 * kernels/instantiate.h compiles every kernel three times on x86-64 (the
 * baseline, AVX2 + FMA, AVX-512), so one build (a wheel) runs well on any
 * x86-64 CPU; `-march=native` would instead bake in the build machine's
 * instructions and crash (SIGILL) on an older CPU. At load time the best copy
 * the CPU supports is chosen; Python's c_backend then applies MINIGRAD_ISA
 * (portable | avx2 | avx512) when it is set, through kernels_set_isa, so the
 * tests can run every copy on one machine.
 *
 * Build: python build.py.  Test: python -m pytest tests/test_kernels_isa.py -q
 */
#include <string.h>

#include "common.h"
#include "isa.h"

static const char *const ISA_NAMES[] = {"portable", "avx2", "avx512"};

/* Set once before any kernel runs (constructor), then only by kernels_set_isa. */
static int current_isa = ISA_PORTABLE;

/* Whether this CPU (and OS: the compiler's check includes the saved register
 * state) runs the copy compiled for `isa`. */
static int cpu_supports(int isa)
{
#if MINIGRAD_X86_ISAS
    __builtin_cpu_init();
    if (isa == ISA_AVX512)
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
               __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl") &&
               __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    if (isa == ISA_AVX2)
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#endif
    return isa == ISA_PORTABLE;
}

#if defined(__GNUC__) || defined(__clang__)
__attribute__((constructor))
#endif
static void choose_best_isa(void)
{
    for (int isa = ISA_AVX512; isa > ISA_PORTABLE; isa--) {
        if (cpu_supports(isa)) {
            current_isa = isa;
            return;
        }
    }
}

int active_isa(void) { return current_isa; }

const char *kernels_isa(void) { return ISA_NAMES[current_isa]; }

static int isa_by_name(const char *name)
{
    for (int isa = ISA_PORTABLE; isa <= ISA_AVX512; isa++)
        if (strcmp(name, ISA_NAMES[isa]) == 0)
            return isa;
    return -1;
}

int kernels_isa_supported(const char *name)
{
    int isa = isa_by_name(name);
    return isa >= 0 && cpu_supports(isa);
}

int kernels_set_isa(const char *name)
{
    if (!kernels_isa_supported(name))
        return -1;
    current_isa = isa_by_name(name);
    return 0;
}
