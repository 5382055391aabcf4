"""Does the uncertainty column mean what the paper says, and are the means still good? One run, one table.

For each model (``--models``; ``untrained`` = random weights, seed 0):

1. Polymorphs (paper Fig. 3a): every distinct formula of the structure corpus, its number of
   structures there, and the model's uncertainty. ROC AUC of "2+ structures" vs "1 structure"
   on training formulas and on the formulas held out of pretraining
   (:func:`skpolysrl.model_selection.held_out_formulas`), Spearman rho with the number of
   structures, mean uncertainty per count bin.
2. Doped (paper Fig. 3b): fractional (doped/alloyed) vs stoichiometric formulas of the band gap
   set, ROC AUC.
3. Probe (paper protocol: 5-fold CV seed 0, frozen features + MLP head): band gap set MAE,
   matbench expt_gap MAE, and Spearman rho(uncertainty, |out-of-fold error|) on the band gap set.
   Magpie features with the same head and with a random forest (300 trees) in the same run.

    python benchmarks/uncertainty.py --corpus ../shared/data/mp2025_structures.jsonl.gz \\
        --models skpolysrl/weights/polysrl_default.pt old.pt untrained
"""

import argparse
import gzip
import json
import os
import platform
import time
import warnings

import numpy as np
import pandas as pd
from _report import command_line, magpie_features

warnings.filterwarnings("ignore", category=UserWarning)
HERE = os.path.dirname(os.path.abspath(__file__))


def corpus_counts(path):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt") as fh:
        formulas = [json.loads(line)["formula"] for line in fh if line.strip()]
    return pd.Series(formulas).value_counts()


def out_of_fold(X, y, make):
    """Out-of-fold predictions of the paper's 5-fold split, and per-fold MAEs."""
    from skpolysrl.model_selection import paper_kfold

    pred = np.empty(len(y))
    maes = []
    for train, test in paper_kfold().split(X):
        est = make().fit(X[train], y[train])
        pred[test] = est.predict(X[test])
        maes.append(float(np.mean(np.abs(pred[test] - y[test]))))
    return pred, maes


def load_model_features(name):
    from skpolysrl import PolySRLFeaturizer

    if name == "untrained":  # random weights exist after a fit on formulas (which trains nothing)
        return PolySRLFeaturizer(pretrained=None, random_state=0, verbose=False, device="cpu").fit(["NaCl"])
    return PolySRLFeaturizer(pretrained=name, verbose=False, device="cpu")


