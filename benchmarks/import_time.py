"""What a fresh process pays before its first feature: imports (``python -X importtime``) and
the first ``transform``, next to matminer's Magpie doing the same.

    python benchmarks/import_time.py [--repeats 5]

Each repeat runs, in fresh Python processes one after the other:

* ``python -X importtime -c "from skpolysrl import PolySRLFeaturizer"``: the cumulative import
  time of the packages that dominate (a package's line in the report counts the modules it
  imports first, e.g. scikit-learn's includes scipy);
* ``PolySRLFeaturizer().transform(["NaCl"])`` and
  ``ElementProperty.from_preset("magpie").featurize(Composition("NaCl"))``, timed from
  interpreter start to the first feature row (``time.perf_counter`` inside the process plus
  the interpreter start measured by the parent).

Writes benchmarks/results/import_time.md.
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
# modules whose import dominates (a package's __init__ alone can be cheap: scipy.stats, not scipy)
PACKAGES = ("torch", "sklearn", "scipy.stats", "pandas", "numpy", "matminer.featurizers.base", "pymatgen.core",
            "torch_geometric", "pooch", "skpolysrl")
FIRST_FEATURE = {
    "skpolysrl": "from skpolysrl import PolySRLFeaturizer; PolySRLFeaturizer().transform(['NaCl'])",
    "magpie": "from matminer.featurizers.composition import ElementProperty; from pymatgen.core import Composition; "
              "ElementProperty.from_preset('magpie').featurize(Composition('NaCl'))",
}


def import_times():
    """Cumulative import seconds per top-level package, from ``-X importtime``."""
    proc = subprocess.run([sys.executable, "-X", "importtime", "-c", "from skpolysrl import PolySRLFeaturizer"],
                          capture_output=True, text=True, check=True)
    out = {}
    for line in proc.stderr.splitlines():
        if not line.startswith("import time:") or "|" not in line:
            continue
        _, cumulative, name = line.split("|")
        name = name.strip()
        if name in PACKAGES and cumulative.strip().isdigit():
            out[name] = int(cumulative) / 1e6
    return out


def first_feature_seconds(code):
    t = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
    return time.perf_counter() - t


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--out", default=os.path.join(HERE, "results", "import_time.md"))
    a = p.parse_args()
    runs = []
    for _ in range(a.repeats):
        run = {"imports": import_times()}
        run.update({k: first_feature_seconds(code) for k, code in FIRST_FEATURE.items()})
        runs.append(run)
        print(json.dumps(run), flush=True)

    def cell(values):
        return f"{np.median(values):.3f} s ({', '.join(f'{v:.3f}' for v in values)})"

    lines = [
        "# A fresh process: imports and the first feature",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores, Python {platform.python_version()}, load average "
        f"{os.getloadavg()[0]:.1f} at the end (shared machine). Command: `python benchmarks/import_time.py "
        f"--repeats {a.repeats}`. Median over the repeats (each in brackets).",
        "",
        "## `python -X importtime -c \"from skpolysrl import PolySRLFeaturizer\"`",
        "",
        "Cumulative import time of each module where it is first imported (it includes the modules it imports "
        "first: scipy.stats is inside scikit-learn's time, scikit-learn and pymatgen.core inside matminer's base).",
        "",
        "| module | import time |",
        "|---|---|",
    ]
    for name in PACKAGES:
        values = [r["imports"].get(name) for r in runs]
        lines.append(f"| {name} | " + ("not imported" if None in values else cell(values)) + " |")
    lines += [
        "",
        "## From interpreter start to the first feature row (one formula, NaCl)",
        "",
        "| what | seconds |",
        "|---|---|",
        f"| `PolySRLFeaturizer().transform([\"NaCl\"])` (imports, weights, one forward) | "
        f"{cell([r['skpolysrl'] for r in runs])} |",
        "| `ElementProperty.from_preset(\"magpie\").featurize(Composition(\"NaCl\"))` | "
        f"{cell([r['magpie'] for r in runs])} |",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    with open(a.out, "w") as fh:
        fh.write(text)


if __name__ == "__main__":
    main()
