/* Fused scaled-dot-product attention on the CPU, forward and backward.
 *
 *   S = Q K^T / sqrt(d)          (Tq, Tk)  scores
 *   P = softmax(S) row by row    (Tq, Tk)  probabilities
 *   O = P V                      (Tq, dv)  output
 *   lse_i = log sum_j exp(S_ij)  (Tq,)     saved for the backward
 *
 * over a batch of independent problems (bh = batch * heads), with an optional
 * causal mask aligned top-left like PyTorch: query i sees keys j <= i.
 *
 * Versions (each in float32 and float64):
 *   naive  one query row at a time: the row of scores is materialised
 *          (O(Tk) extra), softmaxed, multiplied by V. Backward walks the same
 *          rows. Single-threaded; the reference and the lesson material.
 *   flash  the FlashAttention scheme. Forward: a block of BQ queries meets
 *          the keys and values streamed BK at a time; an online softmax keeps
 *          a running row max m and row sum l, rescaling the partial output by
 *          exp(m_old - m_new) whenever the max grows; blocks entirely above the
 *          causal diagonal are skipped. Backward: recompute P = exp(S - lse)
 *          block by block from the saved lse (never a Tq x Tk array):
 *              dV += P^T dO,  dP = dO V^T,  dS = P * (dP - D),  D = rowsum(dO * O)
 *              dQ += dS K / sqrt(d),  dK += dS^T Q / sqrt(d)
 *          race-free: with enough heads to go round the threads, one thread
 *          owns a whole head and walks its key blocks once; otherwise two
 *          parallel sweeps, one over key blocks that owns dK and dV, one over
 *          query blocks that owns dQ (recomputing S and dP once more costs
 *          less than synchronising the writes).
 *          Extra memory: block buffers and whole-head copies of a few (T, d)
 *          arrays per thread, plus D (bh * Tq); never Tq x Tk.
 *          Threads: kernels/threadpool.c's, over heads or (head, block) pairs
 *          (work items claimed as threads come free); `nthreads` from
 *          the Python wrapper (env MINIGRAD_NUM_THREADS, default all cores),
 *          fewer for problems too small to repay waking them. Fewer than MR
 *          queries (one new token against a KV cache) run the naive forward:
 *          packing K and V into blocks would cost more than the product.
 *
 * The block products all go through one register-tiled micro-kernel
 * (gemm_acc): an MR x NR tile of C lives in registers while the shared
 * dimension streams by, and its inner loop over NR contiguous columns is what
 * the compiler turns into FMAs on full vector registers, in each instruction
 * set's copy (kernels/instantiate.h: SSE2, AVX2, AVX-512; chosen at run time).
 * exp in float32 is common.h's exp_f32, a short polynomial that vectorises
 * (libm's expf does not without -ffast-math); float64 uses libm's exp.
 *
 * Build:      python build.py            (every kernels/NAME.c into minigrad._ckernels)
 * Test:       python -m pytest tests/test_kernels_attention.py tests/test_kernels_isa.py -q
 * Benchmark:  python benchmarks/bench_attention.py
 */
#ifndef TEMPLATE

#include "common.h"
#include "attention.h"

/* The micro-kernel keeps an MR x NR tile of C in registers: 6 rows of two
 * vectors = 12 accumulators, enough independent FMAs to hide their latency
 * (4 rows ran at 0.6x the speed). Blocks are multiples of MR and of every
 * instruction set's NR (8 .. 32). */
#define BQ 96 /* queries per block */
#define BK 96 /* keys per block */
#define MR 6

/* A thread per 4 MFLOP at least: waking one costs microseconds when idle and
 * milliseconds on a busy machine, more than a tiny problem takes. */
#define MIN_FLOPS_PER_THREAD (double)(1 << 22)

/* One allocation carved into ALIGNMENT-aligned pieces: split cache lines
 * halve the speed of the vector loads. Each piece may round up by less than
 * ALIGNMENT, so callers ask for their total plus ALIGNMENT per piece. */
typedef struct {
    char *base;
    size_t used, size;
} arena;

static int arena_open(arena *a, size_t size)
{
    a->size = size + ALIGNMENT;
    a->used = 0;
    a->base = malloc(a->size);
    return a->base != NULL;
}

static void *arena_take(arena *a, size_t bytes)
{
    uintptr_t start = (uintptr_t)(a->base + a->used);
    size_t pad = (ALIGNMENT - start % ALIGNMENT) % ALIGNMENT;
    void *p = a->base + a->used + pad;
    a->used += pad + round_up((int64_t)bytes, ALIGNMENT);
    return p;
}

#define TEMPLATE "attention.c"
#include "instantiate.h"

#define FORWARD_ARGS(real) const real *q, const real *k, const real *v, real *out, real *lse, \
    int64_t bh, int64_t tq, int64_t tk, int64_t d, int64_t dv, int causal
#define BACKWARD_ARGS(real) const real *q, const real *k, const real *v, const real *out, \
    const real *lse, const real *dout, real *dq, real *dk, real *dvout, int64_t bh, int64_t tq, \
    int64_t tk, int64_t d, int64_t dv, int causal
