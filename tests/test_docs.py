"""The Sphinx documentation builds with warnings as errors (the CI check of docs/)."""

import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = os.path.join(ROOT, "docs")

pytest.importorskip("sphinx")
pytest.importorskip("myst_parser")


# Sphinx's own napoleon uses an interface Sphinx has deprecated; not ours to fix.
@pytest.mark.filterwarnings("ignore:The mapping interface for autodoc options:DeprecationWarning")
@pytest.mark.filterwarnings("ignore:The mapping interface for autodoc options:PendingDeprecationWarning")
def test_docs_build_without_warnings(tmp_path):
    from sphinx.cmd.build import build_main

    out = tmp_path / "html"
    # -E: read every source (no pickled environment), -d: doctrees outside the source tree
    rc = build_main(["-W", "--keep-going", "-E", "-q", "-b", "html", "-d", str(tmp_path / "doctrees"), DOCS, str(out)])
    assert rc == 0, "sphinx reported warnings or errors (printed above)"

    index = (out / "index.html").read_text(encoding="utf-8")
    assert "PolySRLFeaturizer" in index
    for page in ("quickstart", "pretraining", "uncertainty", "reproducing", "cli", "method", "api", "matbench"):
        assert f'href="{page}.html"' in index, page

    api = (out / "api.html").read_text(encoding="utf-8")
    for anchor in ("skpolysrl.PolySRLFeaturizer", "skpolysrl.PolySRLFeaturizer.transform", "skpolysrl.FormulaError",
                   "skpolysrl.evaluation.cross_validate_probe", "skpolysrl.datasets.load_mp_structures",
                   "skpolysrl.plotting.plot_parity", "skpolysrl.analysis.is_fractional_formula",
                   "skpolysrl.training.pretrain", "skpolysrl.nn.PolySRLModel", "skpolysrl.loss.soft_contrastive_loss",
                   "skpolysrl.graphs.build_structure_graphs", "skpolysrl.regressor.PolySRLRegressor",
                   "skpolysrl.model_selection.cross_validate"):
        assert f'id="{anchor}"' in api, anchor
    assert "set_fit_request" not in api  # scikit-learn's generated setters are left out

    # the CLI page shows the real --help text of each subcommand, generated at build time
    cli = (out / "cli.html").read_text(encoding="utf-8")
    for command in ("pretrain", "featurize", "evaluate", "matbench"):
        assert f"usage: skpolysrl {command}" in cli, command
    assert "--epochs" in cli and "--formula-col" in cli
    method = (out / "method.html").read_text(encoding="utf-8")
    assert "<table" in method  # docs/method.md through MyST, tables included
