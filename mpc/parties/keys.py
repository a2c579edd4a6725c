"""Long-term X25519 keys of parties, used to authenticate the encrypted TCP transport.

Responsibility: generate, save, load and fingerprint a party's static X25519 key pair, and parse
the public keys of peers (hex strings or `.pub` files) that a party pins.

Security model: the private key is the party's identity: whoever holds it can act as that party.
It is written to a file readable only by its owner (mode 0600, written to a temporary file and
renamed into place so a half-written key is never left behind), and a warning is raised when a key
file that group or others can read is loaded. Public keys are not secret; they are distributed out
of band and pinned by every peer, so that a man in the middle cannot substitute its own key. A
public key is validated to be exactly 32 bytes and not the all-zero point; other low-order points
are caught by the key exchange itself, which refuses an all-zero shared secret.
"""

from __future__ import annotations

import hashlib
import os
import stat
import warnings
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from mpc.errors import ConfigurationError
from mpc.private_files import write_private_file

PUBLIC_KEY_BYTES = 32


def _pub_path(path: Path) -> Path:
    return path.with_name(path.name + ".pub")


def fingerprint(public: bytes) -> str:
    """A short, human-comparable fingerprint of a public key (first 16 hex chars of SHA-256)."""
    return hashlib.sha256(public).hexdigest()[:16]


class PartyKey:
    """A party's long-term X25519 key pair."""

    def __init__(self, private_key: X25519PrivateKey) -> None:
        self._private = private_key
        self._public = private_key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )

    @classmethod
    def generate(cls) -> PartyKey:
        """A fresh random key pair (from the operating system's CSPRNG)."""
        return cls(X25519PrivateKey.generate())

    @property
    def public_bytes(self) -> bytes:
        """The 32-byte raw public key."""
        return self._public

    @property
    def public_hex(self) -> str:
        """The public key as 64 hex characters (what peers pin)."""
        return self.public_bytes.hex()

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.public_bytes)

    def exchange(self, peer_public: bytes) -> bytes:
        """X25519 Diffie-Hellman with a peer's 32-byte public key; refuses low-order points."""
        peer = X25519PublicKey.from_public_bytes(check_public(peer_public))
        try:
            return self._private.exchange(peer)
        except ValueError as e:
            raise ConfigurationError(
                f"key exchange with public key {fingerprint(peer_public)} failed: {e}"
            ) from e

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the private key (PEM, PKCS#8, mode 0600) and `<path>.pub` (hex public key).

        Returns the path of the public key file. An existing file at `path` is replaced.
        """
        target = Path(path)
        pem = self._private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        write_private_file(target, pem)
        pub = _pub_path(target)
        pub.write_text(self.public_hex + "\n", encoding="ascii")
        return pub

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> PartyKey:
        """Read a private key written by `save`."""
        source = Path(path)
        try:
            mode = source.stat().st_mode
            data = source.read_bytes()
        except OSError as e:
            raise ConfigurationError(f"cannot read party key file {source}: {e}") from e
        if os.name == "posix" and mode & (stat.S_IRWXG | stat.S_IRWXO):
            warnings.warn(
                f"party key file {source} is accessible by group or others "
                f"(mode {stat.S_IMODE(mode):04o}); restrict it with chmod 600",
                UserWarning,
                stacklevel=2,
            )
        try:
            key = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError) as e:
            raise ConfigurationError(
                f"{source} is not an unencrypted PEM private key written by PartyKey.save: {e}"
            ) from e
        if not isinstance(key, X25519PrivateKey):
            raise ConfigurationError(
                f"{source} holds a {type(key).__name__}, expected an X25519 private key"
            )
        return cls(key)

    def __repr__(self) -> str:
        return f"PartyKey(fingerprint={self.fingerprint})"


def check_public(public: bytes) -> bytes:
    """Check that `public` is a usable 32-byte X25519 public key; return it."""
    if not isinstance(public, bytes | bytearray) or len(public) != PUBLIC_KEY_BYTES:
        size = len(public) if isinstance(public, bytes | bytearray) else type(public).__name__
        raise ConfigurationError(
            f"an X25519 public key must be {PUBLIC_KEY_BYTES} bytes, got {size}"
        )
    if not any(public):
        raise ConfigurationError("the all-zero X25519 public key is not a valid party key")
    return bytes(public)


def _parse_hex(text: str, origin: str) -> bytes:
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        raise ConfigurationError(
            f"{origin} is not a hex X25519 public key: expected {2 * PUBLIC_KEY_BYTES} hex "
            f"characters, got {len(text)} characters that are not all hex"
        ) from None
    if len(raw) != PUBLIC_KEY_BYTES:
        raise ConfigurationError(
            f"{origin}: an X25519 public key is {2 * PUBLIC_KEY_BYTES} hex characters "
            f"({PUBLIC_KEY_BYTES} bytes), got {len(text)} characters ({len(raw)} bytes)"
        )
    return check_public(raw)


def load_public(hex_or_path: str | bytes | os.PathLike[str]) -> bytes:
    """A peer's 32-byte public key from 64 hex characters, raw bytes, or a `.pub` file path."""
    if isinstance(hex_or_path, bytes | bytearray):
        return check_public(bytes(hex_or_path))
    if isinstance(hex_or_path, str):
        text = hex_or_path.strip()
        if len(text) == 2 * PUBLIC_KEY_BYTES and all(c in "0123456789abcdefABCDEF" for c in text):
            return _parse_hex(text, "public key")
    path = Path(hex_or_path)
    if not path.is_file():
        raise ConfigurationError(
            f"{str(hex_or_path)!r} is neither {2 * PUBLIC_KEY_BYTES} hex characters (an X25519 "
            "public key) nor the path of an existing .pub file"
        )
    try:
        content = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigurationError(f"cannot read public key file {path}: {e}") from e
    if content.startswith("-----BEGIN"):
        raise ConfigurationError(
            f"{path} holds a PEM key; pass the .pub file (hex public key) written by "
            "PartyKey.save, never the private key"
        )
    return _parse_hex(content, f"public key file {path}")
