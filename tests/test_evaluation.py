"""The probe protocol (skpolysrl.evaluation) on real data: Magpie features of real band gaps."""

import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.dummy import DummyRegressor
from sklearn.ensemble import RandomForestRegressor
from sklearn.metrics import mean_absolute_error
from sklearn.model_selection import KFold, train_test_split
from sklearn.utils.estimator_checks import parametrize_with_checks

from skpolysrl import PolySRLFeaturizer
from skpolysrl.evaluation import MLPHeadClassifier, MLPHeadRegressor, cross_validate_probe

torch.set_num_threads(1)

N_ROWS = 300


@pytest.fixture(scope="module")
def magpie_band_gap(band_gap):
    """Magpie features (DataFrame) and targets of 300 random real band-gap formulas."""
    from matminer.featurizers.composition import ElementProperty
    from pymatgen.core import Composition

    subset = band_gap.sample(n=N_ROWS, random_state=0)
    featurizer = ElementProperty.from_preset("magpie")
    featurizer.set_n_jobs(1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # matminer's "impute_nan" notice
        rows = featurizer.featurize_many([Composition(f) for f in subset["formula"]], pbar=False)
    X = pd.DataFrame(rows, columns=featurizer.feature_labels(), index=subset.index)
    assert X.shape == (N_ROWS, 132) and np.isfinite(X.to_numpy()).all()
    return X, subset["target"].to_numpy()


def test_head_beats_predicting_the_mean(magpie_band_gap):
    X, y = magpie_band_gap
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.25, random_state=0)
    head = MLPHeadRegressor(random_state=0).fit(X_train, y_train)
    mae_head = mean_absolute_error(y_test, head.predict(X_test))
    mae_mean = mean_absolute_error(y_test, DummyRegressor().fit(X_train, y_train).predict(X_test))
    assert mae_head < 0.7 * mae_mean, (mae_head, mae_mean)
    assert len(head.loss_curve_) == head.n_iter_ == 300
    assert head.loss_curve_[-1] < 0.5 * head.loss_curve_[0]
    assert head.n_features_in_ == 132
    assert list(head.feature_names_in_) == list(X.columns)


def test_same_random_state_gives_identical_predictions(magpie_band_gap):
    X, y = magpie_band_gap
    X = X.to_numpy()
    rng_before = torch.get_rng_state()
    a = MLPHeadRegressor(epochs=30, random_state=7).fit(X, y).predict(X)
    b = MLPHeadRegressor(epochs=30, random_state=7).fit(X, y).predict(X)
    c = MLPHeadRegressor(epochs=30, random_state=8).fit(X, y).predict(X)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert torch.equal(torch.get_rng_state(), rng_before)  # seeding is local


def test_predictions_do_not_blow_up_on_unseen_values_of_near_constant_columns():
    # The real case: Magpie "mode GSmagmom" is ~0 for almost every band-gap formula.
    from matminer.featurizers.composition import ElementProperty
    from pymatgen.core import Composition

    featurizer = ElementProperty.from_preset("magpie")
    featurizer.set_n_jobs(1)
    formulas = ["NaCl", "GaAs", "SiO2", "TiO2", "ZnO", "MgO", "TiC0.9", "FeSc2", "CdS", "AlN", "Fe2TiSi"]
    X = np.array(featurizer.featurize_many([Composition(f) for f in formulas], pbar=False))
    y = np.array([8.5, 1.4, 9.0, 3.0, 3.3, 7.8, 0.3, 0.1, 2.4, 6.0, 0.4])
    head = MLPHeadRegressor(epochs=50, random_state=0).fit(X[:-1], y[:-1])
    assert abs(head.predict(X[-1:])[0]) < 20  # Fe2TiSi's GSmagmom mode is 1e5 training stds away
    wild = MLPHeadRegressor(epochs=50, random_state=0, clip_inputs=False).fit(X[:-1], y[:-1])
    assert abs(wild.predict(X[-1:])[0]) > abs(head.predict(X[-1:])[0])


def test_standardize_false_and_full_batch_train():
    rng = np.random.RandomState(0)
    X = rng.normal(size=(120, 3))
    X = np.c_[X, np.full(120, 5.0)]  # a constant column: scale 1, not a division by zero
    y = X[:, 0] - 2 * X[:, 1]
    for params in ({"standardize": False}, {"batch_size": None}):
        head = MLPHeadRegressor(epochs=200, random_state=0, **params).fit(X, y)
        assert mean_absolute_error(y, head.predict(X)) < 0.3 * np.mean(np.abs(y - y.mean()))
    assert head.scale_[-1] == 1.0


