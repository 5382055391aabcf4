"""End-to-end: pretrain on real bundled structures, featurize real formulas."""

import copy

import joblib
import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV, cross_val_score
from sklearn.neural_network import MLPRegressor
from sklearn.pipeline import Pipeline

from skpolysrl import FormulaError, ModelFileError, PolySRLFeaturizer, UnknownElementError

FORMULAS = ["Fe2O3", "NaCl", "Bi2Te2.7Se0.3", "(Bi2Te3)0.9(Sb2Te3)0.1", "SiO2", "GaAs", "TiO2", "Cu2ZnSnS4"]


def test_pretraining_runs_and_learns(trained):
    h = trained.history_
    assert len(h) == 4
    assert h[-1]["loss"] < h[0]["loss"]
    for key in ("loss", "kl", "positive_correct", "negative_correct", "mean_uncertainty", "c", "d",
                "effective_rank", "mean_cosine", "seconds", "positive_pairs"):
        assert np.isfinite(h[-1][key]), key
    assert trained.n_structures_ == 300


def test_transform_shape_names_and_uncertainty(trained):
    X = trained.transform(FORMULAS)
    assert X.shape == (len(FORMULAS), 201)
    assert np.isfinite(X).all()
    np.testing.assert_allclose(np.linalg.norm(X[:, :200], axis=1), 1.0, rtol=1e-5)  # mean is L2-normalised
    assert np.all(X[:, -1] > 0)
    assert np.ptp(X[:, -1]) > 0  # uncertainty differs across formulas
    names = trained.get_feature_names_out()
    assert names[0] == "polysrl_0" and names[199] == "polysrl_199" and names[-1] == "polysrl_uncertainty"
    assert len(names) == 201


def test_equivalent_inputs_give_same_vector(trained):
    from pymatgen.core import Composition

    X = trained.transform(["Fe2O", "OFe2", Composition("Fe4O2"), "Fe2O"])
    np.testing.assert_array_equal(X[0], X[1])
    np.testing.assert_array_equal(X[0], X[2])
    np.testing.assert_array_equal(X[0], X[3])
    # batched and one-at-a-time results agree
    np.testing.assert_allclose(trained.transform(FORMULAS)[3], trained.transform([FORMULAS[3]])[0], atol=1e-6)


def test_set_output_pandas(trained):
    f = clone(trained).set_params(pretrained=None, random_state=0)
    f.set_output(transform="pandas")
    df = pd.DataFrame({"formula": FORMULAS}, index=[f"row{i}" for i in range(len(FORMULAS))])
    out = f.fit(df).transform(df)
    assert isinstance(out, pd.DataFrame)
    assert list(out.columns) == list(f.get_feature_names_out())
    assert list(out.index) == list(df.index)


def test_polymorph_rule_makes_same_formula_rows_positive(mp_small):
    from skpolysrl.datasets import load_mp_structures

    df = load_mp_structures(limit=1500)
    counts = df.formula.value_counts()
    poly = counts[counts >= 2].index[0]
    two = df[df.formula == poly].head(2)
    others = df[~df.formula.isin([poly])].drop_duplicates("formula").head(2)
    data = pd.concat([two, others])
    f = PolySRLFeaturizer(pretrained=None, epochs=1, batch_size=4, random_state=0, verbose=False, device="cpu",
                          recipe="paper")
    f.fit(data)
    # 4 rows: 4 self pairs + the two polymorphs matching each other
    assert f.history_[0]["positive_pairs"] == 6
    assert f.n_formulas_ == 3


def test_determinism_same_seed_same_embeddings(mp_small):
    data = mp_small.head(80)
    kw = dict(pretrained=None, epochs=2, batch_size=32, lr=5e-4, random_state=3, verbose=False, device="cpu",
              recipe="paper")
    a = PolySRLFeaturizer(**kw).fit(data)
    b = PolySRLFeaturizer(**kw).fit(data)
    np.testing.assert_array_equal(a.transform(FORMULAS), b.transform(FORMULAS))
    drop_time = lambda h: [{k: v for k, v in r.items() if k != "seconds"} for r in h]  # noqa: E731
    assert drop_time(a.history_) == drop_time(b.history_)
    c = PolySRLFeaturizer(**{**kw, "random_state": 4}).fit(data)
    assert not np.allclose(a.transform(FORMULAS), c.transform(FORMULAS))


