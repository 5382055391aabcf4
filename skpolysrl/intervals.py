"""Calibrated prediction intervals: MAPIE's conformal regressors around skpolysrl estimators.

``PolySRLRegressor.predict(X, return_std=True)`` gives a spread, not an
interval that holds. Conformal prediction turns any regressor into intervals
with a coverage guarantee on exchangeable data; MAPIE (``pip install
"skpolysrl[intervals]"``) implements it for the scikit-learn API, and this
module only connects the two:

* :func:`conformal_regressor` builds MAPIE's ``SplitConformalRegressor`` (fit on
  training rows, calibrate on held-out rows) or ``CrossConformalRegressor``
  (CV+, no rows set aside) around a regressor that takes formulas
  (:class:`~skpolysrl.PolySRLRegressor`, :class:`~skpolysrl.ZeroInflatedRegressor`
  over skpolysrl estimators, a Pipeline starting with
  :class:`~skpolysrl.PolySRLFeaturizer`) or features.
  ``conformity_score="std"`` calibrates the regressor's own ``return_std``:
  the interval is ``y_pred +/- q * std`` with ``q`` the conformal quantile of
  ``|y - y_pred| / std`` on the calibration rows (a fitted scale factor, per
  confidence level), so intervals are wider where the model is less sure.
* :func:`interval_scores` measures coverage, mean width and how well the
  width ranks the errors on test rows.

Examples
--------
>>> from skpolysrl import PolySRLRegressor
>>> from skpolysrl.intervals import conformal_regressor, interval_scores
>>> model = conformal_regressor(PolySRLRegressor(n_estimators=5), confidence_level=(0.68, 0.95),
...                             conformity_score="std")
>>> model.fit(train_formulas, y_train).conformalize(calibration_formulas, y_calibration)  # doctest: +SKIP
>>> y_pred, intervals = model.predict_interval(test_formulas)      # doctest: +SKIP
>>> interval_scores(y_test, y_pred, intervals, (0.68, 0.95))       # doctest: +SKIP
"""

import numbers

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin, clone
from sklearn.utils import get_tags

try:
    from mapie.metrics.regression import regression_coverage_score, regression_mean_width_score
    from mapie.regression import CrossConformalRegressor, SplitConformalRegressor
except ImportError as exc:  # pragma: no cover - depends on the installation
    raise ImportError(
        "skpolysrl.intervals needs MAPIE >= 1.0: pip install \"skpolysrl[intervals]\" (or pip install mapie)"
    ) from exc

__all__ = ["conformal_regressor", "interval_scores"]

#: MAPIE's name of each conformity score this module offers by a short name.
_SCORES = {"absolute": "absolute", "std": "std_normalized", "gamma": "gamma"}


class _FormulaInput(RegressorMixin, BaseEstimator):
    """Hands X (formulas or features) to ``estimator`` unchanged, without the ``n_features_in_`` MAPIE probes.

    MAPIE checks that a model is fitted by predicting on ``np.zeros((1,
    n_features_in_))``, which a model that reads formulas refuses (a number is not
    a formula). This wrapper keeps every call the same and shows MAPIE
    ``fitted_`` instead.
    """

    def __init__(self, estimator):
        self.estimator = estimator

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags = get_tags(self.estimator).input_tags
        return tags

    def fit(self, X, y, **fit_params):
        self.estimator_ = clone(self.estimator).fit(X, y, **fit_params)
        self.fitted_ = True
        return self

    def predict(self, X, return_std=False):
        if return_std:
            return self.estimator_.predict(X, return_std=True)
        return self.estimator_.predict(X)


