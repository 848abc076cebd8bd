"""Special functions on NumPy arrays, one definition each (like `scipy.special`).

    sigmoid(x)                      σ(x) = 1 / (1 + e⁻ˣ)                       lesson 00_autograd
    logsumexp(x, axis)              log Σⱼ e^{xⱼ}, shifted by the max           lesson 01_gradient_descent
    softmax(x, axis), log_softmax   e^{xᵢ − lse(x)},  xᵢ − lse(x)               lesson 01_gradient_descent
    erfc_abs(x), erf(x)             the error function, from one erfc fit       lesson 05_transformer (GELU)
    normal_cdf(x), normal_pdf(x)    Φ(x) = ½ erfc(−x/√2),  φ(x) = e^{−x²/2}/√(2π)

The Tensor ops (`Tensor.softmax`, `Tensor.sigmoid`, …), the losses and the
kernels' NumPy reference call these; nothing else in minigrad writes them again.
NumPy has no erf, so `erfc_abs` evaluates a fitted formula; its float32
coefficients are the ones kernels/activation.c uses (kernels/erfc_fit.h, which
`python -m minigrad.special` writes and tests/test_special.py checks).
"""
import math

import numpy as np


def sigmoid(x):
    """σ(x) = 1/(1+e^−x), written with e^−|x| so that neither branch overflows; keeps x's float dtype."""
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e)).astype(x.dtype, copy=False)


def _shift_by_max(x, axis):
    """(x − m, m) with m = maxⱼ xⱼ along axis (kept): after the shift every e^· is ≤ 1, never overflowing.

    A row whose max is ±∞ shifts by 0, so an all −∞ row gives −∞ (and softmax NaN, as in PyTorch).
    """
    m = np.max(x, axis=axis, keepdims=True)
    m = np.where(np.isfinite(m), m, 0).astype(x.dtype, copy=False)
    return x - m, m


def _log_sum_exp_shifted(shifted, axis):
    with np.errstate(divide="ignore"):  # log 0 = −∞ is the answer for an all −∞ row
        return np.log(np.exp(shifted).sum(axis=axis, keepdims=True))


def logsumexp(x, axis=-1, keepdims=True):
    """log Σⱼ e^{xⱼ} = m + log Σⱼ e^{xⱼ − m}, m = maxⱼ xⱼ."""
    shifted, m = _shift_by_max(x, axis)
    out = m + _log_sum_exp_shifted(shifted, axis)
    return out if keepdims else np.squeeze(out, axis=axis)


def log_softmax(x, axis=-1):
    """log softmax(x)ᵢ = xᵢ − log Σⱼ e^{xⱼ} = (xᵢ − m) − log Σⱼ e^{xⱼ − m} (subtracting m first keeps
    float32 precision when the logits are large)."""
    shifted, _ = _shift_by_max(x, axis)
    return shifted - _log_sum_exp_shifted(shifted, axis)


def softmax(x, axis=-1):
    """softmax(x)ᵢ = e^{xᵢ − m} / Σⱼ e^{xⱼ − m}, m = maxⱼ xⱼ (the shift cancels and keeps e^· finite)."""
    e = np.exp(_shift_by_max(x, axis)[0])
    return e / e.sum(axis=axis, keepdims=True)


# ----- the error function ----------------------------------------------------------------------

def erfc_log_correction_fit(degree=24, nodes=200):
    """Chebyshev coefficients of P in  erfc(x) = t·exp(−x² + P(u)),  t = 2/(2+x),  u = 2t − 1,  x ≥ 0.

    P is smooth on t ∈ (0, 1], so a short Chebyshev series in u = 2t − 1 fits it
    to double precision; it is fitted once, at import, from `math.erfc` at Chebyshev
    nodes (and from the asymptotic series erfc(x)·e^{x²}·x√π ≈ Σ (−1)ᵏ(2k−1)!!/(2x²)ᵏ
    where `math.erfc` underflows).
    """
    u = np.cos(np.pi * (np.arange(nodes) + 0.5) / nodes)
    values = []
    for t in (u + 1) / 2:
        x = 2 / t - 2
        if x < 26:
            scaled = math.erfc(x) * math.exp(x * x)
        else:
            series, term = 1.0, 1.0
            for k in range(1, 8):
                term *= -(2 * k - 1) / (2 * x * x)
                series += term
            scaled = series / (x * math.sqrt(math.pi))
        values.append(math.log(scaled / t))
    return np.polynomial.chebyshev.chebfit(u, np.array(values), degree)


