/* conv.c: the memory-moving half of a convolution layer and max pooling (lesson 02_convolution).
 *
 * A convolution is one matrix product once every receptive field is a row (im2col):
 *
 *   cols[(n, i, j), (p, q, c)] = x[n, c, i·sh + p − ph, j·sw + q − pw]   (0 in the zero padding)
 *   y = cols Wᵀ,   dW = dyᵀ cols,   dcols = dy W,   dx = col2im(dcols)
 *
 * With bias_column, each row ends in a 1: the bias is then the weight of that constant input, so
 * [cols 1][W b]ᵀ adds it inside the product and [dW db] = dyᵀ[cols 1] sums its gradient there too.
 *
 * col2im is im2col's adjoint: each entry of dcols is added back onto the pixel it was read from
 * (pixels under several windows collect several terms). Max pooling keeps, per window, the input
 * pixel of the maximum (argmax = h·W + w; the first in row-major order on ties, the first NaN if
 * any, which is then the maximum as in np.maximum), so its backward is one scatter.
 *
 * NumPy does all of this with strided views (minigrad/kernels/numpy_backend.py, the reference), but
 * a channels-last image of a small net has short rows (C = 16 floats), and NumPy's iterator pays
 * ~10 ns per row: col2im and the pooling backward cost 5-10x the copies themselves. Here each is
 * one pass in plain loops. Channels are the innermost loop, contiguous in every array but the
 * input x, which is read through its strides (NCHW from the user, channels-last from a layer).
 *
 * Threads take whole images (no two write the same pixel), and only for ~1M elements or more
 * (common.h's MIN_ELEMENTS_PER_THREAD): the small images of a CNN step never wake one.
 *
 * Build: python build.py.  Test: python -m pytest tests/test_conv.py tests/test_backends.py -q
 */
#ifndef TEMPLATE

#include "common.h"
#include "conv.h"

#define TEMPLATE "conv.c"
#include "instantiate.h"

void im2col_f32(const float *x, int64_t N, int64_t C, int64_t H, int64_t W, int64_t sN, int64_t sC, int64_t sH,
                int64_t sW, int64_t kh, int64_t kw, int64_t sh, int64_t sw, int64_t ph, int64_t pw, int bias_column,
                float *cols, int nthreads)
{
    DISPATCH(im2col_f32, (x, N, C, H, W, sN, sC, sH, sW, kh, kw, sh, sw, ph, pw, bias_column, cols, nthreads));
}

void im2col_f64(const double *x, int64_t N, int64_t C, int64_t H, int64_t W, int64_t sN, int64_t sC, int64_t sH,
                int64_t sW, int64_t kh, int64_t kw, int64_t sh, int64_t sw, int64_t ph, int64_t pw, int bias_column,
                double *cols, int nthreads)
{
    DISPATCH(im2col_f64, (x, N, C, H, W, sN, sC, sH, sW, kh, kw, sh, sw, ph, pw, bias_column, cols, nthreads));
}

void col2im_f32(const float *cols, int64_t N, int64_t C, int64_t H, int64_t W, int64_t kh, int64_t kw, int64_t sh,
                int64_t sw, int64_t ph, int64_t pw, float *dx, int nthreads)
{
    DISPATCH(col2im_f32, (cols, N, C, H, W, kh, kw, sh, sw, ph, pw, dx, nthreads));
}

void col2im_f64(const double *cols, int64_t N, int64_t C, int64_t H, int64_t W, int64_t kh, int64_t kw, int64_t sh,
                int64_t sw, int64_t ph, int64_t pw, double *dx, int nthreads)
{
    DISPATCH(col2im_f64, (cols, N, C, H, W, kh, kw, sh, sw, ph, pw, dx, nthreads));
}

void max_pool2d_forward_f32(const float *x, int64_t N, int64_t C, int64_t H, int64_t W, int64_t sN, int64_t sC,
                            int64_t sH, int64_t sW, int64_t kh, int64_t kw, int64_t sh, int64_t sw, float *out,
                            int64_t *argmax, int nthreads)
{
    DISPATCH(max_pool2d_forward_f32, (x, N, C, H, W, sN, sC, sH, sW, kh, kw, sh, sw, out, argmax, nthreads));
}