#define FORWARD_CALL q, k, v, out, lse, bh, tq, tk, d, dv, causal
#define BACKWARD_CALL q, k, v, out, lse, dout, dq, dk, dvout, bh, tq, tk, d, dv, causal

int attention_forward_naive_f32(FORWARD_ARGS(float)) { return DISPATCH(attention_forward_naive_f32, (FORWARD_CALL)); }
int attention_backward_naive_f32(BACKWARD_ARGS(float)) { return DISPATCH(attention_backward_naive_f32, (BACKWARD_CALL)); }
int attention_forward_flash_f32(FORWARD_ARGS(float), int nthreads)
{
    return DISPATCH(attention_forward_flash_f32, (FORWARD_CALL, nthreads));
}
int attention_backward_flash_f32(BACKWARD_ARGS(float), int nthreads)
{
    return DISPATCH(attention_backward_flash_f32, (BACKWARD_CALL, nthreads));
}

int attention_forward_naive_f64(FORWARD_ARGS(double)) { return DISPATCH(attention_forward_naive_f64, (FORWARD_CALL)); }
int attention_backward_naive_f64(BACKWARD_ARGS(double)) { return DISPATCH(attention_backward_naive_f64, (BACKWARD_CALL)); }
int attention_forward_flash_f64(FORWARD_ARGS(double), int nthreads)
{
    return DISPATCH(attention_forward_flash_f64, (FORWARD_CALL, nthreads));
}
int attention_backward_flash_f64(BACKWARD_ARGS(double), int nthreads)
{
    return DISPATCH(attention_backward_flash_f64, (BACKWARD_CALL, nthreads));
}

#else /* TEMPLATE: real, FN, EXP, LOG, VECTOR_BYTES */

#define NR ((int64_t)(2 * VECTOR_BYTES / sizeof(real))) /* columns of the micro-kernel tile: two vectors */

/* ---------------------------------------------------------------- naive -- */

int FN(attention_forward_naive)(const real *q, const real *k, const real *v,
                                  real *out, real *lse, int64_t bh, int64_t tq,
                                  int64_t tk, int64_t d, int64_t dv, int causal)
{
    if (tk < 1 || d < 1)
        return -2; /* softmax over no keys, or scale 1/sqrt(0) */
    real scale = 1 / sqrt((real)d);
    real *s = malloc(sizeof(real) * tk); /* (Tk,) one row of scores */
    if (s == NULL)
        return -1;
    for (int64_t b = 0; b < bh; b++) {
        for (int64_t i = 0; i < tq; i++) {
            const real *qi = q + (b * tq + i) * d;
            real *oi = out + (b * tq + i) * dv;
            int64_t nk = causal ? min_i64(i + 1, tk) : tk; /* keys this query sees */
            real m = -INFINITY, l = 0;
            for (int64_t j = 0; j < nk; j++) {
                const real *kj = k + (b * tk + j) * d;
                real dot = 0;
#pragma omp simd reduction(+ : dot)
                for (int64_t c = 0; c < d; c++)
                    dot += qi[c] * kj[c];
                s[j] = dot * scale;
                m = s[j] > m ? s[j] : m;
            }
            for (int64_t c = 0; c < dv; c++)
                oi[c] = 0;
            for (int64_t j = 0; j < nk; j++) {
                real p = EXP(s[j] - m);
                const real *vj = v + (b * tk + j) * dv;
                l += p;
                for (int64_t c = 0; c < dv; c++)
                    oi[c] += p * vj[c];
            }
            for (int64_t c = 0; c < dv; c++)
                oi[c] /= l;
            lse[b * tq + i] = m + LOG(l);
        }
    }
    free(s);
    return 0;
}

int FN(attention_backward_naive)(const real *q, const real *k, const real *v,
                                   const real *out, const real *lse, const real *dout,
                                   real *dq, real *dk, real *dvout, int64_t bh,
                                   int64_t tq, int64_t tk, int64_t d, int64_t dv,
                                   int causal)
{
    if (tk < 1 || d < 1)
        return -2; /* softmax over no keys, or scale 1/sqrt(0) */
    real scale = 1 / sqrt((real)d);
    memset(dk, 0, sizeof(real) * bh * tk * d);
    memset(dvout, 0, sizeof(real) * bh * tk * dv);
    for (int64_t b = 0; b < bh; b++) {
        for (int64_t i = 0; i < tq; i++) {
            const real *qi = q + (b * tq + i) * d, *oi = out + (b * tq + i) * dv;
            const real *doi = dout + (b * tq + i) * dv;
            real *dqi = dq + (b * tq + i) * d;
            int64_t nk = causal ? min_i64(i + 1, tk) : tk;
            real di = 0; /* D_i = rowsum(dO * O) = sum_j P_ij dP_ij */
            for (int64_t c = 0; c < dv; c++)
                di += doi[c] * oi[c];
            for (int64_t c = 0; c < d; c++)
                dqi[c] = 0;
            for (int64_t j = 0; j < nk; j++) {
                const real *kj = k + (b * tk + j) * d, *vj = v + (b * tk + j) * dv;
                real *dkj = dk + (b * tk + j) * d, *dvj = dvout + (b * tk + j) * dv;
                real sij = 0, dpij = 0;
                for (int64_t c = 0; c < d; c++)
                    sij += qi[c] * kj[c];
                for (int64_t c = 0; c < dv; c++)
                    dpij += doi[c] * vj[c];
                real pij = EXP(sij * scale - lse[b * tq + i]);
                real dsij = pij * (dpij - di) * scale; /* dS, with the 1/sqrt(d) of S */
                for (int64_t c = 0; c < dv; c++)
                    dvj[c] += pij * doi[c];
                for (int64_t c = 0; c < d; c++) {
                    dqi[c] += dsij * kj[c];
                    dkj[c] += dsij * qi[c];
                }
            }
        }
    }
    return 0;
}

