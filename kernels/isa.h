/* Instruction-set dispatch (kernels/isa.c): declarations for ffi.cdef.
 *
 * Names: "portable" (the compiler's baseline), "avx2" (AVX2 + FMA), "avx512"
 * (AVX-512 F/BW/DQ/VL). */
const char *kernels_isa(void);                /* the copy every kernel runs now */
int kernels_isa_supported(const char *name);  /* 1: this build has that copy and this CPU runs it */
int kernels_set_isa(const char *name);        /* 0, or -1 when not supported (nothing changes) */
