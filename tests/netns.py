"""Several "hosts" on one Linux machine, built from network namespaces, for multi-machine tests.

Responsibility
    `namespace_hosts(["north", "south"])` gives each name its own network namespace with a
    working loopback and an ``eth0`` on a private /24 (``10.231.X.0/24``), all joined by one
    bridge, so software that must run across machines (Ray clusters, TCP transports) can be
    tested with real, separate network stacks.  Processes started through `Host.popen` /
    `Host.run` run inside the host's namespace, in their own session, and are killed when
    the context exits.  `rate_limit` shapes a host's outgoing traffic with ``tc tbf``.

What it touches on the machine (everything named with the prefix ``mpcT``)
    * network namespaces ``mpcT<tag>-<name>`` (``ip netns add``, i.e. ``/run/netns``);
    * one bridge ``mpcT<tag>br`` and veth pairs ``mpcT<tag>v<i>`` / ``mpcT<tag>p<i>``
      in the root namespace (the ``p`` end is moved into the host's namespace as ``eth0``);
    * an owner file ``/run/mpcT-netns-owners/mpcT<tag>`` (pid and start time of the
      creating process, so that `cleanup_stale` never removes the objects of a live run);
    * a temp dir ``/tmp/mpcT<tag>-*`` holding one private ``TMPDIR`` per host.
    The bridge gets no IP address and the root namespace gets no route to the subnet, so
    traffic between hosts stays on the bridge and nothing is sent anywhere else.
    ``<tag>`` is 4 digits of the pid plus 1 base-36 sequence character; link names fit
    the 15-character limit of Linux interface names, and namespace names are cut to 15
    characters too (``mpcT12340-north``; ``mpcT12340-<i>`` if the cut name would collide).

Root requirement
    Creating namespaces and links needs root (CAP_NET_ADMIN / CAP_SYS_ADMIN) and the
    iproute2 ``ip`` tool.  Without them `namespace_hosts` raises `RuntimeError` rather than
    skipping: the tests built on it must run as root in CI, and a wrong environment must
    show up as a failure.

Cleanup
    On exit (normal, exception, or a setup failure half-way) the context kills every
    process group started through a host (SIGTERM, then SIGKILL after a grace period),
    SIGKILLs whatever is left in each namespace (``ip netns pids``), then deletes the veths,
    namespaces and bridge and removes the temp dir.  Cleanup is idempotent and never raises
    because something is already gone.  `cleanup_stale` removes what crashed runs (whose
    owner process is dead) left behind; `namespace_hosts` calls it on entry.
"""

from __future__ import annotations

import contextlib
import ipaddress
import itertools
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

__all__ = [
    "Host",
    "HostCommandError",
    "cleanup_stale",
    "namespace_hosts",
    "rate_limit",
]

PREFIX = "mpcT"
"""Prefix of every namespace, link, owner file and temp dir this module creates."""

_TAG_BODY = 5  # 4 pid digits + 1 base-36 sequence character
_OWNER_DIR = Path("/run/mpcT-netns-owners")
_TMP_ROOT = Path("/tmp")
_IFNAMSIZ = 15
_SUBNET_BASE = (10, 231)
_ROUTE_TYPES = frozenset(
    {
        "unicast",
        "local",
        "broadcast",
        "multicast",
        "blackhole",
        "unreachable",
        "prohibit",
        "throw",
        "nat",
        "anycast",
    }
)
_seq = itertools.count()
_seq_lock = threading.Lock()

_StdStream = int | IO[Any] | None


class HostCommandError(RuntimeError):
    """A command run in a host namespace failed or timed out; the message holds its output."""

    def __init__(
        self,
        message: str,
        *,
        argv: Sequence[str],
        returncode: int | None,
        stdout: str,
        stderr: str,
    ) -> None:
        super().__init__(message)
        self.argv = list(argv)
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr


# --------------------------------------------------------------------------- tools


