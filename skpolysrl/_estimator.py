"""The core that PolySRLRegressor and PolySRLClassifier share: formulas in, the paper's probe and
fine-tune protocols, seeded ensembles.

A subclass says only what is predicted, through these hooks:

* ``_head_type``: the probe head (``MLPHeadRegressor`` or ``MLPHeadClassifier``), fitted on
  the frozen encoder's features, with any extra parameters from ``_head_params()``;
* ``_target_dtype``: the torch dtype name of the fine-tuning targets (values or class codes);
* ``_loss()``: the fine-tuning loss of ``(outputs, targets)``;
* ``_validation_loss(outputs, y)``: the score (lower is better) of held-out raw outputs that picks
  the fine-tuning learning rate; stored per candidate in the attribute named ``_validation_attr``.

Predictions come back as raw outputs of every member, shape ``(n_rows, n_outputs)``; the
subclass turns them into values or probabilities and averages the members.
"""

import copy
import numbers
import os

import numpy as np
import pandas as pd
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions

from . import _io
from ._elements import known_atomic_numbers
from ._formula import StoichiometryTable, parse_formulas
from ._formula_estimator import FormulaEstimator
from ._runtime import resolve_device, seeded
from .engine import Trainer
from .evaluation import SupervisedObjective
from .exceptions import FIT_HINT
from .featurizer import PolySRLFeaturizer, _as_items
from .nn import build_head, output_features, output_features_np
from .training import _stoich_tensors, encode

#: Rows per forward pass of a fine-tuned member in predict.
_PREDICT_CHUNK = 4096


def _sample_means(mu, log_sigma, generator):
    """One draw from each formula's Gaussian, projected back on the unit sphere like the means."""
    import torch

    eps = torch.randn(mu.shape, generator=generator, device=mu.device)
    return torch.nn.functional.normalize(mu + eps * torch.exp(log_sigma), dim=-1)


def _finetune_net(encoder, head, mean, scale):
    """encoder -> features -> standardise (fixed affine from the starting encoder) -> head, as one module."""
    import torch
    from torch import nn

    class FinetuneNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = encoder
            self.head = head
            self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32))
            self.register_buffer("scale", torch.as_tensor(scale, dtype=torch.float32))

        def forward(self, z, w, edge_index, batch, n, generator=None):
            mu, log_sigma = self.encoder(z, w, edge_index, batch, n)
            if generator is not None:
                mu = _sample_means(mu, log_sigma, generator)
            return self.head((output_features(mu, log_sigma) - self.mean) / self.scale)

    return FinetuneNet()


def target_column(y, dtype=None):
    """``y`` as a 1-D array (an ``(n, 1)`` column is flattened); a ValueError naming the first row
    where a value is missing (NaN, None) or infinite."""
    y = np.asarray(y, dtype=dtype)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise ValueError(f"y must be one-dimensional (one target), got shape {y.shape}")
    bad = np.asarray(pd.isna(y), dtype=bool)
    if y.dtype.kind in "fc":
        bad |= ~np.isfinite(y)
    if bad.any():
        rows = np.flatnonzero(bad)
        raise ValueError(f"y contains NaN, None or infinity in {len(rows)} rows (first: row {rows[0]}, "
                         f"value {y[rows[0]]!r}); drop them")
    return y


