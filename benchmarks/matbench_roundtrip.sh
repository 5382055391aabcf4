#!/usr/bin/env bash
# Check `skpolysrl matbench` output with the matbench package itself, in a throwaway venv
# (matbench 0.6 pins matminer 0.7.4, scipy 1.7.3, scikit-learn 1.0.1: never install it next to skpolysrl).
#
#   benchmarks/matbench_roundtrip.sh OUT_DIR [OUT_DIR ...]   # folders written by `skpolysrl matbench --out`
#
# 1. our folds (skpolysrl.matbench.load_task, run with this repository's python) against
#    matbench's own split file (matbench_v0.1_validation.json, shipped in the matbench wheel),
#    for all four composition tasks;
# 2. every OUT_DIR/*/results.json loaded with MatbenchBenchmark.from_file (which checks the hash,
#    the keys, the types, and that each fold holds exactly the official test ids), its scores, and
#    matbench's own score_array on the stored predictions against the bundled targets (= stored scores).
# Set MBVENV to reuse a venv (default /tmp/mbvenv). Needs the network once, for pip.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
VENV=${MBVENV:-/tmp/mbvenv}
PY=${PYTHON:-python}

if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c "import matbench.bench" 2>/dev/null; then
    python -m venv "$VENV"
    "$VENV/bin/pip" install -q --no-deps matbench==0.6
    # what `import matbench` needs, unpinned (the pinned versions do not build on this Python)
    "$VENV/bin/pip" install -q monty numpy pandas scikit-learn scipy requests tqdm pymatgen
    "$VENV/bin/pip" install -q --no-deps matminer
fi

FOLDS=$(mktemp --suffix=.json)
trap 'rm -f "$FOLDS"' EXIT
PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" "$PY" - "$FOLDS" <<'EOF'
import json, sys
from skpolysrl.matbench import TASKS, load_task

folds, targets = {}, {}
for task in TASKS:
    _, y, ids, splits = load_task(task)
    folds[task] = [[ids[i] for i in test] for _, test in splits]
    targets[task] = dict(zip(ids, y.tolist()))
json.dump({"folds": folds, "targets": targets}, open(sys.argv[1], "w"))
EOF

"$VENV/bin/python" - "$FOLDS" "$@" <<'EOF' 2>&1 | grep -v -E "INFO|WARNING|^\[|^ *'matbench_"
import glob, json, os, sys
import matbench
from matbench.bench import MatbenchBenchmark
from matbench.data_ops import score_array
from matbench.metadata import mbv01_validation

print(f"matbench {matbench.__version__} from {os.path.dirname(matbench.__file__)}")
ours = json.load(open(sys.argv[1]))
for task, folds in ours["folds"].items():
    official = mbv01_validation.splits[task]
    same = [sorted(folds[k]) == sorted(official[f"fold_{k}"].test) for k in range(5)]
    print(f"{task}: our 5 test folds equal matbench's validation splits: {same}")
    assert all(same), task
for out in sys.argv[2:]:
    for path in sorted(glob.glob(os.path.join(out, "*", "results.json"))):
        mb = MatbenchBenchmark.from_file(path)
        print(f"\n{path}: loaded; is_valid={mb.is_valid}, is_recorded={mb.is_recorded}")
        for task in mb.tasks:
            metric = "mae" if task.metadata.task_type == "regression" else "rocauc"
            s = mb.scores[task.dataset_name][metric]
            print(f"  {task.dataset_name}: {metric} mean {s.mean:.4f} std {s.std:.4f} "
                  f"(min {s.min:.4f}, max {s.max:.4f})")
            # matbench's own scoring of the stored predictions against the bundled targets
            truth = ours["targets"][task.dataset_name]
            classify = task.metadata.task_type == "classification"
            for fold in task.results.values():
                ids = list(fold.data)
                again = score_array([bool(truth[i]) if classify else truth[i] for i in ids],
                                    [fold.data[i] for i in ids], task.metadata.task_type)
                assert all(abs(again[k] - fold.scores[k]) < 1e-12 for k in again), (again, fold.scores)
            print(f"  {task.dataset_name}: matbench.data_ops.score_array re-scores all 5 folds identically")
EOF
