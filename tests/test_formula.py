import glob
import math
import os

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pymatgen.core import Composition, Lattice, Structure

from skpolysrl._elements import known_atomic_numbers, matscholar_table
from skpolysrl._formula import (
    StoichiometryTable,
    _fast_amounts,
    _parse,
    _parse_pymatgen,
    _symbol_table,
    parse_formula,
    parse_formulas,
)
from skpolysrl.exceptions import FormulaError, UnknownElementError

KNOWN = known_atomic_numbers()
SYMBOLS = _symbol_table(KNOWN)
MATBENCH = os.environ.get("SKPOLYSRL_MATBENCH_DIR", "/work/shared/data/matbench")


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


def test_a_hint_replaces_the_fix_and_survives_pickling():
    import pickle

    with pytest.raises(UnknownElementError, match="position 1.*Fix it here.$") as info:
        parse_formulas(["NaCl", "Xx", "KBr"], KNOWN, hint="Fix it here.")
    assert "ignore_errors" not in str(info.value)
    again = pickle.loads(pickle.dumps(info.value))
    assert type(again) is UnknownElementError and str(again) == str(info.value)


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


def test_overflowing_amounts_are_an_error_not_zero_fractions():
    with pytest.raises(FormulaError, match="overflow"):
        parse("Fe1e308O1e308", position=0)


# ----------------------------------------------------------------------------------------
# The fast reader must give exactly what the pymatgen reading gives: same elements, same
# float fractions bit for bit, and for anything it does not read, the same error.


def outcome(item):
    """What the public path gives (fast reader first), and what the pymatgen reading gives."""

    def run(fn):
        try:
            return fn(item, KNOWN)
        except Exception as exc:  # compare class and message
            return type(exc), str(exc)

    return run(_parse), run(_parse_pymatgen)


def assert_same_as_pymatgen(formulas):
    bad = [(f, *outcome(f)) for f in formulas if outcome(f)[0] != outcome(f)[1]]
    assert not bad, bad[:5]


def _formulas(frame):
    return [f for f in frame["formula"].tolist() if isinstance(f, str)]


def test_fast_reader_equals_pymatgen_on_bundled_corpus_and_band_gap_set():
    from skpolysrl.datasets import load_expt_gap_nonmetals, load_mp_structures

    formulas = _formulas(load_mp_structures(structures=False)) + _formulas(load_expt_gap_nonmetals())
    assert len(formulas) > 8000
    assert_same_as_pymatgen(formulas)
    assert [f for f in formulas if _fast_amounts(f, SYMBOLS) is None] == []  # none falls back


@pytest.mark.parametrize("name", ["expt_gap", "glass", "steels_yield"])
def test_fast_reader_equals_pymatgen_on_matbench_formulas(name):
    path = os.path.join(MATBENCH, f"{name}.csv")
    if not os.path.exists(path):
        pytest.skip(f"{path} not available (set SKPOLYSRL_MATBENCH_DIR)")
    formulas = _formulas(pd.read_csv(path))
    assert_same_as_pymatgen(formulas)
    assert [f for f in formulas if _fast_amounts(f, SYMBOLS) is None] == []


@pytest.mark.parametrize(
    "formula",
    ["Fe2O3", "C1Pt1", "Bi2Te2.7Se0.3", "(Bi2Te3)0.9(Sb2Te3)0.1", "CuSO4·5H2O", "CuSO4*5H2O", "Ca(Fe(CN)6)2",
     "Ca[Fe(CN)6]2", "K4{Fe(CN)6}", "Fe2 O3", "Fe 2 O 3", "( Fe O )2", "2Fe2O3", ".5H2O·Na", "FeO1e-3", "Fe2.",
     "Fe0.620C0.000953Mn0.000521Nb0.0000616", "Fe05O", "OFeFe0.5", "(O)1e15", "Cu · 2 H2O"],
)
def test_fast_reader_reads_common_notation_itself(formula):
    assert _fast_amounts(formula, SYMBOLS) is not None
    fast, reference = outcome(formula)
    assert fast == reference


@pytest.mark.parametrize(
    "formula",
    ["D2O", "T2O", "Fe( )2", "Y3N@C80", "FeO1e-9", "(O)1e16", "Fe2+O3", "Fe-1O", "Fe0O", "Fe0Fe", "Fe2.e0O",
     "Xx2O", "Og2", "fe2o3", "Fe((O)", "H2O)", "()", "Fe2 3", "F e", "Fe²O₃", "Fe\nO", "Fe1e308O1e308", "0H2O",
     "1e-9H2O", "CuSO4··H2O"],
)
def test_what_the_fast_reader_does_not_read_goes_to_pymatgen(formula):
    assert _fast_amounts(formula, SYMBOLS) is None or formula == "Fe1e308O1e308"
    fast, reference = outcome(formula)
    assert fast == reference