void max_pool2d_forward_f64(const double *x, int64_t N, int64_t C, int64_t H, int64_t W, int64_t sN, int64_t sC,
                            int64_t sH, int64_t sW, int64_t kh, int64_t kw, int64_t sh, int64_t sw, double *out,
                            int64_t *argmax, int nthreads)
{
    DISPATCH(max_pool2d_forward_f64, (x, N, C, H, W, sN, sC, sH, sW, kh, kw, sh, sw, out, argmax, nthreads));
}

int max_pool2d_backward_f32(const float *grad, const int64_t *argmax, int64_t N, int64_t C, int64_t H, int64_t W,
                            int64_t Ho, int64_t Wo, float *dx, int nthreads)
{
    return DISPATCH(max_pool2d_backward_f32, (grad, argmax, N, C, H, W, Ho, Wo, dx, nthreads));
}

int max_pool2d_backward_f64(const double *grad, const int64_t *argmax, int64_t N, int64_t C, int64_t H, int64_t W,
                            int64_t Ho, int64_t Wo, double *dx, int nthreads)
{
    return DISPATCH(max_pool2d_backward_f64, (grad, argmax, N, C, H, W, Ho, Wo, dx, nthreads));
}

#else /* TEMPLATE: real, FN */

void FN(im2col)(const real *restrict x, int64_t N, int64_t C, int64_t H, int64_t W, int64_t sN, int64_t sC,
                int64_t sH, int64_t sW, int64_t kh, int64_t kw, int64_t sh, int64_t sw, int64_t ph, int64_t pw,
                int bias_column, real *restrict cols, int nthreads)
{
    int64_t Ho = (H + 2 * ph - kh) / sh + 1, Wo = (W + 2 * pw - kw) / sw + 1, K = kh * kw * C;
    int64_t row = K + (bias_column != 0);
    /* A window row's kw pixels of C channels are one contiguous run of x when channels are contiguous
     * and pixels follow each other (channels-last, or NCHW with C = 1): copied as one run then. */
    int runs = (C == 1 || sC == 1) && (kw == 1 || sW == C);
#pragma omp parallel for schedule(static) \
    num_threads(thread_count(nthreads, N, (double)N * Ho * Wo * row, MIN_ELEMENTS_PER_THREAD))
    for (int64_t n = 0; n < N; n++)
        for (int64_t i = 0; i < Ho; i++) {
            real *rows = cols + (n * Ho + i) * Wo * row;  /* the Wo rows (n, i, j) */
            for (int64_t p = 0; p < kh; p++) {
                /* one image row h for all j: the loop over j, innermost, only moves along it */
                int64_t h = i * sh + p - ph;
                real *dst = rows + p * kw * C;
                if (h < 0 || h >= H) {  /* the zero padding above or below */
                    for (int64_t j = 0; j < Wo; j++, dst += row)
                        for (int64_t k = 0; k < kw * C; k++)
                            dst[k] = 0;
                    continue;
                }
                const real *line = x + n * sN + h * sH;
                for (int64_t j = 0; j < Wo; j++, dst += row) {
                    /* the columns q in [q0, q1) read pixels inside the image; the others, the padding */
                    int64_t q0 = min_i64(max_i64(pw - j * sw, 0), kw);
                    int64_t q1 = max_i64(min_i64(W + pw - j * sw, kw), q0);
                    for (int64_t k = 0; k < q0 * C; k++)
                        dst[k] = 0;
                    for (int64_t k = q1 * C; k < kw * C; k++)
                        dst[k] = 0;
                    if (q0 == q1)  /* no pixel to read (and no pointer formed outside x) */
                        continue;
                    const real *src = line + (j * sw + q0 - pw) * sW;
                    if (runs) {
                        for (int64_t k = 0; k < (q1 - q0) * C; k++)
                            dst[q0 * C + k] = src[k];
                        continue;
                    }
                    for (int64_t q = q0; q < q1; q++, src += sW)
                        for (int64_t c = 0; c < C; c++)
                            dst[q * C + c] = src[c * sC];
                }
            }
            if (bias_column)  /* the constant input whose weight is the bias */
                for (int64_t j = 0; j < Wo; j++)
                    rows[j * row + K] = 1;
        }
}

