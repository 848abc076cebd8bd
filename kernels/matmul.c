/* Matrix multiply, float32 and float64: C = alpha * op(A) * op(B) + beta * C.
 *
 * Row-major storage with leading dimensions (row strides) and op in
 * {identity, transpose}, so the backward products dA = dC B^T and
 * dB = A^T dC, and strided NumPy views, need no copies.
 *
 * Algorithm and versions, each kept and callable (lesson material):
 *   1. naive     triple loop, one dot product per C element. B's columns are
 *                read with a stride of a whole row: every access misses.
 *   2. blocked   loop order i-k-j over cache-sized blocks of C, A and B:
 *                the inner loop streams a row of B and a row of C, so it
 *                vectorises, and the blocks stay in cache.
 *   3. packed    the BLIS/GotoBLAS structure. For each (KC x NC) panel of B
 *                and (MC x KC) block of A, copy them into contiguous, 64-byte
 *                aligned buffers in the order the micro-kernel reads them
 *                (slivers of NR columns of B, of MR rows of A, zero-padded).
 *                The micro-kernel keeps an MR x NR tile of C in registers and
 *                does a rank-1 update per k: MR*NR FMAs for MR+NR loads.
 *                This version uses the portable C micro-kernel, written so
 *                the compiler vectorises it.
 *   4. simd      the same with a hand-vectorised micro-kernel chosen at
 *                build time: AVX-512 (6x32 float32, 6x16 float64, written with
 *                vector extensions), else AVX2/FMA intrinsics (6x16, 6x8),
 *                else the portable one again. 12 accumulator registers hide
 *                the FMA latency.
 *   5. parallel  version 4 with OpenMP threads: all threads pack the shared
 *                B panel, then take (row block x column chunk) work items
 *                dynamically, so a thread paused by the OS holds nobody up.
 *                Thread count from the caller (Python reads
 *                MINIGRAD_NUM_THREADS, default all cores); problems under
 *                64^3 multiply-adds run on one thread.
 *
 * Loop nest of versions 3-5 (jc, pc, ic, jr, ir):
 *   for jc in n step NC:            B panel (KC x NC) lives in L3
 *     for pc in k step KC:          pack B panel; beta applies at pc == 0 only
 *       for ic in m step MC:        pack A block (MC x KC), lives in L2
 *         for jr in NC step NR:     B sliver (KC x NR) lives in L1
 *           for ir in MC step MR:   micro-kernel: C tile (MR x NR) in registers
 *
 * The type-generic code is in matmul_body.inc, included once per type below.
 *
 * Build:     python build.py        (or pip install -e .; flags: MINIGRAD_CFLAGS)
 * Test:      python -m pytest tests/test_kernels_matmul.py tests/test_kernels_fuzz.py -q
 *            python -m pytest tests/test_kernels_asan.py -q   (AddressSanitizer + UBSan)
 * Benchmark: env -u OPENBLAS_CORETYPE python benchmarks/bench_matmul.py
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif
/* The fast micro-kernel, chosen by what the compiler targets (-march=native):
   AVX-512: 6 x 32 (float32) / 6 x 16 (float64) tiles in 512-bit registers,
   written with GCC/Clang vector extensions in matmul_body.inc (defining
   MINIGRAD_WIDE_KERNEL forces it on any CPU, where the compiler splits the
   wide vectors: that is how it is tested on machines without AVX-512);
   AVX2 + FMA: the 6 x 16 / 6 x 8 intrinsics kernels below; otherwise the
   portable kernel. */
#if defined(__AVX512F__) || defined(MINIGRAD_WIDE_KERNEL)
#define HAVE_WIDE_KERNEL 1
#elif defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define HAVE_AVX2_KERNEL 1
#endif
#include "matmul.h"

/* 64 bytes: one cache line and one AVX-512 register, so packed slivers never
   straddle cache lines. */
#define ALIGNMENT 64

static void *aligned_buffer(size_t bytes)
{
    size_t rounded = (bytes + ALIGNMENT - 1) / ALIGNMENT * ALIGNMENT;
    return aligned_alloc(ALIGNMENT, rounded ? rounded : ALIGNMENT);
}

