"""PolySRL's neural networks: structure encoder, probabilistic stoichiometry encoder.

Data (graphs) is built in :mod:`skpolysrl.graphs` and :mod:`skpolysrl._formula`;
these modules only consume index tensors. Hidden size 200 everywhere, as the paper.
"""

import dataclasses
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .graphs import GraphSettings

__all__ = ["StructureEncoder", "StoichiometryEncoder", "PolySRLModel", "ModelConfig", "build_head",
           "output_features", "output_features_np"]


def output_features(mu, log_sigma):
    """The featurizer's output columns from a batch of Gaussians (torch tensors).

    The mean embedding, then one uncertainty column: the geometric mean of the
    diagonal variances, ``exp(mean(2 log sigma))``. Every place that turns
    (mean, log sigma) into features (``transform``, the held-out probe, the
    regressor) uses this definition.
    """
    return torch.cat([mu, torch.exp((2 * log_sigma).mean(dim=1, keepdim=True))], dim=1)


def output_features_np(mu, log_sigma, dtype=np.float64):
    """:func:`output_features` for numpy arrays (the uncertainty is computed in float64)."""
    uncertainty = np.exp(np.mean(2.0 * np.asarray(log_sigma, dtype=np.float64), axis=1, keepdims=True))
    return np.hstack([np.asarray(mu, dtype=dtype), uncertainty.astype(dtype)])


def build_head(n_features, hidden_dim, n_outputs=1):
    """The paper's probe head: Linear-LeakyReLU-Linear-LeakyReLU-Linear, Xavier-uniform weights, zero biases.

    ``n_outputs`` > 1: one output per property (multi-task supervised pretraining).

    Draws from torch's global generator: wrap in :func:`skpolysrl._runtime.seeded` for a seeded head.
    """
    module = nn.Sequential(
        nn.Linear(n_features, hidden_dim),
        nn.LeakyReLU(),
        nn.Linear(hidden_dim, hidden_dim),
        nn.LeakyReLU(),
        nn.Linear(hidden_dim, n_outputs),
    )
    with torch.no_grad():
        for layer in module:
            if isinstance(layer, nn.Linear):
                nn.init.xavier_uniform_(layer.weight)
                layer.bias.zero_()
    return module


def segment_sum(x, index, num_segments):
    """Sum rows of ``x`` that share ``index`` (deterministic on CPU)."""
    return x.new_zeros((num_segments, x.shape[1])).index_add_(0, index, x)


def segment_softmax(e, index, num_segments):
    """Softmax of the 1-D scores ``e`` within each segment ``index`` (as PyG's ``softmax``)."""
    top = e.detach().new_full((num_segments,), float("-inf")).scatter_reduce_(0, index, e.detach(), "amax")
    ex = torch.exp(e - top.index_select(0, index))
    total = ex.new_zeros(num_segments).index_add_(0, index, ex) + 1e-16
    return ex / total.index_select(0, index)


def set2set(module, x, batch, num_graphs):
    """PyG ``Set2Set`` readout computed with ``module``'s LSTM weights, without its wasted work.

    The first processing step starts from a zero state and a zero input, so its
    LSTM output is one vector shared by every graph, and so is the ``q`` half of
    the next step's input: state and ``q`` are kept as one broadcast row until
    they differ between graphs, and the LSTM's matrix products only touch the
    per-graph part ``r``. Same function as ``module(x, batch, dim_size=num_graphs)``
    up to float rounding (tests compare them).
    """
    lstm = module.lstm
    d = module.in_channels
    w_ih, w_hh = lstm.weight_ih_l0, lstm.weight_hh_l0
    bias = (lstm.bias_ih_l0 + lstm.bias_hh_l0)[None, :]
    h = c = None  # zero state
    q = r = None  # zero input
    for _ in range(module.processing_steps):
        gates = bias
        if q is not None:
            gates = gates + F.linear(q, w_ih[:, :d]) + F.linear(r, w_ih[:, d:])
        if h is not None:
            gates = gates + F.linear(h, w_hh)
        i, f, g, o = gates.chunk(4, dim=-1)
        c = torch.sigmoid(i) * torch.tanh(g) if c is None else torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        q = h  # one row (first step) or one per graph
        q_nodes = q.expand(x.shape[0], -1) if q.shape[0] == 1 else q.index_select(0, batch)
        a = segment_softmax((x * q_nodes).sum(dim=-1), batch, num_graphs)
        r = segment_sum(a[:, None] * x, batch, num_graphs)
    return torch.cat([q.expand(num_graphs, -1), r], dim=-1)


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


class _GCNWeights(nn.Module):
    """The parameters of PyG's ``GCNConv(d, d)`` (``lin.weight``, ``bias``): names, shapes and seeded
    initialisation alike (glorot drawn twice, as PyG's constructor does, and a zero bias), so
    model files and seeded runs are unchanged without importing torch_geometric. The layer
    itself is computed in :meth:`StoichiometryEncoder.node_embeddings`."""

    def __init__(self, in_dim, out_dim):
        super().__init__()
        self.lin = nn.Module()  # holds lin.weight as PyG names it; torch.empty draws no random numbers
        self.lin.weight = nn.Parameter(torch.empty(out_dim, in_dim))
        self.bias = nn.Parameter(torch.zeros(out_dim))
        bound = float(np.sqrt(6.0 / (in_dim + out_dim)))
        with torch.no_grad():
            for _ in range(2):  # PyG's Linear initialises on construction, GCNConv once more
                self.lin.weight.uniform_(-bound, bound)


