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
    from sklearn.model_selection import KFold, cross_val_score
    from sklearn.neural_network import MLPRegressor
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X = featurizer.transform(band_gap.formula.tolist())
    head = make_pipeline(StandardScaler(), MLPRegressor(hidden_layer_sizes=(128, 128), max_iter=300, early_stopping=True, random_state=0))
    cv = KFold(5, shuffle=True, random_state=0)
    return float(-cross_val_score(head, X, band_gap.target, cv=cv, scoring="neg_mean_absolute_error").mean())


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
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--tag", default="run")
    p.add_argument("--out", default=os.path.join(HERE, "results", "collapse_study.jsonl"))
    a = p.parse_args()

    band_gap = load_expt_gap_nonmetals()
    mp_gap = pd.read_csv(os.path.join(SHARED, "matbench", "mp_gap.csv")).groupby("formula", as_index=False).target.mean()
    mp_gap = mp_gap.sample(2000, random_state=0)
    data = load_mp_structures(limit=a.limit)

    untrained = PolySRLFeaturizer(pretrained=None, random_state=0, verbose=False).fit(["H"])
    base = quick_band_gap_mae(untrained, band_gap)
    t0 = time.perf_counter()
    f = PolySRLFeaturizer(pretrained=None, epochs=a.epochs, lr=a.lr, warmup_epochs=a.warmup_epochs,
                          pair_reduction=a.pair_reduction, c_init=a.c_init, d_init=a.d_init,
                          batch_size=a.batch_size, random_state=0, verbose=False, graph_cache="/tmp/mp_graphs.npz")
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
