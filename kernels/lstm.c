/* lstm.c: one LSTM layer over all T time steps, and its backward through time (lesson 03_rnn).
 *
 * Gates in PyTorch's order i, f, g, o; gx_t = x_t W_ihᵀ + b_ih + b_hh comes in precomputed for every
 * step at once (one big matmul in Python), so a step is
 *   [i, f, g, o] = σ, σ, tanh, σ of (gx_t + h_{t−1} W_hhᵀ)          (B, 4H)
 *   c_t = f ⊙ c_{t−1} + i ⊙ g,   h_t = o ⊙ tanh(c_t)                   (B, H)
 * and its backward, from dh = dL/dh_t (from the output and from step t+1) and dc = dL/dc_t:
 *   dc += dh ⊙ o ⊙ (1 − tanh²c_t)
 *   d[i, f, g, o] = [dc ⊙ g ⊙ i(1 − i), dc ⊙ c_{t−1} ⊙ f(1 − f), dc ⊙ i ⊙ (1 − g²), dh ⊙ tanh c_t ⊙ o(1 − o)]
 *   dc_{t−1} = dc ⊙ f,   dh_{t−1} = d[i, f, g, o] W_hh,   dgx_t = d[i, f, g, o]
 * and after the last step back, dW_hh = Σ_t d[i, f, g, o]_tᵀ h_{t−1}: one product over all steps.
 * The NumPy reference is minigrad/kernels/numpy_backend.py: lstm, lstm_backward (the same formulas, one
 * NumPy call per line, in minigrad/nn/recurrent.py: lstm_step_forward, lstm_step_backward).
 *
 * What makes it fast is what Python could not do: per step, one small product and one pass over the
 * gates (their activations, c and h fused) instead of ~25 NumPy calls. The per-step product, (B, H) by
 * (H, 4H) forward and (B, 4H) by (4H, H) backward, uses the same W_hh at all T steps, so W_hh is laid
 * out once per call in the order the product reads it (row-major, columns zero-padded to whole vectors)
 * rather than packed again at every step as matmul.c's general GEMM would; the product then keeps a tile
 * of 4 rows x 2 vectors of its result in registers (matmul.c's micro-kernel idea, with the weight matrix
 * read in place). dW_hh, big and summed over all steps, goes to matmul.c's parallel GEMM.
 *
 * Versions: one. float32's σ and tanh are built on common.h's exp_f32, so the gate loop vectorises;
 * float64 (the gradient checks) calls the C library's exp and tanh.
 *
 * Build: python build.py.  Test: python -m pytest tests/test_kernels_lstm.py tests/test_recurrent.py -q
 * Benchmark: python benchmarks/bench_rnn_step.py --cell lstm
 */
#ifndef TEMPLATE

#include "common.h"
#include "lstm.h"
#include "matmul.h"

/* σ(x) = 1/(1 + e^−x), from e^−|x| ≤ 1: never overflows (exp_f32 needs x ≤ 88), no cancellation. */
static inline float sigmoid_f32(float x)
{
    float e = exp_f32(-fabsf(x)), s = 1.0f / (1.0f + e);
    return x >= 0.0f ? s : e * s;
}

static inline double sigmoid_f64(double x)
{
    double e = exp(-fabs(x)), s = 1.0 / (1.0 + e);
    return x >= 0.0 ? s : e * s;
}

/* tanh x = sign(x)·(1 − e^−2|x|)/(1 + e^−2|x|). Below |x| = 1/8, where 1 − e^−2|x| would cancel, its
 * series x − x³/3 + 2x⁵/15 − 17x⁷/315 instead (the next term is 1e−9 of x there). */
static inline float tanh_f32(float x)
{
    float a = fabsf(x), x2 = x * x, e = exp_f32(-2.0f * a);
    float series = x * (1.0f + x2 * (-1.0f / 3 + x2 * (2.0f / 15 + x2 * (-17.0f / 315))));
    return a < 0.125f ? series : copysignf((1.0f - e) / (1.0f + e), x);
}

