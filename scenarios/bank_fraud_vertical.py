"""A bank and a retailer train a fraud model over their joint customers without sharing columns.

Data (synthetic, fixed seed, plaintext generation only): the same customers, in the same row
order at both parties (the record linkage, e.g. a private set intersection of customer ids, is
assumed done). The bank holds transaction features and the fraud label; the retailer holds
purchase features: a vertical partition.
    bank:     log amount of the last card payment, payments in the last 24 h, share of foreign
              payments, share of night-time payments, account age in years; label: fraud (0/1)
    retailer: basket size, share of gift cards and electronics, distinct shipping addresses in
              90 days, days since the first purchase
Fraud depends on features of both parties, so neither can train a good model alone.

Inside the parties (each actor sees only its own columns):
  1. each party standardises its own columns locally (it holds all rows) and secret-shares them;
     the bank shares the labels; the row counts are checked to agree;
  2. logistic regression is trained on shares (`--sigmoid`, `--epochs`, learning rate 1.0, full
     batch);
  3. the test rows are shared the same way, the fraud probabilities are predicted on shares and
     revealed to the bank only, which scores them against its labels.
Revealed: row and column counts; the test-set probabilities (to the bank only); the model's
weights, here to both parties so that the driver can compare them with plaintext training (a
deployment would keep them shared for secure scoring or reveal each party's block to it).
Additional parties (`--parties 3` or more) hold no data and only help compute (e.g. a regulator:
with protocol shamir, an honest majority among three).

Run:  mpc run scenarios/bank_fraud_vertical.py     (or: python scenarios/bank_fraud_vertical.py)
      options: --sigmoid NAME --epochs N --rows N plus the session options.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from mpc.ml import (
    TRAINING_KINDS,
    LinearModel,
    LogisticRegression,
    Standardizer,
    train_plain,
)
from mpc.ml.sigmoid import SIGMOIDS
from mpc.program import PartyContext
from mpc.scenario import add_session_options, one_line_errors, party_names, session_kwargs
from mpc.session import Session

PARTIES = ["bank", "retailer", "regulator", "auditor", "ombudsman"]
OWNERS = ["bank", "retailer"]
BANK_COLUMNS = ["log_amount", "payments_24h", "foreign_share", "night_share", "account_years"]
RETAILER_COLUMNS = [
    "basket_size",
    "giftcard_electronics_share",
    "ship_addresses_90d",
    "days_since_first",
]
SEED = 20240917
TEST_FRACTION = 0.25


def make_data(rows: int = 6000, seed: int = SEED) -> dict[str, np.ndarray]:
    """Synthetic aligned customers: bank columns, retailer columns and the fraud label."""
    # Plaintext synthetic data only: a seeded generator so every run sees the same customers.
    gen = np.random.default_rng(seed)
    log_amount = gen.normal(3.8, 1.0, rows)
    payments = gen.poisson(2.0, rows).astype(np.float64)
    foreign = gen.beta(1.0, 12.0, rows)
    night = gen.beta(1.5, 8.0, rows)
    account_years = gen.gamma(2.0, 3.0, rows)
    basket = gen.poisson(3.0, rows).astype(np.float64) + 1.0
    giftcard = gen.beta(1.0, 6.0, rows)
    addresses = gen.poisson(0.4, rows).astype(np.float64) + 1.0
    days_first = gen.gamma(2.0, 400.0, rows)
    logit = (
        -5.0
        + 1.6 * (log_amount - 3.8)
        + 0.6 * payments
        + 14.0 * foreign
        + 7.0 * night
        - 0.3 * account_years
        + 12.0 * giftcard
        + 2.0 * (addresses - 1.0)
        - 0.003 * days_first
    )
    fraud = (gen.random(rows) < 1.0 / (1.0 + np.exp(-logit))).astype(np.int64)
    return {
        "bank": np.column_stack([log_amount, payments, foreign, night, account_years]),
        "retailer": np.column_stack([basket, giftcard, addresses, days_first]),
        "fraud": fraud,
    }


def split(rows: int) -> tuple[np.ndarray, np.ndarray]:
    """Public train/test row indices: the last TEST_FRACTION of the rows are the test set."""
    cut = round(rows * (1.0 - TEST_FRACTION))
    return np.arange(cut), np.arange(cut, rows)


def fraud_program(ctx: PartyContext, config: LogisticRegression) -> dict[str, Any]:
    """The SPMD program: the bank and the retailer input their own columns only."""
    mine = ctx.private
    own = mine.get("train")
    labels = mine.get("labels")
    data = config.share_vertical(ctx, own, label_owner="bank", y=labels, owners=OWNERS)
    started = time.perf_counter()
    model = config.fit(ctx, data)
    fit_seconds = time.perf_counter() - started
    test = config.share_vertical(
        ctx, mine.get("test"), label_owner=None, owners=OWNERS, standardizer=data.standardizer
    )
    proba = ctx.reveal(model.predict_proba(ctx, test), to="bank")
    out: dict[str, Any] = {"weights": model.reveal(), "fit_seconds": fit_seconds}
    if proba is not None:  # at the bank only
        predicted = (proba >= 0.5).astype(np.int64)
        truth = mine["test_labels"]
        out["accuracy"] = float(np.mean(predicted == truth))
        out["recall"] = float(np.sum((predicted == 1) & (truth == 1)) / max(1, np.sum(truth == 1)))
    return out


def plaintext(
    data: dict[str, np.ndarray],
    train: np.ndarray,
    test: np.ndarray,
    config: LogisticRegression,
    method: str,
) -> tuple[LinearModel, np.ndarray, np.ndarray, float]:
    """The same recipe by a trusted third party holding both parties' columns (for checking)."""
    blocks_train, blocks_test = [], []
    for owner in OWNERS:
        scaler = Standardizer.fit(data[owner][train])
        blocks_train.append(scaler.transform(data[owner][train]))
        blocks_test.append(scaler.transform(data[owner][test]))
    x_train, x_test = np.hstack(blocks_train), np.hstack(blocks_test)
    started = time.perf_counter()
    model = train_plain(x_train, data["fraud"][train], config, sigmoid_method=method)
    return model, x_train, x_test, time.perf_counter() - started


