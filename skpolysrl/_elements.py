"""The 200-d Matscholar element embedding (Tshitoyan et al. 2019) that matminer ships."""

import functools
import json
from importlib import resources

import numpy as np

__all__ = ["matscholar_table", "known_atomic_numbers"]


@functools.lru_cache(maxsize=1)
def matscholar_table():
    """Return a float32 array (max_Z + 1, 200); row Z is element Z's embedding, row 0 is zeros."""
    from pymatgen.core.periodic_table import Element

    path = resources.files("matminer.utils.data_files") / "matscholar_els.json"
    with path.open() as fh:
        raw = json.load(fh)
    by_z = {Element(symbol).Z: np.asarray(vec, dtype=np.float32) for symbol, vec in raw.items()}
    table = np.zeros((max(by_z) + 1, len(next(iter(by_z.values())))), dtype=np.float32)
    for z, vec in by_z.items():
        table[z] = vec
    table.setflags(write=False)
    return table


@functools.lru_cache(maxsize=1)
def known_atomic_numbers():
    """Atomic numbers that have an embedding (a frozenset)."""
    table = matscholar_table()
    return frozenset(int(z) for z in np.flatnonzero(np.abs(table).sum(axis=1) > 0))
