/* sim_scheduler.c - runs a kernel launch: blocks one after another, the threads of a
 * block as fibers that meet at barriers and warp operations.
 *
 * Compiled into every simulator module as a translation unit of its own (so that the
 * user's macros and names cannot clash with it), beside the user's kernels and the
 * generated table `__sim_entries` of entry functions.
 *
 * Fibers are made once per launch geometry, each on its own stack with a guard page
 * below it, and switched without a system call: by __sim_switch (a few lines of
 * assembly) on x86-64, elsewhere by _setjmp/_longjmp after a makecontext. A fiber
 * loops forever: run the kernel for the thread it is told to be, then park. The
 * scheduler resumes every runnable fiber of the block in the chosen order; each runs
 * until it parks at a barrier, at a warp operation, or at its end. Then:
 *   - a warp whose lanes all wait at a warp operation gets its results and runs on at once,
 *     before the warps still waiting their turn (so a shuffle does not hide a missing barrier);
 *   - when every thread waits at __syncthreads(), the barrier opens;
 *   - a thread that returned while others wait at a barrier is barrier divergence,
 *     reported with block, thread and barrier number instead of hanging as a GPU would.
 *
 * Every load and store of a kernel calls sim_access (the kernels are compiled with
 * -fsanitize=thread, whose per-access callbacks are defined here): an address must lie inside one of the launch's regions (an array argument,
 * the dynamic shared memory, a static __shared__ variable), on the running thread's
 * own stack, or in this library's own data; anything else stops the launch with the
 * region it missed. The same hook counts each region's reads and writes and, when
 * asked, finds data races with one shadow record per element.
 */
#define SIM_SCHEDULER
#include "sim_runtime.h"

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#endif
#include <dlfcn.h>
#include <link.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

#define SIM_API __attribute__((visibility("default")))
#define SIM_MAX_THREADS 1024

enum { SIM_BLOCK_DONE = -1, SIM_OK, SIM_BARRIER_DIVERGENCE, SIM_WARP_DIVERGENCE, SIM_BAD_LAUNCH, SIM_NO_MEMORY,
       SIM_FAULT, SIM_INTERRUPTED };
enum { SIM_ORDER_FORWARD, SIM_ORDER_REVERSE, SIM_ORDER_RANDOM };
enum { SIM_REGION_GLOBAL, SIM_REGION_DYNAMIC_SHARED, SIM_REGION_STATIC_SHARED };
enum { SIM_BAD_NONE, SIM_BAD_OUT_OF_BOUNDS, SIM_BAD_POINTER, SIM_BAD_OTHER_STACK, SIM_BAD_RACE };

/* One array a launch may touch (the Python side fills it, this file counts in it). Any address
 * in [window_lo, window_hi) belongs to it: in bounds inside [start, start + bytes), out of
 * bounds elsewhere; the windows are inaccessible address space reserved around each array, so
 * an int index cannot reach from one array into another. */
typedef struct {
    char *start, *window_lo, *window_hi;
    uint64_t bytes;
    int kind;                 /* SIM_REGION_* */
    int granule;              /* bytes per race-shadow record: the element size */
    uint64_t reads, writes;   /* bytes read and written by the launch */
    void *shadow;             /* race_check: one sim_shadow per granule (zeroed), else NULL */
} sim_region;

/* A bad access, for Python to describe: what, where, and (for a race) the other access. */
typedef struct {
    int kind, region, write, size;
    int64_t offset;           /* bytes from the region's start */
    uint64_t address, pc;     /* pc: offset in this library, for the source line */
    uint32_t block, thread;   /* linear indices */
    int other_write;
    uint32_t other_block, other_thread;
    uint64_t other_pc;
} sim_fault;

/* Who touched an element last: block and thread (linear, +1 so that 0 means nobody), the
 * barrier epoch of the block and the __syncwarp epoch of the warp at the time, the code. */
typedef struct {
    uint32_t block, epoch, pc;
    uint16_t thread, warp_epoch;
} sim_record;
typedef struct { sim_record write, read, other_read; } sim_shadow;

uint3 __sim_threadIdx, __sim_blockIdx;
dim3 __sim_blockDim, __sim_gridDim;
sim_thread *__sim_threads;
int __sim_current;
sim_context __sim_scheduler;
void *__sim_dynamic_shared_ptr;
void *__sim_static_shared_ptrs[SIM_MAX_STATIC_SHARED];

void *__sim_static_shared(int k)
{
    return __sim_static_shared_ptrs[k];
}
SIM_SHARED const sim_entry __sim_entries[];
SIM_SHARED const int __sim_entry_count;

#if defined(__x86_64__) && !defined(MINIGRAD_SIM_PORTABLE_SWITCH)
/* void __sim_switch(void **save_sp, void *load_sp): push the callee-saved registers,
 * store the stack pointer to *save_sp, load load_sp, pop the other fiber's registers. */
__asm__(".pushsection .text\n"
        ".p2align 4\n"
        ".globl __sim_switch\n"
        ".hidden __sim_switch\n"
        ".type __sim_switch, @function\n"
        "__sim_switch:\n"
        "    pushq %rbp\n    pushq %rbx\n    pushq %r12\n    pushq %r13\n    pushq %r14\n    pushq %r15\n"
        "    movq %rsp, (%rdi)\n"
        "    movq %rsi, %rsp\n"
        "    popq %r15\n    popq %r14\n    popq %r13\n    popq %r12\n    popq %rbx\n    popq %rbp\n"
        "    ret\n"
        ".size __sim_switch, .-__sim_switch\n"
        ".popsection\n");
