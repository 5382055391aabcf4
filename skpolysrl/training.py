"""Contrastive pretraining of a :class:`~skpolysrl.nn.PolySRLModel` and its monitoring.

The loss alone says little (it can fall while the representation collapses,
see docs/method.md), so every epoch also records the fraction of positive and
negative pairs on the right side of the match threshold, the effective rank
and mean cosine of formula embeddings, and optionally a held-out probe score.
"""

import copy
import hashlib
import json
import os
import time

import numpy as np
import torch

from . import distributed as _ddp
from .graphs import gaussian_expansion
from .loss import kl_to_standard_normal, nt_xent_loss, pair_logits, polymorph_match, soft_contrastive_loss
from .nn import output_features_np

__all__ = ["pretrain", "encode", "embedding_diagnostics", "augment_stoichiometry", "HeldOutProbe", "OBJECTIVES",
           "STRUCTURE_OBJECTIVES"]

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


def _property_head(model):
    """The supervised objective's head: the paper's 3-layer MLP on the (rescaled) mean embedding."""
    from .evaluation import _build_head

    return _build_head(model.config["hidden_dim"], 128).to(model.c.device)


@torch.no_grad()
def encode(model, table, batch_size=4096, device="cpu"):
    """Mean and log-sigma of every row of a StoichiometryTable, as float32 numpy arrays."""
    model.eval()
    mus, log_sigmas = [], []
    for start in range(0, len(table), batch_size):
        idx = np.arange(start, min(start + batch_size, len(table)))
        z, w, edge_index, batch = _stoich_tensors(table, idx, device)
        mu, log_sigma = model.stoichiometry(z, w, edge_index, batch, len(idx))
        mus.append(mu.float().cpu().numpy())
        log_sigmas.append(log_sigma.float().cpu().numpy())
    return np.concatenate(mus), np.concatenate(log_sigmas)


def embedding_diagnostics(embeddings):
    """Effective rank (exp of the entropy of normalised singular values of the centred
    embeddings, Roy & Vetterli 2007) and the mean pairwise cosine similarity."""
    x = np.asarray(embeddings, dtype=np.float64)
    s = np.linalg.svd(x - x.mean(axis=0), compute_uv=False)
    p = s / max(s.sum(), 1e-12)
    p = p[p > 0]
    rank = float(np.exp(-(p * np.log(p)).sum()))
    unit = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    n = len(unit)
    mean_vec = unit.sum(axis=0)
    mean_cos = float((mean_vec @ mean_vec - n) / max(n * (n - 1), 1))
    return rank, mean_cos


class HeldOutProbe:
    """A quick representation check run after every pretraining epoch.

    Cross-validated MAE of the paper's probe head (:class:`~skpolysrl.evaluation.MLPHeadRegressor`,
    fewer epochs) predicting ``targets`` from the embeddings of ``formulas``. Use data held
    out from any final evaluation (e.g. DFT band gaps when the benchmark is
    experimental band gaps): picking epochs on the test set inflates scores.
    """

    def __init__(self, formulas, targets, n_splits=3, seed=0, max_samples=2000, epochs=60):
        from ._elements import known_atomic_numbers
        from ._formula import StoichiometryTable, parse_formula

        rng = np.random.default_rng(seed)
        keep = rng.permutation(len(formulas))[:max_samples]
        known = known_atomic_numbers()
        self.table = StoichiometryTable([parse_formula(formulas[i], known, position=int(i)) for i in keep])
        self.targets = np.asarray(targets, dtype=float)[keep]
        self.n_splits = n_splits
        self.seed = seed
        self.epochs = epochs

    def __call__(self, model, device="cpu"):
        from .evaluation import MLPHeadRegressor, cross_validate_probe

        mu, log_sigma = encode(model, self.table, device=device)
        X = output_features_np(mu, log_sigma)  # the columns users get from transform
        head = MLPHeadRegressor(epochs=self.epochs, random_state=self.seed)
        return cross_validate_probe(X, self.targets, estimator=head, n_splits=self.n_splits, seed=self.seed)["mae_mean"]


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
                 pair_reduction, alignment_weight, variance_only, device, world_size=1, rank=0):
        super().__init__()
        self.model = model
        self.table, self.formula_ids, self.graphs, self.targets, self.noise = table, formula_ids, graphs, targets, noise
        self.objective, self.n_samples, self.beta = objective, n_samples, beta
        self.pair_reduction, self.alignment_weight, self.variance_only = pair_reduction, alignment_weight, variance_only
        self.device, self.world_size, self.rank = device, world_size, rank

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
                    gaussian_expansion(dist),
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
            pred = model.property_head(mu * scale).view(-1)
            loss = torch.nn.functional.l1_loss(pred, self.targets[torch.as_tensor(idx, device=device)])
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
    """``step(idx) -> (total, info)`` for :func:`pretrain`: a :class:`_BatchObjective`, wrapped in
    DistributedDataParallel (gradients averaged over processes in ``total.backward()``) when distributed."""
    world_size, rank = (_ddp.get_world_size(), _ddp.get_rank()) if distributed else (1, 0)
    step = _BatchObjective(model, table, formula_ids, graphs, targets, noise, objective=objective,
                           variance_only=variance_only, world_size=world_size, rank=rank, **settings)
    if not distributed:
        return step
    # The loss (computed inside forward, on the gathered batch) reaches every parameter with "polysrl";
    # the other objectives leave the variance path without a gradient, and variance_only the structure
    # encoder. DDP's constructor also broadcasts rank 0's weights.
    return _ddp.wrap_module(step, find_unused_parameters=objective != "polysrl" or variance_only)


