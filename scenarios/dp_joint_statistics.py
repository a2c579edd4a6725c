"""Three hospitals release joint patient statistics with differential privacy and a budget.

The data are those of scenarios/joint_statistics.py (patient CSVs, age in years and total
cholesterol in mg/dL, one file per hospital: yours with --data DIR, else synthetic ones generated
into scenarios/data/ with a fixed seed, which the script says when it does).
Each hospital loads only its own file inside its own party and computes, on its own rows:
  * a histogram of cholesterol: below 200, 200-239 and 240 or more (desirable, borderline, high);
  * the sums of age and of cholesterol, each value first clamped to a public range (age
    [20, 90], cholesterol [100, 400]) so that one patient can move a sum by at most the range.
These per-hospital numbers are secret-shared and added on shares; the totals are then released
with noise added under MPC, never in the clear:
  * the histogram with exact discrete Laplace noise (pure epsilon; one patient replaced by
    another moves two bins by one each: L1 sensitivity 2);
  * the two sums with the exact discrete Gaussian (zCDP; L2 sensitivity sqrt(70^2 + 300^2));
    every party divides by the (public) number of patients to get the means.
Neighbouring data sets replace one patient, so the total number of patients is public (it is
revealed exactly; per-hospital counts are not). Both releases are charged together to every
hospital's ledger (a directory under --ledger, default
~/.local/state/mpc/ledgers/dp_joint_statistics, or under $XDG_STATE_HOME; printed at the start; a
folder under the system's temporary folder is refused unless --allow-temporary-ledger) before
either is revealed (mpc.dp.dp_plan); running the script again spends more, and a run whose pair
of releases would exceed a budget is refused whole: it reveals nothing and charges nothing.

Noise: distributed by default (each hospital adds its own piece; the Gaussian split so that any
--max-colluding hospitals cannot remove the rest, the Laplace as one full draw per hospital), or
--noise dealer (the trusted dealer deals shares of one draw; runtime ray).

Revealed to every hospital: the noisy histogram, the noisy sums (and so the noisy means) and
the number of patients. Nothing else. The driver prints them beside the exact values (computed
in the clear only for checking) and each ledger's spending.

Run:  mpc run scenarios/dp_joint_statistics.py   (or: python scenarios/dp_joint_statistics.py)
Across organisations (docs/deploy.md): mpc run scenarios/dp_joint_statistics.py --policy P;
      each hospital's policy names its CSV (`csv` under [data]) and its ledger and budget ([dp]).
      options: --epsilon-counts 0.5 --epsilon-means 0.5 --delta 1e-7 --budget-epsilon 2
      --budget-delta 1e-6 --ledger DIR --data DIR --noise distributed|dealer --max-colluding T,
      plus the session options (--runtime local --allow-insecure, ...).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mpc.dp import (
    DiscreteGaussianMechanism,
    DiscreteLaplaceMechanism,
    PlannedRelease,
    dp_plan,
    ledger_status,
)
from mpc.dp.charging import format_ledger_status
from mpc.errors import PartyFailedError
from mpc.program import PartyContext
from mpc.scenario import (
    add_ledger_options,
    add_session_options,
    ledger_folder,
    load_script,
    one_line_errors,
    party_names,
    read_int_columns,
    session_kwargs,
)
from mpc.session import Session

HOSPITALS = ["north", "south", "east", "west", "central"]
REFUSED = 3
AGE_RANGE = (20, 90)
CHOLESTEROL_RANGE = (100, 400)
BINS = ("below 200", "200-239", "240 or more")
MEANS = ("mean_age", "mean_cholesterol")
EDGES = (200, 240)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="DP joint statistics of hospitals' patients")
    add_session_options(parser, default_parties=3)
    parser.add_argument("--epsilon-counts", type=float, default=0.5)
    parser.add_argument("--epsilon-means", type=float, default=0.5)
    parser.add_argument("--delta", type=float, default=1e-7, help="delta of the means release")
    parser.add_argument("--budget-epsilon", type=float, default=2.0, help="per hospital")
    parser.add_argument("--budget-delta", type=float, default=1e-6, help="per hospital")
    add_ledger_options(parser)
    parser.add_argument("--data", default=None, help="folder of the hospitals' CSVs (<name>.csv)")
    parser.add_argument("--noise", default="distributed", choices=["distributed", "dealer"])
    parser.add_argument(
        "--max-colluding", type=int, default=None, help="default: all but one hospital"
    )
    return parser.parse_args(argv)


def local_aggregates(age: np.ndarray, cholesterol: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(histogram of cholesterol, [sum of clamped age, sum of clamped cholesterol]) of one
    hospital's rows: exact integers."""
    hist = np.array(
        [
            np.sum(cholesterol < EDGES[0]),
            np.sum((cholesterol >= EDGES[0]) & (cholesterol < EDGES[1])),
            np.sum(cholesterol >= EDGES[1]),
        ],
        dtype=np.int64,
    )
    sums = np.array(
        [np.sum(np.clip(age, *AGE_RANGE)), np.sum(np.clip(cholesterol, *CHOLESTEROL_RANGE))],
        dtype=np.int64,
    )
    return hist, sums


