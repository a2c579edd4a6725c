"""Wire framing of the TCP transport: how one message becomes bytes and back.

Responsibility: build the buffers of a frame (without copying large arrays) and parse a received
header plus payload back into a numpy array, rejecting anything malformed.

A frame is::

    4-byte big-endian length L | first record (L bytes) | payload records (large payloads only)

The first record holds the header and, when the payload is at most `INLINE_MAX` bytes, the
payload right after it; a larger payload follows as separate records (raw bytes in plaintext
mode, AES-GCM records of at most 1 MiB in encrypted mode, see `mpc.parties.tcp`). Whether the
payload is inline is fixed by its size, and the receiver checks that the record has exactly the
size the header implies.

A data header is fixed binary (little-endian), 8 + 8 * (tag length + ndim) bytes, plus the
operation label rounded up to a multiple of 8 bytes (so that an inline payload stays aligned)::

    u8 marker 0x01 | u8 dtype code | u8 tag length | u8 ndim | u8 label length | u8 zero
    | u16 zero | tag entries as i64 | shape entries as u64 | label (ASCII), zero-padded

The label names the operation that sent the message (e.g. ``mul``; see
`mpc.parties.channel`), so that a receiver can tell that the parties ran different operations.

Control headers ("abort" with its reason and run id, "bye", and "alive" with the age of the
sender's latest progress, see `mpc.parties.tcp`) are msgpack maps with short keys (``k`` kind,
``r`` reason, ``u`` run, ``a`` age in seconds); a msgpack map never starts with byte 0x01.

Security model: every field of a header that comes from a peer is untrusted. Control headers are
decoded with msgpack only (never pickle), the dtype code must name one of a small allow-list of
fixed-size numeric types, tag and shape lengths are bounded, the header length must be exact, the
payload length is prod(shape) * itemsize and at most 1 GiB, a label is at most
`MAX_LABEL_BYTES` printable ASCII characters with zero padding, and control headers are at most
64 KiB, so a peer cannot make this party allocate unbounded memory or build an object array
(the TCP transport also allocates a large payload only as its bytes arrive). Every violation
raises `IntegrityError`. A tag may have 0 to 64 entries here; whether it belongs to the current
run (a non-empty tag starting with the run id) is checked by `mpc.parties.mailbox`. Framing
itself gives no confidentiality or integrity; that is the job of the record layer in
`mpc.parties.tcp`.
"""

from __future__ import annotations

import struct
import threading
from typing import Any, Final, NamedTuple

import msgpack
import numpy as np

from mpc.errors import ConfigurationError, IntegrityError
from mpc.parties.mailbox import Tag

#: Largest accepted control header (msgpack bytes).
MAX_HEADER_BYTES: Final = 64 * 1024
#: Largest accepted payload of one message.
MAX_PAYLOAD_BYTES: Final = 1 << 30
#: Most entries of a tag and most dimensions of an array.
MAX_TAG_LEN: Final = 64
MAX_NDIM: Final = 32
#: Longest operation label of a data message (printable ASCII).
MAX_LABEL_BYTES: Final = 64
#: Longest abort reason that is put on the wire (longer ones are truncated).
MAX_REASON_CHARS: Final = 2000
#: Payloads up to this many bytes travel inside the first record, right after the header.
INLINE_MAX: Final = 64 * 1024
#: Size of the fixed part of a data header, and of the largest data header.
DATA_FIXED_BYTES: Final = 8
MAX_DATA_HEADER_BYTES: Final = DATA_FIXED_BYTES + 8 * (MAX_TAG_LEN + MAX_NDIM) + MAX_LABEL_BYTES
#: Largest first record (plaintext bytes): a control header, or a data header with its payload.
MAX_FIRST_RECORD: Final = max(MAX_HEADER_BYTES, MAX_DATA_HEADER_BYTES + INLINE_MAX)
#: First byte of a data header (a msgpack map starts with 0x80-0x8f, 0xde or 0xdf).
DATA_MARKER: Final = 0x01

LENGTH_PREFIX_BYTES: Final = 4

KIND_DATA: Final = "data"
KIND_ABORT: Final = "abort"
KIND_BYE: Final = "bye"
KIND_ALIVE: Final = "alive"
#: Largest age an "alive" header may state (seconds): older progress says nothing anyway.
MAX_AGE: Final = 1e6

