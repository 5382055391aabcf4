"""The paper's representation ("probe") protocol as library code.

PolySRL (Lee et al., NeurIPS 2023 AI4Science) judges a stoichiometry
representation by freezing the encoder and training a small head on its
features: a three-layer MLP (hidden 128, LeakyReLU), Adam with a fixed
learning rate of 1e-3, 300 epochs, L1 loss, evaluated by 5-fold
cross-validation (random split, seed 0) and reported as the mean and standard
deviation of the MAE (and R^2) over the folds.

This module provides the head as a scikit-learn regressor working on any
numeric feature matrix (:class:`MLPHeadRegressor`), its classifier counterpart
(:class:`MLPHeadClassifier`, softmax cross-entropy) and the cross-validation
loop (:func:`cross_validate_probe`), which accepts any scikit-learn regressor,
so that PolySRL features, Magpie features and other baselines are scored by
exactly the same protocol.

Examples
--------
>>> from skpolysrl import PolySRLFeaturizer
>>> from skpolysrl.datasets import load_expt_gap_nonmetals
>>> from skpolysrl.evaluation import cross_validate_probe
>>> df = load_expt_gap_nonmetals()
>>> X = PolySRLFeaturizer(pretrained=None, random_state=0, verbose=False).fit(
...     df["formula"]).transform(df["formula"])                   # doctest: +SKIP
>>> cross_validate_probe(X, df["target"])["mae_mean"]             # doctest: +SKIP
"""

import copy
import numbers

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin, clone
from sklearn.metrics import mean_absolute_error, r2_score
from sklearn.model_selection import KFold
from sklearn.utils import _safe_indexing, check_random_state
from sklearn.preprocessing import LabelEncoder
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.class_weight import compute_class_weight
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted

from ._runtime import resolve_device, seeded
from .engine import Trainer
from .nn import build_head

try:  # scikit-learn >= 1.6
    from sklearn.utils.validation import validate_data as _sk_validate_data
except ImportError:  # pragma: no cover - older scikit-learn
    _sk_validate_data = None

__all__ = ["MLPHeadRegressor", "MLPHeadClassifier", "cross_validate_probe"]

#: Rows per forward pass in ``predict`` (bounds memory for very large inputs).
_PREDICT_CHUNK = 65536


def _validate(estimator, X, y="no_validation", *, reset, y_numeric=True):
    """``validate_data`` without the finiteness check of X (done by :func:`_check_finite`).

    ``y="no_validation"`` validates X alone (predict); in fit, ``y=None`` is an error.
    ``y_numeric=False`` keeps class labels as they are.
    """
    kwargs = {"dtype": [np.float64, np.float32], "reset": reset}
    if isinstance(y, str) and y == "no_validation":
        if _sk_validate_data is not None:
            return _sk_validate_data(estimator, X, ensure_all_finite=False, **kwargs)
        return estimator._validate_data(X, force_all_finite=False, **kwargs)  # pragma: no cover
    if _sk_validate_data is not None:
        return _sk_validate_data(estimator, X, y, ensure_all_finite=False, y_numeric=y_numeric, **kwargs)
    return estimator._validate_data(X, y, force_all_finite=False, y_numeric=y_numeric, **kwargs)  # pragma: no cover


def _check_finite(X, name):
    """Raise a ValueError naming the offending rows if X holds NaN or infinity."""
    bad = ~np.isfinite(X)
    if not bad.any():
        return
    rows = np.flatnonzero(bad.any(axis=1))
    kind = "NaN" if np.isnan(X).any() else "infinity"
    raise ValueError(
        f"Input X contains {kind} in {len(rows)} of {X.shape[0]} rows (first: row {rows[0]}); "
        f"{name} needs finite features. Drop those rows before {'fitting' if name == 'fit' else 'predicting'} "
        "(e.g. formulas that PolySRLFeaturizer(ignore_errors=True) or a matminer featurizer could not "
        "featurize give NaN rows) or impute them, e.g. with sklearn.impute.SimpleImputer in a Pipeline."
    )


def l1_loss(pred, target):
    """The paper's regression loss: mean absolute error of a one-output net's predictions."""
    return torch.nn.functional.l1_loss(pred.view(-1), target)


