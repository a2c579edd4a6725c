"""One organisation's party as a service (`mpc party serve --policy alice.toml`).

Responsibility: listen on the party's control port (encrypted, key-pinned: `secure_rpc`) for
run requests from this organisation's starters and run proposals from peer parties; coordinate
a run that a starter asked for (propose it to every peer; when all accept, tell all to go and
run it here; when one refuses, cancel it everywhere); execute each run
through an `Executor` (in this process, or in a party actor on this organisation's own Ray);
keep each party's results at that party.
Security model: the service enforces its own policy. Only this party's own key and the
`[starters]` of its policy may start a run; only the peers of its policy may propose one. Runs
execute one at a time; a run id seen before is refused. A proposal carries only a program hash,
public arguments and a run id: the program must be approved here, and everything else comes
from this party's policy (see `mpc.federation.run`). The starter receives the coordinator's
revealed output only; a peer's output stays at the peer (its log and results folder).
"""

from __future__ import annotations

import functools
import json
import secrets
import sys
import threading
import time
from abc import ABC, abstractmethod
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from mpc.errors import ConfigurationError, MpcError
from mpc.federation.policy import PartyPolicy
from mpc.federation.programs import accepted_args, check_args, find_approved
from mpc.federation.run import RUN_ID_BYTES, RunOutcome, RunRequest, execute
from mpc.federation.secure_rpc import SecureClient, SecureServer
from mpc.parties.keys import PartyKey
from mpc.parties.output import capture, discard, show_line

#: How long a starter waits for a whole run, and a coordinator for a peer to answer a proposal.
RUN_TIMEOUT = 3600.0
PROPOSE_TIMEOUT = 30.0
#: Longest cancel reason kept from a coordinator, and how many results stay in memory.
MAX_REASON = 2000
KEPT_RESULTS = 100
#: How many run ids a party remembers to refuse replays (16 bytes each).
MAX_SEEN_RUNS = 100_000
#: Largest request a party reads (arguments are at most 64 KiB), and largest answer it sends.
MAX_REQUEST_BYTES = 2**20
MAX_OUTPUT_BYTES = 256 * 2**20


