"""Helpers shared by the benchmark scripts: result files and the Magpie baseline."""

import numpy as np


def command_line(prefix="python"):
    """This process's command line as one shell-quoted string (labels with spaces stay one argument)."""
    import shlex
    import sys

    return shlex.join([prefix, *sys.argv])


def strict_json(value):
    """``value`` with every non-finite float (a statistic an epoch lacks, NaN) as None: strict JSON."""
    if isinstance(value, dict):
        return {k: strict_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict_json(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return float(value) if np.isfinite(value) else None
    return value


def write_report(out, lines, payload):
    """Write the markdown ``lines`` to ``out`` and ``payload`` (strict JSON) beside it as ``.json``; print the table."""
    import json
    import os

    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "w") as fh:
        fh.write("\n".join(lines))
    with open(os.path.splitext(out)[0] + ".json", "w") as fh:
        json.dump(strict_json(payload), fh, indent=1, allow_nan=False)
    print("\n".join(lines))


def magpie_features(formulas):
    """matminer's Magpie features (ElementProperty, the "magpie" preset) of ``formulas``, one process."""
    from matminer.featurizers.composition import ElementProperty
    from pymatgen.core import Composition

    ep = ElementProperty.from_preset("magpie")
    ep.set_n_jobs(1)
    return np.asarray(ep.featurize_many([Composition(f) for f in formulas], pbar=False), dtype=float)
