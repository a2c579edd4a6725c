"""Party-side execution of one SPMD program: shared by the in-process and the Ray runtimes.

Responsibility: build the protocol instance, channel and context of one party for one run,
execute the program, tell the peers when it has ended (`PartyChannel.finish`), and turn any
failure into an abort that reaches every peer plus one `PartyFailedError` naming this party and
the operation that failed (the one the exception escaped from; for a failure outside every
operation, the program API call it came from, placed after the last operation that
communicated).
Security model: runs inside the party; it holds the party's private data, its dealer seed and
its shares. The program's return value leaves the party, so it must not contain `Secret`s.
"""

from __future__ import annotations

import traceback
import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from mpc.dealers.base import DealerClient
from mpc.encoding import FixedPoint
from mpc.errors import (
    CommunicationError,
    ConfigurationError,
    ConnectionLostError,
    DealerError,
    IntegrityError,
    MpcError,
    PartyFailedError,
    PeerFailedError,
)
from mpc.parties.channel import PartyChannel
from mpc.parties.transport import Transport
from mpc.program import MaskedMatrix, PartyContext, Secret
from mpc.protocols.registry import get_protocol
from mpc.rng import Prg, new_seed
from mpc.stats import PartyStats

Program = Callable[..., Any]
#: (program output, reveal log of (array returned, copy)) -> what may leave the party.
OutputFilter = Callable[[Any, list[tuple[np.ndarray, np.ndarray]]], Any]
DEFAULT_FIXED_POINT = FixedPoint()
#: Errors whose text may cross to peers when a runner keeps its errors private.
SHARED_ERRORS: tuple[type[MpcError], ...] = (
    CommunicationError,
    IntegrityError,
    DealerError,
    ConfigurationError,
)


@dataclass(frozen=True)
class SessionConfig:
    """What every party of a session agrees on."""

    parties: tuple[str, ...]
    protocol: str
    threshold: int
    fixed_point: FixedPoint = DEFAULT_FIXED_POINT
    timeout: float = 30.0

    def __post_init__(self) -> None:
        if len(set(self.parties)) != len(self.parties):
            raise ConfigurationError(f"party names must be unique, got {list(self.parties)}")
        if self.timeout <= 0:
            raise ConfigurationError(f"the receive timeout must be positive, got {self.timeout}")


@dataclass
class PartyOutcome:
    """What one party reports back after a run."""

    output: Any
    stats: PartyStats


class PartyRunner:
    """Runs programs at one party over an established transport."""

    def __init__(
        self,
        rank: int,
        config: SessionConfig,
        transport: Transport,
        dealer: DealerClient | None,
        private: Mapping[str, Any] | None = None,
        output_filter: OutputFilter | None = None,
        private_errors: bool = False,
    ) -> None:
        self.rank = rank
        #: Across organisations the text of an exception (which may quote private data: a row
        #: that failed to parse, a column's largest value, a file path) stays in this party's
        #: own log; peers are told only its type and operation, unless it is one of
        #: SHARED_ERRORS (transport, integrity, dealer and configuration errors, whose text
        #: mpc writes from public facts).
        self.private_errors = private_errors
        #: Checks what a program returns against the reveal log (runs across organisations:
        #: `mpc.federation.outputs.only_revealed`).
        self.output_filter = output_filter
        self.config = config
        self.transport = transport
        self.dealer = dealer
        self.private = dict(private or {})
        self._protocol_cls = get_protocol(config.protocol)
        self._prg = Prg(new_seed())

    @property
    def name(self) -> str:
        return self.config.parties[self.rank]

    def run(
        self,
        run_id: int,
        program: Program,
        args: tuple[Any, ...] = (),
        kwargs: Mapping[str, Any] | None = None,
    ) -> PartyOutcome:
        channel = PartyChannel(self.transport, run_id, self.config.timeout)
        if self.dealer is not None:
            self.dealer.begin_run(run_id)
        phase = "setup"
        try:
            protocol = self._protocol_cls(
                channel, self._prg.derive(("run", run_id)), self.dealer, self.config.threshold
            )
            ctx = PartyContext(
                self.config.parties,
                self.rank,
                protocol,
                channel,
                self.config.fixed_point,
                self.private,
            )
            if self.output_filter is not None:
                ctx.revealed = []  # keep the reveal log the filter checks against
            phase = "program"
            output = program(ctx, *args, **(kwargs or {}))
            phase = "output"
            _refuse_secrets(output)
            if self.output_filter is not None:
                assert ctx.revealed is not None
                output = self.output_filter(output, ctx.revealed)
            channel.finish()
            return PartyOutcome(output, channel.stats)
        except BaseException as exc:
            operation = _failed_in(channel, exc, phase)
            cause = exc.cause if isinstance(exc, PartyFailedError) else _describe(exc)
            # an echo of a peer's failure; a connection lost without a word is this party's
            # own finding (its other peers may not see it), so it is reported to them
            secondary = (
                isinstance(exc, PeerFailedError) and not isinstance(exc, ConnectionLostError)
            ) or (isinstance(exc, PartyFailedError) and exc.secondary)
            if not secondary:
                told = cause
                if self.private_errors and not isinstance(exc, SHARED_ERRORS):
                    told = f"{type(exc).__name__} (details in party {self.name!r}'s own log)"
                self.transport.abort(f"{told} (in {operation})", run_id)
            raise PartyFailedError(self.name, operation, cause, secondary) from exc


