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

import threading
from typing import Any, Final, NamedTuple

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

#: Dtypes allowed on the wire, as little-endian numpy dtype strings.
ALLOWED_DTYPES: Final = frozenset(
    {"<u8", "<i8", "<f8", "|b1", "|u1", "<u4", "<i4", "<f4", "<u2", "<i2", "|i1"}
)
_DTYPES: Final = {s: np.dtype(s) for s in ALLOWED_DTYPES}
_ITEMSIZE: Final = {s: d.itemsize for s, d in _DTYPES.items()}
_local = threading.local()  # one msgpack Packer per thread (a Packer is not thread-safe)

Buffer = bytes | bytearray | memoryview


class Header(NamedTuple):
    """A validated frame header."""

    kind: str
    tag: Tag = ()
    dtype: str = ""
    shape: tuple[int, ...] = ()
    nbytes: int = 0
    reason: str = ""
    run: int | None = None


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


def _check_tag(tag: Any) -> list[int]:
    if type(tag) is tuple and len(tag) <= MAX_TAG_LEN:
        for x in tag:
            if type(x) is not int:
                break
        else:
            return list(tag)
    if not isinstance(tag, tuple | list) or len(tag) > MAX_TAG_LEN:
        raise ConfigurationError(
            f"a tag must be a tuple of at most {MAX_TAG_LEN} ints, got {tag!r}"
        )
    for x in tag:
        if type(x) is not int and not isinstance(x, np.integer):
            raise ConfigurationError(f"a tag must be a tuple of ints, got {tag!r}")
    return [int(x) for x in tag]


def _pack(obj: dict[str, Any]) -> bytes:
    packer = getattr(_local, "packer", None)
    if packer is None:
        packer = _local.packer = msgpack.Packer(use_bin_type=True)
    try:
        data: bytes = packer.pack(obj)
    except (OverflowError, TypeError, ValueError) as e:
        _local.packer = None  # its buffer may hold a partial object
        raise ConfigurationError(f"cannot encode frame header: {e}") from e
    if len(data) > MAX_HEADER_BYTES:
        raise ConfigurationError(f"frame header of {len(data)} bytes exceeds {MAX_HEADER_BYTES}")
    return data


def encode_data(tag: Tag, array: np.ndarray) -> tuple[bytes, memoryview]:
    """Header bytes and payload view of a data message (the payload is not copied).

    The returned view aliases `array` (or a contiguous little-endian copy of it if needed).
    """
    tag_list = _check_tag(tag)
    wire = wire_array(array)
    header = _pack(
        {
            "k": KIND_DATA,
            "t": tag_list,
            "d": wire.dtype.str,
            "s": list(wire.shape),
            "n": wire.nbytes,
        }
    )
    return header, byte_view(wire)


def encode_abort(reason: str, run: int | None = None) -> bytes:
    """Header of an abort message (it has no payload), naming the run that failed if known."""
    obj: dict[str, Any] = {"k": KIND_ABORT, "r": str(reason)[:MAX_REASON_CHARS]}
    if run is not None:
        obj["u"] = int(run)
    return _pack(obj)


def encode_bye() -> bytes:
    """Header of the goodbye message sent by a clean close (it has no payload)."""
    return _pack({"k": KIND_BYE})


def frame_buffers(header: bytes, payload: Buffer = b"") -> list[Buffer]:
    """The buffers of a plaintext frame, for one `socket.sendmsg` (no concatenation)."""
    bufs: list[Buffer] = [length_prefix(len(header)), header]
    if len(payload):
        bufs.append(payload)
    return bufs


def _bad(reason: str) -> IntegrityError:
    return IntegrityError(f"malformed frame header: {reason}")


def parse_header(data: Buffer) -> Header:
    """Decode and validate a header received from a peer; IntegrityError if anything is off."""
    if len(data) > MAX_HEADER_BYTES:
        raise _bad(f"{len(data)} bytes exceed the limit of {MAX_HEADER_BYTES}")
    try:
        obj = msgpack.unpackb(data, raw=False, strict_map_key=True)
    except Exception as e:  # msgpack raises many types for malformed input
        raise _bad(f"undecodable ({type(e).__name__})") from None
    if type(obj) is not dict:
        raise _bad("not a map")
    kind = obj.get("k")
    if kind == KIND_DATA:
        if len(obj) != 5:
            raise _bad(f"data header has fields {sorted(obj)}, expected k, t, d, s, n")
        tag, dtype, shape, nbytes = obj.get("t"), obj.get("d"), obj.get("s"), obj.get("n")
        if type(tag) is not list or len(tag) > MAX_TAG_LEN:
            raise _bad(f"the tag is not a list of at most {MAX_TAG_LEN} ints")
        for x in tag:
            if type(x) is not int:
                raise _bad("the tag is not a list of ints")
        itemsize = _ITEMSIZE.get(dtype) if type(dtype) is str else None
        if itemsize is None:
            raise _bad(f"dtype {dtype!r} is not on the allow-list {sorted(ALLOWED_DTYPES)}")
        if type(shape) is not list or len(shape) > MAX_NDIM:
            raise _bad(f"the shape is not a list of at most {MAX_NDIM} ints")
        expected = itemsize
        for x in shape:
            if type(x) is not int or x < 0:
                raise _bad(f"shape {shape!r} has an entry that is not a non-negative int")
            expected *= x
        if type(nbytes) is not int or nbytes != expected:
            raise _bad(
                f"payload length {nbytes!r} does not match shape {shape} of dtype {dtype} "
                f"({expected} bytes)"
            )
        if nbytes > MAX_PAYLOAD_BYTES:
            raise _bad(f"payload of {nbytes} bytes exceeds the limit of {MAX_PAYLOAD_BYTES}")
        return Header(KIND_DATA, tuple(tag), str(dtype), tuple(shape), nbytes)
    if kind == KIND_ABORT:
        reason = obj.get("r")
        run = obj.get("u")
        if (
            type(reason) is not str
            or set(obj) - {"k", "r", "u"}
            or ("u" in obj and (type(run) is not int or run < 0))
        ):
            raise _bad("malformed abort header")
        return Header(KIND_ABORT, reason=reason[:MAX_REASON_CHARS], run=run)
    if kind == KIND_BYE:
        if len(obj) != 1:
            raise _bad("unexpected fields in bye header")
        return Header(KIND_BYE)
    raise _bad(f"unknown frame kind {kind!r}")


def allocate(header: Header) -> np.ndarray:
    """An uninitialised array to receive the payload of a validated data header into."""
    return np.empty(header.shape, dtype=_DTYPES[header.dtype])


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
