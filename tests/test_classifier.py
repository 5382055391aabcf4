"""PolySRLClassifier: the probe and fine-tune protocols as a scikit-learn classifier on formulas.

Real data: the bundled matbench_expt_is_metal task (experimental metallicity) and
matbench_expt_gap binned into three classes. The scikit-learn checks that apply to formula
input, and why the others do not: ``formula_estimator_checks.py``.
"""

import pickle

import joblib
import numpy as np
import pytest
import sklearn.utils.estimator_checks as ec
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import cross_val_score
from sklearn.pipeline import Pipeline

from formula_estimator_checks import CLASSIFIER_CHECKS, FORMULA_ESTIMATOR_CHECKS
from skpolysrl import FormulaError, PolySRLClassifier, PolySRLFeaturizer
from skpolysrl.datasets import load_dataset

APPLICABLE_CHECKS = FORMULA_ESTIMATOR_CHECKS + CLASSIFIER_CHECKS

FAST = dict(epochs=30, random_state=0)


@pytest.mark.parametrize("check", APPLICABLE_CHECKS)
def test_sklearn_checks_that_apply(check):
    getattr(ec, check)("PolySRLClassifier", PolySRLClassifier(**FAST))


@pytest.fixture(scope="module")
def metal():
    """600 formulas of matbench_expt_is_metal (1 = metal): 400 to train, 200 held out."""
    sub = load_dataset("matbench_expt_is_metal").sample(600, random_state=0)
    return sub["formula"].tolist(), sub["target"].to_numpy()


@pytest.fixture(scope="module")
def fitted(metal):
    X, y = metal
    return PolySRLClassifier(**FAST).fit(X[:400], y[:400])


def test_probe_learns_metallicity_far_above_a_shuffled_label_control(metal, fitted):
    X, y = metal
    proba = fitted.predict_proba(X[400:])
    assert proba.shape == (200, 2) and np.allclose(proba.sum(axis=1), 1)
    auc = roc_auc_score(y[400:], proba[:, 1])
    shuffled = np.random.default_rng(0).permutation(y[:400])
    control = roc_auc_score(y[400:], PolySRLClassifier(**FAST).fit(X[:400], shuffled).predict_proba(X[400:])[:, 1])
    assert auc > 0.85 and auc - control > 0.25, (auc, control)
    np.testing.assert_array_equal(fitted.classes_, [0.0, 1.0])
    assert set(fitted.predict(X[400:])) <= {0.0, 1.0}
    assert fitted.score(X[400:], y[400:]) > max(y[400:].mean(), 1 - y[400:].mean())  # beats the majority class
    assert fitted.n_features_in_ == 1 and fitted.lr_ == 1e-3


def test_string_labels_multiclass_and_ensemble_average():
    df = load_dataset("matbench_expt_gap").sample(500, random_state=1)
    labels = np.select([df["target"] == 0, df["target"] < 2.0], ["metal", "narrow gap"], "wide gap")
    X = df["formula"].tolist()
    clf = PolySRLClassifier(n_estimators=2, **FAST).fit(X[:400], labels[:400])
    np.testing.assert_array_equal(clf.classes_, ["metal", "narrow gap", "wide gap"])
    proba = clf.predict_proba(X[400:])
    assert proba.shape == (100, 3) and np.allclose(proba.sum(axis=1), 1)
    pred = clf.predict(X[400:])
    assert pred.dtype.kind == "U" and set(pred) <= set(clf.classes_)
    majority = max(np.mean(labels[400:] == c) for c in clf.classes_)
    assert np.mean(pred == labels[400:]) > majority + 0.1
    features = PolySRLFeaturizer(verbose=False).transform(X[400:])  # the same frozen default encoder
    members = [head.predict_proba(features) for head in clf.estimators_]
    np.testing.assert_allclose(proba, np.mean(members, axis=0), rtol=1e-6, atol=1e-9)
    assert not np.allclose(members[0], members[1]), "members are seeded differently"


def test_deterministic_invariant_and_joblib_round_trip(metal, fitted, tmp_path):
    X, y = metal
    before = fitted.get_params()
    again = clone(fitted).fit(X[:400], y[:400])
    assert again.get_params() == before
    full = fitted.predict_proba(X[400:])
    np.testing.assert_array_equal(again.predict_proba(X[400:]), full)
    order = np.random.default_rng(0).permutation(200)
    np.testing.assert_allclose(fitted.predict_proba([X[400 + i] for i in order]), full[order], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(fitted.predict_proba(X[410:420]), full[10:20], rtol=1e-6, atol=1e-7)
    joblib.dump(fitted, tmp_path / "clf.joblib")
    np.testing.assert_array_equal(joblib.load(tmp_path / "clf.joblib").predict_proba(X[400:]), full)
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(fitted)).predict(X[400:]), fitted.predict(X[400:]))


