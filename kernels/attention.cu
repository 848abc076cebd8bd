/* attention.cu - flash-style scaled dot-product attention, float32, forward and backward.
 *
 * Per batch b (the leading dim; heads are folded into it by the caller):
 *     q (Tq, d), k (Tk, d), v (Tk, dv), d and dv <= 128, any Tq, Tk >= 1
 *     S = q k^T * scale   (scale = 1/sqrt(d))       P = softmax_rows(S)
 *     out = P v   (Tq, dv)                          lse_i = log sum_j exp(S_ij)
 * Causal masking is top-left aligned like PyTorch: query i sees keys j <= i.
 * No (Tq, Tk) array is ever stored: memory is linear in T.
 *
 * Kernels:
 *   attention_forward   one block per (BR = 32 query rows, batch). The Q tile sits in
 *       shared memory; K and V stream through shared memory BC = 16 keys at a time.
 *       Online softmax: per row a running max m and sum l; for each key tile
 *           m' = max(m, max_j S_ij),  P_ij = exp(S_ij - m'),
 *           l' = l exp(m - m') + sum_j P_ij,   O' = O exp(m - m') + P V_tile
 *       and at the end out = O / l, lse = m + log l. The output tile lives in
 *       registers (32 values per thread). Under causal masking the loop stops at the
 *       last key tile that the block's last row can see.
 *       Block 128, grid (ceil(Tq/32), B), dynamic shared (48 d + 16 dv + 624) * 4 bytes.
 *   attention_backward_rowdot   D_i = sum_e dO_ie O_ie (= rowsum(dO * O)), one thread per row.
 *       Block 128, grid ceil(B Tq / 128).
 *   attention_backward  one block per (BC = 16 keys, batch): K and V tiles stay in shared
 *       memory, dK and dV accumulate in registers while Q, dO, lse, D stream through in
 *       tiles of BR = 16 rows. P is recomputed from the saved lse, never stored:
 *           P = exp(S - lse),  dV += P^T dO,  dP = dO V^T,  dS = P * (dP - D),
 *           dK += scale dS^T Q,  dQ += scale dS K  (atomicAdd: other key blocks add to
 *       the same rows of dQ, which must be zeroed before the launch). Under causal
 *       masking query tiles that end before the first key are skipped.
 *       Block 128, grid (ceil(Tk/16), B), dynamic shared (32 d + 32 dv + 576) * 4 bytes.
 * In shared memory, rows of K (and of V in the backward) are d + 1 floats apart: a warp
 * reads the same feature of 16 keys at once, which would all sit in one bank with a
 * stride of d (a multiple of 32 for the usual head dims) and be served one by one.
 *
 * Resources (nvcc 13.0 -cubin -Xptxas -v, sm_80 / sm_90, 0 bytes spilled):
 *   attention_forward           128 / 96 registers, dynamic shared only (d = dv = 128: 34.4 KiB)
 *   attention_backward_rowdot    29 / 29 registers, no shared memory
 *   attention_backward           72 / 72 registers, dynamic shared only (d = dv = 128: 34.3 KiB)
 *
 * Test:       python -m pytest tests/test_kernels_cuda.py -q   (simulator vs NumPy,
 *             NVRTC and nvcc compiles; GPU comparisons when a GPU is present)
 * Benchmark:  python benchmarks/bench_cuda.py   (beside a naive CuPy composition on a GPU)
 * Python:     minigrad.kernels.attention(q, k, v, is_causal, return_lse, backend="cuda" | "cuda-sim")
 */

#define D_MAX 128               /* largest head dim (d and dv) */

#define FWD_BR 32               /* query rows per block */
#define FWD_BC 16               /* keys per streamed tile */
#define FWD_THREADS 128
#define FWD_O_PER_THREAD (FWD_BR * D_MAX / FWD_THREADS)

#define BWD_BR 16               /* query rows per streamed tile */
#define BWD_BC 16               /* keys per block */
#define BWD_THREADS 128
#define BWD_KV_PER_THREAD (BWD_BC * D_MAX / BWD_THREADS)

#define ROWDOT_THREADS 128

/* x . y over n floats. */
__device__ __forceinline__ float dot(const float *x, const float *y, int n)
{
    float acc = 0.0f;
    for (int e = 0; e < n; e++)
        acc += x[e] * y[e];
    return acc;
}

/* Copy rows [r0, r0 + R) of a (rows, width) row-major matrix into tile rows `stride` floats apart,
 * zeros past the end. */
__device__ __forceinline__ void load_rows(const float *src, int rows, int width, int r0, int R,
                                          float *tile, int stride, int tid, int nthreads)
{
    for (int idx = tid; idx < R * width; idx += nthreads) {
        int r = idx / width, e = idx % width;
        tile[r * stride + e] = (r0 + r < rows) ? src[r0 * width + idx] : 0.0f;
    }
}

/* Query i may attend to key j: the key exists and, if causal, j <= i. */
__device__ __forceinline__ int visible(int i, int j, int Tk, int causal)
{
    return j < Tk && !(causal && j > i);
}

