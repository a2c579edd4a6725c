"""The SPMD program API: what a user's program sees inside each party.

Responsibility: `PartyContext` (`ctx`) and `Secret`, a shared value with numpy-like operators.
The same program function runs at every party; operations on `Secret`s call the session's
protocol, which talks to the other parties directly. Fixed-point bookkeeping happens here:
every `Secret` knows its number of fractional bits (0 for integers), products of two fixed-point
values are truncated once (with the additive protocol at their next use, where a next product
absorbs the truncation's round: `Secret._deferred_product`), public operands are encoded with
the same scale. Every `Secret` also carries a public bound on its magnitude (`Secret.bound`,
from declared input bounds, constants and shapes); an operation whose result could wrap around
the modulus, or whose truncation could fail with more than the accepted probability, is refused
before it runs (`mpc.bounds`).
Security model: a `Secret` holds this party's share only. `ctx.private` is this party's own data
and exists only at this party. Only `ctx.reveal` turns a secret into a plaintext, and only at the
parties it names. A program must not return `Secret` objects (the runtime refuses: that would
hand shares to the caller).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np

from mpc import bounds
from mpc.encoding import FixedPoint
from mpc.errors import (
    ConfigurationError,
    FixedPointOverflowError,
    InvalidDataError,
    ShapeMismatchError,
)
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
        self,
        owner: str,
        value: Any = None,
        *,
        key: str | None = None,
        kind: InputKind = "fixed",
        bound: float | None = None,
    ) -> Secret:
        """Secret-share `owner`'s value among all parties (one round).

        At the owner, the value is `value`, or `ctx.private[key]` when `key` is given; the other
        parties pass nothing (whatever they pass is ignored). `kind` is 'fixed' (reals, encoded
        with the session's fixed-point format) or 'int'. `bound` is a public bound on every
        |element|, the same at every party (part of the program, like shapes): products are
        checked against it (`mpc.bounds`) and the owner refuses a value beyond it. Default: the
        largest bound whose square is still an admitted product (`bounds.default_input_bound`:
        2^14 for reals and 2^31 for integers with `additive`, 16 and 2^29 with the Shamir
        protocols); declare a larger one (up to what the encoding takes, 2^int_bits for reals)
        for values that are only added or scaled.
        """
        owner_rank = self.rank_of(owner)
        if kind not in ("fixed", "int"):
            raise ValueError(f"kind must be 'fixed' or 'int', got {kind!r}")
        frac = self.fixed_point.frac_bits if kind == "fixed" else 0
        limit = self._input_limit(kind)
        if bound is None:
            fp = self.fixed_point
            exact = self.protocol.exact_truncation()
            algebra = self.protocol.algebra
            bound = bounds.default_input_bound(algebra, frac, fp.failure_bits, exact, limit)
        elif (
            isinstance(bound, bool)
            or not isinstance(bound, int | float | np.integer | np.floating)
            or not 0 < float(bound) <= limit
        ):
            raise ConfigurationError(
                f"input bound must be a number in (0, {limit:g}] for kind={kind!r}, got {bound!r}"
            )
        bound = float(bound)
        secret = None
        if self.rank == owner_rank:
            if key is not None:
                if key not in self.private:
                    raise KeyError(f"party {self.me!r} has no private data named {key!r}")
                value = self.private[key]
            if value is None:
                raise ValueError(f"party {self.me!r} owns this input but passed no value")
            secret = self._encode(value, frac)
            _check_own_bound(value, bound, self.me)
        with self.channel.operation("input"):
            share = self.protocol.input(owner_rank, secret)
        # the encoding rounds to the nearest 2^-frac: half a unit beyond the declared bound
        return Secret(self, share, frac, bound=bound + _rounding(frac))

    def _input_limit(self, kind: InputKind) -> float:
        """The largest bound an input of this kind may declare (what encoding accepts)."""
        if kind == "fixed":
            return self.fixed_point.max_abs
        return float(1 << min(62, self.protocol.algebra.bits - 2))

    def reveal(self, x: Secret, to: str | Sequence[str] | None = None) -> np.ndarray | None:
        """Open `x` to the named parties (all when None): the value there, None elsewhere."""
        if not isinstance(x, Secret):
            raise TypeError(f"reveal expects a Secret, got {type(x).__name__}")
        x._check(self)
        targets = None
        if to is not None:
            names = [to] if isinstance(to, str) else list(to)
            targets = [self.rank_of(name) for name in names]
        with self.channel.operation("reveal", shapes=(x.shape,)):
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
        bound = _largest(value) + _rounding(frac)
        return Secret(self, self.protocol.add_public(zero, encoded), frac, bound=bound)

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
        bound = max(v.bound for v in values)
        bounds.check_wrap(bound, frac, proto.algebra, self.channel.local_label("concat"))
        return Secret(self, joined, frac, bound=bound)

    def sum(self, values: Sequence[Secret]) -> Secret:
        """Sum of several secrets (local)."""
        if not values:
            raise ValueError("sum of an empty list")
        total = values[0]
        for v in values[1:]:
            total = total + v
        return total


class Secret:
    """This party's share of a secret array, with its fixed-point scale (frac bits) and a public
    bound on the magnitude of its elements.

    `bound` (public, the same at every party) is what the program knows about |value|: without
    it, the largest value the algebra holds at this scale (so a product with it is refused).
    """

    __slots__ = ("_bound", "_frac", "_pending", "_share", "ctx")
    __array_priority__ = 1000  # numpy defers to our reflected operators

    def __init__(
        self,
        ctx: PartyContext,
        share: np.ndarray,
        frac: int,
        pending: int = 0,
        bound: float | None = None,
    ) -> None:
        self.ctx = ctx
        self._share = share
        self._frac = frac  # the scale of _share
        self._pending = pending  # bits still to truncate (see `share`)
        if bound is None:
            bound = bounds.wrap_limit(ctx.protocol.algebra) / 2.0 ** (frac - pending)
        self._bound = float(bound)

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

    @property
    def bound(self) -> float:
        """A public bound on |element| (from declared input bounds, constants and shapes)."""
        return self._bound

    def _bounded(self, bound: float) -> Secret:
        """This value with a tighter public bound that the caller has proven (library code: a
        sigmoid's output, a clamp). Never derived from the shares."""
        return Secret(self.ctx, self._share, self._frac, self._pending, min(self._bound, bound))

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
        return f"Secret(shape={self.shape}, {kind}, |x| <= {self.bound:.3g}, party={self.ctx.me!r})"

    def _like(self, share: np.ndarray, bound: float, frac: int | None = None) -> Secret:
        """A new value from this one's session, checked not to wrap (`mpc.bounds.check_wrap`)."""
        frac = self.frac if frac is None else frac
        bounds.check_wrap(
            bound, frac, self.ctx.protocol.algebra, self.ctx.channel.current_operation
        )
        return Secret(self.ctx, share, frac, bound=bound)

    def _view(self, share: np.ndarray) -> Secret:
        """Another view of the same elements (shape operations and negation stay local, also
        on a product whose truncation is pending, which the view inherits)."""
        return Secret(self.ctx, share, self._frac, self._pending, self._bound)

    def reshape(self, *shape: int) -> Secret:
        return self._view(self._share.reshape(*shape))

    def __getitem__(self, index: Any) -> Secret:
        return self._view(contiguous(self._share[index]))

    @property
    def T(self) -> Secret:
        return self._view(contiguous(self._share.T))

    def sum(self, axis: int | None = None) -> Secret:
        terms = self.size if axis is None else self.shape[axis]
        with self.ctx.channel.operation("linear"):
            total = self.ctx.protocol.algebra.sum(self.share, axis=axis)
            return self._like(total, self.bound * max(terms, 1))

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
        product is truncated by the same extra bits. Fewer extra bits where this value's bound
        would make that truncation inadmissible (`extra_factor_bits`)."""
        arr = np.asarray(value)
        if arr.dtype.kind != "f":
            return self._public(value)
        base = self.ctx.fixed_point.frac_bits
        self.ctx.fixed_point.encode(arr)  # validates: NaN, inf, range
        extra = extra_factor_bits(self.ctx, self.bound, self.frac, _largest(arr))
        if extra == 0:
            return self._public(value)
        ints = np.rint(arr * float(1 << (base + extra))).astype(np.int64)
        return contiguous(self.ctx.protocol.algebra.from_signed(ints)), base + extra

    def _rescale(self, share: np.ndarray, frac: int, bound: float) -> Secret:
        """Truncate a product (|value| <= bound, at `frac` bits, checked by `_check_product`)
        back to the session's fixed-point scale if needed."""
        target = self.ctx.fixed_point.frac_bits
        if frac > target:
            share = self.ctx.protocol.truncate(share, frac - target)
            frac = target
            bound += 2.0 ** (1 - target)  # floor or one less: below 2 ulp
        return self._like(share, bound, frac)

    def _check_product(self, bound: float, frac: int, operation: str | None = None) -> None:
        """Refuse a product (|value| <= bound at `frac` bits) that could wrap or whose
        truncation to the session's scale could fail (`mpc.bounds`); before any round, so that
        every party refuses at the same point. `operation` names it (default: the current)."""
        ctx = self.ctx
        algebra = ctx.protocol.algebra
        operation = operation or ctx.channel.current_operation
        if frac > ctx.fixed_point.frac_bits:
            failure_bits, exact = ctx.fixed_point.failure_bits, ctx.protocol.exact_truncation()
            bounds.check_truncation(bound, frac, algebra, failure_bits, exact, operation)
        else:
            bounds.check_wrap(bound, frac, algebra, operation)

    # ---- linear operators (local) -----------------------------------------------------------
    def __add__(self, other: Any) -> Secret:
        proto = self.ctx.protocol
        with self.ctx.channel.operation("linear"):
            if isinstance(other, Secret):
                x, y, frac = self._aligned(self._other(other))
                return self._like(proto.add(x, y), self.bound + other.bound, frac)
            constant = np.asarray(other)
            share, frac = self.share, self.frac
            if frac == 0 and constant.dtype.kind == "f":  # int + real: lift the int first
                frac = self.ctx.fixed_point.frac_bits
                share = proto.mul_public(share, _power_of_two(proto, frac))
            total = proto.add_public(share, self.ctx._encode(constant, frac))
            return self._like(total, self.bound + _largest(constant) + _rounding(frac), frac)

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
            with self.ctx.channel.operation("mul", shapes=(self.shape, other.shape)):
                bound = self.bound * other.bound
                frac = self.frac + other.frac
                self._check_product(bound, frac)
                return self._rescale(proto.mul(x, y), frac, bound)
        c, cfrac = self._public_factor(other)
        kind = "mul_public" if cfrac == 0 else "mul_public_fixed"
        with self.ctx.channel.operation(kind, shapes=(self.shape,)):
            bound, frac = self.bound * (_largest(other) + _rounding(cfrac)), self.frac + cfrac
            self._check_product(bound, frac)
            return self._rescale(proto.mul_public(self.share, c), frac, bound)

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
        bound = self.bound * other.bound
        # its truncation happens at its next use; refused before any round (the settles below)
        self._check_product(bound, total, self.ctx.channel.local_label("mul"))
        for operand in (self, other):
            if operand._pending and not operand._fusable():
                operand.settle()  # too large for the fused (probabilistic) truncation
        left, right = (other, self) if other._pending and not self._pending else (self, other)
        if left is right or (right._pending and right._pending != left._pending):
            right.settle()  # a square, or different pending scales
        with self.ctx.channel.operation("mul", shapes=(self.shape, other.shape)):
            if left._pending:
                z, x, y = proto.mul_settling(
                    left._share, left._pending, right._share, right._pending
                )
                if right._pending:
                    right._settled(y)
                left._settled(x)
            else:
                z = proto.mul(left._share, right._share)
        return Secret(self.ctx, z, total, total - target, bound + 2.0 ** (1 - target))

    def _fusable(self) -> bool:
        """Whether this value's pending truncation may ride in a product's round: the fused
        truncation is the probabilistic one, so its failure must be admitted (`mpc.bounds`)."""
        fp = self.ctx.fixed_point
        limit = bounds.truncation_limit(self.ctx.protocol.algebra, fp.failure_bits, False)
        return self._bound * 2.0**self._frac <= limit

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
            with self.ctx.channel.operation("matmul", shapes=(self.shape, other.shape)):
                bound = self.shape[-1] * self.bound * other.bound
                frac = self.frac + other.frac
                self._check_product(bound, frac)
                return self._rescale(proto.matmul(self.share, other.share), frac, bound)
        c, cfrac = self._public(other)
        _check_matmul(self.shape, c.shape)
        with self.ctx.channel.operation("matmul_public", shapes=(self.shape,)):
            factor = _largest(other) + _rounding(cfrac)
            bound, frac = self.shape[-1] * self.bound * factor, self.frac + cfrac
            self._check_product(bound, frac)
            return self._rescale(proto.matmul_public(self.share, c), frac, bound)

    def __rmatmul__(self, other: Any) -> Secret:
        proto = self.ctx.protocol
        c, cfrac = self._public(other)
        _check_matmul(c.shape, self.shape)
        with self.ctx.channel.operation("matmul_public", shapes=(self.shape,)):
            factor = _largest(other) + _rounding(cfrac)
            bound, frac = self.shape[0] * self.bound * factor, self.frac + cfrac
            self._check_product(bound, frac)
            return self._rescale(proto.matmul_public(c, self.share), frac, bound)

    # ---- comparison -------------------------------------------------------------------------
    def masked(self) -> MaskedMatrix:
        """This matrix prepared for many products `m @ y` and `m.T @ y` with shared y (no
        rounds): with Beaver triples it is opened once under a dealer mask, in the round of its
        first product, and every later product opens only y's side. Protocols without Beaver
        triples keep the share and multiply as usual."""
        if len(self.shape) != 2:
            raise ShapeMismatchError(f"masked() takes a matrix, got shape {self.shape}")
        with self.ctx.channel.operation("mask", shapes=(self.shape,)):
            return MaskedMatrix(self, self.ctx.protocol.mask_operand(self.share))

    def ltz(self, fewer_rounds: bool = False) -> Secret:
        """Shared bits (integers 0/1): 1 where this value is negative. Exact; five rounds with
        the additive protocol (see `mpc.protocols.comparison`), one more for a product whose
        truncation is pending. `fewer_rounds`: four rounds for about ten times the dealer's
        bytes (`comparison.WIDE_TREE`), for short vectors over slow links."""
        proto = self.ctx.protocol
        with self.ctx.channel.operation("compare", shapes=(self.shape,)):
            if fewer_rounds and _takes_wide(proto.less_than_zero):
                return self._like(proto.less_than_zero(self.share, wide=True), 1.0, 0)
            return self._like(proto.less_than_zero(self.share), 1.0, 0)

    def ltz_times(self, other: Secret, fewer_rounds: bool = False) -> tuple[Secret, Secret]:
        """(b, b * other) with b = self.ltz(): the product of the bit with a shared value of the
        same shape, exact (no truncation) and, with the additive protocol, in the rounds of
        the comparison alone (five; four with `fewer_rounds`, see `ltz`)."""
        other = self._other(other)
        if other.shape != self.shape:
            raise ShapeMismatchError(f"ltz_times: shapes {self.shape} and {other.shape} differ")
        proto = self.ctx.protocol
        with self.ctx.channel.operation("compare", shapes=(self.shape,)):
            if fewer_rounds and _takes_wide(proto.less_than_zero_times):
                bit, product = proto.less_than_zero_times(self.share, other.share, wide=True)
            else:
                bit, product = proto.less_than_zero_times(self.share, other.share)
            return self._like(bit, 1.0, 0), other._like(product, other.bound)

    def clip(self, bound: float) -> Secret:
        """This value clamped to [-bound, bound], with that public bound: for a value whose
        tracked bound has grown beyond what its next product admits (`mpc.bounds`), e.g. in a
        loop. Exact (where |x| <= bound it is x); both comparisons in one `ltz_times`: five
        rounds with the additive protocol, one more for a pending truncation."""
        limit = float(bound)
        if not 0.0 < limit < math.inf:
            raise ValueError(f"clip bound must be a positive number, got {bound!r}")
        flat = self.reshape(-1)
        n = flat.size
        with self.ctx.channel.operation("clip", shapes=(self.shape,)):
            # [x > B] (x - B) and [x < -B] (x + B): subtracting both clamps x.
            tests = self.ctx.concat([limit - flat, flat + limit])
            _, picked = tests.ltz_times(self.ctx.concat([flat - limit, flat + limit]))
            clamped = flat - picked[:n] - picked[n:]
        ulp = 2.0**-clamped.frac if clamped.frac else 0.0
        return clamped.reshape(*self.shape)._bounded(limit + ulp)

    def __lt__(self, other: Any) -> Secret:
        diff: Secret = self - other
        return diff.ltz()

    def __gt__(self, other: Any) -> Secret:
        diff: Secret = self - other
        return (-diff).ltz()

    def reveal(self, to: str | Sequence[str] | None = None) -> np.ndarray | None:
        return self.ctx.reveal(self, to)


#: Significant bits a public factor keeps at least (`extra_factor_bits`).
PUBLIC_FACTOR_BITS = 10


def extra_factor_bits(ctx: PartyContext, bound: float, frac: int, largest: float) -> int:
    """Extra fractional bits e for a public factor c with max |c| = `largest` < 1, multiplying
    a value with |x| <= bound at `frac` bits: as many as keep c's precision (up to
    ceil(-log2 largest), at most 24), but no more than the truncation of the product (at
    scale frac + f + e, |value| <= bound * largest) admits (`mpc.bounds`). Fewer bits cost
    precision: c is rounded to 2^-(f + e), an error of at most bound * 2^-(f + e + 1) in the
    product; refused (FixedPointOverflowError) where c would keep fewer than
    PUBLIC_FACTOR_BITS significant bits."""
    if largest == 0.0 or largest >= 1.0:
        return 0
    wanted = min(24, math.ceil(-math.log2(largest)))
    fp = ctx.fixed_point
    exact = ctx.protocol.exact_truncation()
    room = bounds.truncation_limit(ctx.protocol.algebra, fp.failure_bits, exact) / 2.0  # < limit
    product = bound * largest * 2.0 ** (frac + fp.frac_bits)
    if product <= 0.0:
        return wanted
    extra = max(0, min(wanted, math.floor(math.log2(room / product))))
    # c rounded to 2^-(f + extra): refuse rather than keep fewer than 10 significant bits
    if 2.0 ** -(fp.frac_bits + extra + 1) > largest * 2.0**-PUBLIC_FACTOR_BITS:
        raise FixedPointOverflowError(
            f"{ctx.channel.local_label('mul_public_fixed')}: a product of a value bounded by "
            f"{bound:.3g} with the public factor {largest:.3g} is admitted only with c rounded "
            f"to {fp.frac_bits + extra} fractional bits, fewer than {PUBLIC_FACTOR_BITS} "
            "significant bits of c; declare a tighter bound (ctx.input(..., bound=B)), or "
            "multiply by a larger factor (e.g. divide a sum by n in two steps)"
        )
    return extra


def _largest(value: Any) -> float:
    """max |element| of a public operand (0.0 for an empty one)."""
    arr = np.asarray(value)
    if not arr.size:
        return 0.0
    if arr.dtype.kind in "iu":  # Python ints: no overflow in abs(-2^63)
        return float(max(-int(arr.min()), int(arr.max())))
    return float(np.max(np.abs(arr.astype(np.float64))))


def _rounding(frac: int) -> float:
    """How far encoding a real with `frac` fractional bits may move it: half a unit (0 for
    integers, which are exact)."""
    return 2.0 ** -(frac + 1) if frac else 0.0


def _check_own_bound(value: Any, bound: float, me: str) -> None:
    """At an input's owner: refuse a value beyond its declared public bound. Only the owner
    sees this (the value is its own); the others learn that the run failed."""
    largest = _largest(value)
    if largest > bound:
        raise InvalidDataError(
            f"party {me!r}: an input element has |value| = {largest:.6g}, beyond the bound "
            f"{bound:.6g} the program declares for it (ctx.input(..., bound=...)); fix the data "
            "or raise the bound"
        )


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
        """The product with a shared vector or matrix, truncated (one round more). A vector
        whose own truncation is pending (a product whose truncation was deferred) is truncated
        in this product's round where the protocol can (`Protocol.matmul_masked_settling`:
        exact, with the additive protocol)."""
        return self.product(other)

    def product(self, other: Secret, *, deferred: bool = False) -> Secret:
        """`self @ other`; with `deferred`, where the protocol can truncate a vector in a
        masked product's round, the result's truncation is left pending for its next use (a
        product with it does it in its own round; any other use in a round of its own, once
        per view: settle it first, `Secret.settle`, before taking several views)."""
        if not isinstance(other, Secret):
            raise TypeError("a masked matrix multiplies shared values; use the Secret for public")
        source = self._source
        ctx = source.ctx
        proto = ctx.protocol
        source._other(other)
        _check_matmul(self.shape, other.shape)
        with ctx.channel.operation("matmul", shapes=(self.shape, other.shape)):
            bound = self.shape[-1] * source.bound * other.bound
            frac = source.frac + other.frac
            source._check_product(bound, frac)
            if other._pending and other.ndim == 1 and proto.settles_in_masked_products():
                exact = bounds.truncation_limit(proto.algebra, 0, True)
                fused = other._bound * 2.0**other._frac < exact
            else:
                fused = False
            if fused:
                share, settled = proto.matmul_masked_settling(
                    self._operand, other._share, other._pending, self._transposed
                )
                other._settled(settled)
            else:
                share = proto.matmul_masked(self._operand, other.share, self._transposed)
            target = ctx.fixed_point.frac_bits
            if deferred and frac > target and proto.settles_in_masked_products():
                return Secret(ctx, share, frac, frac - target, bound + 2.0 ** (1 - target))
            return source._rescale(share, frac, bound)

    def __reduce__(self) -> Any:
        raise TypeError("a MaskedMatrix holds this party's share and cannot be pickled")

    def __repr__(self) -> str:
        return f"MaskedMatrix(shape={self.shape}, party={self._source.ctx.me!r})"


def _takes_wide(method: Any) -> bool:
    """Whether a protocol's comparison takes the `wide` hint (a plug-in's override written to
    the older signature (x) or (x, y) does not: it is called without it)."""
    return "wide" in inspect.signature(method).parameters


def _check_matmul(shape_x: tuple[int, ...], shape_y: tuple[int, ...]) -> None:
    if len(shape_x) not in (1, 2) or len(shape_y) not in (1, 2) or shape_x[-1] != shape_y[0]:
        raise ShapeMismatchError(f"cannot matrix-multiply shapes {shape_x} and {shape_y}")
