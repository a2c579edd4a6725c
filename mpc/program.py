"""The SPMD program API: what a user's program sees inside each party.

Responsibility: `PartyContext` (`ctx`) and `Secret`, a shared value with numpy-like operators.
The same program function runs at every party; operations on `Secret`s call the session's
protocol, which talks to the other parties directly. Fixed-point bookkeeping happens here:
every `Secret` knows its number of fractional bits (0 for integers), products of two fixed-point
values are truncated once (with the additive protocol at their next use, where a next product
absorbs the truncation's round: `Secret._deferred_product`), public operands are encoded with
the same scale.
Security model: a `Secret` holds this party's share only. `ctx.private` is this party's own data
and exists only at this party. Only `ctx.reveal` turns a secret into a plaintext, and only at the
parties it names. A program must not return `Secret` objects (the runtime refuses: that would
hand shares to the caller).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np

from mpc.encoding import FixedPoint
from mpc.errors import ConfigurationError, ShapeMismatchError
from mpc.parties.channel import PartyChannel, contiguous
from mpc.protocols.base import MaskedOperand, Protocol

InputKind = Literal["fixed", "int"]


class PartyContext:
    """Everything a program can use at one party."""

    def __init__(
        self,
        parties: Sequence[str],
        rank: int,
        protocol: Protocol,
        channel: PartyChannel,
        fixed_point: FixedPoint,
        private: Mapping[str, Any] | None = None,
    ) -> None:
        self.parties = list(parties)
        self.rank = rank
        self.protocol = protocol
        self.channel = channel
        self.fixed_point = fixed_point
        self.private: Mapping[str, Any] = private or {}
        #: What `reveal` gave this party, as (the array returned, a copy of it), when the runner
        #: keeps the log (runs across organisations may return only these values:
        #: `mpc.federation.outputs`); None otherwise (no copy is made).
        self.revealed: list[tuple[np.ndarray, np.ndarray]] | None = None

    @property
    def me(self) -> str:
        """This party's name."""
        return self.parties[self.rank]

    @property
    def n(self) -> int:
        return len(self.parties)

    def rank_of(self, party: str) -> int:
        try:
            return self.parties.index(party)
        except ValueError:
            raise ConfigurationError(
                f"unknown party {party!r}; the parties of this session are {self.parties}"
            ) from None

    # ---- encoding ---------------------------------------------------------------------------
    def _encode(self, value: Any, frac: int) -> np.ndarray:
        alg = self.protocol.algebra
        if frac:
            ints = self.fixed_point.encode(value)
            base = self.fixed_point.frac_bits
            if frac != base:  # a wider intermediate scale: the constant shifted exactly
                if frac < base:
                    raise ValueError(f"cannot encode at {frac} fractional bits (< {base})")
                scaled = alg.mul(alg.from_signed(ints), _power_of_two(self.protocol, frac - base))
                return contiguous(scaled)
        else:
            arr = np.asarray(value)
            if arr.dtype.kind not in "iub":
                raise TypeError(
                    f"integer input expected, got dtype {arr.dtype}; use kind='fixed' for reals"
                )
            limit = 1 << min(62, alg.bits - 2)
            # Python ints: no wrap-around in the check itself (uint64 2^64-1, int64 -2^63).
            if arr.size and max(-int(arr.min()), int(arr.max())) >= limit:
                raise ConfigurationError(f"integer inputs must satisfy |v| < 2^{alg.bits - 2}")
            ints = arr.astype(np.int64)
        return contiguous(alg.from_signed(ints))

    def _decode(self, elements: np.ndarray, frac: int) -> np.ndarray:
        ints = self.protocol.algebra.to_signed(elements)
        if not frac:
            return ints
        if frac == self.fixed_point.frac_bits:
            return self.fixed_point.decode(ints)
        return np.asarray(ints, dtype=np.float64) / float(1 << frac)

    # ---- input and output ---------------------------------------------------------------------
    def input(
        self, owner: str, value: Any = None, *, key: str | None = None, kind: InputKind = "fixed"
    ) -> Secret:
        """Secret-share `owner`'s value among all parties (one round).

        At the owner, the value is `value`, or `ctx.private[key]` when `key` is given; the other
        parties pass nothing (whatever they pass is ignored). `kind` is 'fixed' (reals, encoded
        with the session's fixed-point format) or 'int'.
        """
        owner_rank = self.rank_of(owner)
        frac = self.fixed_point.frac_bits if kind == "fixed" else 0
        if kind not in ("fixed", "int"):
            raise ValueError(f"kind must be 'fixed' or 'int', got {kind!r}")
        secret = None
        if self.rank == owner_rank:
            if key is not None:
                if key not in self.private:
                    raise KeyError(f"party {self.me!r} has no private data named {key!r}")
                value = self.private[key]
            if value is None:
                raise ValueError(f"party {self.me!r} owns this input but passed no value")
            secret = self._encode(value, frac)
        with self.channel.operation("input"):
            share = self.protocol.input(owner_rank, secret)
        return Secret(self, share, frac)

    def reveal(self, x: Secret, to: str | Sequence[str] | None = None) -> np.ndarray | None:
        """Open `x` to the named parties (all when None): the value there, None elsewhere."""
        if not isinstance(x, Secret):
            raise TypeError(f"reveal expects a Secret, got {type(x).__name__}")
        x._check(self)
        targets = None
        if to is not None:
            names = [to] if isinstance(to, str) else list(to)
            targets = [self.rank_of(name) for name in names]
        with self.channel.operation("reveal"):
            # x.share truncates a product whose truncation is pending (opening it untruncated
            # would show the low bits that the truncation drops)
            opened = self.protocol.open(x.share, targets)
        if opened is None:
            return None
        value = self._decode(opened, x.frac)
        if self.revealed is not None:
            self.revealed.append((value, value.copy()))
        return value

    def constant(self, value: Any, kind: InputKind = "fixed") -> Secret:
        """A public value as a (trivially) shared one, to mix with secrets."""
        frac = self.fixed_point.frac_bits if kind == "fixed" else 0
        encoded = self._encode(value, frac)
        zero = np.zeros(encoded.shape, dtype=np.uint64)
        return Secret(self, self.protocol.add_public(zero, encoded), frac)

    def concat(self, values: Sequence[Secret], axis: int = 0) -> Secret:
        """Concatenate secrets along `axis` (local); integers are lifted to fixed point if mixed."""
        if not values:
            raise ValueError("concat of an empty list")
        for v in values:
            v._check(self)
        frac = max(v.frac for v in values)
        proto = self.protocol
        shares = [
            v.share
            if v.frac == frac
            else proto.mul_public(v.share, _power_of_two(proto, frac - v.frac))
            for v in values
        ]
        try:
            joined = np.concatenate(shares, axis=axis)
        except ValueError as exc:
            raise ShapeMismatchError(f"cannot concatenate: {exc}") from None
        return Secret(self, joined, frac)

    def sum(self, values: Sequence[Secret]) -> Secret:
        """Sum of several secrets (local)."""
        if not values:
            raise ValueError("sum of an empty list")
        total = values[0]
        for v in values[1:]:
            total = total + v
        return total


