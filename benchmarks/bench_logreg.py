"""Secure logistic regression: training time, accuracy and weights against plaintext numpy.

1. Breast cancer (scikit-learn's bundled 569 x 30; 455 training rows, standardised, dealt by rows
   to 3 parties), 10 epochs of full-batch gradient descent, learning rate 1.0 on the mean
   gradient, for every sigmoid approximation: training time with 3 Ray party actors over
   encrypted TCP (the slowest party's time of `fit`, taken inside the program), after a
   one-epoch warm-up run: the median of --repeats runs (default 3) with the dealer generating
   on demand ("total", and the range of those runs), and one run with the dealer's corrections
   fetched before the run ("online", the offline phase excluded, as in mpc/bench.py); test
   accuracy beside the plaintext run of the same recipe; max |w_secure - w_plain|; rounds and
   bytes sent per party during training; the same recipe in float64 numpy, timed in the same run.
2. Scaling: synthetic rows x 50 features (10^4 and 10^5 rows by default, dealt to 3 parties),
   one epoch of mini-batch gradient descent with batches of 1024 rows (--batch-size), learning
   rate 1.0: training time against rows (dealer on demand), beside numpy.

Security note: measurement only; the data are public. Ray runs use the trusted-dealer actor; the
in-process dry run that lists which dealer streams to prefetch uses an insecure in-process
dealer on the same public data.

Run: python benchmarks/bench_logreg.py [--runtime ray|local] [--scaling-rows 1e4 1e5]
Writes benchmarks/results/logreg.json and logreg.png; prints tables.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from mpc.bench import parse_size, progress, text_table, write_results
from mpc.dealers.seeded import InsecureLocalDealer
from mpc.dealers.streams import Stream
from mpc.encoding import FixedPoint
from mpc.errors import ConfigurationError
from mpc.ml import (
    TRAINING_KINDS,
    LinearModel,
    LogisticRegression,
    Standardizer,
    train_plain,
)
from mpc.ml.data import breast_cancer_split
from mpc.ml.sigmoid import SIGMOIDS
from mpc.parties.local import LocalParties
from mpc.parties.party import SessionConfig
from mpc.program import PartyContext
from mpc.protocols.registry import get_protocol
from mpc.session import Session
from mpc.stats import PartyStats

HERE = Path(__file__).resolve().parent
PARTIES = ("alice", "bob", "carol")
#: Figures of other frameworks for the breast-cancer recipe on this machine class (issue 5).
PEERS = {
    "SPU ABY3, real sigmoid": 0.68,
    "SPU ABY3, piecewise": 0.16,
    "CrypTen 3-party, piecewise": 0.43,
    "CrypTen 3-party, native": 2.5,
    "MPyC": 1.1,
}
Row = dict[str, Any]


# ---- data ---------------------------------------------------------------------------------------
def synthetic(rows: int, features: int, seed: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """Public synthetic classification data (seeded generator; plaintext only)."""
    gen = np.random.default_rng([seed, rows, features])
    x = gen.normal(size=(rows, features)) * gen.uniform(0.5, 3.0, features) + gen.normal(
        0, 2, features
    )
    true_w = gen.normal(size=features) / np.sqrt(features) * 3.0
    logits = ((x - x.mean(axis=0)) / x.std(axis=0)) @ true_w
    y = (gen.random(rows) < 1.0 / (1.0 + np.exp(-logits))).astype(np.int64)
    return x, y


def deal(x: np.ndarray, y: np.ndarray, k: int) -> list[tuple[np.ndarray, np.ndarray]]:
    return [(x[idx], y[idx]) for idx in np.array_split(np.arange(len(x)), k)]


# ---- the program (runs at every party) ----------------------------------------------------------
def train_program(ctx: PartyContext, key: str, config: LogisticRegression) -> dict[str, Any]:
    """Share this party's rows of dataset `key`, train, reveal the weights; time `fit` only."""
    x, y = ctx.private[key]
    data = config.share_horizontal(ctx, x, y)
    start = time.perf_counter()
    model = config.fit(ctx, data)
    seconds = time.perf_counter() - start
    weights = model.reveal(to=ctx.parties[0])
    return {"seconds": seconds, "weights": weights}


