"""Is the shipped model worth using? One run, one table.

1. The paper's probe protocol on the experimental band gap set (2,482 formulas, 5-fold
   CV, seed 0, frozen features + 3-layer MLP head, hidden 128, LeakyReLU, Adam 1e-3,
   300 epochs, L1) for: the model, an untrained encoder ("Rand init."), Magpie
   ElementProperty features with the same head, and Magpie with a 300-tree random forest.
2. Uncertainty: formulas with 2+ structures in the bundled corpus vs formulas with one
   (paper Fig. 3a), and doped/alloyed (fractional amounts) vs stoichiometric formulas
   of the band gap set.
3. Speed: loading the featurizer and transforming 10,000 formulas vs matminer's Magpie
   ``featurize_many`` (n_jobs=1), and peak memory.

    python benchmarks/pretrained_model.py [--model PATH] [--out benchmarks/results/pretrained_model.md]
"""

import argparse
import os
import platform
import re
import resource
import sys
import time
import warnings

import numpy as np
from _report import magpie_features

warnings.filterwarnings("ignore", category=UserWarning)
HERE = os.path.dirname(os.path.abspath(__file__))


def is_fractional(formula):
    return any(abs(float(x) - round(float(x))) > 1e-6 for x in re.findall(r"\d*\.\d+|\d+", formula))


def main():
    import torch
    from scipy.stats import mannwhitneyu
    from sklearn.ensemble import RandomForestRegressor

    from skpolysrl import PolySRLFeaturizer
    from skpolysrl.datasets import load_expt_gap_nonmetals, load_mp_structures
    from skpolysrl.evaluation import cross_validate_probe

    p = argparse.ArgumentParser()
    p.add_argument("--model", default="default")
    p.add_argument("--out", default=os.path.join(HERE, "results", "pretrained_model.md"))
    p.add_argument("--n-speed", type=int, default=10000)
    p.add_argument("--also", nargs="*", default=[], metavar="MODEL",
                   help="more model files to probe in the same run (e.g. a previous shipped model)")
    a = p.parse_args()

    bg = load_expt_gap_nonmetals()
    formulas, y = bg.formula.tolist(), bg.target.to_numpy()
    rows = []

    def probe(name, X, estimator=None):
        t = time.perf_counter()
        r = cross_validate_probe(X, y, estimator=estimator, n_splits=5, seed=0)
        rows.append((name, r["mae_mean"], r["mae_std"], r["r2_mean"], time.perf_counter() - t))
        print(rows[-1], flush=True)

    model = PolySRLFeaturizer(pretrained=a.model, verbose=False)
    untrained = PolySRLFeaturizer(pretrained=None, random_state=0, verbose=False).fit(formulas)
    X_model = model.transform(formulas)
    X_rand = untrained.transform(formulas)
    X_magpie = magpie_features(formulas)
    probe(f"PolySRL ({a.model})", X_model)
    for other in a.also:
        probe(f"PolySRL ({os.path.basename(other)})",
              PolySRLFeaturizer(pretrained=other, verbose=False).transform(formulas))
    probe("Rand init. (untrained encoder)", X_rand)
    probe("Magpie + same head", X_magpie)
    probe("Magpie + RandomForest(300)", X_magpie, RandomForestRegressor(n_estimators=300, random_state=0, n_jobs=1))

    # uncertainty vs polymorphism (bundled corpus) and vs doping (band gap set)
    corpus = load_mp_structures(structures=False)
    counts = corpus.formula.value_counts()
    poly, mono = counts[counts >= 2].index.tolist(), counts[counts == 1].index.tolist()
    u_poly = model.transform(poly)[:, -1]
    u_mono = model.transform(mono)[:, -1]
    frac = np.array([is_fractional(f) for f in formulas])
    u_bg = X_model[:, -1]

    # speed: 10,000 formulas (band gap set cycled with the corpus formulas)
    pool = list(dict.fromkeys(formulas + corpus.formula.tolist()))
    speed_formulas = (pool * (a.n_speed // len(pool) + 1))[: a.n_speed]
    t = time.perf_counter()
    f = PolySRLFeaturizer(verbose=False) if a.model == "default" else PolySRLFeaturizer(pretrained=a.model, verbose=False)
    f.transform(speed_formulas)
    ours = time.perf_counter() - t
    n_magpie = min(2000, a.n_speed)
    t = time.perf_counter()
    magpie_features(speed_formulas[:n_magpie])
    theirs = (time.perf_counter() - t) * a.n_speed / n_magpie
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    lines = [
        f"# Pretrained model benchmark: `{a.model}`",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads). Command: `python benchmarks/pretrained_model.py "
        f"{' '.join(sys.argv[1:])}`.",
        "",
        "## Band gap probe (2,482 formulas, 5-fold CV seed 0, MLP head 128, 300 epochs, L1)",
        "",
        "| features | MAE mean (eV) | MAE std | R^2 mean | seconds |",
        "|---|---|---|---|---|",
    ]
    lines += [f"| {n} | {m:.4f} | {s:.4f} | {r2:.3f} | {sec:.0f} |" for n, m, s, r2, sec in rows]
    lines += [
        "",
        "Paper (probe MAE): PolySRL 0.407, Rand init. 0.439, 3D Infomax 0.428.",
        "",
        "## Uncertainty (geometric mean of the variances)",
        "",
        f"Two-sided Mann-Whitney U p-values: 2+ structures vs 1, {mannwhitneyu(u_poly, u_mono).pvalue:.2g}; "
        f"fractional vs stoichiometric, {mannwhitneyu(u_bg[frac], u_bg[~frac]).pvalue:.2g}.",
        "",
        "| group | n | mean uncertainty | median |",
        "|---|---|---|---|",
        f"| corpus formulas with 2+ structures | {len(poly)} | {u_poly.mean():.4g} | {np.median(u_poly):.4g} |",
        f"| corpus formulas with 1 structure | {len(mono)} | {u_mono.mean():.4g} | {np.median(u_mono):.4g} |",
        f"| band gap set, fractional (doped/alloyed) | {frac.sum()} | {u_bg[frac].mean():.4g} | {np.median(u_bg[frac]):.4g} |",
        f"| band gap set, stoichiometric | {(~frac).sum()} | {u_bg[~frac].mean():.4g} | {np.median(u_bg[~frac]):.4g} |",
        "",
        "## Speed",
        "",
        f"Load + transform {a.n_speed:,} formulas: {ours:.2f} s ({a.n_speed / ours:,.0f} formulas/s). "
        f"Magpie `featurize_many` (n_jobs=1), timed on {n_magpie:,} and scaled: {theirs:.1f} s "
        f"({a.n_speed / theirs:,.0f} formulas/s). Ratio: **{theirs / ours:.0f}x**. "
        f"Peak RSS of the whole benchmark process: {peak_mb:.0f} MB. A quick check in a process that "
        "has already run everything above; the controlled comparison (fresh processes, cold and warm, "
        "the whole 10,000 for Magpie too, featurize_dataframe) is `benchmarks/featurize_speed.py` -> "
        "`featurize_speed.md`.",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    os.makedirs(os.path.dirname(a.out), exist_ok=True)
    with open(a.out, "w") as fh:
        fh.write(text)


if __name__ == "__main__":
    main()
