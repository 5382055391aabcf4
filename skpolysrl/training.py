"""Contrastive pretraining of a :class:`~skpolysrl.nn.PolySRLModel` and its monitoring.

Each objective is a module, :class:`_BatchObjective` (``forward(idx) -> (loss, stats)``),
trained by the package's one loop, :class:`skpolysrl.engine.Trainer`;
:func:`pretrain` builds it from a :class:`PretrainConfig`. The loss alone says
little (it can fall while the representation collapses, see docs/method.md), so
every epoch also records the fraction of positive and negative pairs on the
right side of the match threshold, and, through callbacks
(:func:`pretraining_callbacks`), the effective rank and mean cosine of formula
embeddings and optionally a held-out probe score.
"""

import dataclasses
from typing import Optional

import numpy as np
import torch

from . import distributed as _ddp
from ._elements import known_atomic_numbers
from ._formula import StoichiometryTable, parse_formula
from ._runtime import seeded
from .engine import (Callback, Checkpoint, CollapseMonitor, EpochEndFunction, EpochLog, FreezeParameters,
                     HeldOutMonitor, KeepBest, ProgressBar, Trainer, embedding_diagnostics)
from .evaluation import MLPHeadRegressor, cross_validate_probe
from .graphs import gaussian_expansion
from .loss import PAIR_REDUCTIONS, kl_to_standard_normal, nt_xent_loss, pair_logits, polymorph_match, soft_contrastive_loss
from .nn import build_head, output_features_np

__all__ = ["pretrain", "PretrainConfig", "pretraining_callbacks", "encode", "embedding_diagnostics",
           "augment_stoichiometry", "HeldOutProbe", "OBJECTIVES", "STRUCTURE_OBJECTIVES"]

#: "polysrl": sampled Gaussian embeddings; "deterministic": the mean only (paper's "w/o Sampling");
#: "infomax": NT-Xent (temperature 0.2) between formula mean and structure (3D Infomax baseline);
#: "graphcl": NT-Xent between two random augmentations of each stoichiometry graph (GraphCL baseline);
#: "supervised": L1 regression of a per-formula property from the mean (the paper's "MP Band G." / "MP Form. E.").
OBJECTIVES = ("polysrl", "deterministic", "infomax", "graphcl", "supervised")
#: Objectives that pair each formula with a crystal structure; the others need formulas only.
STRUCTURE_OBJECTIVES = ("polysrl", "deterministic", "infomax")


def _stoich_tensors(table, indices, device):
    return table.collate(indices).to_torch(device)


