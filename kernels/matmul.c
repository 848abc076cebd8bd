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
 *   4. simd      the same with a micro-kernel written in vector registers:
 *                a 6 x (2 vectors) tile, 12 accumulators. One source (GCC/
 *                Clang vector extensions) compiled for each instruction set
 *                (kernels/instantiate.h): 6x32 float32 / 6x16 float64 tiles
 *                with AVX-512, 6x16 / 6x8 with AVX2, 6x8 / 6x4 with SSE2.
 *   5. parallel  version 4 on the threads of kernels/threadpool.c. Per B
 *                panel two jobs of numbered work items: pack the panel
 *                (groups of slivers), then multiply it by A (a row block x
 *                a chunk of columns, about 4 items per thread). Threads
 *                claim items as they come free and the caller takes what no
 *                worker has claimed, so a worker the OS runs late (a shared
 *                machine) holds nobody up; no barrier waits for it.
 *                Thread count from the caller (Python reads
 *                MINIGRAD_NUM_THREADS, default all cores), never more than
 *                the cores, and one thread per 4 MFLOP at most: small
 *                products run on one thread, without waking anyone, and
 *                those thinner than a micro-tile skip packing (matmul_thin).
 *
 * Loop nest of versions 3-5 (jc, pc, ic, jr, ir):
 *   for jc in n step NC:            B panel (KC x NC) lives in L3
 *     for pc in k step KC:          pack B panel; beta applies at pc == 0 only
 *       for ic in m step MC:        pack A block (MC x KC), lives in L2
 *         for jr in NC step NR:     B sliver (KC x NR) lives in L1
 *           for ir in MC step MR:   micro-kernel: C tile (MR x NR) in registers
 *
 * matmul_fma_peak_*: the roofline for the benchmark: a loop of FMAs on 12
 * registers, no memory traffic; its FLOP rate is this core's peak on the
 * active instruction set (benchmarks/bench_matmul.py reports the fraction).
 *
 * Build:     python build.py        (or pip install -e .; flags: MINIGRAD_CFLAGS)
 * Test:      python -m pytest tests/test_kernels_matmul.py tests/test_kernels_fuzz.py tests/test_threadpool.py -q
 *            python -m pytest tests/test_kernels_isa.py -q    (every instruction set's copy)
 *            python -m pytest tests/test_kernels_asan.py -q   (AddressSanitizer + UBSan)
 * Benchmark: env -u OPENBLAS_CORETYPE python benchmarks/bench_matmul.py
 */
#ifndef TEMPLATE

#include "common.h"
#include "matmul.h"

/* A thread per 4 MFLOP at least (~40 us of work at 100 GFLOP/s): waking one
 * costs ~10 us idle and much more on a busy machine. */
#define MIN_FLOPS_PER_THREAD (double)(1 << 22)

#define TEMPLATE "matmul.c"
#include "instantiate.h"

#define MATMUL_ARGS(real) int trans_a, int trans_b, int64_t m, int64_t n, int64_t k, real alpha, \
    const real *a, int64_t lda, const real *b, int64_t ldb, real beta, real *c, int64_t ldc
#define MATMUL_CALL trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc

int matmul_naive_f32(MATMUL_ARGS(float)) { return DISPATCH(matmul_naive_f32, (MATMUL_CALL)); }
int matmul_blocked_f32(MATMUL_ARGS(float)) { return DISPATCH(matmul_blocked_f32, (MATMUL_CALL)); }
int matmul_packed_f32(MATMUL_ARGS(float)) { return DISPATCH(matmul_packed_f32, (MATMUL_CALL)); }
int matmul_simd_f32(MATMUL_ARGS(float)) { return DISPATCH(matmul_simd_f32, (MATMUL_CALL)); }
int matmul_parallel_f32(MATMUL_ARGS(float), int num_threads)
{
    return DISPATCH(matmul_parallel_f32, (MATMUL_CALL, num_threads));
}

int matmul_naive_f64(MATMUL_ARGS(double)) { return DISPATCH(matmul_naive_f64, (MATMUL_CALL)); }
int matmul_blocked_f64(MATMUL_ARGS(double)) { return DISPATCH(matmul_blocked_f64, (MATMUL_CALL)); }
int matmul_packed_f64(MATMUL_ARGS(double)) { return DISPATCH(matmul_packed_f64, (MATMUL_CALL)); }
int matmul_simd_f64(MATMUL_ARGS(double)) { return DISPATCH(matmul_simd_f64, (MATMUL_CALL)); }
int matmul_parallel_f64(MATMUL_ARGS(double), int num_threads)
{
    return DISPATCH(matmul_parallel_f64, (MATMUL_CALL, num_threads));
}

double matmul_fma_peak_f32(int64_t iterations) { return DISPATCH(matmul_fma_peak_f32, (iterations)); }
double matmul_fma_peak_f64(int64_t iterations) { return DISPATCH(matmul_fma_peak_f64, (iterations)); }

const char *matmul_simd_kernel(void) { return kernels_isa(); }

int matmul_has_openmp(void)
{
#ifdef _OPENMP
    return 1;
#else
    return 0;
#endif
}

#else /* TEMPLATE: real, FN, VECTOR_BYTES */

/* The micro-tile MR x NR (two vectors wide) and the block sizes: a B sliver
   (KC x NR, 24-32 KiB) fits L1, an A block (MC x KC, <= 216 KiB) under half
   of L2, a B panel (KC x NC) L3. A larger KC also means fewer B panels, so
   fewer thread barriers in the parallel version. */
#define MR 6
#define NR (2 * VECTOR_BYTES / (int)sizeof(real))
#define KC (VECTOR_BYTES == 64 ? 256 : 384)
#define MC (sizeof(real) == 4 ? 144 : 72)
#define NC (sizeof(real) == 4 ? 4096 : 2048)

/* Element (i, p) of op(A) and (p, j) of op(B). */
#define OP_A(i, p) (trans_a ? a[(p) * lda + (i)] : a[(i) * lda + (p)])
#define OP_B(p, j) (trans_b ? b[(j) * ldb + (p)] : b[(p) * ldb + (j)])

/* C[0:mr, 0:nr] = alpha * (packed A sliver) (packed B sliver) + beta * C,
   with mr <= MR, nr <= NR; beta == 0 must not read C. */
typedef void (*FN(micro_kernel_fn))(int64_t kc, const real *restrict a, const real *restrict b,
                                    real *restrict c, int64_t ldc, real alpha, real beta,
                                    int64_t mr, int64_t nr);

/* Version 1. C[i, j] = alpha * sum_p op(A)[i, p] op(B)[p, j] + beta * C[i, j] */
int FN(matmul_naive)(int trans_a, int trans_b, int64_t m, int64_t n, int64_t k,
                     real alpha, const real *a, int64_t lda, const real *b, int64_t ldb,
                     real beta, real *c, int64_t ldc)
{
    for (int64_t i = 0; i < m; i++) {
        for (int64_t j = 0; j < n; j++) {
            real sum = 0;
            for (int64_t p = 0; p < k; p++)
                sum += OP_A(i, p) * OP_B(p, j);
            /* beta == 0 must not read C: it may hold NaN (BLAS semantics). */
            c[i * ldc + j] = beta == 0 ? alpha * sum : alpha * sum + beta * c[i * ldc + j];
        }
    }
    return 0;
}

/* C = beta * C over an (m x n) block, without reading C when beta == 0. */
static void FN(scale_c)(int64_t m, int64_t n, real beta, real *c, int64_t ldc)
{
    for (int64_t i = 0; i < m; i++) {
        real *row = c + i * ldc;
        if (beta == 0)
            memset(row, 0, (size_t)n * sizeof(real));
        else if (beta != 1)
            for (int64_t j = 0; j < n; j++)
                row[j] *= beta;
    }
}

/* Version 2. Same sum, loop order i-p-j inside cache blocks: the j loop
   streams one row of op(B) and one row of C (contiguous unless trans_b). */
int FN(matmul_blocked)(int trans_a, int trans_b, int64_t m, int64_t n, int64_t k,
                       real alpha, const real *a, int64_t lda, const real *b, int64_t ldb,
                       real beta, real *c, int64_t ldc)
{
    /* A BLOCK_K x BLOCK_N block of B (64 KiB of float32) stays in L2 while
       every row of the C block streams over it. */
    enum { BLOCK_M = 64, BLOCK_K = 128, BLOCK_N = 128 };
    FN(scale_c)(m, n, beta, c, ldc);
    int64_t b_row = trans_b ? 1 : ldb;  /* step from op(B)[p, :] to op(B)[p + 1, :] */
    int64_t b_col = trans_b ? ldb : 1;  /* step from op(B)[:, j] to op(B)[:, j + 1] */
    for (int64_t i0 = 0; i0 < m; i0 += BLOCK_M) {
        int64_t i1 = min_i64(i0 + BLOCK_M, m);
        for (int64_t p0 = 0; p0 < k; p0 += BLOCK_K) {
            int64_t p1 = min_i64(p0 + BLOCK_K, k);
            for (int64_t j0 = 0; j0 < n; j0 += BLOCK_N) {
                int64_t j1 = min_i64(j0 + BLOCK_N, n);
                for (int64_t i = i0; i < i1; i++) {
                    real *restrict c_row = c + i * ldc;
                    for (int64_t p = p0; p < p1; p++) {
                        real a_ip = alpha * OP_A(i, p);
                        const real *restrict b_row_p = b + p * b_row;
                        if (b_col == 1)  /* the common case, split out so it vectorises */
                            for (int64_t j = j0; j < j1; j++)
                                c_row[j] += a_ip * b_row_p[j];
                        else
                            for (int64_t j = j0; j < j1; j++)
                                c_row[j] += a_ip * b_row_p[j * b_col];
                    }
                }
            }
        }
    }
    return 0;
}

/* Copy op(A)[ic : ic+mc, pc : pc+kc] into slivers of MR rows:
   ap[(ir / MR) * MR * kc + p * MR + ii] = op(A)[ic + ir + ii, pc + p],
   rows past mc zero-padded so the micro-kernel never branches. */
static void FN(pack_a)(int trans_a, int64_t mc, int64_t kc, const real *a, int64_t lda,
                       int64_t ic, int64_t pc, real *restrict ap)
{
    for (int64_t ir = 0; ir < mc; ir += MR) {
        int64_t rows = min_i64(MR, mc - ir);
        real *sliver = ap + ir * kc;
        if (rows < MR)
            memset(sliver, 0, (size_t)(MR * kc) * sizeof(real));
        /* The loop order reads A along its rows in memory either way. */
        if (trans_a) {
            for (int64_t p = 0; p < kc; p++)
                for (int64_t ii = 0; ii < rows; ii++)
                    sliver[p * MR + ii] = a[(pc + p) * lda + ic + ir + ii];
        } else {
            for (int64_t ii = 0; ii < rows; ii++)
                for (int64_t p = 0; p < kc; p++)
                    sliver[p * MR + ii] = a[(ic + ir + ii) * lda + pc + p];
        }
    }
}

/* Copy slivers [s0, s1) of NR columns of op(B)[pc : pc+kc, jc : jc+nc]:
   bp[s * NR * kc + p * NR + jj] = op(B)[pc + p, jc + s * NR + jj],
   columns past nc zero-padded. */
static void FN(pack_b)(int trans_b, int64_t nc, int64_t kc, const real *b, int64_t ldb,
                       int64_t pc, int64_t jc, int64_t s0, int64_t s1, real *restrict bp)
{
    for (int64_t s = s0; s < s1; s++) {
        int64_t cols = min_i64(NR, nc - s * NR);
        int64_t j0 = jc + s * NR;
        real *sliver = bp + s * NR * kc;
        if (cols < NR)
            memset(sliver, 0, (size_t)(NR * kc) * sizeof(real));
        /* The loop order reads B along its rows in memory either way. */
        if (trans_b) {
            for (int64_t jj = 0; jj < cols; jj++)
                for (int64_t p = 0; p < kc; p++)
                    sliver[p * NR + jj] = b[(j0 + jj) * ldb + pc + p];
        } else {
            for (int64_t p = 0; p < kc; p++)
                for (int64_t jj = 0; jj < cols; jj++)
                    sliver[p * NR + jj] = b[(pc + p) * ldb + j0 + jj];
        }
    }
}

/* C[0:mr, 0:nr] = alpha * ab + beta * C, reading C only when beta != 0;
   ab is an MR x NR tile. */
static void FN(store_tile)(int64_t mr, int64_t nr, const real *restrict ab, real alpha,
                           real beta, real *restrict c, int64_t ldc)
{
    for (int64_t i = 0; i < mr; i++) {
        real *c_row = c + i * ldc;
        const real *ab_row = ab + i * NR;
        if (beta == 0)
            for (int64_t j = 0; j < nr; j++)
                c_row[j] = alpha * ab_row[j];
        else
            for (int64_t j = 0; j < nr; j++)
                c_row[j] = alpha * ab_row[j] + beta * c_row[j];
    }
}

/* Portable micro-kernel: the tile ab (MR x NR) = sum over p of a[:, p] b[p, :]
   as MR*NR scalar accumulators, then C = alpha ab + beta C. Fixed trip counts
   let the compiler unroll i and vectorise j; `omp simd` (honoured under
   -fopenmp) is what makes GCC keep acc in registers rather than try to
   vectorise across the whole tile. */
static void FN(micro_kernel_portable)(int64_t kc, const real *restrict a, const real *restrict b,
                                      real *restrict c, int64_t ldc, real alpha, real beta,
                                      int64_t mr, int64_t nr)
{
    real acc[MR][NR] = {{0}};
    for (int64_t p = 0; p < kc; p++, a += MR, b += NR) {
        for (int i = 0; i < MR; i++) {
#pragma omp simd
            for (int j = 0; j < NR; j++)
                acc[i][j] += a[i] * b[j];
        }
    }
    FN(store_tile)(mr, nr, &acc[0][0], alpha, beta, c, ldc);
}

/* SIMD micro-kernel: C (6 x NR) = alpha * sum over p of a[:, p] b[p, :] + beta * C
   with 12 accumulators of VECTOR_BYTES each (NR = two vectors): 12 independent
   FMAs per p hide the FMA latency, and each p costs two loads of B and six
   broadcasts of A. Written with GCC/Clang vector extensions, so one source
   becomes SSE2, AVX2 or AVX-512 code in the copies instantiate.h makes. A
   scalar times a vector broadcasts the scalar; memcpy is how C reads and
   writes a vector from an array of scalars without breaking aliasing rules
   (it compiles to one load or store). */
static void FN(micro_kernel_simd)(int64_t kc, const real *restrict a, const real *restrict b,
                                  real *restrict c, int64_t ldc, real alpha, real beta,
                                  int64_t mr, int64_t nr)
{
    typedef real vec __attribute__((vector_size(VECTOR_BYTES)));
    enum { W = VECTOR_BYTES / sizeof(real) };
    vec c00 = {0}, c01 = {0}, c10 = {0}, c11 = {0}, c20 = {0}, c21 = {0};
    vec c30 = {0}, c31 = {0}, c40 = {0}, c41 = {0}, c50 = {0}, c51 = {0};
    for (int64_t p = 0; p < kc; p++, a += 6, b += 2 * W) {
        vec b0, b1;
        memcpy(&b0, b, sizeof b0);
        memcpy(&b1, b + W, sizeof b1);
        c00 += a[0] * b0; c01 += a[0] * b1;
        c10 += a[1] * b0; c11 += a[1] * b1;
        c20 += a[2] * b0; c21 += a[2] * b1;
        c30 += a[3] * b0; c31 += a[3] * b1;
        c40 += a[4] * b0; c41 += a[4] * b1;
        c50 += a[5] * b0; c51 += a[5] * b1;
    }
    vec tile[6][2] = {{c00, c01}, {c10, c11}, {c20, c21}, {c30, c31}, {c40, c41}, {c50, c51}};
    if (mr == MR && nr == NR) {
        for (int i = 0; i < 6; i++) {
            for (int h = 0; h < 2; h++) {
                real *dst = c + i * ldc + h * W;
                vec value = alpha * tile[i][h], old;
                if (beta != 0) {
                    memcpy(&old, dst, sizeof old);
                    value += beta * old;
                }
                memcpy(dst, &value, sizeof value);
            }
        }
        return;
    }
    _Alignas(ALIGNMENT) real ab[MR * NR];
    memcpy(ab, tile, sizeof ab);
    FN(store_tile)(mr, nr, ab, alpha, beta, c, ldc);
}

/* C (mc x nc) = alpha * Ap Bp + beta * C for a packed A block and the packed
   B slivers starting at bp, one MR x NR micro-tile at a time. */
static void FN(macro_kernel)(FN(micro_kernel_fn) micro_kernel, int64_t mc, int64_t nc,
                             int64_t kc, const real *ap, const real *bp, real alpha,
                             real beta, real *c, int64_t ldc)
{
    for (int64_t jr = 0; jr < nc; jr += NR)
        for (int64_t ir = 0; ir < mc; ir += MR)
            micro_kernel(kc, ap + ir * kc, bp + jr * kc, c + ir * ldc + jr, ldc, alpha, beta,
                         min_i64(MR, mc - ir), min_i64(NR, nc - jr));
}

/* One B panel of a product, shared by the threads that work on it
   (threadpool.c's context): the operands, the panel's place and the split
   of its work into items. */
typedef struct {
    FN(micro_kernel_fn) micro_kernel;
    int trans_a, trans_b;
    const real *a, *b;
    int64_t lda, ldb;
    real *c;
    int64_t ldc;
    real alpha, beta;     /* beta for this panel: the caller's at pc == 0, else 1 */
    int64_t m, jc, nc, pc, kc;
    int64_t mc_step;      /* rows of a row block (a multiple of MR) */
    int64_t chunks;       /* column chunks of the panel per row block */
    int64_t slivers;      /* NR-column slivers of the panel */
    real *bp;             /* the packed panel */
    real *ap;             /* one packed A block per thread slot */
    int64_t *packed_block; /* per slot: the row block in its ap, -1 for none */
} FN(panel);

/* Slivers of B packed per item of the packing job. */
#define PACK_SLIVERS 4

/* Work item `item` of packing the panel: slivers [4 item, 4 item + 4). */
static void FN(pack_b_item)(void *context, int64_t item, int slot)
{
    (void)slot;
    FN(panel) *w = context;
    FN(pack_b)(w->trans_b, w->nc, w->kc, w->b, w->ldb, w->pc, w->jc, item * PACK_SLIVERS,
               min_i64((item + 1) * PACK_SLIVERS, w->slivers), w->bp);
}

/* Work item `item` of the panel's product: a row block of A times a chunk
   of the panel's slivers. The thread packs the A block unless its slot
   holds it from its previous item (items of a row block are consecutive). */
static void FN(panel_item)(void *context, int64_t item, int slot)
{
    FN(panel) *w = context;
    int64_t block = item / w->chunks, chunk = item % w->chunks;
    int64_t ic = block * w->mc_step, mc = min_i64(w->mc_step, w->m - ic);
    int64_t j0 = w->slivers * chunk / w->chunks * NR;
    int64_t j1 = min_i64(w->slivers * (chunk + 1) / w->chunks * NR, w->nc);
    real *ap = w->ap + (size_t)slot * (size_t)(w->mc_step * w->kc);
    if (w->packed_block[slot] != block) {
        FN(pack_a)(w->trans_a, mc, w->kc, w->a, w->lda, ic, w->pc, ap);
        w->packed_block[slot] = block;
    }
    FN(macro_kernel)(w->micro_kernel, mc, j1 - j0, w->kc, ap, w->bp + j0 * w->kc, w->alpha,
                     w->beta, w->c + ic * w->ldc + w->jc + j0, w->ldc);
}

/* Versions 3-5: the packed loop nest (see the top of matmul.c) on up to
   num_threads threads of threadpool.c. For each B panel, two jobs: pack
   the panel (items of PACK_SLIVERS slivers), then multiply it by the
   row blocks of A (items of a row block x a chunk of columns). Threads
   claim items as they come free, and the caller takes whatever no worker
   has claimed: a worker the OS has not run yet holds nobody up. */
static int FN(matmul_packed_threads)(FN(micro_kernel_fn) micro_kernel, int num_threads,
                                     int trans_a, int trans_b, int64_t m, int64_t n, int64_t k,
                                     real alpha, const real *a, int64_t lda, const real *b,
                                     int64_t ldb, real beta, real *c, int64_t ldc)
{
    if (m == 0 || n == 0)
        return 0;
    if (k == 0) {
        FN(scale_c)(m, n, beta, c, ldc);
        return 0;
    }
    int64_t kc_max = min_i64(KC, k);
    int64_t slivers_max = ceil_div(min_i64(NC, n), NR);
    /* Items: with more than one thread, about 4 per thread, so that a thread
       that starts late or runs slowly leaves the others little to wait for.
       Row blocks of at most MC rows, and at least 4 * MR rows when there are
       more threads than blocks; columns are split only when rows run out,
       since every chunk of a row block packs that block again. */
    int64_t target = num_threads > 1 ? 4 * (int64_t)num_threads : 1;
    int64_t m_blocks = max_i64(ceil_div(m, MC), min_i64(target, ceil_div(m, 4 * MR)));
    int64_t mc_step = round_up(ceil_div(m, m_blocks), MR);
    m_blocks = ceil_div(m, mc_step);

    real *bp = aligned_buffer((size_t)(kc_max * slivers_max * NR) * sizeof(real));
    real *ap = aligned_buffer((size_t)num_threads * (size_t)(mc_step * kc_max) * sizeof(real));
    int64_t *packed_block = malloc((size_t)num_threads * sizeof(int64_t));
    if (bp == NULL || ap == NULL || packed_block == NULL) {
        free(bp);
        free(ap);
        free(packed_block);
        return -1;
    }
    FN(panel) w = {micro_kernel, trans_a, trans_b, a, b, lda, ldb, c, ldc, alpha, beta, m,
                   .mc_step = mc_step, .bp = bp, .ap = ap, .packed_block = packed_block};
    for (int64_t jc = 0; jc < n; jc += NC) {
        w.jc = jc;
        w.nc = min_i64(NC, n - jc);
        w.slivers = ceil_div(w.nc, NR);
        w.chunks = m_blocks >= target ? 1 : min_i64(w.slivers, ceil_div(target, m_blocks));
        for (int64_t pc = 0; pc < k; pc += KC) {
            w.pc = pc;
            w.kc = min_i64(KC, k - pc);
            w.beta = pc == 0 ? beta : 1;
            threadpool_run(num_threads, ceil_div(w.slivers, PACK_SLIVERS), FN(pack_b_item), &w);
            for (int slot = 0; slot < num_threads; slot++)
                packed_block[slot] = -1;
            threadpool_run(num_threads, m_blocks * w.chunks, FN(panel_item), &w);
        }
    }
    free(bp);
    free(ap);
    free(packed_block);
    return 0;
}

/* Version 3: packed panels, portable micro-kernel, one thread. */
int FN(matmul_packed)(int trans_a, int trans_b, int64_t m, int64_t n, int64_t k,
                      real alpha, const real *a, int64_t lda, const real *b, int64_t ldb,
                      real beta, real *c, int64_t ldc)
{
    return FN(matmul_packed_threads)(FN(micro_kernel_portable), 1, trans_a, trans_b, m, n, k,
                                     alpha, a, lda, b, ldb, beta, c, ldc);
}


/* Version 4: packed panels, SIMD micro-kernel, one thread. */
int FN(matmul_simd)(int trans_a, int trans_b, int64_t m, int64_t n, int64_t k,
                    real alpha, const real *a, int64_t lda, const real *b, int64_t ldb,
                    real beta, real *c, int64_t ldc)
{
    return FN(matmul_packed_threads)(FN(micro_kernel_simd), 1, trans_a, trans_b, m, n, k,
                                     alpha, a, lda, b, ldb, beta, c, ldc);
}

/* Thin products, fewer rows than a micro-tile (a Linear layer on one token while generating): packing
   B would cost more than the product, so each row of C comes straight from A and B. With op(B) = B^T
   (a Linear weight, rows contiguous) an element is a dot product of two rows, summed in vectors; with
   op(B) = B, a row of C is a sum of rows of B scaled by A's elements. */
static real FN(dot)(int64_t k, const real *a, int64_t a_step, const real *b)
{
    typedef real vec __attribute__((vector_size(VECTOR_BYTES)));
    enum { W = VECTOR_BYTES / sizeof(real) };
    real sum = 0;
    int64_t p = 0;
    if (a_step == 1) {
        vec acc0 = {0}, acc1 = {0};  /* two chains: the FMA latency, not the loads, bounds one */
        for (; p + 2 * W <= k; p += 2 * W) {
            vec a0, a1, b0, b1;
            memcpy(&a0, a + p, sizeof a0);
            memcpy(&a1, a + p + W, sizeof a1);
            memcpy(&b0, b + p, sizeof b0);
            memcpy(&b1, b + p + W, sizeof b1);
            acc0 += a0 * b0;
            acc1 += a1 * b1;
        }
        acc0 += acc1;
        for (int lane = 0; lane < W; lane++)
            sum += acc0[lane];
    }
    for (; p < k; p++)
        sum += a[p * a_step] * b[p];
    return sum;
}

static void FN(matmul_thin)(int trans_a, int trans_b, int64_t m, int64_t n, int64_t k,
                            real alpha, const real *a, int64_t lda, const real *b, int64_t ldb,
                            real beta, real *c, int64_t ldc)
{
    for (int64_t i = 0; i < m; i++) {
        real *c_row = c + i * ldc;
        const real *a_row = trans_a ? a + i : a + i * lda;  /* op(A)[i, p] = a_row[p * a_step] */
        int64_t a_step = trans_a ? lda : 1;
        if (trans_b) {
            for (int64_t j = 0; j < n; j++) {
                real value = alpha * FN(dot)(k, a_row, a_step, b + j * ldb);
                c_row[j] = beta == 0 ? value : value + beta * c_row[j];  /* beta == 0 never reads C */
            }
            continue;
        }
        for (int64_t j = 0; j < n; j++)
            c_row[j] = beta == 0 ? 0 : beta * c_row[j];
        for (int64_t p = 0; p < k; p++) {
            real scale = alpha * a_row[p * a_step];
            const real *b_row = b + p * ldb;
            for (int64_t j = 0; j < n; j++)
                c_row[j] += scale * b_row[j];
        }
    }
}

/* Version 5: version 4 on num_threads threads (<= 0: all cores). */
int FN(matmul_parallel)(int trans_a, int trans_b, int64_t m, int64_t n, int64_t k,
                        real alpha, const real *a, int64_t lda, const real *b, int64_t ldb,
                        real beta, real *c, int64_t ldc, int num_threads)
{
    /* Work items of at least one micro-tile row block; a thread per MIN_FLOPS_PER_THREAD at most. */
    int threads = thread_count(num_threads, ceil_div(m, MR) * ceil_div(n, NR), 2.0 * m * n * k,
                               MIN_FLOPS_PER_THREAD);
    if (m < MR && threads == 1 && k > 0) {
        FN(matmul_thin)(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
        return 0;
    }
    return FN(matmul_packed_threads)(FN(micro_kernel_simd), threads, trans_a, trans_b, m, n, k,
                                     alpha, a, lda, b, ldb, beta, c, ldc);
}


/* Peak probe: iterations x 12 vector FMAs, x = x * s + a on registers only
   (s < 1 keeps every chain finite and normal). Returns the FLOPs done. */
static volatile real FN(peak_sink);

double FN(matmul_fma_peak)(int64_t iterations)
{
    typedef real vec __attribute__((vector_size(VECTOR_BYTES)));
    enum { W = VECTOR_BYTES / sizeof(real) };
    vec s = {0}, a = {0};
    s += (real)0.999, a += (real)0.001;
    vec x0 = a, x1 = a + a, x2 = x1 + a, x3 = x2 + a, x4 = x3 + a, x5 = x4 + a;
    vec x6 = x5 + a, x7 = x6 + a, x8 = x7 + a, x9 = x8 + a, x10 = x9 + a, x11 = x10 + a;
    for (int64_t i = 0; i < iterations; i++) {
        x0 = x0 * s + a; x1 = x1 * s + a; x2 = x2 * s + a; x3 = x3 * s + a;
        x4 = x4 * s + a; x5 = x5 * s + a; x6 = x6 * s + a; x7 = x7 * s + a;
        x8 = x8 * s + a; x9 = x9 * s + a; x10 = x10 * s + a; x11 = x11 * s + a;
    }
    vec sum = x0 + x1 + x2 + x3 + x4 + x5 + x6 + x7 + x8 + x9 + x10 + x11;
    FN(peak_sink) = sum[0];
    return 2.0 * 12 * W * (double)iterations;
}

#undef OP_A
#undef OP_B
#undef MR
#undef NR
#undef KC
#undef MC
#undef NC
#undef PACK_SLIVERS

#endif /* TEMPLATE */
