"""Three hospitals train one logistic-regression model on their patients without pooling records.

Data: scikit-learn's bundled Wisconsin breast-cancer set (569 tumours x 30 features, label
malignant/benign; no download), split once into training and test rows (80/20, stratified, fixed
seed), and both parts dealt out by rows to the hospitals: a horizontal partition, every
hospital holds complete records of its own patients.

Inside the parties (each hospital's actor sees only its own rows):
  1. joint standardisation: secure sums of each hospital's column sums and sums of squares;
     the joint mean and standard deviation of every feature are revealed; each hospital
     standardises its own rows;
  2. the rows and labels are secret-shared and the model is trained on shares: gradient descent
     on the mean logistic loss, 10 epochs full batch, learning rate 1.0, with the chosen sigmoid
     approximation (`--sigmoid`; see mpc/ml/sigmoid.py);
  3. the trained weights are revealed to every hospital, each one scores its own test patients
     and the numbers of correct predictions are summed securely.
Revealed, and so learned by every hospital: the row counts, the joint mean and standard deviation
of each feature, the model's weights and the number of correctly classified test patients.
Nothing else. The driver prints the secure result beside the plaintext run of the same recipe and
scikit-learn's LogisticRegression (computed only for checking), the training time and the
rounds and bytes each hospital sent.

Run:  mpc run scenarios/hospitals_logreg.py          (or: python scenarios/hospitals_logreg.py)
      options: --sigmoid accurate|accurate-clamped|piecewise|poly --epochs N --rows N (subsample
      the training rows) plus the session options (--runtime local --allow-insecure, ...).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mpc.ml import (
    TRAINING_KINDS,
    LinearModel,
    LogisticRegression,
    Standardizer,
    train_plain,
)
from mpc.ml.data import deal_breast_cancer_rows
from mpc.ml.sigmoid import SIGMOIDS
from mpc.program import PartyContext
from mpc.scenario import add_session_options, one_line_errors, party_names, session_kwargs
from mpc.session import Session
from mpc.stats import PartyStats

HOSPITALS = ["north", "south", "east", "west", "central"]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Three hospitals train a joint logistic model")
    add_session_options(parser, default_parties=3)
    parser.add_argument("--sigmoid", default="accurate-clamped", choices=SIGMOIDS)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--learning-rate", type=float, default=1.0)
    parser.add_argument("--l2", type=float, default=0.0)
    parser.add_argument("--batch-size", type=int, default=None, help="default: full batch")
    parser.add_argument(
        "--rows", type=int, default=None, help="use only this many training rows (smoke tests)"
    )
    return parser.parse_args(argv)


def hospitals_program(ctx: PartyContext, config: LogisticRegression) -> dict[str, Any]:
    """The SPMD program: runs at every hospital, on its own rows only."""
    started = time.perf_counter()
    trained = train_and_score(ctx, config, ctx.private)
    weights = trained["weights"]
    total = trained["correct_of_total"]
    return {
        "weights": LinearModel(weights[:-1], float(weights[-1])),
        "accuracy": float(total[0]) / float(total[1]),
        "fit_seconds": time.perf_counter() - started,
        "history": trained["history"],
    }


def train_and_score(
    ctx: PartyContext, config: LogisticRegression, mine: Mapping[str, np.ndarray]
) -> dict[str, Any]:
    """Train on every hospital's rows, reveal the weights (coefficients, then intercept), and
    count correct test predictions over all hospitals (revealed as [correct, total])."""
    data = config.share_horizontal(ctx, mine["x_train"], mine["y_train"])
    model = config.fit(ctx, data)
    weights = ctx.reveal(model.weights)
    assert weights is not None and data.standardizer is not None
    plain = LinearModel(weights[:-1], float(weights[-1]))
    correct = int(
        np.sum(plain.predict(data.standardizer.transform(mine["x_test"])) == mine["y_test"])
    )
    counts = [
        ctx.input(
            name, np.array([correct, len(mine["y_test"])]) if ctx.me == name else None, kind="int"
        )
        for name in ctx.parties
    ]
    total = ctx.reveal(ctx.sum(counts))
    return {"weights": weights, "correct_of_total": total, "history": model.history}


# ---- across organisations (mpc party serve; docs/deploy.md) --------------------------------------


#: What a starter may choose across organisations, and the bounds every hospital enforces. The
#: model is revealed without noise, so the recipe must keep it an aggregate over all rows: full
#: batches only (with mini-batches a batch size of n-1 leaves a last batch of one row, and two
#: runs' difference is that row), and a step that does not forget all but the last update
#: (learning_rate * l2 <= MAX_DECAY; at 1 the weights are the last gradient alone).
RECIPE = ("sigmoid", "epochs", "learning_rate", "l2", "batch_size")
MAX_EPOCHS = 50
MAX_DECAY = 0.5


def public_args(argv: Sequence[str]) -> dict[str, Any]:
    """The training recipe from the command line: the run's public arguments."""
    args = parse_args(argv)
    return accept_args({key: getattr(args, key) for key in RECIPE})


