/* BROKEN ON PURPOSE: thread 0 publishes a pointer to its own local variable through
 * shared memory and thread 1 writes through it. Local variables are private to their
 * thread on a GPU (the address means nothing elsewhere); the simulator raises
 * KernelFaultError: another thread's local variables. Launch: grid (1,), block (2,). */
extern "C" __global__ void write_through_neighbour(float *out)
{
    __shared__ float *slot[1];
    float mine = 1.0f;
    if (threadIdx.x == 0)
        slot[0] = &mine;
    __syncthreads();
    if (threadIdx.x == 1)
        *slot[0] = 2.0f;
    __syncthreads();
    out[threadIdx.x] = mine;
}
