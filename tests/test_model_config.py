"""ModelConfig: architecture and graph settings travel in the model file; old files still load."""

import numpy as np
import pytest
import torch

from skpolysrl import ModelFileError, PolySRLFeaturizer
from skpolysrl._elements import matscholar_table
from skpolysrl._io import load_model, model_to_payload, save_model
from skpolysrl.featurizer import default_model_path
from skpolysrl.nn import ModelConfig, PolySRLModel


def _small(**settings):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return PolySRLModel(matscholar_table(), hidden_dim=8, **settings)


def test_graph_settings_round_trip_through_the_model_file(tmp_path):
    model = _small(cutoff=5.0, max_neighbors=6, gaussian_stop=5.0, gaussian_step=0.5, n_gaussians=11,
                   gaussian_width=0.5)
    save_model(model, tmp_path / "m.pt")
    loaded, _ = load_model(tmp_path / "m.pt")
    assert loaded.config == model.config and loaded.config.graph.cutoff == 5.0
    assert loaded.config.graph.expansion_kwargs() == {"start": 0.0, "stop": 5.0, "step": 0.5, "width": 0.5}
    assert loaded.config["hidden_dim"] == 8  # dict-style reading, as the format-1 dicts


def test_gaussian_count_must_match_the_centres():
    with pytest.raises(ValueError, match="n_gaussians=41"):
        ModelConfig(gaussian_stop=5.0)


def test_log_sigma_bound_clamps_the_encoder_and_travels_in_the_file(tmp_path):
    from skpolysrl._elements import known_atomic_numbers
    from skpolysrl._formula import StoichiometryTable, parse_formulas
    from skpolysrl.training import encode

    model = _small(log_sigma_init=2.0)  # wide Gaussians: above the bound below
    table = StoichiometryTable(parse_formulas(["NaCl", "F", "Fe2O3"], known_atomic_numbers()))

    def log_sigma(m):
        return torch.as_tensor(encode(m, table)[1])

    free = log_sigma(model)
    model.bound_log_sigma(-3.0)
    bounded = log_sigma(model)
    assert model.config.log_sigma_max == -3.0 and float(free.max()) > -3.0
    assert torch.equal(bounded, free.clamp(max=-3.0))
    save_model(model, tmp_path / "m.pt")
    loaded, _ = load_model(tmp_path / "m.pt")
    assert loaded.config.log_sigma_max == -3.0 and torch.equal(log_sigma(loaded), bounded)
    # a format-2 file (no bound in its config) loads unbounded
    payload = model_to_payload(model.bound_log_sigma(None))
    payload["config"].pop("log_sigma_max")
    torch.save({**payload, "format_version": 2}, tmp_path / "v2.pt")
    old, _ = load_model(tmp_path / "v2.pt")
    assert old.config.log_sigma_max is None and torch.equal(log_sigma(old), free)


def test_format_1_file_with_a_plain_dict_config_loads_with_the_graph_defaults(tmp_path):
    model = _small()
    payload = model_to_payload(model)
    old = {k: v for k, v in payload["config"].items()
           if k in ("hidden_dim", "stoichiometry_layers", "structure_layers", "set2set_steps", "n_gaussians",
                    "c_init", "d_init", "log_sigma_init")}
    torch.save({**payload, "format_version": 1, "config": old}, tmp_path / "old.pt")
    loaded, _ = load_model(tmp_path / "old.pt")
    assert loaded.config == ModelConfig(**old) and loaded.config.cutoff == 8.0
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v)


def test_shipped_model_still_loads():
    model, _ = load_model(default_model_path())
    assert model.config.hidden_dim == 200 and model.config.max_neighbors == 12


def test_unknown_config_key_is_a_model_file_error(tmp_path):
    payload = model_to_payload(_small())
    payload["config"]["colour"] = "red"
    torch.save(payload, tmp_path / "bad.pt")
    with pytest.raises(ModelFileError, match="colour"):
        load_model(tmp_path / "bad.pt")


def test_pretraining_builds_graphs_with_the_model_cutoff(tmp_path, mp_small, monkeypatch):
    import skpolysrl.graphs as graphs

    model = _small(cutoff=4.0, max_neighbors=4)
    save_model(model, tmp_path / "m.pt", include_structure_encoder=False)
    seen = {}
    original = graphs.build_structure_graphs

    def spy(structures, **kwargs):
        seen.update(kwargs)
        return original(structures, **kwargs)

    monkeypatch.setattr(graphs, "build_structure_graphs", spy)
    f = PolySRLFeaturizer(pretrained=str(tmp_path / "m.pt"), epochs=1, batch_size=16, random_state=0, verbose=False,
                          device="cpu", recipe="paper").fit(mp_small.head(16))
    assert seen["cutoff"] == 4.0 and seen["max_neighbors"] == 4
    assert np.isfinite(f.history_[0]["loss"])
