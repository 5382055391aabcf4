"""Where pretraining structures come from.

``PolySRLFeaturizer.fit`` pretrains on crystal structures given as any of:

* a list (or Series, array) of pymatgen ``Structure``;
* a DataFrame with a ``structure`` column of ``Structure`` (or ``Structure.as_dict()``
  dicts), e.g. the bundled corpus or matminer's ``load_dataset("matbench_mp_e_form")``,
  or with a ``cif`` column of CIF text;
* a path (``str`` or ``os.PathLike``) to a directory of CIF/POSCAR files, to one such
  file, to a JSON-lines file (``.jsonl``/``.jsonl.gz``) or to a ``.csv``/``.parquet``
  table with a ``cif`` column;
* the Materials Project, through :func:`load_materials_project` (``mp-api`` extra).

:func:`as_structure_source` resolves all of them to a list of Structures (or None
for formula input); :func:`read_structure_source` reads the path sources into a
DataFrame with a ``structure`` column.
"""

import os
import warnings

import numpy as np
import pandas as pd

from ..exceptions import SkPolySRLError, StructureFileError, StructureFileWarning
from ._loaders import read_structures_jsonl

__all__ = [
    "STRUCTURE_FILE_PATTERNS",
    "as_structure_source",
    "load_materials_project",
    "read_structure_directory",
    "read_structure_source",
]

#: File names read from a directory (the extension case-insensitively; each may also be
#: compressed as .gz, .bz2 or .xz). Hidden files and folders (a leading ".") are skipped.
STRUCTURE_FILE_PATTERNS = ("*.cif", "POSCAR*", "CONTCAR*", "*.vasp", "*.poscar")

_COMPRESSED = (".gz", ".bz2", ".xz")
_JSONL = (".jsonl", ".jsonl.gz")
_TABLES = (".csv", ".parquet")
_PICKLES = (".pkl", ".pickle")
_MP_FIELDS = ("material_id", "formula_pretty", "structure")
_MP_INSTALL = 'pip install "skpolysrl[mp]"'
_SHOWN = 5  # names listed in one warning or error before "... and N more"


def _is_structure(x):
    from pymatgen.core import IStructure, Structure

    return isinstance(x, (Structure, IStructure))


def _file_kind(name):
    """"cif", "poscar" or None (not a structure file) for a file name."""
    if name.startswith("."):
        return None
    base = name
    for ext in _COMPRESSED:
        if base.lower().endswith(ext):
            base = base[: -len(ext)]
            break
    low = base.lower()
    if low.endswith(".cif"):
        return "cif"
    if low.endswith((".vasp", ".poscar")) or base.startswith(("POSCAR", "CONTCAR")):
        return "poscar"
    return None


def _listing(names, total=None):
    total = len(names) if total is None else total
    shown = "; ".join(names[:_SHOWN])
    return shown + (f"; ... and {total - _SHOWN} more" if total > _SHOWN else "")


def _why(exc, limit=300):
    """``Type: message`` of an exception on one line (the message alone for our own checks)."""
    text = " ".join(str(exc).split())
    text = f"{text[:limit]}{'...' if len(text) > limit else ''}"
    return text if isinstance(exc, _UnusableStructure) else f"{type(exc).__name__}: {text}"


class _UnusableStructure(ValueError):
    """A structure that parsed but cannot be trained on (its message says why)."""


def _check_structure(structure):
    """Raise _UnusableStructure if ``structure`` has bad geometry or a species without an embedding."""
    from .._elements import known_atomic_numbers
    from .._formula import parse_formula
    from ..exceptions import FormulaError
    from ..graphs import geometry_problem

    problem = geometry_problem(structure)
    if problem is None:
        try:
            parse_formula(structure.composition, known_atomic_numbers())
        except FormulaError as exc:
            problem = exc.reason
    if problem is not None:
        raise _UnusableStructure(problem)


def _parse_warnings(caught):
    """pymatgen's parse warnings worth passing on (deduplicated, in order)."""
    skip = (ResourceWarning, DeprecationWarning, PendingDeprecationWarning, FutureWarning)
    return list(dict.fromkeys(" ".join(str(w.message).split()) for w in caught if not issubclass(w.category, skip)))


