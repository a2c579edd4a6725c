"""Secure aggregation of the parties' integer vectors, and the public agreement before it.

Responsibility: `secure_sum` adds one integer vector per party (each given only at its owner)
and reveals only the sum: every party secret-shares its packed vector with the session's
sharing scheme (all parties in one round, each checking its own vector against the public
bound of `SlotLayout` first), the shares are added locally (a sum of
shares is a share of the sum, exact in the ring and in the field) and the total is opened
(one round; two for a large opening to 3 or more parties). This is the secure aggregation of
Bonawitz et al. (CCS 2017) without its dropout recovery: instead of pairwise masks that cancel,
secret sharing among the parties themselves, so no aggregator exists and nobody sees an
individual vector. `agree` is a public barrier: the parties compare 64-bit words (fingerprints
of the model's shapes, of its initial values and of the public configuration) before any input
is shared, so that a mismatch is one clear error at every party.
Security model: semi-honest, as the session's protocol (`additive`: n - 1 corrupt parties and a
trusted dealer; Shamir: an honest majority). Revealed: the sum only, to every party (or those
named), plus the agreed public words. The bound of each input is public and checked by its
owner before sharing; a value beyond it is refused there and nothing is revealed.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

import numpy as np

from mpc import bounds
from mpc.errors import ConfigurationError, InvalidDataError, ShapeMismatchError
from mpc.fl.quantize import IntArray, SlotLayout
from mpc.parties.channel import contiguous
from mpc.program import PartyContext, Secret

__all__ = ["agree", "fingerprint", "secure_sum", "share_sum"]


def fingerprint(value: Any) -> int:
    """64 bits of SHA-256 of a JSON-able public value (sorted keys)."""
    body = json.dumps(value, sort_keys=True, default=str).encode()
    return int.from_bytes(hashlib.sha256(b"mpc.fl" + body).digest()[:8], "big")


def agree(ctx: PartyContext, words: Sequence[int], kind: str = "fl.agree") -> list[list[int]]:
    """One public round: every party sends its 64-bit `words` to every other; the words of every
    party, by rank. Public values only (fingerprints, sizes)."""
    payload = np.asarray([int(w) & ((1 << 64) - 1) for w in words], dtype=np.uint64)
    others = [j for j in range(ctx.n) if j != ctx.rank]
    with ctx.channel.operation(kind):
        received = ctx.channel.exchange(dict.fromkeys(others, payload), others)
    out: list[list[int]] = []
    for j in range(ctx.n):
        if j == ctx.rank:
            out.append([int(v) for v in payload])
            continue
        got = np.asarray(received[j]).reshape(-1)
        if got.size != payload.size:
            raise ShapeMismatchError(
                f"{ctx.parties[j]} sent {got.size} agreement words, {ctx.me} {payload.size}: "
                "the parties run different versions of the program"
            )
        out.append([int(v) for v in got])
    return out


def share_sum(
    ctx: PartyContext, mine: IntArray, bound: float, size: int, kind: str = "fl.aggregate"
) -> Secret:
    """The shared sum of one integer vector of `size` elements per party (this party's is
    `mine`, |element| <= the public `bound`): one round in which every party sends each other
    party its share (the session's sharing scheme, from this party's PRG, as `ctx.input`
    does, but all parties at once), then a local sum; nothing revealed."""
    arr = np.asarray(mine, dtype=np.int64).reshape(-1)
    if arr.size != size:
        raise ShapeMismatchError(
            f"{ctx.me}: its vector has {arr.size} elements, the agreed size is {size}"
        )
    proto = ctx.protocol
    limit = min(
        float(1 << min(62, proto.algebra.bits - 2)), bounds.wrap_limit(proto.algebra) / ctx.n
    )
    if not 0 < bound < limit:
        raise ConfigurationError(
            f"{kind}: a bound of {bound:.3g} per party is beyond what a sum over {ctx.n} "
            f"parties in {proto.algebra.name} holds ({limit:.3g})"
        )
    if arr.size and int(np.max(np.abs(arr))) > bound:  # Python ints: no overflow
        raise InvalidDataError(
            f"party {ctx.me!r}: an element of its vector is beyond the public bound "
            f"{bound:.6g}; nothing was shared"
        )
    shares = proto.scheme.share(contiguous(proto.algebra.from_signed(arr)), proto.prg)
    others = [j for j in range(ctx.n) if j != ctx.rank]
    with ctx.channel.operation(kind, shapes=((size,),)):
        received = ctx.channel.exchange({j: shares[j] for j in others}, others)
    total = shares[ctx.rank]
    for j in others:
        part = np.asarray(received[j])
        if part.shape != total.shape or part.dtype != total.dtype:
            raise ShapeMismatchError(
                f"{ctx.parties[j]} sent a share of shape {part.shape} ({part.dtype}), "
                f"expected {total.shape} ({total.dtype})"
            )
        total = proto.add(total, part)
    return Secret(ctx, total, 0, bound=ctx.n * bound)


def secure_sum(
    ctx: PartyContext,
    q: IntArray,
    layout: SlotLayout,
    *,
    extra: IntArray | None = None,
    to: str | Sequence[str] | None = None,
    kind: str = "fl.aggregate",
) -> tuple[IntArray, IntArray] | None:
    """The sum over the parties of integer vectors with |q| <= layout.limit, revealed to `to`
    (all when None; None elsewhere), packed `layout.slots` coordinates to an element (the
    traffic is that of `layout.elements(q.size)` elements). `extra`: a few more integers per
    party, |v| <= layout.party_bound, summed unpacked in the same rounds (e.g. a loss).
    Returns (the sums of q, the sums of extra) at the receivers."""
    flat = np.asarray(q, dtype=np.int64).reshape(-1)
    more = np.zeros(0, dtype=np.int64) if extra is None else np.asarray(extra, np.int64)
    if layout.parties != ctx.n:
        raise ConfigurationError(
            f"the slot layout was planned for {layout.parties} parties, this run has {ctx.n}"
        )
    if more.size and int(np.max(np.abs(more))) > layout.party_bound:
        raise InvalidDataError(f"{ctx.me}: an extra value is beyond {layout.party_bound}")
    packed = np.concatenate([layout.pack(flat), more.reshape(-1)])
    total = share_sum(ctx, packed, float(layout.party_bound), packed.size, kind)
    with ctx.channel.operation(kind):
        opened = ctx.reveal(total, to)
    if opened is None:
        return None
    opened = np.asarray(opened, dtype=np.int64).reshape(-1)
    split = opened.size - more.size
    return layout.unpack_sum(opened[:split], flat.size), opened[split:].copy()
