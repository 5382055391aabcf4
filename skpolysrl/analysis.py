"""Helpers for analysing PolySRL uncertainties (the paper's Fig. 3).

These group formulas the way the paper's uncertainty analysis does: by how many
crystal structures (polymorphs) a formula has in a structure corpus (Fig. 3a), and
by whether a formula is doped or alloyed, i.e. has non-integer amounts (Fig. 3b).
Plots of the results are in :mod:`skpolysrl.plotting`.
"""

import math
import re
import warnings

import numpy as np
import pandas as pd

from .exceptions import FormulaError

__all__ = ["is_fractional_formula", "count_structures_per_formula"]

# Adduct separators, as accepted by PolySRLFeaturizer: "CuSO4·5H2O" = CuSO4 + 5 H2O.
_ADDUCT_SPLIT = re.compile(r"\s*[·•∙*]\s*")
_LEADING_COUNT = re.compile(r"^(\d+(?:\.\d*)?|\.\d+)\s*(?=[A-Z(\[])")


def _composition(item, position):
    """Formula string, Composition, dict or Structure -> pymatgen Composition (as written, not reduced)."""
    from pymatgen.core import Composition

    if isinstance(item, Composition):
        return item
    composition = getattr(item, "composition", None)  # Structure, Molecule, ComputedEntry
    if isinstance(composition, Composition):
        return composition
    try:
        if isinstance(item, dict):
            return Composition(item)
        if not isinstance(item, str):
            kind = "missing value" if item is None or (isinstance(item, float) and math.isnan(item)) else (
                f"unsupported type {type(item).__name__}")
            raise TypeError(f"{kind}, not a formula")
        if not item.strip():
            raise ValueError("empty formula")
        total = None
        for part in _ADDUCT_SPLIT.split(item.strip()):
            factor = 1.0
            match = _LEADING_COUNT.match(part)
            if match:
                factor = float(match.group(1))
                part = part[match.end():]
            comp = Composition(part) * factor
            total = comp if total is None else total + comp
        for species in total:
            if type(getattr(species, "element", species)).__name__ != "Element":
                raise ValueError(f"{species} is not a chemical element")
        return total
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise FormulaError(item, str(exc).strip() or type(exc).__name__, position) from None


def is_fractional_formula(formulas, tol=1e-6):
    """Whether each formula is doped or alloyed: some element amount is not an integer.

    The amounts are read as written (``Bi2Te2.7Se0.3``, ``Hg0.7Cd0.3Te`` and
    ``(Bi2Te3)0.9(Sb2Te3)0.1`` are fractional; ``Fe2O3``, ``Al(CoSi)2`` and
    ``CuSO4·5H2O`` are not), so that this splits a data set into the
    doped/alloyed and stoichiometric groups of the paper's Fig. 3b.

    Parameters
    ----------
    formulas : list-like of str, pymatgen Composition or Structure
        Formula strings (nested parentheses and adducts written with ``·`` or
        ``*`` are read, as by :class:`~skpolysrl.PolySRLFeaturizer`),
        Compositions or Structures (a Structure with partially occupied sites
        has fractional amounts).
    tol : float, default=1e-6
        Amounts within ``tol`` of an integer count as integers.

    Returns
    -------
    ndarray of bool, shape (n_formulas,)
        True where at least one element amount is non-integer.

    Raises
    ------
    FormulaError
        If an item cannot be read as a formula (the message names it and its position).

    Examples
    --------
    >>> from skpolysrl.analysis import is_fractional_formula
    >>> is_fractional_formula(["Fe2O3", "Bi2Te2.7Se0.3", "(Bi2Te3)0.9(Sb2Te3)0.1", "SiO2"])
    array([False,  True,  True, False])
    """
    if isinstance(formulas, str):
        raise TypeError(f"expected a list-like of formulas, got a string; wrap it in a list: [{formulas!r}]")
    out = []
    for position, item in enumerate(formulas):
        amounts = np.array(list(_composition(item, position).values()), dtype=float)
        out.append(bool(np.any(np.abs(amounts - np.round(amounts)) > tol)))
    return np.array(out, dtype=bool)


def count_structures_per_formula(formulas):
    """Number of structures (polymorphs) per distinct formula in a structure corpus.

    Formulas are compared by their reduced composition, so ``Fe4O6`` and
    ``Fe2O3``, or ``OFe2`` and ``Fe2O``, count as one formula.

    Parameters
    ----------
    formulas : list-like of str, pymatgen Composition or Structure
        One item per structure, e.g. the ``formula`` column of
        :func:`skpolysrl.datasets.load_mp_structures` (``structures=False`` is
        enough and fast).

    Returns
    -------
    pandas.Series
        Indexed by reduced formula (pymatgen ``reduced_formula``), the number
        of structures with that formula, in order of first appearance; its
        name is ``"n_structures"``.

    Raises
    ------
    FormulaError
        If an item cannot be read as a formula.

    Examples
    --------
    >>> from skpolysrl.analysis import count_structures_per_formula
    >>> count_structures_per_formula(["TiO2", "Ti2O4", "SiO2", "TiO2"]).to_dict()
    {'TiO2': 3, 'SiO2': 1}
    """
    if isinstance(formulas, str):
        raise TypeError(f"expected a list-like of formulas, got a string; wrap it in a list: [{formulas!r}]")
    cache = {}
    reduced = []
    with warnings.catch_warnings():
        # reduced_formula orders elements by electronegativity; pymatgen warns that noble gases have none
        warnings.filterwarnings("ignore", message="No Pauling electronegativity", category=UserWarning)
        for position, item in enumerate(formulas):
            if isinstance(item, str):
                if item not in cache:
                    cache[item] = _composition(item, position).reduced_formula
                reduced.append(cache[item])
            else:
                reduced.append(_composition(item, position).reduced_formula)
    counts = pd.Series(reduced, dtype=object).value_counts(sort=False)
    counts.name = "n_structures"
    counts.index.name = "formula"
    return counts
