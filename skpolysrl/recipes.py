"""Staged pretraining: the default recipe, each stage a run of the training engine.

The paper's single soft-contrastive stage collapses the formula means on our
corpora (docs/method.md). The default recipe trains in stages instead:

1. ``align``: NT-Xent (temperature 0.2) between formula means and crystal
   structures, first with the mean path frozen (the structure encoder, whose
   outputs start nearly identical, learns to tell crystals apart), then jointly
   at a lower learning rate, keeping the epoch with the lowest held-out
   NT-Xent loss. Skipped when starting from pretrained weights.
2. ``supervised``: L1 on per-formula properties (several at once,
   standardised; NaN = unknown) through a head on the means. Labels are not
   needed: each structure's own volume per atom and density
   (``structure_targets``) are learned from its formula, alongside any
   properties given (``fit(structures, y)``). Alignment alone left the band gap
   probe where the untrained encoder was (0.4305 vs 0.4264 eV on the bundled
   corpus); with the descriptors the default fit scored 0.4115 against the
   untrained encoder's 0.4289 in one run (benchmarks/results/default_fit.md).
3. ``realign``: the structure encoder alone, against the final means, so
   structure embeddings and means agree.
4. ``variance``: the variance path learns how far each formula's polymorphs
   spread in structure-embedding space (:func:`polymorph_spread`), from
   structure embeddings computed once, at formula speed.

Why the variance fits the spread of the polymorphs around their own centroid
and not around the formula mean: the offset between a mean and its structures'
centroid is the alignment error of the structure encoder, of the same size for
every formula (squared distance ~1.4 for unit vectors here), and it drowned the
polymorph signal (polymorphic vs single-structure ROC AUC 0.46 of that target,
0.94 of the spread, measured in the prototype; docs/method.md, "Departures from the paper").
"""

import dataclasses
import hashlib
import math
import os
import sys
import warnings
import zipfile
from typing import Optional

import numpy as np
import torch

from ._formula import Stoichiometry, StoichiometryTable
from ._runtime import atomic_write, seeded
from .exceptions import GraphCacheError
from .engine import EpochLog, HeldOutMonitor, KeepBest, ProgressBar, Trainer
from .graphs import STRUCTURE_DESCRIPTORS, gaussian_expansion
from .loss import nt_xent_loss, polymorph_match
from .nn import segment_sum, set2set
from .training import PretrainConfig, encode, pretrain, pretraining_callbacks

__all__ = ["StagedRecipe", "staged_pretrain", "polymorph_spread", "substitution_alloys", "mix_alloys",
           "structure_embeddings", "cached_structure_embeddings", "fit_variances", "RECIPES"]

#: Names accepted by ``PolySRLFeaturizer(recipe=...)``.
RECIPES = ("default", "paper")