static int64_t min_i64(int64_t x, int64_t y) { return x < y ? x : y; }
static int64_t ceil_div(int64_t x, int64_t y) { return (x + y - 1) / y; }
static int64_t round_up(int64_t x, int64_t y) { return ceil_div(x, y) * y; }

static int resolve_threads(int num_threads)
{
#ifdef _OPENMP
    return num_threads > 0 ? num_threads : omp_get_max_threads();
#else
    (void)num_threads;
    return 1;
#endif
}

const char *matmul_simd_kernel(void)
{
#if defined(HAVE_WIDE_KERNEL) && defined(__AVX512F__)
    return "avx512";
#elif defined(HAVE_WIDE_KERNEL)
    return "wide-emulated";
#elif defined(HAVE_AVX2_KERNEL)
    return "avx2-fma";
#else
    return "portable";
#endif
}

int matmul_has_openmp(void)
{
#ifdef _OPENMP
    return 1;
#else
    return 0;
#endif
}

#ifdef HAVE_AVX2_KERNEL
/* Defined at the end: they use the type-generic store_tile_* for partial tiles. */
static void micro_kernel_avx2_f32(int64_t kc, const float *restrict a, const float *restrict b,
                                  float *restrict c, int64_t ldc, float alpha, float beta,
                                  int64_t mr, int64_t nr);
static void micro_kernel_avx2_f64(int64_t kc, const double *restrict a, const double *restrict b,
                                  double *restrict c, int64_t ldc, double alpha, double beta,
                                  int64_t mr, int64_t nr);
#endif

/* Block sizes: a B sliver (KC x NR, 24 KiB; 32 KiB for the wide kernel) fits
   L1 (32 KiB), an A block (MC x KC, 216 KiB) under half of L2 (512 KiB), a B
   panel (KC x NC) L3. A larger KC also means fewer B panels, so fewer thread
   barriers in the parallel version. */
#define real float
#define SUFFIX f32
#define MR 6
#ifdef HAVE_WIDE_KERNEL
#define NR 32
#define KC 256
#else
#define NR 16
#define KC 384
#endif
#define MC 144
#define NC 4096
#ifdef HAVE_AVX2_KERNEL
#define SIMD_MICRO_KERNEL micro_kernel_avx2_f32
#endif
#include "matmul_body.inc"

#define real double
#define SUFFIX f64
#define MR 6
#ifdef HAVE_WIDE_KERNEL
#define NR 16
#define KC 256
#else
#define NR 8
#define KC 384
#endif
#define MC 72
#define NC 2048
#ifdef HAVE_AVX2_KERNEL
#define SIMD_MICRO_KERNEL micro_kernel_avx2_f64
#endif
#include "matmul_body.inc"

#ifdef HAVE_AVX2_KERNEL
/* One row of a full tile: c[0:2W] = alpha * (lo, hi) + beta * c[0:2W] (C need not be aligned). */
static inline void update_row_avx2_f32(float *c, __m256 lo, __m256 hi, __m256 alpha, __m256 beta,
                                       int read_c)
{
    lo = _mm256_mul_ps(alpha, lo);
    hi = _mm256_mul_ps(alpha, hi);
    if (read_c) {
        lo = _mm256_fmadd_ps(beta, _mm256_loadu_ps(c), lo);
        hi = _mm256_fmadd_ps(beta, _mm256_loadu_ps(c + 8), hi);
    }
    _mm256_storeu_ps(c, lo);
    _mm256_storeu_ps(c + 8, hi);
}

static inline void update_row_avx2_f64(double *c, __m256d lo, __m256d hi, __m256d alpha,
                                       __m256d beta, int read_c)
{
    lo = _mm256_mul_pd(alpha, lo);
    hi = _mm256_mul_pd(alpha, hi);
    if (read_c) {
        lo = _mm256_fmadd_pd(beta, _mm256_loadu_pd(c), lo);
        hi = _mm256_fmadd_pd(beta, _mm256_loadu_pd(c + 4), hi);
    }
    _mm256_storeu_pd(c, lo);
    _mm256_storeu_pd(c + 4, hi);
}

