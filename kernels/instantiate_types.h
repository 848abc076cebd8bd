/* kernels/instantiate_types.h: the TEMPLATE section compiled once for float and once for double,
 * for the instruction set instantiate.h has selected (ISA_NAME, VECTOR_BYTES). Included only by
 * instantiate.h, once per instruction set, so it has no include guard. */
#define real float
#define SUFFIX f32
#define EXP exp_f32
#define LOG logf
#define SQRT sqrtf
#include TEMPLATE
#undef real
#undef SUFFIX
#undef EXP
#undef LOG
#undef SQRT

#define real double
#define SUFFIX f64
#define EXP exp
#define LOG log
#define SQRT sqrt
#include TEMPLATE
#undef real
#undef SUFFIX
#undef EXP
#undef LOG
#undef SQRT
