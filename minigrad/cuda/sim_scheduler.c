/* sim_scheduler.c - runs a kernel launch: blocks one after another, the threads of a
 * block as fibers that meet at barriers and warp operations.
 *
 * Included at the end of every simulator module, after sim_runtime.h, the user's
 * kernels and the generated table `__sim_entries` of entry functions.
 *
 * Fibers are made once with makecontext (each on its own stack with a guard page
 * below it) and switched with _setjmp/_longjmp, which costs no system call. A fiber
 * loops forever: run the kernel for the thread it is told to be, then park. The
 * scheduler resumes every runnable fiber of the block in the chosen order; each runs
 * until it parks at a barrier, at a warp operation, or at its end. Then:
 *   - warps whose lanes all wait at a warp operation get their results and run on;
 *   - when every thread waits at __syncthreads(), the barrier opens;
 *   - a thread that returned while others wait at a barrier is barrier divergence,
 *     reported with block, thread and barrier number instead of hanging as a GPU would.
 */
#include <stdlib.h>
#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

#define SIM_API __attribute__((visibility("default")))
#define SIM_MAX_THREADS 1024

enum { SIM_OK, SIM_BARRIER_DIVERGENCE, SIM_WARP_DIVERGENCE, SIM_BAD_LAUNCH, SIM_NO_MEMORY };
enum { SIM_ORDER_FORWARD, SIM_ORDER_REVERSE, SIM_ORDER_RANDOM };

extern char __start_sim_shared[] __attribute__((visibility("hidden")));
extern char __stop_sim_shared[] __attribute__((visibility("hidden")));
/* Keeps the section (and its start/stop symbols) present when no kernel declares __shared__. */
static char sim_shared_anchor __attribute__((section("sim_shared"), used));

/* Not static, like the built-in variables: fibers read them after every resume. */
__attribute__((visibility("hidden"))) sim_entry __sim_entry_fn;
__attribute__((visibility("hidden"))) void **__sim_entry_args;

static sim_thread threads[SIM_MAX_THREADS];
static uint3 thread_index[SIM_MAX_THREADS];
static int run_list[SIM_MAX_THREADS];

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

static void describe(char *out, size_t size, uint3 v)
{
    snprintf(out, size, "(%u, %u, %u)", v.x, v.y, v.z);
}

static const char *warp_op_name(int op)
{
    static const char *names[] = {"__shfl_sync", "__shfl_up_sync", "__shfl_down_sync", "__shfl_xor_sync",
                                  "__syncwarp", "__ballot_sync"};
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

/* Complete every warp operation whose lanes have all arrived. A lane named in the
 * mask that waits elsewhere is an error (a GPU would hang or return garbage); a lane
 * that has returned takes no part, and reading its value gives the poison NaN bits. */
static int resolve_warps(int n, char *block, char *error, size_t error_size)
{
    char who[64], other[64];
    for (int lo = 0; lo < n; lo += 32) {
        int hi = lo + 32 < n ? lo + 32 : n, first = -1;
        for (int t = lo; t < hi && first < 0; t++)
            if (threads[t].state == SIM_AT_WARP)
                first = t;
        if (first < 0)
            continue;
        sim_thread *f = &threads[first];
        describe(who, sizeof who, thread_index[first]);
        if (f->width < 1 || f->width > 32 || (f->width & (f->width - 1))) {
            snprintf(error, error_size, "block %s: thread %s calls %s at line %d with width %d; width must be a "
                     "power of 2 from 1 to 32", block, who, warp_op_name(f->op), f->line, f->width);
            return SIM_BAD_LAUNCH;
        }
        for (int t = lo; t < hi; t++) {
            sim_thread *l = &threads[t];
            unsigned int bit = 1u << (t - lo);
            describe(other, sizeof other, thread_index[t]);
            if (l->state == SIM_AT_WARP) {
                if (l->op != f->op || l->mask != f->mask || l->line != f->line || l->width != f->width) {
                    snprintf(error, error_size, "block %s, warp %d: thread %s waits at %s (line %d, mask 0x%08x) "
                             "while thread %s of the same warp waits at %s (line %d, mask 0x%08x); the lanes of a "
                             "warp operation must all call it with the same mask", block, lo / 32, who,
                             warp_op_name(f->op), f->line, f->mask, other, warp_op_name(l->op), l->line, l->mask);
                    return SIM_WARP_DIVERGENCE;
                }
                if (!(f->mask & bit)) {
                    snprintf(error, error_size, "block %s, warp %d: thread %s (lane %d) calls %s at line %d with "
                             "mask 0x%08x, which leaves out the lane itself", block, lo / 32, other, t - lo,
                             warp_op_name(f->op), f->line, f->mask);
                    return SIM_WARP_DIVERGENCE;
                }
            } else if ((f->mask & bit) && l->state == SIM_AT_BARRIER) {
                snprintf(error, error_size, "block %s, warp %d: thread %s waits at %s (line %d, mask 0x%08x) "
                         "for lane %d, thread %s, which waits at __syncthreads() (line %d) instead",
                         block, lo / 32, who, warp_op_name(f->op), f->line, f->mask, t - lo, other, l->line);
                return SIM_WARP_DIVERGENCE;
            }
        }
        uint64_t ballot = 0;
        for (int t = lo; t < hi; t++)
            if (threads[t].state == SIM_AT_WARP && threads[t].value)
                ballot |= 1ull << (t - lo);
        for (int t = lo; t < hi; t++) {
            sim_thread *l = &threads[t];
            if (l->state != SIM_AT_WARP)
                continue;
            if (l->op == SIM_BALLOT) {
                l->result = ballot;
            } else if (l->op != SIM_SYNCWARP) {
                int src = shuffle_source(l->op, t - lo, l->arg, l->width);
                if (src < 0)
                    l->result = l->value;
                else if (lo + src < hi && threads[lo + src].state == SIM_AT_WARP)
                    l->result = threads[lo + src].value;
                else
                    l->result = ~0ull;
            }
        }
        for (int t = lo; t < hi; t++)
            if (threads[t].state == SIM_AT_WARP)
                threads[t].state = SIM_RUNNABLE;
    }
    return SIM_OK;
}

/* All threads are parked; decide what the block does next. */
static int after_phase(int n, int barriers, char *block, char *error, size_t error_size)
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
        return -1;
    if (at_warp)
        return resolve_warps(n, block, error, error_size);
    char who[64], other[64];
    describe(other, sizeof other, thread_index[first_waiting]);
    if (done) {
        describe(who, sizeof who, thread_index[first_done]);
        snprintf(error, error_size, "block %s: thread %s returned (with %d other threads) while %d threads, "
                 "the first %s, wait at __syncthreads() number %d (line %d); every thread of a block must reach "
                 "every __syncthreads(), so a GPU would hang or compute garbage here", block, who, done - 1,
                 waiting, other, barriers + 1, threads[first_waiting].line);
        return SIM_BARRIER_DIVERGENCE;
    }
    for (int t = 0; t < n; t++)
        if (threads[t].line != threads[first_waiting].line) {
            describe(who, sizeof who, thread_index[t]);
            snprintf(error, error_size, "block %s: at barrier number %d, thread %s waits at the __syncthreads() "
                     "of line %d but thread %s at the one of line %d; all threads of a block must reach the same "
                     "__syncthreads()", block, barriers + 1, other, threads[first_waiting].line, who,
                     threads[t].line);
            return SIM_BARRIER_DIVERGENCE;
        }
    for (int t = 0; t < n; t++)
        threads[t].state = SIM_RUNNABLE;
    return SIM_OK;
}

