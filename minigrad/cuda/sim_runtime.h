/* sim_runtime.h - the CUDA built-ins, written in C, for kernels run by the CPU simulator.
 *
 * minigrad.cuda.build links two translation units into one library per kernel module:
 *     module.c            #include "sim_runtime.h"   this file: CUDA keywords, built-ins, intrinsics
 *                         #include "kernel.cu"       the user's CUDA source, lightly rewritten
 *                         one entry function per __global__ kernel (unpacks the launch arguments)
 *     sim_scheduler.c     fibers, barriers, warps, the launch loop (includes this file too)
 *
 * Every CUDA thread of a block is a cooperative fiber with its own stack. A fiber
 * runs until it reaches __syncthreads() or a warp operation, then yields to the
 * scheduler, so barriers and shuffles have their real meaning. Blocks run one
 * after another on the calling OS thread, which is why a __shared__ array can be a
 * plain static variable: all fibers of the running block see the same copy.
 */
#undef _FORTIFY_SOURCE  /* its longjmp check rejects jumps between fiber stacks */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <tgmath.h>  /* exp(x), sqrt(x), fabs(x) of a float stay float, as CUDA's C++ overloads do */

#define MINIGRAD_CUDA_SIM 1

/* ---- keywords --------------------------------------------------------------- */
#define __global__
#define __host__
#define __device__ static
#define __constant__ static
#define __forceinline__ inline __attribute__((always_inline))
#define __noinline__ __attribute__((noinline))
#define __inline__ inline
#define __restrict__ restrict
#define __align__(n) __attribute__((aligned(n)))
#define __launch_bounds__(...)
/* __shared__ declarations never reach the compiler: minigrad.cuda.build rewrites each
 * into a macro for memory the launch allocates (see __sim_static_shared below). */

/* ---- built-in variables and vector types ------------------------------------ */
typedef struct { unsigned int x, y, z; } uint3;
typedef uint3 dim3;
typedef struct __attribute__((aligned(8))) { float x, y; } float2;
typedef struct __attribute__((aligned(16))) { float x, y, z, w; } float4;
typedef struct __attribute__((aligned(8))) { int x, y; } int2;
typedef struct __attribute__((aligned(16))) { int x, y, z, w; } int4;
typedef struct __attribute__((aligned(16))) { double x, y; } double2;

static inline float2 make_float2(float x, float y) { float2 v = {x, y}; return v; }
static inline float4 make_float4(float x, float y, float z, float w) { float4 v = {x, y, z, w}; return v; }
static inline int2 make_int2(int x, int y) { int2 v = {x, y}; return v; }
static inline int4 make_int4(int x, int y, int z, int w) { int4 v = {x, y, z, w}; return v; }
static inline double2 make_double2(double x, double y) { double2 v = {x, y}; return v; }

/* State shared with sim_scheduler.c, which defines it. Being global, it is reloaded after
 * every call out of a kernel, which is where the scheduler changes it. */
#define SIM_SHARED extern __attribute__((visibility("hidden")))
SIM_SHARED uint3 __sim_threadIdx, __sim_blockIdx;
SIM_SHARED dim3 __sim_blockDim, __sim_gridDim;
#define threadIdx __sim_threadIdx
#define blockIdx __sim_blockIdx
#define blockDim __sim_blockDim
#define gridDim __sim_gridDim
#define warpSize 32

/* ---- switching between fibers ------------------------------------------------ */
#if defined(__x86_64__) && !defined(MINIGRAD_SIM_PORTABLE_SWITCH)
/* Save the callee-saved registers on this stack, swap stack pointers, restore them from
 * the other stack: a few nanoseconds, where glibc's _setjmp/_longjmp take about fifty. */
typedef struct { void *sp; } sim_context;
SIM_SHARED void __sim_switch(void **save_sp, void *load_sp);  /* assembly, in sim_scheduler.c */
static inline void sim_switch(sim_context *save, sim_context *load) { __sim_switch(&save->sp, load->sp); }
#else
typedef struct { jmp_buf buf; } sim_context;
__attribute__((noinline)) static void sim_switch(sim_context *save, sim_context *load)
{
    if (!_setjmp(save->buf))
        _longjmp(load->buf, 1);
}
#endif

/* ---- fiber state shared with the scheduler ---------------------------------- */
enum { SIM_RUNNABLE, SIM_AT_BARRIER, SIM_AT_WARP, SIM_DONE };
enum { SIM_SHFL_IDX, SIM_SHFL_UP, SIM_SHFL_DOWN, SIM_SHFL_XOR, SIM_SYNCWARP, SIM_BALLOT, SIM_ACTIVEMASK };

