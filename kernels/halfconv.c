/* halfconv.c: float16 and bfloat16 to and from float32, one pass over memory (lesson 12).
 *
 * 16-bit floats are stored, computed in float32 (products accumulate there) and rounded back once, as
 * PyTorch's CPU kernels do; NumPy converts float16 one element at a time in software, which made the
 * conversions cost more than the products they surround. Rounding is to nearest, ties to even, in both
 * directions that round:
 *
 *   bfloat16 = the upper 16 bits of the float32 pattern, rounded:  (b + 0x7FFF + ((b >> 16) & 1)) >> 16,
 *              NaN kept a (quiet) NaN; widening is the exact b << 16. Plain C, the compiler vectorises it.
 *   float16  = 1 sign, 5 exponent, 10 mantissa bits: the F16C instructions (VCVTPS2PH / VCVTPH2PS, eight
 *              at a time) where the CPU has them, detected at run time; otherwise a portable bit-level
 *              conversion (normal, subnormal, overflow to inf, NaN) written out below.
 *
 * Build: python build.py.  Test: python -m pytest tests/test_precision.py -q -k conversion
 */
#include <stdint.h>
#include <string.h>

#include "halfconv.h"

#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
#define HAVE_F16C_PATH 1
#include <immintrin.h>
#endif

static uint32_t float_bits(float x) { uint32_t b; memcpy(&b, &x, 4); return b; }
static float bits_float(uint32_t b) { float x; memcpy(&x, &b, 4); return x; }

int halfconv_has_f16c(void)
{
#ifdef HAVE_F16C_PATH
    __builtin_cpu_init();
    return __builtin_cpu_supports("f16c") && __builtin_cpu_supports("avx");
#else
    return 0;
#endif
}

/* ----------------------------------------------------------------- bfloat16 */

void bf16_to_f32(const uint16_t *in, float *out, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        out[i] = bits_float((uint32_t)in[i] << 16);
}

void f32_to_bf16(const float *in, uint16_t *out, int64_t n)
{
    for (int64_t i = 0; i < n; i++) {
        uint32_t b = float_bits(in[i]);
        uint32_t rounded = (b + 0x7FFFu + ((b >> 16) & 1u)) >> 16;
        int nan = (b & 0x7FFFFFFFu) > 0x7F800000u;
        out[i] = (uint16_t)(nan ? (b >> 16) | 0x40u : rounded);
    }
}

/* ----------------------------------------------------------------- float16, portable */

static float half_to_float(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16, exponent = (h >> 10) & 0x1Fu, mantissa = h & 0x3FFu;
    if (exponent == 0x1F)  /* inf or NaN */
        return bits_float(sign | 0x7F800000u | (mantissa << 13));
    if (exponent == 0) {   /* zero or subnormal: mantissa · 2^-24, exact in float32 */
        float value = (float)mantissa * 5.9604644775390625e-8f;
        return sign ? -value : value;
    }
    return bits_float(sign | ((exponent + 112) << 23) | (mantissa << 13));
}

static uint16_t float_to_half(float x)
{
    uint32_t b = float_bits(x), sign = (b >> 16) & 0x8000u, abs_bits = b & 0x7FFFFFFFu;
    if (abs_bits > 0x7F800000u)  /* NaN: keep it quiet */
        return (uint16_t)(sign | 0x7E00u | ((abs_bits >> 13) & 0x3FFu));
    if (abs_bits >= 0x477FF000u)  /* ≥ 65520 rounds past the largest half, 65504: inf */
        return (uint16_t)(sign | 0x7C00u);
    if (abs_bits < 0x38800000u) {  /* below 2^-14: a subnormal half, units of 2^-24, ties to even */
        if (abs_bits < 0x33000000u)  /* below 2^-25: rounds to zero (2^-25 itself is a tie, to even 0) */
            return (uint16_t)sign;
        uint32_t mantissa = (abs_bits & 0x7FFFFFu) | 0x800000u;
        int shift = 126 - (int)(abs_bits >> 23);  /* value = mantissa · 2^(e − 150), want units of 2^-24 */
        uint32_t q = mantissa >> shift, rest = mantissa & ((1u << shift) - 1), half = 1u << (shift - 1);
        q += rest > half || (rest == half && (q & 1u));
        return (uint16_t)(sign | q);
    }
    uint32_t rebased = abs_bits - 0x38000000u;  /* exponent − 112 */
    uint32_t q = rebased >> 13, rest = rebased & 0x1FFFu;
    q += rest > 0x1000u || (rest == 0x1000u && (q & 1u));  /* a carry into the exponent is right */
    return (uint16_t)(sign | q);
}

void f16_to_f32_portable(const uint16_t *in, float *out, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        out[i] = half_to_float(in[i]);
}

void f32_to_f16_portable(const float *in, uint16_t *out, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        out[i] = float_to_half(in[i]);
}

/* ----------------------------------------------------------------- float16, F16C */

#ifdef HAVE_F16C_PATH
__attribute__((target("avx,f16c")))
static void f16_to_f32_f16c(const uint16_t *in, float *out, int64_t n)
{
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(out + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(in + i))));
    f16_to_f32_portable(in + i, out + i, n - i);
}

__attribute__((target("avx,f16c")))
static void f32_to_f16_f16c(const float *in, uint16_t *out, int64_t n)
{
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm_storeu_si128((__m128i *)(out + i),
                         _mm256_cvtps_ph(_mm256_loadu_ps(in + i), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    f32_to_f16_portable(in + i, out + i, n - i);
}
#endif

void f16_to_f32(const uint16_t *in, float *out, int64_t n)
{
#ifdef HAVE_F16C_PATH
    if (halfconv_has_f16c()) {
        f16_to_f32_f16c(in, out, n);
        return;
    }
#endif
    f16_to_f32_portable(in, out, n);
}

void f32_to_f16(const float *in, uint16_t *out, int64_t n)
{
#ifdef HAVE_F16C_PATH
    if (halfconv_has_f16c()) {
        f32_to_f16_f16c(in, out, n);
        return;
    }
#endif
    f32_to_f16_portable(in, out, n);
}
