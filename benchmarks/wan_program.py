"""The product workloads of benchmarks/bench_wan.py, as a program parties approve and run.

`--workload product --size N`: party 0 inputs x, party 1 inputs y (public benchmark data from
`mpc.bench.bench_data`, multiples of 2^-16 in [-1, 1)), the parties compute the fixed-point
product x * y (truncated at once) and reveal it to party 0, which returns it for checking.
`--workload chain --size W --length L`: z = x, then L dependent products z = z * y of
W-element vectors (y = 1, so z stays x up to one ulp per product), revealed to party 0.
Revealed: the product (or the chain's end) to party 0, which is public benchmark data anyway.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from mpc.bench import bench_data
from mpc.program import PartyContext

WORKLOADS = ("product", "chain")
MAX_SIZE = 10**7
MAX_LENGTH = 10_000
CHAIN_START = 0.75


def public_args(argv: Sequence[str]) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description="bench_wan product workloads")
    parser.add_argument("--workload", choices=WORKLOADS, required=True)
    parser.add_argument("--size", type=int, default=1_000_000)
    parser.add_argument("--length", type=int, default=50)
    args = parser.parse_args(list(argv))
    return accept_args({"workload": args.workload, "size": args.size, "length": args.length})


def accept_args(args: Mapping[str, Any]) -> dict[str, Any]:
    if set(args) != {"workload", "size", "length"}:
        raise ValueError(f"the arguments are workload, size and length, got {sorted(args)}")
    if args["workload"] not in WORKLOADS:
        raise ValueError(f"workload must be one of {WORKLOADS}, got {args['workload']!r}")
    for key, top in (("size", MAX_SIZE), ("length", MAX_LENGTH)):
        if type(args[key]) is not int or not 1 <= args[key] <= top:
            raise ValueError(f"{key} must be an int in [1, {top}], got {args[key]!r}")
    return dict(args)


def party_program(ctx: PartyContext, args: Mapping[str, Any]) -> dict[str, Any]:
    first, second = ctx.parties[0], ctx.parties[1]
    size = int(args["size"])
    if args["workload"] == "product":
        x_value, y_value = bench_data(size)
        x = ctx.input(first, x_value if ctx.me == first else None, bound=1.0)
        y = ctx.input(second, y_value if ctx.me == second else None, bound=1.0)
        return {"product": ctx.reveal((x * y).settle(), to=first)}
    start = np.full(size, CHAIN_START)
    z = ctx.input(first, start if ctx.me == first else None, bound=1.0)
    y = ctx.input(second, np.ones(size) if ctx.me == second else None, bound=1.0)
    for _ in range(int(args["length"])):
        z = z * y
    return {"product": ctx.reveal(z, to=first)}


def report(output: Mapping[str, Any], args: Mapping[str, Any]) -> str:
    product = np.asarray(output["product"])
    return f"{args['workload']}: {product.size} elements revealed to this party"
