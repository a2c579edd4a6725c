"""The example protocol of docs/writing-a-protocol.md runs, is correct and passes conformance.

The doc's python block is executed in a fresh namespace by a function-scoped fixture that always
unregisters the example protocol afterwards (try/finally), so no other test, in whatever order,
sees it. Bounds (frac bits f = 16, ulp = 2^-16), as stated in the doc:
- the secure fixed-point product differs from float64 x*y by at most the encoding error of both
  inputs, (|x| + |y|) 2^-17 + 2^-34, plus 1 ulp of truncation;
- that holds per element except with probability below 2^(ell_x + 1 - 64) for |X*Y| < 2^ell_x
  (X, Y the encodings). The data below keep |x*y| < 16, so ell_x = 36 and the chance that any
  of the 300 elements fails is below 300 * 2^-27 < 3e-6.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import test_protocols as conformance
from docblocks import blocks
from helpers import local_parties

from mpc.errors import ConfigurationError
from mpc.program import PartyContext, Secret
from mpc.protocols.base import Need
from mpc.protocols.registry import available_protocols, get_protocol, unregister_protocol
from mpc.session import Session

DOC = Path(__file__).resolve().parent.parent / "docs" / "writing-a-protocol.md"
NAME = "additive-2pc-localtrunc"
FRAC = 16
ULP = 2.0**-FRAC


def python_blocks(doc: Path) -> list[str]:
    """The bodies of the doc's ```python blocks that are scripts, in order: not those marked as a
    file of the outside-package example (`<!-- file: ... -->`, tests/test_plugin_package.py)."""
    return [b.body for b in blocks(doc) if b.lang == "python" and b.marked("file") is None]


def conformance_tests() -> list[Callable[..., None]]:
    """The test functions of tests/test_protocols.py parametrised over (protocol, n)."""
    found = []
    for name, func in vars(conformance).items():
        if not (name.startswith("test_") and inspect.isfunction(func)):
            continue
        for mark in getattr(func, "pytestmark", []):
            if mark.name == "parametrize" and mark.args[0] == ("protocol", "n"):
                found.append(func)
    return found


CONFORMANCE = conformance_tests()


@pytest.fixture
def doc_namespace(capsys: pytest.CaptureFixture[str]) -> Iterator[dict[str, Any]]:
    """Run the doc's python block(s) in a fresh namespace; always unregister the example."""
    assert NAME not in available_protocols(), "example protocol leaked from an earlier test"
    namespace: dict[str, Any] = {"__name__": "writing_a_protocol_example"}
    try:
        for i, block in enumerate(python_blocks(DOC)):
            exec(compile(block, f"{DOC.name}[python block {i}]", "exec"), namespace)
        namespace["__stdout__"] = capsys.readouterr().out
        yield namespace
    finally:
        unregister_protocol(NAME)
    assert NAME not in available_protocols()


def test_doc_has_one_python_example() -> None:
    assert len(python_blocks(DOC)) == 1


def test_example_is_registered(doc_namespace: dict[str, Any]) -> None:
    cls = get_protocol(NAME)
    assert cls is doc_namespace["AdditiveTwoPartyLocalTrunc"]
    assert NAME in available_protocols()
    assert cls.needs == frozenset({Need.TRIPLES, Need.MATRIX_TRIPLES})
    assert "semi-honest" in cls.security.describe()
    assert cls.check_parties(2, None) == 1
    for n in (1, 3, 5):
        with pytest.raises(ConfigurationError, match="2 parties"):
            cls.check_parties(n, None)
    out = doc_namespace["__stdout__"]
    assert "secure:" in out and "plaintext:" in out


def test_example_session_refuses_three_parties(doc_namespace: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError, match="exactly 2 parties"):
        Session(
            ["alice", "bob", "carol"],
            protocol=NAME,
            runtime="local",
            dealer="local-insecure",
            allow_insecure=True,
        )


