"""The ``skpolysrl`` command line: pretrain a model, featurize a table of formulas."""

import argparse
import atexit
import json
import math
import os
import shutil
import sys
import tempfile
import time

from ._runtime import atomic_write, atomic_write_text
from .exceptions import FormulaError, SkPolySRLError


def _read_table(path, formula_col=None):
    from .datasets import read_table

    table = read_table(path, text_cols=[formula_col] if formula_col else ())
    if len(table) == 0:
        raise SkPolySRLError(f"{path!r} has a header but no rows")
    return table


def _model_source(name, trust_pickle):
    """--model/--init as ``pretrained=`` takes it. A pickle is unpickled only with --trust-pickle
    (it runs code from the file), then handed on as a temporary .pt model file (removed at exit)."""
    from .featurizer import _PICKLE_SUFFIXES, PolySRLFeaturizer

    if name == "none":
        return None
    if not (trust_pickle and name.lower().endswith(_PICKLE_SUFFIXES)):
        return name
    folder = tempfile.mkdtemp(prefix="skpolysrl-")
    atexit.register(shutil.rmtree, folder, True)
    path = os.path.join(folder, "model.pt")
    PolySRLFeaturizer.load_trusted(name).save(path)
    return path


def _json_safe(value):
    """value with NaN/infinity as null (JSON has no such numbers) and numpy scalars as Python ones."""
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if hasattr(value, "item") and getattr(value, "ndim", None) == 0:
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _write_json(path, obj):
    atomic_write_text(path, json.dumps(_json_safe(obj), indent=1, allow_nan=False, default=str))


def _refuse_existing_outputs(args, *options):
    """Stop before any work if an output path of ``options`` (argparse dests) exists and --overwrite is off:
    the command never replaces a file it may not have written."""
    if args.overwrite:
        return
    for option in options:
        path = getattr(args, option, None)
        if path and os.path.lexists(path):
            raise FileExistsError(f"--{option.replace('_', '-')} {path} exists; skpolysrl does not replace existing "
                                  "files: choose another path, or pass --overwrite to replace it")


def _structures(source, limit, recursive=False, ignore_errors=False):
    """A DataFrame with a "structure" column from --data (see _DATA_HELP)."""
    from .datasets import load_mp_structures, read_structure_source
    from .exceptions import StructureFileError

    if source == "bundled":
        return load_mp_structures(limit=limit)
    try:
        return read_structure_source(source, recursive=recursive, ignore_errors=ignore_errors, limit=limit,
                                     allow_pickle=True)
    except StructureFileError as exc:
        if not exc.skippable:
            raise
        raise StructureFileError(exc.source, f"{exc.reason}; on the command line, --ignore-errors skips it",
                                 skippable=False) from None


_DATA_HELP = """\
training data (--data; the formulas are read from the structures):
  bundled              the 6,317 Materials Project structures shipped with skpolysrl (default)
  DIR                  a folder of crystal-structure files: *.cif (every data block of each),
                       POSCAR*, CONTCAR*, *.vasp, *.poscar (also compressed .gz/.bz2/.xz), read in
                       sorted order; other files are ignored; subfolders only with --recursive
  FILE.cif, POSCAR     one structure file
  FILE.jsonl[.gz]      JSON lines, one structure per line:
                       {"id": ..., "formula": ..., "structure": <pymatgen Structure.as_dict()>}
  FILE.csv, .parquet   a table with CIF text in a column named "cif" (one structure per row)
  FILE.pkl, .pickle    a pandas DataFrame saved with df.to_pickle(), with a "structure" column of
                       pymatgen Structures (unpickling runs code: use only files you trust)
A file or row that fails to parse stops the run and is named; --ignore-errors skips it (a warning
names it). Paper scale (~112k Materials Project structures) needs the network: in Python, run
skpolysrl.datasets.load_materials_project() (pip install "skpolysrl[mp]", MP_API_KEY set) or
matminer's load_dataset("matbench_mp_e_form"), then df.to_pickle("mp.pkl") and --data mp.pkl.

examples:
  skpolysrl pretrain --data my_cifs/ --out my_model.pt                 # the staged default recipe
  skpolysrl pretrain --data vasp_runs/ --recursive --ignore-errors --out my_model.pt
  skpolysrl pretrain --limit 1000 --recipe paper --epochs 5 --out quick.pt   # the paper's single stage

several GPUs or nodes (torch.distributed; --batch-size stays the global batch, the result that of one
process up to float rounding; rank 0 writes --out and prints):
  torchrun --nproc_per_node=4 -m skpolysrl.cli pretrain --data mp.pkl --recipe paper --out my_model.pt
  torchrun --nnodes=2 --nproc_per_node=4 --node_rank=N --master_addr=HOST0 --master_port=29500 \
      -m skpolysrl.cli pretrain --data mp.pkl --recipe paper --out my_model.pt   # on node N = 0 (HOST0), N = 1
"""


