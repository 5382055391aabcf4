"""CompositionRegressor / CompositionClassifier: composition features + the model chosen inside fit."""

import joblib
import numpy as np
import pytest
import sklearn.utils.estimator_checks as ec
from sklearn.ensemble import ExtraTreesRegressor, HistGradientBoostingClassifier, RandomForestRegressor
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.metrics import mean_absolute_error, roc_auc_score
from sklearn.model_selection import KFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from formula_estimator_checks import CLASSIFIER_CHECKS, FORMULA_ESTIMATOR_CHECKS
from skpolysrl import CompositionClassifier, CompositionRegressor, FormulaError, ZeroInflatedRegressor
from skpolysrl.composition import CompositionFeatures, default_candidates
from skpolysrl.datasets import load_dataset
from skpolysrl.matbench import ESTIMATORS

#: Small candidates for the tests that check wiring rather than accuracy (two busy CI cores).
FAST_REGRESSORS = {"ridge_fractions": (("fractions",), Ridge(alpha=1.0)),
                   "ridge_magpie": (("magpie",), make_pipeline(StandardScaler(), Ridge(alpha=10.0)))}
FAST_CLASSIFIERS = {"logistic_fractions": (("fractions",), LogisticRegression(max_iter=500)),
                    "boosting_polysrl": ("polysrl", HistGradientBoostingClassifier(max_iter=30, random_state=0))}


@pytest.mark.parametrize("check", FORMULA_ESTIMATOR_CHECKS)
def test_sklearn_checks_that_apply_regressor(check):
    getattr(ec, check)("CompositionRegressor", CompositionRegressor(candidates=FAST_REGRESSORS, random_state=0))


@pytest.mark.parametrize("check", FORMULA_ESTIMATOR_CHECKS + CLASSIFIER_CHECKS)
def test_sklearn_checks_that_apply_classifier(check):
    getattr(ec, check)("CompositionClassifier", CompositionClassifier(candidates=FAST_CLASSIFIERS, random_state=0))


@pytest.fixture(scope="module")
def steels():
    """matbench_steels_yield: 312 alloys, yield strength in MPa; 234 to train, 78 held out."""
    df = load_dataset("matbench_steels_yield").sample(frac=1.0, random_state=0)
    formulas, y = df["formula"].tolist(), df["target"].to_numpy(np.float64)
    return formulas[:234], y[:234], formulas[234:], y[234:]


def test_default_candidates_choose_by_inner_cv_and_beat_rf_magpie_on_steels(steels):
    """Steels differ by a few percent of one element: the element-fraction model should be chosen,
    and the choice should beat matbench's RF/Magpie baseline on rows it never saw."""
    Xtr, ytr, Xte, yte = steels
    model = CompositionRegressor(random_state=0, n_jobs=2).fit(Xtr, ytr)
    assert set(model.cv_scores_) == set(default_candidates("regression"))
    means = {name: s.mean() for name, s in model.cv_scores_.items()}
    assert model.best_candidate_ == max(means, key=means.get)
    assert model.best_candidate_ == "extra_trees_fractions", means
    assert model.feature_sets_ == ("fractions",) and not model.zero_inflated_
    ours = mean_absolute_error(yte, model.predict(Xte))
    magpie = CompositionFeatures(("magpie",))
    forest = RandomForestRegressor(n_estimators=500, random_state=0, n_jobs=2).fit(magpie.transform(Xtr), ytr)
    baseline = mean_absolute_error(yte, forest.predict(magpie.transform(Xte)))
    assert ours < 0.9 * baseline, (ours, baseline)


def test_a_single_candidate_is_fitted_without_cross_validation(steels):
    Xtr, ytr, Xte, _ = steels
    model = CompositionRegressor(candidates={"et": ("fractions", ExtraTreesRegressor(50, random_state=0))}).fit(Xtr, ytr)
    assert model.cv_scores_ == {} and model.best_candidate_ == "et"
    direct = ExtraTreesRegressor(50, random_state=0).fit(CompositionFeatures(("fractions",)).transform(Xtr), ytr)
    np.testing.assert_allclose(model.predict(Xte), direct.predict(CompositionFeatures(("fractions",)).transform(Xte)))


