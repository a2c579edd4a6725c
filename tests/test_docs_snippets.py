"""Every fenced python and shell block of README.md and docs/*.md runs, or says why it does not.

Conventions (markers: see `docblocks`):
- A python block runs on its own in a fresh interpreter, as a reader who copies it would run it;
  a block marked `<!-- continues the block above -->` runs after the one before it, in the same
  interpreter (one script of both). It must exit with status 0.
- A shell block runs command by command (`bash -c`, from the checkout's root, with this
  environment's `mpc` and `python` first on PATH); each command must exit with status 0. The
  commands in `NOT_RUN_COMMANDS` are not run, wherever they are, for the reason given there.
- Runs that would start Ray are marked `ray` (left out of the fast loop): the README's commands
  and python blocks run as written, since they are what a new user tries first. In docs/*.md a
  scenario command that would start Ray runs in-process instead (`--runtime local
  --allow-insecure` appended, which the docs describe as the in-process option), to keep the
  suite fast; the scenarios' Ray path is the README's quick start.
- Absolute example paths (`RELOCATED`) are moved into the test's temporary folder, and HOME,
  XDG_STATE_HOME and (without Ray) TMPDIR point there too: no run touches the user's ledgers,
  state or another test's files. That folder is under /tmp, so a scenario that refuses privacy
  ledgers there unless told (`TEMPORARY_LEDGER`) is told.
- docs/deploy.md's blocks need a deployment of several services: tests/test_deploy_doc.py runs
  them (`DELEGATED`), this module only checks that every block there is marked or is one of the
  two that test runs.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from docblocks import (
    CONTINUES,
    MARKER_KINDS,
    PYTHON,
    ROOT,
    SHELL,
    Block,
    all_blocks,
    blocks,
    commands,
)

#: Docs whose blocks another test module runs.
DELEGATED = {"docs/deploy.md": "tests/test_deploy_doc.py"}
#: Commands never run, and why.
NOT_RUN_COMMANDS = (
    (r"pip install\b", "installs into the environment; these tests run in the one it made"),
    (r"python -m pytest tests( |$)", "the whole test suite, which this test is part of"),
    (r"python benchmarks/", "a benchmark: minutes of measurements, best on a quiet machine"),
)
#: Absolute paths the docs use as examples of real locations.
RELOCATED = ("/var/lib/mpc",)
SCENARIO = re.compile(r"^(?:mpc run|python) (scenarios/[\w-]+\.py)\b")
IN_PROCESS = ("--runtime", "local", "--allow-insecure")
#: The option of the DP scenarios that accepts ledgers under /tmp, where the test's folders are.
TEMPORARY_LEDGER = "--allow-temporary-ledger"
TIMEOUT = 180


@dataclass(frozen=True)
class Snippet:
    """What one test runs: a python script (one or more blocks) or one shell command."""

    where: str
    kind: str  # "python" or "shell"
    text: str
    ray: bool

    @property
    def param(self) -> object:
        marks = [pytest.mark.ray] if self.ray else []
        name = self.where if self.kind == "python" else f"{self.where} {self.text}"
        return pytest.param(self, id=name, marks=marks)


def not_run_reason(command: str) -> str | None:
    for pattern, reason in NOT_RUN_COMMANDS:
        if re.match(pattern, command):
            return reason
    return None


def delegated(block: Block) -> bool:
    return block.where.split(":")[0] in DELEGATED


def runnable(block: Block) -> bool:
    return block.marker is None or block.continues


def python_snippets(found: list[Block]) -> list[Snippet]:
    """The python blocks to run, a block that continues another joined to it."""
    scripts: list[tuple[Block, list[Block]]] = []
    for block in found:
        if block.lang not in PYTHON or delegated(block) or not runnable(block):
            continue
        if block.continues:
            assert scripts and scripts[-1][1][-1].doc == block.doc, (
                f"{block.where}: marked {CONTINUES!r}, but no runnable python block comes "
                "before it in the same doc"
            )
            scripts[-1][1].append(block)
        else:
            scripts.append((block, [block]))
    snippets = []
    for first, parts in scripts:
        text = "".join(f"# ---- {b.where}\n{b.body}" for b in parts)
        starts_ray = bool(re.search(r"\bSession\(", text)) and 'runtime="local"' not in text
        snippets.append(Snippet(first.where, "python", text, starts_ray))
    return snippets


def shell_snippets(found: list[Block]) -> list[Snippet]:
    """The shell commands to run (those of `NOT_RUN_COMMANDS` left out)."""
    snippets = []
    for block in found:
        if block.lang not in SHELL or delegated(block) or not runnable(block):
            continue
        in_readme = block.doc.name == "README.md"
        for command in commands(block.body):
            if not_run_reason(command):
                continue
            scenario = SCENARIO.match(command)
            starts_ray = bool(scenario) and "--runtime" not in command
            if starts_ray and not in_readme:
                command = " ".join([command, *IN_PROCESS])
                starts_ray = False
            if scenario and takes_temporary_ledger(ROOT / scenario[1], command):
                command = f"{command} {TEMPORARY_LEDGER}"
            snippet = Snippet(block.where, "shell", command, starts_ray)
            if snippet not in snippets:  # e.g. a Ray command and its in-process twin
                snippets.append(snippet)
    return snippets


def takes_temporary_ledger(scenario: Path, command: str) -> bool:
    """Whether the scenario has the option that accepts ledgers under /tmp, not given yet."""
    source = scenario.read_text(encoding="utf-8") if scenario.is_file() else ""
    return TEMPORARY_LEDGER in source and TEMPORARY_LEDGER not in command


def every_block() -> list[Block]:
    return all_blocks(PYTHON | SHELL)


PYTHON_SNIPPETS = python_snippets(every_block())
SHELL_SNIPPETS = shell_snippets(every_block())


def environment(tmp: Path, ray: bool) -> dict[str, str]:
    """This environment, with its scripts first on PATH and home, state and (without Ray: Ray's
    socket paths must stay short) temporary files in `tmp`."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    for name in ("HOME", "XDG_STATE_HOME", "TMPDIR"):
        if name == "TMPDIR" and ray:
            continue
        folder = tmp / name.lower()
        folder.mkdir(exist_ok=True)
        env[name] = str(folder)
    env["MPLBACKEND"] = "Agg"
    return env


