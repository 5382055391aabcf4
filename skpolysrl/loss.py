"""PolySRL's objective: the soft contrastive loss with the polymorph rule, plus KL.

For stoichiometry i (J samples z_i^j) and structure k, logit_ik^j =
-c ||z_i^j - str_k|| + d; the pair matches (m = +1) when i == k or the two
rows share a formula (the polymorph rule), else m = -1.
NLL_ik = -log( (1/J) sum_j q(m logit_ik^j) ), q(x) = e^x / (e^x + e^-x) = sigmoid(2x),
computed as a logsumexp of log-sigmoids for stability.
"""

import math

import torch
import torch.nn.functional as F

__all__ = ["polymorph_match", "soft_contrastive_loss", "nt_xent_loss", "kl_to_standard_normal", "PAIR_REDUCTIONS"]

#: How the B x B pair losses become one number.
#: "sum": the paper's sum over all pairs. "mean": their mean.
#: "balanced": mean over positive pairs + mean over negative pairs.
PAIR_REDUCTIONS = ("sum", "mean", "balanced")


def polymorph_match(formula_ids):
    """(B, B) bool: rows i and k match when they have the same formula (so i == k too)."""
    return formula_ids[:, None] == formula_ids[None, :]


def pair_logits(z, structures, c, d):
    """Logits (B_stoich, B_struct, J) of every (sampled stoichiometry, structure) pair."""
    # ||z - s||^2 = |z|^2 + |s|^2 - 2 z.s: one matmul for all B*J x B pairs
    sq = (z * z).sum(-1, keepdim=True) + (structures * structures).sum(-1)[None, None, :] - 2 * z @ structures.t()
    dist = torch.sqrt(sq.clamp_min(1e-12))
    return (-c * dist + d).permute(0, 2, 1)


def soft_contrastive_loss(logits, match, reduction="sum"):
    """Soft contrastive loss from pair logits.

    Parameters
    ----------
    logits : tensor (B, B, J)
    match : bool tensor (B, B)
    reduction : {"sum", "mean", "balanced"}

    Returns
    -------
    loss : scalar tensor
    stats : dict with the fraction of positive pairs with logit > 0 and of
        negative pairs with logit < 0 (averaged over samples).
    """
    sign = match.to(logits.dtype) * 2 - 1
    log_q = F.logsigmoid(2 * sign[..., None] * logits)
    nll = -(torch.logsumexp(log_q, dim=-1) - math.log(logits.shape[-1]))
    if reduction == "sum":
        loss = nll.sum()
    elif reduction == "mean":
        loss = nll.mean()
    elif reduction == "balanced":
        neg = ~match
        loss = nll[match].mean() + (nll[neg].mean() if neg.any() else nll.new_zeros(()))
    else:
        raise ValueError(f"reduction must be one of {PAIR_REDUCTIONS}, got {reduction!r}")
    with torch.no_grad():
        correct = (logits > 0) == match[..., None]
        pos = correct[match].float().mean().item()
        neg = correct[~match].float().mean().item() if (~match).any() else float("nan")
    return loss, {"positive_correct": pos, "negative_correct": neg, "retrieval": retrieval_accuracy(logits.mean(-1), match)}


def retrieval_accuracy(scores, match):
    """Fraction of rows whose highest-scoring column is a positive (chance ~ 1/B)."""
    with torch.no_grad():
        return match.gather(1, scores.argmax(dim=1, keepdim=True)).float().mean().item()


def nt_xent_loss(a, b, match, temperature=0.2):
    """NT-Xent (InfoNCE) between L2-normalised rows of ``a`` and ``b`` (3D Infomax).

    Row i of ``a`` is the positive of row i of ``b``; other same-formula rows
    (polymorphs) are left out of the denominators rather than treated as negatives.
    Averaged over both directions.
    """
    a = F.normalize(a, dim=-1)
    b = F.normalize(b, dim=-1)
    sim = a @ b.t() / temperature
    eye = torch.eye(len(a), dtype=torch.bool, device=a.device)
    sim = sim.masked_fill(match & ~eye, float("-inf"))
    loss = 0.5 * (F.cross_entropy(sim, torch.arange(len(a), device=a.device))
                  + F.cross_entropy(sim.t(), torch.arange(len(a), device=a.device)))
    return loss, {"positive_correct": float("nan"), "negative_correct": float("nan"),
                  "retrieval": retrieval_accuracy(sim, eye)}


def kl_to_standard_normal(mu, log_sigma):
    """KL(N(mu, sigma^2) || N(0, I)) per row, summed over dimensions."""
    return 0.5 * (mu.pow(2) + torch.exp(2 * log_sigma) - 1 - 2 * log_sigma).sum(dim=-1)