class Executor(ABC):
    """Where this party's runs execute (the service's process, or a Ray actor)."""

    @abstractmethod
    def execute(self, request: RunRequest) -> RunOutcome: ...

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release what the executor holds."""


class InProcessExecutor(Executor):
    """Runs in the service's own process (tests, or an organisation without Ray). What the
    program prints goes to the service's log as ``[party] line`` with the policy's
    `show_output`, and nowhere without it."""

    def __init__(self, policy: PartyPolicy, key: PartyKey) -> None:
        self.policy = policy
        self.key = key

    def execute(self, request: RunRequest) -> RunOutcome:
        shown = self.policy.show_output
        sink = functools.partial(show_program_line, self.policy.name) if shown else discard
        return execute(self.policy, self.key, request, output=lambda: capture(sink))


class PartyService:
    """The control plane of one party: starts and accepts runs under its policy."""

    def __init__(self, policy: PartyPolicy, executor: Executor | None = None) -> None:
        self.policy = policy
        self.key = PartyKey.load(policy.key_file)
        self.executor = executor if executor is not None else InProcessExecutor(policy, self.key)
        clients = {p.name: p.public_key for p in policy.peers}
        clashes = sorted(set(clients) & (set(policy.starters) | {policy.name}))
        if clashes:
            raise ConfigurationError(f"{policy.origin}: [starters] reuse party names {clashes}")
        clients.update(policy.starters)
        clients[policy.name] = self.key.public_bytes
        self.server = SecureServer(
            policy.name,
            self.key,
            clients,
            self.handle,
            host=policy.bind or policy.host,
            port=policy.port,
            timeout=policy.settings.timeout,
            max_message=MAX_REQUEST_BYTES,  # start/propose/commit: a hash and public arguments
            max_response=MAX_OUTPUT_BYTES,  # a starter's answer holds the revealed output
            keepalive=True,  # a run's starter tells a long run from a frozen party service
        )
        self._busy = threading.Lock()
        self._seen: set[bytes] = set()
        self._seen_order: deque[bytes] = deque()
        self._seen_lock = threading.Lock()
        self._pending: dict[bytes, tuple[RunRequest, threading.Timer]] = {}
        self._background = ThreadPoolExecutor(1, thread_name_prefix=f"mpc-run-{policy.name}")
        #: The latest runs' results at this party (older ones only in the results folder).
        self.results: deque[dict[str, Any]] = deque(maxlen=KEPT_RESULTS)

    def start(self) -> tuple[str, int]:
        return self.server.start()

    def close(self) -> None:
        self.server.close()
        with self._seen_lock:
            for _request, timer in self._pending.values():
                timer.cancel()
            self._pending.clear()
        self._background.shutdown(wait=True, cancel_futures=True)
        self.executor.close()

    def __enter__(self) -> PartyService:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- requests -----------------------------------------------------------------------------

    def handle(self, client: str, method: str, params: dict[str, Any]) -> dict[str, Any]:
        peers = {p.name for p in self.policy.peers}
        if method == "start":
            if client in peers:
                raise ConfigurationError(
                    f"party {client!r} may propose runs, not start them at {self.policy.name!r}"
                )
            return self._start(client, params)
        if method in ("propose", "commit"):
            if client not in peers:
                raise ConfigurationError(f"{client!r} is not a peer party of {self.policy.name!r}")
            return (
                self._accept(client, params)
                if method == "propose"
                else self._commit(client, params)
            )
        raise ConfigurationError(f"unknown method {method!r}")

    def _claim(self, run_id: bytes) -> None:
        """Take this party for the run, or refuse: a replay (checked first, so that a replayed
        id is named as such even while a run goes on), or busy (nothing recorded).

        The seen ids are bounded (MAX_SEEN_RUNS, oldest forgotten first). A forgotten id that
        comes again is a new run, not a replay of the old one: every run derives a fresh nonce
        from all parties' random bytes and a fresh party seed, so no mask or triple repeats.
        """
        replay = ConfigurationError(
            f"party {self.policy.name!r} refuses run {run_id.hex()[:12]}: it took part in a run "
            "with this id before (replay)"
        )
        with self._seen_lock:
            if run_id in self._seen:
                raise replay
        if not self._busy.acquire(blocking=False):
            raise ConfigurationError(
                f"party {self.policy.name!r} is busy with another run; runs execute one at a time"
            )
        with self._seen_lock:
            if run_id in self._seen:  # the same id, proposed twice at once
                self._busy.release()
                raise replay
            self._seen.add(run_id)
            self._seen_order.append(run_id)
            while len(self._seen_order) > MAX_SEEN_RUNS:
                self._seen.discard(self._seen_order.popleft())

    def _start(self, starter: str, params: dict[str, Any]) -> dict[str, Any]:
        """A starter asks for a run: propose it to every peer, then run it here."""
        unknown = sorted(set(params) - {"program", "args"})
        if unknown:
            raise ConfigurationError(
                f"a starter sends only a program hash and public arguments; {unknown} are set by "
                f"each party's own policy ({self.policy.origin})"
            )
        program = params.get("program")
        if not isinstance(program, str):
            raise ConfigurationError("start needs the program's SHA-256 (mpc program hash FILE)")
        approved = find_approved(
            self.policy.program_folder, self.policy.program_hashes, program, self.policy.origin
        )
        args = check_args(params.get("args", {}))
        accepted_args(approved, args)  # refused here before any peer is asked
        request = RunRequest(
            secrets.token_bytes(RUN_ID_BYTES), self.policy.name, program.lower(), args
        )
        self._claim(request.run_id)
        try:
            self._log(
                f"run {request.run_id.hex()[:12]} started by {starter!r}: program "
                f"{program[:16]}…, arguments {request.args}"
            )
            self._propose(request)
            outcome = self._execute(request)
        finally:
            self._busy.release()
        return {"output": outcome.output, "stats": outcome.stats.as_dict()}

    def _propose(self, request: RunRequest) -> None:
        """Two phases: every peer checks and claims the run; then all go, or all cancel.

        A run that one peer refuses never starts anywhere: the peers that accepted it are told
        why it was cancelled, and no party opens its data plane or shares an input.
        """
        peers = {p.name: p for p in self.policy.peers}

        def call(name: str, method: str, params: dict[str, Any]) -> None:
            peer = peers[name]
            with SecureClient(
                self.policy.name,
                self.key,
                peer.name,
                peer.public_key,
                (peer.host, peer.port),
                timeout=PROPOSE_TIMEOUT,
            ) as client:
                client.call(method, params)

        def each(method: str, names: list[str], params: dict[str, Any]) -> dict[str, Exception]:
            with ThreadPoolExecutor(max(1, len(names))) as pool:
                futures = {n: pool.submit(call, n, method, params) for n in names}
            return {
                n: exc
                for n, f in futures.items()
                if (exc := f.exception()) is not None and isinstance(exc, Exception)
            }

        refused = each("propose", sorted(peers), request.to_wire())
        run = request.run_id
        if refused:
            detail = "; ".join(f"{name}: {exc}" for name, exc in sorted(refused.items()))
            accepted = sorted(set(peers) - set(refused))
            each("commit", accepted, {"run": run, "go": False, "reason": detail[:2000]})
            self._log(f"run {run.hex()[:12]} cancelled before it began: {detail}")
            raise ConfigurationError(f"the run was refused before it began: {detail}")
        failed = each("commit", sorted(peers), {"run": run, "go": True, "reason": ""})
        if failed:
            detail = "; ".join(f"{name}: {exc}" for name, exc in sorted(failed.items()))
            raise ConfigurationError(f"the run could not start at every party: {detail}")

    def _accept(self, coordinator: str, params: dict[str, Any]) -> dict[str, Any]:
        """Phase one at a peer: check the proposal and hold this party for it until commit."""
        request = RunRequest.from_wire(params)
        if request.coordinator != coordinator:
            raise ConfigurationError(
                f"{coordinator!r} proposed a run in the name of {request.coordinator!r}"
            )
        approved = find_approved(
            self.policy.program_folder,
            self.policy.program_hashes,
            request.program,
            self.policy.origin,
        )
        accepted_args(approved, request.args)
        self._claim(request.run_id)
        label = request.run_id.hex()[:12]
        self._log(
            f"run {label} proposed by {coordinator!r}: program {request.program[:16]}…, "
            f"arguments {request.args}"
        )
        timer = threading.Timer(PROPOSE_TIMEOUT, self._expire, (request,))
        timer.daemon = True
        with self._seen_lock:
            self._pending[request.run_id] = (request, timer)
        timer.start()
        return {"accepted": True}

    def _commit(self, coordinator: str, params: dict[str, Any]) -> dict[str, Any]:
        """Phase two at a peer: the coordinator says go (run it) or cancel (and why)."""
        run, go, reason = params.get("run"), params.get("go"), params.get("reason", "")
        if not isinstance(run, bytes) or not isinstance(go, bool) or not isinstance(reason, str):
            raise ConfigurationError("commit takes a run id, go (bool) and a reason")
        with self._seen_lock:
            pending = self._pending.get(run)
            if pending is None or pending[0].coordinator != coordinator:
                raise ConfigurationError(f"no run {run.hex()[:12]} of {coordinator!r} is pending")
            del self._pending[run]
        request, timer = pending
        timer.cancel()
        if not go:
            reason = reason[:MAX_REASON]
            try:
                self._log(f"run {run.hex()[:12]} cancelled before it began: {reason}")
                self._record(request, {"error": f"cancelled before it began: {reason}"})
            finally:
                self._busy.release()
            return {"cancelled": True}

        def run_here() -> None:
            try:
                self._execute(request)
            except MpcError:
                pass  # logged by _execute
            finally:
                self._busy.release()

        self._background.submit(run_here)
        return {"started": True}

    def _expire(self, request: RunRequest) -> None:
        with self._seen_lock:
            if self._pending.pop(request.run_id, None) is None:
                return
        reason = f"the coordinator sent no go within {PROPOSE_TIMEOUT:.0f} s"
        try:
            self._log(f"run {request.run_id.hex()[:12]} dropped: {reason}")
            self._record(request, {"error": f"dropped: {reason}"})
        finally:
            self._busy.release()

    def _execute(self, request: RunRequest) -> RunOutcome:
        label = request.run_id.hex()[:12]
        started = time.perf_counter()
        try:
            outcome = self.executor.execute(request)
        except Exception as exc:
            self._log(f"run {label} failed: {exc}")
            self._record(request, {"error": str(exc)})
            raise
        seconds = time.perf_counter() - started
        self._log(f"run {label} finished in {seconds:.2f} s")
        if self.policy.show_output:
            self._log(f"run {label} output: {_printable(outcome.output)}")
        self._record(request, {"output": _printable(outcome.output), "seconds": seconds})
        return outcome

    def _record(self, request: RunRequest, result: dict[str, Any]) -> None:
        entry = {"run": request.run_id.hex(), "program": request.program, **result}
        self.results.append(entry)
        folder = self.policy.results_folder
        if folder is not None:
            folder.mkdir(parents=True, exist_ok=True)
            path = Path(folder) / f"run-{request.run_id.hex()[:16]}.json"
            path.write_text(json.dumps(entry, indent=1))

    def _log(self, text: str) -> None:
        print(f"[{self.policy.name}] {printable(text)}", file=sys.stderr, flush=True)


def show_program_line(party: str, stream: int, line: str) -> None:
    """Show a line that the program printed at `party` in the service's log (`show_line`), in
    printable characters only."""
    show_line(party, stream, printable(line))


def printable(text: str) -> str:
    """`text` on one line of printable characters: text from peers (reasons, errors) cannot
    forge log lines or send terminal escape sequences."""
    return "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in text)


def _printable(value: Any) -> Any:
    """Revealed output as JSON-able data (arrays as lists)."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, dict):
        return {k: _printable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_printable(v) for v in value]
    return value
