"""CompositionRegressor / CompositionClassifier on tables none of its candidates was chosen on, next to
what a user would otherwise pick (matbench's RF/Magpie) and the package's probe, in one run.

The tables: the formulas every pretraining stage of the shipped model held out
(:func:`skpolysrl.model_selection.held_out_formulas`, so PolySRL never saw them) with their DFT values in
matbench's tables (bulk and shear moduli, refractive index; band gap, formation energy and metallicity
subsampled to ``--max-rows``), and the experimental band gaps of the Band Gap set. 5-fold
``KFold(shuffle=True, random_state=0)`` (stratified for classification); each estimator sees the same
folds. Every finished (table, estimator) is appended to ``--out``'s ``.jsonl`` at once, so a stopped run
resumes where it stopped.

    python benchmarks/composition_models.py --structures ../shared/data/mp2025_structures.jsonl.gz \\
        --tables ../shared/data/matbench/{dielectric,log_gvrh,log_kvrh,mp_gap,mp_e_form,mp_is_metal}.csv \\
        --out benchmarks/results/composition_models.md
"""

import argparse
import json
import os
import platform
import time

import numpy as np
from _report import command_line, write_report
from heldout_dft import held_out_stoichiometries
from train_default_model import property_matrix

ESTIMATORS = ("rf-magpie", "probe", "composition")
CLASSIFICATION_TABLES = ("mp_is_metal",)


def tables(structures, paths, max_rows):
    """name -> (formulas, targets, task type): held-out formulas of each DFT table, and the Band Gap set."""
    from skpolysrl.datasets import load_dataset

    held = held_out_stoichiometries(structures)
    out = {}
    for path in paths:
        name = os.path.splitext(os.path.basename(path))[0]
        y = property_matrix(held, [path], exclude=set())[0][:, 0]
        rows = np.flatnonzero(np.isfinite(y))
        if len(rows) > max_rows:
            rows = np.sort(np.random.default_rng(0).choice(rows, max_rows, replace=False))
        kind = "classification" if name in CLASSIFICATION_TABLES else "regression"
        out[f"{name} (held out)"] = (list(held[rows]), y[rows].astype(int) if kind == "classification" else y[rows],
                                     kind)
    gap = load_dataset("band_gap")
    out["band_gap (experimental)"] = (gap.formula.tolist(), gap.target.to_numpy(float), "regression")
    return out


def run_one(name, formulas, y, kind, estimator, threads):
    from sklearn.base import clone
    from sklearn.metrics import balanced_accuracy_score, mean_absolute_error, roc_auc_score
    from sklearn.model_selection import KFold, StratifiedKFold

    from skpolysrl.matbench import ESTIMATORS as FACTORIES

    splitter = (StratifiedKFold if kind == "classification" else KFold)(5, shuffle=True, random_state=0)
    template = FACTORIES[estimator](kind, task=name, model="default", device="cpu", random_state=0)
    formulas = np.asarray(formulas, dtype=object)
    folds, chosen = [], []
    t0 = time.perf_counter()
    for train, test in splitter.split(formulas, y):
        model = clone(template).fit(list(formulas[train]), y[train])
        if kind == "classification":
            p = model.predict_proba(list(formulas[test]))[:, 1]
            folds.append({"roc_auc": roc_auc_score(y[test], p),
                          "balanced_accuracy": balanced_accuracy_score(y[test], model.predict(list(formulas[test])))})
        else:
            folds.append({"mae": mean_absolute_error(y[test], model.predict(list(formulas[test])))})
        inner = model if hasattr(model, "best_candidate_") else getattr(model, "estimator_", None)
        if hasattr(inner, "best_candidate_"):  # PriorCorrectedClassifier wraps CompositionClassifier
            chosen.append(inner.best_candidate_)
    scores = {k: [f[k] for f in folds] for k in folds[0]}
    return {"table": name, "estimator": estimator, "task_type": kind, "n": len(y), "folds": scores,
            "mean": {k: float(np.mean(v)) for k, v in scores.items()},
            "std": {k: float(np.std(v)) for k, v in scores.items()}, "chosen": chosen,
            "seconds": time.perf_counter() - t0, "threads": threads}


def main():
    import torch

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--structures", required=True, help="the pretraining corpus (to find the held-out formulas)")
    p.add_argument("--tables", nargs="+", required=True, help="matbench DFT tables (formula, target)")
    p.add_argument("--max-rows", type=int, default=2000, help="subsample bigger tables to this many formulas")
    p.add_argument("--estimators", nargs="+", default=list(ESTIMATORS))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "composition_models.md"))
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    log = os.path.splitext(a.out)[0] + ".jsonl"
    os.makedirs(os.path.dirname(os.path.abspath(log)), exist_ok=True)
    done = {}
    if os.path.exists(log):
        for line in open(log):
            r = json.loads(line)
            done[(r["table"], r["estimator"])] = r
    for name, (formulas, y, kind) in tables(a.structures, a.tables, a.max_rows).items():
        for estimator in a.estimators:
            if (name, estimator) in done:
                continue
            r = run_one(name, formulas, y, kind, estimator, a.threads)
            done[(name, estimator)] = r
            with open(log, "a") as fh:
                fh.write(json.dumps(r) + "\n")
            print(f"{name} | {estimator} | {r['mean']} | {r['seconds']:.0f} s | {r['chosen']}", flush=True)
    lines = ["# CompositionRegressor / CompositionClassifier on tables its candidates were not chosen on", "",
             f"Command: `{command_line()}`  ",
             f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores, Python {platform.python_version()}, "
             f"{a.threads} threads.", "",
             "| table | formulas | metric | RF/Magpie (matbench baseline) | probe (PolySRL + MLP head) | "
             "CompositionRegressor / Classifier | chosen in the 5 training folds | seconds (RF / probe / ours) |",
             "|---|---|---|---|---|---|---|---|"]
    for name in dict.fromkeys(t for t, _ in done):
        rows = {e: done.get((name, e)) for e in ESTIMATORS}
        first = next(r for r in rows.values() if r)
        metric = "roc_auc" if first["task_type"] == "classification" else "mae"
        cell = [f"{r['mean'][metric]:.4f} +/- {r['std'][metric]:.4f}" if r else "" for r in rows.values()]
        chosen = rows["composition"]["chosen"] if rows["composition"] else []
        counts = ", ".join(f"{c} x{chosen.count(c)}" for c in dict.fromkeys(chosen))
        seconds = " / ".join(f"{r['seconds']:.0f}" if r else "-" for r in rows.values())
        lines.append(f"| {name} | {first['n']} | {metric.upper()} | {' | '.join(cell)} | {counts} | {seconds} |")
    write_report(a.out, lines, {"command": command_line(), "results": list(done.values())})


if __name__ == "__main__":
    main()
