"""Plots for PolySRL representations: uncertainty analyses, parity, training, screening.

Every function takes data (arrays, lists, pandas objects; never file paths),
draws on ``ax`` (a new figure when ``ax`` is None) and returns what it drew on,
so that plots can be combined and saved with matplotlib as usual::

    import matplotlib.pyplot as plt
    from skpolysrl.plotting import plot_parity

    ax = plot_parity(y_test, y_pred, uncertainty=X_test[:, -1])
    ax.figure.savefig("parity.png", dpi=150)

matplotlib (``pip install "skpolysrl[plot]"``) is imported only when a function is
called, so ``import skpolysrl`` does not need it. Non-finite values (e.g. the NaN
rows of ``PolySRLFeaturizer(ignore_errors=True)``) are left out of every plot.

The functions :func:`plot_uncertainty_vs_polymorphs` and :func:`plot_doped_vs_pure`
reproduce the analyses of the paper's Fig. 3; :mod:`skpolysrl.analysis` computes
their inputs from formulas.
"""

import numpy as np

__all__ = [
    "plot_uncertainty_vs_polymorphs",
    "plot_doped_vs_pure",
    "plot_parity",
    "plot_training_history",
    "plot_zt_screening",
]

#: Colours used throughout (matplotlib's default cycle: blue, orange, green, red, grey).
_BLUE, _ORANGE, _GREEN, _RED, _GREY = "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#7f7f7f"


def _pyplot():
    try:
        import matplotlib.pyplot as plt
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "skpolysrl.plotting needs matplotlib: pip install 'skpolysrl[plot]' (or pip install matplotlib)"
        ) from exc
    return plt


def _new_axes(ax, figsize=(5.0, 4.0)):
    if ax is not None:
        return ax
    fig, ax = _pyplot().subplots(figsize=figsize, layout="constrained")
    return ax


def _vector(values, name, dtype=float):
    """1-D numpy array from list / ndarray / Series / (n, 1) array."""
    arr = np.asarray(values, dtype=dtype)
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {arr.shape}")
    return arr


def _same_length(**arrays):
    lengths = {name: len(a) for name, a in arrays.items() if a is not None}
    if len(set(lengths.values())) > 1:
        raise ValueError("inputs have different lengths: " + ", ".join(f"{k}={v}" for k, v in lengths.items()))


def plot_uncertainty_vs_polymorphs(n_structures, uncertainty, ax=None, max_count=5, showfliers=False):
    """Uncertainty against the number of known structures per formula (the paper's Fig. 3a).

    One box per count bucket ``1, 2, ..., max_count - 1, max_count+``; the
    number of formulas in each bucket is written under its label. PolySRL's
    claim is that formulas with more polymorphs get larger uncertainties.

    Parameters
    ----------
    n_structures : array-like of int, shape (n_formulas,)
        Number of structures (polymorphs) of each formula in the pretraining
        corpus, e.g. from :func:`skpolysrl.analysis.count_structures_per_formula`.
    uncertainty : array-like of float, shape (n_formulas,)
        Uncertainty of each formula: the last column of
        ``PolySRLFeaturizer().transform(formulas)``.
    ax : matplotlib.axes.Axes, optional
        Axes to draw on; default: a new figure.
    max_count : int, default=5
        Counts of ``max_count`` and more share the last bucket.
    showfliers : bool, default=False
        Draw outliers beyond the whiskers as points.

    Returns
    -------
    matplotlib.axes.Axes
        The axes drawn on. Empty buckets get no box.

    Examples
    --------
    >>> from skpolysrl import PolySRLFeaturizer
    >>> from skpolysrl.analysis import count_structures_per_formula
    >>> from skpolysrl.datasets import load_mp_structures
    >>> from skpolysrl.plotting import plot_uncertainty_vs_polymorphs
    >>> counts = count_structures_per_formula(load_mp_structures(structures=False).formula)
    >>> u = PolySRLFeaturizer(verbose=False).transform(counts.index)[:, -1]
    >>> ax = plot_uncertainty_vs_polymorphs(counts.to_numpy(), u)  # doctest: +SKIP
    """
    counts = _vector(n_structures, "n_structures")
    u = _vector(uncertainty, "uncertainty")
    _same_length(n_structures=counts, uncertainty=u)
    if int(max_count) < 2:
        raise ValueError(f"max_count must be at least 2, got {max_count}")
    max_count = int(max_count)
    keep = np.isfinite(counts) & np.isfinite(u)
    counts, u = counts[keep], u[keep]
    if np.any(counts < 1) or np.any(counts != np.round(counts)):
        raise ValueError("n_structures must hold positive integers (structures per formula)")
    bucket = np.minimum(counts.astype(int), max_count)
    data, labels, positions = [], [], []
    for b in range(1, max_count + 1):
        values = u[bucket == b]
        if len(values):
            data.append(values)
            positions.append(b)
            labels.append(f"{b}{'+' if b == max_count else ''}\n(n={len(values)})")
    if not data:
        raise ValueError("nothing to plot: no finite (n_structures, uncertainty) pair")
    ax = _new_axes(ax)
    ax.boxplot(data, positions=positions, widths=0.6, showfliers=showfliers, patch_artist=True,
               boxprops={"facecolor": _BLUE, "alpha": 0.5}, medianprops={"color": "black"})
    ax.set_xticks(positions, labels)
    means = [float(np.mean(v)) for v in data]
    ax.plot(positions, means, marker="D", color=_RED, linestyle="--", label="mean", gid="bucket_means")
    ax.set_xlabel("known structures per formula")
    ax.set_ylabel("uncertainty")
    ax.set_title("Uncertainty vs number of polymorphs")
    ax.legend(loc="best")
    return ax


