"""Quote verification: a party's policy and the ordered checks it applies to a dealer's quote.

Responsibility: `QuotePolicy` says what a party accepts (allowed measurements, trusted platform
keys, minimum security version, whether simulated or debug enclaves are acceptable, maximum
quote age); `verify_quote` checks a signed quote against it and returns the `VerifiedQuote`,
whose `enclave_public_key` is the only key a party may derive its seed channel with.

Checks, in this order (the first failure raises; each is its own `AttestationError` subclass
whose message starts with "attestation refused at check '<name>'"):

0. format of the signature field (`MalformedQuoteError`);
1. signature: the signer key is one of the trusted platform keys, or one of the simulated-only
   keys (`UntrustedPlatformError` otherwise), and its Ed25519 signature verifies
   (`QuoteSignatureError`); only then are the bytes parsed (`MalformedQuoteError`); a quote
   signed by a simulated-only key must be marked both SIMULATED and DEBUG
   (`UntrustedPlatformError` otherwise);
2. measurement in the allow-list (`MeasurementNotAllowedError`);
3. security version >= minimum (`SecurityVersionError`);
4. flags: simulated refused unless `allow_simulated` (`SimulatedQuoteError`), debug refused
   unless `allow_debug` (`DebugQuoteError`);
5. expiry and age: not expired, not older than `max_age`, not issued in the future beyond
   `max_clock_skew` (`QuoteExpiredError`);
6. nonce: never seen before (`NonceReplayError`), and equal to this verifier's fresh nonce
   (`NonceMismatchError`); the nonce is then recorded as seen (it is consumed even if a later
   check fails);
7. session id equal to this session's (`SessionMismatchError`);
8. key binding: the quoted enclave key is a usable X25519 key (`KeyBindingError`).

Security model: deny by default. A policy must name at least one measurement and one platform
key; simulated and debug enclaves are refused unless allowed by name; nothing is parsed before
its signature is checked. The root of trust is `trusted_platform_keys`, which must come from the
verifying party's own configuration (the vendor's attestation root for a hardware backend),
never from the dealer or from whoever drives the session: a dealer that reports its own key
could sign any quote. The only exception is `simulated_platform_keys`, for tests: the per-process
key of the simulated backend, which a party may learn from that backend, is accepted only on
quotes marked SIMULATED *and* DEBUG, and only by a policy with `allow_simulated=True` and
`allow_debug=True`; a "not simulated" quote signed by such a key is refused at the signature
check. `VerifiedQuote` is only a record of what was verified; the channel
(`mpc.tee.channel.open_seed`) also checks that the sealed seed refers to exactly this quote.
A real backend changes step 1 (verify the vendor certificate chain and the hardware report, and
that the report data binds the quote bytes; see docs/tee.md); steps 2-8 stay the same.
"""

from __future__ import annotations

import hmac
import os
import time
import warnings
from collections.abc import Iterable, MutableSet
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey

from mpc.errors import ConfigurationError
from mpc.parties.keys import fingerprint
from mpc.tee.backend import (
    DebugQuoteError,
    KeyBindingError,
    MalformedQuoteError,
    MeasurementNotAllowedError,
    NonceMismatchError,
    NonceReplayError,
    QuoteExpiredError,
    SecurityVersionError,
    SessionMismatchError,
    SimulatedQuoteError,
    UntrustedPlatformError,
)
from mpc.tee.measurement import DEALER_SECURITY_VERSION, dealer_config, measure_dealer
from mpc.tee.quote import (
    MAX_QUOTE_BYTES,
    MEASUREMENT_LENGTHS,
    NONCE_BYTES,
    Quote,
    check_signature,
    signer_key,
)

__all__ = [
    "DEFAULT_MAX_AGE",
    "PLATFORM_KEY_REQUIRED",
    "PermissiveAttestationWarning",
    "QuotePolicy",
    "VerifiedQuote",
    "policy_for_dealer",
    "verify_quote",
]

DEFAULT_MAX_AGE = 120.0
DEFAULT_MAX_CLOCK_SKEW = 30.0

#: Why an enclave dealer cannot be trusted without pinned platform keys, and what to set.
PLATFORM_KEY_REQUIRED = (
    "dealer='enclave' needs the platform keys that sign the enclave's quotes, pinned in the "
    "parties' own configuration (never taken from the dealer or the driver: a dealer that "
    "reports its own key can sign any quote): pass enclave_platform_keys=[<32-byte Ed25519 "
    "public key, bytes or 64 hex digits>, ...] to Session (a federated party: platform_keys in "
    "its policy's [enclave] table); for tests with the simulated enclave pass "
    "allow_simulated_enclave=True instead (scenarios/enclave_dealer.py: "
    "--allow-simulated-enclave; its key is then accepted only on SIMULATED, DEBUG quotes)"
)