def conformal_regressor(estimator, confidence_level=(0.68, 0.95), *, conformity_score="absolute", cv=None,
                        prefit=False, random_state=None, n_jobs=None):
    """A MAPIE conformal regressor around ``estimator``, for intervals with measured coverage.

    Parameters
    ----------
    estimator : regressor
        Any scikit-learn regressor, a skpolysrl regressor (X = formulas) or a
        Pipeline. With ``conformity_score="std"`` its ``predict`` must accept
        ``return_std=True`` (e.g. ``PolySRLRegressor(n_estimators=5)``).
    confidence_level : float or sequence of float, default=(0.68, 0.95)
        Nominal coverage of each interval (0.68 is the +/- 1 sigma of a Gaussian).
    conformity_score : {"absolute", "std", "gamma"} or MAPIE ``BaseRegressionScore``, default="absolute"
        ``"absolute"``: ``|y - y_pred|``, intervals of one width for every row.
        ``"std"``: ``|y - y_pred| / std`` with ``std`` from
        ``estimator.predict(X, return_std=True)`` (MAPIE's ``"std_normalized"``):
        calibrates the estimator's standard deviation. ``"gamma"``:
        ``|y - y_pred| / y_pred``, for positive targets.
    cv : None, int or cross-validation splitter, default=None
        ``None``: split conformal (MAPIE ``SplitConformalRegressor``); call
        ``.fit(X_train, y_train)`` then ``.conformalize(X_calibration,
        y_calibration)`` with rows the model was not trained on. An int or a
        splitter: cross conformal, the CV+ method (MAPIE
        ``CrossConformalRegressor``); call ``.fit_conformalize(X, y)``: every
        row is used for training and calibration, at the cost of one fit per fold.
    prefit : bool, default=False
        Split conformal only: ``estimator`` is already fitted; skip ``fit``.
    random_state : int or None, default=None
        Cross conformal only: seed of MAPIE's fold split when ``cv`` is an int.
    n_jobs : int or None, default=None
        Passed to MAPIE.

    Returns
    -------
    model : mapie.regression.SplitConformalRegressor or CrossConformalRegressor
        ``model.predict_interval(X)`` returns ``(y_pred, intervals)``, with
        ``intervals`` of shape ``(n_samples, 2, n_confidence_levels)`` (lower,
        upper).
    """
    if isinstance(conformity_score, str):
        if conformity_score not in _SCORES:
            raise ValueError(f"conformity_score={conformity_score!r} is not one of {sorted(_SCORES)} "
                             "(or pass a MAPIE BaseRegressionScore instance)")
        conformity_score = _SCORES[conformity_score]
    if cv is not None and prefit:
        raise ValueError("prefit=True applies to split conformal (cv=None); cross conformal refits the "
                         "estimator on each fold: drop prefit or set cv=None")
    if isinstance(confidence_level, numbers.Real):
        confidence_level = [float(confidence_level)]
    confidence_level = [float(c) for c in confidence_level]
    # every estimator: tags do not tell whether one reads formulas (a Pipeline over a featurizer does)
    wrapped = _FormulaInput(estimator)
    if prefit:
        wrapped.estimator_, wrapped.fitted_ = estimator, True
    estimator = wrapped
    if cv is None:
        return SplitConformalRegressor(estimator, confidence_level=confidence_level,
                                       conformity_score=conformity_score, prefit=prefit, n_jobs=n_jobs)
    return CrossConformalRegressor(estimator, confidence_level=confidence_level, conformity_score=conformity_score,
                                   method="plus", cv=cv, n_jobs=n_jobs, random_state=random_state)


def interval_scores(y_true, y_pred, intervals, confidence_level, std=None):
    """Coverage, width and error ranking of prediction intervals on held-out rows.

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
    y_pred : array-like of shape (n_samples,)
    intervals : array-like of shape (n_samples, 2, n_levels) or (n_samples, 2)
        Lower and upper bounds, as ``predict_interval`` returns them.
    confidence_level : float or sequence of float
        The nominal coverage of each interval, in the same order.
    std : array-like of shape (n_samples,), optional
        A per-row standard deviation (e.g. ``return_std``) to rank against the
        absolute errors as well.

    Returns
    -------
    scores : dict
        Per level ``"coverage_<level>"`` (share of ``y_true`` inside,
        MAPIE's ``regression_coverage_score``), ``"width_<level>"`` (mean
        width, MAPIE's ``regression_mean_width_score``) and
        ``"rho_width_<level>"`` (Spearman rho of half-width with
        ``|y_true - y_pred|``; NaN when all widths are equal); ``"mae"``; and
        ``"rho_std"`` when ``std`` is given.
    """
    from scipy.stats import spearmanr

    y_true = np.asarray(y_true, dtype=np.float64)
    error = np.abs(y_true - np.asarray(y_pred, dtype=np.float64))
    intervals = np.asarray(intervals, dtype=np.float64)
    if intervals.ndim == 2:
        intervals = intervals[:, :, None]
    levels = [confidence_level] if isinstance(confidence_level, numbers.Real) else list(confidence_level)
    if intervals.shape[2] != len(levels):
        raise ValueError(f"intervals hold {intervals.shape[2]} levels but confidence_level names {len(levels)}")
    coverage = regression_coverage_score(y_true, intervals)
    width = regression_mean_width_score(intervals)
    scores = {"mae": float(error.mean())}
    for k, level in enumerate(levels):
        half = (intervals[:, 1, k] - intervals[:, 0, k]) / 2
        scores[f"coverage_{level:g}"] = float(coverage[k])
        scores[f"width_{level:g}"] = float(width[k])
        # one width for all rows (up to rounding) ranks nothing: NaN, not a correlation with float noise
        constant = np.ptp(half) <= 1e-9 * max(float(np.abs(half).max()), 1e-300)
        scores[f"rho_width_{level:g}"] = float("nan") if constant else float(spearmanr(half, error)[0])
    if std is not None:
        scores["rho_std"] = float(spearmanr(np.asarray(std, dtype=np.float64), error)[0])
    return scores
