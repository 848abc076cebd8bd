/* Layer normalisation, forward and backward, one pass over each row.
 *
 * For each row x (c,) of the (n, c) input (lesson 05_transformer):
 *   mean = (1/c) sum_j x_j,   var = (1/c) sum_j (x_j - mean)^2,   rstd = 1/sqrt(var + eps)
 *   xhat = (x - mean) * rstd,  out = xhat * weight + bias
 * The forward saves mean and rstd (n,) for the backward, which recomputes
 * xhat from them instead of keeping an (n, c) array. With g = dout and
 * ghat = g * weight:
 *   dx = rstd * (ghat - mean_j(ghat) - xhat * mean_j(ghat * xhat))
 *   dweight = sum over rows of g * xhat,   dbias = sum over rows of g
 * The NumPy reference is minigrad/kernels/numpy_backend.py: layer_norm.
 *
 * Versions: one. Rows are independent, so OpenMP threads take blocks of
 * rows; in the backward each block of rows sums its dweight and dbias into
 * its own (c,) buffers, added up in block order at the end: no atomics, and
 * the same sums in the same order on every run, whatever the threads do.
 * The variance is computed from the centred values (two reads of a row that
 * sits in L1), not as E[x^2] - mean^2, which cancels when |mean| >> std.
 *
 * Build: python build.py.  Test: python -m pytest tests/test_kernels_fused.py -q
 * Benchmark: python benchmarks/bench_fused.py
 */
#ifndef TEMPLATE

#include "common.h"
#include "layernorm.h"

/* Threads take blocks of rows as they come free (a thread the OS pauses on a
 * busy machine holds up only its block), and the backward sums dweight and
 * dbias per block, then over blocks in order: the same result on every run. */
#define ROWS_PER_BLOCK 32

#define TEMPLATE "layernorm.c"
#include "instantiate.h"

int layernorm_forward_f32(const float *x, const float *weight, const float *bias, float *out,
                          float *mean, float *rstd, int64_t n, int64_t c, double eps, int nthreads)
{
    return DISPATCH(layernorm_forward_f32, (x, weight, bias, out, mean, rstd, n, c, eps, nthreads));
}

int layernorm_backward_f32(const float *x, const float *weight, const float *mean, const float *rstd,
                           const float *dout, float *dx, float *dweight, float *dbias,
                           int64_t n, int64_t c, int nthreads)
{
    return DISPATCH(layernorm_backward_f32, (x, weight, mean, rstd, dout, dx, dweight, dbias, n, c, nthreads));
}

int layernorm_forward_f64(const double *x, const double *weight, const double *bias, double *out,
                          double *mean, double *rstd, int64_t n, int64_t c, double eps, int nthreads)
{
    return DISPATCH(layernorm_forward_f64, (x, weight, bias, out, mean, rstd, n, c, eps, nthreads));
}

int layernorm_backward_f64(const double *x, const double *weight, const double *mean, const double *rstd,
                           const double *dout, double *dx, double *dweight, double *dbias,
                           int64_t n, int64_t c, int nthreads)
{
    return DISPATCH(layernorm_backward_f64, (x, weight, mean, rstd, dout, dx, dweight, dbias, n, c, nthreads));
}

#else /* TEMPLATE: real, FN, SQRT */

int FN(layernorm_forward)(const real *restrict x, const real *restrict weight, const real *restrict bias,
                          real *restrict out, real *restrict mean, real *restrict rstd,
                          int64_t n, int64_t c, double eps, int nthreads)
{
#pragma omp parallel for schedule(dynamic, ROWS_PER_BLOCK) \
    num_threads(thread_count(nthreads, n, (double)n * c, MIN_ELEMENTS_PER_THREAD))
    for (int64_t i = 0; i < n; i++) {
        const real *xi = x + i * c;
        real *oi = out + i * c;
        /* sum x_j - x_0, not x_j: terms near 0 keep the float32 sum accurate when |mean| >> std */
        real shift = xi[0], sum = 0, sq = 0;
#pragma omp simd reduction(+ : sum)
        for (int64_t j = 0; j < c; j++)
            sum += xi[j] - shift;
        real m = shift + sum / (real)c;
#pragma omp simd reduction(+ : sq)
        for (int64_t j = 0; j < c; j++)
            sq += (xi[j] - m) * (xi[j] - m);
        real r = 1 / SQRT(sq / (real)c + (real)eps);
        mean[i] = m;
        rstd[i] = r;
#pragma omp simd
        for (int64_t j = 0; j < c; j++) {
            real xhat = (xi[j] - m) * r;
            oi[j] = (weight ? xhat * weight[j] : xhat) + (bias ? bias[j] : 0);
        }
    }
    return 0;
}

int FN(layernorm_backward)(const real *restrict x, const real *restrict weight, const real *restrict mean,
                           const real *restrict rstd, const real *restrict dout, real *restrict dx,
                           real *restrict dweight, real *restrict dbias, int64_t n, int64_t c, int nthreads)
{
    int64_t blocks = ceil_div(n, ROWS_PER_BLOCK);
    /* (blocks, 2, c): each block's partial dweight and dbias, summed in block order at the end */
    real *partial = aligned_buffer(sizeof(real) * (size_t)blocks * 2 * (size_t)c);
    if (partial == NULL)
        return -1;

#pragma omp parallel for schedule(dynamic, 1) \
    num_threads(thread_count(nthreads, blocks, (double)n * c, MIN_ELEMENTS_PER_THREAD))
    for (int64_t block = 0; block < blocks; block++) {
        real *dw = partial + (size_t)block * 2 * c, *db = dw + c;
        memset(dw, 0, sizeof(real) * 2 * (size_t)c);
        for (int64_t i = block * ROWS_PER_BLOCK; i < min_i64(n, (block + 1) * ROWS_PER_BLOCK); i++) {
            const real *xi = x + i * c, *gi = dout + i * c;
            real *dxi = dx + i * c;
            real m = mean[i], r = rstd[i];
            real ghat_mean = 0, ghat_xhat_mean = 0;
#pragma omp simd reduction(+ : ghat_mean, ghat_xhat_mean)
            for (int64_t j = 0; j < c; j++) {
                real xhat = (xi[j] - m) * r;
                real ghat = weight ? gi[j] * weight[j] : gi[j];
                ghat_mean += ghat;
                ghat_xhat_mean += ghat * xhat;
            }
            ghat_mean /= (real)c;
            ghat_xhat_mean /= (real)c;
#pragma omp simd
            for (int64_t j = 0; j < c; j++) {
                real xhat = (xi[j] - m) * r;
                real ghat = weight ? gi[j] * weight[j] : gi[j];
                dxi[j] = r * (ghat - ghat_mean - xhat * ghat_xhat_mean);
                dw[j] += gi[j] * xhat;
                db[j] += gi[j];
            }
        }
    }
    for (int64_t j = 0; j < c; j++) {
        real w_sum = 0, b_sum = 0;
        for (int64_t block = 0; block < blocks; block++) {
            w_sum += partial[(size_t)block * 2 * c + j];
            b_sum += partial[(size_t)block * 2 * c + c + j];
        }
        if (dweight)
            dweight[j] = w_sum;
        if (dbias)
            dbias[j] = b_sum;
    }
    free(partial);
    return 0;
}

#endif /* TEMPLATE */
