"""Every script in examples/ runs, with fast settings, as a user would run it."""

import glob
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = os.path.join(ROOT, "examples")

# example -> command-line arguments for a fast run ({out} = a fresh output directory)
FAST_ARGS = {
    "uncertainty_plots.py": ["--fast", "--out-dir", "{out}"],
}
# examples run by another test (file::test)
RUN_ELSEWHERE = {
    "quickstart.py": "tests/test_default_model.py::test_quickstart_example_runs",
}


def _run(name, tmp_path):
    out = tmp_path / "out"
    args = [a.replace("{out}", str(out)) for a in FAST_ARGS[name]]
    env = dict(os.environ, MKL_NUM_THREADS="1", MPLBACKEND="Agg")
    proc = subprocess.run([sys.executable, os.path.join(EXAMPLES, name), *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{name} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout, out


def test_every_example_is_run_by_a_test():
    found = {os.path.basename(p) for p in glob.glob(os.path.join(EXAMPLES, "*.py"))}
    missing = found - set(FAST_ARGS) - set(RUN_ELSEWHERE)
    assert not missing, f"add these examples to FAST_ARGS in tests/test_examples.py: {sorted(missing)}"
    for name, test in RUN_ELSEWHERE.items():
        path, func = test.split("::")
        with open(os.path.join(ROOT, path)) as fh:
            source = fh.read()
        assert f"def {func}(" in source and name in source, test


@pytest.mark.parametrize("name", sorted(FAST_ARGS))
def test_example_runs(name, tmp_path):
    pytest.importorskip("matplotlib")  # the examples draw figures (skpolysrl[plot])
    stdout, out = _run(name, tmp_path)
    if name == "uncertainty_plots.py":
        assert "Corpus: 2000 structures" in stdout and "Spearman" in stdout
        assert "479 doped/alloyed, 2003 stoichiometric" in stdout  # the band gap set, split by is_fractional_formula
        for png in ("uncertainty_vs_polymorphs.png", "uncertainty_doped_vs_pure.png"):
            path = out / png
            assert path.is_file() and path.stat().st_size > 10_000, png
            with open(path, "rb") as fh:
                assert fh.read(8) == b"\x89PNG\r\n\x1a\n"
        assert not list(tmp_path.glob("*.png"))  # nothing written outside --out-dir