/* ---------------------------------------------------------------- flash -- */

/* C (m x n) = [C +] A (m x kd) B (kd x n), with A(i, p) = a[i*ars + p*acs]
 * (row or column major, so P^T and dS^T need no copy), B and C row major.
 * m % MR == 0 and n % NR == 0: the callers pad their blocks with zeros. */
static void FN(gemm_acc)(int64_t m, int64_t n, int64_t kd, const real *a,
                           int64_t ars, int64_t acs, const real *b, int64_t ldb,
                           real *c, int64_t ldc, int accumulate)
{
    for (int64_t i0 = 0; i0 < m; i0 += MR) {
        for (int64_t j0 = 0; j0 < n; j0 += NR) {
            real acc[MR][NR];
            for (int ii = 0; ii < MR; ii++)
                for (int jj = 0; jj < NR; jj++)
                    acc[ii][jj] = accumulate ? c[(i0 + ii) * ldc + j0 + jj] : 0;
            for (int64_t p = 0; p < kd; p++) {
                const real *brow = b + p * ldb + j0;
                for (int ii = 0; ii < MR; ii++) {
                    real aip = a[(i0 + ii) * ars + p * acs];
                    /* without the pragma gcc vectorises along p instead, 10x slower */
#pragma omp simd
                    for (int jj = 0; jj < NR; jj++)
                        acc[ii][jj] += aip * brow[jj]; /* one FMA under -ffp-contract=fast */
                }
            }
            for (int ii = 0; ii < MR; ii++)
                for (int jj = 0; jj < NR; jj++)
                    c[(i0 + ii) * ldc + j0 + jj] = acc[ii][jj];
        }
    }
}

/* dst (rows_pad, cols_pad) = src (rows, cols) * scale, zero outside: padding
 * must be zero, not garbage that could be NaN and poison a product. */
static void FN(pack_rows)(real *dst, int64_t rows_pad, int64_t cols_pad,
                            const real *src, int64_t rows, int64_t cols, real scale)
{
    for (int64_t r = 0; r < rows; r++) {
        for (int64_t c = 0; c < cols; c++)
            dst[r * cols_pad + c] = src[r * cols + c] * scale;
        for (int64_t c = cols; c < cols_pad; c++)
            dst[r * cols_pad + c] = 0;
    }
    memset(dst + rows * cols_pad, 0, sizeof(real) * (rows_pad - rows) * cols_pad);
}

/* src (rows, cols) -> one (cols, BK) panel of its transpose per block of BK
 * rows, zero padded: a panel is contiguous, so the micro-kernel reads it
 * without the cache-set conflicts of a long row stride. */
static void FN(pack_panels_t)(real *dst, const real *src, int64_t rows, int64_t cols)
{
    for (int64_t r0 = 0; r0 < rows; r0 += BK) {
        real *panel = dst + r0 * cols; /* (cols, BK) */
        int64_t n = min_i64(BK, rows - r0);
        for (int64_t r = 0; r < n; r++)
            for (int64_t c = 0; c < cols; c++)
                panel[c * BK + r] = src[(r0 + r) * cols + c];
        for (int64_t c = 0; c < cols; c++)
            for (int64_t r = n; r < BK; r++)
                panel[c * BK + r] = 0;
    }
}

/* How many of the keys k0 .. k0+bk-1 query i sees (causal: those <= i). */
static int64_t FN(visible_keys)(int64_t i, int64_t k0, int64_t bk, int causal)
{
    if (!causal)
        return bk;
    int64_t n = i - k0 + 1;
    return n < 0 ? 0 : min_i64(n, bk);
}

/* Number of key blocks query block qb meets: under the causal mask, none
 * that start after its last query. */
static int64_t FN(key_blocks_seen)(int64_t qb, int64_t tq, int64_t tk, int causal)
{
    int64_t nkb = (tk + BK - 1) / BK;
    if (!causal)
        return nkb;
    int64_t last_query = min_i64((qb + 1) * BQ, tq) - 1;
    return min_i64(nkb, last_query / BK + 1);
}

