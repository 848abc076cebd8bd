/* A thread pool in which late threads hold nobody up.
 *
 * Why not OpenMP: an OpenMP parallel region ends in a barrier that waits for
 * every thread of the team, including one the OS has not run yet. On a
 * machine where another process keeps a core busy, a woken worker may wait
 * milliseconds for a core, and the caller waits with it, at every barrier.
 *
 * Here a job is `items` numbered work items and a ticket counter. Every
 * thread in the job (the caller and the awake workers) claims the next item
 * with one atomic compare-and-swap until none is left; the caller then waits
 * only for items already claimed, never for a worker that has not started:
 * if no worker wakes in time, the caller does every item itself. The ticket
 * holds the job's generation in its high 32 bits, so a worker that wakes
 * after its job is over cannot claim an item of the next one.
 *
 * Waiting: a thread with nothing to do spins for at most SPIN_NS (the
 * caller for items in progress, a worker for the next job: a matmul posts
 * one job per B panel, back to back), then sleeps on a condition variable,
 * so no thread keeps a core that another process needs. At most
 * threadpool_cores() - 1 workers are ever started, created on first use.
 *
 * Build: python build.py.  Test: python -m pytest tests/test_threadpool.py -q
 */
#define _GNU_SOURCE /* sched_getaffinity, CPU_COUNT */
#include <stdatomic.h>
#include <stdint.h>

#include "threadpool.h"

#if defined(__unix__) || defined(__APPLE__)
#include <pthread.h>
#include <sched.h>
#include <time.h>
#include <unistd.h>
#define HAVE_PTHREADS 1
#else
#define HAVE_PTHREADS 0
#endif

/* The longest spin before sleeping: a little more than a work item of a
 * product worth threading (MIN_FLOPS_PER_THREAD in matmul.c, ~20 us), so
 * a wait for a running item rarely sleeps, and short enough that a thread
 * the OS has descheduled costs another process little. */
#define SPIN_NS 50000
#define MAX_THREADS 256

int threadpool_cores(void)
{
#if defined(__linux__)
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 0)
        return CPU_COUNT(&set);
#endif
#if HAVE_PTHREADS
    long online = sysconf(_SC_NPROCESSORS_ONLN);
    return online > 0 ? (int)(online < MAX_THREADS ? online : MAX_THREADS) : 1;
#else
    return 1;
#endif
}

static void run_serially(int64_t items, threadpool_fn work, void *context)
{
    for (int64_t item = 0; item < items; item++)
        work(context, item, 0);
}

#if !HAVE_PTHREADS

void threadpool_run(int threads, int64_t items, threadpool_fn work, void *context)
{
    (void)threads;
    run_serially(items, work, context);
}

int threadpool_workers(void) { return 0; }

#else

/* `lock` guards the job description, `generation`, `workers` and the sleeps. */
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t job_posted = PTHREAD_COND_INITIALIZER;
static pthread_cond_t job_done = PTHREAD_COND_INITIALIZER;
/* Held by the one caller whose job the pool runs. */
static pthread_mutex_t in_use = PTHREAD_MUTEX_INITIALIZER;

static int workers;
static uint32_t born[MAX_THREADS]; /* the generation current when worker `slot` was created */
static struct {
    threadpool_fn work;
    void *context;
    int64_t items;
    int threads;
} job;
/* Also readable without the lock, by a spinning worker. */
static _Atomic uint32_t generation;
/* generation << 32 | the next unclaimed item */
static _Atomic uint64_t ticket;
/* items of the current job finished */
static _Atomic int64_t done;

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

static int64_t now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

/* Spin until condition(argument) holds or SPIN_NS pass; whether it holds. */
static int spin_until(int (*condition)(uint32_t), uint32_t argument)
{
    int64_t start = now_ns();
    for (int spins = 1;; spins++) {
        if (condition(argument))
            return 1;
        cpu_relax();
        if (spins % 64 == 0 && now_ns() - start > SPIN_NS)
            return 0;
    }
}

static int job_finished(uint32_t items) { return atomic_load(&done) >= (int64_t)items; }
static int job_newer_than(uint32_t seen) { return atomic_load(&generation) != seen; }

/* Claim and run items of job `gen` until none is left. A worker that
 * finishes the job's last item wakes the caller, should it sleep. */
