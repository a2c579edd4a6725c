"""Attestation quotes: what an enclave states about itself, canonically encoded and signed.

Responsibility: the `Quote` record (backend, measurement, security version, `debug`/`simulated`
flags, the enclave's ephemeral X25519 public key, the verifier's nonce, the session id, issue and
expiry times), its canonical msgpack encoding and strict parser, and the platform signature over
it (`sign_quote`, `SignedQuote`). Verification against a policy is in `mpc.tee.verify`.

Wire format (version 1): a msgpack array of 12 elements, in this order::

    ["mpc-tee-quote", 1, backend: str, measurement: bin(32|48), security_version: uint32,
     debug: bool, simulated: bool, enclave_public_key: bin(32), nonce: bin(32),
     session_id: bin(1..1024), issued_at: int (Unix seconds), expires_at: int (> issued_at)]

Parsing refuses anything else with `MalformedQuoteError`: wrong length or types (a bool is not an
int and vice versa), out-of-range values, trailing bytes, and non-canonical encodings (the parsed
quote must re-encode to exactly the input bytes, so one quote has one byte string and one
signature input).

Signature (the "platform signature" of the simulation): 96 bytes, the signer's raw Ed25519 public
key (32) followed by its Ed25519 signature (64) over b"mpc.tee.quote.v1\\x00" + quote bytes.
Carrying the signer's key lets the verifier say *untrusted platform* apart from *bad signature*,
as a DCAP quote carries its certificate chain.

Security model: a quote is only as good as the key that signs it. In the simulation that key is
generated in the dealer's own process, so the quote proves nothing against whoever controls that
process; with a real backend the evidence is produced by the CPU (SGX quoting enclave, SEV-SNP
firmware) and chains to the vendor's root key, and the quote bytes here would be bound into the
hardware report's 64-byte report data (see docs/tee.md).
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from typing import Any

import msgpack
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from mpc.tee.backend import MalformedQuoteError, QuoteSignatureError

__all__ = [
    "MAX_QUOTE_BYTES",
    "NONCE_BYTES",
    "QUOTE_FORMAT",
    "QUOTE_VERSION",
    "SIGNATURE_BYTES",
    "Quote",
    "SignedQuote",
    "check_signature",
    "ed25519_public_bytes",
    "new_nonce",
    "sign_quote",
    "signer_key",
]

QUOTE_FORMAT = "mpc-tee-quote"
QUOTE_VERSION = 1
NONCE_BYTES = 32
KEY_BYTES = 32
MEASUREMENT_LENGTHS = (32, 48)  # SHA-256 (this package, SGX MRENCLAVE); SHA-384 (SEV-SNP)
MAX_SESSION_ID_BYTES = 1024
MAX_QUOTE_BYTES = 4096
MAX_SECURITY_VERSION = 0xFFFF_FFFF
MAX_TIME = (1 << 63) - 1
ED25519_SIGNATURE_BYTES = 64
SIGNATURE_BYTES = KEY_BYTES + ED25519_SIGNATURE_BYTES
_SIGNATURE_DOMAIN = b"mpc.tee.quote.v1\x00"
_BACKEND_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
_FIELDS = 12


def new_nonce() -> bytes:
    """A fresh 32-byte verifier nonce from the operating system's CSPRNG."""
    return secrets.token_bytes(NONCE_BYTES)


def _bad(field: str, why: str) -> MalformedQuoteError:
    return MalformedQuoteError(f"malformed quote: field {field!r} {why}")


def _check_bytes(field: str, value: object, lengths: tuple[int, ...] | range) -> None:
    if not isinstance(value, bytes):
        raise _bad(field, f"must be bytes, got {type(value).__name__}")
    if len(value) not in lengths:
        raise _bad(field, f"has {len(value)} bytes, expected {_describe(lengths)}")


def _describe(lengths: tuple[int, ...] | range) -> str:
    if isinstance(lengths, range):
        return f"{lengths.start} to {lengths.stop - 1}"
    return " or ".join(str(n) for n in lengths)