def mechanisms(
    args: argparse.Namespace,
) -> tuple[DiscreteLaplaceMechanism, DiscreteGaussianMechanism]:
    counts = DiscreteLaplaceMechanism(epsilon=args.epsilon_counts, sensitivity=2.0, frac_bits=0)
    span_age = AGE_RANGE[1] - AGE_RANGE[0]
    span_chol = CHOLESTEROL_RANGE[1] - CHOLESTEROL_RANGE[0]
    means = DiscreteGaussianMechanism(
        epsilon=args.epsilon_means,
        delta=args.delta,
        sensitivity=math.hypot(span_age, span_chol),
        frac_bits=0,
    )
    return counts, means


def dp_statistics(ctx: PartyContext, setup: dict[str, Any]) -> dict[str, Any]:
    """The SPMD program: runs at every hospital."""
    load = setup["load"]
    hist_parts, sum_parts, count_parts = [], [], []
    for owner in ctx.parties:
        mine = None
        if ctx.me == owner:
            data = load(ctx.private["csv"])
            hist, sums = local_aggregates(data["age"], data["cholesterol"])
            mine = (hist, sums, np.array([len(data["age"])], dtype=np.int64))
        hist_parts.append(ctx.input(owner, mine[0] if mine else None, kind="int"))
        sum_parts.append(ctx.input(owner, mine[1] if mine else None, kind="int"))
        count_parts.append(ctx.input(owner, mine[2] if mine else None, kind="int"))
    # The number of patients is public under replace-one neighbours (n is fixed).
    counts = ctx.reveal(ctx.sum(count_parts))
    assert counts is not None
    noise, t = setup["noise"], setup["max_colluding"]
    # Both releases are charged at once, before either is revealed: every hospital's ledger
    # accepts the pair, or nothing is charged or revealed anywhere.
    plan = dp_plan(
        ctx,
        [
            PlannedRelease(
                setup["counts"],
                (len(BINS),),
                noise=noise,
                max_colluding=t,
                label="cholesterol histogram",
            ),
            PlannedRelease(
                setup["means"],
                (len(MEANS),),
                noise=noise,
                max_colluding=t,
                label="sums of age and cholesterol",
            ),
        ],
    )
    histogram = plan.reveal(ctx.sum(hist_parts))
    sums = plan.reveal(ctx.sum(sum_parts))
    assert histogram is not None and sums is not None
    n = int(counts[0])
    return {
        "patients": n,
        "histogram": [int(v) for v in histogram],
        "mean_age": float(sums[0]) / n,
        "mean_cholesterol": float(sums[1]) / n,
        "ledger": ledger_status(ctx),
        # the revealed arrays themselves (what party_program returns across organisations)
        "counts": counts,
        "released_histogram": histogram,
        "sums": sums,
    }


# ---- across organisations (mpc party serve; docs/deploy.md) --------------------------------------

#: Options that each hospital's own policy sets ([dp] and [data]), or that are fixed across
#: organisations (distributed noise that all other hospitals together cannot remove).
POLICY_OPTIONS = (
    "--ledger",
    "--allow-temporary-ledger",
    "--budget-epsilon",
    "--budget-delta",
    "--parties",
    "--data",
)
FIXED_OPTIONS = ("--noise", "--max-colluding")
RELEASE = ("epsilon_counts", "epsilon_means", "delta")


def public_args(argv: Sequence[str]) -> dict[str, Any]:
    """The release parameters from the command line: the run's public arguments."""
    options = {a.split("=")[0] for a in argv}
    given = sorted(options & set(POLICY_OPTIONS))
    if given:
        raise ValueError(
            f"{', '.join(given)}: across organisations each hospital's ledger and budget come "
            "from its own policy ([dp] table), not from whoever starts the run"
        )
    fixed = sorted(options & set(FIXED_OPTIONS))
    if fixed:
        raise ValueError(
            f"{', '.join(fixed)}: across organisations the noise is always distributed, and "
            "safe against all other hospitals colluding"
        )
    args = parse_args(argv)
    return accept_args({key: getattr(args, key) for key in RELEASE})


def accept_args(args: dict[str, Any]) -> dict[str, Any]:
    """Every hospital's check of the release parameters (its budget is checked when charged)."""
    if set(args) != set(RELEASE):
        raise ValueError(f"the release has exactly the keys {RELEASE}, got {sorted(args)}")
    for key in RELEASE:
        value = args[key]
        if type(value) not in (int, float) or not 0 < value < math.inf:
            raise ValueError(f"{key} must be a positive number, got {value!r}")
    if args["delta"] > 1e-3:
        raise ValueError(f"delta must be at most 1e-3, got {args['delta']}")
    return {k: float(args[k]) for k in RELEASE}


