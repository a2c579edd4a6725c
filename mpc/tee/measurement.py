"""The dealer's measurement: a hash of the code it runs, its dependencies and its configuration.

Responsibility: `measure_dealer(root, config)` computes, from a source checkout or an installed
package, the value every party puts in its allow-list and that the (simulated) enclave reports in
its quotes. `measurement_report` formats it for `mpc tee measure`.

Measured code: the *import closure* of the dealer's entry modules (`DEALER_ENTRY_MODULES`: the
Ray dealer actor's module and the federated dealer service with its `serve` module), i.e. every
`mpc` module reachable from them through `import` / `from ... import` statements at any depth
(also inside functions: lazy imports such as the DP noise samplers count), through
`importlib.import_module("...")` / `__import__("...")` calls with a literal name, and every
package `__init__.py` on the way, except code under `if TYPE_CHECKING:`. The closure is found by
reading the files under `root` (with `ast`; nothing is imported or executed), so it follows the
measured checkout, not the running one; an `mpc` module it cannot find is a `MeasurementError`,
and a file that does not parse adds no imports (the interpreter cannot run it either) but is
measured all the same. It over-approximates what the dealer executes (a lazy import in a
function the dealer never calls still counts); modules outside it (e.g. `mpc/cli.py`,
`mpc/scenario.py`, `mpc/bench.py`) do not change the measurement. In addition the files of
`DEALER_CODE_PATTERNS` (relative to the directory that contains the `mpc` package, the checkout
root or `site-packages`) are always measured, even if nothing imports them: a pattern with `*`
matches the `.py` files of that directory only (not sub-directories), and every pattern must
match at least one file. `dealer_modules` lists the closure, `dealer_code_files` every measured
file.

Measured dependencies (`dealer_dependencies`): the Python implementation and version, and the
installed version of every distribution that provides a non-`mpc`, non-standard-library
top-level module the closure imports (numpy, cryptography, msgpack, ray, ...), plus,
transitively, every installed distribution those declare as a requirement (requirements under
an `extra` marker are skipped, and so are requirements missing from the environment, whose
markers did not apply). A directly imported module that no installed distribution provides is
measured as "not installed". Versions come from the environment of the process that measures
(read once per process), also when `root` names another checkout.

Encoding (version 2), all integers big-endian::

    SHA-256( b"mpc.tee.measurement.v2\\x00"
             || u32 number_of_files
             || for each file, sorted by its UTF-8 relative path ("mpc/rng.py"):
                    u32 len(path) || path || u64 len(content) || content
             || u32 number_of_dependencies
             || for each dependency, sorted by its UTF-8 name ("numpy", "python"):
                    u32 len(name) || name || u32 len(version) || version
             || u64 len(config) || config )

where `config` is canonical JSON (keys sorted, no spaces, ASCII, no floats) of the dealer
configuration: at least `protocol` (str), `n` (int) and `t` (int). File contents are hashed
byte for byte (no newline conversion: a checkout with CRLF line endings measures differently).
Dependency names are distribution names normalised as in PEP 503 (lower case, runs of `-_.`
replaced by `-`), plus `python` (version "<implementation> <x.y.z>").

Security model: the measurement identifies *what code and configuration* the dealer runs, so a
party can refuse a dealer whose source was modified. In the simulation the dealer process hashes
the files it finds on disk when it launches; nothing stops a malicious host from running other
code and reporting this hash, which is why simulated quotes are labelled and refused by default.
Dependencies are measured by version only (not by the hash of their files), and the interpreter,
site customisation (`.pth` files, `sitecustomize`) and the Ray worker bootstrap are not measured.
Entry-point plug-ins are not measured: the Ray enclave dealer (`mpc.parties.actors.DealerActor`)
refuses a protocol that is not built in instead of loading one (the federated dealer service
still looks its protocol up with `get_protocol`, which loads plug-ins for a name that is not
built in). A real backend measures the whole enclave image instead (Gramine: MRENCLAVE over the
manifest, which pins the hash of every trusted file including the interpreter and libraries;
SEV-SNP: the launch digest of the guest image), computed by the CPU, not by the code being
measured.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import importlib.metadata
import json
import os
import platform
import re
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from mpc.errors import ConfigurationError
from mpc.tee.backend import MeasurementError

__all__ = [
    "DEALER_CODE_PATTERNS",
    "DEALER_ENTRY_MODULES",
    "DEALER_SECURITY_VERSION",
    "MEASUREMENT_BYTES",
    "canonical_config",
    "dealer_code_files",
    "dealer_config",
    "dealer_dependencies",
    "dealer_modules",
    "default_root",
    "measure_dealer",
    "measurement_hex",
    "measurement_report",
]

#: The modules a dealer process starts from: the Ray dealer actor (`DealerActor`) and the
#: federated dealer service (`mpc dealer serve`). Their import closure is measured.
DEALER_ENTRY_MODULES: tuple[str, ...] = (
    "mpc.parties.actors",
    "mpc.federation.dealer_service",
    "mpc.federation.serve",
)

#: Files measured even if nothing imports them, relative to the directory holding `mpc`.
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
_DOMAIN = b"mpc.tee.measurement.v2\x00"
_PACKAGE = "mpc"
#: One import: (module, names imported from it).
_Import = tuple[str, tuple[str, ...]]
_NOT_INSTALLED = "not installed"
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


def _module_file(base: Path, name: str) -> tuple[str, bool] | None:
    """(relative POSIX path, is a package) of module `name` under `base`, or None."""
    parts = name.split(".")
    if not all(part.isidentifier() for part in parts):
        return None
    if base.joinpath(*parts, "__init__.py").is_file():
        return "/".join([*parts, "__init__.py"]), True
    if base.joinpath(*parts[:-1], parts[-1] + ".py").is_file():
        return "/".join(parts) + ".py", False
    return None


def _is_type_checking(test: ast.expr) -> bool:
    if isinstance(test, ast.Name):
        return test.id == "TYPE_CHECKING"
    return isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"


def _literal_import(call: ast.Call) -> str | None:
    """The module of `importlib.import_module("x")` / `import_module("x")` / `__import__("x")`."""
    func = call.func
    name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
    if name not in ("import_module", "__import__") or not call.args:
        return None
    first = call.args[0]
    if isinstance(first, ast.Constant) and isinstance(first.value, str) and first.value:
        return None if first.value.startswith(".") else first.value
    return None


_STATEMENT_FIELDS = ("body", "orelse", "finalbody", "handlers", "cases")


def _imports(tree: ast.Module, module: str, is_package: bool, calls: bool) -> Iterator[_Import]:
    """(imported module, names imported from it) for every import the module may execute.

    Import statements are found at any depth of the statement tree (functions, classes, `try`,
    `if`, except `if TYPE_CHECKING:` bodies); with `calls`, expressions are searched as well for
    `import_module("...")` / `__import__("...")` with a literal name.
    """
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)  # the TYPE_CHECKING body never runs
            continue
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, ()
        elif isinstance(node, ast.ImportFrom):
            target = node.module or ""
            if node.level:
                package = module if is_package else module.rpartition(".")[0]
                for _ in range(node.level - 1):
                    package = package.rpartition(".")[0]
                target = f"{package}.{target}" if target else package
            if target:
                yield target, tuple(alias.name for alias in node.names if alias.name != "*")
        elif isinstance(node, ast.Call):
            literal = _literal_import(node)
            if literal is not None:
                yield literal, ()
        if calls:
            stack.extend(ast.iter_child_nodes(node))
        else:
            for name in _STATEMENT_FIELDS:
                stack.extend(getattr(node, name, ()))


@functools.lru_cache(maxsize=1024)
def _file_imports(content: bytes, rel: str, module: str, is_package: bool) -> tuple[_Import, ...]:
    """The imports of one file (cached by content: a process measures the same files often)."""
    try:
        tree = ast.parse(content, filename=rel)
    except (SyntaxError, ValueError):
        return ()  # Python cannot compile it either, so it imports nothing (its bytes count)
    calls = b"import_module" in content or b"__import__" in content
    return tuple(_imports(tree, module, is_package, calls))


@dataclass(frozen=True)
class _Closure:
    modules: dict[str, str]  # module name -> relative path
    contents: dict[str, bytes]  # relative path -> the bytes that were read (and are hashed)
    external: frozenset[str]  # imported top-level modules outside `mpc` and the stdlib


def _closure(base: Path) -> _Closure:
    """The import closure of `DEALER_ENTRY_MODULES` under `base` (see the module docstring)."""
    modules: dict[str, str] = {}
    contents: dict[str, bytes] = {}
    external: set[str] = set()
    todo: list[tuple[str, str]] = [(name, "the dealer") for name in DEALER_ENTRY_MODULES]
    while todo:
        name, importer = todo.pop()
        if name in modules:
            continue
        found = _module_file(base, name)
        if found is None:
            raise MeasurementError(
                f"dealer module {name} ({name.replace('.', '/')}.py), imported by {importer}, "
                f"not found under {base}; the measurement needs every module the dealer imports"
            )
        rel, is_package = found
        try:
            content = (base / rel).read_bytes()
        except OSError as exc:
            raise MeasurementError(f"cannot read dealer code file {rel}: {exc}") from None
        modules[name] = rel
        contents[rel] = content
        parts = name.split(".")
        todo.extend((".".join(parts[:i]), rel) for i in range(1, len(parts)))
        for target, names in _file_imports(content, rel, name, is_package):
            top = target.partition(".")[0]
            if top != _PACKAGE:
                if top not in sys.stdlib_module_names and top != "__future__":
                    external.add(top)
                continue
            todo.append((target, rel))
            todo.extend(
                (f"{target}.{item}", rel)
                for item in names
                if _module_file(base, f"{target}.{item}") is not None
            )
    return _Closure(modules, contents, frozenset(external))


def dealer_modules(root: str | os.PathLike[str] | None = None) -> dict[str, str]:
    """The import closure of `DEALER_ENTRY_MODULES` under `root`: module name -> relative path,
    sorted by name."""
    return dict(sorted(_closure(_resolve_root(root)).modules.items()))


def dealer_code_files(root: str | os.PathLike[str] | None = None) -> list[tuple[str, bytes]]:
    """The measured files (the import closure and `DEALER_CODE_PATTERNS`) as (relative POSIX
    path, content), sorted by path."""
    base = _resolve_root(root)
    return _code_files(base, _closure(base))


def _code_files(base: Path, closure: _Closure) -> list[tuple[str, bytes]]:
    found: dict[str, bytes | Path] = dict(closure.contents)
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
            found.setdefault(f"{directory}/{path.name}", path)
    files: list[tuple[str, bytes]] = []
    for rel in sorted(found, key=lambda r: r.encode("utf-8")):
        source = found[rel]
        try:
            content = source.read_bytes() if isinstance(source, Path) else source
        except OSError as exc:
            raise MeasurementError(f"cannot read dealer code file {rel}: {exc}") from exc
        files.append((rel, content))
    return files


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _installed(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


@functools.lru_cache(maxsize=16)
def _dependency_versions(modules: frozenset[str]) -> tuple[tuple[str, str], ...]:
    providers = importlib.metadata.packages_distributions()
    versions: dict[str, str] = {"python": f"{sys.implementation.name} {platform.python_version()}"}
    todo: list[str] = []
    for module in sorted(modules):
        distributions = providers.get(module)
        if distributions:
            todo.extend(distributions)
        else:
            versions.setdefault(_normalise(module), _NOT_INSTALLED)
    while todo:
        distribution = todo.pop()
        key = _normalise(distribution)
        if key in versions and versions[key] != _NOT_INSTALLED:
            continue
        version = _installed(distribution)
        if version is None:
            versions.setdefault(key, _NOT_INSTALLED)
            continue
        versions[key] = version
        for requirement in importlib.metadata.requires(distribution) or []:
            spec, _, marker = requirement.partition(";")
            match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", spec)
            if match is None or "extra" in marker:
                continue
            if _installed(match.group(1)) is not None:
                todo.append(match.group(1))
    return tuple(sorted(versions.items(), key=lambda item: item[0].encode("utf-8")))


def dealer_dependencies(root: str | os.PathLike[str] | None = None) -> list[tuple[str, str]]:
    """The measured dependencies as (name, version), sorted by name (see the module docstring):
    what the closure under `root` imports, at the versions installed in this environment."""
    return list(_dependency_versions(_closure(_resolve_root(root)).external))


def _measured(base: Path) -> tuple[list[tuple[str, bytes]], list[tuple[str, str]]]:
    """The measured files and dependencies under `base` (one walk of the import closure)."""
    closure = _closure(base)
    return _code_files(base, closure), list(_dependency_versions(closure.external))


def _digest(
    files: list[tuple[str, bytes]], dependencies: list[tuple[str, str]], config_bytes: bytes
) -> bytes:
    h = hashlib.sha256(_DOMAIN)
    h.update(len(files).to_bytes(4, "big"))
    for rel, content in files:
        path = rel.encode("utf-8")
        h.update(len(path).to_bytes(4, "big"))
        h.update(path)
        h.update(len(content).to_bytes(8, "big"))
        h.update(content)
    h.update(len(dependencies).to_bytes(4, "big"))
    for name, version in dependencies:
        for text in (name.encode("utf-8"), version.encode("utf-8")):
            h.update(len(text).to_bytes(4, "big"))
            h.update(text)
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
    files, dependencies = _measured(_resolve_root(root))
    return _digest(files, dependencies, config_bytes)


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
    SHA-256 of each measured file and each measured dependency's version, so that two parties
    can find what differs."""
    base = _resolve_root(root)
    config_bytes = canonical_config(config)
    files, dependencies = _measured(base)
    lines = [
        f"dealer measurement (sha256, v2): {_digest(files, dependencies, config_bytes).hex()}",
        f"  configuration: {config_bytes.decode('ascii')}",
        f"  code root:     {base}",
        f"  files:         {len(files)}",
        f"  dependencies:  {len(dependencies)}",
    ]
    if list_files:
        lines.extend(f"    {hashlib.sha256(content).hexdigest()}  {rel}" for rel, content in files)
        lines.extend(f"    {name} {version}" for name, version in dependencies)
    return "\n".join(lines)