/* max(m, max_j s_j) over the first n scores of a row. */
static real FN(row_max)(const real *s, int64_t n, real m)
{
#pragma omp simd reduction(max : m)
    for (int64_t c = 0; c < n; c++)
        m = s[c] > m ? s[c] : m;
    return m;
}

/* p_j = exp(s_j - shift) for the n visible keys of a row, 0 for the rest of
 * the block; returns sum_j p_j. */
static real FN(row_exp)(real *p, const real *s, real shift, int64_t n)
{
    real sum = 0;
#pragma omp simd reduction(+ : sum)
    for (int64_t c = 0; c < n; c++) {
        p[c] = EXP(s[c] - shift);
        sum += p[c];
    }
    for (int64_t c = n; c < BK; c++)
        p[c] = 0;
    return sum;
}

/* P = exp(S - shift_i) on a (bq_pad, BK) block of scores, 0 where masked
 * or padding; rowsum_i = sum_j P_ij. */
static void FN(probabilities)(real *p, real *rowsum, const real *s, const real *shift,
                                int64_t q0, int64_t bq, int64_t bq_pad,
                                int64_t k0, int64_t bk, int causal)
{
    for (int64_t r = 0; r < bq; r++)
        rowsum[r] = FN(row_exp)(p + r * BK, s + r * BK, shift[r],
                                  FN(visible_keys)(q0 + r, k0, bk, causal));
    memset(p + bq * BK, 0, sizeof(real) * (bq_pad - bq) * BK);
}

/* One thread slot's buffers for the forward, carved from one arena. */
typedef struct {
    char *base;
    int64_t packed_head;                      /* the head whose K and V sit in kt, vp; -1 none */
    real *kt, *vp, *qs, *s, *p, *o, *m, *l, *m_new, *rowsum;
} FN(forward_slot);

/* The forward's shared state (threadpool.c's context). */
typedef struct {
    const real *q, *k, *v;
    real *out, *lse;
    int64_t tq, tk, d, dv, dvpad, tkpad, nqb;
    int causal;
    real scale;
    FN(forward_slot) *slots;
} FN(forward_job);

/* Work item `item`: query block item % nqb of head item / nqb, against
   every key block it sees. */
static void FN(forward_item)(void *context, int64_t item, int slot)
{
    const FN(forward_job) *j = context;
    FN(forward_slot) *w = &j->slots[slot];
    int64_t tq = j->tq, tk = j->tk, d = j->d, dv = j->dv, dvpad = j->dvpad;
    int causal = j->causal;
    real *s = w->s, *p = w->p, *o = w->o, *m = w->m, *l = w->l, *m_new = w->m_new;
    int64_t b = item / j->nqb, qb = item % j->nqb;
    int64_t q0 = qb * BQ, bq = min_i64(BQ, tq - q0), bq_pad = round_up(bq, MR);
    if (b != w->packed_head) {
        FN(pack_panels_t)(w->kt, j->k + b * tk * d, tk, d);
        FN(pack_rows)(w->vp, j->tkpad, dvpad, j->v + b * tk * dv, tk, dv, 1);
        w->packed_head = b;
    }
    FN(pack_rows)(w->qs, bq_pad, d, j->q + (b * tq + q0) * d, bq, d, j->scale);
    memset(o, 0, sizeof(real) * bq_pad * dvpad);
    for (int64_t r = 0; r < bq; r++) {
        m[r] = -INFINITY;
        l[r] = 0;
    }

    int64_t nkb = FN(key_blocks_seen)(qb, tq, tk, causal);
    for (int64_t kb = 0; kb < nkb; kb++) {
        int64_t k0 = kb * BK, bk = min_i64(BK, tk - k0), kn = round_up(bk, NR);
        FN(gemm_acc)(bq_pad, kn, d, w->qs, d, 1, w->kt + k0 * d, BK, s, BK, 0); /* S = Q K^T / sqrt(d) */
        for (int64_t r = 0; r < bq; r++)
            m_new[r] = FN(row_max)(s + r * BK, FN(visible_keys)(q0 + r, k0, bk, causal), m[r]);
        FN(probabilities)(p, w->rowsum, s, m_new, q0, bq, bq_pad, k0, bk, causal);
        for (int64_t r = 0; r < bq; r++) {
            real alpha = EXP(m[r] - m_new[r]); /* rescales what came before */
            l[r] = alpha * l[r] + w->rowsum[r];
            m[r] = m_new[r];
            for (int64_t c = 0; c < dvpad; c++)
                o[r * dvpad + c] *= alpha;
        }
        FN(gemm_acc)(bq_pad, dvpad, bk, p, BK, 1, w->vp + k0 * dvpad, dvpad, o, dvpad, 1); /* O += P V */
    }
    for (int64_t r = 0; r < bq; r++) {
        real *orow = j->out + (b * tq + q0 + r) * dv;
        for (int64_t c = 0; c < dv; c++)
            orow[c] = o[r * dvpad + c] / l[r];
        j->lse[b * tq + q0 + r] = m[r] + LOG(l[r]);
    }
}

