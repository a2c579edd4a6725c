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
mask item, named by its counter (`Stream.parent`); each "masked_trunc" item multiplies the
same A with a vector that awaits its exact truncation (a truncation mask r, its parts, and
A * r_top and A @ r_low). The dealer recomputes that A from the seeds when it needs it.
Security model: the dealer knows every secret it generates and must be trusted not to reveal
them or reuse items; each (seed, tag) pair is used once because counters only increase.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import numpy as np

from mpc.algebra import Algebra
from mpc.bitpack import planes_value, unpack_plane
from mpc.protocols.base import Need, Shape, SharingScheme
from mpc.protocols.comparison import TREES, mask_monomials, mask_shapes
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
    # a masked matrix's product with a vector that awaits its exact truncation (the masked
    # matmul of `BeaverMultiplication.matmul_masked_settling`): the truncation mask r, its
    # parts, m = A' * r_top (each column j of the oriented A times r_top[j]) and A' @ r_low
    "masked_trunc": ("r", "r_low", "r_top", "m", "a_low"),
    # XOR-shared (boolean) components first, then the ring components derived from them.
    "compare": ("mask_bits", "and_masks", "dabit_bits", "and_monomials", "mask", "dabit"),
    # the same for the comparison's two-level tree (`mpc.protocols.comparison.WIDE_TREE`)
    "compare_wide": ("mask_bits", "and_masks", "dabit_bits", "and_monomials", "mask", "dabit"),
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
    "masked_trunc": Need.MATRIX_TRIPLES,
    "compare": Need.COMPARISON_MASKS,
    "compare_wide": Need.COMPARISON_MASKS,
}
_DERIVED = {
    "c", "r_shifted", "s_shifted", "r_low", "r_top", "m", "a_low", "and_monomials", "mask", "dabit"
}
#: Kinds whose items multiply the matrix A of a "mask" item (`Stream.parent`).
_MASKED = frozenset({"masked_matrix", "masked_trunc"})
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
        if (self.kind in _MASKED) != (self.parent >= 0):
            raise ValueError("a parent mask item is given for, and only for, masked products")
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
        if self.kind == "masked_trunc":
            shape_a = self.shapes[0][::-1] if self.transposed else self.shapes[0]
            if component == "m":
                return shape_a
            if component == "a_low":
                return matmul_shape(shape_a, self.shapes[1])
            return self.shapes[1]
        if self.kind in TREES:
            (count,) = self.shapes[0]
            return mask_shapes(count, self.bits, TREES[self.kind])[component]
        return self.shapes[0]

    @property
    def transposed(self) -> bool:
        """For masked products: whether they multiply A^T (bit 0 of `bits`)."""
        return bool(self.bits & 1)

    @property
    def truncation_bits(self) -> int:
        """For "masked_trunc": the bits the vector operand is truncated by (`bits` >> 1)."""
        return self.bits >> 1

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
    low = np.asarray(np.bitwise_and(r, np.uint64((1 << 63) - 1)))  # 0-d stays an array
    np.add(low, np.uint64((1 << bits) - 1), out=low)
    np.right_shift(low, np.uint64(bits), out=low)
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
    if stream.kind in TREES:
        if component == "and_monomials":
            return mask_monomials(secrets["and_masks"], TREES[stream.kind])
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
    if stream.kind == "masked_trunc":
        oriented = secrets["parent_a"].T if stream.transposed else secrets["parent_a"]
        if component in ("r_low", "r_top"):
            parts = exact_truncation_parts(algebra, secrets["r"], stream.truncation_bits)
            return parts[component == "r_top"]
        if component == "m":
            return algebra.mul(oriented, secrets["r_top"][None, :])
        if component == "a_low":
            return algebra.matmul(oriented, secrets["r_low"])
    if component == "c" and stream.kind == "trunc_triple":
        return algebra.mul(secrets["r_shifted"], secrets["b"])
    if component == "c" and stream.kind == "trunc_triple2":
        return algebra.mul(secrets["r_shifted"], secrets["s_shifted"])
    if component in ("r_shifted", "s_shifted"):
        return algebra.from_signed(algebra.to_signed(secrets[component[0]]) >> stream.bits)
    if component == "r_top":  # as exact_truncation_parts, without computing r_low again
        top: np.ndarray = np.right_shift(secrets["r"], np.uint64(63))
        return top
    if component == "r_low":
        return exact_truncation_parts(algebra, secrets["r"], stream.bits)[0]
    raise ValueError(f"component {component!r} of {stream.kind!r} is not derived")


