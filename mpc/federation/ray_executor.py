"""Runs a party's runs in a Ray actor on that organisation's own Ray.

Responsibility: start (`ray_address = "local"`: a new private instance) or attach to the
organisation's own Ray, place one party actor on this node, and execute each agreed run there.
While a run goes on the actor is pinged (`mpc.parties.liveness`): one that answers nothing for
the receive timeout (its process frozen) is killed, and the run fails at once with an error
naming this party, instead of the service waiting for it for ever; the same for an actor whose
process died. The next run starts a fresh actor.
Security model: Ray is used only inside one organisation (any member of a Ray cluster can run
code on every node of it). The actor reads the same policy file and key as the service; nothing
of Ray crosses to another organisation: peers and the dealer are reached over encrypted TCP.
With the policy's `show_output`, what the program prints is shown in the service's log as
``[party] line`` (printable characters only; `mpc.parties.output`); without it, it stays in the
actor's own Ray log (Ray's forwarding of worker output to the service is off either way).
A private instance (`"local"`) starts with Ray token authentication (refused off; the token in
the service user's ~/.ray/auth_token) and a loopback node address; Ray's ports still listen on every
interface, so an organisation's firewall should open only the party's control and data ports.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
from pathlib import Path
from typing import Any

from mpc.errors import ConfigurationError, PartyFailedError
from mpc.federation.party_service import Executor, show_program_line
from mpc.federation.policy import PartyPolicy
from mpc.federation.run import RunOutcome, RunRequest, execute
from mpc.parties.keys import PartyKey
from mpc.parties.liveness import Liveness
from mpc.parties.output import DRAIN_SECONDS, OutputBuffer, OutputRelay, RelaysOutput
from mpc.parties.processes import ProcessTag, end_processes, kill_now, process_tag
from mpc.parties.ray_setup import quiet_token_notice
from mpc.parties.tuning import ALLOCATOR_ENV
from mpc.private_files import create_private_file
from mpc.stats import PartyStats

#: How long a new party actor may take to start, and how long its process gets to exit once the
#: service closed before it is killed (seconds).
ACTOR_START_TIMEOUT = 120.0
EXIT_GRACE = 3.0


class PartyRunActor(RelaysOutput):
    """The party inside its organisation's Ray (wrapped with ray.remote by `RayExecutor`)."""

    def __init__(self, policy_path: str) -> None:
        self.policy = PartyPolicy.load(policy_path)
        self.key = PartyKey.load(self.policy.key_file)
        self._output = OutputBuffer() if self.policy.show_output else None

    def process(self) -> tuple[str, int, int] | None:
        """This actor's process (`mpc.parties.processes.ProcessTag`), to kill it if it freezes."""
        tag = process_tag()
        return None if tag is None else tag.to_wire()

    def alive(self) -> None:
        """Answer the service's ping during a run (another thread of this actor)."""

    def execute(self, request: dict[str, Any]) -> tuple[Any, dict[str, Any], int]:
        """Run `request`: (output, stats, lines printed so far: see `take_output`)."""
        if self._output is None:
            outcome = execute(self.policy, self.key, RunRequest.from_wire(request))
            return outcome.output, outcome.stats.as_dict(), 0
        outcome = execute(
            self.policy, self.key, RunRequest.from_wire(request), output=self._output.capturing
        )
        return outcome.output, outcome.stats.as_dict(), self._output.count


def _ray_token() -> None:
    """Ray token authentication (Ray's default for a new local instance), refused off; its
    token file (~/.ray/auth_token, 0600) is created atomically if missing, so that services
    started side by side on one machine never race to write different tokens."""
    if os.environ.get("RAY_AUTH_MODE", "token").lower() != "token":
        raise ConfigurationError(
            "RAY_AUTH_MODE is set to something other than 'token': a party's own Ray must "
            "require a token (unset RAY_AUTH_MODE)"
        )
    # (unset: Ray turns token authentication on for a new local instance by itself)
    token = Path.home() / ".ray" / "auth_token"
    if token.exists():
        return
    token.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):  # another service made it first: use that
        create_private_file(token, secrets.token_hex(32).encode())


