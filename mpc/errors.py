"""Exception types of `mpc`.

Responsibility: one place for every error a user can see, each with a message that says what to
change. The errors of a subsystem that are defined beside it (differential privacy, enclave
attestation, fixed-point encoding, training data, the secure RPC, benchmarks) are importable from
here as well (``from mpc.errors import LedgerTamperedError``), loaded on first access so that
importing this module stays cheap and free of import cycles.
Security model: error messages name parties, operations and shapes, never secret values or
shares.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mpc.bench import BenchmarkError
    from mpc.dp.accountant import (
        BudgetExceededError,
        DPError,
        InvalidPrivacyParameterError,
        LedgerTamperedError,
        MissingSensitivityError,
    )
    from mpc.encoding import FixedPointRangeError
    from mpc.federation.secure_rpc import RemoteError
    from mpc.tee.backend import (
        AttestationError,
        ChannelError,
        DebugQuoteError,
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


class MpcError(Exception):
    """Base class of every error raised by `mpc`."""


class ConfigurationError(MpcError, ValueError):
    """A session, protocol, dealer or party configuration that cannot work."""


class UnsupportedOperationError(MpcError):
    """A protocol was asked for an operation it does not provide."""


class ShapeMismatchError(MpcError, ValueError):
    """Operands of a secure operation have incompatible shapes or belong to different sessions."""


class InvalidDataError(MpcError, ValueError):
    """Input or training data that cannot be used (bad labels, NaN, range, shapes)."""


class FixedPointOverflowError(ConfigurationError):
    """A value's public bound is too large for the share algebra: it could wrap around the
    modulus, or its truncation could fail with more than the accepted probability."""


class InsecureDealerError(ConfigurationError):
    """An insecure dealer was used without the explicit allow-insecure flag."""


class DealerError(MpcError):
    """The dealer cannot provide what a protocol needs, or failed while providing it."""


class CommunicationError(MpcError):
    """A message could not be delivered or received."""


class ReceiveTimeoutError(CommunicationError, TimeoutError):
    """A party waited longer than the receive timeout for a peer's message."""


class PeerFailedError(CommunicationError):
    """A peer reported that it failed (it aborted the run) or its connection closed."""


class ConnectionLostError(PeerFailedError):
    """The connection to a peer ended in the middle of a run without a word from it (its process
    died, or the link between the two was cut): the party that sees it tells its other peers,
    who may not notice by themselves."""


class IntegrityError(CommunicationError):
    """A message failed authentication (bad MAC, wrong tag, replay) and was rejected."""


class DivergenceError(CommunicationError):
    """The parties ran different operations at the same point of a program (for example one
    took another branch of an `if` on `ctx.me`): every party must run the same operations.

    Raised by a mailbox (`mpc.parties.mailbox`) with what it saw: the `peer`, the message `tag`,
    the peer's operation label `theirs` (None: the peer had ended its program, after its
    operation `last_op`); `mpc.parties.channel` then raises one that names the operation.
    """

    def __init__(
        self,
        message: str,
        *,
        peer: str = "",
        tag: tuple[int, ...] = (),
        theirs: str | None = None,
        last_op: int = 0,
    ) -> None:
        super().__init__(message)
        self.peer = peer
        self.tag = tag
        self.theirs = theirs
        self.last_op = last_op


class CheatingDetectedError(MpcError):
    """Opened shares are inconsistent: some party sent a wrong share."""


class PartyFailedError(MpcError):
    """Raised at the caller: a run failed at one party; names the party and the operation."""

    def __init__(self, party: str, operation: str, cause: str, secondary: bool = False) -> None:
        super().__init__(f"party {party!r} failed in operation {operation!r}: {cause}")
        self.party = party
        self.operation = operation
        self.cause = cause
        #: True when this party only stopped because another party failed first.
        self.secondary = secondary

    def __reduce__(self) -> tuple[type[PartyFailedError], tuple[str, str, str, bool]]:
        return (type(self), (self.party, self.operation, self.cause, self.secondary))


#: Errors defined beside their subsystem: name -> defining module.
_ELSEWHERE: dict[str, str] = {
    "DPError": "mpc.dp.accountant",
    "InvalidPrivacyParameterError": "mpc.dp.accountant",
    "MissingSensitivityError": "mpc.dp.accountant",
    "BudgetExceededError": "mpc.dp.accountant",
    "LedgerTamperedError": "mpc.dp.accountant",
    "FixedPointRangeError": "mpc.encoding",
    "RemoteError": "mpc.federation.secure_rpc",
    "AttestationError": "mpc.tee.backend",
    "MalformedQuoteError": "mpc.tee.backend",
    "UntrustedPlatformError": "mpc.tee.backend",
    "QuoteSignatureError": "mpc.tee.backend",
    "MeasurementNotAllowedError": "mpc.tee.backend",
    "SecurityVersionError": "mpc.tee.backend",
    "SimulatedQuoteError": "mpc.tee.backend",
    "DebugQuoteError": "mpc.tee.backend",
    "QuoteExpiredError": "mpc.tee.backend",
    "NonceReplayError": "mpc.tee.backend",
    "NonceMismatchError": "mpc.tee.backend",
    "SessionMismatchError": "mpc.tee.backend",
    "KeyBindingError": "mpc.tee.backend",
    "ChannelError": "mpc.tee.backend",
    "MeasurementError": "mpc.tee.backend",
    "SealingError": "mpc.tee.backend",
    "EnclaveStateError": "mpc.tee.backend",
    "BenchmarkError": "mpc.bench",
}


def __getattr__(name: str) -> Any:
    """The errors defined in other modules, imported when first asked for."""
    module = _ELSEWHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'mpc.errors' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_ELSEWHERE})


__all__ = [
    "AttestationError",
    "BenchmarkError",
    "BudgetExceededError",
    "ChannelError",
    "CheatingDetectedError",
    "CommunicationError",
    "ConfigurationError",
    "ConnectionLostError",
    "DPError",
    "DealerError",
    "DebugQuoteError",
    "DivergenceError",
    "EnclaveStateError",
    "FixedPointOverflowError",
    "FixedPointRangeError",
    "InsecureDealerError",
    "IntegrityError",
    "InvalidDataError",
    "InvalidPrivacyParameterError",
    "KeyBindingError",
    "LedgerTamperedError",
    "MalformedQuoteError",
    "MeasurementError",
    "MeasurementNotAllowedError",
    "MissingSensitivityError",
    "MpcError",
    "NonceMismatchError",
    "NonceReplayError",
    "PartyFailedError",
    "PeerFailedError",
    "QuoteExpiredError",
    "QuoteSignatureError",
    "ReceiveTimeoutError",
    "RemoteError",
    "SealingError",
    "SecurityVersionError",
    "SessionMismatchError",
    "ShapeMismatchError",
    "SimulatedQuoteError",
    "UnsupportedOperationError",
    "UntrustedPlatformError",
]
