"""Runs across organisations on loopback: party services and the dealer service, each under its
own policy, started in this process (the multi-host version is tests/test_multihost.py)."""

from __future__ import annotations

import re
import secrets
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from mpc.errors import ConfigurationError, MpcError
from mpc.federation.dealer_service import DealerService
from mpc.federation.party_service import PartyService
from mpc.federation.policy import DealerPolicy, PartyPolicy
from mpc.federation.programs import program_hash
from mpc.federation.run import RunRequest
from mpc.federation.secure_rpc import SecureClient
from mpc.federation.starter import start_run
from mpc.parties.keys import PartyKey
from tests.federation_helpers import HOSPITALS, SCENARIOS, running, start, write_local

JOINT = SCENARIOS / "joint_statistics.py"

SUM_PROGRAM = """
import numpy as np

def party_program(ctx, args):
    mine = np.load(ctx.private["values"]) if "values" in ctx.private else None
    xs = [ctx.input(p, mine if ctx.me == p else None) for p in ctx.parties]
    total = ctx.reveal(ctx.sum(xs) * args.get("scale", 1.0))
    return {"total": total}
"""

LEAKY_PROGRAM = """
import numpy as np

def party_program(ctx, args):
    x = ctx.input(ctx.parties[0], np.array([3.0, 4.0]) if ctx.me == ctx.parties[0] else None)
    kind = args["leak"]
    if kind == "share":
        return {"x": x.share}
    if kind == "private":
        return {"data": ctx.private["values"]}
    if kind == "derived":
        return {"y": x.share.astype(np.float64) * 2}
    if kind == "float":
        return {"y": float(x.share[0])}
    if kind == "mutated":
        opened = ctx.reveal(x)
        opened[:] = x.share
        return {"x": opened}
    if kind == "subclass":  # an array type that claims to be a view of a revealed one
        opened = ctx.reveal(x)

        class Liar(np.ndarray):
            @property
            def base(self):
                return opened

        return {"x": x.share.view(Liar)}
    if kind == "slice":  # a length chosen from private data
        opened = ctx.reveal(x)
        return {"x": opened[: len(ctx.private["values"]) % 2]}
    return {"x": ctx.reveal(x)}


def accept_args(args):
    return args
"""


def _program(folder: Path, name: str, source: str) -> Path:
    path = folder / name
    path.write_text(source)
    return path


def _values(tmp_path: Path, names: tuple[str, ...] = HOSPITALS) -> dict[str, dict[str, str]]:
    data = {}
    for i, name in enumerate(names):
        path = tmp_path / f"{name}-values.npy"
        np.save(path, np.array([1.5 * (i + 1), -2.0 + i]))
        data[name] = {"values": str(path)}
    return data


@pytest.fixture
def sum_deployment(tmp_path: Path) -> tuple[dict[str, Path], Path]:
    program = _program(tmp_path, "sum.py", SUM_PROGRAM)
    policies = write_local(tmp_path / "deploy", [program], data=_values(tmp_path))
    return policies, program


def test_joint_statistics_across_organisations_equals_plaintext(tmp_path: Path) -> None:
    from scenarios.joint_statistics import make_data, plaintext, summarise

    csvs = make_data(list(HOSPITALS), tmp_path / "data")
    data = {n: {"csv": str(p)} for n, p in csvs.items()}
    policies = write_local(tmp_path / "deploy", [JOINT], data=data)
    with running(policies) as services:
        output = start(policies, "north", JOINT)
        # every party keeps its own (equal) revealed output; the peers finish just after
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not all(
            services[n].results for n in HOSPITALS if n != "north"
        ):
            time.sleep(0.05)
    secure = summarise({k: int(v) for k, v in output.items()})
    expected = plaintext(csvs)
    for key, value in expected.items():
        assert secure[key] == pytest.approx(value, rel=1e-12, abs=1e-9)  # integers: exact
    for name in HOSPITALS:
        (entry,) = services[name].results
        assert entry["output"] == {k: v.tolist() for k, v in output.items()}


