"""Run matbench's composition tasks on their official folds and write matbench results files.

The four matbench v0.1 composition tasks are bundled (``skpolysrl.datasets``).
Their rows are in matbench's own order, so row ``i`` is matbench's id
``mb-<task>-<i + 1>`` and the official folds (``KFold`` for regression,
``StratifiedKFold`` for classification, 5 folds, shuffled with seed 18012019)
are recomputed here, offline: checked row by row against matbench's dataset
artifacts and fold by fold against the published RF/Magpie submission
(``docs/matbench.rst``).

:func:`run_matbench` runs any estimators registered in :data:`ESTIMATORS` (or
given as factories), one fold at a time; every finished fold is written at once,
so a stopped run resumes at the first missing fold. It writes, per estimator,
``results.json`` in the format of ``MatbenchBenchmark.to_file`` (plain JSON,
as matbench 0.6 writes and reads it; ``MatbenchBenchmark.from_file`` loads it;
``gzip`` it for a leaderboard submission's ``results.json.gz``), and one
summary of all estimators as ``summary.json`` and ``summary.md``.
"""

import datetime
import hashlib
import json
import math
import os
import re
import time

import numpy as np
from sklearn.base import BaseEstimator

from ._runtime import atomic_write_text
from .composition import BOOSTING, FEATURE_SETS, CompositionFeatures, MagpieFeatures, PriorCorrectedClassifier
from .exceptions import SkPolySRLError

__all__ = ["TASKS", "ESTIMATORS", "official_folds", "matbench_ids", "load_task", "score_fold", "probability_auc",
           "run_matbench", "MatbenchRunError", "CompositionFeatures", "MagpieFeatures", "PriorCorrectedClassifier",
           "FEATURE_SETS", "task_names", "matbench_document", "summary_markdown"]

#: matbench v0.1 composition tasks: bundled dataset and task type.
TASKS = {
    "matbench_expt_gap": {"dataset": "matbench_expt_gap", "type": "regression", "unit": "eV"},
    "matbench_expt_is_metal": {"dataset": "matbench_expt_is_metal", "type": "classification", "unit": None},
    "matbench_glass": {"dataset": "matbench_glass", "type": "classification", "unit": None},
    "matbench_steels": {"dataset": "matbench_steels_yield", "type": "regression", "unit": "MPa"},
}

# what matbench 0.6 writes and checks (matbench/constants.py, bench.py, task.py)
_BENCHMARK = "matbench_v0.1"
_MATBENCH_VERSION = "0.6"
_DATESTAMP = "%Y.%m.%d %H:%M.%S"
_METRICS = {"regression": ("mae", "rmse", "mape", "max_error"),
            "classification": ("accuracy", "balanced_accuracy", "f1", "rocauc")}
_HEADLINE = {"regression": "mae", "classification": "rocauc"}
_N_FOLDS = 5


class MatbenchRunError(SkPolySRLError, ValueError):
    """An output folder cannot be used for this run: it holds files skpolysrl did not write, or
    results of other settings (the message names which and the fix)."""


# ------------------------------------------------------------------ tasks and folds
def task_names(task):
    """``"all"``, a task name or a list of them -> list of matbench task names (``matbench_`` optional)."""
    names = [task] if isinstance(task, str) else list(task)
    out = []
    for name in names:
        if name == "all":
            out.extend(TASKS)
            continue
        full = name if name.startswith("matbench_") else f"matbench_{name}"
        if full not in TASKS:
            raise ValueError(f"unknown matbench task {name!r}; choose from {', '.join(TASKS)} or all")
        out.append(full)
    return list(dict.fromkeys(out))


def official_folds(task):
    """matbench's splitter for a task (:func:`skpolysrl.model_selection.matbench_kfold`): ``KFold``
    (regression) or ``StratifiedKFold`` (classification), 5 folds, ``shuffle=True, random_state=18012019``,
    applied to the rows in matbench's order.

    Verified against matbench's split file (``benchmarks/matbench_roundtrip.sh``).
    """
    from .model_selection import matbench_kfold

    return matbench_kfold(task_names(task)[0])