_symbols = st.sampled_from(["H", "O", "Fe", "Na", "Cl", "C", "N", "Bi", "Te", "Se", "Cu", "S", "U", "Nb", "Pu",
                            "D", "T", "Og", "Xx", "Fee", "fe"])
_amounts = st.one_of(
    st.just(""),
    st.integers(0, 1000).map(str),
    st.tuples(st.integers(0, 99), st.integers(0, 10**6)).map(lambda t: f"{t[0]}.{t[1]}"),
    st.floats(1e-12, 1e6).map(repr),
    st.sampled_from([".5", "2.", "1e-3", "1.5e2", "0", "0.0", "00.5", "05", "1e-9", "1e20", "1e400", "2.e0", "1e0",
                     "1e16", "1e-0", "1e+3", "1-", "-1", "e", "2e"]),
)
_space = st.sampled_from(["", "", "", " ", "\t"])
_element = st.tuples(_space, _symbols, _space, _amounts).map("".join)
_brackets = st.sampled_from(["()", "[]", "{}", "(]", "((", "))"])


def _grouped(inner):
    return st.one_of(
        st.lists(inner, min_size=1, max_size=4).map("".join),
        st.tuples(_brackets, st.lists(inner, min_size=0, max_size=3), _space, _amounts).map(
            lambda t: t[0][0] + "".join(t[1]) + t[0][1] + t[2] + t[3]),
    )


_body = st.recursive(_element, _grouped, max_leaves=10)
_part = st.tuples(st.sampled_from(["", "", "", "2", "5 ", "0.5", ".5", "3.", "0", "1e-9"]), _body).map("".join)
_formula = st.tuples(st.lists(_part, min_size=1, max_size=3), st.sampled_from(["·", "*", " · ", "•", "·*"])).map(
    lambda t: t[1].join(t[0]))


@settings(max_examples=1500, deadline=None)
@given(_formula)
def test_fast_reader_equals_pymatgen_on_generated_formulas(formula):
    fast, reference = outcome(formula)
    assert fast == reference


# the same, restricted to well-formed formulas, so that most take the fast path
_clean_element = st.tuples(
    st.sampled_from(["H", "O", "Fe", "Na", "Cl", "C", "N", "Bi", "Te", "Se", "Cu", "S", "U", "Nb", "Pu", "Li"]),
    st.one_of(st.just(""), st.integers(1, 1000).map(str), st.floats(1e-6, 1e6).map(repr),
              st.tuples(st.integers(0, 99), st.integers(1, 10**6)).map(lambda t: f"{t[0]}.{t[1]}")),
).map("".join)


def _clean_grouped(inner):
    return st.one_of(
        st.lists(inner, min_size=1, max_size=4).map("".join),
        st.tuples(st.sampled_from(["()", "[]", "{}"]), st.lists(inner, min_size=1, max_size=3),
                  st.sampled_from(["", "2", "0.5", "3.25", "1e-2", "10"])).map(
            lambda t: t[0][0] + "".join(t[1]) + t[0][1] + t[2]),
    )


_clean_formula = st.tuples(
    st.lists(st.tuples(st.sampled_from(["", "", "2", "0.5"]), st.recursive(_clean_element, _clean_grouped,
                                                                           max_leaves=8)).map("".join),
             min_size=1, max_size=3),
    st.sampled_from(["·", "*", " · "]),
).map(lambda t: t[1].join(t[0]))


@settings(max_examples=1500, deadline=None)
@given(_clean_formula)
def test_fast_reader_equals_pymatgen_on_generated_well_formed_formulas(formula):
    fast, reference = outcome(formula)
    assert fast == reference


@pytest.mark.parametrize("formula, element", [("Fe1e-300O", "Fe"), ("H1e-9O", "H"), ("Fe0.000000001O", "Fe"),
                                              ("FeO1e-7", "O"), ("NaCl·0.000000001H2O", "O"), ("Fe1e-400O", None)])
def test_zero_or_underflowing_amounts_are_errors_not_dropped_elements(formula, element):
    with pytest.raises(FormulaError, match="1e-06" if element else "underflows") as info:
        parse(formula, position=0)
    assert element is None or element in info.value.reason
    fast, reference = outcome(formula)
    assert fast == reference


def test_amounts_at_the_minimum_fraction_are_read():
    s = parse("Fe0.620C0.000953Mn0.000521Nb0.0000616")  # a real steel: Nb 1e-4 of the total
    assert len(s.atomic_numbers) == 4 and min(s.fractions) > 1e-5


def test_group_factor_with_a_signed_exponent_is_a_clear_error():
    with pytest.raises(FormulaError, match="write the factor as a decimal") as info:
        parse("(FeO)1e-3Na")
    assert "could not convert" not in str(info.value)
    assert parse("(FeO)0.001Na").key == parse("Fe0.001O0.001Na").key