def plot_doped_vs_pure(uncertainty, is_doped, ax=None, bins=30, density=True):
    """Uncertainty distributions of doped/alloyed vs stoichiometric formulas (the paper's Fig. 3b).

    Two overlaid histograms on shared bins, with dashed lines at each group's
    median. PolySRL's claim is that doped/alloyed formulas (fractional amounts),
    whose structures are rarely in the pretraining corpus, get larger
    uncertainties.

    Parameters
    ----------
    uncertainty : array-like of float, shape (n_formulas,)
        Uncertainty of each formula (last column of ``PolySRLFeaturizer().transform``).
    is_doped : array-like of bool, shape (n_formulas,)
        True for doped/alloyed formulas, e.g. from
        :func:`skpolysrl.analysis.is_fractional_formula`.
    ax : matplotlib.axes.Axes, optional
        Axes to draw on; default: a new figure.
    bins : int or sequence, default=30
        Histogram bins (shared by both groups), as in :func:`numpy.histogram_bin_edges`.
    density : bool, default=True
        Normalise each histogram to unit area (the groups usually differ in size).

    Returns
    -------
    matplotlib.axes.Axes
        The axes drawn on.
    """
    u = _vector(uncertainty, "uncertainty")
    doped = _vector(is_doped, "is_doped", dtype=object)
    _same_length(uncertainty=u, is_doped=doped)
    doped = np.array([bool(x) for x in doped], dtype=bool)
    keep = np.isfinite(u)
    u, doped = u[keep], doped[keep]
    if len(u) == 0:
        raise ValueError("nothing to plot: no finite uncertainty")
    edges = np.histogram_bin_edges(u, bins=bins)
    ax = _new_axes(ax)
    groups = [("stoichiometric", ~doped, _BLUE), ("doped / alloyed", doped, _ORANGE)]
    for name, mask, colour in groups:
        values = u[mask]
        if not len(values):
            continue
        median = float(np.median(values))
        ax.hist(values, bins=edges, density=density, alpha=0.55, color=colour,
                label=f"{name} (n={len(values)}, median {median:.3g})")
        ax.axvline(median, color=colour, linestyle="--", linewidth=1.5, gid=f"median_{name.split()[0]}")
    ax.set_xlabel("uncertainty")
    ax.set_ylabel("density" if density else "formulas")
    ax.set_title("Uncertainty: doped/alloyed vs stoichiometric")
    ax.legend(loc="best", fontsize="small")
    return ax


def plot_parity(y_true, y_pred, uncertainty=None, ax=None, units=None, cmap="viridis"):
    """Predicted against true values, with the y = x line and the MAE.

    Parameters
    ----------
    y_true, y_pred : array-like of float, shape (n_samples,)
        True and predicted targets (e.g. out-of-fold predictions from
        :func:`sklearn.model_selection.cross_val_predict`).
    uncertainty : array-like of float, shape (n_samples,), optional
        Colours the points, with a colorbar (e.g. PolySRL's uncertainty column).
    ax : matplotlib.axes.Axes, optional
        Axes to draw on; default: a new figure.
    units : str, optional
        Units of the target, shown in the axis labels and with the MAE (e.g. ``"eV"``).
    cmap : str or Colormap, default="viridis"
        Colour map for ``uncertainty``.

    Returns
    -------
    matplotlib.axes.Axes
        The axes drawn on (the colorbar, if any, gets its own axes in the same figure).
    """
    t = _vector(y_true, "y_true")
    p = _vector(y_pred, "y_pred")
    u = None if uncertainty is None else _vector(uncertainty, "uncertainty")
    _same_length(y_true=t, y_pred=p, uncertainty=u)
    keep = np.isfinite(t) & np.isfinite(p)
    if u is not None:
        keep &= np.isfinite(u)
    t, p = t[keep], p[keep]
    if len(t) == 0:
        raise ValueError("nothing to plot: no finite (y_true, y_pred) pair")
    mae = float(np.mean(np.abs(t - p)))
    ax = _new_axes(ax, figsize=(5.0, 4.5) if u is None else (5.8, 4.5))
    unit = f" ({units})" if units else ""
    if u is None:
        ax.scatter(t, p, s=10, alpha=0.6, color=_BLUE, edgecolors="none", gid="points")
    else:
        points = ax.scatter(t, p, c=u[keep], s=10, alpha=0.8, cmap=cmap, edgecolors="none", gid="points")
        ax.figure.colorbar(points, ax=ax, label="uncertainty")
    lo = float(min(t.min(), p.min()))
    hi = float(max(t.max(), p.max()))
    pad = 0.03 * (hi - lo) if hi > lo else 1.0
    lo, hi = lo - pad, hi + pad
    ax.plot([lo, hi], [lo, hi], color="black", linestyle="--", linewidth=1, label="y = x", gid="identity")
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_aspect("equal", adjustable="box")
    ax.set_xlabel(f"true{unit}")
    ax.set_ylabel(f"predicted{unit}")
    ax.set_title(f"MAE = {mae:.3g}{' ' + units if units else ''} (n = {len(t)})")
    ax.legend(loc="upper left")
    return ax