def party_program(ctx: PartyContext, args: dict[str, Any]) -> dict[str, Any]:
    """Each hospital's CSV is `csv` under its policy's [data]; its ledger its policy's [dp]."""
    counts, means = mechanisms(argparse.Namespace(**args))
    setup = {
        "load": lambda path: read_int_columns(path, ("age", "cholesterol")),
        "counts": counts,
        "means": means,
        "noise": "distributed",
        "max_colluding": ctx.n - 1,  # every other hospital together cannot remove the noise
    }
    released = dp_statistics(ctx, setup)
    return {
        "patients": released["counts"],
        "histogram": released["released_histogram"],
        "sums": released["sums"],
    }


def report(output: dict[str, Any], args: dict[str, Any]) -> str:
    n = int(output["patients"][0])
    lines = [f"{'patients (public)':<34} {n:>14d}"]
    for label, noisy in zip(BINS, output["histogram"], strict=True):
        lines.append(f"{'cholesterol ' + label:<34} {int(noisy):>14d}")
    for i, key in enumerate(("mean age", "mean cholesterol")):
        lines.append(f"{key:<34} {float(output['sums'][i]) / n:>14.3f}")
    return "\n".join(lines)


def exact(paths: dict[str, Path], load: Any) -> dict[str, Any]:
    """What a trusted third party with all records would compute (for checking only)."""
    hist = np.zeros(3, dtype=np.int64)
    sums = np.zeros(2, dtype=np.int64)
    n = 0
    for path in paths.values():
        data = load(path)
        h, s = local_aggregates(data["age"], data["cholesterol"])
        hist, sums, n = hist + h, sums + s, n + len(data["age"])
    return {
        "patients": n,
        "histogram": [int(v) for v in hist],
        "mean_age": float(sums[0]) / n,
        "mean_cholesterol": float(sums[1]) / n,
    }


@one_line_errors
def run(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    names = party_names(args, HOSPITALS)
    if names is None:
        return 2
    ledger = ledger_folder(args, "dp_joint_statistics")
    base = load_script(Path(__file__).resolve().parent / "joint_statistics.py")
    paths = base.patient_data(names, args.data)
    private: dict[str, dict[str, Any]] = {
        name: {
            "csv": str(path),
            "dp_ledger": {
                "directory": str(ledger / name),
                "dataset": f"patients-{name}",
                "budget": {"epsilon": args.budget_epsilon, "delta": args.budget_delta},
            },
        }
        for name, path in paths.items()
    }
    counts_mech, means_mech = mechanisms(args)
    t = len(names) - 1 if args.max_colluding is None else args.max_colluding
    setup = {
        "load": base.load,
        "counts": counts_mech,
        "means": means_mech,
        "noise": args.noise,
        "max_colluding": t,
    }
    print(
        f"hospitals: {', '.join(names)} | noise {args.noise} (up to {t} colluding) | "
        f"histogram epsilon {args.epsilon_counts:g} (discrete Laplace), means epsilon "
        f"{args.epsilon_means:g} delta {args.delta:g} (discrete Gaussian)"
    )
    print(f"privacy ledgers: {ledger}/<hospital> | starting ...", flush=True)
    started = time.perf_counter()
    try:
        with Session(names, private=private, **session_kwargs(args)) as session:
            print(f"session ready in {time.perf_counter() - started:.1f} s", flush=True)
            result = session.run(dp_statistics, setup)
    except PartyFailedError as exc:
        if "BudgetExceededError" in exc.cause:
            print(f"\nREFUSED by {exc.party}: {exc.cause}")
            print(
                "nothing was revealed and nothing was charged: both releases of the run are "
                "charged together, before either is revealed"
            )
            return REFUSED
        raise
    truth = exact(paths, base.load)
    released = result.outputs[names[0]]
    agree = all(
        all(result.outputs[n][k] == released[k] for k in ("patients", "histogram", *MEANS))
        for n in names
    )
    print(f"\n{'statistic':<34} {'released (DP)':>14} {'exact (check)':>14}")
    print(f"{'patients (public)':<34} {released['patients']:>14d} {truth['patients']:>14d}")
    for label, noisy, true in zip(BINS, released["histogram"], truth["histogram"], strict=True):
        print(f"{'cholesterol ' + label:<34} {noisy:>14d} {true:>14d}")
    for key in ("mean_age", "mean_cholesterol"):
        print(f"{key.replace('_', ' '):<34} {released[key]:>14.3f} {truth[key]:>14.3f}")
    print("\nprivacy ledgers (each hospital's own patients):")
    for name in names:
        print(format_ledger_status(name, result.outputs[name]["ledger"]))
    print(f"\nall hospitals got the same release: {agree}")
    print("OK" if agree else "MISMATCH")
    return 0 if agree else 1


if __name__ == "__main__":
    sys.exit(run())
