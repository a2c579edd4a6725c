"""Secure approximations of the logistic function sigmoid(z) = 1 / (1 + exp(-z)) on shared values.

Responsibility: three approximations of the sigmoid (the accurate one also in a clamped variant)
over a fixed-point `Secret` (the same shape in, fixed point out), their plaintext float64 models
(to train the same recipe in the clear and to separate approximation error from fixed-point
error), and the fixed-point helpers they share.

  name              rounds  ltz/element  max |error| vs expit: bound, and measured (secure)
  piecewise          4 + 1      2        0.0561 for every z;   0.05605 on 8001 points of [-40, 40]
  poly                 8        0        0.1035 on [-12, 12];  0.10320 on 20001 points
                                         (diverges outside)
  accurate            30        1        7e-4 for |z| <= 112;  4.3e-4 to 4.5e-4 on 20001 points
                                         (wrong beyond)
  accurate-clamped    30        3        7e-4 for every z;     2.9e-4 on 6001 points of [-200, 200]

  piecewise:  clip(0.5 + 0.17707 z, 0, 1)
  poly:       0.5 + t (1.773046 - 3.133729 t^2 + 1.960132 t^4), t = z / 12
  accurate:   y = 1 / (1 + exp(-|z|)), result y for z >= 0 and 1 - y for z < 0

(`piecewise`: 4 rounds up to WIDE_COMPARISON_LIMIT elements, 5 beyond, and its result's
truncation, left pending: one round at its next use, or none if that use is a masked product.)
The error bounds are asserted by `tests/test_ml_sigmoid.py` (secure runs, 3 parties, a dense
grid, against `scipy.special.expit`). `piecewise` and `accurate` need `Secret.ltz` (exact
comparison; protocol `additive` only, other protocols raise `UnsupportedOperationError`);
`poly` uses products only and runs with every protocol.

Fixed-point care: every truncation of a product returns floor(x / 2^16) or one less, i.e. it is
biased by -1 unit in the last place (ulp) on average (`Protocol.truncate`); the products here
add 1 ulp back (`mul`, `scale`), which makes the error zero-mean and within +-1 ulp. This matters
for the repeated squarings of `accurate`, which double the absolute error of a value near 1 at
every step. Divisions by powers of two are truncations by more bits, not public products.

Bounds: every result carries a public bound (`Secret.bound`, `mpc.bounds`): the products here
are checked like `Secret`'s, and each sigmoid's output gets the bound its formula proves
(|y| <= 1 plus its error) where interval arithmetic would lose the cancellations.

Security model: every function here computes on shares only and reveals nothing. The number of
rounds and the message sizes depend only on the shape of z, never on its value.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

from mpc import bounds
from mpc.program import PartyContext, Secret, extra_factor_bits

FloatArray = npt.NDArray[np.float64]

#: Slope of `piecewise`: minimises max |clip(0.5 + a z, 0, 1) - expit(z)| over all real z
#: (scipy bounded scalar minimisation on a 10^6-point grid of [-40, 40]); the error is 0.05605,
#: reached where the line meets 0 and 1 (|z| = 2.82). The familiar slope 1/4 (the tangent at 0)
#: has error 0.119, SPU's 1/8 has error 0.095.
PIECEWISE_SLOPE = 0.17707
#: The slope is encoded with 16 + 2 fractional bits (a < 1/4 keeps 16 significant bits).
PIECEWISE_EXTRA_BITS = 2
PIECEWISE_MAX_ERROR = 0.0561
#: `piecewise` compares with the wide tree (`Secret.ltz_times(fewer_rounds=True)`: one round
#: fewer, about ten times the dealer's bytes, 0.6 kB an element) up to this many elements.
WIDE_COMPARISON_LIMIT = 4096

#: `poly`: least-squares fit (uniform grid, 2 * 10^5 points) of expit(z) - 0.5 by b1 t + b3 t^3 +
#: b5 t^5 in t = z / POLY_INTERVAL on [-POLY_INTERVAL, POLY_INTERVAL]. The variable t keeps every
#: coefficient and power near 1, so 16 fractional bits represent them well (the same fit in z has
#: c5 = 7.9e-6, 0.5 ulp). The degree-5 fit has a positive leading coefficient, so outside the
#: interval p(z) grows without bound but in the direction of the sign of z (gradient descent
#: pulls such logits back); the cubic fits decrease outside and make training diverge.
POLY_INTERVAL = 12.0
POLY_COEFFICIENTS = (1.773046, -3.133729, 1.960132)
POLY_MAX_ERROR = 0.1035  # 0.10317 in float64, plus fixed-point error (measured 0.10320)

#: `accurate`: exp(-u * 2^k) = T(u)^(2^k) with T(u) = 1 - u + u^2 / 2 (three Taylor terms) and
#: k = 6 squarings. T falls from 1 (u = 0) to 1/2 (u = 1) and climbs back to 1 at u = 2, so
#: T(u)^64 is close to exp(-64 u) only while T stays well below 1 away from 0: for
#: u <= 1.75, i.e. |z| <= 112, T(u)^64 < 2e-7 wherever exp(-64 u) is below one ulp. At
#: |z| = 118.6 the error passes 1e-4, at 128 the result is 0.5 (and above, garbage).
EXP_SQUARINGS = 6
ACCURATE_RANGE = 112.0
#: Measured: 4.5e-4 on 20001 points of [-112, 112] in a secure run. Most of it is fixed-point
#: noise near |z| = 0.3 (e = exp(-|z|) close to 1 carries about 60 ulp of error after six
#: doublings); its tail over 2 * 10^6 simulated points reached 6.1e-4, hence the bound 7e-4.
ACCURATE_MAX_ERROR = 7e-4
#: `accurate-clamped` clamps |z| to this value: sigmoid(32) = 1 - 1.3e-14, below one ulp.
CLAMP = 32.0
#: Newton iterations for 1/d on d in [1, 2] from the minimax linear start 24/17 - 8/17 d.
NEWTON_ITERATIONS = 2

SIGMOIDS = ("piecewise", "poly", "accurate", "accurate-clamped")
#: Sigmoids that need `Secret.ltz` (comparison), available for protocol `additive` only.
NEEDS_COMPARISON = frozenset({"piecewise", "accurate", "accurate-clamped"})


# ---- fixed-point helpers ------------------------------------------------------------------------
def as_fixed(x: Secret) -> Secret:
    """`x` at the session's fixed-point scale (integers are lifted, locally)."""
    target = x.ctx.fixed_point.frac_bits
    if x.frac == target:
        return x
    if x.frac == 0:
        lifted: Secret = x + 0.0  # int + real lifts the integer (local)
        return lifted
    raise ValueError(f"expected a fixed-point value with {target} fractional bits, got {x.frac}")


