"""Uncertainty of every single-element formula (Z = 1..103), where the variance path extrapolates most,
and each model's bound on log sigma (``ModelConfig.log_sigma_max``, None for models fitted before it).

    python benchmarks/element_uncertainty.py --models default v6-20.pt v6-40.pt
"""

import argparse
import math
import os

import numpy as np
from _report import command_line, write_report

HERE = os.path.dirname(os.path.abspath(__file__))


def main():
    from pymatgen.core import Element

    from skpolysrl import PolySRLFeaturizer
    from skpolysrl._elements import known_atomic_numbers

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", required=True, help="model files or 'default'")
    p.add_argument("--labels", nargs="*", default=None)
    p.add_argument("--top", type=int, default=8)
    p.add_argument("--out", default=os.path.join(HERE, "results", "element_uncertainty.md"))
    a = p.parse_args()
    labels = a.labels or a.models
    symbols = [Element.from_Z(z).symbol for z in sorted(known_atomic_numbers())]
    lines = ["# Uncertainty of the pure elements", "", f"Command: `{command_line()}`", "",
             f"| model | bound exp(2 log_sigma_max) | elements at the bound | median | largest {a.top} |",
             "|---|---|---|---|---|"]
    rows = []
    for model, label in zip(a.models, labels):
        f = PolySRLFeaturizer(pretrained=model, verbose=False)
        u = f.transform(symbols)[:, -1]
        bound = f.model_.config.log_sigma_max
        ceiling = None if bound is None else math.exp(2 * bound)
        at = "" if ceiling is None else str(int(np.sum(u >= 0.999 * ceiling)))
        top = ", ".join(f"{symbols[i]} {u[i]:.3g}" for i in np.argsort(-u)[:a.top])
        rows.append({"model": label, "ceiling": ceiling, "median": float(np.median(u)),
                     "uncertainty": dict(zip(symbols, u.astype(float).tolist()))})
        lines.append(f"| {label} | {'none' if ceiling is None else f'{ceiling:.3g}'} | {at} | "
                     f"{np.median(u):.3g} | {top} |")
    lines += ["", f"{len(symbols)} elements; uncertainty = the last feature column.", ""]
    write_report(a.out, lines, {"command": command_line(), "models": rows})


if __name__ == "__main__":
    main()
