"""The command line and the examples, end to end on real bundled data."""

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from skpolysrl import PolySRLFeaturizer
from skpolysrl.cli import main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_cli_pretrain_then_featurize(tmp_path, band_gap):
    model = tmp_path / "m.pt"
    history = tmp_path / "h.json"
    assert main(["pretrain", "--recipe", "paper", "--limit", "64", "--epochs", "2", "--batch-size", "32", "--lr", "5e-4",
                 "--device", "cpu", "--seed", "1", "--quiet", "--out", str(model), "--history", str(history)]) == 0
    log = json.loads(history.read_text())
    assert len(log["history"]) == 2 and log["n_structures"] == 64
    table = tmp_path / "in.csv"
    band_gap.head(50).assign(composition=band_gap.formula.head(50)).to_csv(table, index=False)
    out = tmp_path / "out.csv"
    assert main(["featurize", "--model", str(model), "--input", str(table), "--formula-col", "composition",
                 "--out", str(out)]) == 0
    result = pd.read_csv(out)
    assert len(result) == 50 and "polysrl_uncertainty" in result.columns and "target" in result.columns
    expected = PolySRLFeaturizer(pretrained=str(model), verbose=False).transform(band_gap.formula.head(50).tolist())
    np.testing.assert_allclose(result[[f"polysrl_{i}" for i in range(200)] + ["polysrl_uncertainty"]].to_numpy(),
                               expected, rtol=1e-5, atol=1e-6)


