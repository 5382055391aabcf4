"""The paper's protocols: CV, target scalings, x10 reporting, ESTM windows and ZT, on hand-checked values."""

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import Ridge

from skpolysrl.cli import main
from skpolysrl.datasets import DATASETS, load_dataset, load_matbench, load_mp_property, load_table
from skpolysrl.model_selection import (
    ESTM_WINDOWS, MATBENCH_SEED, cross_validate, figure_of_merit, log_scale, matbench_kfold, minmax_scale,
    paper_kfold, screen_zt, select_temperature_window, undo_log_scale, undo_minmax_scale, zt_from_scaled,
)


def test_figure_of_merit_by_hand():
    # Bi2Te3-like: S = 200 uV/K, sigma = 1e5 S/m, kappa = 1.5 W/(m K), T = 300 K
    # ZT = (2e-4)^2 * 1e5 * 300 / 1.5 = 4e-8 * 1e5 * 200 = 0.8
    assert figure_of_merit(200, 1e5, 1.5, 300, seebeck_unit="uV/K") == pytest.approx(0.8)
    assert figure_of_merit(2e-4, 1e5, 1.5, 300) == pytest.approx(0.8)
    np.testing.assert_allclose(figure_of_merit([1e-4, -2e-4], [1e4, 1e4], [1.0, 2.0], [600, 300]),
                               [1e-8 * 1e4 * 600, 4e-8 * 1e4 * 300 / 2])
    with pytest.raises(ValueError, match="positive"):
        figure_of_merit(1e-4, 1e4, 0.0, 300)


def test_scalings_round_trip_and_zt_from_scaled():
    sigma = np.array([1e2, 1e4, 1e6])
    np.testing.assert_allclose(log_scale(sigma), [2, 4, 6])
    np.testing.assert_allclose(undo_log_scale(log_scale(sigma)), sigma)
    seebeck = np.array([-100e-6, 50e-6, 300e-6])
    scaled, rng = minmax_scale(seebeck)
    np.testing.assert_allclose(scaled, [0, 150 / 400, 1])
    assert rng == pytest.approx((-100e-6, 300e-6))
    np.testing.assert_allclose(undo_minmax_scale(scaled, rng), seebeck)
    # predictions on the paper's scales -> ZT after undoing them
    zt = zt_from_scaled(scaled, log_scale(sigma), log_scale([1.0, 2.0, 1.5]), 300, rng)
    np.testing.assert_allclose(zt, figure_of_merit(seebeck, sigma, [1.0, 2.0, 1.5], 300))
    with pytest.raises(ValueError, match="positive"):
        log_scale([1.0, 0.0])


def test_screen_zt_ranks_candidates():
    hits = screen_zt(["A", "B", "C", "D"], [0.5, 1.2, 2.0, 1.0], threshold=1.0)
    assert hits["formula"].tolist() == ["C", "B", "D"] and hits["rank"].tolist() == [1, 2, 3]


def test_temperature_windows():
    df = pd.DataFrame({"T": [290, 295, 300, 305, 306, 593, 600, 608, 610]})
    assert select_temperature_window(df, "T", ESTM_WINDOWS["300K"])["T"].tolist() == [295, 300, 305]
    assert select_temperature_window(df, "T", ESTM_WINDOWS["600K"])["T"].tolist() == [593, 600, 608]


def test_cross_validate_folds_transforms_and_report_scale():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(100, 3))
    y = np.exp(X @ [1.0, -0.5, 0.2])  # positive, skewed: a log target
    res = cross_validate(Ridge(1e-6), X, y, target_transform="log", report_scale=10, return_predictions=True)
    assert len(res["folds"]) == 5 and res["report_scale"] == 10
    # log10(y) is linear in X, so the scaled MAE is ~0 and the original-unit MAE too
    assert res["mae_mean"] < 1e-4 and res["mae_original_mean"] < 1e-3
    maes = [f["mae"] for f in res["folds"]]
    assert res["mae_mean"] == pytest.approx(np.mean(maes)) and res["mae_std"] == pytest.approx(np.std(maes))
    np.testing.assert_allclose(res["predictions"], y, rtol=1e-3)
    # the paper's split is KFold(5, shuffle=True, random_state=0)
    split = [t.tolist() for _, t in paper_kfold().split(X)]
    assert [f["n_test"] for f in res["folds"]] == [len(t) for t in split]
    # x10 multiplies MAE, not R2
    plain = cross_validate(Ridge(1.0), X, np.log10(y))
    ten = cross_validate(Ridge(1.0), X, np.log10(y), report_scale=10)
    assert ten["mae_mean"] == pytest.approx(10 * plain["mae_mean"]) and ten["r2_mean"] == plain["r2_mean"]
    some = cross_validate(Ridge(1.0), X, y, folds=[1, 3])
    assert [f["fold"] for f in some["folds"]] == [1, 3]