@dataclasses.dataclass(frozen=True)
class StagedRecipe:
    """Settings of the default (staged) pretraining recipe.

    Attributes
    ----------
    stages : tuple of str, optional
        Stages to run, among ``("align", "supervised", "realign", "variance")``.
        Default: all, but ``align`` only from random weights and ``supervised``
        only when properties are given.
    align_passes : int, default=60000
        Structure rows seen in the align stage: its epochs are
        ``ceil(align_passes / rows)``, at least 2 and at most 40.
    warmup_fraction : float, default=0.4
        Share of the align epochs with the mean path frozen.
    warmup_lr, align_lr : float
        Learning rates of the warm-up (5e-4) and of the joint alignment (5e-5).
    max_structure_rows : int, default=20000
        Structures sampled for the align and realign stages (every structure
        passes through the structure encoder's backward: the expensive part).
    validation_fraction : float, default=0.05
        Formulas held out from alignment to choose its best epoch.
    supervised_epochs, supervised_lr : int, float
        The supervised stage (20 epochs, 3e-4; 60 epochs did no better).
    structure_targets : tuple of str, default=("log_volume_per_atom", "log_density")
        Descriptors of each structure (:data:`skpolysrl.graphs.STRUCTURE_DESCRIPTORS`)
        that the supervised stage learns from the formula, next to any given
        properties, each column weighted alike. ``()``: the supervised stage
        runs only on given properties. On the bundled corpus, from random
        weights, the supervised stage alone on these two took the band gap
        probe from 0.429 / 0.432 (untrained, seeds 0 / 1) to 0.411 / 0.422.
    realign_passes : int, default=30000
        Structure rows seen in the realign stage (at least one epoch).
    realign_fresh : bool, default=False
        Realign a freshly initialised structure encoder (seeded) instead of
        continuing the align stage's, so that the structure embeddings the
        variance stage measures spreads in are learned against the final means
        only.
    variance_epochs, variance_lr : int, float
        The variance stage (30 epochs, 3e-2: the variance readout's features
        vary little between formulas, so its weights must grow far).
    floor_quantile : float, default=0.0002
        The variance floor (what a single known structure gets) is this
        quantile of the (positive) polymorph spreads of formulas with several
        structures. A low floor separates polymorphic from single-structure
        formulas in the log-space fit: on validation formulas of the Materials
        Project corpus (held out of the variance fit, not the evaluation's
        held-out formulas), quantiles 0.005, 0.001, 0.0002 and 0 gave a
        polymorphic vs single ROC AUC of 0.737, 0.745, 0.752 and 0.746
        (benchmarks/results/variance_floor.md).
    alloy_fraction : float, default=0.05
        Virtual substitutional alloys (see :func:`substitution_alloys`) added to
        the variance stage, as a share of the formulas, so that doped formulas
        learn to be uncertain. A trade-off, measured from the shipped model on
        the bundled corpus (5,667 formulas): no alloys gave a polymorphic vs
        single ROC AUC of 0.76 and a doped vs stoichiometric one of 0.54; 500
        alloys 0.69 and 0.59; as many alloys as formulas drowned the polymorph
        signal (0.46).
    n_alloys : int, optional
        An exact number of alloys instead of ``alloy_fraction``.
    max_sites : int, optional
        Cells with more sites are left out of the align and realign samples
        (the structure encoder's backward pass is the expensive part: on the
        Materials Project corpus, cells above 40 sites are 23 % of the
        structures but 59 % of that work). They still count as polymorphs, and
        the variance stage embeds them (forward only): leaving them out of it
        too made 3,968 polymorphic MP formulas look single and 25,000 formulas
        unseen. ``None``: no limit.
    batch_size : int, default=256
    """

    stages: Optional[tuple] = None
    align_passes: int = 60000
    warmup_fraction: float = 0.4
    warmup_lr: float = 5e-4
    align_lr: float = 5e-5
    max_structure_rows: int = 20000
    validation_fraction: float = 0.05
    supervised_epochs: int = 20
    supervised_lr: float = 3e-4
    structure_targets: tuple = ("log_volume_per_atom", "log_density")
    realign_passes: int = 30000
    realign_fresh: bool = False
    variance_epochs: int = 30
    variance_lr: float = 3e-2
    floor_quantile: float = 0.0002
    alloy_fraction: float = 0.05
    n_alloys: Optional[int] = None
    max_sites: Optional[int] = None
    batch_size: int = 256

    def __post_init__(self):
        names = self.structure_targets
        names = (names,) if isinstance(names, str) else tuple(names)
        unknown = [n for n in names if n not in STRUCTURE_DESCRIPTORS]
        if unknown:
            raise ValueError(f"StagedRecipe.structure_targets names unknown descriptors {unknown}; choose among "
                             f"{list(STRUCTURE_DESCRIPTORS)}, or () for none")
        object.__setattr__(self, "structure_targets", names)  # frozen: a list becomes the tuple it stands for

    def to_dict(self):
        return dataclasses.asdict(self)


STAGES = ("align", "supervised", "realign", "variance")


# --------------------------------------------------------------------------- structure embeddings
def structure_embeddings(model, graphs, device="cpu", batch_size=512):
    """Structure-encoder outputs of every graph of ``graphs``, (len(graphs), hidden_dim) float32."""
    model.eval()
    expansion = model.config.graph.expansion_kwargs()
    out = np.empty((len(graphs), model.config.hidden_dim), dtype=np.float32)
    with torch.no_grad():
        for start in range(0, len(graphs), batch_size):
            part = np.arange(start, min(start + batch_size, len(graphs)))
            edge_index, dist, batch = graphs.collate(part)
            emb = model.structure(gaussian_expansion(torch.as_tensor(dist, device=device), **expansion),
                                  torch.as_tensor(edge_index, device=device), torch.as_tensor(batch, device=device),
                                  len(part))
            out[start:start + len(part)] = emb.float().cpu().numpy()
    return out