def matbench_ids(task, n):
    """matbench's row ids, as ``matbench.data_ops.load`` makes them: ``mb-expt-gap-0001``, ...
    (zero-padded to the digits of ``n``)."""
    width = math.floor(math.log(n, 10)) + 1
    prefix = task.replace("matbench", "mb").replace("_", "-")
    return [f"{prefix}-{i + 1:0{width}d}" for i in range(n)]


def load_task(task):
    """``(formulas, y, ids, folds)`` of a task: targets as float (0/1 for classification), matbench ids,
    and the official ``(train, test)`` index pairs."""
    from .datasets import load_dataset

    name = task_names(task)[0]
    df = load_dataset(TASKS[name]["dataset"])
    formulas = df["formula"].tolist()
    y = df["target"].to_numpy(dtype=np.float64)
    ids = matbench_ids(name, len(df))
    folds = list(official_folds(name).split(np.zeros((len(y), 1)), y))
    return formulas, y, ids, folds


# ------------------------------------------------------------------ scores (matbench.data_ops.score_array)
def score_fold(task_type, y_true, prediction):
    """matbench 0.6's per-fold scores (``matbench.data_ops.score_array``), as plain floats.

    Regression: MAE, RMSE, MAPE (over rows with ``|y| > 1e-5``) and max error.
    Classification, from probabilities of class 1: accuracy, balanced accuracy,
    F1 and ROC AUC, all four of the labels ``probability > 0.5``. matbench turns
    the probabilities into labels before its ROC AUC (so ``rocauc`` equals the
    balanced accuracy), and every published classification submission stores
    labels: this ``rocauc`` is the one its leaderboard compares. The ROC AUC of
    the probabilities themselves is :func:`probability_auc`.
    """
    from sklearn import metrics

    y_true = np.asarray(y_true, dtype=np.float64)
    prediction = np.asarray(prediction, dtype=np.float64)
    if task_type == "regression":
        mask = np.abs(y_true) > 1e-5
        scores = {"mae": metrics.mean_absolute_error(y_true, prediction),
                  "rmse": math.sqrt(metrics.mean_squared_error(y_true, prediction)),
                  "mape": np.mean(np.abs((y_true[mask] - prediction[mask]) / y_true[mask])),
                  "max_error": metrics.max_error(y_true, prediction)}
    else:
        truth, label = y_true > 0.5, prediction > 0.5
        scores = {"accuracy": metrics.accuracy_score(truth, label),
                  "balanced_accuracy": metrics.balanced_accuracy_score(truth, label),
                  "f1": metrics.f1_score(truth, label),
                  "rocauc": metrics.roc_auc_score(truth, label)}
    return {k: float(v) for k, v in scores.items()}


def probability_auc(y_true, probability):
    """ROC AUC of the probabilities of class 1 (not a matbench score; see :func:`score_fold`)."""
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(np.asarray(y_true) > 0.5, np.asarray(probability, dtype=np.float64)))


# ------------------------------------------------------------------ estimators
def _random_forest(task_type, random_state):
    from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor

    forest = RandomForestClassifier if task_type == "classification" else RandomForestRegressor
    return forest(n_estimators=500, random_state=random_state)


def _rf_magpie(task_type, *, task, model, device, random_state):
    """matbench's RF/Magpie baseline: Magpie features + a 500-tree random forest."""
    from sklearn.pipeline import Pipeline

    return Pipeline([("magpie", MagpieFeatures()), ("forest", _random_forest(task_type, random_state))])


def _polysrl_rf(task_type, *, task, model, device, random_state):
    """PolySRL features of ``model`` + the same 500-tree random forest as ``rf-magpie``."""
    from sklearn.pipeline import Pipeline

    from .featurizer import PolySRLFeaturizer

    features = PolySRLFeaturizer(pretrained=model, device=device, verbose=False, random_state=0)
    return Pipeline([("polysrl", features), ("forest", _random_forest(task_type, random_state))])


def _probe(task_type, *, task, model, device, random_state):
    """The package's probe: ``PolySRLRegressor`` / ``PolySRLClassifier`` with ``finetune=False``."""
    if task_type == "regression":
        from .regressor import PolySRLRegressor as estimator
    else:
        try:
            from .classifier import PolySRLClassifier as estimator
        except ModuleNotFoundError as exc:
            if exc.name != f"{__package__}.classifier":
                raise
            raise ImportError("estimator 'probe' needs PolySRLClassifier for classification tasks, which this "
                              "installation lacks; use --estimator rf-magpie or polysrl-rf there") from None
    return estimator(pretrained=model, finetune=False, device=device, random_state=random_state, verbose=False)