/* σ and tanh of a float or a double: the functions for the template's `real`. */
#define SIGMOID(x) _Generic((x), float: sigmoid_f32, double: sigmoid_f64)(x)
#define TANH(x) _Generic((x), float: tanh_f32, double: tanh)(x)

/* matmul.c's parallel GEMM for the template's `real`: matmul_parallel_f32 or _f64. */
#define PASTE_(a, b) a##_##b
#define PASTE(a, b) PASTE_(a, b)
#define GEMM PASTE(matmul_parallel, SUFFIX)

/* Rows of the per-step product's register tile (x 2 vectors: 8 accumulators). */
#define ROWS 4

#define TEMPLATE "lstm.c"
#include "instantiate.h"

int lstm_forward_f32(const float *gx, const float *h0, const float *c0, const float *w_hh,
                     float *out, float *gates, int64_t T, int64_t B, int64_t H)
{
    return DISPATCH(lstm_forward_f32, (gx, h0, c0, w_hh, out, gates, T, B, H));
}

int lstm_backward_f32(const float *h0, const float *c0, const float *w_hh, const float *out, const float *gates,
                      const float *grad_out, float *dgx, float *dh0, float *dc0, float *dw_hh,
                      int64_t T, int64_t B, int64_t H, int nthreads)
{
    return DISPATCH(lstm_backward_f32, (h0, c0, w_hh, out, gates, grad_out, dgx, dh0, dc0, dw_hh, T, B, H,
                                        nthreads));
}

int lstm_forward_f64(const double *gx, const double *h0, const double *c0, const double *w_hh,
                     double *out, double *gates, int64_t T, int64_t B, int64_t H)
{
    return DISPATCH(lstm_forward_f64, (gx, h0, c0, w_hh, out, gates, T, B, H));
}

int lstm_backward_f64(const double *h0, const double *c0, const double *w_hh, const double *out,
                      const double *gates, const double *grad_out, double *dgx, double *dh0, double *dc0,
                      double *dw_hh, int64_t T, int64_t B, int64_t H, int nthreads)
{
    return DISPATCH(lstm_backward_f64, (h0, c0, w_hh, out, gates, grad_out, dgx, dh0, dc0, dw_hh, T, B, H,
                                        nthreads));
}

#else /* TEMPLATE: real, FN, VECTOR_BYTES */

/* out (m x n) = a (m x k, row stride lda) · w (k x n), w and out row-major with n a multiple of two
 * vectors (zero-padded columns) and 64-byte aligned. A tile of ROWS rows x 2 vectors of out stays in
 * registers over the whole sum; the rows past m of the last tile re-read row 0 and are not stored. */
static void FN(step_product)(int64_t m, int64_t n, int64_t k, const real *restrict a, int64_t lda,
                             const real *restrict w, real *restrict out)
{
    typedef real vec __attribute__((vector_size(VECTOR_BYTES)));
    enum { W = VECTOR_BYTES / sizeof(real) };
    for (int64_t j = 0; j < n; j += 2 * W) {
        for (int64_t i = 0; i < m; i += ROWS) {
            const real *r0 = a + i * lda, *r1 = a + (i + 1 < m ? i + 1 : i) * lda;
            const real *r2 = a + (i + 2 < m ? i + 2 : i) * lda, *r3 = a + (i + 3 < m ? i + 3 : i) * lda;
            vec c00 = {0}, c01 = {0}, c10 = {0}, c11 = {0}, c20 = {0}, c21 = {0}, c30 = {0}, c31 = {0};
            for (int64_t p = 0; p < k; p++) {
                vec w0, w1;
                memcpy(&w0, w + p * n + j, sizeof w0);
                memcpy(&w1, w + p * n + j + W, sizeof w1);
                c00 += r0[p] * w0; c01 += r0[p] * w1;
                c10 += r1[p] * w0; c11 += r1[p] * w1;
                c20 += r2[p] * w0; c21 += r2[p] * w1;
                c30 += r3[p] * w0; c31 += r3[p] * w1;
            }
            vec tile[ROWS][2] = {{c00, c01}, {c10, c11}, {c20, c21}, {c30, c31}};
            for (int64_t r = 0; r < min_i64(ROWS, m - i); r++)
                memcpy(out + (i + r) * n + j, tile[r], sizeof tile[r]);
        }
    }
}

