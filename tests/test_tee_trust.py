"""The enclave dealer's root of trust and the completeness of its measurement (issue 13, 2 and 3).

Root of trust: a party trusts the platform keys pinned in its own configuration
(`enclave_platform_keys=`), never a key the dealer reports or the driver relays. The simulated
backend's per-process key, which a party that allows simulation learns from the dealer, is
accepted only on quotes marked SIMULATED and DEBUG. A forged dealer that signs a "real"
(not simulated, not debug) quote with its own key is refused, with or without another key
pinned, and a session that pins nothing and does not allow simulation is refused at once with a
`ConfigurationError` saying what to set.

Measurement: it covers the import closure of the dealer's entry modules (all `mpc` code the dealer
may run, e.g. the DP samplers and `bitpack.py`) and the versions of its dependencies; a file
outside the closure (e.g. `mpc/cli.py`) does not change it; the enclave dealer loads no
entry-point plug-in.

Only `test_ray_session_refuses_a_forged_enclave_dealer` starts Ray (the shared local one); the
others call the actors' methods directly (`ray.get` replaced by the identity), measure a copy of
the package, or run a dealer in a fresh interpreter.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import mpc.tee.measurement as measurement
from mpc.errors import ConfigurationError
from mpc.parties.actors import DealerActor, PartyActor
from mpc.parties.party import SessionConfig
from mpc.parties.runtime import EnclaveSettings
from mpc.rng import new_seed
from mpc.session import Session
from mpc.tee import (
    EnclaveSeedService,
    Quote,
    QuotePolicy,
    SeedHandshake,
    SignedQuote,
    SimulatedBackend,
    UntrustedPlatformError,
    dealer_config,
    measure_dealer,
    policy_for_dealer,
)
from mpc.tee.measurement import dealer_code_files, default_root
from mpc.tee.quote import ed25519_public_bytes, sign_quote

PARTIES = ("alice", "bob", "carol")
SESSION_ID = b"session-trust-0123456789"
CONFIG = dealer_config("additive", 3, 1)


# ---- a forged dealer ---------------------------------------------------------------------------


class ForgedBackend(SimulatedBackend):
    """A modified dealer: honest measurement, but its quotes claim a real (not simulated, not
    debug) enclave, signed with the dealer's own key."""

    claim_simulated = False
    claim_debug = False

    def quote(self, nonce: bytes, session_id: bytes, enclave_public_key: bytes) -> SignedQuote:
        honest = Quote.from_bytes(super().quote(nonce, session_id, enclave_public_key).body)
        body = Quote(
            backend="sgx",
            measurement=honest.measurement,
            security_version=honest.security_version,
            debug=self.claim_debug,
            simulated=self.claim_simulated,
            enclave_public_key=honest.enclave_public_key,
            nonce=honest.nonce,
            session_id=honest.session_id,
            issued_at=honest.issued_at,
            expires_at=honest.expires_at,
        ).to_bytes()
        return SignedQuote(body, sign_quote(body, self._platform_key))


class _Call:
    """`dealer.method.remote(...)` of a fake actor: returns the value (ray.get is the identity)."""

    def __init__(self, function: Any) -> None:
        self.remote = function


class InProcessDealer:
    """The dealer as a party actor sees it, without Ray: `attested_seed` and `platform_key`."""

    def __init__(self, backend: SimulatedBackend) -> None:
        backend.launch(CONFIG)
        self.seeds = [new_seed() for _ in PARTIES]
        self.service = EnclaveSeedService(backend, SESSION_ID, len(PARTIES), self.seeds.__getitem__)
        self.backend = backend
        self.attested_seed = _Call(self.service.handle)
        self.platform_key = _Call(lambda: backend.platform_public_key)


def forged_dealer() -> InProcessDealer:
    return InProcessDealer(ForgedBackend(Ed25519PrivateKey.generate()))


@pytest.fixture
def party(monkeypatch: pytest.MonkeyPatch) -> PartyActor:
    """Party rank 0 as its Ray actor would run, with `ray.get` returning the value it is given."""
    import ray

    monkeypatch.setattr(ray, "get", lambda value, timeout=None: value)
    return PartyActor(0, SessionConfig(PARTIES, "additive", 1), "tcp", SESSION_ID)


def driver_options(settings: dict[str, Any], dealer: InProcessDealer) -> dict[str, Any]:
    """What the Ray driver hands the party: the session's settings, with `platform_keys` filled
    in from the dealer when none is pinned (mpc.parties.ray_runtime)."""
    keys = settings.get("platform_keys") or [dealer.backend.platform_public_key]
    return {**settings, "platform_keys": keys}


# ---- item 2: the root of trust -----------------------------------------------------------------