def cmd_pretrain(args):
    from .featurizer import PolySRLFeaturizer

    _refuse_existing_outputs(args, "out", "history")
    data = None if args.objective == "supervised" else _structures(args.data, args.limit, args.recursive,
                                                                    args.ignore_errors)
    if data is not None and args.subsample and args.subsample < len(data):
        data = data.sample(args.subsample, random_state=args.seed).reset_index(drop=True)
    monitor = None
    if args.monitor:
        table = _read_table(args.monitor, args.monitor_formula_col)
        monitor = (table[args.monitor_formula_col].tolist(), table[args.monitor_target_col].to_numpy(dtype=float))
    f = PolySRLFeaturizer(
        pretrained=_model_source(args.init, args.trust_pickle), objective=args.objective, epochs=args.epochs,
        batch_size=args.batch_size, lr=args.lr, n_samples=args.n_samples, beta=args.beta, device=args.device,
        random_state=args.seed, verbose=not args.quiet, pair_reduction=args.pair_reduction,
        warmup_epochs=args.warmup_epochs, c_init=args.c_init, d_init=args.d_init, graph_cache=args.graph_cache,
        log_sigma_init=args.log_sigma_init, threshold_lr=args.threshold_lr, alignment_weight=args.alignment_weight,
        keep_best=args.keep_best, checkpoint=args.checkpoint, checkpoint_every=args.checkpoint_every,
        recipe=args.recipe,
    )
    t0 = time.perf_counter()
    if args.objective == "supervised":  # formulas + a DFT property, no structures
        from .datasets import load_mp_property

        known = ("band_gap", "formation_energy")
        data = load_mp_property(args.property) if args.property in known else load_mp_property(path=args.property)
        f.fit(data["formula"].tolist(), data["target"].to_numpy(dtype=float), monitor=monitor)
    else:
        f.fit(data, monitor=monitor)
    from .distributed import is_main_process

    if not is_main_process():  # under torchrun the processes share one model: rank 0 writes and reports
        return
    f.save(args.out)
    if args.history:
        _write_json(args.history, {"command": " ".join(sys.argv), "seconds": time.perf_counter() - t0,
                                   "n_structures": len(data), "params": f.get_params(), "history": f.history_})
    print(f"wrote {args.out} ({len(data)} structures, {args.epochs} epochs, {time.perf_counter() - t0:.0f} s)")


_AUTO_PROGRESS_ROWS = 100_000


def cmd_featurize(args):
    from .datasets._tables import row_label
    from .featurizer import PolySRLFeaturizer

    _refuse_existing_outputs(args, "out")
    table = _read_table(args.input, args.formula_col)
    if args.formula_col not in table.columns:
        raise SystemExit(f"error: no column {args.formula_col!r} in {args.input}; columns: {list(table.columns)}")
    f = PolySRLFeaturizer(pretrained=_model_source(args.model, args.trust_pickle), verbose=False,
                          transform_batch_size=args.batch_size, random_state=0)
    if args.model == "none":
        f.fit(table[args.formula_col])  # random weights (seeded); pretrained models need no fit
    progress = args.progress
    if progress is None:  # long featurizations show a sign of life; pipes and short tables stay quiet
        progress = sys.stderr.isatty() and len(table) >= _AUTO_PROGRESS_ROWS
    try:
        out = f.featurize_dataframe(table, args.formula_col, ignore_errors=args.ignore_errors, pbar=progress)
    except FormulaError as exc:
        if exc.position is None:
            raise
        raise type(exc)(exc.item, exc.reason, where=row_label(args.input, exc.position)) from None
    atomic_write(args.out, (lambda tmp: out.to_parquet(tmp)) if args.out.endswith(".parquet")
                 else (lambda tmp: out.to_csv(tmp, index=False)))
    print(f"wrote {args.out}: {len(out)} rows x {len(f.feature_labels())} PolySRL features")


