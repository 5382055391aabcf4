"""Variance-stage settings tried at formula speed on cached structure embeddings (how the shipped
model's variance floor was chosen; results in benchmarks/results/variance_floor.md).

The variance path starts from ``--start`` (the previous shipped model's stoichiometry encoder) and is fitted,
for each setting of ``--variants``, on the training formulas minus a validation split
(``held_out_formulas(..., salt="variance-validation")``); the formulas held out of pretraining
(``held_out_formulas(..., 0.1)``) are only reported. ``--model`` is a model file with the realigned
structure encoder (``train_default_model.py --stages realign variance --full-out``) and ``--embedding-cache``
that run's cache, so only structures it lacks are embedded.

    python benchmarks/variance_variants.py --structures ../shared/data/mp2025_structures.jsonl.gz \
        --model full.pt --start v2.pt --embedding-cache emb.npz --probe-errors err.npy \
        --variants '[{"floor": 0.5}, {"floor": 0.1}, {"floor": 0.02}, {"floor": 0.005}]'
"""
import argparse, copy, gzip, json, time
import numpy as np, pandas as pd, torch
from scipy.stats import spearmanr
from sklearn.metrics import roc_auc_score
from skpolysrl import _io
from skpolysrl._elements import known_atomic_numbers
from skpolysrl._formula import StoichiometryTable, parse_formulas
from skpolysrl.analysis import is_fractional_formula
from skpolysrl.datasets import load_dataset, read_structures_jsonl
from skpolysrl.graphs import build_structure_graphs
from skpolysrl.model_selection import held_out_formulas
from skpolysrl.recipes import (cached_structure_embeddings, fit_variances, mix_alloys, polymorph_spread,
                               substitution_alloys)
from skpolysrl.training import encode
torch.set_num_threads(1)
p = argparse.ArgumentParser()
p.add_argument("--variants", required=True, help="JSON list of dicts")
p.add_argument("--model", required=True)
p.add_argument("--start", required=True)
p.add_argument("--structures", required=True)
p.add_argument("--embedding-cache", required=True)
p.add_argument("--graph-cache", default=None)
p.add_argument("--probe-errors", default=None, help=".npy of |out-of-fold probe error| on the band gap set")
p.add_argument("--log", default="variance_variants.jsonl")
p.add_argument("--max-sites", type=int, default=None,
               help="leave out cells of more sites (the v3 choice used 40; the library now embeds every cell)")
a = p.parse_args()
t0 = time.perf_counter()
known = known_atomic_numbers()
base, _ = _io.load_model(a.model)
v2, _ = _io.load_model(a.start)  # the variance path starts from v2's (the v3a run fitted it on validation formulas too)
base.stoichiometry.load_state_dict(v2.stoichiometry.state_dict())
path = a.structures
with gzip.open(path, "rt") as fh:
    allc = pd.Series([json.loads(l)["formula"] for l in fh if l.strip()]).value_counts()
F = allc.index.to_numpy(); n = allc.to_numpy()
held = held_out_formulas(F, 0.1)
valF = held_out_formulas(F, 0.1, salt="variance-validation")
data = read_structures_jsonl(path, max_sites=a.max_sites, skip_formulas=set(F[held | valF]))
forms, fid = np.unique(np.asarray(data.formula), return_inverse=True)
counts = np.bincount(fid)
stoich = parse_formulas(list(forms), known)
_, all_pairs = substitution_alloys(stoich, 10**9, np.random.default_rng(0))
max_alloys = 8000
pairs_all = all_pairs[:max_alloys]
wanted = counts > 1
wanted[pairs_all.ravel()] = True
rows = np.flatnonzero(wanted[fid])
print(f"{len(forms)} fit formulas, embedding {len(rows)} structures ({time.perf_counter()-t0:.0f}s)", flush=True)
graphs = build_structure_graphs([data.structure.iloc[i] for i in rows], cache=a.graph_cache,
                                **base.config.graph.graph_kwargs())