def main():
    from scipy.stats import spearmanr
    from sklearn.ensemble import RandomForestRegressor
    from sklearn.impute import SimpleImputer
    from sklearn.metrics import roc_auc_score
    from sklearn.pipeline import make_pipeline

    from skpolysrl.analysis import is_fractional_formula
    from skpolysrl.datasets import load_dataset
    from skpolysrl.evaluation import MLPHeadRegressor
    from skpolysrl.model_selection import held_out_formulas

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--corpus", required=True, help="JSON-lines structure corpus (formula field)")
    p.add_argument("--models", nargs="+", required=True, help="model files, 'default' or 'untrained'")
    p.add_argument("--labels", nargs="*", default=None)
    p.add_argument("--holdout", type=float, default=0.1)
    p.add_argument("--no-magpie", action="store_true")
    p.add_argument("--out", default=os.path.join(HERE, "results", "uncertainty.md"))
    a = p.parse_args()
    t0 = time.perf_counter()
    labels = a.labels or a.models

    counts = corpus_counts(a.corpus)
    formulas = counts.index.to_numpy()
    n = counts.to_numpy()
    held = held_out_formulas(formulas, a.holdout)
    gap = load_dataset("band_gap")
    gap_f, gap_y = gap.formula.tolist(), gap.target.to_numpy(float)
    fractional = is_fractional_formula(gap_f)
    expt = load_dataset("matbench_expt_gap")
    expt_f, expt_y = expt.formula.tolist(), expt.target.to_numpy(float)

    rows = []
    for label, name in zip(labels, a.models):
        f = load_model_features(name)
        u = f.transform(list(formulas))[:, -1].astype(np.float64)
        Xg = f.transform(gap_f).astype(np.float64)
        Xe = f.transform(expt_f).astype(np.float64)
        pred, maes = out_of_fold(Xg, gap_y, lambda: MLPHeadRegressor(random_state=0))
        _, maes_e = out_of_fold(Xe, expt_y, lambda: MLPHeadRegressor(random_state=0))
        bins = {"1": n == 1, "2-4": (n >= 2) & (n <= 4), "5-9": (n >= 5) & (n <= 9), "10+": n >= 10}
        rows.append({
            "model": label,
            "auc_train": roc_auc_score(n[~held] > 1, u[~held]),
            "auc_held_out": roc_auc_score(n[held] > 1, u[held]),
            "rho_count": spearmanr(u, n)[0],
            **{f"mean_{k}": float(u[m].mean()) for k, m in bins.items()},
            "auc_doped": roc_auc_score(fractional, Xg[:, -1]),
            "rho_abs_error": spearmanr(Xg[:, -1], np.abs(pred - gap_y))[0],
            "band_gap_mae": float(np.mean(maes)), "band_gap_std": float(np.std(maes)),
            "expt_gap_mae": float(np.mean(maes_e)), "expt_gap_std": float(np.std(maes_e)),
            # extremes the rank figures do not show (pure elements once reached 1e6 x the median)
            "u_p99_9": float(np.quantile(u, 0.999)),
            "u_largest": [[str(formulas[i]), float(u[i])] for i in np.argsort(-u)[:5]],
        })
        print(rows[-1], flush=True)
    if not a.no_magpie:
        Mg, Me = magpie_features(gap_f), magpie_features(expt_f)
        for label, make in (("Magpie + same head", lambda: make_pipeline(SimpleImputer(), MLPHeadRegressor(random_state=0))),
                            ("Magpie + RandomForest(300)", lambda: make_pipeline(
                                SimpleImputer(), RandomForestRegressor(300, n_jobs=1, random_state=0)))):
            _, maes = out_of_fold(Mg, gap_y, make)
            _, maes_e = out_of_fold(Me, expt_y, make)
            rows.append({"model": label, "band_gap_mae": float(np.mean(maes)), "band_gap_std": float(np.std(maes)),
                         "expt_gap_mae": float(np.mean(maes_e)), "expt_gap_std": float(np.std(maes_e))})
            print(rows[-1], flush=True)

    def fmt(v, digits=3):
        return "" if v is None or (isinstance(v, float) and np.isnan(v)) else f"{v:.{digits}f}"

    lines = [
        "# Uncertainty and probe, one run",
        "",
        f"Command: `{command_line()}`  ",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores, {platform.python_version()}; "
        f"{time.perf_counter() - t0:.0f} s.  ",
        f"Corpus: {len(formulas)} distinct formulas ({int((n > 1).sum())} with 2+ structures); "
        f"{int(held.sum())} held out of pretraining ({int((n[held] > 1).sum())} polymorphic). Band gap set: "
        f"{len(gap_f)} formulas, {int(fractional.sum())} fractional. matbench expt_gap: {len(expt_f)} formulas.",
        "",
        "| model | AUC 2+ vs 1 (train) | AUC (held out) | rho(u, n) | mean u: 1 / 2-4 / 5-9 / 10+ | AUC doped | "
        "rho(u, abs err) | band gap MAE | expt_gap MAE |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        means = " / ".join(f"{r[k]:.3g}" for k in ("mean_1", "mean_2-4", "mean_5-9", "mean_10+")) if "mean_1" in r else ""
        lines.append(f"| {r['model']} | {fmt(r.get('auc_train'))} | {fmt(r.get('auc_held_out'))} | "
                     f"{fmt(r.get('rho_count'))} | {means} | {fmt(r.get('auc_doped'))} | "
                     f"{fmt(r.get('rho_abs_error'))} | {r['band_gap_mae']:.4f} +/- {r['band_gap_std']:.4f} | "
                     f"{r['expt_gap_mae']:.4f} +/- {r['expt_gap_std']:.4f} |")
    lines += ["", "Largest uncertainties over the corpus formulas (99.9th percentile; the five largest):", ""]
    lines += [f"- {r['model']}: {r['u_p99_9']:.3g}; " + ", ".join(f"{f} {v:.3g}" for f, v in r["u_largest"])
              for r in rows if "u_largest" in r]
    with open(a.out, "w") as fh:
        fh.write("\n".join(lines) + "\n")
    with open(os.path.splitext(a.out)[0] + ".json", "w") as fh:
        json.dump(rows, fh, indent=1)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
