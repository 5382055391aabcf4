"""Formula + target tables: matbench composition tasks, MP properties, and a user's own file."""

import functools
import os
import warnings
from importlib import resources

import numpy as np
import pandas as pd

from ..exceptions import FormulaError, SkPolySRLError

__all__ = ["load_matbench", "load_mp_property", "load_table", "read_table", "MATBENCH_TASKS", "DATASETS",
           "DATASET_ALIASES", "MATBENCH_CLASSIFICATION_TASKS", "dataset_task_type", "load_dataset"]

#: matbench composition tasks bundled with the package (target units in brackets).
MATBENCH_TASKS = {
    "expt_gap": "experimental band gap [eV], metals included (4,604 formulas)",
    "expt_is_metal": "experimental metallicity, 1 = metal (4,921 formulas)",
    "glass": "metallic glass forming ability, 1 = forms a glass (5,680 formulas)",
    "steels_yield": "steel yield strength [MPa] (312 alloys)",
}

#: matbench tasks scored as classification (ROC AUC on stratified folds); every other task is regression.
MATBENCH_CLASSIFICATION_TASKS = frozenset({"matbench_expt_is_metal", "matbench_glass", "matbench_mp_is_metal"})

#: Earlier names of bundled datasets, accepted wherever a dataset or matbench task is named.
DATASET_ALIASES = {"expt_gap_nonmetals": "band_gap", "matbench_steels": "matbench_steels_yield"}

_MP_PROPERTIES = {"band_gap": "mp_gap", "formation_energy": "mp_e_form"}


def _data_path(name):
    return resources.files("skpolysrl.datasets") / "data" / name


def _is_text_table(path):
    return not os.fspath(path).lower().endswith((".xlsx", ".xls", ".xlsm", ".parquet", ".json", ".jsonl", ".json.gz",
                                                 ".jsonl.gz"))


def row_label(path, index):
    """A row of a table file as its user sees it: ``data row N of FILE`` (1-based, header not
    counted), plus the line number for CSV/TSV files (one header line)."""
    line = f" (line {index + 2})" if _is_text_table(path) else ""
    return f"data row {index + 1} of {os.path.basename(os.fspath(path))}{line}"