int FN(attention_forward_flash)(const real *q, const real *k, const real *v,
                                  real *out, real *lse, int64_t bh, int64_t tq,
                                  int64_t tk, int64_t d, int64_t dv, int causal,
                                  int nthreads)
{
    if (tk < 1 || d < 1)
        return -2; /* softmax over no keys, or scale 1/sqrt(0) */
    if (tq < MR) /* a few queries against cached keys (generation): packing K and V would cost more */
        return FN(attention_forward_naive)(q, k, v, out, lse, bh, tq, tk, d, dv, causal);
    int64_t dvpad = round_up(dv, NR), tkpad = round_up(tk, BK);
    int64_t nqb = (tq + BQ - 1) / BQ;
    int threads = thread_count(nthreads, bh * nqb, 2.0 * bh * tq * tk * (d + dv), MIN_FLOPS_PER_THREAD);
    size_t bytes = sizeof(real) * (d * tkpad + tkpad * dvpad + BQ * d + 2 * BQ * BK +
                                   BQ * dvpad + 4 * BQ) + 9 * ALIGNMENT; /* 9 pieces */
    FN(forward_slot) *slots = calloc((size_t)threads, sizeof *slots);
    int failed = slots == NULL;
    for (int t = 0; t < threads && !failed; t++) {
        FN(forward_slot) *w = &slots[t];
        arena buf;
        if (!arena_open(&buf, bytes)) {
            failed = 1;
            break;
        }
        w->base = buf.base;
        w->packed_head = -1;
        w->kt = arena_take(&buf, sizeof(real) * d * tkpad);     /* (Tk/BK, d, BK) K^T panels */
        w->vp = arena_take(&buf, sizeof(real) * tkpad * dvpad); /* (Tk, dv) V */
        w->qs = arena_take(&buf, sizeof(real) * BQ * d);        /* (BQ, d) Q / sqrt(d) */
        w->s = arena_take(&buf, sizeof(real) * BQ * BK);        /* (BQ, BK) scores */
        w->p = arena_take(&buf, sizeof(real) * BQ * BK);        /* (BQ, BK) exp(S - m) */
        w->o = arena_take(&buf, sizeof(real) * BQ * dvpad);     /* (BQ, dv) unnormalised O */
        w->m = arena_take(&buf, sizeof(real) * BQ);             /* (BQ,) running max */
        w->l = arena_take(&buf, sizeof(real) * BQ);             /* (BQ,) running sum */
        w->m_new = arena_take(&buf, sizeof(real) * BQ);         /* (BQ,) max after this block */
        w->rowsum = arena_take(&buf, sizeof(real) * BQ);        /* (BQ,) sum of this block's P */
    }
    if (!failed) {
        FN(forward_job) job = {q, k, v, out, lse, tq, tk, d, dv, dvpad, tkpad, nqb, causal,
                               1 / sqrt((real)d), slots};
        threadpool_run(threads, bh * nqb, FN(forward_item), &job);
    }
    for (int t = 0; slots != NULL && t < threads; t++)
        free(slots[t].base);
    free(slots);
    return failed ? -1 : 0;
}

/* dS = P * (dP - D_i), in place over the first kn columns of dP, 0 in the
 * rest of the block (never computed there); D_i = rowsum(dO * O) = sum_j P_ij dP_ij. */
static void FN(score_grad)(real *dp, const real *p, const real *drows, int64_t bq, int64_t kn)
{
    for (int64_t r = 0; r < bq; r++) {
        for (int64_t c = 0; c < kn; c++)
            dp[r * BK + c] = p[r * BK + c] * (dp[r * BK + c] - drows[r]);
        for (int64_t c = kn; c < BK; c++)
            dp[r * BK + c] = 0;
    }
}

/* One thread's buffers for the backward; the shapes are those of one block,
 * except `head`, which holds whole-head copies (see the sweeps). */
typedef struct {
    real *head, *kt, *vt, *kblk, *qs, *dob, *p, *ds, *dkacc, *dvacc, *dqacc, *rowsum;
} FN(grad_buffers);

/* One head's problem: its slices of the inputs and outputs, and the sizes. */
typedef struct {
    const real *k, *v, *lse, *drows; /* (Tk, d), (Tk, dv), (Tq,), (Tq,) */
    real *dk_out, *dv_out;           /* (Tk, d), (Tk, dv) */
    int64_t tq, tk, d, dv, dpad, dvpad;
    int causal;
} FN(head_problem);

/* dK and dV of the keys k0 .. k0+bk-1, from every query block that sees
 * them, given the head's scaled Q (qs_all) and dO (do_all), padded.
 * With dq_all (Tq, dpad) != NULL, also dQ += dS K there (unscaled). */
