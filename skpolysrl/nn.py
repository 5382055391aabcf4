"""PolySRL's neural networks: structure encoder, probabilistic stoichiometry encoder.

Data (graphs) is built in :mod:`skpolysrl.graphs` and :mod:`skpolysrl._formula`;
these modules only consume index tensors. Hidden size 200 everywhere, as the paper.
"""

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ._compat import import_torch_geometric

__all__ = ["StructureEncoder", "StoichiometryEncoder", "PolySRLModel"]


def segment_sum(x, index, num_segments):
    """Sum rows of ``x`` that share ``index`` (deterministic on CPU)."""
    return x.new_zeros((num_segments, x.shape[1])).index_add_(0, index, x)


class _MLP(nn.Sequential):
    """Linear -> LayerNorm -> PReLU -> Linear (the graph network's update MLP)."""

    def __init__(self, in_dim, hidden_dim, out_dim):
        super().__init__(nn.Linear(in_dim, hidden_dim), nn.LayerNorm(hidden_dim), nn.PReLU(), nn.Linear(hidden_dim, out_dim))


class GraphNetworkLayer(nn.Module):
    """One graph-network processor step (Battaglia et al. 2018), residual on nodes and edges.

    edge' = edge + MLP([x_src, x_dst, edge]);  x' = x + MLP([x, sum of incoming edge']).
    The first Linear of the edge MLP is applied per node before gathering
    (W [x_src, x_dst, e] = (W_s x)[src] + (W_d x)[dst] + W_e e), which is the
    same function at a third of the cost, since atoms are ~12x fewer than edges.
    """

    def __init__(self, hidden_dim):
        super().__init__()
        self.hidden_dim = hidden_dim
        self.edge_mlp = _MLP(3 * hidden_dim, 2 * hidden_dim, hidden_dim)
        self.node_mlp = _MLP(2 * hidden_dim, 2 * hidden_dim, hidden_dim)

    def forward(self, x, edge_attr, edge_index):
        src, dst = edge_index
        h = self.hidden_dim
        first = self.edge_mlp[0]
        w_src, w_dst, w_edge = first.weight[:, :h], first.weight[:, h : 2 * h], first.weight[:, 2 * h :]
        # index_select, not x[src]: its backward is index_add_ (deterministic, ~2x faster on CPU) where
        # advanced indexing's is an accumulating index_put_ whose multi-threaded sum order varies with load
        pre = ((x @ w_src.t()).index_select(0, src) + (x @ w_dst.t()).index_select(0, dst)
               + F.linear(edge_attr, w_edge, first.bias))
        for i in range(1, len(self.edge_mlp)):
            pre = self.edge_mlp[i](pre)
        edge_attr = edge_attr + pre
        incoming = segment_sum(edge_attr, dst, x.shape[0])
        x = x + self.node_mlp(torch.cat([x, incoming], dim=-1))
        return x, edge_attr


class StructureEncoder(nn.Module):
    """Crystal structure graph -> L2-normalised vector (geometry only).

    Every atom starts from the same learnable vector; edges from a Gaussian
    expansion of the distance. Readout: sum over atoms, then L2 normalisation.
    """

    def __init__(self, hidden_dim=200, n_layers=3, n_gaussians=41):
        super().__init__()
        self.atom_vector = nn.Parameter(torch.randn(hidden_dim))
        self.node_encoder = nn.Sequential(nn.Linear(hidden_dim, hidden_dim), nn.PReLU(), nn.Linear(hidden_dim, hidden_dim))
        self.edge_encoder = nn.Sequential(nn.Linear(n_gaussians, hidden_dim), nn.PReLU(), nn.Linear(hidden_dim, hidden_dim))
        self.layers = nn.ModuleList(GraphNetworkLayer(hidden_dim) for _ in range(n_layers))

    def forward(self, edge_features, edge_index, batch, num_graphs):
        x = self.node_encoder(self.atom_vector).expand(batch.shape[0], -1)
        e = self.edge_encoder(edge_features)
        for layer in self.layers:
            x, e = layer(x, e, edge_index)
        return F.normalize(segment_sum(x, batch, num_graphs), dim=-1)


