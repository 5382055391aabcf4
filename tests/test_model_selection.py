"""The paper's protocols: CV, target scalings, x10 reporting, ESTM windows and ZT, on hand-checked values."""

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.model_selection import KFold, StratifiedKFold

from skpolysrl.cli import main
from skpolysrl.datasets import (DATASET_ALIASES, DATASETS, MATBENCH_CLASSIFICATION_TASKS, dataset_task_type,
                                load_dataset, load_matbench, load_mp_property, load_table)
from skpolysrl.model_selection import (
    ESTM_WINDOWS, MATBENCH_SEED, TargetScaling, cross_validate, figure_of_merit, log_scale, matbench_kfold,
    minmax_scale, paper_kfold, screen_zt, select_temperature_window, undo_log_scale, undo_minmax_scale, zt_from_scaled,
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
    # "log" is the natural logarithm, as in the paper's code; log10 by that name
    np.testing.assert_allclose(log_scale(sigma), [2 * np.log(10), 4 * np.log(10), 6 * np.log(10)])
    np.testing.assert_allclose(log_scale(sigma, base=10), [2, 4, 6])
    np.testing.assert_allclose(undo_log_scale(log_scale(sigma)), sigma)
    np.testing.assert_allclose(TargetScaling("log").fit_transform(sigma), np.log(sigma))
    np.testing.assert_allclose(TargetScaling("log10").fit_transform(sigma), [2, 4, 6])
    np.testing.assert_allclose(TargetScaling("log10").inverse_transform([2, 4, 6]), sigma)
    with pytest.raises(ValueError, match="log10"):
        TargetScaling("ln")
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
    assert len(res["folds"]) == 5 and res["report_scale"] == 10 and res["task_type"] == "regression"
    # ln(y) is linear in X, so the scaled MAE is ~0 and the original-unit MAE too
    assert res["mae_mean"] < 1e-4 and res["mae_original_mean"] < 1e-3
    # log10 targets are ln targets divided by ln(10): the same linear fit, the same R^2
    res10 = cross_validate(Ridge(1e-6), X, y, target_transform="log10", report_scale=10)
    np.testing.assert_allclose(res10["r2_mean"], res["r2_mean"], atol=1e-9)
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
    assert type(matbench_kfold()) is KFold  # the earlier call keeps its meaning
    for task in ("matbench_expt_gap", "matbench_steels_yield", "matbench_steels", "expt_gap"):
        assert type(matbench_kfold(task)) is KFold, task
    for task in ("matbench_expt_is_metal", "matbench_glass", "matbench_mp_is_metal", "glass"):
        cv = matbench_kfold(task)
        assert type(cv) is StratifiedKFold and cv.random_state == 18012019 and cv.shuffle and cv.n_splits == 5
    assert MATBENCH_CLASSIFICATION_TASKS == {"matbench_expt_is_metal", "matbench_glass", "matbench_mp_is_metal"}
    # stratified folds keep glass's class balance in every test fold
    y = load_dataset("matbench_glass")["target"].to_numpy()
    shares = [y[test].mean() for _, test in matbench_kfold("matbench_glass").split(np.zeros((len(y), 1)), y)]
    assert max(shares) - min(shares) < 0.002


def test_cross_validate_classifier_scores_roc_auc_on_stratified_folds():
    from skpolysrl import PolySRLFeaturizer

    df = load_dataset("matbench_expt_is_metal").sample(600, random_state=0)
    X = PolySRLFeaturizer(verbose=False).transform(df["formula"])
    labels = np.where(df["target"] == 1, "metal", "nonmetal")
    res = cross_validate(LogisticRegression(max_iter=2000), X, labels, cv=matbench_kfold("matbench_expt_is_metal"),
                         return_predictions=True)
    assert res["task_type"] == "classification" and len(res["folds"]) == 5
    assert "mae_mean" not in res and "target_transform" not in res
    aucs = [f["roc_auc"] for f in res["folds"]]
    assert res["roc_auc_mean"] == pytest.approx(np.mean(aucs)) and res["roc_auc_std"] == pytest.approx(np.std(aucs))
    assert 0.8 < res["roc_auc_mean"] <= 1 and 0.6 < res["accuracy_mean"] <= 1
    proba = res["predictions"]  # columns: "metal", "nonmetal"
    assert proba.shape == (600, 2) and np.allclose(proba.sum(axis=1), 1)
    # the folds' AUCs are those of the out-of-fold probabilities of "nonmetal" (the second class)
    from sklearn.metrics import roc_auc_score

    test0 = next(iter(matbench_kfold("matbench_expt_is_metal").split(X, labels)))[1]
    assert res["folds"][0]["roc_auc"] == pytest.approx(roc_auc_score(labels[test0] == "nonmetal", proba[test0, 1]))
    with pytest.raises(ValueError, match="classifier"):
        cross_validate(LogisticRegression(), X, labels, target_transform="log")
    # three classes: one-vs-rest AUC
    gap = load_dataset("matbench_expt_gap").sample(400, random_state=0)
    three = np.select([gap["target"] == 0, gap["target"] < 2], ["metal", "narrow"], "wide")
    res3 = cross_validate(LogisticRegression(max_iter=2000), PolySRLFeaturizer(verbose=False).transform(gap["formula"]),
                          three, cv=3)
    assert 0.6 < res3["roc_auc_mean"] <= 1


def test_dataset_aliases_load_the_same_data():
    assert DATASET_ALIASES == {"expt_gap_nonmetals": "band_gap", "matbench_steels": "matbench_steels_yield"}
    assert load_dataset("expt_gap_nonmetals").equals(load_dataset("band_gap"))
    assert load_dataset("matbench_steels").equals(load_dataset("matbench_steels_yield"))
    assert load_matbench("steels").equals(load_matbench("steels_yield"))
    assert dataset_task_type("matbench_glass") == "classification" and dataset_task_type("band_gap") == "regression"
    with pytest.raises(ValueError, match="expt_gap_nonmetals"):  # the error lists the old names too
        load_dataset("bandgap")


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


def test_cli_evaluate_classification_datasets_report_roc_auc_not_mae(tmp_path, capsys):
    # regression test: `evaluate --dataset matbench_glass` used to fit a regressor and report MAE
    out = tmp_path / "glass.json"
    assert main(["evaluate", "--dataset", "matbench_glass", "--folds", "2", "--epochs", "5", "--quiet",
                 "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "ROC AUC" in printed and "MAE" not in printed and "stratified" in printed
    res = json.loads(out.read_text())
    assert res["task_type"] == "classification" and res["seed"] == MATBENCH_SEED and res["n_samples"] == 5680
    assert "mae_mean" not in res and all("mae" not in f for f in res["folds"])
    aucs = [f["roc_auc"] for f in res["folds"]]
    assert len(aucs) == 2 and res["roc_auc_mean"] == pytest.approx(np.mean(aucs))
    assert 0.75 < res["roc_auc_mean"] <= 1 and "roc_auc_std" in res and "accuracy_mean" in res
    # a classification task cannot be run as a regression, nor take regression-only options
    assert main(["evaluate", "--dataset", "matbench_expt_is_metal", "--task-type", "regression"]) == 2
    assert main(["evaluate", "--dataset", "matbench_glass", "--target-transform", "log"]) == 2
    assert main(["evaluate", "--dataset", "matbench_glass", "--report-scale", "10"]) == 2
    err = capsys.readouterr().err
    assert "matbench_expt_is_metal is a classification task" in err and "--target-transform" in err


def test_cli_evaluate_user_table_of_text_labels(tmp_path):
    df = load_dataset("matbench_expt_is_metal").sample(300, random_state=0).reset_index(drop=True)
    labels = np.where(df["target"] == 1, "metal", "insulator").astype(object)
    labels[7] = None  # an empty cell: dropped with a warning naming its row
    path = tmp_path / "metals.csv"
    pd.DataFrame({"comp": df["formula"], "kind": labels}).to_csv(path, index=False)
    out = tmp_path / "m.json"
    with pytest.warns(UserWarning, match=r"dropped 1 of 300 rows .*missing label.*data row 8"):
        code = main(["evaluate", "--data", str(path), "--formula-col", "comp", "--target-col", "kind",
                     "--task-type", "classification", "--folds", "3", "--epochs", "20", "--quiet", "--json", str(out)])
    assert code == 0
    res = json.loads(out.read_text())
    assert res["n_samples"] == 299 and len(res["folds"]) == 3 and res["roc_auc_mean"] > 0.75
    # without --task-type the labels are not numbers: no row is left to regress on
    with pytest.warns(UserWarning, match="dropped 300 of 300 rows .*non-numeric target"):
        assert main(["evaluate", "--data", str(path), "--formula-col", "comp", "--target-col", "kind", "--quiet"]) == 2


def test_cli_evaluate_old_dataset_names_and_log10(tmp_path):
    for alias, name in (("expt_gap_nonmetals", "band_gap"), ("matbench_steels", "matbench_steels_yield")):
        out = tmp_path / f"{alias}.json"
        assert main(["evaluate", "--dataset", alias, "--folds", "2", "--epochs", "2", "--quiet",
                     "--target-transform", "log10", "--json", str(out)]) == 0
        res = json.loads(out.read_text())
        assert res["dataset"] == name and res["target_transform"] == "log10" and res["n_samples"] == len(
            load_dataset(name))


def test_cli_evaluate_zero_inflated_on_a_table_with_metals(tmp_path, capsys):
    df = load_dataset("matbench_expt_gap").sample(400, random_state=0).reset_index(drop=True)
    assert (df["target"] == 0).mean() > 0.3  # metals: a mass at zero
    path = tmp_path / "gaps.csv"
    df.to_csv(path, index=False)
    outs = {}
    for estimator in ("polysrl", "zero-inflated"):
        outs[estimator] = tmp_path / f"{estimator}.json"
        assert main(["evaluate", "--data", str(path), "--estimator", estimator, "--folds", "2", "--epochs", "60",
                     "--quiet", "--json", str(outs[estimator])]) == 0
    plain, zi = (json.loads(outs[k].read_text()) for k in ("polysrl", "zero-inflated"))
    assert zi["estimator"] == "zero-inflated" and len(zi["folds"]) == 2
    assert zi["mae_mean"] < plain["mae_mean"]  # predicting exact zeros for likely metals pays under MAE
    assert main(["evaluate", "--dataset", "matbench_glass", "--estimator", "zero-inflated"]) == 2
    assert "for regression targets" in capsys.readouterr().err