_HISTORY_LABELS = {
    "loss": "loss",
    "kl": "KL",
    "positive_correct": "positive pairs correct",
    "negative_correct": "negative pairs correct",
    "retrieval": "retrieval",
    "mean_uncertainty": "mean uncertainty",
    "c": "match scale c",
    "d": "match shift d",
    "effective_rank": "effective rank",
    "mean_cosine": "mean cosine",
    "probe_mae": "held-out probe MAE",
}


def plot_training_history(history, keys=("loss", "probe_mae", "effective_rank"), ax=None):
    """Pretraining curves: the chosen ``history_`` entries against the epoch.

    Parameters
    ----------
    history : list of dict or pandas.DataFrame
        One record per epoch, as ``PolySRLFeaturizer.history_`` (or the
        ``history`` list of the JSON that ``skpolysrl pretrain --history``
        writes). Records may lack a key (``probe_mae`` exists only with a
        monitor); the epoch is ``record["epoch"]`` or the record's position + 1.
    keys : sequence of str, default=("loss", "probe_mae", "effective_rank")
        Entries to plot, e.g. also ``"kl"``, ``"positive_correct"``,
        ``"negative_correct"``, ``"retrieval"``, ``"mean_uncertainty"``,
        ``"c"``, ``"d"``, ``"mean_cosine"``. Keys that no record has are skipped.
    ax : None, matplotlib.axes.Axes or sequence of Axes, optional
        Where to draw:

        * None (default): a new figure with one panel per available key,
          stacked with a shared epoch axis.
        * one Axes: every available key on it, each min-max scaled to [0, 1]
          (the legend gives each key's range).
        * a sequence of Axes, one per available key.

    Returns
    -------
    numpy.ndarray of matplotlib.axes.Axes or matplotlib.axes.Axes
        The array of panels (``ax`` None or a sequence), or the single Axes given.

    Raises
    ------
    ValueError
        If no record has any of ``keys``, or ``ax`` is a sequence of the wrong length.
    """
    if hasattr(history, "to_dict"):  # DataFrame
        history = history.to_dict("records")
    records = list(history)
    if not records:
        raise ValueError("history is empty (a featurizer fitted on formulas has no pretraining history)")
    if isinstance(keys, str):
        keys = (keys,)
    epochs = np.array([float(r.get("epoch", i + 1)) for i, r in enumerate(records)])

    def column(key):
        values = [r.get(key) for r in records]
        return np.array([np.nan if v is None else float(v) for v in values])

    available = [k for k in keys if any(k in r for r in records)]
    if not available:
        present = sorted({k for r in records for k in r})
        raise ValueError(f"none of {list(keys)} is in the history; available: {present}")

    if ax is None or not hasattr(ax, "plot"):
        if ax is None:
            fig, axes = _pyplot().subplots(len(available), 1, sharex=True, squeeze=False,
                                           figsize=(5.5, 1.9 * len(available) + 0.6), layout="constrained")
            axes = axes[:, 0]
        else:
            axes = np.asarray(list(ax), dtype=object)
            if len(axes) != len(available):
                raise ValueError(f"ax holds {len(axes)} axes but {len(available)} keys are available: {available}")
        colours = [_BLUE, _ORANGE, _GREEN, _RED, _GREY]
        for i, (key, panel) in enumerate(zip(available, axes)):
            y = column(key)
            ok = np.isfinite(y)
            panel.plot(epochs[ok], y[ok], marker="o", markersize=3, color=colours[i % len(colours)],
                       label=key, gid=key)
            panel.set_ylabel(_HISTORY_LABELS.get(key, key))
        axes[-1].set_xlabel("epoch")
        axes[0].set_title("Pretraining history")
        return axes

    for i, key in enumerate(available):
        y = column(key)
        ok = np.isfinite(y)
        lo, hi = (float(np.min(y[ok])), float(np.max(y[ok]))) if ok.any() else (0.0, 1.0)
        scaled = (y[ok] - lo) / (hi - lo) if hi > lo else np.zeros(ok.sum())
        ax.plot(epochs[ok], scaled, marker="o", markersize=3, label=f"{key} [{lo:.3g}, {hi:.3g}]", gid=key)
    ax.set_xlabel("epoch")
    ax.set_ylabel("min-max scaled value")
    ax.set_title("Pretraining history")
    ax.legend(loc="best", fontsize="small")
    return ax


