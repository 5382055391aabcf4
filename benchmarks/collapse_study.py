"""Pretraining dynamics on the bundled corpus: does a recipe keep (or improve) the representation?

Trains PolySRLFeaturizer on the 6,317 bundled structures with the given options,
monitoring a held-out probe on DFT (MP) band gaps after every epoch, then scores a
quick probe on the experimental band gap set against the untrained encoder.

    python benchmarks/collapse_study.py --epochs 8 --lr 5e-5 --warmup-epochs 3 --tag warmup3
"""

import argparse
import json
import os
import sys
import time
import warnings

import numpy as np
import pandas as pd

warnings.filterwarnings("ignore", category=UserWarning)
HERE = os.path.dirname(os.path.abspath(__file__))
SHARED = os.path.join(HERE, "..", "..", "shared", "data")


def quick_band_gap_mae(featurizer, band_gap):
    """The paper's probe (5-fold, seed 0) on the band gap set, with 100 head epochs instead of 300."""
    from skpolysrl.evaluation import MLPHeadRegressor, cross_validate_probe

    X = featurizer.transform(band_gap.formula.tolist())
    return cross_validate_probe(X, band_gap.target.to_numpy(), estimator=MLPHeadRegressor(epochs=100, random_state=0))["mae_mean"]


def main():
    from skpolysrl import PolySRLFeaturizer
    from skpolysrl.datasets import load_expt_gap_nonmetals, load_mp_structures

    p = argparse.ArgumentParser()
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--lr", type=float, default=5e-5)
    p.add_argument("--warmup-epochs", type=int, default=0)
    p.add_argument("--pair-reduction", default="sum")
    p.add_argument("--c-init", type=float, default=20.0)
    p.add_argument("--d-init", type=float, default=20.0)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--log-sigma-init", type=float, default=None)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--threshold-lr", type=float, default=None)
    p.add_argument("--objective", default="polysrl")
    p.add_argument("--alignment-weight", type=float, default=0.0)
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--tag", default="run")
    p.add_argument("--out", default=os.path.join(HERE, "results", "collapse_study.jsonl"))
    a = p.parse_args()
    if a.threads:
        import torch

        torch.set_num_threads(a.threads)

    band_gap = load_expt_gap_nonmetals()
    mp_gap = pd.read_csv(os.path.join(SHARED, "matbench", "mp_gap.csv")).groupby("formula", as_index=False).target.mean()
    mp_gap = mp_gap.sample(2000, random_state=0)
    data = load_mp_structures(limit=a.limit)

    untrained = PolySRLFeaturizer(pretrained=None, random_state=0, verbose=False).fit(band_gap.formula)
    base = quick_band_gap_mae(untrained, band_gap)
    t0 = time.perf_counter()
    f = PolySRLFeaturizer(pretrained=None, epochs=a.epochs, lr=a.lr, warmup_epochs=a.warmup_epochs,
                          pair_reduction=a.pair_reduction, c_init=a.c_init, log_sigma_init=a.log_sigma_init, threshold_lr=a.threshold_lr, objective=a.objective, alignment_weight=a.alignment_weight, d_init=a.d_init,
                          batch_size=a.batch_size, random_state=0, verbose=True, graph_cache="/tmp/mp_graphs_%s.npz" % (a.limit or "all"))
    f.fit(data, monitor=(mp_gap.formula.tolist(), mp_gap.target.to_numpy()))
    for r in f.history_:
        print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in r.items()}), flush=True)
    result = {"tag": a.tag, **vars(a), "seconds": time.perf_counter() - t0, "band_gap_quick_mae": quick_band_gap_mae(f, band_gap),
              "band_gap_quick_mae_untrained": base, "history": f.history_}
    print(a.tag, "band gap quick MAE", result["band_gap_quick_mae"], "untrained", base, file=sys.stderr)
    with open(a.out, "a") as fh:
        fh.write(json.dumps(result) + "\n")
    f.save(os.path.join("/tmp", f"collapse_{a.tag}.pt"))


if __name__ == "__main__":
    main()