#endif

/* Not static, like the built-in variables: fibers read them after every resume. */
__attribute__((visibility("hidden"))) sim_entry __sim_entry_fn;
__attribute__((visibility("hidden"))) void **__sim_entry_args;

static sim_thread threads[SIM_MAX_THREADS];
static uint3 thread_index[SIM_MAX_THREADS];
static int run_list[SIM_MAX_THREADS];

/* Synchronisation so far in the running block, for the race check: barriers passed, and
 * __syncwarp()s completed per warp. */
static uint32_t block_epoch, block_linear;
static uint16_t warp_epoch[SIM_MAX_THREADS / 32];

static char *stacks;          /* mmap'd: per fiber one guard page, then its stack */
static size_t stacks_bytes, stack_size, page_size;
static int stack_count;       /* fibers the mapping has room for */
static int fiber_count;       /* fibers parked at the top of their loop, ready to reuse */

static void fiber_main(void)
{
    __sim_yield(SIM_DONE);
    for (;;) {
        __sim_entry_fn(__sim_entry_args);
        __sim_yield(SIM_DONE);
    }
}

static int map_stacks(int n, size_t size)
{
    page_size = (size_t)sysconf(_SC_PAGESIZE);
    size = (size + page_size - 1) / page_size * page_size;
    if (stacks && stack_count >= n && stack_size >= size)
        return 0;
    if (stacks)
        munmap(stacks, stacks_bytes);
    stacks = NULL;
    stack_count = fiber_count = 0;
    stacks_bytes = (size + page_size) * (size_t)n;
    char *mem = mmap(NULL, stacks_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                     -1, 0);
    if (mem == MAP_FAILED)
        return -1;
    for (int t = 0; t < n; t++)
        if (mprotect(mem + (size + page_size) * (size_t)t, page_size, PROT_NONE)) {
            munmap(mem, stacks_bytes);
            return -1;
        }
    stacks = mem;
    stack_count = n;
    stack_size = size;
    return 0;
}

/* Start fibers [fiber_count, n): each runs to the first park in fiber_main and comes back. */
static int make_fibers(int n)
{
#if defined(__x86_64__) && !defined(MINIGRAD_SIM_PORTABLE_SWITCH)
    for (int t = fiber_count; t < n; t++) {
        char *top = stacks + (stack_size + page_size) * (size_t)(t + 1);
        void **sp = (void **)top;
        *--sp = NULL;               /* return address of fiber_main, which never returns */
        *--sp = (void *)fiber_main; /* where __sim_switch's ret lands */
        for (int r = 0; r < 6; r++)
            *--sp = NULL;           /* rbp rbx r12 r13 r14 r15 */
        threads[t].ctx.sp = sp;
        __sim_current = t;
        sim_switch(&__sim_scheduler, &threads[t].ctx);
    }
#else
    ucontext_t uc;
    if (getcontext(&uc))
        return -1;
    for (int t = fiber_count; t < n; t++) {
        uc.uc_stack.ss_sp = stacks + (stack_size + page_size) * (size_t)t + page_size;
        uc.uc_stack.ss_size = stack_size;
        uc.uc_link = NULL;
        makecontext(&uc, fiber_main, 0);
        __sim_current = t;
        if (!_setjmp(__sim_scheduler.buf))
            setcontext(&uc);
    }
#endif
    fiber_count = n;
    return 0;
}

static uint64_t next_random(uint64_t *state)
{
    /* xorshift64*: small, fast, and the same sequence on every platform */
    uint64_t x = *state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    return x * 0x2545F4914F6CDD1DULL;
}

static uint64_t gcd(uint64_t a, uint64_t b)
{
    while (b) {
        uint64_t r = a % b;
        a = b;
        b = r;
    }
    return a;
}

static void put_order(int *list, int count, int order, uint64_t *rng)
{
    if (order == SIM_ORDER_REVERSE) {
        for (int i = 0, j = count - 1; i < j; i++, j--) {
            int tmp = list[i];
            list[i] = list[j];
            list[j] = tmp;
        }
    } else if (order == SIM_ORDER_RANDOM) {
        for (int i = count - 1; i > 0; i--) {
            int j = (int)(next_random(rng) % (uint64_t)(i + 1));
            int tmp = list[i];
            list[i] = list[j];
            list[j] = tmp;
        }
    }
}

/* "(x, y, z)" in one of three buffers, so that a message can name a block and two threads. */
static const char *coords(uint3 v)
{
    static char buffers[3][48];
    static unsigned int next;
    char *out = buffers[next++ % 3];
    snprintf(out, sizeof buffers[0], "(%u, %u, %u)", v.x, v.y, v.z);
    return out;
}

static const char *warp_op_name(int op)
{
    static const char *names[] = {"__shfl_sync", "__shfl_up_sync", "__shfl_down_sync", "__shfl_xor_sync",
                                  "__syncwarp", "__ballot_sync", "__activemask"};
    return names[op];
}

/* Where the lane's value comes from in a shuffle, or -1 for the lane's own value. */
static int shuffle_source(int op, int lane, int arg, int width)
{
    int segment = lane & ~(width - 1);
    int src;
    switch (op) {
    case SIM_SHFL_IDX:
        return segment + (arg & (width - 1));
    case SIM_SHFL_UP:
        src = lane - arg;
        return src < segment ? -1 : src;
    case SIM_SHFL_DOWN:
        src = lane + arg;
        return src >= segment + width ? -1 : src;
    case SIM_SHFL_XOR:
        src = lane ^ arg;
        return src >= segment + width ? -1 : src;
    }
    return -1;
}

