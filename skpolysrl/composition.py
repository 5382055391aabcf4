"""Composition feature sets side by side, and scikit-learn models on them chosen per dataset.

A materials scientist with a property table of a few hundred to a few thousand
formulas wants the model that does best on *their* table, not on one benchmark.
:class:`CompositionRegressor` and :class:`CompositionClassifier` compute
matminer's composition features and PolySRL's once (:class:`CompositionFeatures`),
score a few tree ensembles on them by cross-validation inside ``fit`` (on the
training rows only), and refit the best one on all rows. The default candidates
are the models that won matbench's four composition tasks in
``benchmarks/results/matbench_models.md`` (each chosen there by inner
cross-validation on one task); what they score on tables none of them was chosen
on is in ``benchmarks/results/composition_models.md``.

:class:`PriorCorrectedClassifier` turns a classifier's labels into the ones that
suit balanced accuracy (and matbench's ROC AUC of labels).
"""

import numbers
import os
import time

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, MetaEstimatorMixin, RegressorMixin, TransformerMixin, clone
from sklearn.utils._param_validation import HasMethods, StrOptions
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted

from ._formula_estimator import FormulaEstimator

__all__ = ["FEATURE_SETS", "CompositionFeatures", "MagpieFeatures", "PriorCorrectedClassifier",
           "CompositionRegressor", "CompositionClassifier", "default_candidates", "ZERO_MASS_SHARE",
           "MIN_ABOVE_ZERO"]

#: Feature set names of :class:`CompositionFeatures`.
FEATURE_SETS = ("magpie", "fractions", "extras", "polysrl")


def _matminer_featurizers(name):
    """The matminer featurizers of a feature set, as ``benchmarks/matbench_models.py`` builds them."""
    from matminer.featurizers import composition as c

    return {"magpie": lambda: [c.ElementProperty.from_preset("magpie", impute_nan=True)],  # 132 columns
            "fractions": lambda: [c.ElementFraction()],
            "extras": lambda: [c.Stoichiometry(), c.ValenceOrbital(impute_nan=True),
                               c.IonProperty(fast=True, impute_nan=True), c.BandCenter(impute_nan=True)]}[name]()


class CompositionFeatures(TransformerMixin, BaseEstimator):
    """Formulas -> composition feature sets side by side, a stateless transformer.

    Features depend on the formula alone, so each set is computed once per
    formula (and PolySRL model) and process (``_cache``) and reused across folds,
    tasks and estimators.

    Parameters
    ----------
    features : tuple of str, default=("magpie",)
        Names from :data:`FEATURE_SETS`, in column order: ``"magpie"`` (matminer's
        ``ElementProperty`` Magpie preset), ``"fractions"`` (``ElementFraction``),
        ``"extras"`` (``Stoichiometry``, ``ValenceOrbital``, ``IonProperty(fast=True)``,
        ``BandCenter``) and ``"polysrl"`` (:class:`~skpolysrl.PolySRLFeaturizer`'s
        mean and uncertainty).
    model : "default", None or path, default="default"
        PolySRL weights for ``"polysrl"`` (``None`` means ``"default"``).
    device : str, default="auto"
        Device of the PolySRL model.
    """

    _parameter_constraints = {"features": ["array-like"], "model": [str, os.PathLike, None], "device": [str]}
    _cache = {}

    def __init__(self, features=("magpie",), model="default", device="auto"):
        self.features = features
        self.model = model
        self.device = device

    def fit(self, X, y=None):
        """Check the feature set names; nothing is learned.

        Parameters
        ----------
        X : list of str
            Formulas.
        y : ignored

        Returns
        -------
        self : CompositionFeatures
        """
        self._validate_params()
        unknown = [f for f in self.features if f not in FEATURE_SETS]
        if unknown or not len(self.features):
            raise ValueError(f"features={self.features!r}: choose one or more of {', '.join(FEATURE_SETS)}")
        return self

    def transform(self, X):
        """Features of the formulas ``X``.

        Parameters
        ----------
        X : list of str
            Formulas.

        Returns
        -------
        ndarray of shape (n_formulas, n_columns)
            Float64; rows a matminer featurizer fails on are NaN in its columns.
        """
        self.fit(X)
        return np.hstack([self._block(name, X) for name in self.features])

    def _block(self, name, X):
        model = "default" if self.model is None else os.fspath(self.model)
        cache = self._cache.setdefault((name, model) if name == "polysrl" else name, {})
        missing = [f for f in dict.fromkeys(X) if f not in cache]
        if missing:
            cache.update(zip(missing, self._compute(name, missing, model)))
        return np.vstack([cache[f] for f in X])

    def _compute(self, name, formulas, model):
        if name == "polysrl":
            from .featurizer import PolySRLFeaturizer

            featurizer = PolySRLFeaturizer(pretrained=model, device=self.device, verbose=False, random_state=0)
            return np.asarray(featurizer.transform(list(formulas)), dtype=np.float64)
        from pymatgen.core import Composition

        compositions = [Composition(f) for f in formulas]
        columns = []
        for featurizer in _matminer_featurizers(name):
            featurizer.set_n_jobs(1)
            rows = featurizer.featurize_many(compositions, ignore_errors=True, pbar=False)
            columns.append(np.asarray(rows, dtype=np.float64))
        return np.hstack(columns)


