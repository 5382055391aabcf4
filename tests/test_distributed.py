"""Multi-process pretraining (torch.distributed, DDP) equals one process with the same global batch.

Two CPU processes (gloo backend, loopback) are started the way torchrun starts
them (MASTER_ADDR, MASTER_PORT, RANK, WORLD_SIZE, LOCAL_RANK in the
environment) and ``PolySRLFeaturizer.fit`` joins the process group by itself.
The parent compares their model with a single-process fit with the same batch
size, and checks the gradient arithmetic directly: Adam (invariant to the
gradient's scale) and clipping would hide a gradient twice too large, so equal
weights alone do not prove it.

Tolerances. The gradients agree to float32 rounding. The weights agree less
tightly, for a reason of Adam's, not of the sharding: its first steps move each
weight by about ``lr`` whatever the size of its gradient, so a weight whose
gradient is at the level of rounding noise can move by up to ``lr`` per step
one way in one run and the other way in another. With "polysrl" this touches a
handful of the 3.3 M weights (up to ~1.3e-5 after 2 epochs, with lr = 5e-5).
"infomax" is worse conditioned at initialisation (the untrained structure
encoder gives nearly the same vector for every crystal, so its gradient is a
small difference of large terms: ~1e-3 relative error against float64 on one
process) and two *single-process* runs that differ only in their thread count
end up to ~2.5e-4 apart; so for infomax the losses, embeddings and the weights'
displacement from the initial weights are compared instead, and the gradients.
"""

import json
import os
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

torch = pytest.importorskip("torch")
if not torch.distributed.is_available():
    pytest.skip("torch.distributed is not available in this build", allow_module_level=True)

WORLD = 2
LIMIT = 99  # batches of 32: 32, 32, 32 and a last batch of 3, split 2 + 1
BATCH = 32
EPOCHS = 2
LR = 5e-5  # PolySRLFeaturizer's default
OBJECTIVES = ("polysrl", "infomax")
# batches for the gradient check: an odd size (16 + 15 rows) and the smallest (2 + 1)
GRAD_BATCHES = (np.arange(31) * 3 % LIMIT, np.array([5, 50, 7]))
TIMEOUT = 300  # seconds; a hung collective fails the test instead of blocking the suite
FORMULAS = ["NaCl", "Fe2O3", "LiFePO4", "SiO2", "GaAs", "BaTiO3", "YbN", "As"]

# what each of the WORLD processes runs (argv: this file, output folder)
CHILD = r"""
import json, os, sys
import torch
torch.set_num_threads(1)
sys.path.insert(0, os.path.dirname(sys.argv[1]))
from test_distributed import BATCH, EPOCHS, LIMIT, OBJECTIVES, gradients, training_data
from skpolysrl import PolySRLFeaturizer, distributed
from skpolysrl.datasets import load_mp_structures

out = sys.argv[2]
structures = load_mp_structures(limit=LIMIT)
for objective in OBJECTIVES:
    f = PolySRLFeaturizer(pretrained=None, objective=objective, epochs=EPOCHS, batch_size=BATCH, random_state=0,
                          verbose=False, device="cpu", recipe="paper")
    f.fit(structures)  # joins the process group named by the environment (gloo on CPU)
    if distributed.is_main_process():
        f.save(os.path.join(out, f"{objective}.pt"))
        with open(os.path.join(out, f"{objective}.json"), "w") as fh:
            json.dump(f.history_, fh)
assert torch.distributed.is_initialized() and torch.distributed.get_world_size() == 2
initial = PolySRLFeaturizer(pretrained=None, epochs=0, random_state=0, verbose=False, device="cpu",
                            recipe="paper").fit(structures)
grads = gradients(initial.model_, training_data(structures), distributed=True)
torch.save(grads, os.path.join(out, f"grad{os.environ['RANK']}.pt"))
torch.distributed.destroy_process_group()
"""


