/* qmatmul.c: int8 × int8 → int32 matrix products, the inner loop of dynamic int8 quantization.
 *
 *   C[i][j] = Σ_k A[i][k] · B[j][k]        A (m, k) int8 activations, row-major
 *                                           B (n, k) int8 weights, one row per output channel
 *                                           C (m, n) int32, exact (no rounding, no saturation)
 *
 * B is stored like a Linear layer's weight (out, in), so both operands are read along k, contiguous.
 * minigrad/quantization.py scales the int32 result back to float: y = C · s_a[i] · s_w[j].
 *
 * Versions (the `version` argument; test both agree: tests/test_quantization.py):
 *   0. portable   three plain loops in int32; any C compiler, any CPU.
 *   1. vnni       AVX-512 VNNI: VPDPBUSD multiplies 64 unsigned bytes by 64 signed bytes and adds each
 *                 group of four products into one of 16 int32 lanes, in one instruction. It wants one
 *                 operand unsigned, so A is shifted by +128 (a XOR 0x80 turns int8 a into uint8 a + 128)
 *                 and the shift is taken back with the weights' row sums, computed once per layer:
 *                     Σ_k (a_k + 128) b_k = Σ_k a_k b_k + 128 · Σ_k b_k.
 *                 A 4 × 4 block of C is 16 accumulators; a k tail shorter than 64 bytes is read with a
 *                 masked load (masked lanes of B are zero, so they add nothing). Each product is at most
 *                 255 · 128 in size, so the int32 sums are exact for k < 2^16.
 *   qmatmul_has_vnni() says whether this CPU runs version 1, detected at run time (the file is compiled
 *   for the build machine's baseline; only the VNNI function is compiled for AVX-512 VNNI, and only
 *   called when the CPU reports it).
 *
 * Both versions split the columns over OpenMP threads (num_threads 0: all cores).
 * Build: python build.py.  Test: python -m pytest tests/test_quantization.py -q
 * Benchmark: python benchmarks/bench_quantization.py
 */
#include <stdint.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "qmatmul.h"

#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
#define HAVE_VNNI_PATH 1
#include <immintrin.h>
#endif

#define QMATMUL_PORTABLE 0
#define QMATMUL_VNNI 1

static int resolve_threads(int num_threads)
{
#ifdef _OPENMP
    return num_threads > 0 ? num_threads : omp_get_max_threads();
#else
    (void)num_threads;
    return 1;
#endif
}

int qmatmul_has_vnni(void)
{
#ifdef HAVE_VNNI_PATH
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw")
        && __builtin_cpu_supports("avx512vnni");
#else
    return 0;
#endif
}

/* Version 0: one int32 dot product per output element. */
static void qmatmul_portable(const int8_t *a, const int8_t *b, int32_t *c, int64_t m, int64_t n, int64_t k,
                             int threads)
{
#pragma omp parallel for num_threads(threads) schedule(static) if (threads > 1 && m * n * k > (1 << 16))
    for (int64_t j = 0; j < n; j++) {
        const int8_t *bj = b + j * k;
        for (int64_t i = 0; i < m; i++) {
            const int8_t *ai = a + i * k;
            int32_t s = 0;
            for (int64_t p = 0; p < k; p++)
                s += (int32_t)ai[p] * (int32_t)bj[p];
            c[i * n + j] = s;
        }
    }
}

#ifdef HAVE_VNNI_PATH
#define MR 4 /* rows of A per block */
#define NR 4 /* rows of B (columns of C) per block */

/* An up-to-MR × NR block of C: rows i0 … i0+mr−1 of A against rows j0 … j0+nr−1 of B.
 * Missing rows (mr < MR or nr < NR at the edges) are read as row 0 of the block and their results dropped,
 * so the inner loop has no branches. */