/* Lanes of warp [lo, hi) waiting at an __activemask() learn which lanes wait at the same one. */
static int resolve_activemask(int lo, int hi)
{
    int found = 0;
    for (int t = lo; t < hi; t++) {
        if (threads[t].state != SIM_AT_WARP || threads[t].op != SIM_ACTIVEMASK)
            continue;
        unsigned int mask = 0;
        for (int u = lo; u < hi; u++)
            if (threads[u].state == SIM_AT_WARP && threads[u].op == SIM_ACTIVEMASK
                && threads[u].line == threads[t].line)
                mask |= 1u << (u - lo);
        threads[t].result = mask;
        found = 1;
    }
    for (int t = lo; t < hi && found; t++)
        if (threads[t].state == SIM_AT_WARP && threads[t].op == SIM_ACTIVEMASK)
            threads[t].state = SIM_RUNNABLE;
    return found;
}

/* Is the warp operation lane `first` waits at ready: does every other lane its mask names
 * wait at the same one (or has it returned)? Anything else is an error: a GPU would hang
 * or return garbage. Lanes not named in the mask are none of its business. */
static int check_warp_group(int lo, int hi, int first, char *error, size_t error_size)
{
    sim_thread *f = &threads[first];
    const char *op = warp_op_name(f->op);
    if (f->width < 1 || f->width > 32 || (f->width & (f->width - 1))) {
        snprintf(error, error_size, "block %s: thread %s calls %s at line %d with width %d; width must be "
                 "a power of 2 from 1 to 32", coords(__sim_blockIdx), coords(thread_index[first]), op, f->line,
                 f->width);
        return SIM_BAD_LAUNCH;
    }
    if (!((f->mask >> (first - lo)) & 1)) {
        snprintf(error, error_size, "block %s, warp %d: thread %s (lane %d) calls %s at line %d with mask "
                 "0x%08x, which leaves out the lane itself", coords(__sim_blockIdx), lo / 32,
                 coords(thread_index[first]), first - lo, op, f->line, f->mask);
        return SIM_WARP_DIVERGENCE;
    }
    for (int t = lo; t < hi; t++) {
        sim_thread *l = &threads[t];
        if (!((f->mask >> (t - lo)) & 1) || l->state == SIM_DONE)
            continue;
        if (l->state == SIM_AT_BARRIER) {
            snprintf(error, error_size, "block %s, warp %d: thread %s waits at %s (line %d, mask 0x%08x) for "
                     "lane %d, thread %s, which waits at __syncthreads() (line %d) instead",
                     coords(__sim_blockIdx), lo / 32, coords(thread_index[first]), op, f->line, f->mask, t - lo,
                     coords(thread_index[t]), l->line);
            return SIM_WARP_DIVERGENCE;
        }
        if (l->op != f->op || l->mask != f->mask || l->line != f->line || l->width != f->width) {
            snprintf(error, error_size, "block %s, warp %d: thread %s waits at %s (line %d, mask 0x%08x) while "
                     "thread %s, which that mask names, waits at %s (line %d, mask 0x%08x); the lanes of a warp "
                     "operation must all call it with the same mask", coords(__sim_blockIdx), lo / 32,
                     coords(thread_index[first]), op, f->line, f->mask, coords(thread_index[t]),
                     warp_op_name(l->op), l->line, l->mask);
            return SIM_WARP_DIVERGENCE;
        }
    }
    return SIM_OK;
}

/* Complete the warp operation of lanes `group` of warp [lo, hi), all waiting at it. A lane
 * that reads from a lane outside the group (returned, or beyond the block) gets poison:
 * all bits set, NaN as a float. */
static void complete_warp_group(int lo, int hi, unsigned int group)
{
    uint64_t ballot = 0;
    if (threads[__builtin_ctz(group) + lo].op == SIM_SYNCWARP)
        warp_epoch[lo / 32]++;  /* orders the memory accesses of the lanes, as a barrier does */
    for (int t = lo; t < hi; t++)
        if ((group >> (t - lo)) & 1 && threads[t].value)
            ballot |= 1ull << (t - lo);
    for (int t = lo; t < hi; t++) {
        sim_thread *l = &threads[t];
        if (!((group >> (t - lo)) & 1))
            continue;
        if (l->op == SIM_BALLOT) {
            l->result = ballot;
        } else if (l->op == SIM_SYNCWARP) {
            continue;
        } else {
            int src = shuffle_source(l->op, t - lo, l->arg, l->width);
            if (src < 0)
                l->result = l->value;
            else if ((group >> src) & 1)
                l->result = threads[lo + src].value;
            else
                l->result = ~0ull;
        }
    }
}

/* Complete the warp operations of warp [lo, hi) whose lanes have all arrived: one group of
 * lanes per mask (disjoint masks may wait at different operations at once). */
static int resolve_warp(int lo, int hi, char *error, size_t error_size)
{
    if (resolve_activemask(lo, hi))
        return SIM_OK;
    unsigned int resolved = 0;
    for (int first = lo; first < hi; first++) {
        if (threads[first].state != SIM_AT_WARP || (resolved >> (first - lo)) & 1)
            continue;
        int status = check_warp_group(lo, hi, first, error, error_size);
        if (status != SIM_OK)
            return status;
        unsigned int group = 0;
        for (int t = lo; t < hi; t++)
            if ((threads[first].mask >> (t - lo)) & 1 && threads[t].state == SIM_AT_WARP)
                group |= 1u << (t - lo);
        complete_warp_group(lo, hi, group);
        resolved |= group;
    }
    for (int t = lo; t < hi; t++)
        if ((resolved >> (t - lo)) & 1)
            threads[t].state = SIM_RUNNABLE;
    return SIM_OK;
}