def test_cross_validate_probe_folds_and_summary(magpie_band_gap):
    X, y = magpie_band_gap
    result = cross_validate_probe(X, y, estimator=MLPHeadRegressor(epochs=60, random_state=0))
    assert set(result) == {"mae_mean", "mae_std", "r2_mean", "r2_std", "folds"}
    assert len(result["folds"]) == 5
    mae = np.array([f["mae"] for f in result["folds"]])
    r2 = np.array([f["r2"] for f in result["folds"]])
    assert result["mae_mean"] == pytest.approx(mae.mean())
    assert result["mae_std"] == pytest.approx(mae.std(ddof=0))
    assert result["r2_mean"] == pytest.approx(r2.mean())
    assert result["r2_std"] == pytest.approx(r2.std(ddof=0))
    assert all(isinstance(v, float) for f in result["folds"] for v in f.values())
    # every fold is a held-out KFold(5, shuffle=True, random_state=0) split, scored like this:
    train, test = next(KFold(5, shuffle=True, random_state=0).split(X))
    head = MLPHeadRegressor(epochs=60, random_state=0).fit(X.iloc[train], y[train])
    assert result["folds"][0]["mae"] == pytest.approx(mean_absolute_error(y[test], head.predict(X.iloc[test])))
    # the probe learns something on every fold
    baseline = np.mean(np.abs(y - y.mean()))
    assert mae.max() < baseline and r2.min() > 0
    # same seed, same scores (and an ndarray / list gives what the DataFrame gave, up to rounding)
    again = cross_validate_probe(X, y, estimator=MLPHeadRegressor(epochs=60, random_state=0))
    assert again["folds"] == result["folds"]
    as_array = cross_validate_probe(X.to_numpy(), list(y), estimator=MLPHeadRegressor(epochs=60, random_state=0))
    assert as_array["mae_mean"] == pytest.approx(result["mae_mean"], rel=1e-9)


def test_cross_validate_probe_accepts_any_regressor(magpie_band_gap):
    X, y = magpie_band_gap
    rf = cross_validate_probe(X, y, estimator=RandomForestRegressor(n_estimators=20, random_state=0, n_jobs=1))
    dummy = cross_validate_probe(X, y, estimator=DummyRegressor())
    assert len(rf["folds"]) == 5
    assert rf["mae_mean"] < 0.8 * dummy["mae_mean"]
    assert dummy["r2_mean"] <= 0.0 + 1e-9
    three = cross_validate_probe(X, y, estimator=DummyRegressor(), n_splits=3, seed=1)
    assert len(three["folds"]) == 3


def test_cross_validate_probe_rejects_mismatched_lengths(magpie_band_gap):
    X, y = magpie_band_gap
    with pytest.raises(ValueError, match="different numbers of rows"):
        cross_validate_probe(X, y[:-1])


def test_nan_input_raises_value_error():
    # Real NaN rows: formulas a featurizer could not parse, with ignore_errors=True.
    formulas = ["NaCl", "GaAs", "Xx2", "SiO2", "TiO2", "ZnO"]
    X = PolySRLFeaturizer(pretrained=None, random_state=0, verbose=False, ignore_errors=True,
                          device="cpu").fit(formulas).transform(formulas)
    assert np.isnan(X[2]).all()
    y = np.array([8.5, 1.4, 0.0, 9.0, 3.0, 3.3])
    with pytest.raises(ValueError, match=r"NaN in 1 of 6 rows \(first: row 2\)"):
        MLPHeadRegressor(epochs=2).fit(X, y)
    ok = np.delete(np.arange(6), 2)
    head = MLPHeadRegressor(epochs=2, random_state=0).fit(X[ok], y[ok])
    with pytest.raises(ValueError, match="NaN"):
        head.predict(X)
    with pytest.raises(ValueError, match="NaN"):
        cross_validate_probe(X, y, estimator=MLPHeadRegressor(epochs=2))
    X_inf = X[ok].copy()
    X_inf[0, 0] = np.inf
    with pytest.raises(ValueError, match="infinity"):
        head.predict(X_inf)
    with pytest.raises(ValueError, match="y"):
        MLPHeadRegressor(epochs=2).fit(X[ok], np.array([1.0, np.nan, 2.0, 3.0, 4.0]))


@parametrize_with_checks([MLPHeadRegressor(epochs=5), MLPHeadClassifier(epochs=100, random_state=0)])
def test_sklearn_compatible_estimator(estimator, check):
    name = getattr(check, "func", check).__name__
    if name == "check_array_api_input":
        pytest.skip("array-API dispatch does not apply: the head computes in torch on NumPy input")
    check(estimator)
