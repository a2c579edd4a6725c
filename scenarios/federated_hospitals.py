"""Hospitals train one neural network by federated averaging: updates are summed securely.

Data: a made-up binary diagnosis task generated with scikit-learn's `make_classification`
(20 features, 10 informative; no download), split into training and test rows (80/20, fixed
seed). The training rows are dealt to the hospitals in unequal parts (a horizontal partition),
and so are the test rows.

Inside the parties (each hospital's actor sees only its own rows):
  1. the hospitals check that they hold the same architecture, initial weights (handed out by
     the driver: the initial model is public) and configuration, and add their row counts
     securely (only the total is revealed);
  2. every round (`--rounds`), each hospital trains the global model on its own rows
     (`--local-epochs` with SGD, `--batch-size`, `--learning-rate`), clips its update to L2 norm
     `--clip-norm`, weighs it by its share of the rows, rounds it stochastically to multiples of
     2^-`--scale-bits` and secret-shares it; the hospitals add the shares and reveal only the
     sum, the weighted average, which every hospital adds to the global model;
  3. after every round each hospital counts the correct predictions of the global model on its
     own test patients; the counts are summed securely: the joint test accuracy is revealed.
Revealed, and so learned by every hospital: the total row count, the global model after every
round, the joint training loss and test accuracy per round. Nothing else. The driver prints the
secure result beside centralised training (all rows in one place) and plain FedAvg (the same
recipe without MPC or rounding, same seeds), computed only for checking, and the time, rounds
and bytes each hospital spent.

`--dp-epsilon E` switches to DP-SGD across the hospitals (record-level privacy, noise added
under MPC, accounted with Renyi DP and charged to each hospital's ledger before training: see
docs/fl.md). The ledgers live under --ledger DIR (default: this user's state folder,
ledgers/federated_hospitals/<hospital>, budget --budget-epsilon 10 / --budget-delta 1e-4 each);
a folder under the system's temporary folder is refused unless --allow-temporary-ledger.

Run:  mpc run scenarios/federated_hospitals.py     (or: python scenarios/federated_hospitals.py)
      options: --rounds 10 --local-epochs 1 --rows 3000 --hidden 32 --parties 3..5, plus the
      session options (--runtime local --allow-insecure, ...).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from mpc.dp import ledger_status
from mpc.dp.charging import format_ledger_status
from mpc.errors import PartyFailedError
from mpc.fl import DPSGD, FL_KINDS, FedAvg, fedavg_plain
from mpc.fl.aggregate import share_sum
from mpc.fl.dpsgd import DPSGD_KINDS
from mpc.fl.torch_support import (
    load_vector,
    make_optimizer,
    parameter_vector,
    prepare_data,
    public_seed,
    require_torch,
    train_local,
)
from mpc.program import PartyContext
from mpc.scenario import (
    add_ledger_options,
    add_session_options,
    ledger_folder,
    one_line_errors,
    party_names,
    session_kwargs,
)
from mpc.session import Session
from mpc.stats import PartyStats

HOSPITALS = ["north", "south", "east", "west", "central"]
FEATURES = 20
#: Secure FedAvg must match plain FedAvg's test accuracy within this (0.5 point).
TOLERANCE = 0.005


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Hospitals train a joint MLP by secure FedAvg")
    add_session_options(parser, default_parties=3)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--local-epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--learning-rate", type=float, default=0.1)
    parser.add_argument("--clip-norm", type=float, default=10.0)
    parser.add_argument("--scale-bits", type=int, default=22)
    parser.add_argument("--hidden", type=int, default=32, help="hidden units of the MLP")
    parser.add_argument("--rows", type=int, default=3000, help="rows generated (train + test)")
    parser.add_argument("--seed", type=int, default=0, help="data, initial model, batch order")
    parser.add_argument("--dp-epsilon", type=float, default=None, help="train with DP-SGD")
    parser.add_argument("--delta", type=float, default=1e-5, help="DP-SGD's delta")
    parser.add_argument("--dp-steps", type=int, default=200, help="DP-SGD steps")
    parser.add_argument("--dp-sampling-rate", type=float, default=0.02, help="Poisson rate q")
    parser.add_argument("--dp-clip", type=float, default=1.0, help="per-example clip norm")
    parser.add_argument("--dp-learning-rate", type=float, default=0.5)
    parser.add_argument(
        "--max-colluding", type=int, default=None, help="colluders the noise survives (t)"
    )
    parser.add_argument("--budget-epsilon", type=float, default=10.0, help="each ledger's")
    parser.add_argument("--budget-delta", type=float, default=1e-4, help="each ledger's")
    add_ledger_options(parser)
    return parser.parse_args(argv)


# ---- data and model (the same at the driver and at every hospital) -----------------------------
def make_data(rows: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x_train, y_train, x_test, y_test) of the made-up diagnosis task (public recipe)."""
    from sklearn.datasets import make_classification

    x, y = make_classification(
        n_samples=rows,
        n_features=FEATURES,
        n_informative=10,
        n_redundant=4,
        class_sep=0.8,
        flip_y=0.02,
        random_state=seed,
    )
    cut = int(0.8 * rows)
    return x[:cut], y[:cut], x[cut:], y[cut:]


