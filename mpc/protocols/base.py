"""The protocol interface every sharing protocol implements, and what it may use.

Responsibility: define (1) `Channel`, the per-party messaging a protocol uses (one call of
`exchange` is one communication round), (2) `CorrelatedRandomness`, the per-party view of a
dealer, (3) `SharingScheme`, the pure (no communication) part of a linear secret-sharing scheme,
and (4) `Protocol`, the abstract class of protocol instances (one per party per run).

Security model: a protocol instance runs inside one party and sees only that party's shares,
the messages sent to it and its dealer view. Each concrete protocol states its own adversary
model in `security`.
"""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import ClassVar, NamedTuple
from typing import Protocol as TypingProtocol

import numpy as np

from mpc.algebra import Algebra
from mpc.errors import ConfigurationError, IntegrityError, UnsupportedOperationError
from mpc.rng import Prg

Shape = tuple[int, ...]


class Need(enum.Enum):
    """Kinds of correlated randomness a protocol can ask a dealer for."""

    TRIPLES = "triples"
    MATRIX_TRIPLES = "matrix triples"
    TRUNCATION_PAIRS = "truncation pairs"
    COMPARISON_MASKS = "comparison masks"


class ComparisonMask(NamedTuple):
    """One party's shares of the dealer material for comparing N elements (see
    `mpc.protocols.comparison`). Bit vectors are XOR-shared bit planes packed 64 elements per
    word (`mpc.bitpack`); `mask` and `dabit` are shares in the protocol's ring."""

    mask: np.ndarray  # (N,) ring shares of r = sum_i 2^i r_i
    mask_bits: np.ndarray  # (64, W) XOR shares of the bit planes r_i
    and_masks: np.ndarray  # (147, W) XOR shares of the masks of the tree's AND inputs
    and_monomials: np.ndarray  # (462, W) XOR shares of the products of those masks
    dabit_bits: np.ndarray  # (W,) XOR shares of random bits s
    dabit: np.ndarray  # (N,) ring shares of the same bits s


@dataclass(frozen=True)
class SecurityModel:
    """What a protocol protects against, stated for users (`mpc protocols` prints it)."""

    threshold: str  # e.g. "n-1 of n", "t < n/2"
    trust: str  # e.g. "trusted dealer", "honest majority"
    adversary: str = "semi-honest"
    detects_wrong_shares: bool = False

    def describe(self) -> str:
        detect = ", detects inconsistent opened shares" if self.detects_wrong_shares else ""
        return f"{self.adversary}; tolerates {self.threshold} corrupt; needs {self.trust}{detect}"


class Channel(TypingProtocol):
    """One party's messaging, as the runtime provides it to protocols."""

    @property
    def rank(self) -> int: ...

    @property
    def n(self) -> int: ...

    def exchange(
        self, outgoing: Mapping[int, np.ndarray], expect: Iterable[int]
    ) -> dict[int, np.ndarray]:
        """One round: send each outgoing array to its party, then receive one from each expected."""
        ...