class _Set2SetWeights(nn.Module):
    """The parameters of PyG's ``Set2Set(d, steps)`` (an ``lstm`` of input 2d, hidden d) with its
    seeded initialisation (the LSTM's default drawn twice: on construction and by Set2Set's
    ``reset_parameters``). The readout itself is :func:`set2set`."""

    def __init__(self, in_channels, processing_steps):
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = 2 * in_channels
        self.processing_steps = processing_steps
        self.lstm = nn.LSTM(self.out_channels, in_channels)
        self.lstm.reset_parameters()


class StoichiometryEncoder(nn.Module):
    """Stoichiometry graph -> Gaussian (mean, log sigma), each (n_graphs, hidden_dim).

    GCN layers (ELU, residual) with jumping knowledge (concatenation of the input
    and every layer, then Linear), node features scaled by their fractions, then
    mean = normalise(Linear(Set2Set_mu(h)) + s) and
    log sigma = Linear(Set2Set_sigma(h)) + s, with s the fraction-weighted sum.
    """

    def __init__(self, element_table, hidden_dim=200, n_layers=3, set2set_steps=2, log_sigma_init=None,
                 log_sigma_max=None):
        super().__init__()
        self.log_sigma_max = log_sigma_max
        element_table = torch.tensor(np.array(element_table, dtype=np.float32))
        self.register_buffer("element_table", element_table)
        in_dim = element_table.shape[1]
        self.input = nn.Identity() if in_dim == hidden_dim else nn.Linear(in_dim, hidden_dim)
        # GCN layers without self loops added (the graph is fully connected *with* them already) and
        # Set2Set readouts: these modules hold PyG's parameters (names, initialisation); forward
        # computes the same functions faster (node_embeddings, set2set) and needs no torch_geometric
        self.convs = nn.ModuleList(_GCNWeights(hidden_dim, hidden_dim) for _ in range(n_layers))
        self.jumping_knowledge = nn.Linear(hidden_dim * (n_layers + 1), hidden_dim)
        self.set2set_mu = _Set2SetWeights(hidden_dim, set2set_steps)
        self.set2set_sigma = _Set2SetWeights(hidden_dim, set2set_steps)
        self.lin_mu = nn.Linear(2 * hidden_dim, hidden_dim)
        self.lin_sigma = nn.Linear(2 * hidden_dim, hidden_dim)
        if log_sigma_init is not None:  # start with small variances: samples near the mean, not noise
            nn.init.constant_(self.lin_sigma.bias, float(log_sigma_init))

    def node_embeddings(self, atomic_numbers, weights, edge_index, batch, num_graphs):
        """Fraction-weighted element representations, (n_nodes, hidden_dim).

        ``edge_index`` must hold each graph's complete graph with self loops (as
        :class:`~skpolysrl._formula.StoichiometryTable` builds it); only its edge
        count is checked, because the layers are computed per graph:

        On a complete graph a GCN layer gives every node the same message, its
        graph's mean (weights 1/n from the symmetric normalisation), so after layer k a node is its
        input vector plus a per-graph shift, ``h_k = h_0 + t_k[graph]``, with
        ``t_k = t_{k-1} + elu(GCN(mean(h_0) + t_{k-1}))``. Jumping knowledge is
        linear, ``sum_k W_k h_k + b = (sum_k W_k) h_0 + b + sum_k W_k t_k``: an
        element term (a product on the ~100-row element table) plus a graph
        term. Every matrix product runs on elements or graphs, none on nodes;
        the result is the layer-by-layer computation's up to float rounding
        (tests compare it with PyG's GCNConv).
        """
        counts = torch.bincount(batch, minlength=num_graphs)
        if edge_index.shape[1] != int((counts * counts).sum()):
            raise ValueError(f"stoichiometry graphs must be complete graphs with self loops (sum of n_i^2 = "
                             f"{int((counts * counts).sum())} edges), got {edge_index.shape[1]} edges")
        elements = self.input(self.element_table)  # h_0 of every element
        jk_weights = self.jumping_knowledge.weight.split(elements.shape[1], dim=1)
        mean_input = segment_sum(elements.index_select(0, atomic_numbers), batch, num_graphs)
        mean_input = mean_input / counts.clamp(min=1).to(mean_input.dtype)[:, None]
        shift = graph_term = None
        for conv, jk_weight in zip(self.convs, jk_weights[1:]):
            mean = mean_input if shift is None else mean_input + shift
            step = F.elu(F.linear(mean, conv.lin.weight, conv.bias))
            shift = step if shift is None else shift + step
            graph_term = F.linear(shift, jk_weight) if graph_term is None else graph_term + F.linear(shift, jk_weight)
        element_term = F.linear(elements, sum(jk_weights), self.jumping_knowledge.bias)
        h = element_term.index_select(0, atomic_numbers)
        if graph_term is not None:
            h = h + graph_term.index_select(0, batch)
        return h * weights[:, None]

    def forward(self, atomic_numbers, weights, edge_index, batch, num_graphs):
        h = self.node_embeddings(atomic_numbers, weights, edge_index, batch, num_graphs)
        s = segment_sum(h, batch, num_graphs)
        mu = self.lin_mu(set2set(self.set2set_mu, h, batch, num_graphs)) + s
        log_sigma = self.lin_sigma(set2set(self.set2set_sigma, h, batch, num_graphs)) + s
        if self.log_sigma_max is not None:
            log_sigma = log_sigma.clamp(max=self.log_sigma_max)
        return F.normalize(mu, dim=-1), log_sigma