static void claim_items(uint32_t gen, threadpool_fn work, void *context, int64_t items, int slot)
{
    uint64_t t = atomic_load(&ticket);
    while ((uint32_t)(t >> 32) == gen && (int64_t)(uint32_t)t < items) {
        if (!atomic_compare_exchange_weak(&ticket, &t, t + 1))
            continue; /* t now holds the current ticket */
        work(context, (int64_t)(uint32_t)t, slot);
        if (atomic_fetch_add(&done, 1) + 1 == items && slot != 0) {
            pthread_mutex_lock(&lock);
            pthread_cond_broadcast(&job_done);
            pthread_mutex_unlock(&lock);
        }
        t = atomic_load(&ticket);
    }
}

static void *worker_main(void *argument)
{
    int slot = (int)(intptr_t)argument;
    pthread_mutex_lock(&lock);
    uint32_t seen = born[slot];
    for (;;) {
        while (atomic_load(&generation) == seen)
            pthread_cond_wait(&job_posted, &lock);
        seen = atomic_load(&generation);
        if (slot < job.threads) {
            threadpool_fn work = job.work;
            void *context = job.context;
            int64_t items = job.items;
            pthread_mutex_unlock(&lock);
            claim_items(seen, work, context, items, slot);
            spin_until(job_newer_than, seen); /* the next job is often microseconds away */
            pthread_mutex_lock(&lock);
        }
    }
    return NULL;
}

/* Child of fork(): the workers did not come along. The locks were held by
 * the forking thread (prepare_fork), so they are consistent here. */
static void prepare_fork(void) { pthread_mutex_lock(&lock); }
static void parent_after_fork(void) { pthread_mutex_unlock(&lock); }
static void child_after_fork(void)
{
    workers = 0;
    pthread_mutex_unlock(&lock);
}

static pthread_once_t fork_handlers_once = PTHREAD_ONCE_INIT;
static void install_fork_handlers(void)
{
    pthread_atfork(prepare_fork, parent_after_fork, child_after_fork);
}

/* Start workers (under `lock`) until there are `wanted`; false when the OS refuses one. */
static int start_workers(int wanted)
{
    while (workers < wanted) {
        pthread_t thread;
        pthread_attr_t attributes;
        int slot = workers + 1;
        born[slot] = atomic_load(&generation);
        if (pthread_attr_init(&attributes) != 0)
            return 0;
        pthread_attr_setdetachstate(&attributes, PTHREAD_CREATE_DETACHED);
        int failed = pthread_create(&thread, &attributes, worker_main, (void *)(intptr_t)slot);
        pthread_attr_destroy(&attributes);
        if (failed)
            return 0;
        workers++;
    }
    return 1;
}

void threadpool_run(int threads, int64_t items, threadpool_fn work, void *context)
{
    int cores = threadpool_cores();
    if (threads > cores)
        threads = cores;
    if (threads > MAX_THREADS)
        threads = MAX_THREADS;
    if (items < threads)
        threads = (int)items;
    /* One item, one thread, a job too big for the ticket, or the pool busy (a
       nested call from a work item, or another caller thread): this thread alone. */
    if (threads <= 1 || items > UINT32_MAX || pthread_mutex_trylock(&in_use) != 0) {
        run_serially(items, work, context);
        return;
    }
    pthread_once(&fork_handlers_once, install_fork_handlers);

    pthread_mutex_lock(&lock);
    start_workers(threads - 1);
    uint32_t gen = atomic_load(&generation) + 1;
    job.work = work;
    job.context = context;
    job.items = items;
    job.threads = threads < workers + 1 ? threads : workers + 1;
    atomic_store(&done, 0);
    atomic_store(&ticket, (uint64_t)gen << 32);
    atomic_store(&generation, gen);
    pthread_cond_broadcast(&job_posted);
    pthread_mutex_unlock(&lock);

    claim_items(gen, work, context, items, 0);
    if (!spin_until(job_finished, (uint32_t)items)) {
        pthread_mutex_lock(&lock);
        while (!job_finished((uint32_t)items))
            pthread_cond_wait(&job_done, &lock);
        pthread_mutex_unlock(&lock);
    }
    pthread_mutex_unlock(&in_use);
}

int threadpool_workers(void)
{
    pthread_mutex_lock(&lock);
    int count = workers;
    pthread_mutex_unlock(&lock);
    return count;
}

#endif /* HAVE_PTHREADS */
