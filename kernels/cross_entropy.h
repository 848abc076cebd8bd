/* Softmax + cross-entropy over the vocabulary (kernels/cross_entropy.c): declarations for ffi.cdef.
 *
 * logits, dlogits: (n, v) C-contiguous rows; targets: (n,) int64, each in
 * [0, v) (checked by the caller); lse: (n,) the row log-sum-exp, written by
 * the forward and read by the backward. dlogits may be logits itself (in
 * place). nthreads <= 0 means all cores.
 * cross_entropy_forward_* returns the mean loss (1/n) sum_i (lse_i - logits[i, y_i]). */
double cross_entropy_forward_f32(const float *logits, const int64_t *targets, float *lse,
                                 int64_t n, int64_t v, int nthreads);
void cross_entropy_backward_f32(const float *logits, const int64_t *targets, const float *lse,
                                double grad, float *dlogits, int64_t n, int64_t v, int nthreads);
double cross_entropy_forward_f64(const double *logits, const int64_t *targets, double *lse,
                                 int64_t n, int64_t v, int nthreads);
void cross_entropy_backward_f64(const double *logits, const int64_t *targets, const double *lse,
                                double grad, double *dlogits, int64_t n, int64_t v, int nthreads);
