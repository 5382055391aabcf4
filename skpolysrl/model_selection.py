"""The paper's evaluation protocols: cross-validation, target scalings, and thermoelectric (ESTM) helpers.

PolySRL reports the mean and standard deviation over a 5-fold random split
(seed 0) of the MAE (and R^2); log-scaled electrical and thermal
conductivities; min-max scaled Seebeck coefficients; MAE multiplied by 10 for
the formation enthalpy, metallic glass and Seebeck tasks; and the
thermoelectric figure of merit ZT = S^2 sigma T / kappa computed from
predicted properties after undoing the scalings.
"""

import time

import numpy as np
from sklearn.base import clone
from sklearn.metrics import mean_absolute_error, r2_score
from sklearn.model_selection import KFold
from sklearn.utils import _safe_indexing

from .datasets._tables import select_temperature_window

__all__ = [
    "held_out_formulas",
    "PAPER_SEED", "MATBENCH_SEED", "ESTM_WINDOWS", "paper_kfold", "matbench_kfold", "cross_validate",
    "TargetScaling", "log_scale", "undo_log_scale", "minmax_scale", "undo_minmax_scale", "figure_of_merit",
    "zt_from_scaled", "screen_zt", "select_temperature_window",
]

#: Seed of the paper's 5-fold random split.
PAPER_SEED = 0
#: Seed of matbench's folds: ``KFold(5, shuffle=True, random_state=18012019)``.
MATBENCH_SEED = 18012019
#: ESTM temperature windows (K) of the paper's 300 K and 600 K sets.
ESTM_WINDOWS = {"300K": (295.0, 305.0), "600K": (593.0, 608.0)}


def held_out_formulas(formulas, fraction=0.1, salt="skpolysrl-holdout"):
    """Boolean mask: the formulas held out of pretraining, chosen by a hash of the formula text.

    The same formula is held out in every run, script and corpus (no seed, no
    dependence on which other formulas are present), so training recipes and
    evaluation scripts agree without sharing a file. About ``fraction`` of
    distinct formulas are held out.
    """
    import hashlib

    cut = int(fraction * 2**32)
    return np.array([int.from_bytes(hashlib.sha256(f"{salt}|{f}".encode()).digest()[:4], "big") < cut
                     for f in formulas], dtype=bool)


def paper_kfold(n_splits=5, seed=PAPER_SEED):
    """The paper's split: ``KFold(n_splits, shuffle=True, random_state=seed)``."""
    return KFold(n_splits=n_splits, shuffle=True, random_state=seed)


def matbench_kfold():
    """matbench's own folds for its composition tasks."""
    return KFold(n_splits=5, shuffle=True, random_state=MATBENCH_SEED)


# ------------------------------------------------------------------ scalings
def log_scale(values, base=10.0):
    """``log_base(values)``; the paper log-scales skewed conductivities. Values must be positive."""
    values = np.asarray(values, dtype=np.float64)
    if np.any(~(values > 0)):
        bad = np.flatnonzero(~(values > 0))
        raise ValueError(f"log scaling needs positive values; {len(bad)} are not (first: index {bad[0]}, "
                         f"value {values[bad[0]]!r}). Drop them or use another transform")
    return np.log(values) / np.log(base)


def undo_log_scale(scaled, base=10.0):
    """Inverse of :func:`log_scale`."""
    return np.power(base, np.asarray(scaled, dtype=np.float64))


def minmax_scale(values, value_range=None):
    """``(values - lo) / (hi - lo)``, with ``(lo, hi)`` = ``value_range`` or the values' own range.

    Returns
    -------
    scaled : ndarray
    value_range : (float, float)
        Keep it to undo the scaling (:func:`undo_minmax_scale`).
    """
    values = np.asarray(values, dtype=np.float64)
    lo, hi = (float(np.min(values)), float(np.max(values))) if value_range is None else map(float, value_range)
    if not hi > lo:
        raise ValueError(f"min-max scaling needs a range with max > min, got ({lo}, {hi})")
    return (values - lo) / (hi - lo), (lo, hi)


