"""Reliability: interrupted pretraining resumes exactly, bad checkpoints fail clearly,
messy formulas give a finite row or a typed error (property-based), big cells build."""

import string

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pymatgen.core import Lattice, Structure

from skpolysrl import FormulaError, ModelFileError, PolySRLFeaturizer
from skpolysrl.graphs import build_structure_graph

FORMULAS = ["Fe2O3", "NaCl", "GaAs", "Bi2Te2.7Se0.3"]


def _kw(**extra):
    return {**dict(pretrained=None, epochs=3, batch_size=32, lr=5e-4, random_state=0, verbose=False, device="cpu"),
            **extra}


def _no_time(history):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in history]


class Interrupted(Exception):
    pass


def test_interrupted_pretraining_resumes_to_the_same_result(mp_small, tmp_path):
    data = mp_small.head(96)
    full = PolySRLFeaturizer(**_kw()).fit(data)
    ckpt = tmp_path / "run.ckpt"

    def kill_after_first_epoch(record):
        if record["epoch"] == 1:
            raise Interrupted

    with pytest.raises(Interrupted):
        PolySRLFeaturizer(**_kw(checkpoint=str(ckpt))).fit(data, on_epoch_end=kill_after_first_epoch)
    assert ckpt.exists()
    resumed = PolySRLFeaturizer(**_kw(checkpoint=str(ckpt))).fit(data)
    np.testing.assert_array_equal(resumed.transform(FORMULAS), full.transform(FORMULAS))
    assert _no_time(resumed.history_) == _no_time(full.history_)


def test_checkpoint_from_another_run_or_corrupt_is_refused(mp_small, tmp_path):
    data = mp_small.head(64)
    ckpt = tmp_path / "run.ckpt"
    PolySRLFeaturizer(**_kw(epochs=1, checkpoint=str(ckpt))).fit(data)
    with pytest.raises(ValueError, match="other data or settings"):
        PolySRLFeaturizer(**_kw(epochs=2, lr=1e-3, checkpoint=str(ckpt))).fit(data)
    ckpt.write_bytes(ckpt.read_bytes()[:100])
    with pytest.raises(ModelFileError, match="truncated"):
        PolySRLFeaturizer(**_kw(epochs=2, checkpoint=str(ckpt))).fit(data)


@pytest.mark.parametrize("bad", ["Fe-1O", "Ca1-xEuxBi2Ta2O9", "LaFeO3:Eu", "Fe2+O", "Fe((O)", "H2O)", "123"])
def test_notation_we_do_not_guess_at_is_a_typed_error(bad):
    f = PolySRLFeaturizer(verbose=False)
    with pytest.raises(FormulaError, match="ignore_errors"):
        f.transform([bad])


def test_scientific_notation_and_nested_parentheses_are_read():
    f = PolySRLFeaturizer(verbose=False)
    X = f.transform(["FeO1e-3", "Fe1O0.001", "Ca(Fe(CN)6)2", "Ca1Fe2C12N12"])
    np.testing.assert_array_equal(X[0], X[1])
    np.testing.assert_array_equal(X[2], X[3])


@pytest.fixture(scope="module")
def random_encoder():
    return PolySRLFeaturizer(pretrained=None, random_state=0, verbose=False).fit(["NaCl", "Fe2O3", "CaTiO3"])


_pieces = st.sampled_from(["Fe", "O", "Na", "Cl", "H", "Xx", "fe", "Og", "(", ")", "[", "]", "·", "*", ".", "-", "+",
                           ":", " ", "e", "E", "0", "1", "2", "0.5", "1e-3", "1e400", "nan", "inf", "x"])
_formula_like = st.lists(_pieces, min_size=0, max_size=12).map("".join)
_any_text = st.text(alphabet=string.printable + "·•αβ", max_size=20)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.one_of(_formula_like, _any_text))
def test_fuzz_transform_gives_finite_row_or_typed_error(random_encoder, text):
    try:
        X = random_encoder.transform([text])
    except FormulaError as exc:
        assert repr(text) in str(exc)
        return
    assert X.shape == (1, 201) and np.isfinite(X).all()


def test_large_cell_graph_is_bounded():
    rng = np.random.default_rng(0)
    n = 500
    structure = Structure(Lattice.cubic(19.0), ["Si"] * n, rng.random((n, 3)))  # ~ 14 A^3 per atom
    edge_index, dist = build_structure_graph(structure)
    assert edge_index.shape[1] == n * 12 and dist.max() <= 8.0
