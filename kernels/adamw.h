/* AdamW over many parameter tensors in one call (kernels/adamw.c): declarations for ffi.cdef.
 *
 * count tensors; tensor t has sizes[t] elements at params[t], with its
 * gradient grads[t], first moment exp_avgs[t] and second moment
 * exp_avg_sqs[t] (all contiguous, none overlapping) and its step count
 * steps[t] >= 1 (this step included). params and the moments are updated in
 * place. nthreads <= 0 means all cores. */
void adamw_step_f32(int64_t count, float **params, float **grads, float **exp_avgs, float **exp_avg_sqs,
                    const int64_t *sizes, const int64_t *steps, double lr, double beta1, double beta2,
                    double eps, double weight_decay, int nthreads);
void adamw_step_f64(int64_t count, double **params, double **grads, double **exp_avgs, double **exp_avg_sqs,
                    const int64_t *sizes, const int64_t *steps, double lr, double beta1, double beta2,
                    double eps, double weight_decay, int nthreads);