def undo_minmax_scale(scaled, value_range):
    """Inverse of :func:`minmax_scale`."""
    lo, hi = map(float, value_range)
    return np.asarray(scaled, dtype=np.float64) * (hi - lo) + lo


class TargetScaling:
    """A target transform for :func:`cross_validate`: ``"log"`` (base 10) or ``"minmax"``.

    Min-max uses the range of the whole dataset, as the paper scales its
    targets before splitting; it is a fixed affine map, so it cannot leak
    anything a model could exploit beyond the target's range.
    """

    def __init__(self, kind):
        if kind not in ("log", "minmax"):
            raise ValueError(f"target transform must be 'log' or 'minmax', got {kind!r}")
        self.kind = kind
        self.range_ = None

    def fit_transform(self, y):
        if self.kind == "log":
            return log_scale(y)
        scaled, self.range_ = minmax_scale(y)
        return scaled

    def inverse_transform(self, scaled):
        if self.kind == "log":
            return undo_log_scale(scaled)
        return undo_minmax_scale(scaled, self.range_)


# ---------------------------------------------------------- cross-validation
def cross_validate(estimator, X, y, cv=None, *, target_transform=None, report_scale=1.0, folds=None,
                   on_fold_end=None, return_predictions=False):
    """K-fold cross-validation of any regressor as in the paper.

    Parameters
    ----------
    estimator : scikit-learn regressor
        Cloned for every fold: e.g. ``PolySRLRegressor(finetune=True)`` on
        formulas, or ``Pipeline([featurizer, head])``.
    X : list-like of formulas, or array/DataFrame of features
    y : array-like of shape (n_samples,)
        Targets in their original units.
    cv : int or splitter, optional
        Default: the paper's ``KFold(5, shuffle=True, random_state=0)``; an int
        gives that many folds with seed 0; pass :func:`matbench_kfold` for matbench.
    target_transform : {None, "log", "minmax"}
        Train and score on scaled targets (log10, or min-max over the dataset);
        the MAE on the original scale is reported too.
    report_scale : float, default=1.0
        Multiply reported MAEs (not R^2) by this factor: the paper's x10 for
        formation enthalpy, metallic glass and Seebeck.
    folds : iterable of int, optional
        Run only these folds (0-based), e.g. to spread a long run over sessions.
    on_fold_end : callable(dict), optional
        Called with each fold's record as soon as it is done (e.g. to save it).
    return_predictions : bool, default=False
        Add ``predictions`` (original units, NaN for folds not run) to the result.

    Returns
    -------
    dict
        ``mae_mean``, ``mae_std``, ``r2_mean``, ``r2_std`` (on the scale the
        model is trained on, MAE times ``report_scale``), ``mae_original_mean``
        and ``mae_original_std`` (original units, unscaled), ``report_scale``,
        ``target_transform``, and ``folds``: one record per fold with ``fold``,
        ``mae``, ``r2``, ``mae_original``, ``n_train``, ``n_test``, ``seconds``.
        Standard deviations are ``numpy.std`` (ddof=0) over folds.
    """
    y = np.asarray(y, dtype=np.float64).reshape(-1)
    n = X.shape[0] if hasattr(X, "shape") else len(X)
    if n != len(y):
        raise ValueError(f"X and y have different numbers of rows: {n} and {len(y)}")
    if cv is None or isinstance(cv, int):
        cv = paper_kfold(5 if cv is None else cv)
    scaling = TargetScaling(target_transform) if target_transform is not None else None
    y_fit = scaling.fit_transform(y) if scaling is not None else y
    wanted = None if folds is None else set(int(f) for f in folds)
    predictions = np.full(n, np.nan)
    records = []
    for k, (train, test) in enumerate(cv.split(np.zeros((n, 1)))):
        if wanted is not None and k not in wanted:
            continue
        t0 = time.perf_counter()
        model = clone(estimator).fit(_safe_indexing(X, train), y_fit[train])
        pred = np.asarray(model.predict(_safe_indexing(X, test)), dtype=np.float64).reshape(-1)
        pred_original = scaling.inverse_transform(pred) if scaling is not None else pred
        predictions[test] = pred_original
        record = {
            "fold": k,
            "mae": float(mean_absolute_error(y_fit[test], pred)) * report_scale,
            "r2": float(r2_score(y_fit[test], pred)),
            "mae_original": float(mean_absolute_error(y[test], pred_original)),
            "n_train": int(len(train)),
            "n_test": int(len(test)),
            "seconds": time.perf_counter() - t0,
        }
        for name in ("lr_", "validation_mae_"):
            if getattr(model, name, None) is not None:
                record[name.rstrip("_")] = getattr(model, name)
        records.append(record)
        if on_fold_end is not None:
            on_fold_end(record)
    result = summarize_folds(records)
    result.update(report_scale=float(report_scale), target_transform=target_transform)
    if return_predictions:
        result["predictions"] = predictions
    return result


