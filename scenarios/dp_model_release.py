"""Three hospitals train one logistic-regression model and release it with differential privacy.

Data: scikit-learn's bundled Wisconsin breast-cancer set (569 tumours x 30 features; no
download), split once into training and test rows (80/20, stratified, fixed seed) and dealt out
by rows to the hospitals (a horizontal partition), as in scenarios/hospitals_logreg.py.

What differs from the non-private scenario (docs/dp.md):
  * public scaling instead of data-dependent standardisation: each hospital maps every feature
    to about [-1, 1] with the *public* reference range of that feature (the minimum and maximum
    printed in the data set's published description, FEATURE_RANGES; in a deployment they come
    from a data dictionary or clinical reference ranges, not from the private rows) and clips
    each of its rows to L2 norm R (intercept included) before sharing (mpc.dp.prepare_rows);
  * L2 penalty on every coordinate (intercept too), full-batch gradient descent, the bounded
    piecewise sigmoid, a step size inside the contraction range: what the sensitivity analysis
    of mpc.dp.model_release covers;
  * the trained weights are never opened: the parties add noise to their shares (output
    perturbation, Chaudhuri, Monteleoni & Sarwate 2011; pure-epsilon vector noise by default,
    the discrete Gaussian with --delta > 0) and only the noisy weights are revealed;
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

Run:  mpc run scenarios/dp_model_release.py      (or: python scenarios/dp_model_release.py)
      options: --epsilon 1 --delta 0 --budget-epsilon 3 --budget-delta 2e-4 --ledger DIR
      --noise auto|dealer|distributed --features all|worst --clip-norm 2 --l2 0.03 --epochs 10
      --rows N, plus the session options (--runtime local --allow-insecure, ...).
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
from mpc.errors import PartyFailedError
from mpc.ml import LinearModel, LogisticRegression, Standardizer, train_plain
from mpc.ml.data import deal_breast_cancer_rows
from mpc.program import PartyContext, Secret
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


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Hospitals train a joint model and release it with differential privacy"
    )
    add_session_options(parser, default_parties=3)
    parser.add_argument("--epsilon", type=float, default=1.0, help="epsilon of this release")
    parser.add_argument(
        "--delta", type=float, default=0.0, help="0: pure-epsilon noise; > 0: discrete Gaussian"
    )
    parser.add_argument("--budget-epsilon", type=float, default=3.0, help="per hospital")
    parser.add_argument("--budget-delta", type=float, default=2e-4, help="per hospital")
    add_ledger_options(parser)
    parser.add_argument("--noise", default="auto", choices=["auto", "dealer", "distributed"])
    parser.add_argument("--features", default="all", choices=sorted(FEATURE_SETS))
    parser.add_argument("--clip-norm", type=float, default=2.0, help="row bound R")
    parser.add_argument("--l2", type=float, default=0.03)
    parser.add_argument("--epochs", type=int, default=10)
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


def _secure_count(ctx: PartyContext, local: np.ndarray) -> np.ndarray:
    parts = [ctx.input(name, local if ctx.me == name else None, kind="int") for name in ctx.parties]
    total = ctx.reveal(ctx.sum(parts))
    assert total is not None
    return total


def release_program(ctx: PartyContext, setup: dict[str, Any]) -> dict[str, Any]:
    """The SPMD program: runs at every hospital, on its own rows only."""
    mine = ctx.private
    config: LogisticRegression = setup["config"]
    columns, center, scale = setup["columns"], setup["center"], setup["scale"]
    clip = setup["clip_norm"]
    x = prepare_rows(mine["x_train"][:, columns], clip_norm=clip, center=center, scale=scale)
    data = config.share_horizontal(ctx, x, mine["y_train"])
    started = time.perf_counter()
    model = config.fit(ctx, data)
    fit_seconds = time.perf_counter() - started
    released = release_model(
        ctx,
        model,
        epsilon=setup["epsilon"],
        delta=setup["delta"],
        clip_norm=clip,
        noise=setup["noise"],
        label=f"joint model, epsilon={setup['epsilon']:g}",
    )
    assert released is not None  # revealed to every hospital
    x_test = prepare_rows(mine["x_test"][:, columns], clip_norm=clip, center=center, scale=scale)
    y_test = np.asarray(mine["y_test"], dtype=np.int64)
    correct = int(np.sum(released.predict(x_test) == y_test))
    released_counts = _secure_count(ctx, np.array([correct, len(y_test)]))
    private_accuracy = None
    if setup["compare"]:  # comparison only: one count about the non-private model
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


@one_line_errors
def run(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    names = party_names(args, HOSPITALS)
    if names is None:
        return 2
    kwargs = session_kwargs(args)
    noise = choose_noise(args, kwargs)
    columns = FEATURE_SETS[args.features]
    center, scale = public_scaling(columns)
    lr = args.learning_rate or max_learning_rate(
        clip_norm=args.clip_norm, l2=args.l2, sigmoid=args.sigmoid
    )
    config = LogisticRegression(
        learning_rate=lr,
        epochs=args.epochs,
        l2=args.l2,
        sigmoid=args.sigmoid,
        standardize=False,
        penalize_intercept=True,
        feature_limit=args.clip_norm,
    )
    ledger = ledger_folder(args, "dp_model_release")
    private, (x_train, x_test, y_train, y_test) = deal_rows(
        names, args.rows, ledger, (args.budget_epsilon, args.budget_delta)
    )
    n_rows = len(y_train)
    # The public analysis (every hospital computes the same from public numbers).
    mechanism, privacy = model_release_plan(
        config,
        n_rows=n_rows,
        n_features=len(columns),
        clip_norm=args.clip_norm,
        epsilon=args.epsilon,
        delta=args.delta,
    )
    plan = plan_release(
        mechanism,
        shape=(privacy.dim,),
        frac_bits=16,
        n_parties=len(names),
        max_colluding=len(names) - 1,
        noise=noise,  # type: ignore[arg-type]
        failure_delta=privacy.truncation_delta,
    )
    print(
        f"hospitals: {', '.join(names)} ({n_rows} training rows, {len(columns)} features: "
        f"{args.features}) | protocol {args.protocol} | noise {noise}"
    )
    print(
        f"recipe: {config.epochs} epochs full batch, learning rate {lr:.4g}, l2 {args.l2:g} "
        f"(intercept too), sigmoid {args.sigmoid}, rows clipped to R = {args.clip_norm:g}"
    )
    print(
        f"sensitivity {privacy.total:.4f} = {privacy.sensitivity.iterate:.4f} (gradient descent, "
        f"{privacy.sensitivity.steps} steps) + {privacy.sensitivity.fixed_point:.4f} "
        f"(fixed point); truncation-failure delta {privacy.truncation_delta:.2e}"
    )
    print(
        f"release: {type(mechanism).__name__}, costs epsilon={plan.cost.epsilon:g}, "
        f"delta={plan.cost.delta:.2e}; noise variance x{plan.variance_factor:g} ({noise})"
    )
    print(f"privacy ledgers: {ledger}/<hospital> | starting ...", flush=True)
    setup = {
        "config": config,
        "columns": columns,
        "center": center,
        "scale": scale,
        "clip_norm": args.clip_norm,
        "epsilon": args.epsilon,
        "delta": args.delta,
        "noise": noise,
        "compare": not args.no_compare,
    }
    started = time.perf_counter()
    try:
        with Session(names, private=private, **kwargs) as session:
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
    prepared = prepare_rows(
        x_train[:, columns], clip_norm=args.clip_norm, center=center, scale=scale
    )
    prepared_test = prepare_rows(
        x_test[:, columns], clip_norm=args.clip_norm, center=center, scale=scale
    )
    reference = "piecewise" if args.sigmoid == "piecewise" else "exact"
    plain = train_plain(prepared, y_train, config, sigmoid_method=reference)
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
