/* Fused attention kernels (kernels/attention.c): declarations for ffi.cdef.
 *
 * Layout: q (bh, tq, d), k (bh, tk, d), v (bh, tk, dv), out (bh, tq, dv),
 * lse (bh, tq), all C-contiguous. nthreads <= 0 means all cores.
 * Every function returns 0, -1 when it could not allocate its buffers, or -2
 * when tk < 1 or d < 1 (undefined softmax or scale).
 */
int attention_forward_naive_f32(const float *q, const float *k, const float *v,
                                float *out, float *lse, int64_t bh, int64_t tq,
                                int64_t tk, int64_t d, int64_t dv, int causal);
int attention_backward_naive_f32(const float *q, const float *k, const float *v,
                                 const float *out, const float *lse, const float *dout,
                                 float *dq, float *dk, float *dvout, int64_t bh,
                                 int64_t tq, int64_t tk, int64_t d, int64_t dv,
                                 int causal);
int attention_forward_flash_f32(const float *q, const float *k, const float *v,
                                float *out, float *lse, int64_t bh, int64_t tq,
                                int64_t tk, int64_t d, int64_t dv, int causal,
                                int nthreads);
int attention_backward_flash_f32(const float *q, const float *k, const float *v,
                                 const float *out, const float *lse, const float *dout,
                                 float *dq, float *dk, float *dvout, int64_t bh,
                                 int64_t tq, int64_t tk, int64_t d, int64_t dv,
                                 int causal, int nthreads);

int attention_forward_naive_f64(const double *q, const double *k, const double *v,
                                double *out, double *lse, int64_t bh, int64_t tq,
                                int64_t tk, int64_t d, int64_t dv, int causal);
int attention_backward_naive_f64(const double *q, const double *k, const double *v,
                                 const double *out, const double *lse, const double *dout,
                                 double *dq, double *dk, double *dvout, int64_t bh,
                                 int64_t tq, int64_t tk, int64_t d, int64_t dv,
                                 int causal);
int attention_forward_flash_f64(const double *q, const double *k, const double *v,
                                double *out, double *lse, int64_t bh, int64_t tq,
                                int64_t tk, int64_t d, int64_t dv, int causal,
                                int nthreads);
int attention_backward_flash_f64(const double *q, const double *k, const double *v,
                                 const double *out, const double *lse, const double *dout,
                                 double *dq, double *dk, double *dvout, int64_t bh,
                                 int64_t tq, int64_t tk, int64_t d, int64_t dv,
                                 int causal, int nthreads);
