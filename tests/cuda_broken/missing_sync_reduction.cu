/* BROKEN ON PURPOSE: a shared-memory tree reduction with no __syncthreads() between
 * the steps, so a thread adds a partial sum its partner has not finished. Correct in
 * one thread order by luck, wrong in another: tests/test_cuda_sim.py asserts a wrong
 * sum in at least one order. Launch: grid (blocks,), block (256,). */
#define THREADS 256

extern "C" __global__ void block_sum_missing_sync(const float *x, float *partial, int n)
{
    __shared__ float s[THREADS];
    int tid = threadIdx.x, i = blockIdx.x * THREADS + tid;
    s[tid] = i < n ? x[i] : 0.0f;
    __syncthreads();
    for (int stride = THREADS / 2; stride > 0; stride /= 2) {
        if (tid < stride)
            s[tid] += s[tid + stride];
        /* missing: __syncthreads(); */
    }
    if (tid == 0)
        partial[blockIdx.x] = s[0];
}
