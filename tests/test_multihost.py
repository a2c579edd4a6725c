"""Three hospitals and a dealer, each on its own host, each hospital on its own Ray.

Every "host" is a network namespace with its own IP on a shared bridge (tests/netns.py); the
services are started with the real commands (`mpc party serve`, `mpc dealer serve`) and runs
with `mpc run PROGRAM --policy` in the starting hospital's namespace, so nothing is shared
between the organisations but the bridge. Needs root and iproute2: without them the tests
fail (they must run in CI), they are not skipped.

Bounds: the joint statistics are integer sums, exact, so they equal the plaintext sums and the
single-machine run exactly. The logistic-regression weights differ from the single-machine run
(same rows, same recipe) only by the fixed-point rounding of the two runs' independent
probabilistic truncations (1 ulp = 2^-16 per truncation, a few hundred truncations deep); we
test |w_hosts - w_local| <= 2e-3 per coefficient and measured about 1e-4.

Negative runs (approved program differs, a pinned peer key differs, another dealer key, a
budget lower than the release) each use their own services without Ray on the same hosts;
each must give one clear error at every hospital, reveal nothing and charge no ledger.
"""

from __future__ import annotations

import contextlib
import json
import select
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import netns
import numpy as np
import pytest
from netns import Host as NetHost

from mpc.federation.example import Host, write_deployment
from mpc.parties.keys import PartyKey
from mpc.scenario import load_script
from mpc.session import Session

pytestmark = pytest.mark.ray

HOSPITALS = ("east", "north", "south")
SCENARIOS = Path(__file__).resolve().parent.parent / "scenarios"
PROGRAMS = [SCENARIOS / p for p in ("joint_statistics.py", "hospitals_logreg.py")]
DP_PROGRAM = SCENARIOS / "dp_joint_statistics.py"
MPC = str(Path(sys.executable).parent / "mpc")
READY_TIMEOUT = 180.0
RUN_TIMEOUT = 300.0
stats = load_script(SCENARIOS / "joint_statistics.py")
logreg = load_script(SCENARIOS / "hospitals_logreg.py")


# ---- hosts and services ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hosts() -> Iterator[dict[str, NetHost]]:
    with netns.namespace_hosts([*HOSPITALS, "dealer"]) as made:
        tags = {h.netns for h in made.values()}
        yield made
    left = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert not [ns for ns in tags if ns in left], f"namespaces left behind: {left}"


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, str]]:
    folder = tmp_path_factory.mktemp("hospital-data")
    csvs = stats.make_data(list(HOSPITALS), folder)
    rows = logreg.write_rows(list(HOSPITALS), folder)
    return {n: {"csv": str(csvs[n]), "rows": str(rows[n])} for n in HOSPITALS}


def write(
    folder: Path,
    hosts: Mapping[str, NetHost],
    data: Mapping[str, Mapping[str, str]],
    port: int,
    *,
    ray: bool = False,
    programs: list[Path] = PROGRAMS,
    dp: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, Path]:
    """Policies for the hospitals and the dealer on their namespace hosts (same ports on each:
    every host has its own network stack)."""
    places = {n: Host(hosts[n].ip, port, port + 1) for n in HOSPITALS}
    extra = {
        n: {"ray_address": "local" if ray else "none", "results_folder": "results"}
        for n in HOSPITALS
    }
    return write_deployment(
        folder,
        places,
        Host(hosts["dealer"].ip, port),
        programs,
        data=data,
        protocol={"timeout": 15.0},
        party_extra=extra,
        dp=dp,
    )


