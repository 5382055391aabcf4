"""The training engine: determinism, resume, callbacks, checkpoint refusals and temporary files.

A small least-squares objective with a random draw per batch (from the trainer's
noise generator) stands in for the real ones; the pretraining-level checks are in
test_reliability.py.
"""

import os

import numpy as np
import pytest
import torch

from skpolysrl import _runtime
from skpolysrl.engine import (Callback, Checkpoint, EarlyStopping, EpochEndFunction, HeldOutMonitor, KeepBest,
                              Trainer)
from skpolysrl.exceptions import CheckpointError

N = 64


class Noisy(torch.nn.Module):
    """Least squares with noisy targets: exercises the batch order and the noise stream."""

    def __init__(self, noise=None, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(N, 3, generator=g)
        self.y = self.x @ torch.tensor([1.0, -2.0, 0.5])
        self.lin = torch.nn.Linear(3, 1)
        self.noise = noise
        self.calls = 0

    def forward(self, idx):
        self.calls += 1
        idx = torch.as_tensor(idx)
        y = self.y[idx] + 0.1 * torch.randn(len(idx), generator=self.noise)
        loss = ((self.lin(self.x[idx]).view(-1) - y) ** 2).mean()
        return loss, {"loss": float(loss.detach()), "rows": float(len(idx))}


def _fit(epochs=4, lr=0.05, callbacks=(), checkpoint=None, seed=0, model_seed=0):
    with _runtime.seeded(model_seed):
        module = Noisy(seed=0)
    trainer = Trainer(module.parameters(), lr=lr, epochs=epochs, batch_size=10, n_rows=N, seed=seed, device="cpu",
                      grad_clip=1.0, callbacks=callbacks, checkpoint=checkpoint, run_key={"data": [module.x, module.y]})
    module.noise = trainer.noise
    history = trainer.fit(module)
    return module, history, trainer


def _no_time(history):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in history]


class Stop(Exception):
    pass


def test_same_seed_same_weights_and_history_other_seed_differs():
    a, ha, _ = _fit()
    b, hb, _ = _fit()
    c, _, _ = _fit(seed=1)
    assert torch.equal(a.lin.weight, b.lin.weight) and _no_time(ha) == _no_time(hb)
    assert not torch.equal(a.lin.weight, c.lin.weight)
    assert [r["epoch"] for r in ha] == [1, 2, 3, 4] and ha[-1]["loss"] < ha[0]["loss"]
    # 64 rows in batches of 10: six of 10 and one of 4, averaged per batch
    assert ha[0]["rows"] == pytest.approx(64 / 7)


def test_interrupted_run_resumes_to_the_uninterrupted_result(tmp_path):
    full, history, _ = _fit()
    ckpt = tmp_path / "run.ckpt"

    def stop_after_two(record):
        if record["epoch"] == 2:
            raise Stop

    with pytest.raises(Stop):
        _fit(callbacks=[Checkpoint(ckpt), EpochEndFunction(stop_after_two)])
    resumed, resumed_history, trainer = _fit(checkpoint=str(ckpt))
    assert trainer.start_epoch == 2
    assert torch.equal(resumed.lin.weight, full.lin.weight) and torch.equal(resumed.lin.bias, full.lin.bias)
    assert _no_time(resumed_history) == _no_time(history)
    assert os.listdir(tmp_path) == ["run.ckpt"]  # no temporary file left


def test_checkpoint_names_the_setting_that_differs(tmp_path):
    ckpt = tmp_path / "run.ckpt"
    _fit(epochs=1, checkpoint=ckpt)
    with pytest.raises(CheckpointError, match=r"trainer\.lr \(checkpoint 0\.05, this run 0\.1\)"):
        _fit(epochs=2, lr=0.1, checkpoint=ckpt)
    with pytest.raises(CheckpointError, match="initial weights differ"):
        _fit(epochs=2, checkpoint=ckpt, model_seed=1)


def test_training_data_difference_is_reported_as_such(tmp_path):
    ckpt = tmp_path / "run.ckpt"
    module = Noisy()
    Trainer(module.parameters(), lr=0.1, epochs=1, batch_size=8, n_rows=N, seed=0, device="cpu", checkpoint=ckpt,
            run_key={"data": [module.x]}).fit(module)
    other = Noisy()
    other.load_state_dict(module.state_dict())
    trainer = Trainer(other.parameters(), lr=0.1, epochs=2, batch_size=8, n_rows=N, seed=0, device="cpu",
                      checkpoint=ckpt, run_key={"data": [module.x + 1]})
    trainer.noise.manual_seed(0)
    with pytest.raises(CheckpointError, match="training data differs"):
        other.noise = trainer.noise
        trainer.fit(other)


def test_fewer_epochs_than_a_finished_checkpoint_is_refused(tmp_path):
    ckpt = tmp_path / "run.ckpt"
    _fit(epochs=3, checkpoint=ckpt)
    with pytest.raises(CheckpointError, match="trained 3 epochs, more than epochs=1"):
        _fit(epochs=1, checkpoint=ckpt)
    more, history, _ = _fit(epochs=5, checkpoint=ckpt)  # extending a run is allowed
    full, full_history, _ = _fit(epochs=5)
    assert torch.equal(more.lin.weight, full.lin.weight) and _no_time(history) == _no_time(full_history)


def test_checkpoint_in_a_missing_folder_fails_before_training(tmp_path):
    with _runtime.seeded(0):
        module = Noisy()
    trainer = Trainer(module.parameters(), lr=0.1, epochs=2, batch_size=8, n_rows=N, seed=0, device="cpu",
                      checkpoint=tmp_path / "missing" / "run.ckpt")
    module.noise = trainer.noise
    with pytest.raises(CheckpointError, match="does not exist"):
        trainer.fit(module)
    assert module.calls == 0