def test_cli_reports_bad_column_and_bad_model(tmp_path, capsys):
    table = tmp_path / "in.csv"
    pd.DataFrame({"formula": ["NaCl"]}).to_csv(table, index=False)
    with pytest.raises(SystemExit, match="no column 'comp'"):
        main(["featurize", "--model", "none", "--input", str(table), "--formula-col", "comp", "--out", str(tmp_path / "o.csv")])
    assert main(["featurize", "--model", str(tmp_path / "nope.pt"), "--input", str(table), "--out", str(tmp_path / "o.csv")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_cli_featurize_bad_formula_fails_or_gives_nan_row(tmp_path, capsys):
    table = tmp_path / "in.xlsx"
    pd.DataFrame({"Formula": ["Fe2O3", "Xx2", "NaCl"], "y": [1.0, 2.0, 3.0]}).to_excel(table, index=False)
    out = tmp_path / "o.csv"
    assert main(["featurize", "--input", str(table), "--formula-col", "Formula", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "'Xx2' at data row 2 of in.xlsx" in err and "'Xx' is not a chemical element" in err and "--ignore-errors" in err
    assert not out.exists()
    assert main(["featurize", "--input", str(table), "--formula-col", "Formula", "--out", str(out),
                 "--ignore-errors"]) == 0
    result = pd.read_csv(out)
    features = result[[c for c in result.columns if c.startswith("polysrl_")]].to_numpy()
    assert np.isnan(features[1]).all() and np.isfinite(features[[0, 2]]).all()
    assert list(result["y"]) == [1.0, 2.0, 3.0]


def test_cli_help_runs():
    out = subprocess.run([sys.executable, "-m", "skpolysrl.cli", "--help"], capture_output=True, text=True, check=True)
    assert "pretrain" in out.stdout and "featurize" in out.stdout


# ------------------------------------------------------------------ issue 11: errors as one line, exit 2
def _cli(*args, cwd=None):
    env = {**os.environ, "PYTHONPATH": ROOT, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "skpolysrl.cli", *map(str, args)], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=600)


def _one_line_error(run, *fragments):
    assert run.returncode == 2, run.stderr[-3000:]
    assert "Traceback" not in run.stderr, run.stderr[-3000:]
    errors = [line for line in run.stderr.splitlines() if line.startswith("skpolysrl ")]
    assert len(errors) == 1, run.stderr
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    return errors[0]


def test_cli_formula_nan_and_none_are_formulas_not_missing(tmp_path):
    table = tmp_path / "in.csv"
    table.write_text("formula,y\nNaN,1\nNaCl,2\nNA,3\n")
    out = tmp_path / "o.csv"
    line = _one_line_error(_cli("featurize", "--model", "none", "--input", table, "--out", out),
                           "'NA' at data row 3 of in.csv (line 4)")  # read as text: a formula error, not "missing"
    assert "missing" not in line
    run = _cli("featurize", "--model", "none", "--input", table, "--out", out, "--ignore-errors")
    assert run.returncode == 0, run.stderr
    result = pd.read_csv(out, keep_default_na=False)
    assert result["formula"].tolist() == ["NaN", "NaCl", "NA"]
    features = result[[c for c in result.columns if c.startswith("polysrl_")]].replace("", np.nan).to_numpy(float)
    expected = PolySRLFeaturizer(pretrained=None, random_state=0, verbose=False).fit(["NNa", "NaCl"]).transform(["NNa", "NaCl"])
    np.testing.assert_allclose(features[:2], expected, rtol=1e-5, atol=1e-6)
    assert np.isnan(features[2]).all()


def test_cli_empty_tables_are_one_line_errors(tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    _one_line_error(_cli("featurize", "--input", empty, "--out", tmp_path / "o.csv"), "empty.csv", "empty")
    header = tmp_path / "header.csv"
    header.write_text("formula,target\n")
    _one_line_error(_cli("featurize", "--input", header, "--out", tmp_path / "o.csv"), "header.csv", "no rows")
    _one_line_error(_cli("evaluate", "--data", empty, "--model", "none"), "empty.csv")
    _one_line_error(_cli("evaluate", "--data", header, "--model", "none"), "header.csv", "no rows")


def test_cli_evaluate_names_rows_as_in_the_file_and_its_options(tmp_path, band_gap):
    data = band_gap.head(24).reset_index(drop=True)
    path = tmp_path / "d.csv"
    bad = data.assign(formula=data.formula.where(data.index != 2, "Xx2O"))
    bad.to_csv(path, index=False)
    _one_line_error(_cli("evaluate", "--data", path, "--model", "none", "--target-col", "gap"),
                    "d.csv", "'gap'", "its columns are")
    line = _one_line_error(_cli("evaluate", "--data", path, "--model", "none", "--folds", "2", "--epochs", "2"),
                           "'Xx2O' at data row 3 of d.csv (line 4)", "--ignore-errors")
    assert "position" not in line
    run = _cli("evaluate", "--data", path, "--model", "none", "--folds", "2", "--epochs", "2", "--quiet",
               "--ignore-errors", "--json", tmp_path / "r.json")
    assert run.returncode == 0, run.stderr[-3000:]
    assert "dropped 1 of 24" in run.stderr and "data row 3 of d.csv" in run.stderr
    assert json.loads((tmp_path / "r.json").read_text())["n_samples"] == 23
    # featurize names the row the same way
    line = _one_line_error(_cli("featurize", "--model", "none", "--input", path, "--out", tmp_path / "o.csv"),
                           "'Xx2O' at data row 3 of d.csv (line 4)")


def test_cli_evaluate_non_finite_targets(tmp_path, band_gap):
    data = band_gap.head(24).reset_index(drop=True)
    path = tmp_path / "inf.csv"
    data.assign(target=data.target.where(data.index != 5, np.inf)).to_csv(path, index=False)
    _one_line_error(_cli("evaluate", "--data", path, "--model", "none"), "inf.csv", "data row 6", "not finite")
    huge = tmp_path / "huge.csv"
    data.assign(target=np.where(data.index % 2, 1e308, -1e308)).to_csv(huge, index=False)
    out = tmp_path / "r.json"
    run = _cli("evaluate", "--data", huge, "--model", "none", "--folds", "2", "--epochs", "2", "--quiet", "--json", out)
    assert run.returncode == 0, run.stderr[-3000:]

    def refuse(constant):
        raise AssertionError(f"invalid JSON constant {constant}")

    result = json.loads(out.read_text(), parse_constant=refuse)
    assert result["mae_mean"] is None and "not finite" in run.stderr


def test_cli_model_files_never_unpickled_unless_trusted(tmp_path, trained):
    import joblib

    table = tmp_path / "in.csv"
    table.write_text("formula\nNaCl\nFe2O3\n")
    marker = tmp_path / "marker"
    evil = tmp_path / "evil.pkl"
    evil.write_bytes(b"cbuiltins\nopen\n(" + repr(str(marker)).encode() + b"\nVw\ntR.")  # pickle: open(marker, "w")
    _one_line_error(_cli("featurize", "--model", evil, "--input", table, "--out", tmp_path / "o.csv"),
                    "evil.pkl", "--trust-pickle")
    _one_line_error(_cli("pretrain", "--init", evil, "--limit", "8", "--epochs", "1", "--out", tmp_path / "m.pt"),
                    "evil.pkl", "--trust-pickle")
    assert not marker.exists()
    trusted = tmp_path / "mine.joblib"
    joblib.dump(trained, trusted)
    out = tmp_path / "o.csv"
    assert _cli("featurize", "--model", trusted, "--trust-pickle", "--input", table, "--out", out).returncode == 0
    np.testing.assert_allclose(pd.read_csv(out).filter(like="polysrl_").to_numpy(),
                               trained.transform(["NaCl", "Fe2O3"]), rtol=1e-5, atol=1e-6)
    help_text = " ".join(_cli("featurize", "--help").stdout.split())
    assert "weights only, no code runs" in help_text and "RUNS CODE" in help_text
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    _one_line_error(_cli("featurize", "--model", empty, "--input", table, "--out", tmp_path / "o2.csv"),
                    "empty.pt", "empty")


def test_cli_graph_cache_and_bad_structure_files(tmp_path):
    precious = tmp_path / "model.pt"
    precious.write_bytes(b"not ours: 13 MB of someone's weights")
    _one_line_error(_cli("pretrain", "--limit", "8", "--epochs", "1", "--batch-size", "4", "--device", "cpu",
                         "--quiet", "--graph-cache", precious, "--out", tmp_path / "m.pt"),
                    "model.pt", "choose another graph cache path")
    assert precious.read_bytes() == b"not ours: 13 MB of someone's weights"
    poscar = tmp_path / "POSCAR"
    poscar.write_text("bad\n1.0\n3 0 0\n3 0 0\n0 0 3\nNa Cl\n1 1\ndirect\n0 0 0\n0.5 0.5 0.5\n")
    _one_line_error(_cli("pretrain", "--data", poscar, "--epochs", "1", "--out", tmp_path / "m.pt"),
                    "POSCAR", "singular")


def test_cli_never_replaces_an_existing_output_without_overwrite(tmp_path):
    """Every output option is checked before any work; the file stays as it was; --overwrite replaces it."""
    table = tmp_path / "in.csv"
    table.write_text("formula\nNaCl\nFe2O3\n")
    precious = tmp_path / "results.csv"
    precious.write_text("someone's results\n")
    for command, option in ((["featurize", "--model", "none", "--input", table], "--out"),
                            (["pretrain", "--limit", "8", "--epochs", "1", "--out", tmp_path / "m.pt"], "--history"),
                            (["pretrain", "--limit", "8", "--epochs", "1"], "--out"),
                            (["evaluate", "--data", table, "--model", "none"], "--json")):
        _one_line_error(_cli(*command, option, precious), f"{option} {precious} exists", "--overwrite")
        assert precious.read_text() == "someone's results\n"
    assert not (tmp_path / "m.pt").exists()  # refused before training
    run = _cli("featurize", "--model", "none", "--input", table, "--out", precious, "--overwrite")
    assert run.returncode == 0, run.stderr
    assert pd.read_csv(precious).shape == (2, 202)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.csv", "results.csv"]  # no temporaries left


def test_cli_evaluate_with_the_composition_estimator(tmp_path, band_gap):
    data = band_gap.sample(90, random_state=0)
    path = tmp_path / "gaps.csv"
    data.to_csv(path, index=False)
    _one_line_error(_cli("evaluate", "--data", path, "--model", "none", "--estimator", "composition"),
                    "--estimator composition", "--model none")
    out = tmp_path / "r.json"
    run = _cli("evaluate", "--data", path, "--estimator", "composition", "--folds", "2", "--quiet", "--json", out)
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["estimator"] == "composition" and len(result["folds"]) == 2
    assert result["mae_mean"] < np.mean(np.abs(data.target - data.target.median()))  # beats predicting the median
