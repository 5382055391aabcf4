"""Uncertainty analyses of the PolySRL paper (Fig. 3a and 3b) with the shipped featurizer.

    python examples/uncertainty_plots.py                   # PNGs in the current directory
    python examples/uncertainty_plots.py --out-dir figs    # elsewhere
    python examples/uncertainty_plots.py --fast            # first 2,000 structures (used by the tests)

Fig. 3a: uncertainty of every formula of the bundled Materials Project corpus against
its number of structures (polymorphs) in that corpus. Fig. 3b: uncertainty of the
experimental band gap formulas, doped/alloyed (fractional amounts) vs stoichiometric.
Writes uncertainty_vs_polymorphs.png and uncertainty_doped_vs_pure.png.
"""

import argparse
import os

import matplotlib

matplotlib.use("Agg")  # files only, no window

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from scipy.stats import spearmanr  # noqa: E402

from skpolysrl import PolySRLFeaturizer  # noqa: E402
from skpolysrl.analysis import count_structures_per_formula, is_fractional_formula  # noqa: E402
from skpolysrl.datasets import load_expt_gap_nonmetals, load_mp_structures  # noqa: E402
from skpolysrl.plotting import plot_doped_vs_pure, plot_uncertainty_vs_polymorphs  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", default=".", help="directory for the PNG files (created if missing)")
    parser.add_argument("--model", default="default", help="'default' (shipped weights) or a model file path")
    parser.add_argument("--fast", action="store_true", help="use the first 2,000 corpus structures, not all 6,317")
    parser.add_argument("--dpi", type=int, default=150)
    args = parser.parse_args(argv)
    os.makedirs(args.out_dir, exist_ok=True)

    featurizer = PolySRLFeaturizer(pretrained=args.model, verbose=False)

    # Fig. 3a: structures per formula in the pretraining corpus vs uncertainty
    corpus = load_mp_structures(limit=2000 if args.fast else None, structures=False)
    counts = count_structures_per_formula(corpus["formula"])
    u_corpus = featurizer.transform(list(counts.index))[:, -1]
    rho = spearmanr(counts.to_numpy(), u_corpus)[0]
    print(f"Corpus: {len(corpus)} structures, {len(counts)} formulas; "
          f"Spearman(structures per formula, uncertainty) = {rho:+.3f}")
    ax = plot_uncertainty_vs_polymorphs(counts.to_numpy(), u_corpus)
    path_a = os.path.join(args.out_dir, "uncertainty_vs_polymorphs.png")
    ax.figure.savefig(path_a, dpi=args.dpi)
    plt.close(ax.figure)

    # Fig. 3b: doped/alloyed vs stoichiometric formulas of the band gap set
    gaps = load_expt_gap_nonmetals()
    doped = is_fractional_formula(gaps["formula"])
    u_gaps = featurizer.transform(gaps["formula"].tolist())[:, -1]
    print(f"Band gap set: {doped.sum()} doped/alloyed, {(~doped).sum()} stoichiometric formulas; median uncertainty "
          f"{np.median(u_gaps[doped]):.4g} vs {np.median(u_gaps[~doped]):.4g}")
    ax = plot_doped_vs_pure(u_gaps, doped)
    path_b = os.path.join(args.out_dir, "uncertainty_doped_vs_pure.png")
    ax.figure.savefig(path_b, dpi=args.dpi)
    plt.close(ax.figure)

    print(f"wrote {path_a} and {path_b}")
    return path_a, path_b


if __name__ == "__main__":
    main()
