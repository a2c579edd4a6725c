"""The torch side of `mpc.fl`: loading torch on demand, a model's parameters as one vector,
local training on a party's own rows, and the checks of that data.

Responsibility: everything `FedAvg` and `DPSGD` need from PyTorch, kept apart so that `import
mpc` and `import mpc.fl` never import torch (it is the optional extra `mpc-parties[torch]`,
torch==2.13.0). Batch orders come from `torch.Generator`s seeded from a public seed through
the crypto PRG under a fixed public key (`public_seed`): public and data-independent, the same
in the secure run and in the plaintext reference.
Security model: runs inside one party on its own rows; nothing here communicates. Parameters
and updates stay in this party's memory until `mpc.fl.aggregate` shares them.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable, Iterable
from types import ModuleType
from typing import Any

import numpy as np
import numpy.typing as npt

from mpc.errors import ConfigurationError, InvalidDataError
from mpc.rng import Prg, Tag

__all__ = [
    "LOSSES",
    "OPTIMIZERS",
    "load_vector",
    "make_loss",
    "make_optimizer",
    "parameter_vector",
    "prepare_data",
    "public_seed",
    "require_torch",
    "structure",
    "train_local",
]

FloatArray = npt.NDArray[np.float64]

#: Built-in losses by name (a callable `loss(output, target) -> scalar tensor` works too).
LOSSES = ("cross_entropy", "bce_with_logits", "mse")
#: Built-in optimisers by name (a callable `params -> torch.optim.Optimizer` works too).
OPTIMIZERS = ("sgd", "adam")


def require_torch() -> ModuleType:
    """The torch module, or ImportError saying how to install it."""
    try:
        return importlib.import_module("torch")
    except ImportError as exc:
        raise ImportError(
            "mpc.fl trains torch models and needs PyTorch, which is not installed; install it "
            "with `pip install 'mpc-parties[torch]'` (torch==2.13.0)"
        ) from exc


def public_seed(tag: Tag) -> int:
    """A public 63-bit seed derived from `tag` with the crypto PRG under the all-zero key
    (public and data-independent: every party and the plaintext reference derive the same)."""
    word = Prg(bytes(16)).derive(("mpc.fl.public-seed", tag)).ring(1)
    return int(word[0]) >> 1


def trainable(model: Any) -> list[tuple[str, Any]]:
    """The model's trainable parameters (name, tensor), in registration order."""
    return [(name, p) for name, p in model.named_parameters() if p.requires_grad]


def structure(model: Any) -> list[list[Any]]:
    """[name, shape, dtype] of every trainable parameter: what the parties must agree on."""
    return [[name, list(p.shape), str(p.dtype)] for name, p in trainable(model)]


def parameter_vector(model: Any) -> FloatArray:
    """The trainable parameters as one float64 vector (a copy)."""
    torch = require_torch()
    params = [p.detach().reshape(-1).to(torch.float64) for _, p in trainable(model)]
    if not params:
        raise ConfigurationError("the model has no trainable parameters")
    return np.asarray(torch.cat(params).cpu().numpy(), dtype=np.float64)


def load_vector(model: Any, vector: FloatArray) -> None:
    """Set the trainable parameters from one vector (in `parameter_vector`'s order)."""
    torch = require_torch()
    offset = 0
    with torch.no_grad():
        for _, p in trainable(model):
            size = p.numel()
            chunk = torch.from_numpy(np.ascontiguousarray(vector[offset : offset + size]))
            p.copy_(chunk.reshape(p.shape).to(p.dtype))
            offset += size
    if offset != vector.size:
        raise ConfigurationError(f"a vector of {vector.size} values for {offset} parameters")


