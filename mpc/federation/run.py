"""One party's side of one agreed run across organisations.

Responsibility: for a proposed run (run id, coordinator, program hash, public arguments), load
the approved program from this party's own folder, open the data plane to the peers of this
party's policy (encrypted TCP, keys pinned by this party), check that every party sees the same
run (`agree`: one round, then one round confirming the nonce), derive the run nonce, attach
the dealer service, run the approved program's `accept_args` on the public arguments, execute
the program, end the run together (`end_together`: one round, so that no party closes the data
plane while a peer still receives from it), and return only what `ctx.reveal` gave this party
(Beaver 1991 triples and the dealer model as in `mpc.dealers.seeded`; the agreement is MP-SPDZ's
program-hash check widened to the whole run).
Security model: everything that makes the run safe comes from this party's policy (keys,
addresses, protocol, transport, dealer, data sources, DP ledger); the proposal contributes only
a program hash (approved here or refused), public arguments and a run id. Before any input is
shared, every party sends every other its view of the run (program hash, arguments, protocol
settings, party names and keys, dealer identity, run id, coordinator) with 32 fresh random
bytes; any difference aborts the run at every party, naming the party that differs. The run
nonce is SHA-256 of the run id and all parties' random bytes, so it is fresh if any one party
is honest; the dealer's streams are keyed by it and it refuses a nonce it has served before.
A party that sends different contributions to different peers is caught by the confirmation
round. A non-mpc exception's text stays in this party's log; peers learn its type only.
"""

from __future__ import annotations

import contextlib
import hashlib
import secrets
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import msgpack
import numpy as np

from mpc.dealers.base import Items
from mpc.dealers.seeded import NoiseDealerClient, NoiseKey
from mpc.dealers.streams import Stream
from mpc.errors import ConfigurationError, DealerError, IntegrityError
from mpc.federation.outputs import only_revealed
from mpc.federation.policy import PartyPolicy
from mpc.federation.programs import accepted_args, canonical_args, check_args, find_approved
from mpc.federation.secure_rpc import KEEPALIVES_PER_TIMEOUT, SecureClient
from mpc.parties.channel import PartyChannel
from mpc.parties.keys import PartyKey
from mpc.parties.party import PartyRunner, SessionConfig
from mpc.parties.tcp import TcpTransport
from mpc.protocols.registry import check_compatibility, get_protocol
from mpc.stats import PartyStats

RUN_ID_BYTES = 16
CONTRIBUTION_BYTES = 32
MAX_VIEW_BYTES = 64 * 1024
#: Mailbox run ids of a fresh data plane: the agreement round, the program, the closing round.
AGREE_RUN, PROGRAM_RUN, END_RUN = 1, 2, 3
#: A dealer call for items or noise fails after this many receive timeouts, even while its
#: answer keeps coming (without progress, after one timeout).
DEALER_CALL_LIMIT_TIMEOUTS = 20


@dataclass(frozen=True)
class RunRequest:
    """A proposed run: what the coordinator (the party whose starter asked) sends its peers."""

    run_id: bytes
    coordinator: str
    program: str
    args: dict[str, Any]

    def to_wire(self) -> dict[str, Any]:
        return {
            "run": self.run_id,
            "coordinator": self.coordinator,
            "program": self.program,
            "args": self.args,
        }

    @staticmethod
    def from_wire(data: dict[str, Any]) -> RunRequest:
        unknown = sorted(set(data) - {"run", "coordinator", "program", "args"})
        if unknown:
            raise ConfigurationError(
                f"a run proposal carries only a run id, coordinator, program hash and public "
                f"arguments; {unknown} are set by each party's own policy"
            )
        run_id, coordinator, program = data.get("run"), data.get("coordinator"), data.get("program")
        if not isinstance(run_id, bytes) or len(run_id) != RUN_ID_BYTES:
            raise ConfigurationError(f"a run id is {RUN_ID_BYTES} random bytes")
        if not isinstance(coordinator, str) or not isinstance(program, str):
            raise ConfigurationError("a run names its coordinator and program hash as strings")
        return RunRequest(run_id, coordinator, program.lower(), check_args(data.get("args", {})))


@dataclass
class RunOutcome:
    """What a run left at this party: its revealed output and its costs."""

    output: Any
    stats: PartyStats


def run_view(policy: PartyPolicy, request: RunRequest, threshold: int) -> dict[str, Any]:
    """This party's view of the run: what every party must agree on."""
    keys = {p.name: p.public_key.hex() for p in policy.peers}
    keys[policy.name] = PartyKey.load(policy.key_file).public_hex
    dealer = policy.dealer
    return {
        "run": request.run_id.hex(),
        "coordinator": request.coordinator,
        "program": request.program,
        "args": hashlib.sha256(canonical_args(request.args)).hexdigest(),
        "settings": {**policy.settings.describe(), "threshold": threshold},
        "parties": [[name, keys[name]] for name in policy.parties],
        "dealer": None if dealer is None else [dealer.name, dealer.public_key.hex()],
    }


