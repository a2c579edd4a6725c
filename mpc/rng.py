"""Cryptographic pseudo-random generation for the mpc package.

Responsibility
--------------
Expand a short secret seed into deterministic, domain-separated streams of
uniform bytes, ring elements (uint64), bounded integers and field elements.
Every party that holds the same seed and asks for the same *tag* obtains
exactly the same output, which is what correlated-randomness tricks (PRSS,
seed-compressed shares, dealer seeds) rely on.

Construction
------------
``subkey(tag) = BLAKE2b(encode_tag(tag), key=seed, digest_size=16, person=b"mpc.rng")``
and the stream for ``tag`` is ``AES-128-CTR(subkey(tag), nonce=0)`` applied to
zero bytes.  ``derive(tag)`` returns a child ``Prg`` whose seed is the same
BLAKE2b derivation under ``person=b"mpc.rng.derive"`` (a separate domain, so a
key is never used both as an AES key and as a BLAKE2b key).

Security model
--------------
* The seed is the only secret.  It must come from :func:`new_seed` (or another
  CSPRNG) and must never be revealed to a party that is not supposed to
  predict the streams.  Anyone who knows the seed can recompute every stream.
* Assuming keyed BLAKE2b is a PRF and AES is a PRP, streams for distinct tags
  are computationally independent and indistinguishable from uniform
  (for the usual 2^64-block bound per subkey, far beyond any use here).
* Reusing a (seed, tag) pair *reuses the stream*: that is the point of
  determinism, but two logically different uses must use different tags.
  ``tag=None`` draws a fresh auto tag ``("auto", k)`` from a per-instance
  counter, so it is only deterministic across parties if they make the same
  sequence of auto-tagged calls; tags of the form ``("auto", k)`` are reserved
  for this counter and should not be passed explicitly.
* Outputs are exactly uniform on the stated ranges (field sampling uses
  rejection sampling, never modular reduction of a wider draw).
* Neither Python's nor NumPy's random generators are used anywhere; they are not CSPRNGs.
* Nothing here is constant-time with respect to the *values* produced (numpy
  is not), which is fine for the semi-honest, non-side-channel model of mpc.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import secrets
import sys
from typing import TypeAlias

import numpy as np
import numpy.typing as npt
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

__all__ = [
    "SEED_BYTES",
    "Prg",
    "Shape",
    "Tag",
    "encode_tag",
    "new_seed",
]

SEED_BYTES = 16
"""Length in bytes of seeds produced by :func:`new_seed` (128-bit security)."""

Tag: TypeAlias = "str | int | bytes | tuple[Tag, ...]"
"""A stream label: str, int, bytes or (nested) tuples of those."""

Shape: TypeAlias = "int | tuple[int, ...]"

_PERSON = b"mpc.rng"
_PERSON_DERIVE = b"mpc.rng.derive"
_SUBKEY_BYTES = 16
_NONCE = bytes(16)
_ZERO_CHUNK = 1 << 20  # encrypt at most 1 MiB of zeros per update() call
_U64_LE = np.dtype("<u8")


def new_seed() -> bytes:
    """Return a fresh uniformly random seed of :data:`SEED_BYTES` bytes."""
    return secrets.token_bytes(SEED_BYTES)


def _encode_into(tag: object, out: list[bytes]) -> None:
    # Type byte + 8-byte big-endian length + payload.  Tuples carry their
    # element count and each element is itself self-delimiting, so the whole
    # encoding is prefix-free and injective.
    if isinstance(tag, bool):
        raise TypeError("bool is not a valid tag component (use int 0/1 explicitly)")
    if isinstance(tag, str):
        data = tag.encode("utf-8")
        out.append(b"s" + len(data).to_bytes(8, "big") + data)
    elif isinstance(tag, (bytes, bytearray, memoryview)):
        data = bytes(tag)
        out.append(b"b" + len(data).to_bytes(8, "big") + data)
    elif isinstance(tag, (int, np.integer)):
        value = int(tag)
        data = value.to_bytes((value.bit_length() + 8) // 8, "big", signed=True)
        out.append(b"i" + len(data).to_bytes(8, "big") + data)
    elif isinstance(tag, tuple):
        out.append(b"t" + len(tag).to_bytes(8, "big"))
        for item in tag:
            _encode_into(item, out)
    else:
        raise TypeError(
            f"tag components must be str, int, bytes or tuples of those, got {type(tag).__name__}"
        )


def encode_tag(tag: Tag) -> bytes:
    """Canonical injective byte encoding of a tag.

    Distinct tags (as values of distinct types, e.g. ``1`` vs ``"1"`` vs
    ``b"1"`` vs ``(1,)``) always encode differently.  ``numpy`` integers
    encode like the equal Python int.  Raises ``TypeError`` for anything else
    (including ``bool`` and ``float``).
    """
    parts: list[bytes] = []
    _encode_into(tag, parts)
    return b"".join(parts)


def _shape_tuple(shape: Shape) -> tuple[int, ...]:
    if isinstance(shape, (int, np.integer)) and not isinstance(shape, bool):
        dims: tuple[int, ...] = (int(shape),)
    elif isinstance(shape, tuple):
        dims = tuple(int(d) for d in shape)
        if any(isinstance(d, bool) or not isinstance(d, (int, np.integer)) for d in shape):
            raise TypeError(f"shape entries must be ints, got {shape!r}")
    else:
        raise TypeError(f"shape must be an int or a tuple of ints, got {shape!r}")
    if any(d < 0 for d in dims):
        raise ValueError(f"negative dimensions are not allowed, got shape {dims}")
    return dims


class Prg:
    """Deterministic, domain-separated cryptographic PRG keyed by a seed.

    ``Prg(seed)`` with a 16- or 32-byte seed.  Same (seed, tag) -> same output
    on every machine.  Instances are cheap; the auto-tag counter is the only
    mutable state.  The seed is never shown in ``repr``.
    """

    __slots__ = ("_auto", "_seed")

    def __init__(self, seed: bytes) -> None:
        if not isinstance(seed, (bytes, bytearray)):
            raise TypeError(f"seed must be bytes, got {type(seed).__name__}")
        if len(seed) not in (16, 32):
            raise ValueError(
                f"seed must be 16 or 32 bytes long (use mpc.rng.new_seed()), got {len(seed)} bytes"
            )
        self._seed = bytes(seed)
        self._auto = itertools.count()

    def __repr__(self) -> str:
        return "Prg(<secret seed>)"

    # -- internals -----------------------------------------------------------

    def _resolve(self, tag: Tag | None) -> Tag:
        if tag is None:
            return ("auto", next(self._auto))
        return tag

    def _subkey(self, tag: Tag, person: bytes = _PERSON) -> bytes:
        return hashlib.blake2b(
            encode_tag(tag), key=self._seed, digest_size=_SUBKEY_BYTES, person=person
        ).digest()

    def _stream(self, tag: Tag, n: int, block: int = 0) -> npt.NDArray[np.uint8]:
        """Return ``n`` bytes of the stream for a resolved tag, from AES block ``block`` on
        (byte ``16 * block``): CTR mode's counter starts at ``block`` instead of 0.

        The result buffer has ``block_size - 1`` spare bytes at the end (as
        ``update_into`` requires); callers must only look at ``[:n]``. It is allocated
        uninitialised (every byte of ``[:n]`` is then written): zero-filling first would
        cost a pass over the memory.
        """
        nonce = block.to_bytes(16, "big") if block else _NONCE
        enc = Cipher(algorithms.AES(self._subkey(tag)), modes.CTR(nonce)).encryptor()
        buf = np.empty(n + 15, dtype=np.uint8)
        view = buf.data
        zeros = memoryview(bytes(min(n, _ZERO_CHUNK)))
        pos = 0
        while pos < n:
            step = min(_ZERO_CHUNK, n - pos)
            written = enc.update_into(zeros[:step], view[pos:])
            if written != step:  # pragma: no cover - CTR is a stream mode
                raise RuntimeError("AES-CTR returned a short block")
            pos += step
        return buf

    def _words(self, tag: Tag, count: int, start: int = 0) -> npt.NDArray[np.uint64]:
        # word `start` lies in AES block start // 2, at byte 8 * (start % 2) of it
        skip = start % 2
        buf = self._stream(tag, 8 * (count + skip), start // 2)
        words = np.frombuffer(buf, dtype=_U64_LE, count=count, offset=8 * skip)
        if sys.byteorder != "little":  # pragma: no cover - big-endian hosts only
            return words.astype(np.uint64)
        return words.view(np.uint64)

    # -- public API ------------------------------------------------------------

    def bytes(self, n: int, tag: Tag | None = None) -> bytes:
        """``n`` pseudo-random bytes from the stream named ``tag``."""
        if n < 0:
            raise ValueError(f"n must be non-negative, got {n}")
        return self._stream(self._resolve(tag), n)[:n].tobytes()

    def ring(self, shape: Shape, tag: Tag | None = None) -> npt.NDArray[np.uint64]:
        """Uniform uint64 array (elements of Z_2^64), C-contiguous and writeable."""
        dims = _shape_tuple(shape)
        count = math.prod(dims)
        return self._words(self._resolve(tag), count).reshape(dims)

    def ring_at(self, tag: Tag, start: int, count: int) -> npt.NDArray[np.uint64]:
        """Words ``start`` to ``start + count - 1`` of the stream `ring` draws for ``tag``:
        equal to ``ring((start + count,), tag)[start:]``, computed without the words before
        ``start`` (AES-CTR's counter starts at their block). Writeable, 1-D."""
        if start < 0 or count < 0:
            raise ValueError(f"start and count must be non-negative, got {start} and {count}")
        return self._words(tag, count, start)

    def below_bits(self, shape: Shape, bits: int, tag: Tag | None = None) -> npt.NDArray[np.uint64]:
        """Uniform uint64 array with values in ``[0, 2**bits)``, ``0 <= bits <= 64``."""
        if not 0 <= bits <= 64:
            raise ValueError(f"bits must be in [0, 64], got {bits}")
        out = self.ring(shape, tag)
        if bits < 64:
            np.bitwise_and(out, np.uint64((1 << bits) - 1), out=out)
        return out

    def field(self, shape: Shape, modulus: int, tag: Tag | None = None) -> npt.NDArray[np.uint64]:
        """Exactly uniform uint64 array with values in ``[0, modulus)``.

        ``1 <= modulus <= 2**64``.  Rejection sampling: 64-bit words are masked
        to ``(modulus - 1).bit_length()`` bits and values ``>= modulus`` are
        redrawn, position by position in index order, from the sub-streams
        ``(tag, "retry", 1)``, ``(tag, "retry", 2)``, ... until none remain.
        Each retry round rejects at most half of what is left, so the
        expected number of rounds is tiny.
        """
        if not 1 <= modulus <= 1 << 64:
            raise ValueError(f"modulus must be in [1, 2**64], got {modulus}")
        base = self._resolve(tag)
        out = self.ring(shape, base)
        bits = (modulus - 1).bit_length()
        if bits < 64:
            np.bitwise_and(out, np.uint64((1 << bits) - 1), out=out)
        if modulus == 1 << bits:
            return out  # power of two: masking alone is exact
        flat = out.reshape(-1)  # view: out is C-contiguous
        bound = np.uint64(modulus)
        mask = np.uint64((1 << bits) - 1)
        bad = np.flatnonzero(flat >= bound)
        round_no = 0
        while bad.size:
            round_no += 1
            fresh = self._words((base, "retry", round_no), int(bad.size))
            np.bitwise_and(fresh, mask, out=fresh)
            flat[bad] = fresh
            bad = bad[fresh >= bound]
        return out

    def derive(self, tag: Tag) -> Prg:
        """Child PRG for ``tag``, computationally independent of the parent's streams.

        The child seed is the tag's subkey computed under a separate BLAKE2b
        personalisation (``b"mpc.rng.derive"``), so it never coincides with the
        AES key of the parent's stream for the same tag: ``derive(t)`` and
        ``bytes(n, t)`` can both be used safely.
        """
        return Prg(self._subkey(tag, _PERSON_DERIVE))
