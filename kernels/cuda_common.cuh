/* cuda_common.cuh - the few macros every minigrad CUDA kernel uses.
 *
 * minigrad/kernels/cuda_backend.py prepends this text to each .cu source in kernels/
 * before compiling it, so the .cu files need no #include. The same text compiles
 * with NVRTC (cupy.RawModule) on a GPU and as plain C in the CPU simulator
 * (minigrad.cuda.SimModule), which defines MINIGRAD_CUDA_SIM in its prelude.
 */
#ifndef MINIGRAD_CUDA_COMMON_CUH
#define MINIGRAD_CUDA_COMMON_CUH

/* Kernels are looked up by their C name (RawModule.get_function), hence extern "C". */
#define KERNEL extern "C" __global__ void

/* The simulator compiles C, which has no `extern __shared__` arrays: it hands out
 * the block's dynamic shared memory (sized by the launch's shared_mem) through a call. */
#ifdef MINIGRAD_CUDA_SIM
#define DYNAMIC_SHARED(type, name) type *name = (type *)__sim_dynamic_shared()
#else
#define DYNAMIC_SHARED(type, name) extern __shared__ type name[]
#endif

/* Loops that index a per-thread array must be unrolled so that the array stays in
 * registers (a runtime index would put it in slow local memory). C has no such pragma. */
#ifdef MINIGRAD_CUDA_SIM
#define UNROLL
#else
#define UNROLL _Pragma("unroll")
#endif

/* NVRTC compiles without math.h, which is where INFINITY usually comes from. */
#ifndef INFINITY
#define INFINITY __int_as_float(0x7f800000)
#endif

/* No CUDA min/max overloads in C, and no system headers: plain integer forms. */
#define MIN_INT(a, b) ((a) < (b) ? (a) : (b))
#define MAX_INT(a, b) ((a) > (b) ? (a) : (b))
#define CEIL_DIV(a, b) (((a) + (b) - 1) / (b))

#endif
