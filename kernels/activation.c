/* activation.c: the exact GELU, the activation of the GPT's MLP, in one pass over memory.
 *
 *   GELU(x)  = x·Φ(x),  Φ(x) = ½(1 + erf(x/√2))       (PyTorch's default, exact form)
 *   GELU'(x) = Φ(x) + x·φ(x),  φ(x) = exp(−x²/2)/√(2π)
 *
 * NumPy has no erf, so minigrad's NumPy path (minigrad/special.py)
 * evaluates erfc in ~30 array passes. Here each element is one pass, and the
 * forward keeps Φ(x) for the backward.
 *
 * Versions: float64 calls the C library's erfc and exp (one call per element,
 * used by the float64 gradient checks). float32, the training path, must
 * vectorise, and libm calls do not; so it evaluates the same formula as the
 * NumPy path,
 *     erfc(a) = t·exp(−a² + P(u)),  t = 2/(2 + a),  u = 2t − 1,  a ≥ 0,
 * with P the degree-10 polynomial that `erfc_log_correction_fit` in
 * minigrad/special.py fits to math.erfc (its coefficients in erfc_fit.h, which
 * `python -m minigrad.special` writes; error ~1e-7, below float32 resolution),
 * and an exp written out so the compiler
 * turns the whole loop into AVX-512/AVX2 code under -O3 -march=native.
 *
 * Build: python build.py.  Test: python -m pytest tests/test_gelu_kernel.py -q
 */
#include <math.h>
#include <stdint.h>

#include "erfc_fit.h"

/* GCC vectorises the float32 loops only if floating-point comparisons may be assumed not to trap (no
 * program here enables FP exceptions, so nothing changes but the speed). Other compilers decide alone. */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("no-trapping-math")
#endif

#define INV_SQRT2 0.70710678118654752440
#define INV_SQRT_2PI 0.39894228040143267794

/* e^x = 2^n · e^r with n = round(x / ln 2) and r = x − n·ln 2 in [−ln2/2, ln2/2]; ln 2 is split in a
 * part with few bits (so n·LN2_HI is exact) and the rest, so r keeps full precision. e^r is its Taylor
 * series to r^7 (truncation error < 6e-9 relative), and 2^n is written straight into the exponent bits.
 * x is clamped so that 2^n stays a normal float. Comparisons instead of fminf/fmaxf, and rounding by
 * adding and subtracting 1.5·2^23 instead of rintf, because those library calls stop vectorisation. */
static inline float exp_f32(float x)
{
    const float LN2_HI = 0.693359375f, LN2_LO = -2.12194440e-4f, ROUND = 12582912.0f;
    x = x < -87.0f ? -87.0f : x;
    x = x > 88.0f ? 88.0f : x;
    float n = (x * 1.44269504f + ROUND) - ROUND;
    float r = (x - n * LN2_HI) - n * LN2_LO;
    float p = 1.0f / 5040;
    p = p * r + 1.0f / 720;
    p = p * r + 1.0f / 120;
    p = p * r + 1.0f / 24;
    p = p * r + 1.0f / 6;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    union { int32_t bits; float value; } two_n = { .bits = ((int32_t)n + 127) << 23 };
    return p * two_n.value;
}

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

void gelu_forward_f32(const float *restrict x, float *restrict out, float *restrict cdf, int64_t n)
{
    for (int64_t i = 0; i < n; i++) {
        float c = normal_cdf_f32(x[i]);
        cdf[i] = c;
        out[i] = x[i] * c;
    }
}

void gelu_backward_f32(const float *restrict x, const float *restrict cdf, const float *restrict grad,
                       float *restrict dx, int64_t n)
{
    for (int64_t i = 0; i < n; i++) {
        float pdf = exp_f32(-0.5f * x[i] * x[i]) * (float)INV_SQRT_2PI;
        dx[i] = grad[i] * (cdf[i] + x[i] * pdf);
    }
}

void gelu_forward_f64(const double *x, double *out, double *cdf, int64_t n)
{
    for (int64_t i = 0; i < n; i++) {
        double c = 0.5 * erfc(-x[i] * INV_SQRT2);  /* not ½(1 + erf): that cancels in the left tail */
        cdf[i] = c;
        out[i] = x[i] * c;
    }
}

void gelu_backward_f64(const double *x, const double *cdf, const double *grad, double *dx, int64_t n)
{
    for (int64_t i = 0; i < n; i++) {
        double pdf = exp(-0.5 * x[i] * x[i]) * INV_SQRT_2PI;
        dx[i] = grad[i] * (cdf[i] + x[i] * pdf);
    }
}