_CHECKPOINT_FORMAT = "skpolysrl-checkpoint"


def _run_key(table, formula_ids, graphs, targets, **settings):
    """Identifies a training run (data + settings, not the epoch count) for safe resuming."""
    h = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode())
    arrays = [table.sizes, table.atomic_numbers, table.fractions, np.asarray(formula_ids)]
    if graphs is not None:
        arrays += [graphs.num_edges, graphs.distances]
    if targets is not None:
        arrays.append(np.asarray(targets, dtype=np.float64))
    for array in arrays:
        h.update(np.ascontiguousarray(array).tobytes())
    return h.hexdigest()


def _save_checkpoint(path, key, epoch, model, optimizer, order_rng, noise, history, best):
    def cpu(state):
        return {k: v.detach().cpu().clone() for k, v in state.items()}

    payload = {
        "format": _CHECKPOINT_FORMAT, "key": key, "epoch": epoch, "model": cpu(model.state_dict()),
        "optimizer": optimizer.state_dict(), "order_rng": order_rng.bit_generator.state,
        "noise": noise.get_state(), "history": history,
        "best": None if best is None else {"mae": best[0], "epoch": best[1], "state": cpu(best[2])},
    }
    tmp = f"{os.fspath(path)}.tmp"
    torch.save(payload, tmp)
    os.replace(tmp, path)  # a crash mid-write leaves the previous checkpoint intact


def _read_checkpoint(path):
    from .exceptions import ModelFileError

    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ModelFileError(f"cannot read checkpoint {os.fspath(path)!r} ({type(exc).__name__}); "
                             "it may be truncated: delete it to start over") from None
    if not isinstance(payload, dict) or payload.get("format") != _CHECKPOINT_FORMAT:
        raise ModelFileError(f"{os.fspath(path)!r} is not an skpolysrl checkpoint")
    return payload


def _load_checkpoint(path, key, model, optimizer, order_rng, noise, payload=None):
    if payload is None:
        payload = _read_checkpoint(path)
    if payload["key"] != key:
        raise ValueError(
            f"checkpoint {os.fspath(path)!r} belongs to a run with other data or settings; "
            "delete it or choose another checkpoint path to start a new run"
        )
    model.load_state_dict(payload["model"])
    optimizer.load_state_dict(payload["optimizer"])
    order_rng.bit_generator.state = payload["order_rng"]
    noise.set_state(payload["noise"])
    best = payload["best"]
    if best is not None:
        best = (best["mae"], best["epoch"], best["state"])
    return payload["epoch"], payload["history"], best


