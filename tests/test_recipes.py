"""The default (staged) pretraining recipe: its pieces, and that fit() with it learns without collapsing."""

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from skpolysrl import PolySRLFeaturizer
from skpolysrl._elements import known_atomic_numbers
from skpolysrl._formula import parse_formulas
from skpolysrl.recipes import StagedRecipe, polymorph_spread, substitution_alloys

# a small run: 2 align epochs (1 warm-up), 1 realign epoch, the variance stage at formula speed
SMALL = StagedRecipe(align_passes=400, realign_passes=200, variance_epochs=100, n_alloys=40, batch_size=64,
                     supervised_epochs=2)


@pytest.fixture(scope="module")
def polymorph_corpus():
    """200 bundled structures, half of them of formulas with several structures."""
    from skpolysrl.datasets import load_mp_structures

    data = load_mp_structures()
    counts = data.formula.map(data.formula.value_counts())
    poly = data[counts > 1].groupby("formula").head(3).head(100)
    single = data[counts == 1].sample(100, random_state=0)
    return pd.concat([poly, single]).sample(frac=1.0, random_state=0).reset_index(drop=True)


@pytest.fixture(scope="module")
def staged(polymorph_corpus):
    f = PolySRLFeaturizer(pretrained=None, random_state=0, verbose=False, device="cpu", recipe=SMALL)
    return f.fit(polymorph_corpus)


def test_polymorph_spread_by_hand():
    e = np.array([[0.0, 0.0], [2.0, 0.0], [1.0, 1.0], [5.0, 5.0]])
    spread = polymorph_spread(e, np.array([0, 0, 1, 2]), 4)
    # group 0: centroid (1, 0), squared distances 1 and 1 -> mean 1 over 2 dimensions = 0.5
    assert spread[0] == pytest.approx(0.5)
    assert spread[1] == 0 and spread[2] == 0
    assert np.isnan(spread[3])


def test_substitution_alloys_mix_formulas_that_differ_by_one_element():
    stoich = parse_formulas(["Bi2Te3", "Bi2Se3", "Fe2O3", "FeO", "NaCl", "KCl", "O2"], known_atomic_numbers())
    alloys, pairs = substitution_alloys(stoich, 10, np.random.default_rng(0), x_range=(0.1, 0.1))
    assert {tuple(sorted(p)) for p in pairs.tolist()} == {(0, 1), (4, 5)}  # not Fe2O3/FeO: amounts differ
    for alloy, (a, b) in zip(alloys, pairs):
        assert sum(alloy.fractions) == pytest.approx(1.0)
        assert set(alloy.atomic_numbers) == set(stoich[a].atomic_numbers) | set(stoich[b].atomic_numbers)
    bi_te_se = [al for al, p in zip(alloys, pairs) if 0 in p][0]
    se = dict(zip(bi_te_se.atomic_numbers, bi_te_se.fractions))
    assert se[83] == pytest.approx(0.4)  # Bi2(Te,Se)3 keeps bismuth's share
    assert min(se[34], se[52]) == pytest.approx(0.6 * 0.1)


def test_default_fit_runs_every_stage_without_collapse(staged):
    stages = [r["stage"] for r in staged.history_]
    assert stages[0] == "align-warmup" and stages[-1] == "variance"
    # no properties given: the supervised stage learns each structure's volume per atom and density
    assert {"align", "supervised", "realign"} <= set(stages)
    assert stages.index("align") < stages.index("supervised") < stages.index("realign")
    align = [r for r in staged.history_ if r["stage"] == "align"]
    assert align[-1]["effective_rank"] > 20 and align[-1]["mean_cosine"] < 0.9
    variance = [r for r in staged.history_ if r["stage"] == "variance"]
    assert variance[-1]["loss"] < variance[0]["loss"]


