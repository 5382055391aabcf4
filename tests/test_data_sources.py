"""Pretraining data sources (issue #4): directories of CIF/POSCAR files, JSON lines, DataFrames,
tables with CIF text, the Materials Project client (stubbed: no network), the CLI, and matminer's
StrToComposition in front of the featurizer. All on real bundled structures."""

import gzip
import json
import os
import pathlib
import sys
import types
import warnings

import numpy as np
import pandas as pd
import pytest

from skpolysrl import PolySRLFeaturizer, SkPolySRLError, StructureFileError
from skpolysrl.cli import main
from skpolysrl.datasets import (as_structure_source, load_materials_project, read_structure_directory,
                                read_structure_source)
from skpolysrl.exceptions import StructureFileWarning

FORMULAS = ["Fe2O3", "NaCl", "Bi2Te2.7Se0.3", "SiO2", "GaAs", "Cu2ZnSnS4"]
TINY = dict(pretrained=None, epochs=1, batch_size=16, random_state=0, verbose=False, device="cpu", recipe="paper")
N = 24


def _same_fit(a, b):
    np.testing.assert_array_equal(a.transform(FORMULAS), b.transform(FORMULAS))
    assert [r["loss"] for r in a.history_] == [r["loss"] for r in b.history_]


def _write_cif_blocks(path, structures):
    """One CIF file holding several data blocks."""
    text = "\n".join(s.to(fmt="cif").replace("data_", f"data_block{k}_", 1) for k, s in enumerate(structures))
    pathlib.Path(path).write_text(text)


@pytest.fixture(scope="module")
def structures(mp_small):
    return list(mp_small.structure[:N])


@pytest.fixture(scope="module")
def reference(structures):
    """Tiny pretraining on the bundled structures as a plain list."""
    return PolySRLFeaturizer(**TINY).fit(structures)


@pytest.fixture(scope="module")
def poscar_dir(structures, tmp_path_factory):
    """The structures as POSCAR files, named so that sorted order = list order (POSCAR round-trips exactly)."""
    root = tmp_path_factory.mktemp("poscars")
    for i, s in enumerate(structures):
        s.to(filename=str(root / f"POSCAR_{i:03d}"))
    (root / "README.txt").write_text("not a structure: ignored")
    return root


@pytest.fixture(scope="module")
def mixed_dir(structures, tmp_path_factory):
    """CIF, POSCAR, CONTCAR, .vasp and gzipped CIF files side by side."""
    root = tmp_path_factory.mktemp("mixed")
    for i, s in enumerate(structures[:8]):
        s.to(filename=str(root / f"m{i:02d}.cif"))
    for i, s in enumerate(structures[8:12]):
        s.to(filename=str(root / f"POSCAR-{i}"))
    structures[12].to(filename=str(root / "CONTCAR"))
    structures[13].to(filename=str(root / "x.vasp"))
    with gzip.open(root / "zipped.cif.gz", "wt") as fh:
        fh.write(structures[14].to(fmt="cif"))
    _write_cif_blocks(root / "two_blocks.cif", structures[15:17])
    return root


# ------------------------------------------------------------------ directories
def test_directory_of_poscars_gives_the_same_pretraining_as_the_list(poscar_dir, reference):
    f = PolySRLFeaturizer(**TINY).fit(poscar_dir)  # a pathlib.Path
    assert f.n_structures_ == N
    _same_fit(f, reference)
    g = PolySRLFeaturizer(**TINY).fit(str(poscar_dir))  # a str
    _same_fit(g, reference)