def fully_connected_edges(batch, num_graphs):
    """Edges (2, sum n_g^2) joining every pair of nodes of each graph, self loops included.

    ``batch`` gives each node's graph and must be sorted (nodes of a graph contiguous).
    """
    counts = torch.bincount(batch, minlength=num_graphs)
    starts = torch.cumsum(counts, 0) - counts
    pairs = counts * counts
    graph_of_pair = torch.repeat_interleave(torch.arange(num_graphs, device=batch.device), pairs)
    offset = torch.arange(int(pairs.sum()), device=batch.device) - torch.repeat_interleave(
        torch.cumsum(pairs, 0) - pairs, pairs)
    n = counts[graph_of_pair]
    start = starts[graph_of_pair]
    return torch.stack([start + offset // n, start + offset % n])


def augment_stoichiometry(atomic_numbers, weights, batch, num_graphs, generator, drop_prob=0.2, weight_noise=0.2):
    """A random view of a batch of stoichiometry graphs (GraphCL's augmentations, adapted).

    Node dropping: each element is removed with probability ``drop_prob`` (every
    graph keeps at least one). Fraction perturbation: the surviving fractions are
    multiplied by log-normal noise of scale ``weight_noise``. Fractions are then
    renormalised to sum to one and the graph is fully connected again.
    Returns ``(atomic_numbers, weights, edge_index, batch)``.
    """
    device = atomic_numbers.device
    keep = torch.rand(len(atomic_numbers), generator=generator, device=device) >= drop_prob
    counts = torch.bincount(batch, minlength=num_graphs)
    kept = torch.bincount(batch[keep], minlength=num_graphs)
    first = torch.cumsum(counts, 0) - counts
    empty = kept == 0
    keep[first[empty]] = True  # a graph that lost every node keeps its first one
    z, w, b = atomic_numbers[keep], weights[keep], batch[keep]
    if weight_noise:
        w = w * torch.exp(weight_noise * torch.randn(len(w), generator=generator, device=device))
    total = torch.zeros(num_graphs, dtype=w.dtype, device=device).index_add_(0, b, w)
    w = w / total[b]
    return z, w, fully_connected_edges(b, num_graphs), b


def _select_graphs(atomic_numbers, weights, batch, num_graphs, positions):
    """Graphs ``positions`` of a batch of stoichiometry graphs, renumbered 0..len(positions)-1 and fully
    connected again: ``(atomic_numbers, weights, edge_index, batch)``."""
    device = atomic_numbers.device
    counts = torch.bincount(batch, minlength=num_graphs)
    starts = torch.cumsum(counts, 0) - counts
    positions = torch.as_tensor(positions, dtype=torch.long, device=device)
    n = counts[positions]
    offsets = torch.cumsum(n, 0) - n
    nodes = torch.repeat_interleave(starts[positions] - offsets, n) + torch.arange(int(n.sum()), device=device)
    b = torch.repeat_interleave(torch.arange(len(positions), device=device), n)
    return atomic_numbers[nodes], weights[nodes], fully_connected_edges(b, len(positions)), b


# BLAS rounds a row differently when it falls in a partial block of rows (fewer than 16 graphs, or a
# 17th / 33rd... graph: measured on CPU with the v4b and v8 weights): encoding a multiple of this many
# graphs keeps each formula's row independent of the batch it comes in.
ENCODE_ROW_BLOCK = 16


@torch.no_grad()
def encode(model, table, batch_size=4096, device="cpu"):
    """Mean and log-sigma of every row of a StoichiometryTable, as float32 numpy arrays.

    Each chunk is padded (with its first row) to a multiple of :data:`ENCODE_ROW_BLOCK` graphs, so a
    row's values do not depend on the other rows or on ``batch_size``.
    """
    model.eval()
    batch_size = -(-batch_size // ENCODE_ROW_BLOCK) * ENCODE_ROW_BLOCK
    mus, log_sigmas = [], []
    for start in range(0, len(table), batch_size):
        n = min(batch_size, len(table) - start)
        idx = np.arange(start, start + n)
        idx = np.concatenate([idx, np.full(-n % ENCODE_ROW_BLOCK, start)])
        z, w, edge_index, batch = _stoich_tensors(table, idx, device)
        mu, log_sigma = model.stoichiometry(z, w, edge_index, batch, len(idx))
        mus.append(mu[:n].float().cpu().numpy())
        log_sigmas.append(log_sigma[:n].float().cpu().numpy())
    return np.concatenate(mus), np.concatenate(log_sigmas)


class HeldOutProbe:
    """A quick representation check run after every pretraining epoch.

    Cross-validated MAE of the paper's probe head (:class:`~skpolysrl.evaluation.MLPHeadRegressor`,
    fewer epochs) predicting ``targets`` from the output columns
    (:func:`~skpolysrl.nn.output_features`: mean embedding and uncertainty) of ``formulas``.
    Use data held out from any final evaluation (e.g. DFT band gaps when the benchmark is
    experimental band gaps): picking epochs on the test set inflates scores.
    """

    def __init__(self, formulas, targets, n_splits=3, seed=0, max_samples=2000, epochs=60):
        rng = np.random.default_rng(seed)
        keep = rng.permutation(len(formulas))[:max_samples]
        known = known_atomic_numbers()
        self.table = StoichiometryTable([parse_formula(formulas[i], known, position=int(i)) for i in keep])
        self.targets = np.asarray(targets, dtype=float)[keep]
        self.n_splits = n_splits
        self.seed = seed
        self.epochs = epochs

    def __call__(self, model, device="cpu"):
        X = output_features_np(*encode(model, self.table, device=device))  # the columns users get
        head = MLPHeadRegressor(epochs=self.epochs, random_state=self.seed)
        return cross_validate_probe(X, self.targets, estimator=head, n_splits=self.n_splits, seed=self.seed)["mae_mean"]


@dataclasses.dataclass(frozen=True)
class PretrainConfig:
    """Every setting of a pretraining run that shapes its result (stored in checkpoints, key by key).

    Attributes
    ----------
    objective : str, default="polysrl"
        One of ``OBJECTIVES``.
    epochs : int, default=100
    batch_size : int, default=256
        Rows per batch (the global batch under ``torchrun``).
    lr : float, default=5e-5
        Adam learning rate.
    n_samples : int, default=8
        Samples J drawn from each Gaussian per step ("polysrl").
    beta : float, default=1e-8
        Weight of the KL term ("polysrl").
    grad_clip : float or None, default=2.0
        Gradient-norm clip.
    pair_reduction : {"sum", "mean", "balanced"}, default="sum"
    warmup_epochs : int, default=0
        Epochs during which the stoichiometry encoder's mean path is frozen,
        so the structure encoder (whose outputs start out nearly identical for
        all crystals) first learns to tell structures apart; without it the
        positive pairs pull every formula mean onto that one direction.
    threshold_lr : float, optional
        Learning rate of the match scale c and shift d (default: ``lr``).
    alignment_weight : float, default=0.0
        Weight of an auxiliary NT-Xent term (temperature 0.2) between formula
        means and their structures, added to the soft contrastive loss. Being
        relative (a positive must beat the batch's negatives), it cannot be
        satisfied by moving all structures away from all formulas, the
        failure of the plain loss on small corpora.
    keep_best : bool, default=False
        With a held-out probe: restore the weights of the epoch (the initial
        weights count as epoch 0) with the lowest probe MAE.
    variance_only : bool, default=False
        Train only the variance path (Set2Set_sigma, Linear_sigma) and c, d:
        fits uncertainties to the polymorphs around fixed mean embeddings.
    seed : int, default=0
        Batch order, sampling noise, the supervised head's initialisation.
    """

    objective: str = "polysrl"
    epochs: int = 100
    batch_size: int = 256
    lr: float = 5e-5
    n_samples: int = 8
    beta: float = 1e-8
    grad_clip: Optional[float] = 2.0
    pair_reduction: str = "sum"
    warmup_epochs: int = 0
    threshold_lr: Optional[float] = None
    alignment_weight: float = 0.0
    keep_best: bool = False
    variance_only: bool = False
    seed: int = 0

    def __post_init__(self):
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}, got {self.objective!r}")
        if self.pair_reduction not in PAIR_REDUCTIONS:
            raise ValueError(f"pair_reduction must be one of {PAIR_REDUCTIONS}, got {self.pair_reduction!r}")

    def to_dict(self):
        return dataclasses.asdict(self)


class _BatchObjective(torch.nn.Module):
    """One global batch's training loss, as a module so that DistributedDataParallel can wrap it.

    ``forward(idx)`` returns ``(total, info)``: the loss to minimise (plus ``beta`` x KL for
    "polysrl") over the rows ``idx`` of the training set, and the batch's statistics (floats).
    With ``world_size`` > 1 this process encodes only its contiguous shard of ``idx``
    (:func:`skpolysrl.distributed.shard_bounds`); the shards' embeddings are all-gathered with
    gradients (:func:`skpolysrl.distributed.gather_rows`) and every process computes the same
    full-batch loss. Random draws (the J samples, GraphCL's augmentations) are made for the whole
    batch from ``noise``, seeded alike on every process, so they are those of one process.
    """

    def __init__(self, model, table, formula_ids, graphs, targets, noise, *, objective, n_samples, beta,
                 pair_reduction, alignment_weight, variance_only, device, world_size=1, rank=0, head=None):
        super().__init__()
        self.model = model
        self.head = head  # the supervised objective's property head (discarded after training)
        self.table, self.formula_ids, self.graphs, self.targets, self.noise = table, formula_ids, graphs, targets, noise
        self.objective, self.n_samples, self.beta = objective, n_samples, beta
        self.pair_reduction, self.alignment_weight, self.variance_only = pair_reduction, alignment_weight, variance_only
        self.device, self.world_size, self.rank = device, world_size, rank
        self.expansion = model.config.graph.expansion_kwargs()  # the Gaussians the model was built for
        # The loss (computed inside forward, on the gathered batch) reaches every parameter with "polysrl";
        # the other objectives leave the variance path without a gradient, and variance_only the structure
        # encoder: DistributedDataParallel must then look for unused parameters.
        self.find_unused_parameters = objective != "polysrl" or variance_only

    def forward(self, idx):
        model, device, objective, n = self.model, self.device, self.objective, len(idx)
        sharded = self.world_size > 1
        local = idx
        if sharded:
            sizes = _ddp.shard_sizes(n, self.world_size)
            lo, hi = _ddp.shard_bounds(n, self.world_size, self.rank)
            # an empty shard (a batch with fewer rows than processes) encodes row 0, which the gather
            # drops: every process runs the same operations, so every parameter gets a gradient
            positions = np.arange(lo, hi) if hi > lo else np.arange(1)
            local = idx[positions]
        z, w, s_edges, s_batch = _stoich_tensors(self.table, local, device)
        mu, log_sigma = model.stoichiometry(z, w, s_edges, s_batch, len(local))
        # outputs that only feed statistics are gathered without gradient (no backward through them)
        outputs = [mu.detach() if objective == "graphcl" else mu,
                   log_sigma if objective == "polysrl" else log_sigma.detach()]
        if objective in STRUCTURE_OBJECTIVES:
            edge_index, dist, batch = self.graphs.collate(local)
            dist = torch.as_tensor(dist, device=device)
            with torch.set_grad_enabled(not self.variance_only):  # frozen encoder: skip its backward
                outputs.append(model.structure(
                    gaussian_expansion(dist, **self.expansion),
                    torch.as_tensor(edge_index, device=device),
                    torch.as_tensor(batch, device=device),
                    len(local),
                ))
        if objective == "graphcl":
            # two random views of every graph; the views' means are the contrastive pair. Sharded, the
            # whole batch is augmented (the single-process draws) and this shard's graphs are encoded.
            zg, wg, bg = z, w, s_batch
            if sharded:
                zg, wg, _, bg = _stoich_tensors(self.table, idx, device)
            for _ in range(2):
                view = augment_stoichiometry(zg, wg, bg, n, self.noise)
                if sharded:
                    view = _select_graphs(view[0], view[1], view[3], n, positions)
                outputs.append(model.stoichiometry(*view, len(local))[0])
        if sharded:
            outputs = _ddp.gather_rows(outputs, sizes)
        mu, log_sigma = outputs[:2]
        match = polymorph_match(self.formula_ids[torch.as_tensor(idx, device=device)])
        if objective == "graphcl":
            loss, stats = nt_xent_loss(outputs[2], outputs[3], match)
        elif objective == "supervised":
            scale = float(np.sqrt(mu.shape[1]))  # unit-norm means have components ~ 1/sqrt(dim)
            pred = self.head(mu * scale)
            target = self.targets[torch.as_tensor(idx, device=device)]
            known = torch.isfinite(target)  # several properties: each formula has those it has
            loss = (pred - torch.nan_to_num(target)).abs().mul(known).sum() / known.sum().clamp(min=1)
            stats = {"positive_correct": float("nan"), "negative_correct": float("nan"), "retrieval": float("nan")}
        elif objective == "infomax":
            loss, stats = nt_xent_loss(mu, outputs[2], match)
        else:
            structures = outputs[2]
            if objective == "polysrl":
                eps = torch.randn((n, self.n_samples, mu.shape[1]), generator=self.noise, device=device)
                samples = mu[:, None, :] + eps * torch.exp(log_sigma)[:, None, :]
            else:
                samples = mu[:, None, :]
            logits = pair_logits(samples, structures, model.c, model.d)
            loss, stats = soft_contrastive_loss(logits, match, self.pair_reduction)
            if self.alignment_weight:
                loss = loss + self.alignment_weight * nt_xent_loss(mu, structures, match)[0]
        kl = kl_to_standard_normal(mu, log_sigma).mean()
        total = loss + self.beta * kl if objective == "polysrl" else loss
        info = {"loss": float(loss.detach()), "kl": float(kl.detach()),
                "positive_correct": stats["positive_correct"], "negative_correct": stats["negative_correct"],
                "retrieval": stats["retrieval"], "positive_pairs": float(match.sum()),
                "log_variance": float((2 * log_sigma.detach()).mean())}
        return total, info


def _training_step(model, table, formula_ids, graphs, targets, noise, *, objective, variance_only, distributed,
                   **settings):
    """One batch's ``step(idx) -> (total, info)``: a :class:`_BatchObjective`, wrapped in
    DistributedDataParallel (gradients averaged over processes in ``total.backward()``) when distributed,
    as :class:`~skpolysrl.engine.Trainer` wraps it (for tests of the gradient arithmetic)."""
    world_size, rank = (_ddp.get_world_size(), _ddp.get_rank()) if distributed else (1, 0)
    step = _BatchObjective(model, table, formula_ids, graphs, targets, noise, objective=objective,
                           variance_only=variance_only, world_size=world_size, rank=rank, **settings)
    if not distributed:
        return step
    return _ddp.wrap_module(step, find_unused_parameters=step.find_unused_parameters)


class _MatchStats(Callback):
    """Adds the mean uncertainty and the match scale c and shift d to each epoch's record."""

    def __init__(self, model):
        self.model = model

    def on_epoch_end(self, trainer, record):
        record["mean_uncertainty"] = float(np.exp(record["log_variance"]))
        record["c"] = float(self.model.c.detach())
        record["d"] = float(self.model.d.detach())


def pretraining_callbacks(model, *, device="cpu", monitor_table=None, probe=None, keep_best=False, log=None,
                          progress=False, checkpoint=None, checkpoint_every=1, on_epoch_end=None):
    """The usual monitoring of a pretraining run, as engine callbacks in working order.

    Parameters
    ----------
    model : PolySRLModel being trained
    monitor_table : StoichiometryTable, optional
        Formulas whose embeddings are checked for collapse after each epoch
        (``effective_rank``, ``mean_cosine``).
    probe : callable(model, device=) -> float, optional
        A held-out score (e.g. :class:`HeldOutProbe`) recorded as ``probe_mae``.
    keep_best : bool, default=False
        With ``probe``: score the initial weights too and keep the best epoch's weights.
    log : callable(str), optional
        Receives one line per epoch.
    progress : bool, default=False
        A progress bar over each epoch's batches.
    checkpoint : path, optional
        Checkpoint file written every ``checkpoint_every`` epochs and after the
        last (:class:`~skpolysrl.engine.Checkpoint`); an existing one is resumed.
    on_epoch_end : callable(dict), optional
        Called with each epoch's record, after the checkpoint is written.
    """
    callbacks = [_MatchStats(model)]
    if monitor_table is not None:
        callbacks.append(CollapseMonitor(lambda module: encode(model, monitor_table, device=device)[0]))
    if probe is not None:
        callbacks.append(HeldOutMonitor(lambda module: probe(model, device=device), "probe_mae", at_start=keep_best))
        if keep_best:
            callbacks.append(KeepBest("probe_mae", log=log))
    if progress:
        callbacks.append(ProgressBar())
    if log is not None:
        callbacks.append(EpochLog(log))
    if checkpoint is not None:
        callbacks.append(Checkpoint(checkpoint, every=checkpoint_every))
    if on_epoch_end is not None:
        callbacks.append(EpochEndFunction(on_epoch_end))
    return callbacks


def pretrain(model, table, formula_ids, graphs, config, *, targets=None, device="cpu", callbacks=None,
             distributed=None):
    """Train ``model`` in place on (stoichiometry, structure) pairs, or on formulas alone.

    A thin layer over :class:`skpolysrl.engine.Trainer`: builds the objective
    module and the optimizer's parameter groups from ``config`` and runs it.
    Under ``torchrun`` (an initialised ``torch.distributed`` process group of
    several processes) each process trains on a shard of every batch and the
    result is that of one process with the same ``batch_size`` (see
    ``distributed``).

    Parameters
    ----------
    model : PolySRLModel, already on ``device``
        With a structure encoder for the objectives in ``STRUCTURE_OBJECTIVES``.
        Its config's graph settings give the Gaussian expansion of distances.
    table : StoichiometryTable, one row per structure (or per formula)
    formula_ids : int array, equal for rows with the same formula (polymorph rule)
    graphs : StructureGraphs or None
        One per row of ``table``; ``None`` for "graphcl" and "supervised".
    config : PretrainConfig
    targets : float array of shape (n,) or (n, n_properties), optional
        Property values per row of ``table``, for ``objective="supervised"``
        (trained with an L1 loss through a 3-layer MLP head, one output per
        property, that is discarded afterwards). NaN marks a property a row
        lacks; its term is left out of the loss. Scale the columns alike
        (e.g. standardise them): the L1 terms are summed.
    device : str, default="cpu"
    callbacks : list of skpolysrl.engine.Callback, optional
        Monitoring, logging, checkpointing (:func:`pretraining_callbacks`
        builds the usual ones; ``config.keep_best`` needs its ``keep_best``).
        The run key of a checkpoint covers the data, every ``config`` setting
        but ``epochs``, the model config and the initial weights.
    distributed : bool, optional
        Data-parallel training over the processes of the initialised default
        ``torch.distributed`` process group (default: when one of two or more
        processes is initialised). Every process passes the same data and
        settings (checked) and draws the same global batches; ``batch_size`` is
        the global batch. Process ``r`` encodes the ``r``-th contiguous slice of
        each batch (sizes differ by at most one row); the slices' embeddings are
        all-gathered with ``torch.distributed.nn.functional.all_gather``, whose
        backward sums every process's gradient for a slice, so each process
        computes the identical full-batch loss and its own encoders' gradient
        is ``world_size`` times its share. ``DistributedDataParallel`` then
        averages the gradients over processes: the average is the full-batch
        gradient, and clipping and the Adam step run alike everywhere. DDP
        (rather than a manual all-reduce after ``backward``) fits because the
        whole batch loss, gather included, is the ``forward`` of one small
        module wrapping the model, so DDP sees every parameter the loss
        reaches (also ``c``, ``d`` and the supervised head, applied to the
        gathered batch) and overlaps its bucketed all-reduce with the backward
        pass; ``find_unused_parameters`` is on for the objectives that leave
        the variance path (or, with ``variance_only``, the structure encoder)
        without a gradient. Sampling noise is drawn for the whole batch from a
        generator seeded alike on every process. The weights, ``history`` and
        random streams therefore equal a single-process run's up to float
        rounding (summation order; Adam can turn it into differences of the
        order of ``lr`` in weights whose gradient is rounding noise). Rank 0 alone logs, shows progress, runs
        the per-epoch diagnostics and probe (their values are broadcast) and
        writes the checkpoint (which it reads and broadcasts on resuming);
        ``on_epoch_end`` runs on every process.

    Returns
    -------
    history : list of dict, one per epoch
    """
    cfg = config
    callbacks = list(callbacks or [])
    if cfg.objective in STRUCTURE_OBJECTIVES and (graphs is None or model.structure is None):
        raise ValueError(f"objective={cfg.objective!r} pairs formulas with crystal structures: pass their graphs "
                         "and give the model a structure encoder")
    if cfg.keep_best and not any(isinstance(cb, KeepBest) for cb in callbacks):
        raise ValueError("keep_best=True needs a held-out probe: pass callbacks=pretraining_callbacks(..., "
                         "probe=..., keep_best=True)")
    head = None
    if cfg.objective == "supervised":
        if targets is None or len(targets) != len(table):
            raise ValueError("objective='supervised' needs one target per formula (targets=)")
        targets = np.asarray(targets, dtype=np.float32)
        targets = targets.reshape(len(targets), -1)  # (n, n_properties); NaN: property unknown for that formula
        if np.isinf(targets).any() or not np.isfinite(targets).any(axis=1).all():
            raise ValueError("targets of the supervised objective must be finite, with at least one known "
                             "property per row (NaN marks an unknown one); drop rows whose targets are all NaN")
        targets = torch.as_tensor(targets, device=device)
        with seeded(cfg.seed):
            head = build_head(model.config.hidden_dim, 128, n_outputs=targets.shape[1]).to(device)
    formula_ids = torch.as_tensor(np.asarray(formula_ids), dtype=torch.long, device=device)
    # the stoichiometry encoder's variance path (Set2Set_sigma, Linear_sigma) vs everything feeding the mean
    variance_path = [p for name, p in model.stoichiometry.named_parameters() if "sigma" in name]
    mean_path = [p for name, p in model.stoichiometry.named_parameters() if "sigma" not in name]
    match_params = [model.c, model.d]
    if cfg.variance_only:
        params = variance_path
    else:
        params = [p for p in model.parameters() if p.requires_grad and all(p is not q for q in match_params)]
        params += [] if head is None else list(head.parameters())
    groups = [{"params": params}, {"params": match_params, "lr": cfg.lr if cfg.threshold_lr is None else cfg.threshold_lr}]
    if cfg.warmup_epochs:
        callbacks.insert(0, FreezeParameters(mean_path, cfg.warmup_epochs))
    data = [table.sizes, table.atomic_numbers, table.fractions, formula_ids.cpu().numpy()]
    if graphs is not None:
        data += [graphs.num_edges, graphs.distances]
    if targets is not None:
        data.append(targets.cpu().numpy())
    settings = {k: v for k, v in cfg.to_dict().items() if k != "epochs"}  # a run may be extended
    trainer = Trainer(groups, lr=cfg.lr, epochs=cfg.epochs, batch_size=cfg.batch_size, n_rows=len(table),
                      seed=cfg.seed, device=device, grad_clip=cfg.grad_clip, callbacks=callbacks,
                      run_key={"data": data, "pretrain": settings, "model": model.config},
                      distributed=distributed)
    world_size, rank = (_ddp.get_world_size(), _ddp.get_rank()) if trainer.distributed else (1, 0)
    objective = _BatchObjective(model, table, formula_ids, graphs, targets, trainer.noise, objective=cfg.objective,
                                n_samples=cfg.n_samples, beta=cfg.beta, pair_reduction=cfg.pair_reduction,
                                alignment_weight=cfg.alignment_weight, variance_only=cfg.variance_only,
                                device=device, world_size=world_size, rank=rank, head=head)
    return trainer.fit(objective)