class MagpieFeatures(CompositionFeatures):
    """Formulas -> matminer's Magpie ``ElementProperty`` features (132 columns): ``CompositionFeatures``
    with ``features=("magpie",)``, the RF/Magpie baseline's transformer."""

    features, model, device = ("magpie",), None, "cpu"

    def __init__(self):
        pass


class PriorCorrectedClassifier(MetaEstimatorMixin, ClassifierMixin, BaseEstimator):
    """A binary classifier whose probabilities are corrected to equal class priors.

    With ``pi`` the positive rate of the training labels, a predicted probability
    ``p`` of the positive class becomes ``p' = p (1 - pi) / (p (1 - pi) + (1 - p) pi)``:
    the probability the classifier would give if both classes were equally
    frequent in training. The map is monotone, so the ROC AUC of the
    probabilities is unchanged, while the labels ``p' > 0.5`` are ``p > pi``, the
    cut that suits balanced accuracy (and matbench's ROC AUC of labels).

    Parameters
    ----------
    estimator : classifier
        A binary classifier with ``predict_proba``.

    Attributes
    ----------
    estimator_ : classifier
        The fitted clone of ``estimator``.
    classes_ : ndarray of shape (2,)
    prior_ : float
        ``pi``, the fraction of training labels equal to ``classes_[1]``.
    """

    _parameter_constraints = {"estimator": [HasMethods(["fit", "predict_proba"])]}

    def __init__(self, estimator):
        self.estimator = estimator

    def fit(self, X, y):
        """Fit the classifier and store the training positive rate.

        Parameters
        ----------
        X : array-like or list of formulas
            Whatever ``estimator`` accepts.
        y : array-like of shape (n_samples,)
            Two classes.

        Returns
        -------
        self : PriorCorrectedClassifier
        """
        self._validate_params()
        self.estimator_ = clone(self.estimator).fit(X, y)
        self.classes_ = np.asarray(self.estimator_.classes_)
        if len(self.classes_) != 2:
            raise ValueError(f"PriorCorrectedClassifier needs two classes; y has {len(self.classes_)}: "
                             f"{list(self.classes_)}")
        self.prior_ = float(np.mean(np.asarray(y) == self.classes_[1]))
        return self

    def predict_proba(self, X):
        """Prior-corrected probabilities.

        Parameters
        ----------
        X : array-like or list of formulas

        Returns
        -------
        ndarray of shape (n_samples, 2)
            Columns in the order of ``classes_``.
        """
        check_is_fitted(self, "estimator_")
        p = np.asarray(self.estimator_.predict_proba(X), dtype=np.float64)[:, 1]
        positive, negative = p * (1.0 - self.prior_), (1.0 - p) * self.prior_
        corrected = positive / (positive + negative)
        return np.column_stack([1.0 - corrected, corrected])

    def predict(self, X):
        """Labels: ``classes_[1]`` where the corrected probability exceeds 0.5.

        Parameters
        ----------
        X : array-like or list of formulas

        Returns
        -------
        ndarray of shape (n_samples,)
        """
        return self.classes_[(self.predict_proba(X)[:, 1] > 0.5).astype(int)]