def test_keep_best_counts_the_initial_weights_and_restores_the_best_epoch():
    scores = iter([0.5, 0.9, 0.2, 0.7])  # epoch 0 (start), 1, 2, 3

    class Snap(Callback):
        def __init__(self):
            self.states = {}

        def on_train_begin(self, trainer):
            self.states[0] = {k: v.clone() for k, v in trainer.module.state_dict().items()}

        def on_epoch_end(self, trainer, record):
            self.states[record["epoch"]] = {k: v.clone() for k, v in trainer.module.state_dict().items()}

    snap = Snap()
    module, history, _ = _fit(epochs=3, callbacks=[snap, HeldOutMonitor(lambda m: next(scores), at_start=True),
                                                   KeepBest("probe_mae")])
    assert [r["kept"] for r in history] == [False, True, False]
    assert torch.equal(module.lin.weight, snap.states[2]["lin.weight"])

    scores = iter([0.1, 0.9, 0.2])  # the starting weights are best: nothing is learned
    module, history, _ = _fit(epochs=2, callbacks=[snap, HeldOutMonitor(lambda m: next(scores), at_start=True),
                                                   KeepBest("probe_mae")])
    assert not any(r["kept"] for r in history)
    assert torch.equal(module.lin.weight, snap.states[0]["lin.weight"])


def test_early_stopping_stops_after_patience():
    scores = iter([1.0, 0.5, 0.6, 0.7, 0.8, 0.9])
    _, history, _ = _fit(epochs=6, callbacks=[HeldOutMonitor(lambda m: next(scores)), EarlyStopping(patience=2)])
    assert len(history) == 4


def test_atomic_write_cleans_up_after_a_failed_write_and_removes_stale_temporaries(tmp_path):
    target = tmp_path / "model.pt"
    target.write_bytes(b"old")

    def fail(tmp):
        with open(tmp, "wb") as fh:
            fh.write(b"partial")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        _runtime.atomic_write(target, fail)
    assert sorted(os.listdir(tmp_path)) == ["model.pt"] and target.read_bytes() == b"old"

    dead = 2**22 + 12345  # above Linux's default pid_max: no such process
    while True:
        try:
            os.kill(dead, 0)
            dead += 1
        except ProcessLookupError:
            break
    stale = tmp_path / f".model.pt.{dead}.abc123{_runtime._TMP_SUFFIX}"
    live = tmp_path / f".model.pt.{os.getppid()}.xyz789{_runtime._TMP_SUFFIX}"  # a running process's: kept
    foreign = tmp_path / ".model.pt.tmp"  # not our name pattern: never touched
    for path in (stale, live, foreign):
        path.write_bytes(b"x")
    _runtime.atomic_write(target, lambda tmp: open(tmp, "wb").write(b"new"))
    assert target.read_bytes() == b"new"
    assert sorted(os.listdir(tmp_path)) == sorted(["model.pt", live.name, foreign.name])


def test_resolve_device_checks_the_name():
    assert _runtime.resolve_device("cpu") == "cpu"
    assert _runtime.resolve_device("auto") in ("cpu", "cuda")
    with pytest.raises(ValueError, match="'cpu'"):
        _runtime.resolve_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            _runtime.resolve_device("cuda:1")


def test_seeded_leaves_the_global_generator_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    with _runtime.seeded(7):
        a = torch.rand(2)
    with _runtime.seeded(7):
        b = torch.rand(2)
    assert torch.equal(a, b) and torch.equal(torch.rand(3), expected)


def test_probe_head_is_deterministic_and_learns():
    from skpolysrl.evaluation import MLPHeadRegressor

    rng = np.random.default_rng(0)
    X = rng.normal(size=(150, 4))
    y = X[:, 0] - X[:, 1] ** 2
    a = MLPHeadRegressor(epochs=40, batch_size=32, random_state=3).fit(X, y)
    b = MLPHeadRegressor(epochs=40, batch_size=32, random_state=3).fit(X, y)
    np.testing.assert_array_equal(a.predict(X), b.predict(X))
    assert a.loss_curve_ == b.loss_curve_ and a.loss_curve_[-1] < 0.5 * a.loss_curve_[0]


def test_a_file_that_is_not_our_checkpoint_is_refused_and_left_alone(tmp_path):
    from skpolysrl.exceptions import ModelFileError

    path = tmp_path / "table.csv"
    path.write_text("formula,y\nNaCl,1\n")
    with pytest.raises(ModelFileError, match="table.csv"):
        _fit(checkpoint=path)
    assert path.read_text() == "formula,y\nNaCl,1\n"


def test_atomic_write_gives_the_permissions_of_a_normal_new_file(tmp_path):
    # regression: files came out owner-only (0600, the temporary's mode), unreadable by other users
    import os
    import stat

    from skpolysrl import _runtime

    umask = os.umask(0o022)
    try:
        target = tmp_path / "out.json"
        _runtime.atomic_write(target, lambda tmp: open(tmp, "wb").write(b"{}"))
        assert stat.S_IMODE(target.stat().st_mode) == 0o644
        os.chmod(target, 0o600)  # a file the user restricted keeps its mode when replaced
        _runtime.atomic_write(target, lambda tmp: open(tmp, "wb").write(b"[]"))
        assert stat.S_IMODE(target.stat().st_mode) == 0o600 and target.read_bytes() == b"[]"
    finally:
        os.umask(umask)