class StoichiometryEncoder(nn.Module):
    """Stoichiometry graph -> Gaussian (mean, log sigma), each (n_graphs, hidden_dim).

    GCN layers (ELU, residual) with jumping knowledge (concatenation of the input
    and every layer, then Linear), node features scaled by their fractions, then
    mean = normalise(Linear(Set2Set_mu(h)) + s) and
    log sigma = Linear(Set2Set_sigma(h)) + s, with s the fraction-weighted sum.
    """

    def __init__(self, element_table, hidden_dim=200, n_layers=3, set2set_steps=2, log_sigma_init=None):
        super().__init__()
        pyg = import_torch_geometric()
        element_table = torch.tensor(np.array(element_table, dtype=np.float32))
        self.register_buffer("element_table", element_table)
        in_dim = element_table.shape[1]
        self.input = nn.Identity() if in_dim == hidden_dim else nn.Linear(in_dim, hidden_dim)
        # the graph is fully connected *with* self loops already: don't add more
        self.convs = nn.ModuleList(
            pyg.nn.GCNConv(hidden_dim, hidden_dim, add_self_loops=False) for _ in range(n_layers)
        )
        self.jumping_knowledge = nn.Linear(hidden_dim * (n_layers + 1), hidden_dim)
        self.set2set_mu = pyg.nn.Set2Set(hidden_dim, processing_steps=set2set_steps)
        self.set2set_sigma = pyg.nn.Set2Set(hidden_dim, processing_steps=set2set_steps)
        self.lin_mu = nn.Linear(2 * hidden_dim, hidden_dim)
        self.lin_sigma = nn.Linear(2 * hidden_dim, hidden_dim)
        if log_sigma_init is not None:  # start with small variances: samples near the mean, not noise
            nn.init.constant_(self.lin_sigma.bias, float(log_sigma_init))

    def node_embeddings(self, atomic_numbers, weights, edge_index):
        """Fraction-weighted element representations, (n_nodes, hidden_dim)."""
        h = self.input(self.element_table[atomic_numbers])
        layers = [h]
        for conv in self.convs:
            h = h + F.elu(conv(h, edge_index))
            layers.append(h)
        h = self.jumping_knowledge(torch.cat(layers, dim=-1))
        return h * weights[:, None]

    def forward(self, atomic_numbers, weights, edge_index, batch, num_graphs):
        h = self.node_embeddings(atomic_numbers, weights, edge_index)
        s = segment_sum(h, batch, num_graphs)
        mu = self.lin_mu(self.set2set_mu(h, batch, dim_size=num_graphs)) + s
        log_sigma = self.lin_sigma(self.set2set_sigma(h, batch, dim_size=num_graphs)) + s
        return F.normalize(mu, dim=-1), log_sigma


class PolySRLModel(nn.Module):
    """Both encoders plus the learnable match scale ``c`` and shift ``d``.

    ``config`` holds every constructor argument, so weights + config rebuild
    the model without pickled code.
    """

    def __init__(self, element_table, hidden_dim=200, stoichiometry_layers=3, structure_layers=3,
                 set2set_steps=2, n_gaussians=41, c_init=20.0, d_init=20.0, log_sigma_init=None,
                 with_structure_encoder=True):
        super().__init__()
        self.config = dict(
            hidden_dim=hidden_dim, stoichiometry_layers=stoichiometry_layers, structure_layers=structure_layers,
            set2set_steps=set2set_steps, n_gaussians=n_gaussians, c_init=c_init, d_init=d_init,
            log_sigma_init=log_sigma_init,
        )
        self.stoichiometry = StoichiometryEncoder(element_table, hidden_dim, stoichiometry_layers, set2set_steps,
                                                  log_sigma_init)
        self.structure = StructureEncoder(hidden_dim, structure_layers, n_gaussians) if with_structure_encoder else None
        self.c = nn.Parameter(torch.tensor(float(c_init)))
        self.d = nn.Parameter(torch.tensor(float(d_init)))

    def add_structure_encoder(self):
        """Give a stoichiometry-only model (e.g. shipped weights) a fresh structure encoder."""
        if self.structure is None:
            cfg = self.config
            self.structure = StructureEncoder(cfg["hidden_dim"], cfg["structure_layers"], cfg["n_gaussians"]).to(self.c.device)
        return self

    def match_logits(self, distances):
        return -self.c * distances + self.d