class Services:
    """The dealer and hospital services of one deployment, with their logs."""

    def __init__(self, hosts: Mapping[str, NetHost], policies: Mapping[str, Path]) -> None:
        self.hosts = hosts
        self.policies = policies
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.logs: dict[str, Path] = {}

    def start(self, ray: bool) -> None:
        for name in ["dealer", *HOSPITALS]:
            kind = "dealer" if name == "dealer" else "party"
            argv = [MPC, kind, "serve", "--policy", str(self.policies[name])]
            if kind == "party" and not ray:
                argv.append("--no-ray")
            self.logs[name] = self.policies[name].parent / "service.log"
            with self.logs[name].open("wb") as log:
                self.procs[name] = self.hosts[name].popen(argv, stdout=subprocess.PIPE, stderr=log)
        deadline = time.monotonic() + READY_TIMEOUT
        for name, proc in self.procs.items():
            assert proc.stdout is not None
            ready, _, _ = select.select(
                [proc.stdout], [], [], max(0.0, deadline - time.monotonic())
            )
            line = proc.stdout.readline().decode() if ready else ""
            assert "listening on" in line, f"{name} did not start: {line!r}\n{self.log(name)}"
            if name != "dealer":
                assert ("Ray" in line) == ray, line

    def log(self, name: str) -> str:
        return self.logs[name].read_text(errors="replace") if name in self.logs else ""

    def stop(self) -> None:
        for proc in self.procs.values():
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)

    def run(
        self, program: str, *argv: str, starter: str = "north"
    ) -> subprocess.CompletedProcess[str]:
        policy = self.policies[starter]
        path = policy.parent / "programs" / program
        return self.hosts[starter].run(
            [MPC, "run", str(path), "--policy", str(policy), *argv],
            timeout=RUN_TIMEOUT,
            check=False,
        )

    def run_ok(
        self, program: str, *argv: str, starter: str = "north"
    ) -> subprocess.CompletedProcess[str]:
        """A run that must succeed, once every hospital has recorded it."""
        before = len(self.results("east"))
        done = self.run(program, *argv, starter=starter)
        assert done.returncode == 0, done.stderr
        self.wait_for_results(before + 1)
        return done

    def results(self, name: str) -> list[dict[str, Any]]:
        folder = self.policies[name].parent / "results"
        files = sorted(folder.glob("run-*.json"), key=lambda p: p.stat().st_mtime)
        return [json.loads(p.read_text()) for p in files]

    def wait_for_results(self, count: int, timeout: float = 60.0) -> None:
        """Until every hospital recorded `count` runs (peers finish just after the starter)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(len(self.results(n)) >= count for n in HOSPITALS):
                return
            time.sleep(0.1)
        raise AssertionError(
            "not every hospital recorded its run: "
            + "; ".join(f"{n}: {self.log(n)[-600:]}" for n in HOSPITALS)
        )


@contextlib.contextmanager
def serving(
    hosts: Mapping[str, NetHost], policies: Mapping[str, Path], ray: bool = False
) -> Iterator[Services]:
    services = Services(hosts, policies)
    try:
        services.start(ray)
        yield services
    finally:
        services.stop()


@pytest.fixture(scope="module")
def on_ray(
    hosts: dict[str, NetHost],
    data: dict[str, dict[str, str]],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Services]:
    """The main deployment: one Ray per hospital (started by `mpc party serve`)."""
    policies = write(tmp_path_factory.mktemp("on-ray"), hosts, data, 7100, ray=True)
    with serving(hosts, policies, ray=True) as services:
        yield services


def one_machine(
    private: Mapping[str, Mapping[str, Any]], program: Any, *args: Any
) -> dict[str, Any]:
    """North's output of `program` in one process (the single-machine run to compare with)."""
    with Session(
        list(HOSPITALS),
        runtime="local",
        dealer="local-insecure",
        allow_insecure=True,
        private=private,
    ) as session:
        output: dict[str, Any] = session.run(program, *args).outputs["north"]
    return output


# ---- the runs a user makes ---------------------------------------------------------------------


def test_joint_statistics_across_hosts_equals_plaintext_and_one_machine(
    on_ray: Services, data: dict[str, dict[str, str]]
) -> None:
    done = on_ray.run_ok("joint_statistics.py")
    csvs = {n: data[n]["csv"] for n in HOSPITALS}
    private = {n: {"csv": csvs[n]} for n in HOSPITALS}
    local = one_machine(private, stats.joint_sums)
    plain = stats.plaintext(csvs)
    for name in HOSPITALS:
        sums = on_ray.results(name)[-1]["output"]
        assert sums == {k: v.tolist() for k, v in local.items()}  # integers: exact
        assert stats.summarise({k: int(v) for k, v in sums.items()}) == pytest.approx(plain)
    assert f"count {plain['count']:.6f}".split() == done.stdout.split()[:2]
    assert "run" in on_ray.log("dealer") and "opened by 'east'" in on_ray.log("dealer")