def test_mixed_directory_reads_every_format_in_sorted_order(mixed_dir, structures):
    from pymatgen.core import Structure

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", StructureFileWarning)  # pymatgen checks block 2's composition against 1's
        df = read_structure_directory(mixed_dir)
    assert list(df.columns) == ["id", "path", "formula", "structure"]
    assert df.id.tolist() == sorted(df.id.tolist(), key=lambda r: r.split("#")[0]) and len(df) == 17
    assert "two_blocks.cif#0" in df.id.tolist() and "two_blocks.cif#1" in df.id.tolist()
    expected_formulas = sorted(s.composition.reduced_formula for s in structures[:17])
    assert sorted(df.formula) == expected_formulas
    # fit(directory) == fit(the same files read one by one with pymatgen, in sorted order)
    from pymatgen.io.cif import CifParser

    one_by_one = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in sorted(os.listdir(mixed_dir)):
            if name == "two_blocks.cif":
                one_by_one += CifParser(str(mixed_dir / name)).parse_structures(primitive=False)
            else:
                one_by_one.append(Structure.from_file(str(mixed_dir / name)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", StructureFileWarning)
        a = PolySRLFeaturizer(**TINY).fit(mixed_dir)
    b = PolySRLFeaturizer(**TINY).fit(one_by_one)
    assert a.n_structures_ == len(one_by_one) == 17
    _same_fit(a, b)


def test_corrupt_file_is_named_and_skipped_with_ignore_errors(structures, tmp_path):
    for i, s in enumerate(structures[:6]):
        s.to(filename=str(tmp_path / f"{i}.cif"))
    (tmp_path / "broken.cif").write_text("data_broken\n_cell_length_a 3.0\nloop_\n_atom_site_label\nFe1\n")
    with pytest.raises(StructureFileError, match=r"broken\.cif.*ignore_errors=True") as info:
        PolySRLFeaturizer(**TINY).fit(tmp_path)
    assert isinstance(info.value, ValueError) and isinstance(info.value, SkPolySRLError)
    assert info.value.source.endswith("broken.cif")
    with pytest.warns(StructureFileWarning, match=r"skipped 1 unreadable .*broken\.cif"):
        f = PolySRLFeaturizer(**{**TINY, "ignore_errors": True}).fit(tmp_path)
    assert f.n_structures_ == 6


def test_empty_missing_and_nested_directories(structures, tmp_path):
    with pytest.raises(StructureFileError, match="empty"):
        read_structure_directory(tmp_path)
    with pytest.raises(FileNotFoundError, match="no such"):
        PolySRLFeaturizer(**TINY).fit(str(tmp_path / "nope"))
    (tmp_path / "run1").mkdir()
    (tmp_path / "run2").mkdir()
    (tmp_path / ".hidden").mkdir()
    structures[0].to(filename=str(tmp_path / "run1" / "CONTCAR"))
    structures[1].to(filename=str(tmp_path / "run2" / "CONTCAR"))
    structures[2].to(filename=str(tmp_path / ".hidden" / "CONTCAR"))
    (tmp_path / "notes.md").write_text("x")
    with pytest.raises(StructureFileError, match=r"notes\.md.*recursive=True") as info:
        PolySRLFeaturizer(**TINY).fit(tmp_path)
    assert "ignore_errors" not in str(info.value)  # nothing to skip: the hint would mislead
    df = read_structure_directory(tmp_path, recursive=True)
    assert df.id.tolist() == ["run1/CONTCAR", "run2/CONTCAR"]  # hidden folders are not read
    assert read_structure_directory(tmp_path, recursive=True, limit=1).id.tolist() == ["run1/CONTCAR"]


def test_vasp4_poscar_without_element_names_is_refused(tmp_path):
    (tmp_path / "POSCAR").write_text("no symbols\n1.0\n3 0 0\n0 3 0\n0 0 3\n1 1\nDirect\n0 0 0\n0.5 0.5 0.5\n")
    with pytest.raises(StructureFileError, match="no element symbols"):
        read_structure_directory(tmp_path)


def test_pymatgen_parse_warnings_come_as_one_summary(structures, tmp_path):
    for i, s in enumerate(structures[:3]):  # CIFs without symmetry operations: pymatgen warns on each
        symops = "loop_\n _symmetry_equiv_pos_site_id\n _symmetry_equiv_pos_as_xyz\n  1  'x, y, z'\n"
        text = s.to(fmt="cif").replace(symops, "")
        assert "_symmetry_equiv_pos_as_xyz" not in text
        (tmp_path / f"{i}.cif").write_text(text)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        df = read_structure_directory(tmp_path)
    assert len(df) == 3
    ours = [w for w in caught if issubclass(w.category, StructureFileWarning)]
    assert len(caught) == len(ours) == 1
    assert "3 file(s)" in str(ours[0].message) and "0.cif" in str(ours[0].message)


# ------------------------------------------------------- JSON lines, tables, DataFrames
def test_jsonl_path_gives_the_same_pretraining_as_the_list(structures, reference, tmp_path):
    path = tmp_path / "mine.jsonl.gz"
    with gzip.open(path, "wt") as fh:
        for i, s in enumerate(structures):
            fh.write(json.dumps({"id": f"s{i}", "formula": s.composition.reduced_formula,
                                 "structure": json.loads(s.to_json())}) + "\n")
    f = PolySRLFeaturizer(**TINY).fit(str(path))
    assert f.n_structures_ == N
    _same_fit(f, reference)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": 1, "lattice": [[1, 0, 0]]}\n')
    with pytest.raises(StructureFileError, match=r"bad\.jsonl.*line 1"):
        read_structure_source(bad)


def test_dataframe_sources(structures, reference):
    dicts = pd.DataFrame({"structure": [s.as_dict() for s in structures], "e_form": 0.0})
    f = PolySRLFeaturizer(**TINY).fit(dicts)  # Structure.as_dict() rows, as after a JSON round trip
    assert f.n_structures_ == N
    _same_fit(f, reference)
    cifs = pd.DataFrame({"cif": [s.to(fmt="cif") for s in structures[:4]] + ["garbage"]}, index=list("abcde"))
    with pytest.raises(StructureFileError, match=r"row 'e' of column 'cif'"):
        as_structure_source(cifs)
    with pytest.warns(StructureFileWarning, match=r"skipped 1 row.*'e'"):
        got = as_structure_source(cifs, ignore_errors=True)
    assert [s.composition.reduced_formula for s in got] == [s.composition.reduced_formula for s in structures[:4]]
    with pytest.raises(StructureFileError, match="column named 'cif'"):
        as_structure_source(pd.DataFrame({"structure": ["NaCl", "KBr"]}))
    assert as_structure_source(pd.DataFrame({"formula": ["NaCl"]})) is None
    assert as_structure_source(["NaCl", "KBr"]) is None and as_structure_source([]) is None


def test_table_and_pickle_files(structures, tmp_path):
    csv = tmp_path / "t.csv"
    pd.DataFrame({"name": ["a", "b", "c"], "cif": [s.to(fmt="cif") for s in structures[:3]]}).to_csv(csv, index=False)
    df = read_structure_source(csv)
    assert df.name.tolist() == ["a", "b", "c"] and len(df.structure) == 3
    pkl = tmp_path / "t.pkl"
    pd.DataFrame({"structure": structures[:3]}).to_pickle(pkl)
    with pytest.raises(StructureFileError, match="read_pickle"):
        read_structure_source(pkl)  # fit(path) does not unpickle
    assert len(read_structure_source(pkl, allow_pickle=True)) == 3
    with pytest.raises(StructureFileError, match="no 'structure' or 'cif' column"):
        pd.DataFrame({"formula": ["NaCl"]}).to_csv(tmp_path / "f.csv", index=False)
        read_structure_source(tmp_path / "f.csv")
    (tmp_path / "x.json").write_text("{}")
    with pytest.raises(StructureFileError, match="not a structure source"):
        read_structure_source(tmp_path / "x.json")


# ----------------------------------------------------------- Materials Project
def test_materials_project_without_mp_api_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "mp_api", None)
    monkeypatch.setitem(sys.modules, "mp_api.client", None)
    with pytest.raises(ImportError, match=r'pip install "skpolysrl\[mp\]"'):
        load_materials_project(api_key="x")


def test_materials_project_with_a_stub_client(monkeypatch, structures):
    calls = {}

    class MPID:  # mp-api returns MPID objects, not strings
        def __init__(self, s):
            self.s = s

        def __str__(self):
            return self.s

    class Summary:
        def search(self, **kwargs):
            calls["search"] = kwargs
            docs = [types.SimpleNamespace(material_id=MPID(f"mp-{i}"), formula_pretty=s.composition.reduced_formula,
                                          structure=s, energy_above_hull=0.01 * i)
                    for i, s in enumerate(structures[:3])]
            docs.append({"material_id": "mp-99", "formula_pretty": "X", "structure": structures[3].as_dict(),
                         "energy_above_hull": 0.5})  # use_document_model=False gives dicts
            return docs

    class MPRester:
        def __init__(self, api_key=None):
            calls["api_key"] = api_key
            self.materials = types.SimpleNamespace(summary=Summary())

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    client = types.ModuleType("mp_api.client")
    client.MPRester = MPRester
    package = types.ModuleType("mp_api")
    package.client = client
    monkeypatch.setitem(sys.modules, "mp_api", package)
    monkeypatch.setitem(sys.modules, "mp_api.client", client)
    monkeypatch.delenv("MP_API_KEY", raising=False)
    with pytest.raises(ValueError, match="MP_API_KEY"):
        load_materials_project()
    monkeypatch.setenv("MP_API_KEY", "from-env")
    df = load_materials_project(fields=["energy_above_hull"], num_elements=(1, 3), deprecated=False)
    assert calls["api_key"] == "from-env"
    assert calls["search"] == {"fields": ["material_id", "formula_pretty", "structure", "energy_above_hull"],
                               "num_elements": (1, 3), "deprecated": False}
    assert list(df.columns) == ["material_id", "formula", "structure", "energy_above_hull"]
    assert df.material_id.tolist() == ["mp-0", "mp-1", "mp-2", "mp-99"]
    assert df.structure[3] == structures[3] and df.energy_above_hull.tolist()[-1] == 0.5
    load_materials_project(api_key="given")
    assert calls["api_key"] == "given"
    f = PolySRLFeaturizer(**TINY).fit(df)
    assert f.n_structures_ == 4


# ------------------------------------------------------------------------- CLI
def test_cli_pretrain_on_a_directory(poscar_dir, reference, tmp_path, capsys):
    model = tmp_path / "m.pt"
    assert main(["pretrain", "--recipe", "paper", "--data", str(poscar_dir), "--epochs", "1", "--batch-size", "16", "--device", "cpu",
                 "--seed", "0", "--quiet", "--out", str(model)]) == 0
    assert f"({N} structures" in capsys.readouterr().out
    loaded = PolySRLFeaturizer(pretrained=str(model), verbose=False)
    np.testing.assert_array_equal(loaded.transform(FORMULAS), reference.transform(FORMULAS))
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "a.cif").write_text("not a cif")
    structure_file = poscar_dir / "POSCAR_000"
    (bad / "POSCAR").write_text(structure_file.read_text())
    (bad / "CONTCAR").write_text((poscar_dir / "POSCAR_001").read_text())
    args = ["pretrain", "--recipe", "paper", "--data", str(bad), "--epochs", "1", "--batch-size", "16", "--device", "cpu", "--quiet",
            "--out", str(tmp_path / "b.pt")]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "a.cif" in err and "--ignore-errors" in err
    with pytest.warns(StructureFileWarning, match="a.cif"):
        assert main(args + ["--ignore-errors"]) == 0