def test_sum_program_and_the_starter_gets_only_the_revealed_output(
    sum_deployment: tuple[dict[str, Path], Path],
) -> None:
    policies, program = sum_deployment
    with running(policies):
        output = start(policies, "south", program, ())
    # east [1.5, -2], north [3, -1], south [4.5, 0]  (names sorted: east, north, south)
    np.testing.assert_allclose(output["total"], [9.0, -3.0], atol=3 * 2**-16)
    assert set(output) == {"total"}


@pytest.mark.parametrize(
    "leak", ["share", "private", "derived", "float", "mutated", "subclass", "slice"]
)
def test_only_revealed_values_leave_a_party(tmp_path: Path, leak: str) -> None:
    program = _program(tmp_path, "leaky.py", LEAKY_PROGRAM)
    policies = write_local(tmp_path / "deploy", [program], data=_values(tmp_path))
    source = program.read_text() + f"\n\ndef public_args(argv):\n    return {{'leak': {leak!r}}}\n"
    program.write_text(source)
    for name in HOSPITALS:  # re-approve the edited file at every party
        (policies[name].parent / "programs" / "leaky.py").write_text(source)
    with running(policies), pytest.raises(MpcError, match=r"not a value ctx\.reveal gave"):
        start(policies, "north", program)


def test_revealed_output_passes_the_output_check(tmp_path: Path) -> None:
    source = LEAKY_PROGRAM + "\n\ndef public_args(argv):\n    return {'leak': 'none'}\n"
    program = _program(tmp_path, "leaky.py", source)
    policies = write_local(tmp_path / "deploy", [program], data=_values(tmp_path))
    with running(policies):
        output = start(policies, "north", program)
    np.testing.assert_allclose(output["x"], [3.0, 4.0])


def test_public_arguments_outside_the_programs_bounds_are_refused_at_every_party(
    tmp_path: Path,
) -> None:
    """The starter's recipe that makes the revealed model one patient's row (batch of one,
    learning_rate * l2 = 1) is refused by the starting party and, sent by a malicious
    coordinator straight to a peer, by that peer too; so are keys the recipe does not have."""
    from scenarios.hospitals_logreg import write_rows

    rows = write_rows(list(HOSPITALS), tmp_path / "rows", rows=60)
    data = {n: {"rows": str(p)} for n, p in rows.items()}
    program = SCENARIOS / "hospitals_logreg.py"
    policies = write_local(tmp_path / "deploy", [program], data=data)
    extraction = {
        "sigmoid": "poly",
        "epochs": 1,
        "learning_rate": 0.02,
        "l2": 50.0,
        "batch_size": 1,
    }
    digest = program_hash(program)
    north = PartyPolicy.load(policies["north"])
    key = PartyKey.load(north.key_file)
    east = next(p for p in north.peers if p.name == "east")
    with running(policies) as services:
        with SecureClient("north", key, "north", key.public_bytes, (north.host, north.port)) as c:
            last_row = {  # a batch of n - 1 rows leaves a last batch of one row
                **extraction,
                "learning_rate": 1.0,
                "l2": 0.0,
                "batch_size": 59,
            }
            for args in (
                extraction,
                last_row,
                {**extraction, "batch_size": None, "l2": 0.0, "penalize_intercept": True},
            ):
                with pytest.raises(MpcError, match="refuses these public arguments"):
                    c.call("start", {"program": digest, "args": args})
        with SecureClient("north", key, "east", east.public_key, (east.host, east.port)) as c:
            proposal = RunRequest(secrets.token_bytes(16), "north", digest, extraction)
            with pytest.raises(MpcError, match="refuses these public arguments"):
                c.call("propose", proposal.to_wire())
        assert not services["east"]._busy.locked()
        assert services["dealer"]._seen == set()
    with pytest.raises(ValueError, match="batch_size"):  # the starter learns it first
        start_run(policies["north"], program, ["--batch-size", "1"])


