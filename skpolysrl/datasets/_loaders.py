import gzip
import json
import os
from importlib import resources

import pandas as pd

from ..exceptions import SkPolySRLError


def _data_path(name):
    return resources.files("skpolysrl.datasets") / "data" / name


def _structure_from_record(record):
    from pymatgen.core import Lattice, Structure

    if "structure" in record:  # pymatgen Structure.as_dict()
        return Structure.from_dict(record["structure"])
    # compact rows (lattice, atomic numbers, fractional coordinates), as in mp2025_structures.jsonl.gz
    return Structure(Lattice(record["lattice"]), record["species"], record["frac"])


def read_structures_jsonl(path, limit=None, structures=True, max_sites=None, skip_formulas=None):
    """Read a JSON-lines file (optionally gzipped) of crystal structures.

    Each line is an object with ``id``, ``formula`` and either ``structure``
    (a pymatgen ``Structure.as_dict()``) or the compact ``lattice`` (3x3, angstrom),
    ``species`` (atomic numbers) and ``frac`` (fractional coordinates).

    Parameters
    ----------
    path : str or path-like
    limit : int, optional
        Read only the first ``limit`` rows.
    structures : bool, default=True
        Build pymatgen ``Structure`` objects (the slow part); if False the
        ``structure`` column is left out.
    max_sites : int, optional
        Leave out structures of more sites (read from compact records before
        building anything; cells of many sites cost the most to encode).
    skip_formulas : collection of str, optional
        Leave out rows whose ``formula`` field is one of these (e.g. formulas
        held out for evaluation).

    Returns
    -------
    DataFrame with columns id, formula, structure, plus any other scalar fields.
    """
    opener = gzip.open if os.fspath(path).endswith(".gz") else open
    rows = []
    with opener(path, "rt") as fh:
        for lineno, line in enumerate(fh, start=1):
            if limit is not None and len(rows) >= limit:
                break
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                if skip_formulas is not None and record.get("formula") in skip_formulas:
                    continue
                if max_sites is not None and len(record.get("species") or record.get("structure", {}).get("sites", ())) > max_sites:
                    continue
                row = {"id": record.get("id"), "formula": record.get("formula")}
                if structures:
                    row["structure"] = _structure_from_record(record)
                for key, value in record.items():
                    if key not in row and key not in ("structure", "lattice", "species", "frac") and not isinstance(value, (dict, list)):
                        row[key] = value
            except Exception as exc:
                raise SkPolySRLError(
                    f"{path}, line {lineno}: not a structure record ({type(exc).__name__}: {exc}); "
                    "fix or remove that line"
                ) from None
            if structures and not row["formula"]:
                row["formula"] = row["structure"].composition.reduced_formula
            rows.append(row)
    return pd.DataFrame(rows)


def load_mp_structures(limit=None, structures=True):
    """The bundled corpus: 6,317 Materials Project structures (5,667 formulas).

    Parameters
    ----------
    limit : int, optional
        Only the first ``limit`` structures (faster for demos and tests).
    structures : bool, default=True
        Build pymatgen Structures (about a second per thousand).

    Returns
    -------
    DataFrame with columns id, formula, structure, source,
    formation_energy_per_atom and e_above_hull (the last two NaN outside the
    Faber 2015 subset).
    """
    with resources.as_file(_data_path("mp_structures.jsonl.gz")) as path:
        return read_structures_jsonl(path, limit=limit, structures=structures)


def load_expt_gap_nonmetals():
    """Experimental band gaps of non-metals (Zhuo et al. 2018): the paper's "Band Gap" set.

    Rows with the same composition string are averaged, giving 2,482
    stoichiometries in order of first appearance.

    Returns
    -------
    DataFrame with columns formula, target (eV).
    """
    with resources.as_file(_data_path("expt_gap_nonmetals_zhuo.csv")) as path:
        raw = pd.read_csv(path)
    df = raw.groupby("composition", sort=False)["Eg"].mean().reset_index()
    return df.rename(columns={"composition": "formula", "Eg": "target"})
