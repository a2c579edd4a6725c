"""Getting the parties' training data into shares: validation, standardisation, partitions.

Responsibility: inside an SPMD program, turn each party's own plaintext rows (horizontal
partition: every party holds some rows with all features and their labels) or columns (vertical
partition: every party holds some features of all rows, one party holds the labels) into one
shared design matrix X (fixed point) and one shared label vector y (integers 0/1), after
checking the data and standardising the features; plus the plaintext checks themselves, usable
before a session starts.

Standardisation (z-scores, so that products stay small; see docs/security.md on truncation):
  * horizontal: the joint mean and standard deviation of every feature over all parties' rows
    are computed from secure sums: each party inputs its row count and the column sums and
    sums of squares of its rows as exact integers (`kind="int"`, 2^-64 resolution, in limbs),
    the parties add the shares and reveal only the three totals. Each party then standardises
    its own rows before sharing them.
  * vertical: each party holds every row of its columns, so it standardises them locally;
    nothing is exchanged.

Security model (semi-honest, as the session's protocol). Revealed to every party:
  * the shape of every shared input: each party's row count (horizontal) or column count
    (vertical) and the number of features (shares have the shape of the secret);
  * horizontal with standardisation: the joint count, mean and standard deviation of every
    feature over the union of the rows (the totals of the secure sums; nothing per party).
Nothing else: features and labels are secret-shared. Validation runs at the owner of the data
on its own plaintext, and a failure names the party and the problem, never a data value of
another party. Checks that compare parties (row or column counts) use the public shapes only.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from mpc.errors import InvalidDataError
from mpc.program import PartyContext, Secret

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
Partition = Literal["horizontal", "vertical"]

#: Default bound on |feature| after standardisation: a value 64 standard deviations from the
#: mean is almost surely a data error, and the bound keeps logits and gradient sums far inside
#: the fixed-point range (see `LogisticRegression.check_config`).
FEATURE_LIMIT = 64.0
#: Exact integer encoding of the sums used for the joint mean and standard deviation:
#: round(v * 2^64) in 5 limbs of 26 bits (|v| < 2^65).
STATS_FRAC_BITS = 64
STATS_LIMB_BITS = 26
STATS_LIMBS = 5


# ---- plaintext checks ---------------------------------------------------------------------------
def check_features(x: Any, *, what: str = "features") -> FloatArray:
    """`x` as a finite 2-D float64 array (one row per example), or InvalidDataError."""
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InvalidDataError(f"{what}: not a numeric array ({exc})") from None
    if arr.ndim == 1:
        arr = arr.reshape(-1, 1)
    if arr.ndim != 2:
        raise InvalidDataError(f"{what}: expected a 2-D array (rows x features), got {arr.ndim}-D")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise InvalidDataError(f"{what}: empty array of shape {arr.shape}")
    finite = np.isfinite(arr)
    if not finite.all():
        n_nan = int(np.isnan(arr).sum())
        n_inf = int(arr.size - finite.sum()) - n_nan
        rows = np.flatnonzero(~finite.all(axis=1))
        raise InvalidDataError(
            f"{what}: {n_nan} NaN and {n_inf} infinite value(s) (first in row {int(rows[0])}); "
            "impute or drop them before training"
        )
    return arr


def check_labels(y: Any, n_rows: int | None = None, *, what: str = "labels") -> IntArray:
    """`y` as a 1-D int64 array of 0/1 labels (length `n_rows` if given), or InvalidDataError."""
    arr = np.asarray(y)
    if arr.ndim == 2 and 1 in arr.shape:
        arr = arr.reshape(-1)
    if arr.ndim != 1:
        raise InvalidDataError(f"{what}: expected a 1-D array, got shape {arr.shape}")
    if arr.dtype.kind not in "biuf":
        raise InvalidDataError(f"{what}: expected numbers 0 and 1, got dtype {arr.dtype}")
    as_float = arr.astype(np.float64)
    bad = ~np.isin(as_float, (0.0, 1.0))
    if bad.any():
        values = sorted({float(v) for v in as_float[bad][:5]})
        raise InvalidDataError(
            f"{what}: must be 0 or 1, found {int(bad.sum())} other value(s) such as {values} "
            f"(first at index {int(np.flatnonzero(bad)[0])}); binary logistic regression "
            "needs 0/1 labels"
        )
    if n_rows is not None and arr.shape[0] != n_rows:
        raise InvalidDataError(
            f"{what}: {arr.shape[0]} labels for {n_rows} rows of features; they must match"
        )
    return as_float.astype(np.int64)


def check_feature_range(x: FloatArray, limit: float, *, what: str = "features") -> None:
    """InvalidDataError unless |x| <= limit everywhere (after standardisation)."""
    if not limit > 0 or not math.isfinite(limit):
        raise InvalidDataError(f"feature_limit must be a positive finite number, got {limit}")
    worst = np.abs(x).max(axis=0)
    bad = np.flatnonzero(worst > limit)
    if bad.size:
        col = int(bad[np.argmax(worst[bad])])
        raise InvalidDataError(
            f"{what}: column {col} reaches |x| = {float(worst[col]):.4g} after standardisation, "
            f"beyond the limit {limit:g} that keeps training inside the fixed-point range "
            f"({bad.size} column(s) affected); clip or remove outliers, or raise feature_limit"
        )


@dataclass(frozen=True)
class Standardizer:
    """Per-column mean and standard deviation; `transform` gives z-scores."""

    mean: FloatArray
    std: FloatArray

    @staticmethod
    def from_moments(count: float, total: FloatArray, squares: FloatArray) -> Standardizer:
        """From the row count, column sums and column sums of squares. A constant column
        (variance 0 up to rounding) gets std 1, so it is centred but not scaled."""
        if count <= 0:
            raise InvalidDataError("cannot standardise: no rows")
        mean = np.asarray(total, dtype=np.float64) / count
        var = np.asarray(squares, dtype=np.float64) / count - mean * mean
        tiny = 1e-12 * np.maximum(1.0, mean * mean)
        std = np.where(var > tiny, np.sqrt(np.maximum(var, 0.0)), 1.0)
        return Standardizer(mean, std)

    @staticmethod
    def fit(x: Any) -> Standardizer:
        """The standardiser of plaintext rows `x` (population standard deviation, like sklearn)."""
        arr = check_features(x)
        return Standardizer.from_moments(
            float(arr.shape[0]), arr.sum(axis=0), (arr * arr).sum(axis=0)
        )

    def transform(self, x: Any) -> FloatArray:
        arr = check_features(x)
        if arr.shape[1] != self.mean.shape[0]:
            raise InvalidDataError(
                f"expected {self.mean.shape[0]} feature columns, got {arr.shape[1]}"
            )
        return np.asarray((arr - self.mean) / self.std, dtype=np.float64)


@dataclass
class SharedDataset:
    """A shared design matrix and labels, with what every party knows about them.

    `standardizer` is the joint one (revealed, the same at every party) for a horizontal
    partition, this party's own columns' (private) one for a vertical partition, and None
    without standardisation. `rows` / `columns` give each data owner's public counts.
    """

    x: Secret
    y: Secret | None
    partition: Partition
    rows: dict[str, int]
    columns: dict[str, int]
    standardizer: Standardizer | None
    feature_limit: float

    def __reduce__(self) -> Any:
        raise TypeError(
            "a SharedDataset holds shares and must not leave its party; return revealed values "
            "from the program instead"
        )

    @property
    def n_rows(self) -> int:
        return int(self.x.shape[0])

    @property
    def n_features(self) -> int:
        return int(self.x.shape[1])

    def column_slice(self, party: str) -> slice:
        """The columns of `party` in `x` (vertical partition; all columns when horizontal)."""
        if self.partition == "horizontal":
            return slice(0, self.n_features)
        start = 0
        for name, count in self.columns.items():
            if name == party:
                return slice(start, start + count)
            start += count
        raise KeyError(f"party {party!r} holds no columns of this dataset")


def _owner_list(ctx: PartyContext, owners: Sequence[str] | None) -> list[str]:
    names = list(ctx.parties if owners is None else owners)
    if not names:
        raise ValueError("at least one party must hold data")
    for name in names:
        ctx.rank_of(name)  # ConfigurationError for an unknown name
    if len(set(names)) != len(names):
        raise ValueError(f"owners lists a party twice: {names}")
    return names


def _mine(ctx: PartyContext, owners: list[str], x: Any, what: str) -> Any:
    if ctx.me in owners and x is None:
        raise InvalidDataError(f"party {ctx.me!r} is listed as a data owner but passed no {what}")
    return x if ctx.me in owners else None


def _concat(ctx: PartyContext, parts: list[Secret], axis: int) -> Secret:
    return parts[0] if len(parts) == 1 else ctx.concat(parts, axis=axis)


def _to_limbs(values: FloatArray) -> IntArray:
    """Each float as the exact integer round(v * 2^STATS_FRAC_BITS), split into STATS_LIMBS limbs
    of STATS_LIMB_BITS bits (the top limb signed): shape (STATS_LIMBS, len(values)).

    Sums of limbs over a few parties stay far below 2^60, so adding the shares of limbs is exact
    in the ring and in the Shamir field; `_from_limbs` reassembles the exact total.
    """
    out = np.zeros((STATS_LIMBS, values.shape[0]), dtype=np.int64)
    bound = 1 << (STATS_LIMB_BITS * STATS_LIMBS - 1)
    for j, value in enumerate(values.tolist()):
        big = round(Fraction(value) * (1 << STATS_FRAC_BITS))
        if abs(big) >= bound:
            raise InvalidDataError(
                f"a column sum or sum of squares ({value:.3g}) is too large to standardise "
                "securely; rescale that column first"
            )
        for k in range(STATS_LIMBS - 1):
            limb = big % (1 << STATS_LIMB_BITS)
            out[k, j] = limb
            big = (big - limb) >> STATS_LIMB_BITS
        out[STATS_LIMBS - 1, j] = big
    return out


def _from_limbs(limbs: IntArray) -> FloatArray:
    totals = []
    for j in range(limbs.shape[1]):
        big = sum(int(limbs[k, j]) << (STATS_LIMB_BITS * k) for k in range(STATS_LIMBS))
        totals.append(float(Fraction(big, 1 << STATS_FRAC_BITS)))
    return np.asarray(totals, dtype=np.float64)


def joint_standardizer(
    ctx: PartyContext, x: FloatArray | None, owners: Sequence[str] | None = None
) -> Standardizer:
    """The mean and standard deviation of every column over all owners' rows (SPMD).

    Each owner computes [row count, column sums, column sums of squares] of its rows in float64
    and inputs them as exact integers (value * 2^64, split into 26-bit limbs, `kind="int"`), so
    adding the shares is exact: no truncation, no rounding beyond each party's own float64
    sums. The totals are revealed to every party. Revealed: the joint count, column sums and
    sums of squares, i.e. the joint mean and standard deviation. 1 input round per owner and 1
    reveal round.
    """
    names = _owner_list(ctx, owners)
    local = None
    if ctx.me in names:
        arr = check_features(_mine(ctx, names, x, "features"), what=f"features of {ctx.me}")
        squares = (arr * arr).sum(axis=0)
        if not np.all(np.isfinite(squares)):
            raise InvalidDataError(
                f"features of {ctx.me}: a column's sum of squares overflows float64; rescale it"
            )
        local = _to_limbs(np.concatenate([[float(arr.shape[0])], arr.sum(axis=0), squares]))
    limb = float(1 << STATS_LIMB_BITS)  # each limb of `_to_limbs` is below 2^26 in magnitude
    parts = [
        ctx.input(name, local if ctx.me == name else None, kind="int", bound=limb) for name in names
    ]
    widths = {name: p.shape[1] for name, p in zip(names, parts, strict=True)}
    if len(set(widths.values())) != 1:
        columns = {name: (w - 1) // 2 for name, w in widths.items()}
        raise InvalidDataError(
            f"horizontal partition: the parties hold different numbers of feature columns "
            f"{columns}; every party must hold the same features in the same order"
        )
    revealed = ctx.reveal(ctx.sum(parts))
    assert revealed is not None  # revealed to every party
    sums = _from_limbs(np.asarray(revealed, dtype=np.int64))
    d = (sums.shape[0] - 1) // 2
    return Standardizer.from_moments(float(sums[0]), sums[1 : 1 + d], sums[1 + d :])


def share_horizontal(
    ctx: PartyContext,
    x: Any,
    y: Any,
    *,
    owners: Sequence[str] | None = None,
    standardize: bool = True,
    standardizer: Standardizer | None = None,
    feature_limit: float = FEATURE_LIMIT,
    labels: bool = True,
) -> SharedDataset:
    """Share a horizontal partition (SPMD): each owner passes its rows `x` and labels `y`.

    Parties not in `owners` (default: all parties) pass None. With `standardize`, the joint
    standardiser is computed securely (`joint_standardizer`; its mean and std are revealed)
    unless one is given (e.g. the training set's, to share test rows the same way); each owner
    standardises its own rows. Checks at each owner, before sharing: finite features, 0/1
    labels, as many labels as rows, |standardised feature| <= feature_limit. Then every party
    checks (public shapes) that all owners hold the same number of columns. With
    `labels=False` (the same at every party) only features are shared (e.g. for prediction)
    and `y` is ignored.
    """
    names = _owner_list(ctx, owners)
    arr: FloatArray | None = None
    own_labels: IntArray | None = None
    if ctx.me in names:
        arr = check_features(_mine(ctx, names, x, "features"), what=f"features of {ctx.me}")
        if labels:
            if y is None:
                raise InvalidDataError(f"party {ctx.me!r} holds rows but passed no labels")
            own_labels = check_labels(y, arr.shape[0], what=f"labels of {ctx.me}")
    if standardize and standardizer is None:
        standardizer = joint_standardizer(ctx, arr, names)
    if not standardize:
        standardizer = None
    if arr is not None:
        if standardizer is not None:
            arr = standardizer.transform(arr)
        check_feature_range(arr, feature_limit, what=f"features of {ctx.me}")
    x_parts = [
        ctx.input(name, arr if ctx.me == name else None, bound=feature_limit) for name in names
    ]
    columns = {name: int(p.shape[1]) for name, p in zip(names, x_parts, strict=True)}
    if len(set(columns.values())) != 1:
        raise InvalidDataError(
            f"horizontal partition: the parties hold different numbers of feature columns "
            f"{columns}; every party must hold the same features in the same order"
        )
    rows = {name: int(p.shape[0]) for name, p in zip(names, x_parts, strict=True)}
    y_shared = None
    if labels:
        y_parts = [
            ctx.input(name, own_labels if ctx.me == name else None, kind="int", bound=1)
            for name in names
        ]
        y_shared = _concat(ctx, y_parts, 0)
    return SharedDataset(
        x=_concat(ctx, x_parts, 0),
        y=y_shared,
        partition="horizontal",
        rows=rows,
        columns=columns,
        standardizer=standardizer,
        feature_limit=feature_limit,
    )


def share_vertical(
    ctx: PartyContext,
    x: Any,
    *,
    label_owner: str | None,
    y: Any = None,
    owners: Sequence[str] | None = None,
    standardize: bool = True,
    standardizer: Standardizer | None = None,
    feature_limit: float = FEATURE_LIMIT,
) -> SharedDataset:
    """Share a vertical partition (SPMD): each owner passes its columns `x` (all rows, in the
    agreed row order), `label_owner` passes `y` (None: no labels, e.g. for prediction).

    Rows must be aligned beforehand (the same entity in the same row at every party; record
    linkage / private set intersection is outside this module). With `standardize` each owner
    standardises its own columns locally (with `standardizer` if given: its own training-set
    one). Checks at each owner before sharing: finite features, 0/1 labels, |standardised
    feature| <= feature_limit; then every party checks from the public shapes that all owners and
    the labels have the same number of rows, before any training starts.
    """
    names = _owner_list(ctx, owners)
    if label_owner is not None:
        ctx.rank_of(label_owner)
    arr: FloatArray | None = None
    own: Standardizer | None = None
    if ctx.me in names:
        arr = check_features(_mine(ctx, names, x, "features"), what=f"features of {ctx.me}")
        if standardize:
            own = standardizer if standardizer is not None else Standardizer.fit(arr)
            arr = own.transform(arr)
        check_feature_range(arr, feature_limit, what=f"features of {ctx.me}")
    labels: IntArray | None = None
    if label_owner is not None and ctx.me == label_owner:
        if y is None:
            raise InvalidDataError(f"party {ctx.me!r} is the label owner but passed no labels")
        labels = check_labels(y, None if arr is None else arr.shape[0], what=f"labels of {ctx.me}")
    x_parts = [
        ctx.input(name, arr if ctx.me == name else None, bound=feature_limit) for name in names
    ]
    y_shared = None
    if label_owner is not None:
        y_shared = ctx.input(label_owner, labels, kind="int", bound=1)
    rows = {name: int(p.shape[0]) for name, p in zip(names, x_parts, strict=True)}
    if y_shared is not None:
        rows = {**rows, f"{label_owner} (labels)": int(y_shared.shape[0])}
    if len(set(rows.values())) != 1:
        raise InvalidDataError(
            f"vertical partition: the parties hold different numbers of rows {rows}; every "
            "party must hold every row, aligned in the same order"
        )
    columns = {name: int(p.shape[1]) for name, p in zip(names, x_parts, strict=True)}
    return SharedDataset(
        x=_concat(ctx, x_parts, 1),
        y=y_shared,
        partition="vertical",
        rows={name: rows[name] for name in names},
        columns=columns,
        standardizer=own,
        feature_limit=feature_limit,
    )


# ---- bundled example data ---------------------------------------------------------------------
def breast_cancer_split(
    test_size: float = 0.2, seed: int = 0
) -> tuple[FloatArray, FloatArray, IntArray, IntArray]:
    """scikit-learn's bundled Wisconsin breast-cancer data (569 x 30, no download), split into
    (x_train, x_test, y_train, y_test) by `train_test_split(test_size, random_state=seed,
    stratify=y)`: the split of the scenarios, benchmarks and tests (455 / 114 rows).

    Plaintext and public example data; needs scikit-learn.
    """
    try:
        datasets = importlib.import_module("sklearn.datasets")
        selection = importlib.import_module("sklearn.model_selection")
    except ImportError as exc:
        raise ImportError(
            "the breast-cancer example needs scikit-learn (bundled data, no download): "
            "pip install scikit-learn"
        ) from exc
    x, y = datasets.load_breast_cancer(return_X_y=True)
    x_train, x_test, y_train, y_test = selection.train_test_split(
        x, y, test_size=test_size, random_state=seed, stratify=y
    )
    return (
        np.asarray(x_train, dtype=np.float64),
        np.asarray(x_test, dtype=np.float64),
        np.asarray(y_train, dtype=np.int64),
        np.asarray(y_test, dtype=np.int64),
    )


def deal_breast_cancer_rows(
    names: Sequence[str], rows: int | None = None
) -> tuple[dict[str, dict[str, Any]], tuple[FloatArray, FloatArray, IntArray, IntArray]]:
    """The breast-cancer split dealt by rows to `names` (the scenarios' hospitals): each
    party's private train/test rows, and the whole split (public example data, for checking).
    `rows` keeps only the first `rows` training rows (already shuffled by the split)."""
    x_train, x_test, y_train, y_test = breast_cancer_split()
    if rows is not None:
        if rows < 4 * len(names):
            raise ValueError(f"rows must be at least {4 * len(names)} for {len(names)} parties")
        x_train, y_train = x_train[:rows], y_train[:rows]
    private: dict[str, dict[str, Any]] = {}
    train_parts = np.array_split(np.arange(len(x_train)), len(names))
    test_parts = np.array_split(np.arange(len(x_test)), len(names))
    for name, tr, te in zip(names, train_parts, test_parts, strict=True):
        private[name] = {
            "x_train": x_train[tr],
            "y_train": y_train[tr],
            "x_test": x_test[te],
            "y_test": y_test[te],
        }
    return private, (x_train, x_test, y_train, y_test)
