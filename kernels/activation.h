/* Elementwise activations (kernels/activation.c): declarations for ffi.cdef.
 * All arrays hold n contiguous elements; outputs never alias inputs. nthreads <= 0 means all cores. */
void gelu_forward_f32(const float *x, float *out, float *cdf, int64_t n, int nthreads);
void gelu_backward_f32(const float *x, const float *cdf, const float *grad, float *dx, int64_t n, int nthreads);
void gelu_forward_f64(const double *x, double *out, double *cdf, int64_t n, int nthreads);
void gelu_backward_f64(const double *x, const double *cdf, const double *grad, double *dx, int64_t n,
                       int nthreads);