_FEATURIZE_EPILOG = """\
Formulas are read as pymatgen reads them ("Fe2O3", "LiFe0.5Mn0.5PO4", "Ca(OH)2"); repeated
formulas are encoded once. Without --ignore-errors the first bad formula stops the run with
its row and the reason; with it, that row's features are empty (NaN).

examples:
  skpolysrl featurize --input formulas.csv --out features.csv
  skpolysrl featurize --input data.xlsx --formula-col Formula --out features.parquet --ignore-errors
  skpolysrl featurize --input data.csv --model my_model.pt --out features.csv --progress
"""


_EVALUATE_EPILOG = """\
datasets bundled with skpolysrl (--dataset):
  band_gap                 the paper's Band Gap set (2,482 non-metals, experimental gaps, eV);
                           alias expt_gap_nonmetals
  matbench_expt_gap        matbench experimental band gaps incl. metals (4,604); matbench folds
  matbench_steels_yield    matbench steel yield strengths (312, MPa); alias matbench_steels
  matbench_expt_is_metal, matbench_glass   matbench classification tasks (ROC AUC, stratified folds)
  mp_band_gap, mp_formation_energy   MP DFT values for the formulas of the bundled corpus

Your own data (--data): a CSV/TSV/XLSX/Parquet/JSON table; name its columns with
--formula-col and --target-col. This is how the paper's Formation Enthalpy (Kim 2017),
Metallic and ESTM sets are run, e.g. ESTM 300 K electrical conductivity (natural log, as the paper):
  skpolysrl evaluate --data estm.xlsx --formula-col Formula --target-col "Electrical conductivity (S/m)" \\
      --temperature-col "Temperature (K)" --temperature-window 295 305 --target-transform log
A column of class labels (text or numbers) is run with --task-type classification.

Protocols: probe = frozen encoder + 3-layer MLP head (hidden 128, LeakyReLU, Adam 1e-3, 300 epochs,
L1 for regression, cross-entropy for classification); finetune = encoder and head trained together
(500 epochs, learning rate chosen on a 20 % validation split of each training fold).
Regression (PolySRLRegressor) reports MAE and R2; classification (PolySRLClassifier) reports ROC AUC
and accuracy. Folds: KFold(5, shuffle=True, random_state=--seed), StratifiedKFold for classification;
--seed defaults to 0 (the paper's) and to 18012019 (matbench's) for matbench datasets, so that
--dataset matbench_* runs on matbench's own folds.

examples:
  skpolysrl evaluate --dataset band_gap --model default --protocol probe --json bandgap.json
  skpolysrl evaluate --dataset band_gap --model none           # the paper's "Rand init."
  skpolysrl evaluate --dataset matbench_glass --protocol finetune --json glass.json
  skpolysrl evaluate --data my.csv --formula-col formula --target-col y --protocol finetune
  skpolysrl evaluate --data metals.csv --target-col is_metal --task-type classification
  skpolysrl evaluate --data my.csv --target-col y --estimator composition
"""


def _build_estimator(args, task_type):
    """The estimator ``evaluate`` cross-validates: the one place to choose another (e.g. a zero-inflated one)."""
    from .classifier import PolySRLClassifier
    from .regressor import PolySRLRegressor

    def build(kind):
        return kind(pretrained=_model_source(args.model, args.trust_pickle), finetune=args.protocol == "finetune",
                    epochs=args.epochs, device=args.device, random_state=0, verbose=not args.quiet)

    if args.estimator == "composition":
        from .composition import CompositionClassifier, CompositionRegressor

        if args.model == "none":
            raise ValueError("--estimator composition takes PolySRL features from a trained model; drop --model none "
                             "(or give a model file)")
        kind = CompositionClassifier if task_type == "classification" else CompositionRegressor
        return kind(model=_model_source(args.model, args.trust_pickle), device=args.device, random_state=0,
                    verbose=not args.quiet)
    if args.estimator == "zero-inflated":
        from .zero_inflated import ZeroInflatedRegressor

        if task_type == "classification":
            raise ValueError("--estimator zero-inflated is for regression targets with a mass at zero (band gaps "
                             "of metals); drop it for a classification task")
        # P(y > 0) and the regressor of the positive part, both with the chosen protocol
        return ZeroInflatedRegressor(build(PolySRLClassifier), build(PolySRLRegressor))
    return build(PolySRLClassifier if task_type == "classification" else PolySRLRegressor)