__attribute__((target("avx512f,avx512bw,avx512vnni")))
static void vnni_block(const int8_t *a, const int8_t *b, const int32_t *shift, int32_t *c,
                       int64_t n, int64_t k, int64_t i0, int64_t j0, int mr, int nr)
{
    const __m512i flip = _mm512_set1_epi8((char)0x80);  /* int8 a → uint8 a + 128 */
    __m512i acc[MR][NR];
    const int8_t *ar[MR], *br[NR];
    for (int r = 0; r < MR; r++)
        ar[r] = a + (i0 + (r < mr ? r : 0)) * k;
    for (int s = 0; s < NR; s++)
        br[s] = b + (j0 + (s < nr ? s : 0)) * k;
    for (int r = 0; r < MR; r++)
        for (int s = 0; s < NR; s++)
            acc[r][s] = _mm512_setzero_si512();
    int64_t p = 0;
    for (; p + 64 <= k; p += 64) {
        __m512i bv[NR];
        for (int s = 0; s < NR; s++)
            bv[s] = _mm512_loadu_si512((const void *)(br[s] + p));
        for (int r = 0; r < MR; r++) {
            __m512i av = _mm512_xor_si512(_mm512_loadu_si512((const void *)(ar[r] + p)), flip);
            for (int s = 0; s < NR; s++)
                acc[r][s] = _mm512_dpbusd_epi32(acc[r][s], av, bv[s]);
        }
    }
    if (p < k) {
        __mmask64 mask = (1ULL << (k - p)) - 1; /* k − p < 64 */
        __m512i bv[NR];
        for (int s = 0; s < NR; s++)
            bv[s] = _mm512_maskz_loadu_epi8(mask, br[s] + p);
        for (int r = 0; r < MR; r++) {
            __m512i av = _mm512_xor_si512(_mm512_maskz_loadu_epi8(mask, ar[r] + p), flip);
            for (int s = 0; s < NR; s++)
                acc[r][s] = _mm512_dpbusd_epi32(acc[r][s], av, bv[s]);
        }
    }
    for (int r = 0; r < mr; r++)
        for (int s = 0; s < nr; s++)
            c[(i0 + r) * n + j0 + s] = _mm512_reduce_add_epi32(acc[r][s]) - shift[s];
}

/* shift[s] = 128 · Σ_k B[j0 + s][k] for the nr rows of a block, by the same instruction on 128s. */
__attribute__((target("avx512f,avx512bw,avx512vnni")))
static void vnni_shift(const int8_t *b, int32_t *shift, int64_t k, int64_t j0, int nr)
{
    const __m512i all128 = _mm512_set1_epi8((char)0x80);  /* as uint8: 128 */
    for (int s = 0; s < nr; s++) {
        const int8_t *row = b + (j0 + s) * k;
        __m512i acc = _mm512_setzero_si512();
        int64_t p = 0;
        for (; p + 64 <= k; p += 64)
            acc = _mm512_dpbusd_epi32(acc, all128, _mm512_loadu_si512((const void *)(row + p)));
        if (p < k)
            acc = _mm512_dpbusd_epi32(acc, all128, _mm512_maskz_loadu_epi8((1ULL << (k - p)) - 1, row + p));
        shift[s] = _mm512_reduce_add_epi32(acc);
    }
}

__attribute__((target("avx512f,avx512bw,avx512vnni")))
static void qmatmul_vnni(const int8_t *a, const int8_t *b, int32_t *c, int64_t m, int64_t n, int64_t k,
                         int threads)
{
    int64_t col_blocks = (n + NR - 1) / NR;
#pragma omp parallel for num_threads(threads) schedule(static) if (threads > 1 && m * n * k > (1 << 16))
    for (int64_t jb = 0; jb < col_blocks; jb++) {
        int64_t j0 = jb * NR;
        int nr = (int)(n - j0 < NR ? n - j0 : NR);
        int32_t shift[NR] = {0};
        vnni_shift(b, shift, k, j0, nr);
        for (int64_t i0 = 0; i0 < m; i0 += MR) {
            int mr = (int)(m - i0 < MR ? m - i0 : MR);
            vnni_block(a, b, shift, c, n, k, i0, j0, mr, nr);
        }
    }
}
#endif

int qmatmul_s8(const int8_t *a, const int8_t *b, int32_t *c, int64_t m, int64_t n, int64_t k, int version,
               int num_threads)
{
    int threads = resolve_threads(num_threads);
    if (version == QMATMUL_PORTABLE) {
        qmatmul_portable(a, b, c, m, n, k, threads);
        return 0;
    }
#ifdef HAVE_VNNI_PATH
    if (version == QMATMUL_VNNI && qmatmul_has_vnni()) {
        qmatmul_vnni(a, b, c, m, n, k, threads);
        return 0;
    }
#endif
    return -1; /* an unknown version, or VNNI on a CPU without it: the caller raises */
}
