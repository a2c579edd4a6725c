"""Shared command-line options of scenario scripts, so `mpc run` and `python scenario.py` agree.

Responsibility: parse the session options every scenario accepts (parties, protocol, transport,
runtime, dealer, timeout) into keyword arguments for `mpc.Session`, and the privacy-ledger folder
(`ledger_folder`: this user's state folder by default, never a temporary one unless allowed);
turn a refused or failed run into one line on stderr and an exit code (`one_line_errors`,
`cli_main`; `--debug` keeps the traceback); import one scenario script from another (or from
tests and benchmarks) by path (`load_script`); read integer CSV columns.
Security model: options only; `--allow-insecure` must be given explicitly for in-process dealers.
Error lines carry the errors' own messages, which name parties and operations, never secrets.
"""

from __future__ import annotations

import argparse
import csv
import functools
import importlib.util
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from mpc.errors import MpcError, PartyFailedError
from mpc.state import refuse_temporary, state_home, state_home_hint, state_home_path

#: The option that keeps the Python traceback of a refused or failed run.
DEBUG_OPTION = "--debug"
#: The option that accepts a privacy-ledger folder under the system's temporary folder.
ALLOW_TEMPORARY_LEDGER = "--allow-temporary-ledger"
#: Exit codes of `cli_main`: a refused or failed run, and an interrupted one (128 + SIGINT).
FAILED = 1
INTERRUPTED = 130

ScenarioRun = Callable[[Sequence[str] | None], int]


def load_script(path: Path | str) -> ModuleType:
    """Import a scenario script by path (scenarios are scripts, not a package).

    The module is registered in `sys.modules` as ``mpc_scenario_<stem>`` and marked to be
    pickled by value: Ray party workers cannot import a script, so a function of it handed to
    a program (e.g. a CSV loader) travels with its code.
    """
    from ray import cloudpickle

    path = Path(path).resolve()
    name = f"mpc_scenario_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load the scenario script {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    cloudpickle.register_pickle_by_value(module)  # type: ignore[no-untyped-call]
    return module


def add_session_options(parser: argparse.ArgumentParser, default_parties: int = 3) -> None:
    parser.add_argument("--parties", type=int, default=default_parties, help="number of parties")
    parser.add_argument("--protocol", default="additive", help="see `mpc protocols`")
    parser.add_argument(
        "--transport", default=None, help="tcp (encrypted, default), tcp-plaintext or ray"
    )
    parser.add_argument("--runtime", default="ray", choices=["ray", "local"])
    parser.add_argument("--dealer", default=None, help="trusted (default), local-insecure, none")
    parser.add_argument("--allow-insecure", action="store_true", help="accept insecure dealers")
    parser.add_argument("--timeout", type=float, default=30.0, help="receive timeout, seconds")
    parser.add_argument("--config", default=None, help="deployment config (TOML)")
    parser.add_argument(
        DEBUG_OPTION,
        action="store_true",
        help="show the Python traceback when the run is refused or fails",
    )


def add_ledger_options(parser: argparse.ArgumentParser) -> None:
    """``--ledger DIR`` (where the parties' privacy ledgers live) and
    ``--allow-temporary-ledger``; `ledger_folder` reads them."""
    parser.add_argument(
        "--ledger",
        default=None,
        help=f"folder of the parties' privacy ledgers (default: {state_home_hint()}/ledgers/"
        "<scenario>)",
    )
    parser.add_argument(
        ALLOW_TEMPORARY_LEDGER,
        action="store_true",
        help="accept a ledger folder under the system's temporary folder (other users can "
        "reach it and a reboot may erase it)",
    )


def ledger_folder(args: argparse.Namespace, scenario: str) -> Path:
    """The folder of the parties' ledgers: ``--ledger``, else ``ledgers/<scenario>`` in this
    user's state folder (`mpc.state.state_home`); ConfigurationError if it is under the
    system's temporary folder and ``--allow-temporary-ledger`` was not given."""
    if args.ledger is not None:
        folder = Path(args.ledger).expanduser()
    else:  # refused before anything is created under a temporary folder
        if not args.allow_temporary_ledger:
            refuse_temporary(
                state_home_path(), "the privacy ledgers", f"pass {ALLOW_TEMPORARY_LEDGER}"
            )
        folder = state_home() / "ledgers" / scenario
    if not args.allow_temporary_ledger:
        refuse_temporary(
            folder, "the privacy ledgers", f"pass {ALLOW_TEMPORARY_LEDGER} to accept it"
        )
    return folder


def party_names(args: argparse.Namespace, names: Sequence[str]) -> list[str] | None:
    """The first `--parties` of `names`; None (after saying why on stderr) if the count is not
    between 2 and len(names)."""
    if not 2 <= args.parties <= len(names):
        print(f"--parties must be between 2 and {len(names)}", file=sys.stderr)
        return None
    return list(names[: args.parties])


def session_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    dealer = args.dealer
    if dealer is None:
        dealer = "trusted" if args.runtime == "ray" else "local-insecure"
    return {
        "protocol": args.protocol,
        "transport": args.transport,
        "runtime": args.runtime,
        "dealer": dealer,
        "allow_insecure": args.allow_insecure,
        "timeout": args.timeout,
        "deployment": args.config,
    }


def parse(
    argv: Sequence[str] | None, description: str, default_parties: int = 3
) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    add_session_options(parser, default_parties)
    return parser.parse_args(argv)


def read_int_columns(path: str | Path, columns: Sequence[str]) -> dict[str, np.ndarray]:
    """The named integer columns of a CSV file with a header row, as int64 arrays."""
    with Path(path).open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    return {c: np.array([int(r[c]) for r in rows], dtype=np.int64) for c in columns}


def error_line(exc: BaseException) -> str:
    """``exc``'s type and message on one line (a party's failure names its cause's type), with
    every character that is not printable (escape sequences a peer's abort text may carry)
    shown as '?'."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    message = "".join(c if c.isprintable() else "?" for c in " | ".join(lines))
    if isinstance(exc, PartyFailedError):
        return message
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


def cli_main(run: ScenarioRun, argv: Sequence[str] | None = None) -> int:
    """Run a scenario's ``run(argv)`` as a command: the exit code it returns; for a refused or
    failed run (any :class:`~mpc.errors.MpcError`: budget exceeded, tampered ledger,
    attestation refused, a party failed) one line ``<script>: <message>`` on stderr and exit
    code 1; for Ctrl-C (after ``run``'s own ``with Session(...)`` shut the parties down)
    ``<script>: interrupted`` and 130.  With ``--debug`` in ``argv`` (default:
    ``sys.argv[1:]``; removed before ``run`` sees it) the exception propagates with its
    traceback."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = DEBUG_OPTION in args
    args = [a for a in args if a != DEBUG_OPTION]
    script = Path(run.__code__.co_filename).name if hasattr(run, "__code__") else run.__name__
    try:
        return run(args)
    except KeyboardInterrupt:
        if debug:
            raise
        print(f"{script}: interrupted", file=sys.stderr, flush=True)
        return INTERRUPTED
    except MpcError as exc:
        if debug:
            raise
        print(f"{script}: {error_line(exc)}", file=sys.stderr, flush=True)
        return FAILED


def one_line_errors(run: ScenarioRun) -> ScenarioRun:
    """Decorate a scenario's ``run(argv)`` so that both ``python scenarios/X.py`` and
    ``mpc run scenarios/X.py`` report a refused or failed run in one line (see
    :func:`cli_main`)."""

    @functools.wraps(run)
    def wrapper(argv: Sequence[str] | None = None) -> int:
        return cli_main(run, argv)

    return wrapper