def deal(names: Sequence[str], x: np.ndarray, y: np.ndarray) -> list[np.ndarray]:
    """Row indices of each hospital: unequal parts (sizes 1 : 2 : 3 : ...), in order."""
    sizes = np.arange(1, len(names) + 1)
    cuts = np.cumsum(len(y) * sizes // sizes.sum())[:-1]
    return np.split(np.arange(len(y)), cuts)


def deal_private(
    names: Sequence[str],
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
) -> dict[str, dict[str, Any]]:
    """Each hospital's private training and test rows."""
    train_parts, test_parts = deal(names, x_train, y_train), deal(names, x_test, y_test)
    return {
        name: {
            "x_train": x_train[tr],
            "y_train": y_train[tr],
            "x_test": x_test[te],
            "y_test": y_test[te],
        }
        for name, tr, te in zip(names, train_parts, test_parts, strict=True)
    }


def make_model(hidden: int, state: Mapping[str, np.ndarray] | None = None) -> Any:
    """The MLP: FEATURES -> hidden -> ReLU -> hidden -> ReLU -> 2 logits; with `state`, those
    weights (the public initial model)."""
    torch = require_torch()
    model = torch.nn.Sequential(
        torch.nn.Linear(FEATURES, hidden),
        torch.nn.ReLU(),
        torch.nn.Linear(hidden, hidden),
        torch.nn.ReLU(),
        torch.nn.Linear(hidden, 2),
    )
    if state is not None:
        model.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in state.items()})
    return model


def initial_state(hidden: int, seed: int) -> dict[str, np.ndarray]:
    """The public initial weights (torch's default initialisation under `seed`)."""
    torch = require_torch()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = make_model(hidden)
    return {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}


def accuracy(model: Any, x: np.ndarray, y: np.ndarray) -> float:
    return correct(model, x, y) / len(y)


def correct(model: Any, x: np.ndarray, y: np.ndarray) -> int:
    torch = require_torch()
    with torch.no_grad():
        logits = model(torch.from_numpy(x.astype(np.float32)))
    return int((logits.argmax(dim=1).numpy() == y).sum())


# ---- the SPMD program ----------------------------------------------------------------------------
def hospitals_program(
    ctx: PartyContext, config: FedAvg, hidden: int, state: Mapping[str, np.ndarray]
) -> dict[str, Any]:
    """Runs at every hospital, on its own rows only."""
    require_torch().set_num_threads(1)  # a small MLP: one thread each (the cores are shared)
    mine = ctx.private
    model = make_model(hidden, state)
    joint_accuracy: list[float] = []

    def evaluate(round_no: int, global_model: Any) -> None:
        # this hospital's correct predictions on its own test rows; only the sum is revealed
        counts = np.array(
            [correct(global_model, mine["x_test"], mine["y_test"]), len(mine["y_test"])]
        )
        joint_accuracy.append(joint_accuracy_of(ctx, counts))

    started = time.perf_counter()
    result = config.fit(ctx, model, (mine["x_train"], mine["y_train"]), after_round=evaluate)
    return {
        "weights": parameter_vector(model),
        "history": result.history,
        "accuracy": joint_accuracy,
        "fit_seconds": time.perf_counter() - started,
        "slots": result.slots,
        "parameters": result.n_parameters,
    }


def joint_accuracy_of(ctx: PartyContext, counts: np.ndarray) -> float:
    """[correct, total] of this hospital's test rows summed securely: the joint accuracy."""
    total = ctx.reveal(share_sum(ctx, counts, float(1 << 40), 2, "scenario.accuracy"))
    assert total is not None
    return float(total[0]) / float(total[1])