def relocate(text: str, tmp: Path) -> str:
    """The doc's example absolute paths, moved under `tmp/relocated`."""
    for path in RELOCATED:
        target = tmp / "relocated" / path.lstrip("/")
        text = re.sub(rf"(?<![\w./-]){re.escape(path)}(?![\w.-])", str(target), text)
    return text


def run(snippet: Snippet, tmp: Path) -> subprocess.CompletedProcess[str]:
    if snippet.kind == "python":
        script = tmp / "snippet.py"
        script.write_text(relocate(snippet.text, tmp), encoding="utf-8")
        argv, cwd = [sys.executable, str(script)], tmp
    else:
        argv, cwd = ["bash", "-c", relocate(snippet.text, tmp)], ROOT
    return subprocess.run(
        argv,
        cwd=cwd,
        env=environment(tmp, snippet.ray),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )


def check(snippet: Snippet, done: subprocess.CompletedProcess[str]) -> None:
    assert done.returncode == 0, (
        f"{snippet.where}: the {snippet.kind} snippet failed (exit {done.returncode}):\n"
        f"{snippet.text}\n--- stdout (end)\n{done.stdout[-3000:]}\n--- stderr (end)\n"
        f"{done.stderr[-3000:]}"
    )


# ---- the docs' snippets -----------------------------------------------------------------------
@pytest.mark.parametrize("snippet", [s.param for s in PYTHON_SNIPPETS])
def test_python_block_runs(snippet: Snippet, tmp_path: Path) -> None:
    check(snippet, run(snippet, tmp_path))


@pytest.mark.parametrize("snippet", [s.param for s in SHELL_SNIPPETS])
def test_shell_command_runs(snippet: Snippet, tmp_path: Path) -> None:
    check(snippet, run(snippet, tmp_path))


# ---- the inventory ------------------------------------------------------------------------
def marker_problems(found: list[Block]) -> list[str]:
    """Blocks not run here whose marker is unknown, has no reason, or names a test module that
    does not exist or never reads the block's doc."""
    problems = []
    for block in found:
        if delegated(block) or runnable(block):
            continue
        kind = (block.marker or "").split(":", 1)[0]
        value = block.marked(kind) if kind in MARKER_KINDS else None
        if not value:
            problems.append(f"{block.where}: unknown or empty marker <!-- {block.marker} -->")
        elif kind == "run by":
            test = ROOT / value
            if not (test.is_file() and block.doc.name in test.read_text(encoding="utf-8")):
                problems.append(f"{block.where}: {value} does not exist or never reads the doc")
    return problems


def test_every_python_and_shell_block_is_run_or_says_why_not() -> None:
    """Each block is run here, run by a named test module, a file of an example, or marked
    with a reason; markers are ones the tests know."""
    problems = marker_problems(every_block())
    assert not problems, "\n".join(problems)


