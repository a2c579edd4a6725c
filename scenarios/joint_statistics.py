"""Three hospitals compute joint statistics of their patients without pooling the records.

Each hospital holds a CSV of its own patients (age in whole years, total cholesterol in whole
mg/dL): yours with --data DIR (DIR/<hospital>.csv, columns age and cholesterol), else synthetic
ones generated with a fixed seed into scenarios/data/, which the script says when it does.
Public ranges, part of the program (its input bounds, `AGE_BOUND` and `CHOLESTEROL_BOUND`):
|age| <= 150 years and |cholesterol| <= 2000 mg/dL; a hospital refuses to run with a record
outside them (the error stays in its own log), rather than let a sum wrap around.
Each hospital loads only its own file inside its own party, secret-shares the columns, and the
parties compute, on shares:
    count, sum and sum of squares of cholesterol and of age, and the sum of age * cholesterol
over the union of all patients. Only these sums are revealed; from them every party computes
the count, mean and variance of cholesterol, and the correlation of age and cholesterol across
all hospitals. Revealed, and so learned by every hospital: those aggregates (and therefore also
the mean and variance of age and the covariance). Nothing else.
All arithmetic is on integers (exact, no fixed-point rounding): within those ranges no product
or sum can wrap (checked from the bounds before the run computes, `mpc.bounds`), so the secure
results equal the plaintext ones; the script checks that and prints both.

Run:  mpc run scenarios/joint_statistics.py          (or: python scenarios/joint_statistics.py)
Across organisations (each hospital runs `mpc party serve`, docs/deploy.md):
      mpc run scenarios/joint_statistics.py --policy north.toml
      (each hospital's policy names its CSV as `csv` under [data]; `party_program` below runs.)
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mpc.errors import ConfigurationError
from mpc.program import PartyContext, Secret
from mpc.scenario import (
    add_session_options,
    one_line_errors,
    party_names,
    read_int_columns,
    session_kwargs,
)
from mpc.session import Session

HOSPITALS = ["north", "south", "east", "west", "central"]
DATA_DIR = Path(__file__).resolve().parent / "data"
#: Public bounds of the columns (the documented ranges): years, mg/dL.
AGE_BOUND = 150
CHOLESTEROL_BOUND = 2000
BOUNDS = {"age": AGE_BOUND, "cholesterol": CHOLESTEROL_BOUND}


def make_data(names: Sequence[str], directory: Path = DATA_DIR) -> dict[str, Path]:
    """Write one synthetic patient CSV per hospital (fixed seed), unless it exists."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = {}
    for i, name in enumerate(names):
        path = directory / f"{name}.csv"
        paths[name] = path
        if path.exists():
            continue
        # Plaintext synthetic data only: a seeded generator so every run sees the same patients.
        gen = np.random.default_rng(1000 + i)
        rows = 800 + 150 * i
        age = gen.integers(20, 90, rows)
        cholesterol = np.clip(140 + 1.1 * age + gen.normal(0, 25, rows) + 10 * i, 100, 400)
        with path.open("w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["patient_id", "age", "cholesterol"])
            for j in range(rows):
                writer.writerow([f"{name}-{j:05d}", int(age[j]), round(cholesterol[j])])
    return paths


def patient_data(names: Sequence[str], folder: str | Path | None = None) -> dict[str, Path]:
    """Each hospital's CSV: ``<folder>/<name>.csv``, which must all exist (nothing is made
    there); without `folder`, the demo files in scenarios/data/, those missing made from the
    synthetic generator (saying so on stdout)."""
    if folder is not None:
        paths = {n: Path(folder).expanduser() / f"{n}.csv" for n in names}
        missing = [p.name for p in paths.values() if not p.is_file()]
        if missing:
            raise ConfigurationError(
                f"--data {folder}: no {', '.join(missing)} there (one CSV per hospital, "
                "<name>.csv, with columns age and cholesterol); nothing was generated"
            )
        return paths
    made = [f"{n}.csv" for n in names if not (DATA_DIR / f"{n}.csv").exists()]
    paths = make_data(names, DATA_DIR)
    if made:
        print(
            f"synthetic data: generated {', '.join(made)} in {DATA_DIR} (made-up patients, "
            "fixed seed); --data DIR reads your own CSVs instead",
            flush=True,
        )
    return paths


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Joint statistics of three hospitals' patients")
    add_session_options(parser)
    parser.add_argument("--data", default=None, help="folder of the hospitals' CSVs (<name>.csv)")
    return parser.parse_args(argv)


def load(path: str | Path) -> dict[str, np.ndarray]:
    return read_int_columns(path, ("age", "cholesterol"))


def joint_statistics(ctx: PartyContext) -> dict[str, float]:
    """The SPMD program: runs at every hospital."""
    return summarise({k: int(v) for k, v in joint_sums(ctx).items()})


def party_program(ctx: PartyContext, args: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """The program across organisations: returns only the revealed sums."""
    return joint_sums(ctx)


def report(output: Mapping[str, np.ndarray], args: Mapping[str, Any]) -> str:
    """What the starter prints: the statistics computed from the revealed sums."""
    stats = summarise({k: int(v) for k, v in output.items()})
    return "\n".join(f"{k:<30} {v:>16.6f}" for k, v in stats.items())


def joint_sums(ctx: PartyContext) -> dict[str, np.ndarray]:
    """The six sums over all hospitals' patients, revealed to every hospital."""
    columns: dict[str, list[Secret]] = {"age": [], "cholesterol": []}
    for owner in ctx.parties:
        mine = load(ctx.private["csv"]) if ctx.me == owner else None
        for col in columns:
            value = mine[col] if mine else None
            columns[col].append(ctx.input(owner, value, kind="int", bound=BOUNDS[col]))
    ones = [ctx.constant(np.ones(len(c), dtype=np.int64), kind="int") for c in columns["age"]]
    age, chol, one = (_concat(v) for v in (columns["age"], columns["cholesterol"], ones))
    sums = {
        "n": one.sum(),
        "sum_chol": chol.sum(),
        "sum_chol2": (chol * chol).sum(),
        "sum_age": age.sum(),
        "sum_age2": (age * age).sum(),
        "sum_age_chol": (age * chol).sum(),
    }
    revealed = {k: ctx.reveal(v) for k, v in sums.items()}
    return {k: v for k, v in revealed.items() if v is not None}


def _concat(parts: list[Secret]) -> Secret:
    return parts[0].ctx.concat(parts)  # keeps the columns' public bounds


def summarise(s: dict[str, int]) -> dict[str, float]:
    n = s["n"]
    mean_c = s["sum_chol"] / n
    var_c = s["sum_chol2"] / n - mean_c**2
    mean_a = s["sum_age"] / n
    var_a = s["sum_age2"] / n - mean_a**2
    cov = s["sum_age_chol"] / n - mean_a * mean_c
    return {
        "count": float(n),
        "cholesterol_mean": mean_c,
        "cholesterol_variance": var_c,
        "age_cholesterol_correlation": cov / (var_a * var_c) ** 0.5,
    }


def plaintext(paths: dict[str, Path]) -> dict[str, float]:
    """What a trusted third party with all records would compute (for checking only)."""
    data = [load(p) for p in paths.values()]
    age = np.concatenate([d["age"] for d in data])
    chol = np.concatenate([d["cholesterol"] for d in data])
    return {
        "count": float(len(age)),
        "cholesterol_mean": float(chol.mean()),
        "cholesterol_variance": float(chol.var()),
        "age_cholesterol_correlation": float(np.corrcoef(age, chol)[0, 1]),
    }


@one_line_errors
def run(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    names = party_names(args, HOSPITALS)
    if names is None:
        return 2
    paths = patient_data(names, args.data)
    private: dict[str, dict[str, Any]] = {n: {"csv": str(p)} for n, p in paths.items()}
    print(f"parties: {', '.join(names)} | protocol {args.protocol} | starting ...", flush=True)
    started = time.perf_counter()
    with Session(names, private=private, **session_kwargs(args)) as session:
        print(
            f"session ready in {time.perf_counter() - started:.1f} s "
            f"(transport {session.transport}, dealer {session.dealer_kind})",
            flush=True,
        )
        result = session.run(joint_statistics)
    expected = plaintext(paths)
    secure = result.outputs[names[0]]
    agree = all(result.outputs[n] == secure for n in names)
    print(f"\n{'statistic':<30} {'secure (MPC)':>16} {'plaintext check':>16}")
    worst = 0.0
    for key, value in expected.items():
        worst = max(worst, abs(secure[key] - value) / max(1.0, abs(value)))
        print(f"{key:<30} {secure[key]:>16.6f} {value:>16.6f}")
    print(f"\nall parties got the same result: {agree}; max relative difference {worst:.2e}")
    print("\ncost per party:\n" + result.report())
    ok = agree and worst < 1e-9
    print("OK" if ok else "MISMATCH")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(run())
