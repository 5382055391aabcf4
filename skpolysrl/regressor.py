"""PolySRLRegressor: formulas -> property, by the paper's probe or fine-tune protocol.

``finetune=False`` is the representation ("probe") protocol: the stoichiometry
encoder is frozen and only a 3-layer MLP head is trained on its features.
``finetune=True`` is the transfer protocol: encoder and head are trained
together for 500 epochs, the learning rate picked on a 20 % validation split of
the training data, then the model is refitted on all of it.
"""

import numbers

import numpy as np
from sklearn.base import RegressorMixin
from sklearn.utils._param_validation import Interval
from sklearn.utils.validation import check_is_fitted

from ._estimator import _PolySRLEstimator, target_column
from .evaluation import MLPHeadRegressor, l1_loss

__all__ = ["PolySRLRegressor"]


class PolySRLRegressor(RegressorMixin, _PolySRLEstimator):
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
        ensemble). Their spread enters ``return_std``; 1 follows the paper. Five
        probe members lowered the MAE on every fold (band gap 0.372 -> 0.351,
        matbench expt_gap 0.383 -> 0.352; benchmarks/results/ensemble_size.md)
        for ~4.7x the time.
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

    _parameter_constraints = {**_PolySRLEstimator._parameter_constraints,
                              "n_std_samples": [Interval(numbers.Integral, 2, None, closed="left")]}
    _head_type = MLPHeadRegressor
    _validation_attr = "validation_mae_"

    def __init__(self, pretrained="default", finetune=False, hidden_dim=128, epochs=None, lr="auto",
                 lr_grid=(1e-4, 3e-4, 1e-3), validation_fraction=0.2, batch_size=128, weight_decay=1e-6,
                 n_estimators=1, n_std_samples=32, device="auto", random_state=None, ignore_errors=False,
                 verbose=False):
        super().__init__(pretrained=pretrained, finetune=finetune, hidden_dim=hidden_dim, epochs=epochs, lr=lr,
                         lr_grid=lr_grid, validation_fraction=validation_fraction, batch_size=batch_size,
                         weight_decay=weight_decay, n_estimators=n_estimators, device=device,
                         random_state=random_state, ignore_errors=ignore_errors, verbose=verbose)
        self.n_std_samples = n_std_samples

    # hooks of the shared core (skpolysrl._estimator)
    def _loss(self):
        return l1_loss

    @staticmethod
    def _validation_loss(outputs, y):
        return np.mean(np.abs(outputs[:, 0] - y))

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
        return self._fit_members(X, target_column(y, dtype=np.float64), n_outputs=1)

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
        rows, n, members = self._outputs(X, self.n_std_samples if return_std else 0)
        y_pred, y_std = np.full(n, np.nan), np.full(n, np.nan)
        if members:
            preds = np.stack([outputs[:, 0] for outputs, _ in members])
            y_pred[rows] = preds.mean(axis=0)
            if return_std:
                var_representation = np.mean([np.var([d[:, 0] for d in draws], axis=0) for _, draws in members],
                                             axis=0)
                y_std[rows] = np.sqrt(preds.var(axis=0) + var_representation)
        return (y_pred, y_std) if return_std else y_pred