# ------------------------------------------------------------- chosen models
#: Settings of the boosting candidates, and of matbench's ``tuned`` expt_gap / expt_is_metal models.
BOOSTING = dict(max_iter=300, learning_rate=0.1, max_leaf_nodes=31, min_samples_leaf=20, early_stopping=False)

#: A regression target counts as having a mass at zero when at least this share of it is exactly 0 and none
#: of it is negative (band gaps of metals: 53 % of matbench_expt_gap).
ZERO_MASS_SHARE = 0.2
#: ... and at least this many targets are above 0 (``zero_inflated="auto"``).
MIN_ABOVE_ZERO = 20


def default_candidates(task_type, random_state=None, n_jobs=None):
    """The candidates :class:`CompositionRegressor` / :class:`CompositionClassifier` try by default.

    Each won one of matbench's four composition tasks in the inner cross-validation of
    ``benchmarks/results/matbench_models.md``: boosting on every feature set (expt_gap,
    expt_is_metal), a random forest on Magpie + element fractions (glass; for regression with
    Breiman's third of the features per split instead of glass's tenth), extra trees on element
    fractions (steels, where alloys differ by a few percent of one element).

    Parameters
    ----------
    task_type : {"regression", "classification"}
    random_state : int, RandomState or None, default=None
    n_jobs : int or None, default=None
        Passed to the forests.

    Returns
    -------
    dict
        ``name -> (feature sets, unfitted estimator)``, in the order they are tried (ties go to the
        first).
    """
    from sklearn.ensemble import (ExtraTreesClassifier, ExtraTreesRegressor, HistGradientBoostingClassifier,
                                  HistGradientBoostingRegressor, RandomForestClassifier, RandomForestRegressor)

    if task_type not in ("regression", "classification"):
        raise ValueError(f"task_type={task_type!r}: choose 'regression' or 'classification'")
    regression = task_type == "regression"
    boosting = HistGradientBoostingRegressor if regression else HistGradientBoostingClassifier
    forest = RandomForestRegressor if regression else RandomForestClassifier
    extra_trees = ExtraTreesRegressor if regression else ExtraTreesClassifier
    trees = dict(n_estimators=500, n_jobs=n_jobs, random_state=random_state)
    return {
        "boosting_all": (FEATURE_SETS, boosting(**BOOSTING, random_state=random_state)),
        "forest_magpie_fractions": (("magpie", "fractions"), forest(max_features=0.3 if regression else 0.1, **trees)),
        "extra_trees_fractions": (("fractions",), extra_trees(**trees)),
    }