def accept_args(args: Mapping[str, Any]) -> dict[str, Any]:
    """Every hospital's check of a recipe chosen by whoever starts the run (ValueError)."""
    if set(args) != set(RECIPE):
        raise ValueError(f"the recipe has exactly the keys {RECIPE}, got {sorted(args)}")
    sigmoid, epochs, rate, l2, batch = (args[k] for k in RECIPE)
    if sigmoid not in SIGMOIDS:
        raise ValueError(f"sigmoid must be one of {SIGMOIDS}, got {sigmoid!r}")
    if type(epochs) is not int or not 1 <= epochs <= MAX_EPOCHS:
        raise ValueError(f"epochs must be an int in [1, {MAX_EPOCHS}], got {epochs!r}")
    for name, value in (("learning_rate", rate), ("l2", l2)):
        if type(value) not in (int, float) or not 0 <= value <= 10:
            raise ValueError(f"{name} must be a number in [0, 10], got {value!r}")
    if rate <= 0 or rate * l2 > MAX_DECAY:
        raise ValueError(
            f"learning_rate must be > 0 and learning_rate * l2 <= {MAX_DECAY} (got {rate} * "
            f"{l2}): a larger decay makes the revealed model the last batch's gradient"
        )
    if batch is not None:
        raise ValueError(
            f"across organisations training is full batch (batch_size None), got {batch!r}: "
            "a small (or last) batch makes the revealed model reveal few rows"
        )
    return {k: args[k] for k in RECIPE}


def party_program(ctx: PartyContext, args: Mapping[str, Any]) -> dict[str, Any]:
    """Each hospital's rows come from the file its policy names as `rows` under [data]
    (`write_rows` makes them: arrays x_train, y_train, x_test, y_test)."""
    with np.load(ctx.private["rows"]) as rows:
        mine = {k: rows[k] for k in ("x_train", "y_train", "x_test", "y_test")}
    trained = train_and_score(ctx, LogisticRegression(**args), mine)
    return {"weights": trained["weights"], "correct_of_total": trained["correct_of_total"]}


def report(output: Mapping[str, np.ndarray], args: Mapping[str, Any]) -> str:
    correct, total = (int(v) for v in output["correct_of_total"])
    weights = output["weights"]
    return (
        f"joint model ({args['sigmoid']} sigmoid, {args['epochs']} epochs): test accuracy "
        f"{correct}/{total} = {correct / total:.4f}; intercept {weights[-1]:+.4f}, "
        f"largest |coefficient| {np.max(np.abs(weights[:-1])):.4f}"
    )


def write_rows(names: Sequence[str], folder: Path, rows: int | None = None) -> dict[str, Path]:
    """One .npz of each hospital's rows (the scenario's split), for its policy's [data]."""
    private, _ = deal_breast_cancer_rows(names, rows)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, mine in private.items():
        paths[name] = folder / f"{name}-rows.npz"
        np.savez(paths[name], **mine)
    return paths


def training_cost(stats: Mapping[str, PartyStats]) -> dict[str, tuple[int, int]]:
    """Rounds and bytes sent per party in the training operations only."""
    out = {}
    for party, party_stats in stats.items():
        rounds = sum(s.rounds for k, s in party_stats.by_kind.items() if k in TRAINING_KINDS)
        sent = sum(s.bytes_sent for k, s in party_stats.by_kind.items() if k in TRAINING_KINDS)
        out[party] = (rounds, sent)
    return out


