"""The recipe of the shipped model (skpolysrl/weights/polysrl_default.pt, v8): the library's default
``fit`` on the Materials Project corpus with DFT properties, from random weights. One command, from the
repository root:

    python benchmarks/train_default_model.py --threads 2 --structures ../shared/data/mp2025_structures.jsonl.gz \\
        --properties ../shared/data/matbench/{mp_gap,mp_e_form,log_gvrh,log_kvrh,phonons,dielectric,mp_is_metal,jdft2d,perovskites}.csv \\
        --init none --structure-targets --supervised-epochs 40 --realign-fresh --out skpolysrl/weights/polysrl_default.pt

Three settings differ from the library's defaults: ``--structure-targets`` with no names (the supervised
stage learns the given properties only; the library default also learns each structure's volume per atom
and density, which helps fits without properties) and ``--supervised-epochs 40`` (20), both chosen on
held-out DFT data (benchmarks/results/default_model_v7.md, default_model_v8.md), and ``--realign-fresh``
(the variance stage measures spreads with a structure encoder learned against the final means only).

Data sources (all public, offline here; see ../shared/data/README.md):
- ``--structures``: JSON-lines crystal structures (the Materials Project database 2025.02.12,
  156,332 structures; online: ``skpolysrl.datasets.load_materials_project`` or matminer's
  ``load_dataset("matbench_mp_e_form")``).
- ``--properties``: per-formula DFT tables with columns ``formula``, ``target`` (matbench v0.1:
  ``mp_gap``, ``mp_e_form``, ``log_gvrh``, ``log_kvrh``, ``phonons``, ``dielectric``,
  ``mp_is_metal``, ``jdft2d``, ``perovskites``; online through matminer's ``load_dataset``). Values are
  averaged per stoichiometry and joined to the structures by formula; the stoichiometries of the
  evaluation sets (the Band Gap set and matbench expt_gap, bundled) are removed.
- ``--init``: starting weights (the previous shipped model, sha256 3b7160b6e381, is
  ``git show 6915334:skpolysrl/weights/polysrl_default.pt``; the models shipped before v8 started from it);
  ``none`` trains from random weights (adds the align stage; the command above took ~62 min on 2 cores in
  session 11, run as stages, and its session-7 twin with structure targets 40.9 min on 2 idle cores,
  benchmarks/results/default_model_v6.md).

A run may be split into stages (``--stages align``, then ``--stages supervised --init <previous --full-out>``,
...): every random draw is the same whichever stages run, so the stages give the model of one command
(tests/test_recipes.py).

Held out of every stage: the formulas :func:`skpolysrl.model_selection.held_out_formulas` picks (10 %),
so that benchmarks/uncertainty.py can report held-out figures.
"""

import argparse
import json
import os
import time

import numpy as np
import pandas as pd
from _report import command_line, strict_json


def property_matrix(formulas, paths, exclude):
    """(n, k) DFT properties of ``formulas`` (NaN where unknown) from per-formula tables."""
    from skpolysrl._formula import parse_formulas  # noqa: the tables' formulas are matched by stoichiometry
    from skpolysrl._elements import known_atomic_numbers

    known = known_atomic_numbers()
    keys = [s.key for s in parse_formulas(list(formulas), known)]
    columns, counts = [], {}
    for path in paths:
        table = pd.read_csv(path, keep_default_na=False, na_values=[""])
        parsed = parse_formulas(table.formula.astype(str).tolist(), known, ignore_errors=True)
        table["key"] = [None if s is None else s.key for s in parsed]
        table = table.dropna(subset=["key"])
        table = table[~table.key.isin(exclude)]
        means = table.groupby("key").target.mean()
        column = np.array([means.get(k, np.nan) for k in keys], dtype=np.float64)
        columns.append(column)
        counts[os.path.basename(path)] = int(np.isfinite(column).sum())
    return np.column_stack(columns), counts