def test_pipeline_and_cross_val_score_roc_auc(metal):
    X, y = metal
    scores = cross_val_score(Pipeline([("clf", PolySRLClassifier(**FAST))]), X[:300], y[:300], cv=3,
                             scoring="roc_auc")
    assert len(scores) == 3 and np.all(scores > 0.75), scores


def test_bad_labels_and_formulas_are_typed_errors_naming_the_row(metal, fitted):
    X, y = metal
    with pytest.raises(NotFittedError):
        PolySRLClassifier().predict_proba(["NaCl"])
    with pytest.raises(ValueError, match="empty"):
        PolySRLClassifier(**FAST).fit([], [])
    with pytest.raises(ValueError, match="400 formulas but y has 399"):
        PolySRLClassifier(**FAST).fit(X[:400], y[:399])
    with pytest.raises(ValueError, match=r"row 1, value None"):
        PolySRLClassifier(**FAST).fit(["NaCl", "Cu", "GaAs"], np.array(["insulator", None, "metal"], dtype=object))
    with pytest.raises(ValueError, match=r"row 2"):
        PolySRLClassifier(**FAST).fit(["NaCl", "Cu", "GaAs"], [0.0, 1.0, np.nan])
    with pytest.raises(ValueError, match="Unknown label type"):
        PolySRLClassifier(**FAST).fit(X[:20], np.linspace(0, 1, 20))  # a continuous target
    with pytest.raises(ValueError, match="at least 2 classes"):
        PolySRLClassifier(**FAST).fit(X[:20], np.ones(20))
    with pytest.raises(FormulaError, match="'Xx2O' at position 1"):
        PolySRLClassifier(**FAST).fit(["NaCl", "Xx2O"], [0, 1])
    with pytest.raises(FormulaError, match="position 1"):
        fitted.predict_proba(["NaCl", "not a formula"])
    lenient = clone(fitted).set_params(ignore_errors=True).fit(X[:400], y[:400])
    proba = lenient.predict_proba(["NaCl", "not a formula", "Cu"])
    assert np.isnan(proba[1]).all() and np.isfinite(proba[[0, 2]]).all()
    pred = lenient.predict(["NaCl", "not a formula", "Cu"])
    assert np.isnan(pred[1]) and pred[2] == 1.0  # copper is a metal
    strings = PolySRLClassifier(ignore_errors=True, **FAST).fit(X[:200], np.where(y[:200] == 1, "metal", "non"))
    pred = strings.predict(["Cu", "Xx"])
    assert pred.dtype == object and pred[0] == "metal" and pred[1] != pred[1]  # NaN


def test_class_weight_favours_the_rare_class(metal):
    X, y = metal
    # few metals in training: balanced weights make the head call more formulas metals
    train = np.flatnonzero(y[:400] == 0).tolist() + np.flatnonzero(y[:400] == 1)[:40].tolist()
    Xt, yt = [X[i] for i in train], y[train]
    plain = PolySRLClassifier(**FAST).fit(Xt, yt)
    balanced = PolySRLClassifier(class_weight="balanced", **FAST).fit(Xt, yt)
    assert balanced.class_weight_[1] > 1 > balanced.class_weight_[0] and plain.class_weight_ is None
    assert (balanced.predict(X[400:]) == 1).sum() > (plain.predict(X[400:]) == 1).sum()
    by_label = PolySRLClassifier(class_weight={1.0: 5.0}, **FAST).fit(Xt, yt)
    assert by_label.class_weight_ == {0: 1.0, 1: 5.0}


def test_finetune_chooses_lr_on_validation_and_round_trips(metal, tmp_path):
    X, y = metal
    clf = PolySRLClassifier(finetune=True, epochs=2, lr_grid=(1e-4, 1e-3), random_state=0).fit(X[:150], y[:150])
    assert set(clf.validation_log_loss_) == {1e-4, 1e-3}
    assert clf.lr_ == min(clf.validation_log_loss_, key=clf.validation_log_loss_.get)
    proba = clf.predict_proba(X[400:])
    assert np.isfinite(proba).all() and np.allclose(proba.sum(axis=1), 1)
    assert roc_auc_score(y[400:], proba[:, 1]) > 0.6  # two epochs on 150 formulas already learn something
    joblib.dump(clf, tmp_path / "ft.joblib")
    np.testing.assert_array_equal(joblib.load(tmp_path / "ft.joblib").predict_proba(X[400:]), proba)