def _formula_strings(X):
    """X's items as formula text that matminer reads as skpolysrl does.

    Items are checked by skpolysrl's parser (a FormulaError names the first bad row); the
    matminer feature sets read the text again through pymatgen, so a row that pymatgen reads
    differently (adducts such as ``CuSO4·5H2O``, a leading count such as ``2NaCl``, amounts below
    1e-8) is refused by name rather than featurized as another composition.
    """
    from pymatgen.core import Composition

    from ._elements import known_atomic_numbers
    from ._formula import parse_formulas
    from .exceptions import FIT_HINT, FormulaError
    from .featurizer import _as_items

    items = _as_items(X)
    if len(items) == 0:
        raise ValueError("no formulas given (got an empty input)")
    parsed = parse_formulas(items, known_atomic_numbers(), hint=FIT_HINT)  # no ignore_errors here
    texts, agreed = [], set()
    for position, (item, stoichiometry) in enumerate(zip(items, parsed)):
        if isinstance(item, str) and item in agreed:
            texts.append(item)
            continue
        try:
            composition = Composition(getattr(item, "composition", item))
        except Exception as exc:  # pymatgen's own parse errors are plain ValueErrors and worse
            problem = f"matminer's parser (pymatgen) cannot read it ({exc})"
        else:
            theirs = {el.Z: float(x) for el, x in composition.fractional_composition.items()}
            ours = dict(zip(stoichiometry.atomic_numbers, stoichiometry.fractions))
            same = set(theirs) == set(ours) and all(abs(theirs[z] - ours[z]) <= 1e-6 for z in ours)
            problem = None if same else (f"matminer's parser (pymatgen) reads it as {composition.formula!r}, "
                                         f"skpolysrl as another composition")
        if problem is not None:
            raise FormulaError(item, f"{problem}; write it with element symbols and amounts only (an adduct "
                                     f"CuSO4·5H2O as CuSO9H10, 2NaCl as NaCl)", position=position, hint=FIT_HINT)
        if isinstance(item, str):
            agreed.add(item)
            texts.append(item)
        else:  # a Composition, Structure or mapping: pymatgen's own text for it
            texts.append(composition.formula)
    return texts