KERNEL attention_forward(const float *__restrict__ q, const float *__restrict__ k,
                         const float *__restrict__ v, float *__restrict__ out,
                         float *__restrict__ lse, int Tq, int Tk, int d, int dv,
                         float scale, int causal)
{
    DYNAMIC_SHARED(float, smem);
    float *Qs = smem;                          /* (BR, d) */
    float *Ks = Qs + FWD_BR * d;               /* (BC, d), rows d + 1 apart */
    float *Vs = Ks + FWD_BC * (d + 1);         /* (BC, dv) */
    float *Ps = Vs + FWD_BC * dv;              /* (BR, BC) scores, then exp(S - m') */
    float *row_max = Ps + FWD_BR * FWD_BC;     /* (BR) m */
    float *row_sum = row_max + FWD_BR;         /* (BR) l */
    float *row_rescale = row_sum + FWD_BR;     /* (BR) exp(m - m') */

    int tid = threadIdx.x;
    int b = blockIdx.y;
    int q0 = blockIdx.x * FWD_BR;
    q += (long long)b * Tq * d;
    k += (long long)b * Tk * d;
    v += (long long)b * Tk * dv;
    out += (long long)b * Tq * dv;
    lse += (long long)b * Tq;

    load_rows(q, Tq, d, q0, FWD_BR, Qs, d, tid, FWD_THREADS);
    if (tid < FWD_BR) {
        row_max[tid] = -INFINITY;
        row_sum[tid] = 0.0f;
    }
    float o[FWD_O_PER_THREAD];                 /* out tile element tid + n * THREADS of (BR, dv) */
    UNROLL
    for (int n = 0; n < FWD_O_PER_THREAD; n++)
        o[n] = 0.0f;

    int k_end = causal ? MIN_INT(Tk, q0 + FWD_BR) : Tk;
    for (int k0 = 0; k0 < k_end; k0 += FWD_BC) {
        /* the previous tile's K, V, P and rescale are still being read */
        __syncthreads();
        load_rows(k, Tk, d, k0, FWD_BC, Ks, d + 1, tid, FWD_THREADS);
        load_rows(v, Tk, dv, k0, FWD_BC, Vs, dv, tid, FWD_THREADS);
        __syncthreads();

        for (int idx = tid; idx < FWD_BR * FWD_BC; idx += FWD_THREADS) {
            int r = idx / FWD_BC, c = idx % FWD_BC;
            Ps[idx] = visible(q0 + r, k0 + c, Tk, causal)
                    ? dot(Qs + r * d, Ks + c * (d + 1), d) * scale : -INFINITY;
        }
        __syncthreads();

        if (tid < FWD_BR) {
            float *p = Ps + tid * FWD_BC;
            float m_old = row_max[tid], m_new = m_old;
            for (int c = 0; c < FWD_BC; c++)
                m_new = fmaxf(m_new, p[c]);
            /* a row that has seen only masked keys keeps m = -inf: exp(-inf - -inf) would be NaN */
            float shift = (m_new == -INFINITY) ? 0.0f : m_new;
            float tile_sum = 0.0f;
            for (int c = 0; c < FWD_BC; c++) {
                p[c] = expf(p[c] - shift);
                tile_sum += p[c];
            }
            float rescale = expf(m_old - shift);
            row_rescale[tid] = rescale;
            row_sum[tid] = row_sum[tid] * rescale + tile_sum;
            row_max[tid] = m_new;
        }
        __syncthreads();

        UNROLL
        for (int n = 0; n < FWD_O_PER_THREAD; n++) {
            int idx = tid + n * FWD_THREADS;
            if (idx < FWD_BR * dv) {
                int r = idx / dv, e = idx % dv;
                float acc = o[n] * row_rescale[r];
                for (int c = 0; c < FWD_BC; c++)
                    acc += Ps[r * FWD_BC + c] * Vs[c * dv + e];
                o[n] = acc;
            }
        }
    }
    /* Tk >= 1, so the loop ran and its barriers made every row's l and m visible */
    UNROLL
    for (int n = 0; n < FWD_O_PER_THREAD; n++) {
        int idx = tid + n * FWD_THREADS;
        if (idx < FWD_BR * dv && q0 + idx / dv < Tq)
            out[q0 * dv + idx] = o[n] / row_sum[idx / dv];
    }
    if (tid < FWD_BR && q0 + tid < Tq)
        lse[q0 + tid] = row_max[tid] + logf(row_sum[tid]);
}

KERNEL attention_backward_rowdot(const float *__restrict__ grad_out, const float *__restrict__ out,
                                 float *__restrict__ D, int rows, int dv)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < rows)
        D[i] = dot(grad_out + (long long)i * dv, out + (long long)i * dv, dv);
}

