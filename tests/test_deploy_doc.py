"""docs/deploy.md says what the code does: its policies load, its commands exist, its example runs.

- Every ```toml block is loaded with the loader of its kind: a party policy (`PartyPolicy`), the
  dealer policy (`DealerPolicy`), the single-cluster config (`DeploymentConfig`), or a fragment
  of a party policy (merged into the doc's party policy). The key files, `.pub` files and
  folders a block names are created in a temporary folder first. The loaded fields must be what
  the block says; the party and dealer policies must fit each other and the doc's address table.
- Every `mpc ...` command in a shell block parses with `mpc.cli.build_parser()`, and the
  options of every `mpc run FILE --policy P ...` are accepted by that program's `public_args`.
- The one-machine block (the only shell block without `<!-- needs: several machines -->`) runs
  for real on loopback: `mpc deploy example` (with a free `--base-port`), the dealer and the
  parties as subprocesses, then `mpc run`. The printed count must equal the number of patients in
  the hospitals' CSVs, the output must be the one the doc shows, and each hospital's results
  folder must hold its own result. The doc's program file (the ```python block) then runs in
  that deployment with the options the doc gives it.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import re
import shlex
import socket
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from mpc.cli import build_parser
from mpc.deploy import DeploymentConfig
from mpc.federation.dealer_service import AGREED_SETTINGS
from mpc.federation.policy import DealerPolicy, PartyPolicy
from mpc.federation.programs import load_source, source_hash
from mpc.parties.keys import PartyKey

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "deploy.md"
SCENARIOS = ROOT / "scenarios"
MPC = [sys.executable, "-m", "mpc.cli"]
MARKER = "<!-- needs: several machines -->"
SHELL = {"bash", "sh", "shell", "console"}
HEX_KEY = re.compile(r"[0-9a-fA-F]{64}")
FENCE = re.compile(
    r"(?:^(?P<marker><!--[^\n]*-->)[ \t]*\n)?^```(?P<lang>[\w-]*)[ \t]*\n(?P<body>.*?)^```[ \t]*$",
    re.S | re.M,
)
#: Ports the one-machine example uses: control and data for each of three parties, the dealer.
EXAMPLE_PORTS = 7


@dataclass(frozen=True)
class Block:
    lang: str
    body: str
    marker: str | None
    line: int


def blocks() -> list[Block]:
    text = DOC.read_text(encoding="utf-8")
    return [
        Block(m["lang"], m["body"], m["marker"], text.count("\n", 0, m.start()) + 1)
        for m in FENCE.finditer(text)
    ]


def shell_blocks() -> list[Block]:
    return [b for b in blocks() if b.lang in SHELL]


def one_machine_block() -> Block:
    unmarked = [b for b in shell_blocks() if b.marker is None]
    assert len(unmarked) == 1, (
        f"expected exactly one shell block without {MARKER!r} (the one-machine example), got "
        f"those at lines {[b.line for b in unmarked]}"
    )
    return unmarked[0]


def python_program() -> Block:
    found = [b for b in blocks() if b.lang == "python"]
    assert len(found) == 1, "docs/deploy.md should show exactly one program file (```python)"
    return found[0]


def commands(body: str) -> Iterator[list[str]]:
    """The `mpc` commands of a shell block, as argument lists without the leading `mpc`."""
    for line in body.replace("\\\n", " ").splitlines():
        words = shlex.split(line, comments=True)
        segment: list[str] = []
        for word in [*words, ";"]:
            if word in (";", "&&", "||", "|", "&"):
                while segment and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", segment[0]):
                    segment.pop(0)  # VAR=value before the command
                if segment and segment[0] == "mpc":
                    yield segment[1:]
                segment = []
            else:
                segment.append(word.removesuffix("&"))


def split_run(argv: list[str]) -> tuple[str, list[str], list[str]]:
    """`run FILE --policy P [--key K --name N --party-key H] OPTIONS` -> (FILE, run, OPTIONS)."""
    parser = argparse.ArgumentParser(add_help=False)
    for option in ("--policy", "--key", "--name", "--party-key"):
        parser.add_argument(option)
    known, options = parser.parse_known_args(argv[2:])
    own = [w for k, v in vars(known).items() if v is not None for w in (f"--{k}", v)]
    return argv[1], own, options


def load_program(path: Path) -> Any:
    source = path.read_bytes()
    return load_source(path, source, source_hash(source)).module


# ---- the doc's TOML ------------------------------------------------------------------------------


def toml_blocks(kind: str) -> list[tuple[Block, dict[str, Any]]]:
    """The doc's TOML blocks of one kind, with their parsed content."""
    return [
        (b, data) for b in blocks() if b.lang == "toml" and block_kind(data := loads(b)) == kind
    ]