#: Dtypes allowed on the wire, as little-endian numpy dtype strings; the position of a dtype in
#: this tuple is its code in data headers (append only: codes are part of the wire format).
DTYPE_CODES: Final = ("<u8", "<i8", "<f8", "|b1", "|u1", "<u4", "<i4", "<f4", "<u2", "<i2", "|i1")
ALLOWED_DTYPES: Final = frozenset(DTYPE_CODES)
_DTYPES: Final = {s: np.dtype(s) for s in ALLOWED_DTYPES}
_ITEMSIZE: Final = {s: d.itemsize for s, d in _DTYPES.items()}
_CODE_OF: Final = {s: i for i, s in enumerate(DTYPE_CODES)}
_CODE_DTYPE: Final = tuple(_DTYPES[s] for s in DTYPE_CODES)
_CODE_ITEMSIZE: Final = tuple(d.itemsize for d in _CODE_DTYPE)
_FIXED: Final = struct.Struct("<BBBBBBH")
_local = threading.local()  # one msgpack Packer per thread (a Packer is not thread-safe)
_STRUCTS: dict[tuple[int, int, int], struct.Struct] = {}
#: Labels seen (sent: text -> bytes; received: padded bytes -> text), checked once each.
_MAX_CACHED_LABELS: Final = 1024
_LABEL_BYTES: dict[str, bytes] = {}
_LABELS: dict[bytes, str] = {}

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
    label: str = ""
    age: float = 0.0


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
    if type(tag) is tuple and len(tag) <= MAX_TAG_LEN:
        for x in tag:
            if type(x) is not int:
                break
        else:
            return tag
    if not isinstance(tag, tuple | list) or len(tag) > MAX_TAG_LEN:
        raise ConfigurationError(
            f"a tag must be a tuple of at most {MAX_TAG_LEN} ints, got {tag!r}"
        )
    for x in tag:
        if type(x) is not int and not isinstance(x, np.integer):
            raise ConfigurationError(f"a tag must be a tuple of ints, got {tag!r}")
    return tuple(int(x) for x in tag)