def _tuned(task_type, *, task, model, device, random_state):
    """A scikit-learn model per task, chosen by the research helper's inner cross-validation on the
    training part of outer fold 0 only (``benchmarks/results/matbench_models.md``,
    ``benchmarks/matbench_models.py``), never on the scored test folds:

    - steels: ``ExtraTreesRegressor(n_estimators=500)`` on element fractions;
    - glass: ``RandomForestClassifier(n_estimators=500, max_features=0.1)`` on Magpie + fractions,
      prior-corrected (labels ``P > training positive rate``);
    - expt_is_metal: ``HistGradientBoostingClassifier(max_iter=300, early_stopping=False)`` on Magpie +
      fractions + extras + PolySRL, prior-corrected;
    - expt_gap: ``ZeroInflatedRegressor`` of that classifier (not prior-corrected) and a
      ``HistGradientBoostingRegressor`` of the same settings, on the same features.

    The research helper's choices for expt_is_metal and expt_gap also had a DFT P(metal) column fitted
    on matbench's mp_is_metal, which is not bundled; without it expt_gap scored 0.2799 (outer folds).
    """
    from sklearn.ensemble import (ExtraTreesRegressor, HistGradientBoostingClassifier, HistGradientBoostingRegressor,
                                  RandomForestClassifier)
    from sklearn.pipeline import Pipeline

    from .zero_inflated import ZeroInflatedRegressor

    boosting = dict(BOOSTING, random_state=random_state)
    everything = ("magpie", "fractions", "extras", "polysrl")
    choices = {
        "matbench_steels": (("fractions",), lambda: ExtraTreesRegressor(n_estimators=500, random_state=random_state)),
        "matbench_glass": (("magpie", "fractions"), lambda: PriorCorrectedClassifier(
            RandomForestClassifier(n_estimators=500, max_features=0.1, random_state=random_state))),
        "matbench_expt_is_metal": (everything, lambda: PriorCorrectedClassifier(
            HistGradientBoostingClassifier(**boosting))),
        "matbench_expt_gap": (everything, lambda: ZeroInflatedRegressor(
            HistGradientBoostingClassifier(**boosting), HistGradientBoostingRegressor(**boosting))),
    }
    if task not in choices:
        raise ValueError(f"estimator 'tuned' has a model for {', '.join(choices)} only, not {task!r}")
    features, estimator = choices[task]
    return Pipeline([("features", CompositionFeatures(features, model=model, device=device)),
                     ("model", estimator())])


def _composition(task_type, *, task, model, device, random_state):
    """:class:`~skpolysrl.composition.CompositionRegressor` (classification: ``CompositionClassifier``,
    prior-corrected) with its default candidates: the model is chosen inside each training fold by 3-fold
    cross-validation, the same way on every task, so that it runs on any table (``tuned`` is one fixed
    choice per matbench task)."""
    from .composition import CompositionClassifier, CompositionRegressor

    settings = dict(model=model, device=device, n_jobs=-1, random_state=random_state)
    if task_type == "regression":
        return CompositionRegressor(**settings)
    return PriorCorrectedClassifier(CompositionClassifier(**settings))


#: Estimators by name: ``factory(task_type, *, task, model, device, random_state) -> unfitted estimator``
#: taking a list of formulas as X. Imports happen inside the factories, so a name costs nothing
#: until it is run. Add an entry to make a name available to ``run_matbench`` and the CLI.
ESTIMATORS = {
    "probe": _probe,
    "rf-magpie": _rf_magpie,
    "polysrl-rf": _polysrl_rf,
    "tuned": _tuned,
    "composition": _composition,
}


def _describe(estimator):
    """The estimator's settings as text: its full scikit-learn repr, memory addresses dropped."""
    text = BaseEstimator.__repr__(estimator, N_CHAR_MAX=10**6) if isinstance(estimator, BaseEstimator) \
        else repr(estimator)
    return re.sub(r" at 0x[0-9a-fA-F]+", "", " ".join(text.split()))


