"""The matbench runner: official folds, resume, refusal to mix settings, the results file's format, CLI errors."""

import hashlib
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.metrics import mean_absolute_error, roc_auc_score
from sklearn.model_selection import KFold, StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer

from skpolysrl.cli import main
from skpolysrl.datasets import load_dataset
from skpolysrl.matbench import (ESTIMATORS, TASKS, CompositionFeatures, MagpieFeatures, MatbenchRunError,
                                PriorCorrectedClassifier, load_task, run_matbench)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _formula_stats(X):
    """Cheap real features of a formula: its length and its count of capital letters (elements)."""
    return np.array([[len(f), sum(c.isupper() for c in f)] for f in X], dtype=float)


def cheap(task_type, *, task, model, device, random_state):
    final = LogisticRegression() if task_type == "classification" else LinearRegression()
    return make_pipeline(FunctionTransformer(_formula_stats), final)


class Flaky(RegressorMixin, BaseEstimator):
    """LinearRegression on formula statistics; the ``Flaky.fail_at``-th fit raises (a stopped run)."""

    fits = []
    fail_at = None

    def __init__(self, fit_intercept=True):
        self.fit_intercept = fit_intercept

    def fit(self, X, y):
        Flaky.fits.append(len(X))
        if len(Flaky.fits) == Flaky.fail_at:
            raise RuntimeError("stopped")
        self.model_ = LinearRegression(fit_intercept=self.fit_intercept).fit(_formula_stats(X), y)
        return self

    def predict(self, X):
        return self.model_.predict(_formula_stats(X))


def _results(out, name):
    with open(os.path.join(out, name, "results.json")) as fh:
        return json.load(fh)


# ------------------------------------------------------------------ folds
def test_rows_are_matbench_rows():
    # the first rows of matbench's own datasets (matbench repo, scripts/artifacts/matbench_*.json.bz2)
    gap = load_dataset("matbench_expt_gap")
    assert gap.formula[:3].tolist() == ["Ag(AuS)2", "Ag(W3Br7)2", "Ag0.5Ge1Pb1.75S4"]
    assert gap.target[:3].tolist() == [0.0, 0.0, 1.83]
    formulas, y, ids, _ = load_task("steels")
    assert ids[0] == "mb-steels-001" and ids[-1] == "mb-steels-312" and y[0] == 2411.5
    assert formulas[0].startswith("Fe0.620C0.000953Mn0.000521")
    assert load_task("matbench_expt_gap")[2][:2] == ["mb-expt-gap-0001", "mb-expt-gap-0002"]


def test_folds_are_the_official_ones():
    _, y, ids, folds = load_task("matbench_steels")
    expected = KFold(5, shuffle=True, random_state=18012019).split(np.zeros((len(y), 1)))
    for (train, test), (train_e, test_e) in zip(folds, expected, strict=True):
        np.testing.assert_array_equal(test, test_e)
        np.testing.assert_array_equal(train, train_e)
    # test ids of matbench's published RF/Magpie submission (benchmarks/matbench_v0.1_rf/results.json.gz)
    assert [ids[i] for i in folds[0][1][:4]] == ["mb-steels-003", "mb-steels-005", "mb-steels-020", "mb-steels-026"]
    assert [ids[i] for i in folds[4][1][:4]] == ["mb-steels-001", "mb-steels-006", "mb-steels-008", "mb-steels-011"]


def test_classification_folds_are_stratified():
    _, y, ids, folds = load_task("matbench_glass")
    expected = StratifiedKFold(5, shuffle=True, random_state=18012019).split(np.zeros((len(y), 1)), y)
    for (_, test), (_, test_e) in zip(folds, expected, strict=True):
        np.testing.assert_array_equal(test, test_e)
        assert abs(y[test].sum() - y.mean() * len(test)) <= 1  # each fold has the dataset's share of glasses
    assert sorted(np.concatenate([test for _, test in folds]).tolist()) == list(range(len(y)))
    assert [ids[i] for i in folds[0][1][:4]] == ["mb-glass-0001", "mb-glass-0007", "mb-glass-0018", "mb-glass-0022"]
    plain = next(KFold(5, shuffle=True, random_state=18012019).split(y))[1]
    assert not np.array_equal(plain, folds[0][1])  # stratified folds are not KFold's


# ------------------------------------------------------------------ the results file
def _matbench_hash(d):
    """matbench.util.hash_dictionary, as matbench 0.6 computes it."""
    def immutify(x):
        return {k: immutify(v) if isinstance(v, dict) else tuple(v) if isinstance(v, list) else v
                for k, v in sorted(x.items())}

    return hashlib.sha256(json.dumps(immutify(d)).encode("utf-8")).hexdigest()


