"""Imports that need care."""

import functools
import warnings


@functools.lru_cache(maxsize=1)
def import_torch_geometric():
    """Import torch_geometric, silencing only its ``torch.jit.script`` DeprecationWarning."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.*", category=DeprecationWarning)
        import torch_geometric
        import torch_geometric.nn  # noqa: F401  (the layers we use)
    return torch_geometric