def make_loss(loss: str | Callable[..., Any]) -> Callable[..., Any]:
    """The loss function: a built-in name of LOSSES or the callable itself."""
    if callable(loss):
        return loss
    torch = require_torch()
    functions: dict[str, Callable[..., Any]] = {
        "cross_entropy": torch.nn.functional.cross_entropy,
        "bce_with_logits": lambda out, y: torch.nn.functional.binary_cross_entropy_with_logits(
            out.reshape(y.shape), y
        ),
        "mse": lambda out, y: torch.nn.functional.mse_loss(out.reshape(y.shape), y),
    }
    if loss not in functions:
        raise ConfigurationError(f"unknown loss {loss!r}; choose one of {', '.join(LOSSES)}")
    return functions[loss]


def make_optimizer(
    optimizer: str | Callable[..., Any],
    params: Iterable[Any],
    learning_rate: float,
    momentum: float,
) -> Any:
    """A fresh optimiser over `params`: a built-in name of OPTIMIZERS or a factory callable."""
    if callable(optimizer):
        return optimizer(params)
    torch = require_torch()
    if optimizer == "sgd":
        return torch.optim.SGD(params, lr=learning_rate, momentum=momentum)
    if optimizer == "adam":
        return torch.optim.Adam(params, lr=learning_rate)
    raise ConfigurationError(
        f"unknown optimizer {optimizer!r}; choose one of {', '.join(OPTIMIZERS)} or pass a "
        "function params -> torch.optim.Optimizer"
    )


def prepare_data(data: Any, loss: str | Callable[..., Any], who: str) -> tuple[Any, Any]:
    """This party's (x, y) as torch tensors (x float32; y int64 for cross-entropy, float32
    otherwise), checked: same number of rows, at least one row, finite values."""
    torch = require_torch()
    if not isinstance(data, tuple | list) or len(data) != 2:
        raise InvalidDataError(f"{who}: data must be a pair (x, y) of this party's rows")
    x_raw, y_raw = data
    x = np.asarray(x_raw.numpy() if hasattr(x_raw, "numpy") else x_raw, dtype=np.float64)
    y = np.asarray(y_raw.numpy() if hasattr(y_raw, "numpy") else y_raw, dtype=np.float64)
    if x.ndim < 1 or x.shape[0] == 0:
        raise InvalidDataError(f"{who}: no rows (x has shape {x.shape})")
    if y.shape[0] != x.shape[0]:
        raise InvalidDataError(f"{who}: {x.shape[0]} rows of features but {y.shape[0]} labels")
    for what, arr in (("features", x), ("labels", y)):
        finite = np.isfinite(arr)
        if not finite.all():
            n_nan = int(np.isnan(arr).sum())
            raise InvalidDataError(
                f"{who}: {what} hold {n_nan} NaN and {int(arr.size - finite.sum()) - n_nan} "
                "infinite value(s); impute or drop them before training"
            )
    if loss == "cross_entropy":
        if np.any(y != np.round(y)) or np.any(y < 0):
            raise InvalidDataError(f"{who}: cross-entropy labels must be class indices 0, 1, ...")
        labels = torch.from_numpy(y.astype(np.int64))
    else:
        labels = torch.from_numpy(y.astype(np.float32))
    return torch.from_numpy(x.astype(np.float32)), labels


def train_local(
    model: Any,
    x: Any,
    y: Any,
    *,
    epochs: int,
    batch_size: int | None,
    optimizer: Any,
    loss_fn: Callable[..., Any],
    seed: int,
) -> float:
    """`epochs` passes of mini-batch training on (x, y) in an order derived from `seed` with
    the crypto PRG (`mpc.ml.logreg.public_permutation`); the mean training loss over the
    steps."""
    from mpc.ml.logreg import public_permutation

    torch = require_torch()
    n = int(x.shape[0])
    batch = n if batch_size is None else min(batch_size, n)
    model.train()
    total, steps = 0.0, 0
    for epoch in range(epochs):
        order = torch.from_numpy(public_permutation(n, ("mpc.fl.train_local", seed, epoch)))
        for start in range(0, n, batch):
            rows = order[start : start + batch]
            optimizer.zero_grad()
            loss = loss_fn(model(x[rows]), y[rows])
            loss.backward()
            optimizer.step()
            total += float(loss.detach())
            steps += 1
    return total / steps if steps else math.nan
