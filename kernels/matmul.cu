/* matmul.cu - batched float32 matrix multiply C = op(A) op(B) on the GPU.
 *
 * op(X) is X or its transpose, chosen per call by trans_a / trans_b, so the
 * backward pass reads the stored matrices without copying them:
 *     forward   C  = A  B       trans_a = 0, trans_b = 0
 *     backward  dA = dC B^T     trans_b = 1
 *               dB = A^T dC     trans_a = 1
 * A is stored row-major as (M, K), or (K, M) when trans_a; B as (K, N), or
 * (N, K) when trans_b; C is (M, N). blockIdx.x walks the rows of C (gridDim.x may
 * exceed 65535, so M = batch x sequence rows is not limited), blockIdx.y its
 * columns, and blockIdx.z the batch: matrix z of A starts at z * batch_stride_a
 * (0 broadcasts one matrix over the batch), of C at z * M * N. Any M, N, K >= 1:
 * every load and store is bounds-checked.
 *
 * Versions (each one a lesson step; all three compute the same thing):
 *   matmul_v1  naive: one thread per C element, reads its A row and B column
 *              from global memory. Block (16, 16), grid (ceil(M/16), ceil(N/16), batch).
 *   matmul_v2  shared-memory tiling: a 16x16 block stages 16x16 panels of A
 *              and B in shared memory, so each global element is read by one
 *              thread instead of 16. Same launch as v1.
 *   matmul_v3  register blocking: a 256-thread block computes a 128x128 tile of
 *              C, each thread an 8x8 sub-tile held in registers, from 128x8 and
 *              8x128 panels in shared memory: 4 FMAs per shared-memory load
 *              instead of v2's 1/2. Thread (tx, ty) = (tid % 16, tid / 16) owns rows
 *              ty + 16 i and columns tx + 16 j, so a warp reads consecutive
 *              shared addresses (no bank conflicts) and writes C coalesced.
 *              Block 256, grid (ceil(M/128), ceil(N/128), batch).
 *
 * Resources (nvcc 13.0 -cubin -Xptxas -v, sm_80 / sm_90, 0 bytes spilled):
 *   matmul_v1   38 / 40 registers, no shared memory
 *   matmul_v2   48 / 40 registers, 2048 bytes shared
 *   matmul_v3  125 / 126 registers, 8192 bytes shared (the 64 accumulators fit without spilling)
 *
 * Test:       python -m pytest tests/test_kernels_cuda.py -q   (simulator vs NumPy,
 *             NVRTC and nvcc compiles; GPU comparisons when a GPU is present)
 * Benchmark:  python benchmarks/bench_cuda.py   (GFLOP/s beside cupy.matmul on a GPU)
 * Python:     minigrad.kernels.matmul(a, b, backend="cuda" | "cuda-sim")
 */

#define V2_TILE 16

#define V3_BM 128               /* rows of C per block */
#define V3_BN 128               /* columns of C per block */
#define V3_BK 8                 /* depth of the panels staged per step */
#define V3_TM 8                 /* rows of C per thread */
#define V3_TN 8                 /* columns of C per thread */
#define V3_THREADS 256          /* (V3_BM / V3_TM) * (V3_BN / V3_TN) */
#define V3_TX (V3_BN / V3_TN)   /* threads along a row of the C tile */
#define V3_TY (V3_BM / V3_TM)   /* threads along a column of the C tile */

/* op(A)(i, p), A stored (M, K) or, transposed, (K, M). */
__device__ __forceinline__ float op_a(const float *A, int trans_a, int M, int K, int i, int p)
{
    return trans_a ? A[p * M + i] : A[i * K + p];
}

/* op(B)(p, j), B stored (K, N) or, transposed, (N, K). */
__device__ __forceinline__ float op_b(const float *B, int trans_b, int N, int K, int p, int j)
{
    return trans_b ? B[j * K + p] : B[p * N + j];
}

/* Stage X(r0 + r, p0 + p) for r < R, p < BK into tile[p * R + r] (zeros outside rows x depth).
 * X(r, p) is X[p * ld + r] when depth_major, else X[r * ld + p]. The flat index walks the
 * stored matrix's contiguous direction, so consecutive threads read consecutive addresses. */
__device__ __forceinline__ void load_panel(const float *X, int depth_major, int ld, int rows, int depth,
                                           int r0, int p0, float *tile, int R, int BK,
                                           int tid, int nthreads)
{
    for (int idx = tid; idx < R * BK; idx += nthreads) {
        int r = depth_major ? idx % R : idx / BK;
        int p = depth_major ? idx / R : idx % BK;
        int gr = r0 + r, gp = p0 + p;
        float x = 0.0f;
        if (gr < rows && gp < depth)
            x = depth_major ? X[gp * ld + gr] : X[gr * ld + gp];
        tile[p * R + r] = x;
    }
}

/* Stage the A panel (rows i0.., depth p0..) of op(A) into As[p * R + i]. */
__device__ __forceinline__ void load_a_panel(const float *A, int trans_a, int M, int K, int i0, int p0,
                                             float *As, int R, int BK, int tid, int nthreads)
{
    load_panel(A, trans_a, trans_a ? M : K, M, K, i0, p0, As, R, BK, tid, nthreads);
}