def test_the_snippets_cover_the_docs() -> None:
    """The snippet lists are not empty by mistake: every doc with runnable blocks is in them,
    and every command left out has a reason."""
    covered = {s.where.split(":")[0] for s in [*PYTHON_SNIPPETS, *SHELL_SNIPPETS]}
    with_runnable = {
        b.where.split(":")[0]
        for b in every_block()
        if runnable(b)
        and not delegated(b)
        and (b.lang in PYTHON or not all(map(not_run_reason, commands(b.body))))
    }
    assert with_runnable <= covered, with_runnable - covered
    assert {"README.md", "docs/dp.md", "docs/logreg.md", "docs/tee.md"} <= covered
    readme_quick_start = [s for s in SHELL_SNIPPETS if s.where.startswith("README.md")]
    assert [s.text for s in readme_quick_start] == ["mpc run scenarios/joint_statistics.py"]
    assert readme_quick_start[0].ray


def test_deploy_doc_is_run_by_its_own_test() -> None:
    """docs/deploy.md: every python/shell block is marked as needing several machines, or is one
    of the two tests/test_deploy_doc.py runs (the one-machine example and the program file)."""
    deploy = [b for b in blocks(ROOT / "docs" / "deploy.md") if b.lang in PYTHON | SHELL]
    unmarked = [b for b in deploy if b.marker is None]
    assert sorted(b.lang for b in unmarked) == ["bash", "python"], [b.where for b in unmarked]
    assert all(b.marked("needs") == "several machines" for b in deploy if b.marker is not None)
    test = (ROOT / DELEGATED["docs/deploy.md"]).read_text(encoding="utf-8")
    assert '"docs" / "deploy.md"' in test


# ---- the conventions themselves -----------------------------------------------------------
def test_conventions_on_a_made_up_doc(tmp_path: Path) -> None:
    doc = tmp_path / "made-up.md"
    doc.write_text(
        "```python\nx = 1\n```\n\n<!-- continues the block above -->\n```python\nprint(x)\n```\n"
        "\n```python\nprint(2)\n```\n\n<!-- not run: needs three machines -->\n```bash\nmpc x\n"
        "```\n\n```bash\npip install -e . && mpc run scenarios/a.py   # comment\n"
        "python scenarios/b.py --epsilon 1 \\\n  --runtime local; mpc protocols\n```\n",
        encoding="utf-8",
    )
    found = blocks(doc)
    assert [b.line for b in found] == [1, 6, 10, 15, 19]
    assert found[3].marked("not run") == "needs three machines"
    scripts = python_snippets(found)
    assert [s.text.count("# ----") for s in scripts] == [2, 1]
    assert "x = 1\n" in scripts[0].text and "print(x)\n" in scripts[0].text
    assert commands(found[4].body) == [
        "pip install -e .",
        "mpc run scenarios/a.py",
        "python scenarios/b.py --epsilon 1 --runtime local",
        "mpc protocols",
    ]
    shell = [(s.text, s.ray) for s in shell_snippets(found)]
    assert shell == [
        ("mpc run scenarios/a.py --runtime local --allow-insecure", False),
        ("python scenarios/b.py --epsilon 1 --runtime local", False),
        ("mpc protocols", False),
    ]
    assert relocate("d = '/var/lib/mpc/ledgers'; e = /var/lib/mpc\n", tmp_path) == (
        f"d = '{tmp_path}/relocated/var/lib/mpc/ledgers'; e = {tmp_path}/relocated/var/lib/mpc\n"
    )
    assert relocate("/var/lib/mpcx /x/var/lib/mpc", tmp_path) == "/var/lib/mpcx /x/var/lib/mpc"
    assert marker_problems(found) == []


def test_unknown_empty_and_dangling_markers_are_reported(tmp_path: Path) -> None:
    doc = tmp_path / "made-up.md"
    doc.write_text(
        "<!-- not run: -->\n```bash\nmpc x\n```\n\n<!-- skip this -->\n```python\npass\n```\n"
        "\n<!-- run by: tests/no_such_test.py -->\n```bash\nmpc y\n```\n"
        "\n<!-- run by: tests/test_registry.py -->\n```bash\nmpc z\n```\n"
        "\n<!-- needs: several machines -->\n```bash\nmpc w\n```\n",
        encoding="utf-8",
    )
    assert marker_problems(blocks(doc)) == [
        "made-up.md:2: unknown or empty marker <!-- not run: -->",
        "made-up.md:7: unknown or empty marker <!-- skip this -->",
        "made-up.md:12: tests/no_such_test.py does not exist or never reads the doc",
        "made-up.md:17: tests/test_registry.py does not exist or never reads the doc",
    ]


def test_a_failing_snippet_fails_the_test(tmp_path: Path) -> None:
    bad = Snippet("made-up.md:1", "python", "from mpc import NoSuchThing\n", False)
    with pytest.raises(AssertionError, match=r"made-up\.md:1: the python snippet failed"):
        check(bad, run(bad, tmp_path))
