"""The pretrained featurizer shipped inside the package: loads offline and works."""

import os
import runpy

import numpy as np
import pytest
import torch

from skpolysrl import ModelFileError, PolySRLFeaturizer
from skpolysrl._io import FORMAT, load_model, save_model
from skpolysrl.featurizer import default_model_path

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_default_weights_ship_and_load_with_weights_only():
    path = default_model_path()
    assert path.is_file()
    assert os.path.getsize(path) < 20e6
    payload = torch.load(path, map_location="cpu", weights_only=True)  # no pickled code needed
    assert payload["format"] == FORMAT and payload["has_structure_encoder"] is False
    model, extra = load_model(path)
    assert "history" in extra and model.structure is None


def test_default_featurizer_transforms_real_formulas(band_gap):
    f = PolySRLFeaturizer()
    X = f.transform(band_gap.formula.head(200).tolist())
    assert X.shape == (200, 201) and np.isfinite(X).all()
    assert np.ptp(X[:, -1]) > 0
    # the shipped model is not the untrained encoder
    rand = PolySRLFeaturizer(pretrained=None, random_state=0, verbose=False).fit_transform(["NaCl"])
    assert not np.allclose(rand, f.transform(["NaCl"]))


def test_newer_format_is_refused(tmp_path):
    model, _ = load_model(default_model_path())
    path = tmp_path / "future.pt"
    save_model(model, path)
    payload = torch.load(path, weights_only=True)
    payload["format_version"] = 99
    torch.save(payload, path)
    with pytest.raises(ModelFileError, match="Upgrade skpolysrl"):
        load_model(path)


def test_quickstart_example_runs(capsys):
    module = runpy.run_path(os.path.join(ROOT, "examples", "quickstart.py"))
    scores = module["main"](["--fast"])
    assert len(scores) == 5 and np.all(np.isfinite(scores))
    out = capsys.readouterr().out
    assert "uncertainty" in out and "5-fold CV MAE" in out