def _find_tool(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    for d in ("/usr/sbin", "/sbin", "/usr/bin", "/bin"):
        cand = Path(d) / name
        if cand.is_file() and os.access(cand, os.X_OK):
            return str(cand)
    return None


def _require_env() -> str:
    """Return the path of ``ip``; raise RuntimeError saying what is missing otherwise."""
    missing = []
    if os.geteuid() != 0:
        missing.append(f"root privileges (running as uid {os.geteuid()})")
    ip = _find_tool("ip")
    if ip is None:
        missing.append("the iproute2 'ip' tool (not on PATH, /usr/sbin or /sbin)")
    if not sys.platform.startswith("linux"):
        missing.append(f"Linux network namespaces (platform is {sys.platform})")
    if missing or ip is None:
        raise RuntimeError(
            "network-namespace test harness needs "
            + " and ".join(missing)
            + "; these tests must run as root on Linux in CI (they fail rather than skip "
            "when the environment is wrong)"
        )
    return ip


def _sh(argv: Sequence[str], *, check: bool = True, timeout: float = 15.0) -> str:
    """Run a setup/cleanup command in the root namespace; return stdout."""
    try:
        res = subprocess.run(
            list(argv), capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired as e:
        if check:
            raise RuntimeError(f"{' '.join(argv)!r} timed out after {timeout}s") from e
        return ""
    if check and res.returncode != 0:
        raise RuntimeError(
            f"{' '.join(argv)!r} failed with exit code {res.returncode}: "
            f"{res.stderr.strip() or res.stdout.strip()}"
        )
    return res.stdout


def _quiet(argv: Sequence[str]) -> None:
    """Run a cleanup command, ignoring every failure (the object may already be gone)."""
    with contextlib.suppress(Exception):
        _sh(argv, check=False)


# --------------------------------------------------------------------------- ownership


def _proc_start_time(pid: int) -> str | None:
    """Start time (clock ticks since boot) of `pid`, or None if it does not exist."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Field 2 (comm) may contain spaces and parentheses; fields after the last ')' are plain.
    rest = stat[stat.rfind(")") + 2 :].split()
    return rest[19] if len(rest) > 19 else None


def _owner_alive(tag: str) -> bool:
    try:
        pid_s, start = (_OWNER_DIR / tag).read_text().split()
        pid = int(pid_s)
    except (OSError, ValueError):
        return False
    return _proc_start_time(pid) == start


def _claim_tag(prefix: str) -> str:
    """Pick a tag no live run uses and record this process as its owner."""
    if len(prefix) + _TAG_BODY + 3 > _IFNAMSIZ:
        raise ValueError(f"prefix {prefix!r} too long for {_IFNAMSIZ}-character link names")
    _OWNER_DIR.mkdir(parents=True, exist_ok=True)
    pid = os.getpid()
    me = f"{pid} {_proc_start_time(pid)}"
    for _ in range(36):
        with _seq_lock:
            n = next(_seq) % 36
        tag = f"{prefix}{pid % 10000:04d}{_b36(n)}"
        path = _OWNER_DIR / tag
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            if _owner_alive(tag):
                continue
            _remove_tag(tag)  # a dead run's leftovers under this very tag
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                continue
        with os.fdopen(fd, "w") as f:
            f.write(me)
        return tag
    raise RuntimeError("no free network-namespace tag (too many live harness instances?)")


def _b36(d: int) -> str:
    return "0123456789abcdefghijklmnopqrstuvwxyz"[d]


# --------------------------------------------------------------------------- cleanup


def _list_netns(ip: str) -> list[str]:
    out = _sh([ip, "netns", "list"], check=False)
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def _list_links(ip: str) -> list[str]:
    out = _sh([ip, "-o", "link", "show"], check=False)
    names = []
    for line in out.splitlines():
        parts = line.split(":", 2)
        if len(parts) >= 2:
            names.append(parts[1].strip().split("@", 1)[0])
    return names


def _netns_pids(ip: str, ns: str) -> list[int]:
    out = _sh([ip, "netns", "pids", ns], check=False)
    return [int(tok) for tok in out.split() if tok.isdigit()]


def _kill_netns_processes(ip: str, namespaces: Sequence[str], timeout: float = 3.0) -> None:
    """SIGKILL every process in `namespaces` and wait (bounded) until they are gone."""
    deadline = time.monotonic() + timeout
    while True:
        pids = [p for ns in namespaces for p in _netns_pids(ip, ns) if p != os.getpid()]
        if not pids or time.monotonic() > deadline:
            return
        for p in pids:
            with contextlib.suppress(OSError):
                os.kill(p, signal.SIGKILL)
        time.sleep(0.05)


def _remove_objects(
    ip: str, namespaces: Sequence[str], links: Sequence[str], bridge: str | None
) -> None:
    _kill_netns_processes(ip, namespaces)
    existing = set(_list_links(ip))
    for link in links:
        if link in existing:
            _quiet([ip, "link", "del", link])  # deleting one veth end deletes its peer
    existing_ns = set(_list_netns(ip))
    for ns in namespaces:
        if ns in existing_ns:
            _quiet([ip, "netns", "del", ns])
    if bridge is not None and bridge in existing:
        _quiet([ip, "link", "del", bridge])


def _remove_tag(tag: str) -> None:
    """Remove every object carrying `tag` (namespaces, links, temp dirs, owner file)."""
    ip = _find_tool("ip")
    if ip is not None:
        namespaces = [ns for ns in _list_netns(ip) if ns.startswith(tag)]
        links = [ln for ln in _list_links(ip) if ln.startswith(tag) and ln != f"{tag}br"]
        bridge = f"{tag}br"
        _remove_objects(ip, namespaces, links, bridge)
    for d in _TMP_ROOT.glob(f"{tag}-*"):
        shutil.rmtree(d, ignore_errors=True)
    with contextlib.suppress(OSError):
        (_OWNER_DIR / tag).unlink()


def cleanup_stale(prefix: str = PREFIX) -> list[str]:
    """Remove leftovers (namespaces, bridges, veths, temp dirs) of dead runs using `prefix`.

    Objects of runs whose owner process is still alive are left alone, so concurrent test
    processes do not tear down each other's hosts.  Returns the tags that were removed.
    Never raises because something is already gone.
    """
    ip = _find_tool("ip")
    tags: set[str] = set()
    width = len(prefix) + _TAG_BODY
    if ip is not None:
        for name in [*_list_netns(ip), *_list_links(ip)]:
            if name.startswith(prefix) and len(name) > width:
                tags.add(name[:width])
    for d in _TMP_ROOT.glob(f"{prefix}*-*"):
        if len(d.name) > width and d.name[width] == "-":
            tags.add(d.name[:width])
    with contextlib.suppress(OSError):
        for f in _OWNER_DIR.iterdir():
            if f.name.startswith(prefix) and len(f.name) == width:
                tags.add(f.name)
    removed = []
    for tag in sorted(tags):
        if not _owner_alive(tag):
            _remove_tag(tag)
            removed.append(tag)
    return removed


# --------------------------------------------------------------------------- hosts


@dataclass(eq=False)
class Host:
    """One simulated machine: a network namespace with ``lo`` and ``eth0`` (at `ip`)."""

    name: str
    netns: str
    ip: str
    tmp: Path
    _ip_tool: str = field(repr=False)
    _procs: list[subprocess.Popen[bytes]] = field(repr=False)

    def env(self, **extra: str) -> dict[str, str]:
        """``os.environ`` plus this host's private ``TMPDIR`` (also ``RAY_TMPDIR``) and `extra`.

        Separate Ray instances per namespace need their own temp dirs; Ray reads
        ``RAY_TMPDIR`` before ``TMPDIR``, so both are set.
        """
        env = dict(os.environ)
        env["TMPDIR"] = str(self.tmp)
        env["RAY_TMPDIR"] = str(self.tmp)
        env.update(extra)
        return env

    def popen(
        self,
        argv: list[str],
        *,
        env: dict[str, str] | None = None,
        cwd: str | None = None,
        stdin: _StdStream = subprocess.DEVNULL,
        stdout: _StdStream = None,
        stderr: _StdStream = None,
    ) -> subprocess.Popen[bytes]:
        """Start `argv` inside this host's namespace, in a new session (its own process group).

        ``env=None`` means `env()` (inherited environment plus private TMPDIR).  The process
        group is killed when `namespace_hosts` exits.
        """
        proc = subprocess.Popen(
            [self._ip_tool, "netns", "exec", self.netns, *argv],
            env=self.env() if env is None else env,
            cwd=cwd,
            stdin=stdin,
            stdout=stdout,
            stderr=stderr,
            start_new_session=True,
        )
        self._procs.append(proc)
        return proc

    def run(
        self,
        argv: list[str],
        *,
        timeout: float,
        env: dict[str, str] | None = None,
        cwd: str | None = None,
        check: bool = True,
        input: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run `argv` in this host's namespace, wait, and capture text output.

        Raises `HostCommandError` (stdout/stderr in the message) on timeout (after killing the
        process group) and, if `check`, on a non-zero exit code.
        """
        proc = self.popen(
            argv,
            env=env,
            cwd=cwd,
            stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        data = input.encode() if input is not None else None
        try:
            out_b, err_b = proc.communicate(data, timeout=timeout)
        except subprocess.TimeoutExpired:
            _killpg(proc, signal.SIGKILL)
            out_b, err_b = proc.communicate()
            out, err = _decode(out_b), _decode(err_b)
            raise HostCommandError(
                f"[{self.name}] {argv!r} timed out after {timeout}s" + _format_output(out, err),
                argv=argv,
                returncode=None,
                stdout=out,
                stderr=err,
            ) from None
        out, err = _decode(out_b), _decode(err_b)
        if check and proc.returncode != 0:
            raise HostCommandError(
                f"[{self.name}] {argv!r} exited with code {proc.returncode}"
                + _format_output(out, err),
                argv=argv,
                returncode=proc.returncode,
                stdout=out,
                stderr=err,
            )
        return subprocess.CompletedProcess(argv, proc.returncode, out, err)


def _decode(b: bytes | None) -> str:
    return b.decode(errors="replace") if b else ""


def _format_output(out: str, err: str) -> str:
    return f"\n--- stdout ---\n{out.rstrip()}\n--- stderr ---\n{err.rstrip()}"


def _killpg(proc: subprocess.Popen[bytes], sig: int) -> bool:
    """Signal `proc`'s process group if its leader is still our unreaped child.

    While the leader is alive (or an unreaped zombie) its pid, hence the group id, cannot be
    reused, so this never signals an unrelated group.  Members of a group whose leader is
    already reaped are caught by the per-namespace sweep instead.
    """
    if proc.poll() is not None:
        return False
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        return False
    except PermissionError:
        return False
    return True


def _terminate_all(procs: Sequence[subprocess.Popen[bytes]], grace: float) -> None:
    """SIGTERM every live group, wait up to `grace` seconds in total, SIGKILL the rest, reap."""
    live = [p for p in procs if _killpg(p, signal.SIGTERM)]
    deadline = time.monotonic() + grace
    while live and time.monotonic() < deadline:
        live = [p for p in live if p.poll() is None]
        if live:
            time.sleep(0.05)
    for p in procs:
        _killpg(p, signal.SIGKILL)
    for p in procs:
        with contextlib.suppress(Exception):
            p.wait(timeout=5)
        for stream in (p.stdin, p.stdout, p.stderr):
            if stream is not None:
                with contextlib.suppress(Exception):
                    stream.close()


# --------------------------------------------------------------------------- subnet


def _used_networks(ip: str) -> list[ipaddress.IPv4Network]:
    nets: list[ipaddress.IPv4Network] = []
    for line in _sh([ip, "-o", "-4", "addr", "show"], check=False).splitlines():
        toks = line.split()
        if "inet" in toks:
            with contextlib.suppress(ValueError, IndexError):
                nets.append(ipaddress.IPv4Interface(toks[toks.index("inet") + 1]).network)
    for line in _sh([ip, "-4", "route", "show", "table", "all"], check=False).splitlines():
        toks = line.split()
        if not toks:
            continue
        dest = toks[1] if toks[0] in _ROUTE_TYPES and len(toks) > 1 else toks[0]
        if dest == "default":
            continue
        with contextlib.suppress(ValueError):
            nets.append(ipaddress.IPv4Network(dest, strict=False))
    return nets


def _subnet(octet: int) -> ipaddress.IPv4Network:
    return ipaddress.IPv4Network(f"{_SUBNET_BASE[0]}.{_SUBNET_BASE[1]}.{octet}.0/24")


def _pick_octet(ip: str) -> int:
    used = _used_networks(ip)
    start = os.getpid() % 254
    for k in range(254):
        octet = 1 + (start + k) % 254
        net = _subnet(octet)
        if not any(net.overlaps(u) for u in used):
            return octet
    raise RuntimeError(
        "no free 10.231.X.0/24 subnet on this machine (routes/addresses cover all of "
        "10.231.0.0/16); pass subnet_octet= to force one"
    )


# --------------------------------------------------------------------------- connectivity

_SERVER = r"""
import socket, sys
n = int(sys.argv[1])
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 0))
s.listen(n + 1)
s.settimeout(15)
print(s.getsockname()[1], flush=True)
for _ in range(n):
    c, _ = s.accept()
    c.settimeout(5)
    data = b""
    while not data.endswith(b"\n"):
        chunk = c.recv(64)
        if not chunk:
            break
        data += chunk
    c.sendall(b"ack " + data)
    c.close()
"""

_CLIENT = r"""
import socket, sys, time
name, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
# Loopback inside this namespace.
srv = socket.socket()
srv.bind(("127.0.0.1", 0))
srv.listen(1)
c = socket.create_connection(srv.getsockname(), timeout=5)
a, _ = srv.accept()
c.sendall(b"lo")
assert a.recv(2) == b"lo", "loopback echo failed"
c.close(); a.close(); srv.close()
# The first host, over the bridge.
deadline = time.monotonic() + 8
while True:
    try:
        c = socket.create_connection((host, port), timeout=2)
        break
    except OSError:
        if time.monotonic() > deadline:
            raise
        time.sleep(0.1)
c.settimeout(5)
c.sendall(name.encode() + b"\n")
reply = b""
while not reply.endswith(b"\n"):
    chunk = c.recv(64)
    if not chunk:
        break
    reply += chunk
assert reply == b"ack " + name.encode() + b"\n", reply
print("ok", flush=True)
"""


def _check_connectivity(hosts: Sequence[Host]) -> None:
    """Loopback in every host, and a TCP round trip from every host to the first one."""
    first = hosts[0]
    server = first.popen(
        [sys.executable, "-c", _SERVER, str(len(hosts))],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert server.stdout is not None
        line = server.stdout.readline().decode().strip()
        if not line.isdigit():
            _killpg(server, signal.SIGKILL)
            err = _decode(server.communicate()[1])
            raise RuntimeError(
                f"connectivity check server failed to start in {first.netns}: {line!r} {err}"
            )
        port = line
        for h in hosts:
            target = "127.0.0.1" if h is first else first.ip
            try:
                h.run([sys.executable, "-c", _CLIENT, h.name, target, port], timeout=15)
            except HostCommandError as e:
                raise RuntimeError(
                    f"namespace connectivity check failed from {h.name} ({h.ip}) to "
                    f"{first.name} ({target}:{port}); if the veths and bridge are up, check "
                    "that net.bridge.bridge-nf-call-iptables / the iptables FORWARD policy "
                    f"does not drop bridged traffic.\n{e}"
                ) from e
        try:
            server.wait(timeout=5)
        except subprocess.TimeoutExpired:
            raise RuntimeError("connectivity check server did not finish") from None
        if server.returncode != 0:
            raise RuntimeError(
                f"connectivity check server failed: {_decode(server.communicate()[1])}"
            )
    finally:
        _killpg(server, signal.SIGKILL)
        with contextlib.suppress(Exception):
            server.communicate(timeout=5)


# --------------------------------------------------------------------------- main API


@contextmanager
def namespace_hosts(
    names: Sequence[str],
    *,
    subnet_octet: int | None = None,
    term_grace: float = 3.0,
) -> Iterator[dict[str, Host]]:
    """Build one namespace "host" per name on a shared bridge; tear everything down on exit.

    Host ``names[i]`` gets ``eth0`` at ``10.231.X.(10+i)/24``.  X is `subnet_octet` if given,
    else the first value whose /24 overlaps no address or route of the root namespace.
    Connectivity (loopback in each host, TCP from each host to the first) is verified
    before yielding.  On exit, processes get SIGTERM and `term_grace` seconds before SIGKILL.
    Raises RuntimeError if not root or ``ip`` is missing (tests must fail, not skip).
    """
    ip = _require_env()
    names = list(names)
    if not names:
        raise ValueError("namespace_hosts needs at least one host name")
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate host names: {names}")
    if len(names) > 200:
        raise ValueError("at most 200 hosts")
    if subnet_octet is not None and not 0 <= subnet_octet <= 255:
        raise ValueError(f"subnet_octet must be 0..255, got {subnet_octet}")

    cleanup_stale(PREFIX)
    tag = _claim_tag(PREFIX)
    bridge = f"{tag}br"
    namespaces: list[str] = []
    links: list[str] = []
    procs: list[subprocess.Popen[bytes]] = []
    tmp_root: Path | None = None
    try:
        tmp_root = Path(tempfile.mkdtemp(prefix=f"{tag}-", dir=_TMP_ROOT))
        octet = subnet_octet if subnet_octet is not None else _pick_octet(ip)
        net = _subnet(octet)

        try:
            _sh([ip, "link", "add", "name", bridge, "type", "bridge"])
        except RuntimeError as e:
            raise RuntimeError(f"cannot create a bridge (kernel bridge support?): {e}") from e
        _sh([ip, "link", "set", bridge, "up"])

        hosts: dict[str, Host] = {}
        for i, name in enumerate(names):
            ns = f"{tag}-{name}"[:_IFNAMSIZ]
            if ns in namespaces or not _safe_name(name):
                ns = f"{tag}-{i}"
                while ns in namespaces:
                    ns = f"{tag}-{ns[len(tag) + 1 :]}x"
            veth, peer = f"{tag}v{i}", f"{tag}p{i}"
            host_ip = str(net.network_address + 10 + i)
            try:
                _sh([ip, "netns", "add", ns])
            except RuntimeError as e:
                raise RuntimeError(f"cannot create network namespace {ns}: {e}") from e
            namespaces.append(ns)
            links.append(veth)
            _sh([ip, "link", "add", veth, "type", "veth", "peer", "name", peer])
            _sh([ip, "link", "set", peer, "netns", ns])
            _sh([ip, "-n", ns, "link", "set", peer, "name", "eth0"])
            _sh([ip, "link", "set", veth, "master", bridge])
            _sh([ip, "link", "set", veth, "up"])
            _sh([ip, "-n", ns, "link", "set", "lo", "up"])
            _sh([ip, "-n", ns, "addr", "add", f"{host_ip}/{net.prefixlen}", "dev", "eth0"])
            _sh([ip, "-n", ns, "link", "set", "eth0", "up"])
            host_tmp = tmp_root / (name if _safe_name(name) else f"host{i}")
            host_tmp.mkdir()
            hosts[name] = Host(
                name=name, netns=ns, ip=host_ip, tmp=host_tmp, _ip_tool=ip, _procs=procs
            )

        _check_connectivity(list(hosts.values()))
        yield hosts
    finally:
        with contextlib.suppress(Exception):
            _terminate_all(procs, term_grace)
        with contextlib.suppress(Exception):
            _remove_objects(ip, namespaces, links, bridge)
        if tmp_root is not None:
            shutil.rmtree(tmp_root, ignore_errors=True)
        with contextlib.suppress(Exception):
            _remove_tag(tag)  # sweeps anything not recorded above, then the owner file


def _safe_name(name: str) -> bool:
    return bool(name) and all(c.isalnum() or c in "-_." for c in name) and name[0] != "."


def rate_limit(host: Host, mbit: float) -> None:
    """Shape `host`'s outgoing traffic on ``eth0`` to `mbit` Mbit/s with a tbf qdisc.

    Only egress is shaped (apply to every host to limit both directions); loopback is not
    affected.  Calling it again replaces the previous limit.  No netem on this kernel, so
    there is no added delay.
    """
    if mbit <= 0:
        raise ValueError(f"mbit must be positive, got {mbit}")
    tc = _find_tool("tc")
    if tc is None:
        raise RuntimeError("rate_limit needs the iproute2 'tc' tool (not found)")
    _sh(
        [
            host._ip_tool,
            "netns",
            "exec",
            host.netns,
            tc,
            "qdisc",
            "replace",
            "dev",
            "eth0",
            "root",
            "tbf",
            "rate",
            f"{mbit:g}mbit",
            "burst",
            "32kbit",
            "latency",
            "400ms",
        ]
    )