FAILING_PROGRAM = """
import numpy as np
from mpc.errors import ShapeMismatchError

def party_program(ctx, args):
    mine = np.load(ctx.private["values"])
    if ctx.me == "east":  # an error whose text quotes this party's private data
        raise ShapeMismatchError(f"east's largest value is {mine.max():.6f}")
    x = ctx.input("north", mine if ctx.me == "north" else None)
    return {"x": ctx.reveal(x)}
"""


def test_the_text_of_a_partys_error_stays_in_its_own_log(tmp_path: Path) -> None:
    """Peers and the starter learn the error's type and operation, not its text."""
    program = _program(tmp_path, "failing.py", FAILING_PROGRAM)
    policies = write_local(tmp_path / "deploy", [program], data=_values(tmp_path))
    secret = "1.500000"  # east's largest value (tests: _values)
    with running(policies) as services:
        with pytest.raises(MpcError) as failed:
            start(policies, "north", program)
        for name in HOSPITALS:
            _wait_results(services, name)
    assert "ShapeMismatchError" in str(failed.value) and secret not in str(failed.value)
    assert secret in services["east"].results[-1]["error"]  # east's own log keeps it
    for name in ("north", "south"):
        error = services[name].results[-1]["error"]
        assert "ShapeMismatchError" in error and secret not in error, error


def test_busy_refusals_are_not_remembered_and_logs_are_printable(
    sum_deployment: tuple[dict[str, Path], Path],
) -> None:
    from mpc.federation.party_service import printable

    policies, program = sum_deployment
    north = PartyPolicy.load(policies["north"])
    key = PartyKey.load(north.key_file)
    east = next(p for p in north.peers if p.name == "east")
    with running(policies) as services:
        assert services["east"]._busy.acquire(blocking=False)  # east is in another run
        try:
            with SecureClient("north", key, "east", east.public_key, (east.host, east.port)) as c:
                for _ in range(50):
                    proposal = RunRequest(
                        secrets.token_bytes(16), "north", program_hash(program), {}
                    )
                    with pytest.raises(MpcError, match="busy"):
                        c.call("propose", proposal.to_wire())
            assert services["east"]._seen == set()
        finally:
            services["east"]._busy.release()
    line = printable("reason\n[east] forged line\x1b[2J\u2028end")
    assert line.isprintable() and "\n" not in line and "\x1b" not in line


def test_a_program_one_party_has_not_approved_is_refused_before_any_input(
    sum_deployment: tuple[dict[str, Path], Path],
) -> None:
    policies, program = sum_deployment
    (policies["south"].parent / "programs" / "sum.py").write_text(SUM_PROGRAM + "\n# edited\n")
    with running(policies) as services, pytest.raises(MpcError) as refused:
        start(policies, "north", program)
    message = str(refused.value)
    assert "south" in message and "not in this party's approved folder" in message
    assert services["dealer"]._seen == set()  # no run reached the dealer: nothing was shared
    # east had accepted the proposal: it is told the run was cancelled, and why, at once
    (east,) = services["east"].results
    assert "cancelled before it began" in east["error"] and "south" in east["error"]
    assert not services["south"].results  # it refused: nothing ran there
    assert not services["east"]._busy.locked()  # east is free for the next run


def test_a_party_with_other_protocol_settings_aborts_the_run_naming_it(
    sum_deployment: tuple[dict[str, Path], Path],
) -> None:
    policies, program = sum_deployment
    text = (
        policies["east"]
        .read_text()
        .replace('name = "additive"', 'name = "additive"\nfrac_bits = 20')
    )
    policies["east"].write_text(text)
    with running(policies) as services, pytest.raises(MpcError) as refused:
        start(policies, "north", program)
    assert "party 'east' sees a different settings" in str(refused.value)
    assert services["dealer"]._seen == set()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not all(services[n].results for n in HOSPITALS):
        time.sleep(0.05)
    for name in HOSPITALS:  # one clear error at every party
        assert "do not agree on this run" in services[name].results[-1]["error"]


