"""Dealer throughput: Beaver triples per second from the trusted-dealer actor and from the
(simulated) enclave dealer, measured in the same run, plus the dealer's bytes per triple.

Each party fetches the correction shares of `--count` triples of `--size` elements ahead of a
run (the offline phase), as `Session.prefetch` does for benchmarks; the time covers generation
at the dealer, transfer to the parties and each party's seed expansion. With additive sharing
only the last party receives corrections: one ring element per triple element.

Run:  python benchmarks/bench_dealer.py [--size 1000] [--count 200]
"""

from __future__ import annotations

import argparse
import logging
import time
import warnings

import ray

from mpc.session import Session


def measure(dealer: str, size: int, count: int, protocol: str) -> dict[str, float]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        session = Session(
            ["alice", "bob", "carol"],
            protocol=protocol,
            dealer=dealer,
            allow_simulated_enclave=True,
        )
    with session:
        session.prefetch("triple", [(size,)], 5)  # warm-up: actors, code paths
        before = session.dealer_stats()
        start = time.perf_counter()
        session.prefetch("triple", [(size,)], count)
        seconds = time.perf_counter() - start
        after = session.dealer_stats()
    items = after["items"] - before["items"]
    sent = after["bytes_sent"] - before["bytes_sent"]
    return {
        "triples_per_s": count / seconds,
        "elements_per_s": count * size / seconds,
        "bytes_per_triple_element": sent / max(1, items * size),
        "seconds": seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1000, help="elements per triple")
    parser.add_argument("--count", type=int, default=200, help="triples per measurement")
    parser.add_argument("--protocol", default="additive")
    args = parser.parse_args()
    ray.init(
        num_cpus=2, include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False
    )
    try:
        rows = {d: measure(d, args.size, args.count, args.protocol) for d in ("trusted", "enclave")}
    finally:
        ray.shutdown()
    print(f"{'dealer':<10} {'triples/s':>10} {'elements/s':>12} {'bytes/element':>14}")
    for name, r in rows.items():
        print(
            f"{name:<10} {r['triples_per_s']:>10.1f} {r['elements_per_s']:>12.3g} "
            f"{r['bytes_per_triple_element']:>14.2f}"
        )
    ratio = rows["enclave"]["elements_per_s"] / rows["trusted"]["elements_per_s"]
    print(f"enclave / trusted throughput: {ratio:.2f}")


if __name__ == "__main__":
    main()