@one_line_errors
def run(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="A bank and a retailer train a fraud model")
    add_session_options(parser, default_parties=2)
    parser.add_argument("--sigmoid", default="accurate-clamped", choices=SIGMOIDS)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--learning-rate", type=float, default=1.0)
    parser.add_argument("--rows", type=int, default=6000, help="customers (train + test)")
    args = parser.parse_args(argv)
    names = party_names(args, PARTIES)
    if names is None:
        return 2
    if args.rows < 40:
        print("--rows must be at least 40", file=sys.stderr)
        return 2
    config = LogisticRegression(
        learning_rate=args.learning_rate, epochs=args.epochs, sigmoid=args.sigmoid
    )
    data = make_data(args.rows)
    train, test = split(args.rows)
    private: dict[str, dict[str, Any]] = {
        "bank": {
            "train": data["bank"][train],
            "test": data["bank"][test],
            "labels": data["fraud"][train],
            "test_labels": data["fraud"][test],
        },
        "retailer": {"train": data["retailer"][train], "test": data["retailer"][test]},
    }
    print(
        f"parties: {', '.join(names)} | {len(train)} training and {len(test)} test customers, "
        f"{data['fraud'].mean():.1%} fraud | bank {len(BANK_COLUMNS)} columns + labels, "
        f"retailer {len(RETAILER_COLUMNS)} columns | protocol {args.protocol} | "
        f"sigmoid {args.sigmoid} | starting ...",
        flush=True,
    )
    started = time.perf_counter()
    with Session(names, private=private, **session_kwargs(args)) as session:
        ready = time.perf_counter() - started
        print(f"session ready in {ready:.1f} s (transport {session.transport})", flush=True)
        result = session.run(fraud_program, config)
    bank = result.outputs["bank"]
    secure: LinearModel = bank["weights"]
    method = "exact" if args.sigmoid.startswith("accurate") else args.sigmoid
    plain, x_train, x_test, plain_seconds = plaintext(data, train, test, config, method)
    y_train, y_test = data["fraud"][train], data["fraud"][test]
    plain_acc = plain.accuracy(x_test, y_test)
    bank_cols = len(BANK_COLUMNS)
    bank_only = train_plain(x_train[:, :bank_cols], y_train, config, sigmoid_method=method)
    bank_only_acc = bank_only.accuracy(x_test[:, :bank_cols], y_test)
    sk_acc = _sklearn_accuracy(x_train, y_train, x_test, y_test)
    diff = secure.max_difference(plain)
    fit_seconds = max(result.outputs[n]["fit_seconds"] for n in names)
    bank_cols = len(BANK_COLUMNS)
    rows = [
        ("secure (MPC), bank + retailer, " + args.sigmoid, bank["accuracy"], bank["recall"]),
        (
            f"plaintext, same recipe ({method} sigmoid)",
            plain_acc,
            _recall(plain.predict(x_test), y_test),
        ),
        (
            "plaintext, bank columns only",
            bank_only_acc,
            _recall(bank_only.predict(x_test[:, :bank_cols]), y_test),
        ),
        ("scikit-learn LogisticRegression (C=1, lbfgs)", sk_acc, float("nan")),
        ("always predict no fraud", 1.0 - float(y_test.mean()), 0.0),
    ]
    print(f"\n{f'test set ({len(test)} customers)':<46} {'accuracy':>9} {'fraud recall':>13}")
    for label, accuracy, recall in rows:
        print(f"{label:<46} {accuracy:>9.4f} {recall:>13.4f}")
    print(f"\nmax |w_secure - w_plain|: {diff:.2e}")
    names_all = BANK_COLUMNS + RETAILER_COLUMNS + ["intercept"]
    weights = np.r_[secure.coef, secure.intercept]
    print(
        "weights (standardised features): "
        + ", ".join(f"{n} {w:+.3f}" for n, w in zip(names_all, weights, strict=True))
    )
    print(
        f"training time: {fit_seconds:.3f} s secure (slowest party), "
        f"{plain_seconds * 1e3:.2f} ms plaintext numpy"
    )
    print("\ncost per party (training only):")
    for party, party_stats in result.stats.items():
        kinds = [s for k, s in party_stats.by_kind.items() if k in TRAINING_KINDS]
        rounds, sent = sum(s.rounds for s in kinds), sum(s.bytes_sent for s in kinds)
        print(f"  {party:<10} {rounds:>6} rounds {sent / 1e6:>10.2f} MB sent")
    print("\ncost per party, every operation:\n" + result.report())
    ok = abs(bank["accuracy"] - plain_acc) <= 0.005 and diff <= 2e-2
    print("OK" if ok else "MISMATCH")
    return 0 if ok else 1


def _recall(predicted: np.ndarray, truth: np.ndarray) -> float:
    return float(np.sum((predicted == 1) & (truth == 1)) / max(1, np.sum(truth == 1)))


def _sklearn_accuracy(
    x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray
) -> float:
    try:
        from sklearn.linear_model import LogisticRegression as SkLogisticRegression
    except ImportError:  # pragma: no cover - sklearn ships with the dev environment
        return float("nan")
    return float(SkLogisticRegression(max_iter=1000).fit(x_train, y_train).score(x_test, y_test))


if __name__ == "__main__":
    sys.exit(run())
