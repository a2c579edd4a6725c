"""The outside-package example of docs/writing-a-protocol.md works as the doc says.

The package is built from the doc's `<!-- file: PATH -->` blocks in a temporary folder and
"installed" as pip would leave it, without pip and without the network: its source folder goes
on PYTHONPATH of a subprocess, beside a `<name>-<version>.dist-info` folder whose METADATA and
entry_points.txt are made from the doc's pyproject.toml (importlib.metadata finds distributions
by such folders on sys.path). The doc's `<!-- run by: tests/test_plugin_package.py -->` commands
then run from the checkout's root: `mpc protocols` must list the plug-in beside the built-ins, the
conformance suite must collect and pass it. A second, broken distribution (its entry point names
a module that does not exist) must be named in one warning line while the others still list, and
must fail only `test_every_installed_plugin_loads` of the conformance suite.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from docblocks import ROOT, SHELL, blocks, commands

from mpc.protocols.registry import ENTRY_POINT_GROUP

DOC = ROOT / "docs" / "writing-a-protocol.md"
THIS = "tests/test_plugin_package.py"
BUILTINS = ["additive", "shamir", "shamir-beaver"]
BROKEN = "broken-proto"


@dataclass(frozen=True)
class Package:
    """The doc's package, written under `root`, importable from `source`."""

    root: Path
    source: Path
    pyproject: dict[str, Any]

    @property
    def entry_points(self) -> dict[str, str]:
        return dict(self.pyproject["project"]["entry-points"][ENTRY_POINT_GROUP])


def doc_files() -> dict[str, str]:
    """The doc's example files: path -> content."""
    return {b.marked("file") or "": b.body for b in blocks(DOC) if b.marked("file")}


def doc_commands() -> list[str]:
    """The commands of the doc's shell blocks that this module runs."""
    found = [b for b in blocks(DOC) if b.lang in SHELL and b.marked("run by") == THIS]
    return [c for b in found for c in commands(b.body)]


def write_dist_info(folder: Path, name: str, version: str, requires: list[str], eps: str) -> None:
    """What pip leaves beside an installed package: enough for importlib.metadata."""
    dist = folder / f"{re.sub(r'[-.]+', '_', name)}-{version}.dist-info"
    dist.mkdir()
    lines = ["Metadata-Version: 2.1", f"Name: {name}", f"Version: {version}"]
    lines += [f"Requires-Dist: {r}" for r in requires]
    (dist / "METADATA").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (dist / "entry_points.txt").write_text(eps, encoding="utf-8")


def install(tmp_path: Path) -> Package:
    """Write the doc's files and install the package (src layout) as pip would."""
    files = doc_files()
    for path, content in files.items():
        target = tmp_path / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content, encoding="utf-8")
    (pyproject_path,) = [p for p in files if Path(p).name == "pyproject.toml"]
    root = tmp_path / Path(pyproject_path).parent
    pyproject = tomllib.loads(files[pyproject_path])
    source = root / "src"  # setuptools finds packages in src/ without configuration
    assert source.is_dir(), f"the doc's package has no src/ folder: {sorted(files)}"
    project = pyproject["project"]
    entry_points = "".join(
        f"[{group}]\n" + "".join(f"{k} = {v}\n" for k, v in eps.items())
        for group, eps in project["entry-points"].items()
    )
    write_dist_info(
        source, project["name"], project["version"], project.get("dependencies", []), entry_points
    )
    return Package(root, source, pyproject)


def install_broken(folder: Path) -> None:
    """A distribution whose entry point names a module that does not exist."""
    eps = f"[{ENTRY_POINT_GROUP}]\n{BROKEN} = no_such_module_anywhere:Protocol\n"
    write_dist_info(folder, "broken-plugin", "0.1", [], eps)


