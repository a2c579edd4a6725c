"""The simulated enclave backend: the attestation protocol without any hardware protection.

Responsibility: `SimulatedBackend` implements `EnclaveBackend` in plain Python so that the whole
attested-dealer flow (measure, quote, verify, verified channel, seal) runs and is tested without
a TEE. It is meant to run inside the dealer's Ray actor: `launch` hashes the dealer code files it
finds on disk with the dealer configuration (`mpc.tee.measurement`); `quote` signs with a platform
Ed25519 key generated once per process (`platform_public_key`); every quote is labelled
`simulated=True` and `debug=True`; `seal` uses AES-256-GCM under a key derived (HKDF-SHA256) from
the platform key and the measurement.

Security model: none against the host. The platform key lives in the same process as the dealer,
so whoever controls that process (or the machine) can sign any quote, read every seed and unseal
everything; the measurement is computed by the code it measures. The key is made at run time: a
federated party pins the one `mpc dealer serve` prints; a Ray party that allows simulation learns
it from this backend (`QuotePolicy.simulated_platform_keys`, see `mpc.tee.verify`) and accepts
such a learned key only on quotes marked SIMULATED and DEBUG, so a dealer that reports its own key
cannot pass off a "real" enclave quote. What the simulation does check: that all parties agree on
the code and configuration of a dealer that follows the protocol, that quotes are fresh, bound to
this session and to the key the seeds are encrypted under, and that seeds never travel in clear.
Because of this, verifiers refuse its quotes unless the policy says `allow_simulated=True,
allow_debug=True` explicitly. A real backend replaces: the measurement (computed by the CPU), the
platform key (hardware attestation key certified by the vendor), the `debug` flag (read from the
enclave's attributes), and the seal key (derived by the CPU from the enclave identity); see
docs/tee.md.
"""

from __future__ import annotations

import os
import secrets
import threading
import time
from collections.abc import Callable, Mapping

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from mpc.errors import ConfigurationError
from mpc.tee.backend import EnclaveBackend, EnclaveStateError, SealingError
from mpc.tee.measurement import DEALER_SECURITY_VERSION, measure_dealer
from mpc.tee.quote import Quote, SignedQuote, ed25519_public_bytes, sign_quote

__all__ = ["DEFAULT_QUOTE_LIFETIME", "SimulatedBackend", "process_platform_key"]

#: Seconds a simulated quote stays valid (the verifier's `max_age` also applies).
DEFAULT_QUOTE_LIFETIME = 120
_SEAL_MAGIC = b"mpc-seal1"
_SEAL_NONCE_BYTES = 12
_SEAL_INFO = b"mpc.tee.simulated.seal.v1"

_process_key_lock = threading.Lock()
_process_key: tuple[int, Ed25519PrivateKey] | None = None


def process_platform_key() -> Ed25519PrivateKey:
    """This process's simulated platform key (generated on first use; a forked child makes its
    own). It never leaves the process; only its public key is exported."""
    global _process_key
    with _process_key_lock:
        pid = os.getpid()
        if _process_key is None or _process_key[0] != pid:
            _process_key = (pid, Ed25519PrivateKey.generate())
        return _process_key[1]