typedef struct {
    sim_context ctx;      /* where the fiber resumes */
    int state;            /* SIM_RUNNABLE ... SIM_DONE */
    int line;             /* source line of the barrier or warp operation it waits at */
    int op, arg, width;   /* the warp operation it waits at */
    unsigned int mask;
    uint64_t value;       /* this lane's operand of the warp operation */
    uint64_t result;      /* what the warp operation returns to this lane */
} sim_thread;

typedef void (*sim_entry)(void **args);  /* unpacks the launch arguments, calls the kernel */

SIM_SHARED sim_thread *__sim_threads;
SIM_SHARED int __sim_current;
SIM_SHARED sim_context __sim_scheduler;
SIM_SHARED void *__sim_dynamic_shared_ptr;

/* Park this fiber and return to the scheduler; returns when the scheduler resumes it. */
__attribute__((noinline)) static void __sim_yield(int state)
{
    sim_thread *self = &__sim_threads[__sim_current];
    self->state = state;
    sim_switch(&self->ctx, &__sim_scheduler);
}

static inline void *__sim_dynamic_shared(void) { return __sim_dynamic_shared_ptr; }

/* Static __shared__ variable number k of the module: like the dynamic shared memory, each
 * lives in its own guarded allocation, so that an index past its end is caught as such
 * instead of landing silently in the next variable. */
#define SIM_MAX_STATIC_SHARED 256
SIM_SHARED void *__sim_static_shared_ptrs[SIM_MAX_STATIC_SHARED];
/* const: the same during a whole launch, so the compiler loads it once per kernel instead of at
 * every access (an unchecked call into sim_scheduler.c, not an instrumented load of the table) */
SIM_SHARED void *__sim_static_shared(int k) __attribute__((const));

/* An atomic's access, checked and counted (a read and a write) by the scheduler, never a data race. */
SIM_SHARED void __sim_atomic_access(void *p, size_t size, void *pc);

/* Every barrier also counts the threads whose predicate is true (for __syncthreads_count). */
__attribute__((noinline)) static int __sim_syncthreads(int predicate, int line)
{
    sim_thread *self = &__sim_threads[__sim_current];
    self->line = line;
    self->value = predicate != 0;
    __sim_yield(SIM_AT_BARRIER);
    return (int)__sim_threads[__sim_current].result;
}
#define __syncthreads() ((void)__sim_syncthreads(0, __LINE__))
#define __syncthreads_count(predicate) __sim_syncthreads((predicate), __LINE__)
#define __syncthreads_or(predicate) (__sim_syncthreads((predicate), __LINE__) != 0)
#define __syncthreads_and(predicate) \
    (__sim_syncthreads((predicate), __LINE__) == (int)(blockDim.x * blockDim.y * blockDim.z))
SIM_SHARED void __sim_assert_fail(const char *condition, int line) __attribute__((noreturn));
#define assert(condition) ((condition) ? (void)0 : __sim_assert_fail(#condition, __LINE__))
#define __trap() __sim_assert_fail("__trap()", __LINE__)
#define __threadfence() __sync_synchronize()
#define __threadfence_block() __sync_synchronize()

/* ---- warp operations: a barrier among the lanes named in the mask ----------- */
__attribute__((noinline)) static uint64_t __sim_warp_op(int op, unsigned int mask, uint64_t value,
                                                         int arg, int width, int line)
{
    sim_thread *self = &__sim_threads[__sim_current];
    self->op = op;
    self->mask = mask;
    self->value = value;
    self->arg = arg;
    self->width = width;
    self->line = line;
    __sim_yield(SIM_AT_WARP);
    return __sim_threads[__sim_current].result;
}

#define SIM_SHFL_TYPED(suffix, T)                                                            \
    static inline T __sim_shfl_##suffix(int op, unsigned int mask, T v, int arg, int width, \
                                        int line)                                            \
    {                                                                                        \
        uint64_t bits = 0;                                                                   \
        memcpy(&bits, &v, sizeof v);                                                         \
        bits = __sim_warp_op(op, mask, bits, arg, width, line);                              \
        memcpy(&v, &bits, sizeof v);                                                         \
        return v;                                                                            \
    }
SIM_SHFL_TYPED(f, float)
SIM_SHFL_TYPED(d, double)
SIM_SHFL_TYPED(i, int)
SIM_SHFL_TYPED(u, unsigned int)
SIM_SHFL_TYPED(l, long)
SIM_SHFL_TYPED(ul, unsigned long)
SIM_SHFL_TYPED(ll, long long)
SIM_SHFL_TYPED(ull, unsigned long long)