@pytest.mark.parametrize("sigmoid", ["accurate-clamped", "piecewise"])
def test_logistic_regression_across_hosts_equals_one_machine(
    on_ray: Services, data: dict[str, dict[str, str]], sigmoid: str
) -> None:
    argv = ["--epochs", "5", "--sigmoid", sigmoid]
    done = on_ray.run_ok("hospitals_logreg.py", *argv, starter="south")
    args = logreg.public_args(argv)
    private: dict[str, Any] = {}
    for n in HOSPITALS:
        with np.load(data[n]["rows"]) as rows:
            private[n] = {k: rows[k] for k in rows.files}
    local = one_machine(private, _train_on_own_rows, args)
    outputs = [on_ray.results(n)[-1]["output"] for n in HOSPITALS]
    assert all(o == outputs[0] for o in outputs)  # one revealed model, the same everywhere
    weights = np.array(outputs[0]["weights"])
    assert np.max(np.abs(weights - local["weights"])) <= 2e-3
    correct, total = outputs[0]["correct_of_total"]
    assert total == int(local["correct_of_total"][1])
    assert abs(correct - int(local["correct_of_total"][0])) <= 1
    assert correct / total > 0.9
    assert f"{correct}/{total}" in done.stdout


def _train_on_own_rows(ctx: Any, args: dict[str, Any]) -> dict[str, Any]:
    return logreg.train_and_score(ctx, logreg.LogisticRegression(**args), ctx.private)


def test_the_starter_cannot_ask_for_plaintext_or_another_protocol(on_ray: Services) -> None:
    done = on_ray.run("joint_statistics.py", "--transport", "tcp-plaintext")
    assert done.returncode == 1
    assert "takes no options across organisations" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1  # one line, no traceback
    # a hand-made request with settings of its own is refused by the party
    script = (
        "import sys\n"
        "from mpc.federation.policy import PartyPolicy\n"
        "from mpc.federation.programs import program_hash\n"
        "from mpc.federation.secure_rpc import SecureClient\n"
        "from mpc.parties.keys import PartyKey\n"
        "p = PartyPolicy.load(sys.argv[1]); key = PartyKey.load(p.key_file)\n"
        "digest = program_hash(p.program_folder / 'joint_statistics.py')\n"
        "with SecureClient(p.name, key, p.name, key.public_bytes, (p.host, p.port)) as c:\n"
        "    for extra in ({'transport': 'tcp-plaintext'}, {'protocol': 'shamir'}):\n"
        "        try:\n"
        "            c.call('start', {'program': digest, 'args': {}, **extra})\n"
        "            print('ACCEPTED', extra)\n"
        "        except Exception as exc:\n"
        "            print('REFUSED', exc)\n"
    )
    out = (
        on_ray.hosts["north"]
        .run([sys.executable, "-c", script, str(on_ray.policies["north"])], timeout=60)
        .stdout
    )
    assert "ACCEPTED" not in out
    assert out.count("a starter sends only a program hash and public arguments") == 2


def test_a_replayed_run_is_refused(on_ray: Services) -> None:
    on_ray.run_ok("joint_statistics.py")  # a run with no public arguments, to replay
    old = on_ray.results("south")[-1]
    # north's key re-sends a proposal south has run before (what a recorded proposal would be)
    script = (
        "import sys\n"
        "from mpc.federation.policy import PartyPolicy\n"
        "from mpc.federation.run import RunRequest\n"
        "from mpc.federation.secure_rpc import SecureClient\n"
        "from mpc.parties.keys import PartyKey\n"
        "p = PartyPolicy.load(sys.argv[1]); key = PartyKey.load(p.key_file)\n"
        "south = next(q for q in p.peers if q.name == 'south')\n"
        "request = RunRequest(bytes.fromhex(sys.argv[2]), 'north', sys.argv[3], {})\n"
        "where = (south.host, south.port)\n"
        "with SecureClient('north', key, 'south', south.public_key, where) as c:\n"
        "    try:\n"
        "        c.call('propose', request.to_wire())\n"
        "        print('ACCEPTED')\n"
        "    except Exception as exc:\n"
        "        print('REFUSED', exc)\n"
    )
    out = (
        on_ray.hosts["north"]
        .run(
            [
                sys.executable,
                "-c",
                script,
                str(on_ray.policies["north"]),
                old["run"],
                old["program"],
            ],
            timeout=60,
        )
        .stdout
    )
    assert "REFUSED" in out and "replay" in out
    assert len(on_ray.results("south")) >= 1 and "replay" not in json.dumps(on_ray.results("south"))