def _ulp(ctx: PartyContext) -> np.ndarray:
    return ctx.protocol.algebra.from_signed(np.asarray(1, dtype=np.int64))


def _truncate(ctx: PartyContext, share: np.ndarray, bits: int) -> np.ndarray:
    """Probabilistic truncation by `bits`, debiased: + 1 ulp (error in (-1, 1] ulp, mean 0)."""
    proto = ctx.protocol
    return proto.add_public(proto.truncate(share, bits), _ulp(ctx))


def admit_truncation(ctx: PartyContext, bound: float, scale: int) -> float:
    """Refuse truncating a value |v| <= bound at `scale` bits if it could fail (`mpc.bounds`);
    return `bound`: callers add the truncation's error, below 2 ulp (`TRUNCATION_SLACK`)."""
    fp = ctx.fixed_point
    algebra, operation = ctx.protocol.algebra, ctx.channel.current_operation
    exact = ctx.protocol.exact_truncation()
    bounds.check_truncation(bound, scale, algebra, fp.failure_bits, exact, operation)
    return bound


def _slack(ctx: PartyContext) -> float:
    """What a debiased truncation may add to |value|: below 2 ulp."""
    return 2.0 ** (1 - ctx.fixed_point.frac_bits)


def mul(a: Secret, b: Secret, shift: int = 0) -> Secret:
    """a * b / 2^shift of two fixed-point secrets: one product, one debiased truncation (2 rounds).

    Element-wise with numpy broadcasting of equal shapes only (like `Secret.__mul__`).
    """
    ctx = a.ctx
    a, b = as_fixed(a), as_fixed(b)
    f = ctx.fixed_point.frac_bits
    proto = ctx.protocol
    with ctx.channel.operation("mul"):
        bound = admit_truncation(ctx, a.bound * b.bound, a.frac + b.frac) / 2.0**shift
        bound += _slack(ctx)
        share = proto.mul(a.share, b.share)
        share = _truncate(ctx, share, a.frac + b.frac + shift - f)
    return Secret(ctx, share, f, bound=bound)


