/* erfc_fit.h: written by `python -m minigrad.special` from minigrad/special.py; do not edit.
 *
 * erfc(a) = t·exp(−a² + P(u)), t = 2/(2 + a), u = 2t − 1, a ≥ 0: the coefficients of P in u,
 * highest degree first (Horner's order), float32 (error ~1e-7, below float32 resolution).
 * tests/test_special.py checks that this file equals what minigrad/special.py fits. */
#define ERFC_FIT_DEGREE 10
static const float ERFC_FIT_F32[ERFC_FIT_DEGREE + 1] = {
    8.000738489e-06f,
    3.337358939e-04f,
    -2.279109613e-04f,
    -2.048734808e-03f,
    1.794066280e-03f,
    8.703812025e-03f,
    -9.880019352e-03f,
    -4.687488824e-02f,
    4.734388739e-02f,
    6.726422310e-01f,
    -6.717941165e-01f
};
