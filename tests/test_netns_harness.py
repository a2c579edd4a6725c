"""Tests of the network-namespace host harness in tests/netns.py (needs root; fails otherwise)."""

from __future__ import annotations

import os
import select
import subprocess
import sys
import time
from pathlib import Path

import netns
import pytest
from netns import Host, HostCommandError, cleanup_stale, namespace_hosts, rate_limit

IP = "/usr/sbin/ip" if Path("/usr/sbin/ip").exists() else "ip"

ECHO_SERVER = r"""
import socket, sys
s = socket.socket()
s.bind((sys.argv[1], 0))
s.listen(8)
print(s.getsockname()[1], flush=True)
while True:
    c, _ = s.accept()
    c.sendall(b"echo:" + c.recv(100))
    c.close()
"""

ECHO_CLIENT = r"""
import socket, sys
c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)
c.sendall(sys.argv[3].encode())
print(c.recv(100).decode())
"""

SLEEPER = "import time; print('ready', flush=True); time.sleep(300)"

IGNORE_TERM = (
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
    "print('ready', flush=True); time.sleep(300)"
)

# Starts a grandchild in its own session (escaping the tracked process group), prints its pid.
DETACHED = (
    "import subprocess, sys, time; "
    "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(300)'], "
    "start_new_session=True); print(p.pid, flush=True); time.sleep(300)"
)