def read_table(path, sheet_name=0, text_cols=()):
    """Read a CSV, TSV, Excel (``.xlsx``/``.xls``), Parquet or JSON file into a DataFrame.

    Parameters
    ----------
    path : str or path-like
    sheet_name : str or int, default=0
        Sheet of an Excel workbook.
    text_cols : sequence of str, default=()
        Columns read as written (CSV, TSV, Excel): there ``NaN`` (Na + N), ``NA``,
        ``None`` or ``null`` are formulas, not missing values; only an empty
        cell is missing.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    SkPolySRLError
        If the file is empty or cannot be parsed; the message names the file.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no such data file: {path!r}")
    if os.path.isfile(path) and os.path.getsize(path) == 0:
        raise SkPolySRLError(f"{path!r} is empty (0 bytes); expected a table with a header row")
    lower = path.lower()
    try:
        if lower.endswith((".xlsx", ".xls", ".xlsm")):
            read = functools.partial(pd.read_excel, path, sheet_name=sheet_name)
        elif lower.endswith(".parquet"):
            return pd.read_parquet(path)
        elif lower.endswith((".json", ".jsonl", ".json.gz", ".jsonl.gz")):
            return pd.read_json(path, lines=".jsonl" in lower)
        else:
            read = functools.partial(pd.read_csv, path, sep="\t" if lower.endswith((".tsv", ".tab")) else ",")
        table = read()
        text_cols = [c for c in text_cols if c in table.columns]
        if text_cols:  # again, as text: pandas' missing-value words are formulas there
            text = read(usecols=text_cols, dtype=str, keep_default_na=False)
            for column in text_cols:
                table[column] = text[column].replace("", np.nan).to_numpy()
        return table
    except ImportError as exc:  # the optional engines pandas needs for these formats
        extra = "xlsx" if lower.endswith((".xlsx", ".xls", ".xlsm")) else "parquet"
        raise ImportError(f"reading {path!r} needs an optional package ({exc}); "
                          f'pip install "skpolysrl[{extra}]", or save the table as CSV') from exc
    except Exception as exc:
        raise SkPolySRLError(f"cannot read {path!r} as a table ({type(exc).__name__}: {exc}); "
                             "expected CSV, TSV, XLSX, Parquet or JSON") from exc


def _average_duplicates(df, formula_col, target_col, reduce):
    """One row per stoichiometry: targets of formulas that reduce to the same composition are averaged."""
    if reduce:
        from pymatgen.core import Composition

        keys = [Composition(f).reduced_formula for f in df[formula_col]]
    else:
        keys = df[formula_col]
    out = df.assign(_key=keys).groupby("_key", sort=False).agg({formula_col: "first", target_col: "mean"})
    return out.reset_index(drop=True)


def load_table(path, formula_col="formula", target_col="target", *, sheet_name=0, average_duplicates=False,
               temperature_col=None, temperature_window=None, extra_cols=(), ignore_errors=False,
               task_type="regression"):
    """Load a user's table of formulas and targets (CSV/XLSX/Parquet/JSON).

    This is how data we cannot ship are run through the paper's protocols: the
    Kim 2017 formation enthalpies, the metallic glasses, the ESTM thermoelectrics.

    Parameters
    ----------
    path : str or path-like
        The file (see :func:`read_table` for formats).
    formula_col, target_col : str
        Columns holding the formulas and the target.
    sheet_name : str or int, default=0
        Sheet of an Excel workbook.
    average_duplicates : bool, default=False
        Average the targets of rows whose formulas reduce to the same
        stoichiometry (the paper does this for the band gap and formation
        enthalpy sets).
    temperature_col : str, optional
        Column of measurement temperatures (K), used with ``temperature_window``.
    temperature_window : (float, float), optional
        Keep rows measured in ``[lo, hi]`` K (inclusive), e.g. ``(295, 305)``
        for ESTM 300 K or ``(593, 608)`` for ESTM 600 K.
    extra_cols : sequence of str
        Further columns to keep (e.g. the other ESTM properties, for ZT).
    ignore_errors : bool, default=False
        Drop rows whose formula cannot be read (a warning names the first)
        instead of raising.
    task_type : {"regression", "classification"}, default="regression"
        ``"classification"``: the target holds class labels, kept as they are
        (text or numbers); only empty cells count as missing.

    Returns
    -------
    DataFrame
        Columns ``formula``, ``target`` (float for regression), then
        ``extra_cols``; rows with a missing formula or target (regression:
        also a non-numeric one) are dropped (a warning says how many).
        Formulas are read as text: ``NaN`` is sodium nitride, not a missing value.

    Raises
    ------
    KeyError
        If a named column is missing; the message lists the columns there are.
    FormulaError
        A formula cannot be read (without ``ignore_errors``); the message names
        its row as in the file.
    ValueError
        A target is infinite, or no rows are left.
    """
    df = read_table(path, sheet_name=sheet_name, text_cols=[formula_col])
    needed = [formula_col, target_col, *extra_cols] + ([temperature_col] if temperature_col else [])
    missing = [c for c in needed if c not in df.columns]
    if missing:
        raise KeyError(f"{os.fspath(path)!r} has no column(s) {missing}; its columns are {list(df.columns)}. "
                       "Name them with formula_col=/target_col= (CLI: --formula-col/--target-col)")
    if temperature_window is not None:
        if temperature_col is None:
            raise ValueError("temperature_window needs temperature_col, the column of temperatures in K")
        df = select_temperature_window(df, temperature_col, temperature_window)
    if task_type not in ("regression", "classification"):
        raise ValueError(f"task_type must be 'regression' or 'classification', got {task_type!r}")
    classification = task_type == "classification"
    if classification and average_duplicates:
        raise ValueError("average_duplicates averages numeric targets; it does not apply to class labels")
    df = df[[formula_col, target_col, *extra_cols]].copy()
    if not classification:
        df[target_col] = pd.to_numeric(df[target_col], errors="coerce")
    bad = df[formula_col].isna() | df[target_col].isna()
    if bad.any():
        warnings.warn(f"{os.fspath(path)!r}: dropped {int(bad.sum())} of {len(df)} rows with a missing formula "
                      f"or a {'missing label' if classification else 'non-numeric target'} "
                      f"(first: {row_label(path, df.index[bad.to_numpy()][0])})", stacklevel=2)
        df = df[~bad]
    numeric = not classification or pd.api.types.is_numeric_dtype(df[target_col])
    infinite = ~np.isfinite(df[target_col].to_numpy(dtype=float)) if numeric else np.zeros(len(df), dtype=bool)
    if infinite.any():
        raise ValueError(f"{os.fspath(path)!r}: target {df[target_col].to_numpy()[infinite][0]} at "
                         f"{row_label(path, df.index[infinite][0])} is not finite; fix or remove that row")
    df = _drop_bad_formulas(df, formula_col, path, ignore_errors)
    if len(df) == 0:
        raise ValueError(f"{os.fspath(path)!r} has no rows with a formula and a "
                         f"{'label' if classification else 'numeric target'}")
    if average_duplicates:
        if extra_cols:
            raise ValueError("average_duplicates cannot be combined with extra_cols")
        df = _average_duplicates(df, formula_col, target_col, reduce=True)
    df = df.rename(columns={formula_col: "formula", target_col: "target"}).reset_index(drop=True)
    if not classification:
        df["target"] = df["target"].astype(float)
    return df


def _drop_bad_formulas(df, formula_col, path, ignore_errors):
    """df without the rows whose formula cannot be read (ignore_errors), else a FormulaError naming the first."""
    from .._elements import known_atomic_numbers
    from .._formula import parse_formula

    known = known_atomic_numbers()
    bad, first = [], None
    for index, item in zip(df.index, df[formula_col]):
        try:
            parse_formula(item, known)
        except FormulaError as exc:
            bad.append(index)
            if first is None:
                first = FormulaError(exc.item, exc.reason, where=row_label(path, index))
                if not ignore_errors:
                    raise first from None
    if bad:
        warnings.warn(f"{os.fspath(path)!r}: dropped {len(bad)} of {len(df)} rows with a formula that cannot be "
                      f"read (ignore_errors=True); first: {first.item!r} at {first.where}: {first.reason}",
                      stacklevel=3)
        df = df.drop(index=bad)
    return df


def select_temperature_window(df, temperature_col, window):
    """Rows of ``df`` whose ``temperature_col`` lies in ``[lo, hi]`` (inclusive), as in the ESTM sets."""
    lo, hi = map(float, window)
    if lo > hi:
        raise ValueError(f"temperature window must be (low, high), got {window}")
    t = pd.to_numeric(df[temperature_col], errors="coerce")
    return df[(t >= lo) & (t <= hi)]


def load_matbench(name, source="bundled"):
    """A matbench composition task as a DataFrame ``formula, target``.

    Parameters
    ----------
    name : {"expt_gap", "expt_is_metal", "glass", "steels_yield"}
        The task (``matbench_`` prefix optional; ``steels`` is an alias of
        ``steels_yield``), see :data:`MATBENCH_TASKS`.
    source : {"bundled", "matminer"}, default="bundled"
        ``"bundled"`` reads the copy shipped in the package (matbench v0.1 via
        the CrabNet repository, MIT licence); ``"matminer"`` calls
        ``matminer.datasets.load_dataset("matbench_<name>")``, which downloads
        (online only) and renames the columns to ``formula, target``.

    Notes
    -----
    matbench scores its regression tasks on ``KFold(5, shuffle=True, random_state=18012019)``
    and its classification tasks (:data:`MATBENCH_CLASSIFICATION_TASKS`) on
    ``StratifiedKFold`` with the same arguments: :func:`skpolysrl.model_selection.matbench_kfold`.
    """
    full = _canonical(name if name.startswith("matbench_") else f"matbench_{name}")
    key = full[len("matbench_"):]
    if key not in MATBENCH_TASKS:
        raise ValueError(f"unknown matbench task {name!r}; bundled tasks: {sorted(MATBENCH_TASKS)}")
    if source == "matminer":
        from matminer.datasets import load_dataset as mm_load

        matbench_name = {v: k for k, v in DATASET_ALIASES.items()}.get(full, full)  # matbench_steels
        df = mm_load(matbench_name)
        formula_col = "composition"
        target_col = [c for c in df.columns if c != formula_col][0]
        return df.rename(columns={formula_col: "formula", target_col: "target"})[["formula", "target"]]
    if source != "bundled":
        raise ValueError(f"source must be 'bundled' or 'matminer', got {source!r}")
    with resources.as_file(_data_path(f"matbench_{key}.csv")) as path:
        df = pd.read_csv(path)
    df["target"] = df["target"].astype(float)
    return df


def load_mp_property(name="band_gap", path=None):
    """DFT properties per formula from the Materials Project, for ``objective="supervised"``.

    Parameters
    ----------
    name : {"band_gap", "formation_energy"}
        MP PBE band gap (eV) or formation energy per atom (eV/atom): the
        paper's "MP Band G." and "MP Form. E." pretraining targets.
    path : str or path-like, optional
        A full matbench-style CSV (``formula,target``, one row per MP
        structure, e.g. ``matbench_mp_gap`` / ``matbench_mp_e_form`` as saved
        from matminer). Default: the bundled subset, the formulas of the
        bundled 6,317-structure corpus (5,470 with a band gap, 5,657 with a
        formation energy).

    Returns
    -------
    DataFrame
        ``formula`` (reduced), ``target``: one row per stoichiometry, the mean
        over its MP structures (polymorphs).
    """
    if name not in _MP_PROPERTIES:
        raise ValueError(f"name must be one of {sorted(_MP_PROPERTIES)}, got {name!r}")
    if path is None:
        with resources.as_file(_data_path(f"{_MP_PROPERTIES[name]}_corpus.csv")) as bundled:
            return pd.read_csv(bundled)
    df = load_table(path, "formula", "target")
    return _average_duplicates(df, "formula", "target", reduce=True)


def _band_gap():
    from ._loaders import load_expt_gap_nonmetals

    return load_expt_gap_nonmetals()


#: Names accepted by :func:`load_dataset` and ``skpolysrl evaluate --dataset``.
DATASETS = {
    "band_gap": "the paper's Band Gap set: 2,482 non-metal stoichiometries, experimental gaps (eV)",
    **{f"matbench_{k}": v for k, v in MATBENCH_TASKS.items()},
    "mp_band_gap": "MP PBE band gap per formula of the bundled corpus (eV)",
    "mp_formation_energy": "MP formation energy per atom per formula of the bundled corpus (eV/atom)",
}


def _canonical(name):
    return DATASET_ALIASES.get(name, name)


def dataset_task_type(name):
    """``"classification"`` for the matbench classification tasks (:data:`MATBENCH_CLASSIFICATION_TASKS`,
    ``matbench_`` prefix optional), ``"regression"`` for every other dataset or task name."""
    name = _canonical(name)
    if not name.startswith("matbench_") and name not in DATASETS:  # a bare matbench task name
        name = f"matbench_{name}"
    return "classification" if name in MATBENCH_CLASSIFICATION_TASKS else "regression"


def load_dataset(name):
    """Any bundled formula + target set by name (see :data:`DATASETS`; the old names in
    :data:`DATASET_ALIASES` work too)."""
    name = _canonical(name)
    if name == "band_gap":
        return _band_gap()
    if name.startswith("matbench_"):
        return load_matbench(name)
    if name == "mp_band_gap":
        return load_mp_property("band_gap")
    if name == "mp_formation_energy":
        return load_mp_property("formation_energy")
    raise ValueError(f"unknown dataset {name!r}; bundled datasets: {sorted(DATASETS)} "
                     f"(also under their earlier names {sorted(DATASET_ALIASES)})")
