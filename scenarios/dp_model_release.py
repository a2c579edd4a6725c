"""Three hospitals train one logistic-regression model and release it with differential privacy.

Data: scikit-learn's bundled Wisconsin breast-cancer set (569 tumours x 30 features; no
download), split once into training and test rows (80/20, stratified, fixed seed) and dealt out
by rows to the hospitals (a horizontal partition), as in scenarios/hospitals_logreg.py.

What differs from the non-private scenario (docs/dp.md):
  * public scaling instead of data-dependent standardisation: each hospital takes the log of
    every feature (plus 1% of its range) and maps the *public* reference range of that feature
    (the minimum and maximum printed in the data set's published description, FEATURE_RANGES;
    in a deployment they come from a data dictionary or clinical reference ranges, not from
    the private rows) onto [-1, 1] (--scaling linear: without the log), then clips each of its
    rows to L2 norm R (intercept included) before sharing (mpc.dp.prepare_rows);
  * objective perturbation (Chaudhuri, Monteleoni & Sarwate 2011, Alg. 2; mpc.dp.objective):
    the parties draw the noise vector b on shares, train the L2-penalised objective plus b.w/n
    to within a proven distance G of its minimiser (full-batch gradient descent, the piecewise
    sigmoid, 23 fractional bits where the range allows), and open only the weights plus output
    noise covering G; no party sees b or the un-noised weights.  --mechanism output: the
    previous recipe (10 epochs, output perturbation; --delta > 0 for the discrete Gaussian);
  * each hospital keeps its own privacy ledger (a directory under --ledger, default
    ~/.local/state/mpc/ledgers/dp_model_release, or under $XDG_STATE_HOME; printed at the start;
    a folder under the system's temporary folder is refused unless --allow-temporary-ledger)
    with a budget per data set; the release is charged to every ledger before anything is
    revealed, so re-running spends more and eventually refuses.

Noise: --noise dealer (the trusted dealer samples one draw and deals shares; needs runtime ray),
--noise distributed (every hospital adds a full-scale draw from its own PRG: safe against any
n - 1 colluding hospitals, n times the noise variance), or auto (dealer with the Ray trusted
dealer, distributed otherwise).

Revealed: the noisy weights (to every hospital), the row counts, and for the evaluation on the
held-out test patients two counts of correct predictions: of the released model (scored locally
by each hospital) and, for comparison only, of the non-private shared model (computed on
shares; --no-compare skips it; it is not covered by the budget and would not be revealed in a
real deployment). The driver prints these beside the plaintext run of the same recipe and
scikit-learn's LogisticRegression (computed only for checking).

The output ends with the side-by-side accuracy table of benchmarks/dp_accuracy.py (30 releases
per epsilon, beside diffprivlib), when its results file exists.

Run:  mpc run scenarios/dp_model_release.py      (or: python scenarios/dp_model_release.py)
      options: --epsilon 1 --mechanism objective|output --budget-epsilon 3 --budget-delta 2e-4
      --ledger DIR --noise auto|dealer|distributed --features all|worst --scaling log|linear
      --clip-norm 2 --l2 L --rows N, plus the session options (--runtime local
      --allow-insecure, ...).
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

from mpc.dp import ledger_status, model_release_plan, plan_release, prepare_rows, release_model
from mpc.dp.charging import format_ledger_status
from mpc.dp.model_release import max_learning_rate
from mpc.dp.objective import (
    objective_frac_bits,
    objective_l2,
    objective_privacy,
    release_objective_model,
)
from mpc.encoding import FixedPoint
from mpc.errors import PartyFailedError
from mpc.ml import LinearModel, LogisticRegression, Standardizer, train_plain
from mpc.ml.data import deal_breast_cancer_rows
from mpc.program import PartyContext, Secret
from mpc.protocols.registry import get_protocol
from mpc.scenario import (
    add_ledger_options,
    add_session_options,
    ledger_folder,
    one_line_errors,
    party_names,
    session_kwargs,
)
from mpc.session import Session

HOSPITALS = ["north", "south", "east", "west", "central"]
REFUSED = 3

#: Public reference ranges (min, max) of the 30 features, in the data set's column order, as
#: printed in its published description (UCI / sklearn DESCR, "Summary Statistics").
FEATURE_RANGES = np.array(
    [
        (6.981, 28.11), (9.71, 39.28), (43.79, 188.5), (143.5, 2501.0), (0.053, 0.163),
        (0.019, 0.345), (0.0, 0.427), (0.0, 0.201), (0.106, 0.304), (0.05, 0.097),
        (0.112, 2.873), (0.36, 4.885), (0.757, 21.98), (6.802, 542.2), (0.002, 0.031),
        (0.002, 0.135), (0.0, 0.396), (0.0, 0.053), (0.008, 0.079), (0.001, 0.03),
        (7.93, 36.04), (12.02, 49.54), (50.41, 251.2), (185.2, 4254.0), (0.071, 0.223),
        (0.027, 1.058), (0.0, 1.252), (0.0, 0.291), (0.156, 0.664), (0.055, 0.208),
    ]
)  # fmt: skip
#: A public choice of columns: the ten "worst" (largest) measurements, columns 20-29.
FEATURE_SETS = {"all": list(range(30)), "worst": list(range(20, 30))}


def public_scaling(columns: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """(center, scale) mapping each feature's public range onto [-1, 1]."""
    ranges = FEATURE_RANGES[list(columns)]
    return ranges.mean(axis=1), (ranges[:, 1] - ranges[:, 0]) / 2.0