def loads(block: Block) -> dict[str, Any]:
    try:
        return tomllib.loads(block.body)
    except tomllib.TOMLDecodeError as exc:
        pytest.fail(f"docs/deploy.md line {block.line}: the toml block is not valid TOML: {exc}")


def block_kind(data: dict[str, Any]) -> str:
    if isinstance(data.get("party"), dict):
        return "party"
    if isinstance(data.get("dealer"), dict) and "key_file" in data["dealer"]:
        return "dealer"
    if "session" in data or any("resource" in p for p in data.get("party", [])):
        return "cluster"
    return "fragment"


def the_party_policy() -> tuple[Block, dict[str, Any]]:
    found = toml_blocks("party")
    assert len(found) == 1, "docs/deploy.md should show one complete party policy"
    return found[0]


def relative(folder: Path, text: str) -> Path:
    assert not Path(text).is_absolute(), f"the doc's policies use relative paths, not {text}"
    return folder / text


def public_key_file(folder: Path, text: str) -> bytes:
    """The key a `public_key` field names: hex as is, or a new key written to that .pub file."""
    if HEX_KEY.fullmatch(text):
        return bytes.fromhex(text)
    path = relative(folder, text)
    path.parent.mkdir(parents=True, exist_ok=True)
    key = PartyKey.generate()
    path.write_text(key.public_hex + "\n", encoding="ascii")
    return key.public_bytes


def write_party(folder: Path, data: dict[str, Any], text: str) -> tuple[Path, dict[str, bytes]]:
    """Write a party policy (`text`, parsed: `data`) and everything it names; return its path
    and the public keys it pins, by name."""
    folder.mkdir(parents=True, exist_ok=True)
    PartyKey.generate().save(relative(folder, data["party"]["key_file"]))
    keys = {p["name"]: public_key_file(folder, p["public_key"]) for p in data["peer"]}
    if "dealer" in data:
        keys[data["dealer"]["name"]] = public_key_file(folder, data["dealer"]["public_key"])
    relative(folder, data["programs"]["folder"]).mkdir(parents=True, exist_ok=True)
    for source in data.get("data", {}).values():
        path = relative(folder, source)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()
    path = folder / "policy.toml"
    path.write_text(text)
    return path, keys


def to_toml(data: dict[str, Any]) -> str:
    """Plain TOML for the doc's tables (strings, numbers, bools, lists; tables, arrays)."""

    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, str):
            return json.dumps(v)
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        return repr(v)

    out = []
    for name, table in data.items():
        for item in table if isinstance(table, list) else [table]:
            out.append(f"[[{name}]]" if isinstance(table, list) else f"[{name}]")
            out += [f"{k} = {value(v)}" for k, v in item.items()]
            out.append("")
    return "\n".join(out)


def address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


def address_table() -> dict[str, tuple[str, int, int | None]]:
    """The doc's table of machines: name -> (address, control port, data port)."""
    rows = re.findall(
        r"^\| (\w+)[^|]*\| ([\d.]+) \| (\d+) \| (\d+|–) \|$",
        DOC.read_text(encoding="utf-8"),
        flags=re.M,
    )
    assert rows, "docs/deploy.md should have a table of machines (address, ports)"
    return {n: (a, int(c), None if d == "–" else int(d)) for n, a, c, d in rows}


def test_the_party_policy_loads_as_the_doc_says(tmp_path: Path) -> None:
    block, data = the_party_policy()
    path, keys = write_party(tmp_path / "north", data, block.body)
    policy = PartyPolicy.load(path)
    home = path.parent
    me = data["party"]
    assert policy.name == me["name"]
    assert policy.key_file == home / me["key_file"]
    assert (policy.host, policy.port) == address(me["address"])
    assert policy.data_port == me["data_port"]
    assert policy.bind == me.get("bind", "")
    assert policy.ray_address == me.get("ray_address", "local")
    assert policy.show_output == me.get("show_output", True)
    assert policy.results_folder == home / me["results_folder"]
    assert [(p.name, p.host, p.port, p.data_port, p.public_key) for p in policy.peers] == [
        (p["name"], *address(p["address"]), p["data_port"], keys[p["name"]]) for p in data["peer"]
    ]
    assert policy.dealer is not None
    assert (policy.dealer.name, policy.dealer.host, policy.dealer.port) == (
        data["dealer"]["name"],
        *address(data["dealer"]["address"]),
    )
    assert policy.dealer.public_key == keys[data["dealer"]["name"]]
    described = policy.settings.describe()
    for key, value in data["protocol"].items():
        if key != "allow_plaintext":  # not part of the settings the parties compare
            assert described["protocol" if key == "name" else key] == value, key
    assert policy.program_folder == home / data["programs"]["folder"]
    assert policy.program_hashes is None  # the full policy approves by folder (step 4)
    assert dict(policy.data) == {k: str(home / v) for k, v in data["data"].items()}
    assert policy.dp is not None
    assert policy.dp.directory == home / data["dp"]["directory"]
    assert (policy.dp.dataset, policy.dp.epsilon, policy.dp.delta) == (
        data["dp"]["dataset"],
        data["dp"]["epsilon"],
        data["dp"]["delta"],
    )
    assert policy.private_data()["dp_ledger"]["budget"]["epsilon"] == data["dp"]["epsilon"]
    assert policy.parties == ["east", "north", "south"]  # the three hospitals of the doc


