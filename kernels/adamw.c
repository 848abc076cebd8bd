/* AdamW: every parameter of a model updated in one call, one pass over memory.
 *
 * For each parameter element, with gradient g and step count t (lesson
 * 01_gradient_descent; PyTorch's torch.optim.AdamW):
 *   theta <- theta (1 - lr wd)                        decoupled weight decay
 *   m     <- beta1 m + (1 - beta1) g
 *   v     <- beta2 v + (1 - beta2) g^2
 *   theta <- theta - lr/(1 - beta1^t) * m / (sqrt(v)/sqrt(1 - beta2^t) + eps)
 * The NumPy reference is minigrad/kernels/numpy_backend.py: adamw_step, which
 * calls optim/adam.py's decoupled_weight_decay and adam_step per tensor;
 * here the four arrays are read and written once per element, in one loop.
 *
 * Versions: one. The tensors' elements are numbered one after the other and
 * OpenMP threads take chunks of that numbering as they come free, so a model
 * with one large and many small tensors still splits evenly, and a thread
 * the OS pauses on a busy machine holds up only its chunk.
 *
 * Build: python build.py.  Test: python -m pytest tests/test_kernels_fused.py -q
 * Benchmark: python benchmarks/bench_fused.py
 */
#ifndef TEMPLATE

#include "common.h"
#include "adamw.h"

/* Threads take chunks of 2^15 elements as they come free. */
#define CHUNK ((int64_t)1 << 15)

#define TEMPLATE "adamw.c"
#include "instantiate.h"

void adamw_step_f32(int64_t count, float **params, float **grads, float **exp_avgs, float **exp_avg_sqs,
                    const int64_t *sizes, const int64_t *steps, double lr, double beta1, double beta2,
                    double eps, double weight_decay, int nthreads)
{
    DISPATCH(adamw_step_f32, (count, params, grads, exp_avgs, exp_avg_sqs, sizes, steps, lr, beta1, beta2,
                              eps, weight_decay, nthreads));
}

void adamw_step_f64(int64_t count, double **params, double **grads, double **exp_avgs, double **exp_avg_sqs,
                    const int64_t *sizes, const int64_t *steps, double lr, double beta1, double beta2,
                    double eps, double weight_decay, int nthreads)
{
    DISPATCH(adamw_step_f64, (count, params, grads, exp_avgs, exp_avg_sqs, sizes, steps, lr, beta1, beta2,
                              eps, weight_decay, nthreads));
}

#else /* TEMPLATE: real, FN, SQRT */

/* The update above on elements [lo, hi) of one tensor. */
static void FN(adamw_range)(real *restrict p, const real *restrict g, real *restrict m, real *restrict v,
                            int64_t lo, int64_t hi, int64_t step, double lr, double beta1, double beta2,
                            double eps, double weight_decay)
{
    real decay = (real)(1 - lr * weight_decay);
    real b1 = (real)beta1, b2 = (real)beta2, one_b1 = (real)(1 - beta1), one_b2 = (real)(1 - beta2);
    real step_size = (real)(lr / (1 - pow(beta1, (double)step)));
    real sqrt_bc2 = (real)sqrt(1 - pow(beta2, (double)step));
    real e = (real)eps;
#pragma omp simd
    for (int64_t i = lo; i < hi; i++) {
        m[i] = b1 * m[i] + one_b1 * g[i];
        v[i] = b2 * v[i] + one_b2 * (g[i] * g[i]);
        p[i] = p[i] * decay - m[i] / (SQRT(v[i]) / sqrt_bc2 + e) * step_size;
    }
}

void FN(adamw_step)(int64_t count, real **params, real **grads, real **exp_avgs, real **exp_avg_sqs,
                    const int64_t *sizes, const int64_t *steps, double lr, double beta1, double beta2,
                    double eps, double weight_decay, int nthreads)
{
    int64_t total = 0;
    for (int64_t t = 0; t < count; t++)
        total += sizes[t];
    int64_t chunks = ceil_div(total, CHUNK);
#pragma omp parallel for schedule(dynamic, 1) \
    num_threads(thread_count(nthreads, chunks, (double)total, MIN_ELEMENTS_PER_THREAD))
    for (int64_t chunk = 0; chunk < chunks; chunk++) {
        /* elements [begin, end) of the numbering, tensor after tensor */
        int64_t begin = chunk * CHUNK, end = min_i64(begin + CHUNK, total);
        int64_t offset = 0; /* index of tensor t's first element in the numbering */
        for (int64_t t = 0; t < count && offset < end; offset += sizes[t], t++) {
            int64_t lo = max_i64(begin - offset, 0), hi = min_i64(end - offset, sizes[t]);
            if (lo < hi)
                FN(adamw_range)(params[t], grads[t], exp_avgs[t], exp_avg_sqs[t], lo, hi, steps[t],
                                lr, beta1, beta2, eps, weight_decay);
        }
    }
}

#endif /* TEMPLATE */
