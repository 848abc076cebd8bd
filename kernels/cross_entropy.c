/* Softmax + cross-entropy over the vocabulary, fused, forward and backward.
 *
 * For logits z (n, v) and integer targets y (n,) (lesson 01_gradient_descent):
 *   lse_i = log sum_c exp(z_ic) = m_i + log sum_c exp(z_ic - m_i),  m_i = max_c z_ic
 *   L     = (1/n) sum_i (lse_i - z_{i,y_i})          the mean of -log softmax(z_i)[y_i]
 *   dz_ic = grad * (exp(z_ic - lse_i) - [c == y_i]) / n
 * The forward keeps only lse (n,): no (n, v) probability array is made; the
 * backward recomputes softmax = exp(z - lse) as it writes dz. The NumPy
 * reference is minigrad/kernels/numpy_backend.py: cross_entropy.
 *
 * Versions: one. Rows are independent: OpenMP threads take blocks of rows;
 * the loss sums the rows in double, in order, so float32 logits lose nothing
 * to the sum over n rows and every run gives the same loss. exp in float32 is common.h's exp_f32 (vectorises).
 *
 * Build: python build.py.  Test: python -m pytest tests/test_kernels_fused.py -q
 * Benchmark: python benchmarks/bench_fused.py
 */
#ifndef TEMPLATE

#include "common.h"
#include "cross_entropy.h"

/* A logit costs an exp: worth ~4 elements of a plain pass (common.h).
 * Threads take blocks of rows as they come free: a thread paused by the OS
 * on a busy machine holds up only its block. */
#define ROWS_PER_BLOCK 16

#define TEMPLATE "cross_entropy.c"
#include "instantiate.h"

double cross_entropy_forward_f32(const float *logits, const int64_t *targets, float *lse,
                                 int64_t n, int64_t v, int nthreads)
{
    return DISPATCH(cross_entropy_forward_f32, (logits, targets, lse, n, v, nthreads));
}

void cross_entropy_backward_f32(const float *logits, const int64_t *targets, const float *lse,
                                double grad, float *dlogits, int64_t n, int64_t v, int nthreads)
{
    DISPATCH(cross_entropy_backward_f32, (logits, targets, lse, grad, dlogits, n, v, nthreads));
}

double cross_entropy_forward_f64(const double *logits, const int64_t *targets, double *lse,
                                 int64_t n, int64_t v, int nthreads)
{
    return DISPATCH(cross_entropy_forward_f64, (logits, targets, lse, n, v, nthreads));
}

void cross_entropy_backward_f64(const double *logits, const int64_t *targets, const double *lse,
                                double grad, double *dlogits, int64_t n, int64_t v, int nthreads)
{
    DISPATCH(cross_entropy_backward_f64, (logits, targets, lse, grad, dlogits, n, v, nthreads));
}

#else /* TEMPLATE: real, FN, EXP, LOG */

/* log sum_c exp(z_c) over one row, shifted by the row max so no exp overflows. */
static real FN(row_logsumexp)(const real *restrict z, int64_t v)
{
    real m = z[0], sum = 0;
#pragma omp simd reduction(max : m)
    for (int64_t c = 0; c < v; c++)
        m = z[c] > m ? z[c] : m;
#pragma omp simd reduction(+ : sum)
    for (int64_t c = 0; c < v; c++)
        sum += EXP(z[c] - m);
    return m + LOG(sum);
}

double FN(cross_entropy_forward)(const real *restrict logits, const int64_t *restrict targets,
                                 real *restrict lse, int64_t n, int64_t v, int nthreads)
{
#pragma omp parallel for schedule(dynamic, ROWS_PER_BLOCK) \
    num_threads(thread_count(nthreads, n, 4.0 * n * v, MIN_ELEMENTS_PER_THREAD))
    for (int64_t i = 0; i < n; i++)
        lse[i] = FN(row_logsumexp)(logits + i * v, v);
    double total = 0; /* summed in row order, after the threads: the same loss on every run */
    for (int64_t i = 0; i < n; i++)
        total += (double)lse[i] - (double)logits[i * v + targets[i]];
    return total / (double)n;
}

void FN(cross_entropy_backward)(const real *logits, const int64_t *restrict targets,
                                const real *restrict lse, double grad, real *dlogits,
                                int64_t n, int64_t v, int nthreads)
{
    real scale = (real)(grad / (double)n);
#pragma omp parallel for schedule(dynamic, ROWS_PER_BLOCK) \
    num_threads(thread_count(nthreads, n, 4.0 * n * v, MIN_ELEMENTS_PER_THREAD))
    for (int64_t i = 0; i < n; i++) {
        const real *z = logits + i * v;
        real *dz = dlogits + i * v, shift = lse[i];
        /* not restrict: dz may be z (in place), each element read before it is written */
#pragma omp simd
        for (int64_t c = 0; c < v; c++)
            dz[c] = EXP(z[c] - shift) * scale;
        dz[targets[i]] -= scale;
    }
}

#endif /* TEMPLATE */