_EMBEDDING_CACHE_FORMAT = "skpolysrl-embedding-cache"
_EMBEDDING_CACHE_ARRAYS = ("format", "encoder", "digests", "embeddings")


def _encoder_digest(model):
    """sha256 of the structure encoder's weights and of the distance expansion: what an embedding depends on
    besides its graph."""
    h = hashlib.sha256(repr(sorted(model.config.graph.expansion_kwargs().items())).encode())
    for name, tensor in sorted(model.structure.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().float().cpu().numpy().tobytes())
    return h.hexdigest()


def _graph_digests(graphs):
    """(n, 32) uint8: sha256 of each structure's graph (atoms, edges, distances)."""
    ends = np.cumsum(graphs.num_edges)
    starts = ends - graphs.num_edges
    out = np.empty((len(graphs.num_nodes), 32), dtype=np.uint8)
    for i, (a, b) in enumerate(zip(starts, ends)):
        h = hashlib.sha256(int(graphs.num_nodes[i]).to_bytes(8, "little"))
        h.update(np.ascontiguousarray(graphs.edge_index[:, a:b]).tobytes())
        h.update(np.ascontiguousarray(graphs.distances[a:b]).tobytes())
        out[i] = np.frombuffer(h.digest(), dtype=np.uint8)
    return out


