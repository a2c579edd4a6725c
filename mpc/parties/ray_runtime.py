"""Ray runtime: party actors (and the trusted-dealer actor) for one session.

Responsibility: start or attach to Ray, place one actor per party (pinned to its node through a
custom resource `party:<name>` when a deployment config says so), wire the transport (encrypted
TCP by default), attach the dealer, ship programs and collect results. A failure at any party is
pushed to every other party at once (they abort their receives) and raised at the caller as one
`PartyFailedError` naming the party and operation that failed first. During a run the driver
pings every party (`mpc.parties.liveness`): one that answers nothing for a receive timeout (a
frozen process, an unreachable node) is stopped at once (its actor killed, and its process if it
is on this machine), the others are told, and the caller gets one `PartyFailedError` naming it
and the operation its peers were in. A run also has a deadline (`await_parties`): once one party
has returned (finished or failed), every other one must return within `STRAGGLER_TIMEOUTS`
receive timeouts (and the whole run within `run_timeout`, if set); a party that still answers
pings but does not return (stuck outside a receive, where no receive timeout fires) is told to
abort, then its actor is stopped, and the caller gets one `PartyFailedError` naming it. What a
party's program prints is shown here as ``[party] line`` while the run goes on, for the parties
in `show_output` (`mpc.parties.output.OutputRelay`; Ray's own forwarding of worker output stays
off, with its pid prefixes and deduplication of lines that parties print alike).
Security model: see `mpc.session` and `mpc.parties.actors`. The driver passes each party's
private data only to that party's actor.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from mpc.dealers.base import most_used
from mpc.dealers.streams import Stream
from mpc.deploy import DeploymentConfig
from mpc.errors import ConfigurationError, MpcError, PartyFailedError
from mpc.parties.actors import DealerActor, PartyActor
from mpc.parties.liveness import Liveness
from mpc.parties.output import OutputRelay
from mpc.parties.party import Program, SessionConfig, root_cause
from mpc.parties.processes import ProcessTag, end_processes, kill_now
from mpc.parties.tuning import ALLOCATOR_ENV
from mpc.stats import PartyStats

SETUP_TIMEOUT = 120.0
#: Once one party has returned from a run, the others must return within this many receive
#: timeouts (`SessionConfig.timeout`): generous, since a party may legitimately end with local
#: work, but finite, since a party stuck outside a receive never times out by itself.
STRAGGLER_TIMEOUTS = 10.0
#: How long a party that missed the run deadline gets, after it is told to abort, before its
#: actor is stopped (seconds).
ABORT_GRACE = 5.0
#: How long the actors' processes get to exit once the session closed, before they are killed
#: (seconds).
EXIT_GRACE = 3.0


class RayParties:
    def __init__(
        self,
        config: SessionConfig,
        *,
        transport: str,
        with_dealer: bool,
        private: Mapping[str, Mapping[str, Any]],
        deployment: DeploymentConfig | None,
        ray_address: str | None,
        num_cpus: int,
        session_id: bytes,
        enclave: Mapping[str, Any] | None = None,
        run_timeout: float | None = None,
        straggler_timeout: float | None = None,
        show_output: frozenset[str] | None = None,
    ) -> None:
        self.config = config
        #: The parties whose printed output the driver shows (None: every party).
        self.show_output = frozenset(config.parties if show_output is None else show_output)
        self._relay = OutputRelay({})
        #: Longest a whole run may take (None: no limit besides the straggler deadline).
        self.run_timeout = run_timeout
        #: How long the other parties may take once one has returned (see `await_parties`).
        self.straggler_timeout = (
            STRAGGLER_TIMEOUTS * config.timeout if straggler_timeout is None else straggler_timeout
        )
        self.enclave = dict(enclave) if enclave is not None else None
        self.attestations: list[str] = []
        self.transport = transport
        self.with_dealer = with_dealer
        self.private = private
        self.deployment = deployment
        self.ray_address = ray_address
        self.num_cpus = num_cpus
        self.session_id = session_id
        self.actors: list[Any] = []
        self.dealer: Any = None
        self._started_ray = False
        self._run_id = 0
        #: The actors' processes, ended by `close` if they outlive it (`end_processes`).
        self.processes: list[ProcessTag] = []
        #: Each party's process (to kill one that stopped answering: `kill_now`).
        self.process_of: dict[str, ProcessTag] = {}
        #: The parties whose actor was stopped (they are not asked anything any more).
        self.stopped: set[str] = set()

    def _specs(self) -> list[Any]:
        if self.deployment is None:
            return [None] * len(self.config.parties)
        return list(self.deployment.parties)

    def start(self) -> None:
        import ray

        if not ray.is_initialized():
            if self.ray_address:
                ray.init(
                    address=self.ray_address, logging_level=logging.WARNING, log_to_driver=False
                )
            else:
                ray.init(
                    address="local",  # a new instance, even if a `ray start` cluster is up
                    num_cpus=self.num_cpus,
                    include_dashboard=False,
                    logging_level=logging.WARNING,
                    log_to_driver=False,
                )
            self._started_ray = True
        specs = self._specs()
        available = ray.cluster_resources()  # type: ignore[no-untyped-call]
        wanted = [s.resource for s in specs if s is not None and s.resource]
        if self.deployment is not None and self.deployment.dealer_resource:
            wanted.append(self.deployment.dealer_resource)
        missing = [r for r in wanted if available.get(r, 0) <= 0]
        if missing:
            raise ConfigurationError(
                f"no Ray node offers the resource(s) {missing}; start each party's node with "
                "ray start --address=HEAD --resources='{\"party:<name>\": 1}' (see docs/deploy.md)"
            )
        party_cls = ray.remote(PartyActor)
        for rank, name in enumerate(self.config.parties):
            spec = specs[rank]
            options: dict[str, Any] = {
                "num_cpus": 0,
                "max_concurrency": 16,
                "name": None,
                "runtime_env": {"env_vars": ALLOCATOR_ENV},
            }
            if spec is not None and spec.resource:
                options["resources"] = {spec.resource: 0.001}
            self.actors.append(
                party_cls.options(**options).remote(
                    rank,
                    self.config,
                    self.transport,
                    self.session_id,
                    self.private.get(name),
                    spec.key_file if spec is not None else None,
                    show_output=name in self.show_output,
                )
            )
        if self.with_dealer:
            dealer_options: dict[str, Any] = {
                "num_cpus": 0,
                "max_concurrency": 8,
                "runtime_env": {"env_vars": ALLOCATOR_ENV},
            }
            if self.deployment is not None and self.deployment.dealer_resource:
                dealer_options["resources"] = {self.deployment.dealer_resource: 0.001}
            self.dealer = (
                ray.remote(DealerActor)
                .options(**dealer_options)
                .remote(
                    self.config.protocol,
                    len(self.config.parties),
                    self.config.threshold,
                    self.session_id,
                    "simulated" if self.enclave is not None else None,
                )
            )
        self._record_processes()
        self._wire(specs)
        self._relay = OutputRelay(
            {
                n: a
                for n, a in zip(self.config.parties, self.actors, strict=True)
                if n in self.show_output
            }
        ).start()

    def _record_processes(self) -> None:
        """Ask each actor for its process, so that `close` can make sure none outlives it (an
        actor that failed to start records nothing: `_wire` then says why)."""
        import ray

        owners = dict(zip(self.config.parties, self.actors, strict=True))
        if self.dealer is not None:
            owners[""] = self.dealer
        refs = {a.process.remote(): name for name, a in owners.items()}
        ready, _ = ray.wait(list(refs), num_returns=len(refs), timeout=SETUP_TIMEOUT)
        for ref in ready:
            with contextlib.suppress(Exception):
                wire = ray.get(ref)
                if wire is not None:
                    tag = ProcessTag.from_wire(wire)
                    self.processes.append(tag)
                    if refs[ref]:
                        self.process_of[refs[ref]] = tag

    def _get(self, refs: Any, what: str) -> Any:
        import ray

        try:
            return ray.get(refs, timeout=SETUP_TIMEOUT)
        except ray.exceptions.GetTimeoutError:
            raise ConfigurationError(
                f"session set-up timed out while {what} (are all nodes up and reachable?)"
            ) from None
        except ray.exceptions.RayTaskError as exc:
            raise _original(exc) from None
        except ray.exceptions.RayActorError as exc:
            detail = str(exc).strip().splitlines()[-1] if str(exc).strip() else repr(exc)
            raise ConfigurationError(
                f"a party actor could not start while {what}: {detail}"
            ) from None

    def _wire(self, specs: list[Any]) -> None:
        names = list(self.config.parties)
        if self.transport in ("tcp", "tcp-plaintext"):
            actual = self._get([a.public_key.remote() for a in self.actors], "starting parties")
            keys = dict(zip(names, actual, strict=True))
            if self.deployment is not None and specs[0].public_key is not None:
                for spec in specs:
                    if keys[spec.name] != spec.public_key:
                        raise ConfigurationError(
                            f"party {spec.name!r}: its key file does not match the public key "
                            "pinned in the deployment config"
                        )
                    keys[spec.name] = spec.public_key
            hosts = [s.host if s is not None else "127.0.0.1" for s in specs]
            addresses = self._get(
                [a.listen.remote(h, keys) for a, h in zip(self.actors, hosts, strict=True)],
                "opening party ports",
            )
            book = {name: tuple(addr) for name, addr in zip(names, addresses, strict=True)}
            self._get([a.connect.remote(book) for a in self.actors], "connecting parties")
        else:
            self._get(
                [a.use_ray_transport.remote(self.actors) for a in self.actors], "wiring parties"
            )
        # the parties trust only the platform keys pinned in the session's own settings (never
        # one the dealer reports: mpc.parties.actors.enclave_policy)
        party_enclave = self.enclave if self.dealer is not None else None
        self.attestations = self._get(
            [a.attach_dealer.remote(self.dealer, party_enclave) for a in self.actors],
            "attaching the dealer",
        )

    def dealer_stats(self) -> dict[str, int]:
        if self.dealer is None:
            return {}
        stats: dict[str, int] = self._get(self.dealer.stats.remote(), "asking the dealer")
        return stats

    def prefetch(self, stream: Stream, count: int) -> None:
        """Fetch dealer corrections for the next run."""
        wire = stream.in_epoch(self._run_id + 1).to_wire()
        self._get([a.prefetch.remote([(wire, count)]) for a in self.actors], "prefetch")

    def preprocess(self, needs: Sequence[tuple[Stream, int]], runs: int) -> dict[str, int]:
        """Fetch the dealer items `needs` for each of the next `runs` runs, run by run (so that
        the dealer's cache of other parties' shares serves them all); bytes held per party."""
        held = dict.fromkeys(self.config.parties, 0)
        for ahead in range(1, runs + 1):
            wires = [(s.in_epoch(self._run_id + ahead).to_wire(), n) for s, n in needs]
            answers = self._get([a.prefetch.remote(wires) for a in self.actors], "preprocessing")
            for name, got in zip(self.config.parties, answers, strict=True):
                held[name] += int(got)
        return held

    def dealer_usage(self) -> list[tuple[Stream, int]]:
        """The dealer items the last run took: the most any party took of each stream."""
        answers = self._get([a.dealer_usage.remote() for a in self.actors], "asking the parties")
        return most_used([(Stream.from_wire(w), int(n)) for answer in answers for w, n in answer])

    def execute(
        self, program: Program, args: tuple[Any, ...], kwargs: Mapping[str, Any]
    ) -> tuple[dict[str, Any], dict[str, PartyStats]]:
        import ray

        self._run_id += 1
        _ship_by_value(program)
        names = list(self.config.parties)
        refs = [a.run.remote(self._run_id, program, args, dict(kwargs)) for a in self.actors]
        actor_of = dict(zip(names, self.actors, strict=True))
        run_id = self._run_id

        def wait(pending: list[Any], timeout: float | None) -> tuple[list[Any], list[Any]]:
            ready, rest = ray.wait(pending, num_returns=1, timeout=timeout)
            return list(ready), list(rest)

        died: list[str] = []

        def fetch(ref: Any, name: str) -> Any:
            try:
                return ray.get(ref)
            except ray.exceptions.RayTaskError as exc:
                return _original(exc)
            except ray.exceptions.RayActorError:
                died.append(name)
                return PartyFailedError(
                    name, "unknown", "the party's process died (actor killed or crashed)"
                )

        def tell(name: str, failed: str, reason: str) -> None:
            with contextlib.suppress(Exception):  # best effort: the actor may be gone
                actor_of[name].peer_aborted.remote(failed, reason, run_id)

        def stop(name: str) -> None:
            self.stopped.add(name)
            with contextlib.suppress(Exception):
                ray.kill(actor_of[name])
            tag = self.process_of.get(name)
            if tag is not None:  # frozen: no grace period helps; its peers' sockets close now
                kill_now(tag)

        def answered(handles: list[Any]) -> list[Any]:
            ready, _ = ray.wait(handles, num_returns=len(handles), timeout=0)
            return list(ready)

        liveness = Liveness(
            names,
            silence=self.config.timeout,
            ping=lambda name: actor_of[name].alive.remote(),
            answered=answered,
        )
        results, failures, stopped = await_parties(
            dict(zip(refs, names, strict=True)),
            wait=wait,
            fetch=fetch,
            tell=tell,
            stop=stop,
            straggler_timeout=self.straggler_timeout,
            run_timeout=self.run_timeout,
            abort_grace=ABORT_GRACE,
            liveness=liveness,
        )
        self._await_output(results, failures)
        # the others' failures (receive timeouts, lost connections) are most likely the
        # consequence of a party that went silent, was stopped, or died
        first = [n for n in [*stopped, *died] if n in failures]
        if first:
            failures = {first[0]: failures[first[0]], **failures}
        if failures:
            raise _named_root_cause(failures)
        outputs = {n: results[n][0] for n in names}
        return outputs, {n: PartyStats.from_dict(results[n][1]) for n in names}

    def _await_output(
        self, results: Mapping[str, Any], failures: Mapping[str, BaseException]
    ) -> None:
        """Return from a run only once what its parties printed is shown (`OutputRelay`)."""
        import ray

        counts = {n: results[n][2] for n in self._relay.parties if n in results}
        failed = [n for n in self._relay.parties if n in failures and n not in self.stopped]
        if failed:  # a failed run returns no count: ask for it
            refs = [self.actors[self.config.parties.index(n)].printed.remote() for n in failed]
            with contextlib.suppress(Exception):
                counts.update(zip(failed, ray.get(refs, timeout=SETUP_TIMEOUT / 20), strict=True))
        self._relay.wait_for(counts)

    def close(self) -> None:
        """Close the parties' transports, stop the actors (and the Ray this session started),
        then end any actor process still alive after `EXIT_GRACE` s (one stuck in Ray's own
        shutdown would otherwise outlive the session)."""
        import ray

        self._relay.stop()

        processes, self.processes = self.processes, []
        if ray.is_initialized():
            live = [
                a
                for name, a in zip(self.config.parties, self.actors, strict=False)
                if name not in self.stopped
            ]
            with contextlib.suppress(Exception):  # dead actors cannot close; they are killed
                ray.get([a.close.remote() for a in live], timeout=10)
            for actor in [*self.actors, self.dealer]:
                if actor is not None:
                    with contextlib.suppress(Exception):
                        ray.kill(actor)
            self.actors = []
            self.dealer = None
            if self._started_ray:
                ray.shutdown()
                self._started_ray = False
        end_processes(processes, EXIT_GRACE)


def await_parties(
    owners: Mapping[Any, str],
    *,
    wait: Callable[[list[Any], float | None], tuple[list[Any], list[Any]]],
    fetch: Callable[[Any, str], Any],
    tell: Callable[[str, str, str], None],
    stop: Callable[[str], None],
    straggler_timeout: float,
    run_timeout: float | None = None,
    abort_grace: float = ABORT_GRACE,
    liveness: Liveness | None = None,
) -> tuple[dict[str, Any], dict[str, BaseException], list[str]]:
    """Wait for the run of every party (`owners`: its result handle -> party name) to return.

    `wait(pending, timeout)` returns (ready, still pending), ready holding at least one handle
    unless `timeout` (seconds; None: no limit) passed; `fetch(handle, name)` returns the
    party's result, or its failure as an exception object. At the first failure every other
    party is told (`tell(party, failed party, reason)`) so that its receives end at once.

    With `liveness`, a pending party that answers no ping for `liveness.silence` s (frozen, or
    its node unreachable) is stopped at once (`stop(party)`) and counts as failed, and the others
    are told. Once one party has returned, the others must return within `straggler_timeout` s,
    and all within `run_timeout` s of the start if it is set. A party that misses that deadline
    is told to abort, gets `abort_grace` s more, and is then stopped, since a party stuck
    outside a receive would otherwise hang the session for ever.

    Returns (results, failures, stopped): results and failures by party name; `stopped` names
    the parties that were stopped (silent, then late), each with a `PartyFailedError` in
    `failures` saying why.
    """
    results: dict[str, Any] = {}
    failures: dict[str, BaseException] = {}
    stopped: list[str] = []
    pending = list(owners)
    run_deadline = math.inf if run_timeout is None else time.monotonic() + run_timeout
    deadline = run_deadline
    first: str | None = None  # the party that returned first
    slice_ = math.inf if liveness is None else liveness.interval

    def failed(name: str, outcome: BaseException) -> None:
        failures[name] = outcome
        if len(failures) == 1:
            reason = f"party {name!r} failed: {outcome}"
            for other in owners.values():
                if other != name:
                    tell(other, name, reason)

    def returned(name: str) -> None:
        nonlocal first, deadline
        if first is None:
            first = name
            deadline = min(deadline, time.monotonic() + straggler_timeout)

    def collect(ready: list[Any]) -> None:
        for ref in ready:
            name = owners[ref]
            outcome = fetch(ref, name)
            if isinstance(outcome, BaseException):
                failed(name, outcome)
            else:
                results[name] = outcome
            returned(name)

    def check_silent() -> None:
        nonlocal pending
        if liveness is None:
            return
        silent = set(liveness.check(owners[ref] for ref in pending))
        if not silent:
            return
        pending = [ref for ref in pending if owners[ref] not in silent]
        for name in [n for n in owners.values() if n in silent]:
            stop(name)
            stopped.append(name)
            failed(
                name,
                PartyFailedError(
                    name,
                    "unknown",
                    f"it answered nothing for {liveness.silence:g} s (the receive timeout): its "
                    "process is frozen or its node unreachable, so its actor was stopped; start "
                    "a new session",
                ),
            )
            returned(name)

    check_silent()
    while pending:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        step = min(remaining, slice_)
        ready, pending = wait(pending, None if math.isinf(step) else step)
        collect(ready)
        check_silent()
    if not pending:
        return results, failures, stopped
    if first is None or deadline == run_deadline:
        why = f"did not finish the run within its time limit of {run_timeout:g} s"
    else:
        how = "failed" if first in failures else "finished"
        why = f"did not finish the run within {straggler_timeout:g} s after party {first!r} {how}"
    for ref in pending:
        name = owners[ref]
        tell(name, first or name, f"party {name!r} {why}")
    grace_end = time.monotonic() + abort_grace
    while pending:
        remaining = grace_end - time.monotonic()
        if remaining <= 0:
            break
        ready, pending = wait(pending, min(remaining, slice_))
        collect(ready)
        check_silent()
    late = [owners[ref] for ref in pending]
    for name in late:
        stop(name)
        stopped.append(name)
        failures[name] = PartyFailedError(
            name,
            "unknown",
            f"{why}, nor when told to abort: it is stuck outside a receive (a computation or "
            "call that does not end), so its actor was stopped; start a new session",
        )
    return results, failures, stopped


def _original(exc: Any) -> BaseException:
    """The exception a Ray task raised, without Ray's traceback-laden wrapper when it is ours."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, MpcError):
        return cause
    wrapped: BaseException = exc.as_instanceof_cause()
    return wrapped


def _ship_by_value(program: Program) -> None:
    """Send the program's own module by value: party workers cannot import user scripts/tests."""
    import sys

    from ray import cloudpickle

    module = sys.modules.get(getattr(program, "__module__", "") or "")
    if (
        module is not None
        and module.__name__ not in ("__main__",)
        and not (module.__name__ == "mpc" or module.__name__.startswith("mpc."))
    ):
        cloudpickle.register_pickle_by_value(module)  # type: ignore[no-untyped-call]


def _named_root_cause(failures: Mapping[str, BaseException]) -> BaseException:
    """Prefer a primary failure; a dead party (operation unknown) borrows its peers' operation."""
    cause = root_cause(failures)
    if isinstance(cause, PartyFailedError) and cause.operation == "unknown":
        ops = [
            f.operation
            for f in failures.values()
            if isinstance(f, PartyFailedError) and f.operation != "unknown"
        ]
        if ops:
            return PartyFailedError(cause.party, ops[0], cause.cause)
    return cause