def summarize_folds(records):
    """Mean and std (ddof=0) over fold records of ``mae``, ``r2`` and ``mae_original``."""
    if not records:
        raise ValueError("no folds were run")
    out = {}
    for key in ("mae", "r2", "mae_original"):
        values = np.array([r[key] for r in records], dtype=np.float64)
        out[f"{key}_mean"] = float(values.mean())
        out[f"{key}_std"] = float(values.std())
    out["folds"] = list(records)
    return out


# ------------------------------------------------------------ thermoelectrics
_SEEBECK_UNITS = {"V/K": 1.0, "mV/K": 1e-3, "uV/K": 1e-6, "µV/K": 1e-6}


def figure_of_merit(seebeck, sigma, kappa, temperature, seebeck_unit="V/K"):
    """Thermoelectric figure of merit ZT = S^2 sigma T / kappa.

    Parameters
    ----------
    seebeck : array-like
        Seebeck coefficient S, in ``seebeck_unit``.
    sigma : array-like
        Electrical conductivity, S/m.
    kappa : array-like
        Thermal conductivity, W/(m K); must be positive.
    temperature : float or array-like
        Absolute temperature, K.
    seebeck_unit : {"V/K", "mV/K", "uV/K"}, default="V/K"

    Returns
    -------
    ndarray
        Dimensionless ZT.
    """
    if seebeck_unit not in _SEEBECK_UNITS:
        raise ValueError(f"seebeck_unit must be one of {sorted(_SEEBECK_UNITS)}, got {seebeck_unit!r}")
    s = np.asarray(seebeck, dtype=np.float64) * _SEEBECK_UNITS[seebeck_unit]
    kappa = np.asarray(kappa, dtype=np.float64)
    if np.any(~(kappa > 0)):
        raise ValueError("thermal conductivity kappa must be positive")
    return s**2 * np.asarray(sigma, dtype=np.float64) * np.asarray(temperature, dtype=np.float64) / kappa


def zt_from_scaled(seebeck_scaled, log_sigma, log_kappa, temperature, seebeck_range, seebeck_unit="V/K",
                   base=10.0):
    """ZT from predictions made on the paper's scales.

    ``seebeck_scaled`` is min-max scaled with ``seebeck_range`` (the (min, max)
    returned by :func:`minmax_scale`), ``log_sigma`` and ``log_kappa`` are
    log-scaled (``base``); the scalings are undone before computing ZT.
    """
    return figure_of_merit(undo_minmax_scale(seebeck_scaled, seebeck_range), undo_log_scale(log_sigma, base),
                           undo_log_scale(log_kappa, base), temperature, seebeck_unit)


def screen_zt(formulas, zt, threshold=1.0):
    """Candidates with ZT at or above ``threshold``, best first.

    Returns
    -------
    DataFrame with columns ``formula``, ``zt``, ``rank`` (1 = highest ZT).
    """
    import pandas as pd

    df = pd.DataFrame({"formula": list(formulas), "zt": np.asarray(zt, dtype=np.float64)})
    if len(df) != len(np.asarray(zt)):
        raise ValueError("formulas and zt differ in length")
    hits = df[df["zt"] >= threshold].sort_values("zt", ascending=False, kind="stable").reset_index(drop=True)
    hits["rank"] = np.arange(1, len(hits) + 1)
    return hits
