"""PolySRLFeaturizer: formulas -> PolySRL mean embedding + uncertainty.

scikit-learn transformer and matminer featurizer in one object.
"""

import copy
import inspect
import numbers
import os
import sys
import threading
import warnings

import numpy as np
import pandas as pd
from matminer.featurizers.base import BaseFeaturizer
from sklearn.exceptions import NotFittedError
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted

from . import _io
from . import distributed as _ddp
from . import registry
from ._elements import known_atomic_numbers, matscholar_table
from ._formula import StoichiometryTable, parse_formula, parse_formulas
from ._runtime import resolve_device as _resolve_device
from .exceptions import FIT_HINT, FormulaError, ModelFileError
from .loss import PAIR_REDUCTIONS
from .nn import output_features_np
from .recipes import RECIPES, StagedRecipe, staged_pretrain
from .training import (OBJECTIVES, STRUCTURE_OBJECTIVES, HeldOutProbe, PretrainConfig, encode, pretrain,
                       pretraining_callbacks)

__all__ = ["PolySRLFeaturizer", "default_model_path"]

_FORMULA_COLUMNS = ("formula", "composition", "structure")
_PICKLE_SUFFIXES = (".joblib", ".pkl", ".pickle")


def default_model_path():
    """Path of the weights shipped inside the package."""
    return registry.cached_model_path("default")


def _load_model_file(path):
    """A fresh model (CPU) from a ``.pt`` model file (pickles are refused: they run code)."""
    path = os.fspath(path)
    if path.lower().endswith(_PICKLE_SUFFIXES):
        raise ModelFileError(
            f"{path!r} is a pickle; pretrained= reads only .pt model files (weights, no code), because "
            "unpickling runs code from the file. If you trust it, load it with "
            "PolySRLFeaturizer.load_trusted(path) (CLI: --trust-pickle) and re-save it with .save('model.pt')"
        )
    return _io.load_model(path)[0]


# Pretrained models loaded in this process, read-only and shared by every featurizer (and by every
# matminer pool task of a worker): key = (file, its size and mtime, device)
_SHARED_MODELS = {}
_SHARED_LOCK = threading.Lock()


def _shared_model(source, device):
    """The model named by ``source`` (registered name or path) on ``device``, loaded once per process."""
    path = registry.model_file(source)
    stat = os.stat(path)
    key = (os.path.realpath(path), stat.st_size, stat.st_mtime_ns, str(device))
    model = _SHARED_MODELS.get(key)
    if model is None:
        with _SHARED_LOCK:
            model = _SHARED_MODELS.get(key)
            if model is None:
                model = _load_model_file(path).to(device).eval()
                # one small forward now: torch initialises its kernels once here, and the process-pool
                # workers that matminer forks from this process later start warm (~60 ms less per task)
                encode(model, StoichiometryTable(parse_formulas(["NaCl"], known_atomic_numbers())), device=device)
                _SHARED_MODELS[key] = model
    return model


def _progress_bar(pbar, total):
    """A tqdm bar over ``total`` formulas, or None; ``pbar`` is a bool or tqdm keyword arguments (as in
    matminer)."""
    if not pbar:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, **{"desc": "PolySRLFeaturizer", "unit": "formula", **(pbar if isinstance(pbar, dict) else {})})


def _pool_task_entries():
    """The rows of the ``multiprocessing.Pool.map`` task this process is running, or None.

    A pool worker runs a task as ``multiprocessing.pool.mapstar((func, rows))``; the
    frame of that call, a few calls up the stack, holds the task's rows.
    """
    import multiprocessing
    import multiprocessing.pool

    if multiprocessing.parent_process() is None:  # not a pool worker
        return None
    frame = sys._getframe(2)
    for _ in range(6):
        if frame is None:
            return None
        if frame.f_code is multiprocessing.pool.mapstar.__code__:
            args = frame.f_locals.get("args")
            return args[1] if isinstance(args, tuple) and len(args) == 2 and isinstance(args[1], (list, tuple)) else None
        frame = frame.f_back
    return None


def _one_thread_in_pool_workers():
    """matminer runs ``featurize`` in a process pool of n_jobs = cpu_count() workers: torch's default of
    one thread per core in each would oversubscribe the machine n_jobs times."""
    import multiprocessing

    import torch

    if multiprocessing.parent_process() is not None and torch.get_num_threads() != 1:
        torch.set_num_threads(1)


def _is_structure(x):
    from pymatgen.core import IStructure, Structure

    return isinstance(x, (Structure, IStructure))


def _as_structures(X, ignore_errors=False):
    """The structures in X (any source ``fit`` takes: list, DataFrame, path), else None for formulas."""
    from .datasets._sources import as_structure_source

    return as_structure_source(X, ignore_errors=ignore_errors)


