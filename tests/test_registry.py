"""The protocol registry: names, duplicates, plug-ins through entry points, compatibility checks.

Plug-in tests replace `mpc.protocols.registry.entry_points` with a fake and reset the module's
`_entry_points_loaded` flag and its record of broken plug-ins (`_broken`) through `monkeypatch`
(restored after each test); every protocol a test registers is unregistered in a fixture's
finally block, so no test sees another's.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from mpc.errors import ConfigurationError
from mpc.protocols import registry
from mpc.protocols.additive import AdditiveBeaver
from mpc.protocols.base import Need
from mpc.protocols.registry import (
    ENTRY_POINT_GROUP,
    PluginWarning,
    available_protocols,
    broken_plugins,
    check_compatibility,
    get_protocol,
    register_protocol,
    unregister_protocol,
)
from mpc.protocols.shamir import ShamirBeaver, ShamirDegreeReduction

BUILTINS = {
    "additive": AdditiveBeaver,
    "shamir": ShamirDegreeReduction,
    "shamir-beaver": ShamirBeaver,
}


class OutsideProtocol(AdditiveBeaver):
    """Stands in for a protocol class of another package."""

    name = "outside-proto"
    summary = "a protocol from an outside package (test)"


class FakeEntryPoint:
    """What `importlib.metadata.entry_points(group=...)` yields: name, value, load()."""

    def __init__(self, name: str, value: str, load: Callable[[], Any]) -> None:
        self.name = name
        self.value = value
        self.group = ENTRY_POINT_GROUP
        self._load = load
        self.loads = 0

    def load(self) -> Any:
        self.loads += 1
        return self._load()


@pytest.fixture
def cleanup() -> Iterator[list[str]]:
    """Names appended to the yielded list are unregistered after the test, whatever happens."""
    names: list[str] = []
    try:
        yield names
    finally:
        for name in names:
            unregister_protocol(name)


@pytest.fixture
def fake_entry_points(
    monkeypatch: pytest.MonkeyPatch, cleanup: list[str]
) -> Callable[..., list[FakeEntryPoint]]:
    """Install fake entry points (and forget that entry points were already loaded)."""

    def install(*eps: FakeEntryPoint) -> list[FakeEntryPoint]:
        def fake(*, group: str | None = None, **_: Any) -> list[FakeEntryPoint]:
            return list(eps) if group == ENTRY_POINT_GROUP else []

        cleanup.extend(ep.name for ep in eps)
        monkeypatch.setattr(registry, "entry_points", fake)
        monkeypatch.setattr(registry, "_entry_points_loaded", False)
        monkeypatch.setattr(registry, "_broken", {})
        return list(eps)

    return install


def _fail(exc: BaseException) -> Callable[[], Any]:
    def load() -> Any:
        raise exc

    return load


# ---- names ----------------------------------------------------------------------------------
def test_builtins_present_with_security_descriptions() -> None:
    protocols = available_protocols()
    for name, cls in BUILTINS.items():
        assert protocols[name] is cls
        assert get_protocol(name) is cls
        assert cls.name == name and cls.summary
        description = cls.security.describe()
        assert "semi-honest" in description and "tolerates" in description
    assert "n-1 of n" in AdditiveBeaver.security.describe()
    assert "t < n/2" in ShamirDegreeReduction.security.describe()
    assert "detects inconsistent opened shares" in ShamirBeaver.security.describe()


def test_duplicate_name_refused(cleanup: list[str]) -> None:
    class Impostor(AdditiveBeaver):
        name = "additive"

    with pytest.raises(ConfigurationError, match="already registered") as info:
        register_protocol(Impostor)
    assert "'additive'" in str(info.value) and "choose another name" in str(info.value)
    assert get_protocol("additive") is AdditiveBeaver

    class Mine(AdditiveBeaver):
        name = "test-registry-mine"

    cleanup.append(Mine.name)
    assert register_protocol(Mine) is Mine
    assert register_protocol(Mine) is Mine  # the same class again is not a duplicate

    class Other(AdditiveBeaver):
        name = "test-registry-other"

    with pytest.raises(ConfigurationError, match="already registered"):
        register_protocol(Other, name="test-registry-mine")
    assert get_protocol("test-registry-mine") is Mine


def test_register_refuses_non_protocols() -> None:
    class NotAProtocol:
        name = "test-registry-not-a-protocol"

    with pytest.raises(ConfigurationError, match="not a subclass"):
        register_protocol(NotAProtocol)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="not a subclass"):
        register_protocol(lambda: None)  # type: ignore[arg-type]


def test_decorator_and_unregister(cleanup: list[str]) -> None:
    cleanup.append("test-registry-decorated")

    @register_protocol
    class Decorated(AdditiveBeaver):
        name = "test-registry-decorated"

    assert get_protocol("test-registry-decorated") is Decorated
    unregister_protocol("test-registry-decorated")
    with pytest.raises(ConfigurationError, match="unknown protocol"):
        get_protocol("test-registry-decorated")


def test_unknown_name_lists_available() -> None:
    with pytest.raises(ConfigurationError) as info:
        get_protocol("no-such-protocol")
    message = str(info.value)
    assert "unknown protocol 'no-such-protocol'" in message
    for name in available_protocols():
        assert name in message


# ---- entry points -------------------------------------------------------------------------
def test_outside_package_found_through_entry_point(
    fake_entry_points: Callable[..., list[FakeEntryPoint]],
) -> None:
    (ep,) = fake_entry_points(
        FakeEntryPoint(
            "outside-proto", "outside_pkg.protocols:OutsideProtocol", lambda: OutsideProtocol
        )
    )
    # A known name does not touch entry points (lazy loading).
    assert get_protocol("additive") is AdditiveBeaver
    assert ep.loads == 0
    assert get_protocol("outside-proto") is OutsideProtocol
    assert ep.loads == 1
    assert available_protocols()["outside-proto"] is OutsideProtocol
    assert set(BUILTINS) <= set(available_protocols())
    assert ep.loads == 1  # loaded once


def test_entry_point_name_is_the_registry_key(
    fake_entry_points: Callable[..., list[FakeEntryPoint]],
) -> None:
    fake_entry_points(
        FakeEntryPoint(
            "renamed-proto", "outside_pkg.protocols:OutsideProtocol", lambda: OutsideProtocol
        )
    )
    assert get_protocol("renamed-proto") is OutsideProtocol


@pytest.mark.parametrize(
    "load",
    [
        pytest.param(_fail(ModuleNotFoundError("No module named 'gone_pkg'")), id="import-fails"),
        pytest.param(_fail(AttributeError("module has no attribute 'Proto'")), id="no-attribute"),
        pytest.param(lambda: object, id="not-a-protocol"),
    ],
)
def test_broken_entry_point_is_named_and_the_builtins_still_list(
    fake_entry_points: Callable[..., list[FakeEntryPoint]], load: Callable[[], Any]
) -> None:
    fake_entry_points(FakeEntryPoint("broken-proto", "gone_pkg.mod:Proto", load))
    with pytest.warns(PluginWarning) as warned:
        protocols = available_protocols()
    assert set(BUILTINS) <= set(protocols) and "broken-proto" not in protocols
    (warning,) = warned
    message = str(warning.message)
    assert "'broken-proto'" in message and "gone_pkg.mod:Proto" in message
    assert "fix or uninstall" in message and "\n" not in message
    assert broken_plugins() == {"broken-proto": message}
    with pytest.raises(ConfigurationError) as info:  # asked by name: why it is missing
        get_protocol("broken-proto")
    assert str(info.value) == message
    with pytest.raises(ConfigurationError, match=r"left out, failed to load: broken-proto"):
        get_protocol("no-such-protocol")


def test_broken_entry_point_does_not_hide_the_others(
    fake_entry_points: Callable[..., list[FakeEntryPoint]],
) -> None:
    """registry.py: 'a broken plug-in must not hide the others'."""
    fake_entry_points(
        FakeEntryPoint("broken-proto", "gone_pkg.mod:Proto", _fail(ImportError("gone"))),
        FakeEntryPoint(
            "outside-proto", "outside_pkg.protocols:OutsideProtocol", lambda: OutsideProtocol
        ),
    )
    with pytest.warns(PluginWarning, match="broken-proto"):
        assert get_protocol("outside-proto") is OutsideProtocol
    assert available_protocols()["outside-proto"] is OutsideProtocol
    assert list(broken_plugins()) == ["broken-proto"]


def test_cli_lists_the_others_and_names_the_broken_plugin(
    fake_entry_points: Callable[..., list[FakeEntryPoint]], capsys: pytest.CaptureFixture[str]
) -> None:
    from mpc.cli import main

    fake_entry_points(
        FakeEntryPoint("broken-proto", "gone_pkg.mod:Proto", _fail(ImportError("gone"))),
        FakeEntryPoint(
            "outside-proto", "outside_pkg.protocols:OutsideProtocol", lambda: OutsideProtocol
        ),
    )
    assert main(["protocols"]) == 0
    out, err = capsys.readouterr()
    listed = [line for line in out.splitlines() if line and not line.startswith(" ")]
    assert listed == sorted([*BUILTINS, "outside-proto"])
    (line,) = err.splitlines()
    assert line.startswith("mpc protocols: warning: protocol plug-in 'broken-proto'")
    assert "ImportError: gone" in line


def test_cli_does_not_label_comparison_masks_fixed_point(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`additive` takes comparison masks only for comparisons, `shamir` truncation pairs only
    for fixed-point products: both are listed as optional, neither as 'for fixed point'."""
    from mpc.cli import main

    assert main(["protocols"]) == 0
    out = capsys.readouterr().out
    assert "for fixed point" not in out
    needs = {}
    for name in BUILTINS:
        entry = ("\n" + out).split(f"\n{name}\n", 1)[1].splitlines()
        needs[name] = next(line.strip() for line in entry if "needs from a dealer" in line)
    assert needs == {
        "additive": "needs from a dealer: matrix triples, triples, truncation pairs; only for "
        "the operations that use them: comparison masks",
        "shamir": "needs from a dealer: nothing; only for the operations that use them: "
        "truncation pairs",
        "shamir-beaver": "needs from a dealer: matrix triples, triples, truncation pairs",
    }


