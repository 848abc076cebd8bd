/* Matrix multiply kernels (kernels/matmul.c): declarations for ffi.cdef.
 *
 * Every function computes C = alpha * op(A) * op(B) + beta * C, row-major,
 * with op(A) (m, k), op(B) (k, n), C (m, n). trans_a != 0 means A is stored
 * as (k, m) and op(A) = A^T; likewise trans_b. lda, ldb, ldc are the row
 * strides in elements (>= the stored row length). beta == 0 overwrites C
 * without reading it. C must not overlap A or B.
 * Every function returns 0, or -1 when it could not allocate its buffers.
 * matmul_parallel_*: num_threads <= 0 means all cores.
 */
int matmul_naive_f32(int trans_a, int trans_b, int64_t m, int64_t n, int64_t k,
                     float alpha, const float *a, int64_t lda, const float *b, int64_t ldb,
                     float beta, float *c, int64_t ldc);
int matmul_blocked_f32(int trans_a, int trans_b, int64_t m, int64_t n, int64_t k,
                       float alpha, const float *a, int64_t lda, const float *b, int64_t ldb,
                       float beta, float *c, int64_t ldc);
int matmul_packed_f32(int trans_a, int trans_b, int64_t m, int64_t n, int64_t k,
                      float alpha, const float *a, int64_t lda, const float *b, int64_t ldb,
                      float beta, float *c, int64_t ldc);
int matmul_simd_f32(int trans_a, int trans_b, int64_t m, int64_t n, int64_t k,
                    float alpha, const float *a, int64_t lda, const float *b, int64_t ldb,
                    float beta, float *c, int64_t ldc);
int matmul_parallel_f32(int trans_a, int trans_b, int64_t m, int64_t n, int64_t k,
                        float alpha, const float *a, int64_t lda, const float *b, int64_t ldb,
                        float beta, float *c, int64_t ldc, int num_threads);

int matmul_naive_f64(int trans_a, int trans_b, int64_t m, int64_t n, int64_t k,
                     double alpha, const double *a, int64_t lda, const double *b, int64_t ldb,
                     double beta, double *c, int64_t ldc);
int matmul_blocked_f64(int trans_a, int trans_b, int64_t m, int64_t n, int64_t k,
                       double alpha, const double *a, int64_t lda, const double *b, int64_t ldb,
                       double beta, double *c, int64_t ldc);
int matmul_packed_f64(int trans_a, int trans_b, int64_t m, int64_t n, int64_t k,
                      double alpha, const double *a, int64_t lda, const double *b, int64_t ldb,
                      double beta, double *c, int64_t ldc);
int matmul_simd_f64(int trans_a, int trans_b, int64_t m, int64_t n, int64_t k,
                    double alpha, const double *a, int64_t lda, const double *b, int64_t ldb,
                    double beta, double *c, int64_t ldc);
int matmul_parallel_f64(int trans_a, int trans_b, int64_t m, int64_t n, int64_t k,
                        double alpha, const double *a, int64_t lda, const double *b, int64_t ldb,
                        double beta, double *c, int64_t ldc, int num_threads);

/* The instruction set the micro-kernel of matmul_simd_* and matmul_parallel_* runs on now:
   "avx512", "avx2" or "portable" (kernels/isa.c chooses it at load time). */
const char *matmul_simd_kernel(void);
/* Whether the extension was built with OpenMP (1) or runs matmul_parallel_* on one thread (0). */
int matmul_has_openmp(void);
/* The peak probe: `iterations` rounds of FMAs on registers only, on the active instruction set;
   returns the FLOPs done (time the call to get this core's peak FLOP rate). */
double matmul_fma_peak_f32(int64_t iterations);
double matmul_fma_peak_f64(int64_t iterations);