def _check_int(field: str, value: object, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _bad(field, f"must be an integer, got {type(value).__name__}")
    if not low <= value <= high:
        raise _bad(field, f"must be in [{low}, {high}], got {value}")


def _check_bool(field: str, value: object) -> None:
    if not isinstance(value, bool):
        raise _bad(field, f"must be a boolean, got {type(value).__name__}")


@dataclass(frozen=True)
class Quote:
    """What an enclave attests. Construction validates every field (`MalformedQuoteError`)."""

    backend: str
    measurement: bytes
    security_version: int
    debug: bool
    simulated: bool
    enclave_public_key: bytes
    nonce: bytes
    session_id: bytes
    issued_at: int
    expires_at: int

    def __post_init__(self) -> None:
        if not isinstance(self.backend, str) or not _BACKEND_NAME.fullmatch(self.backend):
            raise _bad("backend", "must be 1-64 characters of a-z, 0-9, '.', '_', '-'")
        _check_bytes("measurement", self.measurement, MEASUREMENT_LENGTHS)
        _check_int("security_version", self.security_version, 0, MAX_SECURITY_VERSION)
        _check_bool("debug", self.debug)
        _check_bool("simulated", self.simulated)
        _check_bytes("enclave_public_key", self.enclave_public_key, (KEY_BYTES,))
        if not any(self.enclave_public_key):
            raise _bad("enclave_public_key", "is the all-zero X25519 key")
        _check_bytes("nonce", self.nonce, (NONCE_BYTES,))
        _check_bytes("session_id", self.session_id, range(1, MAX_SESSION_ID_BYTES + 1))
        _check_int("issued_at", self.issued_at, 0, MAX_TIME)
        _check_int("expires_at", self.expires_at, 0, MAX_TIME)
        if self.expires_at <= self.issued_at:
            raise _bad(
                "expires_at", f"({self.expires_at}) must be after issued_at ({self.issued_at})"
            )

    def _fields(self) -> list[Any]:
        return [
            QUOTE_FORMAT,
            QUOTE_VERSION,
            self.backend,
            self.measurement,
            self.security_version,
            self.debug,
            self.simulated,
            self.enclave_public_key,
            self.nonce,
            self.session_id,
            self.issued_at,
            self.expires_at,
        ]

    def to_bytes(self) -> bytes:
        """The canonical encoding (what is signed)."""
        packed: bytes = msgpack.packb(self._fields(), use_bin_type=True)
        return packed

    @classmethod
    def from_bytes(cls, data: bytes) -> Quote:
        """Parse canonical quote bytes; anything else raises `MalformedQuoteError`."""
        if not isinstance(data, bytes):
            raise MalformedQuoteError(f"malformed quote: expected bytes, got {type(data).__name__}")
        if not 0 < len(data) <= MAX_QUOTE_BYTES:
            raise MalformedQuoteError(
                f"malformed quote: {len(data)} bytes (a quote has 1 to {MAX_QUOTE_BYTES})"
            )
        try:
            fields = msgpack.unpackb(
                data,
                raw=False,
                use_list=True,
                strict_map_key=True,
                max_bin_len=MAX_QUOTE_BYTES,
                max_str_len=MAX_QUOTE_BYTES,
                max_array_len=_FIELDS,
                max_map_len=0,
                max_ext_len=0,
            )
        except (ValueError, TypeError, OverflowError, msgpack.UnpackException) as exc:
            raise MalformedQuoteError(f"malformed quote: not a msgpack value ({exc})") from None
        if not isinstance(fields, list) or len(fields) != _FIELDS:
            size = len(fields) if isinstance(fields, list) else type(fields).__name__
            raise MalformedQuoteError(
                f"malformed quote: expected an array of {_FIELDS} fields, got {size}"
            )
        if fields[0] != QUOTE_FORMAT or not isinstance(fields[0], str):
            raise _bad("format", f"must be {QUOTE_FORMAT!r}")
        if isinstance(fields[1], bool) or fields[1] != QUOTE_VERSION:
            raise _bad("version", f"must be {QUOTE_VERSION} (got {fields[1]!r})")
        quote = cls(*fields[2:])
        if quote.to_bytes() != data:
            raise MalformedQuoteError(
                "malformed quote: not in canonical encoding (re-encoding the parsed fields gives "
                "other bytes)"
            )
        return quote

    def digest(self) -> bytes:
        """SHA-256 of the canonical encoding (names this quote in the channel transcript)."""
        return hashlib.sha256(self.to_bytes()).digest()

    def flag_names(self) -> list[str]:
        """['SIMULATED', 'DEBUG'] or the subset that applies."""
        return [name for name, on in (("SIMULATED", self.simulated), ("DEBUG", self.debug)) if on]


@dataclass(frozen=True)
class SignedQuote:
    """Quote bytes and their 96-byte platform signature, as the dealer sends them."""

    body: bytes
    signature: bytes

    @property
    def quote(self) -> Quote:
        """The parsed quote (NOT verified: use `mpc.tee.verify.verify_quote`)."""
        return Quote.from_bytes(self.body)


def ed25519_public_bytes(key: Ed25519PrivateKey) -> bytes:
    """The raw 32-byte public key of an Ed25519 private key."""
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def sign_quote(body: bytes, key: Ed25519PrivateKey) -> bytes:
    """The 96-byte signature field: signer public key || Ed25519(domain || body)."""
    return ed25519_public_bytes(key) + key.sign(_SIGNATURE_DOMAIN + body)


def signer_key(signature: bytes) -> bytes:
    """The platform public key named in a signature field (checks only the length)."""
    if not isinstance(signature, bytes) or len(signature) != SIGNATURE_BYTES:
        size = len(signature) if isinstance(signature, bytes) else type(signature).__name__
        raise MalformedQuoteError(
            f"malformed quote signature: expected {SIGNATURE_BYTES} bytes (platform key and "
            f"Ed25519 signature), got {size}"
        )
    return signature[:KEY_BYTES]


def check_signature(body: bytes, signature: bytes) -> None:
    """Check the Ed25519 signature in `signature` over `body` under the key it names.

    Whether that key is trusted is the caller's decision (`verify_quote` checks it first).
    """
    public = signer_key(signature)
    try:
        Ed25519PublicKey.from_public_bytes(public).verify(
            signature[KEY_BYTES:], _SIGNATURE_DOMAIN + body
        )
    except (InvalidSignature, ValueError):
        raise QuoteSignatureError(
            "attestation refused at check 'signature': the quote's Ed25519 signature does not "
            "verify under the platform key it names (the quote was altered or forged)"
        ) from None
