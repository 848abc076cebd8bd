/* float16 / bfloat16 <-> float32 conversions (kernels/halfconv.c): declarations for ffi.cdef.
 * 16-bit values are passed as their bit patterns (uint16_t); n contiguous elements; out never aliases in. */
int halfconv_has_f16c(void);
void f16_to_f32(const uint16_t *in, float *out, int64_t n);
void f32_to_f16(const float *in, uint16_t *out, int64_t n);
void f16_to_f32_portable(const uint16_t *in, float *out, int64_t n);  /* without F16C, for tests */
void f32_to_f16_portable(const float *in, uint16_t *out, int64_t n);
void bf16_to_f32(const uint16_t *in, float *out, int64_t n);
void f32_to_bf16(const float *in, uint16_t *out, int64_t n);