class CorrelatedRandomness(TypingProtocol):
    """One party's view of a dealer: its shares of triples, matrix triples, truncation pairs."""

    @property
    def provides(self) -> frozenset[Need]: ...

    def triple(self, shape: Shape) -> tuple[np.ndarray, np.ndarray, np.ndarray]: ...

    def matrix_triple(
        self, shape_x: Shape, shape_y: Shape
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]: ...

    def matrix_mask(self, shape: Shape) -> tuple[np.ndarray, int]:
        """Shares of a random matrix A, and the number that names it for `masked_matrix_triple`."""
        ...

    def masked_matrix_triple(
        self, shape_a: Shape, shape_y: Shape, transposed: bool, mask: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Shares of a random B of shape `shape_y` and of C = A @ B (A^T @ B if `transposed`),
        for the A of `matrix_mask` number `mask` of this run."""
        ...

    def masked_truncating_triple(
        self, shape_a: Shape, shape_y: Shape, transposed: bool, mask: int, bits: int
    ) -> tuple[np.ndarray, ...]:
        """For the A of `matrix_mask` number `mask` and a vector y of `shape_y` that awaits its
        exact truncation by `bits`: shares of (r, r_low, r_top) as `exact_truncation_mask`, of
        m = A' * r_top (column j of A' times r_top[j]) and of A' @ r_low, with A' = A^T if
        `transposed` else A (`BeaverMultiplication.matmul_masked_settling`; ring only)."""
        ...

    def truncation_pair(self, shape: Shape, bits: int) -> tuple[np.ndarray, np.ndarray]: ...

    def exact_truncation_mask(
        self, shape: Shape, bits: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Shares of a uniform ring element r, of ceil((r mod 2^63) / 2^bits) and of r's top
        bit (`mpc.protocols.truncation`; ring only)."""
        ...

    def truncating_triple(self, shape: Shape, bits: int, both: bool) -> tuple[np.ndarray, ...]:
        """Shares of a truncation pair (r, r' = r_s >> bits) whose r' is the Beaver mask of a
        product's left operand: (r, b, r', r' * b); or, if `both`, of two pairs that mask both
        operands: (r, s, r', s', r' * s')."""
        ...

    def comparison_mask(self, shape: Shape, bits: int, wide: bool = False) -> ComparisonMask:
        """The dealer material for one comparison of `shape` elements over `bits`-bit words
        (`wide`: for the two-level tree of `mpc.protocols.comparison.WIDE_TREE`)."""
        ...


@dataclass
class MaskedOperand:
    """A shared matrix prepared for repeated products (`Protocol.mask_operand`).

    `mask` is this party's share of a dealer matrix A, named `number` for later triples (None
    when the protocol does not mask: plain products); `opened` is E = X - A, public, set by the
    first product, which opens it in the same round as its other operand.
    """

    share: np.ndarray
    mask: np.ndarray | None = None
    number: int = -1
    opened: np.ndarray | None = None


class SharingScheme(ABC):
    """The local part of a linear secret-sharing scheme over `algebra` for n parties, threshold t.

    Used by input owners and by dealers (which need no channel). `seeded_prefix` says how many
    parties' shares (ranks 0..k-1) may be drawn independently from their own PRG seeds: for a
    uniformly random secret (`fixed_secret=False`) and for a given secret. `complete` computes the
    shares of the remaining ranks from those and the secret, i.e. the dealer's correction shares.
    """

    algebra: Algebra

    def __init__(self, n: int, t: int) -> None:
        self.n = n
        self.t = t

    @abstractmethod
    def share(self, secret: np.ndarray, prg: Prg) -> list[np.ndarray]:
        """Split `secret` (algebra elements) into n shares."""

    @abstractmethod
    def reconstruct(self, shares: Mapping[int, np.ndarray]) -> np.ndarray:
        """Recover the secret from the shares of the given ranks, as a new array (callers may
        modify it in place)."""

    @property
    def checks_openings(self) -> bool:
        """True if `reconstruct` verifies redundant shares: every party must then receive every
        share of an opening (no `Protocol._open_split`)."""
        return False

    @abstractmethod
    def add_public(self, share: np.ndarray, constant: np.ndarray, rank: int) -> np.ndarray:
        """The share of (secret + constant) for party `rank`."""

    def constant_holders(self) -> list[int]:
        """The ranks whose shares change when a public constant is added (see add_public)."""
        return list(range(self.n))

    @abstractmethod
    def seeded_prefix(self, fixed_secret: bool) -> int:
        """How many leading ranks may take their share straight from a PRG."""

    @abstractmethod
    def complete(
        self, seeded: list[np.ndarray], secret: np.ndarray | None
    ) -> tuple[np.ndarray, list[np.ndarray]]:
        """Given the seeded shares of ranks 0..k-1 (and the secret, if fixed), return the secret
        and the shares of ranks k..n-1."""