E = cached_structure_embeddings(base, graphs, cache=a.embedding_cache)
row_fid = fid[rows]
print(f"embedded ({time.perf_counter()-t0:.0f}s)", flush=True)
spread = polymorph_spread(E, row_fid, len(forms))
poly = counts > 1
gap = load_dataset("band_gap"); gf = gap.formula.tolist()
frac = is_fractional_formula(gf)
err = np.load(a.probe_errors) if a.probe_errors else None
tableF = StoichiometryTable(parse_formulas(list(F), known)); tableG = StoichiometryTable(parse_formulas(gf, known))
# a doped-vs-stoichiometric check that is not the evaluation's: the fractional compositions of matbench's glass and
# steels tables (alloys) against the validation formulas (stoichiometric MP formulas left out of the fit)
alloy_f = [f for name in ("matbench_glass", "matbench_steels_yield") for f in load_dataset(name).formula]
alloy_f = [f for f in dict.fromkeys(alloy_f) if is_fractional_formula([f])[0]]
tableA = StoichiometryTable([x for x in parse_formulas(alloy_f, known, ignore_errors=True) if x is not None])
for v in json.loads(a.variants):
    cfg = {"epochs": 30, "lr": 3e-2, "floor": 0.5, "n_alloys": 5000, "xlo": 0.02, "xhi": 0.5, "batch": 256, **v}
    t1 = time.perf_counter()
    model = copy.deepcopy(base)
    floor = float(np.quantile(spread[poly & (spread > 0)], cfg["floor"]))  # as the library: positive spreads
    targets = floor + np.where(poly, spread, 0.0)
    rng = np.random.default_rng(0)
    pairs = pairs_all[:cfg["n_alloys"]]
    alloys = mix_alloys(stoich, pairs, rng, (cfg["xlo"], cfg["xhi"]))
    tg = targets
    if len(alloys):
        members = [np.flatnonzero(np.isin(row_fid, pr)) for pr in pairs]
        group = np.concatenate([np.full(len(m), k) for k, m in enumerate(members)])
        alloy_spread = polymorph_spread(E[np.concatenate(members)], group, len(alloys))
        if cfg.get("alloy_min_quantile") is not None:  # an alloy has no known structure: at least this uncertain
            alloy_spread = np.maximum(alloy_spread, np.quantile(spread[poly & (spread > 0)], cfg["alloy_min_quantile"]))
        tg = np.concatenate([tg, floor + alloy_spread])
    fit_table = StoichiometryTable(list(stoich) + alloys)
    if cfg.get("head") == "hgb":
        # capacity probe, not a library option: gradient boosting on the frozen means in place of the variance path
        from sklearn.ensemble import HistGradientBoostingRegressor
        hgb = HistGradientBoostingRegressor(max_iter=cfg.get("max_iter", 300), random_state=0)
        hgb.fit(encode(model, fit_table)[0], np.log(tg))
        hist = [{"loss": None}]
        if v.get("save"):
            raise SystemExit("a 'head': 'hgb' variant has no variance path to save")

        def uncertainty(table):
            return np.exp(hgb.predict(encode(model, table)[0]))
    else:
        hist = fit_variances(model, fit_table, tg, epochs=cfg["epochs"], lr=cfg["lr"], batch_size=cfg["batch"],
                             seed=0)

        def uncertainty(table):
            return np.exp((2 * encode(model, table)[1].astype(np.float64)).mean(1))
    u, ug = uncertainty(tableF), uncertainty(tableG)
    tr = ~held & ~valF
    r = {**cfg, "auc_train": roc_auc_score(n[tr] > 1, u[tr]), "auc_val": roc_auc_score(n[valF & ~held] > 1, u[valF & ~held]),
         "auc_held_out": roc_auc_score(n[held] > 1, u[held]), "rho_count": spearmanr(u, n)[0],
         "rho_count_val": spearmanr(u[valF & ~held], n[valF & ~held])[0],
         "auc_fractional_val": roc_auc_score(np.r_[np.ones(len(tableA)), np.zeros(int((valF & ~held).sum()))],
                                             np.r_[uncertainty(tableA), u[valF & ~held]]),
         "auc_doped": roc_auc_score(frac, ug), "rho_abs_err": None if err is None else spearmanr(ug, err)[0],
         "loss_first": hist[0]["loss"], "loss": hist[-1]["loss"], "seconds": time.perf_counter() - t1}
    print(json.dumps(r), flush=True)
    with open(a.log, "a") as fh:
        fh.write(json.dumps(r) + "\n")
    if v.get("save"):
        _io.save_model(model, v["save"], extra={"variant": r}, include_structure_encoder=False)
