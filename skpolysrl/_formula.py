"""Formulas -> stoichiometries (element, fraction) and batched stoichiometry graphs.

A stoichiometry is stored as atomic numbers plus *normalised* fractions
(amount / total amount). The paper's authors fed raw amounts of the reduced
formula; fractions make ``Fe2O3``, ``Fe4O6`` and ``OFe2``/``Fe2O`` give the same
graph and keep doped formulas on the same scale as stoichiometric ones
(see docs/method.md).
"""

import functools
import itertools
import math
import numbers
import operator
import re
from dataclasses import dataclass

import numpy as np

from ._arrays import segment_indices
from .exceptions import FormulaError, UnknownElementError

__all__ = ["Stoichiometry", "parse_formula", "parse_formulas", "StoichiometryBatch", "StoichiometryTable",
           "MIN_FRACTION"]

#: Smallest fraction of the total amount an element may have. Smaller amounts (and
#: amounts that are zero or underflow, which pymatgen drops silently) are errors, not
#: dopants: "Fe1e-300O" would otherwise be read as "O".
MIN_FRACTION = 1e-6

# Adduct separators: "CuSO4·5H2O" = CuSO4 + 5 H2O. A plain "." is read as a
# decimal point (as pymatgen does), so "CuSO4.5H2O" means CuSO4.5 H2 O.
_ADDUCT_SPLIT = re.compile(r"\s*[·•∙*]\s*")
_LEADING_COUNT = re.compile(r"^(\d+(?:\.\d*)?|\.\d+)\s*(?=[A-Z(\[])")
# A lowercase letter that does not continue a symbol (and is not the "e" of "1e-3"): "fe2o3".
_LOWERCASE_START = re.compile(r"(?:^|[^A-Za-z0-9.])[a-z]|[0-9.](?!e-?[0-9])[a-z]")
# A literal zero amount ("Fe0O"): pymatgen silently drops the element.
_ZERO_AMOUNT = re.compile(r"(?<![\d.])(?<!\d[eE])(?<!\d[eE][+-])0+(?:\.0*)?(?![\d.]|[eE][+-]?\d)")
# A group factor with a signed exponent ("(FeO)1e-3"): pymatgen fails on float("1e").
_SIGNED_GROUP_FACTOR = re.compile(r"[)\]}]\s*(?:\d+\.?\d*|\.\d+)[eE][-+]")

# ---------------------------------------------------------------------------
# Fast path. A hand-written reader for the formula notation that covers nearly
# every real formula (element symbols, integer/decimal/scientific amounts,
# (), [] and {} groups with factors, adducts, spaces between tokens). It returns
# exactly what the pymatgen path below returns (same element order, same float
# sums in the same order), and returns None -- "not sure, ask pymatgen" -- for
# anything else: unknown or isotope symbols (D, T), charges, '-', '+', '@',
# non-ASCII digits, zero or tiny amounts that pymatgen would drop, values pymatgen
# would print in exponent form, and every malformed string. So every error (and
# its message) still comes from the pymatgen path.
#
# pymatgen's reading that the fast path reproduces (pymatgen.core.composition):
#   * an element token is ``[A-Z][a-z]*\s*[-*.e\d]*``; its amount is
#     ``float(run)``, summed per symbol in order of appearance;
#   * the innermost group ``(...)\s*[.e\d]*`` is replaced by
#     ``"".join(f"{el}{amt * factor summed}")`` and parsing starts again, so a
#     group contributes, per element, sum_i(amount_i * factor) at its position;
#   * Composition drops amounts below 1e-8; ``comp * k`` and ``comp + comp``
#     are element-wise.
_NUM = r"(?:(?:[0-9]*\.[0-9]+|[0-9]+)(?:e-?[0-9]+)?|[0-9]+\.)"  # no "2.e0": see _ZERO_AMOUNT
_NUM_FULL = re.compile(_NUM)
_SIMPLE = re.compile(rf"(?:[A-Z][a-z]*{_NUM}?)+")  # "Fe2O3", "Bi2Te2.7Se0.3": no groups, no spaces
_PAIR = re.compile(r"([A-Z][a-z]*)([-.e0-9]*)")
_TOKEN = re.compile(r"([A-Z][a-z]*)[ \t]*([-.e0-9]*)|([(\[{])|[)\]}][ \t]*([.e0-9]*)|([ \t]+)|(.)", re.DOTALL)
_ADDUCT_CHARS = frozenset("·•∙*")
_COUNT_START = frozenset("0123456789.")
_TINY = 1e-8  # pymatgen's Composition.amount_tolerance
_EXP_FORM = 1e16  # repr() of a float >= 1e16 is "1e+16": pymatgen cannot re-read a group that sums to that
_INF = float("inf")


