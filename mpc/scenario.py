"""Shared command-line options of scenario scripts, so `mpc run` and `python scenario.py` agree.

Responsibility: parse the session options every scenario accepts (parties, protocol, transport,
runtime, dealer, timeout) into keyword arguments for `mpc.Session`; import one scenario script
from another (or from tests and benchmarks) by path (`load_script`); read integer CSV columns.
Security model: options only; `--allow-insecure` must be given explicitly for in-process dealers.
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np


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