class Secret:
    """This party's share of a secret array, with its fixed-point scale (frac bits)."""

    __slots__ = ("_frac", "_pending", "_share", "ctx")
    __array_priority__ = 1000  # numpy defers to our reflected operators

    def __init__(self, ctx: PartyContext, share: np.ndarray, frac: int, pending: int = 0) -> None:
        self.ctx = ctx
        self._share = share
        self._frac = frac  # the scale of _share
        self._pending = pending  # bits still to truncate (see `share`)

    @property
    def share(self) -> np.ndarray:
        """This party's share at scale `frac`. A product whose truncation is still pending (the
        additive protocol defers it to the product's next use, see `_deferred_product`) is
        truncated now: one round. Every party runs the same operations on its Secrets in the
        same order (SPMD), so every party does this round at the same point; reshaping,
        indexing, `.T` and negation keep the truncation pending and stay local."""
        if self._pending:
            with self.ctx.channel.operation("truncate", own_stats=True):
                share = self.ctx.protocol.truncate(self._share, self._pending)
            self._settled(share)
        return self._share

    def settle(self) -> Secret:
        """Do a deferred truncation now (one round if one is pending, see `_deferred_product`)
        and return self: to time a complete fixed-point product, or to choose where its round
        happens. Never needed for correctness."""
        self.share  # noqa: B018 - the property truncates
        return self

    @property
    def frac(self) -> int:
        """Fractional bits of the value (0 for integers)."""
        return self._frac - self._pending

    def _settled(self, share: np.ndarray) -> None:
        """Take the truncated share of a pending value (the value itself does not change)."""
        self._share = share
        self._frac -= self._pending
        self._pending = 0

    # ---- shape ------------------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self._share.shape)

    @property
    def size(self) -> int:
        return int(self._share.size)

    @property
    def ndim(self) -> int:
        return int(self._share.ndim)

    def __len__(self) -> int:
        return len(self._share)

    def __reduce__(self) -> Any:
        raise TypeError(
            "a Secret holds this party's share and cannot be pickled or returned from a "
            "program; reveal it with ctx.reveal(...) and return the revealed value"
        )

    def __repr__(self) -> str:
        kind = f"fixed<{self.frac}>" if self.frac else "int"
        return f"Secret(shape={self.shape}, {kind}, party={self.ctx.me!r})"

    def _like(self, share: np.ndarray, frac: int | None = None) -> Secret:
        return Secret(self.ctx, share, self.frac if frac is None else frac)

    def _view(self, share: np.ndarray) -> Secret:
        """Another view of the same elements (shape operations and negation stay local, also
        on a product whose truncation is pending, which the view inherits)."""
        return Secret(self.ctx, share, self._frac, self._pending)

    def reshape(self, *shape: int) -> Secret:
        return self._view(self._share.reshape(*shape))

    def __getitem__(self, index: Any) -> Secret:
        return self._view(contiguous(self._share[index]))

    @property
    def T(self) -> Secret:
        return self._view(contiguous(self._share.T))

    def sum(self, axis: int | None = None) -> Secret:
        with self.ctx.channel.operation("linear"):
            return self._like(self.ctx.protocol.algebra.sum(self.share, axis=axis))

    # ---- helpers ----------------------------------------------------------------------------
    def _check(self, ctx: PartyContext) -> None:
        if self.ctx is not ctx:
            raise ShapeMismatchError("this Secret belongs to another session or run")

    def _other(self, other: Secret) -> Secret:
        other._check(self.ctx)
        return other

    def _aligned(self, other: Secret) -> tuple[np.ndarray, np.ndarray, int]:
        """Both shares at the same fixed-point scale, broadcast to one shape."""
        x, y = self.share, other.share
        frac = max(self.frac, other.frac)
        proto = self.ctx.protocol
        if self.frac < frac:
            x = proto.mul_public(x, _power_of_two(proto, frac - self.frac))
        if other.frac < frac:
            y = proto.mul_public(y, _power_of_two(proto, frac - other.frac))
        try:
            if x.shape != y.shape:
                x, y = (contiguous(a) for a in np.broadcast_arrays(x, y))
        except ValueError:
            raise ShapeMismatchError(
                f"shapes {self.shape} and {other.shape} do not broadcast"
            ) from None
        return x, y, frac

    def _public(self, value: Any) -> tuple[np.ndarray, int]:
        """Encode a public operand; integers stay integers (scale 0)."""
        arr = np.asarray(value)
        if arr.dtype.kind in "iub":
            return self.ctx._encode(arr, 0), 0
        if arr.dtype.kind != "f":
            raise TypeError(f"unsupported operand type {type(value).__name__}")
        return self.ctx._encode(arr, self.ctx.fixed_point.frac_bits), self.ctx.fixed_point.frac_bits

    def _public_factor(self, value: Any) -> tuple[np.ndarray, int]:
        """Encode a public factor. Reals below 1 get extra fractional bits (up to 24 more), so
        that e.g. 1/100000 keeps about 16 significant bits instead of rounding to 1 ulp; the
        product is truncated by the same extra bits, so its magnitude before truncation stays
        that of an ordinary fixed-point product."""
        arr = np.asarray(value)
        if arr.dtype.kind != "f":
            return self._public(value)
        base = self.ctx.fixed_point.frac_bits
        self.ctx.fixed_point.encode(arr)  # validates: NaN, inf, range
        largest = float(np.max(np.abs(arr))) if arr.size else 0.0
        extra = 0 if largest == 0.0 or largest >= 1.0 else min(24, math.ceil(-math.log2(largest)))
        if extra == 0:
            return self._public(value)
        ints = np.rint(arr * float(1 << (base + extra))).astype(np.int64)
        return contiguous(self.ctx.protocol.algebra.from_signed(ints)), base + extra

    def _rescale(self, share: np.ndarray, frac: int) -> Secret:
        """Truncate a product back to the session's fixed-point scale if needed."""
        target = self.ctx.fixed_point.frac_bits
        if frac > target:
            share = self.ctx.protocol.truncate(share, frac - target)
            frac = target
        return self._like(share, frac)

    # ---- linear operators (local) -----------------------------------------------------------
    def __add__(self, other: Any) -> Secret:
        proto = self.ctx.protocol
        with self.ctx.channel.operation("linear"):
            if isinstance(other, Secret):
                x, y, frac = self._aligned(self._other(other))
                return self._like(proto.add(x, y), frac)
            constant = np.asarray(other)
            share, frac = self.share, self.frac
            if frac == 0 and constant.dtype.kind == "f":  # int + real: lift the int first
                frac = self.ctx.fixed_point.frac_bits
                share = proto.mul_public(share, _power_of_two(proto, frac))
            return self._like(proto.add_public(share, self.ctx._encode(constant, frac)), frac)

    __radd__ = __add__

    def __neg__(self) -> Secret:
        return self._view(self.ctx.protocol.neg(self._share))

    def __sub__(self, other: Any) -> Secret:
        result: Secret = self + (-other)
        return result

    def __rsub__(self, other: Any) -> Secret:
        result: Secret = (-self) + other
        return result

    # ---- products ---------------------------------------------------------------------------
    def __mul__(self, other: Any) -> Secret:
        proto = self.ctx.protocol
        if isinstance(other, Secret):
            product = self._deferred_product(self._other(other))
            if product is not None:
                return product
            x, y = self.share, other.share
            if x.shape != y.shape:
                try:
                    x, y = (contiguous(a) for a in np.broadcast_arrays(x, y))
                except ValueError:
                    raise ShapeMismatchError(
                        f"cannot multiply shapes {self.shape} and {other.shape}"
                    ) from None
            with self.ctx.channel.operation("mul"):
                return self._rescale(proto.mul(x, y), self.frac + other.frac)
        c, cfrac = self._public_factor(other)
        with self.ctx.channel.operation("mul_public" if cfrac == 0 else "mul_public_fixed"):
            return self._rescale(proto.mul_public(self.share, c), self.frac + cfrac)

    __rmul__ = __mul__

    def _deferred_product(self, other: Secret) -> Secret | None:
        """self * other with its truncation deferred to the product's next use, or None where
        the protocol cannot fuse truncations into products (then `__mul__` truncates at once).

        A fixed-point product x * y is at scale 2f and needs one truncation. Its next use
        truncates it: if that use is another product (with the additive protocol), the opening
        of the truncation doubles as that product's Beaver opening (`mul_settling`), so a chain
        of products takes one round per product instead of two; any other use (an addition, a
        comparison, `ctx.reveal`, ...) truncates it first (`share`, one round, as before). Each
        operand's own pending truncation is settled by this product, once, for all later uses.
        """
        proto = self.ctx.protocol
        target = self.ctx.fixed_point.frac_bits
        total = self.frac + other.frac
        if total <= target or self.shape != other.shape or not proto.settles_in_products():
            return None
        left, right = (other, self) if other._pending and not self._pending else (self, other)
        if left is right or (right._pending and right._pending != left._pending):
            right.settle()  # a square, or different pending scales
        with self.ctx.channel.operation("mul"):
            if left._pending:
                z, x, y = proto.mul_settling(
                    left._share, left._pending, right._share, right._pending
                )
                if right._pending:
                    right._settled(y)
                left._settled(x)
            else:
                z = proto.mul(left._share, right._share)
        return Secret(self.ctx, z, total, total - target)

    def __truediv__(self, other: Any) -> Secret:
        if isinstance(other, Secret):
            raise TypeError("division by a secret is not supported yet; divide by a public value")
        divisor = np.asarray(other, dtype=np.float64)
        if np.any(divisor == 0):
            raise ZeroDivisionError("division of a secret by zero")
        return self * (1.0 / divisor)

    def __matmul__(self, other: Any) -> Secret:
        proto = self.ctx.protocol
        if isinstance(other, Secret):
            self._other(other)
            _check_matmul(self.shape, other.shape)
            with self.ctx.channel.operation("matmul"):
                return self._rescale(proto.matmul(self.share, other.share), self.frac + other.frac)
        c, cfrac = self._public(other)
        _check_matmul(self.shape, c.shape)
        with self.ctx.channel.operation("matmul_public"):
            return self._rescale(proto.matmul_public(self.share, c), self.frac + cfrac)

    def __rmatmul__(self, other: Any) -> Secret:
        proto = self.ctx.protocol
        c, cfrac = self._public(other)
        _check_matmul(c.shape, self.shape)
        with self.ctx.channel.operation("matmul_public"):
            return self._rescale(proto.matmul_public(c, self.share), self.frac + cfrac)

    # ---- comparison -------------------------------------------------------------------------
    def masked(self) -> MaskedMatrix:
        """This matrix prepared for many products `m @ y` and `m.T @ y` with shared y (no
        rounds): with Beaver triples it is opened once under a dealer mask, in the round of its
        first product, and every later product opens only y's side. Protocols without Beaver
        triples keep the share and multiply as usual."""
        if len(self.shape) != 2:
            raise ShapeMismatchError(f"masked() takes a matrix, got shape {self.shape}")
        with self.ctx.channel.operation("mask"):
            return MaskedMatrix(self, self.ctx.protocol.mask_operand(self.share))

    def ltz(self) -> Secret:
        """Shared bits (integers 0/1): 1 where this value is negative. Exact; five rounds with
        the additive protocol (see `mpc.protocols.comparison`), one more for a product whose
        truncation is pending."""
        with self.ctx.channel.operation("compare"):
            return self._like(self.ctx.protocol.less_than_zero(self.share), 0)

    def ltz_times(self, other: Secret) -> tuple[Secret, Secret]:
        """(b, b * other) with b = self.ltz(): the product of the bit with a shared value of the
        same shape, exact (no truncation) and, with the additive protocol, in the rounds of
        the comparison alone (five)."""
        other = self._other(other)
        if other.shape != self.shape:
            raise ShapeMismatchError(f"ltz_times: shapes {self.shape} and {other.shape} differ")
        with self.ctx.channel.operation("compare"):
            bit, product = self.ctx.protocol.less_than_zero_times(self.share, other.share)
            return self._like(bit, 0), other._like(product)

    def __lt__(self, other: Any) -> Secret:
        diff: Secret = self - other
        return diff.ltz()

    def __gt__(self, other: Any) -> Secret:
        diff: Secret = self - other
        return (-diff).ltz()

    def reveal(self, to: str | Sequence[str] | None = None) -> np.ndarray | None:
        return self.ctx.reveal(self, to)