static int resolve_warps(int n, char *error, size_t error_size)
{
    for (int lo = 0; lo < n; lo += 32) {
        int status = resolve_warp(lo, lo + 32 < n ? lo + 32 : n, error, error_size);
        if (status != SIM_OK)
            return status;
    }
    return SIM_OK;
}

static void run_thread(int t)
{
    __sim_current = t;
    __sim_threadIdx = thread_index[t];
    sim_switch(&__sim_scheduler, &threads[t].ctx);
}

static volatile sig_atomic_t interrupted;

/* Thread t has just parked at a warp operation. Once every lane of its warp has parked, the
 * warp's operations complete and the warp runs on at once, to its next barrier or its end,
 * before the threads of other warps still waiting their turn in this phase. A GPU promises
 * no order between warps, and this one exposes a race between warps that only a
 * __syncthreads() would prevent, even when a shuffle separates the two accesses. */
static int run_warp_onward(int t, int n, int order, uint64_t *rng, char *error, size_t error_size)
{
    int lo = t / 32 * 32, hi = lo + 32 < n ? lo + 32 : n;
    int lanes[32];
    while (!interrupted) {
        int at_warp = 0;
        for (int u = lo; u < hi; u++) {
            if (threads[u].state == SIM_RUNNABLE)
                return SIM_OK;  /* a lane has not run yet in this phase */
            at_warp |= threads[u].state == SIM_AT_WARP;
        }
        if (!at_warp)
            return SIM_OK;
        int status = resolve_warp(lo, hi, error, error_size);
        if (status != SIM_OK)
            return status;
        int count = 0;
        for (int u = lo; u < hi; u++)
            if (threads[u].state == SIM_RUNNABLE)
                lanes[count++] = u;
        if (count == 0)
            return SIM_OK;
        put_order(lanes, count, order, rng);
        for (int i = 0; i < count; i++)
            run_thread(lanes[i]);
    }
    return SIM_OK;
}

/* All threads are parked; decide what the block does next. */
static int after_phase(int n, int barriers, char *error, size_t error_size)
{
    int done = 0, waiting = 0, at_warp = 0, first_done = -1, first_waiting = -1;
    for (int t = 0; t < n; t++) {
        int s = threads[t].state;
        if (s == SIM_DONE) {
            done++;
            if (first_done < 0)
                first_done = t;
        } else if (s == SIM_AT_BARRIER) {
            waiting++;
            if (first_waiting < 0)
                first_waiting = t;
        } else {
            at_warp++;
        }
    }
    if (done == n)
        return SIM_BLOCK_DONE;
    if (at_warp)
        return resolve_warps(n, error, error_size);
    const char *block = coords(__sim_blockIdx), *other = coords(thread_index[first_waiting]);
    if (done) {
        const char *who = coords(thread_index[first_done]);
        snprintf(error, error_size, "block %s: thread %s returned (with %d other threads) while %d threads, "
                 "the first %s, wait at __syncthreads() number %d (line %d); every thread of a block must reach "
                 "every __syncthreads(), so a GPU would hang or compute garbage here", block, who, done - 1,
                 waiting, other, barriers + 1, threads[first_waiting].line);
        return SIM_BARRIER_DIVERGENCE;
    }
    for (int t = 0; t < n; t++)
        if (threads[t].line != threads[first_waiting].line) {
            const char *who = coords(thread_index[t]);
            snprintf(error, error_size, "block %s: at barrier number %d, thread %s waits at the __syncthreads() "
                     "of line %d but thread %s at the one of line %d; all threads of a block must reach the same "
                     "__syncthreads()", block, barriers + 1, other, threads[first_waiting].line, who,
                     threads[t].line);
            return SIM_BARRIER_DIVERGENCE;
        }
    uint64_t count = 0;
    for (int t = 0; t < n; t++)
        count += threads[t].value;
    for (int t = 0; t < n; t++) {
        threads[t].result = count;
        threads[t].state = SIM_RUNNABLE;
    }
    block_epoch++;
    return SIM_OK;
}

/* A kernel that dereferences a wild pointer, overflows its stack or divides an integer
 * by zero would kill the Python process; instead the signal lands here and the launch
 * ends with an error naming the thread that was running. */
static sigjmp_buf fault_exit;
static volatile int fault_signal, fault_code;
static void *volatile fault_address;
static char signal_stack[64 * 1024];
static pthread_t launch_thread;
static void *volatile fault_pc;  /* the faulting instruction, where the signal tells it */

/* ---- checking every access of a kernel ------------------------------------------ */
static sim_region *regions;
static int region_count, last_region, race_check;
static sim_fault *bad;            /* where sim_access reports, for Python */
static uintptr_t image_lo, image_hi, image_base;  /* this library's own mapped code and data */

/* The mapped extent of this library: the built-in variables and runtime state the kernels
 * read live there, as do their own __constant__ tables and string literals. */
static int find_image(struct dl_phdr_info *info, size_t size, void *data)
{
    (void)size;
    if (info->dlpi_addr != *(uintptr_t *)data)
        return 0;
    image_lo = UINTPTR_MAX;
    image_hi = 0;
    for (int i = 0; i < info->dlpi_phnum; i++)
        if (info->dlpi_phdr[i].p_type == PT_LOAD) {
            uintptr_t lo = info->dlpi_addr + info->dlpi_phdr[i].p_vaddr, hi = lo + info->dlpi_phdr[i].p_memsz;
            image_lo = lo < image_lo ? lo : image_lo;
            image_hi = hi > image_hi ? hi : image_hi;
        }
    return 1;
}