class _ChosenCompositionModel(FormulaEstimator):
    """Shared core of :class:`CompositionRegressor` and :class:`CompositionClassifier`."""

    _parameter_constraints = {
        "candidates": [StrOptions({"default"}), dict],
        "cv": ["cv_object"],  # an int >= 2 or a splitter
        "scoring": [None, str, callable],
        "model": [str, os.PathLike],
        "device": [str],
        "n_jobs": [None, numbers.Integral],
        "random_state": ["random_state"],
        "verbose": ["boolean"],
    }
    _task_type = None

    def _candidates(self, y):
        if isinstance(self.candidates, str):
            candidates = default_candidates(self._task_type, self.random_state, self.n_jobs)
        else:
            candidates = {}
            for name, value in self.candidates.items():
                if not (isinstance(value, (tuple, list)) and len(value) == 2 and hasattr(value[1], "fit")
                        and not isinstance(value[1], type) and isinstance(value[0], (str, tuple, list))):
                    raise ValueError(f"candidates[{name!r}] must be (feature sets, estimator instance), e.g. "
                                     f"(('magpie', 'fractions'), RandomForestRegressor()); got {value!r}")
                if self._task_type == "classification" and not hasattr(value[1], "predict_proba"):
                    raise ValueError(f"candidates[{name!r}]: {type(value[1]).__name__} has no predict_proba; "
                                     f"CompositionClassifier needs a classifier with probabilities")
                sets = (value[0],) if isinstance(value[0], str) else tuple(value[0])
                unknown = [s for s in sets if s not in FEATURE_SETS]
                if unknown or not sets:
                    raise ValueError(f"candidates[{name!r}] uses feature sets {unknown or sets!r}; choose from "
                                     f"{', '.join(FEATURE_SETS)}")
                candidates[name] = (sets, value[1])
            if not candidates:
                raise ValueError("candidates is empty; give at least one (feature sets, estimator) or 'default'")
        return {name: (sets, clone(est)) for name, (sets, est) in candidates.items()}

    def _splitter(self, y):
        from sklearn.model_selection import KFold, StratifiedKFold, check_cv

        cv = 5 if self.cv is None else self.cv  # None: scikit-learn's 5 folds
        if isinstance(cv, numbers.Integral):  # shuffled: tables are often sorted by chemical system
            kind = StratifiedKFold if self._task_type == "classification" else KFold
            return kind(n_splits=int(cv), shuffle=True, random_state=self.random_state)
        return check_cv(cv, y, classifier=self._task_type == "classification")

    def _features(self, sets, formulas):
        return CompositionFeatures(sets, model=self.model, device=self.device).transform(formulas)

    def _choose_and_fit(self, X, y):
        from sklearn.model_selection import cross_val_score

        self._validate_params()
        formulas = _formula_strings(X)
        if len(formulas) != len(y):
            raise ValueError(f"X has {len(formulas)} formulas but y has {len(y)} values")
        candidates = self._candidates(y)
        scoring = self._scoring(y)
        if isinstance(scoring, str):  # checked even when one candidate leaves nothing to score
            from sklearn.metrics import get_scorer

            get_scorer(scoring)
        used = [s for s in FEATURE_SETS if any(s in sets for sets, _ in candidates.values())]
        blocks = {s: self._features((s,), formulas) for s in used}  # each set cached once per formula
        cv_scores = {}
        if len(candidates) > 1:
            # one set of splits for every candidate (a fresh shuffle each would let fold noise choose)
            splits = list(self._splitter(y).split(np.zeros((len(y), 1)), y))
            for name, (sets, estimator) in candidates.items():
                t0 = time.perf_counter()
                scores = cross_val_score(estimator, np.hstack([blocks[s] for s in sets]), y, cv=splits,
                                         scoring=scoring, error_score="raise")
                if not np.all(np.isfinite(scores)):
                    folds = [i for i, v in enumerate(scores) if not np.isfinite(v)]
                    raise ValueError(f"candidate {name!r} has no finite {scoring} score in fold(s) {folds} of the "
                                     f"inner cross-validation (a test fold with one class, or too few rows); use a "
                                     f"smaller cv, more rows, or another scoring")
                cv_scores[name] = scores
                self._log(f"{name}: {scoring} {scores.mean():.4f} +/- {scores.std():.4f} "
                          f"({time.perf_counter() - t0:.0f} s)")
        means = {name: float(np.mean(s)) for name, s in cv_scores.items()}
        best = max(means, key=means.get) if means else next(iter(candidates))
        sets, estimator = candidates[best]
        estimator.fit(np.hstack([blocks[s] for s in sets]), y)
        # set together, after everything succeeded: a failed refit leaves the previous fit whole
        fitted = {"cv_scores_": cv_scores, "best_candidate_": best, "feature_sets_": sets, "estimator_": estimator,
                  **self._fitted_extras(y, estimator)}
        for name, value in fitted.items():
            setattr(self, name, value)
        self._log(f"chose {best} ({' + '.join(sets)}), refitted on {len(y)} rows")
        return self

    def _fitted_extras(self, y, estimator):
        """Task-specific fitted attributes, set with the others once the refit succeeded."""
        return {}

    def _predict_features(self, X):
        check_is_fitted(self, "estimator_")
        return self._features(self.feature_sets_, _formula_strings(X))