def _power_of_two(proto: Protocol, bits: int) -> np.ndarray:
    return proto.algebra.from_signed(np.asarray(1 << bits, dtype=np.int64))


class MaskedMatrix:
    """A shared matrix prepared for repeated products (`Secret.masked`); `.T` is its transpose.

    Like a `Secret` it holds this party's share and cannot be pickled or returned.
    """

    def __init__(self, source: Secret, operand: MaskedOperand, transposed: bool = False) -> None:
        self._source = source
        self._operand = operand
        self._transposed = transposed

    @property
    def shape(self) -> tuple[int, ...]:
        shape = self._source.shape
        return shape[::-1] if self._transposed else shape

    @property
    def T(self) -> MaskedMatrix:
        return MaskedMatrix(self._source, self._operand, not self._transposed)

    def __matmul__(self, other: Secret) -> Secret:
        if not isinstance(other, Secret):
            raise TypeError("a masked matrix multiplies shared values; use the Secret for public")
        source = self._source
        source._other(other)
        _check_matmul(self.shape, other.shape)
        with source.ctx.channel.operation("matmul"):
            share = source.ctx.protocol.matmul_masked(self._operand, other.share, self._transposed)
            return source._rescale(share, source.frac + other.frac)

    def __reduce__(self) -> Any:
        raise TypeError("a MaskedMatrix holds this party's share and cannot be pickled")

    def __repr__(self) -> str:
        return f"MaskedMatrix(shape={self.shape}, party={self._source.ctx.me!r})"


def _check_matmul(shape_x: tuple[int, ...], shape_y: tuple[int, ...]) -> None:
    if len(shape_x) not in (1, 2) or len(shape_y) not in (1, 2) or shape_x[-1] != shape_y[0]:
        raise ShapeMismatchError(f"cannot matrix-multiply shapes {shape_x} and {shape_y}")