def test_fit_on_formulas_does_not_train(trained, model_path):
    f = PolySRLFeaturizer(pretrained=str(model_path), verbose=False).fit(FORMULAS)
    assert f.history_ == []
    np.testing.assert_array_equal(f.transform(FORMULAS), trained.transform(FORMULAS))
    # an already fitted featurizer keeps its trained weights when refit on formulas
    g = copy.deepcopy(trained)
    g.fit(["NaCl", "KBr"])
    assert g.history_ == trained.history_
    np.testing.assert_array_equal(g.transform(FORMULAS), trained.transform(FORMULAS))
    # random init is seeded: same random_state, same weights, whatever the formulas
    r1 = PolySRLFeaturizer(pretrained=None, random_state=0, verbose=False).fit(FORMULAS).transform(FORMULAS)
    r2 = PolySRLFeaturizer(pretrained=None, random_state=0, verbose=False).fit(["NaCl"]).transform(FORMULAS)
    np.testing.assert_array_equal(r1, r2)


def test_joblib_roundtrip_and_clone(trained, tmp_path):
    path = tmp_path / "f.joblib"
    joblib.dump(trained, path)
    loaded = joblib.load(path)
    np.testing.assert_array_equal(loaded.transform(FORMULAS), trained.transform(FORMULAS))
    assert loaded.history_ == trained.history_
    assert all(t.device.type == "cpu" for t in loaded.model_.state_dict().values())
    # pretrained= never unpickles; load_trusted does, when the user says so
    with pytest.raises(ModelFileError, match="load_trusted"):
        PolySRLFeaturizer(pretrained=str(path), verbose=False).fit(FORMULAS)
    via = PolySRLFeaturizer.load_trusted(path)
    np.testing.assert_array_equal(via.transform(FORMULAS), trained.transform(FORMULAS))
    c = clone(trained)
    assert not hasattr(c, "model_") and not hasattr(c, "history_")
    assert c.get_params() == trained.get_params()


def test_model_file_errors(tmp_path, model_path):
    with pytest.raises(ModelFileError, match="does not exist"):
        PolySRLFeaturizer(pretrained=str(tmp_path / "missing.pt")).fit(FORMULAS)
    data = model_path.read_bytes()
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFileError, match="truncated or corrupt"):
        PolySRLFeaturizer(pretrained=str(truncated)).fit(FORMULAS)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"\x00" * 1000)
    with pytest.raises(ModelFileError):
        PolySRLFeaturizer(pretrained=str(garbage)).fit(FORMULAS)


def test_bad_input_errors_and_ignore_errors(trained):
    with pytest.raises(UnknownElementError, match=r"'Xx2O' at position 1"):
        trained.transform(["NaCl", "Xx2O", "KBr"])
    with pytest.raises(FormulaError, match="position 2"):
        trained.transform(["NaCl", "KBr", "fe2o3"])
    with pytest.raises(ValueError, match="empty"):
        trained.transform([])
    with pytest.raises(TypeError, match="wrap a single formula"):
        trained.transform("NaCl")
    lenient = clone(trained)
    lenient.__setstate__({**trained.__getstate__(), "ignore_errors": True})
    X = lenient.transform(["NaCl", "Xx2O", None, "KBr"])
    assert np.isnan(X[1]).all() and np.isnan(X[2]).all()
    np.testing.assert_array_equal(X[[0, 3]], trained.transform(["NaCl", "KBr"]))


def test_featurize_dataframe_matches_transform(trained):
    from pymatgen.core import Composition

    df = pd.DataFrame({"formula": FORMULAS + ["Xx"]})
    out = trained.featurize_dataframe(df, "formula", ignore_errors=True, return_errors=True, pbar=False)
    np.testing.assert_allclose(out[trained.feature_labels()].to_numpy()[:-1], trained.transform(FORMULAS), rtol=1e-6)
    assert out[trained.feature_labels()].iloc[-1].isna().all()
    assert "Xx" in out["PolySRLFeaturizer Exceptions"].iloc[-1]
    comp = pd.DataFrame({"composition": [Composition(f) for f in FORMULAS]})
    out2 = trained.featurize_dataframe(comp, "composition", pbar=False)
    np.testing.assert_allclose(out2[trained.feature_labels()].to_numpy(), trained.transform(FORMULAS), rtol=1e-6)
    assert len(trained.citations()) == 2 and trained.implementors()


