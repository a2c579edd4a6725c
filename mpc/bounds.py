"""Public magnitude bounds of shared values, and the range checks that keep results right.

Responsibility: decide, from public numbers only, whether a value represented in a share
algebra can wrap around the modulus and whether a probabilistic truncation of it can fail, and
refuse (`FixedPointOverflowError`, naming the operation and what to change) before it happens.
Every `Secret` carries a public bound B with |value| <= B (`mpc.program`); this module turns B
and the value's scale (fractional bits) into the encoded magnitude B * 2^scale and compares it
with the algebra's limits:

* no wrap-around: B * 2^scale < M / 2 (M = 2^64 for the ring, p = 2^61 - 1 for the field), so the
  signed lift recovers the value (additions, integer products, comparisons);
* exact truncation (the ring protocols, `mpc.protocols.truncation`): it cannot fail while the
  encoded |x| < 2^62, so a product of two values with f fractional bits (scale 2f) admits
  |x * y| < 2^(62 - 2f) = 2^30 for f = 16;
* probabilistic truncation (`Protocol.truncate`, ABY3's dealer pair, Mohassel & Rindal, CCS
  2018, sect. 5.1; the field protocols and the ring's fused product-truncation) fails with
  probability |x| / M for an encoded |x|; requiring B * 2^scale <= M * 2^-k bounds that by
  2^-k per element and truncation, where k is `FixedPoint.failure_bits` (20 by default): with
  the field (p = 2^61 - 1) a product admits |x * y| <= 2^(61 - k - 2f) = 2^9 for f = 16.

Security model: bounds are public. They come from the program text (declared input bounds,
constants, shapes) and are the same at every party; no check here looks at a share or a
private value. The owner of an input checks its own value against the declared bound
(`mpc.program.PartyContext.input`), which reveals nothing to anyone else.
"""

from __future__ import annotations

import math

from mpc.algebra import Algebra
from mpc.errors import FixedPointOverflowError

__all__ = [
    "check_truncation",
    "check_wrap",
    "default_input_bound",
    "log2_text",
    "product_limit",
    "truncation_limit",
    "wrap_limit",
]


def wrap_limit(algebra: Algebra) -> int:
    """Exclusive bound on an encoded |value| that the signed lift recovers: M / 2."""
    return algebra.modulus // 2


def truncation_limit(algebra: Algebra, failure_bits: int, exact: bool) -> float:
    """The largest encoded |x| a truncation takes: 2^(bits - 2) if it is exact, else
    M 2^-failure_bits (failure probability at most 2^-failure_bits per element)."""
    if exact:
        return 2.0 ** (algebra.bits - 2)
    return algebra.modulus * 2.0**-failure_bits


def product_limit(algebra: Algebra, frac_bits: int, failure_bits: int, exact: bool) -> float:
    """The largest |x * y| of two values with `frac_bits` fractional bits whose product can be
    truncated (`truncation_limit` / 2^(2 frac_bits)); for integers (no truncation) M / 2."""
    if frac_bits == 0:
        return float(wrap_limit(algebra) - 1)
    return truncation_limit(algebra, failure_bits, exact) / 2.0 ** (2 * frac_bits)


def default_input_bound(
    algebra: Algebra, frac_bits: int, failure_bits: int, exact: bool, largest: float
) -> float:
    """The bound of an input that declares none: the power of two whose square is admitted as a
    product (`product_limit`), so that a product of two such inputs is allowed, and at most
    `largest` (what the encoding accepts). With 16 fractional bits: additive (exact
    truncation) 2^14 for reals, 2^31 for integers; the Shamir protocols (field, failure_bits
    20) 2^4 = 16 and 2^29."""
    limit = product_limit(algebra, frac_bits, failure_bits, exact)
    exponent = math.floor(math.log2(limit) / 2)
    while 4.0**exponent >= limit:  # the limits are strict: the square must stay below
        exponent -= 1
    return min(largest, 2.0**exponent)


def log2_text(value: float) -> str:
    """`value` as 'v (2^e)' for messages, e.g. '6.4e+04 (2^16.0)'."""
    if value <= 0 or not math.isfinite(value):
        return f"{value:.3g}"
    return f"{value:.3g} (2^{math.log2(value):.1f})"


def check_wrap(bound: float, scale: int, algebra: Algebra, operation: str) -> None:
    """Refuse a value whose encoded magnitude bound * 2^scale may reach M / 2 (it would wrap)."""
    encoded = bound * 2.0**scale
    if encoded < wrap_limit(algebra):
        return
    unit = "" if scale == 0 else f" at {scale} fractional bits"
    most = log2_text(wrap_limit(algebra) / 2.0**scale)
    raise FixedPointOverflowError(
        f"{operation}: the result can reach {log2_text(bound)}{unit}, beyond what "
        f"{algebra.name} holds without wrapping around ({most}); "
        "declare tighter input bounds (ctx.input(..., bound=B)), clip the operands "
        "(Secret.clip), or scale them down first"
    )


def check_truncation(
    bound: float, scale: int, algebra: Algebra, failure_bits: int, exact: bool, operation: str
) -> None:
    """Refuse truncating a value of encoded magnitude up to bound * 2^scale when an exact
    truncation cannot take it, or a probabilistic one could fail with probability above
    2^-failure_bits per element (`truncation_limit`); or when it could wrap."""
    check_wrap(bound, scale, algebra, operation)
    limit = truncation_limit(algebra, failure_bits, exact) / 2.0**scale
    if bound < limit or (not exact and bound == limit):
        return
    how = (
        "truncates exactly"
        if exact
        else f"truncates with failure probability <= 2^-{failure_bits} per element"
    )
    raise FixedPointOverflowError(
        f"{operation}: the value to truncate can reach {log2_text(bound)} (at {scale} fractional "
        f"bits), beyond {log2_text(limit)}, the most that {algebra.name} {how}; declare tighter "
        "input bounds (ctx.input(..., bound=B)), clip the operands (Secret.clip), scale them "
        "down before multiplying, or use fewer fractional bits (FixedPoint(frac_bits=...))"
        + ("" if exact else "; FixedPoint(failure_bits=...) sets the accepted failure probability")
    )