@pytest.fixture(scope="module")
def expt_gap():
    """600 formulas of matbench_expt_gap (about half metals at exactly 0 eV): 450 to train, 150 held out."""
    df = load_dataset("matbench_expt_gap").sample(600, random_state=0)
    formulas, y = df["formula"].tolist(), df["target"].to_numpy(np.float64)
    return formulas[:450], y[:450], formulas[450:], y[450:]


def test_targets_with_a_mass_at_zero_are_zero_inflated_automatically(expt_gap):
    Xtr, ytr, Xte, yte = expt_gap
    model = CompositionRegressor(candidates=FAST_REGRESSORS, random_state=0).fit(Xtr, ytr)
    assert model.zero_inflated_ and isinstance(model.estimator_, ZeroInflatedRegressor)
    predicted = model.predict(Xte)
    assert np.mean(predicted == 0) > 0.25  # metals predicted exactly 0, not smeared around it
    plain = CompositionRegressor(candidates=FAST_REGRESSORS, zero_inflated=False, random_state=0).fit(Xtr, ytr)
    assert not plain.zero_inflated_ and not isinstance(plain.estimator_, ZeroInflatedRegressor)
    assert mean_absolute_error(yte, predicted) < mean_absolute_error(yte, plain.predict(Xte))


def test_classifier_on_metals_probabilities_classes_and_joblib(tmp_path):
    df = load_dataset("matbench_expt_is_metal").sample(500, random_state=0)
    formulas, y = df["formula"].tolist(), df["target"].to_numpy()
    model = CompositionClassifier(candidates=FAST_CLASSIFIERS, random_state=0).fit(formulas[:400], y[:400])
    assert set(model.cv_scores_) == set(FAST_CLASSIFIERS)
    proba = model.predict_proba(formulas[400:])
    assert proba.shape == (100, 2) and np.allclose(proba.sum(axis=1), 1.0)
    np.testing.assert_array_equal(model.classes_, np.unique(y))
    assert roc_auc_score(y[400:], proba[:, 1]) > 0.85
    np.testing.assert_array_equal(model.predict(formulas[400:]), model.classes_[proba.argmax(axis=1)])
    joblib.dump(model, tmp_path / "m.joblib")
    np.testing.assert_array_equal(joblib.load(tmp_path / "m.joblib").predict_proba(formulas[400:]), proba)


def test_works_in_cross_val_score_and_as_a_matbench_estimator(steels):
    Xtr, ytr, _, _ = steels
    scores = cross_val_score(CompositionRegressor(candidates=FAST_REGRESSORS, random_state=0), Xtr, ytr,
                             cv=KFold(3, shuffle=True, random_state=0), scoring="neg_mean_absolute_error")
    assert np.all(np.isfinite(scores)) and scores.mean() < 0
    assert "composition" in ESTIMATORS
    built = ESTIMATORS["composition"]("classification", task="matbench_glass", model="default", device="cpu",
                                      random_state=0)
    assert isinstance(built.estimator, CompositionClassifier)


def test_bad_input_names_the_row_and_the_fix(steels):
    Xtr, ytr, _, _ = steels
    rows = list(Xtr[:20])
    rows[7] = "Fe2Xx3"
    with pytest.raises(FormulaError, match="Fe2Xx3.* at position 7.*Correct or drop that row") as info:
        CompositionRegressor(candidates=FAST_REGRESSORS).fit(rows, ytr[:20])
    assert "ignore_errors" not in str(info.value)  # these estimators have no ignore_errors to suggest
    with pytest.raises(ValueError, match="feature sets"):
        CompositionRegressor(candidates={"bad": (("oxidation",), Ridge())}).fit(Xtr[:20], ytr[:20])
    with pytest.raises(ValueError, match=r"\(feature sets, estimator instance\)"):
        CompositionRegressor(candidates={"bad": Ridge()}).fit(Xtr[:20], ytr[:20])
    with pytest.raises(ValueError, match="20 formulas but y has 19"):
        CompositionRegressor(candidates=FAST_REGRESSORS).fit(Xtr[:20], ytr[:19])
    with pytest.raises(NotFittedError):
        CompositionRegressor().predict(Xtr[:2])
    with pytest.raises(ValueError, match="one class"):
        CompositionClassifier(candidates=FAST_CLASSIFIERS).fit(Xtr[:20], np.ones(20))


