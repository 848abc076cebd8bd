/* int8 × int8 → int32 matrix products (kernels/qmatmul.c): declarations for ffi.cdef.
 * a (m, k), b (n, k) int8 row-major and contiguous; c (m, n) int32. version 0 portable, 1 AVX-512 VNNI.
 * qmatmul_s8 returns 0, or -1 for an unknown version or VNNI on a CPU without it. */
int qmatmul_has_vnni(void);
int qmatmul_s8(const int8_t *a, const int8_t *b, int32_t *c, int64_t m, int64_t n, int64_t k, int version,
               int num_threads);
