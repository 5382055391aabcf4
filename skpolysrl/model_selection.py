"""The paper's evaluation protocols: cross-validation, target scalings, and thermoelectric (ESTM) helpers.

PolySRL reports the mean and standard deviation over a 5-fold random split
(seed 0) of the MAE (and R^2); log-scaled (natural logarithm) electrical and thermal
conductivities; min-max scaled Seebeck coefficients; MAE multiplied by 10 for
the formation enthalpy, metallic glass and Seebeck tasks; and the
thermoelectric figure of merit ZT = S^2 sigma T / kappa computed from
predicted properties after undoing the scalings. Classifiers are scored by
ROC AUC and accuracy on stratified folds, as matbench scores its
classification tasks.
"""

import time

import numpy as np
from sklearn.base import clone, is_classifier
from sklearn.metrics import accuracy_score, mean_absolute_error, r2_score, roc_auc_score
from sklearn.model_selection import KFold, StratifiedKFold
from sklearn.utils import _safe_indexing

from .datasets._tables import dataset_task_type, select_temperature_window

__all__ = [
    "held_out_formulas",
    "PAPER_SEED", "MATBENCH_SEED", "ESTM_WINDOWS", "paper_kfold", "matbench_kfold", "cross_validate",
    "classification_scores", "summarize_folds", "FOLD_SCORES", "TargetScaling", "TARGET_TRANSFORMS", "log_scale",
    "undo_log_scale", "minmax_scale", "undo_minmax_scale", "figure_of_merit", "zt_from_scaled",
    "screen_zt", "select_temperature_window",
]

#: Seed of the paper's 5-fold random split.
PAPER_SEED = 0
#: Seed of matbench's folds: ``KFold(5, shuffle=True, random_state=18012019)`` (``StratifiedKFold`` for
#: its classification tasks).
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


def paper_kfold(n_splits=5, seed=PAPER_SEED, stratified=False):
    """The paper's split: ``KFold(n_splits, shuffle=True, random_state=seed)``; ``stratified=True``
    gives ``StratifiedKFold`` with the same arguments (class proportions kept in every fold)."""
    return (StratifiedKFold if stratified else KFold)(n_splits=n_splits, shuffle=True, random_state=seed)


def matbench_kfold(task=None):
    """matbench's own folds for a task: ``StratifiedKFold(5, shuffle=True, random_state=18012019)`` for its
    classification tasks (``matbench_expt_is_metal``, ``matbench_glass``, ``matbench_mp_is_metal``),
    ``KFold`` with the same arguments for the others and when ``task`` is None.

    Parameters
    ----------
    task : str, optional
        A matbench task (``matbench_`` prefix optional), e.g. ``"matbench_glass"``.
    """
    return paper_kfold(5, MATBENCH_SEED, stratified=task is not None and dataset_task_type(task) == "classification")


# ------------------------------------------------------------------ scalings
def log_scale(values, base=np.e):
    """``log_base(values)``, natural by default: the paper's code log-scales skewed conductivities with
    ``np.log``. Values must be positive."""
    values = np.asarray(values, dtype=np.float64)
    if np.any(~(values > 0)):
        bad = np.flatnonzero(~(values > 0))
        raise ValueError(f"log scaling needs positive values; {len(bad)} are not (first: index {bad[0]}, "
                         f"value {values[bad[0]]!r}). Drop them or use another transform")
    return np.log(values) / np.log(base)


def undo_log_scale(scaled, base=np.e):
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


#: Target transforms of :func:`cross_validate` and ``skpolysrl evaluate --target-transform``.
TARGET_TRANSFORMS = ("log", "log10", "minmax")
_LOG_BASES = {"log": np.e, "log10": 10.0}