class Protocol(ABC):
    """A secret-sharing protocol as run by one party.

    Shares are numpy uint64 arrays of `algebra` elements. Local operations (`add`, `sub`, `neg`,
    `add_public`, `mul_public`, `matmul_public`) never communicate; `input`, `open`, `mul`,
    `matmul` and `truncate` each take the rounds their docstrings state.
    """

    name: ClassVar[str]
    summary: ClassVar[str]
    security: ClassVar[SecurityModel]
    needs: ClassVar[frozenset[Need]]
    #: Needed only by some operations (e.g. fixed-point truncation); checked when used.
    optional_needs: ClassVar[frozenset[Need]] = frozenset()
    algebra: ClassVar[Algebra]
    #: An opening to every party of a share at least this large (bytes), with 3 or more
    #: parties, takes two rounds and 2(n-1)/n shares of traffic instead of one and n-1
    #: (`_open_split`), unless the scheme checks openings (Shamir with n > t + 1).
    split_open_bytes: ClassVar[int] = 1 << 20

    def __init__(
        self,
        channel: Channel,
        prg: Prg,
        dealer: CorrelatedRandomness | None,
        threshold: int,
    ) -> None:
        self.channel = channel
        self.rank = channel.rank
        self.n = channel.n
        self.t = threshold
        self.prg = prg
        self.dealer = dealer
        self.scheme = self.make_scheme(self.n, threshold)

    # ---- configuration -------------------------------------------------------------------
    @classmethod
    def default_threshold(cls, n: int) -> int:
        """The corruption threshold used when the caller does not choose one."""
        return n - 1

    @classmethod
    def check_parties(cls, n: int, threshold: int | None) -> int:
        """Validate (n, t) and return t; raise ConfigurationError saying what to change."""
        if n < 2:
            raise ConfigurationError(f"{cls.name} needs at least 2 parties, got {n}")
        t = cls.default_threshold(n) if threshold is None else threshold
        if not 1 <= t < n:
            raise ConfigurationError(f"{cls.name}: threshold t={t} must satisfy 1 <= t < n={n}")
        return t

    @classmethod
    @abstractmethod
    def make_scheme(cls, n: int, t: int) -> SharingScheme:
        """The sharing scheme this protocol uses (also given to dealers)."""

    def _need(self, need: Need) -> CorrelatedRandomness:
        if self.dealer is None or need not in self.dealer.provides:
            raise UnsupportedOperationError(
                f"protocol {self.name!r} needs {need.value} from a dealer for this operation, "
                "but the session has no dealer that provides them; pass dealer='trusted' "
                "(or another dealer that provides them)"
            )
        return self.dealer

    # ---- sharing and opening -------------------------------------------------------------
    def input(self, owner: int, secret: np.ndarray | None) -> np.ndarray:
        """Secret-share `secret` (given only at `owner`) among all parties. One round."""
        if self.rank == owner:
            if secret is None:
                raise ValueError("the input owner must provide its value")
            shares = self.scheme.share(secret, self.prg)
            outgoing = {j: shares[j] for j in range(self.n) if j != owner}
            self.channel.exchange(outgoing, ())
            return shares[owner]
        return self.channel.exchange({}, (owner,))[owner]

    def open(self, share: np.ndarray, to: Collection[int] | None = None) -> np.ndarray | None:
        """Reveal the secret to the parties `to` (to all when None). One round (two for a large
        opening to all, see `_open_split`).

        Returns the secret at the receiving parties and None elsewhere.
        """
        if (
            to is None
            and self.n >= 3
            and share.nbytes >= self.split_open_bytes
            and not self.scheme.checks_openings
        ):
            return self._open_split(share)
        receivers = range(self.n) if to is None else sorted(set(to))
        others = [j for j in range(self.n) if j != self.rank]
        outgoing = {j: share for j in receivers if j != self.rank}
        receiving = self.rank in receivers
        received = self.channel.exchange(outgoing, others if receiving else ())
        if not receiving:
            return None
        received[self.rank] = share
        return self.scheme.reconstruct(received)

    def _open_split(self, share: np.ndarray) -> np.ndarray:
        """Open a large share to every party in two rounds, as reduce-scatter then all-gather:
        party j reconstructs the j-th of n slices from every party's slice j and sends it to
        everybody (the king of Damgard & Nielsen, "Scalable and unconditionally secure
        multiparty computation", CRYPTO 2007, one king per slice). Every party sends
        2(n-1)/n shares' worth instead of n-1 (3 parties: a third less traffic, encryption and
        additions) and learns what the one-round opening shows it, or less.
        """
        flat = share.reshape(-1)
        bounds = [flat.size * j // self.n for j in range(self.n + 1)]
        others = [j for j in range(self.n) if j != self.rank]
        lo, hi = bounds[self.rank], bounds[self.rank + 1]
        slices = self.channel.exchange({j: flat[bounds[j] : bounds[j + 1]] for j in others}, others)
        for j, part in slices.items():
            _check_part(part, hi - lo, j)
        slices[self.rank] = flat[lo:hi]
        mine = self.scheme.reconstruct(slices)
        gathered = self.channel.exchange(dict.fromkeys(others, mine), others)
        opened = np.empty_like(flat)
        opened[lo:hi] = mine
        for j, part in gathered.items():
            _check_part(part, bounds[j + 1] - bounds[j], j)
            opened[bounds[j] : bounds[j + 1]] = part
        return opened.reshape(share.shape)

    def open_all(self, share: np.ndarray) -> np.ndarray:
        """Reveal the secret to every party (see `open`)."""
        opened = self.open(share)
        if opened is None:  # pragma: no cover - every party receives
            raise RuntimeError("open to all parties returned nothing")
        return opened

    def open_many(self, shares: list[np.ndarray]) -> list[np.ndarray]:
        """Open several values to everybody in one round (flattened into one message)."""
        flat = np.concatenate([s.reshape(-1) for s in shares]) if len(shares) > 1 else shares[0]
        opened = self.open_all(flat)
        if len(shares) == 1:
            return [opened]
        out: list[np.ndarray] = []
        start = 0
        for s in shares:
            out.append(opened[start : start + s.size].reshape(s.shape))
            start += s.size
        return out

    # ---- local linear operations ---------------------------------------------------------
    def add(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return self.algebra.add(x, y)

    def sub(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return self.algebra.sub(x, y)

    def neg(self, x: np.ndarray) -> np.ndarray:
        return self.algebra.neg(x)

    def add_public(self, x: np.ndarray, constant: np.ndarray) -> np.ndarray:
        return self.scheme.add_public(x, constant, self.rank)

    def mul_public(self, x: np.ndarray, constant: np.ndarray) -> np.ndarray:
        return self.algebra.mul(x, constant)

    def matmul_public(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Product of a share and a public matrix (either operand may be the public one)."""
        return self.algebra.matmul(x, y)

    # ---- interactive operations ----------------------------------------------------------
    @abstractmethod
    def mul(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Element-wise product of two shared values."""

    @abstractmethod
    def matmul(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Matrix product of two shared matrices."""

    def settles_in_products(self) -> bool:
        """True if `mul_settling` can absorb a pending truncation into a product's round."""
        return False

    def mul_settling(
        self, x: np.ndarray, x_bits: int, y: np.ndarray, y_bits: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """For x awaiting truncation by `x_bits` (> 0) and y by `y_bits` (0 or `x_bits`):
        shares of trunc(x) * trunc(y), trunc(x) and trunc(y), in the rounds of one product
        (only where `settles_in_products`)."""
        raise UnsupportedOperationError(f"protocol {self.name!r} does not fuse truncations")

    def mask_operand(self, x: np.ndarray) -> MaskedOperand:
        """Prepare a shared matrix for several `matmul_masked` products (no rounds). This default
        keeps the share; Beaver protocols take a dealer mask and open x once, at the first
        product."""
        return MaskedOperand(x)

    def matmul_masked(
        self, x: MaskedOperand, y: np.ndarray, transposed: bool = False
    ) -> np.ndarray:
        """x @ y (x^T @ y if `transposed`) for a prepared x and a shared y."""
        left = x.share.T if transposed else x.share
        return self.matmul(np.ascontiguousarray(left), y)

    def settles_in_masked_products(self) -> bool:
        """True if `matmul_masked_settling` can absorb a vector's pending (exact) truncation
        into a masked matrix product's round."""
        return False

    def matmul_masked_settling(
        self, x: MaskedOperand, y: np.ndarray, bits: int, transposed: bool = False
    ) -> tuple[np.ndarray, np.ndarray]:
        """For a vector y awaiting truncation by `bits`: shares of x @ trunc(y) (x^T @ ...)
        and of trunc(y), in the round of the product (only where
        `settles_in_masked_products`)."""
        raise UnsupportedOperationError(f"protocol {self.name!r} does not fuse truncations")

    def less_than_zero(self, x: np.ndarray, wide: bool = False) -> np.ndarray:
        """Shares of the bit [x < 0] (0 or 1, as an integer). `wide`: fewer rounds for more
        dealer bytes, where the protocol has such a variant (a hint; ignored otherwise)."""
        raise UnsupportedOperationError(
            f"protocol {self.name!r} has no comparison yet; use protocol='additive' for "
            "comparisons (or an approximation that needs none)"
        )

    def less_than_zero_times(
        self, x: np.ndarray, y: np.ndarray, wide: bool = False
    ) -> tuple[np.ndarray, np.ndarray]:
        """Shares of b = [x < 0] and of the exact product b * y (y shared, x's shape). This
        default multiplies after the comparison (one more round); protocols may fuse them."""
        bit = self.less_than_zero(x, wide) if wide else self.less_than_zero(x)
        return bit, self.mul(bit, y)

    @classmethod
    def exact_truncation(cls) -> bool:
        """True if `truncate` cannot fail while |x| < 2^(bits - 2) (error at most one unit);
        False if it fails with probability |x| / M (the dealer pair below): `mpc.bounds`."""
        return False

    def truncate(self, x: np.ndarray, bits: int) -> np.ndarray:
        """Probabilistic truncation by `bits` with a dealer pair (r, r >> bits). One round.

        Protocol (Mohassel & Rindal, ABY3, CCS 2018, sect. 5.1; as a field variant in the style
        of Catrina & Saxena, FC 2010): the dealer gives shares of a uniform r and of
        r' = floor(r_s / 2^bits), where r_s is r lifted to a signed integer. The parties open
        c = x - r, lift it to a signed c_s and output r' + floor(c_s / 2^bits).

        Error: if x - r_s does not leave the signed range, the result is floor(x / 2^bits) or
        one less (at most 1 unit in the last place, towards -inf). Failure: x - r_s leaves the
        signed range with probability |x| / M, where M is 2^64 for the ring and p for a field;
        then the result is wrong by about M / 2^bits. For a fixed-point product with
        |x| < 2^ell this is at most 2^(ell-64) (ring) or 2^(ell-61) (field 2^61-1).

        c is opened only to the parties that add public constants (`constant_holders`): for
        additive sharing that is party 0 alone, which saves a third of the traffic and shows c
        to one party instead of all.
        """
        dealer = self._need(Need.TRUNCATION_PAIRS)
        r, r_shifted = dealer.truncation_pair(tuple(x.shape), bits)
        holders = self.scheme.constant_holders()
        c = self.open(self.algebra.sub(x, r), holders if len(holders) < self.n else None)
        if c is None:
            return r_shifted
        signed = self.algebra.to_signed(c)  # c is ours (just reconstructed): shift in place
        c_shifted = self.algebra.from_signed(np.right_shift(signed, bits, out=signed))
        return self.add_public(r_shifted, c_shifted)


def _check_part(part: np.ndarray, size: int, sender: int) -> None:
    if part.shape != (size,) or part.dtype != np.uint64:
        raise IntegrityError(
            f"party {sender} sent a slice of shape {part.shape} and dtype {part.dtype} for an "
            f"opening; expected ({size},) uint64"
        )
