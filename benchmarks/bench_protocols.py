"""In-process benchmark of every protocol: element-wise fixed-point multiplication x*y.

Each protocol runs with each party count it accepts, as threads of this process over the
in-memory transport with an insecure in-process dealer (measurement only). Prints a table of
the total time (the dealer generating on demand) and the online time (dealer items prepared
beforehand), medians and the best repetition, each as a percentage of numpy's a*b+c throughput
measured in the same run, with rounds and bytes sent per party per multiplication; writes JSON
and a log-log plot.

Run: python benchmarks/bench_protocols.py [--sizes 1000 100000 1000000] [--parties 2 3]
See benchmarks/README.md for what is measured and how to read the ratio.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from mpc.bench import (
    bench_inprocess,
    format_table,
    parse_size,
    plot_throughput,
    write_results,
)

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=parse_size, nargs="+", default=[1000, 100_000, 1_000_000])
    parser.add_argument("--parties", type=int, nargs="+", default=[2, 3])
    parser.add_argument("--protocols", nargs="+", default=None, help="default: all registered")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "protocols.json")
    parser.add_argument("--plot", type=Path, default=HERE / "results" / "protocols.png")
    args = parser.parse_args()
    rows = bench_inprocess(
        sizes=args.sizes, parties=args.parties, protocols=args.protocols, repeats=args.repeats
    )
    print(format_table(rows))
    print(f"\nwrote {write_results(rows, args.out)} and {plot_throughput(rows, args.plot)}")


if __name__ == "__main__":
    main()