def test_a_forged_real_quote_is_refused_when_no_platform_key_is_pinned(party: PartyActor) -> None:
    dealer = forged_dealer()
    # the driver relays the dealer's own key and simulation is not allowed: nothing is pinned
    relayed = {"allow_simulated": False, "allow_debug": False, "platform_keys": []}
    with pytest.raises(ConfigurationError, match=r"enclave_platform_keys=\["):
        party._attested_seed(dealer, driver_options(relayed, dealer))
    # simulation allowed: the learned key signs only SIMULATED, DEBUG quotes, not this one
    allowed = EnclaveSettings(allow_simulated=True).as_dict()
    with pytest.raises(UntrustedPlatformError, match="SIMULATED, DEBUG") as refused:
        party._attested_seed(dealer, driver_options(allowed, dealer))
    assert "simulated=False, debug=False" in str(refused.value)
    assert "enclave_platform_keys" in str(refused.value)


def test_a_forged_real_quote_is_refused_when_another_key_is_pinned(party: PartyActor) -> None:
    pinned = ed25519_public_bytes(Ed25519PrivateKey.generate())
    for allow in (False, True):
        dealer = forged_dealer()
        settings = EnclaveSettings((pinned,), allow_simulated=allow).as_dict()
        with pytest.raises(UntrustedPlatformError, match="check 'signature'"):
            party._attested_seed(dealer, driver_options(settings, dealer))


def test_a_pinned_platform_key_is_the_root_of_trust(party: PartyActor) -> None:
    """A real enclave's key, pinned by the party, is trusted for a real quote; a simulated
    dealer is accepted with the explicit allowance only (and its quote says so)."""
    platform = Ed25519PrivateKey.generate()
    real = InProcessDealer(ForgedBackend(platform))  # stands in for a hardware enclave
    settings = EnclaveSettings((ed25519_public_bytes(platform),)).as_dict()
    seed, summary = party._attested_seed(real, driver_options(settings, real))
    assert seed == real.seeds[0] and "flags=none" in summary
    simulated = InProcessDealer(SimulatedBackend(Ed25519PrivateKey.generate()))
    allowed = EnclaveSettings(allow_simulated=True).as_dict()
    seed, summary = party._attested_seed(simulated, driver_options(allowed, simulated))
    assert seed == simulated.seeds[0] and "SIMULATED" in summary and "DEBUG" in summary


def test_a_session_that_pins_no_platform_key_is_refused_with_what_to_set() -> None:
    with pytest.raises(ConfigurationError, match=r"enclave_platform_keys=\[") as refused:
        Session(list(PARTIES), dealer="enclave")
    assert "allow_simulated_enclave=True" in str(refused.value)
    key = ed25519_public_bytes(Ed25519PrivateKey.generate())
    for bad in ([b"short"], ["not hex"], key, key.hex()):
        with pytest.raises(ConfigurationError, match="enclave_platform_keys"):
            Session(list(PARTIES), dealer="enclave", enclave_platform_keys=bad)  # type: ignore[arg-type]
    session = Session(list(PARTIES), dealer="enclave", enclave_platform_keys=[key.hex()])
    assert session.settings.enclave == EnclaveSettings((key,))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        Session(list(PARTIES), dealer="enclave", allow_simulated_enclave=True)


@pytest.mark.parametrize(
    ("simulated", "debug", "accepted"),
    [(False, False, False), (False, True, False), (True, False, False), (True, True, True)],
)
def test_a_learned_simulated_key_signs_only_simulated_debug_quotes(
    simulated: bool, debug: bool, accepted: bool
) -> None:
    backend = ForgedBackend(Ed25519PrivateKey.generate())
    backend.claim_simulated, backend.claim_debug = simulated, debug
    dealer = InProcessDealer(backend)
    policy = policy_for_dealer(
        "additive",
        3,
        1,
        trusted_platform_keys=(),
        simulated_platform_keys=[backend.platform_public_key],
        allow_simulated=True,
        allow_debug=True,
    )
    handshake = SeedHandshake(0, SESSION_ID)
    answer = dealer.service.handle(handshake.request_bytes())
    if accepted:
        assert handshake.finish(answer, policy).seed == dealer.seeds[0]
    else:
        with pytest.raises(UntrustedPlatformError, match="only for SIMULATED, DEBUG quotes"):
            handshake.finish(answer, policy)