/* Stage the B panel (depth p0.., columns j0..) of op(B) into Bs[p * R + j]. */
__device__ __forceinline__ void load_b_panel(const float *B, int trans_b, int N, int K, int j0, int p0,
                                             float *Bs, int R, int BK, int tid, int nthreads)
{
    load_panel(B, !trans_b, trans_b ? K : N, N, K, j0, p0, Bs, R, BK, tid, nthreads);
}

KERNEL matmul_v1(const float *__restrict__ A, const float *__restrict__ B, float *__restrict__ C,
                 int M, int N, int K, int trans_a, int trans_b,
                 long long batch_stride_a, long long batch_stride_b)
{
    A += blockIdx.z * batch_stride_a;
    B += blockIdx.z * batch_stride_b;
    C += (long long)blockIdx.z * M * N;
    int i = blockIdx.x * blockDim.y + threadIdx.y;
    int j = blockIdx.y * blockDim.x + threadIdx.x;
    if (i >= M || j >= N)
        return;
    float acc = 0.0f;
    for (int p = 0; p < K; p++)
        acc += op_a(A, trans_a, M, K, i, p) * op_b(B, trans_b, N, K, p, j);
    C[i * N + j] = acc;
}

KERNEL matmul_v2(const float *__restrict__ A, const float *__restrict__ B, float *__restrict__ C,
                 int M, int N, int K, int trans_a, int trans_b,
                 long long batch_stride_a, long long batch_stride_b)
{
    __shared__ float As[V2_TILE * V2_TILE];     /* (k, i) panel of op(A) */
    __shared__ float Bs[V2_TILE * V2_TILE];     /* (k, j) panel of op(B) */
    A += blockIdx.z * batch_stride_a;
    B += blockIdx.z * batch_stride_b;
    C += (long long)blockIdx.z * M * N;
    int tx = threadIdx.x, ty = threadIdx.y;
    int tid = ty * V2_TILE + tx;
    int i0 = blockIdx.x * V2_TILE, j0 = blockIdx.y * V2_TILE;
    float acc = 0.0f;
    for (int p0 = 0; p0 < K; p0 += V2_TILE) {
        load_a_panel(A, trans_a, M, K, i0, p0, As, V2_TILE, V2_TILE, tid, V2_TILE * V2_TILE);
        load_b_panel(B, trans_b, N, K, j0, p0, Bs, V2_TILE, V2_TILE, tid, V2_TILE * V2_TILE);
        __syncthreads();
        for (int p = 0; p < V2_TILE; p++)
            acc += As[p * V2_TILE + ty] * Bs[p * V2_TILE + tx];
        /* the next panels overwrite As and Bs: everyone must be done reading them */
        __syncthreads();
    }
    /* threads outside C still helped stage the panels, so they return only now */
    if (i0 + ty < M && j0 + tx < N)
        C[(i0 + ty) * N + j0 + tx] = acc;
}

KERNEL matmul_v3(const float *__restrict__ A, const float *__restrict__ B, float *__restrict__ C,
                 int M, int N, int K, int trans_a, int trans_b,
                 long long batch_stride_a, long long batch_stride_b)
{
    __shared__ float As[V3_BK * V3_BM];        /* (k, i) panel of op(A) */
    __shared__ float Bs[V3_BK * V3_BN];        /* (k, j) panel of op(B) */
    A += blockIdx.z * batch_stride_a;
    B += blockIdx.z * batch_stride_b;
    C += (long long)blockIdx.z * M * N;
    int tid = threadIdx.x;
    int tx = tid % V3_TX, ty = tid / V3_TX;
    int i0 = blockIdx.x * V3_BM, j0 = blockIdx.y * V3_BN;

    float acc[V3_TM][V3_TN];
    float a_reg[V3_TM], b_reg[V3_TN];
    UNROLL
    for (int m = 0; m < V3_TM; m++)
        UNROLL
        for (int n = 0; n < V3_TN; n++)
            acc[m][n] = 0.0f;

    for (int p0 = 0; p0 < K; p0 += V3_BK) {
        load_a_panel(A, trans_a, M, K, i0, p0, As, V3_BM, V3_BK, tid, V3_THREADS);
        load_b_panel(B, trans_b, N, K, j0, p0, Bs, V3_BN, V3_BK, tid, V3_THREADS);
        __syncthreads();
        UNROLL
        for (int p = 0; p < V3_BK; p++) {
            UNROLL
            for (int m = 0; m < V3_TM; m++)
                a_reg[m] = As[p * V3_BM + ty + m * V3_TY];
            UNROLL
            for (int n = 0; n < V3_TN; n++)
                b_reg[n] = Bs[p * V3_BN + tx + n * V3_TX];
            UNROLL
            for (int m = 0; m < V3_TM; m++)
                UNROLL
                for (int n = 0; n < V3_TN; n++)
                    acc[m][n] += a_reg[m] * b_reg[n];
        }
        __syncthreads();
    }

    UNROLL
    for (int m = 0; m < V3_TM; m++) {
        int i = i0 + ty + m * V3_TY;
        UNROLL
        for (int n = 0; n < V3_TN; n++) {
            int j = j0 + tx + n * V3_TX;
            if (i < M && j < N)
                C[i * N + j] = acc[m][n];
        }
    }
}
