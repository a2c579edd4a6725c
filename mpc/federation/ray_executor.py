"""Runs a party's runs in a Ray actor on that organisation's own Ray.

Responsibility: start (`ray_address = "local"`: a new private instance) or attach to the
organisation's own Ray, place one party actor on this node, and execute each agreed run there.
Security model: Ray is used only inside one organisation (any member of a Ray cluster can run
code on every node of it). The actor reads the same policy file and key as the service; nothing
of Ray crosses to another organisation: peers and the dealer are reached over encrypted TCP.
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

from mpc.errors import ConfigurationError
from mpc.federation.party_service import Executor
from mpc.federation.policy import PartyPolicy
from mpc.federation.run import RunOutcome, RunRequest, execute
from mpc.parties.keys import PartyKey
from mpc.parties.tuning import ALLOCATOR_ENV
from mpc.private_files import create_private_file
from mpc.stats import PartyStats


class PartyRunActor:
    """The party inside its organisation's Ray (wrapped with ray.remote by `RayExecutor`)."""

    def __init__(self, policy_path: str) -> None:
        self.policy = PartyPolicy.load(policy_path)
        self.key = PartyKey.load(self.policy.key_file)

    def execute(self, request: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        outcome = execute(self.policy, self.key, RunRequest.from_wire(request))
        return outcome.output, outcome.stats.as_dict()


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
                ray.init(
                    num_cpus=num_cpus,
                    include_dashboard=False,
                    logging_level=logging.WARNING,
                    log_to_driver=policy.show_output,
                    _node_ip_address="127.0.0.1",
                )
            else:
                ray.init(address=policy.ray_address, logging_level=logging.WARNING)
            self._started = True
        node = ray.get_runtime_context().get_node_id()
        self.actor: Any = (
            ray.remote(PartyRunActor)
            .options(
                num_cpus=0,
                scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False),
                runtime_env={"env_vars": ALLOCATOR_ENV},
            )
            .remote(str(Path(policy.origin)))
        )
        self.timeout = policy.settings.timeout

    def execute(self, request: RunRequest) -> RunOutcome:
        import ray

        from mpc.parties.ray_runtime import _original

        try:
            output, stats = ray.get(self.actor.execute.remote(request.to_wire()))
        except ray.exceptions.RayTaskError as exc:
            raise _original(exc) from None
        return RunOutcome(output, PartyStats.from_dict(stats))

    def close(self) -> None:
        import ray

        if not ray.is_initialized():
            return
        ray.kill(self.actor)
        if self._started:
            ray.shutdown()
