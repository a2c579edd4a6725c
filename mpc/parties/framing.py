"""Wire framing of the TCP transport: how one message becomes bytes and back.

Responsibility: build the buffers of a frame (without copying the array) and parse a received
header plus payload back into a numpy array, rejecting anything malformed.

A plaintext frame is::

    4-byte big-endian header length | msgpack header | raw C-order array bytes

The header is a msgpack map with short keys: ``k`` kind ("data", "abort" or "bye"), ``t`` tag
(list of ints), ``d`` dtype string, ``s`` shape (list of ints), ``n`` payload length in bytes and,
for "abort", ``r`` the reason. The encrypted transport (`mpc.parties.tcp`) encrypts the header and
the payload as separate AEAD records but uses the same header encoding.

Security model: every field of a header that comes from a peer is untrusted. Headers are decoded
with msgpack only (never pickle), the dtype must be on a small allow-list of fixed-size numeric
types, shape entries must be non-negative ints, the payload length must equal
prod(shape) * itemsize, and headers (64 KiB) and payloads (1 GiB) have size limits, so a peer
cannot make this party allocate unbounded memory or build an object array. Every violation raises
`IntegrityError`. Framing itself gives no confidentiality or integrity; that is the job of the
record layer in `mpc.parties.tcp`.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from typing import Any, Final

import msgpack
import numpy as np

from mpc.errors import ConfigurationError, IntegrityError
from mpc.parties.mailbox import Tag

#: Largest accepted header (msgpack bytes).
MAX_HEADER_BYTES: Final = 64 * 1024
#: Largest accepted payload of one message.
MAX_PAYLOAD_BYTES: Final = 1 << 30
#: Most entries of a tag and most dimensions of an array.
MAX_TAG_LEN: Final = 64
MAX_NDIM: Final = 32
#: Longest abort reason that is put on the wire (longer ones are truncated).
MAX_REASON_CHARS: Final = 2000

LENGTH_PREFIX_BYTES: Final = 4

KIND_DATA: Final = "data"
KIND_ABORT: Final = "abort"
KIND_BYE: Final = "bye"
_KINDS: Final = frozenset({KIND_DATA, KIND_ABORT, KIND_BYE})

#: Dtypes allowed on the wire, as little-endian numpy dtype strings.
ALLOWED_DTYPES: Final = frozenset(
    {"<u8", "<i8", "<f8", "|b1", "|u1", "<u4", "<i4", "<f4", "<u2", "<i2", "|i1"}
)
_DTYPES: Final = {s: np.dtype(s) for s in ALLOWED_DTYPES}

Buffer = bytes | bytearray | memoryview


@dataclass(frozen=True)
class Header:
    """A validated frame header."""

    kind: str
    tag: Tag = ()
    dtype: str = ""
    shape: tuple[int, ...] = ()
    nbytes: int = 0
    reason: str = ""


def length_prefix(n: int) -> bytes:
    """The 4-byte big-endian length prefix of `n` bytes."""
    return n.to_bytes(LENGTH_PREFIX_BYTES, "big")


def parse_length(prefix: Buffer, limit: int) -> int:
    """Decode a 4-byte length prefix and check `0 < length <= limit`."""
    n = int.from_bytes(prefix, "big")
    if n <= 0 or n > limit:
        raise IntegrityError(f"frame length {n} outside the accepted range 1..{limit}")
    return n


def wire_array(array: np.ndarray) -> np.ndarray:
    """`array` as a C-contiguous little-endian array with an allowed dtype (copies only if needed).

    Raises ConfigurationError for dtypes that cannot be sent (object, string, complex, ...).
    """
    dtype = array.dtype
    if dtype.byteorder == ">":
        dtype = dtype.newbyteorder("<")
    if dtype.str not in ALLOWED_DTYPES:
        raise ConfigurationError(
            f"cannot send an array of dtype {array.dtype}; the TCP transport sends only "
            f"{sorted(ALLOWED_DTYPES)}"
        )
    if dtype != array.dtype:
        array = array.astype(dtype)
    if not array.flags.c_contiguous:
        array = np.array(array, order="C")
    if array.nbytes > MAX_PAYLOAD_BYTES:
        raise ConfigurationError(
            f"cannot send an array of {array.nbytes} bytes; the limit per message is "
            f"{MAX_PAYLOAD_BYTES} bytes (split it)"
        )
    return array


def byte_view(array: np.ndarray) -> memoryview:
    """A flat unsigned-byte memoryview of a C-contiguous array (no copy; works for 0-d)."""
    return array.reshape(-1).view(np.uint8).data


def _check_tag(tag: Any) -> tuple[int, ...]:
    if not isinstance(tag, tuple | list) or len(tag) > MAX_TAG_LEN:
        raise ConfigurationError(
            f"a tag must be a tuple of at most {MAX_TAG_LEN} ints, got {tag!r}"
        )
    for x in tag:
        if type(x) is not int and not isinstance(x, np.integer):
            raise ConfigurationError(f"a tag must be a tuple of ints, got {tag!r}")
    return tuple(int(x) for x in tag)


def _pack(obj: dict[str, Any]) -> bytes:
    try:
        data: bytes = msgpack.packb(obj, use_bin_type=True)
    except (OverflowError, TypeError, ValueError) as e:
        raise ConfigurationError(f"cannot encode frame header: {e}") from e
    if len(data) > MAX_HEADER_BYTES:
        raise ConfigurationError(f"frame header of {len(data)} bytes exceeds {MAX_HEADER_BYTES}")
    return data


def encode_data(tag: Tag, array: np.ndarray) -> tuple[bytes, memoryview]:
    """Header bytes and payload view of a data message (the payload is not copied).

    The returned view aliases `array` (or a contiguous little-endian copy of it if needed).
    """
    tag_ints = _check_tag(tag)
    wire = wire_array(array)
    header = _pack(
        {
            "k": KIND_DATA,
            "t": list(tag_ints),
            "d": wire.dtype.str,
            "s": [int(x) for x in wire.shape],
            "n": int(wire.nbytes),
        }
    )
    return header, byte_view(wire)


def encode_abort(reason: str) -> bytes:
    """Header of an abort message (it has no payload)."""
    return _pack({"k": KIND_ABORT, "r": str(reason)[:MAX_REASON_CHARS]})


def encode_bye() -> bytes:
    """Header of the goodbye message sent by a clean close (it has no payload)."""
    return _pack({"k": KIND_BYE})


def frame_buffers(header: bytes, payload: Buffer = b"") -> list[Buffer]:
    """The buffers of a plaintext frame, for one `socket.sendmsg` (no concatenation)."""
    bufs: list[Buffer] = [length_prefix(len(header)), header]
    if len(payload):
        bufs.append(payload)
    return bufs


def _int(value: Any, what: str) -> int:
    if type(value) is not int:
        raise IntegrityError(f"frame header field {what} is not an int: {type(value).__name__}")
    return value


def parse_header(data: Buffer) -> Header:
    """Decode and validate a header received from a peer; IntegrityError if anything is off."""
    if len(data) > MAX_HEADER_BYTES:
        raise IntegrityError(f"frame header of {len(data)} bytes exceeds {MAX_HEADER_BYTES}")
    try:
        obj = msgpack.unpackb(
            data,
            raw=False,
            strict_map_key=True,
        )
    except Exception as e:  # msgpack raises many types for malformed input
        raise IntegrityError(f"undecodable frame header ({type(e).__name__})") from None
    if not isinstance(obj, dict):
        raise IntegrityError("frame header is not a map")
    kind = obj.get("k")
    if kind not in _KINDS:
        raise IntegrityError(f"unknown frame kind {kind!r}")
    if kind == KIND_BYE:
        if set(obj) != {"k"}:
            raise IntegrityError("unexpected fields in bye header")
        return Header(kind=KIND_BYE)
    if kind == KIND_ABORT:
        reason = obj.get("r")
        if set(obj) != {"k", "r"} or not isinstance(reason, str):
            raise IntegrityError("malformed abort header")
        return Header(kind=KIND_ABORT, reason=reason[:MAX_REASON_CHARS])
    if set(obj) != {"k", "t", "d", "s", "n"}:
        raise IntegrityError(f"data header has fields {sorted(obj)}, expected k, t, d, s, n")
    tag, dtype, shape, nbytes = obj["t"], obj["d"], obj["s"], obj["n"]
    if not isinstance(tag, list) or len(tag) > MAX_TAG_LEN:
        raise IntegrityError("frame tag is not a list of at most 64 ints")
    tag_t = tuple(_int(x, "tag") for x in tag)
    if not isinstance(dtype, str) or dtype not in ALLOWED_DTYPES:
        raise IntegrityError(f"dtype {dtype!r} is not on the allow-list {sorted(ALLOWED_DTYPES)}")
    if not isinstance(shape, list) or len(shape) > MAX_NDIM:
        raise IntegrityError(f"frame shape is not a list of at most {MAX_NDIM} ints")
    shape_t = tuple(_int(x, "shape") for x in shape)
    if any(x < 0 for x in shape_t):
        raise IntegrityError(f"frame shape {shape_t} has a negative entry")
    nbytes = _int(nbytes, "payload length")
    expected = math.prod(shape_t) * _DTYPES[dtype].itemsize
    if nbytes != expected:
        raise IntegrityError(
            f"payload length {nbytes} does not match shape {shape_t} of dtype {dtype} "
            f"({expected} bytes)"
        )
    if nbytes > MAX_PAYLOAD_BYTES:
        raise IntegrityError(f"payload of {nbytes} bytes exceeds the limit {MAX_PAYLOAD_BYTES}")
    return Header(kind=KIND_DATA, tag=tag_t, dtype=dtype, shape=shape_t, nbytes=nbytes)


def allocate(header: Header) -> np.ndarray:
    """An uninitialised array to receive the payload of a validated data header into."""
    dtype = _DTYPES[header.dtype]
    if sys.byteorder != "little" and dtype.byteorder == "<":  # pragma: no cover - big-endian hosts
        dtype = dtype.newbyteorder("<")
    return np.empty(header.shape, dtype=dtype)


def check_values(array: np.ndarray) -> np.ndarray:
    """Reject payload bytes that are not valid values of the dtype (only bool has invalid ones)."""
    if array.dtype == np.bool_ and array.size:
        raw = array.reshape(-1).view(np.uint8)
        if bool((raw > 1).any()):
            raise IntegrityError("bool payload contains bytes other than 0 and 1")
    return array


def decode_array(header: Header, payload: Buffer) -> np.ndarray:
    """Build the array of a validated data header from its payload bytes (copies them)."""
    if header.kind != KIND_DATA:
        raise IntegrityError(f"frame of kind {header.kind!r} carries no array")
    size = memoryview(payload).nbytes
    if size != header.nbytes:
        raise IntegrityError(f"payload has {size} bytes, header says {header.nbytes}")
    array = allocate(header)
    if header.nbytes:
        byte_view(array)[:] = payload
    return check_values(array)