def run(command: str, path: Path) -> subprocess.CompletedProcess[str]:
    """A command of the doc, from the checkout's root, with `path` first on PYTHONPATH."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(path), env.get("PYTHONPATH")) if p)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return subprocess.run(
        ["bash", "-c", command], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )


def listed(stdout: str) -> list[str]:
    """The protocol names `mpc protocols` printed (the unindented lines)."""
    return [line for line in stdout.splitlines() if line and not line.startswith(" ")]


def the_command(start: str) -> str:
    found = [c for c in doc_commands() if c.startswith(start)]
    assert len(found) == 1, f"the doc should show one `{start} ...` command, got {found}"
    return found[0]


@pytest.fixture
def package(tmp_path: Path) -> Package:
    return install(tmp_path)


def test_the_doc_shows_a_complete_package() -> None:
    """pyproject with a build system, the dependency on this distribution and the entry point;
    the module it names; and the doc's commands that this module runs are the checked ones."""
    files = doc_files()
    assert {Path(p).name for p in files} == {"pyproject.toml", "__init__.py"}, sorted(files)
    pyproject = tomllib.loads(next(c for p, c in files.items() if p.endswith("pyproject.toml")))
    ours = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert ours["project"]["name"] == "mpc-parties"
    assert pyproject["project"]["dependencies"] == [ours["project"]["name"]]
    assert "build-backend" in pyproject["build-system"]
    ((name, target),) = pyproject["project"]["entry-points"][ENTRY_POINT_GROUP].items()
    module, cls = target.split(":")
    (source,) = [c for p, c in files.items() if p.endswith(f"/src/{module}/__init__.py")]
    assert f"class {cls}(" in source and f'name = "{name}"' in source
    assert sorted(doc_commands()) == sorted([the_command("mpc protocols"), the_command("python")])


def test_mpc_protocols_lists_the_doc_package(package: Package) -> None:
    (name,) = package.entry_points
    done = run(the_command("mpc protocols"), package.source)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert listed(done.stdout) == sorted([*BUILTINS, name])
    entry = done.stdout.split(f"\n{name}\n", 1)[1]
    assert "for exactly 3 parties" in entry.splitlines()[0]
    assert "needs from a dealer: matrix triples, triples, truncation pairs; only for the " in entry


def test_conformance_suite_runs_against_the_doc_package(package: Package) -> None:
    (name,) = package.entry_points
    command = the_command("python -m pytest tests/test_protocols.py")
    assert f"-k {name}" in command
    done = run(command, package.source)
    assert done.returncode == 0, done.stdout[-3000:]
    passed = re.search(r"(\d+) passed", done.stdout)
    assert passed and int(passed[1]) >= 5, done.stdout[-3000:]
    assert "failed" not in done.stdout


def test_a_broken_entry_point_is_named_and_the_others_still_list(package: Package) -> None:
    (name,) = package.entry_points
    install_broken(package.source)
    done = run("mpc protocols", package.source)
    assert done.returncode == 0, done.stderr
    assert listed(done.stdout) == sorted([*BUILTINS, name])
    (line,) = done.stderr.splitlines()
    assert line.startswith(f"mpc protocols: warning: protocol plug-in {BROKEN!r}")
    for part in ("no_such_module_anywhere:Protocol", "'broken-plugin'", "ModuleNotFoundError"):
        assert part in line


def test_a_broken_entry_point_fails_one_conformance_test_only(package: Package) -> None:
    (name,) = package.entry_points
    install_broken(package.source)
    done = run(
        f'python -m pytest tests/test_protocols.py -q -p no:cacheprovider -k "{name} or plugin"',
        package.source,
    )
    summary = done.stdout.strip().splitlines()[-1]
    assert re.fullmatch(r"=* ?1 failed, \d+ passed, \d+ deselected.*", summary), done.stdout[-3000:]
    failed = [line for line in done.stdout.splitlines() if line.startswith("FAILED")]
    assert len(failed) == 1 and "test_every_installed_plugin_loads" in failed[0], failed
    assert f"protocol plug-in {BROKEN!r}" in done.stdout