static void FN(key_block_grads)(const FN(grad_buffers) *w, const FN(head_problem) *h,
                                  const real *qs_all, const real *do_all, real *dq_all, int64_t k0)
{
    int64_t bk = min_i64(BK, h->tk - k0), nqb = (h->tq + BQ - 1) / BQ;
    int64_t kn = round_up(bk, NR), kr = round_up(bk, MR); /* the block's keys, padded for the micro-kernel */
    int64_t d = h->d, dv = h->dv, dpad = h->dpad, dvpad = h->dvpad;
    FN(pack_panels_t)(w->kt, h->k + k0 * d, bk, d);
    FN(pack_panels_t)(w->vt, h->v + k0 * dv, bk, dv);
    if (dq_all != NULL)
        FN(pack_rows)(w->kblk, BK, dpad, h->k + k0 * d, bk, d, 1);
    memset(w->dkacc, 0, sizeof(real) * BK * dpad);
    memset(w->dvacc, 0, sizeof(real) * BK * dvpad);
    /* under the causal mask, query blocks ending before k0 see none of these keys */
    for (int64_t qb = h->causal ? k0 / BQ : 0; qb < nqb; qb++) {
        int64_t q0 = qb * BQ, bq = min_i64(BQ, h->tq - q0), bq_pad = round_up(bq, MR);
        const real *qs = qs_all + q0 * dpad, *dob = do_all + q0 * dvpad;
        FN(gemm_acc)(bq_pad, kn, d, qs, dpad, 1, w->kt, BK, w->ds, BK, 0); /* S */
        FN(probabilities)(w->p, w->rowsum, w->ds, h->lse + q0, q0, bq, bq_pad, k0, bk, h->causal);
        FN(gemm_acc)(bq_pad, kn, dv, dob, dvpad, 1, w->vt, BK, w->ds, BK, 0); /* dP = dO V^T */
        FN(score_grad)(w->ds, w->p, h->drows + q0, bq, kn);
        FN(gemm_acc)(kr, dvpad, bq, w->p, 1, BK, dob, dvpad, w->dvacc, dvpad, 1); /* dV += P^T dO */
        FN(gemm_acc)(kr, dpad, bq, w->ds, 1, BK, qs, dpad, w->dkacc, dpad, 1); /* dK += dS^T Q/sqrt(d) */
        if (dq_all != NULL)
            FN(gemm_acc)(bq_pad, dpad, bk, w->ds, BK, 1, w->kblk, dpad, dq_all + q0 * dpad, dpad, 1);
    }
    for (int64_t r = 0; r < bk; r++) {
        memcpy(h->dk_out + (k0 + r) * d, w->dkacc + r * dpad, sizeof(real) * d);
        memcpy(h->dv_out + (k0 + r) * dv, w->dvacc + r * dvpad, sizeof(real) * dv);
    }
}

/* dQ of the queries q0 .. q0+bq-1 from every key block they see, given the
 * head's K^T and V^T panels and its padded K (the head region in sweep 2). */
static void FN(query_block_grads)(const FN(grad_buffers) *w, const FN(head_problem) *h,
                                    const real *q_b, const real *dout_b, real *dq_b, int64_t q0,
                                    real scale)
{
    int64_t d = h->d, dv = h->dv, dpad = h->dpad, dvpad = h->dvpad, tkpad = round_up(h->tk, BK);
    int64_t bq = min_i64(BQ, h->tq - q0), bq_pad = round_up(bq, MR);
    const real *kt_all = w->head;                   /* (Tk/BK, d, BK) K^T panels */
    const real *vt_all = w->head + d * tkpad;       /* (Tk/BK, dv, BK) V^T panels */
    const real *k_all = w->head + (d + dv) * tkpad; /* (Tk, d) K */
    FN(pack_rows)(w->qs, bq_pad, dpad, q_b + q0 * d, bq, d, scale);
    FN(pack_rows)(w->dob, bq_pad, dvpad, dout_b + q0 * dv, bq, dv, 1);
    memset(w->dqacc, 0, sizeof(real) * BQ * dpad);
    int64_t nkb = FN(key_blocks_seen)(q0 / BQ, h->tq, h->tk, h->causal);
    for (int64_t k0 = 0; k0 < nkb * BK; k0 += BK) {
        int64_t bk = min_i64(BK, h->tk - k0), kn = round_up(bk, NR);
        FN(gemm_acc)(bq_pad, kn, d, w->qs, dpad, 1, kt_all + k0 * d, BK, w->ds, BK, 0); /* S */
        FN(probabilities)(w->p, w->rowsum, w->ds, h->lse + q0, q0, bq, bq_pad, k0, bk, h->causal);
        FN(gemm_acc)(bq_pad, kn, dv, w->dob, dvpad, 1, vt_all + k0 * dv, BK, w->ds, BK, 0); /* dP */
        FN(score_grad)(w->ds, w->p, h->drows + q0, bq, kn);
        FN(gemm_acc)(bq_pad, dpad, bk, w->ds, BK, 1, k_all + k0 * dpad, dpad, w->dqacc, dpad, 1); /* dQ += dS K */
    }
    for (int64_t r = 0; r < bq; r++)
        for (int64_t c = 0; c < d; c++)
            dq_b[(q0 + r) * d + c] = w->dqacc[r * dpad + c] * scale;
}

/* One thread slot's buffers for the backward, carved from one arena. */
typedef struct {
    char *base;
    int64_t packed_head; /* the head whose copies sit in w.head; -1 none */
    FN(grad_buffers) w;
} FN(backward_slot);

