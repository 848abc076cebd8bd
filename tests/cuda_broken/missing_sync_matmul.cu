/* BROKEN ON PURPOSE: a tiled matmul without the __syncthreads() between loading the
 * tiles and using them, so a thread can read tile entries other threads have not
 * written yet. tests/test_cuda_sim.py asserts the simulator exposes it (NaN from the
 * poisoned shared memory, or a wrong product) in at least one thread order.
 * Launch: grid (ceil(N/16), ceil(M/16)), block (16, 16). */
#define TILE 16

extern "C" __global__ void matmul_missing_sync(const float *A, const float *B, float *C, int M, int N, int K)
{
    __shared__ float As[TILE][TILE];
    __shared__ float Bs[TILE][TILE];
    int tx = threadIdx.x, ty = threadIdx.y;
    int row = blockIdx.y * TILE + ty, col = blockIdx.x * TILE + tx;
    float acc = 0.0f;
    for (int k0 = 0; k0 < K; k0 += TILE) {
        As[ty][tx] = (row < M && k0 + tx < K) ? A[row * K + k0 + tx] : 0.0f;
        Bs[ty][tx] = (col < N && k0 + ty < K) ? B[(k0 + ty) * N + col] : 0.0f;
        /* missing: __syncthreads(); */
        for (int k = 0; k < TILE; k++)
            acc += As[ty][k] * Bs[k][tx];
        __syncthreads();
    }
    if (row < M && col < N)
        C[row * N + col] = acc;
}
