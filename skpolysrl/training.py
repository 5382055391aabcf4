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

from .graphs import gaussian_expansion
from .loss import kl_to_standard_normal, nt_xent_loss, pair_logits, polymorph_match, soft_contrastive_loss

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
        X = np.hstack([mu, log_sigma.mean(axis=1, keepdims=True)])
        head = MLPHeadRegressor(epochs=self.epochs, random_state=self.seed)
        return cross_validate_probe(X, self.targets, estimator=head, n_splits=self.n_splits, seed=self.seed)["mae_mean"]


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


def _load_checkpoint(path, key, model, optimizer, order_rng, noise):
    from .exceptions import ModelFileError

    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ModelFileError(f"cannot read checkpoint {os.fspath(path)!r} ({type(exc).__name__}); "
                             "it may be truncated: delete it to start over") from None
    if not isinstance(payload, dict) or payload.get("format") != _CHECKPOINT_FORMAT:
        raise ModelFileError(f"{os.fspath(path)!r} is not an skpolysrl checkpoint")
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
             checkpoint=None, checkpoint_every=1, on_epoch_end=None, targets=None):
    """Train ``model`` in place on (stoichiometry, structure) pairs, or on formulas alone.

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

    Returns
    -------
    history : list of dict, one per epoch
    """
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
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
        [{"params": others}, {"params": match_params, "lr": lr if threshold_lr is None else threshold_lr}], lr=lr
    )
    order_rng = np.random.default_rng(seed)
    noise = torch.Generator(device=device).manual_seed(int(seed))
    history = []
    best = None
    start = 0
    key = _run_key(table, formula_ids, graphs, None if targets is None else targets.cpu().numpy(), batch_size=batch_size, lr=lr, n_samples=n_samples, beta=beta,
                   grad_clip=grad_clip, pair_reduction=pair_reduction, objective=objective, seed=seed,
                   warmup_epochs=warmup_epochs, threshold_lr=threshold_lr, alignment_weight=alignment_weight,
                   keep_best=keep_best, variance_only=variance_only)
    if checkpoint is not None and os.path.exists(checkpoint):
        start, history, best = _load_checkpoint(checkpoint, key, model, optimizer, order_rng, noise)
        if log is not None:
            log(f"resuming from {checkpoint} after epoch {start}")
    elif probe is not None and keep_best:
        best = (float(probe(model, device=device)), 0, copy.deepcopy(model.state_dict()))
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
            z, w, s_edges, s_batch = _stoich_tensors(table, idx, device)
            mu, log_sigma = model.stoichiometry(z, w, s_edges, s_batch, len(idx))
            match = polymorph_match(formula_ids[torch.as_tensor(idx, device=device)])
            if objective in STRUCTURE_OBJECTIVES:
                edge_index, dist, batch = graphs.collate(idx)
                dist = torch.as_tensor(dist, device=device)
                with torch.set_grad_enabled(not variance_only):  # frozen encoder: skip its backward
                    structures = model.structure(
                        gaussian_expansion(dist),
                        torch.as_tensor(edge_index, device=device),
                        torch.as_tensor(batch, device=device),
                        len(idx),
                    )
            if objective == "graphcl":
                # two random views of every graph; the views' means are the contrastive pair
                views = [model.stoichiometry(*augment_stoichiometry(z, w, s_batch, len(idx), noise), len(idx))[0]
                         for _ in range(2)]
                loss, stats = nt_xent_loss(views[0], views[1], match)
            elif objective == "supervised":
                scale = float(np.sqrt(mu.shape[1]))  # unit-norm means have components ~ 1/sqrt(dim)
                pred = model.property_head(mu * scale).view(-1)
                loss = torch.nn.functional.l1_loss(pred, targets[torch.as_tensor(idx, device=device)])
                stats = {"positive_correct": float("nan"), "negative_correct": float("nan"), "retrieval": float("nan")}
            elif objective == "infomax":
                loss, stats = nt_xent_loss(mu, structures, match)
            else:
                if objective == "polysrl":
                    eps = torch.randn((len(idx), n_samples, mu.shape[1]), generator=noise, device=device)
                    samples = mu[:, None, :] + eps * torch.exp(log_sigma)[:, None, :]
                else:
                    samples = mu[:, None, :]
                logits = pair_logits(samples, structures, model.c, model.d)
                loss, stats = soft_contrastive_loss(logits, match, pair_reduction)
                if alignment_weight:
                    loss = loss + alignment_weight * nt_xent_loss(mu, structures, match)[0]
            kl = kl_to_standard_normal(mu, log_sigma).mean()
            total = loss + beta * kl if objective == "polysrl" else loss
            optimizer.zero_grad(set_to_none=True)
            total.backward()
            if warming:  # Adam skips parameters without a gradient
                for p in mean_path:
                    p.grad = None
            if grad_clip:
                torch.nn.utils.clip_grad_norm_(params, grad_clip)
            optimizer.step()
            steps += 1
            sums["loss"] += float(loss.detach())
            sums["kl"] += float(kl.detach())
            sums["positive_correct"] += stats["positive_correct"]
            sums["negative_correct"] += stats["negative_correct"]
            sums["retrieval"] += stats["retrieval"]
            sums["positive_pairs"] += float(match.sum())
            sums["log_variance"] += float((2 * log_sigma.detach()).mean())
        record = {"epoch": epoch + 1, **{k: v / max(steps, 1) for k, v in sums.items()}}
        record["mean_uncertainty"] = float(np.exp(record["log_variance"]))
        record["c"] = float(model.c.detach())
        record["d"] = float(model.d.detach())
        if monitor_table is not None:
            mu_m, _ = encode(model, monitor_table, device=device)
            record["effective_rank"], record["mean_cosine"] = embedding_diagnostics(mu_m)
        if probe is not None:
            record["probe_mae"] = float(probe(model, device=device))
        record["seconds"] = time.perf_counter() - t0
        history.append(record)
        if best is not None and record["probe_mae"] < best[0]:
            best = (record["probe_mae"], epoch + 1, copy.deepcopy(model.state_dict()))
        if log is not None:
            log(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items()))
        if checkpoint is not None and ((epoch + 1) % checkpoint_every == 0 or epoch + 1 == epochs):
            _save_checkpoint(checkpoint, key, epoch + 1, model, optimizer, order_rng, noise, history, best)
        if on_epoch_end is not None:
            on_epoch_end(record)
    if best is not None:
        model.load_state_dict(best[2])
        for record in history:
            record["kept"] = record["epoch"] == best[1]
        if log is not None:
            log(f"kept the weights of epoch {best[1]} (probe MAE {best[0]:.4g})")
    if objective == "supervised":
        del model.property_head  # the representation is the product; the head is not part of the model
    model.eval()
    return history
