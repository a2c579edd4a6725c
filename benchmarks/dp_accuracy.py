"""Accuracy of the DP model release beside diffprivlib's LogisticRegression (breast cancer).

For each epsilon, --runs genuinely secure releases (3 in-process parties, additive sharing, dealer
noise: one draw) of the recipe of scenarios/dp_model_release.py: objective perturbation, rows
log-scaled with public ranges and clipped to R = 2, the L2 penalty of the scenario (--l2 auto:
0.03, or 0.03/sqrt(epsilon) above 1; or a number), 23 fractional bits.  Beside them diffprivlib
0.6.6's LogisticRegression on the issue's setting (rows standardised, data_norm R = 2,
C = 1/(n lambda), lambda = 0.03, random_state 0..runs-1): in this interpreter if diffprivlib
imports, else in --diffprivlib-python (an interpreter that has it, e.g. a venv with
scikit-learn 1.6; diffprivlib 0.6.6 does not import with scikit-learn 1.9), else the figures of
issue 16 (labelled so).

Security note: measurement only, on public data, with an insecure in-process dealer.

Run: python benchmarks/dp_accuracy.py [--runs 30] [--epsilons 0.1 1 10] [--l2 auto 0.03]
Writes benchmarks/results/dp_accuracy.json (the scenario prints its table) and prints it.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mpc.bench import progress, write_results
from mpc.dp.audit import _local_parties
from mpc.dp.objective import release_objective_model
from mpc.encoding import FixedPoint
from mpc.ml.data import breast_cancer_split
from mpc.program import PartyContext
from mpc.scenario import load_script

HERE = Path(__file__).resolve().parent
SCENARIO = HERE.parent / "scenarios" / "dp_model_release.py"
PARTIES = ("north", "south", "east")

#: diffprivlib 0.6.6, 30 fits per epsilon, as reported in issue 16 (used when it cannot run).
ISSUE_FIGURES = {0.1: (0.488, 0.125), 1.0: (0.880, 0.044), 10.0: (0.954, 0.009)}

#: Runs diffprivlib in another interpreter: reads {"epsilons", "runs", "l2", "clip_norm"} on
#: stdin, prints {"epsilon": [accuracies]} as JSON.
DIFFPRIVLIB_SCRIPT = """
import json, sys, warnings
import numpy as np
from diffprivlib.models import LogisticRegression
from sklearn.datasets import load_breast_cancer
from sklearn.model_selection import train_test_split
warnings.filterwarnings("ignore")
job = json.load(sys.stdin)
x, y = load_breast_cancer(return_X_y=True)
x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.2, random_state=0,
                                                    stratify=y)
mean, std = x_train.mean(axis=0), x_train.std(axis=0)
a, b = (x_train - mean) / std, (x_test - mean) / std
c = 1.0 / (len(y_train) * job["l2"])
out = {}
for eps in job["epsilons"]:
    out[str(eps)] = [
        float(LogisticRegression(epsilon=eps, data_norm=job["clip_norm"], C=c,
                                 random_state=seed).fit(a, y_train).score(b, y_test))
        for seed in range(job["runs"])
    ]
print(json.dumps(out))
"""


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epsilons", nargs="+", type=float, default=[0.1, 1.0, 10.0])
    parser.add_argument("--runs", type=int, default=30, help="secure releases per epsilon")
    parser.add_argument("--l2", nargs="+", default=["auto"], help="'auto' and/or numbers")
    parser.add_argument("--clip-norm", type=float, default=2.0)
    parser.add_argument("--frac-bits", type=int, default=23)
    parser.add_argument("--diffprivlib-python", default=None, help="an interpreter with it")
    parser.add_argument("--out", default=str(HERE / "results" / "dp_accuracy.json"))
    return parser.parse_args(argv)


def diffprivlib_accuracies(args: argparse.Namespace) -> tuple[dict[float, list[float]], str]:
    """diffprivlib's accuracies per epsilon and where they come from."""
    job = json.dumps(
        {"epsilons": args.epsilons, "runs": args.runs, "l2": 0.03, "clip_norm": args.clip_norm}
    )
    interpreters = [sys.executable]
    if args.diffprivlib_python:
        interpreters.append(args.diffprivlib_python)
    for python in interpreters:
        done = subprocess.run(
            [python, "-c", DIFFPRIVLIB_SCRIPT], input=job, capture_output=True, text=True
        )
        if done.returncode == 0:
            version = subprocess.run(
                [
                    python,
                    "-c",
                    "import diffprivlib, sklearn; print(diffprivlib.__version__, "
                    "sklearn.__version__)",
                ],
                capture_output=True,
                text=True,
            ).stdout.split()
            found = json.loads(done.stdout)
            source = f"diffprivlib {version[0]} (scikit-learn {version[1]}), measured"
            return {float(k): v for k, v in found.items()}, source
    return {}, "diffprivlib 0.6.6: the figures of issue 16 (it could not run here)"