static uint64_t code_offset(void *pc)
{
    return (uintptr_t)pc >= image_lo && (uintptr_t)pc < image_hi ? (uintptr_t)pc - image_base : 0;
}

__attribute__((noreturn)) static void access_fault(int kind, int region, uintptr_t address, size_t size, int write,
                                                   void *pc)
{
    bad->kind = kind;
    bad->region = region;
    bad->write = write;
    bad->size = (int)size;
    bad->address = address;
    bad->offset = region >= 0 ? (int64_t)(address - (uintptr_t)regions[region].start) : 0;
    bad->pc = code_offset(pc);
    bad->block = block_linear;
    bad->thread = (uint32_t)__sim_current;
    fault_signal = SIGUSR1;  /* not a signal: an access sim_access refused */
    siglongjmp(fault_exit, 1);
}

/* Is `r` (an earlier access) ordered before the running thread's access by a barrier, or by
 * a __syncwarp() of their common warp? Accesses of other blocks never are. */
static int ordered_before(const sim_record *r)
{
    if (r->block != block_linear + 1)
        return 0;
    if (r->epoch != block_epoch)
        return 1;
    int same_warp = (r->thread - 1) / 32 == __sim_current / 32;
    return same_warp && r->warp_epoch != warp_epoch[__sim_current / 32];
}

static int conflicts(const sim_record *r)
{
    int same_thread = r->block == block_linear + 1 && r->thread == __sim_current + 1;
    return r->block && !same_thread && !ordered_before(r);
}

__attribute__((noreturn)) static void race_fault(int region, uintptr_t address, size_t size, int write, void *pc,
                                                 const sim_record *other, int other_write)
{
    bad->other_write = other_write;
    bad->other_block = other->block - 1;
    bad->other_thread = other->thread - 1u;
    bad->other_pc = other->pc;
    access_fault(SIM_BAD_RACE, region, address, size, write, pc);
}

/* Two threads touching one element between barriers, at least one writing and neither in an
 * atomic, is a data race (threads of other blocks are never synchronised with this one). */
static void check_race(int region, uintptr_t address, size_t size, int write, void *pc)
{
    sim_region *r = &regions[region];
    uint64_t offset = address - (uintptr_t)r->start;
    sim_shadow *shadow = r->shadow;
    sim_record me = {block_linear + 1, block_epoch, (uint32_t)code_offset(pc), (uint16_t)(__sim_current + 1),
                     warp_epoch[__sim_current / 32]};
    for (uint64_t g = offset / r->granule; g <= (offset + size - 1) / r->granule; g++) {
        sim_shadow *e = &shadow[g];
        if (conflicts(&e->write))
            race_fault(region, address, size, write, pc, &e->write, 1);
        if (write) {
            if (conflicts(&e->read))
                race_fault(region, address, size, write, pc, &e->read, 0);
            if (conflicts(&e->other_read))
                race_fault(region, address, size, write, pc, &e->other_read, 0);
            e->write = me;
            e->read.block = e->other_read.block = 0;
        } else if (!e->read.block || !conflicts(&e->read)) {
            e->read = me;  /* nobody, this thread, or a reader this thread is ordered after */
        } else {
            e->other_read = me;  /* a second, unordered reader: any writer now races with one of them */
        }
    }
}

static inline int in_window(const sim_region *r, uintptr_t address)
{
    return address - (uintptr_t)r->window_lo < (uintptr_t)(r->window_hi - r->window_lo);
}

/* write: 0 a read, 1 a write, 2 an atomic read-modify-write (counted as both, never a race) */
static inline void sim_access(uintptr_t address, size_t size, int write, void *pc)
{
    if (size == 0)
        return;
    uintptr_t from_stacks = address - (uintptr_t)stacks, slot = stack_size + page_size;
    if (from_stacks < stacks_bytes) {
        /* the running thread's own local variables; another thread's stack is not its memory */
        if (from_stacks - slot * (uintptr_t)__sim_current < slot)
            return;
        access_fault(SIM_BAD_OTHER_STACK, -1, address, size, write, pc);
    }
    /* the region of the previous access first: kernels mostly stay in one array for a while */
    int i = last_region;
    if (!in_window(&regions[i], address))
        for (i = 0; i < region_count && !in_window(&regions[i], address); i++)
            ;
    if (i < region_count) {
        sim_region *r = &regions[i];
        if (address < (uintptr_t)r->start || address + size > (uintptr_t)r->start + r->bytes)
            access_fault(SIM_BAD_OUT_OF_BOUNDS, i, address, size, write, pc);
        last_region = i;
        if (write)
            r->writes += size;
        if (write != 1)
            r->reads += size;
        if (race_check && write != 2)
            check_race(i, address, size, write, pc);
        return;
    }
    if (address >= image_lo && address + size <= image_hi)
        return;
    access_fault(SIM_BAD_POINTER, -1, address, size, write, pc);
}

/* The calls -fsanitize=thread puts before every load and store of the kernels (GCC's and
 * Clang's ThreadSanitizer instrumentation, with our definitions instead of its runtime: one
 * call per access, reads and writes told apart, none merged away). Hidden, so that the kernels
 * call these even when a sanitizer runtime with the same names is loaded. */
