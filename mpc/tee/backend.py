"""Enclave backends: the interface a trusted execution environment offers the dealer, and errors.

Responsibility: `EnclaveBackend` is what the dealer side needs from a TEE: `launch` the dealer
code (which fixes its measurement), `measure` it, produce a signed `quote` binding a verifier's
nonce, the session id and the enclave's ephemeral X25519 key, and `seal`/`unseal` data to the
measured code. `AttestationError` and its subclasses are every reason a party refuses a dealer;
each names the check that failed (`check`) so that an operator sees what to fix.

Security model: the interface is the same for the simulated backend (`mpc.tee.simulated`, no
hardware protection: a test double) and a real one. A real backend (Gramine on Intel SGX with DCAP
quotes, AMD SEV-SNP) changes who computes the measurement (the CPU at enclave build/launch instead
of Python hashing files), who signs the quote (the platform's attestation key, certified up to the
vendor root, instead of a per-process Ed25519 key) and what `seal` is bound to (a key derived by
the CPU from the enclave identity). The parties' code does not change: they verify a `Quote` under
a `mpc.tee.verify.QuotePolicy`. See docs/tee.md.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import TYPE_CHECKING, ClassVar

from mpc.errors import MpcError

if TYPE_CHECKING:
    from mpc.tee.quote import SignedQuote

__all__ = [
    "AttestationError",
    "ChannelError",
    "DebugQuoteError",
    "EnclaveBackend",
    "EnclaveStateError",
    "KeyBindingError",
    "MalformedQuoteError",
    "MeasurementError",
    "MeasurementNotAllowedError",
    "NonceMismatchError",
    "NonceReplayError",
    "QuoteExpiredError",
    "QuoteSignatureError",
    "SealingError",
    "SecurityVersionError",
    "SessionMismatchError",
    "SimulatedQuoteError",
    "UntrustedPlatformError",
]


# ---- errors ---------------------------------------------------------------------------------


class AttestationError(MpcError):
    """The dealer's enclave could not be attested, or the attested channel failed.

    `check` names the verification step that refused (e.g. "signature", "measurement").
    Messages never contain seeds, keys' private halves or shares.
    """

    check: ClassVar[str] = "attestation"


class MalformedQuoteError(AttestationError):
    """The quote bytes (or its signature field) are not a well-formed, canonical quote."""

    check = "format"


class UntrustedPlatformError(AttestationError):
    """The quote is signed by a platform key the party's policy does not trust."""

    check = "signature"


class QuoteSignatureError(AttestationError):
    """The quote's signature does not verify (the quote was altered or forged)."""

    check = "signature"


class MeasurementNotAllowedError(AttestationError):
    """The enclave runs code (or a configuration) whose measurement is not in the allow-list."""

    check = "measurement"


class SecurityVersionError(AttestationError):
    """The enclave's security version is below the policy's minimum."""

    check = "security version"


class SimulatedQuoteError(AttestationError):
    """The quote comes from a simulated enclave and the policy does not allow simulation."""

    check = "flags"


class DebugQuoteError(AttestationError):
    """The quote comes from a debug enclave (its memory is readable) and debug is not allowed."""

    check = "flags"


class QuoteExpiredError(AttestationError):
    """The quote is expired, older than the policy's maximum age, or issued in the future."""

    check = "expiry"


class NonceReplayError(AttestationError):
    """The quote's nonce was already used in an earlier verification (a replayed quote)."""

    check = "nonce"


class NonceMismatchError(AttestationError):
    """The quote does not answer this verifier's fresh nonce."""

    check = "nonce"


class SessionMismatchError(AttestationError):
    """The quote (or a seed request) belongs to another session."""

    check = "session id"


class KeyBindingError(AttestationError):
    """The key the quote binds, or a party's pinned key, is unusable or does not match."""

    check = "key binding"


class ChannelError(AttestationError):
    """The attested channel failed: malformed message, or the seed did not decrypt (wrong key)."""

    check = "channel"


class MeasurementError(AttestationError):
    """The dealer's measurement cannot be computed (a code file is missing or unreadable)."""

    check = "measurement input"


class SealingError(AttestationError):
    """Sealed data cannot be unsealed (tampered, other label, or other enclave measurement)."""

    check = "sealing"


class EnclaveStateError(AttestationError):
    """The backend was used out of order (e.g. asked for a quote before `launch`)."""

    check = "enclave state"


# ---- the backend interface ------------------------------------------------------------------


class EnclaveBackend(ABC):
    """A trusted execution environment that runs the dealer.

    Life cycle: `launch(config)` once (it fixes the measurement: code + canonical configuration),
    then any number of `quote` calls (one per verifying party, each with that party's nonce and a
    fresh enclave key) and `seal`/`unseal`.
    """

    #: Short backend name written into every quote ("simulated", "gramine-sgx", "sev-snp").
    name: ClassVar[str]

    @abstractmethod
    def launch(self, config: Mapping[str, object]) -> bytes:
        """Start the dealer enclave with this dealer configuration; return its measurement.

        `config` is the dealer configuration measured with the code (see
        `mpc.tee.measurement.dealer_config`). Launching twice raises `EnclaveStateError`.
        """

    @abstractmethod
    def measure(self) -> bytes:
        """The launched enclave's measurement (raises `EnclaveStateError` before `launch`)."""

    @abstractmethod
    def quote(self, nonce: bytes, session_id: bytes, enclave_public_key: bytes) -> SignedQuote:
        """A signed quote binding the measurement, security version, flags, the enclave's
        ephemeral X25519 public key, the verifier's 32-byte nonce and the session id."""

    @abstractmethod
    def seal(self, data: bytes, label: bytes = b"") -> bytes:
        """Encrypt `data` so that only an enclave with the same measurement (on the same
        platform) can `unseal` it; `label` is authenticated and must match at unseal."""

    @abstractmethod
    def unseal(self, blob: bytes, label: bytes = b"") -> bytes:
        """Decrypt what `seal` produced; raises `SealingError` if it was not sealed by this
        measurement and platform under this label, or was altered."""

    @property
    def launched(self) -> bool:
        """True once `launch` succeeded."""
        try:
            self.measure()
        except EnclaveStateError:
            return False
        return True