KERNEL attention_backward(const float *__restrict__ q, const float *__restrict__ k,
                          const float *__restrict__ v, const float *__restrict__ grad_out,
                          const float *__restrict__ lse, const float *__restrict__ D,
                          float *__restrict__ grad_q, float *__restrict__ grad_k,
                          float *__restrict__ grad_v, int Tq, int Tk, int d, int dv,
                          float scale, int causal)
{
    DYNAMIC_SHARED(float, smem);
    float *Ks = smem;                          /* (BC, d), rows d + 1 apart */
    float *Vs = Ks + BWD_BC * (d + 1);         /* (BC, dv), rows dv + 1 apart */
    float *Qs = Vs + BWD_BC * (dv + 1);        /* (BR, d) */
    float *dOs = Qs + BWD_BR * d;              /* (BR, dv) */
    float *Ps = dOs + BWD_BR * dv;             /* (BR, BC) P */
    float *dSs = Ps + BWD_BR * BWD_BC;         /* (BR, BC) dS */
    float *lse_s = dSs + BWD_BR * BWD_BC;      /* (BR) */
    float *D_s = lse_s + BWD_BR;               /* (BR) */

    int tid = threadIdx.x;
    int b = blockIdx.y;
    int k0 = blockIdx.x * BWD_BC;
    q += (long long)b * Tq * d;
    k += (long long)b * Tk * d;
    v += (long long)b * Tk * dv;
    grad_out += (long long)b * Tq * dv;
    lse += (long long)b * Tq;
    D += (long long)b * Tq;
    grad_q += (long long)b * Tq * d;
    grad_k += (long long)b * Tk * d;
    grad_v += (long long)b * Tk * dv;

    load_rows(k, Tk, d, k0, BWD_BC, Ks, d + 1, tid, BWD_THREADS);
    load_rows(v, Tk, dv, k0, BWD_BC, Vs, dv + 1, tid, BWD_THREADS);
    float gk[BWD_KV_PER_THREAD];               /* dK tile element tid + n * THREADS of (BC, d) */
    float gv[BWD_KV_PER_THREAD];               /* dV tile element tid + n * THREADS of (BC, dv) */
    UNROLL
    for (int n = 0; n < BWD_KV_PER_THREAD; n++) {
        gk[n] = 0.0f;
        gv[n] = 0.0f;
    }

    /* rows i < k0 see none of this block's keys when causal */
    int q_start = causal ? (k0 / BWD_BR) * BWD_BR : 0;
    for (int q0 = q_start; q0 < Tq; q0 += BWD_BR) {
        /* the previous tile's Q, dO, P and dS are still being read */
        __syncthreads();
        load_rows(q, Tq, d, q0, BWD_BR, Qs, d, tid, BWD_THREADS);
        load_rows(grad_out, Tq, dv, q0, BWD_BR, dOs, dv, tid, BWD_THREADS);
        if (tid < BWD_BR) {
            lse_s[tid] = (q0 + tid < Tq) ? lse[q0 + tid] : 0.0f;
            D_s[tid] = (q0 + tid < Tq) ? D[q0 + tid] : 0.0f;
        }
        __syncthreads();

        for (int idx = tid; idx < BWD_BR * BWD_BC; idx += BWD_THREADS) {
            int r = idx / BWD_BC, c = idx % BWD_BC;
            float p = 0.0f, ds = 0.0f;
            if (q0 + r < Tq && visible(q0 + r, k0 + c, Tk, causal)) {
                p = expf(dot(Qs + r * d, Ks + c * (d + 1), d) * scale - lse_s[r]);
                ds = p * (dot(dOs + r * dv, Vs + c * (dv + 1), dv) - D_s[r]);
            }
            Ps[idx] = p;
            dSs[idx] = ds;
        }
        __syncthreads();

        UNROLL
        for (int n = 0; n < BWD_KV_PER_THREAD; n++) {
            int idx = tid + n * BWD_THREADS;
            if (idx < BWD_BC * dv) {
                int c = idx / dv, e = idx % dv;
                float acc = 0.0f;
                for (int r = 0; r < BWD_BR; r++)
                    acc += Ps[r * BWD_BC + c] * dOs[r * dv + e];
                gv[n] += acc;
            }
            if (idx < BWD_BC * d) {
                int c = idx / d, e = idx % d;
                float acc = 0.0f;
                for (int r = 0; r < BWD_BR; r++)
                    acc += dSs[r * BWD_BC + c] * Qs[r * d + e];
                gk[n] += acc;
            }
        }
        for (int idx = tid; idx < BWD_BR * d; idx += BWD_THREADS) {
            int r = idx / d, e = idx % d;
            if (q0 + r < Tq) {
                float acc = 0.0f;
                for (int c = 0; c < BWD_BC; c++)
                    acc += dSs[r * BWD_BC + c] * Ks[c * (d + 1) + e];
                atomicAdd(grad_q + q0 * d + idx, acc * scale);
            }
        }
    }

    UNROLL
    for (int n = 0; n < BWD_KV_PER_THREAD; n++) {
        int idx = tid + n * BWD_THREADS;
        if (idx < BWD_BC * dv && k0 + idx / dv < Tk)
            grad_v[k0 * dv + idx] = gv[n];
        if (idx < BWD_BC * d && k0 + idx / d < Tk)
            grad_k[k0 * d + idx] = gk[n] * scale;
    }
}