#define SIM_HOOK __attribute__((visibility("hidden"), used))
#define SIM_CALLBACK(name, n, write) \
    SIM_HOOK void name(void *p) { sim_access((uintptr_t)p, n, write, __builtin_return_address(0)); }
#define SIM_CALLBACKS(n)                                   \
    SIM_CALLBACK(__tsan_read##n, n, 0)                     \
    SIM_CALLBACK(__tsan_write##n, n, 1)                    \
    SIM_CALLBACK(__tsan_unaligned_read##n, n, 0)           \
    SIM_CALLBACK(__tsan_unaligned_write##n, n, 1)
SIM_CALLBACK(__tsan_read1, 1, 0)
SIM_CALLBACK(__tsan_write1, 1, 1)
SIM_CALLBACKS(2)
SIM_CALLBACKS(4)
SIM_CALLBACKS(8)
SIM_CALLBACKS(16)
void __sim_check_range(const void *p, size_t bytes, int write)
{
    sim_access((uintptr_t)p, bytes, write, __builtin_return_address(0));
}

void __sim_atomic_access(void *p, size_t size, void *pc)
{
    sim_access((uintptr_t)p, size, 2, pc);
}
SIM_HOOK void __tsan_read_range(void *p, size_t n) { sim_access((uintptr_t)p, n, 0, __builtin_return_address(0)); }
SIM_HOOK void __tsan_write_range(void *p, size_t n) { sim_access((uintptr_t)p, n, 1, __builtin_return_address(0)); }
SIM_HOOK void __tsan_init(void) {}  /* called by the module's constructor: nothing to set up */
SIM_HOOK void __tsan_func_entry(void *caller) { (void)caller; }
SIM_HOOK void __tsan_func_exit(void) {}
SIM_HOOK void __tsan_atomic_thread_fence(int order) { (void)order; }  /* __threadfence(): fibers never overlap */
SIM_HOOK void __tsan_atomic_signal_fence(int order) { (void)order; }

static int run_block(int n, int order, uint64_t *rng, char *error, size_t error_size)
{
    for (int t = 0; t < n; t++)
        threads[t].state = SIM_RUNNABLE;
    for (int barriers = 0;; ) {
        int count = 0;
        for (int t = 0; t < n; t++)
            if (threads[t].state == SIM_RUNNABLE)
                run_list[count++] = t;
        put_order(run_list, count, order, rng);
        for (int i = 0; i < count; i++) {
            int t = run_list[i];
            run_thread(t);
            if (threads[t].state == SIM_AT_WARP) {
                int status = run_warp_onward(t, n, order, rng, error, error_size);
                if (status != SIM_OK)
                    return status;
            }
        }
        if (interrupted) {
            snprintf(error, error_size, "interrupted in block %s after %d barriers", coords(__sim_blockIdx),
                     barriers);
            return SIM_INTERRUPTED;
        }
        int all_at_barrier = 1;
        for (int t = 0; t < n && all_at_barrier; t++)
            all_at_barrier = threads[t].state == SIM_AT_BARRIER;
        int status = after_phase(n, barriers, error, error_size);
        if (status == SIM_BLOCK_DONE)
            return SIM_OK;
        if (status != SIM_OK)
            return status;
        barriers += all_at_barrier;
    }
}

static int run_grid(const unsigned int *grid, int n, int order, uint64_t seed, char *error, size_t error_size)
{
    uint64_t blocks = (uint64_t)grid[0] * grid[1] * grid[2];
    uint64_t rng = seed * 0x9E3779B97F4A7C15ULL + 0x632BE59BD9B4E019ULL;
    uint64_t step = 1, offset = 0;
    if (order == SIM_ORDER_RANDOM && blocks > 1) {
        /* i -> (i * step + offset) mod blocks is a permutation when step is coprime to blocks */
        step = next_random(&rng) % blocks | 1;
        while (gcd(step, blocks) != 1)
            step += 2;
        offset = next_random(&rng) % blocks;
    }
    for (uint64_t i = 0; i < blocks; i++) {
        uint64_t b = order == SIM_ORDER_REVERSE ? blocks - 1 - i
                   : (uint64_t)(((unsigned __int128)i * step + offset) % blocks);
        __sim_blockIdx = (uint3){(unsigned int)(b % grid[0]), (unsigned int)(b / grid[0] % grid[1]),
                                 (unsigned int)(b / ((uint64_t)grid[0] * grid[1]))};
        block_linear = (uint32_t)b;
        block_epoch = 0;
        memset(warp_epoch, 0, sizeof warp_epoch);
        /* a fresh block's shared memory: NaN (stale values would hide a missing barrier), no history */
        for (int r = 0; r < region_count; r++)
            if (regions[r].kind != SIM_REGION_GLOBAL) {
                memset(regions[r].start, 0xFF, regions[r].bytes);
                if (regions[r].shadow)
                    memset(regions[r].shadow, 0, regions[r].bytes / regions[r].granule * sizeof(sim_shadow));
            }
        int status = run_block(n, order, &rng, error, error_size);
        if (status != SIM_OK)
            return status;
    }
    return SIM_OK;
}


static void on_fault(int sig, siginfo_t *info, void *context)
{
    fault_signal = sig;
    fault_code = info->si_code;
    fault_address = info->si_addr;
#if defined(__x86_64__) && defined(REG_RIP)
    fault_pc = (void *)((ucontext_t *)context)->uc_mcontext.gregs[REG_RIP];
#else
    (void)context;
#endif
    siglongjmp(fault_exit, 1);
}

/* Ctrl-C (or a notebook's interrupt) during a launch stops it at the next barrier or block;
 * a second Ctrl-C stops it at once, for a thread stuck in a loop. Only the launching OS
 * thread may jump out of the kernel, so the signal is passed on to it. */
static void on_interrupt(int sig)
{
    if (!interrupted) {
        interrupted = 1;
    } else if (!pthread_equal(pthread_self(), launch_thread)) {
        pthread_kill(launch_thread, sig);
    } else {
        fault_signal = sig;
        siglongjmp(fault_exit, 1);
    }
}

static const char *failed_assertion;
static int failed_line;

/* assert() in a kernel: on a GPU the kernel traps and the context reports cudaErrorAssert. */
void __sim_assert_fail(const char *condition, int line)
{
    failed_assertion = condition;
    failed_line = line;
    fault_signal = 0;
    siglongjmp(fault_exit, 1);
}

static void describe_fault(char *error, size_t error_size)
{
    const char *block = coords(__sim_blockIdx), *thread = coords(__sim_threadIdx);
    char *addr = fault_address;
    size_t slot = stack_size + page_size;
    if (fault_signal == SIGUSR1)
        snprintf(error, error_size, "block %s, thread %s", block, thread);  /* Python describes the access */
    else if (fault_signal == 0)
        snprintf(error, error_size, "block %s, thread %s: assertion `%s` failed at line %d", block, thread,
                 failed_assertion, failed_line);
    else if (fault_signal == SIGINT)
        snprintf(error, error_size, "interrupted twice while block %s, thread %s was running (stuck in a loop?)",
                 block, thread);
    else if (fault_signal == SIGFPE)
        snprintf(error, error_size, "block %s, thread %s: %s (a GPU gives an unspecified value instead)", block,
                 thread, fault_code == FPE_INTDIV ? "integer division by zero" : "arithmetic fault");
    else if (stacks && addr >= stacks && addr < stacks + stacks_bytes && (size_t)(addr - stacks) % slot < page_size)
        snprintf(error, error_size, "block %s, thread %s: the thread's stack overflowed its %zu KiB (deep "
                 "recursion, or a local array of variable size)", block, thread, stack_size / 1024);
    else
        snprintf(error, error_size, "block %s, thread %s: invalid memory access at address %p (an index outside "
                 "an array, or a bad pointer; on a GPU: cudaErrorIllegalAddress). Writes the kernel made out of "
                 "bounds before this one may have corrupted memory of this process", block, thread, (void *)addr);
}

/* Run kernel number `kernel` of this module over the grid. Returns SIM_OK or an error
 * code with a message in `error`. `order` 0/1/2 is forward/reverse/random (seeded). */
SIM_API int minigrad_sim_launch(int kernel, void **args, const unsigned int *grid, const unsigned int *block,
                                void *dynamic_shared, void *const *static_shared, int static_count,
                                sim_region *launch_regions, int launch_region_count, int check_races,
                                sim_fault *fault, int order, uint64_t seed, size_t stack_bytes,
                                char *error, size_t error_size)
{
    int n = (int)(block[0] * block[1] * block[2]);
    if (kernel < 0 || kernel >= __sim_entry_count || n < 1 || n > SIM_MAX_THREADS) {
        snprintf(error, error_size, "bad launch: kernel %d, %d threads per block", kernel, n);
        return SIM_BAD_LAUNCH;
    }
    if (static_count < 0 || static_count > SIM_MAX_STATIC_SHARED) {
        snprintf(error, error_size, "bad launch: %d static __shared__ variables (at most %d)", static_count,
                 SIM_MAX_STATIC_SHARED);
        return SIM_BAD_LAUNCH;
    }
    if (!image_hi) {
        Dl_info self;
        if (!dladdr((void *)minigrad_sim_launch, &self)) {
            snprintf(error, error_size, "the simulator cannot find its own library in memory (dladdr)");
            return SIM_BAD_LAUNCH;
        }
        image_base = (uintptr_t)self.dli_fbase;
        dl_iterate_phdr(find_image, &image_base);
    }
    memcpy(__sim_static_shared_ptrs, static_shared, (size_t)static_count * sizeof(void *));
    regions = launch_regions;
    region_count = launch_region_count;
    last_region = 0;
    race_check = check_races;
    bad = fault;
    fault->kind = SIM_BAD_NONE;
    fault_pc = NULL;
    __sim_threads = threads;
    if (map_stacks(n, stack_bytes) || make_fibers(n > fiber_count ? n : fiber_count)) {
        snprintf(error, error_size, "could not map %d fiber stacks of %zu bytes", n, stack_bytes);
        return SIM_NO_MEMORY;
    }
    __sim_entry_fn = __sim_entries[kernel];
    __sim_entry_args = args;
    __sim_dynamic_shared_ptr = dynamic_shared;
    __sim_blockDim = (dim3){block[0], block[1], block[2]};
    __sim_gridDim = (dim3){grid[0], grid[1], grid[2]};
    for (int t = 0; t < n; t++)
        thread_index[t] = (uint3){t % block[0], t / block[0] % block[1], t / (block[0] * block[1])};

    stack_t alternate = {.ss_sp = signal_stack, .ss_size = sizeof signal_stack}, old_stack;
    struct sigaction action = {.sa_sigaction = on_fault, .sa_flags = SA_SIGINFO | SA_ONSTACK}, old[4];
    struct sigaction interrupt = {.sa_handler = on_interrupt, .sa_flags = SA_ONSTACK};
    static const int signals[4] = {SIGSEGV, SIGBUS, SIGFPE, SIGINT};
    sigemptyset(&action.sa_mask);
    sigemptyset(&interrupt.sa_mask);
    sigaltstack(&alternate, &old_stack);
    for (int i = 0; i < 3; i++)
        sigaction(signals[i], &action, &old[i]);
    interrupted = 0;
    launch_thread = pthread_self();
    sigaction(SIGINT, &interrupt, &old[3]);
    int status;
    if (sigsetjmp(fault_exit, 1)) {
        describe_fault(error, error_size);
        if (fault_signal != SIGUSR1 && fault_signal != SIGINT) {
            /* the faulting instruction itself; the +1 makes it read like the return addresses the access
             * checks record, which point just past their call */
            uint64_t at = code_offset(fault_pc);
            fault->pc = at ? at + 1 : 0;
        }
        status = fault_signal == SIGINT ? SIM_INTERRUPTED : SIM_FAULT;
    } else {
        status = run_grid(grid, n, order, seed, error, error_size);
    }
    for (int i = 0; i < 4; i++)
        sigaction(signals[i], &old[i], NULL);
    sigaltstack(&old_stack, NULL);
    if (status != SIM_OK) {
        fiber_count = 0;  /* the fibers stopped inside the kernel: start them afresh next time */
#if defined(__SANITIZE_ADDRESS__)
        /* (the sanitizer test) the jump out of a fiber left its frames' redzones poisoned, and AddressSanitizer,
         * which does not know the fiber stacks, could not clear them: do it, so that fresh fibers start clean */
        __asan_unpoison_memory_region(stacks, stacks_bytes);
#endif
    }
    fflush(stdout);       /* printf from kernels shows before Python prints anything else */
    return status;
}

/* Where the last fault of a launch happened, for Python to name the array it missed. */
SIM_API void *minigrad_sim_fault_address(void)
{
    return fault_address;
}

/* Device memory for one region of a launch (an array argument, a shared variable): its
 * `bytes` (rounded up to 16) end exactly at the end of its pages, and around those pages lie
 * GUARD_BYTES of reserved, inaccessible address space on each side: 32 GiB, more than an int
 * index times the widest element (16 bytes) reaches. An access anywhere in that window belongs
 * to this region and to no other, and one that sim_access does not see (memset, a library
 * call) faults. The bytes around the data within its pages hold 0xFF (NaN as float), so that
 * stray writes made past the checks can be found afterwards. Where the address space is too
 * small for such windows (ulimit -v), 64 KiB guards are used instead. */
#define GUARD_BYTES ((size_t)32 << 30)
#define SMALL_GUARD_BYTES ((size_t)64 << 10)

static size_t guard_body(size_t bytes)
{
    size_t page = (size_t)sysconf(_SC_PAGESIZE), padded = (bytes + 15) & ~(size_t)15;
    return (padded + page - 1) / page * page;
}

/* Freed allocations kept for the next launches, which mostly ask for the same sizes:
 * reusing them saves the system calls and page faults of fresh mappings. */
#define POOL_SLOTS 32
#define POOL_MAX_BODY ((size_t)16 << 20)
static struct { char *base; size_t body, guard; } pool[POOL_SLOTS];
static int pool_count;

static char *map_window(size_t body, size_t guard)
{
    char *base = mmap(NULL, body + 2 * guard, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (base == MAP_FAILED)
        return NULL;
    if (mprotect(base + guard, body, PROT_READ | PROT_WRITE)) {
        munmap(base, body + 2 * guard);
        return NULL;
    }
    return base;
}

/* Fills the region's start, window and size; returns 0, or -1 when no memory could be mapped. */
SIM_API int minigrad_sim_guarded_alloc(size_t bytes, sim_region *region)
{
    size_t body = guard_body(bytes), guard = GUARD_BYTES;
    char *base = NULL;
    for (int i = 0; i < pool_count && !base; i++)
        if (pool[i].body == body) {
            base = pool[i].base;
            guard = pool[i].guard;
            pool[i] = pool[--pool_count];
        }
    if (!base && !(base = map_window(body, guard)) && !(base = map_window(body, guard = SMALL_GUARD_BYTES)))
        return -1;
    memset(base + guard, 0xFF, body);
    region->window_lo = base;
    region->window_hi = base + 2 * guard + body;
    region->start = base + guard + body - ((bytes + 15) & ~(size_t)15);
    region->bytes = bytes;
    return 0;
}

SIM_API void minigrad_sim_guarded_free(const sim_region *region)
{
    size_t body = guard_body(region->bytes);
    size_t guard = (size_t)(region->window_hi - region->window_lo - body) / 2;
    if (pool_count < POOL_SLOTS && body <= POOL_MAX_BODY) {
        pool[pool_count].base = region->window_lo;
        pool[pool_count].guard = guard;
        pool[pool_count++].body = body;
    } else {
        munmap(region->window_lo, body + 2 * guard);
    }
}

/* Offset from `data` of the first poison byte around it that was overwritten, or 0 if none
 * (an offset of 0 is the data itself, never poison). */
SIM_API long long minigrad_sim_guarded_damage(void *data, size_t bytes)
{
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    unsigned char *d = data, *first_page = (unsigned char *)((uintptr_t)data / page * page);
    for (unsigned char *p = first_page; p < d; p++)
        if (*p != 0xFF)
            return (long long)(p - d);
    for (size_t i = bytes; i < ((bytes + 15) & ~(size_t)15); i++)
        if (d[i] != 0xFF)
            return (long long)i;
    return 0;
}

/* Bytes of race-check shadow per granule of a region. */
SIM_API size_t minigrad_sim_shadow_bytes(void)
{
    return sizeof(sim_shadow);
}
