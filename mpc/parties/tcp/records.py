"""The record layer of the TCP transport: frames to and from AES-256-GCM records.

Responsibility: for one connection, turn each outgoing frame (`mpc.parties.framing`) into the
buffers to write (`RecordSender`), and parse the bytes read back into frames (`RecordReceiver`),
both resumable: writing stops when the socket is full and parsing when it is empty, and both go
on later (parsing possibly in another thread). A frame's first record holds its header and, up
to 64 KiB (`framing.INLINE_MAX`), its payload (one record per small message); a larger payload
follows as records of at most RECORD_CHUNK (1 MiB) plaintext bytes. Without keys, the same
framing goes in the clear.

Security model (with keys): AES-256-GCM with one key per direction; the 96-bit nonce is a
per-direction record counter that the receiver expects to increase by exactly one (record 0 is
the handshake's key confirmation, frames start at 1), and the associated data binds sender rank,
receiver rank and session id, so a replayed, reordered, dropped or modified record fails
authentication (`IntegrityError`). The only unauthenticated bytes are the first record's length
prefix, bounded before anything is allocated and then checked by decryption; every other length
follows from the authenticated header. A payload above _EAGER_ALLOC is allocated piece by piece
as its bytes arrive, so that a header alone cannot make this party reserve up to 1 GiB.
Reference: AES-GCM, NIST SP 800-38D; records with a sequence-number nonce as in TLS 1.3
(RFC 8446, section 5.3), here without the XOR mask since each key serves one direction of one
connection.
"""

from __future__ import annotations

import time
from typing import Final, NamedTuple

import numpy as np
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from mpc.channel_crypto import AEAD_TAG_BYTES, counter_nonce
from mpc.errors import IntegrityError
from mpc.parties import framing
from mpc.parties.framing import Buffer, Header
from mpc.parties.tcp.io import Reader

#: Plaintext bytes per payload record (larger payloads are split into several records).
RECORD_CHUNK: Final = 1 << 20
#: AES-GCM authentication tag length.
GCM_TAG: Final = AEAD_TAG_BYTES
#: Reads at least this large go straight into their destination instead of the buffer.
_DIRECT_READ: Final = 64 * 1024
#: A payload up to this size is received into an array allocated when its header arrives; a
#: larger one into pieces of _PIECE_BYTES allocated as its bytes arrive (then joined, one copy),
#: so that a header alone cannot make this party reserve up to 1 GiB. _PIECE_BYTES is a multiple
#: of RECORD_CHUNK (a record never spans two pieces).
_EAGER_ALLOC: Final = 64 << 20
_PIECE_BYTES: Final = 16 * RECORD_CHUNK

#: A received frame: its header and, for a data frame, its array.
Frame = tuple[Header, np.ndarray | None]


class RecordKeys(NamedTuple):
    """The keys of one connection (from the handshake): AEADs and associated data by direction."""

    send: AESGCM
    recv: AESGCM
    send_ad: bytes
    recv_ad: bytes


