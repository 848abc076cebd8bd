/* kernels/instantiate.h: the one float/double (and instruction-set) templating scheme.
 *
 * Every kernel file NAME.c is laid out the same way:
 *
 *     #ifndef TEMPLATE             the file proper
 *     #include "common.h"
 *     #include "NAME.h"
 *     ...helpers that do not depend on the element type...
 *     #define TEMPLATE "NAME.c"
 *     #include "instantiate.h"     compiles the TEMPLATE section below, once per copy
 *     ...the public functions of NAME.h: DISPATCH(...) to the copies...
 *     #else                        the TEMPLATE section, written once with
 *     ...                          real, FN(name), EXP, LOG, SQRT, VECTOR_BYTES
 *     #endif
 *
 * Copies: real = float (SUFFIX f32) and double (f64), each for the
 * compiler's baseline instruction set (ISA_NAME portable) and, on x86-64 with
 * GCC or Clang, for AVX2 + FMA (avx2) and AVX-512 (avx512), whatever CPU the
 * build runs on: a wheel built on one machine runs the best copy another
 * machine supports (common.h's DISPATCH, kernels/isa.c).
 */

/* Instruction-set regions: every function defined between BEGIN and END is
 * compiled for `target` (GCC's pragma, or Clang's attribute push). */
#if MINIGRAD_X86_ISAS && defined(__clang__)
#define TARGET_BEGIN(target) _Pragma(target)
#define TARGET_END _Pragma("clang attribute pop")
#define TARGET_AVX2 "clang attribute push(__attribute__((target(\"avx2,fma\"))), apply_to = function)"
#define TARGET_AVX512 "clang attribute push(__attribute__((target(\"avx512f,avx512bw,avx512dq,avx512vl,avx2,fma\"))), apply_to = function)"
#elif MINIGRAD_X86_ISAS
#define TARGET_BEGIN(target) _Pragma("GCC push_options") _Pragma(target)
#define TARGET_END _Pragma("GCC pop_options")
#define TARGET_AVX2 "GCC target(\"avx2,fma\")"
/* prefer-vector-width=512: GCC's auto-vectoriser otherwise stays at 256 bits */
#define TARGET_AVX512 "GCC target(\"avx512f,avx512bw,avx512dq,avx512vl,avx2,fma,prefer-vector-width=512\")"
#endif

/* ---------------------------------------------------- portable copies -- */
#define ISA_NAME portable
#define VECTOR_BYTES 16 /* SSE2 on x86-64, NEON on arm64 */

#include "instantiate_types.h"

#undef ISA_NAME
#undef VECTOR_BYTES

#if MINIGRAD_X86_ISAS
/* -------------------------------------------------------- AVX2 copies -- */
TARGET_BEGIN(TARGET_AVX2)
#define ISA_NAME avx2
#define VECTOR_BYTES 32

#include "instantiate_types.h"

#undef ISA_NAME
#undef VECTOR_BYTES
TARGET_END

/* ----------------------------------------------------- AVX-512 copies -- */
TARGET_BEGIN(TARGET_AVX512)
#define ISA_NAME avx512
#define VECTOR_BYTES 64

#include "instantiate_types.h"

#undef ISA_NAME
#undef VECTOR_BYTES
TARGET_END
#endif

#undef TEMPLATE
