"""The former home of the DP release, kept so that existing imports keep working.

Each name now lives in the module of its one job: `mpc.dp.reveal` (noise on shares, then open),
`mpc.dp.charging` (every party's accountant, all or nothing), `mpc.dp.plan` (the public plan of a
release), `mpc.dp.mechanisms` (noise specs for the dealer) and `mpc.dp.model_release` (the
logistic-regression model).  Import from those (or from `mpc.dp`) in new code.
"""

from mpc.dp.charging import (
    LEDGER_KEY,
    AccountantSource,
    format_ledger_status,
    ledger_status,
    party_accountant,
)
from mpc.dp.mechanisms import Mechanism as RevealMechanism
from mpc.dp.mechanisms import mechanism_from_spec, noise_spec, sample_noise
from mpc.dp.model_release import (
    ModelPrivacy,
    max_learning_rate,
    model_privacy,
    model_release_plan,
    prepare_rows,
    release_model,
    truncation_failure_delta,
)
from mpc.dp.plan import NoiseMode, ReleasePlan, plan_release
from mpc.dp.reveal import dp_reveal

__all__ = [
    "LEDGER_KEY",
    "AccountantSource",
    "ModelPrivacy",
    "NoiseMode",
    "ReleasePlan",
    "RevealMechanism",
    "dp_reveal",
    "format_ledger_status",
    "ledger_status",
    "max_learning_rate",
    "mechanism_from_spec",
    "model_privacy",
    "model_release_plan",
    "noise_spec",
    "party_accountant",
    "plan_release",
    "prepare_rows",
    "release_model",
    "sample_noise",
    "truncation_failure_delta",
]
