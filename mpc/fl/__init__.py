"""Federated learning on the parties: torch models trained where the data is, updates summed
securely, and DP-SGD with its noise added under MPC.

Responsibility: the public face of `mpc.fl` (re-exports). `FedAvg` (federated averaging with
secure aggregation, `mpc.fl.fedavg`) and `DPSGD` (record-level differentially private SGD
across parties, `mpc.fl.dpsgd`) are frozen configurations whose `fit(ctx, model, data)` runs
inside an SPMD program; `mpc.fl.quantize` and `mpc.fl.aggregate` are the integer encoding and
the secure sum they share. Importing this package does not import torch (the optional extra
`mpc-parties[torch]`); `fit` does.
Security model: see `mpc.fl.fedavg` (what averaging reveals: the global model each round) and
`mpc.fl.dpsgd` (what DP-SGD reveals: noisy gradient sums, charged to every party's ledger).
"""

from mpc.fl.aggregate import agree, secure_sum
from mpc.fl.dpsgd import DPSGD, calibrate_noise, dpsgd_epsilon
from mpc.fl.fedavg import FL_KINDS, FedAvg, FedAvgResult, RoundRecord, fedavg_plain
from mpc.fl.quantize import SlotLayout, clip_l2, stochastic_round

__all__ = [
    "DPSGD",
    "FL_KINDS",
    "FedAvg",
    "FedAvgResult",
    "RoundRecord",
    "SlotLayout",
    "agree",
    "calibrate_noise",
    "clip_l2",
    "dpsgd_epsilon",
    "fedavg_plain",
    "secure_sum",
    "stochastic_round",
]