def truncate(x: Secret, bits: int) -> Secret:
    """x / 2^bits for a fixed-point secret (one round, debiased truncation)."""
    x = as_fixed(x)
    if bits <= 0:
        raise ValueError(f"bits must be positive, got {bits}")
    with x.ctx.channel.operation("truncate"):
        bound = admit_truncation(x.ctx, x.bound, x.frac) / 2.0**bits + _slack(x.ctx)
        return Secret(x.ctx, _truncate(x.ctx, x.share, bits), x.frac, bound=bound)


def scale(x: Secret, c: Any) -> Secret:
    """x * c for a public real c (a scalar or an array broadcasting against x): one round.

    c is encoded as round(c * 2^(16 + e)) with e = max(0, floor(-log2 max|c|)), so a small
    constant such as lr / N keeps 16 significant bits instead of the handful it would have at
    scale 2^16; the product is then truncated by 16 + e bits. The value before truncation has the
    magnitude of |x| * 2^32 (as for any fixed-point product), so the truncation's failure
    probability is that of x times a number of magnitude 1. Where x's bound makes that
    inadmissible, e is lowered (`mpc.program.extra_factor_bits`: precision, not range, is lost).
    """
    x = as_fixed(x)
    ctx = x.ctx
    f = ctx.fixed_point.frac_bits
    arr = np.asarray(c, dtype=np.float64)
    if not np.all(np.isfinite(arr)):
        raise ValueError("scale: the constant must be finite")
    biggest = float(np.max(np.abs(arr))) if arr.size else 0.0
    extra = 0 if biggest == 0.0 else max(0, int(np.floor(-np.log2(biggest))))
    extra = min(extra, 24, max(extra_factor_bits(ctx, x.bound, x.frac, biggest), 0))
    big = np.rint(arr * float(2 ** (f + extra))).astype(np.int64)
    proto = ctx.protocol
    with ctx.channel.operation("mul_public_fixed"):
        bound = admit_truncation(ctx, x.bound * biggest, x.frac + f + extra) + _slack(ctx)
        share = proto.mul_public(x.share, proto.algebra.from_signed(big))
        share = _truncate(ctx, share, f + extra)
    return Secret(ctx, share, f, bound=bound)


def _flat(z: Secret) -> tuple[Secret, tuple[int, ...]]:
    return as_fixed(z).reshape(-1), z.shape


