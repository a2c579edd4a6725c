"""Ray transport: party-to-party messages as Ray actor calls.

Responsibility: the simple alternative to direct TCP: `send` calls the peer actor's `deliver`
method (fire and forget) with the binary frame header and the raw array bytes.
Security model: messages travel through Ray's object transfer, which is neither encrypted nor
authenticated unless the Ray cluster itself is set up with TLS. Arrays are sent as raw bytes
with the binary frame header and rebuilt with `mpc.parties.framing` (no array is pickled by
us), but Ray frames its own calls with pickle, so use this transport only inside a cluster
whose nodes trust each other. The default data plane is `mpc.parties.tcp`.
"""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np

from mpc.errors import PeerFailedError
from mpc.parties import framing
from mpc.parties.mailbox import Tag
from mpc.parties.transport import Transport


class RayTransport(Transport):
    confidential = False

    def __init__(self, rank: int, names: list[str], peers: list[Any]) -> None:
        super().__init__(rank, names)
        self._peers = peers

    def send(self, to: int, tag: Tag, array: np.ndarray, label: str = "") -> int:
        header, payload = framing.encode_data(tag, array, label)
        data = bytes(payload)
        self._peers[to].deliver.remote(self.rank, header, data)
        return len(header) + len(data)

    def deliver(self, sender: int, header: bytes, payload: bytes) -> None:
        """Called (through Ray) by the peer of rank `sender`."""
        try:
            parsed = framing.parse_header(header)
            array = framing.decode_array(parsed, payload)
        except Exception as exc:
            self.mailbox.fail(exc)
            return
        self.mailbox.put(sender, parsed.tag, array, parsed.label)

    def abort(self, reason: str, run: int | None = None) -> None:
        for rank, peer in enumerate(self._peers):
            if rank != self.rank:
                with contextlib.suppress(Exception):  # best effort: the peer may be gone
                    peer.peer_aborted.remote(self.name, reason, run)

    def peer_aborted(self, peer: str, reason: str, run: int | None = None) -> None:
        self.mailbox.fail(PeerFailedError(f"party {peer!r} aborted the run: {reason}"), run)