def test_example_printed_result_matches_plaintext(doc_namespace: dict[str, Any]) -> None:
    x, y = doc_namespace["x_plain"], doc_namespace["y_plain"]
    got = doc_namespace["result"]["alice"]
    np.testing.assert_array_equal(got, doc_namespace["result"]["bob"])
    bound = (np.abs(x) + np.abs(y)) * 2.0**-17 + 2.0**-34 + ULP
    assert np.all(np.abs(got - x * y) <= bound), (got, x * y)


def test_secure_product_matches_numpy(doc_namespace: dict[str, Any]) -> None:
    """300 products through a Session, within the doc's bound; truncation costs no round."""
    rng = np.random.default_rng(20170522)
    x = rng.uniform(-4, 4, 300)
    y = rng.uniform(-4, 4, 300)

    def program(ctx: PartyContext) -> np.ndarray | None:
        sx = ctx.input("alice", key="x")
        sy = ctx.input("bob", key="y")
        return ctx.reveal(sx * sy)

    with _session(private={"alice": {"x": x}, "bob": {"y": y}}) as session:
        result = session.run(program)
    got = result["alice"]
    bound = (np.abs(x) + np.abs(y)) * 2.0**-17 + 2.0**-34 + ULP
    assert np.all(np.abs(got - x * y) <= bound), np.max(np.abs(got - x * y) - bound)
    # Beaver opens e and d (one array each, 8 bytes per element) to the one peer in one round;
    # the local truncation adds neither rounds nor bytes.
    for party in ("alice", "bob"):
        mul = result.stats[party].by_kind["mul"]
        assert (mul.calls, mul.rounds) == (1, 1)
        assert mul.bytes_sent == 1 * 2 * np.dtype(np.uint64).itemsize * x.size


def test_local_truncation_error_direction(doc_namespace: dict[str, Any]) -> None:
    """Raw truncation of integers: floor(x / 2^f) or one more, as the doc states."""
    values = np.arange(-150, 150, dtype=np.int64) * 987_654_321  # |x| < 2^38

    def program(ctx: PartyContext) -> np.ndarray | None:
        x = ctx.input("alice", values if ctx.me == "alice" else None, kind="int", bound=2**38)
        with ctx.channel.operation("truncate"):
            y = Secret(ctx, ctx.protocol.truncate(x.share, FRAC), 0, bound=2**38)
        out = ctx.reveal(y)
        assert ctx.channel.stats.by_kind["truncate"].rounds == 0
        return out

    got = local_parties(NAME, 2, dealer=False).run(program)["alice"].output
    assert set(np.unique(got - (values >> FRAC))) <= {0, 1}


@pytest.mark.parametrize("check", CONFORMANCE, ids=lambda f: f.__name__)
def test_conformance_n2(doc_namespace: dict[str, Any], check: Callable[..., None]) -> None:
    """Each (protocol, n)-parametrised conformance test of tests/test_protocols.py, for n=2."""
    check(NAME, 2)


def test_conformance_suite_was_found() -> None:
    names = {f.__name__ for f in CONFORMANCE}
    assert {"test_round_trip", "test_mul_int_and_fixed", "test_matmul"} <= names


def test_own_truncation_is_never_replaced_by_the_fused_dealer_one(
    doc_namespace: dict[str, Any],
) -> None:
    """A protocol with its own `truncate` (here a local one) keeps it: products are truncated at
    once, never deferred into a dealer-pair truncation fused with the next product."""

    def program(ctx: PartyContext) -> tuple[bool, bool]:
        sx = ctx.input("alice", np.array([0.5]) if ctx.me == "alice" else None)
        return ctx.protocol.settles_in_products(), (sx * sx)._pending != 0

    with _session() as session:
        assert session.run(program)["alice"] == (False, False)


def _session(**options: Any) -> Session:
    """The doc's protocol between alice and bob in this process (insecure dealer: tests only)."""
    return Session(
        ["alice", "bob"],
        protocol=NAME,
        runtime="local",
        dealer="local-insecure",
        allow_insecure=True,
        **options,
    )