def test_results_file_has_matbench_structure(tmp_path):
    out = tmp_path / "out"
    summary = run_matbench(["steels", "glass"], out, {"cheap": cheap}, verbose=False)
    d = _results(out, "cheap")
    assert set(d) == {"@module", "@class", "version", "tasks", "user_metadata", "benchmark_name", "datestamp", "hash"}
    assert (d["@module"], d["@class"], d["benchmark_name"], d["version"]) == ("matbench.bench", "MatbenchBenchmark",
                                                                             "matbench_v0.1", "0.6")
    stated = d.pop("hash")
    assert stated == _matbench_hash(d)
    assert set(d["tasks"]) == {"matbench_steels", "matbench_glass"}
    for task, metrics in [("matbench_steels", {"mae", "rmse", "mape", "max_error"}),
                          ("matbench_glass", {"accuracy", "balanced_accuracy", "f1", "rocauc"})]:
        t = d["tasks"][task]
        assert set(t) == {"@module", "@class", "benchmark_name", "dataset_name", "results"}
        assert (t["@module"], t["@class"], t["dataset_name"]) == ("matbench.task", "MatbenchTask", task)
        _, y, ids, folds = load_task(task)
        assert set(t["results"]) == {f"fold_{k}" for k in range(5)}
        for k, (_, test) in enumerate(folds):
            fold = t["results"][f"fold_{k}"]
            assert set(fold) <= {"data", "parameters", "scores", "uncertainty"} and fold["uncertainty"] is None
            assert set(fold["data"]) == {ids[i] for i in test}
            values = np.array([fold["data"][ids[i]] for i in test])
            assert all(isinstance(v, float) for v in fold["data"].values())
            assert set(fold["scores"]) == metrics and all(isinstance(v, float) for v in fold["scores"].values())
            if task == "matbench_glass":  # probabilities, which matbench 0.6 scores as labels (p > 0.5)
                assert ((values >= 0) & (values <= 1)).all() and len(np.unique(values)) > 2
                assert fold["scores"]["rocauc"] == pytest.approx(roc_auc_score(y[test], values > 0.5))
                assert fold["scores"]["rocauc"] == pytest.approx(fold["scores"]["balanced_accuracy"])
            else:
                assert fold["scores"]["mae"] == pytest.approx(mean_absolute_error(y[test], values))
    row = summary["estimators"]["cheap"]["matbench_glass"]
    assert row["metric"] == "rocauc" and 0.5 < row["mean"] < row["probability_auc_mean"] < 1
    table = (out / "summary.md").read_text()
    assert "matbench_glass (ROC AUC)" in table and f"{row['mean']:.4f} +/- {row['std']:.4f}" in table
    assert json.loads((out / "summary.json").read_text()) == json.loads(json.dumps(summary))


def test_rf_magpie_on_a_small_glass_subset():
    formulas, y, _, folds = load_task("glass")
    train, test = folds[0][0][:150], folds[0][1][:40]
    model = ESTIMATORS["rf-magpie"]("classification", task="matbench_glass", model=None, device="cpu", random_state=0)
    model.set_params(forest__n_estimators=25)
    model.fit([formulas[i] for i in train], y[train])
    proba = model.predict_proba([formulas[i] for i in test])[:, 1]
    assert roc_auc_score(y[test], proba) > 0.7
    assert model.named_steps["forest"].n_features_in_ == 132


# ------------------------------------------------------------------ features and the tuned estimators
def test_composition_features_give_the_magpie_columns_of_matminer():
    from matminer.featurizers.composition import ElementProperty
    from pymatgen.core import Composition

    formulas = load_task("glass")[0][:6] + ["NaCl", "Fe2O3"]
    direct = ElementProperty.from_preset("magpie", impute_nan=True).featurize_many(
        [Composition(f) for f in formulas], pbar=False)
    np.testing.assert_array_equal(MagpieFeatures().fit_transform(formulas), np.asarray(direct, dtype=float))
    np.testing.assert_array_equal(CompositionFeatures().transform(formulas), np.asarray(direct, dtype=float))
    assert repr(MagpieFeatures()) == "MagpieFeatures()"  # rf-magpie's stored settings stay the same
    both = CompositionFeatures(("fractions", "magpie")).transform(formulas)
    np.testing.assert_array_equal(both[:, -132:], np.asarray(direct, dtype=float))
    with pytest.raises(ValueError, match="choose one or more of magpie, fractions, extras, polysrl"):
        CompositionFeatures(("magpie", "oxidation")).transform(formulas)


