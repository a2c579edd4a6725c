"""Latency (and bulk throughput) of the TCP transport: 3 party processes on loopback.

A full-mesh round is: every party sends a 16-byte array to each of its two peers and waits for
both peers' arrays, through `TcpTransport.exchange` as the party runtime does (or `send` then
`recv` where the transport has no `exchange`, e.g. older checkouts, for A/B comparisons). The
script prints the mean time per round over `--rounds` rounds, encrypted and plaintext, beside a
plain asyncio TCP ping-pong (16 bytes there and back between two processes) measured in the same
run, and the time to move 8 MB arrays from one party to another.

Run: python benchmarks/tcp_roundtrip.py [--rounds 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import socket
import statistics
import time
import warnings
from multiprocessing.connection import Connection

import numpy as np

NAMES = ["p0", "p1", "p2"]
SESSION = b"benchmark-session-0001"
WARMUP = 200
BULK_BYTES = 8 * 1024 * 1024
BULK_COUNT = 20


def _party(rank: int, encrypt: bool, rounds: int, pipe: Connection) -> None:
    from mpc.parties.keys import PartyKey
    from mpc.parties.tcp import PlaintextTransportWarning, TcpTransport

    key = PartyKey.generate()
    pipe.send(key.public_bytes)
    publics: dict[str, bytes] = pipe.recv()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PlaintextTransportWarning)
        transport = TcpTransport(
            rank,
            NAMES,
            key=key if encrypt else None,
            peer_keys={n: k for n, k in publics.items() if n != NAMES[rank]} if encrypt else None,
            session_id=SESSION,
            encrypt=encrypt,
        )
    pipe.send(transport.listen())
    transport.connect(pipe.recv())
    peers = [p for p in range(len(NAMES)) if p != rank]
    message = np.zeros(2, dtype=np.uint64)  # 16 bytes

    exchange = getattr(transport, "exchange", None)

    def rounds_of(run: int, count: int) -> float:
        start = time.perf_counter()
        outgoing = dict.fromkeys(peers, message)
        for r in range(count):
            if exchange is not None:
                exchange((run, r), outgoing, peers, 30.0)
                continue
            for p in peers:
                transport.send(p, (run, r), message)
            for p in peers:
                transport.recv(p, (run, r), 30.0)
        return time.perf_counter() - start

    rounds_of(0, WARMUP)
    elapsed = rounds_of(1, rounds)
    # bulk: party 0 sends BULK_COUNT arrays of 8 MB to party 1, which acknowledges the last one
    bulk = np.arange(BULK_BYTES // 8, dtype=np.uint64)
    rounds_of(2, 10)  # re-synchronise
    bulk_time = 0.0
    if rank == 0:
        start = time.perf_counter()
        for i in range(BULK_COUNT):
            transport.send(1, (3, i), bulk)
        transport.recv(1, (4, 0), 60.0)
        bulk_time = time.perf_counter() - start
    elif rank == 1:
        for i in range(BULK_COUNT):
            got = transport.recv(0, (3, i), 60.0)
        assert got[-1] == bulk[-1]
        transport.send(0, (4, 0), message)
    rounds_of(5, 10)  # nobody closes while others still wait
    pipe.send((elapsed / rounds, bulk_time))
    transport.close()


def measure_mesh(encrypt: bool, rounds: int) -> tuple[list[float], float]:
    ctx = mp.get_context("spawn")
    pipes = [ctx.Pipe() for _ in NAMES]
    procs = [
        ctx.Process(target=_party, args=(rank, encrypt, rounds, pipes[rank][1]))
        for rank in range(len(NAMES))
    ]
    for proc in procs:
        proc.start()
    ends = [parent for parent, _ in pipes]
    publics = {NAMES[i]: end.recv() for i, end in enumerate(ends)}
    for end in ends:
        end.send(publics)
    addresses = {NAMES[i]: end.recv() for i, end in enumerate(ends)}
    for end in ends:
        end.send(addresses)
    results = [end.recv() for end in ends]
    for proc in procs:
        proc.join(30)
    return [r[0] for r in results], results[0][1]


async def _echo_server(port_pipe: Connection, count: int) -> None:
    done = asyncio.Event()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for _ in range(count):
            writer.write(await reader.readexactly(16))
            await writer.drain()
        writer.close()
        done.set()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port_pipe.send(server.sockets[0].getsockname()[1])
    await done.wait()
    server.close()


def _run_echo_server(port_pipe: Connection, count: int) -> None:
    asyncio.run(_echo_server(port_pipe, count))


async def _ping(port: int, rounds: int) -> float:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    payload = bytes(16)
    for _ in range(WARMUP):
        writer.write(payload)
        await reader.readexactly(16)
    start = time.perf_counter()
    for _ in range(rounds):
        writer.write(payload)
        await reader.readexactly(16)
    elapsed = time.perf_counter() - start
    writer.close()
    return elapsed / rounds


def measure_asyncio_pingpong(rounds: int) -> float:
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    server = ctx.Process(target=_run_echo_server, args=(child, WARMUP + rounds))
    server.start()
    port = parent.recv()
    result = asyncio.run(_ping(port, rounds))
    server.join(30)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=2000)
    args = parser.parse_args()
    rounds = args.rounds
    baseline = measure_asyncio_pingpong(rounds)
    print(f"asyncio TCP ping-pong (16 B, round trip, 2 processes): {baseline * 1e6:8.1f} us")
    for encrypt in (True, False):
        label = "encrypted" if encrypt else "plaintext"
        per_party, bulk = measure_mesh(encrypt, rounds)
        mean = statistics.mean(per_party)
        rate = BULK_COUNT * BULK_BYTES / bulk / 1e6
        print(
            f"TcpTransport {label:9s} full-mesh round (3 processes, 16 B to each peer): "
            f"{mean * 1e6:8.1f} us  (per party: "
            + ", ".join(f"{x * 1e6:.1f}" for x in per_party)
            + f");  8 MB arrays: {bulk / BULK_COUNT * 1e3:.1f} ms each, {rate:.0f} MB/s"
        )


if __name__ == "__main__":
    main()
