"""Does ``fit`` with its defaults give a useful model? One run:

    PolySRLFeaturizer(pretrained=None, random_state=0).fit(load_mp_structures())

(the default staged recipe on the bundled 6,317-structure corpus), then the paper's band gap
probe (5-fold, seed 0, MLP head) for that model, for the untrained encoder it started from and
for matminer's Magpie features with the same head and with a random forest (300 trees), plus the
collapse monitors and the uncertainty of polymorphic vs single-structure formulas.

    MKL_NUM_THREADS=1 OMP_NUM_THREADS=1 python benchmarks/default_fit.py
"""

import argparse
import json
import os
import platform
import time
import warnings

import numpy as np
from _report import command_line, magpie_features, strict_json
from uncertainty import out_of_fold

HERE = os.path.dirname(os.path.abspath(__file__))


def main():
    import torch
    from scipy.stats import spearmanr
    from sklearn.ensemble import RandomForestRegressor
    from sklearn.impute import SimpleImputer
    from sklearn.metrics import roc_auc_score
    from sklearn.pipeline import make_pipeline

    from skpolysrl import PolySRLFeaturizer
    from skpolysrl.datasets import load_dataset, load_mp_structures
    from skpolysrl.evaluation import MLPHeadRegressor

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--limit", type=int, default=None, help="only the first LIMIT bundled structures")
    p.add_argument("--out", default=os.path.join(HERE, "results", "default_fit.md"))
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    t0 = time.perf_counter()
    data = load_mp_structures(limit=a.limit)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", RuntimeWarning)
        f = PolySRLFeaturizer(pretrained=None, random_state=0, device="cpu", verbose=False).fit(data)
    fit_seconds = time.perf_counter() - t0
    untrained = PolySRLFeaturizer(pretrained=None, random_state=0, device="cpu", verbose=False).fit(["NaCl"])
    gap = load_dataset("band_gap")
    y = gap.target.to_numpy(float)
    magpie = magpie_features(gap.formula.tolist())
    head = lambda: make_pipeline(SimpleImputer(), MLPHeadRegressor(random_state=0))  # noqa: E731
    runs = (("default fit", f.transform(gap.formula.tolist()), head),
            ("untrained (same initial weights)", untrained.transform(gap.formula.tolist()), head),
            ("Magpie + same head", magpie, head),
            ("Magpie + RandomForest(300)", magpie,
             lambda: make_pipeline(SimpleImputer(), RandomForestRegressor(300, n_jobs=1, random_state=0))))
    results = {}
    for label, X, make in runs:
        maes = out_of_fold(np.asarray(X, dtype=np.float64), y, make)[1]
        results[label] = (float(np.mean(maes)), float(np.std(maes)))
    counts = data.formula.value_counts()
    u = f.transform(counts.index.tolist())[:, -1]
    auc = roc_auc_score(counts.to_numpy() > 1, u)
    rho = spearmanr(u, counts.to_numpy())[0]
    align = [r for r in f.history_ if r["stage"] == "align"]
    last = align[-1] if align else {}
    kept = [r["epoch"] for r in align if r.get("kept")]
    lines = [
        "# fit() with its defaults on the bundled corpus" + ("" if a.limit is None else f" (first {a.limit} structures)"),
        "",
        f"Command: `{command_line()}`  ",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores, {a.threads} torch thread(s); fit took "
        f"{fit_seconds / 60:.1f} min for {len(data)} structures ({data.formula.nunique()} formulas).",
        "",
        "| features | band gap probe MAE (5-fold) |",
        "|---|---|",
        *[f"| {k} | {m:.4f} +/- {s:.4f} |" for k, (m, s) in results.items()],
        "",
        f"Alignment monitors (last joint epoch): effective rank {last.get('effective_rank', float('nan')):.1f}, mean "
        f"cosine {last.get('mean_cosine', float('nan')):.3f}, retrieval {last.get('retrieval', float('nan')):.3f} "
        f"(chance 1/256 = 0.004); kept epoch {kept}. Collapse warnings: "
        f"{[str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)] or 'none'}.",
        "",
        f"Uncertainty on the training formulas: 2+ structures vs 1, ROC AUC {auc:.3f}; Spearman rho with the "
        f"number of structures {rho:.3f}.",
    ]
    with open(a.out, "w") as fh:
        fh.write("\n".join(lines) + "\n")
    with open(os.path.splitext(a.out)[0] + ".json", "w") as fh:  # strict JSON: NaN statistics become null
        json.dump(strict_json({"results": results, "auc": float(auc), "rho": float(rho), "fit_seconds": fit_seconds,
                          "history": f.history_}), fh, indent=1, allow_nan=False)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
