"""Targets with a mass at zero: a classifier for "is it above zero?" and a regressor for how far.

Band gaps of metals are exactly 0 (53 % of matbench_expt_gap). One regressor
fitted on such a target has to bend a smooth function around a spike; a
zero-inflated (hurdle) model splits the problem: a classifier estimates
``P(y > threshold | x)`` and a regressor is fitted only on the rows above the
threshold. Both are any scikit-learn (or skpolysrl) estimators; X is passed to
both untouched, so formulas work with skpolysrl estimators (or a Pipeline that
starts with :class:`~skpolysrl.PolySRLFeaturizer`) and arrays with
scikit-learn ones.

Examples
--------
>>> from sklearn.ensemble import ExtraTreesClassifier, ExtraTreesRegressor
>>> from skpolysrl.zero_inflated import ZeroInflatedRegressor
>>> model = ZeroInflatedRegressor(ExtraTreesClassifier(), ExtraTreesRegressor())
>>> model.fit(X, y).predict(X)                                      # doctest: +SKIP
"""

import inspect
import numbers

import numpy as np
from sklearn.base import BaseEstimator, MetaEstimatorMixin, RegressorMixin, clone
from sklearn.utils import _safe_indexing, get_tags
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions
from sklearn.utils.validation import _num_samples, check_is_fitted, column_or_1d, indexable

__all__ = ["ZeroInflatedRegressor"]


