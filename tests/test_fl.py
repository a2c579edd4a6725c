"""Federated averaging with secure aggregation (`mpc.fl`): exact sums, the same model as the
plaintext recipe, and bad input refused before anything is revealed.

Everything runs in-process (`helpers.local_parties`, parties as threads). Tolerances: the
secure model differs from `fedavg_plain` (same seeds, same clipping, no quantisation) only by
the stochastic rounding of each weighted update to 2^-scale_bits and float32 storage of the
weights, so max |w_secure - w_plain| <= 1e-4 after a few rounds at scale 2^20.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from helpers import NAMES, local_parties

from mpc.algebra import FIELD61, RING64
from mpc.errors import ConfigurationError, InvalidDataError, PartyFailedError
from mpc.fl import FedAvg, SlotLayout, fedavg_plain, secure_sum, stochastic_round
from mpc.fl.quantize import clip_l2, quantization_limit
from mpc.program import PartyContext
from mpc.rng import Prg

torch = pytest.importorskip("torch")
from mpc.fl.torch_support import parameter_vector  # noqa: E402  (needs torch)

FEATURES = 8


def dataset(rows: int = 360, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    gen = np.random.default_rng(seed)  # test data only (not randomness of the protocol)
    x = gen.normal(size=(rows, FEATURES))
    w = gen.normal(size=FEATURES)
    y = (x @ w + 0.3 * gen.normal(size=rows) > 0).astype(np.int64)
    return x, y


def initial_state(hidden: int, seed: int) -> dict[str, Any]:
    generator = torch.Generator().manual_seed(seed)
    shapes = {"0.weight": (hidden, FEATURES), "0.bias": (hidden,), "2.weight": (2, hidden)}
    shapes["2.bias"] = (2,)
    return {k: 0.3 * torch.randn(v, generator=generator) for k, v in shapes.items()}


def make_model(hidden: int = 8, seed: int = 0) -> Any:
    """The same initial model at every party: from a torch.Generator, not torch.manual_seed
    (in-process parties are threads of one process, which share torch's global generator)."""
    model = torch.nn.Sequential(
        torch.nn.Linear(FEATURES, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, 2)
    )
    model.load_state_dict(initial_state(hidden, seed))
    return model


def split(n: int, x: np.ndarray, y: np.ndarray) -> dict[str, dict[str, np.ndarray]]:
    # unequal parts, so that the row weighting matters
    cuts = np.cumsum([len(y) * (k + 1) // (n * (n + 1) // 2) for k in range(n - 1)])
    parts = np.split(np.arange(len(y)), cuts)
    return {name: {"x": x[p], "y": y[p]} for name, p in zip(NAMES[:n], parts, strict=True)}


def fit_program(config: FedAvg) -> Any:
    def program(ctx: PartyContext) -> dict[str, Any]:
        model = make_model()
        result = config.fit(ctx, model, (ctx.private["x"], ctx.private["y"]))
        return {"w": parameter_vector(model), "history": result.history, "slots": result.slots}

    return program


# ---- the pure math --------------------------------------------------------------------------
def test_stochastic_rounding_is_unbiased_and_within_one_unit() -> None:
    values = np.full(20000, 0.3)
    q = stochastic_round(values, 4, Prg(bytes(16)))  # 0.3 * 16 = 4.8: 4 or 5
    assert set(np.unique(q)) == {4, 5}
    # mean 4.8, standard error sqrt(0.16 / 20000) = 0.0028: 5 standard errors
    assert abs(q.mean() - 4.8) < 0.015
    many = np.linspace(-3, 3, 1001)
    rounded = stochastic_round(many, 10, Prg(bytes(16)))
    assert np.all(np.abs(rounded - many * 1024) < 1)


def test_clip_l2() -> None:
    v = np.array([3.0, 4.0])
    clipped, norm = clip_l2(v, 1.0)
    assert norm == 5.0 and np.allclose(clipped, [0.6, 0.8])
    same, _ = clip_l2(v, 10.0)
    assert same is v


@pytest.mark.parametrize("algebra", [RING64, FIELD61])
@pytest.mark.parametrize("parties", [2, 3, 5])
def test_packed_sums_are_exact_at_the_extremes(algebra: Any, parties: int) -> None:
    layout = SlotLayout.plan(1.0, 20, parties, algebra)
    limit = quantization_limit(1.0, 20)
    assert layout.slots >= 2 and layout.sum_bound < algebra.modulus // 2
    gen = np.random.default_rng(1)
    vectors = [gen.integers(-limit, limit + 1, size=101) for _ in range(parties)]
    vectors[0][:5] = limit
    vectors[1][:5] = limit  # the largest sum
    vectors[0][5:10] = -limit
    vectors[1][5:10] = -limit  # the smallest
    packed = sum(layout.pack(v) for v in vectors)
    assert all(int(layout.pack(v).max()) <= layout.party_bound for v in vectors)
    assert np.array_equal(layout.unpack_sum(packed, 101), sum(vectors))


def test_a_clip_norm_and_scale_that_could_overflow_are_refused() -> None:
    with pytest.raises(ConfigurationError, match=r"scale_bits <= \d+ for clip_norm 1e\+06"):
        SlotLayout.plan(1e6, 40, 3, RING64)
    with pytest.raises(ConfigurationError, match="field61 holds without wrapping"):
        SlotLayout.plan(1.0, 58, 3, FIELD61)
    SlotLayout.plan(1.0, 58, 3, RING64)  # the ring has the three more bits


# ---- the secure sum ---------------------------------------------------------------------------
@pytest.mark.parametrize("protocol", ["additive", "shamir"])
def test_secure_sum_equals_the_plain_sum(protocol: str) -> None:
    layout = SlotLayout.plan(1.0, 16, 3, RING64 if protocol == "additive" else FIELD61)
    gen = np.random.default_rng(2)
    vectors = {n: gen.integers(-layout.limit, layout.limit + 1, size=1000) for n in NAMES[:3]}

    def program(ctx: PartyContext) -> Any:
        mine = vectors[ctx.me]
        return secure_sum(ctx, mine, layout, extra=np.array([ctx.rank - 5]))

    outputs = local_parties(protocol, 3).run(program)
    for outcome in outputs.values():
        total, extra = outcome.output
        assert np.array_equal(total, sum(vectors.values()))
        assert extra.tolist() == [-12]


# ---- training ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("protocol", "n"), [("additive", 2), ("additive", 3), ("shamir", 3), ("shamir-beaver", 5)]
)
def test_secure_fedavg_matches_plain_fedavg(protocol: str, n: int) -> None:
    x, y = dataset()
    private = split(n, x, y)
    config = FedAvg(rounds=3, local_epochs=2, batch_size=16, learning_rate=0.2, clip_norm=5.0)
    outputs = local_parties(protocol, n, private=private).run(fit_program(config))
    plain = make_model()
    fedavg_plain(config, plain, [(p["x"], p["y"]) for p in private.values()])
    reference = parameter_vector(plain)
    weights = [o.output["w"] for o in outputs.values()]
    assert all(np.array_equal(w, weights[0]) for w in weights)  # every party applies the same
    assert np.max(np.abs(weights[0] - reference)) <= 1e-4
    assert np.max(np.abs(weights[0] - parameter_vector(make_model()))) > 1e-2  # it trained
    history = outputs[NAMES[0]].output["history"]
    assert [r.round for r in history] == [1, 2, 3]
    # one sharing round (all parties at once) and one opening per round
    assert all(r.bytes_sent > 0 and r.comm_rounds == 2 for r in history)


def test_clipping_is_applied_like_the_plain_recipe() -> None:
    x, y = dataset()
    private = split(3, x, y)
    config = FedAvg(rounds=2, learning_rate=0.5, clip_norm=0.05, weighting="equal")
    outputs = local_parties("additive", 3, private=private).run(fit_program(config))
    plain = make_model()
    fedavg_plain(config, plain, [(p["x"], p["y"]) for p in private.values()])
    start = parameter_vector(make_model())
    secure = outputs[NAMES[0]].output["w"]
    assert np.max(np.abs(secure - parameter_vector(plain))) <= 1e-5
    # each round moves the model by at most the clip norm (an average of clipped updates)
    assert np.linalg.norm(secure - start) <= 2 * 0.05 + 1e-5


def test_progress_line_per_round_with_the_revealed_loss() -> None:
    x, y = dataset()
    config = FedAvg(rounds=2, reveal_loss=True)
    lines: list[str] = []

    def program(ctx: PartyContext) -> None:
        def report(record: Any) -> None:
            lines.append(str(record))

        mine = (ctx.private["x"], ctx.private["y"])
        config.fit(ctx, make_model(), mine, progress=report if ctx.me == NAMES[0] else None)

    local_parties("additive", 3, private=split(3, x, y)).run(program)
    plain_data = [(p["x"], p["y"]) for p in split(3, x, y).values()]
    losses = fedavg_plain(config, make_model(), plain_data)
    assert len(lines) == 2
    assert all(line.startswith(f"round   {i}") for i, line in enumerate(lines, 1))
    assert all(" loss " in line and "MB sent" in line for line in lines)
    shown = [float(line.split(" loss ")[1].split()[0]) for line in lines]
    assert np.allclose(shown, losses, atol=1e-5)


# ---- bad input: a clear error before anything is revealed ----------------------------------------
def failing(program: Any, n: int = 3, protocol: str = "additive", **kw: Any) -> PartyFailedError:
    x, y = dataset()
    parties = local_parties(protocol, n, private=split(n, x, y), **kw)
    with pytest.raises(PartyFailedError) as info:
        parties.run(program)
    return info.value


def test_models_whose_shapes_differ_are_refused() -> None:
    def program(ctx: PartyContext) -> None:
        model = make_model(hidden=9 if ctx.me == "bob" else 8)
        FedAvg(rounds=1).fit(ctx, model, (ctx.private["x"], ctx.private["y"]))

    error = failing(program)
    assert "models differ in their parameters' shapes" in error.cause
    assert "bob: 101 parameters in 4 tensors" in error.cause
    assert "alice: 90 parameters" in error.cause
    assert "fl.agree" in error.operation


def test_initial_weights_that_differ_are_refused() -> None:
    def program(ctx: PartyContext) -> None:
        model = make_model(seed=ctx.rank)
        FedAvg(rounds=1).fit(ctx, model, (ctx.private["x"], ctx.private["y"]))

    cause = failing(program).cause
    assert "initial weights differ (alice alone; bob alone; carol alone)" in cause


def test_configurations_that_differ_are_refused() -> None:
    def program(ctx: PartyContext) -> None:
        config = FedAvg(rounds=1, clip_norm=2.0 if ctx.me == "carol" else 1.0)
        config.fit(ctx, make_model(), (ctx.private["x"], ctx.private["y"]))

    assert (
        "FedAvg configurations differ (alice and bob agree; carol alone)" in failing(program).cause
    )


def test_a_nan_update_is_refused_at_its_owner_before_any_sum() -> None:
    revealed: list[Any] = []

    def program(ctx: PartyContext) -> None:
        x = ctx.private["x"] * (1e38 if ctx.me == "bob" else 1.0)  # finite, but overflows
        ctx.revealed = revealed if ctx.me == "alice" else None
        FedAvg(rounds=1).fit(ctx, make_model(), (x, ctx.private["y"]))

    error = failing(program)
    assert error.party == "bob" and "its update of round 1" in error.cause
    assert "NaN" in error.cause and "nothing was shared" in error.cause
    assert len(revealed) == 1  # the row count only: no update was revealed


def test_nan_in_the_data_is_refused_at_its_owner() -> None:
    def program(ctx: PartyContext) -> None:
        x = ctx.private["x"].copy()
        if ctx.me == "carol":
            x[3, 1] = np.nan
        FedAvg(rounds=1).fit(ctx, make_model(), (x, ctx.private["y"]))

    error = failing(program)
    assert error.party == "carol" and "features hold 1 NaN" in error.cause


@pytest.mark.parametrize("protocol", ["additive", "shamir"])
def test_a_clip_norm_that_could_overflow_is_refused_before_any_round(protocol: str) -> None:
    def program(ctx: PartyContext) -> None:
        FedAvg(rounds=1, clip_norm=1e9, scale_bits=40).fit(
            ctx, make_model(), (ctx.private["x"], ctx.private["y"])
        )

    error = failing(program, protocol=protocol)
    assert "beyond the 2^" in error.cause and "lower clip_norm or scale_bits" in error.cause


def test_bad_configurations_are_refused_when_built() -> None:
    with pytest.raises(ConfigurationError, match="rounds must be a positive integer"):
        FedAvg(rounds=0)
    with pytest.raises(ConfigurationError, match="clip_norm must be a finite number > 0"):
        FedAvg(clip_norm=float("nan"))
    with pytest.raises(ConfigurationError, match="unknown optimizer 'rmsprop'"):
        FedAvg(optimizer="rmsprop")
    with pytest.raises(ConfigurationError, match="weighting must be 'rows' or 'equal'"):
        FedAvg(weighting="median")  # type: ignore[arg-type]
    with pytest.raises(InvalidDataError, match="3 rows of features but 2 labels"):
        from mpc.fl.torch_support import prepare_data

        prepare_data((np.zeros((3, 2)), np.zeros(2)), "mse", "party 'x'")


def test_importing_mpc_fl_does_not_import_torch() -> None:
    import subprocess
    import sys

    code = "import sys, mpc, mpc.fl; assert 'torch' not in sys.modules, 'torch was imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
