/* BROKEN ON PURPOSE: threads past the end of the data return before a __syncthreads()
 * that the other threads of their block wait at. On a GPU this hangs or corrupts the
 * result; the simulator raises BarrierDivergenceError naming block, thread and barrier.
 * Launch: grid (ceil(n/64),), block (64,) with n not a multiple of 64. */
#define THREADS 64

extern "C" __global__ void scale_early_return(const float *x, float *y, int n)
{
    __shared__ float s[THREADS];
    int tid = threadIdx.x, i = blockIdx.x * THREADS + tid;
    if (i >= n)
        return;
    s[tid] = x[i];
    __syncthreads();
    y[i] = 2.0f * s[(tid + 1) % THREADS];
}
