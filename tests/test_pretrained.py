"""A pretrained featurizer used the way people expect: no fit, named models with a cache,
matminer's process pool, progress bars, one definition of the output columns.

scikit-learn's estimator checks are written for numeric 2-D X. The ones that apply to a
featurizer of formulas are called explicitly below: on the shipped model
(``CHECKS_DEFAULT``) and, for the checks about the fitted state, on a random-weight
featurizer (``pretrained=None``, which needs a fit: ``CHECKS_RANDOM``). The behaviour the
numeric checks test (pickling, idempotent fit, subset and sample-order invariance,
Pipeline, set_output) is tested here on real formulas.

Checks that cannot apply, and why:
- numeric-X checks (``check_transformer_general``, ``check_transformer_preserve_dtypes``,
  ``check_estimators_dtypes``, ``check_dtype_object``, ``check_fit2d_*``, ``check_fit1d``,
  ``check_estimators_nan_inf``, ``check_estimators_pickle``, ``check_fit_idempotent``,
  ``check_dict_unchanged``, ``check_methods_*_invariance``, ``check_pipeline_consistency``,
  ``check_set_output_transform*``, ``check_transformer_data_not_an_array``,
  ``check_f_contiguous_array_estimator``, ``check_readonly_memmap_input``,
  ``check_estimators_empty_data_messages``, ``check_complex_data``): X is formulas, not numbers;
- ``check_transformers_unfitted_stateless`` on the shipped model: it transforms numeric X;
- ``check_fit_check_is_fitted``, ``check_get_feature_names_out_error``,
  ``check_transformers_unfitted`` on the shipped model: a pretrained featurizer is fitted on
  construction by design (they run on ``pretrained=None``);
- ``check_n_features_in*``: the input is one column of formulas, no numeric features to count;
- ``check_mixin_order``: matminer's ``BaseFeaturizer`` (our base class) lists
  ``BaseEstimator`` before ``TransformerMixin``;
- sparse, sample-weight, classifier, regressor, clusterer and outlier checks: not that kind
  of estimator or input.
"""

import functools
import hashlib
import http.server
import os
import pickle
import shutil
import subprocess
import sys
import threading

import numpy as np
import pandas as pd
import pytest
import sklearn.utils.estimator_checks as ec
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV, cross_val_score
from sklearn.pipeline import Pipeline
from sklearn.linear_model import Ridge

from skpolysrl import ModelFileError, PolySRLFeaturizer, UnknownElementError, registry
from skpolysrl.featurizer import default_model_path

FORMULAS = ["Fe2O3", "NaCl", "Bi2Te2.7Se0.3", "(Bi2Te3)0.9(Sb2Te3)0.1", "SiO2", "GaAs", "TiO2", "Cu2ZnSnS4"]

CHECKS_DEFAULT = [
    "check_no_attributes_set_in_init", "check_parameters_default_constructible", "check_get_params_invariance",
    "check_set_params", "check_estimator_cloneable", "check_estimator_repr", "check_estimator_tags_renamed",
    "check_valid_tag_types", "check_do_not_raise_errors_in_init_or_set_params", "check_param_validation",
    "check_estimators_overwrite_params", "check_dont_overwrite_parameters", "check_estimators_fit_returns_self",
    "check_transformer_n_iter", "check_estimators_unfitted",
]
CHECKS_RANDOM = [
    "check_fit_check_is_fitted", "check_get_feature_names_out_error", "check_transformers_unfitted",
    "check_estimators_fit_returns_self", "check_estimators_overwrite_params", "check_dont_overwrite_parameters",
]


@pytest.mark.parametrize("check", CHECKS_DEFAULT)
def test_sklearn_checks_that_apply_to_the_shipped_model(check):
    getattr(ec, check)("PolySRLFeaturizer", PolySRLFeaturizer(verbose=False, device="cpu"))


@pytest.mark.parametrize("check", CHECKS_RANDOM)
def test_sklearn_fitted_state_checks_on_random_weights(check):
    getattr(ec, check)("PolySRLFeaturizer", PolySRLFeaturizer(pretrained=None, random_state=0, verbose=False,
                                                             device="cpu"))


