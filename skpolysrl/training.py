"""Contrastive pretraining of a :class:`~skpolysrl.nn.PolySRLModel` and its monitoring.

The loss alone says little (it can fall while the representation collapses,
see docs/method.md), so every epoch also records the fraction of positive and
negative pairs on the right side of the match threshold, the effective rank
and mean cosine of formula embeddings, and optionally a held-out probe score.
"""

import time

import numpy as np
import torch

from .graphs import gaussian_expansion
from .loss import kl_to_standard_normal, pair_logits, polymorph_match, soft_contrastive_loss

__all__ = ["pretrain", "encode", "embedding_diagnostics", "OBJECTIVES"]

#: "polysrl": sampled Gaussian embeddings; "deterministic": the mean only (paper's "w/o Sampling").
OBJECTIVES = ("polysrl", "deterministic")


def _stoich_tensors(table, indices, device):
    return table.collate(indices).to_torch(device)


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


def pretrain(model, table, formula_ids, graphs, *, epochs, batch_size, lr, n_samples, beta, grad_clip=2.0,
             pair_reduction="sum", objective="polysrl", device="cpu", seed=0, monitor_table=None,
             probe=None, progress=False, log=None):
    """Train ``model`` in place on (stoichiometry, structure) pairs.

    Parameters
    ----------
    model : PolySRLModel (with a structure encoder), already on ``device``
    table : StoichiometryTable, one row per structure
    formula_ids : int array, equal for rows with the same formula (polymorph rule)
    graphs : StructureGraphs, one per structure
    monitor_table : StoichiometryTable, optional
        Formulas whose embeddings are checked for collapse after each epoch.
    probe : callable(model) -> float, optional
        A held-out score recorded after each epoch as ``probe_mae``.
    log : callable(str), optional
        Receives one line per epoch.

    Returns
    -------
    history : list of dict, one per epoch
    """
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
    n = len(table)
    formula_ids = torch.as_tensor(np.asarray(formula_ids), dtype=torch.long, device=device)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=lr)
    order_rng = np.random.default_rng(seed)
    noise = torch.Generator(device=device).manual_seed(int(seed))
    history = []
    for epoch in range(epochs):
        model.train()
        t0 = time.perf_counter()
        sums = {"loss": 0.0, "kl": 0.0, "positive_correct": 0.0, "negative_correct": 0.0, "log_variance": 0.0}
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
            edge_index, dist, batch = graphs.collate(idx)
            dist = torch.as_tensor(dist, device=device)
            structures = model.structure(
                gaussian_expansion(dist),
                torch.as_tensor(edge_index, device=device),
                torch.as_tensor(batch, device=device),
                len(idx),
            )
            if objective == "polysrl":
                eps = torch.randn((len(idx), n_samples, mu.shape[1]), generator=noise, device=device)
                samples = mu[:, None, :] + eps * torch.exp(log_sigma)[:, None, :]
            else:
                samples = mu[:, None, :]
            logits = pair_logits(samples, structures, model.c, model.d)
            idx_t = torch.as_tensor(idx, device=device)
            loss, stats = soft_contrastive_loss(logits, polymorph_match(formula_ids[idx_t]), pair_reduction)
            kl = kl_to_standard_normal(mu, log_sigma).mean()
            total = loss + beta * kl if objective == "polysrl" else loss
            optimizer.zero_grad(set_to_none=True)
            total.backward()
            if grad_clip:
                torch.nn.utils.clip_grad_norm_(params, grad_clip)
            optimizer.step()
            steps += 1
            sums["loss"] += float(loss.detach())
            sums["kl"] += float(kl.detach())
            sums["positive_correct"] += stats["positive_correct"]
            sums["negative_correct"] += stats["negative_correct"]
            sums["log_variance"] += float((2 * log_sigma.detach()).mean())
        record = {"epoch": epoch + 1, **{k: v / max(steps, 1) for k, v in sums.items()}}
        record["mean_uncertainty"] = float(np.exp(record["log_variance"]))
        record["c"] = float(model.c)
        record["d"] = float(model.d)
        if monitor_table is not None:
            mu_m, _ = encode(model, monitor_table, device=device)
            record["effective_rank"], record["mean_cosine"] = embedding_diagnostics(mu_m)
        if probe is not None:
            record["probe_mae"] = float(probe(model))
        record["seconds"] = time.perf_counter() - t0
        history.append(record)
        if log is not None:
            log(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items()))
    model.eval()
    return history