def _read_embedding_cache(path):
    """(encoder digest, graph digests, embeddings) of a cache we wrote; GraphCacheError for any other file."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
        if names == {f"{k}.npy" for k in _EMBEDDING_CACHE_ARRAYS}:
            with np.load(path, allow_pickle=False) as data:
                if str(data["format"]) == _EMBEDDING_CACHE_FORMAT:
                    return str(data["encoder"]), data["digests"], data["embeddings"]
    except (zipfile.BadZipFile, OSError, ValueError):
        pass
    raise GraphCacheError(f"embedding cache {path!r} exists and is not an embedding cache written by skpolysrl, "
                          "so it is left untouched; choose another path (a new .npz file)")


def cached_structure_embeddings(model, graphs, cache=None, device="cpu", batch_size=512):
    """:func:`structure_embeddings`, kept in ``cache`` (an ``.npz`` file) between runs.

    Each embedding is stored under a hash of its structure's graph, for the
    structure encoder whose weights the file records: a later run with the same
    encoder embeds only the structures the file lacks (so variance settings can
    be tried at formula speed); another encoder replaces the file's contents.
    """
    if cache is None:
        return structure_embeddings(model, graphs, device=device, batch_size=batch_size)
    cache = os.fspath(cache)
    encoder, digests = _encoder_digest(model), _graph_digests(graphs)
    keys = [d.tobytes() for d in digests]
    stored_digests = np.empty((0, 32), dtype=np.uint8)
    stored = np.empty((0, model.config.hidden_dim), dtype=np.float32)
    if os.path.lexists(cache):
        stored_encoder, cached_digests, cached = _read_embedding_cache(cache)
        if stored_encoder == encoder:
            stored_digests, stored = cached_digests, cached
    where = {d.tobytes(): i for i, d in enumerate(stored_digests)}
    missing = np.array([i for i, k in enumerate(keys) if k not in where], dtype=np.int64)
    if len(missing) == 0:
        return stored[[where[k] for k in keys]]
    computed = structure_embeddings(model, graphs.subset(missing), device=device, batch_size=batch_size)
    first = np.unique(np.array([keys[i] for i in missing]), return_index=True)[1]  # identical graphs: store one
    stored_digests = np.concatenate([stored_digests, digests[missing[first]]])
    stored = np.concatenate([stored, computed[first]])

    def write(tmp):
        with open(tmp, "wb") as fh:
            np.savez(fh, format=_EMBEDDING_CACHE_FORMAT, encoder=encoder, digests=stored_digests, embeddings=stored)

    atomic_write(cache, write)
    where = {d.tobytes(): i for i, d in enumerate(stored_digests)}
    return stored[[where[k] for k in keys]]


def polymorph_spread(embeddings, groups, n_groups):
    """Mean squared distance per dimension of each group's embeddings to the group's centroid.

    Parameters
    ----------
    embeddings : (n, d) array
    groups : (n,) int array, the group (formula or alloy) of each row; a row
        may belong to several groups if passed several times
    n_groups : int

    Returns
    -------
    spread : (n_groups,) float64, 0 for groups of one structure, NaN for empty groups
    """
    e = np.asarray(embeddings, dtype=np.float64)
    counts = np.bincount(groups, minlength=n_groups).astype(np.float64)
    centroid = np.zeros((n_groups, e.shape[1]))
    np.add.at(centroid, groups, e)
    with np.errstate(invalid="ignore", divide="ignore"):
        centroid /= counts[:, None]
        sq = ((e - centroid[groups]) ** 2).sum(axis=1)
        return np.bincount(groups, weights=sq, minlength=n_groups) / counts / e.shape[1]


def substitution_alloys(stoichiometries, n_alloys, rng, x_range=(0.02, 0.5)):
    """Virtual substitutional alloys: pairs of formulas that differ by one element, mixed.

    A and B qualify when they have the same elements in the same amounts but
    one (Bi2Te3 and Bi2Se3); the alloy ``(1 - x) A + x B`` (Bi2Te2.7Se0.3 for
    x = 0.1) has the structures of both as its candidate structures.

    Returns
    -------
    alloys : list of Stoichiometry
    pairs : (n, 2) int array, the rows of ``stoichiometries`` mixed
    """
    slots = {}
    for i, s in enumerate(stoichiometries):
        if len(s.atomic_numbers) < 2:
            continue
        fractions = [round(f, 6) for f in s.fractions]
        for k in range(len(s.atomic_numbers)):
            rest = tuple((z, f) for j, (z, f) in enumerate(zip(s.atomic_numbers, fractions)) if j != k)
            slots.setdefault((rest, fractions[k]), []).append(i)
    pairs = [(a, b) for members in slots.values() if len(members) > 1
             for a, b in zip(members[:-1], members[1:])]
    if not pairs:
        return [], np.empty((0, 2), dtype=np.int64)
    pairs = np.asarray(pairs, dtype=np.int64)
    pairs = pairs[rng.permutation(len(pairs))[:n_alloys]]
    return mix_alloys(stoichiometries, pairs, rng, x_range), pairs


def mix_alloys(stoichiometries, pairs, rng, x_range=(0.02, 0.5)):
    """``(1 - x) A + x B`` for each row ``(A, B)`` of ``pairs`` (rows of ``stoichiometries``), x uniform in
    ``x_range`` (one draw per pair, in order): list of Stoichiometry."""
    alloys = []
    for a, b in pairs:
        x = rng.uniform(*x_range)
        mix = {}
        for s, w in ((stoichiometries[a], 1.0 - x), (stoichiometries[b], x)):
            for z, f in zip(s.atomic_numbers, s.fractions):
                mix[z] = mix.get(z, 0.0) + w * f
        z = tuple(sorted(mix))
        alloys.append(Stoichiometry(z, tuple(mix[k] for k in z)))
    return alloys


class _VarianceObjective(torch.nn.Module):
    """Squared error of the log variance (2 log sigma, every dimension) against the log of a target variance."""

    find_unused_parameters = False

    def __init__(self, encoder, table, log_targets, device):
        super().__init__()
        self.encoder, self.table, self.device = encoder, table, device
        self.log_targets = torch.as_tensor(log_targets, dtype=torch.float32, device=device)

    def forward(self, idx):
        enc = self.encoder
        z, w, edges, batch = self.table.collate(idx).to_torch(self.device)
        with torch.no_grad():  # the mean path is frozen: its node embeddings are inputs here
            h = enc.node_embeddings(z, w, edges, batch, len(idx))
            s = segment_sum(h, batch, len(idx))
        log_sigma = enc.lin_sigma(set2set(enc.set2set_sigma, h, batch, len(idx))) + s
        err = 2 * log_sigma - self.log_targets[torch.as_tensor(idx, device=self.device)][:, None]
        loss = err.pow(2).mean()
        return loss, {"loss": float(loss.detach()), "log_variance": float((2 * log_sigma.detach()).mean())}


def fit_variances(model, table, targets, *, epochs, lr, batch_size=256, seed=0, device="cpu", callbacks=(),
                  checkpoint=None):
    """Train the variance path so that each row's variance (every dimension) approaches ``targets``.

    Fitted in log space: the spreads span orders of magnitude and are
    heavy-tailed, and an uncertainty is read by its rank (a Gaussian
    likelihood gave ROC AUC 0.64 vs 0.69 for log space in our prototype).
    """
    variance_path = [p for name, p in model.stoichiometry.named_parameters() if "sigma" in name]
    model.bound_log_sigma(None)  # a bound from an earlier variance fit would hide the start below
    objective = _VarianceObjective(model.stoichiometry, table, np.log(targets), device)
    # start on the targets' scale: shift the readout's bias by the gap between the mean log variance and the
    # mean log target (a random model starts near sigma = 1, e^10 times the targets: hundreds of steps to close)
    log_sigma = encode(model, table, device=device)[1]
    with torch.no_grad():
        model.stoichiometry.lin_sigma.bias += float(0.5 * np.log(targets).mean() - log_sigma.mean())
    trainer = Trainer([{"params": variance_path}], lr=lr, epochs=epochs, batch_size=batch_size, n_rows=len(table),
                      seed=seed, device=device, callbacks=callbacks, checkpoint=checkpoint,
                      run_key={"data": [table.sizes, table.atomic_numbers, table.fractions, np.asarray(targets)],
                               "stage": "variance", "model": model.config})
    history = trainer.fit(objective)
    # the variance path extrapolates on formulas unlike the fitted ones (pure elements reached 500x the
    # widest spread): no Gaussian gets wider than the widest polymorph family it was fitted to
    model.bound_log_sigma(0.5 * float(np.log(np.max(targets))))
    return history


# --------------------------------------------------------------------------- the recipe
class _ValidationLoss:
    """NT-Xent between held-out formulas' means and their structures (lower = better aligned)."""

    def __init__(self, model, table, formula_ids, graphs, device, batch_size=256):
        self.model, self.table, self.formula_ids, self.graphs = model, table, formula_ids, graphs
        self.device, self.batch_size = device, batch_size

    def __call__(self, module=None):
        mu = torch.as_tensor(encode(self.model, self.table, device=self.device)[0])
        structures = torch.as_tensor(structure_embeddings(self.model, self.graphs, device=self.device))
        self.model.train()
        ids = torch.as_tensor(self.formula_ids)
        losses = [float(nt_xent_loss(mu[i:i + self.batch_size], structures[i:i + self.batch_size],
                                     polymorph_match(ids[i:i + self.batch_size]))[0])
                  for i in range(0, len(mu), self.batch_size) if len(mu) - i >= 2]
        return float(np.mean(losses))