def execute(
    policy: PartyPolicy,
    key: PartyKey,
    request: RunRequest,
    output: Callable[[], AbstractContextManager[Any]] | None = None,
) -> RunOutcome:
    """Run `request` at this party: agree, attach the dealer, run the program, check output.

    `output` (e.g. `mpc.parties.output.capture`) surrounds the program's own code only, so that
    what it prints is captured and the runtime's own warnings are not."""
    if request.coordinator not in policy.parties:
        raise ConfigurationError(f"run coordinator {request.coordinator!r} is not a party here")
    program = find_approved(
        policy.program_folder, policy.program_hashes, request.program, policy.origin
    )
    entry = program.entry
    args = accepted_args(program, request.args)  # the program's own bounds, at every party
    settings = policy.settings
    names = policy.parties
    rank = names.index(policy.name)
    protocol = get_protocol(settings.protocol)
    provides = None if settings.dealer == "none" else protocol.needs | protocol.optional_needs
    threshold = check_compatibility(protocol, len(names), settings.threshold, provides)
    transport = open_data_plane(policy, key, request.run_id)
    try:
        view = run_view(policy, request, threshold)
        nonce = agree(transport, view, request.run_id, settings.timeout)
        dealer = None
        if policy.dealer is not None and settings.dealer != "none":
            # while this party waits for the dealer, its peers (who may wait for it) hear that it
            # is alive and how fresh the dealer's progress is (TcpTransport's keepalive)
            dealer = DealerConnection(policy, key, nonce, threshold, transport._keepalive)
        failed = True
        try:
            config = SessionConfig(
                tuple(names), settings.protocol, threshold, settings.fixed_point, settings.timeout
            )
            runner = PartyRunner(
                rank,
                config,
                transport,
                dealer.client if dealer is not None else None,
                policy.private_data(),
                output_filter=only_revealed,
                private_errors=True,
            )
            transport.mailbox.begin_run(PROGRAM_RUN)
            program_entry = entry if output is None else _inside(output, entry)
            outcome = runner.run(PROGRAM_RUN, program_entry, (args,))
            end_together(transport, settings.timeout)
            failed = False
        finally:
            if dealer is not None:
                dealer.close(failed)
    finally:
        transport.close()
    return RunOutcome(outcome.output, outcome.stats)


def open_data_plane(policy: PartyPolicy, key: PartyKey, run_id: bytes) -> TcpTransport:
    """The run's party-to-party mesh: addresses and pinned keys from this party's policy."""
    names = policy.parties
    encrypt = policy.settings.transport == "tcp"
    transport = TcpTransport(
        names.index(policy.name),
        names,
        key=key if encrypt else None,
        peer_keys={p.name: p.public_key for p in policy.peers} if encrypt else None,
        session_id=b"mpc.federation.run " + run_id,
        encrypt=encrypt,
        host=policy.bind or policy.host,
        port=policy.data_port,
        connect_timeout=policy.settings.timeout,
    )
    try:
        transport.listen()
        transport.connect({p.name: (p.host, p.data_port) for p in policy.peers})
    except BaseException:
        transport.close()
        raise
    return transport


