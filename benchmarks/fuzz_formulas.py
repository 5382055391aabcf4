"""Long fuzz run of formula input: every string gives a finite (1, 201) row or a typed error.

    python benchmarks/fuzz_formulas.py --n 20000

Strings mix formula pieces (symbols, unknown/lowercase symbols, parentheses, adduct
separators, signs, exponents, nan/inf, zeros) with arbitrary printable text. Writes
benchmarks/results/fuzz_formulas.md with the counts.
"""

import argparse
import collections
import os
import string
import time
import warnings

import numpy as np

warnings.filterwarnings("ignore", category=UserWarning)
HERE = os.path.dirname(os.path.abspath(__file__))
PIECES = ["Fe", "O", "Na", "Cl", "H", "Bi", "Te", "Xx", "fe", "Og", "D", "(", ")", "[", "]", "·", "*", ".", "-", "+",
          ":", " ", "e", "E", "0", "1", "2", "0.5", "1e-3", "1e400", "nan", "inf", "x", "12", "0.0"]
ALPHABET = list(string.printable + "·•αβ")


def draw(rng):
    if rng.random() < 0.7:
        return "".join(rng.choice(PIECES, size=rng.integers(0, 13)))
    return "".join(rng.choice(ALPHABET, size=rng.integers(0, 21)))


def main():
    from skpolysrl import FormulaError, PolySRLFeaturizer

    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=20000)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    rng = np.random.default_rng(a.seed)
    f = PolySRLFeaturizer(verbose=False)  # parsing is what is fuzzed: the shipped weights, no fit
    counts = collections.Counter()
    other = []
    t = time.perf_counter()
    for _ in range(a.n):
        text = draw(rng)
        try:
            X = f.transform([text])
        except FormulaError as exc:
            counts[f"typed error: {type(exc).__name__}"] += 1
            continue
        except Exception as exc:  # must never happen
            counts["OTHER EXCEPTION"] += 1
            other.append((text, repr(exc)))
            continue
        counts["finite row" if X.shape == (1, 201) and np.isfinite(X).all() else "NON-FINITE ROW"] += 1
    seconds = time.perf_counter() - t
    lines = ["# Formula fuzz run", "", f"Command: `python benchmarks/fuzz_formulas.py --n {a.n} --seed {a.seed}` "
             f"({seconds:.0f} s).", "", "| outcome | count |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in sorted(counts.items())]
    if other:
        lines += ["", "Other exceptions (first 20):", ""] + [f"- `{t!r}`: {e}" for t, e in other[:20]]
    text = "\n".join(lines) + "\n"
    print(text)
    with open(os.path.join(HERE, "results", "fuzz_formulas.md"), "w") as fh:
        fh.write(text)


if __name__ == "__main__":
    main()
