"""PolySRLClassifier: formulas -> class, by the paper's probe or fine-tune protocol.

The classification counterpart of :class:`~skpolysrl.PolySRLRegressor` (same
encoder, head, protocols and ensembles; see ``skpolysrl/_estimator.py``): the
head has one output per class and is trained on the softmax cross-entropy.
"""

import numpy as np
from sklearn.base import ClassifierMixin
from sklearn.utils._param_validation import StrOptions
from sklearn.utils.validation import check_is_fitted

from ._estimator import _PolySRLEstimator, target_column
from .evaluation import MLPHeadClassifier, cross_entropy_loss, encode_labels, softmax

__all__ = ["PolySRLClassifier"]


class PolySRLClassifier(ClassifierMixin, _PolySRLEstimator):
    """Predict a class (e.g. metal / non-metal) from formulas with a PolySRL encoder and an MLP head.

    Binary and multiclass targets of any label type (strings, integers,
    booleans). ``predict_proba`` averages the class probabilities of the
    ``n_estimators`` members.

    Parameters
    ----------
    pretrained : "default", None, or path, default="default"
        Encoder weights, as in :class:`~skpolysrl.PolySRLRegressor`.
    finetune : bool, default=False
        ``False``: the probe protocol (frozen encoder, head trained on its
        features). ``True``: the transfer protocol (encoder trained with the head).
    hidden_dim : int, default=128
        Width of the head's two hidden layers (LeakyReLU).
    epochs : int or None, default=None
        Training epochs; ``None`` = 300 (probe) or 500 (fine-tune), as the regressor.
    lr : float or "auto", default="auto"
        Adam learning rate. ``"auto"`` = 1e-3 for the probe; for fine-tuning,
        the value of ``lr_grid`` with the lowest cross-entropy (log loss) on a
        ``validation_fraction`` split of the training data, then refitted on all of it.
    lr_grid : tuple of float, default=(1e-4, 3e-4, 1e-3)
        Candidate fine-tuning learning rates for ``lr="auto"``.
    validation_fraction : float, default=0.2
        Share of the training rows held out to choose the learning rate.
    batch_size : int, default=128
    weight_decay : float, default=1e-6
    n_estimators : int, default=1
        Number of independently seeded members whose probabilities are averaged.
    class_weight : dict, "balanced" or None, default=None
        Weights of the classes in the cross-entropy, as in scikit-learn.
    device : {"auto", "cpu", "cuda", "cuda:N"}, default="auto"
        Training device; the fitted model is kept on the CPU.
    random_state : int, RandomState or None, default=None
    ignore_errors : bool, default=False
        In ``predict_proba`` / ``predict``, give NaN rows for formulas that
        cannot be parsed instead of raising.
    verbose : bool, default=False
        Print the learning-rate search.

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        The class labels, sorted; the columns of ``predict_proba``.
    class_weight_ : dict or None
        The weight of each class, by its index in ``classes_``.
    lr_ : float
        The learning rate used for the final fit.
    validation_log_loss_ : dict or None
        Fine-tuning: validation cross-entropy of each candidate learning rate.
    estimators_ : list
        The fitted members: ``MLPHeadClassifier`` heads (probe) or fine-tuned
        (encoder, head) pairs.
    n_features_in_ : int
        Always 1 (one column of formulas).

    Examples
    --------
    >>> from skpolysrl import PolySRLClassifier
    >>> from skpolysrl.datasets import load_dataset
    >>> df = load_dataset("matbench_expt_is_metal")
    >>> clf = PolySRLClassifier(random_state=0).fit(df["formula"], df["target"])   # doctest: +SKIP
    >>> clf.predict_proba(["Cu", "NaCl"])[:, 1]                  # P(metal)        # doctest: +SKIP
    """

    _parameter_constraints = {**_PolySRLEstimator._parameter_constraints,
                              "class_weight": [dict, StrOptions({"balanced"}), None]}
    _head_type = MLPHeadClassifier
    _target_dtype = "int64"
    _validation_attr = "validation_log_loss_"

    def __init__(self, pretrained="default", finetune=False, hidden_dim=128, epochs=None, lr="auto",
                 lr_grid=(1e-4, 3e-4, 1e-3), validation_fraction=0.2, batch_size=128, weight_decay=1e-6,
                 n_estimators=1, class_weight=None, device="auto", random_state=None, ignore_errors=False,
                 verbose=False):
        super().__init__(pretrained=pretrained, finetune=finetune, hidden_dim=hidden_dim, epochs=epochs, lr=lr,
                         lr_grid=lr_grid, validation_fraction=validation_fraction, batch_size=batch_size,
                         weight_decay=weight_decay, n_estimators=n_estimators, device=device,
                         random_state=random_state, ignore_errors=ignore_errors, verbose=verbose)
        self.class_weight = class_weight

    # hooks of the shared core (skpolysrl._estimator)
    def _head_params(self):
        return {"class_weight": self.class_weight_}

    def _loss(self):
        weights = self.class_weight_
        return cross_entropy_loss(None if weights is None else [weights[k] for k in range(len(self.classes_))])

    @staticmethod
    def _validation_loss(outputs, y):
        proba = softmax(outputs)
        return -np.mean(np.log(np.clip(proba[np.arange(len(y)), y], 1e-15, None)))

    def fit(self, X, y):
        """Fit on formulas and class labels.

        Parameters
        ----------
        X : list-like of formulas (str, Composition or Structure), or a
            one-column DataFrame / ``(n, 1)`` array of them.
        y : array-like of shape (n_samples,)
            Class labels (at least two classes), none missing.

        Returns
        -------
        self : PolySRLClassifier

        Raises
        ------
        ValueError
            If a label is missing (the message names its row), ``y`` is
            continuous or holds one class, or X and y differ in length.
        FormulaError
            If a formula cannot be read (the message names its position).
        """
        self._validate_params()
        codes, self.classes_, weights = encode_labels(target_column(y), self.class_weight)
        # the members see class codes 0..k-1, so they get the weights by code
        self.class_weight_ = None if weights is None else {k: float(w) for k, w in enumerate(weights)}
        return self._fit_members(X, codes, n_outputs=len(self.classes_))

    def predict_proba(self, X):
        """Class probabilities, averaged over the members.

        Parameters
        ----------
        X : list-like of formulas

        Returns
        -------
        ndarray of shape (n_samples, n_classes)
            Columns in the order of ``classes_``; NaN rows for formulas
            skipped with ``ignore_errors=True``.
        """
        check_is_fitted(self, "estimators_")
        rows, n, members = self._outputs(X)
        proba = np.full((n, len(self.classes_)), np.nan)
        if members:
            proba[rows] = np.mean([softmax(outputs) for outputs, _ in members], axis=0)
        return proba

    def predict(self, X):
        """The most probable class of each formula.

        Returns
        -------
        ndarray of shape (n_samples,)
            Labels from ``classes_``; with ``ignore_errors=True``, NaN for
            formulas that cannot be parsed (the array is then of object
            dtype unless the labels are floats).
        """
        proba = self.predict_proba(X)
        valid = ~np.isnan(proba[:, 0])
        if valid.all():
            return self.classes_[np.argmax(proba, axis=1)]
        labels = self.classes_ if self.classes_.dtype.kind == "f" else self.classes_.astype(object)
        out = np.full(len(proba), np.nan, dtype=labels.dtype)
        out[valid] = labels[np.argmax(proba[valid], axis=1)]
        return out