def test_structure_descriptors_by_hand():
    from pymatgen.core import Lattice, Structure

    from skpolysrl.graphs import structure_descriptors

    rock_salt = Structure.from_spacegroup("Fm-3m", Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    broken = Structure(Lattice.cubic(0.5), ["Fe", "Fe"], [[0, 0, 0], [0.5, 0.5, 0.5]])  # 0.06 A^3 per atom
    d = structure_descriptors([rock_salt, broken])
    # 4 NaCl in a 5.64 A cube: 22.43 A^3 per atom, 4 * 58.44 amu / 179.4 A^3 = 2.164 g/cm^3 (measured: 2.165)
    assert np.exp(d[0]) == pytest.approx([5.64 ** 3 / 8, 2.1637], rel=1e-4)
    assert np.isnan(d[1]).all()  # a cell geometry_problem refuses gives no number
    assert structure_descriptors([rock_salt], ("log_density",)).shape == (1, 1)
    with pytest.raises(ValueError, match="unknown structure descriptors"):
        structure_descriptors([rock_salt], ("log_volume",))
    with pytest.raises(ValueError, match="StagedRecipe.structure_targets"):
        StagedRecipe(structure_targets=("log_volume",))


def test_no_structure_targets_and_no_properties_skip_the_supervised_stage(polymorph_corpus):
    recipe = StagedRecipe(stages=None, structure_targets=(), align_passes=100, realign_passes=100, variance_epochs=2,
                          n_alloys=0, batch_size=64)
    f = PolySRLFeaturizer(pretrained=None, random_state=0, verbose=False, device="cpu", recipe=recipe)
    f.fit(polymorph_corpus.head(60))
    assert "supervised" not in {r["stage"] for r in f.history_}


def test_default_fit_beats_its_untrained_start_on_held_out_alignment(staged):
    align = [r for r in staged.history_ if r["stage"] == "align"]
    kept = [r for r in align if r.get("kept")]
    initial = staged.history_[0]  # the warm-up's first epoch already moved the structure encoder
    assert kept and kept[0]["validation_loss"] <= min(r["validation_loss"] for r in align) + 1e-9
    assert max(r["retrieval"] for r in align) > 2.0 / 64  # above chance for batches of 64
    assert initial["stage"] == "align-warmup"


def test_uncertainty_ranks_polymorphic_formulas_higher(staged, polymorph_corpus):
    counts = polymorph_corpus.formula.value_counts()
    u = staged.transform(counts.index.tolist())[:, -1]
    assert roc_auc_score(counts.to_numpy() > 1, u) > 0.7


def test_variance_stage_bounds_the_uncertainty_by_the_widest_spread_it_fitted(staged, polymorph_corpus, tmp_path):
    bound = staged.model_.config.log_sigma_max
    assert bound is not None and np.isfinite(bound)
    ceiling = np.exp(2 * bound)
    # the fitted formulas mostly sit below the bound; far-away formulas (pure elements, odd mixes) cannot pass it
    u_train = staged.transform(polymorph_corpus.formula.unique().tolist())[:, -1]
    assert np.mean(u_train >= ceiling * (1 - 1e-5)) < 0.5
    odd = ["F", "O", "Hg", "Rn", "Au", "Xe0.1Li0.9", "H99C", "Pu3Ra5"]
    assert np.all(staged.transform(odd)[:, -1] <= ceiling * (1 + 1e-5))
    # a saved model keeps its bound
    staged.save(tmp_path / "bounded.pt")
    loaded = PolySRLFeaturizer(pretrained=str(tmp_path / "bounded.pt"), verbose=False, device="cpu")
    assert loaded.model_.config.log_sigma_max == bound
    np.testing.assert_allclose(loaded.transform(odd), staged.transform(odd), rtol=1e-5, atol=1e-7)


def test_supervised_stage_from_property_columns(polymorph_corpus):
    df = polymorph_corpus.head(120).copy()
    rng = np.random.default_rng(0)
    df["gap"] = rng.uniform(0, 3, len(df))
    df["e_form"] = np.where(rng.uniform(size=len(df)) < 0.5, np.nan, rng.normal(size=len(df)))
    recipe = StagedRecipe(stages=("supervised",), supervised_epochs=2, batch_size=32)
    f = PolySRLFeaturizer(random_state=0, verbose=False, device="cpu", recipe=recipe)
    before = PolySRLFeaturizer(verbose=False).transform(df.formula.tolist())
    f.fit(df, ["gap", "e_form"])
    assert [r["stage"] for r in f.history_] == ["supervised", "supervised"]
    assert not np.allclose(f.transform(df.formula.tolist()), before)
    with pytest.raises(ValueError, match="lacks"):
        f.fit(df, ["gap", "nope"])
    with pytest.raises(ValueError, match="one row of properties per structure"):
        f.fit(df, np.zeros(3))


def test_a_fit_split_into_stages_is_the_full_fit(polymorph_corpus, tmp_path):
    """Each stage from the previous one's saved model (how a long run is split, or a stage rerun) gives the
    model of one uninterrupted fit: no draw depends on which stages run."""
    import dataclasses

    data = polymorph_corpus.head(80)
    recipe = dataclasses.replace(SMALL, variance_epochs=5, realign_fresh=True)
    formulas = data.formula.unique().tolist()

    def fit(pretrained, stages):
        f = PolySRLFeaturizer(pretrained=pretrained, random_state=0, verbose=False, device="cpu",
                              recipe=dataclasses.replace(recipe, stages=stages))
        return f.fit(data)

    whole = fit(None, None)
    assert [s for s in ("align", "supervised", "realign", "variance")
            if any(r["stage"] == s for r in whole.history_)] == ["align", "supervised", "realign", "variance"]
    previous = None
    for stages in (("align",), ("supervised",), ("realign", "variance")):
        part = fit(previous, stages)
        previous = str(tmp_path / f"{stages[0]}.pt")
        part.save(previous)  # with its structure encoder: the next stage starts from all of it
    np.testing.assert_allclose(part.transform(formulas), whole.transform(formulas), rtol=1e-5, atol=1e-7)


def test_paper_keywords_with_default_recipe_warn(polymorph_corpus):
    f = PolySRLFeaturizer(pretrained=None, epochs=3, random_state=0, verbose=False, device="cpu",
                          recipe=StagedRecipe(stages=("realign",), realign_passes=10, batch_size=32))
    with pytest.warns(UserWarning, match="recipe='paper'"):
        f.fit(polymorph_corpus.head(40))


def test_embedding_cache_reuses_stored_structures_and_embeds_only_new_ones(staged, polymorph_corpus, tmp_path,
                                                                           monkeypatch):
    from skpolysrl import recipes
    from skpolysrl.graphs import build_structure_graphs

    model = staged.model_
    graphs = build_structure_graphs(list(polymorph_corpus.structure[:30]), **model.config.graph.graph_kwargs())
    direct = recipes.structure_embeddings(model, graphs)
    cache = tmp_path / "emb.npz"
    embedded = []
    real = recipes.structure_embeddings
    monkeypatch.setattr(recipes, "structure_embeddings",
                        lambda m, g, **kw: embedded.append(len(g.num_nodes)) or real(m, g, **kw))
    first = recipes.cached_structure_embeddings(model, graphs.subset(np.arange(20)), cache=cache)
    np.testing.assert_allclose(first, direct[:20], atol=1e-6)
    both = recipes.cached_structure_embeddings(model, graphs.subset(np.arange(10, 30)), cache=cache)
    np.testing.assert_allclose(both, direct[10:30], atol=1e-6)
    assert embedded == [20, 10]  # the second call embedded only the 10 structures the file lacked
    again = recipes.cached_structure_embeddings(model, graphs, cache=cache)
    np.testing.assert_allclose(again, direct, atol=1e-6)
    assert embedded == [20, 10]
    # another structure encoder: the stored embeddings are not used
    import torch

    with torch.no_grad():
        next(model.structure.parameters()).add_(0.1)
    try:
        changed = recipes.cached_structure_embeddings(model, graphs, cache=cache)
        assert embedded[-1] == 30 and not np.allclose(changed, direct, atol=1e-4)
    finally:
        with torch.no_grad():
            next(model.structure.parameters()).sub_(0.1)


def test_embedding_cache_never_overwrites_a_file_we_did_not_write(staged, polymorph_corpus, tmp_path):
    from skpolysrl.exceptions import GraphCacheError
    from skpolysrl.graphs import build_structure_graphs
    from skpolysrl.recipes import cached_structure_embeddings

    graphs = build_structure_graphs(list(polymorph_corpus.structure[:3]), **staged.model_.config.graph.graph_kwargs())
    foreign = tmp_path / "mine.npz"
    np.savez(foreign, embeddings=np.zeros((3, 200)))
    before = foreign.read_bytes()
    with pytest.raises(GraphCacheError, match="not an embedding cache written by skpolysrl"):
        cached_structure_embeddings(staged.model_, graphs, cache=foreign)
    assert foreign.read_bytes() == before


def test_variance_stage_is_skipped_with_a_warning_when_no_polymorph_spreads(monkeypatch):
    # regression: identical duplicate structures (spread 0) gave a zero floor, whose log is -inf
    from skpolysrl import recipes

    stoich = parse_formulas(["NaCl", "NaCl", "KCl", "Fe2O3"], known_atomic_numbers())
    ids = np.array([0, 0, 1, 2])
    plan = recipes._variance_plan(stoich, ids, StagedRecipe(n_alloys=0), np.random.default_rng(0))
    monkeypatch.setattr(recipes, "cached_structure_embeddings",
                        lambda model, graphs, **kw: np.ones((len(plan["rows"]), 4), dtype=np.float32))
    with pytest.warns(UserWarning, match="no spread"):
        records = recipes._variance_stage(None, ids, plan, lambda rows: None, StagedRecipe(), 0, "cpu", None, False,
                                          None)
    assert records == []


def test_max_sites_keeps_big_cells_out_of_structure_training_but_in_the_variance_stage(polymorph_corpus,
                                                                                       monkeypatch):
    from skpolysrl import recipes

    data = polymorph_corpus
    n_sites = np.array([len(s) for s in data.structure])
    cap = int(np.median(n_sites))
    requested = {}
    real_plan = recipes._variance_plan

    def spy_plan(*args, **kwargs):
        plan = real_plan(*args, **kwargs)
        requested["variance_rows"] = plan["rows"]
        return plan

    monkeypatch.setattr(recipes, "_variance_plan", spy_plan)
    monkeypatch.setattr(recipes, "_variance_stage", lambda *a, **k: [])  # the rows are what is checked
    calls = []
    real_pretrain = recipes.pretrain

    def spy_pretrain(model, table, ids, graphs, config, **kwargs):
        calls.append(len(graphs))
        return real_pretrain(model, table, ids, graphs, config, **kwargs)

    monkeypatch.setattr(recipes, "pretrain", spy_pretrain)
    recipe = StagedRecipe(stages=("realign", "variance"), realign_passes=10, batch_size=32, n_alloys=0, max_sites=cap)
    f = PolySRLFeaturizer(pretrained=None, random_state=0, verbose=False, device="cpu", recipe=recipe)
    f.fit(data)
    trainable = int((n_sites <= cap).sum())
    assert calls == [trainable]  # realign saw exactly the small cells (fewer than max_structure_rows)
    # the variance stage still embeds every structure of a polymorphic formula, big cells included
    counts = data.formula.map(data.formula.value_counts()).to_numpy()
    assert set(requested["variance_rows"]) == set(np.flatnonzero(counts > 1))
    assert (n_sites[requested["variance_rows"]] > cap).any()


def test_max_sites_needs_site_counts_and_enough_small_cells():
    from skpolysrl import recipes

    with pytest.raises(ValueError, match="needs the number of sites"):
        recipes._trainable_rows(5, None, 40)
    with pytest.raises(ValueError, match="raise max_sites"):
        recipes._trainable_rows(3, np.array([50, 60, 8]), 40)
    assert recipes._trainable_rows(3, np.array([50, 6, 8]), 40).tolist() == [1, 2]
    assert recipes._trainable_rows(3, None, None).tolist() == [0, 1, 2]


def test_structure_targets_teach_the_means_how_densely_a_formula_packs():
    """Without labels, the supervised stage learns volume per atom from the formula: a ridge on the means of
    formulas it never saw predicts it better than on the untrained means (same initial weights)."""
    from sklearn.linear_model import RidgeCV
    from sklearn.model_selection import cross_val_predict

    from skpolysrl.datasets import load_mp_structures
    from skpolysrl.graphs import structure_descriptors

    data = load_mp_structures().drop_duplicates("formula").sample(frac=1.0, random_state=0)
    train, test = data.iloc[:-1000], data.iloc[-1000:]
    volume = structure_descriptors(test.structure.tolist(), ("log_volume_per_atom",))[:, 0]
    recipe = StagedRecipe(stages=("supervised",), supervised_epochs=20)
    trained = PolySRLFeaturizer(pretrained=None, random_state=0, verbose=False, device="cpu", recipe=recipe)
    trained.fit(train)
    untrained = PolySRLFeaturizer(pretrained=None, random_state=0, verbose=False, device="cpu").fit(["NaCl"])

    def error(f):
        X = f.transform(test.formula.tolist())[:, :-1]
        pred = cross_val_predict(RidgeCV(alphas=np.logspace(-3, 3, 13)), X, volume, cv=5)
        return float(np.mean(np.abs(pred - volume)))

    # measured: 0.094 vs 0.100 (log units); the untrained means already carry most of it linearly
    assert error(trained) < 0.97 * error(untrained)