class TargetScaling:
    """A target transform for :func:`cross_validate`: ``"log"`` (natural, as the paper's code),
    ``"log10"`` or ``"minmax"``.

    Min-max uses the range of the whole dataset, as the paper scales its
    targets before splitting; it is a fixed affine map, so it cannot leak
    anything a model could exploit beyond the target's range.
    """

    def __init__(self, kind):
        if kind not in TARGET_TRANSFORMS:
            raise ValueError(f"target transform must be one of {TARGET_TRANSFORMS}, got {kind!r}")
        self.kind = kind
        self.range_ = None

    def fit_transform(self, y):
        if self.kind in _LOG_BASES:
            return log_scale(y, _LOG_BASES[self.kind])
        scaled, self.range_ = minmax_scale(y)
        return scaled

    def inverse_transform(self, scaled):
        if self.kind in _LOG_BASES:
            return undo_log_scale(scaled, _LOG_BASES[self.kind])
        return undo_minmax_scale(scaled, self.range_)


# ---------------------------------------------------------- cross-validation
def cross_validate(estimator, X, y, cv=None, *, target_transform=None, report_scale=1.0, folds=None,
                   on_fold_end=None, return_predictions=False):
    """K-fold cross-validation of any regressor as in the paper, or of any classifier as matbench does.

    Parameters
    ----------
    estimator : scikit-learn regressor or classifier
        Cloned for every fold: e.g. ``PolySRLRegressor(finetune=True)`` or
        ``PolySRLClassifier()`` on formulas, or ``Pipeline([featurizer, head])``.
        A classifier (``sklearn.base.is_classifier``) needs ``predict_proba`` and
        is scored by ROC AUC and accuracy.
    X : list-like of formulas, or array/DataFrame of features
    y : array-like of shape (n_samples,)
        Targets in their original units, or class labels.
    cv : int or splitter, optional
        Default: the paper's ``KFold(5, shuffle=True, random_state=0)``
        (``StratifiedKFold`` for a classifier); an int gives that many folds
        with seed 0; pass ``matbench_kfold(task)`` for matbench.
    target_transform : {None, "log", "log10", "minmax"}
        Regression only: train and score on scaled targets (natural log, log10,
        or min-max over the dataset); the MAE on the original scale is reported too.
    report_scale : float, default=1.0
        Regression only: multiply reported MAEs (not R^2) by this factor: the
        paper's x10 for formation enthalpy, metallic glass and Seebeck.
    folds : iterable of int, optional
        Run only these folds (0-based), e.g. to spread a long run over sessions.
    on_fold_end : callable(dict), optional
        Called with each fold's record as soon as it is done (e.g. to save it).
    return_predictions : bool, default=False
        Add ``predictions`` (original units, NaN for folds not run; for a
        classifier, the probabilities, shape (n_samples, n_classes), columns in
        sorted label order) to the result.

    Returns
    -------
    dict
        ``task_type`` ("regression" or "classification") and ``folds``, one
        record per fold with ``fold``, ``n_train``, ``n_test``, ``seconds`` and
        the scores; the mean and standard deviation (``numpy.std``, ddof=0) of
        each score over folds as ``<score>_mean`` and ``<score>_std``.
        Regression scores: ``mae``, ``r2`` (on the scale the model is trained
        on, MAE times ``report_scale``), ``mae_original`` (original units); the
        result also holds ``report_scale`` and ``target_transform``.
        Classification scores: ``roc_auc`` (one-vs-rest macro average for more
        than two classes; NaN for a fold whose test rows hold one class) and
        ``accuracy``.
    """
    classification = is_classifier(estimator)
    y = np.asarray(y) if classification else np.asarray(y, dtype=np.float64)
    y = y.reshape(-1)
    n = X.shape[0] if hasattr(X, "shape") else len(X)
    if n != len(y):
        raise ValueError(f"X and y have different numbers of rows: {n} and {len(y)}")
    if classification and (target_transform is not None or report_scale != 1):
        raise ValueError("target_transform and report_scale apply to regression targets, not to a classifier's "
                         "labels; leave them unset")
    if cv is None or isinstance(cv, int):
        cv = paper_kfold(5 if cv is None else cv, stratified=classification)
    scaling = TargetScaling(target_transform) if target_transform is not None else None
    y_fit = scaling.fit_transform(y) if scaling is not None else y
    wanted = None if folds is None else set(int(f) for f in folds)
    classes = np.unique(y) if classification else None
    predictions = np.full((n, len(classes)) if classification else n, np.nan)
    records = []
    for k, (train, test) in enumerate(cv.split(np.zeros((n, 1)), y)):
        if wanted is not None and k not in wanted:
            continue
        t0 = time.perf_counter()
        model = clone(estimator).fit(_safe_indexing(X, train), y_fit[train])
        if classification:
            proba = np.asarray(model.predict_proba(_safe_indexing(X, test)), dtype=np.float64)
            predictions[np.ix_(test, np.searchsorted(classes, model.classes_))] = proba
            record = {"fold": k, **classification_scores(y[test], proba, model.classes_)}
        else:
            pred = np.asarray(model.predict(_safe_indexing(X, test)), dtype=np.float64).reshape(-1)
            pred_original = scaling.inverse_transform(pred) if scaling is not None else pred
            predictions[test] = pred_original
            record = {
                "fold": k,
                "mae": float(mean_absolute_error(y_fit[test], pred)) * report_scale,
                "r2": float(r2_score(y_fit[test], pred)),
                "mae_original": float(mean_absolute_error(y[test], pred_original)),
            }
        record.update(n_train=int(len(train)), n_test=int(len(test)), seconds=time.perf_counter() - t0)
        for name in ("lr_", "validation_mae_", "validation_log_loss_"):
            if getattr(model, name, None) is not None:
                record[name.rstrip("_")] = getattr(model, name)
        records.append(record)
        if on_fold_end is not None:
            on_fold_end(record)
    result = summarize_folds(records)
    result["task_type"] = "classification" if classification else "regression"
    if not classification:
        result.update(report_scale=float(report_scale), target_transform=target_transform)
    if return_predictions:
        result["predictions"] = predictions
    return result


