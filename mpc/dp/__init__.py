"""Differential privacy for `mpc`: exact noise samplers, mechanisms, sensitivity bounds, a privacy
accountant with a budget, and a tamper-evident ledger.

Responsibility: the plaintext building blocks of differentially private release.  Samplers
(`mpc.dp.samplers`) draw noise from the cryptographic PRG (`mpc.rng.Prg`) only — exact
integer-arithmetic discrete Laplace and discrete Gaussian (Canonne, Kamath & Steinke, NeurIPS
2020) for released noise, documented floating-point samplers for the continuous mechanisms.
Mechanisms (`mpc.dp.mechanisms`) calibrate noise to (epsilon, delta) and a sensitivity and state
their cost; `mpc.dp.sensitivity` bounds the sensitivity of L2-regularised logistic regression
trained by gradient descent in fixed point (Chaudhuri, Monteleoni & Sarwate, JMLR 2011);
`mpc.dp.accountant` composes costs (basic and zCDP) and refuses a release that would exceed the
budget before anything is revealed; `mpc.dp.ledger` persists the spending per data set in an
HMAC-chained append-only file; `mpc.dp.release` adds the noise *under MPC* (distributed pieces
or dealer noise shares) and opens only the noisy value, after every party's ledger has accepted
the cost, and releases the joint logistic-regression model by output perturbation;
`mpc.dp.audit` measures the privacy of released models with a membership-inference attack
(empirical epsilon lower bounds).  See docs/dp.md.

Security model: semi-honest, as the rest of `mpc`.  Noise is only as secret as the PRG seed it
came from; a guarantee holds only if the sensitivity is a true bound and the noise is added before
anyone sees the value.  `mpc.dp.release` runs inside the parties: no party and not the driver
sees a value before its noise is added; with distributed noise the guarantee survives
`max_colluding` colluding parties, with dealer noise the dealer must not collude with a receiver
(see that module).  The other modules are pure and see no shares.
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
from mpc.dp.ledger import Ledger
from mpc.dp.mechanisms import (
    DiscreteGaussianMechanism,
    DiscreteLaplaceMechanism,
    DistributedDiscreteGaussian,
    GaussianMechanism,
    LaplaceMechanism,
    VectorLaplaceMechanism,
    analytic_gaussian_sigma,
    gaussian_delta,
    grid_sensitivity,
    model_release_mechanism,
)
from mpc.dp.release import (
    LEDGER_KEY,
    ModelPrivacy,
    ReleasePlan,
    dp_reveal,
    ledger_status,
    model_privacy,
    model_release_plan,
    party_accountant,
    plan_release,
    prepare_rows,
    release_model,
)
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
    "DiscreteGaussianMechanism",
    "DiscreteLaplaceMechanism",
    "DistributedDiscreteGaussian",
    "GDSensitivity",
    "GaussianMechanism",
    "InvalidPrivacyParameterError",
    "LaplaceMechanism",
    "Ledger",
    "LedgerTamperedError",
    "MissingSensitivityError",
    "ModelPrivacy",
    "PrivacyBudget",
    "Release",
    "ReleasePlan",
    "VectorLaplaceMechanism",
    "analytic_gaussian_sigma",
    "check_clipped",
    "clip_rows",
    "compose",
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