static int run_block(int n, int order, uint64_t *rng, char *block, char *error, size_t error_size)
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
            __sim_current = t;
            __sim_threadIdx = thread_index[t];
            sim_switch(&__sim_scheduler, &threads[t].ctx);
        }
        int all_at_barrier = 1;
        for (int t = 0; t < n && all_at_barrier; t++)
            all_at_barrier = threads[t].state == SIM_AT_BARRIER;
        int status = after_phase(n, barriers, block, error, error_size);
        if (status < 0)
            return SIM_OK;
        if (status != SIM_OK)
            return status;
        barriers += all_at_barrier;
    }
}

/* Run kernel number `kernel` of this module over the grid. Returns SIM_OK or an error
 * code with a message in `error`. `order` 0/1/2 is forward/reverse/random (seeded). */
SIM_API int minigrad_sim_launch(int kernel, void **args, const unsigned int *grid, const unsigned int *block,
                         void *dynamic_shared, size_t dynamic_bytes, int order, uint64_t seed,
                         size_t stack_bytes, char *error, size_t error_size)
{
    int n = (int)(block[0] * block[1] * block[2]);
    if (kernel < 0 || kernel >= __sim_entry_count || n < 1 || n > SIM_MAX_THREADS) {
        snprintf(error, error_size, "bad launch: kernel %d, %d threads per block", kernel, n);
        return SIM_BAD_LAUNCH;
    }
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
    size_t shared_bytes = (size_t)(__stop_sim_shared - __start_sim_shared);
    char where[64];
    for (uint64_t i = 0; i < blocks; i++) {
        uint64_t b = order == SIM_ORDER_REVERSE ? blocks - 1 - i
                   : (uint64_t)(((unsigned __int128)i * step + offset) % blocks);
        __sim_blockIdx = (uint3){(unsigned int)(b % grid[0]), (unsigned int)(b / grid[0] % grid[1]),
                                 (unsigned int)(b / ((uint64_t)grid[0] * grid[1]))};
        memset(__start_sim_shared, 0xFF, shared_bytes);
        if (dynamic_bytes)
            memset(dynamic_shared, 0xFF, dynamic_bytes);
        describe(where, sizeof where, __sim_blockIdx);
        int status = run_block(n, order, &rng, where, error, error_size);
        if (status != SIM_OK) {
            fiber_count = 0;  /* the fibers stopped inside the kernel: start them afresh next time */
            return status;
        }
    }
    return SIM_OK;
}

/* Bytes of static __shared__ memory in this module (all kernels together). */
SIM_API size_t minigrad_sim_static_shared_bytes(void)
{
    return (size_t)(__stop_sim_shared - __start_sim_shared) - sizeof sim_shared_anchor;
}