def test_matbench_folds_are_matbench_s():
    assert matbench_kfold().random_state == MATBENCH_SEED == 18012019 and matbench_kfold().shuffle


def test_bundled_datasets():
    sizes = {"band_gap": 2482, "matbench_expt_gap": 4604, "matbench_expt_is_metal": 4921, "matbench_glass": 5680,
             "matbench_steels_yield": 312, "mp_band_gap": 5470, "mp_formation_energy": 5657}
    for name in DATASETS:
        df = load_dataset(name)
        assert list(df.columns[:2]) == ["formula", "target"] and len(df) == sizes[name], name
        assert df["target"].notna().all()
    assert load_matbench("matbench_expt_gap").equals(load_matbench("expt_gap"))
    assert load_mp_property("formation_energy")["target"].lt(0).mean() > 0.8  # mostly stable compounds
    with pytest.raises(ValueError, match="bundled tasks"):
        load_matbench("castelli")


def test_load_table_user_file(tmp_path):
    path = tmp_path / "estm.xlsx"
    pd.DataFrame({"Formula": ["Bi2Te3", "Bi2Te3", "PbTe", "SnSe", None],
                  "sigma": [1e5, 2e5, 5e4, "n/a", 3.0],
                  "T": [300, 300, 600, 300, 300]}).to_excel(path, index=False)
    with pytest.warns(UserWarning, match="dropped 2 of"):
        df = load_table(path, "Formula", "sigma", temperature_col="T", temperature_window=(295, 305))
    assert df["formula"].tolist() == ["Bi2Te3", "Bi2Te3"]
    with pytest.warns(UserWarning):
        avg = load_table(path, "Formula", "sigma", average_duplicates=True)
    assert avg.set_index("formula").loc["Bi2Te3", "target"] == pytest.approx(1.5e5)
    with pytest.raises(KeyError, match="its columns are"):
        load_table(path, "formula", "sigma")


def test_mp_property_from_a_full_file(tmp_path):
    path = tmp_path / "mp_gap.csv"
    pd.DataFrame({"formula": ["Fe2O3", "Fe4O6", "NaCl"], "target": [2.0, 1.0, 5.0]}).to_csv(path, index=False)
    df = load_mp_property("band_gap", path=path)
    assert dict(zip(df.formula, df.target)) == {"Fe2O3": 1.5, "NaCl": 5.0}  # polymorphs averaged per formula


def test_cli_evaluate_bundled_and_user_table(tmp_path, band_gap):
    out = tmp_path / "res.json"
    assert main(["evaluate", "--dataset", "band_gap", "--model", "default", "--protocol", "probe", "--folds", "2",
                 "--epochs", "20", "--quiet", "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    for key in ("mae_mean", "mae_std", "r2_mean", "folds", "mae_original_mean"):
        assert key in res
    assert len(res["folds"]) == 2 and res["n_samples"] == 2482 and res["seed"] == 0
    assert 0.2 < res["mae_mean"] < 1.0
    table = tmp_path / "mine.csv"
    band_gap.head(120).rename(columns={"formula": "comp", "target": "Eg"}).assign(Eg=lambda d: d.Eg + 0.1).to_csv(
        table, index=False)
    out2 = tmp_path / "mine.json"
    assert main(["evaluate", "--data", str(table), "--formula-col", "comp", "--target-col", "Eg", "--model", "none",
                 "--target-transform", "log", "--report-scale", "10", "--folds", "2", "--epochs", "5", "--quiet",
                 "--json", str(out2)]) == 0
    res2 = json.loads(out2.read_text())
    assert res2["target_transform"] == "log" and res2["report_scale"] == 10 and res2["model"] == "none"
    assert main(["evaluate", "--dataset", "band_gap", "--data", str(table)]) == 2  # exactly one source