class PermissiveAttestationWarning(UserWarning):
    """A session accepts simulated or debug enclaves: the dealer is not protected by hardware."""


def _refuse(check: str, text: str) -> str:
    return f"attestation refused at check '{check}': {text}"


def _frozen_keys(
    name: str, values: Iterable[bytes], lengths: tuple[int, ...], *, allow_empty: bool = False
) -> frozenset[bytes]:
    if isinstance(values, bytes | str):
        raise ConfigurationError(f"QuotePolicy.{name} must be a set of byte strings, not one")
    out = frozenset(values)
    for value in out:
        if not isinstance(value, bytes) or len(value) not in lengths:
            raise ConfigurationError(
                f"QuotePolicy.{name}: every entry must be bytes of length "
                f"{' or '.join(map(str, lengths))}, got {value!r:.80}"
            )
    if not out and not allow_empty:
        raise ConfigurationError(
            f"QuotePolicy.{name} is empty: a policy that trusts nothing refuses every quote; "
            "name what you accept (deny by default)"
        )
    return out


@dataclass(frozen=True)
class QuotePolicy:
    """What a party accepts from a dealer enclave. Everything not named is refused.

    `trusted_platform_keys`: the pinned roots of trust, from this party's own configuration;
    a quote they sign is judged by the other checks only. `simulated_platform_keys`: keys learned
    from the simulated backend (tests only), trusted only for quotes marked SIMULATED and DEBUG;
    they need `allow_simulated=True` and `allow_debug=True`. At least one key must be named.
    """

    allowed_measurements: AbstractSet[bytes]
    trusted_platform_keys: AbstractSet[bytes]
    min_security_version: int
    allow_simulated: bool = False
    allow_debug: bool = False
    max_age: float = DEFAULT_MAX_AGE
    max_clock_skew: float = DEFAULT_MAX_CLOCK_SKEW
    simulated_platform_keys: AbstractSet[bytes] = frozenset()

    def __post_init__(self) -> None:
        measurements = _frozen_keys(
            "allowed_measurements", self.allowed_measurements, MEASUREMENT_LENGTHS
        )
        simulated = _frozen_keys(
            "simulated_platform_keys", self.simulated_platform_keys, (32,), allow_empty=True
        )
        keys = _frozen_keys(
            "trusted_platform_keys", self.trusted_platform_keys, (32,), allow_empty=bool(simulated)
        )
        object.__setattr__(self, "allowed_measurements", measurements)
        object.__setattr__(self, "trusted_platform_keys", keys)
        object.__setattr__(self, "simulated_platform_keys", simulated)
        version = self.min_security_version
        if isinstance(version, bool) or not isinstance(version, int) or version < 0:
            raise ConfigurationError(
                f"QuotePolicy.min_security_version must be an int >= 0, got {version!r}"
            )
        for name in ("allow_simulated", "allow_debug"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigurationError(f"QuotePolicy.{name} must be True or False")
        if simulated and not (self.allow_simulated and self.allow_debug):
            raise ConfigurationError(
                "QuotePolicy.simulated_platform_keys (keys learned from the simulated backend) "
                "sign only SIMULATED, DEBUG quotes: they need allow_simulated=True and "
                "allow_debug=True; pin a real platform key in trusted_platform_keys instead"
            )
        for name in ("max_age", "max_clock_skew"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
                raise ConfigurationError(f"QuotePolicy.{name} must be > 0 seconds, got {value!r}")

    @property
    def permissive(self) -> bool:
        """True if simulated or debug enclaves are accepted (no hardware protection)."""
        return self.allow_simulated or self.allow_debug

    def startup_notice(self) -> str | None:
        """The sentence a session prints (and warns) at start-up if the policy is permissive."""
        flags = (("SIMULATED", self.allow_simulated), ("DEBUG", self.allow_debug))
        allowed = [name for name, on in flags if on]
        if not allowed:
            return None
        return (
            f"the enclave dealer policy accepts {' and '.join(allowed)} quotes: the dealer's "
            "seeds are NOT protected by hardware (anyone controlling the dealer's process can "
            "read them); use this for tests and demonstrations only"
        )

    def warn_if_permissive(self, stacklevel: int = 2) -> None:
        """Issue a `PermissiveAttestationWarning` if simulated or debug quotes are accepted."""
        notice = self.startup_notice()
        if notice is not None:
            warnings.warn(notice, PermissiveAttestationWarning, stacklevel=stacklevel + 1)


def policy_for_dealer(
    protocol: str,
    n: int,
    t: int,
    *,
    trusted_platform_keys: Iterable[bytes],
    min_security_version: int = DEALER_SECURITY_VERSION,
    allow_simulated: bool = False,
    allow_debug: bool = False,
    extra_measurements: Iterable[bytes] = (),
    root: str | os.PathLike[str] | None = None,
    max_age: float = DEFAULT_MAX_AGE,
    simulated_platform_keys: Iterable[bytes] = (),
) -> QuotePolicy:
    """The policy of a party that computes the expected dealer measurement itself, from its own
    checkout (`root`, default the imported package) and environment, and the session's
    (protocol, n, t). `trusted_platform_keys` come from the party's own configuration;
    `simulated_platform_keys` (see `QuotePolicy`) only sign SIMULATED, DEBUG quotes."""
    expected = measure_dealer(root, dealer_config(protocol, n, t))
    return QuotePolicy(
        allowed_measurements=frozenset({expected, *extra_measurements}),
        trusted_platform_keys=frozenset(trusted_platform_keys),
        min_security_version=min_security_version,
        allow_simulated=allow_simulated,
        allow_debug=allow_debug,
        max_age=max_age,
        simulated_platform_keys=frozenset(simulated_platform_keys),
    )


@dataclass(frozen=True)
class VerifiedQuote:
    """A quote that passed every check of a policy, with the key it binds."""

    quote: Quote
    quote_hash: bytes
    platform_key: bytes
    policy: QuotePolicy = field(repr=False)

    @property
    def enclave_public_key(self) -> bytes:
        """The enclave's ephemeral X25519 key: the only key to derive the seed channel with."""
        return self.quote.enclave_public_key

    @property
    def measurement(self) -> bytes:
        return self.quote.measurement

    def summary(self) -> str:
        """One line for logs: what was verified (no secrets)."""
        q = self.quote
        flags = ",".join(q.flag_names()) or "none"
        return (
            f"attestation verified: backend={q.backend} measurement={q.measurement.hex()} "
            f"security_version={q.security_version} flags={flags} "
            f"platform_key={fingerprint(self.platform_key)} "
            f"enclave_key={fingerprint(q.enclave_public_key)} "
            f"session={fingerprint(q.session_id)} issued_at={q.issued_at} "
            f"expires_at={q.expires_at}"
        )


def _short(values: Iterable[bytes]) -> str:
    return ", ".join(sorted(v.hex()[:16] + "…" for v in values))


def verify_quote(
    quote_bytes: bytes,
    signature: bytes,
    policy: QuotePolicy,
    expected_nonce: bytes,
    session_id: bytes,
    now: float | None,
    seen_nonces: MutableSet[bytes],
) -> VerifiedQuote:
    """Verify a signed quote against `policy` (checks in the order of the module docstring).

    `expected_nonce`: the 32 fresh random bytes this verifier sent (`mpc.tee.quote.new_nonce`).
    `now`: Unix time (None: the current time). `seen_nonces`: every nonce this verifier accepted
    before; the quote's nonce is added once it passes the nonce check.
    """
    if not isinstance(policy, QuotePolicy):
        raise ConfigurationError("verify_quote needs a QuotePolicy")
    if not isinstance(expected_nonce, bytes) or len(expected_nonce) != NONCE_BYTES:
        raise ConfigurationError(f"expected_nonce must be {NONCE_BYTES} fresh random bytes")
    if not isinstance(session_id, bytes) or not session_id:
        raise ConfigurationError("session_id must be non-empty bytes")
    current = time.time() if now is None else float(now)

    # 0-1. signature (before anything in the quote is parsed)
    if not isinstance(quote_bytes, bytes) or not 0 < len(quote_bytes) <= MAX_QUOTE_BYTES:
        raise MalformedQuoteError(
            _refuse("format", f"the quote must be 1 to {MAX_QUOTE_BYTES} bytes")
        )
    try:
        platform = signer_key(signature)
    except MalformedQuoteError as exc:
        raise MalformedQuoteError(_refuse("format", str(exc))) from None
    simulated_only = False
    if platform not in policy.trusted_platform_keys:
        if platform not in policy.simulated_platform_keys:
            pinned = sorted(fingerprint(k) for k in policy.trusted_platform_keys)
            raise UntrustedPlatformError(
                _refuse(
                    "signature",
                    f"the quote is signed by platform key {fingerprint(platform)}, which this "
                    f"party does not trust (pinned: {', '.join(pinned) or 'none'}; pin the "
                    "platform keys you trust in your own configuration: a Session's "
                    "enclave_platform_keys=[...], a federated policy's [enclave] platform_keys)",
                )
            )
        simulated_only = True
    check_signature(quote_bytes, signature)
    try:
        quote = Quote.from_bytes(quote_bytes)
    except MalformedQuoteError as exc:
        raise MalformedQuoteError(_refuse("format", str(exc))) from None
    if simulated_only and not (quote.simulated and quote.debug):
        raise UntrustedPlatformError(
            _refuse(
                "signature",
                f"the quote claims simulated={quote.simulated}, debug={quote.debug} but is "
                f"signed by {fingerprint(platform)}, a key learned from the simulated backend, "
                "which this party trusts only for SIMULATED, DEBUG quotes; a real enclave's "
                "platform key must be pinned in your own configuration (a Session's "
                "enclave_platform_keys=[...], a federated policy's [enclave] platform_keys)",
            )
        )

    # 2. measurement
    if quote.measurement not in policy.allowed_measurements:
        raise MeasurementNotAllowedError(
            _refuse(
                "measurement",
                f"the enclave runs code/configuration with measurement {quote.measurement.hex()}"
                f", which is not in this party's allow-list ({_short(policy.allowed_measurements)})"
                "; the dealer's source or configuration differs from yours (compare with "
                "`mpc tee measure --files`)",
            )
        )
    # 3. security version
    if quote.security_version < policy.min_security_version:
        raise SecurityVersionError(
            _refuse(
                "security version",
                f"the enclave has security version {quote.security_version}, below the "
                f"minimum {policy.min_security_version}; update the dealer",
            )
        )
    # 4. flags
    if quote.simulated and not policy.allow_simulated:
        raise SimulatedQuoteError(
            _refuse(
                "flags",
                f"the quote comes from a SIMULATED enclave (backend {quote.backend!r}: no "
                "hardware protection); pass allow_simulated=True explicitly for tests only",
            )
        )
    if quote.debug and not policy.allow_debug:
        raise DebugQuoteError(
            _refuse(
                "flags",
                "the quote comes from a DEBUG enclave (its memory can be read by the host); "
                "pass allow_debug=True explicitly for tests only",
            )
        )
    # 5. expiry and age
    if current >= quote.expires_at:
        raise QuoteExpiredError(
            _refuse("expiry", f"the quote expired at {quote.expires_at} (now {current:.0f})")
        )
    if current - quote.issued_at > policy.max_age:
        raise QuoteExpiredError(
            _refuse(
                "expiry",
                f"the quote was issued at {quote.issued_at}, more than {policy.max_age:g} s "
                f"ago (now {current:.0f})",
            )
        )
    if quote.issued_at - current > policy.max_clock_skew:
        raise QuoteExpiredError(
            _refuse(
                "expiry",
                f"the quote claims to be issued at {quote.issued_at}, in the future (now "
                f"{current:.0f}, tolerated clock skew {policy.max_clock_skew:g} s)",
            )
        )
    # 6. nonce freshness
    if quote.nonce in seen_nonces:
        raise NonceReplayError(
            _refuse("nonce", "the quote answers a nonce that was already used (replayed quote)")
        )
    if not hmac.compare_digest(quote.nonce, expected_nonce):
        raise NonceMismatchError(
            _refuse("nonce", "the quote does not answer this party's fresh nonce (stale quote)")
        )
    seen_nonces.add(quote.nonce)
    # 7. session
    if not hmac.compare_digest(quote.session_id, session_id):
        raise SessionMismatchError(
            _refuse(
                "session id",
                f"the quote is for session {fingerprint(quote.session_id)}, not this session "
                f"({fingerprint(session_id)})",
            )
        )
    # 8. key binding
    try:
        X25519PublicKey.from_public_bytes(quote.enclave_public_key)
    except ValueError as exc:
        raise KeyBindingError(
            _refuse("key binding", f"the quoted enclave key is not an X25519 key: {exc}")
        ) from None
    return VerifiedQuote(
        quote=quote, quote_hash=quote.digest(), platform_key=platform, policy=policy
    )
