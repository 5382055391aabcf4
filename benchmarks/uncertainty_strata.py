"""Is the uncertainty column a count of elements in disguise? The polymorph and doped figures of
benchmarks/uncertainty.py, within formulas of the same number of elements.

In the Materials Project, formulas with fewer elements have more known structures, so a column that only
fell with the number of elements would already rank polymorphic formulas above single ones. This script
scores the number of elements alone, and the column within each element count: polymorphic (2+ structures)
vs single-structure formulas of the corpus (training and held-out formulas apart), and fractional
(doped/alloyed) vs stoichiometric formulas of the Band Gap set.

    python benchmarks/uncertainty_strata.py --corpus ../shared/data/mp2025_structures.jsonl.gz --models default v4.pt
"""

import argparse
import os
import platform
import time

import numpy as np
from _report import command_line, write_report
from uncertainty import corpus_counts


def auc(labels, scores):
    from sklearn.metrics import roc_auc_score

    labels = np.asarray(labels, dtype=bool)
    return float(roc_auc_score(labels, scores)) if labels.any() and not labels.all() else float("nan")


def n_elements(formulas):
    from skpolysrl._elements import known_atomic_numbers
    from skpolysrl._formula import parse_formulas

    return np.array([len(s.key) for s in parse_formulas(list(formulas), known_atomic_numbers())])


def main():
    import torch
    from scipy.stats import spearmanr

    from skpolysrl import PolySRLFeaturizer
    from skpolysrl.analysis import is_fractional_formula
    from skpolysrl.datasets import load_dataset
    from skpolysrl.model_selection import held_out_formulas

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--corpus", required=True, help="JSON-lines structures (formula field)")
    p.add_argument("--models", nargs="+", default=["default"])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "uncertainty_strata.md"))
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    t0 = time.perf_counter()
    counts = corpus_counts(a.corpus)
    formulas, n = counts.index.to_numpy(), counts.to_numpy()
    polymorphic, held, k = n >= 2, held_out_formulas(formulas, 0.1), n_elements(formulas)
    gap = load_dataset("band_gap").formula.tolist()
    doped, k_gap = is_fractional_formula(gap), n_elements(gap)
    strata = [1, 2, 3, 4, 5, 6]
    rows, payload = [], {"command": command_line(), "models": {}}
    for model in a.models:
        featurizer = PolySRLFeaturizer(pretrained=model, device="cpu")
        u, u_gap = featurizer.transform(list(formulas))[:, -1], featurizer.transform(gap)[:, -1]
        record = {}
        for part, mask in (("training formulas", ~held), ("held-out formulas", held)):
            cells = {"all": (auc(polymorphic[mask], u[mask]), float(spearmanr(u[mask], n[mask])[0]), int(mask.sum()))}
            for s in strata:
                m = mask & (k == s)
                cells[s] = (auc(polymorphic[m], u[m]), float(spearmanr(u[m], n[m])[0]) if m.sum() > 2 else float("nan"),
                            int(m.sum()))
            record[part] = cells
        gap_cells = {"all": (auc(doped, u_gap), float("nan"), int(len(gap)))}
        for s in strata:
            m = k_gap == s
            gap_cells[s] = (auc(doped[m], u_gap[m]), float("nan"), int(doped[m].sum()))
        record["band gap set, doped vs stoichiometric"] = gap_cells
        payload["models"][model] = {part: {str(s): c for s, c in cells.items()} for part, cells in record.items()}
        for part, cells in record.items():
            fmt = [f"{cells['all'][0]:.3f}"] + [f"{cells[s][0]:.3f} ({cells[s][2]})" if np.isfinite(cells[s][0])
                                                 else f"- ({cells[s][2]})" for s in strata]
            rows.append(f"| {model} | {part} | " + " | ".join(fmt) + " |")
    baseline = [("training formulas", auc(polymorphic[~held], -k[~held])), ("held-out formulas", auc(polymorphic[held], -k[held])),
                ("band gap set, doped vs stoichiometric", auc(doped, -k_gap))]
    for part, value in baseline:
        rows.append(f"| fewer elements = more uncertain (no model) | {part} | {value:.3f} |" + " |" * len(strata))
    payload["element_count_alone"] = dict(baseline)
    lines = ["# The uncertainty within formulas of the same number of elements", "",
             f"Command: `{command_line()}`  ",
             f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores, Python {platform.python_version()}, "
             f"{a.threads} thread(s); {time.perf_counter() - t0:.0f} s.", "",
             "ROC AUC of the uncertainty column: polymorphic (2+ structures in the corpus) vs single-structure "
             "formulas, and fractional (doped/alloyed) vs stoichiometric formulas of the Band Gap set; overall "
             "and within each number of elements (in brackets: formulas in the stratum; for the Band Gap set, "
             "its fractional formulas).", "",
             "| model | formulas | all | " + " | ".join(f"{s} element{'s' if s > 1 else ''}" for s in strata) + " |",
             "|---|---|---|" + "---|" * len(strata), *rows]
    write_report(a.out, lines, payload)


if __name__ == "__main__":
    main()
