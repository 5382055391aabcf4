"""Held-out DFT check for choosing pretraining settings (issue 10: choose on held-out DFT data, not on
the benchmark folds): the formulas that every pretraining stage holds out
(:func:`skpolysrl.model_selection.held_out_formulas`, 10 %) have DFT values in the matbench tables;
a probe (5-fold, seed 0, MLP head) on each model's *means* predicts them. The band gap benchmark is
printed too, for the record only.

    python benchmarks/heldout_dft.py --structures ../shared/data/mp2025_structures.jsonl.gz \\
        --tables ../shared/data/matbench/mp_gap.csv ../shared/data/matbench/mp_e_form.csv --models a.pt b.pt
"""

import argparse
import os

import numpy as np
from train_default_model import property_matrix
from uncertainty import corpus_counts, out_of_fold


def held_out_stoichiometries(structures):
    """The corpus's formulas that every pretraining stage holds out, one per stoichiometry, in stoichiometry
    order (the fold assignment depends on the row order)."""
    from skpolysrl._elements import known_atomic_numbers
    from skpolysrl._formula import parse_formulas
    from skpolysrl.model_selection import held_out_formulas

    formulas = corpus_counts(structures).index.to_numpy()
    held = formulas[held_out_formulas(formulas, 0.1)]
    keys = [s.key for s in parse_formulas(list(held), known_atomic_numbers())]
    return held[sorted(dict(zip(keys, range(len(held)))).values(), key=lambda i: keys[i])]


def main():
    import torch

    from skpolysrl import PolySRLFeaturizer
    from skpolysrl.datasets import load_dataset
    from skpolysrl.evaluation import MLPHeadRegressor

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--structures", required=True, help="the pretraining corpus (JSON lines with a formula field)")
    p.add_argument("--tables", nargs="+", required=True, help="per-formula DFT tables (formula, target)")
    p.add_argument("--models", nargs="+", required=True)
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    held = held_out_stoichiometries(a.structures)
    sets = {}
    for path in a.tables:
        y = property_matrix(held, [path], exclude=set())[0][:, 0]
        known = np.isfinite(y)
        sets[f"held-out {os.path.basename(path)} ({int(known.sum())} formulas)"] = (list(held[known]), y[known])
    gap = load_dataset("band_gap")
    sets["band gap benchmark (record only)"] = (gap.formula.tolist(), gap.target.to_numpy(float))
    for model in a.models:
        featurizer = PolySRLFeaturizer(pretrained=model, device="cpu")
        for name, (rows, y) in sets.items():
            X = featurizer.transform(rows)[:, :-1].astype(np.float64)  # the means only
            maes = out_of_fold(X, y, lambda: MLPHeadRegressor(random_state=0))[1]
            print(f"{model} | {name} | {np.mean(maes):.4f} +/- {np.std(maes):.4f}", flush=True)


if __name__ == "__main__":
    main()