def _padded(label_len: int) -> int:
    return -(-label_len // 8) * 8


def _struct(ntag: int, ndim: int, padded: int = 0) -> struct.Struct:
    layout = _STRUCTS.get((ntag, ndim, padded))
    if layout is None:
        layout = _STRUCTS[(ntag, ndim, padded)] = struct.Struct(f"<BBBBBBH{ntag}q{ndim}Q{padded}s")
    return layout


def data_header_size(ntag: int, ndim: int, label_len: int = 0) -> int:
    """Bytes of the data header of a message with a tag of `ntag` ints, `ndim` dimensions and
    an operation label of `label_len` characters."""
    return DATA_FIXED_BYTES + 8 * (ntag + ndim) + _padded(label_len)


def is_label(label: str) -> bool:
    """Whether `label` can travel as an operation label (printable ASCII, not too long)."""
    return len(label) <= MAX_LABEL_BYTES and label.isascii() and label.isprintable()


def _label_bytes(label: str) -> bytes:
    """`label` as the bytes of a data header (checked once per distinct label)."""
    raw = _LABEL_BYTES.get(label)
    if raw is None:
        if not is_label(label):
            raise ConfigurationError(
                f"an operation label must be at most {MAX_LABEL_BYTES} printable ASCII "
                f"characters, got {label[:80]!r}"
            )
        raw = label.encode("ascii")
        if len(_LABEL_BYTES) < _MAX_CACHED_LABELS:
            _LABEL_BYTES[label] = raw
    return raw


def _label_of(raw: bytes, label_len: int) -> str:
    """The label in the `raw` (padded) label bytes of a received header (a peer's distinct
    labels are checked once each, and at most `_MAX_CACHED_LABELS` of them are kept)."""
    label = _LABELS.get(raw)
    if label is None or len(label) != label_len:
        label = raw[:label_len].decode("ascii", "replace")
        if not is_label(label) or raw[label_len:].count(0) != len(raw) - label_len:
            raise _bad("the operation label is not printable ASCII with zero padding")
        if len(_LABELS) < _MAX_CACHED_LABELS:
            _LABELS[raw] = label
    return label


def encode_data(tag: Tag, array: np.ndarray, label: str = "") -> tuple[bytes, memoryview]:
    """Header bytes and payload view of a data message (the payload is not copied).

    `label` names the operation that sends it (printable ASCII, at most `MAX_LABEL_BYTES`).
    The returned view aliases `array` (or a contiguous little-endian copy of it if needed).
    """
    tag = _check_tag(tag)
    raw = _label_bytes(label) if label else b""
    wire = array
    if type(wire) is not np.ndarray or not wire.flags.c_contiguous:
        wire = wire_array(np.asarray(array))
    code = _CODE_OF.get(wire.dtype.str)
    if code is None or wire.nbytes > MAX_PAYLOAD_BYTES:
        wire = wire_array(wire)
        code = _CODE_OF[wire.dtype.str]
    shape = wire.shape
    try:
        header = _struct(len(tag), len(shape), _padded(len(raw))).pack(
            DATA_MARKER, code, len(tag), len(shape), len(raw), 0, 0, *tag, *shape, raw
        )
    except struct.error:
        raise ConfigurationError(
            f"a tag must be a tuple of 64-bit signed ints, got {tag!r}"
        ) from None
    return header, byte_view(wire)


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


def encode_abort(reason: str, run: int | None = None) -> bytes:
    """Header of an abort message (it has no payload), naming the run that failed if known."""
    obj: dict[str, Any] = {"k": KIND_ABORT, "r": str(reason)[:MAX_REASON_CHARS]}
    if run is not None:
        obj["u"] = int(run)
    return _pack(obj)


def encode_bye() -> bytes:
    """Header of the goodbye message sent by a clean close (it has no payload)."""
    return _pack({"k": KIND_BYE})


def encode_alive(age: float) -> bytes:
    """Header of a keepalive (no payload): the sender waits on the network, and what it waits
    for last made progress `age` seconds ago."""
    return _pack({"k": KIND_ALIVE, "a": min(max(float(age), 0.0), MAX_AGE)})


def frame_buffers(header: bytes, payload: Buffer = b"") -> list[Buffer]:
    """The buffers of a plaintext frame, for one `socket.sendmsg` (no concatenation).

    A payload of at most `INLINE_MAX` bytes is counted in the length prefix (it is part of the
    first record); a larger one follows the first record.
    """
    size = len(header)
    if len(payload) <= INLINE_MAX:
        size += len(payload)
    bufs: list[Buffer] = [length_prefix(size), header]
    if len(payload):
        bufs.append(payload)
    return bufs


def _bad(reason: str) -> IntegrityError:
    return IntegrityError(f"malformed frame header: {reason}")


def parse_data_header(data: Buffer) -> tuple[Header, int]:
    """Decode and validate the binary data header at the start of `data` (which may continue
    with an inline payload); return it and its size. IntegrityError if anything is off."""
    if len(data) < DATA_FIXED_BYTES:
        raise _bad(f"{len(data)} bytes are too short for a data header")
    marker, code, ntag, ndim, label_len, zero, zero2 = _FIXED.unpack_from(data)
    if marker != DATA_MARKER or zero != 0 or zero2 != 0:
        raise _bad("not a data header")
    if code >= len(DTYPE_CODES):
        raise _bad(f"dtype code {code} is not on the allow-list {list(DTYPE_CODES)}")
    if ntag > MAX_TAG_LEN or ndim > MAX_NDIM or label_len > MAX_LABEL_BYTES:
        raise _bad(
            f"tag of {ntag}, {ndim} dimensions or a label of {label_len} bytes exceed "
            f"{MAX_TAG_LEN} / {MAX_NDIM} / {MAX_LABEL_BYTES}"
        )
    padded = _padded(label_len)
    size = DATA_FIXED_BYTES + 8 * (ntag + ndim) + padded
    if len(data) < size:
        raise _bad(f"{len(data)} bytes are too short for a data header of {size} bytes")
    fields = _struct(ntag, ndim, padded).unpack_from(data)
    label = _label_of(fields[-1], label_len) if label_len else ""
    shape = fields[7 + ntag : -1]
    nbytes = _CODE_ITEMSIZE[code]
    for x in shape:
        nbytes *= x
    if nbytes > MAX_PAYLOAD_BYTES:
        raise _bad(f"shape {shape} of {nbytes} bytes exceeds the limit of {MAX_PAYLOAD_BYTES}")
    header = Header(KIND_DATA, fields[7 : 7 + ntag], DTYPE_CODES[code], shape, nbytes, label=label)
    return header, size


def parse_header(data: Buffer) -> Header:
    """Decode and validate a header received from a peer; IntegrityError if anything is off."""
    if len(data) and data[0] == DATA_MARKER:
        header, size = parse_data_header(data)
        if size != len(data):
            raise _bad(f"data header of {len(data)} bytes, expected {size}")
        return header
    if len(data) > MAX_HEADER_BYTES:
        raise _bad(f"{len(data)} bytes exceed the limit of {MAX_HEADER_BYTES}")
    try:
        obj = msgpack.unpackb(data, raw=False, strict_map_key=True)
    except Exception as e:  # msgpack raises many types for malformed input
        raise _bad(f"undecodable ({type(e).__name__})") from None
    if type(obj) is not dict:
        raise _bad("not a map")
    kind = obj.get("k")
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
    if kind == KIND_ALIVE:
        age = obj.get("a")
        if set(obj) != {"k", "a"} or type(age) is not float or not 0.0 <= age <= MAX_AGE:
            raise _bad("malformed alive header")
        return Header(KIND_ALIVE, age=age)
    raise _bad(f"unknown frame kind {kind!r}")


def allocate(header: Header) -> np.ndarray:
    """An uninitialised array to receive the payload of a validated data header into."""
    return np.empty(header.shape, dtype=_DTYPES[header.dtype])


def view_array(header: Header, buffer: bytearray, offset: int) -> np.ndarray:
    """The array of a validated data header whose payload sits in `buffer` at `offset` (no copy:
    the array is a writable view that keeps `buffer` alive; the caller must own `buffer`)."""
    dtype = _DTYPES[header.dtype]
    array = np.frombuffer(buffer, dtype, header.nbytes // dtype.itemsize, offset)
    return array.reshape(header.shape)


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
