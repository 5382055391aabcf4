"""Conformal intervals (MAPIE) around skpolysrl regressors hold their coverage on held-out band gaps."""

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from skpolysrl import PolySRLFeaturizer, PolySRLRegressor, ZeroInflatedRegressor
from skpolysrl.datasets import load_dataset
from skpolysrl.intervals import conformal_regressor, interval_scores

LEVELS = (0.68, 0.95)


@pytest.fixture(scope="module")
def band_gap_split():
    """The paper's band gap set as one column of formulas: 40 % fit, 30 % calibration, 30 % test."""
    df = load_dataset("band_gap")
    X, y = df[["formula"]], df["target"].to_numpy(np.float64)
    fit, rest = train_test_split(np.arange(len(y)), test_size=0.6, random_state=0)
    cal, test = train_test_split(rest, test_size=0.5, random_state=0)
    return X, y, fit, cal, test


@pytest.fixture(scope="module")
def ensemble(band_gap_split):
    X, y, fit, _, _ = band_gap_split
    # short training keeps the test fast on a busy CPU; the benchmark measures the default (300 epochs).
    # Three members: with two, the std is so noisy that rho(width, |err|) was 0.14 on one CPU and above 0.2
    # on another; three gave 0.234 (the benchmark's five members at 300 epochs: 0.42)
    return PolySRLRegressor(n_estimators=3, epochs=30, device="cpu", random_state=0).fit(X.iloc[fit], y[fit])


def _assert_coverage_near_nominal(scores, tolerance=0.06):
    for level in LEVELS:
        assert abs(scores[f"coverage_{level:g}"] - level) < tolerance, scores


def test_calibrated_std_covers_and_adapts_to_each_formula(band_gap_split, ensemble):
    X, y, _, cal, test = band_gap_split
    model = conformal_regressor(ensemble, LEVELS, conformity_score="std", prefit=True)
    model.conformalize(X.iloc[cal], y[cal])
    pred, intervals = model.predict_interval(X.iloc[test])
    assert intervals.shape == (len(test), 2, 2)
    np.testing.assert_allclose(pred, ensemble.predict(X.iloc[test]))  # prefit: the model is not refitted
    _, std = ensemble.predict(X.iloc[test], return_std=True)
    scores = interval_scores(y[test], pred, intervals, LEVELS, std)
    _assert_coverage_near_nominal(scores)
    # the calibration is a scale factor on the model's std: half-width / std is one number per level
    for k in range(2):
        ratio = (intervals[:, 1, k] - intervals[:, 0, k]) / 2 / std
        np.testing.assert_allclose(ratio, ratio[0], rtol=1e-6)
    half_68, half_95 = ((intervals[:, 1, k] - intervals[:, 0, k]) / 2 / std for k in range(2))
    assert half_95[0] > half_68[0]
    # wider where the ensemble is less sure, and the errors agree
    assert scores["rho_width_0.95"] > 0.15 and scores["rho_std"] == pytest.approx(scores["rho_width_0.95"], abs=1e-9)
    # uncalibrated +/- 1 std from return_std misses the 68 % target: the reason to calibrate
    raw = np.stack([pred - std, pred + std], axis=1)
    assert interval_scores(y[test], pred, raw, 0.68)["coverage_0.68"] < 0.68 - 0.06


def test_split_conformal_fits_a_clone_and_absolute_intervals_have_one_width(band_gap_split):
    X, y, fit, cal, test = band_gap_split
    estimator = make_pipeline(PolySRLFeaturizer(verbose=False, device="cpu"), Ridge())  # formulas in
    model = conformal_regressor(estimator, 0.9).fit(X.iloc[fit], y[fit]).conformalize(X.iloc[cal], y[cal])
    pred, intervals = model.predict_interval(X.iloc[test])
    assert not hasattr(estimator[-1], "coef_")
    width = intervals[:, 1, 0] - intervals[:, 0, 0]
    np.testing.assert_allclose(width, width[0])
    scores = interval_scores(y[test], pred, intervals, 0.9)
    assert abs(scores["coverage_0.9"] - 0.9) < 0.06
    assert np.isnan(scores["rho_width_0.9"])  # a constant width ranks no error
    # a zero-inflated model over formula pipelines, already fitted, calibrated on its mixture std
    zi = ZeroInflatedRegressor(make_pipeline(PolySRLFeaturizer(verbose=False, device="cpu"),
                                             StandardScaler(), LogisticRegression(max_iter=1000)), estimator)
    zi.fit(X.iloc[fit], y[fit] - 1.0)  # shifted: a quarter of the band gaps at or below 0
    model = conformal_regressor(zi, 0.9, conformity_score="std", prefit=True).conformalize(X.iloc[cal], y[cal] - 1.0)
    pred, intervals = model.predict_interval(X.iloc[test])
    assert abs(interval_scores(y[test] - 1.0, pred, intervals, 0.9)["coverage_0.9"] - 0.9) < 0.06


def test_cross_conformal_on_features_and_a_zero_inflated_model():
    df = load_dataset("matbench_expt_gap")
    X = PolySRLFeaturizer(verbose=False, device="cpu").transform(df["formula"].tolist()).astype(np.float64)
    y = df["target"].to_numpy(np.float64)
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.25, random_state=0)
    zi = ZeroInflatedRegressor(make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)), Ridge())
    model = conformal_regressor(zi, LEVELS, cv=5, random_state=0).fit_conformalize(Xtr, ytr)
    pred, intervals = model.predict_interval(Xte)
    scores = interval_scores(yte, pred, intervals, LEVELS)
    _assert_coverage_near_nominal(scores)
    assert scores["width_0.95"] > scores["width_0.68"] > 0


def test_interval_scores_counts_what_is_inside():
    y = np.array([0.0, 1.0, 2.0, 3.0])
    intervals = np.array([[-1, 1], [0.5, 0.9], [1.5, 2.5], [3.5, 4.0]], dtype=float)
    scores = interval_scores(y, y + 0.1, intervals, 0.5)
    assert scores["coverage_0.5"] == 0.5
    assert scores["width_0.5"] == pytest.approx(np.mean([2, 0.4, 1, 0.5]))
    assert scores["mae"] == pytest.approx(0.1)
    with pytest.raises(ValueError, match="intervals hold 1 levels but confidence_level names 2"):
        interval_scores(y, y, intervals, (0.5, 0.9))


def test_errors_name_the_fix():
    with pytest.raises(ValueError, match="conformity_score='residual'.*absolute"):
        conformal_regressor(Ridge(), conformity_score="residual")
    with pytest.raises(ValueError, match="prefit=True applies to split conformal"):
        conformal_regressor(Ridge(), cv=5, prefit=True)