void FN(col2im)(const real *restrict cols, int64_t N, int64_t C, int64_t H, int64_t W, int64_t kh, int64_t kw,
                int64_t sh, int64_t sw, int64_t ph, int64_t pw, real *restrict dx, int nthreads)
{
    int64_t Ho = (H + 2 * ph - kh) / sh + 1, Wo = (W + 2 * pw - kw) / sw + 1, row = kh * kw * C;
#pragma omp parallel for schedule(static) \
    num_threads(thread_count(nthreads, N, (double)N * Ho * Wo * row, MIN_ELEMENTS_PER_THREAD))
    for (int64_t n = 0; n < N; n++) {
        real *image = dx + n * H * W * C;  /* (H, W, C) */
        const real *src = cols + n * Ho * Wo * row;
        memset(image, 0, (size_t)(H * W * C) * sizeof(real));
        for (int64_t i = 0; i < Ho; i++)
            for (int64_t j = 0; j < Wo; j++)
                for (int64_t p = 0; p < kh; p++) {
                    int64_t h = i * sh + p - ph;
                    for (int64_t q = 0; q < kw; q++, src += C) {
                        int64_t w = j * sw + q - pw;
                        if (h < 0 || h >= H || w < 0 || w >= W)  /* read from the padding: no pixel to add to */
                            continue;
                        real *pixel = image + (h * W + w) * C;
                        for (int64_t c = 0; c < C; c++)
                            pixel[c] += src[c];
                    }
                }
    }
}

void FN(max_pool2d_forward)(const real *restrict x, int64_t N, int64_t C, int64_t H, int64_t W, int64_t sN,
                            int64_t sC, int64_t sH, int64_t sW, int64_t kh, int64_t kw, int64_t sh, int64_t sw,
                            real *restrict out, int64_t *restrict argmax, int nthreads)
{
    int64_t Ho = (H - kh) / sh + 1, Wo = (W - kw) / sw + 1;
#pragma omp parallel for schedule(static) \
    num_threads(thread_count(nthreads, N, (double)N * H * W * C, MIN_ELEMENTS_PER_THREAD))
    for (int64_t n = 0; n < N; n++)
        for (int64_t i = 0; i < Ho; i++)
            for (int64_t j = 0; j < Wo; j++) {
                int64_t at = (n * Ho + i) * Wo + j;
                real *restrict best = out + at * C;  /* (C,): the running maximum of each channel's window */
                int64_t *restrict where = argmax + at * C;
                const real *corner = x + n * sN + i * sh * sH + j * sw * sW;
                for (int64_t c = 0; c < C; c++) {
                    best[c] = corner[c * sC];
                    where[c] = i * sh * W + j * sw;
                }
                for (int64_t p = 0; p < kh; p++)
                    for (int64_t q = p == 0; q < kw; q++) {
                        const real *src = corner + p * sH + q * sW;
                        int64_t pixel = (i * sh + p) * W + j * sw + q;
                        for (int64_t c = 0; c < C; c++) {
                            real v = src[c * sC], b = best[c];
                            /* strictly greater: ties keep the first; a NaN wins once, then stays. Selects, not
                             * branches: on real data the comparison is a coin flip the CPU would mispredict. */
                            int wins = (v > b) | ((v != v) & (b == b));
                            best[c] = wins ? v : b;
                            where[c] = wins ? pixel : where[c];
                        }
                    }
            }
}

int FN(max_pool2d_backward)(const real *restrict grad, const int64_t *restrict argmax, int64_t N, int64_t C,
                            int64_t H, int64_t W, int64_t Ho, int64_t Wo, real *restrict dx, int nthreads)
{
    int outside = 0;  /* an argmax outside the image: skipped, and reported (argmax may come from the caller) */
#pragma omp parallel for schedule(static) reduction(| : outside) \
    num_threads(thread_count(nthreads, N, (double)N * H * W * C, MIN_ELEMENTS_PER_THREAD))
    for (int64_t n = 0; n < N; n++) {
        real *image = dx + n * H * W * C;  /* (H, W, C) */
        memset(image, 0, (size_t)(H * W * C) * sizeof(real));
        for (int64_t at = n * Ho * Wo; at < (n + 1) * Ho * Wo; at++)  /* output pixel (n, i, j) */
            for (int64_t c = 0; c < C; c++) {  /* overlapping windows (stride < kernel) may share a pixel: += */
                int64_t pixel = argmax[at * C + c];
                if (pixel < 0 || pixel >= H * W) {
                    outside = 1;
                    continue;
                }
                image[pixel * C + c] += grad[at * C + c];
            }
    }
    return outside ? -1 : 0;
}

#endif /* TEMPLATE */