class _FixedProbability(BaseEstimator):
    """A 'classifier' whose P(class 1) is the first column of X."""

    def fit(self, X, y):
        self.classes_ = np.unique(y)
        return self

    def predict_proba(self, X):
        p = np.asarray(X, dtype=float)[:, 0]
        return np.column_stack([1 - p, p])


def test_prior_correction_by_hand_and_monotone():
    model = PriorCorrectedClassifier(_FixedProbability()).fit(np.zeros((4, 1)), [0, 0, 0, 1])  # pi = 0.25
    assert model.prior_ == 0.25 and list(model.classes_) == [0, 1]
    # p' = p (1 - pi) / (p (1 - pi) + (1 - p) pi)
    corrected = model.predict_proba([[0.5], [0.25], [0.2], [0.0], [1.0]])
    np.testing.assert_allclose(corrected[:, 1], [0.75, 0.5, 0.15 / 0.35, 0.0, 1.0])
    np.testing.assert_allclose(corrected.sum(axis=1), 1.0)
    p = np.random.default_rng(0).uniform(size=200)
    y = np.random.default_rng(1).uniform(size=200) < p
    q = model.predict_proba(p[:, None])[:, 1]
    assert np.all(np.diff(q[np.argsort(p)]) >= 0)
    assert roc_auc_score(y, q) == pytest.approx(roc_auc_score(y, p))
    np.testing.assert_array_equal(model.predict(p[:, None]), (p > 0.25).astype(int))
    with pytest.raises(ValueError, match="needs two classes"):
        PriorCorrectedClassifier(_FixedProbability()).fit(np.zeros((3, 1)), [0, 1, 2])
    with pytest.raises(ValueError, match="'estimator' parameter"):
        PriorCorrectedClassifier(LinearRegression()).fit(np.zeros((4, 1)), [0, 0, 0, 1])


def _smaller(name, n_estimators):
    def factory(task_type, **kw):
        model = ESTIMATORS[name](task_type, **kw)
        return model.set_params(**{f"{model.steps[-1][0]}__n_estimators": n_estimators})
    return factory


def test_tuned_beats_rf_magpie_on_steels(tmp_path):
    estimators = {"tuned": _smaller("tuned", 60), "rf-magpie": _smaller("rf-magpie", 60)}
    summary = run_matbench("steels", tmp_path / "a", estimators, verbose=False)["estimators"]
    tuned, forest = summary["tuned"]["matbench_steels"], summary["rf-magpie"]["matbench_steels"]
    assert tuned["mean"] < 95 < forest["mean"]  # issue 13's target, on all 5 official folds
    again = run_matbench("steels", tmp_path / "b", {"tuned": _smaller("tuned", 60)}, verbose=False)
    assert again["estimators"]["tuned"]["matbench_steels"]["folds"] == tuned["folds"]  # deterministic


def test_tuned_names_its_tasks():
    with pytest.raises(ValueError, match="'tuned' has a model for matbench_steels, .* only, not 'matbench_dielectric'"):
        ESTIMATORS["tuned"]("regression", task="matbench_dielectric", model=None, device="cpu", random_state=0)
    glass = ESTIMATORS["tuned"]("classification", task="matbench_glass", model=None, device="cpu", random_state=3)
    assert glass.named_steps["features"].features == ("magpie", "fractions")
    assert isinstance(glass.named_steps["model"], PriorCorrectedClassifier)
    assert glass.named_steps["model"].estimator.random_state == 3


# ------------------------------------------------------------------ resume and settings
def test_stopped_run_resumes_at_the_missing_fold(tmp_path):
    flaky = {"lin": lambda task_type, **kw: Flaky()}
    Flaky.fits.clear()
    Flaky.fail_at = 3
    try:
        with pytest.raises(RuntimeError, match="stopped"):
            run_matbench("steels", tmp_path / "a", flaky, verbose=False)  # folds 0 and 1 done, fold 2 fails
    finally:
        Flaky.fail_at = None
    done = sorted(os.listdir(tmp_path / "a" / "lin" / "matbench_steels"))
    assert done == ["fold_0.json", "fold_1.json"]
    first = (tmp_path / "a" / "lin" / "matbench_steels" / "fold_0.json").read_bytes()

    Flaky.fits.clear()
    run_matbench("steels", tmp_path / "a", flaky, verbose=False)
    _, _, _, folds = load_task("steels")
    assert Flaky.fits == [len(folds[k][0]) for k in (2, 3, 4)]  # only the missing folds were fitted
    assert (tmp_path / "a" / "lin" / "matbench_steels" / "fold_0.json").read_bytes() == first

    Flaky.fits.clear()
    run_matbench("steels", tmp_path / "b", flaky, verbose=False)
    assert len(Flaky.fits) == 5
    resumed, straight = _results(tmp_path / "a", "lin"), _results(tmp_path / "b", "lin")
    for d in (resumed, straight):
        for fold in d["tasks"]["matbench_steels"]["results"].values():
            assert set(fold["parameters"]) == {"estimator", "skpolysrl"}
    assert resumed["tasks"] == straight["tasks"]


