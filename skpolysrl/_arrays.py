"""Vectorised index helpers shared by the graph batchers."""

import numpy as np


def segment_indices(starts, sizes):
    """Flat indices of the segments ``[starts[i], starts[i] + sizes[i])``, concatenated, without a loop."""
    sizes = np.asarray(sizes, dtype=np.int64)
    return np.arange(int(sizes.sum())) + np.repeat(np.asarray(starts) - (np.cumsum(sizes) - sizes), sizes)
