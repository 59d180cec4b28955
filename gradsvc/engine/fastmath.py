"""Fast sin and cos in plain jnp ops: range reduction plus polynomials that XLA fuses into the kernel.

Why: XLA's CPU sin/cos cost several times any other op per value; these cost a fraction of that
(benchmarks/README.md, "fast sin/cos", has the measurements).

How: k = round(x·2/π) and r = x - k·π/2, with π/2 split in three parts so that the leading
products are exact: fdlibm's pio2_1/2/3 (33 significant bits each) in float64, Cephes' split in
float32, each in the job's own dtype.
Then fdlibm's (float64) or Cephes' (float32) minimax polynomials for sin and cos on |r| <= π/4, and the
quadrant k mod 4 picks the sign and which polynomial.

Accuracy: measured against numpy's float64 sin/cos over a million uniform points by `make bench`
(benchmarks/README.md has the table) within |x| <= ACCURATE_UP_TO[dtype]. Beyond it the reduction
loses accuracy, so the kernel also reports whether any argument in a chunk went past it, and such a
chunk is recomputed with XLA's own sin/cos (see jaxrun). Derivatives are defined with custom_jvp
(sin' = cos, cos' = -sin, both fast), as JAX's own rules are.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

PIO2_1 = 1.57079632673412561417e+00  # first 33 bits of pi/2
PIO2_2 = 6.07710050650619224932e-11  # next 33 bits
PIO2_3 = 2.02226624879595063154e-21  # next 33 bits
TWO_OVER_PI = 6.36619772367581382433e-01

SIN64 = (-1.66666666666666324348e-01, 8.33333333332248946124e-03, -1.98412698298579493134e-04,
         2.75573137070700676789e-06, -2.50507602534068634195e-08, 1.58969099521155010221e-10)
COS64 = (4.16666666666666019037e-02, -1.38888888888741095749e-03, 2.48015872894767294178e-05,
         -2.75573143513906633035e-07, 2.08757232129817482790e-09, -1.13596475577881948265e-11)
SIN32 = (-1.6666654611e-1, 8.3321608736e-3, -1.9515295891e-4)
COS32 = (4.166664568298827e-2, -1.388731625493765e-3, 2.443315711809948e-5)

ACCURATE_UP_TO = {"float32": 8192.0, "float64": 1e5}


def _horner(z, coefficients):
    result = coefficients[-1]
    for c in reversed(coefficients[:-1]):
        result = c + z * result
    return result


# Cephes' float32 split of pi/2: 9 + 11 + 24 significant bits, so k·PIO2F_1 and k·PIO2F_2 are
# exact for k < 2**13, |x| < 8192 (float32 arithmetic throughout: widening to float64 would halve
# the vector width and cancel the gain)
PIO2F_1, PIO2F_2, PIO2F_3 = 1.5703125, 4.837512969970703125e-4, 7.54978995489188216e-8


def _reduce(x):
    """r in [-π/4, π/4] (in x's dtype) and the quadrant k mod 4."""
    if x.dtype == jnp.float32:
        parts = (PIO2F_1, PIO2F_2, PIO2F_3)
    else:
        parts = (PIO2_1, PIO2_2, PIO2_3)
    k = jnp.round(x * jnp.asarray(TWO_OVER_PI, x.dtype))
    r = x
    for part in parts:
        r = r - k * jnp.asarray(part, x.dtype)
    quadrant = jnp.remainder(k, 4.0).astype(jnp.int32)  # exact for any finite k
    return r, quadrant


def _sin_cos_of_reduced(r):
    z = r * r
    if r.dtype == jnp.float32:
        s_coef, c_coef = SIN32, COS32
    else:
        s_coef, c_coef = SIN64, COS64
    s = r + r * z * _horner(z, s_coef)
    c = 1.0 - 0.5 * z + z * z * _horner(z, c_coef)
    return s, c


@jax.custom_jvp
def sin(x):
    r, q = _reduce(x)
    s, c = _sin_cos_of_reduced(r)
    v = jnp.where((q & 1) == 0, s, c)  # quadrants: sin r, cos r, -sin r, -cos r
    v = jnp.where((q & 2) == 0, v, -v)
    return jnp.where(x == 0, x, v)  # sin(-0.0) = -0.0, which the polynomial's sum loses


@jax.custom_jvp
def cos(x):
    r, q = _reduce(x)
    s, c = _sin_cos_of_reduced(r)
    v = jnp.where((q & 1) == 0, c, s)  # quadrants: cos r, -sin r, -cos r, sin r
    return jnp.where(((q + 1) & 2) == 0, v, -v)


@sin.defjvp
def _sin_jvp(primals, tangents):
    (x,), (t,) = primals, tangents
    return sin(x), t * cos(x)


@cos.defjvp
def _cos_jvp(primals, tangents):
    (x,), (t,) = primals, tangents
    return cos(x), -(t * sin(x))


def beyond_accurate_range(x, dtype: str):
    """True where the fast reduction is no longer accurate (or x is not finite)."""
    return ~(jnp.abs(x) <= ACCURATE_UP_TO[dtype])
