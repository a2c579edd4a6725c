"""Exact fixed-point truncation over the ring Z_2^64 with one opening (no failure probability).

Responsibility: `truncate_exact`, floor(x / 2^m) (or one less) of a shared x with
|x| < 2^62, in one round (two for a large x, see Cost), for protocols that share additively
over the ring.

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
corrections per element (r_low, r_t) where `Protocol.truncate`'s pair needs one. Where that
opening would take two rounds (3 or more parties, a share of at least
`Protocol.split_open_bytes`), c is opened to the one party that adds public constants (party 0
for additive sharing), which sends c's top bits, packed, to the others: two rounds, and per
party at most one share of c plus the bits on the wire, instead of 2(n-1)/n shares.
Security model: semi-honest; c is x' plus a uniform r, hence uniform and independent of x.
The dealer knows r and must be trusted, as for every dealer item.
"""

from __future__ import annotations

import numpy as np

from mpc.errors import IntegrityError
from mpc.protocols.base import Need, Protocol

#: x is offset by 2^62 so that x' = x + 2^62 lies in [0, 2^63) for |x| < 2^62.
OFFSET_BITS = 62
_TOP = np.uint64(63)
_MIDDLE = np.uint64((1 << 63) - 1)


def truncate_exact(protocol: Protocol, x: np.ndarray, bits: int) -> np.ndarray:
    """Shares of floor(x / 2^bits) or one less, for shared x with |x| < 2^62. One round (two
    for a large x with 3 or more parties: `_truncate_at_king`)."""
    if not 0 < bits < OFFSET_BITS:
        raise ValueError(f"exact truncation by {bits} bits: must be in (0, {OFFSET_BITS})")
    dealer = protocol._need(Need.TRUNCATION_PAIRS)
    r, r_low, r_top = dealer.exact_truncation_mask(tuple(x.shape), bits)
    masked = masked_for_truncation(protocol, x, r)
    king = _king(protocol, masked)
    if king is not None:
        return _truncate_at_king(protocol, masked, r_low, r_top, bits, king)
    opened = protocol.open(masked)
    assert opened is not None  # opened to every party
    public, sign = opened_parts(np.asarray(opened, dtype=np.uint64), bits)
    return protocol.add_public(masked_share(protocol, r_low, r_top, sign, bits), public)


def _king(protocol: Protocol, masked: np.ndarray) -> int | None:
    """The one party that adds public constants, where opening `masked` to every party would
    take two rounds (`Protocol.open`: 3 or more parties, a large share); None otherwise."""
    holders = protocol.scheme.constant_holders()
    if (
        len(holders) != 1
        or protocol.n < 3
        or masked.nbytes < protocol.split_open_bytes
        or protocol.scheme.checks_openings
    ):
        return None
    return holders[0]


def _truncate_at_king(
    protocol: Protocol,
    masked: np.ndarray,
    r_low: np.ndarray,
    r_top: np.ndarray,
    bits: int,
    king: int,
) -> np.ndarray:
    """Step 2 for a large x: c is opened to the king alone (the one party that adds the public
    part), which sends c's top bits, packed 8 to a byte, to the others. Two rounds, as the
    opening to all would take, with (n-1) shares of c plus n-1 bit vectors on the wire instead
    of 2(n-1) shares' worth; the others learn only c_t (uniform: c is)."""
    channel = protocol.channel
    others = [j for j in range(protocol.n) if j != king]
    c = protocol.open(masked, [king])
    if c is None:
        packed: np.ndarray = channel.exchange({}, [king])[king]
        if packed.dtype != np.uint8 or packed.shape != ((masked.size + 7) // 8,):
            raise IntegrityError(
                f"party {king} sent {packed.dtype} {packed.shape} as the top bits of an "
                f"opening of {masked.size} elements"
            )
        top = np.unpackbits(packed, count=masked.size)
    else:
        top = np.greater_equal(c.reshape(-1), np.uint64(1 << 63)).view(np.uint8)
        channel.exchange(dict.fromkeys(others, np.packbits(top)), ())
    # (1 - 2 c_t) r_t 2^(63-m) - r_low, the factor (1 - 2 c_t) 2^(63-m) looked up by c_t
    weight = 1 << (63 - bits)
    factors = np.array([weight, (1 << 64) - weight], dtype=np.uint64)
    share: np.ndarray = np.take(factors, top)
    np.multiply(share, r_top.reshape(-1), out=share)
    np.subtract(share, r_low.reshape(-1), out=share)
    share = share.reshape(masked.shape)
    if c is None:
        return share
    # public part c_t 2^(63-m) + ((c mod 2^63) >> m) - 2^(62-m) = (c >> m) - 2^(62-m)
    public = np.right_shift(c, np.uint64(bits), out=c)
    np.subtract(public, np.uint64(1 << (OFFSET_BITS - bits)), out=public)
    return protocol.add_public(share, public)


def masked_for_truncation(protocol: Protocol, x: np.ndarray, r: np.ndarray) -> np.ndarray:
    """This party's share of c = x + 2^62 + r, the value step 2 opens."""
    offset = np.asarray(1 << OFFSET_BITS, dtype=np.uint64)
    return protocol.add_public(protocol.algebra.add(x, r), offset)


def opened_parts(c: np.ndarray, bits: int) -> tuple[np.ndarray, np.ndarray]:
    """From the opened c: the public part of the result, c_t 2^(63-m) + ((c mod 2^63) >> m)
    - 2^(62-m), and the sign 1 - 2 c_t (1 or 2^64 - 1) that r_t's term takes."""
    c_top = np.right_shift(c, _TOP)
    sign = np.subtract(np.uint64(1), np.left_shift(c_top, np.uint64(1)))
    public = np.add(
        np.multiply(c_top, np.uint64(1 << (63 - bits))),
        np.right_shift(np.bitwise_and(c, _MIDDLE), np.uint64(bits)),
    )
    return np.subtract(public, np.uint64(1 << (OFFSET_BITS - bits))), sign


def masked_share(
    protocol: Protocol, r_low: np.ndarray, r_top: np.ndarray, sign: np.ndarray, bits: int
) -> np.ndarray:
    """The shared part of the result: (1 - 2 c_t) r_t 2^(63-m) - r_low."""
    alg = protocol.algebra
    weight = np.asarray(np.uint64(1 << (63 - bits)))
    share: np.ndarray = alg.sub(alg.mul(alg.mul(r_top, sign), weight), r_low)
    return share
