/* activation.c: the exact GELU, the activation of the GPT's MLP, in one pass over memory.
 *
 *   GELU(x)  = x·Φ(x),  Φ(x) = ½(1 + erf(x/√2))       (PyTorch's default, exact form)
 *   GELU'(x) = Φ(x) + x·φ(x),  φ(x) = exp(−x²/2)/√(2π)
 *
 * NumPy has no erf, so minigrad's NumPy path (minigrad/special.py)
 * evaluates erfc in ~30 array passes. Here each element is one pass, and the
 * forward keeps Φ(x) for the backward.
 *
 * Versions: one template (kernels/instantiate.h) whose Φ differs by type:
 * float64 calls the C library's erfc (one call per element, used by the
 * float64 gradient checks). float32, the training path, must vectorise, and
 * libm calls do not; so it evaluates the same formula as the NumPy path,
 *     erfc(a) = t·exp(−a² + P(u)),  t = 2/(2 + a),  u = 2t − 1,  a ≥ 0,
 * with P the degree-10 polynomial that `erfc_log_correction_fit` in
 * minigrad/special.py fits to math.erfc (its coefficients in erfc_fit.h, which
 * `python -m minigrad.special` writes; error ~1e-7, below float32 resolution),
 * and common.h's exp_f32, so the compiler turns the whole loop into SSE2,
 * AVX2 or AVX-512 code in each instruction set's copy.
 *
 * Build: python build.py.  Test: python -m pytest tests/test_gelu_kernel.py tests/test_kernels_fused.py -q
 */
#ifndef TEMPLATE

#include "common.h"
#include "activation.h"
#include "erfc_fit.h"

#define INV_SQRT2 0.70710678118654752440
#define INV_SQRT_2PI 0.39894228040143267794

/* Φ(x) from erfc(|x|/√2), so that the left tail keeps its relative accuracy. */
static inline float normal_cdf_f32(float x)
{
    float a = fabsf(x) * (float)INV_SQRT2;
    float t = 2.0f / (2.0f + a);
    float u = 2.0f * t - 1.0f;
    float p = ERFC_FIT_F32[0];
    for (int i = 1; i <= ERFC_FIT_DEGREE; i++)  /* fully unrolled by the compiler: constant bounds */
        p = p * u + ERFC_FIT_F32[i];
    float half_tail = 0.5f * t * exp_f32(p - a * a);
    return x < 0.0f ? half_tail : 1.0f - half_tail;
}

static inline double normal_cdf_f64(double x)
{
    return 0.5 * erfc(-x * INV_SQRT2);  /* not ½(1 + erf): that cancels in the left tail */
}

/* The forward's element (erfc and exp) is worth ~2 of a plain pass
 * (common.h), the backward's ~1; threads take chunks of 8192 elements as
 * they come free (a paused thread holds up one chunk). */
#define CHUNK 8192

/* Φ of a float or a double: the function for the template's `real`. */
#define NORMAL_CDF(x) _Generic((x), float: normal_cdf_f32, double: normal_cdf_f64)(x)

#define TEMPLATE "activation.c"
#include "instantiate.h"

void gelu_forward_f32(const float *x, float *out, float *cdf, int64_t n, int nthreads)
{
    DISPATCH(gelu_forward_f32, (x, out, cdf, n, nthreads));
}

void gelu_backward_f32(const float *x, const float *cdf, const float *grad, float *dx, int64_t n, int nthreads)
{
    DISPATCH(gelu_backward_f32, (x, cdf, grad, dx, n, nthreads));
}

void gelu_forward_f64(const double *x, double *out, double *cdf, int64_t n, int nthreads)
{
    DISPATCH(gelu_forward_f64, (x, out, cdf, n, nthreads));
}

void gelu_backward_f64(const double *x, const double *cdf, const double *grad, double *dx, int64_t n,
                       int nthreads)
{
    DISPATCH(gelu_backward_f64, (x, cdf, grad, dx, n, nthreads));
}

#else /* TEMPLATE: real, FN, EXP */

void FN(gelu_forward)(const real *restrict x, real *restrict out, real *restrict cdf, int64_t n, int nthreads)
{
#pragma omp parallel for simd schedule(dynamic, CHUNK) \
    num_threads(thread_count(nthreads, ceil_div(n, CHUNK), 2.0 * n, MIN_ELEMENTS_PER_THREAD))
    for (int64_t i = 0; i < n; i++) {
        real c = NORMAL_CDF(x[i]);
        cdf[i] = c;
        out[i] = x[i] * c;
    }
}

void FN(gelu_backward)(const real *restrict x, const real *restrict cdf, const real *restrict grad,
                       real *restrict dx, int64_t n, int nthreads)
{
#pragma omp parallel for simd schedule(dynamic, CHUNK) \
    num_threads(thread_count(nthreads, ceil_div(n, CHUNK), (double)n, MIN_ELEMENTS_PER_THREAD))
    for (int64_t i = 0; i < n; i++) {
        real pdf = EXP((real)-0.5 * x[i] * x[i]) * (real)INV_SQRT_2PI;
        dx[i] = grad[i] * (cdf[i] + x[i] * pdf);
    }
}

#endif /* TEMPLATE */