class RayExecutor(Executor):
    """Executes runs in a `PartyRunActor` placed on this node of the organisation's Ray."""

    def __init__(self, policy: PartyPolicy, num_cpus: int = 2) -> None:
        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        self._started = False
        if not ray.is_initialized():
            if policy.ray_address == "local":
                # Ray runs any client's code and listens on every interface: this organisation's
                # own Ray requires a token only its processes know (Ray token authentication),
                # and the node announces itself on loopback only.
                _ray_token()
                quiet_token_notice()  # token authentication on is what we want: no notice
                ray.init(
                    address="local",  # its own instance, even if a `ray start` cluster is up
                    num_cpus=num_cpus,
                    include_dashboard=False,
                    logging_level=logging.WARNING,
                    log_to_driver=False,
                    _node_ip_address="127.0.0.1",
                )
            else:
                ray.init(
                    address=policy.ray_address, logging_level=logging.WARNING, log_to_driver=False
                )
            self._started = True
        node = ray.get_runtime_context().get_node_id()
        self._actor_class = ray.remote(PartyRunActor).options(
            num_cpus=0,
            max_concurrency=3,  # a run, the relay's call for its output, the ping
            scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False),
            runtime_env={"env_vars": ALLOCATOR_ENV},
        )
        self.policy = policy
        self.timeout = policy.settings.timeout
        self.actor: Any = None
        self.process: ProcessTag | None = None
        self._relay = OutputRelay({})
        self._start_actor()

    def _start_actor(self) -> None:
        import ray

        self.actor = self._actor_class.remote(str(Path(self.policy.origin)))
        wire = ray.get(self.actor.process.remote(), timeout=ACTOR_START_TIMEOUT)
        self.process = None if wire is None else ProcessTag.from_wire(wire)
        shown = {self.policy.name: self.actor} if self.policy.show_output else {}
        self._relay = OutputRelay(shown, show_program_line).start()

    def _drop_actor(self) -> None:
        """Kill the actor that stopped answering or died (and its process, if it is still
        there); the next run starts a fresh one."""
        import ray

        self._relay.stop()
        with contextlib.suppress(Exception):
            ray.kill(self.actor)
        if self.process is not None:
            kill_now(self.process)
        self.actor, self.process = None, None

    def _wait(self, ref: Any) -> Any:
        """The run's result, or PartyFailedError once the actor answers no ping for a timeout."""
        import ray

        def answered(handles: list[Any]) -> list[Any]:
            return list(ray.wait(handles, num_returns=len(handles), timeout=0)[0])

        actor = self.actor
        liveness = Liveness(
            [self.policy.name],
            silence=self.timeout,
            ping=lambda _name: actor.alive.remote(),
            answered=answered,
        )
        while not ray.wait([ref], timeout=liveness.interval)[0]:
            if liveness.check([self.policy.name]):
                self._drop_actor()
                raise PartyFailedError(
                    self.policy.name,
                    "unknown",
                    f"its party actor answered nothing for {self.timeout:g} s (the receive "
                    "timeout): its process is frozen, so it was killed (a new one takes the "
                    "next run)",
                )
        return ray.get(ref)

    def execute(self, request: RunRequest) -> RunOutcome:
        import ray

        from mpc.parties.ray_runtime import _original

        if self.actor is None:
            self._start_actor()
        try:
            output, stats, printed = self._wait(self.actor.execute.remote(request.to_wire()))
        except ray.exceptions.RayTaskError as exc:
            with contextlib.suppress(Exception):  # show what it printed before it failed
                self._relay.wait_for(
                    {
                        n: ray.get(self.actor.printed.remote(), timeout=DRAIN_SECONDS)
                        for n in self._relay.parties
                    }
                )
            raise _original(exc) from None
        except ray.exceptions.RayActorError:
            self._drop_actor()  # dead already: only forgotten
            raise PartyFailedError(
                self.policy.name,
                "unknown",
                "its party actor's process died (killed or crashed); a new one takes the next run",
            ) from None
        self._relay.wait_for(dict.fromkeys(self._relay.parties, printed))
        return RunOutcome(output, PartyStats.from_dict(stats))

    def close(self) -> None:
        import ray

        self._relay.stop()
        if not ray.is_initialized():
            return
        if self.actor is not None:
            ray.kill(self.actor)
        if self._started:
            ray.shutdown()
        if self.process is not None:
            end_processes([self.process], EXIT_GRACE)