class SimulatedBackend(EnclaveBackend):
    """An `EnclaveBackend` without hardware: labels every quote SIMULATED and DEBUG."""

    name = "simulated"

    def __init__(
        self,
        platform_key: Ed25519PrivateKey | None = None,
        *,
        root: str | os.PathLike[str] | None = None,
        security_version: int = DEALER_SECURITY_VERSION,
        quote_lifetime: int = DEFAULT_QUOTE_LIFETIME,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """`platform_key`: None for the per-process key. `root`: where the dealer code is
        measured (None: the imported `mpc` package). `clock`: Unix time, for quote timestamps."""
        if isinstance(security_version, bool) or not isinstance(security_version, int):
            raise ConfigurationError("security_version must be an int")
        if isinstance(quote_lifetime, bool) or not isinstance(quote_lifetime, int):
            raise ConfigurationError("quote_lifetime must be an int number of seconds")
        if quote_lifetime < 1:
            raise ConfigurationError(f"quote_lifetime must be >= 1 second, got {quote_lifetime}")
        self._platform_key = platform_key if platform_key is not None else process_platform_key()
        self._root = root
        self._security_version = security_version
        self._lifetime = quote_lifetime
        self._clock = clock
        self._measurement: bytes | None = None
        self._seal_key: AESGCM | None = None
        self._lock = threading.Lock()

    @property
    def platform_public_key(self) -> bytes:
        """The 32-byte Ed25519 quote-signing key: pinned by parties that know it in advance
        (`QuotePolicy.trusted_platform_keys`), or learned, for SIMULATED, DEBUG quotes only
        (`QuotePolicy.simulated_platform_keys`)."""
        return ed25519_public_bytes(self._platform_key)

    @property
    def security_version(self) -> int:
        return self._security_version

    def launch(self, config: Mapping[str, object]) -> bytes:
        with self._lock:
            if self._measurement is not None:
                raise EnclaveStateError("this simulated enclave was already launched")
            measurement = measure_dealer(self._root, config)
            raw = self._platform_key.private_bytes(
                serialization.Encoding.Raw,
                serialization.PrivateFormat.Raw,
                serialization.NoEncryption(),
            )
            seal_key = HKDF(
                algorithm=hashes.SHA256(), length=32, salt=measurement, info=_SEAL_INFO
            ).derive(raw)
            self._seal_key = AESGCM(seal_key)
            self._measurement = measurement
            return measurement

    def measure(self) -> bytes:
        if self._measurement is None:
            raise EnclaveStateError("the simulated enclave has not been launched (call launch)")
        return self._measurement

    def quote(self, nonce: bytes, session_id: bytes, enclave_public_key: bytes) -> SignedQuote:
        measurement = self.measure()
        issued = int(self._clock())
        body = Quote(
            backend=self.name,
            measurement=measurement,
            security_version=self._security_version,
            debug=True,
            simulated=True,
            enclave_public_key=enclave_public_key,
            nonce=nonce,
            session_id=session_id,
            issued_at=issued,
            expires_at=issued + self._lifetime,
        ).to_bytes()
        return SignedQuote(body, sign_quote(body, self._platform_key))

    def _aad(self, label: bytes) -> bytes:
        return _SEAL_MAGIC + self.measure() + len(label).to_bytes(4, "big") + label

    def _key(self) -> AESGCM:
        self.measure()
        if self._seal_key is None:  # pragma: no cover - set together with the measurement
            raise EnclaveStateError("the simulated enclave has no seal key")
        return self._seal_key

    def seal(self, data: bytes, label: bytes = b"") -> bytes:
        if not isinstance(data, bytes) or not isinstance(label, bytes):
            raise ConfigurationError("seal takes bytes data and a bytes label")
        nonce = secrets.token_bytes(_SEAL_NONCE_BYTES)
        return _SEAL_MAGIC + nonce + self._key().encrypt(nonce, data, self._aad(label))

    def unseal(self, blob: bytes, label: bytes = b"") -> bytes:
        key = self._key()
        head = len(_SEAL_MAGIC) + _SEAL_NONCE_BYTES
        if not isinstance(blob, bytes) or len(blob) < head + 16 or not blob.startswith(_SEAL_MAGIC):
            raise SealingError("not a blob sealed by the simulated enclave")
        if not isinstance(label, bytes):
            raise ConfigurationError("unseal takes a bytes label")
        nonce = blob[len(_SEAL_MAGIC) : head]
        try:
            return key.decrypt(nonce, blob[head:], self._aad(label))
        except InvalidTag:
            raise SealingError(
                "cannot unseal: the blob was altered, sealed under another label, or sealed by "
                "an enclave with another measurement or platform key"
            ) from None