@pytest.mark.filterwarnings("ignore::pandas.errors.PerformanceWarning")  # matminer's inplace adds columns one by one
def test_featurize_dataframe_inplace_multiindex_and_dtypes(trained):
    df = pd.DataFrame({"formula": FORMULAS, "y": np.arange(len(FORMULAS), dtype=float)})
    before = df.copy()
    out = trained.featurize_dataframe(df, "formula", pbar=False)
    pd.testing.assert_frame_equal(df, before)  # inplace=False leaves the input alone
    assert list(out.columns) == ["formula", "y"] + trained.feature_labels()
    assert all(out[c].dtype == np.float64 for c in trained.feature_labels())
    assert trained.featurize_dataframe(df, "formula", inplace=True, pbar=False) is None
    np.testing.assert_allclose(df[trained.feature_labels()].to_numpy(), trained.transform(FORMULAS), rtol=1e-6)
    multi = trained.featurize_dataframe(before.copy(), "formula", multiindex=True, pbar=False)
    np.testing.assert_allclose(multi["PolySRLFeaturizer"].to_numpy(), trained.transform(FORMULAS), rtol=1e-6)
    assert not hasattr(trained, "_rows_as_array")  # no state left behind on the estimator
    rows = trained.featurize_many(FORMULAS, pbar=False)
    assert isinstance(rows, list) and isinstance(rows[0], list)  # matminer's return type outside the frame path


def test_pipeline_cross_val_score_on_band_gap(model_path, band_gap):
    pipe = Pipeline([
        ("f", PolySRLFeaturizer(pretrained=str(model_path), verbose=False)),
        ("mlp", MLPRegressor(hidden_layer_sizes=(64,), max_iter=200, random_state=0)),
    ])
    scores = cross_val_score(pipe, band_gap.formula.to_numpy(), band_gap.target.to_numpy(), cv=5,
                             scoring="neg_mean_absolute_error")
    assert scores.shape == (5,) and np.all(np.isfinite(scores))
    # a representation that carries chemistry beats predicting the mean (MAE ~1.1 eV here)
    baseline = np.mean(np.abs(band_gap.target - band_gap.target.mean()))
    assert -scores.mean() < 0.8 * baseline


def test_grid_search_over_pipeline(model_path, band_gap):
    sub = band_gap.sample(300, random_state=0)
    pipe = Pipeline([("f", PolySRLFeaturizer(pretrained=str(model_path), verbose=False)),
                     ("mlp", MLPRegressor(max_iter=50, random_state=0))])
    grid = GridSearchCV(pipe, {"mlp__alpha": [1e-4, 1e-2]}, cv=3, scoring="neg_mean_absolute_error")
    grid.fit(sub.formula.to_numpy(), sub.target.to_numpy())
    assert grid.best_params_["mlp__alpha"] in (1e-4, 1e-2)
    assert grid.predict(["GaAs", "ZnO"]).shape == (2,)


def test_invalid_parameters_are_rejected(mp_small):
    with pytest.raises(ValueError, match="objective"):
        PolySRLFeaturizer(pretrained=None, objective="magic").fit(mp_small.head(4))
    with pytest.raises(ValueError, match="batch_size"):
        PolySRLFeaturizer(pretrained=None, batch_size=1).fit(mp_small.head(4))


@pytest.mark.parametrize("objective", ["deterministic", "infomax"])
def test_other_objectives_train_and_change_the_encoder(mp_small, objective):
    kw = dict(pretrained=None, epochs=1, batch_size=64, lr=5e-4, random_state=0, verbose=False, device="cpu",
              recipe="paper")
    before = PolySRLFeaturizer(**kw).fit(FORMULAS).transform(FORMULAS)
    f = PolySRLFeaturizer(objective=objective, **kw).fit(mp_small.head(128))
    assert np.isfinite(f.history_[0]["loss"]) and 0 <= f.history_[0]["retrieval"] <= 1
    assert not np.allclose(f.transform(FORMULAS)[:, :200], before[:, :200])


def test_warmup_freezes_the_formula_means(mp_small):
    kw = dict(pretrained=None, batch_size=64, lr=5e-4, random_state=0, verbose=False, device="cpu", recipe="paper")
    before = PolySRLFeaturizer(**kw).fit(FORMULAS).transform(FORMULAS)
    warm = PolySRLFeaturizer(epochs=1, warmup_epochs=1, **kw).fit(mp_small.head(128))
    np.testing.assert_array_equal(warm.transform(FORMULAS)[:, :200], before[:, :200])  # means untouched
    assert not np.array_equal(warm.transform(FORMULAS)[:, -1], before[:, -1])  # variances trained


def test_save_without_structure_encoder_transforms_the_same(trained, model_path, tmp_path):
    from skpolysrl import PolySRLFeaturizer

    light = tmp_path / "light.pt"
    trained.save(light, include_structure_encoder=False, extra={"recipe": "test"})
    assert light.stat().st_size < 0.7 * model_path.stat().st_size
    formulas = ["NaCl", "Fe2O3", "Bi2Te2.7Se0.3"]
    full, small = (PolySRLFeaturizer(pretrained=str(p), verbose=False, device="cpu") for p in (model_path, light))
    np.testing.assert_array_equal(full.transform(formulas), small.transform(formulas))
    assert full.model_.structure is not None and small.model_.structure is None
