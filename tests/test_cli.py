"""The `mpc` command line, called in-process."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from mpc.cli import main
from mpc.parties.keys import PartyKey, load_public
from mpc.tee import dealer_config, measurement_hex


def test_protocols_lists_every_protocol_with_its_security(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["protocols"]) == 0
    out = capsys.readouterr().out
    for name in ("additive", "shamir", "shamir-beaver"):
        assert f"\n{name}\n" in f"\n{out}"
    assert "honest majority" in out and "trusted dealer" in out


def test_keygen_writes_a_private_key_and_prints_only_the_public_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "alice.key"
    assert main(["keygen", "alice", "--out", str(path)]) == 0
    out = capsys.readouterr().out
    key = PartyKey.load(path)
    assert key.public_hex in out
    assert load_public(path.with_name("alice.key.pub")) == key.public_bytes
    assert path.stat().st_mode & 0o077 == 0  # private key readable by its owner only
    assert main(["keygen", "alice", "--out", str(path)]) == 2  # no silent overwrite


def test_tee_measure_matches_the_library(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["tee", "measure", "--protocol", "additive", "--parties", "3"]) == 0
    assert measurement_hex(dealer_config("additive", 3, 2)) in capsys.readouterr().out


def test_run_passes_options_to_the_scenario(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["run", "scenarios/joint_statistics.py", "--runtime", "local", "--allow-insecure"])
    out = capsys.readouterr().out
    assert code == 0 and out.rstrip().endswith("OK")
    assert main(["run", "scenarios/no_such_scenario.py"]) == 2


# ---- the test command and the declared dependencies (issue 13, items 7 and 8) -------------------

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_TESTS = """
import pytest


def test_fast():
    pass


@pytest.mark.ray
def test_with_ray():
    pass
"""


def test_the_readme_test_command_prints_the_summary_line(tmp_path: Path) -> None:
    """`python -m pytest tests -q` (README, .ci/run) with the project's pytest options ends in
    "N passed", and the `ray` marker is registered so `-m "not ray"` is the fast loop."""
    (tmp_path / "test_sample.py").write_text(SAMPLE_TESTS)
    common = [sys.executable, "-m", "pytest", "-c", str(ROOT / "pyproject.toml")]
    common += ["--rootdir", str(tmp_path), "-p", "no:cacheprovider", str(tmp_path)]
    done = subprocess.run([*common, "-q"], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 passed" in done.stdout, done.stdout
    fast = subprocess.run(
        [*common, "-q", "--strict-markers", "-m", "not ray"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert fast.returncode == 0, fast.stdout + fast.stderr
    assert "1 passed, 1 deselected" in fast.stdout


#: Import name of each runtime dependency in pyproject.toml.
IMPORT_NAMES = {"pynacl": "nacl"}


def test_every_declared_dependency_is_imported() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    source = "\n".join(p.read_text() for p in (ROOT / "mpc").rglob("*.py"))
    for requirement in project["dependencies"]:
        name = re.split(r"[<>=!~\[; ]", requirement, maxsplit=1)[0].lower()
        module = IMPORT_NAMES.get(name, name.replace("-", "_"))
        used = re.search(rf"^\s*(import|from) {re.escape(module)}\b", source, re.MULTILINE)
        assert used, f"{name} is declared in pyproject.toml but mpc never imports {module}"


def test_matplotlib_is_imported_only_where_a_plot_is_drawn() -> None:
    code = (
        "import importlib, pkgutil, sys, mpc\n"
        "for m in pkgutil.walk_packages(mpc.__path__, 'mpc.'):\n"
        "    if m.name != 'mpc.__main__':\n"
        "        importlib.import_module(m.name)\n"
        "assert 'matplotlib' not in sys.modules, 'a module of mpc imports matplotlib'\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=120)


def test_the_distribution_has_a_name_of_its_own() -> None:
    """PyPI's "mpc" is an unrelated project: a plug-in that depends on "mpc" would install it."""
    root = Path(__file__).resolve().parent.parent
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    assert project["name"] not in ("mpc", "MPC")
    guide = (root / "docs" / "writing-a-protocol.md").read_text()
    assert f'dependencies = ["{project["name"]}"]' in guide