def test_the_party_policy_matches_the_table_of_machines() -> None:
    _block, data = the_party_policy()
    table = address_table()
    for entry in [data["party"], *data["peer"]]:
        name = entry["name"]
        assert (*address(entry["address"]), entry["data_port"]) == table[name], name
    dealer = data["dealer"]
    assert address(dealer["address"]) == table[dealer["name"]][:2]


def test_the_dealer_policy_loads_and_fits_the_party_policy(tmp_path: Path) -> None:
    found = toml_blocks("dealer")
    assert len(found) == 1, "docs/deploy.md should show one complete dealer policy"
    block, data = found[0]
    home = tmp_path / "dealer"
    home.mkdir()
    PartyKey.generate().save(relative(home, data["dealer"]["key_file"]))
    keys = {p["name"]: public_key_file(home, p["public_key"]) for p in data["party"]}
    (home / "policy.toml").write_text(block.body)
    policy = DealerPolicy.load(home / "policy.toml")
    me = data["dealer"]
    assert policy.name == me["name"]
    assert policy.key_file == home / me["key_file"]
    assert (policy.host, policy.port) == address(me["address"])
    assert policy.bind == me.get("bind", "")
    assert policy.max_items == me.get("max_items", 1 << 26) == 1 << 26  # the doc says 2^26
    assert policy.max_runs == me.get("max_runs", 16)
    assert dict(policy.parties) == keys
    # the dealer serves exactly the doc's parties, where the parties look for it, with the
    # settings it compares (mpc.federation.dealer_service.AGREED_SETTINGS)
    party_block, party = the_party_policy()
    party_path, _ = write_party(tmp_path / "north", party, party_block.body)
    north = PartyPolicy.load(party_path)
    assert sorted(policy.parties) == north.parties
    assert north.dealer is not None
    assert (north.dealer.name, north.dealer.host, north.dealer.port) == (
        policy.name,
        policy.host,
        policy.port,
    )
    assert (policy.host, policy.port) == address_table()[policy.name][:2]
    mine, theirs = policy.settings.describe(), north.settings.describe()
    for key in AGREED_SETTINGS:
        assert mine[key] == theirs[key], key


def test_policy_fragments_load_in_the_party_policy(tmp_path: Path) -> None:
    fragments = toml_blocks("fragment")
    assert fragments, "docs/deploy.md should show the [programs] hashes fragment"
    for i, (_block, fragment) in enumerate(fragments):
        data = {**the_party_policy()[1], **fragment}
        path, _ = write_party(tmp_path / f"fragment{i}", data, to_toml(data))
        policy = PartyPolicy.load(path)
        if "programs" in fragment:
            programs = fragment["programs"]
            assert policy.program_folder == path.parent / programs["folder"]
            assert policy.program_hashes == {h.lower() for h in programs["hashes"]}


def test_the_single_cluster_config_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    found = toml_blocks("cluster")
    assert len(found) == 1, "docs/deploy.md should show one single-cluster config"
    block, data = found[0]
    monkeypatch.chdir(tmp_path)  # its .pub paths are relative to where the driver starts
    keys = [public_key_file(tmp_path, p["public_key"]) for p in data["party"]]
    (tmp_path / "cluster.toml").write_text(block.body)
    config = DeploymentConfig.load(tmp_path / "cluster.toml")
    assert [(p.name, p.resource, p.key_file, p.public_key, p.host) for p in config.parties] == [
        (p["name"], p["resource"], p["key_file"], key, p["host"])
        for p, key in zip(data["party"], keys, strict=True)
    ]
    assert config.dealer_resource == data["dealer"]["resource"]
    assert config.session == data["session"]
    # the doc runs scenarios/joint_statistics.py with it: same names, same order
    scenario = load_program(SCENARIOS / "joint_statistics.py")
    assert config.names == list(scenario.HOSPITALS[: len(config.names)])


