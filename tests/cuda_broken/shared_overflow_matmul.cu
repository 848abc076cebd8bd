/* BROKEN ON PURPOSE: a tiled matmul that walks the whole row of A inside the shared
 * tile (k < K instead of k < TILE). With K > TILE, As[ty][k] runs past the end of As;
 * on a GPU it reads whatever shared memory follows (often Bs) and the product is
 * silently wrong. The simulator raises KernelFaultError naming `As`, the thread and
 * the line. Launch: grid (ceil(N/16), ceil(M/16)), block (16, 16), K > 16. */
#define TILE 16

extern "C" __global__ void matmul_shared_overflow(const float *A, const float *B, float *C, int M, int N, int K)
{
    __shared__ float As[TILE][TILE];
    __shared__ float Bs[TILE][TILE];
    int tx = threadIdx.x, ty = threadIdx.y;
    int row = blockIdx.y * TILE + ty, col = blockIdx.x * TILE + tx;
    float acc = 0.0f;
    for (int k0 = 0; k0 < K; k0 += TILE) {
        As[ty][tx] = (row < M && k0 + tx < K) ? A[row * K + k0 + tx] : 0.0f;
        Bs[ty][tx] = (col < N && k0 + ty < K) ? B[(k0 + ty) * N + col] : 0.0f;
        __syncthreads();
        for (int k = 0; k < K; k++)
            acc += As[ty][k] * Bs[k % TILE][tx];
        __syncthreads();
    }
    if (row < M && col < N)
        C[row * N + col] = acc;
}