def test_cv_settings_give_the_folds_they_name(steels):
    Xtr, ytr, _, _ = steels
    for cv, n_folds in ((None, 5), (2, 2), (KFold(4), 4)):
        model = CompositionRegressor(candidates=FAST_REGRESSORS, cv=cv, random_state=0).fit(Xtr, ytr)
        assert {len(s) for s in model.cv_scores_.values()} == {n_folds}, cv
    with pytest.raises(ValueError, match="'cv' parameter"):
        CompositionRegressor(candidates=FAST_REGRESSORS, cv=1).fit(Xtr, ytr)


def test_rows_matminer_would_read_as_another_composition_are_refused_by_row(steels):
    """skpolysrl reads adducts and tiny amounts; pymatgen (matminer's parser) reads them otherwise or not at all:
    such a row must stop the fit by name, never be featurized as another composition."""
    Xtr, ytr, _, _ = steels
    for bad in ("CuSO4·5H2O", "2NaCl", "Fe2e-9O3e-9"):
        rows = list(Xtr[:12])
        rows[4] = bad
        with pytest.raises(FormulaError, match="position 4.*matminer"):
            CompositionRegressor(candidates=FAST_REGRESSORS).fit(rows, ytr[:12])
    fitted = CompositionRegressor(candidates=FAST_REGRESSORS, random_state=0).fit(Xtr[:40], ytr[:40])
    with pytest.raises(FormulaError, match="position 1"):
        fitted.predict(["Fe2O3", "CuSO4*5H2O"])


@pytest.mark.filterwarnings("ignore:The least populated class:UserWarning")  # both provoked on purpose
@pytest.mark.filterwarnings("ignore:Only one class is present:sklearn.exceptions.UndefinedMetricWarning")
def test_every_candidate_is_scored_on_the_same_folds_and_a_fold_without_a_score_is_an_error(steels):
    Xtr, ytr, _, _ = steels
    twins = {"a": ("fractions", Ridge()), "b": ("fractions", Ridge())}
    model = CompositionRegressor(candidates=twins).fit(Xtr[:60], ytr[:60])  # random_state=None: one shuffle
    np.testing.assert_array_equal(model.cv_scores_["a"], model.cv_scores_["b"])
    labels = np.zeros(40, dtype=int)
    labels[:2] = 1  # 2 positives for 3 folds: one test fold has a single class
    with pytest.raises(ValueError, match="no finite roc_auc score"):
        CompositionClassifier(candidates=FAST_CLASSIFIERS, random_state=0).fit(Xtr[:40], labels)


def test_a_failed_refit_leaves_the_previous_fit_whole_and_scoring_is_checked_with_one_candidate(steels):
    Xtr, ytr, _, _ = steels
    model = CompositionRegressor(candidates=FAST_REGRESSORS, random_state=0).fit(Xtr[:60], ytr[:60])
    before = model.predict(Xtr[60:70])
    scores, best, extra = dict(model.cv_scores_), model.best_candidate_, model.zero_inflated_
    y = ytr[:60].copy()
    y[:30] = 0.0  # a mass at zero: this fit would switch zero-inflation on before failing in the inner CV
    with pytest.raises(ValueError, match="no finite"):
        model.set_params(cv=KFold(2, shuffle=True, random_state=0), scoring=lambda est, X, yy: np.nan)
        model.fit(Xtr[:60], y)
    assert model.best_candidate_ == best and model.zero_inflated_ == extra
    assert model.cv_scores_.keys() == scores.keys()
    np.testing.assert_array_equal(model.predict(Xtr[60:70]), before)
    with pytest.raises(ValueError, match="not a valid scoring value"):
        CompositionRegressor(candidates={"one": FAST_REGRESSORS["ridge_fractions"]},
                             scoring="mean_abs_error").fit(Xtr[:20], ytr[:20])


def test_auto_zero_inflation_needs_enough_values_above_zero(expt_gap):
    Xtr, ytr, _, _ = expt_gap
    y = np.zeros(60)
    y[:10] = ytr[ytr > 0][:10]  # 83 % zeros but only 10 values above zero
    model = CompositionRegressor(candidates=FAST_REGRESSORS, random_state=0).fit(Xtr[:60], y)
    assert not model.zero_inflated_