class CompositionRegressor(RegressorMixin, _ChosenCompositionModel):
    """Formulas -> a property: tree ensembles on composition features, the best chosen inside ``fit``.

    ``fit`` computes the feature sets every candidate needs once
    (:class:`CompositionFeatures`: matminer's Magpie, element fractions, "extras", and
    PolySRL's mean and uncertainty), scores each candidate by ``cv``-fold
    cross-validation on the training rows, and refits the best on all of them. With the
    defaults this costs ``3 cv + 1`` tree-ensemble fits (10 with ``cv=3``); the PolySRL
    features come from the pretrained model shipped with the package, offline.

    Parameters
    ----------
    candidates : "default" or dict, default="default"
        ``name -> (feature sets, estimator)`` with feature sets named as in
        :data:`FEATURE_SETS`; ``"default"`` is :func:`default_candidates`. A single
        candidate is fitted without cross-validation.
    cv : int, cross-validation splitter, iterable of splits or None, default=3
        An int means ``KFold(cv, shuffle=True, random_state=random_state)``; None means 5.
    scoring : str, callable or None, default=None
        How candidates are compared (higher is better); None means
        ``"neg_mean_absolute_error"``.
    zero_inflated : "auto" or bool, default="auto"
        Wrap every candidate in a :class:`~skpolysrl.ZeroInflatedRegressor` whose
        classifier (boosting, on the candidate's features) decides ``y > 0``. ``"auto"``: when
        at least :data:`ZERO_MASS_SHARE` of ``y`` is exactly 0, none of it is negative and
        :data:`MIN_ABOVE_ZERO` values are above 0 (band gaps with metals).
    model : "default" or path, default="default"
        PolySRL weights for the ``"polysrl"`` feature set.
    device : str, default="auto"
        Device of the PolySRL model.
    n_jobs : int or None, default=None
        Threads of the default forests.
    random_state : int, RandomState or None, default=None
        Seeds the default candidates and the shuffled folds.
    verbose : bool, default=False
        Print each candidate's score and the choice.

    Attributes
    ----------
    best_candidate_ : str
        Name of the chosen candidate.
    cv_scores_ : dict
        ``name -> per-fold scores`` (``scoring``'s sign: higher is better); empty when there was
        one candidate.
    feature_sets_ : tuple of str
        Feature sets of the chosen candidate (the only ones ``predict`` computes).
    estimator_ : estimator
        The chosen candidate, refitted on all rows.
    zero_inflated_ : bool
        Whether the candidates were zero-inflated.

    See Also
    --------
    PolySRLRegressor : the paper's probe and fine-tune protocols on PolySRL features alone.

    Examples
    --------
    >>> from skpolysrl.composition import CompositionRegressor
    >>> model = CompositionRegressor(random_state=0).fit(formulas, band_gaps)  # doctest: +SKIP
    >>> model.best_candidate_, model.predict(["GaN", "ZnO"])                   # doctest: +SKIP
    """

    _parameter_constraints = {**_ChosenCompositionModel._parameter_constraints,
                              "zero_inflated": [StrOptions({"auto"}), "boolean"]}
    _task_type = "regression"

    def __init__(self, candidates="default", cv=3, scoring=None, zero_inflated="auto", model="default",
                 device="auto", n_jobs=None, random_state=None, verbose=False):
        self.candidates = candidates
        self.cv = cv
        self.scoring = scoring
        self.zero_inflated = zero_inflated
        self.model = model
        self.device = device
        self.n_jobs = n_jobs
        self.random_state = random_state
        self.verbose = verbose

    def _scoring(self, y):
        return "neg_mean_absolute_error" if self.scoring is None else self.scoring

    def _uses_zero_inflation(self, y):
        if self.zero_inflated == "auto":  # and enough rows above zero for every inner training fold
            return bool(np.all(y >= 0) and np.mean(y == 0) >= ZERO_MASS_SHARE and np.sum(y > 0) >= MIN_ABOVE_ZERO)
        return bool(self.zero_inflated)

    def _fitted_extras(self, y, estimator):
        return {"zero_inflated_": self._uses_zero_inflation(y)}

    def _candidates(self, y):
        candidates = super()._candidates(y)
        if not self._uses_zero_inflation(y):
            return candidates
        from sklearn.ensemble import HistGradientBoostingClassifier

        from .zero_inflated import ZeroInflatedRegressor

        zero = HistGradientBoostingClassifier(**BOOSTING, random_state=self.random_state)
        return {name: (sets, ZeroInflatedRegressor(clone(zero), est)) for name, (sets, est) in candidates.items()}

    def fit(self, X, y):
        """Choose a candidate by cross-validation on (X, y) and refit it on all rows.

        Parameters
        ----------
        X : list-like of formulas (str, Composition or Structure), or a one-column
            DataFrame / ``(n, 1)`` array of them.
        y : array-like of shape (n_samples,)
            Finite targets.

        Returns
        -------
        self : CompositionRegressor
        """
        from ._estimator import target_column

        return self._choose_and_fit(X, target_column(y, dtype=np.float64))

    def predict(self, X):
        """Predicted property of each formula.

        Parameters
        ----------
        X : list-like of formulas

        Returns
        -------
        ndarray of shape (n_samples,)
        """
        features = self._predict_features(X)
        return np.asarray(self.estimator_.predict(features), dtype=np.float64)