def _epochs(passes, rows, low, high):
    return int(min(max(math.ceil(passes / max(rows, 1)), low), high))


def _log_function(verbose):
    if not verbose:
        return None

    def log(line):
        print(f"[PolySRLFeaturizer] {line}", file=sys.stderr, flush=True)

    return log


def staged_pretrain(model, stoichiometries, formula_ids, build_graphs, recipe, *, targets=None, descriptors=None,
                    n_sites=None,
                    seed=0, device="cpu", from_scratch=True, verbose=False, checkpoint=None, probe=None,
                    on_epoch_end=None, embedding_cache=None):
    """Run the default recipe on ``model`` in place.

    Parameters
    ----------
    model : PolySRLModel with a structure encoder, on ``device``
    stoichiometries : list of Stoichiometry, one per structure
    formula_ids : (n,) int array, equal for structures of the same formula
    build_graphs : callable(rows) -> StructureGraphs
        Builds the graphs of the structures at ``rows`` (sorted positions):
        only the structures a stage uses are turned into graphs.
    recipe : StagedRecipe
    targets : (n,) or (n, k) array, optional
        Per-structure properties for the supervised stage (NaN = unknown);
        averaged per formula and standardised per column.
    descriptors : (n, k) array, optional
        Per-structure descriptors (``recipe.structure_targets``, from
        :func:`skpolysrl.graphs.structure_descriptors`), learned in the
        supervised stage as further columns of ``targets``.
    n_sites : (n,) int array, optional
        Sites per structure; needed when ``recipe.max_sites`` is set.
    from_scratch : bool
        Random weights: the align stage runs (unless ``recipe.stages`` says otherwise).
    checkpoint : path, optional
        Each stage checkpoints to ``{checkpoint}.{stage}`` and resumes from it (a
        finished stage's file restores its final weights); the files are removed
        when every stage has finished.
    probe : callable(model, device=) -> float, optional
        A held-out score recorded as ``probe_mae`` after every epoch of every stage.
    on_epoch_end : callable(dict), optional
        Called with each epoch's record.
    embedding_cache : path, optional
        An ``.npz`` file keeping the variance stage's structure embeddings
        between runs (:func:`cached_structure_embeddings`).

    Returns
    -------
    history : list of dict, every epoch of every stage, with its ``stage``
    """
    log = _log_function(verbose)
    rng = np.random.default_rng(seed)
    n = len(stoichiometries)
    formula_ids = np.asarray(formula_ids)
    # what the supervised stage learns: the given properties, then the structure descriptors
    columns = [np.asarray(c, dtype=np.float64).reshape(n, -1) for c in (targets, descriptors) if c is not None]
    y = np.hstack(columns) if columns else None
    stages = recipe.stages
    if stages is None:
        stages = tuple(s for s in STAGES if (s != "align" or from_scratch) and (s != "supervised" or y is not None))
    unknown = set(stages) - set(STAGES)
    if unknown:
        raise ValueError(f"unknown stages {sorted(unknown)}; choose among {STAGES}")
    if "supervised" in stages and y is None:
        raise ValueError("the supervised stage needs per-structure properties (fit(structures, y)) or "
                         "StagedRecipe.structure_targets")
    n_formulas = int(formula_ids.max()) + 1
    first_row = np.unique(formula_ids, return_index=True)[1]  # a representative row per formula
    monitor_rows = rng.permutation(first_row)[:2048]
    monitor_table = StoichiometryTable([stoichiometries[i] for i in monitor_rows])
    history = []
    written = []

    def stage_checkpoint(stage):
        if checkpoint is None:
            return None
        path = f"{os.fspath(checkpoint)}.{stage}"
        written.append(path)
        return path

    def callbacks_for(stage):
        return pretraining_callbacks(model, device=device, monitor_table=monitor_table, probe=probe, log=log,
                                     progress=verbose, checkpoint=stage_checkpoint(stage), on_epoch_end=on_epoch_end)

    def record(stage, records):
        for r in records:
            history.append({"stage": stage, **r})

    # structure stages use a sample of at most max_structure_rows rows; the variance stage embeds the
    # structures of polymorphic formulas and of alloy parents: their graphs are built once, together
    sample = np.sort(rng.permutation(_trainable_rows(n, n_sites, recipe.max_sites))[:recipe.max_structure_rows])
    if not {"align", "realign"} & set(stages):  # no structure training: no graphs for it
        sample = sample[:0]
    # the alloys have a stream of their own: every draw is the same whichever stages run, so a fit split into
    # stages (align; then supervised; then realign and variance, each from the last one's model) is the full fit
    alloy_rng = np.random.default_rng([seed, 1])
    plan = _variance_plan(stoichiometries, formula_ids, recipe, alloy_rng) if "variance" in stages else None
    if "variance" in stages and plan is None:
        stages = tuple(s for s in stages if s != "variance")
    needed = sample if plan is None else np.union1d(sample, plan["rows"])
    position = np.full(n, -1, dtype=np.int64)
    position[needed] = np.arange(len(needed))
    all_graphs = build_graphs(needed) if len(needed) else None  # e.g. only the supervised stage: no graphs

    def graphs_for(rows):
        return all_graphs.subset(position[rows])

    def local_ids(rows):
        return np.unique(formula_ids[rows], return_inverse=True)[1]

    def run_infomax(rows, epochs, lr, warmup_epochs, stage, validation=None):
        """NT-Xent between formula means and structures; ``validation`` (a subset of ``rows``) is held out
        to keep the epoch with its lowest NT-Xent."""
        callbacks = callbacks_for(stage)
        if validation is not None:
            rows = np.setdiff1d(rows, validation)
            scorer = _ValidationLoss(model, StoichiometryTable([stoichiometries[i] for i in validation]),
                                     local_ids(validation), graphs_for(validation), device)
            callbacks[1:1] = [HeldOutMonitor(scorer, "validation_loss", at_start=True),
                              KeepBest("validation_loss", log=log)]
        config = PretrainConfig(objective="infomax", epochs=epochs, batch_size=recipe.batch_size, lr=lr,
                                warmup_epochs=warmup_epochs, seed=seed)
        records = pretrain(model, StoichiometryTable([stoichiometries[i] for i in rows]), local_ids(rows),
                           graphs_for(rows), config, device=device, callbacks=callbacks)
        record(stage, records)
        return records

    if "align" in stages:
        ids = formula_ids[sample]
        distinct = np.unique(ids)
        held = rng.permutation(distinct)[:max(2, int(round(recipe.validation_fraction * len(distinct))))]
        validation = sample[np.isin(ids, held)]
        epochs = _epochs(recipe.align_passes, len(sample), 2, 40)
        warm = max(1, int(round(recipe.warmup_fraction * epochs)))
        if log:
            log(f"stage align: {len(sample)} structures, {warm} warm-up + {epochs - warm} joint epochs")
        run_infomax(np.setdiff1d(sample, validation), warm, recipe.warmup_lr, warm, "align-warmup")
        joint = run_infomax(sample, epochs - warm, recipe.align_lr, 0, "align", validation=validation)
        _warn_if_collapsed(joint)
    if "supervised" in stages:
        # one row per formula: the mean of its structures' known values, standardised per property
        sums = np.zeros((n_formulas, y.shape[1]))
        counts = np.zeros((n_formulas, y.shape[1]))
        known = np.isfinite(y)
        np.add.at(sums, formula_ids, np.where(known, y, 0.0))
        np.add.at(counts, formula_ids, known)
        with np.errstate(invalid="ignore"):
            per_formula = sums / counts
        per_formula = (per_formula - np.nanmean(per_formula, 0)) / np.nanstd(per_formula, 0).clip(min=1e-12)
        keep = np.isfinite(per_formula).any(axis=1)
        rows = first_row[keep]
        if log:
            log(f"stage supervised: {keep.sum()} formulas, {y.shape[1]} properties")
        config = PretrainConfig(objective="supervised", epochs=recipe.supervised_epochs,
                                batch_size=recipe.batch_size, lr=recipe.supervised_lr, seed=seed)
        records = pretrain(model, StoichiometryTable([stoichiometries[i] for i in rows]), np.arange(len(rows)),
                           None, config, targets=per_formula[keep], device=device,
                           callbacks=callbacks_for("supervised"))
        record("supervised", records)
    if "realign" in stages:
        rows = sample
        epochs = _epochs(recipe.realign_passes, len(rows), 1, 20)
        if log:
            log(f"stage realign: {len(rows)} structures, {epochs} epochs (means frozen"
                f"{', fresh structure encoder' if recipe.realign_fresh else ''})")
        if recipe.realign_fresh:
            with seeded(seed):
                model.structure = None
                model.add_structure_encoder()
        run_infomax(rows, epochs, recipe.warmup_lr, epochs, "realign")
    if "variance" in stages:
        record("variance", _variance_stage(model, formula_ids, plan, graphs_for, recipe, seed, device, log,
                                           verbose, stage_checkpoint("variance"), embedding_cache))
    model.eval()
    for path in written:  # every stage finished: its resume point is no longer needed
        if os.path.exists(path):
            os.remove(path)
    return history


