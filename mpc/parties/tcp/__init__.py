"""Encrypted, authenticated TCP transport between parties that run in separate processes or hosts.

Responsibility: one TCP connection per pair of parties (the higher rank dials the lower one), a
mutually authenticated key exchange on each, and delivery of whole numpy arrays keyed by tag into
the party's mailbox, with peer failures (abort, lost connection, rejected record) turned into
errors at every pending receive. The parts, one job each:

* `transport`: `TcpTransport`, the public object; `abort` and `close`.
* `state`: configuration, key pinning, the state the parts share, the bounded mailbox.
* `connect`: listening, dialing, handshake slots, telling late peers why a connect failed.
* `handshake`: hello exchange, X25519 key agreement, key confirmation (wire protocol version 4).
* `records`: the record layer: frames to and from AES-256-GCM records with counter nonces.
* `link`: one connection: its socket, locks, record layer, progress clocks and control frames.
* `rounds`: `send`, `recv` and `exchange`, done by the program thread; progress-based timeouts.
* `receiver`: frames into the mailbox, receiver threads.
* `io`: buffered socket reads, gathered writes, the poll set.

Key agreement and AEAD set-up are shared with `mpc.tee.channel` (`mpc.channel_crypto`).

Security model (encrypt=True, the default): every party pins the long-term X25519 public key of
every peer; the handshake derives one AES-256-GCM key per direction from a static-static and an
ephemeral-ephemeral Diffie-Hellman bound to the session and the party list (forward secrecy),
and confirms that the peer holds them; records carry counter nonces, so a replayed, reordered,
dropped or modified record fails the run with `IntegrityError` naming the peer, and no forged
data is ever delivered. What an authenticated peer sends is bounded (mailbox share, allocation
as bytes arrive). What is not hidden: who talks to whom, when, and message sizes. Nothing
protects availability: a network attacker can always cut connections (`PeerFailedError`). With
encrypt=False the same framing is sent in the clear without any authentication: anyone on the
path can read and change shares; it must be asked for by name and emits
`PlaintextTransportWarning`. No bytes from a peer are ever unpickled: data headers are fixed
binary structs and control headers msgpack, both with a validated schema, and payloads are raw
bytes of allow-listed numeric dtypes (`mpc.parties.framing`). POSIX only (poll, MSG_DONTWAIT,
sched_yield).
"""

from mpc.parties.tcp.handshake import PROTOCOL, VERSION
from mpc.parties.tcp.records import GCM_TAG, RECORD_CHUNK
from mpc.parties.tcp.rounds import ROUND_LIMIT_TIMEOUTS
from mpc.parties.tcp.state import PlaintextTransportWarning
from mpc.parties.tcp.transport import TcpTransport

__all__ = [
    "GCM_TAG",
    "PROTOCOL",
    "RECORD_CHUNK",
    "ROUND_LIMIT_TIMEOUTS",
    "VERSION",
    "PlaintextTransportWarning",
    "TcpTransport",
]
