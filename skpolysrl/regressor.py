"""PolySRLRegressor: formulas -> property, by the paper's probe or fine-tune protocol.

``finetune=False`` is the representation ("probe") protocol: the stoichiometry
encoder is frozen and only a 3-layer MLP head is trained on its features.
``finetune=True`` is the transfer protocol: encoder and head are trained
together for 500 epochs, the learning rate picked on a 20 % validation split of
the training data, then the model is refitted on all of it.
"""

import copy
import numbers
import os

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted

from . import _io
from ._elements import known_atomic_numbers
from ._formula import StoichiometryTable, parse_formulas
from ._runtime import resolve_device, seeded
from .engine import Trainer
from .evaluation import MLPHeadRegressor, RegressionObjective
from .featurizer import PolySRLFeaturizer, _as_items
from .nn import build_head, output_features, output_features_np
from .training import _stoich_tensors, encode

__all__ = ["PolySRLRegressor"]


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
            return self.head((output_features(mu, log_sigma) - self.mean) / self.scale).view(-1)

    return FinetuneNet()


class PolySRLRegressor(RegressorMixin, BaseEstimator):
    """Predict a property from formulas with a PolySRL stoichiometry encoder and an MLP head.

    Parameters
    ----------
    pretrained : "default", None, or path, default="default"
        Encoder weights, as in :class:`~skpolysrl.PolySRLFeaturizer`:
        ``"default"`` = the shipped model, ``None`` = a randomly initialised
        encoder (the paper's "Rand init."), or a model file written by
        ``PolySRLFeaturizer.save`` (pickles are refused: see
        ``PolySRLFeaturizer.load_trusted``).
    finetune : bool, default=False
        ``False``: the probe protocol (frozen encoder, head trained on its
        features). ``True``: the transfer protocol (encoder trained with the head).
    hidden_dim : int, default=128
        Width of the head's two hidden layers (LeakyReLU).
    epochs : int or None, default=None
        Training epochs; ``None`` = the paper's 300 (probe) or 500 (fine-tune).
    lr : float or "auto", default="auto"
        Adam learning rate. ``"auto"`` = the paper's fixed 1e-3 for the probe; for
        fine-tuning, the value of ``lr_grid`` with the lowest MAE on a
        ``validation_fraction`` split of the training data (the model is then
        refitted on all of it).
    lr_grid : tuple of float, default=(1e-4, 3e-4, 1e-3)
        Candidate fine-tuning learning rates for ``lr="auto"``.
    validation_fraction : float, default=0.2
        Share of the training rows held out to choose the learning rate.
    batch_size : int, default=128
    weight_decay : float, default=1e-6
    n_estimators : int, default=1
        Number of independently seeded models averaged in ``predict`` (a deep
        ensemble). Their spread enters ``return_std``; use 5 or more when you
        need the standard deviation, 1 to follow the paper.
    n_std_samples : int, default=32
        Draws from each formula's Gaussian used for the representation part of
        ``return_std``.
    device : {"auto", "cpu", "cuda", "cuda:N"}, default="auto"
        Training device; the fitted model is kept on the CPU.
    random_state : int, RandomState or None, default=None
    ignore_errors : bool, default=False
        In ``predict``, give NaN for formulas that cannot be parsed instead of raising.
    verbose : bool, default=False
        Print the learning-rate search.

    Attributes
    ----------
    lr_ : float
        The learning rate used for the final fit.
    validation_mae_ : dict or None
        Fine-tuning: validation MAE of each candidate learning rate.
    estimators_ : list
        The fitted members: ``MLPHeadRegressor`` heads (probe) or fine-tuned
        (encoder, head) pairs.
    n_features_in_ : int
        Always 1 (one column of formulas).

    Notes
    -----
    ``predict(X, return_std=True)`` returns a standard deviation per
    prediction, ``sqrt(var_ensemble + var_representation)``:

    * ``var_ensemble``: the variance of the ``n_estimators`` members'
      predictions (model uncertainty; 0 when ``n_estimators=1``).
    * ``var_representation``: the variance of one member's predictions over
      ``n_std_samples`` draws from the formula's Gaussian representation
      (mean re-projected on the unit sphere): how much the prediction moves
      across the structures (polymorphs) the formula may take, as PolySRL
      models them. It is only as informative as the learned variances are
      (see the model card for the shipped model's).

    It is a spread, not a calibrated interval: check it on held-out data
    (e.g. the rank correlation of std with absolute error) before relying on it.
    """

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
        "n_std_samples": [Interval(numbers.Integral, 2, None, closed="left")],
        "device": [str],
        "random_state": ["random_state"],
        "ignore_errors": ["boolean"],
        "verbose": ["boolean"],
    }

    def __init__(self, pretrained="default", finetune=False, hidden_dim=128, epochs=None, lr="auto",
                 lr_grid=(1e-4, 3e-4, 1e-3), validation_fraction=0.2, batch_size=128, weight_decay=1e-6,
                 n_estimators=1, n_std_samples=32, device="auto", random_state=None, ignore_errors=False,
                 verbose=False):
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
        self.n_std_samples = n_std_samples
        self.device = device
        self.random_state = random_state
        self.ignore_errors = ignore_errors
        self.verbose = verbose

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.string = True
        tags.input_tags.two_d_array = False
        tags.target_tags.required = True
        return tags

    # ------------------------------------------------------------------ helpers
    def _featurizer(self):
        return PolySRLFeaturizer(pretrained=self.pretrained, device="cpu", verbose=False,
                                 random_state=0 if self.pretrained is None else None)

    def _parse(self, X, ignore_errors):
        """(stoichiometries of the valid rows, their row indices, number of rows)."""
        items = _as_items(X)
        if len(items) == 0:
            raise ValueError("no formulas given (got an empty input)")
        parsed = parse_formulas(items, known_atomic_numbers(), ignore_errors=ignore_errors)
        rows = np.array([i for i, s in enumerate(parsed) if s is not None], dtype=np.int64)
        return [s for s in parsed if s is not None], rows, len(items)

    def _epochs(self):
        if self.epochs is not None:
            return int(self.epochs)
        return 500 if self.finetune else 300

    # ---------------------------------------------------------------------- fit
    def fit(self, X, y):
        """Fit on formulas and targets.

        Parameters
        ----------
        X : list-like of formulas (str, Composition or Structure), or a
            one-column DataFrame / ``(n, 1)`` array of them.
        y : array-like of shape (n_samples,)
            Finite targets.

        Returns
        -------
        self : PolySRLRegressor
        """
        self._validate_params()
        y = np.asarray(y, dtype=np.float64)
        if y.ndim == 2 and y.shape[1] == 1:
            y = y[:, 0]
        if y.ndim != 1:
            raise ValueError(f"y must be one-dimensional (one target), got shape {y.shape}")
        stoich, _, n = self._parse(X, ignore_errors=False)
        if n != len(y):
            raise ValueError(f"X has {n} formulas but y has {len(y)} values")
        if not np.isfinite(y).all():
            bad = np.flatnonzero(~np.isfinite(y))
            raise ValueError(f"y contains NaN or infinity in {len(bad)} rows (first: row {bad[0]}); drop them")
        if n < 2:
            raise ValueError(f"need at least 2 training formulas, got {n}")
        model = self._featurizer()._initial_model(0)  # a copy of the encoder named by `pretrained`
        model.structure = None
        rng = check_random_state(self.random_state)
        seeds = rng.randint(np.iinfo(np.int32).max, size=self.n_estimators)
        self.device_ = resolve_device(self.device)
        self.validation_mae_ = None
        if not self.finetune:
            features = output_features_np(*encode(model, StoichiometryTable(stoich)))
            self.lr_ = 1e-3 if self.lr == "auto" else float(self.lr)
            self.estimators_ = [
                MLPHeadRegressor(hidden_dim=self.hidden_dim, epochs=self._epochs(), lr=self.lr_,
                                 batch_size=self.batch_size, random_state=int(s), device=self.device_,
                                 weight_decay=self.weight_decay).fit(features, y)
                for s in seeds
            ]
            self.encoder_ = _io.model_to_payload(model)
        else:
            if self.lr == "auto":
                self.validation_mae_ = self._choose_lr(model, stoich, y, int(seeds[0]))
                self.lr_ = min(self.validation_mae_, key=self.validation_mae_.get)
            else:
                self.lr_ = float(self.lr)
            self.estimators_ = [self._finetune(model, stoich, y, self.lr_, int(s)) for s in seeds]
            self.encoder_ = None
        self.n_features_in_ = 1
        return self

    def _choose_lr(self, model, stoich, y, seed):
        order = np.random.default_rng(seed).permutation(len(y))
        n_val = max(1, int(round(self.validation_fraction * len(y))))
        val, train = order[:n_val], order[n_val:]
        if len(train) < 2:
            raise ValueError("too few rows to hold out a validation split; pass a fixed lr=")
        val_table = StoichiometryTable([stoich[i] for i in val])
        scores = {}
        for lr in self.lr_grid:
            member = self._finetune(model, [stoich[i] for i in train], y[train], float(lr), seed)
            scores[float(lr)] = float(np.mean(np.abs(self._member_predict(member, val_table) - y[val])))
            if self.verbose:
                print(f"[PolySRLRegressor] lr={lr:g} validation MAE={scores[float(lr)]:.4f}", flush=True)
        return scores

    def _finetune(self, model, stoich, y, lr, seed):
        """Train a copy of the encoder with a fresh head; returns the member as CPU tensors."""
        import torch

        table = StoichiometryTable(stoich)
        start = output_features_np(*encode(model, table))
        mean, scale = start.mean(axis=0), start.std(axis=0)
        scale[~(scale > 0)] = 1.0
        encoder = copy.deepcopy(model)
        with seeded(seed):
            head = build_head(start.shape[1], self.hidden_dim)
        net = _finetune_net(encoder.stoichiometry, head, mean, scale).to(self.device_)
        targets = torch.as_tensor(y, dtype=torch.float32, device=self.device_)
        trainer = Trainer([{"params": list(net.parameters()), "weight_decay": self.weight_decay}], lr=lr,
                          epochs=self._epochs(), batch_size=self.batch_size, n_rows=len(y), seed=seed,
                          device=self.device_, distributed=False, skip_small_batches=False)
        trainer.fit(RegressionObjective(net, lambda idx: (*_stoich_tensors(table, idx, self.device_), len(idx)),
                                        targets))
        encoder.stoichiometry = net.encoder.cpu()
        return {"encoder": _io.model_to_payload(encoder),
                "head": {k: v.detach().cpu() for k, v in net.head.state_dict().items()},
                "mean": mean, "scale": scale}

    def _member_net(self, member):
        model = _io.model_from_payload(member["encoder"])
        head = build_head(len(member["mean"]), self.hidden_dim)
        head.load_state_dict(member["head"])
        return _finetune_net(model.stoichiometry, head, member["mean"], member["scale"]).eval()

    def _member_predict(self, member, table, n_draws=0, seed=0):
        """Predictions of one fine-tuned member, and their variance over ``n_draws`` Gaussian draws."""
        import torch

        net = self._member_net(member)
        generator = torch.Generator().manual_seed(seed)

        def run(draw):
            out = []
            for i in range(0, len(table), 4096):
                idx = np.arange(i, min(i + 4096, len(table)))
                out.append(net(*_stoich_tensors(table, idx, "cpu"), len(idx), generator if draw else None))
            return torch.cat(out).double().numpy()

        with torch.no_grad():
            mean = run(False)
            if not n_draws:
                return mean
            return mean, np.var([run(True) for _ in range(n_draws)], axis=0)

    def _probe_predict(self, head, mu, log_sigma, n_draws=0, seed=0):
        import torch

        features = output_features_np(mu, log_sigma)
        mean = head.predict(features)
        if not n_draws:
            return mean
        generator = torch.Generator().manual_seed(seed)
        mu_t, ls_t = torch.as_tensor(mu), torch.as_tensor(log_sigma)
        draws = [head.predict(np.hstack([_sample_means(mu_t, ls_t, generator).numpy(), features[:, -1:]]))
                 for _ in range(n_draws)]
        return mean, np.var(draws, axis=0)

    # ------------------------------------------------------------------ predict
    def predict(self, X, return_std=False):
        """Predict targets (and, with ``return_std``, a standard deviation per prediction).

        Parameters
        ----------
        X : list-like of formulas
        return_std : bool, default=False
            Also return ``sqrt(var_ensemble + var_representation)`` (see the
            class Notes).

        Returns
        -------
        y_pred : ndarray of shape (n_samples,)
            NaN for formulas skipped with ``ignore_errors=True``.
        y_std : ndarray of shape (n_samples,)
            Only with ``return_std=True``.
        """
        check_is_fitted(self, "estimators_")
        stoich, rows, n = self._parse(X, ignore_errors=self.ignore_errors)
        y_pred, y_std = np.full(n, np.nan), np.full(n, np.nan)
        if stoich:
            table = StoichiometryTable(stoich)
            draws = self.n_std_samples if return_std else 0
            if self.finetune:
                members = [self._member_predict(m, table, draws, seed=i) for i, m in enumerate(self.estimators_)]
            else:
                encoded = encode(_io.model_from_payload(self.encoder_), table)
                members = [self._probe_predict(h, *encoded, draws, seed=i) for i, h in enumerate(self.estimators_)]
            if return_std:
                preds = np.stack([m[0] for m in members])
                y_std[rows] = np.sqrt(preds.var(axis=0) + np.mean([m[1] for m in members], axis=0))
            else:
                preds = np.stack(members)
            y_pred[rows] = preds.mean(axis=0)
        return (y_pred, y_std) if return_std else y_pred