@functools.lru_cache(maxsize=8)
def _symbol_table(known_z):
    """Element symbol -> Z for the elements in known_z (pymatgen's 118 symbols; no D, T or species)."""
    from pymatgen.core.periodic_table import Element

    return {el.symbol: el.Z for el in Element if el.Z in known_z}


def _fast_amount(run):
    """float(run) for an amount pymatgen reads the same way, else None (zero included: see _ZERO_AMOUNT)."""
    if not run:
        return 1.0
    if _NUM_FULL.fullmatch(run) is None:
        return None
    return float(run) or None


def _fast_part(part, table):
    """{Z: amount} of one adduct part (leading count removed) as pymatgen sums it, or None."""
    if _SIMPLE.fullmatch(part) is not None:
        amounts = {}
        for symbol, run in _PAIR.findall(part):
            z = table.get(symbol)
            if z is None:
                return None
            amount = float(run) if run else 1.0
            if not amount:  # "Fe0O", "Fe0Fe": the pymatgen path refuses literal zeros
                return None
            amounts[z] = amounts.get(z, 0.0) + amount
        return amounts
    stack = []
    current = []  # (Z, amount) contributions in order of position
    for m in _TOKEN.finditer(part):
        kind = m.lastindex  # groups that take part, possibly empty: 1-2 element, 3 open, 4 close, 5 space, 6 other
        if kind == 2:
            z = table.get(m.group(1))
            if z is None:
                return None
            amount = _fast_amount(m.group(2))
            if amount is None:
                return None
            current.append((z, amount))
        elif kind == 3:
            stack.append(current)
            current = []
        elif kind == 4:
            if not stack or not current:
                return None
            factor = _fast_amount(m.group(4))
            if factor is None:
                return None
            group = {}
            for z, amount in current:
                group[z] = group.get(z, 0.0) + amount * factor
            for value in group.values():
                if not 0.0 < value < _EXP_FORM:
                    return None
            current = stack.pop()
            current.extend(group.items())
        elif kind == 5:
            continue
        else:  # anything else: not ours to guess
            return None
    if stack or not current:
        return None
    amounts = {}
    for z, amount in current:
        amounts[z] = amounts.get(z, 0.0) + amount
    return amounts


def _fast_amounts(text, table):
    """{Z: amount} of a formula string exactly as the pymatgen path computes it, or None."""
    text = text.strip()
    if not text:
        return None
    if _ADDUCT_CHARS.isdisjoint(text):
        parts = (text,)
    else:
        parts = _ADDUCT_SPLIT.split(text)
    total = None
    for part in parts:
        if not part:
            return None
        factor = 1.0
        if part[0] in _COUNT_START:
            match = _LEADING_COUNT.match(part)
            if match is None:
                return None
            factor = float(match.group(1))
            part = part[match.end():]
        amounts = _fast_part(part, table)
        if amounts is None:
            return None
        # pymatgen drops amounts < 1e-8 (at Composition(part), and again after "* factor"): leave that to it
        for amount in amounts.values():
            if not _TINY <= amount < _INF:
                return None
        if factor != 1.0:
            amounts = {z: amount * factor for z, amount in amounts.items()}
            for amount in amounts.values():
                if not _TINY <= amount < _INF:
                    return None
        if total is None:
            total = amounts
        else:
            for z, amount in amounts.items():
                total[z] = total.get(z, 0.0) + amount
    return total


@dataclass(frozen=True)
class Stoichiometry:
    """Distinct elements of a formula and their fractions (summing to 1).

    ``key`` identifies the stoichiometry regardless of element order or scale.
    """

    atomic_numbers: tuple
    fractions: tuple

    @functools.cached_property  # parsed formulas are cached, so each key is rounded once
    def key(self):
        return tuple(zip(self.atomic_numbers, [round(f, 9) for f in self.fractions]))


@functools.cache
def _keep_tiny_composition():
    """pymatgen's Composition without its silent drop of amounts below 1e-8 (we refuse them instead)."""
    from pymatgen.core import Composition

    return type("_KeepTinyComposition", (Composition,), {"amount_tolerance": 0.0})