# ---- the approximations -------------------------------------------------------------------------
def sigmoid_piecewise(z: Secret, frac: int | None = None) -> Secret:
    """clip(0.5 + a z, 0, 1) with a = 0.17707: max error 0.0561 for every real z (4 rounds,
    5 for more than `WIDE_COMPARISON_LIMIT` elements; the result's truncation is left pending).

    Piecewise-linear ("hard") sigmoid as in SecureML (Mohassel & Zhang, IEEE S&P 2017, sect. 4.1,
    which uses slope 1 on [-1/2, 1/2]); the slope here minimises the max error (PIECEWISE_SLOPE).
    With T = 1 / (2a): b_lo = [z < -T] and b_hi = [z > T] from one exact `ltz_times` on
    [z + T, T - z], which also gives b_lo z and b_hi z; then, locally,
    result = (1 - b_lo - b_hi) / 2 + b_hi + a (z - b_lo z - b_hi z), at the scale of z times
    2^(f + 2) (a encoded with f + 2 bits). z is taken as it is: a product whose truncation is
    pending (`X @ w` in `mpc.ml.logreg`) is compared untruncated, at scale 2^(2f), and the
    result's truncation (by 2f + 2 bits then, f + 2 otherwise) is left pending too, for the
    product that uses it next to do in its round (`MaskedMatrix.__matmul__`; any other use does
    it in a round of its own). The comparisons are exact, so the result is clip(0.5 + a z, 0,
    1) up to the final truncation (below 2 ulp) and the encoding of a. `frac`: the result's
    fractional bits once truncated (default: the session's).
    """
    flat, shape = _flat(z)
    ctx = flat.ctx
    n = flat.size
    proto = ctx.protocol
    alg = proto.algebra
    f = ctx.fixed_point.frac_bits
    scale = flat._frac  # z untruncated: its truncation, if pending, is never done
    slope_bits = f + PIECEWISE_EXTRA_BITS
    slope = round(PIECEWISE_SLOPE * 2**slope_bits)
    threshold = 2.0 ** (slope_bits - 1) / slope  # 1 / (2a) for the encoded a
    operation = ctx.channel.current_operation
    with ctx.channel.operation("sigmoid"):
        bounds.check_wrap(flat.bound + threshold, scale, alg, operation)
        raw = Secret(ctx, flat._share, scale, bound=flat.bound)
        tests = ctx.concat([raw + threshold, threshold - raw])
        wide = n <= WIDE_COMPARISON_LIMIT
        bits, picked = tests.ltz_times(ctx.concat([raw, raw]), fewer_rounds=wide)
        low, high = bits[:n], bits[n:]
        # z where |z| <= T, else 0: exact, so bounded by T (the tracked 3|z| would refuse
        # logits that the schedule admits; an intermediate wrap cancels in the ring)
        middle = proto.sub(proto.sub(raw.share, picked.share[:n]), picked.share[n:])
        top = scale + slope_bits
        bounds.check_wrap(1.0 + threshold, top, alg, operation)
        share = proto.mul_public(middle, alg.from_signed(np.asarray(slope)))
        half = alg.from_signed(np.asarray(1 << (top - 1), dtype=object))
        inside = proto.mul_public(proto.add(low.share, high.share), half)  # (b_lo + b_hi) / 2
        share = proto.add(proto.sub(share, inside), proto.mul_public(high.share, half + half))
        share = proto.add_public(share, half)
        # + 1 ulp after the truncation (debiased, as `_truncate`)
        pending = top - (f if frac is None else frac)
        if not 0 < pending < top:
            raise ValueError(f"piecewise: the result's fractional bits must be in (0, {top})")
        share = proto.add_public(share, alg.from_signed(np.asarray(1 << pending, dtype=object)))
        bound = 1.0 + 2.0 ** (1 + pending - top)
        admit_truncation(ctx, bound, top)
        out = Secret(ctx, share, top, pending, bound)
    return out.reshape(*shape)


def sigmoid_poly(z: Secret) -> Secret:
    """0.5 + t (b1 + t^2 (b3 + b5 t^2)), t = z / 12: max error 0.1035 on [-12, 12] (8 rounds).

    Least-squares odd polynomial of degree 5 (POLY_COEFFICIENTS), Horner form; no comparison, so
    it runs with every protocol. Outside [-12, 12] it diverges (|p| grows like (z/12)^5), in the
    direction of the sign of z. Polynomial sigmoid approximations for secure logistic regression:
    Kim, Song, Kim, Lee & Cheon, "Logistic regression model training based on the approximate
    homomorphic encryption", BMC Medical Genomics 2018 (least-squares fits of degree 3, 5, 7).
    """
    flat, shape = _flat(z)
    ctx = flat.ctx
    b1, b3, b5 = POLY_COEFFICIENTS
    with ctx.channel.operation("sigmoid"):
        t = scale(flat, 1.0 / POLY_INTERVAL)
        t2 = mul(t, t)
        inner = scale(t2, b5) + b3
        inner = mul(t2, inner) + b1
        out = mul(t, inner) + 0.5
    return out.reshape(*shape)


def _exp_neg(u: Secret) -> Secret:
    """exp(-u * 2^k) for 0 <= u <= 2 as (1 - u + u^2/2)^(2^k), k = EXP_SQUARINGS (2 + 2k rounds).

    CrypTen's exp (Knott et al., "CrypTen: Secure multi-party computation meets machine learning",
    NeurIPS 2021, sect. 4.1 and `crypten.common.functions.approximations.exp`) uses the limit
    (1 + x/2^n)^(2^n); a second Taylor term lets k drop from 8-9 to 6 for the same accuracy,
    which halves the growth of the fixed-point error (it doubles with every squaring).
    """
    half_square = mul(u, u, shift=1)
    e = (1.0 - u) + half_square
    # T(u) = 1 - u + u^2/2 is convex with T(0) = 1, so on [0, U] it is at most max(1, T(U)), and
    # at least 1/2; a few ulp of fixed-point error on top (interval arithmetic, 1 + U + U^2/2,
    # would refuse the squarings that follow).
    top = u.bound
    e = e._bounded(max(1.0, 1.0 - top + top * top / 2.0) + 2.0**-10)
    for _ in range(EXP_SQUARINGS):
        e = mul(e, e)
    return e