/* C (6 x 16) = alpha * sum over p of a[:, p] b[p, :] + beta * C: a is a packed
   6-row sliver (a[p*6 + i]), b a packed 16-column sliver (b[p*16 + j], 64-byte
   aligned). The 6 x 16 tile lives in 12 registers of 8 floats; each p costs 2
   loads of b, 6 broadcasts of a and 12 FMAs. Partial tiles (mr < 6 or
   nr < 16, at the edges of C) go through an aligned buffer. */
static void micro_kernel_avx2_f32(int64_t kc, const float *restrict a, const float *restrict b,
                                  float *restrict c, int64_t ldc, float alpha, float beta,
                                  int64_t mr, int64_t nr)
{
    /* C's rows are a whole row of C apart: fetch them while the FMAs run. */
    for (int64_t i = 0; i < mr; i++)
        _mm_prefetch((const char *)(c + i * ldc), _MM_HINT_T0);
    __m256 c00 = _mm256_setzero_ps(), c01 = _mm256_setzero_ps();
    __m256 c10 = _mm256_setzero_ps(), c11 = _mm256_setzero_ps();
    __m256 c20 = _mm256_setzero_ps(), c21 = _mm256_setzero_ps();
    __m256 c30 = _mm256_setzero_ps(), c31 = _mm256_setzero_ps();
    __m256 c40 = _mm256_setzero_ps(), c41 = _mm256_setzero_ps();
    __m256 c50 = _mm256_setzero_ps(), c51 = _mm256_setzero_ps();
    for (int64_t p = 0; p < kc; p++) {
        __m256 b0 = _mm256_load_ps(b), b1 = _mm256_load_ps(b + 8);
        __m256 ai;
        ai = _mm256_broadcast_ss(a + 0);
        c00 = _mm256_fmadd_ps(ai, b0, c00); c01 = _mm256_fmadd_ps(ai, b1, c01);
        ai = _mm256_broadcast_ss(a + 1);
        c10 = _mm256_fmadd_ps(ai, b0, c10); c11 = _mm256_fmadd_ps(ai, b1, c11);
        ai = _mm256_broadcast_ss(a + 2);
        c20 = _mm256_fmadd_ps(ai, b0, c20); c21 = _mm256_fmadd_ps(ai, b1, c21);
        ai = _mm256_broadcast_ss(a + 3);
        c30 = _mm256_fmadd_ps(ai, b0, c30); c31 = _mm256_fmadd_ps(ai, b1, c31);
        ai = _mm256_broadcast_ss(a + 4);
        c40 = _mm256_fmadd_ps(ai, b0, c40); c41 = _mm256_fmadd_ps(ai, b1, c41);
        ai = _mm256_broadcast_ss(a + 5);
        c50 = _mm256_fmadd_ps(ai, b0, c50); c51 = _mm256_fmadd_ps(ai, b1, c51);
        a += 6;
        b += 16;
    }
    if (mr == 6 && nr == 16) {
        __m256 va = _mm256_set1_ps(alpha), vb = _mm256_set1_ps(beta);
        int read_c = beta != 0;
        update_row_avx2_f32(c + 0 * ldc, c00, c01, va, vb, read_c);
        update_row_avx2_f32(c + 1 * ldc, c10, c11, va, vb, read_c);
        update_row_avx2_f32(c + 2 * ldc, c20, c21, va, vb, read_c);
        update_row_avx2_f32(c + 3 * ldc, c30, c31, va, vb, read_c);
        update_row_avx2_f32(c + 4 * ldc, c40, c41, va, vb, read_c);
        update_row_avx2_f32(c + 5 * ldc, c50, c51, va, vb, read_c);
        return;
    }
    _Alignas(ALIGNMENT) float ab[6 * 16];
    _mm256_store_ps(ab + 0, c00);  _mm256_store_ps(ab + 8, c01);
    _mm256_store_ps(ab + 16, c10); _mm256_store_ps(ab + 24, c11);
    _mm256_store_ps(ab + 32, c20); _mm256_store_ps(ab + 40, c21);
    _mm256_store_ps(ab + 48, c30); _mm256_store_ps(ab + 56, c31);
    _mm256_store_ps(ab + 64, c40); _mm256_store_ps(ab + 72, c41);
    _mm256_store_ps(ab + 80, c50); _mm256_store_ps(ab + 88, c51);
    store_tile_f32(mr, nr, ab, alpha, beta, c, ldc);
}

