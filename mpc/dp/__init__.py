"""Differential privacy for `mpc`: exact noise on shares, charged to every party's own ledger.

Modules, one job each: `samplers` (exact noise from the crypto PRG), `mechanisms` (one base:
name, cost, noise, spec), `continuous` (textbook calibrations, no noise), `distributed` (noise
split across parties), `sensitivity` (logistic-regression bounds), `accountant` and `ledger`
(budgets), `plan`, `charging` and `reveal` (a release under MPC, all or nothing),
`model_release` (the joint model), `audit` and `audit_pair` (membership inference, worst-case
pairs).  Security model: semi-honest, as the rest of `mpc`; the guarantee needs true
sensitivities and noise seeds no receiver knows.  See docs/dp.md.
"""

from mpc.dp.accountant import (
    Accountant,
    BudgetExceededError,
    DPError,
    InvalidPrivacyParameterError,
    LedgerTamperedError,
    MissingSensitivityError,
    PrivacyBudget,
    Release,
    compose,
    zcdp_delta,
    zcdp_epsilon,
    zcdp_rho,
)
from mpc.dp.charging import LEDGER_KEY, ledger_status, party_accountant
from mpc.dp.continuous import (
    GaussianMechanism,
    LaplaceMechanism,
    analytic_gaussian_sigma,
    gaussian_delta,
)
from mpc.dp.distributed import DistributedDiscreteGaussian
from mpc.dp.ledger import Ledger
from mpc.dp.mechanisms import (
    DiscreteGaussianMechanism,
    DiscreteLaplaceMechanism,
    Mechanism,
    VectorLaplaceMechanism,
    grid_sensitivity,
    model_release_mechanism,
)
from mpc.dp.model_release import (
    ModelPrivacy,
    model_privacy,
    model_release_plan,
    prepare_rows,
    release_model,
)
from mpc.dp.plan import ReleasePlan, plan_release
from mpc.dp.reveal import DPPlan, PlannedRelease, dp_plan, dp_reveal
from mpc.dp.sensitivity import (
    GDSensitivity,
    check_clipped,
    clip_rows,
    erm_sensitivity,
    gd_sensitivity,
    logreg_step_error,
)

__all__ = [
    "LEDGER_KEY",
    "Accountant",
    "BudgetExceededError",
    "DPError",
    "DPPlan",
    "DiscreteGaussianMechanism",
    "DiscreteLaplaceMechanism",
    "DistributedDiscreteGaussian",
    "GDSensitivity",
    "GaussianMechanism",
    "InvalidPrivacyParameterError",
    "LaplaceMechanism",
    "Ledger",
    "LedgerTamperedError",
    "Mechanism",
    "MissingSensitivityError",
    "ModelPrivacy",
    "PlannedRelease",
    "PrivacyBudget",
    "Release",
    "ReleasePlan",
    "VectorLaplaceMechanism",
    "analytic_gaussian_sigma",
    "check_clipped",
    "clip_rows",
    "compose",
    "dp_plan",
    "dp_reveal",
    "erm_sensitivity",
    "gaussian_delta",
    "gd_sensitivity",
    "grid_sensitivity",
    "ledger_status",
    "logreg_step_error",
    "model_privacy",
    "model_release_mechanism",
    "model_release_plan",
    "party_accountant",
    "plan_release",
    "prepare_rows",
    "release_model",
    "zcdp_delta",
    "zcdp_epsilon",
    "zcdp_rho",
]
