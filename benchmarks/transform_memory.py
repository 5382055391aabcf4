"""Peak memory and wall time of transforming 1,000,000 formulas (streamed in chunks).

    python benchmarks/transform_memory.py --n 1000000

The formulas cycle through the band gap set and the bundled corpus (about 8,000
distinct formulas). Writes benchmarks/results/transform_memory.md.
"""

import argparse
import os
import resource
import time
import warnings

warnings.filterwarnings("ignore", category=UserWarning)
HERE = os.path.dirname(os.path.abspath(__file__))


def main():
    from skpolysrl import PolySRLFeaturizer
    from skpolysrl.datasets import load_expt_gap_nonmetals, load_mp_structures

    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=1_000_000)
    a = p.parse_args()
    pool = list(dict.fromkeys(load_expt_gap_nonmetals().formula.tolist()
                              + load_mp_structures(structures=False).formula.tolist()))
    formulas = (pool * (a.n // len(pool) + 1))[: a.n]
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t = time.perf_counter()
    X = PolySRLFeaturizer(verbose=False).transform(formulas)
    seconds = time.perf_counter() - t
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    text = (f"# Transform memory\n\nCommand: `python benchmarks/transform_memory.py --n {a.n}`, shipped model, "
            f"{os.cpu_count()}-core CPU.\n\n| formulas | distinct | output | wall time | formulas/s | peak RSS "
            f"(process) | peak RSS before transform |\n|---|---|---|---|---|---|---|\n| {a.n:,} | {len(pool):,} | "
            f"{X.shape} {X.dtype}, {X.nbytes / 1e6:.0f} MB | {seconds:.1f} s | {a.n / seconds:,.0f} | {peak:,.0f} MB | "
            f"{before:,.0f} MB |\n")
    print(text)
    with open(os.path.join(HERE, "results", "transform_memory.md"), "w") as fh:
        fh.write(text)


if __name__ == "__main__":
    main()