#define __SIM_SHFL(op, mask, v, arg, width)                                                \
    _Generic((v), float: __sim_shfl_f, double: __sim_shfl_d, unsigned int: __sim_shfl_u, \
             long: __sim_shfl_l, unsigned long: __sim_shfl_ul, long long: __sim_shfl_ll,  \
             unsigned long long: __sim_shfl_ull, default: __sim_shfl_i)(op, mask, v, arg, width, __LINE__)
/* The optional last argument `width` defaults to warpSize. */
#define __SIM_SHFL_W(op, mask, v, arg, width, ...) __SIM_SHFL(op, mask, v, arg, width)
#define __shfl_sync(...) __SIM_SHFL_W(SIM_SHFL_IDX, __VA_ARGS__, 32, 0)
#define __shfl_up_sync(...) __SIM_SHFL_W(SIM_SHFL_UP, __VA_ARGS__, 32, 0)
#define __shfl_down_sync(...) __SIM_SHFL_W(SIM_SHFL_DOWN, __VA_ARGS__, 32, 0)
#define __shfl_xor_sync(...) __SIM_SHFL_W(SIM_SHFL_XOR, __VA_ARGS__, 32, 0)

#define __SIM_SYNCWARP(zero, mask, ...) ((void)__sim_warp_op(SIM_SYNCWARP, (mask), 0, 0, 32, __LINE__))
#define __syncwarp(...) __SIM_SYNCWARP(0, ##__VA_ARGS__, 0xffffffffu)
#define __ballot_sync(mask, pred) \
    ((unsigned int)__sim_warp_op(SIM_BALLOT, (mask), (pred) != 0, 0, 32, __LINE__))
/* The lanes that reach this __activemask() together: those that wait there once every
 * lane of the warp has stopped somewhere (the lanes a GPU would run converged). */
#define __activemask() ((unsigned int)__sim_warp_op(SIM_ACTIVEMASK, 0, 0, 0, 32, __LINE__))
#define __any_sync(mask, pred) (__ballot_sync((mask), (pred)) != 0)
#define __all_sync(mask, pred) (__ballot_sync((mask), !(pred)) == 0)

/* ---- atomics: fibers never interleave inside one, so plain updates are atomic. Not
 * instrumented (their access is checked once, as an atomic) and not inlined (so that the
 * return address names the kernel's line). */
#define SIM_ATOMIC(T, name, args, update)                                                  \
    __attribute__((noinline, no_sanitize_thread)) static T name args                      \
    {                                                                                      \
        __sim_atomic_access(p, sizeof(T), __builtin_return_address(0));                   \
        T old = *p;                                                                        \
        update;                                                                            \
        return old;                                                                        \
    }