_GRAPH_DEFAULTS = GraphSettings()


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Everything that defines a :class:`PolySRLModel` besides its weights, written into model files.

    The architecture, the initial match scale/shift and log-sigma bias, the
    bound on log sigma that the variance stage sets (``log_sigma_max``: half the
    log of the largest polymorph spread it fitted, so that no formula, however far
    from the training formulas, is given a wider Gaussian than the widest polymorph
    family seen; None = unbounded), and the graph settings
    (:class:`~skpolysrl.graphs.GraphSettings`) the structure encoder was trained
    with, so a saved model builds its graphs as in training.
    ``config["hidden_dim"]`` (dict-style reading) works as for the plain dicts
    of format-1 model files, which load with the graph defaults.
    """

    hidden_dim: int = 200
    stoichiometry_layers: int = 3
    structure_layers: int = 3
    set2set_steps: int = 2
    n_gaussians: int = _GRAPH_DEFAULTS.n_gaussians
    c_init: float = 20.0
    d_init: float = 20.0
    log_sigma_init: Optional[float] = None
    log_sigma_max: Optional[float] = None
    cutoff: float = _GRAPH_DEFAULTS.cutoff
    max_neighbors: int = _GRAPH_DEFAULTS.max_neighbors
    gaussian_start: float = _GRAPH_DEFAULTS.gaussian_start
    gaussian_stop: float = _GRAPH_DEFAULTS.gaussian_stop
    gaussian_step: float = _GRAPH_DEFAULTS.gaussian_step
    gaussian_width: float = _GRAPH_DEFAULTS.gaussian_width

    def __post_init__(self):
        centres = self.graph.n_gaussians
        if self.n_gaussians != centres:
            raise ValueError(f"n_gaussians={self.n_gaussians} but the Gaussian centres from gaussian_start to "
                             f"gaussian_stop every gaussian_step number {centres}: make them agree")

    @classmethod
    def from_dict(cls, values):
        """A config from a dict (a model file's); unknown keys raise ValueError naming them."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ValueError(f"unknown model config keys {unknown}; known: {sorted(names)}")
        return cls(**values)

    def to_dict(self):
        return dataclasses.asdict(self)

    def __getitem__(self, key):
        return getattr(self, key)

    @property
    def graph(self):
        """The :class:`~skpolysrl.graphs.GraphSettings` part."""
        return GraphSettings(**{f.name: getattr(self, f.name) for f in dataclasses.fields(GraphSettings)})


class PolySRLModel(nn.Module):
    """Both encoders plus the learnable match scale ``c`` and shift ``d``.

    ``config`` (a :class:`ModelConfig`, built from the keyword arguments) holds
    every constructor setting, so weights + config rebuild the model without
    pickled code.
    """

    def __init__(self, element_table, with_structure_encoder=True, config=None, **settings):
        super().__init__()
        if config is not None and settings:
            raise TypeError("pass either config= or ModelConfig keyword arguments, not both")
        cfg = self.config = config if config is not None else ModelConfig(**settings)
        self.stoichiometry = StoichiometryEncoder(element_table, cfg.hidden_dim, cfg.stoichiometry_layers,
                                                  cfg.set2set_steps, cfg.log_sigma_init, cfg.log_sigma_max)
        self.structure = (StructureEncoder(cfg.hidden_dim, cfg.structure_layers, cfg.n_gaussians)
                          if with_structure_encoder else None)
        self.c = nn.Parameter(torch.tensor(float(cfg.c_init)))
        self.d = nn.Parameter(torch.tensor(float(cfg.d_init)))

    def bound_log_sigma(self, value):
        """Set (or with None, lift) the upper bound on every log sigma, in the config and the encoder."""
        value = None if value is None else float(value)
        self.config = dataclasses.replace(self.config, log_sigma_max=value)
        self.stoichiometry.log_sigma_max = value
        return self

    def add_structure_encoder(self):
        """Give a stoichiometry-only model (e.g. shipped weights) a fresh structure encoder."""
        if self.structure is None:
            cfg = self.config
            self.structure = StructureEncoder(cfg["hidden_dim"], cfg["structure_layers"], cfg["n_gaussians"]).to(self.c.device)
        return self

    def match_logits(self, distances):
        return -self.c * distances + self.d
