/* A pool of worker threads that share out numbered work items (kernels/threadpool.c).
 *
 * threadpool_run(threads, items, work, context) calls work(context, item, slot) once for every item
 * in [0, items), on the calling thread and up to threads - 1 workers, and returns when all are done.
 * slot (0 for the caller, 1 .. threads - 1 for workers) names per-thread scratch space; the caller
 * may take every item itself. Never more threads than cores; a nested or concurrent call runs its
 * items on its own thread.
 */
typedef void (*threadpool_fn)(void *context, int64_t item, int slot);

void threadpool_run(int threads, int64_t items, threadpool_fn work, void *context);
/* The cores this process may run on (its CPU affinity), at least 1. */
int threadpool_cores(void);
/* Worker threads started so far: at most threadpool_cores() - 1. */
int threadpool_workers(void);