def main():
    import torch

    from skpolysrl import PolySRLFeaturizer
    from skpolysrl._elements import known_atomic_numbers
    from skpolysrl._formula import parse_formulas
    from skpolysrl.datasets import load_dataset, read_structures_jsonl
    from skpolysrl.model_selection import held_out_formulas
    from skpolysrl.recipes import StagedRecipe

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--structures", required=True, help="JSON-lines corpus of crystal structures")
    p.add_argument("--properties", nargs="*", default=[], help="per-formula DFT tables (formula, target)")
    p.add_argument("--init", default="none", help="starting weights (.pt) or 'none'")
    p.add_argument("--max-sites", type=int, default=40,
                   help="structure training (align, realign) samples cells of at most this many sites (77 %% of "
                        "MP structures; the rest cost 59 %% of the structure encoder's time); every cell counts as a "
                        "polymorph and is embedded in the variance stage")
    p.add_argument("--holdout", type=float, default=0.1)
    p.add_argument("--max-structure-rows", type=int, default=20000)
    p.add_argument("--realign-passes", type=int, default=20000)
    p.add_argument("--n-alloys", type=int, default=5000)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--checkpoint", default=None)
    p.add_argument("--graph-cache", default=None, help=".npz file caching the structure graphs between runs")
    p.add_argument("--embedding-cache", default=None,
                   help=".npz file caching the variance stage's structure embeddings between runs")
    p.add_argument("--stages", nargs="*", default=None,
                   help="stages to run (default: all that apply; e.g. 'realign variance' from a trained model)")
    p.add_argument("--structure-targets", nargs="*", default=list(StagedRecipe.structure_targets),
                   help="structure descriptors the supervised stage also learns; none: the shipped model's means "
                        "(trained before these existed) used none, so pass the flag without names to reproduce them")
    p.add_argument("--supervised-epochs", type=int, default=StagedRecipe.supervised_epochs)
    p.add_argument("--realign-fresh", action="store_true",
                   help="realign a fresh structure encoder (StagedRecipe.realign_fresh)")
    p.add_argument("--variance-epochs", type=int, default=StagedRecipe.variance_epochs)
    p.add_argument("--floor-quantile", type=float, default=StagedRecipe.floor_quantile)
    p.add_argument("--full-out", default=None,
                   help="also write the model with its structure encoder here (to rerun single stages from it)")
    p.add_argument("--out", required=True)
    p.add_argument("--log", default=os.path.join(os.path.dirname(__file__), "results", "default_model_training.json"))
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    t0 = time.perf_counter()

    import gzip

    opener = gzip.open if a.structures.endswith(".gz") else open
    with opener(a.structures, "rt") as fh:
        all_formulas = sorted({json.loads(line)["formula"] for line in fh if line.strip()})
    held = set(np.asarray(all_formulas)[held_out_formulas(all_formulas, a.holdout)])
    data = read_structures_jsonl(a.structures, skip_formulas=held)
    print(f"{len(data)} structures of {data.formula.nunique()} formulas ({len(held)} of {len(all_formulas)} "
          f"formulas held out) in {time.perf_counter() - t0:.0f} s; structure training samples cells of <= "
          f"{a.max_sites} sites", flush=True)
    evaluation = load_dataset("band_gap").formula.tolist() + load_dataset("matbench_expt_gap").formula.tolist()
    exclude = {s.key for s in parse_formulas(evaluation, known_atomic_numbers(), ignore_errors=True) if s}
    y, coverage = (property_matrix(data.formula, a.properties, exclude) if a.properties else (None, {}))
    print(f"properties (structures with a value): {coverage}", flush=True)

    recipe = StagedRecipe(max_structure_rows=a.max_structure_rows, realign_passes=a.realign_passes,
                          n_alloys=a.n_alloys, stages=None if a.stages is None else tuple(a.stages),
                          supervised_epochs=a.supervised_epochs, realign_fresh=a.realign_fresh,
                          variance_epochs=a.variance_epochs, floor_quantile=a.floor_quantile,
                          max_sites=a.max_sites, structure_targets=tuple(a.structure_targets))
    f = PolySRLFeaturizer(pretrained=None if a.init == "none" else a.init, recipe=recipe, random_state=a.seed,
                          device=a.device, checkpoint=a.checkpoint, graph_cache=a.graph_cache,
                          embedding_cache=a.embedding_cache, verbose=True)
    f.fit(data, y)
    seconds = time.perf_counter() - t0
    command = command_line()
    f.save(a.out, include_structure_encoder=False, extra={"recipe": command})
    if a.full_out:
        f.save(a.full_out, extra={"recipe": command})
    with open(a.log, "w") as fh:  # strict JSON: statistics an epoch lacks (NaN) become null
        json.dump(strict_json({"command": command, "seconds": seconds, "threads": a.threads, "n_structures": len(data),
                           "n_formulas": int(data.formula.nunique()), "held_out_formulas": len(held),
                           "property_coverage": coverage, "recipe": recipe.to_dict(), "history": f.history_}),
                  fh, indent=1, allow_nan=False)
    print(f"wrote {a.out} in {seconds / 60:.1f} min", flush=True)


if __name__ == "__main__":
    main()
