"""skpolysrl.plotting and skpolysrl.analysis on real data: bundled corpus, band gaps, shipped model."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.colors import to_hex  # noqa: E402

from skpolysrl.analysis import count_structures_per_formula, is_fractional_formula  # noqa: E402
from skpolysrl.exceptions import FormulaError  # noqa: E402
from skpolysrl.plotting import (  # noqa: E402
    plot_doped_vs_pure,
    plot_parity,
    plot_training_history,
    plot_uncertainty_vs_polymorphs,
    plot_zt_screening,
)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Approximate literature ZT(T) of well-known thermoelectrics (Bi2Te3 near room
# temperature, PbTe and Mg2(Si,Sn) at mid temperatures, SnSe single crystals, SiGe).
ZT_CURVES = {
    "Bi2Te3": [(300, 0.8), (400, 0.9), (500, 0.6)],
    "PbTe": [(300, 0.3), (500, 0.8), (700, 1.3), (800, 1.4)],
    "SnSe": [(300, 0.1), (600, 0.6), (800, 1.7), (923, 2.6)],
    "CoSb3": [(300, 0.1), (500, 0.3), (700, 0.5)],
    "Mg2Si0.4Sn0.6": [(300, 0.2), (500, 0.6), (700, 1.1)],
    "Si0.8Ge0.2": [(600, 0.4), (900, 0.7), (1100, 0.95)],
}


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


@pytest.fixture(scope="module")
def featurizer():
    from skpolysrl import PolySRLFeaturizer

    return PolySRLFeaturizer(verbose=False)


@pytest.fixture(scope="module")
def corpus_counts():
    from skpolysrl.datasets import load_mp_structures

    return count_structures_per_formula(load_mp_structures(structures=False)["formula"])


def _save(ax, path):
    fig = ax.figure if hasattr(ax, "figure") else np.ravel(ax)[0].figure
    fig.savefig(path, dpi=72)
    assert path.is_file() and path.stat().st_size > 5_000, path.stat().st_size
    return path


def _by_gid(artists, gid):
    return [a for a in artists if a.get_gid() == gid]


# ------------------------------------------------------------------ analysis helpers
def test_is_fractional_formula():
    from pymatgen.core import Composition

    formulas = ["Fe2O3", "Bi2Te2.7Se0.3", "(Bi2Te3)0.9(Sb2Te3)0.1", "Al(CoSi)2", "CuSO4·5H2O", "Hg0.7Cd0.3Te",
                Composition("Ga0.5In0.5As"), "Fe2.0000000001O3", "FeO1e-3"]
    expected = [False, True, True, False, False, True, True, False, True]
    assert is_fractional_formula(formulas).tolist() == expected
    assert is_fractional_formula(np.array(["SiO2", "Si0.5O"])).dtype == bool
    with pytest.raises(FormulaError, match="position 1"):
        is_fractional_formula(["Fe2O3", "Xx2"])
    with pytest.raises(FormulaError, match="missing value"):
        is_fractional_formula(["Fe2O3", None])
    with pytest.raises(TypeError, match="wrap it in a list"):
        is_fractional_formula("Fe2O3")


def test_is_fractional_formula_on_band_gap_set(band_gap):
    doped = is_fractional_formula(band_gap["formula"])
    assert doped.shape == (len(band_gap),)
    # a real mix: some hundreds of doped/alloyed entries among 2,482
    assert 200 < doped.sum() < 1000
    assert doped[band_gap["formula"].tolist().index("Hg0.7Cd0.3Te")]
    assert not doped[band_gap["formula"].tolist().index("ZnO")]


def test_count_structures_per_formula(corpus_counts):
    assert count_structures_per_formula(["TiO2", "Ti2O4", "SiO2", "O2Ti"]).to_dict() == {"TiO2": 3, "SiO2": 1}
    # bundled corpus: 6,317 structures of 5,667 formulas (datasets docstring)
    assert corpus_counts.sum() == 6317 and len(corpus_counts) == 5667
    assert corpus_counts.name == "n_structures" and corpus_counts.max() > 5


# ------------------------------------------------------------------ Fig. 3a
def test_plot_uncertainty_vs_polymorphs(featurizer, corpus_counts, tmp_path):
    u = featurizer.transform(list(corpus_counts.index))[:, -1]
    n = corpus_counts.to_numpy()
    ax = plot_uncertainty_vs_polymorphs(n, u)
    _save(ax, tmp_path / "fig3a.png")
    # one box per bucket 1, 2, 3, 4, 5+ (all non-empty in the corpus), labelled with counts
    assert len(ax.patches) == 5
    labels = [t.get_text() for t in ax.get_xticklabels()]
    assert labels[0] == f"1\n(n={(n == 1).sum()})" and labels[-1] == f"5+\n(n={(n >= 5).sum()})"
    (means,) = _by_gid(ax.lines, "bucket_means")
    np.testing.assert_allclose(means.get_ydata()[0], u[n == 1].mean(), rtol=1e-6)
    np.testing.assert_allclose(means.get_ydata()[-1], u[n >= 5].mean(), rtol=1e-6)

    # an existing Axes is drawn on and returned; empty buckets get no box; NaN rows are dropped
    fig, given = plt.subplots()
    out = plot_uncertainty_vs_polymorphs([1, 1, 2, 7, 1], [0.1, 0.2, 0.3, np.nan, 0.15], ax=given, max_count=3)
    assert out is given and len(given.patches) == 2
    with pytest.raises(ValueError, match="different lengths"):
        plot_uncertainty_vs_polymorphs([1, 2], [0.1])
    with pytest.raises(ValueError, match="positive integers"):
        plot_uncertainty_vs_polymorphs([0, 1.5], [0.1, 0.2])


# ------------------------------------------------------------------ Fig. 3b
def test_plot_doped_vs_pure(featurizer, band_gap, tmp_path):
    formulas = band_gap["formula"].tolist()
    u = featurizer.transform(formulas)[:, -1]
    doped = is_fractional_formula(formulas)
    ax = plot_doped_vs_pure(u, doped, bins=25)
    _save(ax, tmp_path / "fig3b.png")
    assert len(ax.patches) == 2 * 25  # two histograms on shared bins
    heights = np.array([p.get_height() for p in ax.patches])
    widths = np.array([p.get_width() for p in ax.patches])
    np.testing.assert_allclose((heights * widths)[:25].sum(), 1.0, rtol=1e-6)  # density
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend[0].startswith(f"stoichiometric (n={(~doped).sum()}")
    assert legend[1].startswith(f"doped / alloyed (n={doped.sum()}")
    (median,) = _by_gid(ax.lines, "median_doped")
    np.testing.assert_allclose(median.get_xdata()[0], np.median(u[doped]), rtol=1e-6)

    counts = plot_doped_vs_pure(u, doped.tolist(), bins=10, density=False)
    assert sum(p.get_height() for p in counts.patches) == len(formulas)


# ------------------------------------------------------------------ parity
def test_plot_parity(featurizer, band_gap, tmp_path):
    from sklearn.linear_model import Ridge
    from sklearn.model_selection import cross_val_predict

    data = band_gap.iloc[:600]
    X = featurizer.transform(data["formula"].tolist())
    y = data["target"].to_numpy()
    pred = cross_val_predict(Ridge(), X, y, cv=5)
    ax = plot_parity(y, pred, uncertainty=X[:, -1], units="eV")
    _save(ax, tmp_path / "parity.png")
    (points,) = _by_gid(ax.collections, "points")
    assert len(points.get_offsets()) == len(y)
    np.testing.assert_allclose(points.get_array(), X[:, -1], rtol=1e-6)  # coloured by uncertainty
    assert len(ax.figure.axes) == 2 and ax.figure.axes[1].get_ylabel() == "uncertainty"  # colorbar
    (identity,) = _by_gid(ax.lines, "identity")
    assert np.allclose(identity.get_xdata(), identity.get_ydata())
    assert f"MAE = {np.mean(np.abs(y - pred)):.3g} eV" in ax.get_title()

    plain = plot_parity(y, pred)
    assert len(plain.figure.axes) == 1  # no colorbar without uncertainty
    with_nan = plot_parity([1.0, 2.0, np.nan], [1.5, 2.0, 3.0])
    assert len(with_nan.collections[0].get_offsets()) == 2 and "MAE = 0.25" in with_nan.get_title()


# ------------------------------------------------------------------ training history
def test_plot_training_history(tmp_path):
    with open(os.path.join(ROOT, "benchmarks", "results", "default_model_training.json")) as fh:
        log = json.load(fh)["history"]  # the shipped model's real per-epoch records, every stage
    history = [r for r in log if r["stage"] == "supervised"]
    keys = ("loss", "effective_rank", "mean_cosine")
    axes = plot_training_history(history, keys=keys)
    _save(axes, tmp_path / "history.png")
    assert isinstance(axes, np.ndarray) and len(axes) == 3
    for panel, key in zip(axes, keys):
        (line,) = panel.lines
        assert line.get_gid() == key
        np.testing.assert_allclose(line.get_ydata(), [r[key] for r in history])
        np.testing.assert_array_equal(line.get_xdata(), [r["epoch"] for r in history])

    # one Axes: min-max scaled curves; records without probe_mae (no monitor) and unknown keys are skipped
    no_probe = [{k: v for k, v in r.items() if k != "probe_mae"} for r in history]
    fig, ax = plt.subplots()
    out = plot_training_history(no_probe, keys=("loss", "probe_mae", "mean_cosine", "nonexistent"), ax=ax)
    assert out is ax and [line.get_gid() for line in ax.lines] == ["loss", "mean_cosine"]
    assert min(ax.lines[0].get_ydata()) == 0.0 and max(ax.lines[0].get_ydata()) == 1.0
    _save(ax, tmp_path / "history_one_axes.png")

    fig, pair = plt.subplots(1, 2)
    assert len(plot_training_history(history, keys=("kl", "mean_uncertainty"), ax=pair)) == 2
    with pytest.raises(ValueError, match="available"):
        plot_training_history(history, keys=("nonexistent",))
    with pytest.raises(ValueError, match="empty"):
        plot_training_history([])


def test_plot_training_history_from_fit(trained, tmp_path):
    axes = plot_training_history(trained.history_, keys=("loss", "positive_correct", "mean_uncertainty"))
    assert [len(panel.lines[0].get_xdata()) for panel in axes] == [len(trained.history_)] * 3
    _save(axes, tmp_path / "history_fit.png")


# ------------------------------------------------------------------ ZT screening
def test_plot_zt_screening_vs_temperature(tmp_path):
    names = [name for name, curve in ZT_CURVES.items() for _ in curve]
    temperature = [t for curve in ZT_CURVES.values() for t, _ in curve]
    zt = np.array([z for curve in ZT_CURVES.values() for _, z in curve])
    ax = plot_zt_screening(zt, temperature, threshold=1.0, labels=names)
    _save(ax, tmp_path / "zt_vs_t.png")
    (threshold,) = _by_gid(ax.lines, "threshold")
    assert list(threshold.get_ydata()) == [1.0, 1.0]
    (hits,) = _by_gid(ax.collections, "candidates")
    assert len(hits.get_offsets()) == (zt >= 1.0).sum() == 5
    assert to_hex(hits.get_facecolor()[0]) == "#d62728"
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend[:3] == ["PbTe", "SnSe", "Mg2Si0.4Sn0.6"]  # materials reaching ZT 1, in order
    assert len([line for line in ax.lines if line.get_gid() != "threshold"]) == len(ZT_CURVES)


def test_plot_zt_screening_ranked(tmp_path):
    names = list(ZT_CURVES)
    peak = [max(z for _, z in curve) for curve in ZT_CURVES.values()]
    ax = plot_zt_screening(peak, threshold=1.2, labels=names)
    _save(ax, tmp_path / "zt_ranked.png")
    (hits,) = _by_gid(ax.collections, "candidates")
    (others,) = _by_gid(ax.collections, "others")
    np.testing.assert_allclose(hits.get_offsets(), [[1, 2.6], [2, 1.4]])  # ranked, highest first
    assert len(others.get_offsets()) == 4
    assert [t.get_text() for t in ax.texts] == ["SnSe", "PbTe"]
    assert list(_by_gid(ax.lines, "threshold")[0].get_ydata()) == [1.2, 1.2]
    with pytest.raises(ValueError, match="different lengths"):
        plot_zt_screening(peak, labels=names[:2])


def test_import_does_not_need_matplotlib():
    code = (
        "import sys; sys.modules['matplotlib'] = None\n"
        "import skpolysrl, skpolysrl.plotting, skpolysrl.analysis\n"
        "try:\n    skpolysrl.plotting.plot_parity([1.0], [1.0])\n"
        "except ImportError as e:\n    print('ok', 'skpolysrl[plot]' in str(e))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "ok True"
