"""Does averaging several probe heads pay? PolySRLRegressor(n_estimators=k), paper protocol (5-fold, seed 0).

    OMP_NUM_THREADS=1 python benchmarks/ensemble_size.py --dataset band_gap --n-estimators 1 5
"""

import argparse
import json
import os
import platform
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def main():
    from skpolysrl import PolySRLRegressor
    from skpolysrl.datasets import load_dataset
    from skpolysrl.model_selection import cross_validate, paper_kfold

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default="band_gap")
    p.add_argument("--n-estimators", type=int, nargs="+", default=[1, 5])
    p.add_argument("--out", default=None)
    a = p.parse_args()
    df = load_dataset(a.dataset)
    rows = []
    for k in a.n_estimators:
        t0 = time.perf_counter()
        r = cross_validate(PolySRLRegressor(n_estimators=k, random_state=0, device="cpu"), list(df.formula),
                           df.target.to_numpy(float), cv=paper_kfold())
        rows.append({"n_estimators": k, "mae_mean": r["mae_mean"], "mae_std": r["mae_std"],
                     "folds": [f["mae"] for f in r["folds"]], "seconds": time.perf_counter() - t0})
        print(rows[-1], flush=True)
    out = a.out or os.path.join(HERE, "results", f"ensemble_size_{a.dataset}.json")
    with open(out, "w") as fh:
        json.dump({"command": "python " + " ".join(sys.argv), "machine": f"{platform.machine()}, {os.cpu_count()} cores",
                   "rows": rows}, fh, indent=1)


if __name__ == "__main__":
    main()