def pretrain(model, table, formula_ids, graphs, *, epochs, batch_size, lr, n_samples, beta, grad_clip=2.0,
             pair_reduction="sum", objective="polysrl", device="cpu", seed=0, warmup_epochs=0, threshold_lr=None,
             alignment_weight=0.0, keep_best=False, variance_only=False,
             monitor_table=None, probe=None, progress=False, log=None,
             checkpoint=None, checkpoint_every=1, on_epoch_end=None, targets=None, distributed=None):
    """Train ``model`` in place on (stoichiometry, structure) pairs, or on formulas alone.

    Under ``torchrun`` (an initialised ``torch.distributed`` process group of
    several processes) each process trains on a shard of every batch and the
    result is that of one process with the same ``batch_size`` (see
    ``distributed``).

    Parameters
    ----------
    model : PolySRLModel, already on ``device``
        With a structure encoder for the objectives in ``STRUCTURE_OBJECTIVES``.
    table : StoichiometryTable, one row per structure (or per formula)
    formula_ids : int array, equal for rows with the same formula (polymorph rule)
    graphs : StructureGraphs or None
        One per row of ``table``; ``None`` for "graphcl" and "supervised".
    objective : str, default="polysrl"
        One of ``OBJECTIVES``.
    targets : float array, optional
        One property value per row of ``table``, for ``objective="supervised"``
        (trained with an L1 loss through a 3-layer MLP head that is discarded
        afterwards).
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
    variance_only : bool, default=False
        Train only the variance path (Set2Set_sigma, Linear_sigma) and c, d:
        fits uncertainties to the polymorphs around fixed mean embeddings.
    keep_best : bool, default=False
        With ``probe``: restore the weights of the epoch (the initial weights
        count as epoch 0) with the lowest probe MAE.
    monitor_table : StoichiometryTable, optional
        Formulas whose embeddings are checked for collapse after each epoch.
    probe : callable(model) -> float, optional
        A held-out score recorded after each epoch as ``probe_mae``.
    log : callable(str), optional
        Receives one line per epoch.
    checkpoint : path, optional
        Checkpoint file (model, optimizer, RNG states, epoch, history), written
        atomically every ``checkpoint_every`` epochs and after the last. If it
        exists when training starts, training resumes from it and ends with
        the same weights as an uninterrupted run with the same settings.
    on_epoch_end : callable(dict), optional
        Called with each epoch's record, after the checkpoint is written.
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
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
    if distributed is None:
        distributed = _ddp.is_active()
    elif distributed and not _ddp.is_active():
        raise ValueError("distributed=True needs an initialised torch.distributed process group of two or more "
                         "processes (launch with torchrun)")
    main = not distributed or _ddp.is_main_process()
    if not main:  # one process reports
        log, progress = None, False
    object_device = torch.device(device) if str(device).startswith("cuda") else None  # NCCL sends objects via GPU

    def broadcast(obj):
        return _ddp.broadcast_object(obj, device=object_device) if distributed else obj
    if objective in STRUCTURE_OBJECTIVES and (graphs is None or model.structure is None):
        raise ValueError(f"objective={objective!r} pairs formulas with crystal structures: pass their graphs "
                         "and give the model a structure encoder")
    if objective == "supervised":
        if targets is None or len(targets) != len(table):
            raise ValueError("objective='supervised' needs one target per formula (targets=)")
        targets = torch.as_tensor(np.asarray(targets, dtype=np.float32), device=device)
        if not bool(torch.isfinite(targets).all()):
            raise ValueError("targets of the supervised objective must be finite; drop rows with NaN targets")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed))
            model.property_head = _property_head(model)
    n = len(table)
    formula_ids = torch.as_tensor(np.asarray(formula_ids), dtype=torch.long, device=device)
    # the stoichiometry encoder's variance path (Set2Set_sigma, Linear_sigma) vs everything feeding the mean
    variance_path = [p for name, p in model.stoichiometry.named_parameters() if "sigma" in name]
    mean_path = [p for name, p in model.stoichiometry.named_parameters() if "sigma" not in name]
    if variance_only:
        params = variance_path + [model.c, model.d]
    else:
        params = [p for p in model.parameters() if p.requires_grad]
    match_params = [model.c, model.d]
    others = [p for p in params if all(p is not q for q in match_params)]
    optimizer = torch.optim.Adam(
        [{"params": others}, {"params": match_params, "lr": lr if threshold_lr is None else threshold_lr}], lr=lr,
        fused=True,  # one kernel per step instead of a loop over tensors: ~5x faster steps on CPU
    )
    order_rng = np.random.default_rng(seed)
    noise = torch.Generator(device=device).manual_seed(int(seed))
    history = []
    best = None
    start = 0
    key = _run_key(table, formula_ids.cpu(), graphs, None if targets is None else targets.cpu().numpy(), batch_size=batch_size, lr=lr, n_samples=n_samples, beta=beta,
                   grad_clip=grad_clip, pair_reduction=pair_reduction, objective=objective, seed=seed,
                   warmup_epochs=warmup_epochs, threshold_lr=threshold_lr, alignment_weight=alignment_weight,
                   keep_best=keep_best, variance_only=variance_only)
    if distributed:
        _ddp.assert_same((key, epochs, probe is not None), "the training data and settings")
        if object_device is not None and object_device.index is not None:
            torch.cuda.set_device(object_device)  # collectives of Python objects use the current GPU
    step = _training_step(model, table, formula_ids, graphs, targets, noise, objective=objective,
                          n_samples=n_samples, beta=beta, pair_reduction=pair_reduction,
                          alignment_weight=alignment_weight, variance_only=variance_only, device=device,
                          distributed=distributed)
    resume = broadcast(checkpoint is not None and os.path.exists(checkpoint))
    if resume:
        payload = None
        if distributed:  # rank 0 reads the file (other nodes may not see it), every process loads it
            try:
                payload, error = (_read_checkpoint(checkpoint) if main else None), None
            except Exception as exc:
                payload, error = None, exc
            payload, error = broadcast((payload, error))
            if error is not None:
                raise error
        start, history, best = _load_checkpoint(checkpoint, key, model, optimizer, order_rng, noise, payload)
        if log is not None:
            log(f"resuming from {checkpoint} after epoch {start}")
    elif probe is not None and keep_best:
        best = (broadcast(float(probe(model, device=device)) if main else None), 0, copy.deepcopy(model.state_dict()))
        if log is not None:
            log(f"epoch=0 probe_mae={best[0]:.4g}")
    for epoch in range(start, epochs):
        warming = epoch < warmup_epochs
        model.train()
        t0 = time.perf_counter()
        sums = {"loss": 0.0, "kl": 0.0, "positive_correct": 0.0, "negative_correct": 0.0, "log_variance": 0.0,
                "positive_pairs": 0.0, "retrieval": 0.0}
        steps = 0
        order = order_rng.permutation(n)
        batches = [order[i : i + batch_size] for i in range(0, n, batch_size)]
        if progress:
            from tqdm.auto import tqdm

            batches = tqdm(batches, desc=f"epoch {epoch + 1}/{epochs}", unit="batch", leave=False)
        for idx in batches:
            if len(idx) < 2:  # a contrastive batch needs a negative candidate
                continue
            total, info = step(idx)
            optimizer.zero_grad(set_to_none=True)
            total.backward()  # under DDP, returns with the gradients averaged over processes
            if warming:  # Adam skips parameters without a gradient
                for p in mean_path:
                    p.grad = None
            if grad_clip:
                torch.nn.utils.clip_grad_norm_(params, grad_clip)
            optimizer.step()
            steps += 1
            for k in sums:
                sums[k] += info[k]
        record = {"epoch": epoch + 1, **{k: v / max(steps, 1) for k, v in sums.items()}}
        record["mean_uncertainty"] = float(np.exp(record["log_variance"]))
        record["c"] = float(model.c.detach())
        record["d"] = float(model.d.detach())
        diagnostics = {}
        if main:  # the weights are the same on every process: rank 0 checks them, the others get its values
            if monitor_table is not None:
                mu_m, _ = encode(model, monitor_table, device=device)
                diagnostics["effective_rank"], diagnostics["mean_cosine"] = embedding_diagnostics(mu_m)
            if probe is not None:
                diagnostics["probe_mae"] = float(probe(model, device=device))
        record.update(broadcast(diagnostics))
        record["seconds"] = time.perf_counter() - t0
        history.append(record)
        if best is not None and record["probe_mae"] < best[0]:
            best = (record["probe_mae"], epoch + 1, copy.deepcopy(model.state_dict()))
        if log is not None:
            log(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items()))
        if main and checkpoint is not None and ((epoch + 1) % checkpoint_every == 0 or epoch + 1 == epochs):
            _save_checkpoint(checkpoint, key, epoch + 1, model, optimizer, order_rng, noise, history, best)
        if on_epoch_end is not None:
            on_epoch_end(record)
    if best is not None:
        model.load_state_dict(best[2])
        for record in history:
            record["kept"] = record["epoch"] == best[1]
        if log is not None:
            log(f"kept the weights of epoch {best[1]} (probe MAE {best[0]:.4g})")
    del step  # drops DistributedDataParallel's gradient hooks from the parameters
    if objective == "supervised":
        del model.property_head  # the representation is the product; the head is not part of the model
    model.eval()
    return history
