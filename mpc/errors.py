"""Exception types of `mpc`.

Responsibility: one place for every error a user can see, each with a message that says what to
change. Security model: error messages name parties, operations and shapes, never secret values or
shares.
"""

from __future__ import annotations


class MpcError(Exception):
    """Base class of every error raised by `mpc`."""


class ConfigurationError(MpcError, ValueError):
    """A session, protocol, dealer or party configuration that cannot work."""


class UnsupportedOperationError(MpcError):
    """A protocol was asked for an operation it does not provide."""


class ShapeMismatchError(MpcError, ValueError):
    """Operands of a secure operation have incompatible shapes or belong to different sessions."""


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


class IntegrityError(CommunicationError):
    """A message failed authentication (bad MAC, wrong tag, replay) and was rejected."""


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