def _evaluate_task_type(args):
    """regression or classification: --task-type, checked against the bundled dataset's own type."""
    from .datasets import dataset_task_type

    own = dataset_task_type(args.dataset) if args.dataset is not None else None
    task_type = args.task_type or own or "regression"
    if own is not None and task_type != own:
        raise ValueError(f"{args.dataset} is a {own} task; drop --task-type {args.task_type}")
    if task_type == "classification":
        if args.target_transform:
            raise ValueError("--target-transform scales regression targets; a classification task has labels")
        if args.report_scale != 1:
            raise ValueError("--report-scale multiplies MAEs; a classification task reports ROC AUC")
    return task_type


def cmd_evaluate(args):
    from .datasets import DATASET_ALIASES, load_dataset, load_table
    from .model_selection import MATBENCH_SEED, PAPER_SEED, cross_validate, paper_kfold

    if (args.dataset is None) == (args.data is None):
        raise ValueError("give exactly one of --dataset NAME (bundled) or --data FILE (your table)")
    if args.temperature_window and not args.temperature_col:
        raise ValueError("--temperature-window needs --temperature-col (the column of temperatures in K)")
    _refuse_existing_outputs(args, "json")
    task_type = _evaluate_task_type(args)
    classification = task_type == "classification"
    if args.dataset is not None:
        name = DATASET_ALIASES.get(args.dataset, args.dataset)
        df = load_dataset(name)
    else:
        df = load_table(args.data, args.formula_col, args.target_col, average_duplicates=args.average_duplicates,
                        temperature_col=args.temperature_col, temperature_window=args.temperature_window,
                        ignore_errors=args.ignore_errors, task_type=task_type)
        name = os.path.basename(args.data)
    seed = args.seed
    if seed is None:
        seed = MATBENCH_SEED if name.startswith("matbench_") else PAPER_SEED
    estimator = _build_estimator(args, task_type)

    def show(record):
        if args.quiet:
            return
        if classification:
            scores = f"ROC AUC {record['roc_auc']:.4f}  accuracy {record['accuracy']:.3f}"
        else:
            scores = f"MAE {record['mae']:.4f}  R2 {record['r2']:.3f}"
        print(f"fold {record['fold']}: {scores}  ({record['seconds']:.0f} s)", flush=True)

    target = df["target"].to_numpy() if classification else df["target"].to_numpy(dtype=float)
    result = cross_validate(estimator, list(df["formula"]), target,
                            cv=paper_kfold(args.folds, seed, stratified=classification),
                            target_transform=args.target_transform, report_scale=args.report_scale, on_fold_end=show)
    protocol = None if args.estimator == "composition" else args.protocol  # it has no probe/fine-tune protocol
    result.update(dataset=name, n_samples=len(df), model=args.model, protocol=protocol, n_folds=args.folds,
                  seed=seed, estimator=args.estimator)
    fold_kind = "stratified " if classification else ""
    print(f"{name}: {len(df)} formulas, {task_type}, {protocol or args.estimator}, model={args.model}, "
          f"{args.folds}-fold {fold_kind}CV seed {seed}")
    if classification:
        scores = ("roc_auc", "accuracy")
        print(f"  ROC AUC {result['roc_auc_mean']:.4f} +/- {result['roc_auc_std']:.4f}   "
              f"accuracy {result['accuracy_mean']:.3f} +/- {result['accuracy_std']:.3f}")
    else:
        scores = ("mae", "r2")
        scale = "" if args.report_scale == 1 else f" (x{args.report_scale:g})"
        print(f"  MAE{scale} {result['mae_mean']:.4f} +/- {result['mae_std']:.4f}   "
              f"R2 {result['r2_mean']:.3f} +/- {result['r2_std']:.3f}")
        if args.target_transform:
            print(f"  MAE in original units {result['mae_original_mean']:.4g} +/- {result['mae_original_std']:.4g}")
    if not all(math.isfinite(r[key]) for r in result["folds"] for key in scores):
        hint = ("a test fold with one class has no ROC AUC" if classification else
                "targets too large or too spread? rescale them, e.g. with --target-transform")
        print(f"warning: some scores are not finite ({hint}); they are null in --json", file=sys.stderr)
    if args.json:
        _write_json(args.json, result)
        print(f"wrote {args.json}")


