"""Helpers shared by the benchmark scripts' result files."""

import numpy as np


def strict_json(value):
    """``value`` with every non-finite float (a statistic an epoch lacks, NaN) as None: strict JSON."""
    if isinstance(value, dict):
        return {k: strict_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict_json(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return float(value) if np.isfinite(value) else None
    return value
