import math

import numpy as np
import pytest
from pymatgen.core import Composition, Lattice, Structure

from skpolysrl._elements import known_atomic_numbers, matscholar_table
from skpolysrl._formula import StoichiometryTable, parse_formula, parse_formulas
from skpolysrl.exceptions import FormulaError, UnknownElementError

KNOWN = known_atomic_numbers()


def parse(x, position=None):
    return parse_formula(x, KNOWN, position)


def as_dict(s):
    return dict(zip(s.atomic_numbers, s.fractions))


def test_matscholar_table_has_200d_rows_for_known_elements():
    table = matscholar_table()
    assert table.shape[1] == 200
    assert 26 in KNOWN and 8 in KNOWN and 0 not in KNOWN
    assert np.abs(table[26]).sum() > 0


@pytest.mark.parametrize(
    "formula, expected",
    [
        ("Fe2O3", {26: 0.4, 8: 0.6}),
        ("Bi2Te2.7Se0.3", {83: 0.4, 52: 0.54, 34: 0.06}),
        ("(Bi2Te3)0.9(Sb2Te3)0.1", {83: 0.36, 52: 0.6, 51: 0.04}),
        ("CuSO4·5H2O", {29: 1 / 21, 16: 1 / 21, 8: 9 / 21, 1: 10 / 21}),
        ("Ca(Fe(CN)6)2", {20: 1 / 27, 26: 2 / 27, 6: 12 / 27, 7: 12 / 27}),
    ],
)
def test_parse_fractions(formula, expected):
    got = as_dict(parse(formula))
    assert got.keys() == expected.keys()
    for z, frac in expected.items():
        assert got[z] == pytest.approx(frac)
    assert math.isclose(sum(got.values()), 1.0)


def test_order_and_scale_invariance():
    assert parse("OFe2").key == parse("Fe2O").key == parse("Fe4O2").key
    assert parse("Fe2O3").key != parse("Fe3O4").key


def test_composition_and_structure_inputs():
    structure = Structure(Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    assert parse(Composition("NaCl")).key == parse("NaCl").key == parse(structure).key


@pytest.mark.parametrize(
    "bad, error, fragment",
    [
        ("Xx2O", UnknownElementError, "Xx"),
        ("Og2", UnknownElementError, "Og"),
        ("fe2o3", FormulaError, "capital letter"),
        ("", FormulaError, "empty"),
        ("   ", FormulaError, "empty"),
        ("Fe0O", FormulaError, "zero"),
        (None, FormulaError, "missing"),
        (float("nan"), FormulaError, "missing"),
        (3.5, FormulaError, "number"),
        ("LaFeO3:Eu", FormulaError, "LaFeO3:Eu"),
    ],
)
def test_bad_formulas_raise_typed_error_naming_the_item(bad, error, fragment):
    with pytest.raises(error) as info:
        parse(bad, position=7)
    message = str(info.value)
    assert fragment in message
    assert "position 7" in message
    assert "ignore_errors" in message
    assert isinstance(info.value, ValueError)


def test_parse_formulas_ignore_errors_keeps_rows():
    out = parse_formulas(["NaCl", "Xx", "KBr"], KNOWN, ignore_errors=True)
    assert out[1] is None and out[0] is not None and out[2] is not None
    with pytest.raises(UnknownElementError, match="position 1"):
        parse_formulas(["NaCl", "Xx", "KBr"], KNOWN)


def test_stoichiometry_graphs_are_fully_connected_with_self_loops():
    stoich = [parse(f) for f in ["NaCl", "Fe2O3", "Bi2Te2.7Se0.3", "Si"]]
    table = StoichiometryTable(stoich)
    batch = table.collate([2, 0, 3])
    sizes = [3, 2, 1]
    assert batch.num_graphs == 3
    assert batch.edge_index.shape[1] == sum(n * n for n in sizes)
    # every ordered pair (self loops included) within a graph, none across graphs
    src, dst = batch.edge_index
    assert np.all(batch.batch[src] == batch.batch[dst])
    for g, n in enumerate(sizes):
        nodes = np.flatnonzero(batch.batch == g)
        pairs = {(a, b) for a, b in zip(src, dst) if batch.batch[a] == g}
        assert pairs == {(a, b) for a in nodes for b in nodes}
    assert list(batch.atomic_numbers[batch.batch == 1]) == list(stoich[0].atomic_numbers)
    np.testing.assert_allclose(np.bincount(batch.batch, weights=batch.weights), 1.0, rtol=1e-6)