class CompositionClassifier(ClassifierMixin, _ChosenCompositionModel):
    """Formulas -> a class: tree ensembles on composition features, the best chosen inside ``fit``.

    As :class:`CompositionRegressor`, with classifiers; ``cv`` as an int means
    ``StratifiedKFold(cv, shuffle=True, random_state=random_state)`` and candidates are
    compared by the ROC AUC of their probabilities (``"roc_auc"``, or ``"roc_auc_ovr"``
    for more than two classes) unless ``scoring`` says otherwise. ``predict`` returns the
    most probable class; wrap the model in :class:`PriorCorrectedClassifier` for labels
    that suit balanced accuracy on imbalanced classes.

    Parameters
    ----------
    candidates : "default" or dict, default="default"
        ``name -> (feature sets, classifier with predict_proba)``; ``"default"`` is
        :func:`default_candidates`.
    cv : int, cross-validation splitter, iterable of splits or None, default=3
    scoring : str, callable or None, default=None
    model : "default" or path, default="default"
    device : str, default="auto"
    n_jobs : int or None, default=None
    random_state : int, RandomState or None, default=None
    verbose : bool, default=False

    Attributes
    ----------
    best_candidate_ : str
    cv_scores_ : dict
    feature_sets_ : tuple of str
    estimator_ : classifier
    classes_ : ndarray
        The class labels, in the order of ``predict_proba``'s columns.
    """

    _task_type = "classification"

    def __init__(self, candidates="default", cv=3, scoring=None, model="default", device="auto", n_jobs=None,
                 random_state=None, verbose=False):
        self.candidates = candidates
        self.cv = cv
        self.scoring = scoring
        self.model = model
        self.device = device
        self.n_jobs = n_jobs
        self.random_state = random_state
        self.verbose = verbose

    def _scoring(self, y):
        if self.scoring is not None:
            return self.scoring
        return "roc_auc" if len(np.unique(y)) == 2 else "roc_auc_ovr"

    def fit(self, X, y):
        """Choose a candidate by cross-validation on (X, y) and refit it on all rows.

        Parameters
        ----------
        X : list-like of formulas (str, Composition or Structure), or a one-column
            DataFrame / ``(n, 1)`` array of them.
        y : array-like of shape (n_samples,)
            Class labels (two or more classes).

        Returns
        -------
        self : CompositionClassifier
        """
        from ._estimator import target_column

        y = target_column(y)
        check_classification_targets(y)  # before X: a continuous y is the mistake to name
        classes = np.unique(y)
        if len(classes) < 2:
            raise ValueError(f"y has one class ({classes[0]!r}); a classifier needs at least two")
        return self._choose_and_fit(X, y)

    def _fitted_extras(self, y, estimator):
        return {"classes_": np.asarray(estimator.classes_)}

    def predict_proba(self, X):
        """Class probabilities, columns in the order of ``classes_``.

        Parameters
        ----------
        X : list-like of formulas

        Returns
        -------
        ndarray of shape (n_samples, n_classes)
        """
        features = self._predict_features(X)
        return np.asarray(self.estimator_.predict_proba(features), dtype=np.float64)

    def predict(self, X):
        """The most probable class of each formula.

        Parameters
        ----------
        X : list-like of formulas

        Returns
        -------
        ndarray of shape (n_samples,)
        """
        proba = self.predict_proba(X)
        return self.classes_[np.argmax(proba, axis=1)]
