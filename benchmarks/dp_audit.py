"""Privacy audit of the DP release of the joint logistic-regression model (breast cancer).

What it does (mpc/dp/audit.py has the method and its references):
1. The recipe of scenarios/dp_model_release.py: breast cancer (455 training rows, 30 features
   scaled with public reference ranges and clipped to R = 2), 10 epochs full batch, l2 = 0.03 on
   every coordinate, piecewise sigmoid; output perturbation with the pure-epsilon CMS vector
   noise (or, with --delta > 0, the discrete Gaussian), calibrated to the sensitivity of the
   secure recipe (fixed-point slack included), one full draw per release (dealer noise).
2. A canary pair of neighbouring data sets (one row replaced, placed to move the weights most)
   and, for each epsilon of the sweep (inf = no noise), --trials releases of the model trained
   with the canary and as many without it; the loss-threshold membership attack on them:
   attack advantage (TPR - FPR) and the empirical epsilon lower bound (Clopper-Pearson, 95%),
   each on trials not used to pick the threshold; and the test accuracy of releases of the
   model trained on the real rows.
   The sweep trains in float64 with the same recipe and adds the same mechanism's noise (the
   training is deterministic, so each trial is one noise draw): that keeps thousands of trials
   cheap. It is checked against --secure-runs genuinely secure releases (3 in-process parties,
   additive sharing, dealer noise shares) at epsilon = --secure-epsilon.
3. Mutations, to show that the audit can fail: the same release with half the noise (the
   advantage must rise) and with no noise (the lower bound must exceed the claimed epsilon).
4. The stronger attack (mpc/dp/audit_pair.py): a worst-case neighbouring pair the auditor
   crafts (455 rows; the canary alone in feature space, at the clipping norm, spread over all
   features) and a canary row in the real data, --pair-trials releases per world and claimed
   epsilon, and the likelihood-ratio test: the epsilon lower bound with its confidence, next to
   the loss attack's and the pair's ceiling (the most any test can show on it). Then the same
   pair against noise 1/sqrt(31) too small (the L2 bound used as the L1 bound) and, at the same
   trials, the loss attack against that noise; secure releases of the pair check the simulation.

Security note: measurement only, on public data; the secure runs use an insecure in-process
dealer and reveal un-noised weights for comparison, which a deployment never does.

Run: python benchmarks/dp_audit.py [--trials 4000] [--epsilons 0.1 0.5 1 2 5 10 inf]
     [--pair-trials 50000] (about 5 minutes on 2 cores with the defaults)
Writes benchmarks/results/dp_audit.json and dp_audit.png; prints tables.
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

from mpc.bench import progress, write_results
from mpc.dp.audit import AuditPoint, audit_model_release, secure_check, secure_release_accuracy
from mpc.dp.audit_pair import (
    PairAuditPoint,
    audit_pair,
    crafted_pair,
    data_canary_pair,
    secure_pair_check,
)
from mpc.dp.release import max_learning_rate, prepare_rows
from mpc.ml import LogisticRegression, Standardizer, train_plain
from mpc.ml.data import breast_cancer_split
from mpc.scenario import load_script

HERE = Path(__file__).resolve().parent
SCENARIO = HERE.parent / "scenarios" / "dp_model_release.py"
DEFAULT_EPSILONS = ("0.1", "0.5", "1", "2", "5", "10", "inf")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epsilons", nargs="+", default=list(DEFAULT_EPSILONS))
    parser.add_argument("--delta", type=float, default=0.0, help="> 0: discrete Gaussian")
    parser.add_argument("--trials", type=int, default=4000, help="releases per world and epsilon")
    parser.add_argument("--features", default="all", choices=["all", "worst"])
    parser.add_argument("--clip-norm", type=float, default=2.0)
    parser.add_argument("--l2", type=float, default=0.03)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--secure-runs", type=int, default=3)
    parser.add_argument("--secure-epsilon", type=float, default=1.0)
    parser.add_argument("--accuracy-epsilons", nargs="+", type=float, default=[0.1, 1.0, 10.0])
    parser.add_argument("--accuracy-runs", type=int, default=10, help="secure releases per epsilon")
    parser.add_argument("--mutation-epsilons", nargs="+", type=float, default=[0.5, 5.0])
    parser.add_argument(
        "--pair-trials", type=int, default=50000, help="worst-case pair: releases per world"
    )
    parser.add_argument(
        "--pair-epsilons",
        nargs="+",
        type=float,
        default=None,
        help="claimed epsilons of the pair audit (default: the finite --epsilons)",
    )
    parser.add_argument("--pair-mutation-epsilons", nargs="+", type=float, default=[1.0, 2.0, 4.0])
    parser.add_argument("--out", default=str(HERE / "results" / "dp_audit.json"))
    parser.add_argument("--plot", default=str(HERE / "results" / "dp_audit.png"))
    return parser.parse_args(argv)


def table(points: Sequence[AuditPoint]) -> str:
    head = (
        f"{'epsilon':>8} {'advantage':>10} {'eps lower':>10} {'FPR':>7} {'FNR':>7} {'accuracy':>15}"
    )
    lines = [head]
    for p in points:
        eps = "inf" if math.isinf(p.epsilon) else f"{p.epsilon:g}"
        flag = "  VIOLATED" if p.violated else ""
        lines.append(
            f"{eps:>8} {p.advantage:>10.3f} {p.epsilon_lower:>10.3f} {p.fpr:>7.3f} "
            f"{p.fnr:>7.3f} {p.accuracy_mean:>8.3f} ± {p.accuracy_std:.3f}{flag}"
        )
    return "\n".join(lines)


def pair_table(
    claims: Sequence[float],
    old: Sequence[AuditPoint],
    same: Sequence[PairAuditPoint],
    columns: Sequence[Sequence[PairAuditPoint]],
) -> str:
    """Markdown: claimed ε, the loss attack's bound, the worst-case pair's at the same trials,
    then each pair of `columns` at its own trials with the pair's ceiling."""
    by_eps = {p.epsilon: p for p in old}
    head = ["claimed ε", f"loss attack ({old[0].trials if old else '-'} trials)"]
    head.append(f"worst-case pair ({same[0].trials} trials)")
    for col in columns:
        head += [f"{col[0].pair} ({col[0].trials} trials)", "its ceiling"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for i, eps in enumerate(claims):
        row = [f"{eps:g}", f"{by_eps[eps].epsilon_lower:.2f}" if eps in by_eps else "-"]
        row.append(f"{same[i].epsilon_lower:.2f}")
        for col in columns:
            flag = " VIOLATED" if col[i].violated else ""
            row += [f"{col[i].epsilon_lower:.2f}{flag}", f"{col[i].ceiling:.2f}"]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def plot(points: Sequence[AuditPoint], extra: dict[str, Any], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    finite = [p.epsilon for p in points if not math.isinf(p.epsilon)]
    inf_x = max(finite) * 4 if finite else 1.0
    xs = [inf_x if math.isinf(p.epsilon) else p.epsilon for p in points]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    acc = [p.accuracy_mean for p in points]
    err = [p.accuracy_std for p in points]
    left.errorbar(xs, acc, yerr=err, marker="o", color="tab:blue", label="released model accuracy")
    left.axhline(extra["sklearn_accuracy"], color="tab:gray", ls=":", label="scikit-learn")
    left.axhline(
        extra["plain_accuracy"], color="tab:blue", ls="--", lw=0.8, label="same recipe, no noise"
    )
    left.set_xscale("log")
    left.set_xlabel("epsilon (rightmost point: no noise)")
    left.set_ylabel("test accuracy")
    left.set_ylim(0.3, 1.0)
    twin = left.twinx()
    twin.plot(
        xs, [p.advantage for p in points], marker="s", color="tab:red", label="attack advantage"
    )
    twin.set_ylabel("membership attack advantage (TPR - FPR)", color="tab:red")
    twin.set_ylim(-0.05, 1.05)
    lines = left.get_legend_handles_labels()
    more = twin.get_legend_handles_labels()
    left.legend(lines[0] + more[0], lines[1] + more[1], loc="center right", fontsize=8)
    left.set_title("Accuracy and attack advantage vs epsilon")
    right.plot(
        finite,
        [p.epsilon_lower for p in points if not math.isinf(p.epsilon)],
        marker="o",
        label="loss attack, lower bound (95%)",
    )
    right.plot(finite, finite, color="tab:gray", ls="--", label="claimed epsilon")
    for name, pts in extra.get("pairs", {}).items():
        right.plot(
            [p["epsilon"] for p in pts],
            [p["epsilon_lower"] for p in pts],
            marker="^",
            label=f"{name}, likelihood ratio (95%)",
        )
    for name, pts in extra.get("mutations", {}).items():
        right.scatter(
            [p["epsilon"] for p in pts],
            [p["epsilon_lower"] for p in pts],
            marker="x",
            label=f"mutation: {name}",
        )
    right.set_xscale("log")
    right.set_xlabel("claimed epsilon")
    right.set_ylabel("epsilon")
    right.legend(fontsize=8)
    right.set_title("Empirical epsilon lower bound")
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    scenario = load_script(SCENARIO)
    epsilons = [math.inf if e == "inf" else float(e) for e in args.epsilons]
    columns = scenario.FEATURE_SETS[args.features]
    center, scale = scenario.public_scaling(columns)
    r = args.clip_norm
    x_train, x_test, y_train, y_test = breast_cancer_split()
    x = prepare_rows(x_train[:, columns], clip_norm=r, center=center, scale=scale)
    xt = prepare_rows(x_test[:, columns], clip_norm=r, center=center, scale=scale)
    config = LogisticRegression(
        learning_rate=max_learning_rate(clip_norm=r, l2=args.l2),
        epochs=args.epochs,
        l2=args.l2,
        sigmoid="piecewise",
        standardize=False,
        penalize_intercept=True,
        feature_limit=r,
    )
    started = time.perf_counter()
    progress(f"sweep over {len(epsilons)} epsilons, {args.trials} trials per world")
    audit = audit_model_release(
        x,
        y_train,
        xt,
        y_test,
        config=config,
        clip_norm=r,
        epsilons=epsilons,
        delta=args.delta,
        trials=args.trials,
    )
    sweep_seconds = time.perf_counter() - started
    mutations: dict[str, list[dict[str, Any]]] = {}
    for name, factor in (("half noise", 0.5), ("no noise", 0.0)):
        progress(f"mutation: {name}")
        mutated = audit_model_release(
            x,
            y_train,
            xt,
            y_test,
            config=config,
            clip_norm=r,
            epsilons=args.mutation_epsilons,
            delta=args.delta,
            trials=args.trials,
            noise_scale=factor,
            canary=audit.canary,
        )
        mutations[name] = [p.to_json() for p in mutated.points]
    claims = args.pair_epsilons or [e for e in epsilons if not math.isinf(e)]
    worst = crafted_pair(x.shape[0], x.shape[1], config, r)
    in_data = data_canary_pair(x, y_train, config, r)
    progress(f"worst-case pair at {args.trials} trials per world (the loss attack's budget)")
    same = audit_pair(
        worst, config=config, clip_norm=r, epsilons=claims, delta=args.delta, trials=args.trials
    )
    pair_points: dict[str, list[PairAuditPoint]] = {}
    for pair in (worst, in_data):
        progress(f"{pair.name}: {args.pair_trials} trials per world and epsilon")
        pair_points[pair.name] = audit_pair(
            pair,
            config=config,
            clip_norm=r,
            epsilons=claims,
            delta=args.delta,
            trials=args.pair_trials,
            progress=progress,
        )
    shrink = 1.0 / math.sqrt(x.shape[1] + 1)
    progress(f"mutation: noise x {shrink:.3f} (the L2 bound used as the L1 bound)")
    pair_mutated = audit_pair(
        worst,
        config=config,
        clip_norm=r,
        epsilons=args.pair_mutation_epsilons,
        delta=args.delta,
        trials=args.pair_trials,
        noise_scale=shrink,
        progress=progress,
    )
    loss_mutated = audit_model_release(
        x,
        y_train,
        xt,
        y_test,
        config=config,
        clip_norm=r,
        epsilons=args.pair_mutation_epsilons,
        delta=args.delta,
        trials=args.pair_trials,
        noise_scale=shrink,
        canary=audit.canary,
    ).points
    pair_checks = []
    if args.secure_runs > 0:
        for pair in (worst, in_data):
            progress(f"{args.secure_runs} secure releases of {pair.name}")
            pair_checks.append(
                secure_pair_check(
                    pair,
                    config=config,
                    clip_norm=r,
                    epsilon=args.secure_epsilon,
                    delta=args.delta,
                    runs=args.secure_runs,
                )
            )
    check = None
    if args.secure_runs > 0:
        progress(f"{args.secure_runs} secure releases at epsilon {args.secure_epsilon:g}")
        check = secure_check(
            x,
            y_train,
            config=config,
            clip_norm=r,
            canary=audit.canary,
            epsilon=args.secure_epsilon,
            delta=args.delta,
            runs=args.secure_runs,
        )
    secure_accuracy: dict[str, list[float]] = {}
    if args.accuracy_runs > 0:
        for eps in [*args.accuracy_epsilons, math.inf]:
            runs = 1 if math.isinf(eps) else args.accuracy_runs
            progress(f"{runs} secure fit(s) and release(s) at epsilon {eps:g}")
            secure_accuracy["inf" if math.isinf(eps) else f"{eps:g}"] = secure_release_accuracy(
                x,
                y_train,
                xt,
                y_test,
                config=config,
                clip_norm=r,
                epsilon=eps,
                delta=args.delta,
                runs=runs,
            )
    scaler = Standardizer.fit(x_train)
    from sklearn.linear_model import LogisticRegression as SkLogisticRegression

    sk = SkLogisticRegression(max_iter=1000).fit(scaler.transform(x_train), y_train)
    sk_acc = float(sk.score(scaler.transform(x_test), y_test))
    plain = train_plain(x, y_train, config, sigmoid_method="piecewise")
    privacy = audit.privacy
    extra = {
        "plain_accuracy": plain.accuracy(xt, y_test),
        "sklearn_accuracy": sk_acc,
        "mutations": mutations,
        "pairs": {k: [p.to_json() for p in v] for k, v in pair_points.items()},
    }
    print(
        f"recipe: {args.features} features, R={r:g}, l2={args.l2:g}, {args.epochs} epochs, "
        f"learning rate {config.learning_rate:.4g}; sensitivity {privacy.total:.4f} "
        f"(fixed-point slack {privacy.sensitivity.fixed_point:.4f}); truncation delta "
        f"{privacy.truncation_delta:.2e} (not simulated)"
    )
    print(
        f"canary: moves the weights by {audit.canary.distance:.4f} = "
        f"{audit.canary_fraction:.0%} of the sensitivity bound"
    )
    print(f"no-noise accuracy {extra['plain_accuracy']:.4f}, scikit-learn {sk_acc:.4f}\n")
    print(table(audit.points))
    for name, pts in mutations.items():
        print(f"\nmutation: {name}")
        for p in pts:
            print(
                f"  claimed epsilon {p['epsilon']:g}: advantage {p['advantage']:.3f}, "
                f"lower bound {p['epsilon_lower']:.3f}{'  VIOLATED' if p['violated'] else ''}"
            )
    if secure_accuracy:
        print("\ntest accuracy of genuinely secure releases (3 parties, dealer noise):")
        for key, values in secure_accuracy.items():
            label = "non-private secure model" if key == "inf" else f"epsilon {key}"
            print(
                f"  {label:<28} {np.mean(values):.4f} ± {np.std(values):.4f} ({len(values)} run(s))"
            )
        print(f"  {'scikit-learn (standardised)':<28} {sk_acc:.4f}")
    bound = privacy.total
    print(
        f"\nstronger attack: likelihood-ratio test on neighbouring pairs (mpc/dp/audit_pair.py), "
        f"{same[0].confidence:.0%} confidence; weight gap of each pair, L2 and L1, as a "
        f"fraction of the sensitivity bound (L1: of sqrt(dim) x bound):"
    )
    for pair in (worst, in_data):
        print(
            f"  {pair.name}: {pair.gap('l2') / bound:.0%}, "
            f"{pair.gap('l1') / (math.sqrt(x.shape[1] + 1) * bound):.0%}"
        )
    print()
    print(pair_table(claims, audit.points, same, list(pair_points.values())))
    print(f"\nmutation: noise x {shrink:.3f} (as if the L2 bound were the L1 bound)")
    for p, q in zip(pair_mutated, loss_mutated, strict=True):
        print(
            f"  claimed epsilon {p.epsilon:g}: worst-case pair {p.epsilon_lower:.2f}"
            f"{'  VIOLATED' if p.violated else ''} (ceiling {p.ceiling:.2f}); loss attack "
            f"{q.epsilon_lower:.2f}{'  VIOLATED' if q.violated else ''} ({p.trials} trials each)"
        )
    for c, pair in zip(pair_checks, (worst, in_data), strict=False):
        print(
            f"secure releases of {pair.name} at epsilon {c.epsilon:g}: statistics inside the "
            f"simulated range {c.inside}; drift {c.drift:.2e} (allowed {c.drift_bound:.2e}): "
            f"{'OK' if c.ok else 'MISMATCH'}"
        )
    if check is not None:
        print(
            f"\nsecure releases at epsilon {check.epsilon:g}: attack scores {check.scores} "
            f"inside the simulated range {check.simulated_range}: {check.inside}; un-noised "
            f"secure weights within {check.drift:.2e} of the plain recipe (analysis allows "
            f"{check.drift_bound:.2e}): {'OK' if check.ok else 'MISMATCH'}"
        )
    results = {
        "recipe": {
            "features": args.features,
            "clip_norm": r,
            "l2": args.l2,
            "epochs": args.epochs,
            "learning_rate": config.learning_rate,
            "delta": args.delta,
            "trials_per_world": args.trials,
        },
        "sensitivity": {
            "total": privacy.total,
            "iterate": privacy.sensitivity.iterate,
            "fixed_point": privacy.sensitivity.fixed_point,
            "truncation_delta": privacy.truncation_delta,
        },
        "canary": {"distance": audit.canary.distance, "fraction_of_bound": audit.canary_fraction},
        "points": [p.to_json() for p in audit.points],
        **extra,
        "secure_check": None
        if check is None
        else {
            "epsilon": check.epsilon,
            "scores": check.scores,
            "inside": check.inside,
            "simulated_range": list(check.simulated_range),
            "drift": check.drift,
            "drift_bound": check.drift_bound,
            "ok": check.ok,
        },
        "secure_accuracy": secure_accuracy,
        "sweep_seconds": sweep_seconds,
        "pair_audit": {
            "gaps": {
                pair.name: {"l2": pair.gap("l2"), "l1": pair.gap("l1")} for pair in (worst, in_data)
            },
            "same_trials": [p.to_json() for p in same],
            "mutation_noise_scale": shrink,
            "mutation": [p.to_json() for p in pair_mutated],
            "mutation_loss_attack": [p.to_json() for p in loss_mutated],
            "secure_checks": [
                {"epsilon": c.epsilon, "inside": c.inside, "drift": c.drift, "ok": c.ok}
                for c in pair_checks
            ],
        },
    }
    path = write_results(results, args.out)
    plot(audit.points, extra, args.plot)
    print(f"\nwrote {path} and {args.plot}")
    violated = any(p.violated for p in audit.points) or any(
        p.violated for pts in [same, *pair_points.values()] for p in pts
    )
    broken = not all(c.ok for c in pair_checks)
    return 1 if violated or broken or (check is not None and not check.ok) else 0


if __name__ == "__main__":
    sys.exit(main())