def _as_items(X):
    """Formula-like items of X as a flat list (strings, Compositions or Structures)."""
    if isinstance(X, pd.DataFrame):
        cols = [c for c in _FORMULA_COLUMNS if c in X.columns]
        if cols:
            return list(X[cols[0]])
        if X.shape[1] == 1:
            return list(X.iloc[:, 0])
        raise ValueError(
            f"cannot tell which column holds formulas among {list(X.columns)}; "
            f"name it one of {_FORMULA_COLUMNS} or pass a single column"
        )
    if isinstance(X, (str, bytes)) or _is_structure(X) or not hasattr(X, "__len__"):
        raise TypeError(
            f"expected a list-like of formulas, got {type(X).__name__}; wrap a single formula in a list: [{X!r}]"
        )
    if isinstance(X, np.ndarray):
        if X.ndim == 2 and X.shape[1] == 1:
            X = X[:, 0]
        elif X.ndim != 1:
            raise ValueError(f"expected a 1-D array of formulas (or shape (n, 1)), got shape {X.shape}")
    return list(X)


#: Keywords of the paper's single-stage recipe (unused by recipe="default"; setting one warns).
_PAPER_RECIPE_KEYWORDS = ("epochs", "lr", "n_samples", "beta", "pair_reduction", "warmup_epochs", "threshold_lr",
                          "alignment_weight", "keep_best", "variance_only")