def agree(transport: TcpTransport, view: dict[str, Any], run_id: bytes, timeout: float) -> bytes:
    """One round: every party sends its view and fresh random bytes to every other; raise
    ConfigurationError (at every party) if any view differs; then one round of 32 bytes that
    confirms every party derived the same run nonce; return it."""
    transport.mailbox.begin_run(AGREE_RUN)
    channel = PartyChannel(transport, AGREE_RUN, timeout)
    contribution = secrets.token_bytes(CONTRIBUTION_BYTES)
    mine: bytes = msgpack.packb(view, use_bin_type=True)
    payload = np.frombuffer(contribution + mine, dtype=np.uint8)
    others = [r for r in range(transport.n) if r != transport.rank]
    with channel.operation("agree on the run"):
        received = channel.exchange(dict.fromkeys(others, payload), others)
    contributions = {transport.rank: contribution}
    views = {transport.rank: view}
    for rank, array in received.items():
        data = np.asarray(array, dtype=np.uint8).tobytes()
        if not CONTRIBUTION_BYTES < len(data) <= CONTRIBUTION_BYTES + MAX_VIEW_BYTES:
            raise IntegrityError(f"party {transport.names[rank]!r} sent a malformed run view")
        contributions[rank] = data[:CONTRIBUTION_BYTES]
        try:
            views[rank] = msgpack.unpackb(data[CONTRIBUTION_BYTES:], raw=False, strict_map_key=True)
        except Exception:  # msgpack raises many types for malformed input
            who = transport.names[rank]
            raise IntegrityError(f"party {who!r} sent a malformed run view") from None
    _check_views(views, transport.names, transport.rank)
    digest = hashlib.sha256(b"mpc.federation.nonce" + run_id)
    for rank in range(transport.n):
        digest.update(contributions[rank])
    nonce = digest.digest()
    # A second, tiny round: a party that sent different contributions to different peers
    # would split them into different dealer runs (silently wrong results); all must agree.
    confirm = np.frombuffer(hashlib.sha256(b"mpc.federation.confirm" + nonce).digest(), np.uint8)
    with channel.operation("confirm the run nonce"):
        confirmations = channel.exchange(dict.fromkeys(others, confirm), others)
    differ = sorted(
        transport.names[r]
        for r, c in confirmations.items()
        if np.asarray(c, dtype=np.uint8).tobytes() != confirm.tobytes()
    )
    if differ:
        raise IntegrityError(
            f"the parties derived different run nonces (party {transport.names[transport.rank]!r} "
            f"differs from {differ}): a party sent different random contributions to different "
            "peers; the run is aborted before any input is shared"
        )
    return nonce


def end_together(transport: TcpTransport, timeout: float) -> None:
    """One tiny round after the program: every party tells every other that its program has
    ended, so that none closes the data plane while a peer still receives from it. A party's
    last messages may still be on their way when its own program ends (queued in its kernel,
    on a slow link), and closing a connection that holds unread bytes (a waiting peer's
    keepalives) resets it, which discards them: the peer's run failed while this one's ended."""
    transport.mailbox.begin_run(END_RUN)
    channel = PartyChannel(transport, END_RUN, timeout)
    others = [r for r in range(transport.n) if r != transport.rank]
    with channel.operation("end the run"):
        channel.exchange(dict.fromkeys(others, np.zeros(1, np.uint8)), others)


def _check_views(views: dict[int, Any], names: list[str], me: int) -> None:
    encoded = {r: msgpack.packb(v, use_bin_type=True) for r, v in views.items()}
    if len(set(encoded.values())) == 1:
        return
    majority, _ = Counter(encoded.values()).most_common(1)[0]
    reference = views[me] if encoded[me] == majority else msgpack.unpackb(majority, raw=False)
    odd = [r for r in views if encoded[r] != majority] or [me]
    parts = []
    for r in odd:
        theirs = views[r]
        fields = (
            sorted(k for k in reference if theirs.get(k) != reference[k])
            if isinstance(theirs, dict)
            else ["everything"]
        )
        shown = {k: theirs.get(k) for k in fields} if isinstance(theirs, dict) else theirs
        parts.append(f"party {names[r]!r} sees a different {', '.join(fields)}: {shown}")
    raise ConfigurationError(
        "the parties do not agree on this run, so it was aborted before any input was shared: "
        + "; ".join(parts)
        + f" (the others: {[names[r] for r in views if r not in odd]}); check that every "
        "party's policy names the same protocol settings, parties, keys and dealer, and "
        "approves the same program"
    )