def _readline(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> str:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    assert ready, "process printed nothing in time"
    return proc.stdout.readline().decode().strip()


def _pid_alive(pid: int) -> bool:
    """True if `pid` exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2] != "Z"


def _netns_names() -> set[str]:
    out = subprocess.run([IP, "netns", "list"], capture_output=True, text=True, check=True)
    return {line.split()[0] for line in out.stdout.splitlines() if line.strip()}


def _link_names() -> set[str]:
    out = subprocess.run([IP, "-o", "link", "show"], capture_output=True, text=True, check=True)
    return {ln.split(":", 2)[1].strip().split("@")[0] for ln in out.stdout.splitlines()}


def _tag(host: Host) -> str:
    return host.netns.split("-", 1)[0]


def _assert_gone(tag: str, pids: list[int], tmp: Path) -> None:
    assert not [n for n in _netns_names() if n.startswith(tag)]
    assert not [n for n in _link_names() if n.startswith(tag)]  # bridge and veths
    for pid in pids:
        assert not _pid_alive(pid), f"pid {pid} still alive"
    assert not tmp.exists()


def test_tcp_between_hosts_and_loopback() -> None:
    with namespace_hosts(["north", "south", "east"], subnet_octet=77) as hosts:
        north, south, east = hosts["north"], hosts["south"], hosts["east"]
        assert [h.ip for h in hosts.values()] == ["10.231.77.10", "10.231.77.11", "10.231.77.12"]
        assert len({h.netns for h in hosts.values()}) == 3
        assert all(h.netns.startswith(netns.PREFIX) and len(h.netns) <= 15 for h in hosts.values())
        assert f"{_tag(north)}br" in _link_names()

        server = north.popen([sys.executable, "-c", ECHO_SERVER, north.ip], stdout=subprocess.PIPE)
        port = _readline(server)
        for client in (south, east):
            out = client.run(
                [sys.executable, "-c", ECHO_CLIENT, north.ip, port, client.name], timeout=10
            )
            assert out.stdout.strip() == f"echo:{client.name}"

        # Loopback works inside a namespace and is private to it.
        lo_server = south.popen(
            [sys.executable, "-c", ECHO_SERVER, "127.0.0.1"], stdout=subprocess.PIPE
        )
        lo_port = _readline(lo_server)
        out = south.run([sys.executable, "-c", ECHO_CLIENT, "127.0.0.1", lo_port, "lo"], timeout=10)
        assert out.stdout.strip() == "echo:lo"
        res = east.run(
            [sys.executable, "-c", ECHO_CLIENT, "127.0.0.1", lo_port, "x"], timeout=10, check=False
        )
        assert res.returncode != 0 and "Connection refused" in res.stderr


def test_cleanup_after_exit_removes_everything() -> None:
    with namespace_hosts(["a", "b"]) as hosts:
        a = hosts["a"]
        tag, tmp = _tag(a), a.tmp.parent
        sleeper = a.popen([sys.executable, "-c", SLEEPER], stdout=subprocess.PIPE)
        detached = hosts["b"].popen([sys.executable, "-c", DETACHED], stdout=subprocess.PIPE)
        assert _readline(sleeper) == "ready"
        grandchild = int(_readline(detached))
        assert _pid_alive(sleeper.pid) and _pid_alive(grandchild)
        assert tmp.is_dir() and a.tmp.is_dir()
        assert {a.netns, hosts["b"].netns} <= _netns_names()
    assert sleeper.returncode is not None and detached.returncode is not None
    with pytest.raises(ProcessLookupError):
        os.kill(sleeper.pid, 0)  # reaped: the pid no longer exists
    _assert_gone(tag, [sleeper.pid, detached.pid, grandchild], tmp)


def test_cleanup_when_body_raises() -> None:
    with pytest.raises(ValueError, match="boom"), namespace_hosts(["x", "y"]) as hosts:
        tag, tmp = _tag(hosts["x"]), hosts["x"].tmp.parent
        proc = hosts["y"].popen([sys.executable, "-c", SLEEPER], stdout=subprocess.PIPE)
        assert _readline(proc) == "ready"
        raise ValueError("boom")
    _assert_gone(tag, [proc.pid], tmp)


def test_process_ignoring_sigterm_is_killed() -> None:
    with namespace_hosts(["solo"]) as hosts:
        tag, tmp = _tag(hosts["solo"]), hosts["solo"].tmp.parent
        proc = hosts["solo"].popen([sys.executable, "-c", IGNORE_TERM], stdout=subprocess.PIPE)
        assert _readline(proc) == "ready"
        start = time.monotonic()
    assert time.monotonic() - start >= 2.5  # it got the SIGTERM grace period first
    assert proc.returncode == -9
    _assert_gone(tag, [proc.pid], tmp)


def test_env_run_errors_and_rate_limit() -> None:
    with namespace_hosts(["p", "q"]) as hosts:
        p, q = hosts["p"], hosts["q"]
        assert p.tmp != q.tmp and p.tmp.is_dir() and q.tmp.is_dir()
        env = p.env(EXTRA="1")
        assert env["TMPDIR"] == str(p.tmp) and env["EXTRA"] == "1"
        assert env["PATH"] == os.environ["PATH"]
        out = p.run(
            [sys.executable, "-c", "import tempfile; print(tempfile.gettempdir())"], timeout=10
        )
        assert out.stdout.strip() == str(p.tmp)

        with pytest.raises(HostCommandError, match=r"(?s)exited with code 3.*out-text.*err-text"):
            p.run(
                [
                    sys.executable,
                    "-c",
                    "import sys; print('out-text'); print('err-text', file=sys.stderr); "
                    "sys.exit(3)",
                ],
                timeout=10,
            )
        with pytest.raises(HostCommandError, match=r"(?s)timed out.*partial"):
            p.run(
                [sys.executable, "-c", "print('partial', flush=True); import time; time.sleep(60)"],
                timeout=1,
            )

        rate_limit(p, 8)
        qdisc = p.run(["tc", "qdisc", "show", "dev", "eth0"], timeout=10).stdout
        assert "tbf" in qdisc and "8Mbit" in qdisc
        # p's egress is shaped: 400 kB (3.2 Mbit) from p to q takes ~0.4 s at 8 Mbit/s.
        sink = q.popen(
            [
                sys.executable,
                "-c",
                "import socket; s = socket.socket(); s.bind(('" + q.ip + "', 0)); s.listen(1); "
                "print(s.getsockname()[1], flush=True); c, _ = s.accept(); n = 0\n"
                "while (d := c.recv(65536)): n += len(d)\nprint(n, flush=True)",
            ],
            stdout=subprocess.PIPE,
        )
        port = _readline(sink)
        sent = p.run(
            [
                sys.executable,
                "-c",
                "import socket, sys, time; c = socket.create_connection((sys.argv[1], "
                "int(sys.argv[2]))); t = time.monotonic(); c.sendall(b'x' * 400_000); "
                "c.shutdown(socket.SHUT_WR); c.recv(1); print(time.monotonic() - t)",
                q.ip,
                port,
            ],
            timeout=10,
        )
        assert _readline(sink) == "400000"
        assert float(sent.stdout) > 0.25


def test_cleanup_stale_removes_dead_runs_only() -> None:
    # A prefix private to this process, so that concurrent runs cannot disturb each other.
    prefix = f"mZ{os.getpid() % 100000:05d}"
    tag = f"{prefix}0000z"  # no owner file: a crashed run
    subprocess.run([IP, "netns", "add", f"{tag}-dead"], check=True)
    subprocess.run([IP, "link", "add", f"{tag}br", "type", "bridge"], check=True)
    subprocess.run(
        [IP, "link", "add", f"{tag}v0", "type", "veth", "peer", "name", f"{tag}p0"], check=True
    )
    try:
        assert tag in cleanup_stale(prefix)
        assert not [n for n in _netns_names() | _link_names() if n.startswith(tag)]
    finally:
        cleanup_stale(prefix)

    with namespace_hosts(["live"]) as hosts:
        assert _tag(hosts["live"]) not in cleanup_stale()  # a live run is left alone
        assert hosts["live"].netns in _netns_names()
        hosts["live"].run(["true"], timeout=5)


def test_missing_root_or_ip_fails_loudly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(RuntimeError, match=r"root.*must run as root"), namespace_hosts(["a"]):
        pass
    monkeypatch.undo()
    monkeypatch.setattr(netns, "_find_tool", lambda name: None)
    with pytest.raises(RuntimeError, match="'ip' tool"), namespace_hosts(["a"]):
        pass