def _positive_probability(model, X):
    proba = np.asarray(model.predict_proba(X), dtype=np.float64)
    classes = [float(c) for c in model.classes_]
    if 1.0 not in classes:
        raise ValueError(f"the classifier's classes_ {list(model.classes_)} lack the positive class 1")
    return proba[:, classes.index(1.0)]


# ------------------------------------------------------------------ the output folder
_MANIFEST = "skpolysrl-matbench.json"


def _write_json(path, obj):
    atomic_write_text(path, json.dumps(obj, indent=1, allow_nan=False) + "\n")


class _Folder:
    """The --out folder: the manifest lists every file written and the settings of every
    (estimator, task); a folder without it must be empty, settings may not change, and a file
    not listed is never overwritten."""

    def __init__(self, path):
        self.path = os.fspath(path)
        self.manifest_path = os.path.join(self.path, _MANIFEST)
        if os.path.exists(self.path) and not os.path.isdir(self.path):
            raise MatbenchRunError(f"--out {self.path!r} is a file; give a folder (new or from an earlier run)")
        if os.path.exists(self.manifest_path):
            with open(self.manifest_path) as fh:
                self.manifest = json.load(fh)
            if not isinstance(self.manifest, dict) or self.manifest.get("format") != 1:
                raise MatbenchRunError(f"{self.manifest_path!r} was not written by this version of skpolysrl "
                                       "matbench; choose a new --out folder")
        else:
            if os.path.isdir(self.path) and os.listdir(self.path):
                raise MatbenchRunError(f"--out {self.path!r} exists and holds files skpolysrl matbench did not "
                                       "write; choose a new or empty folder")
            os.makedirs(self.path, exist_ok=True)
            self.manifest = {"format": 1, "settings": {}, "files": []}

    def check_settings(self, key, settings):
        """Refuse a (estimator, task) run whose settings differ from those stored for it."""
        stored = self.manifest["settings"].get(key)
        if stored is None:
            self.manifest["settings"][key] = settings
            self._save_manifest()
            return
        changed = [k for k in sorted(set(stored) | set(settings)) if stored.get(k) != settings.get(k)]
        if changed:
            detail = "; ".join(f"{k}: stored {stored.get(k)!r}, now {settings.get(k)!r}" for k in changed)
            raise MatbenchRunError(
                f"--out {self.path!r} holds results of {key} with other settings ({detail}). Mixing them would "
                f"give one result from two setups: use another --out folder, or delete "
                f"{os.path.join(self.path, *key.split('/'))!r} and its entry in {_MANIFEST} to recompute it")

    def file(self, *parts):
        return os.path.join(self.path, *parts)

    def write(self, relative, obj=None, text=None):
        path = self.file(*relative.split("/"))
        if os.path.exists(path) and relative not in self.manifest["files"]:
            raise MatbenchRunError(f"{path!r} exists and was not written by skpolysrl matbench; it is never "
                                   "overwritten: move it away or choose another --out folder")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        if relative not in self.manifest["files"]:
            self.manifest["files"].append(relative)
            self._save_manifest()
        if text is not None:
            atomic_write_text(path, text)
        else:
            _write_json(path, obj)
        return path

    def read(self, relative):
        path = self.file(*relative.split("/"))
        if relative not in self.manifest["files"] or not os.path.exists(path):
            return None
        with open(path) as fh:
            return json.load(fh)

    def _save_manifest(self):
        _write_json(self.manifest_path, self.manifest)


# ------------------------------------------------------------------ the matbench results file
def _hash_dictionary(d):
    """matbench.util.hash_dictionary: sha256 of the key-sorted JSON text."""
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode("utf-8")).hexdigest()


def _sorted_dict(d):
    return {k: _sorted_dict(v) if isinstance(v, dict) else v for k, v in sorted(d.items())}


