"""Benchmarks of secure fixed-point multiplication: in-process protocols and the Ray runtime.

Responsibility: measure how fast the runtime multiplies secret fixed-point vectors element-wise
(throughput, elements per second) and how long one dependent multiplication takes (latency), and
set each number beside a plaintext baseline measured in the same run on the same machine: numpy
``a*b + c`` on uint64 arrays for throughput, a Python asyncio TCP ping-pong on 127.0.0.1 for
latency. Also writes the results as JSON, plots them and formats them as text tables.

What is timed, twice per row: the *total* (the headline: nothing prefetched, the dealer
generates its items on demand, as a user's program meets it) and the *online* phase alone (the
dealer corrections of every product, the parts of Beaver triples and truncation masks a party
cannot derive from its own seed, fetched before the run with `Session.preprocess`, so dealer
generation and transfer are excluded; what remains is the party's own PRG expansion of its
seeded shares, the local arithmetic, the communication rounds and the runtime's bookkeeping).
Each is the median of the repetitions, reported beside the best online repetition. Every timing
is taken inside the program at each party with ``time.perf_counter`` after a synchronising
exchange, and the slowest party counts.

Security model: measures only. The in-process runs use insecure in-process dealers (every party
could read every seed), so they say nothing about protection of data; the Ray runs use the
session's trusted-dealer actor. Benchmark inputs are public, derived from a fixed seed with
``mpc.rng.Prg`` (no NumPy random generator), and the product is revealed to one party to check it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import multiprocessing as mp
import os
import platform
import statistics
import sys
import time
import warnings
from collections.abc import Iterable, Mapping, Sequence
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from mpc.dealers.seeded import InsecureLocalDealer
from mpc.encoding import FixedPoint
from mpc.parties.local import LocalParties
from mpc.parties.party import SessionConfig
from mpc.parties.tuning import tune_allocator
from mpc.program import PartyContext
from mpc.protocols.base import Protocol
from mpc.protocols.registry import available_protocols, get_protocol
from mpc.rng import Prg
from mpc.stats import PartyStats

__all__ = [
    "BenchmarkError",
    "asyncio_pingpong_rtt",
    "bench_data",
    "bench_inprocess",
    "bench_ray",
    "check_product",
    "format_table",
    "numpy_baseline",
    "parse_size",
    "plot_throughput",
    "progress",
    "text_table",
    "write_results",
]

FIXED_POINT = FixedPoint()
FRAC_BITS = FIXED_POINT.frac_bits
ULP = 2.0**-FRAC_BITS
# Public seed of the benchmark data: the inputs of a benchmark are not secret.
_DATA_SEED = b"mpc.bench.inputs"
# Inputs are multiples of 2^-16 in [-1, 1): encoding is exact, the product's encoding stays below
# 2^32, so the probabilistic truncation fails with probability < 2^32 / p ~ 2^-29 per element even
# in GF(2^61-1) (see `Protocol.truncate`); wider inputs would make the check flaky at 10^6.
_INPUT_BITS = FRAC_BITS + 1
_PING_BYTES = 16
_IN_PROCESS_NAMES = ("alice", "bob", "carol", "dave", "erin", "frank", "grace")
_RAY_PARTIES = ("alice", "bob", "carol")

Row = dict[str, Any]
FloatArray = npt.NDArray[np.float64]


class BenchmarkError(RuntimeError):
    """A benchmarked computation returned a wrong result (or could not be measured)."""


def progress(message: str) -> None:
    """One progress line on stderr, so that long sweeps show where they are."""
    print(f"[mpc.bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def parse_size(text: str) -> int:
    """A vector size from the command line: 1000, 1_000_000 or 1e6."""
    cleaned = text.replace("_", "")
    try:
        value = float(cleaned) if any(c in cleaned for c in "eE.") else int(cleaned, 10)
    except ValueError:
        raise ValueError(f"not a size: {text!r}") from None
    if value != int(value) or value < 1:
        raise ValueError(f"sizes must be positive integers, got {text!r}")
    return int(value)


# ---- data and checks --------------------------------------------------------------------------
def bench_data(size: int) -> tuple[FloatArray, FloatArray]:
    """The two input vectors of a benchmark of `size` elements (deterministic, public).

    Values are multiples of 2^-16 in [-1, 1), drawn from `Prg` with a fixed public seed.
    """
    prg = Prg(_DATA_SEED)
    raw = prg.below_bits((2, size), _INPUT_BITS, tag=("bench-inputs", size)).astype(np.int64)
    values = (raw - (1 << FRAC_BITS)).astype(np.float64) * ULP
    return values[0].copy(), values[1].copy()


def check_product(
    x: FloatArray, y: FloatArray, z: Any, fixed_point: FixedPoint = FIXED_POINT
) -> float:
    """Check a secure fixed-point product `z` of `x` and `y`; return the largest error in ulps.

    Admissible (one probabilistic truncation): with X, Y the integer encodings of x and y, the
    encoding of z is floor(X*Y / 2^f) or one less. Also checked against the float product: at
    most 2 ulp plus the encoding error (|x| + |y| + 1) * 2^-(f+1). Raises `BenchmarkError`.
    """
    if z is None:
        raise BenchmarkError("the benchmark program returned no product to check")
    zf = np.asarray(z, dtype=np.float64)
    if zf.shape != x.shape:
        raise BenchmarkError(f"the product has shape {zf.shape}, expected {x.shape}")
    f = fixed_point.frac_bits
    big_x, big_y = fixed_point.encode(x), fixed_point.encode(y)
    if big_x.size and int(np.abs(big_x).max()) * int(np.abs(big_y).max()) >= 1 << 62:
        big_x, big_y = big_x.astype(object), big_y.astype(object)  # exact, slower
    floor = ((big_x * big_y) >> f).astype(np.int64)  # >> is floor, also for negatives
    got = np.rint(zf * 2.0**f).astype(np.int64)  # decoding divided by 2^f: exact
    diff = got - floor
    bad = int(np.count_nonzero((diff != 0) & (diff != -1)))
    ulp = 2.0**-f
    tolerance = 2 * ulp + (np.abs(x) + np.abs(y) + 1.0) * ulp / 2
    error = np.abs(zf - x * y)
    bad_float = int(np.count_nonzero(error > tolerance))
    if bad or bad_float:
        worst = int(np.argmax(np.abs(diff)))
        raise BenchmarkError(
            f"the secure product is wrong at {max(bad, bad_float)} of {x.size} elements (e.g. "
            f"index {worst}: got {zf.flat[worst]!r}, expected {x.flat[worst] * y.flat[worst]!r})"
        )
    return float(error.max() / ulp) if error.size else 0.0


def numpy_baseline(
    size: int, *, min_repeats: int = 5, max_repeats: int = 200, min_seconds: float = 0.2
) -> float:
    """Best time in seconds of plain numpy ``a * b + c`` on uint64 arrays of `size` elements."""
    a, b, c = Prg(_DATA_SEED).ring((3, size), tag=("baseline", size))
    best = math.inf
    total = 0.0
    count = 0
    while count < min_repeats or (total < min_seconds and count < max_repeats):
        start = time.perf_counter()
        out = a * b + c
        elapsed = time.perf_counter() - start
        del out
        best = min(best, elapsed)
        total += elapsed
        count += 1
    return best


# ---- programs (run at every party) ------------------------------------------------------------
def _sync(ctx: PartyContext) -> None:
    """A one-element exchange with every peer, so that timed sections start together."""
    others = [r for r in range(ctx.n) if r != ctx.rank]
    token = np.zeros(1, dtype=np.uint64)
    with ctx.channel.operation("sync"):
        ctx.channel.exchange({r: token for r in others}, others)


def _mul_program(
    ctx: PartyContext, size: int, warmup: int, repeats: int, reveal: bool
) -> dict[str, Any]:
    """Share x (party 0) and y (party 1) once, then time `repeats` products x * y."""
    x_value = bench_data(size)[0] if ctx.rank == 0 else None
    y_value = bench_data(size)[1] if ctx.rank == 1 else None
    # `bench_data` is in [-1, 1): that public bound admits the product (`mpc.bounds`)
    x = ctx.input(ctx.parties[0], x_value, bound=1.0)
    y = ctx.input(ctx.parties[1], y_value, bound=1.0)
    z = x
    for _ in range(warmup):
        z = (x * y).settle()
    times = []
    for _ in range(repeats):
        _sync(ctx)
        start = time.perf_counter()
        z = (x * y).settle()  # a complete fixed-point product: truncated, not deferred
        times.append(time.perf_counter() - start)
    product = ctx.reveal(z, to=ctx.parties[0]) if reveal else None
    return {"times": times, "product": product}


_CHAIN_START = 0.75


def _chain_program(ctx: PartyContext, chain: int, warmup: int, repeats: int) -> dict[str, Any]:
    """Time chains of `chain` dependent length-1 products z = z * y (per product, per repeat).

    Each product's truncation is done by the next product (in its round, where the protocol
    fuses them; else in a round of its own), so the time per product includes one truncation.
    """
    # |z| stays <= 1 (y = 1): each product's bound grows only by its truncation's ulp
    x = ctx.input(ctx.parties[0], np.array([_CHAIN_START]) if ctx.rank == 0 else None, bound=1.0)
    y = ctx.input(ctx.parties[1], np.array([1.0]) if ctx.rank == 1 else None, bound=1.0)
    z = x
    for _ in range(warmup):
        z = z * y
    times = []
    for _ in range(repeats):
        _sync(ctx)
        start = time.perf_counter()
        for _ in range(chain):
            z = z * y
        times.append((time.perf_counter() - start) / chain)
    return {"times": times, "product": ctx.reveal(z, to=ctx.parties[0])}


def _slowest_party(outputs: Mapping[str, Any]) -> list[float]:
    """Per repetition, the time of the slowest party."""
    per_party = [list(out["times"]) for out in outputs.values()]
    return [max(ts) for ts in zip(*per_party, strict=True)]


def _per_mul(stats: Mapping[str, PartyStats], settled: bool = True) -> tuple[float, float]:
    """Rounds and bytes sent per multiplication, its truncation included: done in its own
    round ("truncate", when `settled`), or in the next product's (a chain); the maximum over
    parties."""
    rounds = bytes_sent = 0.0
    for party_stats in stats.values():
        op = party_stats.by_kind.get("mul")
        if op is None or not op.calls:
            continue
        truncate = party_stats.by_kind.get("truncate") if settled else None
        extra_rounds = truncate.rounds if truncate else 0
        extra_bytes = truncate.bytes_sent if truncate else 0
        rounds = max(rounds, (op.rounds + extra_rounds) / op.calls)
        bytes_sent = max(bytes_sent, (op.bytes_sent + extra_bytes) / op.calls)
    return rounds, bytes_sent


def _load() -> float:
    """The 1-minute load average (other work on a shared machine skews every timing)."""
    try:
        return os.getloadavg()[0]
    except OSError:  # pragma: no cover - not available on this platform
        return math.nan


def _rates(size: int, seconds: float, baseline: float) -> dict[str, float]:
    eps = size / seconds if seconds > 0 else math.inf
    base_eps = size / baseline if baseline > 0 else math.inf
    ratio = eps / base_eps
    return {
        "elements_per_s": eps,
        "baseline_elements_per_s": base_eps,
        "ratio": ratio,
        "ratio_percent": 100.0 * ratio,
    }


def _timings(size: int, total: Sequence[float], online: Sequence[float], baseline: float) -> Row:
    """The columns of a throughput row from the repetitions' times (slowest party each): the
    total median (the headline: `seconds`, `elements_per_s`, `ratio_percent`), the online
    median (`online_*`) and the best online repetition (`best_*`), each beside numpy."""
    median_total = statistics.median(total)
    median_online = statistics.median(online)
    best = min(online)
    return {
        "seconds": median_total,
        "baseline_seconds": baseline,
        **_rates(size, median_total, baseline),
        "online_seconds": median_online,
        "online_elements_per_s": size / median_online,
        "online_ratio_percent": 100.0 * baseline / median_online,
        "best_seconds": best,
        "best_elements_per_s": size / best,
        "best_ratio_percent": 100.0 * baseline / best,
        "total_best_seconds": min(total),
        "total_times": list(total),
        "online_times": list(online),
    }


# ---- in-process protocols ---------------------------------------------------------------------
def _local_parties(cls: type[Protocol], n: int, threshold: int, timeout: float) -> LocalParties:
    names = (
        _IN_PROCESS_NAMES[:n]
        if n <= len(_IN_PROCESS_NAMES)
        else tuple(f"party{i}" for i in range(n))
    )
    config = SessionConfig(tuple(names), cls.name, threshold, FIXED_POINT, timeout=timeout)
    return LocalParties(config, InsecureLocalDealer(cls.make_scheme(n, threshold)))


def _dealer_fetches(local: LocalParties) -> int:
    return sum(c.correction_fetches for c in local.dealer_clients if c is not None)


def _inprocess_row(
    local: LocalParties, cls: type[Protocol], n: int, size: int, repeats: int
) -> Row:
    warmup = 1
    baseline = numpy_baseline(size)
    x, y = bench_data(size)
    first = local.config.parties[0]
    # Total: nothing prefetched, the (in-process) dealer generates while the parties wait.
    outcomes = local.run(_mul_program, size, warmup, repeats, True)
    total = _slowest_party({name: o.output for name, o in outcomes.items()})
    check_product(x, y, outcomes[first].output["product"])
    # Online: the dealer items of the same run fetched (generated) beforehand.
    local.preprocess(local.dealer_usage(), 1)
    fetches = _dealer_fetches(local)
    outcomes = local.run(_mul_program, size, warmup, repeats, True)
    if _dealer_fetches(local) != fetches:
        raise BenchmarkError(
            f"{cls.name}: the online run fetched from the dealer although its corrections were "
            "prefetched; the timing would include dealer generation"
        )
    outputs = {name: o.output for name, o in outcomes.items()}
    stats = {name: o.stats for name, o in outcomes.items()}
    max_error_ulp = check_product(x, y, outputs[first]["product"])
    rounds, bytes_sent = _per_mul(stats)
    row: Row = {
        "bench": "inprocess",
        "protocol": cls.name,
        "n": n,
        "size": size,
        "repeats": repeats,
        **_timings(size, total, _slowest_party(outputs), baseline),
        "rounds_per_mul": rounds,
        "bytes_per_party_per_mul": bytes_sent,
        "max_error_ulp": max_error_ulp,
        "verified": True,
        "load_1min": _load(),
    }
    return row


def bench_inprocess(
    sizes: Sequence[int] = (1000, 100_000, 1_000_000),
    parties: Sequence[int] = (2, 3),
    protocols: Sequence[str] | None = None,
    repeats: int = 3,
    *,
    timeout: float = 300.0,
    verbose: bool = True,
) -> list[Row]:
    """Element-wise fixed-point multiplication x * y of every protocol, in-process.

    For each protocol (all registered ones by default) and party count it accepts, one
    `LocalParties` (threads, in-memory transport, insecure in-process dealer) runs every size.
    Per size, twice: inputs are shared once, one warm-up product, then `repeats` timed
    products; first with nothing prefetched (the total: the dealer generates while the parties
    wait), then with the dealer corrections of every product fetched beforehand (online). The
    row holds both medians (the total as the headline) and the best online repetition beside
    numpy ``a*b + c`` measured just before (`_timings`). The revealed products are checked
    (`check_product`); a wrong product raises `BenchmarkError`. The process's allocator is
    tuned as in party actors (`tune_allocator`), for the baseline too.
    """
    tune_allocator()
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    classes = (
        available_protocols() if protocols is None else {p: get_protocol(p) for p in protocols}
    )
    rows: list[Row] = []
    for name, cls in classes.items():
        for n in parties:
            try:
                threshold = cls.check_parties(n, None)
            except ValueError as exc:
                if verbose:
                    progress(f"inprocess {name} n={n}: skipped ({exc})")
                continue
            local = _local_parties(cls, n, threshold, timeout)
            for size in sizes:
                row = _inprocess_row(local, cls, n, size, repeats)
                rows.append(row)
                if verbose:
                    progress(
                        f"inprocess {name} n={n} size={size}: total {row['elements_per_s']:.3g} "
                        f"el/s ({row['ratio_percent']:.2f}% of numpy), online "
                        f"{row['online_elements_per_s']:.3g} el/s"
                    )
    return rows


# ---- asyncio TCP baseline ---------------------------------------------------------------------
async def _echo_serve(conn: Connection) -> None:
    done = asyncio.Event()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                writer.write(await reader.readexactly(_PING_BYTES))
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()
            done.set()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    conn.send(server.sockets[0].getsockname()[1])
    try:
        await asyncio.wait_for(done.wait(), timeout=300)
    finally:
        server.close()


def _echo_main(conn: Connection) -> None:
    """Child process of `asyncio_pingpong_rtt`: echo 16-byte messages until the client leaves."""
    asyncio.run(_echo_serve(conn))


async def _ping(port: int, rounds: int, warmup: int) -> float:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    payload = bytes(_PING_BYTES)
    try:
        for _ in range(warmup):
            writer.write(payload)
            await reader.readexactly(_PING_BYTES)
        start = time.perf_counter()
        for _ in range(rounds):
            writer.write(payload)
            await reader.readexactly(_PING_BYTES)
        return (time.perf_counter() - start) / rounds
    finally:
        writer.close()
        await writer.wait_closed()


def asyncio_pingpong_rtt(rounds: int = 2000, warmup: int = 200) -> float:
    """Seconds per round trip of a 16-byte asyncio TCP ping-pong on 127.0.0.1 (two processes)."""
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    server = ctx.Process(target=_echo_main, args=(child,), daemon=True)
    server.start()
    try:
        if not parent.poll(60):
            raise BenchmarkError("the asyncio echo server did not start within 60 s")
        port = int(parent.recv())
        return asyncio.run(_ping(port, rounds, warmup))
    finally:
        server.join(30)
        if server.is_alive():
            server.terminate()
            server.join(5)


# ---- Ray runtime ------------------------------------------------------------------------------
def _online_run(session: Any, program: Any, *args: Any) -> Any:
    """Run `program(*args)` again, with the dealer items of its last run (the same program
    and arguments) prepared beforehand (`Session.preprocess`), and check that the run made the
    dealer generate nothing (so its timing holds no dealer work)."""
    session.preprocess(program)
    generated = session.dealer_stats().get("items")
    result = session.run(program, *args)
    if session.dealer_stats().get("items") != generated:
        raise BenchmarkError(
            "the online run made the dealer generate items although they were prepared "
            "beforehand; its timing would include dealer work"
        )
    return result


def _ray_throughput_row(
    session: Any, transport: str, protocol: str, size: int, repeats: int
) -> Row:
    # Steady state: the first products of a size fault in fresh buffers and grow TCP windows.
    warmup = 3
    x, y = bench_data(size)
    first = session.parties[0]
    baseline = numpy_baseline(size)
    # The first runs of a size in a session are slower: the parties', the dealer's and Ray's
    # object store's fresh pages fault in. One untimed run of warm-up products first.
    session.run(_mul_program, size, 2 * warmup, 0, False)
    # Total: nothing prefetched, the dealer actor generates every item when a party asks (the
    # parties ask for a stream's next item while they use the current one).
    result = session.run(_mul_program, size, warmup, repeats, True)
    total = _slowest_party(result.outputs)
    check_product(x, y, result.outputs[first]["product"])
    result = _online_run(session, _mul_program, size, warmup, repeats, True)
    max_error_ulp = check_product(x, y, result.outputs[first]["product"])
    rounds, bytes_sent = _per_mul(result.stats)
    return {
        "bench": "ray",
        "kind": "throughput",
        "transport": transport,
        "protocol": protocol,
        "n": len(session.parties),
        "size": size,
        "repeats": repeats,
        **_timings(size, total, _slowest_party(result.outputs), baseline),
        "rounds_per_mul": rounds,
        "bytes_per_party_per_mul": bytes_sent,
        "max_error_ulp": max_error_ulp,
        "verified": True,
        "load_1min": _load(),
    }


def _ray_latency_row(
    session: Any, transport: str, protocol: str, chain: int, repeats: int, rtt: float
) -> Row:
    warmup = 10
    products = warmup + chain * repeats

    def checked(result: Any) -> list[float]:
        z = result.outputs[session.parties[0]]["product"]
        drift = _CHAIN_START - float(np.asarray(z).reshape(-1)[0])
        if not 0.0 <= drift <= products * ULP:  # each product: 0 or -1 ulp
            raise BenchmarkError(f"the chained product drifted by {drift!r} (<= 1 ulp each)")
        return _slowest_party(result.outputs)

    # Total: nothing prefetched (small items: the parties fetch growing batches, one ahead).
    total = checked(session.run(_chain_program, chain, warmup, repeats))
    result = _online_run(session, _chain_program, chain, warmup, repeats)
    online = checked(result)
    per_mul = statistics.median(total)
    rounds, bytes_sent = _per_mul(result.stats, settled=False)  # the reveal's truncation aside
    return {
        "bench": "ray",
        "kind": "latency",
        "transport": transport,
        "protocol": protocol,
        "n": len(session.parties),
        "size": 1,
        "chain": chain,
        "repeats": repeats,
        "seconds_per_mul": per_mul,
        "ms_per_mul": per_mul * 1e3,
        "online_ms_per_mul": statistics.median(online) * 1e3,
        "best_ms_per_mul": min(online) * 1e3,
        "total_times": total,
        "online_times": online,
        "rounds_per_mul": rounds,
        "bytes_per_party_per_mul": bytes_sent,
        "baseline_rtt_us": rtt * 1e6,
        "baseline_ms_per_mul": rounds * rtt * 1e3,
        "latency_ratio": per_mul / (rounds * rtt) if rounds and rtt else math.inf,
        "verified": True,
        "load_1min": _load(),
    }


def bench_ray(
    sizes: Sequence[int] = (1000, 100_000, 1_000_000),
    transports: Sequence[str] = ("tcp", "tcp-plaintext", "ray"),
    protocol: str = "additive",
    chain: int = 100,
    repeats: int = 5,
    *,
    timeout: float = 120.0,
    pingpong_rounds: int = 2000,
    verbose: bool = True,
) -> dict[str, Any]:
    """Throughput and round latency of the Ray runtime (3 party actors), per transport.

    Ray is started once (2 CPUs, no dashboard) unless already initialised, and shut down at the
    end if this function started it; each transport gets one `Session` (trusted-dealer actor).
    Throughput: per size, two runs of three warm-up and `repeats` timed products x * y (timed
    inside the program at each party, slowest party), checked with `check_product`: the total
    (nothing prefetched: the dealer generates on demand) and the online phase (every item
    prepared with `Session.preprocess`; the dealer must generate nothing during the run); the
    row holds both medians and the best online repetition (`_timings`). Latency: `repeats`
    chains of `chain` dependent length-1 products, time per product, total and online likewise.
    Baselines in the same run: numpy ``a*b + c`` (per size) and an asyncio TCP ping-pong round
    trip between two processes (`asyncio_pingpong_rtt`).
    Returns {"throughput": rows, "latency": rows, "baseline": {...}, "config": {...}}.
    """
    import ray

    from mpc.session import Session

    if repeats < 1 or chain < 1:
        raise ValueError(f"repeats and chain must be >= 1, got {repeats} and {chain}")
    if verbose:
        progress(f"asyncio TCP ping-pong baseline ({pingpong_rounds} round trips)")
    rtt = asyncio_pingpong_rtt(pingpong_rounds)
    if verbose:
        progress(f"asyncio TCP ping-pong: {rtt * 1e6:.1f} us per round trip")
    started = False
    if not ray.is_initialized():
        ray.init(
            address="local",  # a Ray of its own, even if a `ray start` cluster is up
            num_cpus=2,
            include_dashboard=False,
            logging_level=logging.WARNING,
            log_to_driver=False,
        )
        started = True
    throughput: list[Row] = []
    latency: list[Row] = []
    try:
        for transport in transports:
            if verbose:
                progress(f"ray {transport}: starting a session ({protocol}, 3 parties)")
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # tcp-plaintext warns: measuring it is the point
                session = Session(
                    list(_RAY_PARTIES),
                    protocol=protocol,
                    transport=transport,
                    runtime="ray",
                    timeout=timeout,
                )
            with session:
                for size in sizes:
                    row = _ray_throughput_row(session, transport, protocol, size, repeats)
                    throughput.append(row)
                    if verbose:
                        progress(
                            f"ray {transport} size={size}: total {row['elements_per_s']:.3g} "
                            f"el/s ({row['ratio_percent']:.2f}% of numpy), online "
                            f"{row['online_ratio_percent']:.2f}%, best "
                            f"{row['best_ratio_percent']:.2f}%"
                        )
                lat = _ray_latency_row(session, transport, protocol, chain, repeats, rtt)
                latency.append(lat)
                if verbose:
                    progress(
                        f"ray {transport} chain={chain}: total {lat['ms_per_mul']:.3f} ms per "
                        f"product, online {lat['online_ms_per_mul']:.3f}, best "
                        f"{lat['best_ms_per_mul']:.3f} (asyncio: "
                        f"{lat['baseline_ms_per_mul']:.3f} ms for {lat['rounds_per_mul']:g} "
                        "round trips)"
                    )
    finally:
        if started:
            ray.shutdown()
    return {
        "throughput": throughput,
        "latency": latency,
        "baseline": {"asyncio_rtt_us": rtt * 1e6, "pingpong_rounds": pingpong_rounds},
        "config": {
            "protocol": protocol,
            "parties": list(_RAY_PARTIES),
            "transports": list(transports),
            "sizes": list(sizes),
            "chain": chain,
            "repeats": repeats,
        },
    }


# ---- output -----------------------------------------------------------------------------------
def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


def write_results(results: list[Row] | dict[str, Any], path_json: str | os.PathLike[str]) -> Path:
    """Write benchmark results with machine information as JSON; returns the path."""
    path = Path(path_json)
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": {
            "python": platform.python_version(),
            "numpy": np.__version__,
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "load_1min_at_write": _load(),
        },
        "results": results,
    }
    path.write_text(json.dumps(document, indent=2, default=_jsonable) + "\n")
    return path


def _throughput_rows(results: list[Row] | dict[str, Any]) -> list[Row]:
    if isinstance(results, dict):
        rows: list[Row] = list(results.get("throughput", []))
        return rows
    return list(results)


def _label(row: Row) -> str:
    if row.get("bench") == "ray":
        return f"ray/{row['transport']} ({row['protocol']}, n={row['n']})"
    return f"{row['protocol']} n={row['n']}"


def plot_throughput(results: list[Row] | dict[str, Any], path_png: str | os.PathLike[str]) -> Path:
    """Log-log plot of elements/s against size per configuration (the total median, and the
    online median dotted), numpy baseline dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = _throughput_rows(results)
    groups: dict[str, list[Row]] = {}
    for row in rows:
        groups.setdefault(_label(row), []).append(row)
    fig, ax = plt.subplots(figsize=(11, 5.5))
    for label, group in groups.items():
        group = sorted(group, key=lambda r: r["size"])
        sizes = [r["size"] for r in group]
        (line,) = ax.plot(
            sizes, [r["elements_per_s"] for r in group], marker="o", label=f"{label}, total"
        )
        if "online_elements_per_s" in group[0]:
            ax.plot(
                sizes,
                [r["online_elements_per_s"] for r in group],
                marker=".",
                linestyle=":",
                color=line.get_color(),
                label=f"{label}, online",
            )
    by_size: dict[int, list[float]] = {}
    for row in rows:
        by_size.setdefault(int(row["size"]), []).append(float(row["baseline_elements_per_s"]))
    if by_size:
        sizes = sorted(by_size)
        ax.plot(
            sizes,
            [float(np.median(by_size[s])) for s in sizes],
            linestyle="--",
            color="black",
            marker="s",
            label="numpy a*b+c (uint64)",
        )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("vector size (elements)")
    ax.set_ylabel("elements per second")
    ax.set_title("Element-wise fixed-point multiplication x*y (medians)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    path = Path(path_png)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def text_table(headers: Sequence[str], lines: Iterable[Sequence[str]]) -> str:
    """A plain-text table: first column left-aligned, the others right-aligned."""
    body = [list(headers), *[list(line) for line in lines]]
    widths = [max(len(r[i]) for r in body) for i in range(len(headers))]
    out = []
    for k, r in enumerate(body):
        out.append(
            "  ".join(
                c.ljust(w) if i == 0 else c.rjust(w)
                for i, (c, w) in enumerate(zip(r, widths, strict=True))
            )
        )
        if k == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def format_table(results: list[Row] | dict[str, Any]) -> str:
    """Text tables: throughput (total median, online median and best online repetition, each
    in seconds and % of numpy; numpy, rounds, bytes/party) and latency (likewise)."""
    rows = _throughput_rows(results)
    headers = [
        "configuration",
        "size",
        "total s",
        "total %",
        "online s",
        "online %",
        "best s",
        "best %",
        "numpy s",
        "rounds",
        "bytes/party",
        "load",
    ]
    lines = []
    for r in rows:
        line = [
            _label(r),
            f"{r['size']:,}",
            f"{r['seconds']:.4g}",
            f"{r['ratio_percent']:.3f}",
            f"{r['online_seconds']:.4g}",
            f"{r['online_ratio_percent']:.3f}",
            f"{r['best_seconds']:.4g}",
            f"{r['best_ratio_percent']:.3f}",
            f"{r['baseline_seconds']:.3g}",
            f"{r['rounds_per_mul']:g}",
            f"{r['bytes_per_party_per_mul']:,.0f}",
            f"{r.get('load_1min', math.nan):.1f}",
        ]
        lines.append(line)
    text = text_table(headers, lines)
    if isinstance(results, dict) and results.get("latency"):
        lat_lines = [
            [
                _label(r),
                f"{r['chain']}",
                f"{r['ms_per_mul']:.3f}",
                f"{r['online_ms_per_mul']:.3f}",
                f"{r['best_ms_per_mul']:.3f}",
                f"{r['rounds_per_mul']:g}",
                f"{r['baseline_rtt_us']:.1f}",
                f"{r['baseline_ms_per_mul']:.3f}",
                f"{r['latency_ratio']:.1f}x",
                f"{r.get('load_1min', math.nan):.1f}",
            ]
            for r in results["latency"]
        ]
        text += "\n\n" + text_table(
            [
                "configuration",
                "chain",
                "total ms",
                "online ms",
                "best ms",
                "rounds",
                "asyncio RTT us",
                "rounds x RTT ms",
                "vs asyncio",
                "load",
            ],
            lat_lines,
        )
    return text