#define SIM_ATOMICS(suffix, T)                                                              \
    SIM_ATOMIC(T, __sim_atomic_add_##suffix, (T *p, T v), *p = old + v)                     \
    SIM_ATOMIC(T, __sim_atomic_sub_##suffix, (T *p, T v), *p = old - v)                     \
    SIM_ATOMIC(T, __sim_atomic_exch_##suffix, (T *p, T v), *p = v)                          \
    SIM_ATOMIC(T, __sim_atomic_max_##suffix, (T *p, T v), if (v > old) *p = v)              \
    SIM_ATOMIC(T, __sim_atomic_min_##suffix, (T *p, T v), if (v < old) *p = v)              \
    SIM_ATOMIC(T, __sim_atomic_cas_##suffix, (T *p, T cmp, T v), if (old == cmp) *p = v)
SIM_ATOMICS(i, int)
SIM_ATOMICS(u, unsigned int)
SIM_ATOMICS(ull, unsigned long long)
SIM_ATOMICS(f, float)
SIM_ATOMICS(d, double)

#define __SIM_ATOMIC(name, p)                                                                \
    _Generic((p), int *: __sim_atomic_##name##_i, unsigned int *: __sim_atomic_##name##_u, \
             unsigned long long *: __sim_atomic_##name##_ull, float *: __sim_atomic_##name##_f, \
             double *: __sim_atomic_##name##_d)
#define atomicAdd(p, v) __SIM_ATOMIC(add, p)((p), (v))
#define atomicSub(p, v) __SIM_ATOMIC(sub, p)((p), (v))
#define atomicExch(p, v) __SIM_ATOMIC(exch, p)((p), (v))
#define atomicMax(p, v) __SIM_ATOMIC(max, p)((p), (v))
#define atomicMin(p, v) __SIM_ATOMIC(min, p)((p), (v))
#define atomicCAS(p, c, v) __SIM_ATOMIC(cas, p)((p), (c), (v))

/* ---- math intrinsics beyond <math.h> ---------------------------------------- */
static inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
static inline double rsqrt(double x) { return 1.0 / sqrt(x); }
#define __expf expf
#define __logf logf
#define __sinf sinf
#define __cosf cosf
#define __tanf tanf
#define __powf powf
#define __exp10f exp10f
#define __log2f log2f
#define __fdividef(a, b) ((a) / (b))
#define __frcp_rn(x) (1.0f / (x))
#define __fsqrt_rn sqrtf
#define __fmaf_rn fmaf
#define __fadd_rn(a, b) ((a) + (b))
#define __fmul_rn(a, b) ((a) * (b))
#define __saturatef(x) fminf(fmaxf((x), 0.0f), 1.0f)
#define __ldg(p) (*(p))
static inline float __int_as_float(int i) { float f; memcpy(&f, &i, 4); return f; }
static inline int __float_as_int(float f) { int i; memcpy(&i, &f, 4); return i; }
static inline float __uint_as_float(unsigned int i) { float f; memcpy(&f, &i, 4); return f; }
static inline unsigned int __float_as_uint(float f) { unsigned int i; memcpy(&i, &f, 4); return i; }
static inline int __float2int_rn(float x) { return (int)rintf(x); }
static inline int __float2int_rz(float x) { return (int)x; }

#define __popc(x) __builtin_popcount((unsigned int)(x))
#define __popcll(x) __builtin_popcountll((unsigned long long)(x))
#define __ffs(x) __builtin_ffs((int)(x))
#define __ffsll(x) __builtin_ffsll((long long)(x))
static inline int __clz(int x) { return x ? __builtin_clz((unsigned int)x) : 32; }
static inline int __clzll(long long x) { return x ? __builtin_clzll((unsigned long long)x) : 64; }

/* abs of a float is a float in CUDA C++, not C's int abs. */
#define abs(x) _Generic((x), float: fabsf, double: fabs, long: labs, long long: llabs, default: abs)(x)

/* CUDA's overloaded min/max, chosen by the promoted type of both arguments. */
static inline int __sim_min_i(int a, int b) { return a < b ? a : b; }
static inline int __sim_max_i(int a, int b) { return a > b ? a : b; }
static inline unsigned int __sim_min_u(unsigned int a, unsigned int b) { return a < b ? a : b; }
static inline unsigned int __sim_max_u(unsigned int a, unsigned int b) { return a > b ? a : b; }
static inline long long __sim_min_ll(long long a, long long b) { return a < b ? a : b; }
static inline long long __sim_max_ll(long long a, long long b) { return a > b ? a : b; }
static inline unsigned long long __sim_min_ull(unsigned long long a, unsigned long long b) { return a < b ? a : b; }
static inline unsigned long long __sim_max_ull(unsigned long long a, unsigned long long b) { return a > b ? a : b; }
#define min(a, b)                                                                        \
    _Generic((a) + (b), float: fminf, double: fmin, unsigned int: __sim_min_u,           \
             long: __sim_min_ll, long long: __sim_min_ll, unsigned long: __sim_min_ull,  \
             unsigned long long: __sim_min_ull, default: __sim_min_i)((a), (b))
#define max(a, b)                                                                        \
    _Generic((a) + (b), float: fmaxf, double: fmax, unsigned int: __sim_max_u,           \
             long: __sim_max_ll, long long: __sim_max_ll, unsigned long: __sim_max_ull,  \
             unsigned long long: __sim_max_ull, default: __sim_max_i)((a), (b))

/* ---- memcpy, memmove and memset in kernels ------------------------------------ */
/* Library calls are not instrumented, so in the kernels' source (included after this header)
 * each one first has its source and destination ranges checked and counted like any access. */
SIM_SHARED void __sim_check_range(const void *p, size_t bytes, int write);
#ifndef SIM_SCHEDULER  /* the scheduler's own calls are not a kernel's */
#define memcpy(d, s, n) ({ void *__d = (d); const void *__s = (s); size_t __n = (n);                 \
                           __sim_check_range(__s, __n, 0); __sim_check_range(__d, __n, 1);               \
                           __builtin_memcpy(__d, __s, __n); })
#define memmove(d, s, n) ({ void *__d = (d); const void *__s = (s); size_t __n = (n);                \
                            __sim_check_range(__s, __n, 0); __sim_check_range(__d, __n, 1);              \
                            __builtin_memmove(__d, __s, __n); })
#define memset(d, c, n) ({ void *__d = (d); int __c = (c); size_t __n = (n);                         \
                           __sim_check_range(__d, __n, 1); __builtin_memset(__d, __c, __n); })
#endif
