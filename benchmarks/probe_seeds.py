"""The band gap and matbench expt_gap probes of several models over several MLP-head seeds, paired.

The paper's protocol fits one probe head (seed 0) per fold, and the head's seed moves the MAE by about as much
as the models being compared differ (the shipped model: 0.367-0.380 eV on the band gap set over seeds 0-4).
This runs the same split (``paper_kfold``) with head seeds ``--seeds`` for every model and reports, for each
model after the first, the per-seed differences to the first model: the paired comparison a shipping decision
needs. One torch thread, so each figure repeats exactly.

    python benchmarks/probe_seeds.py --models default v7.pt --labels v4b v7
"""
import argparse
import json
import os
import sys
import time

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from _report import command_line  # noqa: E402
from uncertainty import load_model_features, out_of_fold  # noqa: E402

DATASETS = (("band_gap", "band gap"), ("matbench_expt_gap", "matbench expt_gap"))


def main():
    from skpolysrl.datasets import load_dataset
    from skpolysrl.evaluation import MLPHeadRegressor

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", required=True, help="model files, 'default' or 'untrained'")
    p.add_argument("--labels", nargs="*", default=None)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4], help="MLP head seeds")
    p.add_argument("--out", default=os.path.join(HERE, "results", "probe_seeds.md"))
    a = p.parse_args()
    labels = a.labels or a.models
    if len(labels) != len(a.models):
        p.error(f"--labels names {len(labels)} models but --models gives {len(a.models)}")
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    data = {name: load_dataset(name) for name, _ in DATASETS}
    mae = {}  # (label, dataset) -> MAE per seed (mean over the folds)
    for label, model in zip(labels, a.models):
        features = load_model_features(model)
        for name, _ in DATASETS:
            X = features.transform(data[name].formula.tolist()).astype(np.float64)
            y = data[name].target.to_numpy(float)
            mae[label, name] = [float(np.mean(out_of_fold(X, y, lambda: MLPHeadRegressor(random_state=s))[1]))
                                for s in a.seeds]
            print(label, name, [round(v, 4) for v in mae[label, name]], f"{time.perf_counter() - t0:.0f} s",
                  flush=True)

    seeds = ", ".join(map(str, a.seeds))
    lines = ["# Probe MAE over MLP-head seeds, paired", "", f"Command: `{command_line()}`  ",
             f"1 torch thread, {os.cpu_count()} CPU cores; {time.perf_counter() - t0:.0f} s. The paper's 5-fold split; "
             f"each cell is the mean over the folds for one head seed ({seeds}).", ""]
    for name, title in DATASETS:
        lines += [f"## {title} ({len(data[name])} formulas), MAE eV", "",
                  "| model | " + " | ".join(f"seed {s}" for s in a.seeds) + " | mean | std | paired diff to "
                  f"{labels[0]}: mean (min, max) |",
                  "|---|" + "---|" * (len(a.seeds) + 3)]
        first = np.array(mae[labels[0], name])
        for label in labels:
            v = np.array(mae[label, name])
            diff = "" if label == labels[0] else \
                f"{np.mean(v - first):+.4f} ({np.min(v - first):+.4f}, {np.max(v - first):+.4f})"
            lines.append(f"| {label} | " + " | ".join(f"{x:.4f}" for x in v)
                         + f" | {v.mean():.4f} | {v.std():.4f} | {diff} |")
        lines.append("")
    with open(a.out, "w") as fh:
        fh.write("\n".join(lines))
    with open(os.path.splitext(a.out)[0] + ".json", "w") as fh:
        json.dump({"command": command_line(), "seeds": a.seeds,
                   "mae": {f"{label}|{name}": v for (label, name), v in mae.items()}}, fh, indent=1)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