def test_a_peer_key_that_does_not_match_the_policy_is_refused(
    sum_deployment: tuple[dict[str, Path], Path],
) -> None:
    policies, program = sum_deployment
    text = policies["south"].read_text()
    north_key = re.search(r'name = "north"\n.*?public_key = "([0-9a-f]{64})"', text, re.S)
    assert north_key is not None
    policies["south"].write_text(text.replace(north_key.group(1), PartyKey.generate().public_hex))
    with running(policies), pytest.raises(MpcError, match=r"pins|public key|refused"):
        start(policies, "north", program)


def test_a_dealer_with_another_key_is_refused(
    sum_deployment: tuple[dict[str, Path], Path],
) -> None:
    policies, program = sum_deployment
    PartyKey.generate().save(policies["dealer"].parent / "dealer.key")  # the host swapped it
    with running(policies), pytest.raises(MpcError, match="dealer"):
        start(policies, "north", program)


@pytest.mark.parametrize("east_pins", ["the dealer's platform", "another platform"])
def test_an_enclave_dealer_is_trusted_only_through_platform_keys_in_each_policy(
    tmp_path: Path, east_pins: str
) -> None:
    """The platform key comes from each party's own policy, never from the dealer: a party that
    pins another platform refuses the dealer's quote, and the run stops before any input."""
    program = _program(tmp_path, "sum.py", SUM_PROGRAM)
    policies = write_local(
        tmp_path / "deploy", [program], data=_values(tmp_path), protocol={"dealer": "enclave"}
    )
    dealer_text = policies["dealer"].read_text()
    policies["dealer"].write_text(
        dealer_text.replace("[dealer]\n", '[dealer]\nenclave = "simulated"\n')
    )
    services: dict[str, Any] = {}
    try:
        services["dealer"] = DealerService(DealerPolicy.load(policies["dealer"]))
        services["dealer"].start()
        platform = services["dealer"].platform_key.hex()
        for name in HOSPITALS:
            pinned = platform
            if name == "east" and east_pins == "another platform":
                pinned = (  # a platform of its own: not the (per-process) simulated one
                    Ed25519PrivateKey.generate().public_key().public_bytes_raw().hex()
                )
            text = policies[name].read_text()
            table = f'\n[enclave]\nplatform_keys = ["{pinned}"]\nallow_simulated = true\n'
            policies[name].write_text(text + table)
            services[name] = PartyService(PartyPolicy.load(policies[name]))
            services[name].start()
        if east_pins == "another platform":
            with pytest.raises(MpcError, match="east"):
                start(policies, "north", program)
            (east,) = _wait_results(services, "east")
            assert "platform" in east["error"] or "quote" in east["error"], east["error"]
        else:
            output = start(policies, "north", program)
            np.testing.assert_allclose(output["total"], [9.0, -3.0], atol=2.0**-16, rtol=0)
    finally:
        for service in services.values():
            service.close()