def _trainable_rows(n, n_sites, max_sites):
    """The rows the structure-training stages may sample: all, or the cells of at most ``max_sites`` sites."""
    if max_sites is None:
        return np.arange(n)
    if n_sites is None or len(n_sites) != n:
        raise ValueError(f"StagedRecipe.max_sites={max_sites} needs the number of sites of each of the {n} "
                         "structures (n_sites)")
    rows = np.flatnonzero(np.asarray(n_sites) <= max_sites)
    if len(rows) < 2:
        raise ValueError(f"only {len(rows)} of {n} structures have at most StagedRecipe.max_sites={max_sites} "
                         "sites: raise max_sites, or set it to None")
    return rows


def _variance_plan(stoichiometries, formula_ids, recipe, rng):
    """Formulas, virtual alloys and the structure rows to embed for the variance stage."""
    n_formulas = int(formula_ids.max()) + 1
    counts = np.bincount(formula_ids, minlength=n_formulas)
    if not (counts > 1).any():
        warnings.warn("no formula has several structures (polymorphs), so the variance stage is skipped and the "
                      "uncertainty column keeps its starting values: add polymorphs to the structures, or leave "
                      "'variance' out of StagedRecipe.stages to silence this", UserWarning, stacklevel=4)
        return None
    first_row = np.unique(formula_ids, return_index=True)[1]
    formulas = [stoichiometries[i] for i in first_row]
    n_alloys = recipe.n_alloys if recipe.n_alloys is not None else int(round(recipe.alloy_fraction * len(formulas)))
    alloys, pairs = substitution_alloys(formulas, n_alloys, rng)
    # structures to embed: every structure of a polymorphic formula or of an alloy's parent
    wanted = counts > 1
    if len(pairs):
        wanted[pairs.ravel()] = True
    return {"counts": counts, "formulas": formulas, "alloys": alloys, "pairs": pairs,
            "rows": np.flatnonzero(wanted[formula_ids])}


