"""Runtime helpers shared by the modules that write files."""

import contextlib
import os
import uuid

__all__ = ["atomic_write"]


@contextlib.contextmanager
def atomic_write(path, suffix=".tmp"):
    """Yield a temporary path next to ``path``; on success it replaces ``path``, on failure it is removed.

    The temporary name is unique per process and call, so processes writing the
    same file at once do not collide (the last ``os.replace`` wins, each file whole).
    """
    path = os.fspath(path)
    tmp = f"{path}.{os.getpid()}-{uuid.uuid4().hex[:12]}{suffix}"
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
