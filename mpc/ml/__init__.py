"""Machine learning on secret-shared data: logistic regression and sigmoid approximations.

Responsibility: the public face of `mpc.ml` (re-exports). `LogisticRegression` trains inside an
SPMD program on data shared with `share_horizontal` / `share_vertical`; `train_plain` is the
same recipe in float64; the module `mpc.ml.sigmoid` holds the secure sigmoid approximations
(`mpc.ml.sigmoid.sigmoid(z, method)`).
Security model: see `mpc.ml.logreg` (what training and prediction reveal: nothing unless asked)
and `mpc.ml.data` (what sharing reveals: data shapes and, for horizontal standardisation, the
joint mean and standard deviation of every feature).
"""

from mpc.errors import InvalidDataError
from mpc.ml.data import (
    FEATURE_LIMIT,
    SharedDataset,
    Standardizer,
    check_features,
    check_labels,
    joint_standardizer,
    share_horizontal,
    share_vertical,
)
from mpc.ml.logreg import (
    TRAINING_KINDS,
    EpochRecord,
    LinearModel,
    LogisticRegression,
    SecureModel,
    train_plain,
)
from mpc.ml.sigmoid import SIGMOIDS

__all__ = [
    "FEATURE_LIMIT",
    "SIGMOIDS",
    "TRAINING_KINDS",
    "EpochRecord",
    "InvalidDataError",
    "LinearModel",
    "LogisticRegression",
    "SecureModel",
    "SharedDataset",
    "Standardizer",
    "check_features",
    "check_labels",
    "joint_standardizer",
    "share_horizontal",
    "share_vertical",
    "train_plain",
]
