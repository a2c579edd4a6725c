"""Streams of correlated randomness and their seed-compressed generation.

Responsibility: the pure definition of what a dealer hands out (Beaver triples, matrix triples,
truncation pairs, comparison masks, matrix masks and their products), shared by the dealer that
generates it and the party that expands its part.

Seed compression (as in SPDZ's and ABY's dealer optimisations; see Damgård et al., "Practical
covertly secure MPC for dishonest majority", ESORICS 2013): the dealer gives party i a PRG seed
once. For the k-th item of a stream, every party whose rank is below the scheme's seeded prefix
derives its share of each component from its own seed and the tag (stream, k, component); the
dealer, which knows all seeds, computes the shares of the remaining ranks (for additive sharing:
one share of c for one party) and sends only those. Dealer traffic is then one share per triple
for additive sharing.

Kinds: "triple", "matrix" (Beaver triples), "trunc" (truncation pairs), "trunc_exact" (a mask
with its top bit for the ring's exact truncation), "trunc_triple" and
"trunc_triple2" (a truncation pair (r, r') whose r' is also the Beaver mask of a product's left
operand, (r, b, r', c = r' * b), or of both operands, (r, s, r', s', c = r' * s')), "compare"
(bits of a comparison mask, tree masks and their products, daBits; see
`mpc.protocols.comparison`), and
the pair "mask" / "masked_matrix" for a matrix opened once and multiplied many times: a "mask"
item is a random A; each "masked_matrix" item is (B, C = A @ B) (or A^T @ B) for the A of one
mask item, named by its counter (`Stream.parent`). The dealer recomputes that A from the seeds
when it needs it.
Security model: the dealer knows every secret it generates and must be trusted not to reveal
them or reuse items; each (seed, tag) pair is used once because counters only increase.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from mpc.algebra import Algebra
from mpc.bitpack import planes_value, unpack_plane
from mpc.protocols.base import Need, Shape, SharingScheme
from mpc.protocols.comparison import mask_monomials, mask_shapes
from mpc.rng import Prg, Tag

_COMPONENTS: dict[str, tuple[str, ...]] = {
    "triple": ("a", "b", "c"),
    "matrix": ("a", "b", "c"),
    "trunc": ("r", "r_shifted"),
    # the ring's exact truncation (`mpc.protocols.truncation`): r, ceil(r mod 2^63 / 2^bits)
    # and the top bit of r
    "trunc_exact": ("r", "r_low", "r_top"),
    # a product whose left (or both) operands still await truncation: the truncation masks are
    # the Beaver masks of the truncated operands (see `BeaverMultiplication.mul_settling`)
    "trunc_triple": ("r", "b", "r_shifted", "c"),
    "trunc_triple2": ("r", "s", "r_shifted", "s_shifted", "c"),
    "mask": ("a",),
    "masked_matrix": ("b", "c"),
    # XOR-shared (boolean) components first, then the ring components derived from them.
    "compare": ("mask_bits", "and_masks", "dabit_bits", "and_monomials", "mask", "dabit"),
}
_NEED_OF_KIND = {
    "triple": Need.TRIPLES,
    "matrix": Need.MATRIX_TRIPLES,
    "trunc": Need.TRUNCATION_PAIRS,
    "trunc_exact": Need.TRUNCATION_PAIRS,
    "trunc_triple": Need.TRUNCATION_PAIRS,
    "trunc_triple2": Need.TRUNCATION_PAIRS,
    "mask": Need.MATRIX_TRIPLES,
    "masked_matrix": Need.MATRIX_TRIPLES,
    "compare": Need.COMPARISON_MASKS,
}
_DERIVED = {"c", "r_shifted", "s_shifted", "r_low", "r_top", "and_monomials", "mask", "dabit"}
#: Components that are XOR shares of packed bit planes (all others are shares in the algebra).
_XOR = {"mask_bits", "and_masks", "and_monomials", "dabit_bits"}


WireStream = tuple[str, list[list[int]], int, int, int]


@dataclass(frozen=True)
class Stream:
    """One kind of item with fixed shapes: e.g. triples of shape (1000,)."""

    kind: str
    shapes: tuple[Shape, ...]
    bits: int = 0
    #: The run the items belong to: every run starts its counters at 0, so a run that failed
    #: half-way at some parties cannot leave the parties' counters out of step.
    epoch: int = 0
    #: For "masked_matrix": the counter of the "mask" item (same run, shape shapes[0]) whose
    #: matrix A every item multiplies; bits = 1 means A transposed.
    parent: int = -1

    def __post_init__(self) -> None:
        if self.kind not in _COMPONENTS:
            raise ValueError(f"unknown stream kind {self.kind!r}; use one of {sorted(_COMPONENTS)}")
        for name in ("bits", "epoch", "parent"):
            if type(getattr(self, name)) is not int:
                raise ValueError(f"stream {name} must be an int, got {getattr(self, name)!r}")
        if not all(
            isinstance(shape, tuple) and all(type(d) is int and d >= 0 for d in shape)
            for shape in self.shapes
        ):
            raise ValueError(f"stream shapes must be tuples of ints >= 0, got {self.shapes!r}")
        if (self.kind == "masked_matrix") != (self.parent >= 0):
            raise ValueError("a parent mask item is given for, and only for, masked_matrix")
        # Streams key every dealer table on the path of each small operation: hash once.
        key = (self.kind, self.shapes, self.bits, self.epoch, self.parent)
        object.__setattr__(self, "_hash", hash(key))

    def __hash__(self) -> int:
        return self._hash  # type: ignore[attr-defined,no-any-return]

    def __reduce__(self) -> tuple[type[Stream], tuple[str, tuple[Shape, ...], int, int, int]]:
        # Rebuild from the fields: a pickled cached hash would be another process's.
        return (Stream, (self.kind, self.shapes, self.bits, self.epoch, self.parent))

    @property
    def need(self) -> Need:
        return _NEED_OF_KIND[self.kind]

    @property
    def components(self) -> tuple[str, ...]:
        return _COMPONENTS[self.kind]

    def component_shape(self, component: str) -> Shape:
        if self.kind == "matrix":
            shape_c = matmul_shape(self.shapes[0], self.shapes[1])
            return {"a": self.shapes[0], "b": self.shapes[1], "c": shape_c}[component]
        if self.kind == "masked_matrix":
            shape_a = self.shapes[0][::-1] if self.bits else self.shapes[0]
            return {"b": self.shapes[1], "c": matmul_shape(shape_a, self.shapes[1])}[component]
        if self.kind == "compare":
            (count,) = self.shapes[0]
            return mask_shapes(count, self.bits)[component]
        return self.shapes[0]

    def item_elements(self) -> int:
        return sum(int(np.prod(self.component_shape(c), dtype=np.int64)) for c in self.components)

    def tag(self, counter: int, component: str) -> Tag:
        return (self.kind, self.shapes, self.bits, self.epoch, self.parent, counter, component)

    def in_epoch(self, epoch: int) -> Stream:
        return Stream(self.kind, self.shapes, self.bits, epoch, self.parent)

    def mask_stream(self) -> Stream:
        """The "mask" stream whose item `parent` a "masked_matrix" stream multiplies."""
        return Stream("mask", self.shapes[:1], 0, self.epoch)

    def to_wire(self) -> WireStream:
        return (self.kind, [list(s) for s in self.shapes], self.bits, self.epoch, self.parent)

    @staticmethod
    def from_wire(data: WireStream) -> Stream:
        kind, shapes, bits, epoch, parent = data
        return Stream(
            str(kind),
            tuple(tuple(int(d) for d in s) for s in shapes),
            int(bits),
            int(epoch),
            int(parent),
        )


def matmul_shape(shape_x: Shape, shape_y: Shape) -> Shape:
    """The shape of x @ y for 1-D or 2-D operands; ValueError if they do not chain."""
    if len(shape_x) not in (1, 2) or len(shape_y) not in (1, 2):
        raise ValueError(f"matrix products need 1-D or 2-D operands, got {shape_x} @ {shape_y}")
    if shape_x[-1] != shape_y[0]:
        raise ValueError(f"inner dimensions differ: {shape_x} @ {shape_y}")
    return tuple(shape_x[:-1]) + tuple(shape_y[1:])


def exact_truncation_parts(algebra: Algebra, r: np.ndarray, bits: int) -> tuple[np.ndarray, ...]:
    """For the ring's exact truncation: ceil((r mod 2^63) / 2^bits) and r's top bit (0 or 1)."""
    if algebra.modulus != 1 << 64:
        raise ValueError("exact truncation masks need sharing over the ring Z_2^64")
    middle = np.bitwise_and(r, np.uint64((1 << 63) - 1))
    low = np.right_shift(np.add(middle, np.uint64((1 << bits) - 1)), np.uint64(bits))
    return low, np.right_shift(r, np.uint64(63))


def derive_secret(
    algebra: Algebra,
    stream: Stream,
    component: str,
    secrets: dict[str, np.ndarray],
) -> np.ndarray:
    """The value of a derived component: c = a*b, C = A@B, r' = floor(r_s / 2^bits) (and s'),
    c = r' * b or r' * s' for the truncating triples, or for a
    comparison mask the products of the tree masks and the ring values of the mask and daBit
    bits."""
    if stream.kind == "compare":
        if component == "and_monomials":
            return mask_monomials(secrets["and_masks"])
        (count,) = stream.shapes[0]
        if component == "mask":
            return planes_value(secrets["mask_bits"], count)
        if component == "dabit":
            return unpack_plane(secrets["dabit_bits"], count)
    if component == "c" and stream.kind == "triple":
        return algebra.mul(secrets["a"], secrets["b"])
    if component == "c" and stream.kind == "matrix":
        return algebra.matmul(secrets["a"], secrets["b"])
    if component == "c" and stream.kind == "masked_matrix":
        a = secrets["parent_a"]
        return algebra.matmul(a.T if stream.bits else a, secrets["b"])
    if component == "c" and stream.kind == "trunc_triple":
        return algebra.mul(secrets["r_shifted"], secrets["b"])
    if component == "c" and stream.kind == "trunc_triple2":
        return algebra.mul(secrets["r_shifted"], secrets["s_shifted"])
    if component in ("r_shifted", "s_shifted"):
        return algebra.from_signed(algebra.to_signed(secrets[component[0]]) >> stream.bits)
    if component in ("r_low", "r_top"):
        return exact_truncation_parts(algebra, secrets["r"], stream.bits)[component == "r_top"]
    raise ValueError(f"component {component!r} of {stream.kind!r} is not derived")


#: Small items are expanded in blocks of about this many elements (one PRG call per block).
BLOCK_ELEMENTS = 1 << 14


@lru_cache(maxsize=4096)
def _layout(stream: Stream) -> tuple[tuple[tuple[str, Shape, int, int], ...], int]:
    """(component, shape, offset, size) of each component within one item, and the item size."""
    layout = []
    start = 0
    for component in stream.components:
        shape = stream.component_shape(component)
        size = int(np.prod(shape, dtype=np.int64))
        layout.append((component, shape, start, size))
        start += size
    return tuple(layout), start


class SeededExpander:
    """A party's seeded shares, expanded one block of items at a time.

    Item k of a stream lies in block k // B, B = max(1, BLOCK_ELEMENTS // item size). A block is
    one PRG call with tag (stream, block) that draws every component of its B items in order,
    whether or not this party uses them; so the layout does not depend on the rank, and the
    dealer (which expands every party's seed) derives exactly the same shares. One call per
    block instead of one per component keeps PRG set-up (a fresh AES key per tag) off the
    per-operation path of small operations.
    """

    def __init__(self, algebra: Algebra, prg: Prg) -> None:
        self.algebra = algebra
        self.prg = prg
        self._blocks: dict[Stream, tuple[int, np.ndarray]] = {}

    def item(self, stream: Stream, counter: int) -> dict[str, np.ndarray]:
        """This party's seeded share of every component of item `counter` (taken once each)."""
        layout, item_size = _layout(stream)
        per_block = max(1, BLOCK_ELEMENTS // max(1, item_size))
        block, offset = divmod(counter, per_block)
        cached = self._blocks.get(stream)
        if cached is None or cached[0] != block:
            words = self.algebra.random(
                self.prg, (per_block * item_size,), tag=stream.tag(block, "block")
            )
            cached = (block, words)
            self._blocks[stream] = cached
        if offset == per_block - 1:  # last item of the block: do not keep it in memory
            del self._blocks[stream]
        base = offset * item_size
        words = cached[1]
        return {
            component: words[base + start : base + start + size].reshape(shape)
            for component, shape, start, size in layout
        }

    def keep_epoch(self, epoch: int) -> None:
        """Drop partly used blocks of other runs."""
        self._blocks = {s: b for s, b in self._blocks.items() if s.epoch == epoch}


def is_derived(component: str) -> bool:
    return component in _DERIVED


def seeded_prefix(scheme: SharingScheme, component: str) -> int:
    """How many leading ranks draw their share of `component` from their own seed.

    XOR shares of random bits are all seeded (the secret is their XOR); for a derived one the
    last rank gets a correction. Shares in the algebra follow the scheme.
    """
    if component in _XOR:
        return scheme.n - 1 if component in _DERIVED else scheme.n
    return scheme.seeded_prefix(component in _DERIVED)


def _xor_all(words: list[np.ndarray]) -> np.ndarray:
    out = np.array(words[0], dtype=np.uint64, copy=True)
    for w in words[1:]:
        np.bitwise_xor(out, w, out=out)
    return out


def generate_corrections(
    scheme: SharingScheme,
    expanders: list[SeededExpander],
    stream: Stream,
    counter: int,
    masks: dict[tuple[Stream, int], np.ndarray] | None = None,
) -> list[list[np.ndarray]]:
    """Dealer side: for item `counter` of `stream`, the correction shares of every rank.

    Returns one list per rank, with the shares of the components that rank does not derive
    from its own seed, in component order. `masks` caches the matrix A of "mask" items for
    the "masked_matrix" items that multiply it (the caller drops old runs' entries).
    """
    algebra = scheme.algebra
    if stream.kind == "compare" and algebra.modulus != 1 << 64:
        raise ValueError("comparison masks need sharing over the ring Z_2^64")
    out: list[list[np.ndarray]] = [[] for _ in range(scheme.n)]
    secrets: dict[str, np.ndarray] = {}
    if stream.kind == "masked_matrix":  # the parent's A, as every party expands its share
        parent = stream.mask_stream()
        key = (parent, stream.parent)
        a = None if masks is None else masks.get(key)
        if a is None:
            shares_a = [
                expanders[r].item(parent, stream.parent)["a"]
                for r in range(scheme.seeded_prefix(False))
            ]
            a = scheme.complete(shares_a, None)[0]
            if masks is not None:
                masks[key] = a
        secrets["parent_a"] = a
    prefixes = {c: seeded_prefix(scheme, c) for c in stream.components}
    items = [expanders[r].item(stream, counter) for r in range(max(prefixes.values()))]
    for component in stream.components:
        derived = is_derived(component)
        prefix = prefixes[component]
        seeded = [items[r][component] for r in range(prefix)]
        given = derive_secret(algebra, stream, component, secrets) if derived else None
        if component in _XOR:
            combined = _xor_all(seeded)
            secret = combined if given is None else given
            rest = [] if given is None else [np.bitwise_xor(given, combined)]
        else:
            secret, rest = scheme.complete(seeded, given)
        secrets[component] = secret
        for offset, share in enumerate(rest):
            out[prefix + offset].append(share)
    return out