def test_cli_pretrain_help_explains_the_data_sources(capsys):
    with pytest.raises(SystemExit):
        main(["pretrain", "--help"])
    text = capsys.readouterr().out
    for word in ("--data", "POSCAR", "CONTCAR", ".jsonl", "'cif'", "--recursive", "--ignore-errors",
                 "load_materials_project", "matbench_mp_e_form"):
        assert word in text, word
    from skpolysrl.cli import build_parser

    assert build_parser().parse_args(["pretrain", "--structures", "x.jsonl", "--out", "m.pt"]).data == "x.jsonl"
    assert build_parser().parse_args(["pretrain", "--out", "m.pt"]).data == "bundled"


# -------------------------------------------------- matminer StrToComposition
@pytest.fixture(scope="module")
def default_featurizer():
    return PolySRLFeaturizer(pretrained="default", verbose=False, device="cpu")


def test_str_to_composition_then_polysrl_matches_transform(default_featurizer, band_gap):
    from matminer.featurizers.conversions import StrToComposition

    df = band_gap.head(40)[["formula"]].reset_index(drop=True)
    stc = StrToComposition()
    stc.set_n_jobs(1)
    df = stc.featurize_dataframe(df, "formula", pbar=False)
    f = default_featurizer.fit(df.formula)  # formulas: loads the shipped weights, no training
    out = f.featurize_dataframe(df, "composition", pbar=False)
    np.testing.assert_allclose(out[f.feature_labels()].to_numpy(), f.transform(df.formula), rtol=1e-6, atol=1e-7)
    assert list(out.columns[:2]) == ["formula", "composition"]


