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
    return {**dict(pretrained=None, epochs=3, batch_size=32, lr=5e-4, random_state=0, verbose=False, device="cpu",
                   recipe="paper"),
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


def _small(**extra):
    return _kw(**{**dict(epochs=1, hidden_dim=16), **extra})


@pytest.mark.parametrize("first, second, named", [
    (dict(), dict(pretrained="default", hidden_dim=200), "initial weights differ"),  # --init none vs default
    (dict(), dict(c_init=10.0), r"model\.c_init \(checkpoint 20\.0, this run 10\.0\)"),
    (dict(), dict(d_init=5.0), r"model\.d_init"),
    (dict(), dict(log_sigma_init=-3.0), r"model\.log_sigma_init \(checkpoint None, this run -3\.0\)"),
    (dict(), dict(hidden_dim=32), r"model\.hidden_dim \(checkpoint 16, this run 32\)"),  # not a size mismatch
    (dict(), dict(warmup_epochs=1), r"pretrain\.warmup_epochs"),
])
def test_checkpoint_of_another_start_or_model_is_refused_naming_the_setting(mp_small, tmp_path, first, second,
                                                                            named):
    from skpolysrl.exceptions import CheckpointError

    data = mp_small.head(32)
    ckpt = tmp_path / "run.ckpt"
    PolySRLFeaturizer(**_small(checkpoint=str(ckpt), **first)).fit(data)
    with pytest.raises(CheckpointError, match=named):
        PolySRLFeaturizer(**_small(epochs=2, checkpoint=str(ckpt), **second)).fit(data)


def test_other_training_data_is_named_as_such(mp_small, tmp_path):
    from skpolysrl.exceptions import CheckpointError

    ckpt = tmp_path / "run.ckpt"
    PolySRLFeaturizer(**_small(checkpoint=str(ckpt))).fit(mp_small.head(32))
    with pytest.raises(CheckpointError, match="the training data differs"):
        PolySRLFeaturizer(**_small(epochs=2, checkpoint=str(ckpt))).fit(mp_small.iloc[1:33])


def test_fewer_epochs_than_the_checkpoint_is_refused_not_the_longer_model_written(tmp_path, capsys):
    from skpolysrl.cli import main

    ckpt, out = tmp_path / "run.ckpt", tmp_path / "m.pt"
    args = ["pretrain", "--recipe", "paper", "--limit", "24", "--batch-size", "24", "--quiet", "--device", "cpu", "--checkpoint", str(ckpt)]
    assert main(args + ["--epochs", "2", "--out", str(tmp_path / "two.pt")]) == 0
    capsys.readouterr()
    assert main(args + ["--epochs", "1", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "trained 2 epochs, more than epochs=1" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_checkpoint_in_a_missing_folder_fails_before_the_first_epoch(mp_small, tmp_path):
    from skpolysrl.exceptions import CheckpointError

    epochs = []
    with pytest.raises(CheckpointError, match="does not exist"):
        PolySRLFeaturizer(**_small(checkpoint=str(tmp_path / "no" / "run.ckpt"))).fit(
            mp_small.head(32), on_epoch_end=epochs.append)
    assert epochs == []


@pytest.mark.parametrize("bad", ["Fe-1O", "Ca1-xEuxBi2Ta2O9", "LaFeO3:Eu", "Fe2+O", "Fe((O)", "H2O)", "123"])
def test_notation_we_do_not_guess_at_is_a_typed_error(bad):
    f = PolySRLFeaturizer(pretrained=None, random_state=0, verbose=False).fit(["H"])
    with pytest.raises(FormulaError, match="ignore_errors"):
        f.transform([bad])


def test_scientific_notation_and_nested_parentheses_are_read():
    f = PolySRLFeaturizer(pretrained=None, random_state=0, verbose=False).fit(["H"])
    X = f.transform(["FeO1e-3", "Fe1O0.001", "Ca(Fe(CN)6)2", "Ca1Fe2C12N12"])
    np.testing.assert_array_equal(X[0], X[1])
    np.testing.assert_array_equal(X[2], X[3])


@pytest.fixture(scope="module")
def random_encoder():
    return PolySRLFeaturizer(pretrained=None, random_state=0, verbose=False).fit(["H"])


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


def test_kill_9_while_a_checkpoint_is_written_resumes_bitwise(tmp_path):
    """The fast variant of benchmarks/kill_resume.py: SIGKILL the CLI while it replaces its checkpoint
    (after epoch 2 of 3), restart it, compare with an uninterrupted in-process run; no stray files."""
    import subprocess
    import sys
    import time

    import torch

    from skpolysrl.datasets import load_mp_structures

    root = __file__.rsplit("/tests/", 1)[0]
    env = dict(__import__("os").environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONPATH=root)
    cmd = [sys.executable, "-m", "skpolysrl.cli", "pretrain", "--recipe", "paper", "--limit", "24", "--epochs", "3", "--batch-size", "12",
           "--seed", "0", "--device", "cpu", "--quiet", "--checkpoint", "ck.pt", "--out", "m.pt"]
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline:
        writing = [p.name for p in tmp_path.iterdir() if p.name.startswith(f".ck.pt.{proc.pid}.")]
        if (tmp_path / "ck.pt").exists() and writing:  # the second checkpoint is being written
            proc.kill()
            break
        time.sleep(0.0005)
    proc.wait()
    assert proc.returncode == -9, f"not killed while writing (rc {proc.returncode}): {proc.stderr.read()[-500:]}"
    assert len([p for p in tmp_path.iterdir() if p.name.endswith(".skpolysrl-tmp")]) == 1
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck.pt", "m.pt"]  # the stale temporary is gone

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the arithmetic of the command (OMP_NUM_THREADS=1)
    try:
        full = PolySRLFeaturizer(pretrained=None, epochs=3, batch_size=12, random_state=0, verbose=False,
                                 device="cpu", recipe="paper").fit(load_mp_structures(limit=24))
    finally:
        torch.set_num_threads(threads)
    resumed = torch.load(tmp_path / "m.pt", weights_only=True)
    expected = full.model_.state_dict()
    assert resumed["state_dict"].keys() == expected.keys()
    assert all(torch.equal(resumed["state_dict"][k], expected[k]) for k in expected)
    assert _no_time(resumed["extra"]["history"]) == _no_time(full.history_)