# P in the power basis of u, lowest degree first (its coefficients stay below 1, so Horner's rule is
# stable). Worst absolute error of erfc on x ≥ 0: ~2e-15 with degree 24, ~8e-8 with the first 11
# Chebyshev terms, below float32 resolution, so float32 inputs use that (and so does the C kernel).
ERFC_POLY = {
    np.dtype(np.float64): np.polynomial.chebyshev.cheb2poly(erfc_log_correction_fit()),
    np.dtype(np.float32): np.polynomial.chebyshev.cheb2poly(erfc_log_correction_fit()[:11]).astype(np.float32),
}


def erfc_abs(x):
    """erfc(|x|) = (2/√π) ∫_{|x|}^∞ e^{−s²} ds, to ~2e-15 in float64, ~1e-7 in float32 (NumPy in, NumPy out)."""
    dtype = x.dtype if x.dtype in ERFC_POLY else np.dtype(np.float64)
    a = np.abs(x).astype(dtype, copy=False)
    t = 2 / (2 + a)
    u = 2 * t - 1
    coeffs = ERFC_POLY[dtype]
    p = np.full_like(a, coeffs[-1])
    for c in coeffs[-2::-1]:
        p *= u
        p += c
    p -= a * a
    return t * np.exp(p, out=p)


def erf(x):
    """erf(x) = (2/√π) ∫₀ˣ e^{−s²} ds = sign(x)·(1 − erfc(|x|)) (NumPy in, NumPy out)."""
    x = np.asarray(x)
    return np.sign(x) * (1 - erfc_abs(x))


# Elements per pass in normal_cdf: the ~30 NumPy passes of erfc_abs then run on a slice that stays in
# the L2 cache instead of streaming the whole array from memory ~30 times (benchmarks/bench_fused.py
# times this path beside the C GELU).
_CHUNK = 16384


def normal_cdf(x):
    """Φ(x) = ½(1 + erf(x/√2)) = ½ erfc(−x/√2), from erfc so the left tail keeps its relative accuracy."""
    x = np.asarray(x)
    dtype = x.dtype if x.dtype in ERFC_POLY else np.dtype(np.float64)
    flat = np.ascontiguousarray(x, dtype=dtype).reshape(-1)
    out = np.empty_like(flat)
    for i in range(0, flat.size, _CHUNK):
        xi = flat[i:i + _CHUNK]
        half_tail = 0.5 * erfc_abs(xi * (1 / math.sqrt(2)))
        out[i:i + _CHUNK] = np.where(xi < 0, half_tail, 1 - half_tail)
    return out.reshape(x.shape)


def normal_pdf(x):
    """φ(x) = e^{−x²/2} / √(2π), the standard normal density (Φ' = φ)."""
    return np.exp(-0.5 * x * x) * x.dtype.type(1 / math.sqrt(2 * math.pi))


def erfc_fit_header():
    """kernels/erfc_fit.h: the float32 coefficients of P, highest degree first, as kernels/activation.c reads them."""
    coeffs = ERFC_POLY[np.dtype(np.float32)][::-1]
    lines = ",\n".join(f"    {float(c):.9e}f" for c in coeffs)
    return ("/* erfc_fit.h: written by `python -m minigrad.special` from minigrad/special.py; do not edit.\n"
            " *\n"
            " * erfc(a) = t·exp(−a² + P(u)), t = 2/(2 + a), u = 2t − 1, a ≥ 0: the coefficients of P in u,\n"
            " * highest degree first (Horner's order), float32 (error ~1e-7, below float32 resolution).\n"
            " * tests/test_special.py checks that this file equals what minigrad/special.py fits. */\n"
            f"#define ERFC_FIT_DEGREE {len(coeffs) - 1}\n"
            f"static const float ERFC_FIT_F32[ERFC_FIT_DEGREE + 1] = {{\n{lines}\n}};\n")


if __name__ == "__main__":
    import pathlib
    path = pathlib.Path(__file__).resolve().parents[1] / "kernels" / "erfc_fit.h"
    path.write_text(erfc_fit_header())
    print(f"wrote {path}")