def _wait_results(services: dict[str, Any], name: str, timeout: float = 30.0) -> list[Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not services[name].results:
        time.sleep(0.05)
    return list(services[name].results)


def test_the_starter_cannot_choose_transport_protocol_or_keys(
    sum_deployment: tuple[dict[str, Path], Path],
) -> None:
    policies, program = sum_deployment
    policy = PartyPolicy.load(policies["north"])
    key = PartyKey.load(policy.key_file)
    with (
        running(policies),
        SecureClient(
            "north", key, "north", key.public_bytes, (policy.host, policy.port), timeout=20
        ) as client,
    ):
        for extra in ({"transport": "tcp-plaintext"}, {"protocol": "shamir"}, {"keys": {}}):
            params = {"program": program_hash(program), "args": {}, **extra}
            with pytest.raises(MpcError, match="only a program hash and public arguments"):
                client.call("start", params)


def test_a_peer_cannot_start_runs_and_strangers_are_refused(
    sum_deployment: tuple[dict[str, Path], Path],
) -> None:
    policies, program = sum_deployment
    north = PartyPolicy.load(policies["north"])
    south_key = PartyKey.load(PartyPolicy.load(policies["south"]).key_file)
    north_public = PartyKey.load(north.key_file).public_bytes
    params = {"program": program_hash(program), "args": {}}
    with running(policies):
        with (
            SecureClient(
                "south", south_key, "north", north_public, (north.host, north.port), timeout=20
            ) as client,
            pytest.raises(MpcError, match="may propose runs, not start them"),
        ):
            client.call("start", params)
        with pytest.raises(ConfigurationError):
            SecureClient(
                "mallory",
                PartyKey.generate(),
                "north",
                north_public,
                (north.host, north.port),
                timeout=20,
            )


def test_a_starter_key_listed_in_the_policy_can_start_runs_and_no_other(
    sum_deployment: tuple[dict[str, Path], Path], tmp_path: Path
) -> None:
    policies, program = sum_deployment
    analyst = PartyKey.generate()
    public = analyst.save(tmp_path / "analyst.key")
    text = policies["north"].read_text()
    policies["north"].write_text(text + f'\n[starters]\nanalyst = "{public}"\n')
    north_public = PartyKey.load(PartyPolicy.load(policies["north"]).key_file).public_hex
    with running(policies):
        answer, _ = start_run(
            policies["north"],
            program,
            key_file=tmp_path / "analyst.key",
            name="analyst",
            party_key=north_public,
            timeout=120,
        )
        # fixed point: the public factor's product truncates once, at most 1 ulp = 2^-16 off
        np.testing.assert_allclose(
            answer["output"]["total"], [1.5 + 3.0 + 4.5, -2.0 - 1.0 + 0.0], atol=2.0**-16, rtol=0
        )
        PartyKey.generate().save(tmp_path / "other.key")
        with pytest.raises(ConfigurationError):  # a key north's policy does not list
            start_run(
                policies["north"],
                program,
                key_file=tmp_path / "other.key",
                name="analyst",
                party_key=north_public,
                timeout=120,
            )


def test_a_replayed_run_is_refused_by_the_parties_and_the_dealer(
    sum_deployment: tuple[dict[str, Path], Path],
) -> None:
    from mpc.federation.run import RunRequest

    policies, program = sum_deployment
    north = PartyPolicy.load(policies["north"])
    north_key = PartyKey.load(north.key_file)
    with running(policies) as services:
        start(policies, "north", program)
        (old_run,) = services["south"]._seen
        south = north.peer("south")
        replay = RunRequest(old_run, "north", program_hash(program), {})
        with (
            SecureClient(
                "north", north_key, "south", south.public_key, (south.host, south.port), timeout=20
            ) as client,
            pytest.raises(MpcError, match="replay"),
        ):
            client.call("propose", replay.to_wire())
        # the dealer deals a run nonce once: re-opening the last run's nonce is refused
        (nonce,) = services["dealer"]._seen
        dealer = north.dealer
        assert dealer is not None
        with (
            SecureClient(
                "north",
                north_key,
                "dealer",
                dealer.public_key,
                (dealer.host, dealer.port),
                timeout=20,
            ) as client,
            pytest.raises(MpcError, match="replay"),
        ):
            client.call(
                "open", {"run": nonce, "parties": list(HOSPITALS), "settings": _settings(north)}
            )


def test_two_runs_of_the_same_program_use_fresh_nonces_and_masks(
    sum_deployment: tuple[dict[str, Path], Path],
) -> None:
    """The replay attack (same run id, same dealer items => difference of inputs) needs a
    repeated nonce: each run's nonce is fresh, so dealer seeds are too."""
    policies, program = sum_deployment
    with running(policies) as services:
        first = start(policies, "north", program)
        second = start(policies, "north", program)
        assert len(services["dealer"]._seen) == 2
    np.testing.assert_allclose(first["total"], second["total"], atol=3 * 2**-16)


def _settings(policy: PartyPolicy) -> dict[str, Any]:
    return {**policy.settings.describe(), "threshold": 2}
