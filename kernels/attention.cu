/* attention.cu - flash-style scaled dot-product attention, float32, forward and backward.
 *
 * Per batch b (the leading dim; heads are folded into it by the caller):
 *     q (Tq, d), k (Tk, d), v (Tk, dv), d and dv <= 128, any Tq, Tk >= 1
 *     S = q k^T * scale   (scale = 1/sqrt(d))       P = softmax_rows(S)
 *     out = P v   (Tq, dv)                          lse_i = log sum_j exp(S_ij)
 * Causal masking is top-left aligned like PyTorch: query i sees keys j <= i.
 * No (Tq, Tk) array is ever stored: memory is linear in T.
 *
 * Kernels (the forward in two versions: v1 is the plain algorithm, v2 the same one tuned):
 *   attention_forward_v1   one block per (BR = 32 query rows, batch). The Q tile sits in
 *       shared memory; K and V stream through shared memory BC = 16 keys at a time.
 *       Online softmax: per row a running max m and sum l; for each key tile
 *           m' = max(m, max_j S_ij),  P_ij = exp(S_ij - m'),
 *           l' = l exp(m - m') + sum_j P_ij,   O' = O exp(m - m') + P V_tile
 *       and at the end out = O / l, lse = m + log l. Each thread computes whole scores
 *       (two shared-memory loads per multiply-add); one thread per row updates m and l.
 *       The output tile lives in registers (32 values per thread). Under causal masking
 *       the loop stops at the last key tile that the block's last row can see.
 *       Block 128, grid (ceil(Tq/32), B), dynamic shared (48 d + 16 dv + 624) * 4 bytes.
 *   attention_forward_v2   the same online softmax with register tiling, BR = BC = 32:
 *       thread (tx, ty) = (tid % 8, tid / 8) computes S at rows ty + 16 i (2 rows) and
 *       keys tx + 8 j (4 keys), 6 loads per 8 multiply-adds, and accumulates out at the
 *       same rows and columns tx + 8 j. The 8 lanes sharing a row reduce its max and sum
 *       with warp shuffles, so m and l stay in registers and no thread waits for a
 *       serial softmax step. K and then V share one shared-memory buffer.
 *       Block 128, grid (ceil(Tq/32), B),
 *       dynamic shared (32 (d + 1) + 32 max(d + 1, dv) + 1056) * 4 bytes.
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
 * In shared memory, rows of K (and of Q in v2, of V in the backward) are d + 1 floats
 * apart: a warp reads the same feature of several rows at once, which would all sit in
 * one bank with a stride of d (a multiple of 32 for the usual head dims) and be served
 * one by one.
 *
 * Resources (nvcc 13.0 -cubin -Xptxas -v, sm_80 / sm_90, 0 bytes spilled):
 *   attention_forward_v1        128 / 96 registers, dynamic shared only (d = dv = 128: 34.4 KiB)
 *   attention_forward_v2        120 / 140 registers, dynamic shared only (d = dv = 128: 36.4 KiB)
 *   attention_backward_rowdot    29 / 29 registers, no shared memory
 *   attention_backward           72 / 72 registers, dynamic shared only (d = dv = 128: 34.3 KiB)
 *
 * Test:       python -m pytest tests/test_kernels_cuda.py -q   (simulator vs NumPy,
 *             NVRTC and nvcc compiles; GPU comparisons when a GPU is present)
 * Benchmark:  python benchmarks/bench_cuda.py   (beside a naive CuPy composition on a GPU)
 * Python:     minigrad.kernels.attention(q, k, v, is_causal, return_lse, backend="cuda" | "cuda-sim");
 *             minigrad.kernels.cuda_backend.attention(..., version="v1" | "v2") picks the forward
 */

#define D_MAX 128               /* largest head dim (d and dv) */

#define F1_BR 32               /* query rows per block */
#define F1_BC 16               /* keys per streamed tile */
#define F1_THREADS 128
#define F1_O_PER_THREAD (F1_BR * D_MAX / F1_THREADS)

#define F2_BR 32                /* query rows per block */
#define F2_BC 32                /* keys per streamed tile */
#define F2_THREADS 128
#define F2_TX 8                 /* lanes sharing one row of the S tile */
#define F2_TY (F2_THREADS / F2_TX)
#define F2_RM (F2_BR / F2_TY)   /* rows per thread */
#define F2_KN (F2_BC / F2_TX)   /* keys per thread */
#define F2_OC (D_MAX / F2_TX)   /* out columns per thread */

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

