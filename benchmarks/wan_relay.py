"""A TCP delay relay: latency for links on a kernel without netem, plus tools that measure it.

Responsibility: `relay` accepts connections on its listen ports and connects each to that
route's target; every chunk read in either direction is held for the one-way delay (counted
from its arrival) and then forwarded, in order. A connection through a relay of delay d thus
has a round trip of 2d plus the relay's own overhead, which `ping` measures (a 16-byte
ping-pong) and `bulk` measures for rates (a sink replies with the SHA-256 of what it got, so
bytes are checked too). Rate limits are not done here: `tc tbf` on the hosts' links does them.
Model, and its limit: the relay terminates TCP on both sides (a split-TCP proxy), so each
side's congestion window grows over a near-zero round trip; real WAN TCP ramps up slower.
Only standard library: runs as ``python benchmarks/wan_relay.py relay|serve|ping|bulk ...``,
one process per link direction, in any network namespace. No root needed here.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import signal
import socket
import statistics
import sys
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["Route", "bulk", "echo_check", "main", "parse_route", "ping", "relay", "serve"]

CHUNK = 256 * 1024
#: Bytes one direction of a relayed connection may hold before it stops reading (backpressure).
MAX_HELD = 32 * 2**20
#: A relayed connection idle for this long in both directions is closed (seconds).
IDLE_TIMEOUT = 900.0
#: The tools' receive timeout (seconds): ping, bulk, and the test server.
IO_TIMEOUT = 30.0
_ECHO, _SINK = b"E", b"S"


@dataclass(frozen=True)
class Route:
    """Accept on `listen_port` (all addresses), forward to `target_host`:`target_port`."""

    listen_port: int
    target_host: str
    target_port: int


def parse_route(text: str) -> Route:
    """``LISTEN_PORT=HOST:PORT`` -> Route."""
    listen, _, target = text.partition("=")
    host, _, port = target.rpartition(":")
    if not listen.isdigit() or not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"a route is LISTEN_PORT=HOST:PORT, got {text!r}")
    return Route(int(listen), host, int(port))


# ---- the relay --------------------------------------------------------------------------------
class _Direction:
    """One direction of a relayed connection: chunks held until due, then written in order."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float
    ) -> None:
        self.reader, self.writer, self.delay = reader, writer, delay
        self.held: deque[tuple[float, bytes]] = deque()
        self.held_bytes = 0
        self.changed = asyncio.Event()
        self.last_activity = time.monotonic()

    async def receive(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            while self.held_bytes > MAX_HELD:
                self.changed.clear()
                await self.changed.wait()
            data = await self.reader.read(CHUNK)  # idle connections: see `_watch_idle`
            self.last_activity = time.monotonic()
            self.held.append((loop.time() + self.delay, data))
            self.held_bytes += len(data)
            self.changed.set()
            if not data:
                return

    async def send(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            while not self.held:
                self.changed.clear()
                await self.changed.wait()
            due, data = self.held[0]
            wait = due - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            self.held.popleft()
            self.held_bytes -= len(data)
            self.changed.set()
            if not data:
                if self.writer.can_write_eof():
                    self.writer.write_eof()
                return
            self.writer.write(data)
            await self.writer.drain()


async def _watch_idle(directions: Sequence[_Direction], idle: float) -> None:
    while True:
        quiet = time.monotonic() - max(d.last_activity for d in directions)
        if quiet >= idle and not any(d.held for d in directions):
            return
        await asyncio.sleep(max(1.0, idle - quiet))


async def _relay_one(
    client_reader: asyncio.StreamReader,
    client_writer: asyncio.StreamWriter,
    route: Route,
    delay: float,
    idle: float,
) -> None:
    try:
        up_reader, up_writer = await asyncio.wait_for(
            asyncio.open_connection(route.target_host, route.target_port), IO_TIMEOUT
        )
    except (OSError, TimeoutError):
        client_writer.close()  # like a refused connection: the dialer retries
        return
    forward = _Direction(client_reader, up_writer, delay)
    backward = _Direction(up_reader, client_writer, delay)
    tasks = [
        asyncio.ensure_future(c)
        for c in (forward.receive(), forward.send(), backward.receive(), backward.send())
    ]
    watch = asyncio.ensure_future(_watch_idle((forward, backward), idle))
    try:
        pending = set(tasks)
        while pending:
            done, pending = await asyncio.wait(
                pending | {watch}, return_when=asyncio.FIRST_COMPLETED
            )
            pending.discard(watch)
            if watch in done or any(t.exception() for t in done if t is not watch):
                break  # idle for too long, or a reset: drop both sides
    finally:
        for task in [*tasks, watch]:
            task.cancel()
        for writer in (client_writer, up_writer):
            writer.close()
        for task in [*tasks, watch]:
            with contextlib.suppress(BaseException):
                await task


async def relay(
    routes: Sequence[Route],
    delay: float,
    *,
    idle: float = IDLE_TIMEOUT,
    ready: asyncio.Event | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """Serve `routes` with one-way `delay` seconds in each direction until `stop` is set."""
    if delay < 0:
        raise ValueError(f"the delay must be >= 0 seconds, got {delay}")
    servers = []
    for route in routes:

        async def handle(
            r: asyncio.StreamReader, w: asyncio.StreamWriter, route: Route = route
        ) -> None:
            with contextlib.suppress(asyncio.CancelledError):  # at shutdown: exit quietly
                await _relay_one(r, w, route, delay, idle)

        servers.append(await asyncio.start_server(handle, "0.0.0.0", route.listen_port))
    try:
        if ready is not None:
            ready.set()
        await (stop or asyncio.Event()).wait()
    finally:
        for server in servers:
            server.close()


# ---- measurement tools ------------------------------------------------------------------------
async def _serve_one(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(asyncio.CancelledError):  # at shutdown: exit quietly
        await _serve_connection(reader, writer)


async def _serve_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        mode = await asyncio.wait_for(reader.readexactly(1), IO_TIMEOUT)
        if mode == _ECHO:
            while True:
                data = await asyncio.wait_for(reader.read(CHUNK), IO_TIMEOUT)
                if not data:
                    break
                writer.write(data)
                await writer.drain()
        elif mode == _SINK:
            size = int.from_bytes(await asyncio.wait_for(reader.readexactly(8), IO_TIMEOUT))
            digest = hashlib.sha256()
            left = size
            while left:
                data = await asyncio.wait_for(reader.read(min(CHUNK, left)), IO_TIMEOUT)
                if not data:
                    break
                digest.update(data)
                left -= len(data)
            writer.write(digest.digest())
            await writer.drain()
    except (OSError, TimeoutError, asyncio.IncompleteReadError):
        pass
    finally:
        writer.close()


async def serve(port: int, *, stop: asyncio.Event | None = None) -> None:
    """The far end for `ping` (echo) and `bulk` (sink answering the SHA-256 of the bytes)."""
    server = await asyncio.start_server(_serve_one, "0.0.0.0", port)
    try:
        await (stop or asyncio.Event()).wait()
    finally:
        server.close()


def _connect(host: str, port: int) -> socket.socket:
    deadline = time.monotonic() + IO_TIMEOUT
    while True:
        try:
            sock = socket.create_connection((host, port), timeout=IO_TIMEOUT)
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.settimeout(IO_TIMEOUT)
    return sock


def _recv_exactly(sock: socket.socket, size: int) -> bytes:
    parts = []
    while size:
        data = sock.recv(min(size, CHUNK))
        if not data:
            raise ConnectionError("the connection closed early")
        parts.append(data)
        size -= len(data)
    return b"".join(parts)


def ping(host: str, port: int, count: int, size: int = 16, warmup: int = 3) -> list[float]:
    """Round-trip seconds of `count` ping-pongs of `size` bytes to a `serve` echo."""
    with _connect(host, port) as sock:
        sock.sendall(_ECHO)
        payload = bytes(size)
        times = []
        for i in range(warmup + count):
            start = time.perf_counter()
            sock.sendall(payload)
            _recv_exactly(sock, size)
            if i >= warmup:
                times.append(time.perf_counter() - start)
        return times


def echo_check(host: str, port: int, payload: bytes) -> bytes:
    """Send `payload` to a `serve` echo and return what comes back (the same, if intact)."""
    with _connect(host, port) as sock:
        sock.sendall(_ECHO)
        sender = threading.Thread(target=sock.sendall, args=(payload,), daemon=True)
        sender.start()  # the echo answers while we send: read concurrently
        received = _recv_exactly(sock, len(payload))
        sender.join(IO_TIMEOUT)
        return received


def bulk(host: str, port: int, size: int) -> dict[str, float | bool]:
    """Send `size` bytes to a `serve` sink; seconds until its SHA-256 answer, and whether the
    answer matches what was sent."""
    block = bytes(range(256)) * (CHUNK // 256)
    digest = hashlib.sha256()
    with _connect(host, port) as sock:
        start = time.perf_counter()
        sock.sendall(_SINK + size.to_bytes(8))
        left = size
        while left:
            part = block[: min(left, len(block))]
            sock.sendall(part)
            digest.update(part)
            left -= len(part)
        answer = _recv_exactly(sock, 32)
        seconds = time.perf_counter() - start
    return {"bytes": size, "seconds": seconds, "intact": answer == digest.digest()}


def summarise(times: Sequence[float]) -> dict[str, float]:
    """Median, min and max of round-trip times, in milliseconds."""
    return {
        "median_ms": statistics.median(times) * 1e3,
        "min_ms": min(times) * 1e3,
        "max_ms": max(times) * 1e3,
        "count": float(len(times)),
    }


# ---- command line -----------------------------------------------------------------------------
async def _until_signal() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop


async def _run_relay(routes: Sequence[Route], delay: float) -> None:
    stop = await _until_signal()
    ready = asyncio.Event()
    task = asyncio.ensure_future(relay(routes, delay, ready=ready, stop=stop))
    waiting = asyncio.ensure_future(ready.wait())
    await asyncio.wait([task, waiting], timeout=IO_TIMEOUT, return_when=asyncio.FIRST_COMPLETED)
    waiting.cancel()
    if task.done() or not ready.is_set():
        await task  # raises what stopped it (a port in use, ...)
        raise RuntimeError("the relay did not start")
    print(f"relay ready: {len(routes)} routes, delay {delay * 1e3:g} ms", flush=True)
    await task


async def _run_server(port: int) -> None:
    stop = await _until_signal()
    task = asyncio.ensure_future(serve(port, stop=stop))
    await asyncio.sleep(0.05)
    print(f"server ready on port {port}", flush=True)
    await task


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("relay", help="delay every chunk of the routes' connections")
    p.add_argument("--delay-ms", type=float, required=True, help="one-way delay")
    p.add_argument("--route", type=parse_route, action="append", required=True)
    p = sub.add_parser("serve", help="echo / sink server for ping and bulk")
    p.add_argument("--port", type=int, required=True)
    p = sub.add_parser("ping", help="ping-pong round trips; prints JSON")
    p.add_argument("--to", required=True, help="HOST:PORT")
    p.add_argument("--count", type=int, default=30)
    p.add_argument("--size", type=int, default=16)
    p = sub.add_parser("bulk", help="one bulk transfer; prints JSON")
    p.add_argument("--to", required=True, help="HOST:PORT")
    p.add_argument("--bytes", type=int, required=True)
    args = parser.parse_args(argv)
    if args.command == "relay":
        asyncio.run(_run_relay(args.route, args.delay_ms / 1e3))
    elif args.command == "serve":
        asyncio.run(_run_server(args.port))
    else:
        host, _, port = args.to.rpartition(":")
        if args.command == "ping":
            times = ping(host, int(port), args.count, args.size)
            print(json.dumps({"rtt_s": times, **summarise(times)}))
        else:
            print(json.dumps(bulk(host, int(port), args.bytes)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
