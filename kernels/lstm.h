/* The LSTM layer, all time steps forward and backward through time (kernels/lstm.c): declarations for ffi.cdef.
 *
 * All arrays C-contiguous: gx (T, B, 4H) the input projection x_t W_ihᵀ + b_ih + b_hh of every step,
 * h0, c0 (B, H), w_hh (4H, H), out (2, T, B, H) = [h_t of every step, c_t of every step], gates (T, B, 4H)
 * the activated gates i, f, g, o of every step (the forward writes them, the backward reads them),
 * grad_out like out, dgx like gx, dh0, dc0 (B, H), dw_hh (4H, H). Outputs never alias inputs.
 * Returns 0, or -1 when it could not allocate its buffers. nthreads (<= 0: all cores) is for the one
 * product summed over all steps, dW_hh; the per-step work is too small to share between threads. */
int lstm_forward_f32(const float *gx, const float *h0, const float *c0, const float *w_hh,
                     float *out, float *gates, int64_t T, int64_t B, int64_t H);
int lstm_backward_f32(const float *h0, const float *c0, const float *w_hh, const float *out, const float *gates,
                      const float *grad_out, float *dgx, float *dh0, float *dc0, float *dw_hh,
                      int64_t T, int64_t B, int64_t H, int nthreads);
int lstm_forward_f64(const double *gx, const double *h0, const double *c0, const double *w_hh,
                     double *out, double *gates, int64_t T, int64_t B, int64_t H);
int lstm_backward_f64(const double *h0, const double *c0, const double *w_hh, const double *out,
                      const double *gates, const double *grad_out, double *dgx, double *dh0, double *dc0,
                      double *dw_hh, int64_t T, int64_t B, int64_t H, int nthreads);
