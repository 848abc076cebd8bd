/* Layer normalisation (kernels/layernorm.c): declarations for ffi.cdef.
 *
 * x, out, dout, dx: (n, c) C-contiguous rows; weight, bias, dweight, dbias:
 * (c,) or NULL (no affine weight / no bias); mean, rstd: (n,). Outputs never
 * alias inputs. nthreads <= 0 means all cores. Returns 0, or -1 when it could
 * not allocate its per-thread sums. */
int layernorm_forward_f32(const float *x, const float *weight, const float *bias, float *out,
                          float *mean, float *rstd, int64_t n, int64_t c, double eps, int nthreads);
int layernorm_backward_f32(const float *x, const float *weight, const float *mean, const float *rstd,
                           const float *dout, float *dx, float *dweight, float *dbias,
                           int64_t n, int64_t c, int nthreads);
int layernorm_forward_f64(const double *x, const double *weight, const double *bias, double *out,
                          double *mean, double *rstd, int64_t n, int64_t c, double eps, int nthreads);
int layernorm_backward_f64(const double *x, const double *weight, const double *mean, const double *rstd,
                           const double *dout, double *dx, double *dweight, double *dbias,
                           int64_t n, int64_t c, int nthreads);