/* C (6 x 8) = alpha * sum over p of a[:, p] b[p, :] + beta * C, the float64
   twin of the above (registers of 4 doubles). */
static void micro_kernel_avx2_f64(int64_t kc, const double *restrict a, const double *restrict b,
                                  double *restrict c, int64_t ldc, double alpha, double beta,
                                  int64_t mr, int64_t nr)
{
    for (int64_t i = 0; i < mr; i++)
        _mm_prefetch((const char *)(c + i * ldc), _MM_HINT_T0);
    __m256d c00 = _mm256_setzero_pd(), c01 = _mm256_setzero_pd();
    __m256d c10 = _mm256_setzero_pd(), c11 = _mm256_setzero_pd();
    __m256d c20 = _mm256_setzero_pd(), c21 = _mm256_setzero_pd();
    __m256d c30 = _mm256_setzero_pd(), c31 = _mm256_setzero_pd();
    __m256d c40 = _mm256_setzero_pd(), c41 = _mm256_setzero_pd();
    __m256d c50 = _mm256_setzero_pd(), c51 = _mm256_setzero_pd();
    for (int64_t p = 0; p < kc; p++) {
        __m256d b0 = _mm256_load_pd(b), b1 = _mm256_load_pd(b + 4);
        __m256d ai;
        ai = _mm256_broadcast_sd(a + 0);
        c00 = _mm256_fmadd_pd(ai, b0, c00); c01 = _mm256_fmadd_pd(ai, b1, c01);
        ai = _mm256_broadcast_sd(a + 1);
        c10 = _mm256_fmadd_pd(ai, b0, c10); c11 = _mm256_fmadd_pd(ai, b1, c11);
        ai = _mm256_broadcast_sd(a + 2);
        c20 = _mm256_fmadd_pd(ai, b0, c20); c21 = _mm256_fmadd_pd(ai, b1, c21);
        ai = _mm256_broadcast_sd(a + 3);
        c30 = _mm256_fmadd_pd(ai, b0, c30); c31 = _mm256_fmadd_pd(ai, b1, c31);
        ai = _mm256_broadcast_sd(a + 4);
        c40 = _mm256_fmadd_pd(ai, b0, c40); c41 = _mm256_fmadd_pd(ai, b1, c41);
        ai = _mm256_broadcast_sd(a + 5);
        c50 = _mm256_fmadd_pd(ai, b0, c50); c51 = _mm256_fmadd_pd(ai, b1, c51);
        a += 6;
        b += 8;
    }
    if (mr == 6 && nr == 8) {
        __m256d va = _mm256_set1_pd(alpha), vb = _mm256_set1_pd(beta);
        int read_c = beta != 0;
        update_row_avx2_f64(c + 0 * ldc, c00, c01, va, vb, read_c);
        update_row_avx2_f64(c + 1 * ldc, c10, c11, va, vb, read_c);
        update_row_avx2_f64(c + 2 * ldc, c20, c21, va, vb, read_c);
        update_row_avx2_f64(c + 3 * ldc, c30, c31, va, vb, read_c);
        update_row_avx2_f64(c + 4 * ldc, c40, c41, va, vb, read_c);
        update_row_avx2_f64(c + 5 * ldc, c50, c51, va, vb, read_c);
        return;
    }
    _Alignas(ALIGNMENT) double ab[6 * 8];
    _mm256_store_pd(ab + 0, c00);  _mm256_store_pd(ab + 4, c01);
    _mm256_store_pd(ab + 8, c10);  _mm256_store_pd(ab + 12, c11);
    _mm256_store_pd(ab + 16, c20); _mm256_store_pd(ab + 20, c21);
    _mm256_store_pd(ab + 24, c30); _mm256_store_pd(ab + 28, c31);
    _mm256_store_pd(ab + 32, c40); _mm256_store_pd(ab + 36, c41);
    _mm256_store_pd(ab + 40, c50); _mm256_store_pd(ab + 44, c51);
    store_tile_f64(mr, nr, ab, alpha, beta, c, ldc);
}
#endif