# ---- the doc's commands --------------------------------------------------------------------------


def test_every_mpc_command_of_the_doc_parses() -> None:
    seen = set()
    for block in shell_blocks():
        for argv in commands(block.body):
            where = f"docs/deploy.md line {block.line}: mpc {' '.join(argv)}"
            parser = build_parser()
            try:
                args, rest = parser.parse_known_args(argv)
            except SystemExit:
                pytest.fail(f"{where}: not a valid mpc command")
            if args.command != "run":
                assert not rest, f"{where}: unknown options {rest}"
            nested = getattr(args, f"{args.command}_command", None)
            seen.add(f"{args.command} {nested}" if nested else args.command)
    expected = {"keygen", "deploy example", "party serve", "dealer serve", "run", "program hash"}
    assert expected <= seen, f"docs/deploy.md no longer shows {sorted(expected - seen)}"


def doc_program_file() -> str:
    """The file name the doc gives its ```python program (in its own `mpc run` line)."""
    names = {
        Path(argv[1]).name
        for block in shell_blocks()
        for argv in commands(block.body)
        if argv[0] == "run" and not (SCENARIOS / Path(argv[1]).name).is_file()
    }
    assert len(names) == 1, f"expected one `mpc run` of the doc's own program, got {names}"
    return names.pop()


def test_every_run_of_the_doc_passes_options_the_program_accepts(tmp_path: Path) -> None:
    program = tmp_path / doc_program_file()
    program.write_text(python_program().body)
    for block in shell_blocks():
        for argv in commands(block.body):
            if argv[0] != "run":
                continue
            name = Path(argv[1]).name
            path = SCENARIOS / name if (SCENARIOS / name).is_file() else program
            module = load_program(path)
            if "--policy" not in argv:
                assert callable(getattr(module, "run", None)), f"{name} has no run(argv)"
                continue
            _file, _own, options = split_run(argv)
            assert callable(module.party_program), name
            if options:
                assert callable(getattr(module, "public_args", None)), f"{name}: no public_args"
                module.public_args(options)


def test_only_the_one_machine_block_runs_on_one_machine() -> None:
    block = one_machine_block()
    runs = list(commands(block.body))
    assert runs[0][:2] == ["deploy", "example"], "the one-machine block starts with the example"
    assert all(b.marker == MARKER for b in shell_blocks() if b != block)


# ---- the one-machine example, for real -----------------------------------------------------------


def free_base_port(count: int) -> int:
    """A base port such that base .. base + count - 1 are free on loopback now."""
    for base in range(20000 + (os.getpid() % 2000) * 10, 60000, 97):
        with contextlib.ExitStack() as stack:
            try:
                for port in range(base, base + count):
                    s = stack.enter_context(socket.socket())
                    s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return base
    raise RuntimeError("no free range of loopback ports")


