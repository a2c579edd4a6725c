"""The dealer's measurement: a hash of the code it runs and of its canonical configuration.

Responsibility: `measure_dealer(root, config)` computes, from a source checkout or an installed
package, the value every party puts in its allow-list and that the (simulated) enclave reports in
its quotes. `measurement_report` formats it for `mpc tee measure`.

The measured code is a fixed, documented list of files (`DEALER_CODE_PATTERNS`, relative to the
directory that contains the `mpc` package, i.e. the checkout root or `site-packages`): the
dealers, the protocols (the sharing schemes the dealer builds), the algebra, the PRG, this
attestation layer and the dealer actor module. A pattern with `*` matches the `.py` files of that
directory only (not sub-directories); every pattern must match at least one file.

Encoding (version 1), all integers big-endian::

    SHA-256( b"mpc.tee.measurement.v1\\x00"
             || u32 number_of_files
             || for each file, sorted by its UTF-8 relative path ("mpc/rng.py"):
                    u32 len(path) || path || u64 len(content) || content
             || u64 len(config) || config )

where `config` is canonical JSON (keys sorted, no spaces, ASCII, no floats) of the dealer
configuration: at least `protocol` (str), `n` (int) and `t` (int). File contents are hashed
byte for byte (no newline conversion: a checkout with CRLF line endings measures differently).

Security model: the measurement identifies *what code and configuration* the dealer runs, so a
party can refuse a dealer whose source was modified. In the simulation the dealer process hashes
the files it finds on disk when it launches; nothing stops a malicious host from running other
code and reporting this hash, which is why simulated quotes are labelled and refused by default.
The list does not cover the Python interpreter, numpy, cryptography, or `mpc` modules outside it
(e.g. `mpc/errors.py`, `mpc/parties/party.py`). A real backend measures the whole enclave image
instead (Gramine: MRENCLAVE over the manifest, which pins the hash of every trusted file including
the interpreter and libraries; SEV-SNP: the launch digest of the guest image), computed by the
CPU, not by the code being measured.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path

from mpc.errors import ConfigurationError
from mpc.tee.backend import MeasurementError

__all__ = [
    "DEALER_CODE_PATTERNS",
    "DEALER_SECURITY_VERSION",
    "MEASUREMENT_BYTES",
    "canonical_config",
    "dealer_code_files",
    "dealer_config",
    "default_root",
    "measure_dealer",
    "measurement_hex",
    "measurement_report",
]

#: The dealer's code files, relative to the directory holding the `mpc` package.
DEALER_CODE_PATTERNS: tuple[str, ...] = (
    "mpc/algebra.py",
    "mpc/dealers/*.py",
    "mpc/parties/actors.py",
    "mpc/protocols/*.py",
    "mpc/rng.py",
    "mpc/tee/*.py",
)

#: The dealer's security version (like SGX's ISVSVN): raised when a security fix lands, so that
#: parties can refuse older dealers with `QuotePolicy.min_security_version`.
DEALER_SECURITY_VERSION = 1

MEASUREMENT_BYTES = 32
_DOMAIN = b"mpc.tee.measurement.v1\x00"
_REQUIRED_CONFIG: dict[str, type] = {"protocol": str, "n": int, "t": int}


def default_root() -> Path:
    """The directory that contains the imported `mpc` package (checkout root or site-packages)."""
    return Path(__file__).resolve().parents[2]


def dealer_config(protocol: str, n: int, t: int) -> dict[str, object]:
    """The dealer configuration that is measured, spelled the same way everywhere."""
    return {"protocol": protocol, "n": n, "t": t}


def _check_value(key: str, value: object) -> None:
    if value is None or isinstance(value, str | bool | int):
        return
    if isinstance(value, list | tuple):
        for item in value:
            if not (item is None or isinstance(item, str | bool | int)):
                raise ConfigurationError(
                    f"dealer configuration {key!r}: list items must be str, int, bool or None, "
                    f"got {type(item).__name__}"
                )
        return
    raise ConfigurationError(
        f"dealer configuration {key!r} must be str, int, bool, None or a list of those "
        f"(floats and bytes have no canonical form here), got {type(value).__name__}"
    )


def canonical_config(config: Mapping[str, object]) -> bytes:
    """Canonical JSON of the dealer configuration (validated; see the module docstring)."""
    if not isinstance(config, Mapping):
        raise ConfigurationError(
            f"the dealer configuration must be a mapping, got {type(config).__name__}"
        )
    for key, kind in _REQUIRED_CONFIG.items():
        if key not in config:
            raise ConfigurationError(
                f"the dealer configuration needs {sorted(_REQUIRED_CONFIG)}; {key!r} is missing "
                "(use mpc.tee.measurement.dealer_config(protocol, n, t))"
            )
        value = config[key]
        if isinstance(value, bool) or not isinstance(value, kind):
            raise ConfigurationError(
                f"dealer configuration {key!r} must be {kind.__name__}, got {value!r}"
            )
    if not config["protocol"]:
        raise ConfigurationError("dealer configuration 'protocol' must not be empty")
    n, t = config["n"], config["t"]
    if not isinstance(n, int) or not isinstance(t, int) or n < 1 or t < 0:
        raise ConfigurationError(f"dealer configuration needs n >= 1 and t >= 0, got n={n}, t={t}")
    for key, value in config.items():
        if not isinstance(key, str):
            raise ConfigurationError(f"dealer configuration keys must be str, got {key!r}")
        _check_value(key, value)
    text = json.dumps(
        dict(config), sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    )
    return text.encode("ascii")


def _resolve_root(root: str | os.PathLike[str] | None) -> Path:
    base = default_root() if root is None else Path(root)
    if not (base / "mpc").is_dir():
        raise MeasurementError(
            f"{base} holds no 'mpc' package directory; pass the source checkout root (the "
            "directory that contains mpc/) or leave root unset to measure the imported package"
        )
    return base


def dealer_code_files(root: str | os.PathLike[str] | None = None) -> list[tuple[str, bytes]]:
    """The measured files as (relative POSIX path, content), sorted by path."""
    base = _resolve_root(root)
    found: dict[str, Path] = {}
    for pattern in DEALER_CODE_PATTERNS:
        directory, _, name = pattern.rpartition("/")
        if "*" in name:
            matches = sorted(p for p in (base / directory).glob(name) if p.is_file())
        else:
            candidate = base / pattern
            matches = [candidate] if candidate.is_file() else []
        if not matches:
            raise MeasurementError(
                f"dealer code file {pattern!r} not found under {base}; the measurement needs "
                "every file of mpc.tee.measurement.DEALER_CODE_PATTERNS"
            )
        for path in matches:
            found[f"{directory}/{path.name}"] = path
    files: list[tuple[str, bytes]] = []
    for rel in sorted(found, key=lambda r: r.encode("utf-8")):
        try:
            content = found[rel].read_bytes()
        except OSError as exc:
            raise MeasurementError(f"cannot read dealer code file {rel}: {exc}") from exc
        files.append((rel, content))
    return files


def _digest(files: list[tuple[str, bytes]], config_bytes: bytes) -> bytes:
    h = hashlib.sha256(_DOMAIN)
    h.update(len(files).to_bytes(4, "big"))
    for rel, content in files:
        path = rel.encode("utf-8")
        h.update(len(path).to_bytes(4, "big"))
        h.update(path)
        h.update(len(content).to_bytes(8, "big"))
        h.update(content)
    h.update(len(config_bytes).to_bytes(8, "big"))
    h.update(config_bytes)
    return h.digest()


def measure_dealer(
    root: str | os.PathLike[str] | None = None, config: Mapping[str, object] | None = None
) -> bytes:
    """The 32-byte measurement of the dealer code under `root` with configuration `config`.

    `root` is the directory containing the `mpc` package (None: the imported package). `config`
    is required (a keyword default only so that `root` may be omitted): see `dealer_config`.
    """
    if config is None:
        raise ConfigurationError(
            "measure_dealer needs the dealer configuration, e.g. "
            "config=dealer_config(protocol='additive', n=3, t=1)"
        )
    config_bytes = canonical_config(config)
    return _digest(dealer_code_files(root), config_bytes)


def measurement_hex(
    config: Mapping[str, object], root: str | os.PathLike[str] | None = None
) -> str:
    """The measurement as 64 lowercase hex characters."""
    return measure_dealer(root, config).hex()


def measurement_report(
    config: Mapping[str, object],
    root: str | os.PathLike[str] | None = None,
    list_files: bool = False,
) -> str:
    """What `mpc tee measure` prints: the measurement, the configuration and (optionally) the
    SHA-256 of each measured file, so that two parties can find which file differs."""
    base = _resolve_root(root)
    config_bytes = canonical_config(config)
    files = dealer_code_files(base)
    lines = [
        f"dealer measurement (sha256, v1): {_digest(files, config_bytes).hex()}",
        f"  configuration: {config_bytes.decode('ascii')}",
        f"  code root:     {base}",
        f"  files:         {len(files)}",
    ]
    if list_files:
        lines.extend(f"    {hashlib.sha256(content).hexdigest()}  {rel}" for rel, content in files)
    return "\n".join(lines)