#: Small items are expanded in blocks of about this many elements (one PRG call per block).
BLOCK_ELEMENTS = 1 << 14


Layout = tuple[tuple[tuple[str, Shape, int, int], ...], int]


def _layout(stream: Stream) -> Layout:
    """(component, shape, offset, size) of each component within one item, and the item size.

    Kept on the Stream object, which goes with its run: a cache keyed by streams gained an
    entry per run (each run's streams carry its epoch), about 1 KiB a run in every party and
    the dealer until it held 4096 (benchmarks/soak.py).
    """
    cached: Layout | None = stream.__dict__.get("_layout")
    if cached is not None:
        return cached
    layout = []
    start = 0
    for component in stream.components:
        shape = stream.component_shape(component)
        size = int(np.prod(shape, dtype=np.int64))
        layout.append((component, shape, start, size))
        start += size
    cached = (tuple(layout), start)
    object.__setattr__(stream, "_layout", cached)
    return cached


class SeededExpander:
    """A party's seeded shares, expanded one block of items at a time.

    Item k of a stream lies in block k // B, B = max(1, BLOCK_ELEMENTS // item size). A block is
    one PRG call with tag (stream, block) that draws every component of its B items in order,
    whether or not this party uses them; so the layout does not depend on the rank, and the
    dealer (which expands every party's seed) derives exactly the same shares. One call per
    block instead of one per component keeps PRG set-up (a fresh AES key per tag) off the
    per-operation path of small operations. An item that is a block of its own (over the ring)
    is drawn one component at a time, when first used (`LazyItem`): the same words, but a
    party or the dealer expands only the components it uses.
    """

    def __init__(self, algebra: Algebra, prg: Prg) -> None:
        self.algebra = algebra
        self.prg = prg
        self._blocks: dict[Stream, tuple[int, np.ndarray]] = {}
        self._lazy = algebra.modulus == 1 << 64  # ring words can be drawn from any offset

    def item(self, stream: Stream, counter: int) -> Mapping[str, np.ndarray]:
        """This party's seeded share of every component of item `counter` (taken once each)."""
        layout, item_size = _layout(stream)
        per_block = max(1, BLOCK_ELEMENTS // max(1, item_size))
        if per_block == 1 and self._lazy:
            return LazyItem(self.prg, stream.tag(counter, "block"), layout)
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

    def block(self, stream: Stream, block: int) -> np.ndarray:
        """The words of PRG block `block` of `stream`: (items per block, item size), each row
        one item's components in order (for `generate_batch`; kept as `item` keeps it)."""
        _, item_size = _layout(stream)
        per_block = _items_per_block(stream)
        cached = self._blocks.get(stream)
        if cached is None or cached[0] != block:
            words = self.algebra.random(
                self.prg, (per_block * item_size,), tag=stream.tag(block, "block")
            )
            cached = (block, words)
            self._blocks[stream] = cached
        return cached[1].reshape(per_block, item_size)

    def keep_epoch(self, epoch: int) -> None:
        """Drop partly used blocks of other runs."""
        self._blocks = {s: b for s, b in self._blocks.items() if s.epoch == epoch}


class LazyItem(Mapping[str, np.ndarray]):
    """The seeded shares of one item that is a PRG block of its own, each component drawn when
    first asked for (`Prg.ring_at`: the words the whole block's draw has at its offset), so
    that the ones a party or the dealer does not use are never expanded (ring only)."""

    __slots__ = ("_drawn", "_layout", "_prg", "_tag")

    def __init__(self, prg: Prg, tag: Tag, layout: tuple[tuple[str, Shape, int, int], ...]) -> None:
        self._prg = prg
        self._tag = tag
        self._layout = layout
        self._drawn: dict[str, np.ndarray] = {}

    def __getitem__(self, component: str) -> np.ndarray:
        drawn = self._drawn.get(component)
        if drawn is None:
            for name, shape, start, size in self._layout:
                if name == component:
                    drawn = self._prg.ring_at(self._tag, start, size).reshape(shape)
                    self._drawn[component] = drawn
                    return drawn
            raise KeyError(component)
        return drawn

    def __iter__(self) -> Iterator[str]:
        return (component for component, _, _, _ in self._layout)

    def __len__(self) -> int:
        return len(self._layout)


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
    if stream.kind in TREES and algebra.modulus != 1 << 64:
        raise ValueError("comparison masks need sharing over the ring Z_2^64")
    out: list[list[np.ndarray]] = [[] for _ in range(scheme.n)]
    secrets: dict[str, np.ndarray] = {}
    if stream.kind in _MASKED:  # the parent's A, as every party expands its share
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
    _complete_items(scheme, stream, items, secrets, out)
    return out


def _complete_items(
    scheme: SharingScheme,
    stream: Stream,
    items: list[Mapping[str, np.ndarray]],
    secrets: dict[str, np.ndarray],
    out: list[list[np.ndarray]],
) -> None:
    """From the seeded shares of ranks 0, 1, ... (`items`), each component's secret (into
    `secrets`) and the correction shares of the other ranks (appended to `out`, by rank)."""
    prefixes = {c: seeded_prefix(scheme, c) for c in stream.components}
    for component in stream.components:
        derived = is_derived(component)
        prefix = prefixes[component]
        seeded = [items[r][component] for r in range(prefix)]
        given = derive_secret(scheme.algebra, stream, component, secrets) if derived else None
        if component in _XOR:
            combined = _xor_all(seeded)
            secret = combined if given is None else given
            rest = [] if given is None else [np.bitwise_xor(given, combined)]
        else:
            secret, rest = scheme.complete(seeded, given)
        secrets[component] = secret
        for offset, share in enumerate(rest):
            out[prefix + offset].append(share)


#: Kinds whose derived components are element-wise functions of the others (no matrices, no
#: bit planes): their small items can be generated many at once (`generate_batch`).
_ELEMENTWISE = frozenset({"triple", "trunc", "trunc_exact", "trunc_triple", "trunc_triple2"})


def batches_items(stream: Stream) -> bool:
    """Whether `generate_batch` applies: element-wise items several to a PRG block."""
    return stream.kind in _ELEMENTWISE and _items_per_block(stream) > 1


def _items_per_block(stream: Stream) -> int:
    return max(1, BLOCK_ELEMENTS // max(1, _layout(stream)[1]))


def generate_batch(
    scheme: SharingScheme,
    expanders: list[SeededExpander],
    stream: Stream,
    start: int,
    count: int,
) -> list[list[list[np.ndarray]]]:
    """Dealer side: `generate_corrections` for items start..start+count-1 of a stream that
    `batches_items`, computed a PRG block at a time with one numpy operation per component
    for all the block's items (a dealer generating item by item spent about 50 us of Python
    on each small item). Returns, per item, the correction shares of every rank."""
    per_block = _items_per_block(stream)
    layout, _ = _layout(stream)
    prefix = max(seeded_prefix(scheme, c) for c in stream.components)
    out: list[list[list[np.ndarray]]] = []
    counter = start
    while counter < start + count:
        block, first = divmod(counter, per_block)
        last = min(per_block, first + start + count - counter)
        items: list[Mapping[str, np.ndarray]] = []
        for rank in range(prefix):
            words = expanders[rank].block(stream, block)[first:last]
            items.append(
                {
                    name: words[:, begin : begin + size].reshape((last - first, *shape))
                    for name, shape, begin, size in layout
                }
            )
        by_rank: list[list[np.ndarray]] = [[] for _ in range(scheme.n)]
        _complete_items(scheme, stream, items, {}, by_rank)
        for k in range(last - first):
            out.append([[share[k, ...] for share in shares] for shares in by_rank])
        counter += last - first
    return out
