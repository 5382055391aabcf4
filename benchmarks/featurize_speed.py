"""Featurization speed: skpolysrl vs matminer's Magpie ElementProperty, measured in one run.

    python benchmarks/featurize_speed.py [--n 10000] [--repeats 3] [--seed 0]

Formulas: ``--n`` rows drawn without replacement (``numpy.random.default_rng(seed)``)
from the ``formula`` column of matbench ``mp_e_form.csv`` (not deduplicated: the draw
keeps whatever repeats the column has).

Every measurement runs in its own fresh Python process (so no cache is warm and peak
RSS belongs to that measurement); a repeat runs the four workers one after the other
and the ratios are taken within the repeat; the report gives the median over repeats.
Thread settings are left at their defaults (and recorded).

Workers (the same modules are imported, untimed, in every worker: numpy, pandas, torch,
skpolysrl, pymatgen Composition, matminer ElementProperty and StrToComposition):

* ``transform``: ``PolySRLFeaturizer(verbose=False)`` (no fit), then
  ``transform(formulas)``, which loads the shipped weights on first use. Then a second,
  "warm-process" pass: a new featurizer and the formula cache cleared, so only imports
  and the per-process weight cache are warm.
* ``magpie``: ``ElementProperty.from_preset("magpie")``, ``set_n_jobs(1)``,
  ``[Composition(f) for f in formulas]``, ``featurize_many(compositions,
  ignore_errors=True, pbar=False)``. Then the same again (warm process).
* ``df_ours``: ``PolySRLFeaturizer(verbose=False).featurize_dataframe(df, "formula",
  pbar=False)`` on a DataFrame of the formula strings (the featurizer loads its weights on
  first use: included). Then a warm-process pass. Untimed check: on a column of
  Compositions from ``StrToComposition``, ``featurize_dataframe`` gives the same numbers
  as ``transform`` on the strings.
* ``df_magpie``: ``StrToComposition()`` (n_jobs=1) ``.featurize_dataframe(df, "formula")``
  then ``ElementProperty.from_preset("magpie")`` (n_jobs=1)
  ``.featurize_dataframe(df, "composition", ignore_errors=True)``. Then a warm pass.

matminer's process pool (``MULTI_KINDS``, one fresh process each per repeat, matminer's
default ``n_jobs`` = cpu_count(), ``pbar=False``, on a column of Compositions made by
``StrToComposition`` before the clock starts):

* ``pool_magpie``: ``ElementProperty.from_preset("magpie").featurize_dataframe(df, "composition")``.
* ``pool_ours``: ``PolySRLFeaturizer().featurize_dataframe(df, "composition")`` (batched in
  the process: it does not use the pool).
* ``pool_multi``: ``MultipleFeaturizer([ElementProperty.from_preset("magpie"),
  PolySRLFeaturizer()]).featurize_dataframe(df, "composition")``: matminer calls each
  featurizer once per row in the pool workers.
* ``pool_multi_ours``: ``MultipleFeaturizer([PolySRLFeaturizer()])`` alone the same way.

Peak memory is ``resource.getrusage(RUSAGE_SELF).ru_maxrss`` of the worker process,
before the timed work (after imports and reading the formulas) and at its end.
Writes benchmarks/results/featurize_speed.md.
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import time
import warnings

import numpy as np

warnings.filterwarnings("ignore")
HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.environ.get("SKPOLYSRL_MATBENCH_DIR", "/work/shared/data/matbench")
KINDS = ("transform", "magpie", "df_ours", "df_magpie")
MULTI_KINDS = ("pool_magpie", "pool_ours", "pool_multi", "pool_multi_ours")


def sample_formulas(n, seed):
    import pandas as pd

    column = pd.read_csv(os.path.join(DATA, "mp_e_form.csv"))["formula"].to_numpy()
    rng = np.random.default_rng(seed)
    return column[rng.choice(len(column), n, replace=False)].tolist()


def maxrss_mb():
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def breakdown(f, formulas):
    """Time the steps of transform one by one (formula cache cleared)."""
    from skpolysrl._elements import known_atomic_numbers
    from skpolysrl._formula import StoichiometryTable, _parse_hashable, parse_formulas
    from skpolysrl.training import encode

    _parse_hashable.cache_clear()
    t0 = time.perf_counter()
    stoich = parse_formulas(formulas, known_atomic_numbers())
    t1 = time.perf_counter()
    unique = list({s.key: s for s in stoich}.values())
    t2 = time.perf_counter()
    table = StoichiometryTable(unique)
    t3 = time.perf_counter()
    encode(f.model_, table, batch_size=f.transform_batch_size, device=f.device_)
    t4 = time.perf_counter()
    return {"parse_s": t1 - t0, "dedupe_s": t2 - t1, "table_s": t3 - t2, "encode_s": t4 - t3, "n_distinct": len(unique)}


def worker(kind, n, seed):
    import pandas as pd
    import torch
    from matminer.featurizers.composition import ElementProperty
    from matminer.featurizers.conversions import StrToComposition
    from pymatgen.core import Composition

    from skpolysrl import PolySRLFeaturizer
    from skpolysrl._formula import _parse_hashable

    formulas = sample_formulas(n, seed)
    if kind in MULTI_KINDS:
        return pool_worker(kind, formulas)
    out = {"kind": kind, "rss_before_mb": maxrss_mb(), "torch_threads": torch.get_num_threads()}

    def timed(fn):
        t = time.perf_counter()
        result = fn()
        return time.perf_counter() - t, result

    for run in ("cold", "warm"):
        _parse_hashable.cache_clear()
        if kind == "transform":
            load, f = timed(lambda: PolySRLFeaturizer(verbose=False))  # no fit: weights load on first use
            work, X = timed(lambda: f.transform(formulas))
            out[run] = {"load_s": load, "work_s": work, "total_s": load + work}
            out["n_distinct_strings"] = len(set(formulas))
            out["n_nan_rows"] = int(np.isnan(X).any(axis=1).sum())
            out["shape"] = list(X.shape)
            if run == "warm":
                out["breakdown"] = breakdown(f, formulas)
                out["n_distinct_stoichiometries"] = out["breakdown"].pop("n_distinct")
        elif kind == "magpie":
            def setup():
                ep = ElementProperty.from_preset("magpie")
                ep.set_n_jobs(1)
                return ep
            load, ep = timed(setup)
            parse, comps = timed(lambda: [Composition(x) for x in formulas])
            work, feats = timed(lambda: ep.featurize_many(comps, ignore_errors=True, pbar=False))
            out[run] = {"load_s": load, "parse_s": parse, "work_s": work, "total_s": load + parse + work}
            out["n_nan_rows"] = int(np.isnan(np.asarray(feats, dtype=float)).any(axis=1).sum())
        elif kind == "df_ours":
            df = pd.DataFrame({"formula": formulas})
            total, res = timed(lambda: PolySRLFeaturizer(verbose=False).featurize_dataframe(df, "formula", pbar=False))
            out[run] = {"total_s": total}
            out["shape"] = list(res.shape)
        elif kind == "df_magpie":
            df = pd.DataFrame({"formula": formulas})

            def pipeline():
                stc = StrToComposition()
                stc.set_n_jobs(1)
                dfc = stc.featurize_dataframe(df, "formula", pbar=False)
                ep = ElementProperty.from_preset("magpie")
                ep.set_n_jobs(1)
                return ep.featurize_dataframe(dfc, "composition", ignore_errors=True, pbar=False)

            total, res = timed(pipeline)
            out[run] = {"total_s": total}
            out["shape"] = list(res.shape)
        out[run]["rss_peak_mb"] = maxrss_mb()
    if kind == "df_ours":  # untimed: a Composition column gives the numbers transform gives the strings
        f = PolySRLFeaturizer(verbose=False)
        stc = StrToComposition()
        stc.set_n_jobs(1)
        dfc = stc.featurize_dataframe(pd.DataFrame({"formula": formulas}), "formula", pbar=False)
        from_comps = f.featurize_dataframe(dfc, "composition", pbar=False)[f.feature_labels()].to_numpy()
        from_strings = f.transform(formulas)
        from_df_strings = res[f.feature_labels()].to_numpy()
        out["composition_column_equal"] = bool(np.array_equal(from_comps, from_strings.astype(np.float64)))
        out["composition_column_max_abs_diff"] = float(np.abs(from_comps - from_strings).max())
        out["string_column_equal"] = bool(np.array_equal(from_df_strings, from_strings.astype(np.float64)))
    print("RESULT " + json.dumps(out))


def pool_worker(kind, formulas):
    """One pass of a matminer process-pool featurization (matminer's default n_jobs)."""
    import pandas as pd
    from matminer.featurizers.base import MultipleFeaturizer
    from matminer.featurizers.composition import ElementProperty
    from matminer.featurizers.conversions import StrToComposition

    from skpolysrl import PolySRLFeaturizer

    stc = StrToComposition()
    stc.set_n_jobs(1)
    df = stc.featurize_dataframe(pd.DataFrame({"formula": formulas}), "formula", pbar=False)
    make = {
        "pool_magpie": lambda: ElementProperty.from_preset("magpie"),
        "pool_ours": lambda: PolySRLFeaturizer(verbose=False),
        "pool_multi": lambda: MultipleFeaturizer([ElementProperty.from_preset("magpie"), PolySRLFeaturizer(verbose=False)]),
        "pool_multi_ours": lambda: MultipleFeaturizer([PolySRLFeaturizer(verbose=False)]),
    }[kind]
    t = time.perf_counter()
    featurizer = make()
    res = featurizer.featurize_dataframe(df, "composition", pbar=False)
    out = {"kind": kind, "total_s": time.perf_counter() - t, "shape": list(res.shape), "n_jobs": featurizer.n_jobs,
           "n_nan_rows": int(res.iloc[:, 2:].isna().any(axis=1).sum())}
    print("RESULT " + json.dumps(out))


def run_in(result):
    """Whether a worker's result has cold/warm passes (the pool workers run one pass)."""
    return "cold" in result


def run_worker(kind, a, env=None):
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", kind, "--n", str(a.n), "--seed", str(a.seed)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **(env or {})})
    if proc.returncode != 0:
        raise RuntimeError(f"worker {kind} failed:\n{proc.stderr[-3000:]}")
    line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT "):])


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=10000)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--worker", choices=KINDS + MULTI_KINDS)
    p.add_argument("--out", default=os.path.join(HERE, "results", "featurize_speed.md"))
    a = p.parse_args()
    if a.worker:
        return worker(a.worker, a.n, a.seed)

    import torch

    load_before = os.getloadavg()
    runs = []
    for r in range(a.repeats):
        res = {kind: run_worker(kind, a) for kind in KINDS + MULTI_KINDS}
        # not the default: one torch thread (much less sensitive to other load on a shared machine)
        res["transform_1thread"] = run_worker("transform", a, {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"})
        runs.append(res)
        print(f"repeat {r + 1}: " + json.dumps({k: {run: v[run] for run in ("cold", "warm")} if run_in(v) else v
                                                for k, v in res.items()}), flush=True)
    load_after = os.getloadavg()

    def med(fn):
        return float(np.median([fn(r) for r in runs]))

    def fmt_runs(fn, unit="s", digits=2):
        vals = [fn(r) for r in runs]
        return f"{np.median(vals):.{digits}f} {unit} ({', '.join(f'{v:.{digits}f}' for v in vals)})"

    n = a.n
    first = runs[0]
    threads = {k: os.environ.get(k, "unset") for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}

    def get(kind, run, key):
        return lambda r: r[kind][run][key]

    def ratio(num, den):
        return lambda r: num(r) / den(r)

    def cells(fn_of_run, unit="s", digits=3):
        return " | ".join(fmt_runs(fn_of_run(run), unit, digits) for run in ("cold", "warm"))

    lines = [
        "# Featurization speed: skpolysrl vs Magpie (matminer ElementProperty)",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores, Python {platform.python_version()}, "
        f"torch {torch.__version__} ({first['transform']['torch_threads']} intra-op threads, default; "
        f"OMP_NUM_THREADS={threads['OMP_NUM_THREADS']}, MKL_NUM_THREADS={threads['MKL_NUM_THREADS']}), "
        f"load average before/after {load_before[0]:.1f}/{load_after[0]:.1f} (shared machine).",
        "",
        f"Command: `python benchmarks/featurize_speed.py --n {n} --repeats {a.repeats} --seed {a.seed}`.",
        "",
        f"Formulas: {n:,} rows of matbench `mp_e_form.csv` (`formula` column) drawn without replacement "
        f"with `numpy.random.default_rng({a.seed})`: {first['transform']['n_distinct_strings']:,} distinct "
        f"strings ({first['transform']['n_distinct_stoichiometries']:,} distinct stoichiometries), not deduplicated "
        f"before featurizing. Output {tuple(first['transform']['shape'])} float32, "
        f"{first['transform']['n_nan_rows']} NaN rows (Magpie: {first['magpie']['n_nan_rows']}).",
        "",
        "Each cell: median over the repeats (each repeat in brackets). Every worker is a fresh process with the",
        "libraries imported (untimed); \"cold\" is the first pass in that process, \"warm\" a second pass in",
        "the same process (new featurizer object, formula cache cleared: imports, file caches and the loaded weights warm).",
        "Featurizing formulas never imports torch_geometric; loading the weights is in the cold `transform`.",
        "Ratios are taken within each repeat (same run), then the median.",
        "",
        f"## (a) Load + featurize {n:,} formulas",
        "",
        "| what | cold | warm |",
        "|---|---|---|",
        f"| skpolysrl: `PolySRLFeaturizer()` (no fit) | {cells(lambda run: get('transform', run, 'load_s'))} |",
        "| skpolysrl: `transform(formulas)` (loads the weights on first use in the process) | "
        f"{cells(lambda run: get('transform', run, 'work_s'))} |",
        f"| **skpolysrl total** | {cells(lambda run: get('transform', run, 'total_s'))} |",
        f"| Magpie: `from_preset(\"magpie\")` + `set_n_jobs(1)` | {cells(lambda run: get('magpie', run, 'load_s'))} |",
        f"| Magpie: `[Composition(f) for f in formulas]` | {cells(lambda run: get('magpie', run, 'parse_s'))} |",
        "| Magpie: `featurize_many(compositions, ignore_errors=True, pbar=False)` | "
        f"{cells(lambda run: get('magpie', run, 'work_s'))} |",
        f"| **Magpie total** | {cells(lambda run: get('magpie', run, 'total_s'))} |",
        "| formulas/s, skpolysrl total | "
        + " | ".join(f"{n / med(get('transform', run, 'total_s')):,.0f}" for run in ("cold", "warm")) + " |",
        "| formulas/s, Magpie total | "
        + " | ".join(f"{n / med(get('magpie', run, 'total_s')):,.0f}" for run in ("cold", "warm")) + " |",
        "| **speed ratio, Magpie total / skpolysrl total** | "
        f"{cells(lambda run: ratio(get('magpie', run, 'total_s'), get('transform', run, 'total_s')), 'x', 1)} |",
        "| speed ratio of the featurizing calls only ((Composition + featurize_many) / transform) | "
        + cells(lambda run: ratio(lambda r: r["magpie"][run]["parse_s"] + r["magpie"][run]["work_s"],
                                  get("transform", run, "work_s")), "x", 1) + " |",
        "| *not default:* skpolysrl total with `OMP_NUM_THREADS=1 MKL_NUM_THREADS=1` (1 torch thread), same "
        f"repeat | {cells(lambda run: get('transform_1thread', run, 'total_s'))} |",
        "| *not default:* speed ratio, Magpie total / skpolysrl total with 1 torch thread | "
        f"{cells(lambda run: ratio(get('magpie', run, 'total_s'), get('transform_1thread', run, 'total_s')), 'x', 1)} |",
        "",
        "Where skpolysrl's time goes (a third pass in the `transform` worker, formula cache cleared): "
        + ", ".join(f"{name} {fmt_runs(lambda r, k=key: r['transform']['breakdown'][k], digits=3)}"
                    for name, key in (("parse", "parse_s"), ("dedupe", "dedupe_s"), ("table", "table_s"),
                                      ("forward (encode)", "encode_s")))
        + f"; with 1 torch thread the forward takes "
        + fmt_runs(lambda r: r["transform_1thread"]["breakdown"]["encode_s"], digits=3) + ".",
        "",
        "Peak RSS (`ru_maxrss` of the worker process: after imports and reading the formulas -> after the cold "
        "pass -> after the warm pass): "
        f"skpolysrl {med(lambda r: r['transform']['rss_before_mb']):.0f} -> "
        f"{med(get('transform', 'cold', 'rss_peak_mb')):.0f} -> {med(get('transform', 'warm', 'rss_peak_mb')):.0f} MB; "
        f"Magpie {med(lambda r: r['magpie']['rss_before_mb']):.0f} -> "
        f"{med(get('magpie', 'cold', 'rss_peak_mb')):.0f} -> {med(get('magpie', 'warm', 'rss_peak_mb')):.0f} MB.",
        "",
        f"## (b) matminer-style `featurize_dataframe` on a DataFrame of {n:,} formula strings",
        "",
        "| what | cold | warm |",
        "|---|---|---|",
        "| skpolysrl: `PolySRLFeaturizer().featurize_dataframe(df, \"formula\", pbar=False)` (weights loaded on "
        f"first use) | {cells(lambda run: get('df_ours', run, 'total_s'))} |",
        "| Magpie: `StrToComposition().featurize_dataframe(df, \"formula\")` + "
        "`ElementProperty.from_preset(\"magpie\").featurize_dataframe(df, \"composition\", ignore_errors=True)` "
        f"(both n_jobs=1, pbar=False) | {cells(lambda run: get('df_magpie', run, 'total_s'))} |",
        "| **speed ratio** | "
        f"{cells(lambda run: ratio(get('df_magpie', run, 'total_s'), get('df_ours', run, 'total_s')), 'x', 1)} |",
        "",
        f"Output frames: skpolysrl {tuple(first['df_ours']['shape'])}, Magpie {tuple(first['df_magpie']['shape'])}. "
        f"Peak RSS: skpolysrl {med(get('df_ours', 'warm', 'rss_peak_mb')):.0f} MB, "
        f"Magpie {med(get('df_magpie', 'warm', 'rss_peak_mb')):.0f} MB.",
        "",
        "Check: `featurize_dataframe` on a column of Compositions (from `StrToComposition`) equals `transform` on "
        f"the strings: {all(r['df_ours']['composition_column_equal'] for r in runs)} "
        f"(max abs difference {max(r['df_ours']['composition_column_max_abs_diff'] for r in runs):.3g}); "
        "`featurize_dataframe` on the string column equals `transform`: "
        f"{all(r['df_ours']['string_column_equal'] for r in runs)}.",
        "",
        f"## (c) matminer's process pool: `featurize_dataframe(df, \"composition\")` with default n_jobs "
        f"({first['pool_multi']['n_jobs']} workers), {n:,} Compositions",
        "",
        "One fresh process per cell and repeat; `pbar=False`. `MultipleFeaturizer` calls each featurizer once per row "
        "in the pool workers (chunks of 10 rows, a new worker per chunk); PolySRLFeaturizer encodes each chunk in one "
        "batch and the workers inherit the weights loaded by the parent.",
        "",
        "| what | time |",
        "|---|---|",
        f"| Magpie alone: `ElementProperty.from_preset(\"magpie\")` | {fmt_runs(lambda r: r['pool_magpie']['total_s'], digits=3)} |",
        f"| PolySRL alone: `PolySRLFeaturizer()` (batched in-process, no pool) | {fmt_runs(lambda r: r['pool_ours']['total_s'], digits=3)} |",
        "| the two run separately (sum) | "
        f"{fmt_runs(lambda r: r['pool_magpie']['total_s'] + r['pool_ours']['total_s'], digits=3)} |",
        f"| **`MultipleFeaturizer([Magpie, PolySRL])`** | {fmt_runs(lambda r: r['pool_multi']['total_s'], digits=3)} |",
        "| **ratio MultipleFeaturizer / the two separately** (goal <= 1.5) | "
        f"{fmt_runs(lambda r: r['pool_multi']['total_s'] / (r['pool_magpie']['total_s'] + r['pool_ours']['total_s']), 'x', 2)} |",
        f"| `MultipleFeaturizer([PolySRL])` (PolySRL per row in the pool) | {fmt_runs(lambda r: r['pool_multi_ours']['total_s'], digits=3)} |",
        "",
        f"Output frames: Magpie {tuple(first['pool_magpie']['shape'])}, PolySRL {tuple(first['pool_ours']['shape'])}, "
        f"MultipleFeaturizer {tuple(first['pool_multi']['shape'])}; rows with a NaN feature: "
        f"{first['pool_magpie']['n_nan_rows']}, {first['pool_ours']['n_nan_rows']}, {first['pool_multi']['n_nan_rows']}.",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    os.makedirs(os.path.dirname(a.out), exist_ok=True)
    with open(a.out, "w") as fh:
        fh.write(text)


if __name__ == "__main__":
    main()
