"""Large openings in two rounds (reduce-scatter, then all-gather; `Protocol._open_split`)."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import local_parties, protocol_cases

from mpc.errors import CheatingDetectedError, IntegrityError, PartyFailedError
from mpc.program import PartyContext
from mpc.protocols.base import Protocol


@pytest.fixture
def small_split(monkeypatch: pytest.MonkeyPatch) -> None:
    """Split every opening of 8 bytes or more, so that small tests take the two-round path."""
    monkeypatch.setattr(Protocol, "split_open_bytes", 8)


def _opening(values: np.ndarray):  # type: ignore[no-untyped-def]
    def program(ctx: PartyContext) -> np.ndarray | None:
        x = ctx.input(ctx.parties[0], values if ctx.rank == 0 else None, kind="int")
        return ctx.reveal(x)

    return program


@pytest.mark.usefixtures("small_split")
@pytest.mark.parametrize(("protocol", "n"), protocol_cases((3, 5)))
@pytest.mark.parametrize("size", [1, 2, 7, 1000])
def test_split_opening_gives_the_value_in_two_rounds(protocol: str, n: int, size: int) -> None:
    """Every party gets the exact value, also when some slices are empty (size < n). Shamir
    with spare shares keeps the one-round opening, in which every party checks every share."""
    values = np.arange(size, dtype=np.int64) * 7919 - 3 * size
    parties = local_parties(protocol, n)
    checks = parties.runners[0]._protocol_cls.make_scheme(n, parties.config.threshold)
    outcomes = parties.run(_opening(values))
    for outcome in outcomes.values():
        np.testing.assert_array_equal(outcome.output, values)
        assert outcome.stats.by_kind["reveal"].rounds == (1 if checks.checks_openings else 2)


@pytest.mark.usefixtures("small_split")
def test_shamir_openings_of_any_size_still_detect_a_wrong_share() -> None:
    """Erin falsifies what she sends in the last round of an opening: every honest party
    checks every share (one-round opening), so the run stops instead of returning a wrong
    value (a split opening would accept the slice she reconstructed without any check)."""
    values = np.arange(30)
    rounds = local_parties("shamir", 5).run(_opening(values))["alice"].stats.by_kind["reveal"]
    parties = local_parties("shamir", 5)
    erin = parties.runners[4].transport
    original = erin.send

    def wrong_send(to: int, tag: object, array: np.ndarray, label: str = "") -> int:
        last = tag[1] == 2 and tag[2] == rounds.rounds - 1  # type: ignore[index]
        return original(to, tag, array + np.uint64(1) if last else array, label)

    erin.send = wrong_send  # type: ignore[method-assign]
    with pytest.raises(PartyFailedError) as info:
        parties.run(_opening(values))
    assert isinstance(info.value.__cause__, CheatingDetectedError)


@pytest.mark.usefixtures("small_split")
def test_split_opening_sends_two_thirds_of_the_traffic() -> None:
    size = 3000
    outcomes = local_parties("additive", 3).run(_opening(np.arange(size)))
    for outcome in outcomes.values():  # 2 slices of size/3 out, then 2 copies of one slice
        assert outcome.stats.by_kind["reveal"].bytes_sent == 4 * (size // 3) * 8


def test_small_openings_stay_one_round() -> None:
    outcome = local_parties("additive", 3).run(_opening(np.arange(100)))["bob"]
    assert outcome.stats.by_kind["reveal"].rounds == 1
    assert outcome.stats.by_kind["reveal"].bytes_sent == 2 * 100 * 8


@pytest.mark.usefixtures("small_split")
def test_a_wrong_slice_from_a_peer_is_refused() -> None:
    parties = local_parties("additive", 3)
    carol = parties.runners[2].transport
    original = carol.send

    def short_send(to: int, tag: object, array: np.ndarray, label: str = "") -> int:
        short = array[:-1] if tag[-1] == 1 else array  # type: ignore[index]
        return original(to, tag, short, label)

    carol.send = short_send  # type: ignore[method-assign]
    with pytest.raises(PartyFailedError) as info:
        parties.run(_opening(np.arange(30)))
    assert isinstance(info.value.__cause__, IntegrityError)
    assert "party 2 sent a slice of shape (9,)" in str(info.value)
