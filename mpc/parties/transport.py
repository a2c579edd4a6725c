"""Transport interface: how one party sends arrays to, and receives arrays from, its peers.

Responsibility: the abstract point-to-point channel that protocols use through the party runtime.
Every transport delivers whole numpy arrays keyed by a deterministic tag, each with the label of
the operation that sent it (checked by the receiving mailbox), counts the bytes it puts on the
wire, and turns a peer failure into an error at every pending receive.
Security model: implementations decide confidentiality and integrity (see each one's docstring);
none of them ever unpickles bytes from a peer.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping

import numpy as np

from mpc.parties.mailbox import Mailbox, Tag


class Transport(ABC):
    """Point-to-point messaging of one party (rank `rank` of `n`)."""

    #: True when messages on the wire are encrypted and authenticated.
    confidential: bool = False

    def __init__(self, rank: int, names: list[str]) -> None:
        self.rank = rank
        self.names = list(names)
        self.n = len(names)
        self.mailbox = Mailbox(owner=names[rank])

    @property
    def name(self) -> str:
        return self.names[self.rank]

    @abstractmethod
    def send(self, to: int, tag: Tag, array: np.ndarray, label: str = "") -> int:
        """Send `array` to party `to` from operation `label` (printable ASCII, at most
        `mpc.parties.framing.MAX_LABEL_BYTES`); return the number of bytes put on the wire.

        The caller must not modify `array` afterwards (in-memory transports do not copy).
        """

    def recv(self, frm: int, tag: Tag, timeout: float, label: str = "") -> np.ndarray:
        """Receive the array that party `frm` sent with `tag`, waiting at most `timeout` s;
        `DivergenceError` if it came from another operation than `label` (see `Mailbox.take`)."""
        return self.mailbox.get(frm, tag, timeout, sender_name=self.names[frm], label=label)

    def exchange(
        self,
        tag: Tag,
        outgoing: Mapping[int, np.ndarray],
        expect: Iterable[int],
        timeout: float,
        label: str = "",
    ) -> tuple[dict[int, np.ndarray], int]:
        """One round of operation `label`: send `outgoing[to]` to every `to`, then receive from
        every rank in `expect`, all with `tag`; return the received arrays by rank and the
        bytes sent.

        Each receive waits at most `timeout` s. Transports may overlap the sends and receives.
        """
        sent = 0
        for to, array in outgoing.items():
            sent += self.send(to, tag, array, label)
        return {frm: self.recv(frm, tag, timeout, label) for frm in expect}, sent

    @abstractmethod
    def abort(self, reason: str, run: int | None = None) -> None:
        """Tell every peer that this party failed (in `run`), so their receives end at once."""

    def close(self) -> None:  # noqa: B027 - optional hook, nothing to release by default
        """Release sockets and threads. Idempotent."""