def _run_python(code: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=tmp_path,
        env={**_clean_env(), "PYTHONPATH": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=120,
    )


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}


def _install_fake_plugin(tmp_path: Path) -> None:
    """A real (unpacked) distribution declaring an `mpc.protocols` entry point."""
    (tmp_path / "mpc_fake_plugin.py").write_text(
        textwrap.dedent(
            """
            from mpc.protocols.additive import AdditiveBeaver

            class FakePlugin(AdditiveBeaver):
                name = "fake-plugin"
                summary = "installed through an entry point (test)"
            """
        )
    )
    dist = tmp_path / "mpc_fake_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: mpc-fake-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(
        f"[{ENTRY_POINT_GROUP}]\nfake-plugin = mpc_fake_plugin:FakePlugin\n"
    )


def test_import_mpc_loads_no_ray_protocols_or_plugins(tmp_path: Path) -> None:
    _install_fake_plugin(tmp_path)
    done = _run_python(
        """
        import importlib.metadata as md
        import sys

        calls = []
        real = md.entry_points
        md.entry_points = lambda *a, **k: calls.append((a, k)) or real(*a, **k)
        import mpc

        loaded = [m for m in ("ray", "mpc.protocols.additive", "mpc.protocols.shamir",
                              "mpc_fake_plugin") if m in sys.modules]
        assert not loaded, loaded
        assert not calls, calls
        print("clean")
        """,
        tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "clean"


def test_installed_plugin_is_found_lazily(tmp_path: Path) -> None:
    _install_fake_plugin(tmp_path)
    done = _run_python(
        """
        import sys
        from mpc.protocols.registry import get_protocol

        assert get_protocol("additive").name == "additive"
        assert "mpc_fake_plugin" not in sys.modules
        cls = get_protocol("fake-plugin")
        assert "mpc_fake_plugin" in sys.modules
        print(cls.__module__, cls.__name__)
        """,
        tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "mpc_fake_plugin FakePlugin"


# ---- compatibility --------------------------------------------------------------------------
def test_dealer_lacking_needs_is_refused() -> None:
    with pytest.raises(ConfigurationError) as info:
        check_compatibility(AdditiveBeaver, 3, None, frozenset({Need.TRIPLES}))
    message = str(info.value)
    assert "matrix triples" in message and "truncation pairs" in message
    assert "'additive'" in message and "choose a dealer" in message

    with pytest.raises(ConfigurationError) as info:
        check_compatibility(AdditiveBeaver, 3, None, None)
    assert "no dealer" in str(info.value) and "dealer='trusted'" in str(info.value)

    assert check_compatibility(AdditiveBeaver, 3, None, frozenset(Need)) == 2


def test_threshold_too_large_for_n_is_refused() -> None:
    with pytest.raises(ConfigurationError) as info:
        check_compatibility(ShamirDegreeReduction, 3, 2, frozenset(Need))
    message = str(info.value)
    assert "n=3" in message and "t=2" in message
    assert "t <= 1" in message and "at least 5 parties" in message  # what to change

    with pytest.raises(ConfigurationError, match=r"1 <= t < n=3"):
        check_compatibility(AdditiveBeaver, 3, 3, frozenset(Need))
    with pytest.raises(ConfigurationError, match="at least 2 parties"):
        check_compatibility(AdditiveBeaver, 1, None, frozenset(Need))
    assert check_compatibility(ShamirBeaver, 5, None, frozenset(Need)) == 2
