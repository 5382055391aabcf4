"""The pretraining objectives beyond PolySRL's own: GraphCL and supervised, plus the augmentations."""

import numpy as np
import pytest
import torch

from skpolysrl import PolySRLFeaturizer
from skpolysrl._elements import known_atomic_numbers
from skpolysrl._formula import StoichiometryTable, parse_formulas
from skpolysrl.datasets import load_mp_property
from skpolysrl.training import OBJECTIVES, augment_stoichiometry, fully_connected_edges


def _table(formulas):
    return StoichiometryTable(parse_formulas(formulas, known_atomic_numbers()))


def test_fully_connected_edges_matches_the_numpy_collate():
    batch = _table(["NaCl", "Fe2O3", "O2", "BaTiO3", "LiFePO4"]).collate()
    z, w, edges, b = batch.to_torch()
    np.testing.assert_array_equal(fully_connected_edges(b, batch.num_graphs).numpy(), batch.edge_index)


def test_augmentations_keep_every_graph_valid():
    formulas = ["NaCl", "Fe2O3", "O2", "BaTiO3", "LiFePO4", "Cu", "Hg0.7Cd0.3Te"] * 20
    batch = _table(formulas).collate()
    z, w, _, b = batch.to_torch()
    g = torch.Generator().manual_seed(0)
    z2, w2, e2, b2 = augment_stoichiometry(z, w, b, batch.num_graphs, g, drop_prob=0.5)
    counts = torch.bincount(b2, minlength=batch.num_graphs)
    assert (counts >= 1).all(), "every graph keeps at least one element"
    assert len(z2) < len(z), "with p=0.5 over 500 nodes some are dropped"
    sums = torch.zeros(batch.num_graphs).index_add_(0, b2, w2)
    torch.testing.assert_close(sums, torch.ones(batch.num_graphs))  # fractions renormalised
    kept = set(zip(b2.tolist(), z2.tolist()))
    assert kept <= set(zip(b.tolist(), z.tolist())), "augmentation only removes elements"
    assert e2.shape[1] == int((counts**2).sum())
    # same generator state -> same view (deterministic, resumable)
    again = augment_stoichiometry(z, w, b, batch.num_graphs, torch.Generator().manual_seed(0), drop_prob=0.5)
    torch.testing.assert_close(again[1], w2)


def test_objective_list():
    assert set(OBJECTIVES) == {"polysrl", "deterministic", "infomax", "graphcl", "supervised"}


@pytest.mark.parametrize("objective", ["graphcl", "supervised"])
def test_formula_objectives_train_and_change_the_encoder(objective):
    data = load_mp_property("band_gap").iloc[:256]
    formulas, y = data["formula"].tolist(), data["target"].to_numpy()
    untrained = PolySRLFeaturizer(pretrained=None, random_state=0, verbose=False).fit(formulas).transform(formulas)
    f = PolySRLFeaturizer(pretrained=None, objective=objective, epochs=2, batch_size=64, lr=1e-3, random_state=0,
                          verbose=False, device="cpu")
    f.fit(formulas, y)
    trained = f.transform(formulas)
    assert np.isfinite(trained).all() and trained.shape == untrained.shape
    assert np.abs(trained - untrained).max() > 1e-2, "training must move the embeddings"
    losses = [h["loss"] for h in f.history_]
    assert len(losses) == 2 and losses[-1] < losses[0], losses
    assert f.n_formulas_ == 256
    assert not hasattr(f.model_, "property_head"), "the supervised head is not part of the saved model"
    # same seed, same result
    again = PolySRLFeaturizer(**f.get_params()).fit(formulas, y).transform(formulas)
    np.testing.assert_array_equal(again, trained)


def test_supervised_objective_learns_the_property():
    """After supervised pretraining a linear probe on the embedding predicts the MP gap better than before."""
    from sklearn.linear_model import Ridge
    from sklearn.model_selection import cross_val_score

    data = load_mp_property("band_gap").iloc[:400]
    formulas, y = data["formula"].tolist(), data["target"].to_numpy()
    base = PolySRLFeaturizer(pretrained=None, random_state=0, verbose=False).fit(formulas).transform(formulas)
    f = PolySRLFeaturizer(pretrained=None, objective="supervised", epochs=5, batch_size=64, lr=1e-3,
                          random_state=0, verbose=False, device="cpu").fit(formulas, y)
    X = f.transform(formulas)
    score = lambda feats: -cross_val_score(Ridge(1e-3), feats, y, cv=3, scoring="neg_mean_absolute_error").mean()
    assert score(X) < score(base)


def test_supervised_needs_targets_and_structure_objectives_need_structures():
    f = PolySRLFeaturizer(pretrained=None, objective="supervised", epochs=1, verbose=False)
    with pytest.raises(ValueError, match="fit\\(formulas, y\\)"):
        f.fit(["NaCl", "KCl"])
    with pytest.raises(ValueError, match="has 2 rows but y has 1"):
        f.fit(["NaCl", "KCl"], [1.0])
    with pytest.raises(ValueError, match="finite"):
        f.fit(["NaCl", "KCl"], [1.0, np.nan])


def test_graphcl_pretrains_on_structures_formulas(mp_small):
    f = PolySRLFeaturizer(pretrained=None, objective="graphcl", epochs=1, batch_size=128, random_state=0,
                          verbose=False, device="cpu").fit(mp_small[:100])
    assert f.n_structures_ == 100 and len(f.history_) == 1