def secure_accuracies(
    args: argparse.Namespace, scenario: Any, epsilon: float, l2_setting: str
) -> tuple[list[float], dict[str, Any]]:
    """Test accuracies of args.runs secure releases at `epsilon`, and the recipe's numbers."""
    x_train, x_test, y_train, y_test = breast_cancer_split()
    options = ["--epsilon", str(epsilon), "--clip-norm", str(args.clip_norm)]
    if l2_setting != "auto":
        options += ["--l2", l2_setting]
    recipe_args = scenario.parse_args(options)
    config = scenario.recipe(recipe_args, len(y_train))
    fixed_point = FixedPoint(frac_bits=args.frac_bits)
    setup = {
        "columns": list(range(30)),
        "scaling": "log",
        "frac_bits": args.frac_bits,
        "clip_norm": args.clip_norm,
    }
    x = scenario.prepared(x_train, setup)
    xt = scenario.prepared(x_test, setup)
    local = _local_parties(x, y_train, PARTIES, fixed_point)

    def program(ctx: PartyContext) -> Any:
        data = config.share_horizontal(ctx, ctx.private["x"], ctx.private["y"])
        return release_objective_model(
            ctx,
            data,
            config,
            epsilon=epsilon,
            clip_norm=args.clip_norm,
            noise="dealer",
            accountant=None,
            to=PARTIES[0],
        )

    accuracies = []
    for run in range(args.runs):
        model = local.run(program)[PARTIES[0]].output
        accuracies.append(float(model.accuracy(xt, y_test)))
        if run % 10 == 9:
            progress(f"epsilon {epsilon:g}, l2 {l2_setting}: {run + 1} releases")
    return accuracies, {"l2": config.l2, "learning_rate": config.learning_rate}


def summary(values: Sequence[float]) -> str:
    return f"{np.mean(values):.3f} ± {np.std(values):.3f}" if values else "n/a"


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    scenario = load_script(SCENARIO)
    started = time.perf_counter()
    progress("diffprivlib")
    reference, source = diffprivlib_accuracies(args)
    rows: dict[str, dict[str, Any]] = {}
    for setting in args.l2:
        rows[setting] = {}
        for epsilon in args.epsilons:
            progress(f"secure releases at epsilon {epsilon:g}, l2 {setting}")
            accuracies, recipe = secure_accuracies(args, scenario, epsilon, setting)
            rows[setting][str(epsilon)] = {"accuracies": accuracies, **recipe}
    head = "| epsilon | " + " | ".join(f"{e:g}" for e in args.epsilons) + " |"
    table = [head, "|---" * (len(args.epsilons) + 1) + "|"]
    cells = []
    for e in args.epsilons:
        if e in reference:
            cells.append(summary(reference[e]))
        else:
            mean, std = ISSUE_FIGURES.get(e, (math.nan, math.nan))
            cells.append(f"{mean:.3f} ± {std:.3f}")
    table.append(f"| {source.split(':')[0].split(' (')[0]} | " + " | ".join(cells) + " |")
    for per_eps in rows.values():
        lams = ", ".join(f"{per_eps[str(e)]['l2']:.3g}" for e in args.epsilons)
        name = f"mpc objective perturbation (l2 {lams})"
        values = [summary(per_eps[str(e)]["accuracies"]) for e in args.epsilons]
        table.append(f"| {name} | " + " | ".join(values) + " |")
    title = (
        f"test accuracy, mean ± std over {args.runs} releases per epsilon (breast cancer, "
        f"benchmarks/dp_accuracy.py; reference: {source})"
    )
    print(f"\n{title}\n" + "\n".join(table))
    document = {
        "title": title,
        "table": table,
        "runs": args.runs,
        "diffprivlib": {"source": source, "accuracies": {str(k): v for k, v in reference.items()}},
        "mpc": rows,
        "seconds": time.perf_counter() - started,
    }
    path = write_results(document, args.out)
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
