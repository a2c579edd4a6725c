"""Secure aggregation of model updates against a plaintext sum over the same transport; and
DP-SGD's accuracy against epsilon.

1. Aggregation: every party holds a float32 update of 10^4, 10^5, 10^6 parameters (random
   benchmark data), clipped to L2 norm 10 and quantised at scale 2^-22 as `mpc.fl.FedAvg` does;
   secure: `mpc.fl.secure_sum` (one sharing round, all parties at once, a local sum, one
   opening; packed 2 coordinates to a 64-bit element); plaintext: every party sends its float32
   update to every other over the same transport and adds what it receives (one round). Among
   3 and 5 parties (Ray party actors over encrypted TCP by default; --runtime local: threads,
   in-memory). Reported: the slowest party's time (median of --repeats), rounds and bytes per
   party, the ratio secure / plaintext, and the share of the secure time spent in local work
   (clipping and rounding: `prepare`) versus the sum itself.
2. --dp: DP-SGD across 3 parties on a 60,000 x 20 `make_classification` task (in-process;
   the scenario's data and MLP), 1,000 steps at Poisson rate 0.01 (10 expected epochs), clip
   1, SGD step 1.0, the additive protocol's t = 2 (the released noise has 3 times the central
   variance): test accuracy for epsilon in {0.5, 1, 2, 4, 8} (delta 1e-5) beside non-private
   centralised training of the same MLP for 10 epochs (batches of 480, step 1.0); a plot of
   accuracy against epsilon.

Security note: measurement only; the data are public and made up.
Run: python benchmarks/bench_fl.py [--runtime ray|local] [--sizes 1e4 1e5 1e6] [--parties 3 5]
     [--dp | --only-dp]. Writes benchmarks/results/fl.json (fl_dp.json with --only-dp, and
     fl_dp.png with either); prints tables.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mpc.bench import parse_size, progress, text_table, write_results
from mpc.fl import FedAvg, secure_sum
from mpc.fl.quantize import clip_l2, stochastic_round
from mpc.program import PartyContext
from mpc.rng import Prg, new_seed
from mpc.session import Session

HERE = Path(__file__).resolve().parent
NAMES = ["p1", "p2", "p3", "p4", "p5"]
CONFIG = FedAvg(clip_norm=10.0, scale_bits=22)


def update(ctx: PartyContext, size: int) -> np.ndarray:
    gen = np.random.default_rng(ctx.rank)  # benchmark data, not protocol randomness
    return gen.normal(scale=1e-2, size=size).astype(np.float32)


def sync(ctx: PartyContext) -> None:
    others = [j for j in range(ctx.n) if j != ctx.rank]
    with ctx.channel.operation("bench.sync"):
        ctx.channel.exchange(dict.fromkeys(others, np.zeros(1, np.uint64)), others)


def secure_program(ctx: PartyContext, size: int, repeats: int) -> dict[str, Any]:
    layout = CONFIG.layout(ctx.n, ctx.protocol.algebra)
    mine = update(ctx, size).astype(np.float64)
    prg = Prg(new_seed())
    times, prepare = [], []
    for k in range(repeats + 1):  # the first is a warm-up
        sync(ctx)
        start = time.perf_counter()
        clipped, _ = clip_l2(mine / ctx.n, CONFIG.clip_norm)
        q = stochastic_round(clipped, CONFIG.scale_bits, prg, ("bench", k))
        ready = time.perf_counter()
        total = secure_sum(ctx, q, layout, kind="bench.secure")
        end = time.perf_counter()
        assert total is not None
        if k:
            times.append(end - start)
            prepare.append(ready - start)
    return {"seconds": times, "prepare": prepare, "slots": layout.slots, "sum": total[0][:4]}


def plain_program(ctx: PartyContext, size: int, repeats: int) -> dict[str, Any]:
    mine = update(ctx, size)
    others = [j for j in range(ctx.n) if j != ctx.rank]
    times = []
    for k in range(repeats + 1):
        sync(ctx)
        start = time.perf_counter()
        with ctx.channel.operation("bench.plain"):
            got = ctx.channel.exchange(dict.fromkeys(others, mine.view(np.uint32)), others)
        total = mine.astype(np.float64)
        for array in got.values():
            total += np.asarray(array).view(np.float32)
        end = time.perf_counter()
        if k:
            times.append(end - start)
    return {"seconds": times}


def per_run(stats: Any, kind: str, repeats: int) -> tuple[float, float]:
    """(rounds, bytes) per party per run of `kind` (the largest over the parties)."""
    rounds = max(s.by_kind[kind].rounds for s in stats.values()) / (repeats + 1)
    sent = max(s.by_kind[kind].bytes_sent for s in stats.values()) / (repeats + 1)
    return rounds, sent


def aggregation(args: argparse.Namespace) -> list[dict[str, Any]]:
    rows = []
    for n in args.parties:
        kwargs: dict[str, Any] = {"runtime": args.runtime, "timeout": 600.0}
        if args.runtime == "local":
            kwargs.update(dealer="local-insecure", allow_insecure=True)
        with Session(NAMES[:n], protocol=args.protocol, **kwargs) as session:
            for size in args.sizes:
                progress(f"{n} parties, {size:,} parameters")
                secure = session.run(secure_program, size, args.repeats)
                plain = session.run(plain_program, size, args.repeats)
                s_time = statistics.median(
                    max(o["seconds"][k] for o in secure.outputs.values())
                    for k in range(args.repeats)
                )
                p_time = statistics.median(
                    max(o["seconds"][k] for o in plain.outputs.values())
                    for k in range(args.repeats)
                )
                prep = statistics.median(
                    max(o["prepare"][k] for o in secure.outputs.values())
                    for k in range(args.repeats)
                )
                s_rounds, s_bytes = per_run(secure.stats, "bench.secure", args.repeats)
                p_rounds, p_bytes = per_run(plain.stats, "bench.plain", args.repeats)
                rows.append(
                    {
                        "parties": n,
                        "parameters": size,
                        "runtime": args.runtime,
                        "protocol": args.protocol,
                        "secure_seconds": s_time,
                        "prepare_seconds": prep,
                        "plain_seconds": p_time,
                        "ratio": s_time / p_time,
                        "secure_rounds": s_rounds,
                        "plain_rounds": p_rounds,
                        "secure_bytes_per_party": s_bytes,
                        "plain_bytes_per_party": p_bytes,
                        "slots": next(iter(secure.outputs.values()))["slots"],
                    }
                )
    return rows


def dp_sweep(epsilons: Sequence[float], rows: int = 60000) -> dict[str, Any]:
    """DP-SGD accuracy against epsilon (in-process, 3 parties), beside non-private training."""
    sys.path.insert(0, str(HERE.parent / "scenarios"))
    import federated_hospitals as fh  # the scenario's data, model and programs

    from mpc.fl import DPSGD
    from mpc.fl.torch_support import require_torch

    require_torch().set_num_threads(1)
    names = NAMES[:3]
    x_train, y_train, x_test, y_test = fh.make_data(rows, 0)
    private = fh.deal_private(names, x_train, y_train, x_test, y_test)
    state = fh.initial_state(32, 0)
    q, steps, rate = 0.01, 1000, 1.0  # 10 expected epochs, SGD step 1.0, clip 1
    central = fh.centralised(
        FedAvg(rounds=round(q * steps), batch_size=int(q * len(y_train)), learning_rate=rate),
        32,
        state,
        x_train,
        y_train,
    )
    out: dict[str, Any] = {"non_private": fh.accuracy(central, x_test, y_test), "runs": []}
    for epsilon in epsilons:
        progress(f"DP-SGD epsilon {epsilon}")
        config = DPSGD(
            epsilon=epsilon, sampling_rate=q, steps=steps, clip_norm=1.0, learning_rate=rate
        )
        accountants = {name: None for name in names}
        started = time.perf_counter()
        with Session(
            names, private=private, runtime="local", dealer="local-insecure", allow_insecure=True
        ) as session:
            result = session.run(_dp_program, config, state, accountants)
        out["runs"].append(
            {
                "epsilon": epsilon,
                "noise_multiplier": config.sigma(),
                "accuracy": result.outputs[names[0]],
                "seconds": time.perf_counter() - started,
            }
        )
    return out


def _dp_program(ctx: PartyContext, config: Any, state: Any, accountants: Any) -> float:
    import federated_hospitals as fh

    model = fh.make_model(32, state)
    mine = ctx.private
    config.fit(ctx, model, (mine["x_train"], mine["y_train"]), accountant=accountants)
    counts = np.array([fh.correct(model, mine["x_test"], mine["y_test"]), len(mine["y_test"])])
    return fh.joint_accuracy_of(ctx, counts)


def plot_dp(sweep: dict[str, Any], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    eps = [r["epsilon"] for r in sweep["runs"]]
    acc = [r["accuracy"] for r in sweep["runs"]]
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot(eps, acc, "o-", label="DP-SGD across 3 parties (MPC noise)")
    ax.axhline(sweep["non_private"], color="grey", ls="--", label="non-private, centralised")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("epsilon (delta = 1e-5)")
    ax.set_ylabel("test accuracy")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runtime", default="ray", choices=["ray", "local"])
    parser.add_argument("--protocol", default="additive")
    parser.add_argument("--sizes", nargs="+", type=parse_size, default=[10**4, 10**5, 10**6])
    parser.add_argument("--parties", nargs="+", type=int, default=[3, 5])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dp", action="store_true", help="also the accuracy-epsilon sweep")
    parser.add_argument("--dp-rows", type=int, default=60000)
    parser.add_argument("--only-dp", action="store_true", help="the sweep alone (fl_dp.json)")
    args = parser.parse_args(argv)
    if args.only_dp:
        args.dp = True
    results: dict[str, Any] = {"aggregation": [] if args.only_dp else aggregation(args)}
    table = [
        [
            f"{r['parties']}",
            f"{r['parameters']:.0e}",
            f"{r['secure_seconds'] * 1e3:.1f}",
            f"{r['prepare_seconds'] * 1e3:.1f}",
            f"{r['plain_seconds'] * 1e3:.1f}",
            f"{r['ratio']:.2f}",
            f"{r['secure_rounds']:.0f} / {r['plain_rounds']:.0f}",
            f"{r['secure_bytes_per_party'] / 1e6:.2f} / {r['plain_bytes_per_party'] / 1e6:.2f}",
        ]
        for r in results["aggregation"]
    ]
    headers = ["parties", "params", "secure ms", "of which prepare", "plain ms", "ratio"]
    headers += ["rounds s/p", "MB/party s/p"]
    print(f"secure aggregation vs plaintext sum ({args.runtime}, {args.protocol})")
    print(text_table(headers, table))
    if args.dp:
        sweep = dp_sweep([0.5, 1.0, 2.0, 4.0, 8.0], args.dp_rows)
        results["dp_sgd"] = sweep
        print(f"\nDP-SGD, {args.dp_rows} rows, 3 parties: non-private {sweep['non_private']:.4f}")
        for r in sweep["runs"]:
            print(
                f"  epsilon {r['epsilon']:>4g}  sigma {r['noise_multiplier']:.3f}  accuracy "
                f"{r['accuracy']:.4f}  ({r['seconds']:.0f} s)"
            )
        print(f"plot: {plot_dp(sweep, HERE / 'results' / 'fl_dp.png')}")
    name = "fl_dp.json" if args.only_dp else "fl.json"
    print(f"results: {write_results(results, HERE / 'results' / name)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