def _composition_from_string(text):
    _KeepTinyComposition = _keep_tiny_composition()
    parts = [p for p in _ADDUCT_SPLIT.split(text.strip())]
    if any(not p for p in parts):
        raise ValueError("empty part around an adduct separator ('·' or '*')")
    total = None
    for part in parts:
        factor = 1.0
        match = _LEADING_COUNT.match(part)
        if match:
            factor = float(match.group(1))
            part = part[match.end():]
        if _ZERO_AMOUNT.search(part):
            raise ValueError("an element has amount zero; remove it from the formula")
        signed = _SIGNED_GROUP_FACTOR.search(part)
        if signed:
            raise ValueError(f"a group factor in scientific notation with a signed exponent ({signed.group(0)!r}...) "
                             "is not read; write the factor as a decimal, e.g. '(FeO)0.001'")
        comp = _KeepTinyComposition(part) * factor
        total = comp if total is None else total + comp
    return total


def _to_composition(item):
    """Any accepted input -> pymatgen Composition (raises ValueError/TypeError)."""
    from pymatgen.core import Composition

    if isinstance(item, Composition):
        return item
    if isinstance(item, str):
        if not item.strip():
            raise ValueError("empty formula")
        return _composition_from_string(item)
    if isinstance(item, dict):
        return Composition(item)
    composition = getattr(item, "composition", None)  # Structure, Molecule, ComputedEntry
    if isinstance(composition, Composition):
        return composition
    if item is None or (isinstance(item, numbers.Number) and not isinstance(item, bool)):
        kind = "missing value" if item is None or (isinstance(item, float) and math.isnan(item)) else "a number"
        raise TypeError(f"{kind}, not a formula")
    raise TypeError(
        f"unsupported type {type(item).__name__}; give a formula string, a pymatgen Composition or a Structure"
    )


@functools.lru_cache(maxsize=1 << 16)
def _parse_hashable(item, known_z):
    return _parse(item, known_z)


def _parse(item, known_z):
    if isinstance(item, str):
        amounts = _fast_amounts(item, _symbol_table(known_z))
        if amounts is not None:
            zs = sorted(amounts)
            total = float(sum(amounts[z] for z in zs))
            if 0.0 < total < _INF:
                return _stoichiometry(item, zs, [amounts[z] / total for z in zs])
    return _parse_pymatgen(item, known_z)


def _stoichiometry(item, zs, fractions):
    """Stoichiometry of sorted atomic numbers and their fractions; refuses fractions below MIN_FRACTION."""
    smallest = min(range(len(zs)), key=fractions.__getitem__)
    if fractions[smallest] < MIN_FRACTION:
        from pymatgen.core import Element

        raise FormulaError(item, f"{Element.from_Z(zs[smallest]).symbol} is {fractions[smallest]:.3g} of the "
                                 f"total amount, below the minimum {MIN_FRACTION:g}; remove the element or fix "
                                 "its amount")
    return Stoichiometry(tuple(zs), tuple(fractions))


def _parse_pymatgen(item, known_z):
    """The reference reading (pymatgen Composition); also the one that explains every error."""
    try:
        comp = _to_composition(item)
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        reason = str(exc).strip() or type(exc).__name__
        if isinstance(item, str) and _LOWERCASE_START.search(item.strip()):
            reason += " (element symbols start with a capital letter, e.g. 'Fe2O3' not 'fe2o3')"
        raise FormulaError(item, reason) from None
    amounts = {}
    for species, amount in comp.items():
        element = getattr(species, "element", species)  # Species with oxidation state -> Element
        z = getattr(element, "Z", None)
        if not isinstance(z, numbers.Integral) or type(element).__name__ != "Element":
            raise UnknownElementError(item, f"{getattr(species, 'symbol', species)!r} is not a chemical element")
        if z not in known_z:
            raise UnknownElementError(item, f"element {element.symbol} (Z={z}) has no Matscholar embedding")
        amounts[int(z)] = amounts.get(int(z), 0.0) + float(amount)
    if not amounts:
        raise FormulaError(item, "no elements")
    values = np.array(list(amounts.values()))
    if not np.all(np.isfinite(values)) or np.any(values <= 0):
        raise FormulaError(item, "amounts must be finite and positive (an amount is zero, underflows to zero, "
                                 "or is infinite)")
    zs = sorted(amounts)
    total = float(sum(amounts[z] for z in zs))
    if not math.isfinite(total):  # e.g. "Fe1e308O1e308": every fraction would be 0
        raise FormulaError(item, "amounts too large (their sum overflows); rescale the formula")
    return _stoichiometry(item, zs, [amounts[z] / total for z in zs])


