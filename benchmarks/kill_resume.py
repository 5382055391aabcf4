"""kill -9 loop over pretraining: does a run that is killed again and again resume to the same model?

Runs ``python -m skpolysrl.cli pretrain ... --checkpoint ck.pt --out m.pt`` on
bundled Materials Project structures, sends SIGKILL at random moments and at
moments when a checkpoint or the output model is being written (a temporary
file of ours is on disk), restarts the same command each time until it
finishes, and compares the final model's weights and history bitwise with an
uninterrupted run (no checkpoint). It also checks that no stray file is left
in the run's folder (only ``ck.pt`` and ``m.pt``).

    python benchmarks/kill_resume.py                      # 200 structures, 6 epochs, 14 kills
    python benchmarks/kill_resume.py --kills 3 --limit 24 --epochs 3  # quick

Writes benchmarks/results/kill_resume.json (and prints a summary).
"""

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
TMP_SUFFIX = ".skpolysrl-tmp"  # the name our atomic writes give their temporary files


def _env():
    root = os.path.dirname(HERE)
    return dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",  # same arithmetic in every process
                PYTHONPATH=os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p))


def _command(limit, epochs, batch_size, out, checkpoint=None):
    cmd = [sys.executable, "-m", "skpolysrl.cli", "pretrain", "--recipe", "paper", "--limit", str(limit),
           "--epochs", str(epochs),
           "--batch-size", str(batch_size), "--seed", "0", "--device", "cpu", "--quiet", "--out", out]
    return cmd + (["--checkpoint", checkpoint] if checkpoint else [])


def _temporaries(folder, name, pid=None):
    """Our temporary files for ``name`` in ``folder`` (of process ``pid`` only, if given)."""
    prefix = f".{name}." if pid is None else f".{name}.{pid}."
    return [f for f in os.listdir(folder) if f.startswith(prefix) and f.endswith(TMP_SUFFIX)]