KERNEL attention_forward_v1(const float *__restrict__ q, const float *__restrict__ k,
                            const float *__restrict__ v, float *__restrict__ out,
                            float *__restrict__ lse, int Tq, int Tk, int d, int dv,
                            float scale, int causal)
{
    DYNAMIC_SHARED(float, smem);
    float *Qs = smem;                          /* (BR, d) */
    float *Ks = Qs + F1_BR * d;                /* (BC, d), rows d + 1 apart */
    float *Vs = Ks + F1_BC * (d + 1);          /* (BC, dv) */
    float *Ps = Vs + F1_BC * dv;               /* (BR, BC) scores, then exp(S - m') */
    float *row_max = Ps + F1_BR * F1_BC;       /* (BR) m */
    float *row_sum = row_max + F1_BR;          /* (BR) l */
    float *row_rescale = row_sum + F1_BR;      /* (BR) exp(m - m') */

    int tid = threadIdx.x;
    int b = blockIdx.y;
    int q0 = blockIdx.x * F1_BR;
    q += (long long)b * Tq * d;
    k += (long long)b * Tk * d;
    v += (long long)b * Tk * dv;
    out += (long long)b * Tq * dv;
    lse += (long long)b * Tq;

    load_rows(q, Tq, d, q0, F1_BR, Qs, d, tid, F1_THREADS);
    if (tid < F1_BR) {
        row_max[tid] = -INFINITY;
        row_sum[tid] = 0.0f;
    }
    float o[F1_O_PER_THREAD];                  /* out tile element tid + n * THREADS of (BR, dv) */
    UNROLL
    for (int n = 0; n < F1_O_PER_THREAD; n++)
        o[n] = 0.0f;

    int k_end = causal ? MIN_INT(Tk, q0 + F1_BR) : Tk;
    for (int k0 = 0; k0 < k_end; k0 += F1_BC) {
        /* the previous tile's K, V, P and rescale are still being read */
        __syncthreads();
        load_rows(k, Tk, d, k0, F1_BC, Ks, d + 1, tid, F1_THREADS);
        load_rows(v, Tk, dv, k0, F1_BC, Vs, dv, tid, F1_THREADS);
        __syncthreads();

        for (int idx = tid; idx < F1_BR * F1_BC; idx += F1_THREADS) {
            int r = idx / F1_BC, c = idx % F1_BC;
            Ps[idx] = visible(q0 + r, k0 + c, Tk, causal)
                    ? dot(Qs + r * d, Ks + c * (d + 1), d) * scale : -INFINITY;
        }
        __syncthreads();

        if (tid < F1_BR) {
            float *p = Ps + tid * F1_BC;
            float m_old = row_max[tid], m_new = m_old;
            for (int c = 0; c < F1_BC; c++)
                m_new = fmaxf(m_new, p[c]);
            /* a row that has seen only masked keys keeps m = -inf: exp(-inf - -inf) would be NaN */
            float shift = (m_new == -INFINITY) ? 0.0f : m_new;
            float tile_sum = 0.0f;
            for (int c = 0; c < F1_BC; c++) {
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
        for (int n = 0; n < F1_O_PER_THREAD; n++) {
            int idx = tid + n * F1_THREADS;
            if (idx < F1_BR * dv) {
                int r = idx / dv, e = idx % dv;
                float acc = o[n] * row_rescale[r];
                for (int c = 0; c < F1_BC; c++)
                    acc += Ps[r * F1_BC + c] * Vs[c * dv + e];
                o[n] = acc;
            }
        }
    }
    /* Tk >= 1, so the loop ran and its barriers made every row's l and m visible */
    UNROLL
    for (int n = 0; n < F1_O_PER_THREAD; n++) {
        int idx = tid + n * F1_THREADS;
        if (idx < F1_BR * dv && q0 + idx / dv < Tq)
            out[q0 * dv + idx] = o[n] / row_sum[idx / dv];
    }
    if (tid < F1_BR && q0 + tid < Tq)
        lse[q0 + tid] = row_max[tid] + logf(row_sum[tid]);
}

/* Row-wise reductions over the 8 lanes that hold one row of the S tile in attention_forward_v2:
 * those lanes are consecutive and 8-aligned, so xor offsets 4, 2, 1 stay inside the group. */
__device__ __forceinline__ float row_group_max(float x)
{
    for (int offset = F2_TX / 2; offset > 0; offset /= 2)
        x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, offset));
    return x;
}

__device__ __forceinline__ float row_group_sum(float x)
{
    for (int offset = F2_TX / 2; offset > 0; offset /= 2)
        x += __shfl_xor_sync(0xffffffffu, x, offset);
    return x;
}