/* The backward's shared state (threadpool.c's context). */
typedef struct {
    const real *q, *k, *v, *out, *lse, *dout;
    real *dq, *dk, *dvout, *drows;
    int64_t bh, tq, tk, d, dv, dpad, dvpad, tqpad, tkpad, nqb, nkb;
    int causal;
    real scale;
    FN(backward_slot) *slots;
} FN(backward_job);

/* Rows of D = rowsum(dO * O) per work item of the first job. */
#define DROWS_PER_ITEM 1024

static void FN(drows_item)(void *context, int64_t item, int slot)
{
    (void)slot;
    const FN(backward_job) *j = context;
    int64_t dv = j->dv;
    for (int64_t row = item * DROWS_PER_ITEM; row < min_i64((item + 1) * DROWS_PER_ITEM, j->bh * j->tq); row++) {
        real acc = 0;
#pragma omp simd reduction(+ : acc)
        for (int64_t c = 0; c < dv; c++)
            acc += j->dout[row * dv + c] * j->out[row * dv + c];
        j->drows[row] = acc;
    }
}

/* Head b's slices of the inputs and outputs. */
static FN(head_problem) FN(head_of)(const FN(backward_job) *j, int64_t b)
{
    int64_t tq = j->tq, tk = j->tk, d = j->d, dv = j->dv;
    FN(head_problem) h = {j->k + b * tk * d, j->v + b * tk * dv, j->lse + b * tq, j->drows + b * tq,
                          j->dk + b * tk * d, j->dvout + b * tk * dv, tq, tk, d, dv, j->dpad, j->dvpad,
                          j->causal};
    return h;
}

/* The head's scaled Q and dO (and dQ, per head) sit in w.head: */
#define QS_ALL(w) ((w)->head)                                  /* (Tq, d) Q / sqrt(d) */
#define DO_ALL(w, j) ((w)->head + (j)->tqpad * (j)->dpad)      /* (Tq, dv) dO */
#define DQ_ALL(w, j) ((w)->head + (j)->tqpad * ((j)->dpad + (j)->dvpad)) /* (Tq, d) dQ */

/* Work item of the one sweep per head: head `item`, all of it. */
static void FN(head_item)(void *context, int64_t b, int slot)
{
    const FN(backward_job) *j = context;
    FN(grad_buffers) *w = &j->slots[slot].w;
    FN(head_problem) h = FN(head_of)(j, b);
    int64_t tq = j->tq, d = j->d, dpad = j->dpad;
    real *dq_all = DQ_ALL(w, j);
    FN(pack_rows)(QS_ALL(w), j->tqpad, dpad, j->q + b * tq * d, tq, d, j->scale);
    FN(pack_rows)(DO_ALL(w, j), j->tqpad, j->dvpad, j->dout + b * tq * j->dv, tq, j->dv, 1);
    memset(dq_all, 0, sizeof(real) * j->tqpad * dpad);
    for (int64_t k0 = 0; k0 < j->tk; k0 += BK)
        FN(key_block_grads)(w, &h, QS_ALL(w), DO_ALL(w, j), dq_all, k0);
    for (int64_t r = 0; r < tq; r++)
        for (int64_t c = 0; c < d; c++)
            j->dq[(b * tq + r) * d + c] = dq_all[r * dpad + c] * j->scale;
}

/* Work item of sweep 1: key block item % nkb of head item / nkb owns its rows of dK and dV. */
static void FN(key_item)(void *context, int64_t item, int slot)
{
    const FN(backward_job) *j = context;
    FN(backward_slot) *t = &j->slots[slot];
    int64_t b = item / j->nkb;
    FN(head_problem) h = FN(head_of)(j, b);
    if (b != t->packed_head) {
        FN(pack_rows)(QS_ALL(&t->w), j->tqpad, j->dpad, j->q + b * j->tq * j->d, j->tq, j->d, j->scale);
        FN(pack_rows)(DO_ALL(&t->w, j), j->tqpad, j->dvpad, j->dout + b * j->tq * j->dv, j->tq, j->dv, 1);
        t->packed_head = b;
    }
    FN(key_block_grads)(&t->w, &h, QS_ALL(&t->w), DO_ALL(&t->w, j), NULL, item % j->nkb * BK);
}

/* Work item of sweep 2: query block item % nqb of head item / nqb owns its rows of dQ. */
static void FN(query_item)(void *context, int64_t item, int slot)
{
    const FN(backward_job) *j = context;
    FN(backward_slot) *t = &j->slots[slot];
    int64_t b = item / j->nqb, tk = j->tk, d = j->d, dv = j->dv, tkpad = j->tkpad;
    FN(head_problem) h = FN(head_of)(j, b);
    if (b != t->packed_head) {
        FN(pack_panels_t)(t->w.head, h.k, tk, d);
        FN(pack_panels_t)(t->w.head + d * tkpad, h.v, tk, dv);
        FN(pack_rows)(t->w.head + (d + dv) * tkpad, tkpad, j->dpad, h.k, tk, d, 1);
        t->packed_head = b;
    }
    FN(query_block_grads)(&t->w, &h, j->q + b * j->tq * d, j->dout + b * j->tq * dv, j->dq + b * j->tq * d,
                          item % j->nqb * BQ, j->scale);
}

