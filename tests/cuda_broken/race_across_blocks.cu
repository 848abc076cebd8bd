/* BROKEN ON PURPOSE: every block adds its partial sum into total[0] with a plain
 * read-modify-write instead of atomicAdd, so blocks overwrite each other's sums (on a
 * GPU the result depends on timing). The simulator runs blocks one after another, so
 * the sum comes out right by luck; race_check=True raises DataRaceError naming the
 * two blocks. block_sum_atomic is the fix. Launch: grid (blocks,), block (64,). */
#define THREADS 64

extern "C" __global__ void block_sum_racy(const float *x, float *total, int n)
{
    __shared__ float s[THREADS];
    int tid = threadIdx.x, i = blockIdx.x * THREADS + tid;
    s[tid] = i < n ? x[i] : 0.0f;
    __syncthreads();
    for (int stride = THREADS / 2; stride > 0; stride /= 2) {
        if (tid < stride)
            s[tid] += s[tid + stride];
        __syncthreads();
    }
    if (tid == 0)
        total[0] = total[0] + s[0];
}

extern "C" __global__ void block_sum_atomic(const float *x, float *total, int n)
{
    __shared__ float s[THREADS];
    int tid = threadIdx.x, i = blockIdx.x * THREADS + tid;
    s[tid] = i < n ? x[i] : 0.0f;
    __syncthreads();
    for (int stride = THREADS / 2; stride > 0; stride /= 2) {
        if (tid < stride)
            s[tid] += s[tid + stride];
        __syncthreads();
    }
    if (tid == 0)
        atomicAdd(&total[0], s[0]);
}