def training_data(structures):
    """(table, formula_ids, graphs) as PolySRLFeaturizer builds them."""
    from skpolysrl._elements import known_atomic_numbers
    from skpolysrl._formula import StoichiometryTable, parse_formula
    from skpolysrl.graphs import build_structure_graphs

    structures = list(structures["structure"])
    stoich = [parse_formula(s, known_atomic_numbers(), position=i) for i, s in enumerate(structures)]
    keys = {}
    ids = np.array([keys.setdefault(s.key, len(keys)) for s in stoich])
    return StoichiometryTable(stoich), torch.as_tensor(ids), build_structure_graphs(structures)


def gradients(model, data, distributed):
    """{(objective, batch): {"loss", "kl", parameter name: gradient}} of one training step on each of
    GRAD_BATCHES, through pretrain's own step (DDP-wrapped, gradients averaged, when distributed)."""
    import copy

    from skpolysrl.training import _training_step

    out = {}
    for objective in OBJECTIVES:
        m = copy.deepcopy(model)
        noise = torch.Generator().manual_seed(0)
        step = _training_step(m, *data, None, noise, objective=objective, variance_only=False,
                              distributed=distributed, n_samples=8, beta=0.1, pair_reduction="sum",
                              alignment_weight=0.0, device="cpu")
        for i, idx in enumerate(GRAD_BATCHES):
            m.zero_grad(set_to_none=True)
            total, info = step(idx)
            total.backward()
            out[objective, i] = {"loss": info["loss"], "kl": info["kl"],
                                 **{n: p.grad.clone() for n, p in m.named_parameters() if p.grad is not None}}
        del step
    return out


def _free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def distributed_run(tmp_path_factory):
    """Run CHILD in WORLD processes; the folder rank 0 (and every rank's gradients) went to."""
    out = tmp_path_factory.mktemp("ddp")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()), WORLD_SIZE=str(WORLD),
               OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p))
    logs = [open(out / f"rank{r}.log", "w+") for r in range(WORLD)]
    procs = [subprocess.Popen([sys.executable, "-c", CHILD, os.path.abspath(__file__), str(out)],
                              env=dict(env, RANK=str(r), LOCAL_RANK=str(r)), stdout=logs[r], stderr=subprocess.STDOUT)
             for r in range(WORLD)]
    deadline = time.monotonic() + TIMEOUT
    try:
        for p in procs:
            p.wait(timeout=max(deadline - time.monotonic(), 1))
    except subprocess.TimeoutExpired:
        pytest.fail(f"the {WORLD} processes did not finish within {TIMEOUT} s")
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        texts = []
        for log in logs:
            log.seek(0)
            texts.append(log.read())
            log.close()
    for r, p in enumerate(procs):
        assert p.returncode == 0, f"rank {r} failed:\n{texts[r]}"
    return out


@pytest.fixture(scope="module")
def structures():
    from skpolysrl.datasets import load_mp_structures

    return load_mp_structures(limit=LIMIT)


@pytest.fixture(scope="module")
def single(structures):
    """The single-process runs: fitted featurizers per objective, initial weights, gradients."""
    from skpolysrl import PolySRLFeaturizer

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the children; also far faster than 2 threads on a busy machine
    try:
        fits = {objective: PolySRLFeaturizer(pretrained=None, objective=objective, epochs=EPOCHS, batch_size=BATCH,
                                             random_state=0, verbose=False, device="cpu",
                                             recipe="paper").fit(structures)
                for objective in OBJECTIVES}
        initial = PolySRLFeaturizer(pretrained=None, epochs=0, random_state=0, verbose=False,
                                    device="cpu", recipe="paper").fit(structures).model_
        grads = gradients(initial, training_data(structures), distributed=False)
    finally:
        torch.set_num_threads(threads)
    return fits, initial.state_dict(), grads