def _reciprocal_1_2(e: Secret) -> Secret:
    """1 / (1 + e) for e in [0, 1] by Newton's iteration y <- y (2 - d y), d = 1 + e (9 rounds).

    Start y0 = 24/17 - 8/17 d (= 16/17 - 8/17 e), the minimax linear approximation of 1/d on
    [1, 2] (relative error 1/17; the classic start of Newton-Raphson division, e.g. Flynn, "On
    division by functional iteration", IEEE Trans. Computers 1970). The relative error squares
    at every step: 1/17 -> 3.5e-3 -> 1.2e-5 after NEWTON_ITERATIONS = 2. CrypTen computes the
    reciprocal by the same iteration (Knott et al., NeurIPS 2021, sect. 4.1) from an exp-based
    start that covers a wider range in more iterations.
    """
    y = 16.0 / 17.0 - scale(e, 8.0 / 17.0)
    d = e + 1.0
    for _ in range(NEWTON_ITERATIONS):
        y = mul(y, 2.0 - mul(d, y))
    return y


def sigmoid_accurate(z: Secret, clamp: float | None = None) -> Secret:
    """1 / (1 + exp(-|z|)), mirrored for z < 0: max error 7e-4 for |z| <= 112 (30 rounds).

    Following CrypTen's "reciprocal" sigmoid (Knott et al., NeurIPS 2021, sect. 4.1): the sign
    s and s z from one `ltz_times` (5 rounds); |z| = z - 2 s z (local); u = |z| / 64 (1 round);
    e = exp(-|z|) = (1 - u + u^2/2)^64 (`_exp_neg`, 14 rounds); y = 1 / (1 + e) by Newton
    (`_reciprocal_1_2`, 9 rounds); result y + s (1 - 2y) (1 round). Error: 5.6e-5 from the Taylor
    part, the rest from fixed point (+-1 ulp per truncation, doubled by each squaring near e = 1).

    Range: valid for |z| <= 112 (see ACCURATE_RANGE). Beyond, T(u) climbs back towards 1 and
    past it (|z| > 128), where its 64th power leaves the fixed-point range: the result is wrong.
    With `clamp=B` (B <= 112), |z| is
    clamped to B first, which makes the result correct for every z: the comparisons [z < 0],
    [z > B] and [z < -B] run in one `ltz_times` call on 3 times as many elements (same rounds).
    """
    flat, shape = _flat(z)
    ctx = flat.ctx
    n = flat.size
    with ctx.channel.operation("sigmoid"):
        if clamp is None:
            sign, signed = flat.ltz_times(flat)  # s and s z (exact)
            magnitude = (flat - 2 * signed)._bounded(flat.bound)  # (1 - 2s) z = |z|
        else:
            if not 0.0 < clamp <= ACCURATE_RANGE:
                raise ValueError(f"clamp must be in (0, {ACCURATE_RANGE:g}], got {clamp}")
            tests = ctx.concat([flat, clamp - flat, flat + clamp])
            bits, times_z = tests.ltz_times(ctx.concat([flat, flat, flat]))
            sign, above, below = bits[:n], bits[n : 2 * n], bits[2 * n :]
            # (1 - 2s)(1 - t1 - t2) z + (t1 + t2) B = z - 2 s z - t1 z + t2 z + (t1 + t2) B,
            # because t2 = 1 implies s = 1.
            magnitude = (
                flat
                - 2 * times_z[:n]
                - times_z[n : 2 * n]
                + times_z[2 * n :]
                + (above + below) * float(clamp)
            )._bounded(min(flat.bound, clamp))  # |z| clamped to B
        u = truncate(magnitude, EXP_SQUARINGS)
        e = _exp_neg(u)
        y = _reciprocal_1_2(e)
        out = y + sign * (1.0 - (y + y))  # int * fixed: exact
        if u.bound <= ACCURATE_RANGE / 2**EXP_SQUARINGS + 2.0**-10:  # |z| <= 112: in range
            out = out._bounded(1.0 + ACCURATE_MAX_ERROR)
    return out.reshape(*shape)