def cross_entropy_loss(class_weight=None):
    """Softmax cross-entropy on class codes ``0..k-1``, weighted per class by ``class_weight``
    (an array of k weights, e.g. from :func:`sklearn.utils.class_weight.compute_class_weight`)."""
    weight = None if class_weight is None else torch.as_tensor(class_weight, dtype=torch.float32)

    def loss(logits, target):
        w = None if weight is None else weight.to(logits.device)
        return torch.nn.functional.cross_entropy(logits, target, weight=w)

    return loss


def softmax(logits):
    """Row-wise softmax of an (n, k) float array (numerically stable)."""
    z = np.exp(logits - logits.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


def encode_labels(y, class_weight=None):
    """Class labels -> (codes 0..k-1 as int64, sorted classes, per-class weights or None).

    Raises a ValueError if ``y`` is not binary or multiclass (e.g. continuous) or has one class.
    """
    if len(y) == 0:
        raise ValueError("no labels given (got an empty y)")
    check_classification_targets(y)
    encoder = LabelEncoder().fit(y)
    if len(encoder.classes_) < 2:
        raise ValueError(f"a classifier needs at least 2 classes in y; got only one class, {encoder.classes_[0]!r}")
    codes = encoder.transform(y).astype(np.int64)
    weights = None
    if class_weight == "balanced":
        weights = compute_class_weight("balanced", classes=np.arange(len(encoder.classes_)), y=codes)
    elif class_weight is not None:
        weights = np.array([class_weight.get(c, 1.0) for c in encoder.classes_], dtype=np.float64)
    return codes, encoder.classes_, weights


class SupervisedObjective(torch.nn.Module):
    """``loss(net(*inputs(idx)), targets[idx])``: the objective (for :class:`~skpolysrl.engine.Trainer`)
    of the probe heads and of fine-tuning; ``loss`` is :func:`l1_loss` or a :func:`cross_entropy_loss`."""

    find_unused_parameters = False

    def __init__(self, net, inputs, targets, loss=l1_loss):
        super().__init__()
        self.net, self.inputs, self.targets, self.loss = net, inputs, targets, loss

    def forward(self, idx):
        loss = self.loss(self.net(*self.inputs(idx)), self.targets[torch.as_tensor(idx, device=self.targets.device)])
        return loss, {"loss": float(loss.detach())}


#: The regression objective under its earlier name.
RegressionObjective = SupervisedObjective


class _MLPHead(BaseEstimator):
    """What the probe heads share: parameters, standardisation, training by the engine, forward pass."""

    _parameter_constraints = {
        "hidden_dim": [Interval(numbers.Integral, 1, None, closed="left")],
        "epochs": [Interval(numbers.Integral, 0, None, closed="left")],
        "lr": [Interval(numbers.Real, 0, None, closed="neither")],
        "batch_size": [None, Interval(numbers.Integral, 1, None, closed="left")],
        "standardize": ["boolean"],
        "clip_inputs": ["boolean"],
        "random_state": ["random_state"],
        "device": [str],
        "weight_decay": [Interval(numbers.Real, 0, None, closed="left")],
    }

    def __init__(self, hidden_dim=128, epochs=300, lr=1e-3, batch_size=128, standardize=True,
                 clip_inputs=True, random_state=None, device="cpu", weight_decay=1e-6):
        self.hidden_dim = hidden_dim
        self.epochs = epochs
        self.lr = lr
        self.batch_size = batch_size
        self.standardize = standardize
        self.clip_inputs = clip_inputs
        self.random_state = random_state
        self.device = device
        self.weight_decay = weight_decay

    def _fit_module(self, X, targets, n_outputs, loss):
        """Train a fresh head with ``n_outputs`` outputs on ``loss(head(X[idx]), targets[idx])``."""
        _check_finite(X, "fit")
        X = X.astype(np.float64, copy=False)
        if self.standardize:
            mean = X.mean(axis=0)
            scale = X.std(axis=0)
            scale[~(scale > 0)] = 1.0
        else:
            mean = np.zeros(X.shape[1])
            scale = np.ones(X.shape[1])

        device = resolve_device(self.device)
        seed = int(check_random_state(self.random_state).randint(np.iinfo(np.int32).max))
        with seeded(seed):
            module = build_head(X.shape[1], self.hidden_dim, n_outputs)
        module = module.to(device)
        Xt = torch.tensor((X - mean) / scale, dtype=torch.float32, device=device)
        yt = torch.as_tensor(targets, device=device)
        n = Xt.shape[0]
        trainer = Trainer([{"params": list(module.parameters()), "weight_decay": self.weight_decay}], lr=self.lr,
                          epochs=self.epochs, batch_size=n if self.batch_size is None else min(int(self.batch_size), n),
                          n_rows=n, seed=seed, device=device, distributed=False, skip_small_batches=False)
        history = trainer.fit(SupervisedObjective(module, lambda idx: (Xt[torch.as_tensor(idx, device=device)],), yt,
                                                  loss))

        self.module_ = module.cpu().eval()
        self.mean_ = mean
        self.scale_ = scale
        self.data_min_ = X.min(axis=0)
        self.data_max_ = X.max(axis=0)
        self.loss_curve_ = [record["loss"] for record in history]
        self.n_iter_ = int(self.epochs)
        return self

    def _outputs(self, X):
        """The head's raw outputs, shape (n_samples, n_outputs), in float64."""
        check_is_fitted(self, "module_")
        X = _validate(self, X, reset=False)
        _check_finite(X, "predict")
        X = X.astype(np.float64, copy=False)
        if self.clip_inputs:
            X = np.clip(X, self.data_min_, self.data_max_)
        Xs = (X - self.mean_) / self.scale_
        head = copy.deepcopy(self.module_).double()
        out = []
        with torch.no_grad():
            for start in range(0, Xs.shape[0], _PREDICT_CHUNK):
                out.append(head(torch.from_numpy(np.ascontiguousarray(Xs[start : start + _PREDICT_CHUNK]))).numpy())
        return np.concatenate(out) if out else np.empty((0, head[-1].out_features))


class MLPHeadRegressor(RegressorMixin, _MLPHead):
    """The PolySRL probe head: a three-layer MLP regressor on a numeric feature matrix.

    ``Linear(n_features, hidden_dim) -> LeakyReLU -> Linear(hidden_dim, hidden_dim)
    -> LeakyReLU -> Linear(hidden_dim, 1)``, trained with Adam at a fixed
    learning rate on the L1 (mean absolute error) loss over shuffled
    minibatches, as in the paper's representation-learning evaluation. Weights
    are initialised Xavier-uniform with zero biases, as in the authors' code.

    Parameters
    ----------
    hidden_dim : int, default=128
        Width of the two hidden layers (the paper's 128).
    epochs : int, default=300
        Passes over the training data (the paper's 300). No early stopping:
        the paper trains for a fixed budget.
    lr : float, default=1e-3
        Adam learning rate, fixed (the paper's 1e-3).
    batch_size : int or None, default=128
        Rows per minibatch; ``None`` = full batch. The paper does not state it;
        the authors' evaluation script uses 128 for the Band Gap, Formation
        Enthalpy and Metallic sets (and 32 for the small ESTM sets), so 128 is
        the default. Each epoch visits the rows in a fresh random order and
        keeps the last, smaller batch. A ``batch_size`` larger than the data is
        full-batch training.
    standardize : bool, default=True
        Centre and scale every input column with the mean and standard
        deviation of the training data (columns with zero variance are only
        centred); the same statistics are applied in ``predict``. Feature sets
        mix scales: PolySRL's unit-norm mean embedding has components of order
        0.07 while its uncertainty column sits near 1, and Magpie's columns
        range from fractions to thousands (melting temperatures), so without
        standardisation the first layer, at a fixed learning rate, is
        dominated by the largest columns. The targets are not scaled: the L1
        loss and the reported MAE stay in the target's units.
    clip_inputs : bool, default=True
        In ``predict``, clip every column to the range it had in the training
        data. Without it, a column that is (almost) constant in the training
        rows turns an unseen value into an enormous standardised input, and
        the piecewise-linear head extrapolates it linearly: with Magpie
        features, one test formula (Fe2TiSi, the only one with a non-zero
        "mode GSmagmom" of 2.1 while the training rows had at most 2e-5) got
        a predicted band gap of 1.3 million eV and the fold's MAE was 2,690 eV.
        Clipping keeps predictions within what the head saw in training.
    random_state : int, RandomState instance or None, default=None
        Seeds the weight initialisation and the minibatch order (with a local
        generator: the global torch random state is left untouched). An int
        gives identical predictions on every fit with the same data and device.
    device : str, default="cpu"
        Torch device for training (``"cpu"``, ``"cuda"``, ``"cuda:N"`` or
        ``"auto"``). The fitted head is kept on the CPU, so the estimator
        pickles and predicts anywhere.
    weight_decay : float, default=1e-6
        Adam's L2 penalty; the authors' evaluation script uses 1e-6 (too small
        to matter much; 0 disables it).

    Attributes
    ----------
    module_ : torch.nn.Sequential
        The trained head (float32, on the CPU).
    mean_ : ndarray of shape (n_features_in_,)
        Column means of the training data (zeros if ``standardize=False``).
    scale_ : ndarray of shape (n_features_in_,)
        Column standard deviations of the training data, with zeros replaced
        by ones (ones if ``standardize=False``).
    data_min_, data_max_ : ndarray of shape (n_features_in_,)
        Column minima and maxima of the training data (``predict`` clips to
        them when ``clip_inputs=True``).
    loss_curve_ : list of float
        Mean training L1 loss of each epoch.
    n_iter_ : int
        Epochs run.
    n_features_in_ : int
        Number of input columns.
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Column names, when ``X`` was a DataFrame with string column names.

    See Also
    --------
    cross_validate_probe : the paper's 5-fold protocol around this head.

    Notes
    -----
    Trained by :class:`skpolysrl.engine.Trainer`, which indexes the whole
    training tensor with a new seeded permutation each epoch instead of using
    a ``DataLoader``; 300 epochs on 2,000 rows of 201
    features take a few seconds on one CPU core. Predictions are computed in
    float64 so that they do not depend on how rows are grouped.

    Examples
    --------
    >>> import numpy as np
    >>> from skpolysrl.evaluation import MLPHeadRegressor
    >>> rng = np.random.RandomState(0)
    >>> X = rng.normal(size=(200, 5)); y = X[:, 0] - 2 * X[:, 1]
    >>> head = MLPHeadRegressor(epochs=50, random_state=0).fit(X, y)
    >>> head.predict(X[:3]).shape
    (3,)
    """

    def fit(self, X, y):
        """Train the head.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Finite numeric features (e.g. ``PolySRLFeaturizer().transform(formulas)``).
        y : array-like of shape (n_samples,)
            Targets.

        Returns
        -------
        self : MLPHeadRegressor
            The fitted estimator.

        Raises
        ------
        ValueError
            If ``X`` contains NaN or infinity, or ``X`` and ``y`` disagree in length.
        """
        self._validate_params()
        X, y = _validate(self, X, y, reset=True)
        return self._fit_module(X, np.asarray(y, dtype=np.float32), 1, l1_loss)

    def predict(self, X):
        """Predict targets.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features_in_)
            Finite numeric features with the columns seen in ``fit``.

        Returns
        -------
        ndarray of shape (n_samples,), float64
            Predictions.

        Raises
        ------
        ValueError
            If ``X`` contains NaN or infinity or has the wrong number of columns.
        """
        return self._outputs(X)[:, 0]


class MLPHeadClassifier(ClassifierMixin, _MLPHead):
    """The PolySRL probe head as a classifier: the same MLP with one output per class, softmax cross-entropy.

    The counterpart of :class:`MLPHeadRegressor` (same architecture, training,
    standardisation and input clipping; see its documentation for the shared
    parameters) for binary and multiclass targets of any label type.

    Parameters
    ----------
    hidden_dim, epochs, lr, batch_size, standardize, clip_inputs, random_state, device, weight_decay
        As in :class:`MLPHeadRegressor`.
    class_weight : dict, "balanced" or None, default=None
        Weights of the classes in the cross-entropy, as in scikit-learn
        (``"balanced"``: inversely proportional to the class frequencies).

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        The class labels, sorted.
    module_, mean_, scale_, data_min_, data_max_, loss_curve_, n_iter_, n_features_in_
        As in :class:`MLPHeadRegressor` (``loss_curve_``: mean cross-entropy per epoch).

    Examples
    --------
    >>> import numpy as np
    >>> from skpolysrl.evaluation import MLPHeadClassifier
    >>> rng = np.random.RandomState(0)
    >>> X = rng.normal(size=(200, 5)); y = np.where(X[:, 0] > 0, "metal", "insulator")
    >>> clf = MLPHeadClassifier(epochs=50, random_state=0).fit(X, y)
    >>> clf.classes_.tolist(), clf.predict_proba(X[:3]).shape
    (['insulator', 'metal'], (3, 2))
    """

    _parameter_constraints = {**_MLPHead._parameter_constraints, "class_weight": [dict, StrOptions({"balanced"}), None]}

    def __init__(self, hidden_dim=128, epochs=300, lr=1e-3, batch_size=128, standardize=True, clip_inputs=True,
                 random_state=None, device="cpu", weight_decay=1e-6, class_weight=None):
        super().__init__(hidden_dim=hidden_dim, epochs=epochs, lr=lr, batch_size=batch_size, standardize=standardize,
                         clip_inputs=clip_inputs, random_state=random_state, device=device, weight_decay=weight_decay)
        self.class_weight = class_weight

    def fit(self, X, y):
        """Train the head on class labels.

        Raises
        ------
        ValueError
            If ``X`` contains NaN or infinity, ``y`` is continuous or holds a single class.
        """
        self._validate_params()
        X, y = _validate(self, X, y, reset=True, y_numeric=False)
        codes, self.classes_, weights = encode_labels(y, self.class_weight)
        return self._fit_module(X, codes, len(self.classes_), cross_entropy_loss(weights))

    def predict_proba(self, X):
        """Class probabilities, shape (n_samples, n_classes), columns in the order of ``classes_``."""
        return softmax(self._outputs(X))

    def predict(self, X):
        """The most probable class of each row."""
        proba = self.predict_proba(X)
        return self.classes_[np.argmax(proba, axis=1)]


def cross_validate_probe(X, y, estimator=None, n_splits=5, seed=0):
    """The paper's probe protocol: K-fold cross-validation of a regressor on fixed features.

    The rows are shuffled and split by ``KFold(n_splits, shuffle=True,
    random_state=seed)``; for every fold a fresh clone of ``estimator`` is fitted on
    the other folds and scored on the held-out one.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features)
        Features (ndarray or DataFrame), e.g. the output of
        ``PolySRLFeaturizer().transform(formulas)`` or of a matminer featurizer.
    y : array-like of shape (n_samples,)
        Targets, on the scale the model is trained and scored on.
    estimator : scikit-learn regressor, optional
        Any regressor with ``fit``/``predict`` (it is cloned per fold, so it
        may be a Pipeline). Default: ``MLPHeadRegressor(random_state=seed)``,
        the paper's head. Give it an integer ``random_state`` for reproducible
        scores.
    n_splits : int, default=5
        Number of folds (the paper's 5).
    seed : int, default=0
        Seed of the shuffled split (the paper's 0) and of the default head.

    Returns
    -------
    dict
        ``{"mae_mean", "mae_std", "r2_mean", "r2_std", "folds"}``: the mean and
        standard deviation (``numpy.std``, ddof=0) over folds of the mean
        absolute error and of R^2, and ``folds``, one ``{"mae", "r2"}`` per fold
        in split order. All values are Python floats.

    Raises
    ------
    ValueError
        If ``X`` and ``y`` have different numbers of rows or there are fewer rows
        than folds.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.linear_model import Ridge
    >>> from skpolysrl.evaluation import cross_validate_probe
    >>> rng = np.random.RandomState(0)
    >>> X = rng.normal(size=(100, 4)); y = X @ [1.0, -1.0, 0.5, 0.0]
    >>> scores = cross_validate_probe(X, y, estimator=Ridge())
    >>> len(scores["folds"]), scores["mae_mean"] < 0.1
    (5, True)
    """
    y = np.asarray(y, dtype=np.float64)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise ValueError(f"y must be one-dimensional (one target), got shape {y.shape}")
    n = X.shape[0] if hasattr(X, "shape") else len(X)
    if n != len(y):
        raise ValueError(f"X and y have different numbers of rows: {n} and {len(y)}")
    if estimator is None:
        estimator = MLPHeadRegressor(random_state=seed)

    folds = []
    for train, test in KFold(n_splits=n_splits, shuffle=True, random_state=seed).split(np.zeros((n, 1))):
        model = clone(estimator).fit(_safe_indexing(X, train), y[train])
        pred = np.asarray(model.predict(_safe_indexing(X, test)), dtype=np.float64).reshape(-1)
        folds.append({"mae": float(mean_absolute_error(y[test], pred)), "r2": float(r2_score(y[test], pred))})

    mae = np.array([f["mae"] for f in folds])
    r2 = np.array([f["r2"] for f in folds])
    return {
        "mae_mean": float(mae.mean()),
        "mae_std": float(mae.std()),
        "r2_mean": float(r2.mean()),
        "r2_std": float(r2.std()),
        "folds": folds,
    }
