"""Exact fixed-point truncation over the ring Z_2^64 with one opening (no failure probability).

Responsibility: `truncate_exact`, floor(x / 2^m) (or one less) of a shared x with
|x| < 2^62, in one round, for protocols that share additively over the ring.

Protocol (the mask's top bit handles the wrap-around, as in the ring truncation of Escudero,
Ghosh, Keller, Rachuri & Scholl, "Improved primitives for MPC over mixed arithmetic-binary
circuits", CRYPTO 2020, sect. 5, with a dealer giving the mask's parts):
  1. the dealer gives shares of a uniform r, of r_low = ceil((r mod 2^63) / 2^m) and of r's top
     bit r_t (0 or 1);
  2. the parties open c = x + 2^62 + r to every party. x' = x + 2^62 lies in [0, 2^63), so with
     r = r_t 2^63 + r_mid, u = x' + r_mid < 2^64 has top bit u_t = c_t XOR r_t
     = c_t + (1 - 2 c_t) r_t (linear in r_t: c_t is public) and u = u_t 2^63 + (c mod 2^63);
  3. output u_t 2^(63-m) + ((c mod 2^63) >> m) - r_low - 2^(62-m).
Error: floor(u / 2^m) - ceil(r_mid / 2^m) is floor(x / 2^m) or one less (as `Protocol.truncate`).
Failure: none while |x| < 2^62; `mpc.bounds` refuses larger values before the round.
Cost: one round, opening to every party (each needs c's top bit); the dealer sends two
corrections per element (r_low, r_t) where `Protocol.truncate`'s pair needs one.
Security model: semi-honest; c is x' plus a uniform r, hence uniform and independent of x.
The dealer knows r and must be trusted, as for every dealer item.
"""

from __future__ import annotations

import numpy as np

from mpc.protocols.base import Need, Protocol

#: x is offset by 2^62 so that x' = x + 2^62 lies in [0, 2^63) for |x| < 2^62.
OFFSET_BITS = 62
_TOP = np.uint64(63)
_MIDDLE = np.uint64((1 << 63) - 1)


def truncate_exact(protocol: Protocol, x: np.ndarray, bits: int) -> np.ndarray:
    """Shares of floor(x / 2^bits) or one less, for shared x with |x| < 2^62. One round."""
    if not 0 < bits < OFFSET_BITS:
        raise ValueError(f"exact truncation by {bits} bits: must be in (0, {OFFSET_BITS})")
    alg = protocol.algebra
    dealer = protocol._need(Need.TRUNCATION_PAIRS)
    r, r_low, r_top = dealer.exact_truncation_mask(tuple(x.shape), bits)
    offset = np.asarray(1 << OFFSET_BITS, dtype=np.uint64)
    opened = protocol.open(protocol.add_public(alg.add(x, r), offset))
    assert opened is not None  # opened to every party
    c = np.asarray(opened, dtype=np.uint64)
    c_top = np.right_shift(c, _TOP)
    # (1 - 2 c_t) r_t 2^(63-m) - r_low: 1 - 2 c_t is 1 or -1 (2^64 - 1) per element
    sign = np.subtract(np.uint64(1), np.left_shift(c_top, np.uint64(1)))
    weight = np.uint64(1 << (63 - bits))
    share = alg.sub(alg.mul(alg.mul(r_top, sign), np.asarray(weight)), r_low)
    public = np.add(
        np.multiply(c_top, weight),
        np.right_shift(np.bitwise_and(c, _MIDDLE), np.uint64(bits)),
    )
    public = np.subtract(public, np.uint64(1 << (OFFSET_BITS - bits)))
    return protocol.add_public(share, public)