def _targets(X, y, n):
    """Per-structure properties for the supervised stage: an array (n,) or (n, k), or column names of X."""
    if y is None:
        return None
    if isinstance(y, str) or (isinstance(y, (list, tuple)) and y and all(isinstance(c, str) for c in y)):
        if not isinstance(X, pd.DataFrame):
            raise ValueError(f"y={y!r} names columns: pass the structures as a DataFrame that has them")
        missing = [c for c in ([y] if isinstance(y, str) else y) if c not in X.columns]
        if missing:
            raise ValueError(f"y names columns {missing} that the DataFrame lacks (it has {list(X.columns)})")
        y = X[y].to_numpy(dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if len(y) != n:
        raise ValueError(f"y has {len(y)} rows for {n} structures: give one row of properties per structure "
                         "(NaN where a property is unknown)")
    return y


class PolySRLFeaturizer(BaseFeaturizer):
    """Formula -> PolySRL representation (Gaussian mean) and its uncertainty.

    A pretrained featurizer is ready on construction::

        X = PolySRLFeaturizer().transform(["Fe2O3", "NaCl"])   # the shipped model, no fit

    The weights are loaded on the first ``transform`` (once per process, shared by
    every featurizer naming the same file). ``fit`` on crystal structures runs
    PolySRL's contrastive pretraining; ``fit`` on formulas trains nothing and
    keeps the weights (so the featurizer can sit in a
    :class:`~sklearn.pipeline.Pipeline`, ``cross_val_score`` or ``GridSearchCV``);
    ``transform`` maps formulas to an array ``(n, hidden_dim + 1)``: the mean
    embedding, then the uncertainty (geometric mean of the diagonal variances,
    :func:`skpolysrl.nn.output_features`).

    Parameters
    ----------
    pretrained : "default", model name, None, or path, default="default"
        Initial weights: ``"default"`` = the model shipped in the package,
        another name of :mod:`skpolysrl.registry` (downloaded once into the
        cache), ``None`` = random initialisation (seeded by ``random_state``;
        needs a ``fit``), or a path to a model file written by :meth:`save`
        (``.pt``, read with ``torch.load(weights_only=True)``: no code runs).
        Pickles (joblib dumps) are refused here: see :meth:`load_trusted`.
    objective : {"polysrl", "deterministic", "infomax"}, default="polysrl"
        ``"deterministic"`` is the paper's "w/o Sampling" ablation.
    epochs : int, default=100
    batch_size : int, default=256
        Structures per contrastive batch.
    lr : float, default=5e-5
        Adam learning rate.
    n_samples : int, default=8
        Samples J drawn from each Gaussian per step.
    beta : float, default=1e-8
        Weight of the KL term.
    device : {"auto", "cpu", "cuda", "cuda:N"}, default="auto"
        Under ``torchrun``, "auto" and "cuda" mean ``cuda:LOCAL_RANK`` and ``fit``
        pretrains data-parallel over the processes (docs: "Multi-GPU and multi-node").
    random_state : int or None, default=None
        Seeds initialisation, batch order and sampling. Same seed, data and
        device give identical embeddings.
    verbose : bool, default=True
        Progress bars and one line per pretraining epoch (stderr).
    grad_clip : float, default=2.0
        Gradient-norm clip.
    pair_reduction : {"sum", "mean", "balanced"}, default="sum"
        How pair losses are combined; "sum" is the paper's.
    c_init, d_init : float, default=20.0
        Initial match scale and shift (logit = -c * distance + d).
    hidden_dim : int, default=200
        Width of both encoders (used only for ``pretrained=None``).
    graph_cache : path, optional
        ``.npz`` file caching the structure graphs between fits.
    transform_batch_size : int, default=4096
        Formulas per forward pass in ``transform`` (bounds memory).
    ignore_errors : bool, default=False
        In ``transform``, give NaN rows for invalid formulas instead of raising.
    warmup_epochs : int, default=0
        First epochs train only the structure encoder, the variance path and
        c, d, against frozen formula means (a counter-measure to the collapse
        described in docs/method.md; 0 = the paper's recipe).
    log_sigma_init : float or None, default=None
        Initial bias of the log-sigma head (``pretrained=None`` only); None keeps
        PyTorch's default initialisation (sigma ~ 1), as the paper.
    threshold_lr : float or None, default=None
        Learning rate of the match scale c and shift d; None = ``lr``.
    alignment_weight : float, default=0.0
        Weight of an auxiliary NT-Xent term between formula means and their
        structures (0 = the paper's loss alone); see docs/method.md.
    keep_best : bool, default=False
        With ``fit(..., monitor=...)``: keep the weights of the epoch with the
        best held-out probe (the initial weights included), i.e. early stopping.
    variance_only : bool, default=False
        Train only the variance path and c, d (means and structure encoder
        frozen): calibrates uncertainties of an already trained mean.
    checkpoint : path, optional
        Pretraining checkpoint (model, optimizer, RNG states, epoch, history),
        written every ``checkpoint_every`` epochs. If the file exists when
        ``fit`` starts, training resumes from it and ends with the same weights
        as an uninterrupted run (same data, settings and thread count); a
        checkpoint from other data or settings raises ValueError.
    checkpoint_every : int, default=1
    recipe : {"default", "paper"} or StagedRecipe, default="default"
        How ``fit(structures)`` pretrains with ``objective="polysrl"``.
        "default": the staged recipe of :mod:`skpolysrl.recipes` (alignment of
        the structure encoder and the means, the supervised stage when ``y`` is
        given, realignment, then the variances fitted to each formula's
        polymorphs); pass a :class:`~skpolysrl.recipes.StagedRecipe` to change
        its settings. "paper": the paper's single soft-contrastive stage with
        ``epochs``, ``lr``, ``n_samples``, ``beta`` and the other training
        keywords above (they apply to "paper" and to the other objectives only);
        it collapses on small corpora (docs/method.md).
    embedding_cache : path, optional
        ``.npz`` file keeping the default recipe's structure embeddings (its
        variance stage) between fits with the same structure encoder, so that
        variance settings can be changed at formula speed.

    Attributes
    ----------
    model_ : skpolysrl.nn.PolySRLModel
        The network: the one ``fit`` trained, else the pretrained one (loaded on
        first access and shared, read-only, with other featurizers of the same
        weights in this process). On CPU after unpickling.
    history_ : list of dict
        One record per pretraining epoch: loss, kl, positive_correct,
        negative_correct, mean_uncertainty, c, d, effective_rank, mean_cosine,
        seconds (empty when fitted on formulas).
    n_features_out_ : int
    device_ : str
        Device the model lives on.

    Notes
    -----
    A pickled featurizer holds the weights ``fit`` trained; one that was not
    fitted on structures holds only ``pretrained`` (the name or path of its
    weights) and loads them again when it is unpickled and used.
    """

    _parameter_constraints = {
        "pretrained": [None, str, os.PathLike],
        "objective": [StrOptions(set(OBJECTIVES))],
        "epochs": [Interval(numbers.Integral, 0, None, closed="left")],
        "batch_size": [Interval(numbers.Integral, 2, None, closed="left")],
        "lr": [Interval(numbers.Real, 0, None, closed="neither")],
        "n_samples": [Interval(numbers.Integral, 1, None, closed="left")],
        "beta": [Interval(numbers.Real, 0, None, closed="left")],
        "device": [str],
        "random_state": [None, Interval(numbers.Integral, 0, None, closed="left")],
        "verbose": ["boolean"],
        "grad_clip": [None, Interval(numbers.Real, 0, None, closed="neither")],
        "pair_reduction": [StrOptions(set(PAIR_REDUCTIONS))],
        "c_init": [Interval(numbers.Real, 0, None, closed="neither")],
        "d_init": [numbers.Real],
        "hidden_dim": [Interval(numbers.Integral, 1, None, closed="left")],
        "graph_cache": [None, str, os.PathLike],
        "embedding_cache": [None, str, os.PathLike],
        "transform_batch_size": [Interval(numbers.Integral, 1, None, closed="left")],
        "ignore_errors": ["boolean"],
        "warmup_epochs": [Interval(numbers.Integral, 0, None, closed="left")],
        "log_sigma_init": [None, numbers.Real],
        "threshold_lr": [None, Interval(numbers.Real, 0, None, closed="neither")],
        "alignment_weight": [Interval(numbers.Real, 0, None, closed="left")],
        "keep_best": ["boolean"],
        "variance_only": ["boolean"],
        "checkpoint": [None, str, os.PathLike],
        "checkpoint_every": [Interval(numbers.Integral, 1, None, closed="left")],
        "recipe": [StrOptions(set(RECIPES)), StagedRecipe],
    }

    def __init__(self, pretrained="default", objective="polysrl", epochs=100, batch_size=256, lr=5e-5,
                 n_samples=8, beta=1e-8, device="auto", random_state=None, verbose=True, grad_clip=2.0,
                 pair_reduction="sum", c_init=20.0, d_init=20.0, hidden_dim=200, graph_cache=None,
                 transform_batch_size=4096, ignore_errors=False, warmup_epochs=0, log_sigma_init=None,
                 threshold_lr=None, alignment_weight=0.0, keep_best=False,
                 variance_only=False, checkpoint=None, checkpoint_every=1, recipe="default",
                 embedding_cache=None):
        self.pretrained = pretrained
        self.objective = objective
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.n_samples = n_samples
        self.beta = beta
        self.device = device
        self.random_state = random_state
        self.verbose = verbose
        self.grad_clip = grad_clip
        self.pair_reduction = pair_reduction
        self.c_init = c_init
        self.d_init = d_init
        self.hidden_dim = hidden_dim
        self.graph_cache = graph_cache
        self.embedding_cache = embedding_cache
        self.transform_batch_size = transform_batch_size
        self.ignore_errors = ignore_errors
        self.warmup_epochs = warmup_epochs
        self.log_sigma_init = log_sigma_init
        self.threshold_lr = threshold_lr
        self.alignment_weight = alignment_weight
        self.keep_best = keep_best
        self.variance_only = variance_only
        self.checkpoint = checkpoint
        self.checkpoint_every = checkpoint_every
        self.recipe = recipe

    @classmethod
    def from_pretrained(cls, name_or_path="default", *, cache_dir=None, **params):
        """A featurizer with the named pretrained weights, loaded now and ready to transform.

        Parameters
        ----------
        name_or_path : str or path-like, default="default"
            A registered model name (:func:`skpolysrl.registry.available_models`;
            downloaded into the cache on first use) or a model file.
        cache_dir : path, optional
            Cache directory for downloaded models (default: ``SKPOLYSRL_CACHE``,
            else the platform's user cache). With it, ``pretrained`` is set to the
            file's path, so that clones find the same file.
        **params
            Other constructor parameters (e.g. ``device="cpu"``, ``verbose=False``).

        Returns
        -------
        PolySRLFeaturizer
        """
        source = name_or_path
        if cache_dir is not None and isinstance(source, str):
            source = str(registry.model_file(source, cache=cache_dir, progress=True))
        featurizer = cls(pretrained=source, **params)
        featurizer._validate_params()
        featurizer.model_  # load now: a missing or corrupt file fails here, not at the first transform
        return featurizer

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.string = True  # formulas
        tags.requires_fit = self.pretrained is None  # pretrained weights: ready on construction
        return tags

    def __sklearn_is_fitted__(self):
        """Pretrained weights need no fit; ``pretrained=None`` (random weights) does."""
        return self.pretrained is not None or "_model" in vars(self)

    @property
    def model_(self):
        fitted = vars(self).get("_model")
        if fitted is not None:
            return fitted
        if self.pretrained is None:
            raise NotFittedError(
                "PolySRLFeaturizer(pretrained=None) has random weights only after fit; "
                "call fit(structures) to pretrain, or fit(formulas) to use a random encoder"
            )
        device = self.device_
        source = (self.pretrained, device)
        lazy = vars(self).get("_lazy")
        if lazy is None or lazy[0] != source:  # first use, or set_params changed the weights or device
            lazy = self._lazy = (source, _shared_model(self.pretrained, device))
        return lazy[1]

    @model_.setter
    def model_(self, model):  # this featurizer's own weights from now on (as fit sets them)
        self._model = model
        self._device = str(next(model.parameters()).device)
        self._fitted_from = self.pretrained

    @property
    def device_(self):
        if "_model" in vars(self):
            return self._device
        return _ddp.local_device(_resolve_device(self.device))  # under torchrun: cuda:LOCAL_RANK

    @device_.setter
    def device_(self, device):
        self._device = device

    @property
    def n_features_out_(self):
        return self.model_.config["hidden_dim"] + 1

    # ------------------------------------------------------------------ fitting
    def _seed(self):
        if self.random_state is None:
            return int(np.random.SeedSequence().generate_state(1)[0])
        return int(self.random_state)

    def _initial_model(self, seed):
        """The model named by ``pretrained`` (a fresh copy), on CPU."""
        import torch

        from .nn import PolySRLModel

        if self.pretrained is None:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                return PolySRLModel(matscholar_table(), hidden_dim=self.hidden_dim, c_init=self.c_init,
                                    d_init=self.d_init, log_sigma_init=self.log_sigma_init)
        return copy.deepcopy(_shared_model(self.pretrained, "cpu"))  # trained in place: never the shared one

    def fit(self, X, y=None, monitor=None, on_epoch_end=None):
        """Pretrain on structures, or (for formulas) just load the weights.

        Parameters
        ----------
        X : structures (list of Structure, DataFrame, or a path), or formulas
            Structures (formulas read from them) start contrastive pretraining
            from the ``pretrained`` weights. They come as a list of pymatgen
            Structures; a DataFrame with a "structure" column (e.g. from
            ``datasets.load_materials_project`` or matminer's
            ``load_dataset("matbench_mp_e_form")``) or a "cif" column of CIF
            text; or a path (str or PathLike) to a directory of CIF/POSCAR files
            (``*.cif``, ``POSCAR*``, ``CONTCAR*``, ``*.vasp``, ``*.poscar``; read
            in sorted order, not recursively), to one such file, to a
            ``.jsonl[.gz]`` file, or to a ``.csv``/``.parquet`` table with a
            "cif" column (``datasets.read_structure_source``). Unreadable files
            or rows raise ``StructureFileError`` naming them, or are skipped
            with a warning when ``ignore_errors=True``. Formulas do not train: a
            featurizer keeps its weights (pretrained, or those of an earlier
            ``fit``); with ``pretrained=None`` a first ``fit`` draws random weights.
        y : array-like of shape (n_samples,), optional
            Used only by ``objective="supervised"`` (one property value per
            row of X); ignored otherwise.
        monitor : (formulas, targets), optional
            Held-out data for a quick probe after every pretraining epoch,
            recorded as ``probe_mae`` in ``history_``.
        on_epoch_end : callable(dict), optional
            Called with each pretraining epoch's record (e.g. to stop early by raising).

        Returns
        -------
        self
        """
        self._validate_params()
        if self.objective not in STRUCTURE_OBJECTIVES:  # graphcl, supervised: formulas are the training data
            return self._pretrain_formulas(X, y, monitor, on_epoch_end)
        structures = _as_structures(X, self.ignore_errors)
        if structures is None:
            if not ("_model" in vars(self) and self._fitted_from == self.pretrained):
                vars(self).pop("_model", None)
                if self.pretrained is None:
                    self._set_model(self._initial_model(self._seed()))
                else:
                    self.model_  # the pretrained weights (cached per process): a bad file fails in fit
                self.history_ = []
            return self
        if self._staged():
            return self._pretrain_staged(structures, _targets(X, y, len(structures)), monitor, on_epoch_end)
        return self._pretrain(structures, monitor, on_epoch_end)

    def _staged(self):
        return self.objective == "polysrl" and not (isinstance(self.recipe, str) and self.recipe == "paper")

    def _start_structure_pretraining(self, structures):
        """What both structure recipes start from: one stoichiometry and formula id per structure, the
        seed (rank 0's under torchrun) and the initial model with a structure encoder, set on ``self``."""
        import torch

        if len(structures) < 2:
            raise ValueError(f"contrastive pretraining needs at least 2 structures, got {len(structures)}")
        _ddp.init_from_env(_resolve_device(self.device))  # under torchrun: join the other processes
        known = known_atomic_numbers()
        stoich = [parse_formula(s, known, position=i) for i, s in enumerate(structures)]
        keys = {}
        formula_ids = np.array([keys.setdefault(s.key, len(keys)) for s in stoich])
        seed = _ddp.broadcast_object(self._seed())  # under torchrun, every process takes rank 0's seed
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)  # also seeds a fresh structure encoder added to loaded weights
            self._set_model(self._initial_model(seed).add_structure_encoder())
        self.n_structures_ = len(structures)
        self.n_formulas_ = len(keys)
        return stoich, formula_ids, seed

    def _pretrain_staged(self, structures, targets, monitor=None, on_epoch_end=None):
        """The default recipe (:func:`skpolysrl.recipes.staged_pretrain`) on ``structures``."""
        from .graphs import build_structure_graphs, structure_descriptors

        defaults = inspect.signature(type(self).__init__).parameters
        paper_only = sorted(k for k in _PAPER_RECIPE_KEYWORDS if getattr(self, k) != defaults[k].default)
        if paper_only:
            warnings.warn(f"{paper_only} set the paper's recipe, which recipe='default' does not use: pass "
                          "recipe='paper' to train with them, or recipe=StagedRecipe(...) to tune the default",
                          UserWarning, stacklevel=3)
        stoich, formula_ids, seed = self._start_structure_pretraining(structures)
        graph_kwargs = self.model_.config.graph.graph_kwargs()

        def build_graphs(rows):
            return build_structure_graphs([structures[i] for i in rows], cache=self.graph_cache,
                                          write_cache=_ddp.is_main_process(), progress=self.verbose,
                                          **graph_kwargs)

        recipe = StagedRecipe() if isinstance(self.recipe, str) else self.recipe
        n_sites = None if recipe.max_sites is None else np.array([len(s) for s in structures])
        descriptors = None
        if recipe.structure_targets and (recipe.stages is None or "supervised" in recipe.stages):
            descriptors = structure_descriptors(structures, recipe.structure_targets)
        self.history_ = staged_pretrain(self.model_, stoich, formula_ids, build_graphs, recipe, targets=targets,
                                        descriptors=descriptors,
                                        n_sites=n_sites, seed=seed, device=self.device_,
                                        from_scratch=self.pretrained is None, verbose=self.verbose,
                                        checkpoint=self.checkpoint,
                                        probe=None if monitor is None else HeldOutProbe(*monitor, seed=seed),
                                        on_epoch_end=on_epoch_end, embedding_cache=self.embedding_cache)
        return self

    def _set_model(self, model):
        """Make ``model`` this featurizer's own (trained or random) weights."""
        self._device = _ddp.local_device(_resolve_device(self.device))  # under torchrun: cuda:LOCAL_RANK
        self._model = model.to(self._device).eval()
        self._fitted_from = self.pretrained

    def _pretrain_formulas(self, X, y, monitor=None, on_epoch_end=None):
        """GraphCL or supervised pretraining: formulas (or the formulas of structures) only."""
        _ddp.init_from_env(_resolve_device(self.device))
        structures = _as_structures(X)
        items = structures if structures is not None else _as_items(X)
        if len(items) < 2:
            raise ValueError(f"pretraining needs at least 2 formulas, got {len(items)}")
        targets = None
        if self.objective == "supervised":
            if y is None:
                raise ValueError("objective='supervised' learns from a property: call fit(formulas, y) with one "
                                 "target per formula (e.g. skpolysrl.datasets.load_mp_property('band_gap'))")
            targets = np.asarray(y, dtype=np.float64).reshape(-1)
            if len(targets) != len(items):
                raise ValueError(f"X has {len(items)} rows but y has {len(targets)}")
        stoich = parse_formulas(items, known_atomic_numbers(), hint=FIT_HINT)  # fit trains on every row
        keys = {}
        formula_ids = np.array([keys.setdefault(s.key, len(keys)) for s in stoich])
        seed = _ddp.broadcast_object(self._seed())  # under torchrun, every process takes rank 0's seed
        model = self._initial_model(seed)
        self._set_model(model)
        self.history_ = self._run_pretraining(StoichiometryTable(stoich), stoich, formula_ids, None, seed,
                                              monitor, on_epoch_end, targets=targets)
        self.n_structures_ = 0 if structures is None else len(structures)
        self.n_formulas_ = len(keys)
        return self

    def _run_pretraining(self, table, stoich, formula_ids, graphs, seed, monitor, on_epoch_end, targets=None):
        unique_rows = np.unique(formula_ids, return_index=True)[1]
        rng = np.random.default_rng(seed)
        monitor_table = StoichiometryTable([stoich[i] for i in rng.permutation(unique_rows)[:2048]])
        log = None
        if self.verbose:
            def log(line):
                print(f"[PolySRLFeaturizer] {line}", file=sys.stderr, flush=True)
        config = PretrainConfig(
            objective=self.objective, epochs=self.epochs, batch_size=self.batch_size, lr=self.lr,
            n_samples=self.n_samples, beta=self.beta, grad_clip=self.grad_clip, pair_reduction=self.pair_reduction,
            warmup_epochs=self.warmup_epochs, threshold_lr=self.threshold_lr, alignment_weight=self.alignment_weight,
            keep_best=self.keep_best and monitor is not None, variance_only=self.variance_only, seed=seed)
        callbacks = pretraining_callbacks(
            self.model_, device=self.device_, monitor_table=monitor_table,
            probe=None if monitor is None else HeldOutProbe(*monitor, seed=seed), keep_best=config.keep_best,
            log=log, progress=self.verbose, checkpoint=self.checkpoint, checkpoint_every=self.checkpoint_every,
            on_epoch_end=on_epoch_end)
        return pretrain(self.model_, table, formula_ids, graphs, config, targets=targets, device=self.device_,
                        callbacks=callbacks)

    def _pretrain(self, structures, monitor=None, on_epoch_end=None):
        from .graphs import build_structure_graphs

        stoich, formula_ids, seed = self._start_structure_pretraining(structures)
        table = StoichiometryTable(stoich)
        main = _ddp.is_main_process()  # under torchrun rank 0 alone writes the cache; the others read it when valid
        graphs = build_structure_graphs(structures, cache=self.graph_cache, write_cache=main,
                                        progress=self.verbose and main, **self.model_.config.graph.graph_kwargs())
        self.history_ = self._run_pretraining(table, stoich, formula_ids, graphs, seed, monitor, on_epoch_end)
        return self

    # ---------------------------------------------------------------- transform
    def transform(self, X, pbar=False):
        """Featurize formulas.

        Parameters
        ----------
        X : list-like of str, Composition or Structure; or a DataFrame with a
            "formula" (or "composition"/"structure") column or a single column.
        pbar : bool or dict, default=False
            Show a tqdm progress bar (a dict: keyword arguments for ``tqdm``).

        Returns
        -------
        ndarray of shape (n, hidden_dim + 1), float32
            Mean embedding, then the uncertainty. Rows of invalid formulas are NaN
            when ``ignore_errors=True``; otherwise a FormulaError names the first one.
        """
        check_is_fitted(self)
        return self._transform_items(_as_items(X), self.ignore_errors, pbar)

    def _transform_items(self, items, ignore_errors, pbar=False):
        if len(items) == 0:
            raise ValueError("no formulas to featurize (got an empty input)")
        model, device = self.model_, self.device_
        known = known_atomic_numbers()
        out = np.full((len(items), model.config["hidden_dim"] + 1), np.nan, dtype=np.float32)
        step = self.transform_batch_size
        progress = _progress_bar(pbar, len(items))
        for start in range(0, len(items), step):  # stream: memory bounded by the chunk
            chunk = items[start : start + step]
            parsed = parse_formulas(chunk, known, ignore_errors=ignore_errors, offset=start)
            rows = [start + i for i, s in enumerate(parsed) if s is not None]
            stoich = [s for s in parsed if s is not None]
            if stoich:
                keys = {}
                inverse = np.array([keys.setdefault(s.key, len(keys)) for s in stoich])
                unique = list({s.key: s for s in stoich}.values())
                # encode pads to whole row blocks: each row independent of its batch
                features = output_features_np(*encode(model, StoichiometryTable(unique), batch_size=step,
                                                      device=device))
                out[rows] = features[inverse]
            if progress is not None:
                progress.update(len(chunk))
        if progress is not None:
            progress.close()
        return out

    def get_feature_names_out(self, input_features=None):
        """``polysrl_0 .. polysrl_{d-1}, polysrl_uncertainty``."""
        check_is_fitted(self)
        return np.asarray(self.feature_labels(), dtype=object)

    # ------------------------------------------------------------- persistence
    def save(self, path, include_structure_encoder=True, extra=None):
        """Write the fitted weights + config (+ history) to a ``.pt`` model file.

        Parameters
        ----------
        path : str or path-like
        include_structure_encoder : bool, default=True
            False writes the stoichiometry encoder only (what ``transform``
            needs; a third of the size), as the shipped model; True keeps the
            structure encoder, so a later ``fit`` can continue single stages.
        extra : dict, optional
            More JSON-able entries for the file's header (e.g. the command that
            trained it), beside ``history``.
        """
        check_is_fitted(self)
        _io.save_model(self.model_, path, extra={"history": getattr(self, "history_", []), **(extra or {})},
                       include_structure_encoder=include_structure_encoder)

    @classmethod
    def load_trusted(cls, path):
        """Load a joblib dump (a pickle) of a fitted featurizer.

        Unpickling **runs code from the file**: call this only on files you
        trust. ``pretrained=path`` never unpickles; re-save a trusted featurizer
        with :meth:`save` to get a ``.pt`` model file that loads without code.
        """
        import joblib

        loaded = joblib.load(os.fspath(path))
        if not isinstance(loaded, cls) or not hasattr(loaded, "model_"):
            raise ModelFileError(f"{os.fspath(path)!r} does not hold a fitted {cls.__name__} "
                                 f"(it holds a {type(loaded).__name__})")
        return loaded

    def __getstate__(self):
        state = dict(super().__getstate__())
        state.pop("_lazy", None)  # shared pretrained weights: reloaded (once per process) from `pretrained`
        state.pop("_task_batch", None)
        if "_model" in state:  # own weights as CPU tensors: a GPU-trained model unpickles on CPU
            state["_model"] = _io.model_to_payload(state["_model"])
            state["_device"] = "cpu"
        return state

    def __setstate__(self, state):
        state = dict(state)
        if "model_" in state:  # pickled by skpolysrl <= 0.1.0, when fitted weights were public attributes
            state["_model"], state["_device"] = state.pop("model_"), state.pop("device_", "cpu")
            state.pop("n_features_out_", None)
        if isinstance(state.get("_model"), dict):
            state["_model"] = _io.model_from_payload(state["_model"])
        super().__setstate__(state)

    # ----------------------------------------------------- matminer contract
    def featurize(self, entry):
        """Features of one formula, Composition or Structure (a 1-D array)."""
        _one_thread_in_pool_workers()
        return self._transform_items([entry], ignore_errors=False)[0]

    def featurize_wrapper(self, x, return_errors=False, ignore_errors=False):
        """matminer's per-row call, batched inside process-pool tasks.

        matminer's process pool (``featurize_many``/``featurize_dataframe`` of a
        :class:`~matminer.featurizers.base.MultipleFeaturizer` holding this
        featurizer, with ``n_jobs`` > 1) calls this once per row. In a pool task the
        first call encodes all of the task's rows in one batch and the others read
        their row from it: one forward pass per task instead of one per row (a
        row costs ~30 us instead of ~1 ms). Rows that fail to parse, and calls
        outside a pool task, are featurized alone: with ``ignore_errors`` through
        matminer's wrapper (NaN row, error text), else raising the typed
        :class:`~skpolysrl.exceptions.FormulaError` that names the row.
        """
        _one_thread_in_pool_workers()
        batch = self._pool_task_batch()
        if batch is not None:
            entries, positions, features = batch
            i = positions.get(id(x))
            if i is not None and not np.isnan(features[i, -1]):
                row = features[i].tolist()  # Python floats: pickled back to the parent ~50x faster than numpy scalars
                return row + [float("nan")] if return_errors else row
        if ignore_errors:
            return super().featurize_wrapper(x, return_errors=return_errors, ignore_errors=ignore_errors)
        return self.featurize(*x)  # our typed error as is: matminer re-raises type(e)(message), which it cannot rebuild

    def _pool_task_batch(self):
        """(entries, {id(entry): row}, features) of the pool task running now, or None outside one."""
        entries = _pool_task_entries()
        if entries is None or len(entries) < 2:
            return None
        batch = vars(self).get("_task_batch")
        if batch is None or batch[0] is not entries:  # first row of a new task
            try:
                items = [e[0] if isinstance(e, (tuple, list, np.ndarray)) and len(e) == 1 else e for e in entries]
                features = self._transform_items(items, ignore_errors=True)
            except Exception:  # rows of an unexpected kind: matminer's per-row path reports them
                return None
            batch = self._task_batch = (entries, {id(e): i for i, e in enumerate(entries)}, features)
        return batch

    def featurize_many(self, entries, ignore_errors=False, return_errors=False, pbar=True):
        """Featurize many entries in batched forward passes, in this process.

        Faster than matminer's process pool (``n_jobs`` is not used): the rows are
        encoded a ``transform_batch_size`` at a time. Returns a list of rows, as
        matminer's featurizers do; with ``return_errors=True`` each row ends with
        the error message (or NaN). ``pbar`` (bool or tqdm keyword dict) shows
        progress, as in matminer.
        """
        if return_errors and not ignore_errors:
            raise ValueError("Please set ignore_errors to True to use return_errors.")
        check_is_fitted(self)
        items = _as_items(np.asarray(entries, dtype=object) if isinstance(entries, np.ndarray) else entries)
        if len(items) == 0:
            return []
        features = self._transform_items(items, ignore_errors=ignore_errors, pbar=pbar)
        if getattr(self, "_rows_as_array", False) and not return_errors:
            return features.astype(np.float64)  # for featurize_dataframe: a frame from an array, not from lists
        rows = features.astype(np.float64).tolist()
        if return_errors:
            known = known_atomic_numbers()
            for i, row in enumerate(rows):
                if np.isnan(row[-1]):
                    try:
                        parse_formula(items[i], known, position=i)
                        row.append(np.nan)
                    except FormulaError as exc:
                        row.append(str(exc))
                else:
                    row.append(np.nan)
        return rows

    def featurize_dataframe(self, df, col_id, *args, **kwargs):
        """matminer's ``featurize_dataframe`` (same arguments and behaviour), with the features
        handed to pandas as one array: building the frame from 10,000 row lists took longer
        than featurizing them."""
        self.model_  # loads the pretrained weights on first use (NotFittedError for pretrained=None)
        view = object.__new__(type(self))  # a view sharing the fitted model: self is never mutated here, so
        view.__dict__.update(self.__dict__)  # threads sharing one featurizer do not see each other's flag
        view._rows_as_array = True
        return BaseFeaturizer.featurize_dataframe(view, df, col_id, *args, **kwargs)

    def feature_labels(self):
        dim = self.model_.config["hidden_dim"] if hasattr(self, "model_") else self.hidden_dim
        return [f"polysrl_{i}" for i in range(dim)] + ["polysrl_uncertainty"]

    def citations(self):
        return [
            "@inproceedings{polysrl2023, title={Stoichiometry Representation Learning with Polymorphic Crystal "
            "Structures}, author={Namkyeong Lee and Heewoong Noh and Sungwon Kim and Dongmin Hyun and "
            "Gyoung S. Na and Chanyoung Park}, booktitle={NeurIPS 2023 Workshop on AI for Science}, year={2023}}",
            "@article{tshitoyan2019, title={Unsupervised word embeddings capture latent knowledge from materials "
            "science literature}, author={Tshitoyan, Vahe and Dagdelen, John and Weston, Leigh and Dunn, "
            "Alexander and Rong, Ziqin and Kononova, Olga and Persson, Kristin A. and Ceder, Gerbrand and Jain, "
            "Anubhav}, journal={Nature}, volume={571}, pages={95--98}, year={2019}}",
        ]

    def implementors(self):
        return ["skpolysrl developers"]