def test_structure_column_uses_the_structure_composition(default_featurizer, mp_small):
    df = mp_small.head(30)[["formula", "structure"]].copy()
    f = default_featurizer
    out = f.featurize_dataframe(df, "structure", pbar=False)
    X = out[f.feature_labels()].to_numpy()
    np.testing.assert_allclose(X, f.transform(df.formula), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(X, f.transform([s.composition for s in df.structure]), rtol=1e-6, atol=1e-7)


def test_str_to_composition_bad_rows_give_nan_and_errors(default_featurizer):
    from matminer.featurizers.conversions import StrToComposition

    df = pd.DataFrame({"formula": ["NaCl", "fe2o3", "Xx2O", "GaAs"]})
    stc = StrToComposition()
    stc.set_n_jobs(1)
    df = stc.featurize_dataframe(df, "formula", ignore_errors=True, pbar=False)  # "fe2o3" -> NaN composition
    f = default_featurizer
    with pytest.raises(ValueError):
        f.featurize_dataframe(df, "composition", pbar=False)
    out = f.featurize_dataframe(df, "composition", ignore_errors=True, return_errors=True, pbar=False)
    X = out[f.feature_labels()].to_numpy()
    assert np.isnan(X[[1, 2]]).all() and np.isfinite(X[[0, 3]]).all()
    np.testing.assert_allclose(X[[0, 3]], f.transform(["NaCl", "GaAs"]), rtol=1e-6, atol=1e-7)
    errors = out["PolySRLFeaturizer Exceptions"]
    assert errors.iloc[[0, 3]].isna().all() and "Xx" in errors.iloc[2] and isinstance(errors.iloc[1], str)