class ZeroInflatedRegressor(MetaEstimatorMixin, RegressorMixin, BaseEstimator):
    """A classifier for ``y > threshold`` combined with a regressor fitted on those rows.

    Parameters
    ----------
    classifier : classifier with ``predict_proba``
        Estimates ``P(y > threshold | X)``; fitted (a clone) on all rows with
        the boolean target ``y > threshold``.
    regressor : regressor
        Fitted (a clone) on the rows with ``y > threshold`` only.
    threshold : float, default=0.0
        Targets at or below it form the point mass ("zero" part).
    prediction : {"median", "mean"}, default="median"
        Which point of the mixture ``predict`` returns.

        * ``"median"``: the value that minimises the expected absolute error
          (MAE): ``zero_value_`` where ``P(y > threshold) < 0.5``, the
          regressor's prediction ``f`` elsewhere (raised to ``threshold`` where it
          falls below: the regressor only saw targets above it). When the mass at zero is below
          one half, the exact median of the mixture is the
          ``1 - 1 / (2 P)`` quantile of the regressor's conditional
          distribution, which a point regressor does not give; its
          prediction is used instead (exact as ``P`` approaches 1).
        * ``"mean"``: ``P f(X) + (1 - P) zero_value_`` (minimises the squared
          error; for MAE it pulls every small gap towards zero).

    Attributes
    ----------
    classifier_ : estimator
        The fitted classifier.
    regressor_ : estimator
        The fitted regressor.
    zero_value_ : float
        Median of the targets at or below ``threshold`` (0 for band gaps): the
        value predicted for the zero part.
    nonzero_fraction_ : float
        Share of training rows above ``threshold``.
    n_features_in_ : int
        Taken from the classifier when it has one.

    Notes
    -----
    ``predict(X, return_std=True)`` gives the standard deviation of the
    mixture, ``sqrt(P s^2 + P (1 - P) (f - zero_value_)^2)``, with ``s`` the
    regressor's own ``return_std`` when its ``predict`` accepts one (0
    otherwise): the spread coming from not knowing whether the row is a
    "zero" plus the regressor's.

    Examples
    --------
    >>> from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
    >>> from skpolysrl.zero_inflated import ZeroInflatedRegressor
    >>> model = ZeroInflatedRegressor(HistGradientBoostingClassifier(), HistGradientBoostingRegressor())
    >>> model.fit(X_train, band_gaps).predict(X_test)                 # doctest: +SKIP
    >>> model.predict_proba_nonzero(X_test)                           # doctest: +SKIP

    Tuned like any scikit-learn meta-estimator:
    ``GridSearchCV(model, {"regressor__max_iter": [100, 300]})``.
    """

    _parameter_constraints = {
        "classifier": [HasMethods(["fit", "predict_proba"])],
        "regressor": [HasMethods(["fit", "predict"])],
        "threshold": [Interval(numbers.Real, None, None, closed="neither")],
        "prediction": [StrOptions({"median", "mean"})],
    }

    def __init__(self, classifier, regressor, threshold=0.0, prediction="median"):
        self.classifier = classifier
        self.regressor = regressor
        self.threshold = threshold
        self.prediction = prediction

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        # X goes untouched to the sub-estimators: it accepts what they accept
        sub = get_tags(self.classifier).input_tags
        tags.input_tags.string = sub.string
        tags.input_tags.two_d_array = sub.two_d_array
        tags.input_tags.allow_nan = sub.allow_nan
        tags.input_tags.sparse = sub.sparse and get_tags(self.regressor).input_tags.sparse
        return tags

    def fit(self, X, y):
        """Fit the classifier on ``y > threshold`` and the regressor on those rows.

        Parameters
        ----------
        X : array-like, list of formulas or DataFrame
            Whatever both sub-estimators accept; passed on untouched.
        y : array-like of shape (n_samples,)

        Returns
        -------
        self : ZeroInflatedRegressor
        """
        self._validate_params()
        y = column_or_1d(y, warn=True)
        if np.iscomplexobj(y):  # a cast would silently drop the imaginary part
            raise ValueError("Complex data not supported: y must be real numbers")
        y = np.asarray(y, dtype=np.float64)
        X = indexable(X)[0]  # lists, arrays, DataFrames and sparse matrices stay as they are
        n = _num_samples(X)
        if n < 2:
            raise ValueError(f"n_samples={n}: need at least 2 training rows (some at or below threshold, 2 above)")
        if n != len(y):
            raise ValueError(f"X has {n} rows but y has {len(y)} values")
        if not np.isfinite(y).all():
            bad = np.flatnonzero(~np.isfinite(y))
            raise ValueError(f"y contains NaN or infinity in {len(bad)} rows (first: row {bad[0]}); drop them")
        nonzero = y > self.threshold
        n_nonzero = int(nonzero.sum())
        if n_nonzero == n:
            raise ValueError(
                f"all {n} targets are above threshold={self.threshold}: there is no zero part to model. "
                "Fit the regressor alone, or set `threshold` to the value of the point mass."
            )
        if n_nonzero < 2:
            raise ValueError(
                f"{n_nonzero} of {n} targets are above threshold={self.threshold}: the regressor needs at "
                "least 2. Fit a classifier alone, or lower `threshold`."
            )
        self.classifier_ = clone(self.classifier).fit(X, nonzero)
        self.regressor_ = clone(self.regressor).fit(_safe_indexing(X, np.flatnonzero(nonzero)), y[nonzero])
        self.zero_value_ = float(np.median(y[~nonzero]))
        self.nonzero_fraction_ = n_nonzero / n
        if hasattr(self.classifier_, "n_features_in_"):
            self.n_features_in_ = self.classifier_.n_features_in_
        if hasattr(self.classifier_, "feature_names_in_"):
            self.feature_names_in_ = self.classifier_.feature_names_in_
        return self

    def predict_proba_nonzero(self, X):
        """``P(y > threshold)`` for each row, from the classifier.

        Parameters
        ----------
        X : array-like, list of formulas or DataFrame

        Returns
        -------
        proba : ndarray of shape (n_samples,)
        """
        check_is_fitted(self, "classifier_")
        column = list(self.classifier_.classes_).index(True)
        return np.asarray(self.classifier_.predict_proba(X), dtype=np.float64)[:, column]

    def predict(self, X, return_std=False):
        """Predict targets: the median (default) or mean of the zero-inflated mixture.

        Parameters
        ----------
        X : array-like, list of formulas or DataFrame
        return_std : bool, default=False
            Also return the mixture's standard deviation (see Notes).

        Returns
        -------
        y_pred : ndarray of shape (n_samples,)
        y_std : ndarray of shape (n_samples,)
            Only with ``return_std=True``.
        """
        check_is_fitted(self, "regressor_")
        p = self.predict_proba_nonzero(X)
        std_reg = 0.0
        if return_std and "return_std" in inspect.signature(self.regressor_.predict).parameters:
            f, std_reg = self.regressor_.predict(X, return_std=True)
        else:
            f = self.regressor_.predict(X)
        # the regressor saw only targets above the threshold; below it lies the zero part's support
        f = np.maximum(np.asarray(f, dtype=np.float64), self.threshold)
        z = self.zero_value_
        if self.prediction == "median":
            y_pred = np.where(p >= 0.5, f, z)
        else:
            y_pred = p * f + (1.0 - p) * z
        if not return_std:
            return y_pred
        return y_pred, np.sqrt(p * np.square(std_reg) + p * (1.0 - p) * np.square(f - z))
