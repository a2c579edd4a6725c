"""Ray runtime benchmark: 3 party actors per transport (tcp, tcp-plaintext, ray).

Throughput of element-wise fixed-point multiplication x*y per vector size, and round latency
(a chain of dependent length-1 multiplications): the total (the dealer generating on demand) and
the online phase (dealer items prepared beforehand), medians and the best repetition, beside
baselines measured in the same run: numpy a*b+c on uint64 arrays and a Python asyncio TCP
ping-pong on 127.0.0.1. Starts Ray once (2 CPUs) and shuts it down at the end. Prints tables;
writes JSON and a log-log plot.

Run: python benchmarks/bench_runtime.py [--sizes 1000 100000 1000000] [--chain 100]
See benchmarks/README.md for what is measured and how to read the ratio.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from mpc.bench import bench_ray, format_table, parse_size, plot_throughput, write_results

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=parse_size, nargs="+", default=[1000, 100_000, 1_000_000])
    parser.add_argument(
        "--transports",
        nargs="+",
        default=["tcp", "tcp-plaintext", "ray"],
        choices=["tcp", "tcp-plaintext", "ray"],
    )
    parser.add_argument("--protocol", default="additive")
    parser.add_argument("--chain", type=int, default=100)
    parser.add_argument(
        "--repeats", type=int, default=5, help="timed repetitions (medians and best reported)"
    )
    parser.add_argument("--out", type=Path, default=HERE / "results" / "runtime.json")
    parser.add_argument("--plot", type=Path, default=HERE / "results" / "runtime.png")
    args = parser.parse_args()
    results = bench_ray(
        sizes=args.sizes,
        transports=args.transports,
        protocol=args.protocol,
        chain=args.chain,
        repeats=args.repeats,
    )
    print(format_table(results))
    print(f"\nwrote {write_results(results, args.out)} and {plot_throughput(results, args.plot)}")


if __name__ == "__main__":
    main()