def _variance_stage(model, formula_ids, plan, graphs_for, recipe, seed, device, log, verbose, checkpoint,
                    embedding_cache=None):
    counts, formulas, alloys, pairs, rows = (plan[k] for k in ("counts", "formulas", "alloys", "pairs", "rows"))
    n_formulas = len(counts)
    if log:
        log(f"stage variance: embedding {len(rows)} structures; {len(formulas)} formulas + {len(alloys)} "
            "virtual alloys")
    embeddings = cached_structure_embeddings(model, graphs_for(rows), cache=embedding_cache, device=device)
    row_formula = formula_ids[rows]
    spread = polymorph_spread(embeddings, row_formula, n_formulas)
    polymorphic = counts > 1
    if not (spread[polymorphic] > 0).any():
        warnings.warn("the structures of every polymorphic formula are identical (no spread), so the variance stage "
                      "is skipped and the uncertainty column keeps its starting values: remove duplicate "
                      "structures, or leave 'variance' out of StagedRecipe.stages", UserWarning, stacklevel=4)
        return []
    # quantile of the positive spreads: identical duplicate structures spread 0, and a zero floor has no log
    floor = float(np.quantile(spread[polymorphic & (spread > 0)], recipe.floor_quantile))
    targets = floor + np.where(polymorphic, spread, 0.0)
    if len(alloys):
        # an alloy's candidate structures: those of both parents (rows may count for two alloys)
        members = [np.flatnonzero(np.isin(row_formula, pair)) for pair in pairs]
        group = np.concatenate([np.full(len(m), k) for k, m in enumerate(members)])
        alloy_spread = polymorph_spread(embeddings[np.concatenate(members)], group, len(alloys))
        targets = np.concatenate([targets, floor + alloy_spread])
    table = StoichiometryTable(formulas + alloys)
    callbacks = [cb for cb in (ProgressBar() if verbose else None, EpochLog(log) if log else None) if cb]
    return fit_variances(model, table, targets, epochs=recipe.variance_epochs, lr=recipe.variance_lr,
                         batch_size=recipe.batch_size, seed=seed, device=device, callbacks=callbacks,
                         checkpoint=checkpoint)


def _warn_if_collapsed(records):
    if not records:
        return
    last = records[-1]
    rank, retrieval = last.get("effective_rank", np.inf), last.get("retrieval", 1.0)
    if rank < 10 or last.get("mean_cosine", 0.0) > 0.9:
        warnings.warn(
            f"the formula embeddings are collapsing (effective rank {rank:.1f}, mean cosine "
            f"{last.get('mean_cosine', float('nan')):.2f} after alignment): pretrain on more structures, or lower "
            "StagedRecipe.warmup_lr / align_lr", RuntimeWarning, stacklevel=3)
    elif retrieval < 2.0 / 256:
        warnings.warn(
            f"formulas and structures did not align (retrieval {retrieval:.3f}, chance ~{1 / 256:.3f}): raise "
            "StagedRecipe.align_passes or pretrain on more structures", RuntimeWarning, stacklevel=3)