def dp_program(
    ctx: PartyContext, config: DPSGD, hidden: int, state: Mapping[str, np.ndarray]
) -> dict[str, Any]:
    """DP-SGD at every hospital, on its own rows only; charged to its own ledger first."""
    require_torch().set_num_threads(1)
    mine = ctx.private
    model = make_model(hidden, state)
    every = max(1, config.steps // 10)

    def show(record: Any) -> None:
        if record.round % every == 0 or record.round == config.steps:
            print(f"  {record}", flush=True)

    started = time.perf_counter()
    result = config.fit(
        ctx,
        model,
        (mine["x_train"], mine["y_train"]),
        progress=show if ctx.me == ctx.parties[0] else None,
    )
    counts = np.array([correct(model, mine["x_test"], mine["y_test"]), len(mine["y_test"])])
    return {
        "weights": parameter_vector(model),
        "accuracy": joint_accuracy_of(ctx, counts),
        "fit_seconds": time.perf_counter() - started,
        "ledger": ledger_status(ctx),
        "history": result.history,
    }


def run_dp(
    args: argparse.Namespace,
    names: Sequence[str],
    private: dict[str, dict[str, Any]],
    split: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
) -> int:
    """--dp-epsilon: DP-SGD across the hospitals, beside non-private centralised training."""
    x_train, y_train, x_test, y_test = split
    ledger = ledger_folder(args, "federated_hospitals")
    for name, data in private.items():
        data["dp_ledger"] = {
            "directory": str(ledger / name),
            "dataset": f"federated-hospitals-{name}",
            "budget": {"epsilon": args.budget_epsilon, "delta": args.budget_delta},
        }
    config = DPSGD(
        epsilon=args.dp_epsilon,
        delta=args.delta,
        sampling_rate=args.dp_sampling_rate,
        steps=args.dp_steps,
        clip_norm=args.dp_clip,
        learning_rate=args.dp_learning_rate,
        max_colluding=args.max_colluding,
    )
    state = initial_state(args.hidden, args.seed)
    print(
        f"DP-SGD: epsilon {args.dp_epsilon:g} at delta {args.delta:g} | {config.steps} steps, "
        f"Poisson rate {config.sampling_rate:g} (about {config.steps * config.sampling_rate:.1f} "
        f"epochs), clip {config.clip_norm:g}, noise multiplier {config.sigma():.3f} "
        f"(RDP accounting: epsilon {config.spent_epsilon():.3f})"
    )
    print(f"privacy ledgers: {ledger}/<hospital> | starting ...", flush=True)
    with Session(names, private=private, **session_kwargs(args)) as session:
        try:
            result = session.run(dp_program, config, args.hidden, state)
        except PartyFailedError as exc:
            if "BudgetExceededError" in exc.cause:
                print("nothing was trained or revealed, and no ledger was charged")
            raise
    outputs = result.outputs
    first = outputs[names[0]]
    non_private = FedAvg(
        rounds=max(1, round(config.steps * config.sampling_rate)),
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        seed=args.seed,
    )
    central = centralised(non_private, args.hidden, state, x_train, y_train)
    central_acc = accuracy(central, x_test, y_test)
    print(f"\n{'test accuracy (' + str(len(y_test)) + ' patients)':<44} {'':>8}")
    print(f"{'DP-SGD across hospitals (MPC)':<44} {first['accuracy']:>8.4f}")
    print(f"{'centralised, non-private, same epochs':<44} {central_acc:>8.4f}")
    print(f"epsilon spent: {config.spent_epsilon():.4f} at delta {config.delta:g}")
    print("\nprivacy ledgers (each hospital's own data set):")
    for name in names:
        print(format_ledger_status(name, outputs[name]["ledger"]))
    print("\ncost per hospital (DP-SGD operations; time of fit, training included):")
    for party, (comm_rounds, sent) in fl_cost(result.stats, DPSGD_KINDS).items():
        seconds = outputs[party]["fit_seconds"]
        print(
            f"  {party:<10} {comm_rounds:>6} rounds {sent / 1e6:>10.3f} MB sent {seconds:>8.2f} s"
        )
    agree = all(np.array_equal(outputs[n]["weights"], first["weights"]) for n in names)
    print(f"all hospitals hold the same model: {agree}")
    print("OK" if agree else "MISMATCH")
    return 0 if agree else 1


# ---- the plaintext references (for checking) ------------------------------------------
def centralised(
    config: FedAvg, hidden: int, state: Mapping[str, np.ndarray], x: np.ndarray, y: np.ndarray
) -> Any:
    """The same model and optimiser trained on all training rows in one place, for as many
    epochs as FedAvg makes local passes (rounds x local_epochs)."""
    model = make_model(hidden, state)
    tx, ty = prepare_data((x, y), config.loss, "all rows")
    optimizer = make_optimizer(
        config.optimizer, model.parameters(), config.learning_rate, config.momentum
    )
    from mpc.fl.torch_support import make_loss

    train_local(
        model,
        tx,
        ty,
        epochs=config.rounds * config.local_epochs,
        batch_size=config.batch_size,
        optimizer=optimizer,
        loss_fn=make_loss(config.loss),
        seed=public_seed(("centralised", config.seed)),
    )
    return model


def fl_cost(
    stats: Mapping[str, PartyStats], kinds_counted: Sequence[str] = FL_KINDS
) -> dict[str, tuple[int, int]]:
    """Rounds and bytes sent per party in the federated operations only."""
    out = {}
    for party, party_stats in stats.items():
        kinds = [s for k, s in party_stats.by_kind.items() if k in kinds_counted]
        out[party] = (sum(s.rounds for s in kinds), sum(s.bytes_sent for s in kinds))
    return out


@one_line_errors
def run(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    names = party_names(args, HOSPITALS)
    if names is None:
        return 2
    require_torch().set_num_threads(1)  # the plaintext references: a small MLP, one thread
    if args.rows < 20 * len(names):
        print(f"--rows must be at least {20 * len(names)}", file=sys.stderr)
        return 2
    x_train, y_train, x_test, y_test = make_data(args.rows, args.seed)
    private = deal_private(names, x_train, y_train, x_test, y_test)
    if args.dp_epsilon is not None:
        return run_dp(args, names, private, (x_train, y_train, x_test, y_test))
    config = FedAvg(
        rounds=args.rounds,
        local_epochs=args.local_epochs,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        clip_norm=args.clip_norm,
        scale_bits=args.scale_bits,
        seed=args.seed,
        reveal_loss=True,
    )
    state = initial_state(args.hidden, args.seed)
    rows = ", ".join(f"{n} {len(p['y_train'])}+{len(p['y_test'])}" for n, p in private.items())
    print(f"hospitals (train+test rows): {rows} | protocol {args.protocol}")
    print(
        f"MLP {FEATURES}-{args.hidden}-{args.hidden}-2 | {config.rounds} rounds x "
        f"{config.local_epochs} local epoch(s), SGD lr {config.learning_rate:g}, batch "
        f"{config.batch_size}, clip {config.clip_norm:g}, scale 2^-{config.scale_bits} | "
        "starting ...",
        flush=True,
    )
    started = time.perf_counter()
    with Session(names, private=private, **session_kwargs(args)) as session:
        print(
            f"session ready in {time.perf_counter() - started:.1f} s "
            f"(transport {session.transport}, dealer {session.dealer_kind})",
            flush=True,
        )
        result = session.run(hospitals_program, config, args.hidden, state)
    outputs = result.outputs
    first = outputs[names[0]]
    for record, acc in zip(first["history"], first["accuracy"], strict=True):
        print(f"  {record}  joint test accuracy {acc:.4f}")
    # Plaintext checks (a trusted third party with all rows): plain FedAvg and centralised.
    plain = make_model(args.hidden, state)
    datasets = [(p["x_train"], p["y_train"]) for p in private.values()]
    fedavg_plain(config, plain, datasets)
    central = centralised(config, args.hidden, state, x_train, y_train)
    secure_model = make_model(args.hidden, state)
    load_vector(secure_model, first["weights"])
    secure_acc = first["accuracy"][-1]
    plain_acc = accuracy(plain, x_test, y_test)
    central_acc = accuracy(central, x_test, y_test)
    agree = all(np.array_equal(outputs[n]["weights"], first["weights"]) for n in names)
    diff = float(np.max(np.abs(first["weights"] - parameter_vector(plain))))
    print(f"\n{'test accuracy (' + str(len(y_test)) + ' patients)':<44} {'':>8}")
    print(f"{'secure FedAvg (MPC)':<44} {secure_acc:>8.4f}")
    print(f"{'plain FedAvg, same recipe and seeds':<44} {plain_acc:>8.4f}")
    print(f"{'centralised training, same epochs':<44} {central_acc:>8.4f}")
    print(
        f"\nmax |w_secure - w_plain|: {diff:.2e} ({first['parameters']} parameters, "
        f"{first['slots']} per shared element)"
    )
    print(f"all hospitals hold the same model: {agree}")
    print("\ncost per hospital (federated operations; time of fit, training included):")
    for party, (comm_rounds, sent) in fl_cost(result.stats).items():
        seconds = outputs[party]["fit_seconds"]
        print(
            f"  {party:<10} {comm_rounds:>6} rounds {sent / 1e6:>10.3f} MB sent {seconds:>8.2f} s"
        )
    ok = agree and abs(secure_acc - plain_acc) <= TOLERANCE
    print("OK" if ok else "MISMATCH")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(run())