class _PolySRLEstimator(FormulaEstimator):
    """Formulas -> a PolySRL encoder (frozen or fine-tuned) -> an MLP head; see the public subclasses."""

    _parameter_constraints = {
        "pretrained": [None, str, os.PathLike],
        "finetune": ["boolean"],
        "hidden_dim": [Interval(numbers.Integral, 1, None, closed="left")],
        "epochs": [None, Interval(numbers.Integral, 0, None, closed="left")],
        "lr": [StrOptions({"auto"}), Interval(numbers.Real, 0, None, closed="neither")],
        "lr_grid": [tuple, list],
        "validation_fraction": [Interval(numbers.Real, 0, 1, closed="neither")],
        "batch_size": [Interval(numbers.Integral, 1, None, closed="left")],
        "weight_decay": [Interval(numbers.Real, 0, None, closed="left")],
        "n_estimators": [Interval(numbers.Integral, 1, None, closed="left")],
        "device": [str],
        "random_state": ["random_state"],
        "ignore_errors": ["boolean"],
        "verbose": ["boolean"],
    }
    _validation_attr = "validation_loss_"
    _head_type = None
    _target_dtype = "float32"

    def __init__(self, pretrained="default", finetune=False, hidden_dim=128, epochs=None, lr="auto",
                 lr_grid=(1e-4, 3e-4, 1e-3), validation_fraction=0.2, batch_size=128, weight_decay=1e-6,
                 n_estimators=1, device="auto", random_state=None, ignore_errors=False, verbose=False):
        self.pretrained = pretrained
        self.finetune = finetune
        self.hidden_dim = hidden_dim
        self.epochs = epochs
        self.lr = lr
        self.lr_grid = lr_grid
        self.validation_fraction = validation_fraction
        self.batch_size = batch_size
        self.weight_decay = weight_decay
        self.n_estimators = n_estimators
        self.device = device
        self.random_state = random_state
        self.ignore_errors = ignore_errors
        self.verbose = verbose

    # ------------------------------------------------------------------ helpers
    def _featurizer(self):
        return PolySRLFeaturizer(pretrained=self.pretrained, device="cpu", verbose=False,
                                 random_state=0 if self.pretrained is None else None)

    def _parse(self, X, ignore_errors, hint=None):
        """(stoichiometries of the valid rows, their row indices, number of rows); ``hint``: see parse_formulas."""
        items = _as_items(X)
        if len(items) == 0:
            raise ValueError("no formulas given (got an empty input)")
        parsed = parse_formulas(items, known_atomic_numbers(), ignore_errors=ignore_errors, hint=hint)
        rows = np.array([i for i, s in enumerate(parsed) if s is not None], dtype=np.int64)
        return [s for s in parsed if s is not None], rows, len(items)

    def _epochs(self):
        if self.epochs is not None:
            return int(self.epochs)
        return 500 if self.finetune else 300

    def _head_params(self):
        return {}

    def _probe_head(self, seed):
        return self._head_type(hidden_dim=self.hidden_dim, epochs=self._epochs(), lr=self.lr_,
                               batch_size=self.batch_size, random_state=seed, device=self.device_,
                               weight_decay=self.weight_decay, **self._head_params())

    def _target_tensor(self, y, device):
        import torch

        return torch.as_tensor(y, dtype=getattr(torch, self._target_dtype), device=device)

    # ---------------------------------------------------------------------- fit
    def _fit_members(self, X, y, n_outputs):
        """Fit ``n_estimators`` members on formulas ``X`` and checked targets ``y`` (values or class codes)."""
        stoich, _, n = self._parse(X, ignore_errors=False, hint=FIT_HINT)  # fit trains on every row
        if n != len(y):
            raise ValueError(f"X has {n} formulas but y has {len(y)} values")
        if n < 2:
            raise ValueError(f"need at least 2 training formulas, got {n}")
        model = self._featurizer()._initial_model(0)  # a copy of the encoder named by `pretrained`
        model.structure = None
        rng = check_random_state(self.random_state)
        seeds = rng.randint(np.iinfo(np.int32).max, size=self.n_estimators)
        self.device_ = resolve_device(self.device)
        setattr(self, self._validation_attr, None)
        if not self.finetune:
            features = output_features_np(*encode(model, StoichiometryTable(stoich)))
            self.lr_ = 1e-3 if self.lr == "auto" else float(self.lr)
            self.estimators_ = [self._probe_head(int(s)).fit(features, y) for s in seeds]
            self.encoder_ = _io.model_to_payload(model)
        else:
            if self.lr == "auto":
                scores = self._choose_lr(model, stoich, y, n_outputs, int(seeds[0]))
                setattr(self, self._validation_attr, scores)
                self.lr_ = min(scores, key=scores.get)
            else:
                self.lr_ = float(self.lr)
            self.estimators_ = [self._finetune(model, stoich, y, n_outputs, self.lr_, int(s)) for s in seeds]
            self.encoder_ = None
        self.n_features_in_ = 1
        return self

    def _choose_lr(self, model, stoich, y, n_outputs, seed):
        """Validation loss of each ``lr_grid`` candidate, fine-tuned on a random split of the training rows."""
        order = np.random.default_rng(seed).permutation(len(y))
        n_val = max(1, int(round(self.validation_fraction * len(y))))
        val, train = order[:n_val], order[n_val:]
        if len(train) < 2:
            raise ValueError("too few rows to hold out a validation split; pass a fixed lr=")
        val_table = StoichiometryTable([stoich[i] for i in val])
        scores = {}
        for lr in self.lr_grid:
            member = self._finetune(model, [stoich[i] for i in train], y[train], n_outputs, float(lr), seed)
            scores[float(lr)] = float(self._validation_loss(self._member_outputs(member, val_table)[0], y[val]))
            self._log(f"lr={lr:g} {self._validation_attr.rstrip('_')}={scores[float(lr)]:.4f}")
        return scores

    def _finetune(self, model, stoich, y, n_outputs, lr, seed):
        """Train a copy of the encoder with a fresh head; returns the member as CPU tensors."""
        table = StoichiometryTable(stoich)
        start = output_features_np(*encode(model, table))
        mean, scale = start.mean(axis=0), start.std(axis=0)
        scale[~(scale > 0)] = 1.0
        encoder = copy.deepcopy(model)
        with seeded(seed):
            head = build_head(start.shape[1], self.hidden_dim, n_outputs)
        net = _finetune_net(encoder.stoichiometry, head, mean, scale).to(self.device_)
        trainer = Trainer([{"params": list(net.parameters()), "weight_decay": self.weight_decay}], lr=lr,
                          epochs=self._epochs(), batch_size=self.batch_size, n_rows=len(y), seed=seed,
                          device=self.device_, distributed=False, skip_small_batches=False)
        trainer.fit(SupervisedObjective(net, lambda idx: (*_stoich_tensors(table, idx, self.device_), len(idx)),
                                        self._target_tensor(y, self.device_), self._loss()))
        encoder.stoichiometry = net.encoder.cpu()
        return {"encoder": _io.model_to_payload(encoder),
                "head": {k: v.detach().cpu() for k, v in net.head.state_dict().items()},
                "mean": mean, "scale": scale, "n_outputs": n_outputs}

    # ------------------------------------------------------------------ predict
    def _member_net(self, member):
        model = _io.model_from_payload(member["encoder"])
        head = build_head(len(member["mean"]), self.hidden_dim, member.get("n_outputs", 1))
        head.load_state_dict(member["head"])
        return _finetune_net(model.stoichiometry, head, member["mean"], member["scale"]).eval()

    def _member_outputs(self, member, table, n_draws=0, seed=0):
        """A fine-tuned member's raw outputs, and ``n_draws`` more with means drawn from the Gaussians."""
        import torch

        net = self._member_net(member)
        generator = torch.Generator().manual_seed(seed)

        def run(draw):
            out = []
            for i in range(0, len(table), _PREDICT_CHUNK):
                idx = np.arange(i, min(i + _PREDICT_CHUNK, len(table)))
                out.append(net(*_stoich_tensors(table, idx, "cpu"), len(idx), generator if draw else None))
            return torch.cat(out).double().numpy()

        with torch.no_grad():
            return run(False), [run(True) for _ in range(n_draws)]

    @staticmethod
    def _probe_outputs(head, mu, log_sigma, n_draws=0, seed=0):
        """A probe head's raw outputs, and ``n_draws`` more with means drawn from the Gaussians."""
        import torch

        features = output_features_np(mu, log_sigma)
        generator = torch.Generator().manual_seed(seed)
        mu_t, ls_t = torch.as_tensor(mu), torch.as_tensor(log_sigma)
        draws = [head._outputs(np.hstack([_sample_means(mu_t, ls_t, generator).numpy(), features[:, -1:]]))
                 for _ in range(n_draws)]
        return head._outputs(features), draws

    def _outputs(self, X, n_draws=0):
        """``(rows, n, members)``: the indices of the formulas that parse, the number of rows, and per
        member ``(raw outputs, [n_draws drawn outputs])`` for those rows (empty when none parse)."""
        stoich, rows, n = self._parse(X, ignore_errors=self.ignore_errors)
        if not stoich:
            return rows, n, []
        table = StoichiometryTable(stoich)
        if self.finetune:
            return rows, n, [self._member_outputs(m, table, n_draws, seed=i) for i, m in enumerate(self.estimators_)]
        encoded = encode(_io.model_from_payload(self.encoder_), table)
        return rows, n, [self._probe_outputs(h, *encoded, n_draws, seed=i) for i, h in enumerate(self.estimators_)]