def plot_zt_screening(zt, temperature=None, threshold=1.0, labels=None, ax=None, max_labels=10):
    """Screen thermoelectric candidates: ZT values against a threshold.

    Without ``temperature``, the values are ranked (highest first) and those
    at or above ``threshold`` are highlighted; with ``temperature``, ZT is
    drawn against temperature (one line per material when ``labels`` name the
    materials), highlighting materials that reach the threshold.

    Parameters
    ----------
    zt : array-like of float, shape (n,)
        Figure of merit ZT, e.g. predicted by a regressor on PolySRL features.
    temperature : array-like of float, shape (n,), optional
        Temperature of each value (K).
    threshold : float, default=1.0
        ZT of interest (ZT >= 1 is the usual mark of a good thermoelectric);
        drawn as a horizontal line.
    labels : array-like of str, shape (n,), optional
        Material of each value (e.g. its formula). Ranked: the top
        ``max_labels`` candidates are annotated. Against temperature: values
        with the same label form one curve, and the legend names the
        materials that reach the threshold.
    ax : matplotlib.axes.Axes, optional
        Axes to draw on; default: a new figure.
    max_labels : int, default=10
        At most this many candidates are annotated or named in the legend.

    Returns
    -------
    matplotlib.axes.Axes
        The axes drawn on. The threshold line has gid ``"threshold"``; the
        highlighted points are a collection with gid ``"candidates"``, the
        others one with gid ``"others"``.
    """
    z = _vector(zt, "zt")
    temp = None if temperature is None else _vector(temperature, "temperature")
    names = None if labels is None else _vector(labels, "labels", dtype=object)
    _same_length(zt=z, temperature=temp, labels=names)
    keep = np.isfinite(z)
    if temp is not None:
        keep &= np.isfinite(temp)
    z = z[keep]
    temp = None if temp is None else temp[keep]
    names = None if names is None else names[keep]
    if len(z) == 0:
        raise ValueError("nothing to plot: no finite ZT value")
    ax = _new_axes(ax, figsize=(6.0, 4.0))
    above = z >= threshold

    if temp is None:
        order = np.argsort(-z, kind="stable")
        rank = np.arange(1, len(z) + 1)
        hit = above[order]
        ax.scatter(rank[~hit], z[order][~hit], s=14, color=_GREY, label=f"ZT < {threshold:g}", gid="others")
        ax.scatter(rank[hit], z[order][hit], s=22, color=_RED, label=f"ZT \u2265 {threshold:g} ({int(hit.sum())})",
                   gid="candidates", zorder=3)
        if names is not None:
            for r, i in zip(rank[hit][:max_labels], order[hit][:max_labels]):
                ax.annotate(str(names[i]), (r, z[i]), textcoords="offset points", xytext=(4, 3), fontsize=7)
        ax.set_xlabel("rank")
    else:
        if names is not None:
            best = {}
            for name, value in zip(names, z):
                best[name] = max(best.get(name, -np.inf), value)
            shown = 0
            for name in dict.fromkeys(names):  # first-appearance order
                mask = names == name
                order = np.argsort(temp[mask], kind="stable")
                good = best[name] >= threshold
                label = str(name) if good and shown < max_labels else None
                shown += bool(label)
                ax.plot(temp[mask][order], z[mask][order], color=None if good else _GREY,
                        alpha=1.0 if good else 0.4, linewidth=1.5 if good else 0.8, label=label)
        ax.scatter(temp[~above], z[~above], s=12, color=_GREY, gid="others", zorder=2)
        ax.scatter(temp[above], z[above], s=20, color=_RED, gid="candidates", zorder=3,
                   label=f"ZT \u2265 {threshold:g} ({int(above.sum())} points)")
        ax.set_xlabel("temperature (K)")
    ax.axhline(threshold, color="black", linestyle="--", linewidth=1, gid="threshold")
    ax.set_ylabel("ZT")
    ax.set_title(f"ZT screening: {int(above.sum())} of {len(z)} at or above {threshold:g}")
    ax.legend(loc="best", fontsize="small")
    return ax