def matbench_document(task_folds, user_metadata):
    """The dictionary ``MatbenchBenchmark.as_dict`` gives for recorded tasks.

    ``task_folds``: ``{task: [fold record, ...]}`` with 5 records each holding
    ``data`` ({id: prediction}), ``parameters`` and ``scores``.
    """
    tasks = {}
    for task, records in task_folds.items():
        results = {f"fold_{r['fold']}": {"data": r["data"], "uncertainty": None, "parameters": r["parameters"],
                                         "scores": r["scores"]} for r in records}
        tasks[task] = {"@module": "matbench.task", "@class": "MatbenchTask", "benchmark_name": _BENCHMARK,
                       "dataset_name": task, "results": results}
    d = {"@module": "matbench.bench", "@class": "MatbenchBenchmark", "version": _MATBENCH_VERSION,
         "tasks": _sorted_dict(tasks), "user_metadata": _sorted_dict(user_metadata), "benchmark_name": _BENCHMARK,
         "datestamp": datetime.datetime.now(datetime.timezone.utc).strftime(_DATESTAMP)}
    d["hash"] = _hash_dictionary(d)
    return d


# ------------------------------------------------------------------ the runner
def _estimator_factories(estimators):
    if isinstance(estimators, str):
        estimators = [estimators]
    if isinstance(estimators, dict):
        return dict(estimators)
    out = {}
    for name in estimators:
        if name not in ESTIMATORS:
            raise ValueError(f"unknown estimator {name!r}; choose from {', '.join(ESTIMATORS)}")
        out[name] = ESTIMATORS[name]
    return out


def _model_settings(model):
    if model is None or model == "default" or not os.path.isfile(os.fspath(model)):
        return {"model": None if model is None else os.fspath(model), "model_sha256": None}
    from .registry import _sha256

    return {"model": os.fspath(model), "model_sha256": _sha256(model)}


def _fold_done(record, ids, test):
    return record is not None and list(record["data"]) == [ids[i] for i in test]


def run_matbench(task="all", out="matbench_results", estimators=("probe",), *, model="default", device="auto",
                 random_state=0, verbose=True):
    """Run estimators on matbench composition tasks with the official folds; resumable per fold.

    Parameters
    ----------
    task : str or list of str, default="all"
        ``"all"`` or task names of :data:`TASKS` (``matbench_`` prefix optional).
    out : path, default="matbench_results"
        Output folder: new, empty, or one an earlier run with the same settings
        wrote (its finished folds are kept, the others run). Holds, per
        estimator, ``<name>/results.json`` (matbench format; tasks with all
        5 folds done) and ``<name>/<task>/fold_<k>.json``, plus
        ``summary.json`` and ``summary.md`` over all estimators.
    estimators : str, list of str, or dict, default=("probe",)
        Names from :data:`ESTIMATORS`, or ``{name: factory}`` with factories of
        the same signature.
    model : "default", None or path, default="default"
        PolySRL weights handed to the factories (ignored by ``rf-magpie``).
    device : str, default="auto"
    random_state : int, default=0
        Seed handed to every estimator (the folds are matbench's, fixed).
    verbose : bool, default=True
        Print a line per fold.

    Returns
    -------
    dict
        The summary written to ``summary.json``.

    Raises
    ------
    MatbenchRunError
        If ``out`` holds files this function did not write, or results of an
        (estimator, task) computed with other settings.
    """
    tasks = task_names(task)
    factories = _estimator_factories(estimators)
    folder = _Folder(out)
    from . import __version__

    plan = []  # every estimator is built and its settings checked before the first fold runs
    for name, factory in factories.items():
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.+-]*", name):
            raise ValueError(f"estimator name {name!r} is used as a folder name: use letters, digits, . _ + -")
        for t in tasks:
            estimator = factory(TASKS[t]["type"], task=t, model=model, device=device, random_state=random_state)
            settings = {"estimator": _describe(estimator), **_model_settings(model)}
            folder.check_settings(f"{name}/{t}", settings)
            plan.append((name, t, estimator, settings))
    for name, t, estimator, settings in plan:
        task_type = TASKS[t]["type"]
        formulas, y, ids, folds = load_task(t)
        for k, (train, test) in enumerate(folds):
            relative = f"{name}/{t}/fold_{k}.json"
            if _fold_done(folder.read(relative), ids, test):
                if verbose:
                    print(f"{name} {t} fold {k}: done earlier, kept", flush=True)
                continue
            record = _run_fold(estimator, task_type, formulas, y, ids, train, test, k)
            record["parameters"] = {"estimator": settings["estimator"], "skpolysrl": __version__}
            folder.write(relative, record)
            if verbose:
                metric = _HEADLINE[task_type]
                print(f"{name} {t} fold {k}: {metric} {record['scores'][metric]:.4f} ({record['seconds']:.0f} s)",
                      flush=True)
    return _write_reports(folder, factories, model)


