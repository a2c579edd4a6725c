"""Key agreement and AEAD set-up of the encrypted channels (`mpc.parties.tcp`, `mpc.tee.channel`).

Responsibility: the primitives both channels build on, in one place: X25519 key pairs and
Diffie-Hellman on raw 32-byte public keys (RFC 7748), HKDF-SHA256 (RFC 5869) that turns the
shared secrets into AES-256-GCM keys (NIST SP 800-38D), and the 96-bit counter nonce of a record
sequence. Each channel keeps its own labels, transcripts and message formats; nothing here
chooses a label or a salt.

Security model: a Diffie-Hellman with a low-order point (an all-zero shared secret) or a key of
the wrong length raises `ValueError`, never yields a key. Keys come from HKDF over the shared
secrets, salted and bound (info) to what the caller says identifies the channel. A counter nonce
is safe only if a key never sees the same counter twice: callers use one key per direction and
counters that only increase.
"""

from __future__ import annotations

from typing import Final

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

#: Bytes of an AES-256-GCM key.
AEAD_KEY_BYTES: Final = 32
#: Bytes of an AES-GCM nonce (96 bits).
AEAD_NONCE_BYTES: Final = 12
#: Bytes of an AES-GCM authentication tag.
AEAD_TAG_BYTES: Final = 16


def ephemeral_key() -> X25519PrivateKey:
    """A fresh X25519 private key (from the operating system's CSPRNG), for one handshake."""
    return X25519PrivateKey.generate()


def raw_public(private: X25519PrivateKey) -> bytes:
    """The 32-byte raw public key of `private`."""
    return private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def x25519(private: X25519PrivateKey, peer_public: bytes) -> bytes:
    """X25519(private, peer_public): the 32-byte shared secret. Raises `ValueError` if
    `peer_public` is not 32 bytes or is a low-order point (all-zero shared secret)."""
    return private.exchange(X25519PublicKey.from_public_bytes(peer_public))


def derive_aeads(secret: bytes, *, salt: bytes, info: bytes, count: int) -> list[AESGCM]:
    """`count` AES-256-GCM keys from HKDF-SHA256(secret, salt, info): the output of
    count * 32 bytes, cut into keys in order."""
    okm = HKDF(
        algorithm=hashes.SHA256(), length=count * AEAD_KEY_BYTES, salt=salt, info=info
    ).derive(secret)
    return [AESGCM(okm[i * AEAD_KEY_BYTES : (i + 1) * AEAD_KEY_BYTES]) for i in range(count)]


def counter_nonce(counter: int) -> bytes:
    """The nonce of record `counter` of a sequence: the counter, 96-bit big-endian."""
    return counter.to_bytes(AEAD_NONCE_BYTES, "big")
