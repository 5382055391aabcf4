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
    assert main(["pretrain", "--limit", "64", "--epochs", "2", "--batch-size", "32", "--lr", "5e-4",
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
    assert "'Xx2' at position 1" in err and "'Xx' is not a chemical element" in err and "--ignore-errors" in err
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