class RecordSender:
    """The sending half of one connection: frames become buffers to write (sealed records, or
    plaintext framing without keys); the frame being written is kept so that writing can stop
    and resume. Caller holds the link's send_lock."""

    def __init__(self, key: AESGCM | None, ad: bytes) -> None:
        self.key = key
        self.ad = ad
        self.counter = 1  # record 0 is the key confirmation
        #: buffers of the frame in flight still to write, then (encrypted mode) the part of a
        #: large payload still to encrypt
        self.out: list[Buffer] = []
        self._rest: memoryview | None = None
        self._rest_offset = 0
        self._scratch: memoryview | None = None

    def _next_nonce(self) -> bytes:
        nonce = counter_nonce(self.counter)
        self.counter += 1
        return nonce

    def seal(self, plain: Buffer) -> bytearray:
        """Length prefix and AEAD record of `plain`, in one buffer."""
        assert self.key is not None
        size = len(plain) + GCM_TAG
        record = bytearray(framing.LENGTH_PREFIX_BYTES + size)
        record[: framing.LENGTH_PREFIX_BYTES] = framing.length_prefix(size)
        self.key.encrypt_into(
            self._next_nonce(),
            plain,
            self.ad,
            memoryview(record)[framing.LENGTH_PREFIX_BYTES :],
        )
        return record

    def begin(self, header: bytes, payload: memoryview) -> int:
        """Make a data frame the frame in flight (none may be); return its bytes on the wire."""
        total = payload.nbytes
        inline = total <= framing.INLINE_MAX
        if self.key is None:
            self.out = framing.frame_buffers(header, payload)
            return framing.LENGTH_PREFIX_BYTES + len(header) + total
        first = self.seal(header + payload if inline and total else header)
        self.out = [first]
        wire = len(first)
        if not inline:
            self._rest, self._rest_offset = payload, 0
            wire += total + GCM_TAG * -(-total // RECORD_CHUNK)
        return wire

    def begin_control(self, header: bytes) -> int:
        """Make a control frame (no payload) the frame in flight; return its bytes on the wire."""
        sealed: list[Buffer] = [self.seal(header)] if self.key is not None else []
        buffers = sealed or framing.frame_buffers(header)
        self.out = list(buffers)
        return sum(len(b) for b in buffers)

    def pending(self) -> list[Buffer]:
        """The buffers to write next (sealing the next payload record once the earlier ones are
        written); empty once the whole frame is written."""
        rest = self._rest
        if self.out or rest is None:
            return self.out
        assert self.key is not None
        if self._scratch is None:
            self._scratch = memoryview(bytearray(RECORD_CHUNK + GCM_TAG))
        offset = self._rest_offset
        size = min(RECORD_CHUNK, rest.nbytes - offset)
        record = self._scratch[: size + GCM_TAG]
        self.key.encrypt_into(self._next_nonce(), rest[offset : offset + size], self.ad, record)
        self._rest_offset = offset = offset + size
        if offset == rest.nbytes:
            self._rest = None
        self.out = [record]
        return self.out

    def written(self, sent: int) -> None:
        """Drop the first `sent` bytes of `pending()` (they are on the wire)."""
        out = self.out
        while sent:
            size = len(out[0])
            if sent >= size:
                sent -= size
                del out[0]
            else:
                out[0] = memoryview(out[0])[sent:]
                sent = 0

    def unwritten(self) -> int:
        """Bytes of the pending buffers (not counting payload records not sealed yet)."""
        return sum(len(b) for b in self.out)

    def drop(self) -> None:
        """Forget the frame in flight."""
        self.out = []
        self._rest = None


class RecordReceiver:
    """The receiving half of one connection: a resumable parser of frames out of a `Reader`,
    opening records with the receive key (or parsing plaintext framing without one). Caller
    holds the link's read_lock. `heard_at` is when bytes of a data frame last came (monotonic).
    """

    def __init__(self, reader: Reader, key: AESGCM | None, ad: bytes) -> None:
        self.reader = reader
        self.key = key
        self.ad = ad
        self.counter = 1  # record 0 is the key confirmation
        self.heard_at = 0.0
        self._first_limit = framing.MAX_FIRST_RECORD + (GCM_TAG if key is not None else 0)
        self._scratch: memoryview | None = None
        # state of the frame being received
        self._record_len: int | None = None
        self._header: Header | None = None
        self._array: np.ndarray | None = None  # None while a large payload comes in pieces
        self._pieces: list[np.ndarray] = []
        self._dst: memoryview | None = None  # receives payload bytes _base.. of the frame
        self._base = 0
        self._offset = 0
        self._record_pos = 0

    def _open_into(self, record: memoryview, out: Buffer) -> None:
        assert self.key is not None
        nonce = counter_nonce(self.counter)
        self.counter += 1
        try:
            self.key.decrypt_into(nonce, record, self.ad, out)
        except InvalidTag:
            raise IntegrityError("record failed authentication") from None

    def pump(self) -> Frame | None:
        """Parse one complete frame out of what has arrived and return it, or return None when
        more bytes are needed (never blocks), keeping the partial frame for the next call.

        Raises IntegrityError on a rejected record or header, EOFError/OSError on a lost
        connection.
        """
        reader = self.reader
        if self._header is None:
            if self._record_len is None:
                if not reader.fill(framing.LENGTH_PREFIX_BYTES):
                    return None
                self._record_len = framing.parse_length(
                    reader.take(framing.LENGTH_PREFIX_BYTES), self._first_limit
                )
                if self.key is not None and self._record_len <= GCM_TAG:
                    raise IntegrityError("record shorter than its authentication tag")
            if not reader.fill(self._record_len):
                return None
            raw = reader.take(self._record_len)
            self._record_len = None
            plain: Buffer
            if self.key is not None:
                plain = bytearray(len(raw) - GCM_TAG)
                self._open_into(raw, plain)
            else:
                plain = raw
            if plain[0] != framing.DATA_MARKER:
                return framing.parse_header(plain), None
            header, size = framing.parse_data_header(plain)
            self.heard_at = time.monotonic()
            total = header.nbytes
            extra = len(plain) - size
            if total <= framing.INLINE_MAX:
                if extra != total:
                    raise IntegrityError(
                        f"frame carries {extra} payload bytes, its header says {total}"
                    )
                if type(plain) is bytearray and total:
                    array = framing.view_array(header, plain, size)  # owns the fresh buffer
                else:
                    array = framing.allocate(header)
                    if total:
                        framing.byte_view(array)[:] = plain[size:]
                return header, framing.check_values(array)
            if extra:
                raise IntegrityError(
                    f"frame of a {total}-byte payload carries {extra} bytes in its header record"
                )
            if total <= _EAGER_ALLOC:
                fresh = framing.allocate(header)
                self._array, self._dst = fresh, framing.byte_view(fresh)
            else:  # pieces, allocated as the bytes arrive (see _EAGER_ALLOC)
                self._array, self._dst = None, memoryview(b"")
            self._header = header
            self._offset = self._record_pos = self._base = 0
        header, dst = self._header, self._dst
        assert header is not None and dst is not None
        total = header.nbytes
        aead = self.key
        if aead is None:
            while self._offset < total:
                local = self._offset - self._base
                if local == dst.nbytes:  # only in pieces: the current piece is full
                    dst, local = self._next_piece(total), 0
                got = reader.read_some_into(dst[local:])
                if got == 0:
                    return None
                self._offset += got
                self.heard_at = time.monotonic()
        else:
            while self._offset < total:
                size = min(RECORD_CHUNK, total - self._offset)
                record_len = size + GCM_TAG
                if record_len < _DIRECT_READ:
                    if not reader.fill(record_len):
                        return None
                    record = reader.take(record_len)
                else:
                    if self._scratch is None:
                        self._scratch = memoryview(bytearray(RECORD_CHUNK + GCM_TAG))
                    record = self._scratch[:record_len]
                    while self._record_pos < record_len:
                        got = reader.read_some_into(record[self._record_pos :])
                        if got == 0:
                            return None
                        self._record_pos += got
                        self.heard_at = time.monotonic()
                    self._record_pos = 0
                local = self._offset - self._base
                if local == dst.nbytes:  # only in pieces: the current piece is full
                    dst, local = self._next_piece(total), 0
                self._open_into(record, dst[local : local + size])
                self._offset += size
                self.heard_at = time.monotonic()
        array = self._array if self._array is not None else self._join(header)
        self._header = self._array = self._dst = None
        return header, framing.check_values(array)

    def _next_piece(self, total: int) -> memoryview:
        """Allocate the next piece of a large payload, from the current offset on."""
        piece = np.empty(min(_PIECE_BYTES, total - self._offset), dtype=np.uint8)
        self._pieces.append(piece)
        self._base = self._offset
        self._dst = piece.data
        return self._dst

    def _join(self, header: Header) -> np.ndarray:
        """The array of a payload received in pieces (all of it has arrived)."""
        array = framing.allocate(header)
        out = framing.byte_view(array)
        position = 0
        pieces, self._pieces = self._pieces, []
        while pieces:
            piece = pieces.pop(0)  # freed once copied
            out[position : position + piece.nbytes] = piece.data
            position += piece.nbytes
        return array