def sigmoid_accurate_clamped(z: Secret) -> Secret:
    """`sigmoid_accurate` with |z| clamped to CLAMP = 32: max error 7e-4 for every z."""
    return sigmoid_accurate(z, clamp=CLAMP)


_SECURE: dict[str, Callable[[Secret], Secret]] = {
    "piecewise": sigmoid_piecewise,
    "poly": sigmoid_poly,
    "accurate": sigmoid_accurate,
    "accurate-clamped": sigmoid_accurate_clamped,
}


def input_limit(method: str, product_limit: float) -> float:
    """The largest public bound on |z| that the secure `method` takes: its own valid range
    (`accurate`: ACCURATE_RANGE; `poly`: POLY_INTERVAL, where its error bound holds, and what
    the chain of `mul`s in `sigmoid_poly` admits, each |x * y| below `product_limit` from
    `mpc.bounds.product_limit`); `piecewise` and `accurate-clamped` take any z (inf)."""
    check_name(method)
    if method == "accurate":
        return ACCURATE_RANGE
    if method != "poly":
        return math.inf
    b1, b3, b5 = (abs(c) for c in POLY_COEFFICIENTS)
    ulp = 2.0**-16

    def admitted(z: float) -> bool:
        t = z / POLY_INTERVAL + ulp
        t2 = t * t + ulp
        inner = b5 * t2 + b3 + ulp
        inner2 = t2 * inner + ulp + b1
        return max(t * t, t2 * inner, t * inner2) < product_limit

    low, high = 0.0, POLY_INTERVAL
    if admitted(high):
        return high
    for _ in range(100):
        middle = (low + high) / 2
        low, high = (middle, high) if admitted(middle) else (low, middle)
    return low


def check_name(name: str) -> str:
    """`name` if it is a known sigmoid, else a ValueError listing the choices."""
    if name not in _SECURE:
        raise ValueError(f"unknown sigmoid {name!r}; choose one of {', '.join(SIGMOIDS)}")
    return name


def sigmoid(z: Secret, method: str = "accurate") -> Secret:
    """The sigmoid approximation `method` (one of SIGMOIDS) of a shared value."""
    return _SECURE[check_name(method)](z)


# ---- plaintext models ---------------------------------------------------------------------------
def expit(z: Any) -> FloatArray:
    """The logistic function in float64 without overflow (numpy only)."""
    x = np.asarray(z, dtype=np.float64)
    e = np.exp(-np.abs(x))
    return np.asarray(np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e)), dtype=np.float64)


def sigmoid_plain(z: Any, method: str = "exact") -> FloatArray:
    """The float64 value of an approximation (no fixed point), or the exact sigmoid ('exact')."""
    x = np.asarray(z, dtype=np.float64)
    if method == "exact":
        return expit(x)
    check_name(method)
    if method == "piecewise":
        return np.clip(0.5 + PIECEWISE_SLOPE * x, 0.0, 1.0)
    if method == "poly":
        b1, b3, b5 = POLY_COEFFICIENTS
        t = x / POLY_INTERVAL
        t2 = t * t
        return np.asarray(0.5 + t * (b1 + t2 * (b3 + b5 * t2)), dtype=np.float64)
    mag = np.abs(x)
    if method == "accurate-clamped":
        mag = np.minimum(mag, CLAMP)
    u = mag / 2.0**EXP_SQUARINGS
    e = (1.0 - u + u * u / 2.0) ** (2**EXP_SQUARINGS)
    y = 16.0 / 17.0 - 8.0 / 17.0 * e
    d = 1.0 + e
    for _ in range(NEWTON_ITERATIONS):
        y = y * (2.0 - d * y)
    return np.asarray(np.where(x < 0, 1.0 - y, y), dtype=np.float64)


def max_error_bound(method: str) -> tuple[float, float]:
    """(documented max error, half-width of the input range where it holds) of an approximation."""
    bounds = {
        "piecewise": (PIECEWISE_MAX_ERROR, float("inf")),
        "poly": (POLY_MAX_ERROR, POLY_INTERVAL),
        "accurate": (ACCURATE_MAX_ERROR, ACCURATE_RANGE),
        "accurate-clamped": (ACCURATE_MAX_ERROR, float("inf")),
    }
    return bounds[check_name(method)]