@pytest.mark.parametrize("objective", OBJECTIVES)
def test_two_processes_train_the_model_of_one(distributed_run, single, objective):
    from skpolysrl import PolySRLFeaturizer

    fits, initial, _ = single
    one = fits[objective]
    two = PolySRLFeaturizer(pretrained=str(distributed_run / f"{objective}.pt"), device="cpu")
    expected, got = one.model_.state_dict(), two.model_.state_dict()
    assert got.keys() == expected.keys()
    if objective == "polysrl":
        for k in expected:  # atol: one Adam step for a weight whose gradient is rounding noise (module docstring)
            np.testing.assert_allclose(got[k].numpy(), expected[k].numpy(), rtol=1e-4, atol=LR, err_msg=k)
    moved = torch.cat([(expected[k] - initial[k]).flatten() for k in expected])
    apart = torch.cat([(got[k] - expected[k]).flatten() for k in expected])
    # the training displacements agree (an unsynchronised or mis-sampled run is ~100 % off)
    assert float(apart.norm() / moved.norm()) < (1e-2 if objective == "polysrl" else 0.2)

    history = json.loads((distributed_run / f"{objective}.json").read_text())
    assert len(history) == len(one.history_) == EPOCHS
    rtol = 1e-5 if objective == "polysrl" else 1e-3
    for a, b in zip(history, one.history_):
        assert a["epoch"] == b["epoch"]
        for key in ("loss", "kl", "log_variance", "positive_pairs", "retrieval", "positive_correct",
                    "negative_correct", "c", "d", "effective_rank", "mean_cosine"):
            np.testing.assert_allclose(a[key], b[key], rtol=rtol, atol=1e-7, err_msg=key)
    np.testing.assert_allclose(two.transform(FORMULAS), one.transform(FORMULAS), rtol=0,
                               atol=1e-5 if objective == "polysrl" else 1e-3)


def test_gathered_gradients_are_the_full_batch_gradient(distributed_run, single):
    """Sharding + autograd all_gather + DDP averaging give every rank the full-batch gradient."""
    expected = single[2]
    ranks = [torch.load(distributed_run / f"grad{r}.pt", weights_only=True) for r in range(WORLD)]
    for key, one in expected.items():
        for r, got in enumerate(ranks):
            assert got[key].keys() == one.keys(), key  # the same parameters get gradients
            np.testing.assert_allclose([got[key]["loss"], got[key]["kl"]], [one["loss"], one["kl"]], rtol=1e-5)
            names = [n for n in one if n not in ("loss", "kl")]
            norm_one = torch.cat([one[n].flatten() for n in names]).double().norm()
            norm_got = torch.cat([got[key][n].flatten() for n in names]).double().norm()
            assert abs(float(norm_got / norm_one) - 1) < 1e-5, (key, r)  # not world_size x, nor 1/world_size
            for n in names:
                scale = float(one[n].abs().max())
                np.testing.assert_allclose(got[key][n].numpy(), one[n].numpy(), rtol=1e-4, atol=1e-4 * scale,
                                           err_msg=f"{key} {n} rank {r}")
        for n in one:  # DDP leaves every process with the same gradient
            assert torch.equal(torch.as_tensor(ranks[0][key][n]), torch.as_tensor(ranks[1][key][n])), (key, n)


def test_torchrun_cli_pretrain_writes_one_model(tmp_path):
    """``torchrun --nproc_per_node=2 -m skpolysrl.cli pretrain ...``: rank 0 alone writes --out and prints."""
    out = tmp_path / "m.pt"
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    for var in ("MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE", "LOCAL_RANK"):
        env.pop(var, None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={WORLD}",
           "-m", "skpolysrl.cli", "pretrain", "--recipe", "paper", "--data", "bundled", "--limit", "40", "--epochs", "1",
           "--batch-size", "20", "--device", "cpu", "--out", str(out), "--history", str(tmp_path / "h.json")]
    done = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=TIMEOUT)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("wrote ") == 1, done.stdout
    assert done.stderr.count("epoch=1 ") == 1, done.stderr  # one process logs
    assert out.exists() and not (tmp_path / "m.pt.tmp").exists()
    assert json.loads((tmp_path / "h.json").read_text())["history"][0]["epoch"] == 1