def sklearn_accuracy(
    x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray
) -> float:
    try:
        from sklearn.linear_model import LogisticRegression as SkLogisticRegression
    except ImportError:  # pragma: no cover - sklearn ships with the dev environment
        return float("nan")
    model = SkLogisticRegression(max_iter=1000).fit(x_train, y_train)
    return float(model.score(x_test, y_test))


@one_line_errors
def run(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    names = party_names(args, HOSPITALS)
    if names is None:
        return 2
    config = LogisticRegression(
        learning_rate=args.learning_rate,
        epochs=args.epochs,
        l2=args.l2,
        batch_size=args.batch_size,
        sigmoid=args.sigmoid,
    )
    private, (x_train, x_test, y_train, y_test) = deal_breast_cancer_rows(names, args.rows)
    rows = ", ".join(f"{n} {len(p['y_train'])}+{len(p['y_test'])}" for n, p in private.items())
    print(
        f"hospitals (train+test rows): {rows} | protocol {args.protocol} | sigmoid {args.sigmoid}"
    )
    print(
        f"recipe: {config.epochs} epochs, learning rate {config.learning_rate:g}, "
        f"batch {config.batch_size or 'full'}, l2 {config.l2:g} | starting ...",
        flush=True,
    )
    started = time.perf_counter()
    with Session(names, private=private, **session_kwargs(args)) as session:
        print(
            f"session ready in {time.perf_counter() - started:.1f} s "
            f"(transport {session.transport}, dealer {session.dealer_kind})",
            flush=True,
        )
        result = session.run(hospitals_program, config)
    outputs = result.outputs
    first = outputs[names[0]]
    for record in first["history"]:
        print(f"  {record}")
    secure: LinearModel = first["weights"]
    # Plaintext checks (a trusted third party with all rows): the same recipe, and sklearn.
    scaler = Standardizer.fit(x_train)
    train, test = scaler.transform(x_train), scaler.transform(x_test)
    reference_sigmoid = "exact" if args.sigmoid.startswith("accurate") else args.sigmoid
    plain_same = train_plain(train, y_train, config, sigmoid_method=reference_sigmoid)
    plain_exact = train_plain(train, y_train, config)
    plain_seconds = _time_plain(train, y_train, config, reference_sigmoid)
    same_acc = plain_same.accuracy(test, y_test)
    exact_acc = plain_exact.accuracy(test, y_test)
    sk_acc = sklearn_accuracy(train, y_train, test, y_test)
    diff_same = secure.max_difference(plain_same)
    diff_exact = secure.max_difference(plain_exact)
    agree = all(outputs[n]["accuracy"] == first["accuracy"] for n in names)
    fit_seconds = max(outputs[n]["fit_seconds"] for n in names)
    print(f"\n{'test accuracy':<44} {'':>8}")
    print(f"{'secure (MPC), ' + args.sigmoid:<44} {first['accuracy']:>8.4f}")
    print(f"{'plaintext, same recipe (' + reference_sigmoid + ' sigmoid)':<44} {same_acc:>8.4f}")
    if reference_sigmoid != "exact":
        print(f"{'plaintext, same recipe, exact sigmoid':<44} {exact_acc:>8.4f}")
    print(f"{'scikit-learn LogisticRegression (C=1, lbfgs)':<44} {sk_acc:>8.4f}")
    print(
        f"\nmax |w_secure - w_plain|: {diff_same:.2e} (same recipe), "
        f"{diff_exact:.2e} (exact sigmoid)"
    )
    print(
        f"training time: {fit_seconds:.3f} s secure (slowest hospital), "
        f"{plain_seconds * 1e3:.2f} ms plaintext numpy"
    )
    print(f"all hospitals got the same result: {agree}")
    print("\ncost per hospital (training only):")
    for party, (rounds, sent) in training_cost(result.stats).items():
        print(f"  {party:<10} {rounds:>6} rounds {sent / 1e6:>10.2f} MB sent")
    print("\ncost per party, every operation:\n" + result.report())
    ok = agree and abs(first["accuracy"] - same_acc) <= 0.005 and diff_same <= 1e-2
    print("OK" if ok else "MISMATCH")
    return 0 if ok else 1


def _time_plain(x: np.ndarray, y: np.ndarray, config: LogisticRegression, method: str) -> float:
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        train_plain(x, y, config, sigmoid_method=method)
        best = min(best, time.perf_counter() - start)
    return best


if __name__ == "__main__":
    sys.exit(run())