/* One step forward, fused: gates, c_t and h_t in one pass over (B, H). pre (row stride ldp) holds
 * h_{t−1} W_hhᵀ; gx, gates (B, 4H); c_prev, c, h (B, H). */
static void FN(gates_forward)(int64_t B, int64_t H, const real *restrict gx, const real *restrict pre,
                              int64_t ldp, const real *restrict c_prev, real *restrict gates,
                              real *restrict c, real *restrict h)
{
    for (int64_t b = 0; b < B; b++) {
        const real *x = gx + b * 4 * H, *p = pre + b * ldp, *cp = c_prev + b * H;
        real *act = gates + b * 4 * H, *cb = c + b * H, *hb = h + b * H;
#pragma omp simd
        for (int64_t j = 0; j < H; j++) {
            real i = SIGMOID(x[j] + p[j]), f = SIGMOID(x[H + j] + p[H + j]);
            real g = TANH(x[2 * H + j] + p[2 * H + j]), o = SIGMOID(x[3 * H + j] + p[3 * H + j]);
            real c_new = f * cp[j] + i * g;
            act[j] = i, act[H + j] = f, act[2 * H + j] = g, act[3 * H + j] = o;
            cb[j] = c_new;
            hb[j] = o * TANH(c_new);
        }
    }
}

/* One step backward, fused: dgates (B, 4H) from dh = grad_h + dh_next (dh_next row stride ldd: the
 * product through W_hh of step t+1) and dc (B, H), which it turns into dc_{t−1} in place. */
static void FN(gates_backward)(int64_t B, int64_t H, const real *restrict grad_h, const real *restrict dh_next,
                               int64_t ldd, const real *restrict grad_c, const real *restrict c,
                               const real *restrict c_prev, const real *restrict gates, real *restrict dc,
                               real *restrict dgates)
{
    for (int64_t b = 0; b < B; b++) {
        const real *gh = grad_h + b * H, *dn = dh_next + b * ldd, *gc = grad_c + b * H;
        const real *cb = c + b * H, *cp = c_prev + b * H, *act = gates + b * 4 * H;
        real *dcb = dc + b * H, *d = dgates + b * 4 * H;
#pragma omp simd
        for (int64_t j = 0; j < H; j++) {
            real i = act[j], f = act[H + j], g = act[2 * H + j], o = act[3 * H + j];
            real dh = gh[j] + dn[j], tc = TANH(cb[j]);
            real dcj = dcb[j] + gc[j] + dh * o * (1 - tc * tc);
            d[j] = dcj * g * i * (1 - i);
            d[H + j] = dcj * cp[j] * f * (1 - f);
            d[2 * H + j] = dcj * i * (1 - g * g);
            d[3 * H + j] = dh * tc * o * (1 - o);
            dcb[j] = dcj * f;
        }
    }
}