class DealerConnection:
    """This party's connection to the dealer service for one run (seed, corrections, noise).

    A call for items or noise fails once the dealer has shown no progress for the receive
    timeout (no answer begun, or no further part of it), and goes on while a large answer keeps
    coming on a slow link, up to DEALER_CALL_LIMIT_TIMEOUTS timeouts. While the program waits for
    one, `alive(age)` is called every quarter timeout with the age of the dealer's latest
    progress: the transport's keepalive, so that peers waiting for this party meanwhile neither
    give up on it while the dealer's answer comes nor blame it (rather than the dealer, which
    this party's own error names) when the dealer stops.
    """

    def __init__(
        self,
        policy: PartyPolicy,
        key: PartyKey,
        nonce: bytes,
        threshold: int,
        alive: Callable[[float], None] | None = None,
    ) -> None:
        endpoint = policy.dealer
        if endpoint is None:
            raise ConfigurationError(f"{policy.origin}: no [dealer] table")
        timeout = policy.settings.timeout
        self.nonce = nonce
        self._timeout = timeout
        self._alive = alive
        self._rpc = SecureClient(
            policy.name,
            key,
            endpoint.name,
            endpoint.public_key,
            (endpoint.host, endpoint.port),
            timeout=timeout,
        )
        self._pool = ThreadPoolExecutor(1, thread_name_prefix=f"mpc-dealer-{policy.name}")
        try:
            names = policy.parties
            settings = {**policy.settings.describe(), "threshold": threshold}
            opened = self._rpc.call("open", {"run": nonce, "parties": names, "settings": settings})
            rank = names.index(policy.name)
            if opened.get("rank") != rank:
                raise DealerError(f"the dealer assigned rank {opened.get('rank')}, not {rank}")
            seed = self._seed(policy, threshold)
            scheme = get_protocol(policy.settings.protocol).make_scheme(len(names), threshold)
            self.client = NoiseDealerClient(rank, seed, scheme, self._fetch, self._fetch_noise)
        except BaseException:
            self.close(failed=True)
            raise

    def _seed(self, policy: PartyPolicy, threshold: int) -> bytes:
        if policy.settings.dealer != "enclave":
            seed = self._rpc.call("seed", {"run": self.nonce}).get("seed")
            if not isinstance(seed, bytes):
                raise DealerError("the dealer sent no seed")
            return seed
        from mpc.tee import SeedHandshake
        from mpc.tee.verify import QuotePolicy, policy_for_dealer

        enclave = policy.enclave
        if enclave is None:
            raise ConfigurationError(f"{policy.origin}: dealer 'enclave' needs an [enclave] table")
        names = policy.parties
        quote_policy: QuotePolicy = policy_for_dealer(
            policy.settings.protocol,
            len(names),
            threshold,
            trusted_platform_keys=enclave.platform_keys,
            allow_simulated=enclave.allow_simulated,
            allow_debug=enclave.allow_simulated,
            extra_measurements=[bytes.fromhex(m) for m in enclave.measurements],
        )
        key = PartyKey.load(policy.key_file)
        handshake = SeedHandshake(names.index(policy.name), self.nonce, key)
        params = {"run": self.nonce, "request": handshake.request_bytes()}
        answer = self._rpc.call("attested_seed", params).get("answer")
        if not isinstance(answer, bytes):
            raise DealerError("the enclave dealer sent no attested answer")
        attested: bytes = handshake.finish(answer, quote_policy).seed
        return attested

    def _fetch(self, stream: Stream, start: int, count: int) -> Callable[[], Items]:
        params = {
            "run": self.nonce,
            "stream": list(stream.to_wire()),
            "start": start,
            "count": count,
        }
        future = self._pool.submit(self._call, "corrections", params)

        def wait() -> Items:
            items: Items = self._wait(future)["items"]
            if not isinstance(items, list) or len(items) != count:
                raise DealerError(f"the dealer sent {len(items)} items, asked for {count}")
            return items

        return wait

    def _fetch_noise(self, key: NoiseKey, spec: dict[str, Any]) -> np.ndarray:
        params = {"run": self.nonce, "key": list(key), "spec": spec}
        share: np.ndarray = self._wait(self._pool.submit(self._call, "noise", params))["share"]
        return share

    def _call(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        limit = DEALER_CALL_LIMIT_TIMEOUTS * self._timeout
        return self._rpc.call(method, params, timeout=limit, stall=self._timeout)

    def _wait(self, future: Future[dict[str, Any]]) -> dict[str, Any]:
        """The answer of a dealer call, telling the peers meanwhile (`alive`) that this party
        waits for the dealer, and how long ago the dealer last showed progress."""
        beat = self._timeout / KEEPALIVES_PER_TIMEOUT
        while True:
            try:
                return future.result(timeout=beat)
            except TimeoutError:
                if future.done():  # the call itself timed out (ReceiveTimeoutError)
                    raise
                if self._alive is not None:
                    self._alive(max(0.0, time.monotonic() - self._rpc.progress_at))

    def close(self, failed: bool = False) -> None:
        """Tell the dealer that this party is done with the run, and close the connection. After
        a failed run that happens in the background: the run's error must not wait for a
        dealer that may be its cause (frozen, or its link down)."""
        self._pool.shutdown(wait=False, cancel_futures=True)
        if failed:
            threading.Thread(target=self._end, name="mpc-dealer-close", daemon=True).start()
        else:
            self._end()

    def _end(self) -> None:
        with contextlib.suppress(Exception):  # best effort: the dealer drops the run anyway
            self._rpc.call("close", {"run": self.nonce}, timeout=min(5.0, self._timeout))
        self._rpc.close()


def _inside(
    context: Callable[[], AbstractContextManager[Any]], entry: Callable[..., Any]
) -> Callable[..., Any]:
    """`entry` run inside `context()` (the program's printed output, captured)."""

    def program(*args: Any) -> Any:
        with context():
            return entry(*args)

    return program