def test_a_learned_simulated_key_needs_the_explicit_allowance() -> None:
    key = ed25519_public_bytes(Ed25519PrivateKey.generate())
    measurement = measure_dealer(None, CONFIG)
    for allow_simulated, allow_debug in ((False, False), (True, False), (False, True)):
        with pytest.raises(ConfigurationError, match="allow_simulated=True and allow_debug=True"):
            QuotePolicy(
                allowed_measurements={measurement},
                trusted_platform_keys=set(),
                min_security_version=1,
                allow_simulated=allow_simulated,
                allow_debug=allow_debug,
                simulated_platform_keys={key},
            )
    with pytest.raises(ConfigurationError, match="deny by default"):
        QuotePolicy(
            allowed_measurements={measurement}, trusted_platform_keys=set(), min_security_version=1
        )


@pytest.mark.usefixtures("ray_local")
def test_ray_session_refuses_a_forged_enclave_dealer(monkeypatch: pytest.MonkeyPatch) -> None:
    """End to end: the dealer actor reports its own key and signs "real" quotes with it."""
    from ray import cloudpickle

    import mpc.parties.ray_runtime as ray_runtime

    monkeypatch.setattr(ray_runtime, "DealerActor", ForgedDealerActor)
    module = sys.modules[__name__]
    cloudpickle.register_pickle_by_value(module)  # type: ignore[no-untyped-call]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the simulated-enclave warning
        session = Session(list(PARTIES), dealer="enclave", allow_simulated_enclave=True, timeout=20)
    try:
        with pytest.raises(UntrustedPlatformError, match="SIMULATED, DEBUG"):
            session.start()
    finally:
        session.close()
        cloudpickle.unregister_pickle_by_value(module)  # type: ignore[no-untyped-call]


class ForgedDealerActor(DealerActor):
    """The Ray dealer actor with the forged backend (its key is what `platform_key` reports)."""

    def __init__(self, protocol: str, n: int, threshold: int, session_id: bytes, enclave: Any):
        super().__init__(protocol, n, threshold, session_id, enclave)
        self._backend = ForgedBackend(Ed25519PrivateKey.generate())
        self._backend.launch(dealer_config(protocol, n, threshold))
        self._seed_service = EnclaveSeedService(self._backend, session_id, n, self._dealer.seed_for)


# ---- item 3: what is measured ------------------------------------------------------------------

DEALER_RUN = r"""
import json, sys
from mpc.dealers.streams import Stream
from mpc.errors import DealerError
from mpc.parties.actors import DealerActor
from mpc.tee import SeedHandshake
import mpc.federation.dealer_service, mpc.federation.serve

for protocol in ("additive", "shamir-beaver"):
    dealer = DealerActor(protocol, 3, 1, b"s" * 16, "simulated")
    dealer.attested_seed(SeedHandshake(0, b"s" * 16).request_bytes())
    for stream in (Stream("triple", ((4,), (4,))), Stream("compare", ((4,),), bits=64)):
        for rank in range(3):
            try:
                dealer.corrections(rank, stream.to_wire(), 0, 1)
            except (DealerError, ValueError):  # not this rank's, or not this protocol's
                pass
    base = {"shape": [2], "frac_bits": 16, "epsilon": 1.0, "sensitivity": 1.0}
    specs = [
        {"mechanism": "discrete_gaussian", "delta": 1e-6, **base},
        {"mechanism": "discrete_laplace", **base},
        {"mechanism": "cms_vector_laplace", "dim": 2, **base},
    ]
    for counter, spec in enumerate(specs):
        dealer.noise_share(0, [1, counter], spec)
names = [n for n in sys.modules if n == "mpc" or n.startswith("mpc.")]
print(json.dumps(sorted(sys.modules[n].__file__ for n in names)))
"""


def test_every_mpc_module_the_dealer_runs_is_measured() -> None:
    """Run a dealer (seeds, corrections, every noise mechanism) in a fresh interpreter: every
    `mpc` module it loaded is a measured file."""
    done = subprocess.run(
        [sys.executable, "-c", DEALER_RUN], capture_output=True, text=True, timeout=120, check=True
    )
    root = default_root()
    loaded = {Path(f).resolve().relative_to(root).as_posix() for f in json.loads(done.stdout)}
    measured = {rel for rel, _ in dealer_code_files()}
    assert {"mpc/dp/samplers.py", "mpc/bitpack.py", "mpc/errors.py"} <= loaded
    assert loaded <= measured, sorted(loaded - measured)
    assert set(measurement.dealer_modules().values()) <= measured


@pytest.fixture
def package_copy(tmp_path: Path) -> Path:
    shutil.copytree(
        default_root() / "mpc", tmp_path / "mpc", ignore=shutil.ignore_patterns("__pycache__")
    )
    return tmp_path