int FN(lstm_forward)(const real *gx, const real *h0, const real *c0, const real *w_hh,
                     real *out, real *gates, int64_t T, int64_t B, int64_t H)
{
    enum { W = VECTOR_BYTES / sizeof(real) };
    int64_t G = 4 * H, Gp = round_up(G, 2 * W), BH = B * H;
    real *wt = aligned_buffer((size_t)(H * Gp) * sizeof(real));   /* W_hhᵀ (H, Gp), zero-padded columns */
    real *pre = aligned_buffer((size_t)(B * Gp) * sizeof(real));  /* h_{t−1} W_hhᵀ (B, Gp) */
    if (wt == NULL || pre == NULL) {
        free(wt);
        free(pre);
        return -1;
    }
    for (int64_t p = 0; p < H; p++)
        for (int64_t j = 0; j < Gp; j++)
            wt[p * Gp + j] = j < G ? w_hh[j * H + p] : 0;
    real *hs = out, *cs = out + T * BH;
    for (int64_t t = 0; t < T; t++) {
        const real *h_prev = t ? hs + (t - 1) * BH : h0, *c_prev = t ? cs + (t - 1) * BH : c0;
        FN(step_product)(B, Gp, H, h_prev, H, wt, pre);
        FN(gates_forward)(B, H, gx + t * B * G, pre, Gp, c_prev, gates + t * B * G, cs + t * BH, hs + t * BH);
    }
    free(wt);
    free(pre);
    return 0;
}

int FN(lstm_backward)(const real *h0, const real *c0, const real *w_hh, const real *out, const real *gates,
                      const real *grad_out, real *dgx, real *dh0, real *dc0, real *dw_hh,
                      int64_t T, int64_t B, int64_t H, int nthreads)
{
    enum { W = VECTOR_BYTES / sizeof(real) };
    int64_t G = 4 * H, Hp = round_up(H, 2 * W), BH = B * H;
    if (T == 0) {  /* no step: nothing flows back (and dW_hh's product below would read step 0) */
        memset(dh0, 0, (size_t)BH * sizeof(real));
        memset(dc0, 0, (size_t)BH * sizeof(real));
        memset(dw_hh, 0, (size_t)(G * H) * sizeof(real));
        return 0;
    }
    real *w = aligned_buffer((size_t)(G * Hp) * sizeof(real));    /* W_hh (G, Hp), zero-padded columns */
    real *dh = aligned_buffer((size_t)(B * Hp) * sizeof(real));   /* dL/dh_t through step t+1 (B, Hp) */
    if (w == NULL || dh == NULL) {
        free(w);
        free(dh);
        return -1;
    }
    for (int64_t r = 0; r < G; r++)
        for (int64_t j = 0; j < Hp; j++)
            w[r * Hp + j] = j < H ? w_hh[r * H + j] : 0;
    memset(dh, 0, (size_t)(B * Hp) * sizeof(real));
    memset(dc0, 0, (size_t)BH * sizeof(real));  /* dc0 carries dL/dc_t down the steps, dc_{−1} at the end */
    const real *hs = out, *cs = out + T * BH, *grad_h = grad_out, *grad_c = grad_out + T * BH;
    for (int64_t t = T - 1; t >= 0; t--) {
        const real *c_prev = t ? cs + (t - 1) * BH : c0;
        FN(gates_backward)(B, H, grad_h + t * BH, dh, Hp, grad_c + t * BH, cs + t * BH, c_prev,
                           gates + t * B * G, dc0, dgx + t * B * G);
        FN(step_product)(B, Hp, G, dgx + t * B * G, G, w, dh);
    }
    for (int64_t b = 0; b < B; b++)
        memcpy(dh0 + b * H, dh + b * Hp, (size_t)H * sizeof(real));
    free(w);
    free(dh);
    /* dW_hh = dgates_0ᵀ h0 + Σ_{t≥1} dgates_tᵀ h_{t−1}: the steps t ≥ 1 are one product of (T−1)·B rows. */
    int status = GEMM(1, 0, G, H, B, 1, dgx, G, h0, H, 0, dw_hh, H, nthreads);
    if (status == 0 && T > 1)
        status = GEMM(1, 0, G, H, (T - 1) * B, 1, dgx + B * G, G, hs, H, 1, dw_hh, H, nthreads);
    return status;
}

#endif /* TEMPLATE */