def build_parser():
    p = argparse.ArgumentParser(
        prog="skpolysrl",
        description="PolySRL stoichiometry representations: pretrain on crystal structures, featurize formulas.",
    )
    sub = p.add_subparsers(dest="command", required=True)

    pre = sub.add_parser("pretrain", help="pretrain a PolySRL model on crystal structures",
                         description="Contrastive pretraining on (formula, structure) pairs; writes a model file.",
                         epilog=_DATA_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    pre.add_argument("--data", default="bundled", metavar="PATH",
                     help="the crystal structures to train on: 'bundled', a folder of CIF/POSCAR files, a CIF or "
                          "POSCAR file, a .jsonl[.gz] file, a .csv/.parquet table with a 'cif' column, or a "
                          "pickled DataFrame with a 'structure' column (details below)")
    pre.add_argument("--structures", dest="data", default=argparse.SUPPRESS, help=argparse.SUPPRESS)  # old name
    pre.add_argument("--recursive", action="store_true", help="with a folder for --data: also read its subfolders")
    pre.add_argument("--ignore-errors", action="store_true",
                     help="skip structure files or rows that fail to parse (a warning names them) instead of stopping")
    pre.add_argument("--limit", type=int, help="read only the first N structures (in file-name order for a folder)")
    pre.add_argument("--subsample", type=int, help="train on a random sample of N structures (seeded)")
    pre.add_argument("--init", default="none",
                     help="'none' (random), 'default' or a model file (.pt, written by 'skpolysrl pretrain' or "
                          "PolySRLFeaturizer.save; holds weights only, no code runs) to start from")
    pre.add_argument("--objective", default="polysrl",
                     choices=["polysrl", "deterministic", "infomax", "graphcl", "supervised"],
                     help="polysrl (the paper's), deterministic (w/o sampling), infomax (3D Infomax), graphcl "
                          "(formula augmentations only) or supervised (L1 on --property)")
    pre.add_argument("--property", default="band_gap",
                     help="for --objective supervised: band_gap or formation_energy (MP values for the bundled "
                          "corpus' formulas) or a CSV with formula,target columns (e.g. matbench_mp_gap)")
    pre.add_argument("--recipe", default="default", choices=["default", "paper"],
                     help="default: the staged recipe (align, a supervised stage on each structure's volume per atom "
                          "and density, realign, variances fitted to the polymorphs; "
                          "docs/method.md); paper: the paper's single stage, set by --epochs, --lr, --n-samples, "
                          "--beta and the options below (they apply to --recipe paper and the other objectives)")
    pre.add_argument("--epochs", type=int, default=100)
    pre.add_argument("--batch-size", type=int, default=256)
    pre.add_argument("--lr", type=float, default=5e-5)
    pre.add_argument("--n-samples", type=int, default=8)
    pre.add_argument("--beta", type=float, default=1e-8)
    pre.add_argument("--pair-reduction", default="sum", choices=["sum", "mean", "balanced"])
    pre.add_argument("--warmup-epochs", type=int, default=0)
    pre.add_argument("--c-init", type=float, default=20.0)
    pre.add_argument("--log-sigma-init", type=float, help="initial bias of the log-sigma head (default: PyTorch's)")
    pre.add_argument("--threshold-lr", type=float, help="learning rate of c and d (default: --lr)")
    pre.add_argument("--alignment-weight", type=float, default=0.0,
                     help="weight of an auxiliary NT-Xent term between formula means and structures")
    pre.add_argument("--keep-best", action="store_true",
                     help="with --monitor: keep the epoch with the best held-out probe (early stopping)")
    pre.add_argument("--d-init", type=float, default=20.0)
    pre.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    pre.add_argument("--seed", type=int, default=0)
    pre.add_argument("--graph-cache", help=".npz file caching structure graphs between runs")
    pre.add_argument("--monitor", help="CSV of held-out formulas + targets for a per-epoch probe")
    pre.add_argument("--monitor-formula-col", default="formula")
    pre.add_argument("--monitor-target-col", default="target")
    pre.add_argument("--history", help="write the per-epoch history as JSON here")
    pre.add_argument("--checkpoint", help="checkpoint file: written every --checkpoint-every epochs; if it exists, "
                     "training resumes from it (same command = same result as an uninterrupted run)")
    pre.add_argument("--checkpoint-every", type=int, default=1)
    pre.add_argument("--out", required=True, help="model file to write (.pt)")
    pre.add_argument("--quiet", action="store_true", help="no progress bars or epoch lines")
    pre.set_defaults(func=cmd_pretrain)

    fea = sub.add_parser("featurize", help="add PolySRL features to a table of formulas",
                         description="Reads a table with a column of chemical formulas and writes it back with "
                                     "the PolySRL representation added: polysrl_0 .. polysrl_199 (the mean "
                                     "embedding) and polysrl_uncertainty (its variance).",
                         epilog=_FEATURIZE_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    fea.add_argument("--model", default="default",
                     help="'default' (shipped), another registered model name (downloaded once into the cache, "
                          "see SKPOLYSRL_CACHE), 'none' (random) or a model file (.pt, written by 'skpolysrl "
                          "pretrain' or PolySRLFeaturizer.save; holds weights only, no code runs)")
    fea.add_argument("--input", required=True, help="table to read: .csv, .tsv, .xlsx, .parquet or .json")
    fea.add_argument("--formula-col", default="formula", help="name of the column of formulas (default: formula)")
    fea.add_argument("--out", required=True, help="output .csv or .parquet")
    fea.add_argument("--batch-size", type=int, default=4096, help="formulas per forward pass (default: 4096)")
    fea.add_argument("--ignore-errors", action="store_true", help="NaN rows for invalid formulas instead of failing")
    fea.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                     help="show a progress bar (default: on a terminal, for tables of "
                          f"{_AUTO_PROGRESS_ROWS:,} rows or more)")
    fea.set_defaults(func=cmd_featurize)

    from .model_selection import TARGET_TRANSFORMS

    ev = sub.add_parser("evaluate", help="score a model on a property by the paper's cross-validated protocols",
                        description="Cross-validated MAE and R2 of PolySRLRegressor, or ROC AUC and accuracy of "
                                    "PolySRLClassifier (probe or fine-tune), on a bundled dataset or your own "
                                    "table; prints the table, writes per-fold JSON.",
                        epilog=_EVALUATE_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    ev.add_argument("--model", default="default",
                    help="'default' (shipped), 'none' (random init) or a model file (.pt, written by 'skpolysrl "
                         "pretrain' or PolySRLFeaturizer.save; holds weights only, no code runs)")
    ev.add_argument("--ignore-errors", action="store_true",
                    help="drop rows of --data whose formula cannot be read (a warning names the first) instead of "
                         "stopping")
    ev.add_argument("--dataset", help="a bundled dataset (list below)")
    ev.add_argument("--data", help="your table (CSV/TSV/XLSX/Parquet/JSON)")
    ev.add_argument("--formula-col", default="formula", help="column of formulas in --data")
    ev.add_argument("--target-col", default="target", help="column of targets in --data")
    ev.add_argument("--average-duplicates", action="store_true",
                    help="average targets of rows with the same stoichiometry (--data only)")
    ev.add_argument("--task-type", choices=["regression", "classification"],
                    help="regression (MAE, R2) or classification (ROC AUC, accuracy; the target holds class "
                         "labels); default: the bundled dataset's own type, regression for --data")
    ev.add_argument("--target-transform", choices=TARGET_TRANSFORMS,
                    help="regression: train and score on scaled targets: log (natural, as the paper's code), "
                         "log10, or minmax (original-unit MAE also reported)")
    ev.add_argument("--report-scale", type=float, default=1.0,
                    help="multiply reported MAEs by this (the paper's x10 for Form. E., Metallic, Seebeck)")
    ev.add_argument("--temperature-col", help="column of measurement temperatures (K) in --data")
    ev.add_argument("--temperature-window", type=float, nargs=2, metavar=("LO", "HI"),
                    help="keep rows measured in [LO, HI] K, e.g. 295 305 (ESTM 300 K) or 593 608 (600 K)")
    ev.add_argument("--protocol", default="probe", choices=["probe", "finetune"])
    ev.add_argument("--estimator", default="polysrl", choices=["polysrl", "zero-inflated", "composition"],
                    help="polysrl: PolySRLRegressor / PolySRLClassifier; zero-inflated: P(y > 0) from a "
                         "PolySRLClassifier times a PolySRLRegressor fitted on y > 0 (targets with many zeros, "
                         "e.g. matbench_expt_gap's metals); composition: CompositionRegressor / "
                         "CompositionClassifier, tree ensembles on matminer + PolySRL features, the best chosen "
                         "inside each training fold (--protocol and --epochs do not apply)")
    ev.add_argument("--folds", type=int, default=5)
    ev.add_argument("--seed", type=int, help="split seed (default 0; 18012019 for matbench datasets)")
    ev.add_argument("--epochs", type=int, help="training epochs (default 300 probe / 500 finetune)")
    ev.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    ev.add_argument("--json", help="write the result (per-fold MAE and R2, or ROC AUC and accuracy; means, stds) "
                                   "as JSON here")
    ev.add_argument("--quiet", action="store_true")
    ev.set_defaults(func=cmd_evaluate)
    for command in (pre, fea, ev):
        command.add_argument("--overwrite", action="store_true",
                             help="replace output files that exist (without it, an existing output stops the "
                                  "command before any work)")
        command.add_argument("--trust-pickle", action="store_true",
                             help="allow the model file to be a joblib/pickle dump of a fitted PolySRLFeaturizer. "
                                  "Unpickling RUNS CODE from the file: use only with files you trust")
    mb = sub.add_parser("matbench", help="run matbench's composition tasks on the official folds",
                        description="Runs estimators on matbench v0.1 composition tasks (bundled data, offline) "
                                    "with matbench's folds; writes, per estimator, a results file that the "
                                    "matbench package loads (MatbenchBenchmark.from_file) and a summary table.",
                        epilog=_MATBENCH_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    mb.add_argument("--task", nargs="+", default=["all"], metavar="TASK",
                    help="matbench_expt_gap, matbench_expt_is_metal, matbench_glass, matbench_steels, or all "
                         "(the default); several may be given")
    mb.add_argument("--model", default="default",
                    help="PolySRL weights of the skpolysrl estimators: 'default' (shipped), 'none' (random) or a "
                         "model file (.pt)")
    mb.add_argument("--estimator", nargs="+", default=["probe"], metavar="NAME",
                    help="estimators to run (default: probe); known: see below")
    mb.add_argument("--baseline", nargs="+", default=[], metavar="NAME",
                    help="further estimators run on the same folds, e.g. rf-magpie (matbench's RF/Magpie)")
    mb.add_argument("--out", required=True,
                    help="output folder: new, empty, or from an earlier run with the same settings (its finished "
                         "folds are kept)")
    mb.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    mb.add_argument("--quiet", action="store_true", help="no line per fold")
    mb.set_defaults(func=cmd_matbench)
    return p


_MATBENCH_EPILOG = """\
estimators (--estimator, --baseline; the names in skpolysrl.matbench.ESTIMATORS):
  probe        PolySRLRegressor / PolySRLClassifier, frozen encoder (finetune=False)
  rf-magpie    matminer Magpie features + 500-tree random forest (matbench's RF/Magpie baseline)
  polysrl-rf   PolySRL features + the same random forest
  tuned        one scikit-learn model per task on matminer + PolySRL features, chosen on fold 0's training part
  composition  CompositionRegressor / CompositionClassifier: the model chosen inside every training fold

Folds: KFold (regression) or StratifiedKFold (classification), 5 folds, shuffle=True,
random_state=18012019, on the rows in matbench's order: matbench's own. Each finished fold is
written at once; rerunning the same command resumes at the first missing fold.

examples:
  skpolysrl matbench --task matbench_steels --out mb_steels
  skpolysrl matbench --task all --estimator probe --baseline rf-magpie --out mb_all
"""


def cmd_matbench(args):
    from .matbench import run_matbench, summary_markdown

    estimators = list(dict.fromkeys(args.estimator + args.baseline))
    # no --trust-pickle here: the results record the model file's hash, which a temporary copy would change
    model = _model_source(args.model, trust_pickle=False)
    summary = run_matbench(args.task, args.out, estimators, model=model, device=args.device, verbose=not args.quiet)
    print(summary_markdown(summary), end="")
    print(f"wrote {args.out}: summary.md, summary.json, <estimator>/results.json (matbench format)")


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (OSError, ValueError, KeyError, ImportError, SkPolySRLError) as exc:
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
        message = " ".join(str(message).split()) or type(exc).__name__  # one line, never empty
        if isinstance(exc, FormulaError) and hasattr(args, "ignore_errors"):
            message += " On the command line: --ignore-errors."
        print(f"skpolysrl {args.command}: error: {message}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