def classification_scores(y_true, proba, classes):
    """``{"roc_auc", "accuracy"}`` of class probabilities ``proba`` (columns in the order of ``classes``).

    ROC AUC is that of the second class's probability for two classes, the one-vs-rest macro
    average for more; NaN when ``y_true`` holds a single class (it is undefined there).
    """
    y_true = np.asarray(y_true)
    accuracy = float(accuracy_score(y_true, np.asarray(classes)[np.argmax(proba, axis=1)]))
    if len(np.unique(y_true)) < 2:
        return {"roc_auc": float("nan"), "accuracy": accuracy}
    if len(classes) == 2:
        auc = roc_auc_score(y_true == classes[1], proba[:, 1])
    else:
        auc = roc_auc_score(y_true, proba, multi_class="ovr", labels=classes)
    return {"roc_auc": float(auc), "accuracy": accuracy}


#: The scores :func:`summarize_folds` averages, by task type.
FOLD_SCORES = {"regression": ("mae", "r2", "mae_original"), "classification": ("roc_auc", "accuracy")}


def summarize_folds(records):
    """Mean and std (ddof=0) over fold records of their scores (``mae``, ``r2``, ``mae_original``, or
    ``roc_auc``, ``accuracy``), plus ``folds``, the records."""
    if not records:
        raise ValueError("no folds were run")
    keys = FOLD_SCORES["classification" if "roc_auc" in records[0] else "regression"]
    out = {}
    for key in keys:
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
                   base=np.e):
    """ZT from predictions made on the paper's scales.

    ``seebeck_scaled`` is min-max scaled with ``seebeck_range`` (the (min, max)
    returned by :func:`minmax_scale`), ``log_sigma`` and ``log_kappa`` are
    log-scaled (``base``, natural by default as :func:`log_scale`); the scalings are undone before computing ZT.
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