# ---- runs that must be refused everywhere ------------------------------------------------------


def assert_refused_everywhere(
    services: Services, done: subprocess.CompletedProcess[str], why: str
) -> None:
    """One clear error at the starter and at every hospital; nothing revealed anywhere."""
    assert done.returncode == 1, done.stdout
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert why in done.stderr, done.stderr
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if all(services.results(n) for n in HOSPITALS):
            break
        time.sleep(0.1)
    for name in HOSPITALS:
        entries = services.results(name)
        assert entries, f"{name} recorded nothing:\n{services.log(name)}"
        assert all("output" not in e for e in entries), f"{name} revealed something: {entries}"
        assert all("error" in e for e in entries)


def test_a_program_one_hospital_has_not_approved_aborts_before_any_input(
    hosts: dict[str, NetHost], data: dict[str, dict[str, str]], tmp_path: Path
) -> None:
    policies = write(tmp_path, hosts, data, 7200)
    edited = policies["south"].parent / "programs" / "joint_statistics.py"
    edited.write_text(edited.read_text() + "\n# south's copy differs\n")
    with serving(hosts, policies) as services:
        done = services.run("joint_statistics.py")
        assert "south" in done.stderr and "approved" in done.stderr
        # south refused the proposal: it logged it, but ran (and recorded) nothing
        assert "not in this party's approved folder" in done.stderr
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not services.results("east"):
            time.sleep(0.1)
        (east,) = services.results("east")
        assert "cancelled before it began" in east["error"] and "south" in east["error"]
        assert services.results("south") == []
        assert "opened" not in services.log("dealer")  # no run reached the dealer


def test_a_peer_key_that_differs_from_the_policy_aborts_at_every_hospital(
    hosts: dict[str, NetHost], data: dict[str, dict[str, str]], tmp_path: Path
) -> None:
    policies = write(tmp_path, hosts, data, 7300)
    text = policies["east"].read_text()
    south_key = PartyKey.load(policies["south"].parent / "south.key").public_hex
    policies["east"].write_text(text.replace(south_key, PartyKey.generate().public_hex))
    with serving(hosts, policies) as services:
        done = services.run("joint_statistics.py")
        assert_refused_everywhere(services, done, "south")
        for name in HOSPITALS:  # every hospital says why: east pins another key for south
            error = services.results(name)[-1]["error"]
            assert "pins" in error and "'south'" in error, (name, error)


def test_a_dealer_with_another_key_is_refused_by_every_hospital(
    hosts: dict[str, NetHost], data: dict[str, dict[str, str]], tmp_path: Path
) -> None:
    policies = write(tmp_path, hosts, data, 7400)
    PartyKey.generate().save(policies["dealer"].parent / "dealer.key")
    with serving(hosts, policies) as services:
        done = services.run("joint_statistics.py")
        assert_refused_everywhere(services, done, "dealer")
        for name in HOSPITALS:
            assert "dealer" in services.results(name)[-1]["error"]


def test_a_budget_lower_than_the_release_is_refused_and_charges_no_ledger(
    hosts: dict[str, NetHost], data: dict[str, dict[str, str]], tmp_path: Path
) -> None:
    dp = {
        n: {
            "directory": str(tmp_path / n / "ledger"),
            "dataset": f"patients-{n}",
            "epsilon": 0.3 if n == "south" else 5.0,  # the histogram release costs 0.5
            "delta": 1e-6,
            "allow_temporary": True,  # the test's own folder
        }
        for n in HOSPITALS
    }
    policies = write(tmp_path, hosts, data, 7500, programs=[DP_PROGRAM], dp=dp)
    with serving(hosts, policies) as services:
        done = services.run("dp_joint_statistics.py")
        assert_refused_everywhere(services, done, "BudgetExceededError")
    from mpc.dp.ledger import Ledger

    for name in HOSPITALS:  # a ledger that was charged exists and records the release
        directory, dataset = dp[name]["directory"], dp[name]["dataset"]
        if Ledger.paths(directory, dataset)[0].exists():
            assert Ledger.open(directory, dataset).releases == (), f"{name}'s ledger was charged"
