"""PolySRLRegressor: the probe and fine-tune protocols as a scikit-learn regressor on formulas.

The scikit-learn checks that apply to formula input, and why the others do not:
``formula_estimator_checks.py``.
"""

import pickle

import joblib
import numpy as np
import pytest
import sklearn.utils.estimator_checks as ec
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.model_selection import GridSearchCV, cross_val_score
from sklearn.pipeline import Pipeline

from formula_estimator_checks import FORMULA_ESTIMATOR_CHECKS
from skpolysrl import FormulaError, PolySRLFeaturizer, PolySRLRegressor

APPLICABLE_CHECKS = FORMULA_ESTIMATOR_CHECKS

FAST = dict(epochs=30, random_state=0)


@pytest.mark.parametrize("check", APPLICABLE_CHECKS)
def test_sklearn_checks_that_apply(check):
    getattr(ec, check)("PolySRLRegressor", PolySRLRegressor(**FAST))


@pytest.fixture(scope="module")
def data(band_gap):
    sub = band_gap.sample(300, random_state=0)
    return sub["formula"].tolist(), sub["target"].to_numpy()


def test_probe_fits_predicts_and_scores(data):
    X, y = data
    reg = PolySRLRegressor(**FAST)
    assert reg.fit(X[:240], y[:240]) is reg
    pred = reg.predict(X[240:])
    assert pred.shape == (60,) and np.isfinite(pred).all()
    # better than predicting the training mean on held-out formulas
    assert np.abs(pred - y[240:]).mean() < np.abs(y[:240].mean() - y[240:]).mean()
    assert reg.score(X[240:], y[240:]) > 0
    assert reg.n_features_in_ == 1 and reg.lr_ == 1e-3


def test_fit_is_idempotent_and_deterministic(data):
    X, y = data
    reg = PolySRLRegressor(**FAST)
    a = reg.fit(X, y).predict(X[:20])
    b = reg.fit(X, y).predict(X[:20])
    c = clone(reg).fit(X, y).predict(X[:20])
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, c)


def test_predictions_do_not_depend_on_row_order_or_subset(data):
    X, y = data
    reg = PolySRLRegressor(**FAST).fit(X, y)
    full = reg.predict(X)
    order = np.random.default_rng(0).permutation(len(X))
    np.testing.assert_allclose(reg.predict([X[i] for i in order]), full[order], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(reg.predict(X[10:20]), full[10:20], rtol=1e-6, atol=1e-6)


def test_params_untouched_and_pickle_round_trip(data, tmp_path):
    X, y = data
    reg = PolySRLRegressor(n_estimators=2, **FAST)
    before = reg.get_params()
    reg.fit(X, y)
    assert reg.get_params() == before
    pred, std = reg.predict(X[:15], return_std=True)
    path = tmp_path / "reg.joblib"
    joblib.dump(reg, path)
    loaded = joblib.load(path)
    np.testing.assert_array_equal(loaded.predict(X[:15]), pred)
    np.testing.assert_allclose(loaded.predict(X[:15], return_std=True)[1], std)
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(reg)).predict(X[:15]), pred)


def test_return_std_combines_ensemble_and_representation(data):
    X, y = data
    one = PolySRLRegressor(n_estimators=1, **FAST).fit(X, y)
    three = PolySRLRegressor(n_estimators=3, **FAST).fit(X, y)
    _, s1 = one.predict(X[:40], return_std=True)
    p3, s3 = three.predict(X[:40], return_std=True)
    assert (s1 > 0).all() and np.isfinite(s1).all(), "the representation's variance alone gives a spread"
    features = PolySRLFeaturizer(verbose=False).transform(X[:40])  # the same frozen default encoder
    members = np.stack([h.predict(features) for h in three.estimators_])
    np.testing.assert_allclose(p3, members.mean(axis=0), rtol=1e-6, atol=1e-9)
    assert (s3**2 >= members.var(axis=0) - 1e-9).all(), "std includes the ensemble spread"


def test_errors_are_clear(data):
    X, y = data
    with pytest.raises(NotFittedError):
        PolySRLRegressor().predict(["NaCl"])
    with pytest.raises(ValueError, match="empty"):
        PolySRLRegressor(**FAST).fit([], [])
    with pytest.raises(ValueError, match="300 formulas but y has 299"):
        PolySRLRegressor(**FAST).fit(X, y[:-1])
    with pytest.raises(ValueError, match="NaN"):
        PolySRLRegressor(**FAST).fit(X[:3], [1.0, np.nan, 2.0])
    with pytest.raises(FormulaError, match="Xx2O.*Correct or drop that row") as info:
        PolySRLRegressor(ignore_errors=True, **FAST).fit(["NaCl", "Xx2O"], [1.0, 2.0])
    assert "ignore_errors" not in str(info.value)  # fit trains on every row: skipping is not the fix there
    reg = PolySRLRegressor(ignore_errors=True, **FAST).fit(X, y)
    pred = reg.predict(["NaCl", "not a formula", "GaAs"])
    assert np.isnan(pred[1]) and np.isfinite(pred[[0, 2]]).all()
    with pytest.raises(FormulaError, match="position 1.*ignore_errors=True"):  # predict can skip rows
        reg.set_params(ignore_errors=False).predict(["NaCl", "not a formula"])


def test_in_pipeline_cross_val_score_and_grid_search(data):
    X, y = data
    scores = cross_val_score(PolySRLRegressor(**FAST), X, y, cv=3, scoring="neg_mean_absolute_error")
    assert len(scores) == 3 and np.all(-scores < 1.5)
    grid = GridSearchCV(Pipeline([("reg", PolySRLRegressor(**FAST))]), {"reg__hidden_dim": [16, 64]}, cv=2,
                        scoring="neg_mean_absolute_error").fit(X, y)
    assert grid.best_params_["reg__hidden_dim"] in (16, 64)


def test_finetune_chooses_lr_on_validation_and_changes_the_encoder(data, tmp_path):
    X, y = data
    reg = PolySRLRegressor(finetune=True, epochs=2, lr_grid=(1e-4, 1e-3), random_state=0).fit(X[:150], y[:150])
    assert set(reg.validation_mae_) == {1e-4, 1e-3}
    assert reg.lr_ == min(reg.validation_mae_, key=reg.validation_mae_.get)
    pred, std = reg.predict(X[200:], return_std=True)
    assert np.isfinite(pred).all() and (std > 0).all()
    probe = PolySRLRegressor(**FAST).fit(X[:200], y[:200])
    tuned_encoder = reg.estimators_[0]["encoder"]["state_dict"]
    frozen_encoder = probe.encoder_["state_dict"]
    changed = [k for k in frozen_encoder if not np.allclose(frozen_encoder[k].numpy(), tuned_encoder[k].numpy())]
    assert changed, "fine-tuning must train the encoder"
    joblib.dump(reg, tmp_path / "ft.joblib")
    np.testing.assert_array_equal(joblib.load(tmp_path / "ft.joblib").predict(X[200:]), pred)


def test_rand_init_and_model_file(data, model_path):
    X, y = data
    rand = PolySRLRegressor(pretrained=None, **FAST).fit(X, y)
    own = PolySRLRegressor(pretrained=str(model_path), **FAST).fit(X, y)
    assert not np.allclose(rand.predict(X[:10]), own.predict(X[:10]))
