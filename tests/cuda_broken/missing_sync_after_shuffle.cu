/* BROKEN ON PURPOSE: each warp reads the other warp's half of a shared array, reduces
 * with a warp shuffle, then overwrites its own half with no __syncthreads() in between,
 * so the other warp may read the new values. The shuffle synchronises one warp only.
 * tests/test_cuda_sim.py asserts a wrong result in some thread order.
 * Launch: grid (1,), block (64,). */
extern "C" __global__ void swap_halves_missing_sync(float *out)
{
    __shared__ float half[64];
    int tid = threadIdx.x;
    half[tid] = (float)tid;
    __syncthreads();
    float other = half[(tid + 32) % 64];
    other += __shfl_xor_sync(0xffffffff, other, 1);
    /* missing: __syncthreads(); */
    half[tid] = -1.0f;
    out[tid] = other;
}
