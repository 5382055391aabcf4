"""The stoichiometry encoder's fast forward equals PyG's GCNConv + Set2Set on the same weights."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from skpolysrl import PolySRLFeaturizer
from skpolysrl._elements import known_atomic_numbers
from skpolysrl._formula import StoichiometryTable, parse_formulas
from skpolysrl.nn import segment_sum
from skpolysrl.training import _stoich_tensors


def pyg_forward(enc, z, w, edge_index, batch, n):
    """The textbook computation: PyG's modules called as layers, messages along every edge."""
    h = enc.input(enc.element_table[z])
    layers = [h]
    for conv in enc.convs:
        h = h + F.elu(conv(h, edge_index))
        layers.append(h)
    h = enc.jumping_knowledge(torch.cat(layers, dim=-1)) * w[:, None]
    s = segment_sum(h, batch, n)
    mu = enc.lin_mu(enc.set2set_mu(h, batch, dim_size=n)) + s
    log_sigma = enc.lin_sigma(enc.set2set_sigma(h, batch, dim_size=n)) + s
    return F.normalize(mu, dim=-1), log_sigma


@pytest.fixture(scope="module")
def band_gap_graphs(band_gap):
    stoich = parse_formulas(band_gap["formula"].tolist()[:600], known_atomic_numbers())
    table = StoichiometryTable(stoich)
    return _stoich_tensors(table, np.arange(len(table)), "cpu")


@pytest.mark.parametrize("pretrained", ["default", None])
def test_fast_stoichiometry_encoder_equals_pyg_layers(pretrained, band_gap_graphs):
    model = PolySRLFeaturizer(pretrained=pretrained, random_state=0, verbose=False, device="cpu").fit(["H"]).model_
    enc = model.stoichiometry
    z, w, edges, batch = band_gap_graphs
    n = int(batch.max()) + 1
    with torch.no_grad():
        mu, log_sigma = enc(z, w, edges, batch, n)
        ref_mu, ref_log_sigma = pyg_forward(enc, z, w, edges, batch, n)
    np.testing.assert_allclose(mu.numpy(), ref_mu.numpy(), atol=2e-6)
    np.testing.assert_allclose(log_sigma.numpy(), ref_log_sigma.numpy(), atol=2e-5, rtol=1e-5)


def test_fast_stoichiometry_encoder_has_pyg_gradients(band_gap_graphs):
    enc = PolySRLFeaturizer(pretrained="default", verbose=False, device="cpu").fit(["H"]).model_.stoichiometry
    z, w, edges, batch = band_gap_graphs
    n = int(batch.max()) + 1
    target = torch.randn(n, enc.lin_mu.out_features, generator=torch.Generator().manual_seed(0))

    def grads(forward):
        enc.zero_grad()
        mu, log_sigma = forward(enc, z, w, edges, batch, n)
        ((mu * target).sum() + (log_sigma.exp() * target).mean()).backward()
        return {k: p.grad.clone() for k, p in enc.named_parameters() if p.grad is not None}

    fast = grads(lambda enc, *a: enc(*a))
    ref = grads(pyg_forward)
    assert fast.keys() == ref.keys() and len(fast) == len(list(enc.parameters()))
    for k in ref:
        scale = float(ref[k].abs().max())
        np.testing.assert_allclose(fast[k].numpy(), ref[k].numpy(), atol=1e-4 * max(scale, 1e-6), err_msg=k)


def test_stoichiometry_encoder_refuses_graphs_that_are_not_complete(band_gap_graphs):
    enc = PolySRLFeaturizer(pretrained="default", verbose=False, device="cpu").fit(["H"]).model_.stoichiometry
    z, w, edges, batch = band_gap_graphs
    with pytest.raises(ValueError, match="complete graphs with self loops"):
        enc(z, w, edges[:, :-1], batch, int(batch.max()) + 1)