class _RecordingDealer(InsecureLocalDealer):
    """Records how many items of each stream the parties fetched (for prefetching)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fetched: dict[Stream, int] = {}

    def corrections(
        self, rank: int, stream: Stream, start: int, count: int
    ) -> list[list[np.ndarray]]:
        key = stream.in_epoch(0)
        self.fetched[key] = max(self.fetched.get(key, 0), start + count)
        return super().corrections(rank, stream, start, count)


def dealer_streams(
    private: Mapping[str, Mapping[str, Any]], key: str, config: LogisticRegression
) -> dict[Stream, int]:
    """Which dealer streams (and how many items) a training run draws: an in-process dry run
    on the same public data (the dealer's offline work, listed for `Session.prefetch`)."""
    cls = get_protocol("additive")
    t = cls.check_parties(len(PARTIES), None)
    dealer = _RecordingDealer(cls.make_scheme(len(PARTIES), t))
    config_local = SessionConfig(PARTIES, "additive", t, FixedPoint(), timeout=300.0)
    LocalParties(config_local, dealer, private).run(train_program, key, config)
    return dealer.fetched


# ---- measurements -------------------------------------------------------------------------------
def _slowest(outputs: Mapping[str, Any]) -> float:
    return max(float(out["seconds"]) for out in outputs.values())


def _training_cost(stats: Mapping[str, PartyStats]) -> tuple[int, int]:
    """Rounds and bytes sent in training (max over parties)."""
    rounds = sent = 0
    for party_stats in stats.values():
        kinds = [s for k, s in party_stats.by_kind.items() if k in TRAINING_KINDS]
        rounds = max(rounds, sum(s.rounds for s in kinds))
        sent = max(sent, sum(s.bytes_sent for s in kinds))
    return rounds, sent


def _plain_seconds(x: np.ndarray, y: np.ndarray, config: LogisticRegression, method: str) -> float:
    best = math.inf
    for _ in range(5):
        start = time.perf_counter()
        train_plain(x, y, config, sigmoid_method=method)
        best = min(best, time.perf_counter() - start)
    return best


def _load() -> float:
    try:
        return os.getloadavg()[0]
    except OSError:  # pragma: no cover
        return math.nan


def _admitted(config: LogisticRegression, shape: tuple[int, ...], what: str) -> bool:
    """False (and say why) where `fit` would refuse the schedule (`mpc.bounds`): e.g. the
    `accurate` and `poly` sigmoids, whose logits this recipe cannot keep provably small."""
    try:
        config.check_range(shape[0], shape[1], None, None, get_protocol("additive"))
    except ConfigurationError as exc:
        progress(f"{what}: refused before training, {exc}")
        return False
    return True


def cancer_rows(
    session: Any,
    private: Mapping[str, Mapping[str, Any]],
    sigmoids: Sequence[str],
    online: bool,
    repeats: int = 3,
) -> list[Row]:
    x_train, x_test, y_train, y_test = breast_cancer_split()
    scaler = Standardizer.fit(x_train)
    train, test = scaler.transform(x_train), scaler.transform(x_test)
    rows = []
    for method in sigmoids:
        config = LogisticRegression(epochs=10, learning_rate=1.0, sigmoid=method)
        if not _admitted(config, train.shape, f"breast cancer, {method}"):
            continue
        reference = "exact" if method.startswith("accurate") else method
        plain = train_plain(train, y_train, config, sigmoid_method=reference)
        exact = train_plain(train, y_train, config)
        progress(f"breast cancer, {method}: warm-up (one epoch), then {repeats} timed runs")
        session.run(train_program, "cancer", replace(config, epochs=1))
        totals = [session.run(train_program, "cancer", config) for _ in range(repeats)]
        total_seconds = [_slowest(t.outputs) for t in totals]
        total = totals[int(np.argsort(total_seconds)[len(totals) // 2])]  # the median run
        online_seconds = math.nan
        result = total
        if online:
            streams = dealer_streams(private, "cancer", config)
            for stream, count in streams.items():
                session.prefetch(
                    stream.kind, list(stream.shapes), count, stream.bits, stream.parent
                )
            progress(f"breast cancer, {method}: training (prefetched: {len(streams)} streams)")
            result = session.run(train_program, "cancer", config)
            online_seconds = _slowest(result.outputs)
        secure: LinearModel = result.outputs[PARTIES[0]]["weights"]
        rounds, sent = _training_cost(result.stats)
        row = {
            "bench": "breast_cancer",
            "sigmoid": method,
            "rows": len(train),
            "features": train.shape[1],
            "epochs": config.epochs,
            "learning_rate": config.learning_rate,
            "seconds_total": _slowest(total.outputs),
            "seconds_total_runs": total_seconds,
            "seconds_online": online_seconds,
            "plain_seconds": _plain_seconds(train, y_train, config, reference),
            "accuracy_secure": secure.accuracy(test, y_test),
            "accuracy_plain_same_recipe": plain.accuracy(test, y_test),
            "accuracy_plain_exact_sigmoid": exact.accuracy(test, y_test),
            "max_abs_w_diff_same_recipe": secure.max_difference(plain),
            "max_abs_w_diff_exact_sigmoid": secure.max_difference(exact),
            "rounds_per_party": rounds,
            "bytes_per_party": sent,
            "load_1min": _load(),
        }
        rows.append(row)
        progress(
            f"breast cancer, {method}: {row['seconds_total']:.3f} s total, "
            f"{online_seconds:.3f} s online, accuracy {row['accuracy_secure']:.4f} "
            f"(plain {row['accuracy_plain_same_recipe']:.4f}), max |dw| "
            f"{row['max_abs_w_diff_same_recipe']:.2e}"
        )
    return rows


def scaling_rows(
    session: Any,
    data: Mapping[int, tuple[np.ndarray, np.ndarray]],
    sigmoids: Sequence[str],
    batch_size: int,
) -> list[Row]:
    rows = []
    for method in sigmoids:
        for n, (x, y) in sorted(data.items()):
            config = LogisticRegression(
                epochs=1, learning_rate=1.0, batch_size=batch_size, sigmoid=method
            )
            if not _admitted(config, x.shape, f"scaling, {method}, {n} rows"):
                continue
            reference = "exact" if method.startswith("accurate") else method
            prepared = Standardizer.fit(x).transform(x)
            plain = train_plain(prepared, y, config, sigmoid_method=reference)
            progress(f"scaling, {method}, {n} rows: training")
            result = session.run(train_program, f"synthetic_{n}", config)
            secure: LinearModel = result.outputs[PARTIES[0]]["weights"]
            rounds, sent = _training_cost(result.stats)
            seconds = _slowest(result.outputs)
            row = {
                "bench": "scaling",
                "sigmoid": method,
                "rows": n,
                "features": x.shape[1],
                "epochs": 1,
                "batch_size": batch_size,
                "seconds_total": seconds,
                "rows_per_second": n / seconds,
                "plain_seconds": _plain_seconds(prepared, y, config, reference),
                "accuracy_secure_train": secure.accuracy(prepared, y),
                "accuracy_plain_train": plain.accuracy(prepared, y),
                "max_abs_w_diff_same_recipe": secure.max_difference(plain),
                "rounds_per_party": rounds,
                "bytes_per_party": sent,
                "load_1min": _load(),
            }
            rows.append(row)
            progress(
                f"scaling, {method}, {n} rows: {seconds:.2f} s ({n / seconds:,.0f} rows/s), "
                f"numpy {row['plain_seconds'] * 1e3:.1f} ms, max |dw| "
                f"{row['max_abs_w_diff_same_recipe']:.2e}"
            )
    return rows


# ---- output -------------------------------------------------------------------------------------


def format_tables(results: Mapping[str, Any]) -> str:
    cancer = results["breast_cancer"]
    text = text_table(
        [
            "sigmoid",
            "total s",
            "total range",
            "online s",
            "numpy ms",
            "acc secure",
            "acc plain",
            "max|dw|",
            "rounds",
            "MB/party",
            "load",
        ],
        [
            [
                r["sigmoid"],
                f"{r['seconds_total']:.3f}",
                f"{min(r['seconds_total_runs']):.3f}-{max(r['seconds_total_runs']):.3f}",
                f"{r['seconds_online']:.3f}",
                f"{r['plain_seconds'] * 1e3:.2f}",
                f"{r['accuracy_secure']:.4f}",
                f"{r['accuracy_plain_same_recipe']:.4f}",
                f"{r['max_abs_w_diff_same_recipe']:.1e}",
                f"{r['rounds_per_party']}",
                f"{r['bytes_per_party'] / 1e6:.1f}",
                f"{r['load_1min']:.1f}",
            ]
            for r in cancer
        ],
    )
    scaling = results.get("scaling") or []
    if scaling:
        text += "\n\n" + text_table(
            [
                "sigmoid",
                "rows",
                "batch",
                "secure s",
                "rows/s",
                "numpy ms",
                "max|dw|",
                "MB/party",
                "load",
            ],
            [
                [
                    r["sigmoid"],
                    f"{r['rows']:,}",
                    f"{r['batch_size']}",
                    f"{r['seconds_total']:.2f}",
                    f"{r['rows_per_second']:,.0f}",
                    f"{r['plain_seconds'] * 1e3:.1f}",
                    f"{r['max_abs_w_diff_same_recipe']:.1e}",
                    f"{r['bytes_per_party'] / 1e6:.0f}",
                    f"{r['load_1min']:.1f}",
                ]
                for r in scaling
            ],
        )
    return text


def plot(results: Mapping[str, Any], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5))
    cancer = results["breast_cancer"]
    names = [r["sigmoid"] for r in cancer]
    pos = np.arange(len(names))
    left.bar(pos - 0.2, [r["seconds_total"] for r in cancer], 0.4, label="total (dealer on demand)")
    left.bar(pos + 0.2, [r["seconds_online"] for r in cancer], 0.4, label="online (prefetched)")
    for (label, seconds), style in zip(
        PEERS.items(), [":", "--", "-.", (0, (1, 3)), (0, (5, 5))], strict=True
    ):
        left.axhline(seconds, color="grey", linestyle=style, linewidth=1)
        left.text(len(names) - 0.45, seconds, label, fontsize=7, va="bottom", ha="right")
    left.set_xticks(pos, names)
    left.set_ylabel("training seconds (10 epochs)")
    left.set_title("breast cancer 455 x 30, 3 Ray parties, tcp")
    left.legend(fontsize="small", loc="upper left")
    scaling = results.get("scaling") or []
    groups: dict[str, list[Row]] = {}
    for r in scaling:
        groups.setdefault(r["sigmoid"], []).append(r)
    for method, group in groups.items():
        group = sorted(group, key=lambda r: r["rows"])
        right.plot(
            [r["rows"] for r in group],
            [r["seconds_total"] for r in group],
            marker="o",
            label=method,
        )
    if scaling:
        base: dict[int, float] = {}
        for r in scaling:
            base[r["rows"]] = min(base.get(r["rows"], math.inf), r["plain_seconds"])
        sizes = sorted(base)
        right.plot(sizes, [base[s] for s in sizes], "k--", marker="s", label="numpy, same recipe")
        right.set_xscale("log")
        right.set_yscale("log")
        right.set_xlabel("rows (50 features)")
        right.set_ylabel("seconds per epoch")
        right.set_title(f"scaling: 1 epoch, batch {scaling[0]['batch_size']}")
        right.legend(fontsize="small")
        right.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runtime", choices=["ray", "local"], default="ray")
    parser.add_argument("--sigmoids", nargs="+", default=list(SIGMOIDS), choices=SIGMOIDS)
    parser.add_argument("--scaling-rows", type=parse_size, nargs="*", default=[10_000, 100_000])
    parser.add_argument(
        "--scaling-sigmoids", nargs="+", default=["poly", "piecewise", "accurate"], choices=SIGMOIDS
    )
    parser.add_argument("--features", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--no-online", action="store_true", help="skip the prefetched runs")
    parser.add_argument(
        "--repeats", type=int, default=3, help="timed breast-cancer runs per sigmoid (median)"
    )
    parser.add_argument("--out", type=Path, default=HERE / "results" / "logreg.json")
    parser.add_argument("--plot", type=Path, default=HERE / "results" / "logreg.png")
    args = parser.parse_args(argv)

    x_train, _, y_train, _ = breast_cancer_split()
    private: dict[str, dict[str, Any]] = {p: {} for p in PARTIES}
    for name, shard in zip(PARTIES, deal(x_train, y_train, len(PARTIES)), strict=True):
        private[name]["cancer"] = shard
    synthetic_data = {n: synthetic(n, args.features) for n in args.scaling_rows}
    for n, (x, y) in synthetic_data.items():
        for name, shard in zip(PARTIES, deal(x, y, len(PARTIES)), strict=True):
            private[name][f"synthetic_{n}"] = shard

    started_ray = False
    if args.runtime == "ray":
        import ray

        if not ray.is_initialized():
            ray.init(
                num_cpus=2,
                include_dashboard=False,
                logging_level=logging.WARNING,
                log_to_driver=False,
            )
            started_ray = True
        kwargs: dict[str, Any] = {"runtime": "ray", "transport": "tcp", "dealer": "trusted"}
    else:
        kwargs = {"runtime": "local", "dealer": "local-insecure", "allow_insecure": True}
    try:
        progress(f"starting 3 parties ({args.runtime})")
        with Session(list(PARTIES), private=private, timeout=600.0, **kwargs) as session:
            cancer = cancer_rows(
                session, private, args.sigmoids, online=not args.no_online, repeats=args.repeats
            )
            scaling = scaling_rows(session, synthetic_data, args.scaling_sigmoids, args.batch_size)
    finally:
        if started_ray:
            import ray

            ray.shutdown()
    results = {
        "breast_cancer": cancer,
        "scaling": scaling,
        "peers_seconds": PEERS,
        "config": {
            "runtime": args.runtime,
            "transport": kwargs.get("transport", "memory"),
            "protocol": "additive",
            "parties": list(PARTIES),
            "scaling_features": args.features,
            "scaling_batch_size": args.batch_size,
        },
    }
    print(format_tables(results))
    print(f"\nwrote {write_results(results, args.out)} and {plot(results, args.plot)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