#: Names of the `mpc.program` methods behind Python operators, as a program would say them.
_API_NAMES = {
    "__add__": "add",
    "__radd__": "add",
    "__sub__": "sub",
    "__rsub__": "sub",
    "__neg__": "neg",
    "__mul__": "mul",
    "__rmul__": "mul",
    "__truediv__": "div",
    "__matmul__": "matmul",
    "__rmatmul__": "matmul",
    "__getitem__": "index",
    "__lt__": "compare",
    "__gt__": "compare",
}


def _failed_in(channel: PartyChannel, exc: BaseException, phase: str) -> str:
    """The operation to name for `exc`: the one it escaped from, else what it was raised in
    ('reveal (local, after input #1)', 'program code (after mul #3)', 'setup', ...)."""
    inside = channel.failed_operation(exc)
    if inside is not None:
        return inside
    if phase == "setup":
        return "setup"
    last = channel.last_operation
    after = f" (after {last})" if last else ""
    if phase == "output":
        return f"program output{after}"
    api = _api_call(exc)
    if api is not None:
        return channel.local_label(api)
    return f"program code{after}"


def _api_call(exc: BaseException) -> str | None:
    """The `mpc.program` method that the program (or a library it called) called when `exc`
    was raised, e.g. 'reveal' for a bad `ctx.reveal(x, to=...)`; None if it was not raised
    inside one."""
    for frame, _ in traceback.walk_tb(exc.__traceback__):
        if frame.f_globals.get("__name__") == "mpc.program":
            name = frame.f_code.co_name
            return _API_NAMES.get(name, name.strip("_"))
    return None


def _describe(exc: BaseException) -> str:
    if isinstance(exc, MpcError):
        return f"{type(exc).__name__}: {exc}"
    where = traceback.extract_tb(exc.__traceback__)[-1:] if exc.__traceback__ else []
    loc = f" at {where[0].filename}:{where[0].lineno}" if where else ""
    return f"{type(exc).__name__}: {exc}{loc}"


def _refuse_secrets(value: Any, depth: int = 0) -> None:
    """Refuse a program output that holds a `Secret` anywhere in containers or objects."""
    if isinstance(value, Secret | MaskedMatrix):
        raise ConfigurationError(
            "the program returned a Secret (a share); reveal it with ctx.reveal(...) and return "
            "the revealed value instead"
        )
    if (
        depth > 8
        or isinstance(
            value, str | bytes | int | float | bool | np.ndarray | type | types.ModuleType
        )
        or callable(value)
    ):
        return
    if isinstance(value, Mapping):
        children: Any = value.values()
    elif isinstance(value, list | tuple | set | frozenset):
        children = value
    elif hasattr(value, "__dict__"):
        children = vars(value).values()
    elif hasattr(value, "__slots__"):
        children = [getattr(value, a, None) for a in value.__slots__]
    else:
        return
    for child in children:
        _refuse_secrets(child, depth + 1)


def root_cause(failures: Mapping[str, BaseException]) -> BaseException:
    """Of the failures of one run, the one that started it (not a peer's echo of it)."""
    for exc in failures.values():
        if not getattr(exc, "secondary", False):
            return exc
    return next(iter(failures.values()))
