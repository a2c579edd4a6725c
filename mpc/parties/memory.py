"""In-memory transport: n parties as threads of one process, for tests and in-process runs.

Responsibility: deliver arrays between party threads through their mailboxes without copies.
Security model: none between parties (they share a process); it exists to test protocols
without Ray or sockets. Sent arrays are handed over as read-only views so that a protocol bug that
mutates a sent array fails loudly instead of corrupting a peer's view.
"""

from __future__ import annotations

import numpy as np

from mpc.errors import PeerFailedError
from mpc.parties.mailbox import Mailbox, Tag
from mpc.parties.transport import Transport


class MemoryNetwork:
    """The shared switchboard: one mailbox per party."""

    def __init__(self, names: list[str]) -> None:
        self.names = list(names)
        self.mailboxes = [Mailbox(owner=name, names=names) for name in names]

    def transports(self) -> list[MemoryTransport]:
        return [MemoryTransport(rank, self) for rank in range(len(self.names))]


class MemoryTransport(Transport):
    def __init__(self, rank: int, network: MemoryNetwork) -> None:
        super().__init__(rank, network.names)
        self._network = network
        self.mailbox = network.mailboxes[rank]

    def send(self, to: int, tag: Tag, array: np.ndarray, label: str = "") -> int:
        view = array.view()
        view.flags.writeable = False
        self._network.mailboxes[to].put(self.rank, tag, view, label)
        return int(array.nbytes)

    def abort(self, reason: str, run: int | None = None) -> None:
        for rank, box in enumerate(self._network.mailboxes):
            if rank != self.rank:
                box.fail(PeerFailedError(f"party {self.name!r} aborted the run: {reason}"), run)