def wait_listening(log: Path, proc: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if "listening on" in log.read_text(errors="replace"):
            return
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    pytest.fail(f"{' '.join(map(str, proc.args))} did not start:\n{log.read_text()}")


@dataclass
class Example:
    """The doc's one-machine example, running: its folder and the output of its `mpc run`s."""

    folder: Path
    cwd: Path
    env: dict[str, str]
    outputs: list[str] = field(default_factory=list)
    runs: list[list[str]] = field(default_factory=list)

    def mpc(self, argv: list[str]) -> str:
        done = subprocess.run(
            [*MPC, *argv], cwd=self.cwd, env=self.env, capture_output=True, text=True, timeout=300
        )
        assert done.returncode == 0, f"mpc {' '.join(argv)}:\n{done.stdout}\n{done.stderr}"
        return done.stdout


@pytest.fixture(scope="module")
def example(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Example]:
    """Run the doc's one-machine block line by line (its services stay up for the module)."""
    work = tmp_path_factory.mktemp("deploy-doc")
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    env["PYTHONUNBUFFERED"] = "1"
    state = Example(work, work, env)
    procs: list[subprocess.Popen[bytes]] = []
    logs: list[Path] = []
    doc_folder = ""
    try:
        for line in one_machine_block().body.splitlines():
            words = shlex.split(line, comments=True)
            if not words:
                continue
            background = words[-1].endswith("&")
            words[-1] = words[-1].removesuffix("&")
            words = [w for w in words if w]
            if doc_folder:
                words = [
                    str(state.folder) + w[len(doc_folder) :] if w.startswith(doc_folder) else w
                    for w in words
                ]
            if words[0] == "cd":
                state.cwd = state.cwd / words[1]
            elif words[0] == "sleep":
                for proc, log in zip(procs, logs, strict=True):
                    wait_listening(log, proc)
            elif words[0] == "kill":
                assert words[1:] == [f"%{i + 1}" for i in range(len(procs))], (
                    "the doc's kill line should stop every service it started"
                )
            elif words[0] == "mpc":
                argv = words[1:]
                if argv[:2] == ["deploy", "example"]:
                    doc_folder = argv[2]
                    state.folder = work / Path(doc_folder).name
                    argv[2] = str(state.folder)
                    if "--base-port" in argv:
                        del argv[argv.index("--base-port") : argv.index("--base-port") + 2]
                    argv += ["--base-port", str(free_base_port(EXAMPLE_PORTS))]
                if background:
                    logs.append(work / f"service{len(procs)}.log")
                    with logs[-1].open("wb") as out:
                        procs.append(
                            subprocess.Popen(
                                [*MPC, *argv],
                                cwd=state.cwd,
                                env=env,
                                stdout=out,
                                stderr=subprocess.STDOUT,
                            )
                        )
                else:
                    state.outputs.append(state.mpc(argv))
                    state.runs.append(argv)
            else:
                pytest.fail(f"the test cannot run this line of the one-machine block: {line!r}")
        assert procs, "the one-machine block starts no service"
        yield state
    finally:
        for proc in procs:
            proc.terminate()  # the services stop cleanly on SIGTERM
        for proc in procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=15)


def hospital_csvs(folder: Path) -> list[Path]:
    found = sorted(folder.glob("*/data/*.csv"))
    assert len(found) >= 2, f"no hospital CSVs under {folder}"
    return found


def rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def run_output(example: Example) -> str:
    outputs = [o for argv, o in zip(example.runs, example.outputs, strict=True) if argv[0] == "run"]
    assert len(outputs) == 1, "the one-machine block should start one run"
    return outputs[0]


def test_the_example_counts_every_patient_of_every_hospital(example: Example) -> None:
    found = re.findall(r"^count\s+([\d.]+)\s*$", run_output(example), flags=re.M)
    assert len(found) == 1, run_output(example)
    patients = sum(len(rows(p)) for p in hospital_csvs(example.folder))
    assert patients > 0
    assert float(found[0]) == patients


def test_the_example_prints_what_the_doc_shows(example: Example) -> None:
    listed = blocks()
    start = listed.index(one_machine_block())
    shown = next(b for b in listed[start + 1 :] if b.lang == "text")
    normal = [line.split() for line in shown.body.strip().splitlines()]
    assert [line.split() for line in run_output(example).strip().splitlines()] == normal


def test_each_hospital_keeps_its_own_result(example: Example) -> None:
    patients = sum(len(rows(p)) for p in hospital_csvs(example.folder))
    for csv_path in hospital_csvs(example.folder):
        home = csv_path.parent.parent
        results = sorted((home / "results").glob("run-*.json"))
        assert len(results) == 1, f"{home.name}: {results}"
        entry = json.loads(results[0].read_text())
        assert entry["output"]["n"] == patients, entry
    assert not (example.folder / "dealer" / "results").exists()


def test_the_doc_program_runs_in_the_example(example: Example) -> None:
    name = doc_program_file()
    for csv_path in hospital_csvs(example.folder):  # every hospital approves it
        (csv_path.parent.parent / "programs" / name).write_text(python_program().body)
    doc_run = next(
        argv
        for block in shell_blocks()
        for argv in commands(block.body)
        if argv[0] == "run" and Path(argv[1]).name == name
    )
    _file, _own, options = split_run(doc_run)
    example_run = next(a for a in example.runs if a[0] == "run")
    _file, own, _options = split_run(example_run)
    policy = example.cwd / own[own.index("--policy") + 1]
    program = policy.parent / "programs" / name
    args = load_program(program).public_args(options)
    printed = example.mpc(["run", str(program), *own, *options])
    report = [line for line in printed.strip().splitlines() if not line.startswith("cost at")]
    found = re.findall(r"\d+", report[-1])
    assert found, printed
    older = sum(
        int(r["age"]) >= args["min_age"] for p in hospital_csvs(example.folder) for r in rows(p)
    )
    assert 0 < older < sum(len(rows(p)) for p in hospital_csvs(example.folder))
    assert int(found[-1]) == older, printed