def _run_until(cmd, folder, mode, expected_s, rng):
    """Start ``cmd``; kill it when ``mode`` says: "random": after a random part of ``expected_s`` (its expected
    run time); "checkpoint": while it writes its second checkpoint (so each start makes progress);
    "output": while it writes m.pt. Returns (killed, phase, rc)."""
    proc = subprocess.Popen(cmd, cwd=folder, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    start = time.monotonic()
    delay = rng.uniform(0.1 * expected_s, 0.7 * expected_s) if mode == "random" else None
    watch, need = {"checkpoint": ("ck.pt", 2), "last checkpoint": ("ck.pt", 1), "output": ("m.pt", 1)}.get(mode, (None, 0))
    seen = set()
    while proc.poll() is None:
        if delay is not None and time.monotonic() - start >= delay:
            proc.kill()
            writing = _temporaries(folder, "ck.pt", proc.pid) + _temporaries(folder, "m.pt", proc.pid)
            phase = f"writing {', '.join(writing)}" if writing else "random"
            proc.wait()
            return True, f"{phase} at {delay:.1f} s", None
        if watch is not None:
            seen.update(_temporaries(folder, watch, proc.pid))
            if len(seen) >= need:
                proc.kill()
                proc.wait()
                return True, f"while writing {watch} at {time.monotonic() - start:.1f} s", None
        time.sleep(0.0005 if watch else 0.02)
    err = proc.stderr.read().decode(errors="replace")
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{err}")
    return False, "finished", proc.returncode


def _weights_and_history(path):
    import torch

    payload = torch.load(path, map_location="cpu", weights_only=True)
    history = [{k: v for k, v in r.items() if k != "seconds"} for r in payload["extra"]["history"]]
    return payload["state_dict"], history


def _checkpoint_epoch(path):
    import torch

    if not os.path.exists(path):
        return 0
    return int(torch.load(path, map_location="cpu", weights_only=True)["epoch"])


def kill_resume(folder, limit=200, epochs=6, batch_size=64, kills=14, seed=0):
    """Run the experiment in ``folder`` (created); returns a dict of results."""
    import torch

    rng = random.Random(seed)
    reference_dir = os.path.join(folder, "reference")
    run_dir = os.path.join(folder, "run")
    os.makedirs(reference_dir)
    os.makedirs(run_dir)
    t0 = time.monotonic()
    subprocess.run(_command(limit, epochs, batch_size, "ref.pt") + ["--history", "ref.json"], cwd=reference_dir,
                   env=_env(), check=True, stdout=subprocess.DEVNULL)
    reference_s = time.monotonic() - t0
    with open(os.path.join(reference_dir, "ref.json")) as fh:
        epoch_s = [r["seconds"] for r in json.load(fh)["history"]]
    startup_s = reference_s - sum(epoch_s)  # imports, reading structures, graphs, writing the model
    # kills at random moments and while a checkpoint or the output is being written, interleaved
    cycle = ["checkpoint", "random", "checkpoint", "checkpoint", "random", "checkpoint", "output", "output", "random"]
    events, finished_early = [], False
    cmd = _command(limit, epochs, batch_size, "m.pt", "ck.pt")
    ckpt = os.path.join(run_dir, "ck.pt")
    for attempt in range(3 * kills):
        if sum(e["killed"] for e in events) >= kills:
            break
        mode = cycle[attempt % len(cycle)]
        done = _checkpoint_epoch(ckpt)
        if mode == "checkpoint" and done == epochs:  # nothing left to checkpoint: kill the output write
            mode = "output"
        if mode == "checkpoint" and done == epochs - 1:  # one write left: kill that one
            mode = "last checkpoint"
        # a random moment of this start's expected run time (shorter as the checkpoint advances)
        expected = startup_s + sum(epoch_s[done:])
        killed, phase, _ = _run_until(cmd, run_dir, mode, expected, rng)
        events.append({"mode": mode, "killed": killed, "when": phase, "checkpoint_epoch_before": done,
                       "files_after": sorted(os.listdir(run_dir))})
        finished_early |= not killed
    killed, phase, _ = _run_until(cmd, run_dir, "none", 0, rng)  # run to the end
    events.append({"mode": "final", "killed": False, "when": phase, "checkpoint_epoch_before": _checkpoint_epoch(ckpt),
                   "files_after": sorted(os.listdir(run_dir))})
    ref_state, ref_history = _weights_and_history(os.path.join(reference_dir, "ref.pt"))
    state, history = _weights_and_history(os.path.join(run_dir, "m.pt"))
    identical = ref_state.keys() == state.keys() and all(torch.equal(ref_state[k], state[k]) for k in ref_state)
    leftover = sorted(set(os.listdir(run_dir)) - {"ck.pt", "m.pt"})
    return {
        "command": " ".join(cmd[1:]),
        "structures": limit, "epochs": epochs, "batch_size": batch_size,
        "kills": sum(e["killed"] for e in events),
        "kills_while_writing_checkpoint": sum(e["killed"] and "ck.pt" in e["when"] for e in events),
        "kills_while_writing_output": sum(e["killed"] and "m.pt" in e["when"] for e in events),
        "starts": len(events), "some_start_finished_before_its_kill": finished_early,
        "reference_seconds": round(reference_s, 1),
        "weights_bitwise_identical": bool(identical), "history_identical": history == ref_history,
        "stray_files": leftover, "events": events,
    }


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--limit", type=int, default=200, help="bundled structures to train on")
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--kills", type=int, default=14)
    p.add_argument("--seed", type=int, default=0, help="seeds the kill times")
    p.add_argument("--out", default=os.path.join(HERE, "results", "kill_resume.json"))
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as folder:
        result = kill_resume(os.path.join(folder, "x"), args.limit, args.epochs, args.batch_size, args.kills,
                             args.seed)
    result["invocation"] = "python benchmarks/kill_resume.py " + " ".join(argv if argv is not None else sys.argv[1:])
    with open(args.out, "w") as fh:
        json.dump(result, fh, indent=1)
    print(json.dumps({k: v for k, v in result.items() if k != "events"}, indent=1))
    for e in result["events"]:
        print(f"  {e['mode']:>10}: {'killed' if e['killed'] else 'ran'} {e['when']}; files: {e['files_after']}")
    ok = result["weights_bitwise_identical"] and result["history_identical"] and not result["stray_files"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