KERNEL attention_forward_v2(const float *__restrict__ q, const float *__restrict__ k,
                            const float *__restrict__ v, float *__restrict__ out,
                            float *__restrict__ lse, int Tq, int Tk, int d, int dv,
                            float scale, int causal)
{
    DYNAMIC_SHARED(float, smem);
    float *Qs = smem;                                   /* (BR, d), rows d + 1 apart */
    float *KVs = Qs + F2_BR * (d + 1);                  /* K (BC, d) rows d + 1 apart, then V (BC, dv) */
    float *Ps = KVs + F2_BC * MAX_INT(d + 1, dv);       /* (BR, BC), rows BC + 1 apart */

    int tid = threadIdx.x;
    int tx = tid % F2_TX, ty = tid / F2_TX;             /* rows ty + TY i, keys and out columns tx + TX j */
    int b = blockIdx.y;
    int q0 = blockIdx.x * F2_BR;
    q += (long long)b * Tq * d;
    k += (long long)b * Tk * d;
    v += (long long)b * Tk * dv;
    out += (long long)b * Tq * dv;
    lse += (long long)b * Tq;

    load_rows(q, Tq, d, q0, F2_BR, Qs, d + 1, tid, F2_THREADS);
    float m[F2_RM], l[F2_RM];                           /* running max and sum of this thread's rows */
    float o[F2_RM][F2_OC];                              /* out (BR, dv) at rows ty + TY i, columns tx + TX j */
    UNROLL
    for (int i = 0; i < F2_RM; i++) {
        m[i] = -INFINITY;
        l[i] = 0.0f;
        UNROLL
        for (int j = 0; j < F2_OC; j++)
            o[i][j] = 0.0f;
    }

    int k_end = causal ? MIN_INT(Tk, q0 + F2_BR) : Tk;
    for (int k0 = 0; k0 < k_end; k0 += F2_BC) {
        /* the previous tile's V and P are still being read */
        __syncthreads();
        load_rows(k, Tk, d, k0, F2_BC, KVs, d + 1, tid, F2_THREADS);
        __syncthreads();

        float s[F2_RM][F2_KN];                          /* S at rows ty + TY i, keys tx + TX j */
        UNROLL
        for (int i = 0; i < F2_RM; i++)
            UNROLL
            for (int j = 0; j < F2_KN; j++)
                s[i][j] = 0.0f;
        for (int e = 0; e < d; e++) {
            float qr[F2_RM], kr[F2_KN];
            UNROLL
            for (int i = 0; i < F2_RM; i++)
                qr[i] = Qs[(ty + F2_TY * i) * (d + 1) + e];
            UNROLL
            for (int j = 0; j < F2_KN; j++)
                kr[j] = KVs[(tx + F2_TX * j) * (d + 1) + e];
            UNROLL
            for (int i = 0; i < F2_RM; i++)
                UNROLL
                for (int j = 0; j < F2_KN; j++)
                    s[i][j] += qr[i] * kr[j];
        }

        UNROLL
        for (int i = 0; i < F2_RM; i++) {
            int row = ty + F2_TY * i;
            float tile_max = -INFINITY;
            UNROLL
            for (int j = 0; j < F2_KN; j++) {
                s[i][j] = visible(q0 + row, k0 + tx + F2_TX * j, Tk, causal) ? s[i][j] * scale : -INFINITY;
                tile_max = fmaxf(tile_max, s[i][j]);
            }
            float m_new = fmaxf(m[i], row_group_max(tile_max));
            /* a row that has seen only masked keys keeps m = -inf: exp(-inf - -inf) would be NaN */
            float shift = (m_new == -INFINITY) ? 0.0f : m_new;
            float tile_sum = 0.0f;
            UNROLL
            for (int j = 0; j < F2_KN; j++) {
                float p = expf(s[i][j] - shift);
                Ps[row * (F2_BC + 1) + tx + F2_TX * j] = p;
                tile_sum += p;
            }
            float rescale = expf(m[i] - shift);
            l[i] = l[i] * rescale + row_group_sum(tile_sum);
            m[i] = m_new;
            UNROLL
            for (int j = 0; j < F2_OC; j++)
                o[i][j] *= rescale;
        }
        /* K is no longer needed: V takes its place */
        __syncthreads();
        load_rows(v, Tk, dv, k0, F2_BC, KVs, dv, tid, F2_THREADS);
        __syncthreads();

        for (int c = 0; c < F2_BC; c++) {
            float pr[F2_RM];
            UNROLL
            for (int i = 0; i < F2_RM; i++)
                pr[i] = Ps[(ty + F2_TY * i) * (F2_BC + 1) + c];
            UNROLL
            for (int j = 0; j < F2_OC; j++) {
                int e = tx + F2_TX * j;
                if (e < dv) {
                    float ve = KVs[c * dv + e];
                    UNROLL
                    for (int i = 0; i < F2_RM; i++)
                        o[i][j] += pr[i] * ve;
                }
            }
        }
    }

    UNROLL
    for (int i = 0; i < F2_RM; i++) {
        int row = q0 + ty + F2_TY * i;
        if (row < Tq) {
            UNROLL
            for (int j = 0; j < F2_OC; j++)
                if (tx + F2_TX * j < dv)
                    out[row * dv + tx + F2_TX * j] = o[i][j] / l[i];
            if (tx == 0)
                lse[row] = m[i] + logf(l[i]);
        }
    }
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