#undef QS_ALL
#undef DO_ALL
#undef DQ_ALL

int FN(attention_backward_flash)(const real *q, const real *k, const real *v,
                                   const real *out, const real *lse, const real *dout,
                                   real *dq, real *dk, real *dvout, int64_t bh,
                                   int64_t tq, int64_t tk, int64_t d, int64_t dv,
                                   int causal, int nthreads)
{
    if (tk < 1 || d < 1)
        return -2; /* softmax over no keys, or scale 1/sqrt(0) */
    int64_t dpad = round_up(d, NR), dvpad = round_up(dv, NR);
    int64_t tqpad = round_up(tq, BQ), tkpad = round_up(tk, BK);
    int64_t nqb = tqpad / BQ, nkb = tkpad / BK;
    int threads = thread_count(nthreads, bh * nkb, 2.0 * bh * tq * tk * (3 * d + 2 * dv), MIN_FLOPS_PER_THREAD);
    /* One sweep per head costs 5 block products per block pair, two sweeps
     * over blocks 7; one sweep wins unless it would leave threads idle. */
    int per_head = 5 * ((bh + threads - 1) / threads) * threads <= 7 * bh;
    real *drows = malloc(sizeof(real) * (bh * tq + 1)); /* (bh, Tq) D = rowsum(dO * O) */
    /* whole-head copies: scaled Q and dO (plus dQ in the per-head sweep), or
     * K^T, V^T and K for the dQ sweep; the sweeps take turns in one buffer */
    int64_t head_q = tqpad * (dpad + dvpad + (per_head ? dpad : 0));
    int64_t head_k = per_head ? 0 : tkpad * (d + dv + dpad);
    int64_t head = head_q > head_k ? head_q : head_k;
    size_t bytes = sizeof(real) * (head + d * BK + dv * BK + BK * dpad + BQ * dpad + BQ * dvpad +
                                   2 * BQ * BK + BK * dpad + BK * dvpad + BQ * dpad + BQ) +
                   12 * ALIGNMENT; /* 12 pieces */
    FN(backward_slot) *slots = calloc((size_t)threads, sizeof *slots);
    int failed = drows == NULL || slots == NULL;
    for (int t = 0; t < threads && !failed; t++) {
        FN(grad_buffers) *w = &slots[t].w;
        arena buf;
        if (!arena_open(&buf, bytes)) {
            failed = 1;
            break;
        }
        slots[t].base = buf.base;
        w->head = arena_take(&buf, sizeof(real) * head);
        w->kt = arena_take(&buf, sizeof(real) * d * BK);       /* (d, BK) K^T */
        w->vt = arena_take(&buf, sizeof(real) * dv * BK);      /* (dv, BK) V^T */
        w->kblk = arena_take(&buf, sizeof(real) * BK * dpad);  /* (BK, d) K */
        w->qs = arena_take(&buf, sizeof(real) * BQ * dpad);    /* (BQ, d) Q / sqrt(d) */
        w->dob = arena_take(&buf, sizeof(real) * BQ * dvpad);  /* (BQ, dv) dO */
        w->p = arena_take(&buf, sizeof(real) * BQ * BK);       /* (BQ, BK) P */
        w->ds = arena_take(&buf, sizeof(real) * BQ * BK);      /* (BQ, BK) S, dP, then dS */
        w->dkacc = arena_take(&buf, sizeof(real) * BK * dpad); /* (BK, d) */
        w->dvacc = arena_take(&buf, sizeof(real) * BK * dvpad); /* (BK, dv) */
        w->dqacc = arena_take(&buf, sizeof(real) * BQ * dpad); /* (BQ, d) */
        w->rowsum = arena_take(&buf, sizeof(real) * BQ);       /* (BQ,) unused: P is normalised */
    }
    if (!failed) {
        FN(backward_job) job = {q, k, v, out, lse, dout, dq, dk, dvout, drows, bh, tq, tk, d, dv, dpad, dvpad,
                                tqpad, tkpad, nqb, nkb, causal, 1 / sqrt((real)d), slots};
        threadpool_run(threads, ceil_div(bh * tq, DROWS_PER_ITEM), FN(drows_item), &job);
        if (per_head) {
            threadpool_run(threads, bh, FN(head_item), &job);
        } else {
            for (int t = 0; t < threads; t++)
                slots[t].packed_head = -1;
            threadpool_run(threads, bh * nkb, FN(key_item), &job);
            for (int t = 0; t < threads; t++)
                slots[t].packed_head = -1;
            threadpool_run(threads, bh * nqb, FN(query_item), &job);
        }
    }
    for (int t = 0; slots != NULL && t < threads; t++)
        free(slots[t].base);
    free(slots);
    free(drows);
    return failed ? -1 : 0;
}

#undef DROWS_PER_ITEM
#undef NR

#endif /* real */