def _read_structure_file(path, kind):
    """All structures in one CIF or POSCAR file, and pymatgen's warnings about it."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if kind == "cif":
            from pymatgen.io.cif import CifParser

            parser = CifParser(path)
            structures = parser.parse_structures(primitive=False, on_error="raise")
            # notes pymatgen would print as "Issues encountered while parsing CIF" (not with on_error="raise");
            # rounding of coordinates to ideal values is routine
            notes = [n for n in getattr(parser, "warnings", []) if "rounded to ideal values" not in n]
        else:
            from pymatgen.io.vasp import Poscar

            structures = [Poscar.from_file(path, check_for_potcar=False, read_velocities=False).structure]
            notes = []
    messages = list(dict.fromkeys(_parse_warnings(caught) + [" ".join(str(n).split()) for n in notes]))
    if kind == "poscar" and any("cannot be determined" in m for m in messages):
        # pymatgen would name the species H, He, Li, ...: wrong chemistry, so refuse
        raise ValueError("it gives no element symbols (VASP 4 format); add the line of element symbols "
                         "above the atom counts (VASP 5 format)")
    if not structures or any(len(s) == 0 for s in structures):
        raise ValueError("it holds no atoms")
    for structure in structures:
        _check_structure(structure)
    return structures, messages


def _list_structure_files(root, recursive):
    """(relative path with "/", kind) of every structure file under root, sorted."""
    found = []
    if recursive:
        for folder, dirs, files in os.walk(root):
            dirs[:] = [d for d in dirs if not d.startswith(".")]
            rel_folder = os.path.relpath(folder, root)
            for name in files:
                kind = _file_kind(name)
                if kind is not None:
                    rel = name if rel_folder == "." else os.path.join(rel_folder, name)
                    found.append((rel.replace(os.sep, "/"), kind))
    else:
        for name in os.listdir(root):
            kind = _file_kind(name)
            if kind is not None and os.path.isfile(os.path.join(root, name)):
                found.append((name, kind))
    return sorted(found, key=lambda item: item[0].split("/"))


def _no_files_reason(root, recursive):
    entries = sorted(os.listdir(root))
    subdirs = [e for e in entries if os.path.isdir(os.path.join(root, e)) and not e.startswith(".")]
    others = [e for e in entries if e not in subdirs and not e.startswith(".")]
    reason = f"no structure files ({', '.join(STRUCTURE_FILE_PATTERNS)}) in it"
    if not entries:
        reason += " (the directory is empty)"
    if others:
        reason += f"; other files there: {_listing(others)}"
    if subdirs and not recursive:
        reason += (f"; its {len(subdirs)} subfolder(s) ({_listing(subdirs)}) are searched only with "
                   "recursive=True (read_structure_directory(path, recursive=True), "
                   "or skpolysrl pretrain --recursive)")
    return reason


def read_structure_directory(path, recursive=False, ignore_errors=False, limit=None):
    """Read every CIF and POSCAR file of a directory.

    Files whose name matches ``*.cif``, ``POSCAR*``, ``CONTCAR*``, ``*.vasp`` or
    ``*.poscar`` (extensions case-insensitive, optionally compressed ``.gz``,
    ``.bz2``, ``.xz``) are read in sorted order of their relative path, so the
    result (and a seeded pretraining on it) does not depend on the file system.
    Other files, and hidden files and folders (a leading ``.``), are ignored. A CIF
    with several data blocks gives one structure per block; CIFs are read as
    written (``primitive=False``). POSCAR-like files must name their elements
    (VASP 5 format). A VASP run folder holds both ``POSCAR`` and ``CONTCAR``: both
    are read, as two structures of the same formula.

    Parameters
    ----------
    path : str or path-like
        The directory.
    recursive : bool, default=False
        Also read the files of all subfolders (e.g. one folder per calculation).
    ignore_errors : bool, default=False
        Skip files that fail to parse, with one :class:`~skpolysrl.exceptions.StructureFileWarning`
        naming them, instead of raising :class:`~skpolysrl.StructureFileError`.
        A file is read whole or skipped whole.
    limit : int, optional
        Stop after this many structures.

    Returns
    -------
    DataFrame with columns ``id`` (path relative to ``path``, with ``#k`` for the
    k-th block of a CIF holding several), ``path``, ``formula`` (reduced) and
    ``structure`` (pymatgen ``Structure``).

    Raises
    ------
    StructureFileError
        A file fails to parse (it is named; not raised with ``ignore_errors=True``),
        or the directory holds no structure files (or none readable).
    FileNotFoundError, NotADirectoryError
        ``path`` does not exist or is not a directory.

    Notes
    -----
    pymatgen's parse warnings (rounded coordinates, a missing symmetry key, ...)
    are gathered into one ``StructureFileWarning`` naming the files instead of
    one warning per file.
    """
    root = os.fspath(path)
    if not os.path.exists(root):
        raise FileNotFoundError(f"no such directory: {root!r}")
    if not os.path.isdir(root):
        raise NotADirectoryError(f"not a directory: {root!r}")
    files = _list_structure_files(root, recursive)
    if not files:
        raise StructureFileError(root, _no_files_reason(root, recursive), skippable=False)
    rows, skipped, warned = [], [], []
    for rel, kind in files:
        if limit is not None and len(rows) >= limit:
            break
        full = os.path.join(root, *rel.split("/"))
        try:
            structures, messages = _read_structure_file(full, kind)
        except Exception as exc:  # pymatgen raises ValueError, IndexError, KeyError, ... on bad files
            if not ignore_errors:
                raise StructureFileError(full, f"not a readable {'CIF' if kind == 'cif' else 'POSCAR'} file "
                                               f"({_why(exc)})") from None
            skipped.append(f"{rel} ({_why(exc, 200)})")
            continue
        if messages:
            more = f" (+{len(messages) - 1} more)" if len(messages) > 1 else ""
            warned.append(f"{rel}: {messages[0][:200]}{more}")
        for k, structure in enumerate(structures):
            rows.append({"id": rel if len(structures) == 1 else f"{rel}#{k}", "path": full,
                         "formula": structure.composition.reduced_formula, "structure": structure})
    if warned:
        warnings.warn(f"pymatgen warned while parsing {len(warned)} file(s) in {root} (their structures were read): "
                      f"{_listing(warned)}", StructureFileWarning, stacklevel=2)
    if skipped:
        warnings.warn(f"skipped {len(skipped)} unreadable structure file(s) in {root} (ignore_errors=True): "
                      f"{_listing(skipped)}", StructureFileWarning, stacklevel=2)
    if not rows:
        raise StructureFileError(root, f"none of its {len(files)} structure file(s) could be read", skippable=False)
    if limit is not None:
        rows = rows[:limit]
    return pd.DataFrame(rows, columns=["id", "path", "formula", "structure"])


def _structure_table(df, where, ignore_errors):
    """A copy of df whose ``structure`` column holds Structures (from ``structure`` or
    ``cif``), bad rows dropped under ignore_errors; None if df has neither column."""
    from pymatgen.core import IStructure, Structure

    if "structure" in df.columns:
        column, values = "structure", list(df["structure"])
        if all(isinstance(v, (Structure, IStructure)) for v in values):
            return df
    elif "cif" in df.columns:
        column, values = "cif", list(df["cif"])
    else:
        return None
    structures, keep, skipped, warned = [], [], [], []
    for pos, (label, value) in enumerate(zip(df.index, values)):
        try:
            if column == "cif":
                if not isinstance(value, str):
                    raise TypeError(f"expected CIF text, got {type(value).__name__} {value!r:.60}")
                from pymatgen.io.cif import CifParser

                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    parsed = CifParser.from_str(value).parse_structures(primitive=False, on_error="raise")
                messages = _parse_warnings(caught)
                if messages:
                    warned.append(f"row {label!r}: {messages[0][:200]}")
                if len(parsed) != 1:
                    raise ValueError(f"expected one structure per row, the CIF holds {len(parsed)}")
                value = parsed[0]
                _check_structure(value)
            elif isinstance(value, dict):
                value = Structure.from_dict(value)
            elif isinstance(value, str):
                raise TypeError("it holds text, not a pymatgen Structure: put CIF text in a column named 'cif' "
                                "(a CSV cannot hold Structures; pickle the DataFrame or write the structures "
                                "as CIF files to a directory instead)")
            elif not _is_structure(value):
                raise TypeError(f"expected a pymatgen Structure, got {type(value).__name__} {value!r:.60}")
        except Exception as exc:
            if not ignore_errors:
                raise StructureFileError(f"{where}, row {label!r} of column {column!r}", _why(exc)) from None
            skipped.append(f"row {label!r} ({type(exc).__name__})")
            continue
        structures.append(value)
        keep.append(pos)
    if warned:
        warnings.warn(f"pymatgen warned while parsing {len(warned)} CIF(s) of {where} (their structures were read): "
                      f"{_listing(warned)}", StructureFileWarning, stacklevel=3)
    if skipped:
        warnings.warn(f"skipped {len(skipped)} row(s) of {where} whose {column!r} is not a structure "
                      f"(ignore_errors=True): {_listing(skipped)}", StructureFileWarning, stacklevel=3)
    out = df.iloc[keep].copy()
    out["structure"] = structures
    return out


def read_structure_source(path, recursive=False, ignore_errors=False, limit=None, allow_pickle=False):
    """Read crystal structures from a path, whatever kind of source it is.

    Parameters
    ----------
    path : str or path-like
        * a directory of CIF/POSCAR files (:func:`read_structure_directory`);
        * one CIF (all its blocks) or POSCAR/CONTCAR/``.vasp``/``.poscar`` file;
        * a JSON-lines file ``.jsonl`` or ``.jsonl.gz`` (:func:`read_structures_jsonl`);
        * a ``.csv`` or ``.parquet`` table with CIF text in a column ``cif`` (one
          structure per row);
        * with ``allow_pickle=True``: a pickled DataFrame (``.pkl``, ``.pickle``)
          with a ``structure`` column of pymatgen Structures. Unpickling runs code
          from the file: load only files you trust.
    recursive : bool, default=False
        For a directory: also read its subfolders.
    ignore_errors : bool, default=False
        Skip unreadable files (of a directory) or rows (of a table) with a warning
        naming them, instead of raising :class:`~skpolysrl.StructureFileError`.
    limit : int, optional
        Only the first ``limit`` structures.
    allow_pickle : bool, default=False

    Returns
    -------
    DataFrame with a ``structure`` column (and ``id``, ``formula`` where the source has them).
    """
    name = os.fspath(path)
    if os.path.isdir(name):
        return read_structure_directory(name, recursive=recursive, ignore_errors=ignore_errors, limit=limit)
    if not os.path.exists(name):
        raise FileNotFoundError(
            f"no such file or directory: {name!r} (fit and skpolysrl pretrain read structures from a directory "
            "of CIF/POSCAR files, a CIF/POSCAR file, a .jsonl[.gz] file or a .csv/.parquet table with a 'cif' "
            "column; formulas go in a list: fit(['NaCl'])"
        )
    low = name.lower()
    if low.endswith(_JSONL):
        try:
            return read_structures_jsonl(name, limit=limit)
        except SkPolySRLError as exc:
            reason = str(exc)
            reason = reason[len(name) + 2:] if reason.startswith(f"{name}, ") else reason
            raise StructureFileError(name, reason.rstrip("."), skippable=False) from None
    kind = _file_kind(os.path.basename(name))
    if kind is not None:
        try:
            structures, messages = _read_structure_file(name, kind)
        except Exception as exc:
            raise StructureFileError(name, f"not a readable {'CIF' if kind == 'cif' else 'POSCAR'} file "
                                           f"({_why(exc)})", skippable=False) from None
        if messages:
            warnings.warn(f"pymatgen warned while parsing {name} (its structures were read): {messages[0][:300]}",
                          StructureFileWarning, stacklevel=2)
        structures = structures[:limit]
        ids = [os.path.basename(name)] if len(structures) == 1 else [f"{os.path.basename(name)}#{k}"
                                                                     for k in range(len(structures))]
        return pd.DataFrame({"id": ids, "path": name,
                             "formula": [s.composition.reduced_formula for s in structures], "structure": structures})
    if low.endswith(_TABLES + _PICKLES):
        if low.endswith(_PICKLES):
            if not allow_pickle:
                raise StructureFileError(name, "pickles are not read here (unpickling runs code from the file); "
                                               "load one you trust with pandas.read_pickle and pass the DataFrame",
                                         skippable=False)
            table = pd.read_pickle(name)
            if not isinstance(table, pd.DataFrame):
                raise StructureFileError(name, f"the pickle holds a {type(table).__name__}, not a DataFrame",
                                         skippable=False)
        else:
            table = pd.read_parquet(name) if low.endswith(".parquet") else pd.read_csv(name)
        if limit is not None:
            table = table.head(limit)
        out = _structure_table(table, name, ignore_errors)
        if out is None:
            raise StructureFileError(name, f"no 'structure' or 'cif' column (columns: {list(table.columns)}); "
                                           "put CIF text in a column named 'cif'", skippable=False)
        return out.reset_index(drop=True)
    raise StructureFileError(
        name, "not a structure source skpolysrl reads: expected a directory of CIF/POSCAR files, a CIF or "
              f"POSCAR file ({', '.join(STRUCTURE_FILE_PATTERNS)}), a .jsonl[.gz] file, or a .csv/.parquet "
              "table with a 'cif' column", skippable=False)


def as_structure_source(X, ignore_errors=False):
    """The structures ``fit`` pretrains on, as a list of pymatgen Structures; None for formula input.

    X may be a list/tuple/Series/array of Structures; a DataFrame with a
    ``structure`` column (Structures or ``Structure.as_dict()`` dicts) or a ``cif``
    column (CIF text); or a path (str or ``os.PathLike``) that
    :func:`read_structure_source` reads (directories are read non-recursively:
    pass ``read_structure_directory(path, recursive=True)`` for subfolders).
    Anything else (formulas, Compositions, an empty list) gives None.
    """
    if isinstance(X, (str, os.PathLike)):
        return list(read_structure_source(X, ignore_errors=ignore_errors)["structure"])
    if isinstance(X, pd.DataFrame):
        table = _structure_table(X, "the DataFrame", ignore_errors)
        return None if table is None else list(table["structure"])
    if isinstance(X, (list, tuple, pd.Series, np.ndarray)) and len(X) > 0:
        items = list(np.ravel(np.asarray(X, dtype=object))) if isinstance(X, np.ndarray) else list(X)
        if all(_is_structure(x) for x in items):
            return items
    return None


def load_materials_project(api_key=None, fields=(), **criteria):
    """Structures from the Materials Project API (needs ``pip install "skpolysrl[mp]"`` and a key).

    Calls ``MPRester(api_key).materials.summary.search(fields=..., **criteria)``
    of the ``mp-api`` client. Without criteria this downloads every material
    (150k+, a long download); the PolySRL paper pretrained on about 112k MP
    structures.

    Parameters
    ----------
    api_key : str, optional
        Your Materials Project API key (https://next-gen.materialsproject.org/api);
        default: the ``MP_API_KEY`` environment variable.
    fields : sequence of str, optional
        Extra summary fields to add as columns (e.g. ``"formation_energy_per_atom"``,
        ``"energy_above_hull"``, ``"band_gap"``).
    **criteria
        Passed to ``materials.summary.search``, e.g. ``elements=["Li", "O"]``,
        ``num_elements=(1, 3)``, ``energy_above_hull=(0, 0.1)``,
        ``deprecated=False``, or ``num_chunks=1, chunk_size=100`` for a quick look.

    Returns
    -------
    DataFrame with columns ``material_id``, ``formula``, ``structure`` (then the
    extra fields), which ``PolySRLFeaturizer.fit`` takes directly.

    Examples
    --------
    >>> df = load_materials_project(num_elements=(1, 3), deprecated=False)  # doctest: +SKIP
    >>> PolySRLFeaturizer(pretrained=None, epochs=100).fit(df)  # doctest: +SKIP
    """
    try:
        from mp_api.client import MPRester
    except ImportError as exc:
        raise ImportError(
            f"load_materials_project needs the Materials Project client mp-api: {_MP_INSTALL} "
            f"(or pip install mp-api); import failed with: {exc}"
        ) from exc
    key = api_key or os.environ.get("MP_API_KEY")
    if not key:
        raise ValueError("no Materials Project API key: pass load_materials_project(api_key=...) or set the "
                         "MP_API_KEY environment variable (your key: https://next-gen.materialsproject.org/api)")
    if isinstance(fields, str):
        fields = [fields]
    extra = [f for f in dict.fromkeys(fields) if f not in _MP_FIELDS]
    with MPRester(key) as mpr:
        docs = mpr.materials.summary.search(fields=[*_MP_FIELDS, *extra], **criteria)
    from pymatgen.core import Structure

    rows = []
    for doc in docs:
        get = doc.get if isinstance(doc, dict) else (lambda name, default=None, d=doc: getattr(d, name, default))
        structure = get("structure")
        if isinstance(structure, dict):
            structure = Structure.from_dict(structure)
        if not _is_structure(structure):
            raise SkPolySRLError(f"Materials Project entry {get('material_id')} came without a structure")
        row = {"material_id": str(get("material_id")),
               "formula": get("formula_pretty") or structure.composition.reduced_formula, "structure": structure}
        for name in extra:
            row[name] = get(name)
        rows.append(row)
    return pd.DataFrame(rows, columns=["material_id", "formula", "structure", *extra])
