"""Multi-process pretraining (several GPUs, several nodes) on ``torch.distributed``.

Launch the usual command with ``torchrun`` and each process trains on a shard
of every batch; the result equals a single-process run with the same (global)
``batch_size`` up to float rounding (see :func:`skpolysrl.training.pretrain`)::

    torchrun --nproc_per_node=4 -m skpolysrl.cli pretrain --data mp.pkl --out model.pt

This module holds the pieces: the process group set up from torchrun's
environment variables (:func:`init_from_env`), the contiguous sharding of a
global batch (:func:`shard_bounds`), the autograd-aware gathering of the
shards' embeddings (:func:`gather_rows`), the DistributedDataParallel wrapper
(:func:`wrap_module`), and rank-0 / agreement helpers. The rank helpers,
:func:`init_from_env`, :func:`broadcast_object` and :func:`assert_same` are
harmless outside a process group (rank 0 of 1, no-op, identity), so
single-process code calls them unconditionally.
"""

import atexit
import os

__all__ = ["is_active", "get_rank", "get_world_size", "local_rank", "is_main_process", "local_device",
           "init_from_env", "shard_sizes", "shard_bounds", "gather_rows", "wrap_module", "broadcast_object",
           "assert_same"]


def _dist():
    import torch.distributed as dist

    return dist


def is_active():
    """True inside an initialised ``torch.distributed`` process group of two or more processes."""
    dist = _dist()
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _env_int(name, default):
    value = os.environ.get(name, "")
    return int(value) if value.strip() else default


def get_rank():
    """This process's rank: from the process group, else from ``RANK`` (torchrun), else 0."""
    dist = _dist()
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    return _env_int("RANK", 0)


def get_world_size():
    """Number of processes: from the process group, else from ``WORLD_SIZE`` (torchrun), else 1."""
    dist = _dist()
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return _env_int("WORLD_SIZE", 1)


def local_rank():
    """This process's rank on its node (``LOCAL_RANK``, set by torchrun), else 0."""
    return _env_int("LOCAL_RANK", 0)


def is_main_process():
    """True on rank 0 (and in a single-process run): the process that logs and writes files."""
    return get_rank() == 0


def local_device(device):
    """``"cuda"`` -> ``"cuda:LOCAL_RANK"`` when several processes run; any other device unchanged.

    An explicit ``"cuda:N"`` is kept as given.
    """
    if str(device) == "cuda" and get_world_size() > 1:
        return f"cuda:{local_rank()}"
    return str(device)


def _destroy():
    dist = _dist()
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def init_from_env(device="cpu"):
    """Initialise the default process group from torchrun's environment, if needed.

    Does nothing (returns False) unless ``WORLD_SIZE`` > 1 and no process group
    is initialised yet. Otherwise joins the group named by ``MASTER_ADDR``,
    ``MASTER_PORT``, ``RANK`` and ``WORLD_SIZE`` (``env://``) with the "nccl"
    backend when ``device`` is CUDA (after selecting ``cuda:LOCAL_RANK``) and
    "gloo" otherwise, and returns True. The group stays up for later fits and is
    destroyed when the interpreter exits.
    """
    dist = _dist()
    if get_world_size() <= 1 or not dist.is_available() or dist.is_initialized():
        return False
    missing = [v for v in ("MASTER_ADDR", "MASTER_PORT", "RANK") if not os.environ.get(v)]
    if missing:
        raise RuntimeError(f"WORLD_SIZE={os.environ.get('WORLD_SIZE')} but {', '.join(missing)} not set: launch "
                           "with torchrun (or set MASTER_ADDR, MASTER_PORT, RANK, WORLD_SIZE, LOCAL_RANK)")
    cuda = str(device).startswith("cuda")
    if cuda:
        import torch

        torch.cuda.set_device(local_device(device))
    dist.init_process_group(backend="nccl" if cuda else "gloo", init_method="env://")
    atexit.register(_destroy)
    return True


def shard_sizes(n, world_size):
    """Rows of an ``n``-row global batch per rank: contiguous, the first ``n % world_size`` ranks one more."""
    return [n // world_size + (1 if r < n % world_size else 0) for r in range(world_size)]


def shard_bounds(n, world_size, rank):
    """``(lo, hi)``: rank ``rank`` takes rows ``lo:hi`` of an ``n``-row global batch.

    Contiguous shards (rank 0 the first rows, and so on) keep the gathered rows
    in the global batch's order, so the full-batch loss is the single-process one.
    """
    sizes = shard_sizes(n, world_size)
    lo = sum(sizes[:rank])
    return lo, lo + sizes[rank]


def gather_rows(tensors, sizes):
    """All-gather row shards with gradients: every rank gets the full-batch tensors.

    Parameters
    ----------
    tensors : list of 2-D tensors
        This rank's rows (the same row count for each tensor; at least
        ``sizes[rank]``, rows beyond it are dropped). Packed into one tensor
        and padded to ``max(sizes)`` rows, so one collective moves them all.
    sizes : list of int
        Rows each rank contributes (:func:`shard_sizes`).

    Returns
    -------
    list of tensors, each with ``sum(sizes)`` rows in rank order.

    Uses :func:`torch.distributed.nn.functional.all_gather`, whose backward
    sums, over ranks, the gradients every rank computes for this rank's rows:
    with the same loss on every rank, a rank's encoder gradient is
    ``world_size`` times its share of the full-batch gradient, and averaging
    over ranks (DistributedDataParallel) gives the full-batch gradient.
    """
    import warnings

    import torch
    from torch.distributed.nn.functional import all_gather

    widths = [t.shape[1] for t in tensors]
    packed = torch.cat(tensors, dim=1)
    m = max(sizes)
    if len(packed) > m:
        packed = packed[:m]
    elif len(packed) < m:
        packed = torch.cat([packed, packed.new_zeros((m - len(packed), packed.shape[1]))])
    with warnings.catch_warnings():  # deprecated since torch 2.10 in favour of a private module; still the
        warnings.filterwarnings("ignore", ".*nn.functional.all_gather is deprecated", FutureWarning)  # stable API
        parts = all_gather(packed)
    full = torch.cat([part[:n] for part, n in zip(parts, sizes)])
    return list(torch.split(full, widths, dim=1))


def wrap_module(module, find_unused_parameters=False):
    """``module`` in DistributedDataParallel (CPU or one GPU per process), buffers synced at start only."""
    import inspect

    from torch.nn.parallel import DistributedDataParallel

    # torch >= 2.13 renamed broadcast_buffers (per-forward buffer broadcast) to forward_sync_buffers
    sync = ("forward_sync_buffers" if "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters
            else "broadcast_buffers")
    return DistributedDataParallel(module, find_unused_parameters=find_unused_parameters, **{sync: False})


def broadcast_object(obj, src=0, device=None):
    """Rank ``src``'s ``obj`` (picklable) on every rank; ``obj`` itself outside a process group."""
    if not is_active():
        return obj
    box = [obj]
    _dist().broadcast_object_list(box, src=src, device=device)
    return box[0]


def assert_same(value, what):
    """Raise ValueError unless every rank passes an equal ``value`` (a no-op outside a process group)."""
    if not is_active():
        return
    values = [None] * get_world_size()
    _dist().all_gather_object(values, value)
    if any(v != values[0] for v in values[1:]):
        differ = [r for r, v in enumerate(values) if v != values[0]]
        raise ValueError(f"the {len(values)} processes disagree on {what} (ranks {differ} differ from rank 0): "
                         "every process must pass the same data and settings")