def _assert_same_features(actual, expected):
    """Equal up to float32 rounding: the same weights give the same features whatever the batch and the
    thread count, but the order of the sums differs (1e-7 on this CPU at 1 thread), so the means get
    1e-6 absolute and the uncertainty (values near 1e-9) a relative tolerance of its own."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    np.testing.assert_allclose(actual[..., :-1], expected[..., :-1], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(actual[..., -1], expected[..., -1], rtol=1e-4)


@pytest.fixture(scope="module")
def reference():
    """Features of the shipped model, computed the long way (its weights loaded from the file)."""
    from skpolysrl._elements import known_atomic_numbers
    from skpolysrl._formula import StoichiometryTable, parse_formulas
    from skpolysrl._io import load_model
    from skpolysrl.nn import output_features_np
    from skpolysrl.training import encode

    model = load_model(default_model_path())[0]
    return output_features_np(*encode(model, StoichiometryTable(parse_formulas(FORMULAS, known_atomic_numbers()))))


# ------------------------------------------------------------------- no fit
def test_transform_needs_no_fit_in_a_fresh_offline_process(tmp_path, reference):
    """A new process with sockets disabled and an empty cache featurizes with the shipped model."""
    out = tmp_path / "X.npy"
    code = (
        "import socket, sys\n"
        "def offline(*a, **k):\n    raise OSError('network disabled by the test')\n"
        "socket.socket.connect = socket.create_connection = offline\n"
        "import numpy as np\n"
        "from skpolysrl import PolySRLFeaturizer\n"
        f"np.save({str(out)!r}, PolySRLFeaturizer().transform(['NaCl'] + {FORMULAS!r}))\n"
        "print(any(m.split('.')[0] == 'torch_geometric' for m in sys.modules))\n"
    )
    env = {**os.environ, "SKPOLYSRL_CACHE": str(tmp_path / "empty_cache")}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "False"  # formulas never import torch_geometric
    X = np.load(out)
    assert X.shape == (len(FORMULAS) + 1, 201) and np.isfinite(X).all()
    _assert_same_features(X[1:], reference)
    assert not (tmp_path / "empty_cache").exists()  # the shipped model is never copied to the cache


def test_pretrained_is_fitted_on_construction_and_random_weights_are_not():
    from sklearn.exceptions import NotFittedError
    from sklearn.utils.validation import check_is_fitted

    f = PolySRLFeaturizer()
    check_is_fitted(f)
    assert "_model" not in vars(f) and "_lazy" not in vars(f)  # nothing loaded until used
    assert f.get_feature_names_out()[-1] == "polysrl_uncertainty"
    r = PolySRLFeaturizer(pretrained=None)
    with pytest.raises(NotFittedError, match="fit"):
        r.transform(["NaCl"])
    with pytest.raises(NotFittedError, match="random weights only after fit"):
        r.featurize("NaCl")


def test_from_pretrained_and_fit_on_formulas_give_the_same_features(reference):
    f = PolySRLFeaturizer.from_pretrained("default", verbose=False)
    assert "_lazy" in vars(f)  # loaded by the factory
    _assert_same_features(f.transform(FORMULAS), reference)
    g = PolySRLFeaturizer.from_pretrained(default_model_path())  # a path works the same
    np.testing.assert_array_equal(g.transform(FORMULAS), f.transform(FORMULAS))
    assert f.fit(FORMULAS) is f and f.history_ == []  # fit on formulas trains nothing
    np.testing.assert_array_equal(f.transform(FORMULAS), g.transform(FORMULAS))
    with pytest.raises(ModelFileError, match="not a registered model name"):
        PolySRLFeaturizer.from_pretrained("no-such-model")


def test_weights_are_loaded_once_per_process_and_shared_read_only():
    a, b = PolySRLFeaturizer(), clone(PolySRLFeaturizer())
    assert a.model_ is b.model_  # one copy per process, whatever the number of featurizers
    trained_start = PolySRLFeaturizer()._initial_model(0)  # what fit(structures) trains: a private copy
    assert trained_start is not a.model_
    for p, q in zip(trained_start.parameters(), a.model_.parameters()):
        assert p.data_ptr() != q.data_ptr()


def test_assigning_model_makes_it_the_featurizers_own(reference):
    import copy

    import torch

    f = PolySRLFeaturizer(verbose=False)
    own = copy.deepcopy(f.model_)
    with torch.no_grad():
        own.stoichiometry.lin_mu.bias.add_(1.0)
    f.model_ = own
    assert f.model_ is own and f.device_ == "cpu" and PolySRLFeaturizer().model_ is not own
    assert not np.allclose(f.transform(FORMULAS), reference, atol=1e-3)
    np.testing.assert_allclose(pickle.loads(pickle.dumps(f)).transform(FORMULAS), f.transform(FORMULAS), atol=1e-7)


def test_first_use_from_many_threads_loads_the_weights_once(monkeypatch, reference):
    from concurrent.futures import ThreadPoolExecutor

    from skpolysrl import featurizer

    monkeypatch.setattr(featurizer, "_SHARED_MODELS", {})
    loads = []
    original = featurizer._load_model_file
    monkeypatch.setattr(featurizer, "_load_model_file", lambda path: loads.append(path) or original(path))
    featurizers = [PolySRLFeaturizer(verbose=False) for _ in range(8)]
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda f: f.transform(FORMULAS), featurizers))
    assert len(loads) == 1
    for X in results:
        _assert_same_features(X, reference)


def test_sklearn_tools_work_without_fit(band_gap):
    sub = band_gap.sample(120, random_state=0)
    X, y = sub[["formula"]], sub["target"].to_numpy()
    pipe = Pipeline([("polysrl", PolySRLFeaturizer(verbose=False)), ("ridge", Ridge())])
    scores = cross_val_score(pipe, X, y, cv=3, scoring="neg_mean_absolute_error")
    assert np.isfinite(scores).all()
    grid = GridSearchCV(pipe, {"ridge__alpha": [0.1, 10.0]}, cv=3, scoring="neg_mean_absolute_error").fit(X, y)
    assert grid.best_params_["ridge__alpha"] in (0.1, 10.0)


def test_pickle_of_an_unfitted_featurizer_holds_the_name_not_the_weights(reference):
    f = PolySRLFeaturizer(verbose=False)
    f.transform(FORMULAS)
    data = pickle.dumps(f)
    assert len(data) < 100_000  # the 5.7 MB of weights are not in it
    g = pickle.loads(data)
    _assert_same_features(g.transform(FORMULAS), reference)


def test_subset_and_order_invariance_on_formulas():
    f = PolySRLFeaturizer(verbose=False)
    X = f.transform(FORMULAS)
    order = np.random.default_rng(0).permutation(len(FORMULAS))
    np.testing.assert_allclose(f.transform([FORMULAS[i] for i in order]), X[order], atol=1e-6)
    np.testing.assert_allclose(f.transform(FORMULAS[2:5]), X[2:5], atol=1e-6)


# ---------------------------------------------------------- output columns
def test_transform_probe_and_regressor_build_the_same_columns(monkeypatch, reference):
    """transform, the held-out probe (keep-best epochs) and the regressor score the same 201 columns."""
    import torch

    from skpolysrl import evaluation, training
    from skpolysrl._io import load_model
    from skpolysrl.nn import output_features
    from skpolysrl._estimator import _finetune_net
    from skpolysrl.training import HeldOutProbe

    model = load_model(default_model_path())[0]
    seen = {}

    def capture(X, targets, **kwargs):
        seen["probe"] = X
        return {"mae_mean": 0.0}

    monkeypatch.setattr(evaluation, "cross_validate_probe", capture)
    monkeypatch.setattr(training, "cross_validate_probe", capture)  # the probe's own reference
    probe = HeldOutProbe(FORMULAS, np.arange(len(FORMULAS), dtype=float), max_samples=len(FORMULAS))
    probe(model)
    kept = np.random.default_rng(0).permutation(len(FORMULAS))  # the probe's row order (seed 0)
    _assert_same_features(seen["probe"], reference[kept])

    from skpolysrl._elements import known_atomic_numbers
    from skpolysrl._formula import StoichiometryTable, parse_formulas
    from skpolysrl.training import _stoich_tensors

    table = StoichiometryTable(parse_formulas(FORMULAS, known_atomic_numbers()))
    net = _finetune_net(model.stoichiometry, torch.nn.Identity(), np.zeros(201), np.ones(201)).eval()
    with torch.no_grad():
        regressor_input = net(*_stoich_tensors(table, np.arange(len(FORMULAS)), "cpu"), len(FORMULAS))
    np.testing.assert_allclose(regressor_input.view(len(FORMULAS), -1).numpy(), reference, rtol=1e-5, atol=1e-6)
    _assert_same_features(PolySRLFeaturizer().transform(FORMULAS), reference)
    mu, log_sigma = torch.randn(5, 4), torch.randn(5, 4)
    expected = np.exp(np.mean(2 * log_sigma.numpy().astype(np.float64), axis=1))  # geometric-mean variance
    np.testing.assert_allclose(output_features(mu, log_sigma)[:, -1].numpy(), expected, rtol=1e-5)


# -------------------------------------------------------- progress bars
def test_progress_bars_are_off_in_transform_and_on_in_matminer_methods(capfd):
    f = PolySRLFeaturizer(verbose=False)
    f.transform(FORMULAS)
    assert "PolySRLFeaturizer" not in capfd.readouterr().err
    f.transform(FORMULAS, pbar=True)
    err = capfd.readouterr().err
    assert "PolySRLFeaturizer" in err and f"{len(FORMULAS)}/{len(FORMULAS)}" in err
    f.featurize_dataframe(pd.DataFrame({"formula": FORMULAS}), "formula")  # matminer's default: pbar=True
    assert f"{len(FORMULAS)}/{len(FORMULAS)}" in capfd.readouterr().err
    f.featurize_many(FORMULAS, pbar={"desc": "my formulas"})
    assert "my formulas" in capfd.readouterr().err
    f.featurize_dataframe(pd.DataFrame({"formula": FORMULAS}), "formula", pbar=False)
    assert "PolySRLFeaturizer" not in capfd.readouterr().err


# ------------------------------------------------ matminer process pools
def test_multiple_featurizer_in_a_process_pool_matches_featurize_dataframe(band_gap):
    from matminer.featurizers.base import MultipleFeaturizer
    from matminer.featurizers.composition import ElementProperty
    from pymatgen.core import Composition

    formulas = band_gap.formula.head(40).tolist()
    df = pd.DataFrame({"composition": [Composition(x) for x in formulas]})
    ours = PolySRLFeaturizer(verbose=False)
    magpie = ElementProperty.from_preset("magpie")
    multi = MultipleFeaturizer([magpie, ours])
    multi.set_n_jobs(2)  # a process pool, as matminer's default n_jobs = cpu_count()
    out = multi.featurize_dataframe(df, "composition", pbar=False)
    labels = ours.feature_labels()
    np.testing.assert_allclose(out[labels].to_numpy(dtype=float), ours.transform(formulas), rtol=1e-5, atol=1e-6)
    magpie.set_n_jobs(1)
    alone = magpie.featurize_dataframe(df, "composition", pbar=False)
    np.testing.assert_array_equal(out[magpie.feature_labels()].to_numpy(dtype=float),
                                  alone[magpie.feature_labels()].to_numpy(dtype=float))


def test_pool_tasks_are_encoded_in_one_batch_and_bad_rows_keep_matminer_errors():
    from multiprocessing import get_context

    f = PolySRLFeaturizer(verbose=False)
    rows = [(x,) for x in FORMULAS + ["Xx2O"]]
    with get_context("fork").Pool(2) as pool:
        got = pool.map(functools.partial(_featurize_wrapper_and_count, f), rows, chunksize=len(rows))
    features, batches = zip(*got)
    assert set(batches) == {1}  # one forward pass for the task's 9 rows
    np.testing.assert_allclose(np.array(features[:-1], dtype=float), f.transform(FORMULAS), rtol=1e-5, atol=1e-6)
    assert np.isnan(np.asarray(features[-1], dtype=float)).all()  # ignore_errors: matminer's NaN row
    with get_context("fork").Pool(1) as pool, pytest.raises(UnknownElementError, match="'Xx2O'.*ignore_errors"):
        pool.map(functools.partial(f.featurize_wrapper, ignore_errors=False), rows, chunksize=len(rows))


def _featurize_wrapper_and_count(f, x):
    calls = getattr(f, "_calls", 0)
    original = f._transform_items

    def counting(items, *args, **kwargs):
        f._calls = getattr(f, "_calls", 0) + (len(items) > 1)
        return original(items, *args, **kwargs)

    f._transform_items = counting
    try:
        return list(f.featurize_wrapper(x, ignore_errors=True)), getattr(f, "_calls", calls)
    finally:
        del f._transform_items


# ---------------------------------------------------------------- registry
class _Server:
    """A local HTTP file server (127.0.0.1) over ``root``, run in a thread."""

    def __init__(self, root):
        handler = functools.partial(_QuietHandler, directory=str(root))
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def hosted_model(tmp_path):
    """The shipped weights served as a downloadable model "test-remote" by a local server."""
    root = tmp_path / "server"
    root.mkdir()
    shutil.copy(default_model_path(), root / "remote.pt")
    digest = hashlib.sha256((root / "remote.pt").read_bytes()).hexdigest()
    server = _Server(root)
    entry = registry.register_model("test-remote", url=f"{server.url}/remote.pt", sha256=digest,
                                    size=(root / "remote.pt").stat().st_size, model_card="a test copy")
    yield entry, server, root
    server.stop()
    registry._REGISTRY.pop("test-remote", None)
    registry._RESOLVED.clear()


def test_registry_lists_the_shipped_model_first_with_its_hash():
    assert registry.available_models()[0] == "default"
    entry = registry.get_model_entry("default")
    assert entry.shipped and entry.url is None
    path = registry.model_file("default")
    assert hashlib.sha256(path.read_bytes()).hexdigest() == entry.sha256
    assert path.stat().st_size == entry.size
    with pytest.raises(KeyError, match="registered"):
        registry.get_model_entry("nope")
    with pytest.raises(ValueError, match="already registered"):
        registry.register_model("default", url="http://x", sha256="0" * 64)
    with pytest.raises(ValueError, match="64 hex"):
        registry.register_model("x", url="http://x", sha256="abc")


def test_named_model_is_fetched_once_checked_and_reused_offline(hosted_model, tmp_path, monkeypatch, reference):
    entry, server, _ = hosted_model
    cache = tmp_path / "cache"
    monkeypatch.setenv(registry.CACHE_ENV, str(cache))
    f = PolySRLFeaturizer(pretrained="test-remote", verbose=False)
    _assert_same_features(f.transform(FORMULAS), reference)
    cached = cache / entry.filename
    assert cached.is_file() and registry.cached_model_path("test-remote") == cached
    assert hashlib.sha256(cached.read_bytes()).hexdigest() == entry.sha256
    assert [p.name for p in cache.iterdir()] == [entry.filename]  # no temporary file left behind
    server.stop()  # offline from here on
    registry._RESOLVED.clear()
    g = PolySRLFeaturizer.from_pretrained("test-remote", verbose=False)
    _assert_same_features(g.transform(FORMULAS), reference)
    # an argument overrides the environment variable: that cache is empty, and the server is gone
    other = tmp_path / "other_cache"
    with pytest.raises(ModelFileError) as err:
        PolySRLFeaturizer.from_pretrained("test-remote", cache_dir=other)
    message = str(err.value)
    assert str(other / entry.filename) in message and entry.url in message and "put it at" in message


def test_cache_dir_argument_downloads_there(hosted_model, tmp_path):
    entry, _, _ = hosted_model
    f = PolySRLFeaturizer.from_pretrained("test-remote", cache_dir=tmp_path / "c", verbose=False)
    assert f.pretrained == str(tmp_path / "c" / entry.filename)  # clones find the same file
    np.testing.assert_array_equal(clone(f).transform(FORMULAS), f.transform(FORMULAS))


def test_tampered_download_and_tampered_cache_are_refused(hosted_model, tmp_path):
    entry, _, root = hosted_model
    good = (root / "remote.pt").read_bytes()
    (root / "remote.pt").write_bytes(good[:-10] + b"0123456789")  # the server now serves other bytes
    cache = tmp_path / "cache"
    with pytest.raises(ModelFileError, match="does not match its sha256") as err:
        registry.model_file("test-remote", cache=cache)
    assert "refused" in str(err.value)
    assert not (cache / entry.filename).exists()  # nothing unverified was kept
    (root / "remote.pt").write_bytes(good)
    path = registry.model_file("test-remote", cache=cache)
    registry._RESOLVED.clear()
    path.write_bytes(good[: len(good) // 2])  # truncated / modified in the cache
    with pytest.raises(ModelFileError, match="delete it") as err:
        registry.model_file("test-remote", cache=cache)
    assert str(path) in str(err.value)


def test_cli_featurize_progress_flag(tmp_path, capfd, monkeypatch):
    from skpolysrl import cli

    table = tmp_path / "in.csv"
    pd.DataFrame({"formula": FORMULAS}).to_csv(table, index=False)
    out = tmp_path / "out.csv"
    assert cli.main(["featurize", "--input", str(table), "--out", str(out)]) == 0
    assert "PolySRLFeaturizer" not in capfd.readouterr().err  # short table, not a terminal: quiet
    assert cli.main(["featurize", "--input", str(table), "--out", str(out), "--progress", "--overwrite"]) == 0
    assert f"{len(FORMULAS)}/{len(FORMULAS)}" in capfd.readouterr().err
    monkeypatch.setattr(cli, "_AUTO_PROGRESS_ROWS", 5)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    assert cli.main(["featurize", "--input", str(table), "--out", str(out), "--overwrite"]) == 0  # long, on a terminal
    assert f"{len(FORMULAS)}/{len(FORMULAS)}" in capfd.readouterr().err
    np.testing.assert_allclose(pd.read_csv(out)[PolySRLFeaturizer().feature_labels()].to_numpy(),
                               PolySRLFeaturizer().transform(FORMULAS), rtol=1e-5, atol=1e-6)


def test_shipped_uncertainty_ranks_polymorphic_formulas_higher():
    """The paper's Fig. 3a on the bundled corpus: formulas with several structures there are more uncertain
    (the shipped model v8 gives ROC AUC 0.793 and rho 0.27 over 5,667 formulas, 418 polymorphic;
    v4b 0.795, v4 0.803, v3 0.79)."""
    from scipy.stats import spearmanr
    from sklearn.metrics import roc_auc_score

    from skpolysrl.analysis import count_structures_per_formula
    from skpolysrl.datasets import load_mp_structures

    counts = count_structures_per_formula(load_mp_structures(structures=False).formula)
    u = PolySRLFeaturizer(verbose=False).transform(list(counts.index))[:, -1]
    n = counts.to_numpy()
    assert roc_auc_score(n > 1, u) > 0.75
    assert spearmanr(u, n)[0] > 0.2


def test_shipped_uncertainty_is_bounded_on_every_element():
    """No formula is wider than the widest polymorph family fitted: the shipped model carries the variance
    stage's bound on log sigma, and the pure elements, where an unbounded variance path extrapolated
    (v4: Lr 1,110 where polymorph spreads reach 4.7e-3), stay under it."""
    from skpolysrl._elements import known_atomic_numbers
    from pymatgen.core import Element

    f = PolySRLFeaturizer(verbose=False)
    bound = f.model_.config.log_sigma_max
    assert bound is not None
    elements = [Element.from_Z(int(z)).symbol for z in known_atomic_numbers()]
    u = f.transform(elements)[:, -1]
    assert np.all(np.isfinite(u)) and np.all(u > 0)
    assert u.max() <= np.exp(2 * bound) * (1 + 1e-5)
    assert u.max() < 1e-2  # the bound itself is a polymorph spread, not a number far outside them