#: The log scaling's offset, as a share of each feature's public range (public constant).
LOG_OFFSET = 0.01


def public_transform(
    x: np.ndarray, columns: Sequence[int], scaling: str = "log"
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(rows, center, scale) for prepare_rows, from public constants only: 'linear' maps each
    feature's public range onto [-1, 1]; 'log' first takes log(x + 1% of the range), the
    values clamped to the range (the features are sizes and counts with long right tails), and
    maps the log range onto [-1, 1].  Run by each owner on its own rows."""
    ranges = FEATURE_RANGES[list(columns)]
    rows = np.asarray(x, dtype=np.float64)[:, list(columns)]
    if scaling == "linear":
        center, scale = public_scaling(columns)
        return rows, center, scale
    if scaling != "log":
        raise ValueError(f"scaling must be 'log' or 'linear', got {scaling!r}")
    low, high = ranges[:, 0], ranges[:, 1]
    offset = (high - low) * LOG_OFFSET
    log_low, log_high = np.log(low + offset), np.log(high + offset)
    logged = np.log(np.clip(rows, low, high) + offset)
    return logged, (log_low + log_high) / 2.0, (log_high - log_low) / 2.0


def default_l2(epsilon: float) -> float:
    """The L2 penalty by default: 0.03 (the issue's recipe) up to epsilon = 1, then shrinking
    as 1/sqrt(epsilon) (the noise's effect on the minimiser falls as 1/(epsilon n lambda), the
    penalty's bias grows as lambda): a public rule, fixed before looking at the data."""
    return min(0.03, 0.03 / math.sqrt(epsilon))


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Hospitals train a joint model and release it with differential privacy"
    )
    add_session_options(parser, default_parties=3)
    parser.add_argument("--epsilon", type=float, default=1.0, help="epsilon of this release")
    parser.add_argument(
        "--mechanism",
        default="objective",
        choices=["objective", "output"],
        help="objective perturbation (default) or output perturbation",
    )
    parser.add_argument(
        "--delta",
        type=float,
        default=0.0,
        help="output perturbation only: 0 pure-epsilon noise, > 0 the discrete Gaussian",
    )
    parser.add_argument("--budget-epsilon", type=float, default=3.0, help="per hospital")
    parser.add_argument("--budget-delta", type=float, default=2e-4, help="per hospital")
    add_ledger_options(parser)
    parser.add_argument("--noise", default="auto", choices=["auto", "dealer", "distributed"])
    parser.add_argument("--features", default="all", choices=sorted(FEATURE_SETS))
    parser.add_argument("--scaling", default="log", choices=["log", "linear"])
    parser.add_argument("--clip-norm", type=float, default=2.0, help="row bound R")
    parser.add_argument(
        "--l2", type=float, default=None, help="default: 0.03, or 0.03/sqrt(epsilon) above 1"
    )
    parser.add_argument("--epochs", type=int, default=10, help="output perturbation only")
    parser.add_argument(
        "--steps", type=int, default=None, help="objective: gradient steps (default: analysis)"
    )
    parser.add_argument("--gap-fraction", type=float, default=0.01, help="objective only")
    parser.add_argument(
        "--frac-bits", type=int, default=None, help="fixed point (default 23 objective, 16 output)"
    )
    parser.add_argument(
        "--learning-rate", type=float, default=None, help="default: 99%% of the largest covered"
    )
    parser.add_argument("--sigmoid", default="piecewise", choices=["piecewise", "accurate-clamped"])
    parser.add_argument("--rows", type=int, default=None, help="use only this many training rows")
    parser.add_argument("--no-compare", action="store_true", help="skip the non-private model")
    return parser.parse_args(argv)


def deal_rows(
    names: Sequence[str], rows: int | None, ledger: Path, budget: tuple[float, float]
) -> tuple[dict[str, dict[str, Any]], tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """Each hospital's private rows and ledger description, and the whole split (for checking)."""
    private, split = deal_breast_cancer_rows(names, rows)
    for name, data in private.items():
        data["dp_ledger"] = {
            "directory": str(ledger / name),
            "dataset": f"breast-cancer-{name}",
            "budget": {"epsilon": budget[0], "delta": budget[1]},
        }
    return private, split


def prepared(x: np.ndarray, setup: dict[str, Any]) -> np.ndarray:
    """Rows transformed with public constants and clipped to R (intercept included), as each
    hospital prepares its own before sharing."""
    rows, center, scale = public_transform(x, setup["columns"], setup["scaling"])
    fp = FixedPoint(frac_bits=setup["frac_bits"])
    return prepare_rows(
        rows, clip_norm=setup["clip_norm"], center=center, scale=scale, fixed_point=fp
    )


def _secure_count(ctx: PartyContext, local: np.ndarray) -> np.ndarray:
    parts = [ctx.input(name, local if ctx.me == name else None, kind="int") for name in ctx.parties]
    total = ctx.reveal(ctx.sum(parts))
    assert total is not None
    return total


def release_program(ctx: PartyContext, setup: dict[str, Any]) -> dict[str, Any]:
    """The SPMD program: runs at every hospital, on its own rows only."""
    mine = ctx.private
    config: LogisticRegression = setup["config"]
    clip = setup["clip_norm"]
    data = config.share_horizontal(ctx, prepared(mine["x_train"], setup), mine["y_train"])
    started = time.perf_counter()
    label = f"joint model, epsilon={setup['epsilon']:g} ({setup['mechanism']} perturbation)"
    if setup["mechanism"] == "objective":
        trained = setup["privacy"].config  # the analysis's number of steps
        released = release_objective_model(
            ctx,
            data,
            config,
            epsilon=setup["epsilon"],
            clip_norm=clip,
            noise=setup["noise"],
            gap_fraction=setup["gap_fraction"],
            steps=trained.epochs,
            label=label,
        )
    else:
        trained = config
        model = config.fit(ctx, data)
        released = release_model(
            ctx,
            model,
            epsilon=setup["epsilon"],
            delta=setup["delta"],
            clip_norm=clip,
            noise=setup["noise"],
            label=label,
        )
    fit_seconds = time.perf_counter() - started
    assert released is not None  # revealed to every hospital
    x_test = prepared(mine["x_test"], setup)
    y_test = np.asarray(mine["y_test"], dtype=np.int64)
    correct = int(np.sum(released.predict(x_test) == y_test))
    released_counts = _secure_count(ctx, np.array([correct, len(y_test)]))
    private_accuracy = None
    if setup["compare"]:  # comparison only: one count about the non-private model
        model = trained.fit(ctx, data)  # the same recipe without noise
        test = config.share_horizontal(ctx, x_test, y_test)
        assert test.y is not None
        predicted: Secret = 1 - model.decision_function(ctx, test).ltz()  # 1 iff logit >= 0
        agree = 1 - predicted - test.y + 2 * (predicted * test.y)
        opened = ctx.reveal(agree.sum())
        assert opened is not None
        private_accuracy = float(opened) / float(test.n_rows)
    return {
        "released": released,
        "released_accuracy": float(released_counts[0]) / float(released_counts[1]),
        "private_accuracy": private_accuracy,
        "fit_seconds": fit_seconds,
        "ledger": ledger_status(ctx),
    }


def sklearn_accuracy(x_train: Any, y_train: Any, x_test: Any, y_test: Any) -> float:
    try:
        from sklearn.linear_model import LogisticRegression as SkLogisticRegression
    except ImportError:  # pragma: no cover - sklearn ships with the dev environment
        return float("nan")
    scaler = Standardizer.fit(x_train)
    model = SkLogisticRegression(max_iter=1000).fit(scaler.transform(x_train), y_train)
    return float(model.score(scaler.transform(x_test), y_test))


def choose_noise(args: argparse.Namespace, kwargs: dict[str, Any]) -> str:
    if args.noise != "auto":
        return str(args.noise)
    ray_dealer = kwargs["runtime"] == "ray" and kwargs["dealer"] in ("trusted", "enclave")
    return "dealer" if ray_dealer else "distributed"


def recipe(args: argparse.Namespace, n_rows: int) -> LogisticRegression:
    """The training configuration of a release (public: every hospital builds the same)."""
    l2 = default_l2(args.epsilon) if args.l2 is None else args.l2
    if args.mechanism == "objective":
        l2 = objective_l2(epsilon=args.epsilon, n_rows=n_rows, clip_norm=args.clip_norm, l2=l2)
    lr = args.learning_rate or max_learning_rate(
        clip_norm=args.clip_norm, l2=l2, sigmoid=args.sigmoid
    )
    return LogisticRegression(
        learning_rate=lr,
        epochs=args.epochs,
        l2=l2,
        sigmoid=args.sigmoid,
        standardize=False,
        penalize_intercept=True,
        feature_limit=args.clip_norm,
    )


#: Where benchmarks/dp_accuracy.py writes the side-by-side table (30 releases per epsilon).
ACCURACY_RESULTS = Path(__file__).resolve().parent.parent / "benchmarks/results/dp_accuracy.json"


#: The table as measured for docs/dp.md (2026-12-02), printed when no results file exists.
MEASURED_TABLE = "\n".join(
    [
        "test accuracy, mean ± std over 30 releases per epsilon (breast cancer; measured with",
        "python benchmarks/dp_accuracy.py --runs 30 --l2 auto 0.03, see docs/dp.md)",
        "| epsilon | 0.1 | 1 | 10 |",
        "|---|---|---|---|",
        "| diffprivlib 0.6.6 | 0.510 ± 0.145 | 0.887 ± 0.039 | 0.948 ± 0.008 |",
        "| mpc objective perturbation (l2 0.155, 0.03, 0.00949) "
        "| 0.570 ± 0.196 | 0.863 ± 0.045 | 0.958 ± 0.013 |",
        "| mpc objective perturbation (l2 0.155, 0.03, 0.03) "
        "| 0.583 ± 0.168 | 0.862 ± 0.066 | 0.946 ± 0.010 |",
    ]
)


def accuracy_table(path: Path = ACCURACY_RESULTS) -> str:
    """The side-by-side table from benchmarks/dp_accuracy.py's results (benchmarks/results is
    not versioned), or the one measured for docs/dp.md."""
    if not path.exists():
        return MEASURED_TABLE
    import json

    document = json.loads(path.read_text())
    results = document.get("results", {})
    lines = [str(results.get("title", "")), *results.get("table", [])]
    return "\n".join(line for line in lines if line)


def describe(args: argparse.Namespace, mechanism: Any, analysis: Any, plan: Any) -> list[str]:
    if args.mechanism == "objective":
        m = mechanism
        return [
            f"objective perturbation (CMS11 Alg. 2): {analysis.steps} full-batch steps from "
            f"w0 = -b/(n lambda), lambda {analysis.l2:.4g}, contraction {analysis.contraction:.4f}",
            f"epsilon {m.epsilon:g} = {m.epsilon_noise:.4f} (noise b) + {m.epsilon_jacobian:.4f} "
            f"(Jacobian) + 2 x {m.epsilon_gap:.4g} (output noise over the gap G = {m.gap:.3g}: "
            f"{analysis.gap_optimisation:.2g} steps + {analysis.gap_fixed_point:.2g} fixed point)",
            f"release costs epsilon={plan.cost.epsilon:g}, delta={plan.cost.delta:.2e} (the noise "
            f"bound's tail); noise variance x{plan.variance_factor:g} ({plan.noise})",
        ]
    return [
        f"sensitivity {analysis.total:.4f} = {analysis.sensitivity.iterate:.4f} (gradient "
        f"descent, {analysis.sensitivity.steps} steps) + {analysis.sensitivity.fixed_point:.4f} "
        f"(fixed point); truncation-failure delta {analysis.truncation_delta:.2e}",
        f"release: {type(mechanism).__name__}, costs epsilon={plan.cost.epsilon:g}, "
        f"delta={plan.cost.delta:.2e}; noise variance x{plan.variance_factor:g} ({plan.noise})",
    ]


@one_line_errors
def run(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    names = party_names(args, HOSPITALS)
    if names is None:
        return 2
    if args.mechanism == "objective" and args.delta > 0:
        print(
            "dp_model_release.py: objective perturbation is pure epsilon here; for "
            "--delta > 0 (the discrete Gaussian) add --mechanism output",
            file=sys.stderr,
        )
        return 2
    kwargs = session_kwargs(args)
    noise = choose_noise(args, kwargs)
    columns = FEATURE_SETS[args.features]
    ledger = ledger_folder(args, "dp_model_release")
    private, (x_train, x_test, y_train, y_test) = deal_rows(
        names, args.rows, ledger, (args.budget_epsilon, args.budget_delta)
    )
    n_rows = len(y_train)
    config = recipe(args, n_rows)
    draws = 1 if noise == "dealer" else len(names)
    frac_bits = args.frac_bits or 16
    if args.mechanism == "objective" and args.frac_bits is None:  # as many as the range allows
        frac_bits = objective_frac_bits(
            config,
            n_rows=n_rows,
            n_features=len(columns),
            clip_norm=args.clip_norm,
            epsilon=args.epsilon,
            protocol=get_protocol(args.protocol),
            draws=draws,
        )
    fixed_point = FixedPoint(frac_bits=frac_bits)
    # The public analysis (every hospital computes the same from public numbers).
    analysis: Any
    if args.mechanism == "objective":
        analysis = objective_privacy(
            config,
            n_rows=n_rows,
            n_features=len(columns),
            clip_norm=args.clip_norm,
            epsilon=args.epsilon,
            fixed_point=fixed_point,
            gap_fraction=args.gap_fraction,
            draws=draws,
            steps=args.steps,
        )
        mechanism: Any = analysis.mechanism
        shape, failure = (2, mechanism.dim), analysis.failure_delta
    else:
        mechanism, analysis = model_release_plan(
            config,
            n_rows=n_rows,
            n_features=len(columns),
            clip_norm=args.clip_norm,
            epsilon=args.epsilon,
            delta=args.delta,
            fixed_point=fixed_point,
        )
        shape, failure = (analysis.dim,), analysis.truncation_delta
    plan = plan_release(
        mechanism,
        shape=shape,
        frac_bits=frac_bits,
        n_parties=len(names),
        max_colluding=len(names) - 1,
        noise=noise,  # type: ignore[arg-type]
        failure_delta=failure,
    )
    print(
        f"hospitals: {', '.join(names)} ({n_rows} training rows, {len(columns)} features: "
        f"{args.features}, {args.scaling} scaling) | protocol {args.protocol} | noise {noise}"
    )
    print(
        f"recipe: full batch, learning rate {config.learning_rate:.4g}, l2 {config.l2:.4g} "
        f"(intercept too), sigmoid {args.sigmoid}, rows clipped to R = {args.clip_norm:g}, "
        f"{frac_bits} fractional bits"
    )
    for line in describe(args, mechanism, analysis, plan):
        print(line)
    print(f"privacy ledgers: {ledger}/<hospital> | starting ...", flush=True)
    setup = {
        "config": config,
        "privacy": analysis if args.mechanism == "objective" else None,
        "mechanism": args.mechanism,
        "columns": columns,
        "scaling": args.scaling,
        "frac_bits": frac_bits,
        "clip_norm": args.clip_norm,
        "epsilon": args.epsilon,
        "delta": args.delta,
        "gap_fraction": args.gap_fraction,
        "noise": noise,
        "compare": not args.no_compare,
    }
    started = time.perf_counter()
    try:
        with Session(names, private=private, fixed_point=fixed_point, **kwargs) as session:
            print(f"session ready in {time.perf_counter() - started:.1f} s", flush=True)
            result = session.run(release_program, setup)
    except PartyFailedError as exc:
        if "BudgetExceededError" in exc.cause:
            print(f"\nREFUSED by {exc.party}: {exc.cause}")
            print("nothing was revealed and no ledger was charged for this release")
            return REFUSED
        raise
    first = result.outputs[names[0]]
    released: LinearModel = first["released"]
    # Plaintext checks (a trusted third party with all rows): the same recipe, and sklearn.
    trained = analysis.config if args.mechanism == "objective" else config
    reference = "piecewise" if args.sigmoid == "piecewise" else "exact"
    plain = train_plain(prepared(x_train, setup), y_train, trained, sigmoid_method=reference)
    prepared_test = prepared(x_test, setup)
    plain_accuracy = plain.accuracy(prepared_test, y_test)
    sk = sklearn_accuracy(x_train, y_train, x_test, y_test)
    released_check = released.accuracy(prepared_test, y_test)
    agree = all(np.array_equal(result.outputs[n]["released"].coef, released.coef) for n in names)
    print(f"\n{'test accuracy (' + str(len(y_test)) + ' held-out patients)':<52} {'':>8}")
    label = f"released model, epsilon={args.epsilon:g} (DP, noisy weights)"
    print(f"{label:<52} {first['released_accuracy']:>8.4f}")
    if first["private_accuracy"] is not None:
        label = "non-private secure model, same recipe (comparison)"
        print(f"{label:<52} {first['private_accuracy']:>8.4f}")
    print(f"{'plaintext, same recipe, no noise':<52} {plain_accuracy:>8.4f}")
    print(f"{'scikit-learn LogisticRegression (standardised, C=1)':<52} {sk:>8.4f}")
    print(f"\n{accuracy_table()}")
    print("\nprivacy ledgers (each hospital's own data set):")
    for name in names:
        print(format_ledger_status(name, result.outputs[name]["ledger"]))
    slowest = max(result.outputs[n]["fit_seconds"] for n in names)
    print(f"\nfit {slowest:.3f} s (slowest hospital); all hospitals got the same model: {agree}")
    ok = agree and math.isclose(released_check, first["released_accuracy"], abs_tol=1e-9)
    print("OK" if ok else "MISMATCH")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(run())
