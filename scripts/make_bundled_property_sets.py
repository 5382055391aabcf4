"""Regenerate the bundled MP property subsets used by objective="supervised".

For every formula of the bundled 6,317-structure corpus, the matbench MP band gap
and formation energy (one row per MP structure in ../shared/data/matbench) are
averaged per reduced formula. The full files stay outside the package; pass them
to skpolysrl.datasets.load_mp_property(path=...) to train on all of MP.

    python scripts/make_bundled_property_sets.py [--data ../shared/data/matbench]
"""

import argparse
import shutil
from pathlib import Path

import pandas as pd
from pymatgen.core import Composition

from skpolysrl.datasets import load_mp_structures

OUT = Path(__file__).resolve().parents[1] / "skpolysrl" / "datasets" / "data"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "matbench"))
    args = parser.parse_args()
    corpus = {Composition(f).reduced_formula for f in load_mp_structures(structures=False)["formula"]}
    for name in ("mp_gap", "mp_e_form"):
        table = pd.read_csv(Path(args.data) / f"{name}.csv")
        table["formula"] = [Composition(f).reduced_formula for f in table["formula"]]
        table = table[table["formula"].isin(corpus)]
        means = table.groupby("formula", sort=True)["target"].mean().reset_index()
        means.to_csv(OUT / f"{name}_corpus.csv", index=False, float_format="%.6g")
        print(f"{name}: {len(table)} structures -> {len(means)} formulas")
    for name in ("expt_gap", "expt_is_metal", "glass", "steels_yield"):
        shutil.copy(Path(args.data) / f"{name}.csv", OUT / f"matbench_{name}.csv")
    shutil.copy(Path(args.data) / "LICENSE-crabnet.md", OUT / "LICENSE-crabnet.md")


if __name__ == "__main__":
    main()
