"""Throughput of the core, measured in one run on this machine.

1. Structure graphs/s: skpolysrl (pymatgen's vectorised get_neighbor_list, nearest-12
   selection in numpy) vs the reference CGCNN approach (get_all_neighbors, then a
   Python sort of each atom's list and keep 12), on the first 500 bundled structures.
2. Pretraining seconds per epoch on all 6,317 bundled structures (paper settings:
   hidden 200, batch 256, J = 8), CPU.

    python benchmarks/throughput.py [--epochs 1]

Writes benchmarks/results/throughput.md.
"""

import argparse
import os
import platform
import time
import warnings

import numpy as np

warnings.filterwarnings("ignore", category=UserWarning)
HERE = os.path.dirname(os.path.abspath(__file__))


def reference_graph(structure, cutoff=8.0, k=12):
    """CGCNN-style: per-atom neighbour lists sorted in Python, 12 nearest kept."""
    src, dst, dist = [], [], []
    for center, neighbors in enumerate(structure.get_all_neighbors(cutoff)):
        for nb in sorted(neighbors, key=lambda n: n.nn_distance)[:k]:
            src.append(nb.index)
            dst.append(center)
            dist.append(nb.nn_distance)
    return np.array([src, dst]), np.array(dist, dtype=np.float32)


def main():
    import torch

    from skpolysrl import PolySRLFeaturizer
    from skpolysrl.datasets import load_mp_structures
    from skpolysrl.graphs import build_structure_graphs

    p = argparse.ArgumentParser()
    p.add_argument("--n-graphs", type=int, default=500)
    p.add_argument("--epochs", type=int, default=1)
    a = p.parse_args()

    load0 = os.getloadavg()[0]
    data = load_mp_structures()
    sample = list(data.structure[: a.n_graphs])
    t = time.perf_counter()
    graphs = build_structure_graphs(sample)
    ours = time.perf_counter() - t
    t = time.perf_counter()
    ref = [reference_graph(s) for s in sample]
    theirs = time.perf_counter() - t
    assert sum(r[1].size for r in ref) == graphs.distances.size  # same edges kept

    t = time.perf_counter()
    build_structure_graphs(list(data.structure))
    all_graphs = time.perf_counter() - t

    f = PolySRLFeaturizer(pretrained=None, epochs=a.epochs, random_state=0, verbose=False, device="cpu")
    f.fit(data)
    per_epoch = [r["seconds"] for r in f.history_]

    lines = [
        "# Throughput (CPU)",
        "",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, load average before/after "
        f"{load0:.1f}/{os.getloadavg()[0]:.1f}. Command: `python benchmarks/throughput.py --epochs {a.epochs}`.",
        "",
        "| what | skpolysrl | reference | ratio |",
        "|---|---|---|---|",
        f"| structure graphs/s, first {a.n_graphs} bundled structures | {a.n_graphs / ours:.0f} | "
        f"{a.n_graphs / theirs:.0f} (get_all_neighbors + sort + keep 12) | {theirs / ours:.1f}x |",
        f"| graphs for all {len(data)} bundled structures | {all_graphs:.1f} s | | |",
        f"| pretraining s/epoch, {len(data)} structures, batch 256, J=8 | "
        f"{np.mean(per_epoch):.1f} s ({len(data) / np.mean(per_epoch):.0f} structures/s) | "
        f"~115 s (METHOD.md prototype, same machine type) | {115 / np.mean(per_epoch):.1f}x |",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    with open(os.path.join(HERE, "results", "throughput.md"), "w") as fh:
        fh.write(text)


if __name__ == "__main__":
    main()
