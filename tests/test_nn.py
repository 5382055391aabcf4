"""The stoichiometry encoder's fast forward equals PyG's GCNConv + Set2Set on the same weights.

The encoder holds PyG's parameters in plain torch modules (no torch_geometric import); these
tests build the PyG layers themselves and load the encoder's weights into them.
"""

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from skpolysrl import PolySRLFeaturizer
from skpolysrl._compat import import_torch_geometric
from skpolysrl._elements import known_atomic_numbers, matscholar_table
from skpolysrl._formula import StoichiometryTable, parse_formulas
from skpolysrl.nn import PolySRLModel, StoichiometryEncoder, segment_sum
from skpolysrl.training import _stoich_tensors

pyg = import_torch_geometric()


def pyg_layers(enc):
    """PyG's GCNConv and Set2Set modules carrying the encoder's weights."""
    d = enc.lin_mu.out_features
    convs = nn.ModuleList(pyg.nn.GCNConv(d, d, add_self_loops=False) for _ in enc.convs)
    set2sets = [pyg.nn.Set2Set(d, processing_steps=enc.set2set_mu.processing_steps) for _ in range(2)]
    for theirs, ours in zip([*convs, *set2sets], [*enc.convs, enc.set2set_mu, enc.set2set_sigma]):
        theirs.load_state_dict(ours.state_dict())
    return convs, set2sets


def pyg_forward(enc, z, w, edge_index, batch, n, layers=None):
    """The textbook computation: PyG's modules called as layers, messages along every edge."""
    convs, (set2set_mu, set2set_sigma) = layers or pyg_layers(enc)
    h = enc.input(enc.element_table[z])
    hs = [h]
    for conv in convs:
        h = h + F.elu(conv(h, edge_index))
        hs.append(h)
    h = enc.jumping_knowledge(torch.cat(hs, dim=-1)) * w[:, None]
    s = segment_sum(h, batch, n)
    mu = enc.lin_mu(set2set_mu(h, batch, dim_size=n)) + s
    log_sigma = enc.lin_sigma(set2set_sigma(h, batch, dim_size=n)) + s
    if enc.log_sigma_max is not None:  # the bound the variance stage sets (the shipped model has one)
        log_sigma = log_sigma.clamp(max=enc.log_sigma_max)
    return F.normalize(mu, dim=-1), log_sigma


def test_seeded_initialisation_and_state_dict_names_equal_pyg_modules():
    """Same seed -> the same weights, under the same names, as the encoder built from PyG's modules
    (so seeded runs and model files are unchanged)."""
    table = matscholar_table()
    torch.manual_seed(0)
    ours = StoichiometryEncoder(table, hidden_dim=200, n_layers=3, set2set_steps=2)
    torch.manual_seed(0)
    ref = nn.Module()  # the attributes in the order StoichiometryEncoder creates them
    ref.register_buffer("element_table", torch.tensor(np.asarray(table, dtype=np.float32)))
    ref.input = nn.Identity()
    ref.convs = nn.ModuleList(pyg.nn.GCNConv(200, 200, add_self_loops=False) for _ in range(3))
    ref.jumping_knowledge = nn.Linear(800, 200)
    ref.set2set_mu = pyg.nn.Set2Set(200, processing_steps=2)
    ref.set2set_sigma = pyg.nn.Set2Set(200, processing_steps=2)
    ref.lin_mu, ref.lin_sigma = nn.Linear(400, 200), nn.Linear(400, 200)
    a, b = ours.state_dict(), ref.state_dict()
    assert list(a) == list(b)
    for k in a:
        assert torch.equal(a[k], b[k]), k
    torch.manual_seed(0)
    StoichiometryEncoder(table)
    after_ours = torch.randn(5)
    torch.manual_seed(0)
    nn.ModuleList(pyg.nn.GCNConv(200, 200, add_self_loops=False) for _ in range(3))
    nn.Linear(800, 200), pyg.nn.Set2Set(200, 2), pyg.nn.Set2Set(200, 2), nn.Linear(400, 200), nn.Linear(400, 200)
    assert torch.equal(after_ours, torch.randn(5))  # both draw the same number of random values


@pytest.fixture(scope="module")
def band_gap_graphs(band_gap):
    stoich = parse_formulas(band_gap["formula"].tolist()[:600], known_atomic_numbers())
    table = StoichiometryTable(stoich)
    return _stoich_tensors(table, np.arange(len(table)), "cpu")


@pytest.mark.parametrize("pretrained", ["default", None])
def test_fast_stoichiometry_encoder_equals_pyg_layers(pretrained, band_gap_graphs):
    if pretrained is None:
        torch.manual_seed(0)
        enc = PolySRLModel(matscholar_table(), with_structure_encoder=False).stoichiometry
    else:
        enc = PolySRLFeaturizer(pretrained=pretrained, verbose=False, device="cpu").model_.stoichiometry
    z, w, edges, batch = band_gap_graphs
    n = int(batch.max()) + 1
    with torch.no_grad():
        mu, log_sigma = enc(z, w, edges, batch, n)
        ref_mu, ref_log_sigma = pyg_forward(enc, z, w, edges, batch, n)
    np.testing.assert_allclose(mu.numpy(), ref_mu.numpy(), atol=2e-6)
    np.testing.assert_allclose(log_sigma.numpy(), ref_log_sigma.numpy(), atol=2e-5, rtol=1e-5)


def test_fast_stoichiometry_encoder_has_pyg_gradients(band_gap_graphs):
    enc = copy.deepcopy(PolySRLFeaturizer(pretrained="default", verbose=False, device="cpu").model_.stoichiometry)
    z, w, edges, batch = band_gap_graphs
    n = int(batch.max()) + 1
    target = torch.randn(n, enc.lin_mu.out_features, generator=torch.Generator().manual_seed(0))

    def grads(forward, layers=None):
        enc.zero_grad()
        mu, log_sigma = forward(enc, z, w, edges, batch, n)
        ((mu * target).sum() + (log_sigma.exp() * target).mean()).backward()
        named = dict(enc.named_parameters())
        if layers is not None:  # the PyG copies of the GCN and Set2Set weights got those gradients
            convs, (s2s_mu, s2s_sigma) = layers
            named.update({f"{prefix}.{k}": p for prefix, module in
                          [*((f"convs.{i}", c) for i, c in enumerate(convs)), ("set2set_mu", s2s_mu),
                           ("set2set_sigma", s2s_sigma)] for k, p in module.named_parameters()})
        return {k: p.grad.clone() for k, p in named.items() if p.grad is not None}

    fast = grads(lambda enc, *a: enc(*a))
    layers = pyg_layers(enc)
    ref = grads(lambda *a: pyg_forward(*a, layers=layers), layers)
    assert fast.keys() == ref.keys() and len(fast) == len(list(enc.parameters()))
    for k in ref:
        scale = float(ref[k].abs().max())
        np.testing.assert_allclose(fast[k].numpy(), ref[k].numpy(), atol=1e-4 * max(scale, 1e-6), err_msg=k)


def test_stoichiometry_encoder_refuses_graphs_that_are_not_complete(band_gap_graphs):
    enc = PolySRLFeaturizer(pretrained="default", verbose=False, device="cpu").model_.stoichiometry
    z, w, edges, batch = band_gap_graphs
    with pytest.raises(ValueError, match="complete graphs with self loops"):
        enc(z, w, edges[:, :-1], batch, int(batch.max()) + 1)
