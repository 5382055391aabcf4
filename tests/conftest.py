import os

import pytest

# MKL picks its thread count dynamically when the CPU is busy, which changes float
# summation order between runs; one MKL thread keeps same-seed runs bitwise equal.
os.environ.setdefault("MKL_NUM_THREADS", "1")

torch = pytest.importorskip("torch")
torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(scope="session")
def mp_small():
    """The first 300 bundled Materials Project structures (real data)."""
    from skpolysrl.datasets import load_mp_structures

    return load_mp_structures(limit=300)


@pytest.fixture(scope="session")
def trained(mp_small):
    """A featurizer pretrained for a few epochs on real structures (seconds on CPU)."""
    from skpolysrl import PolySRLFeaturizer

    f = PolySRLFeaturizer(pretrained=None, epochs=4, batch_size=64, lr=5e-5, random_state=0, verbose=False,
                          device="cpu", recipe="paper")
    return f.fit(mp_small)


@pytest.fixture(scope="session")
def model_path(trained, tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "polysrl.pt"
    trained.save(path)
    return path


@pytest.fixture(scope="session")
def band_gap():
    from skpolysrl.datasets import load_expt_gap_nonmetals

    return load_expt_gap_nonmetals()