def flip_one_byte(path: Path) -> bytes:
    """Change one byte of `path` (an empty file gets one) in its first line (every module of
    the package opens with its docstring, so the change cannot break an import); return the
    original content."""
    original = path.read_bytes()
    changed = bytearray(original or b"\n")
    if original:
        first_line = original.find(b"\n") if b"\n" in original else len(original)
        changed[max(0, first_line // 2)] ^= 0x01
    path.write_bytes(bytes(changed))
    return original


def test_changing_any_file_of_the_closure_changes_the_measurement(package_copy: Path) -> None:
    base = measure_dealer(package_copy, CONFIG)

    def changes_it(rel: str) -> bool:
        target = package_copy / rel
        original = flip_one_byte(target)
        try:
            return measure_dealer(package_copy, CONFIG) != base
        finally:
            target.write_bytes(original)

    named = ["mpc/dp/samplers.py", "mpc/bitpack.py", "mpc/dp/mechanisms.py", "mpc/errors.py"]
    named += ["mpc/parties/party.py", "mpc/dealers/streams.py", "mpc/federation/dealer_service.py"]
    for rel in named:
        assert changes_it(rel), rel
    closure = set(measurement.dealer_modules(package_copy).values())
    assert set(named) <= closure and len(closure) > 40
    for rel in sorted(closure):
        assert changes_it(rel), rel
    assert measure_dealer(package_copy, CONFIG) == base


def test_a_discrete_gaussian_that_returns_zeros_changes_mpc_tee_measure(
    package_copy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from mpc.cli import main

    def measure() -> str:
        args = ["tee", "measure", "--parties", "3", "--threshold", "1"]
        assert main([*args, "--root", str(package_copy)]) == 0
        out = capsys.readouterr().out
        assert "mpc/dp/samplers.py" not in out  # listed with --files only
        return out.splitlines()[0]

    before = measure()
    samplers = package_copy / "mpc" / "dp" / "samplers.py"
    text = samplers.read_text()
    honest = '    v = to_fraction(sigma2, "sigma2")\n'
    assert honest in text
    samplers.write_text(
        text.replace(honest, "    return np.zeros(_shape(shape), np.int64)\n" + honest)
    )
    assert measure() != before


def test_files_outside_the_closure_do_not_change_the_measurement(package_copy: Path) -> None:
    base = measure_dealer(package_copy, CONFIG)
    closure = set(measurement.dealer_modules(package_copy).values())
    outside = ["mpc/cli.py", "mpc/scenario.py", "mpc/bench.py"]
    assert not closure & set(outside)
    for rel in outside:
        flip_one_byte(package_copy / rel)
    (package_copy / "mpc" / "unused_module.py").write_text("X = 1\n")
    assert measure_dealer(package_copy, CONFIG) == base


def test_the_closure_follows_lazy_imports_but_not_type_checking_ones(package_copy: Path) -> None:
    extra = package_copy / "mpc" / "dealers" / "base.py"
    extra.write_text(
        extra.read_text()
        + "\nfrom typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import mpc.cli\n"
        + "def _later():\n    import mpc.scenario\n"
    )
    modules = measurement.dealer_modules(package_copy)
    assert "mpc.scenario" in modules and "mpc.cli" not in modules


def test_dependency_versions_are_measured(
    package_copy: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    names = dict(measurement.dealer_dependencies(package_copy))
    for name in ("numpy", "cryptography", "msgpack", "python"):
        assert name in names, sorted(names)
    base = measure_dealer(package_copy, CONFIG)
    real_version = measurement.importlib.metadata.version

    def other_numpy(distribution: str) -> str:
        return "0.0.1" if distribution == "numpy" else real_version(distribution)

    monkeypatch.setattr(measurement.importlib.metadata, "version", other_numpy)
    measurement._dependency_versions.cache_clear()
    try:
        assert dict(measurement.dealer_dependencies(package_copy))["numpy"] == "0.0.1"
        assert measure_dealer(package_copy, CONFIG) != base
    finally:
        monkeypatch.undo()
        measurement._dependency_versions.cache_clear()
    assert measure_dealer(package_copy, CONFIG) == base


def test_the_enclave_dealer_loads_no_entry_point_plugins(monkeypatch: pytest.MonkeyPatch) -> None:
    import mpc.protocols.registry as registry

    def no_plugins(**_: Any) -> Any:
        raise AssertionError("the enclave dealer must not load entry-point plug-ins")

    monkeypatch.setattr(registry, "_entry_points_loaded", False)
    monkeypatch.setattr(registry, "entry_points", no_plugins)
    DealerActor("shamir-beaver", 3, 1, SESSION_ID, "simulated")
    with pytest.raises(ConfigurationError, match="built-in protocols"):
        DealerActor("plugin-protocol", 3, 1, SESSION_ID, "simulated")
    from mpc.parties.actors import measured_protocol

    for name in ("additive", "shamir", "shamir-beaver"):
        assert measured_protocol(name) is registry.get_protocol(name)