def _run_fold(estimator, task_type, formulas, y, ids, train, test, k):
    from sklearn.base import clone

    t0 = time.perf_counter()
    model = clone(estimator).fit([formulas[i] for i in train], y[train])
    X_test = [formulas[i] for i in test]
    if task_type == "classification":
        prediction = _positive_probability(model, X_test)
    else:
        prediction = np.asarray(model.predict(X_test), dtype=np.float64).reshape(-1)
    if prediction.shape != (len(test),) or not np.all(np.isfinite(prediction)):
        raise ValueError(f"the estimator gave {np.size(prediction)} predictions for fold {k}'s {len(test)} test "
                         f"rows, {int(np.sum(~np.isfinite(prediction)))} of them not finite; matbench needs one "
                         "finite number per row")
    record = {"fold": k, "data": {ids[i]: float(p) for i, p in zip(test, prediction)},
              "scores": score_fold(task_type, y[test], prediction), "seconds": time.perf_counter() - t0,
              "n_train": int(len(train))}
    if task_type == "classification":
        record["probability_auc"] = probability_auc(y[test], prediction)
    return record


def _write_reports(folder, factories, model):
    from . import __version__

    summary = {"benchmark": _BENCHMARK, "model": None if model is None else os.fspath(model),
               "skpolysrl": __version__, "estimators": {}}
    names = dict.fromkeys(key.split("/")[0] for key in folder.manifest["settings"])  # every run into this folder
    for name in names:
        complete = {}
        rows = {}
        for t, spec in TASKS.items():
            records = [folder.read(f"{name}/{t}/fold_{k}.json") for k in range(_N_FOLDS)]
            if any(r is None for r in records):
                continue
            complete[t] = records
            metric = _HEADLINE[spec["type"]]
            values = np.array([r["scores"][metric] for r in records])
            rows[t] = {"metric": metric, "mean": float(values.mean()), "std": float(values.std()),
                       "folds": [float(v) for v in values], "seconds": float(sum(r["seconds"] for r in records))}
            if spec["type"] == "classification":
                auc = np.array([r["probability_auc"] for r in records])
                rows[t].update(probability_auc_mean=float(auc.mean()), probability_auc_std=float(auc.std()))
        if complete and name in factories:  # the other estimators' files are as their own runs left them
            metadata = {"algorithm": name, "skpolysrl_version": __version__,
                        "estimator": {t: folder.manifest["settings"][f"{name}/{t}"]["estimator"] for t in complete},
                        "model": summary["model"] or "none",
                        "data": "skpolysrl bundled matbench v0.1 CSVs (matbench row order); official folds"}
            folder.write(f"{name}/results.json", matbench_document(complete, metadata))
        summary["estimators"][name] = rows
    folder.write("summary.json", summary)
    folder.write("summary.md", text=summary_markdown(summary))
    return summary


_TABLE_NOTE = ("Mean +/- standard deviation over matbench's 5 folds; total time of the 5 folds. ROC AUC as matbench "
               "computes it (of the labels probability > 0.5, which the leaderboard compares); 'probabilities': "
               "ROC AUC of the predicted probabilities.\n")


def summary_markdown(summary):
    """A markdown table: one row per task, one column per estimator, ``mean +/- std`` (std over folds)."""
    names = list(summary["estimators"])
    lines = ["| task (metric) | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for t, spec in TASKS.items():
        cells = []
        for name in names:
            row = summary["estimators"][name].get(t)
            if row is None:
                cells.append("not run")
                continue
            auc = (f"; probabilities {row['probability_auc_mean']:.4f} +/- {row['probability_auc_std']:.4f}"
                   if "probability_auc_mean" in row else "")
            cells.append(f"{row['mean']:.4f} +/- {row['std']:.4f}{auc} ({row['seconds']:.0f} s)")
        if any(c != "not run" for c in cells):
            unit = f" {spec['unit']}" if spec["unit"] else ""
            lines.append(f"| {t} ({'MAE' + unit if spec['type'] == 'regression' else 'ROC AUC'}) | "
                         + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n\n" + _TABLE_NOTE