def test_refuses_to_mix_settings(tmp_path):
    out = tmp_path / "out"
    run_matbench("steels", out, {"lin": lambda task_type, **kw: Flaky()}, verbose=False)
    before = (out / "lin" / "results.json").read_bytes()
    with pytest.raises(MatbenchRunError, match=r"lin/matbench_steels with other settings.*fit_intercept.*another --out"):
        run_matbench("steels", out, {"lin": lambda task_type, **kw: Flaky(fit_intercept=False)}, verbose=False)
    model = tmp_path / "weights.pt"
    model.write_bytes(b"not the default")
    with pytest.raises(MatbenchRunError, match="model"):
        run_matbench("steels", out, {"lin": lambda task_type, **kw: Flaky()}, model=model, verbose=False)
    assert (out / "lin" / "results.json").read_bytes() == before
    # the same settings again: nothing recomputed; another task or estimator may join the folder
    Flaky.fits.clear()
    run_matbench("steels", out, {"lin": lambda task_type, **kw: Flaky()}, verbose=False)
    assert Flaky.fits == []
    run_matbench("glass", out, {"cheap": cheap}, verbose=False)
    assert set(json.loads((out / "summary.json").read_text())["estimators"]) == {"lin", "cheap"}


def test_never_writes_into_a_folder_of_foreign_files(tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("my notes")
    with pytest.raises(MatbenchRunError, match="did not write"):
        run_matbench("steels", out, {"cheap": cheap}, verbose=False)
    assert os.listdir(out) == ["notes.txt"] and (out / "notes.txt").read_text() == "my notes"
    # a foreign file where a report goes, inside a folder of ours, is not overwritten either
    ours = tmp_path / "ours"
    run_matbench("steels", ours, {"cheap": cheap}, verbose=False)
    os.remove(ours / "summary.md")
    (ours / "summary.md").write_text("someone else's")
    manifest = json.loads((ours / "skpolysrl-matbench.json").read_text())
    manifest["files"].remove("summary.md")
    (ours / "skpolysrl-matbench.json").write_text(json.dumps(manifest))
    with pytest.raises(MatbenchRunError, match="never overwritten"):
        run_matbench("steels", ours, {"cheap": cheap}, verbose=False)
    assert (ours / "summary.md").read_text() == "someone else's"


# ------------------------------------------------------------------ the command line
def _cli(*args):
    run = subprocess.run([sys.executable, "-m", "skpolysrl.cli", *map(str, args)], capture_output=True, text=True,
                         cwd=ROOT, env={**os.environ, "PYTHONPATH": ROOT})
    assert "Traceback" not in run.stderr, run.stderr[-3000:]
    return run


@pytest.mark.parametrize("args, message", [
    (["--task", "matbench_dielectric"], "unknown matbench task 'matbench_dielectric'; choose from matbench_expt_gap"),
    (["--task", "steels", "--estimator", "xgb"], "unknown estimator 'xgb'; choose from probe, rf-magpie"),
])
def test_cli_errors_are_one_line(tmp_path, capsys, args, message):
    assert main(["matbench", *args, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and err.startswith("skpolysrl matbench: error")
    assert not (tmp_path / "out").exists()


def test_cli_foreign_out_folder(tmp_path):
    (tmp_path / "x.csv").write_text("a,b\n")
    run = _cli("matbench", "--task", "steels", "--estimator", "rf-magpie", "--out", tmp_path)
    assert run.returncode == 2 and run.stderr.count("\n") == 1 and "did not write" in run.stderr
    assert sorted(os.listdir(tmp_path)) == ["x.csv"]


def test_cli_runs_a_registered_estimator(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(ESTIMATORS, "cheap", cheap)
    assert main(["matbench", "--task", "matbench_steels", "--estimator", "cheap", "--out", str(tmp_path / "o"),
                 "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "| matbench_steels (MAE MPa) |" in out
    assert set(_results(tmp_path / "o", "cheap")["tasks"]) == {"matbench_steels"}
    assert set(TASKS) == {"matbench_expt_gap", "matbench_expt_is_metal", "matbench_glass", "matbench_steels"}