def parse_formula(item, known_z, position=None):
    """Parse one formula-like item into a :class:`Stoichiometry`.

    Parameters
    ----------
    item : str, pymatgen Composition, Structure, or dict
        Strings may be fractional (``Bi2Te2.7Se0.3``), nested
        (``(Bi2Te3)0.9(Sb2Te3)0.1``) or adducts written with ``·`` or ``*``
        (``CuSO4·5H2O``).
    known_z : frozenset of int
        Atomic numbers that have an element embedding.
    position : int, optional
        Position in the batch, named in the error message.

    Raises
    ------
    FormulaError
        Unparseable input, zero/negative amounts, non-formula types.
    UnknownElementError
        Dummy species (unknown symbols) or elements without an embedding.
    """
    try:
        if isinstance(item, str):  # only strings are cached: structures are heavy
            return _parse_hashable(item, known_z)
        return _parse(item, known_z)
    except FormulaError as exc:
        if position is None:
            raise
        raise type(exc)(exc.item, exc.reason, position) from None


def parse_formulas(items, known_z, ignore_errors=False, offset=0, hint=None):
    """Parse a batch; returns a list of Stoichiometry (None for bad rows when ignore_errors).

    ``offset`` is added to positions in error messages (for chunks of a larger batch);
    ``hint`` replaces the fix an error message ends with (e.g. where rows cannot be skipped).
    """
    out = []
    for i, item in enumerate(items):
        try:
            out.append(parse_formula(item, known_z, position=offset + i))
        except FormulaError as exc:
            if not ignore_errors:
                if hint is None:
                    raise
                raise type(exc)(exc.item, exc.reason, exc.position, exc.where, hint) from None
            out.append(None)
    return out


@dataclass
class StoichiometryBatch:
    """A batch of fully connected stoichiometry graphs (self loops included).

    atomic_numbers, weights, batch : (n_nodes,) arrays
    edge_index : (2, n_edges) array, n_i**2 edges for a graph with n_i elements
    """

    atomic_numbers: np.ndarray
    weights: np.ndarray
    edge_index: np.ndarray
    batch: np.ndarray
    num_graphs: int

    def to_torch(self, device="cpu"):
        import torch

        return (
            torch.as_tensor(self.atomic_numbers, dtype=torch.long, device=device),
            torch.as_tensor(self.weights, dtype=torch.float32, device=device),
            torch.as_tensor(self.edge_index, dtype=torch.long, device=device),
            torch.as_tensor(self.batch, dtype=torch.long, device=device),
        )


_ATOMIC_NUMBERS = operator.attrgetter("atomic_numbers")
_FRACTIONS = operator.attrgetter("fractions")


class StoichiometryTable:
    """Many stoichiometries as flat arrays; ``collate(indices)`` builds a batch without Python loops."""

    def __init__(self, stoichiometries):
        if len(stoichiometries) == 0:
            raise ValueError("cannot build stoichiometry graphs from zero formulas")
        self.sizes = np.fromiter(map(len, map(_ATOMIC_NUMBERS, stoichiometries)), np.int64, len(stoichiometries))
        total = int(self.sizes.sum())
        self.atomic_numbers = np.fromiter(
            itertools.chain.from_iterable(map(_ATOMIC_NUMBERS, stoichiometries)), np.int64, total)
        self.fractions = np.fromiter(itertools.chain.from_iterable(map(_FRACTIONS, stoichiometries)), np.float32, total)
        self._ptr = np.concatenate([[0], np.cumsum(self.sizes)])

    def __len__(self):
        return len(self.sizes)

    def collate(self, indices=None):
        """A :class:`StoichiometryBatch` of rows ``indices`` (all rows if None)."""
        if indices is None:
            return _fully_connected(self.sizes, self.atomic_numbers, self.fractions)
        indices = np.asarray(indices, dtype=np.int64)
        sizes = self.sizes[indices]
        node_ids = segment_indices(self._ptr[indices], sizes)
        return _fully_connected(sizes, self.atomic_numbers[node_ids], self.fractions[node_ids])


def _fully_connected(sizes, z, w):
    n_graphs = len(sizes)
    node_ptr = np.concatenate([[0], np.cumsum(sizes)])
    n_edges = sizes**2
    edge_graph = np.repeat(np.arange(n_graphs), n_edges)
    local = np.arange(int(n_edges.sum())) - np.repeat(np.cumsum(n_edges) - n_edges, n_edges)
    n = sizes[edge_graph]
    src = local // n + node_ptr[edge_graph]
    dst = local % n + node_ptr[edge_graph]
    batch = np.repeat(np.arange(n_graphs), sizes)
    return StoichiometryBatch(z, w, np.stack([src, dst]), batch, n_graphs)
