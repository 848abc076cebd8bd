/* kernels/common.h: what every C kernel file shares (llm.c's common.h idea).
 *
 *   - small integer helpers (min, max, ceil_div, round_up) and 64-byte
 *     aligned buffers;
 *   - thread_count(): how many OpenMP threads a kernel may wake;
 *   - exp_f32(): an exp that vectorises (libm's expf does not);
 *   - the one templating scheme: every kernel file has a type-generic
 *     TEMPLATE section that kernels/instantiate.h compiles once per element
 *     type (float, double) and per instruction set (portable, AVX2, AVX-512);
 *     FN(name) gives each copy its own name, and the public function picks
 *     the copy for the instruction set chosen at run time (DISPATCH below).
 *
 * Not a kernel family of its own: build.py compiles only NAME.c files that
 * have a NAME.h, and feeds those .h files (plain declarations) to ffi.cdef;
 * this file is included by the .c files only.
 */
#ifndef MINIGRAD_COMMON_H
#define MINIGRAD_COMMON_H

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "isa.h"
#include "threadpool.h"

/* ------------------------------------------------------------ helpers -- */

/* 64 bytes: one cache line and one AVX-512 register. Buffers aligned to it
 * never split a vector load across two lines (that halves the speed). */
#define ALIGNMENT 64

static inline int64_t min_i64(int64_t x, int64_t y) { return x < y ? x : y; }
static inline int64_t max_i64(int64_t x, int64_t y) { return x > y ? x : y; }
static inline int64_t ceil_div(int64_t x, int64_t y) { return (x + y - 1) / y; }
static inline int64_t round_up(int64_t x, int64_t y) { return ceil_div(x, y) * y; }

/* An ALIGNMENT-aligned buffer of at least `bytes` (free() it), or NULL. */
static inline void *aligned_buffer(size_t bytes)
{
    size_t rounded = (bytes + ALIGNMENT - 1) / ALIGNMENT * ALIGNMENT;
    return aligned_alloc(ALIGNMENT, rounded ? rounded : ALIGNMENT);
}

/* ------------------------------------------------------------ threads -- */

/* The work of the memory-bound kernels (LayerNorm, cross-entropy, AdamW,
 * GELU) is counted in elements of one pass over memory, about 1 ms per
 * 2^20 on one core. A second thread only pays for a job of 2 ms or more:
 * on a busy machine the OS may take a few ms to run a thread it wakes, and
 * the caller waits for it. */
#define MIN_ELEMENTS_PER_THREAD (double)(1 << 20)

/* How many threads a parallel kernel wakes: `requested` (<= 0: one per
 * core), never more than the cores this process may run on, never more than
 * there are work items, and only one per `min_flops` of work: waking a
 * thread costs microseconds on an idle machine and can cost milliseconds on
 * a busy one, more than a small product takes. The Python side starts
 * OpenMP with OMP_WAIT_POLICY=passive, so idle threads sleep instead of
 * spinning on a core another process needs; matmul.c runs on threadpool.c,
 * whose idle threads sleep too. */
static inline int thread_count(int requested, int64_t items, double flops, double min_flops)
{
    int64_t cores = threadpool_cores();
    int64_t threads = requested > 0 ? min_i64(requested, cores) : cores;
    threads = min_i64(threads, items);
    threads = min_i64(threads, (int64_t)(flops / min_flops));
    return threads > 1 ? (int)threads : 1;
}

/* ---------------------------------------------------------------- exp -- */

/* e^x in float32, vectorisable, for x <= 88 (every caller passes x <= 0 or
 * close to it: softmax shifts, exp(-x^2/2), the erfc tail).
 * x = n ln2 + r with |r| <= ln2/2; e^r by its Taylor series to r^7 (relative
 * error < 6e-9), times 2^n written straight into the exponent bits; ln2 is
 * split in two so that n ln2 loses no bits. x below -88 (and -inf, a masked
 * score) is first raised to -88, where 2^n comes out exactly 0; NaN stays
 * NaN. Bit operations instead of a comparison or rintf: under GCC's default
 * -ftrapping-math either one keeps a loop scalar, 8x slower. */
static inline float exp_f32(float x)
{
    const uint32_t minus_88 = 0xC2B00000u, minus_inf = 0xFF800000u;
    const float round_magic = 12582912.0f; /* 1.5 * 2^23: adding it rounds to an integer */
    uint32_t xb, below, tbits, scale_bits;
    float t, n, r, p, scale;
    memcpy(&xb, &x, sizeof xb);
    /* all ones when -inf <= x < -88: negative floats order like their bits */
    below = -(uint32_t)(xb - (minus_88 + 1) < minus_inf - minus_88);
    xb = (xb & ~below) | (minus_88 & below);
    memcpy(&x, &xb, sizeof x);
    t = x * 1.44269504f + round_magic;
    n = t - round_magic;
    r = (x - n * 0.693359375f) - n * -2.12194440e-4f;
    p = 1.0f / 5040;
    p = p * r + 1.0f / 720;
    p = p * r + 1.0f / 120;
    p = p * r + 1.0f / 24;
    p = p * r + 1.0f / 6;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    memcpy(&tbits, &t, sizeof tbits);
    scale_bits = (tbits - 0x4B400000u + 127u) << 23; /* the low bits of t hold n */
    memcpy(&scale, &scale_bits, sizeof scale);
    return p * scale;
}

/* ----------------------------------------------------- instruction sets -- */

/* With GCC or Clang on x86-64, kernels/instantiate.h compiles every template
 * three times: for the compiler's baseline (SSE2), for AVX2 + FMA and for
 * AVX-512, whatever CPU the build runs on; kernels/isa.c picks the copy this
 * CPU runs best at load time (or the one MINIGRAD_ISA names). Elsewhere there
 * is one copy, for the baseline. */
#if (defined(__x86_64__) || defined(_M_X64)) && (defined(__GNUC__) || defined(__clang__))
#define MINIGRAD_X86_ISAS 1
#else
#define MINIGRAD_X86_ISAS 0
#endif

enum { ISA_PORTABLE = 0, ISA_AVX2 = 1, ISA_AVX512 = 2 };

/* The instruction set the kernels run on now (kernels/isa.c). */
int active_isa(void);

/* -------------------------------------------------------- templating -- */

/* Inside a TEMPLATE section (see kernels/instantiate.h) `real` is float or
 * double, SUFFIX is f32 or f64, ISA_NAME is portable, avx2 or avx512, and
 * VECTOR_BYTES the width of that instruction set's vector registers.
 * FN(matmul_simd) names this copy: matmul_simd_f32_avx2, ... */
#define CONCAT3_(a, b, c) a##_##b##_##c
#define CONCAT3(a, b, c) CONCAT3_(a, b, c)
#define FN(name) CONCAT3(name, SUFFIX, ISA_NAME)

/* DISPATCH(name_f32, (args)): call the copy of name_f32 compiled for the
 * instruction set chosen at run time (kernels/isa.c). */
#if MINIGRAD_X86_ISAS
#define DISPATCH(name, args)                                                    \
    (active_isa() == ISA_AVX512 ? name##_avx512 args                            \
     : active_isa() == ISA_AVX2 ? name##_avx2 args : name##_portable args)
#else
#define DISPATCH(name, args) (name##_portable args)
#endif

#endif /* MINIGRAD_COMMON_H */
