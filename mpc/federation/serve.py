"""Long-running services: `mpc party serve` and `mpc dealer serve`, until Ctrl-C or SIGTERM.

Responsibility: load a policy, start the service, print where it listens, which key it presents
and where its privacy ledger is (refused under a temporary folder unless the policy allows it),
and stop cleanly (closing sockets and this organisation's Ray) on a signal.
Security model: see `mpc.federation.party_service` and `mpc.federation.dealer_service`.
"""

from __future__ import annotations

import signal
import sys
import threading
from types import FrameType

from mpc.errors import MpcError


def _wait_for_signal() -> None:
    stop = threading.Event()

    def handler(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    stop.wait()


def serve_party(policy_path: str, use_ray: bool = True) -> int:
    from mpc.federation.party_service import Executor, PartyService
    from mpc.federation.policy import PartyPolicy

    try:
        policy = PartyPolicy.load(policy_path)
        if policy.dp is not None:
            policy.dp.check_location(policy.origin)
        executor: Executor | None = None
        if use_ray and policy.ray_address != "none":
            from mpc.federation.ray_executor import RayExecutor

            executor = RayExecutor(policy)
        service = PartyService(policy, executor)
        host, port = service.start()
    except MpcError as exc:
        print(f"mpc party serve: {exc}", file=sys.stderr)
        return 2
    where = "a party actor on this organisation's Ray" if executor else "this process"
    print(
        f"party {policy.name!r} listening on {host}:{port} (data port {policy.data_port}), key "
        f"{service.key.fingerprint}; {len(policy.peers)} peers; runs in {where}; Ctrl-C stops",
        flush=True,
    )
    if policy.dp is not None:
        print(f"privacy ledger: {policy.dp.directory} (data set {policy.dp.dataset!r})", flush=True)
    try:
        _wait_for_signal()
    finally:
        service.close()
    return 0


def serve_dealer(policy_path: str) -> int:
    from mpc.federation.dealer_service import DealerService
    from mpc.federation.policy import DealerPolicy

    try:
        service = DealerService(DealerPolicy.load(policy_path))
        host, port = service.start()
    except MpcError as exc:
        print(f"mpc dealer serve: {exc}", file=sys.stderr)
        return 2
    print(
        f"dealer {service.policy.name!r} listening on {host}:{port}, key "
        f"{service.key.fingerprint}; parties {service.parties}; Ctrl-C stops",
        flush=True,
    )
    if service.policy.enclave == "simulated":
        print(
            f"SIMULATED enclave: platform key {service.platform_key.hex()} (parties that pin it "
            "with allow_simulated = true accept its quotes; they prove nothing: tests only)",
            flush=True,
        )
    try:
        _wait_for_signal()
    finally:
        service.close()
    return 0
