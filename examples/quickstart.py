"""Quickstart: featurize real formulas with PolySRL, then a short cross-validated score.

    python examples/quickstart.py            # shipped weights
    python examples/quickstart.py --fast     # fewer rows (used by the test suite)
"""

import argparse

import numpy as np
from sklearn.model_selection import KFold, cross_val_score
from sklearn.neural_network import MLPRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from skpolysrl import PolySRLFeaturizer
from skpolysrl.analysis import count_structures_per_formula
from skpolysrl.datasets import load_expt_gap_nonmetals, load_mp_structures


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default", help="'default' (shipped weights) or a model file path")
    parser.add_argument("--fast", action="store_true", help="use 300 band gap rows instead of all 2,482")
    args = parser.parse_args(argv)

    featurizer = PolySRLFeaturizer(pretrained=args.model, verbose=False)
    formulas = ["Fe2O3", "GaAs", "Bi2Te2.7Se0.3", "(Bi2Te3)0.9(Sb2Te3)0.1", "SiO2", "TiO2", "Cu2ZnSnS4"]
    X = featurizer.transform(formulas)
    print(f"PolySRL features: {X.shape[0]} formulas x {X.shape[1]} columns (200-d mean embedding + uncertainty)")
    # the uncertainty spans orders of magnitude: read it as a rank among known formulas (the bundled MP corpus)
    known = count_structures_per_formula(load_mp_structures(structures=False).formula).index
    reference = featurizer.transform(list(known))
    percentile = 100 * (reference[None, :, -1] < X[:, None, -1]).mean(axis=1)
    print(f"{'formula':<26}{'polysrl_0':>11}{'polysrl_1':>11}{'uncertainty':>14}{'percentile*':>13}")
    for formula, row, rank in zip(formulas, X, percentile):
        print(f"{formula:<26}{row[0]:>11.4f}{row[1]:>11.4f}{row[-1]:>14.4g}{rank:>12.0f}%")
    print(f"* of the uncertainty among the {len(reference)} formulas of the bundled Materials Project corpus")

    data = load_expt_gap_nonmetals()
    if args.fast:
        data = data.sample(300, random_state=0)
    model = make_pipeline(
        PolySRLFeaturizer(pretrained=args.model, verbose=False),
        StandardScaler(),
        MLPRegressor(hidden_layer_sizes=(128, 128), max_iter=300, early_stopping=True, random_state=0),
    )
    scores = -cross_val_score(model, data.formula.to_numpy(), data.target.to_numpy(),
                              cv=KFold(5, shuffle=True, random_state=0), scoring="neg_mean_absolute_error")
    print(f"Experimental band gap ({len(data)} formulas), 5-fold CV MAE: {scores.mean():.3f} +/- {scores.std():.3f} eV")
    return scores


if __name__ == "__main__":
    main()
