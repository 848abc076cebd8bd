/* Convolution and pooling on images (kernels/conv.c): declarations for ffi.cdef.
 *
 * Images are (N, C, H, W). An input image x is read through its element strides sN, sC, sH, sW
 * (each >= 0, any layout: NCHW, channels-last, a view); every other array is C-contiguous in
 * channels-last order: cols (N·Ho·Wo, kh·kw·C), or kh·kw·C + 1 columns with bias_column = 1 (the last
 * column all ones), dx (N, H, W, C), out, argmax and grad (N, Ho, Wo, C).
 * Ho = (H + 2·ph − kh)/sh + 1 and Wo = (W + 2·pw − kw)/sw + 1 (pooling: ph = pw = 0), both >= 1.
 * argmax holds h·W + w, the input pixel of each window's maximum; max_pool2d_backward returns -1
 * (dx then incomplete) if a value lies outside [0, H·W), else 0.
 * Outputs never alias inputs. nthreads <= 0 means all cores. */
void im2col_f32(const float *x, int64_t N, int64_t C, int64_t H, int64_t W, int64_t sN, int64_t sC, int64_t sH,
                int64_t sW, int64_t kh, int64_t kw, int64_t sh, int64_t sw, int64_t ph, int64_t pw, int bias_column,
                float *cols, int nthreads);
void im2col_f64(const double *x, int64_t N, int64_t C, int64_t H, int64_t W, int64_t sN, int64_t sC, int64_t sH,
                int64_t sW, int64_t kh, int64_t kw, int64_t sh, int64_t sw, int64_t ph, int64_t pw, int bias_column,
                double *cols, int nthreads);
void col2im_f32(const float *cols, int64_t N, int64_t C, int64_t H, int64_t W, int64_t kh, int64_t kw, int64_t sh,
                int64_t sw, int64_t ph, int64_t pw, float *dx, int nthreads);
void col2im_f64(const double *cols, int64_t N, int64_t C, int64_t H, int64_t W, int64_t kh, int64_t kw, int64_t sh,
                int64_t sw, int64_t ph, int64_t pw, double *dx, int nthreads);
void max_pool2d_forward_f32(const float *x, int64_t N, int64_t C, int64_t H, int64_t W, int64_t sN, int64_t sC,
                            int64_t sH, int64_t sW, int64_t kh, int64_t kw, int64_t sh, int64_t sw, float *out,
                            int64_t *argmax, int nthreads);
void max_pool2d_forward_f64(const double *x, int64_t N, int64_t C, int64_t H, int64_t W, int64_t sN, int64_t sC,
                            int64_t sH, int64_t sW, int64_t kh, int64_t kw, int64_t sh, int64_t sw, double *out,
                            int64_t *argmax, int nthreads);
int max_pool2d_backward_f32(const float *grad, const int64_t *argmax, int64_t N, int64_t C, int64_t H, int64_t W,
                             int64_t Ho, int64_t Wo, float *dx, int nthreads);
int max_pool2d_backward_f64(const double *grad, const int64_t *argmax, int64_t N, int64_t C, int64_t H, int64_t W,
                             int64_t Ho, int64_t Wo, double *dx, int nthreads);
