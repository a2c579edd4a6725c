"""Enclave attestation for the trusted dealer: measurement, quotes, verification, verified channel.

Responsibility: let every party check *what code and configuration* the dealer runs before it
accepts a PRG seed from it, and receive that seed only encrypted to the attested enclave.

* `mpc.tee.measurement`: `measure_dealer` (SHA-256 of the dealer's import closure, the versions
  of its dependencies and its canonical configuration), `measurement_report` for
  `mpc tee measure`.
* `mpc.tee.quote`: the `Quote` record, canonical msgpack encoding, platform signature.
* `mpc.tee.backend`: the `EnclaveBackend` interface and the `AttestationError` family.
* `mpc.tee.simulated`: `SimulatedBackend` (no hardware; quotes labelled SIMULATED and DEBUG).
* `mpc.tee.verify`: `QuotePolicy`, `verify_quote` (ordered checks, deny by default; the
  platform keys come from the party's own configuration, never from the dealer).
* `mpc.tee.channel`: `SeedHandshake` (party), `EnclaveSeedService` (dealer), `open_seed`,
  `seal_seed_for_party`.

Security model: see each module and docs/tee.md. In short: with the simulated backend, the
attestation proves nothing against whoever controls the dealer's process (the platform key lives
there); it exercises the protocol so that a hardware backend (Gramine/SGX with DCAP, SEV-SNP)
plugs in behind `EnclaveBackend` and the signature step of `verify_quote`, without changing the
parties. Importing this package starts nothing and imports no Ray.
"""

from __future__ import annotations

from mpc.tee.backend import (
    AttestationError,
    ChannelError,
    DebugQuoteError,
    EnclaveBackend,
    EnclaveStateError,
    KeyBindingError,
    MalformedQuoteError,
    MeasurementError,
    MeasurementNotAllowedError,
    NonceMismatchError,
    NonceReplayError,
    QuoteExpiredError,
    QuoteSignatureError,
    SealingError,
    SecurityVersionError,
    SessionMismatchError,
    SimulatedQuoteError,
    UntrustedPlatformError,
)
from mpc.tee.channel import (
    AttestedSeed,
    EnclaveSeedService,
    SealedSeed,
    SeedHandshake,
    SeedRequest,
    attest_and_seal,
    open_seed,
    seal_seed_for_party,
)
from mpc.tee.measurement import (
    DEALER_CODE_PATTERNS,
    DEALER_ENTRY_MODULES,
    DEALER_SECURITY_VERSION,
    dealer_config,
    dealer_dependencies,
    dealer_modules,
    measure_dealer,
    measurement_hex,
    measurement_report,
)
from mpc.tee.quote import Quote, SignedQuote, new_nonce
from mpc.tee.simulated import SimulatedBackend
from mpc.tee.verify import (
    PLATFORM_KEY_REQUIRED,
    PermissiveAttestationWarning,
    QuotePolicy,
    VerifiedQuote,
    policy_for_dealer,
    verify_quote,
)

__all__ = [
    "DEALER_CODE_PATTERNS",
    "DEALER_ENTRY_MODULES",
    "DEALER_SECURITY_VERSION",
    "PLATFORM_KEY_REQUIRED",
    "AttestationError",
    "AttestedSeed",
    "ChannelError",
    "DebugQuoteError",
    "EnclaveBackend",
    "EnclaveSeedService",
    "EnclaveStateError",
    "KeyBindingError",
    "MalformedQuoteError",
    "MeasurementError",
    "MeasurementNotAllowedError",
    "NonceMismatchError",
    "NonceReplayError",
    "PermissiveAttestationWarning",
    "Quote",
    "QuoteExpiredError",
    "QuotePolicy",
    "QuoteSignatureError",
    "SealedSeed",
    "SealingError",
    "SecurityVersionError",
    "SeedHandshake",
    "SeedRequest",
    "SessionMismatchError",
    "SignedQuote",
    "SimulatedBackend",
    "SimulatedQuoteError",
    "UntrustedPlatformError",
    "VerifiedQuote",
    "attest_and_seal",
    "dealer_config",
    "dealer_dependencies",
    "dealer_modules",
    "measure_dealer",
    "measurement_hex",
    "measurement_report",
    "new_nonce",
    "open_seed",
    "policy_for_dealer",
    "seal_seed_for_party",
    "verify_quote",
]
