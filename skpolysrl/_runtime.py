"""Run-time plumbing shared by every module: the device, seeding, atomic file writes.

One definition each, so that a change to how skpolysrl picks a GPU, seeds a
module or replaces a file is made once.
"""

import contextlib
import os
import re
import stat
import tempfile

__all__ = ["resolve_device", "seeded", "atomic_write", "atomic_write_text", "remove_stale_temporaries"]

_DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


def resolve_device(device):
    """``"auto"`` -> ``"cuda"`` when a GPU is visible, else ``"cpu"``; ``"cpu"``/``"cuda[:i]"`` checked.

    Raises ValueError naming the setting when the string is not a device or
    CUDA is asked for but not available.
    """
    import torch

    device = str(device)
    if not _DEVICE.match(device):
        raise ValueError(f"device={device!r} is not one of 'auto', 'cpu', 'cuda' or 'cuda:N'")
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} but CUDA is not available here; use device='cpu' or 'auto'")
    return device


@contextlib.contextmanager
def seeded(seed):
    """Run the block with torch's global CPU generator seeded by ``seed``, restoring it afterwards.

    For weight initialisation (``nn.Linear`` draws from the global generator): the
    caller's random state is left untouched.
    """
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        yield


# our temporary files: ".<target name>.<pid>.skpolysrl-tmp", next to the target (same file system: os.replace
# is atomic); the pid tells a live writer's file from one a killed process left behind
_TMP_SUFFIX = ".skpolysrl-tmp"


def _temp_pattern(name):
    return re.compile(r"^\." + re.escape(name) + r"\.(\d+)\.[A-Za-z0-9_]+" + re.escape(_TMP_SUFFIX) + "$")


def _pid_alive(pid):
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists but not ours (PermissionError), or no way to tell: keep its file
        return True
    return True


def remove_stale_temporaries(path):
    """Delete temporary files of ours for ``path`` left by processes that no longer run.

    Only names written by :func:`atomic_write` for this target are considered.
    Returns the removed paths.
    """
    path = os.fspath(path)
    folder, name = os.path.split(os.path.abspath(path))
    pattern = _temp_pattern(name)
    removed = []
    try:
        entries = os.listdir(folder)
    except OSError:
        return removed
    for entry in entries:
        match = pattern.match(entry)
        if match and not _pid_alive(int(match.group(1))):
            try:
                os.remove(os.path.join(folder, entry))
                removed.append(os.path.join(folder, entry))
            except OSError:
                pass
    return removed


def _new_file_mode(path):
    """The mode of the file at ``path`` if there is one, else 0o666 less the umask (what ``open`` creates)."""
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def atomic_write(path, write):
    """Write ``path`` through ``write(temporary_path)``, then ``os.replace`` it into place.

    The temporary file is unique to this process (a crash or a concurrent
    writer never leaves a half-written ``path``), removed if ``write`` raises,
    and stale temporaries of killed processes for the same target are removed
    first. The result has the permissions ``open`` would give a new file (or
    those of the file it replaces), not the temporary's owner-only ones.
    """
    path = os.fspath(path)
    folder, name = os.path.split(os.path.abspath(path))
    remove_stale_temporaries(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.{os.getpid()}.", suffix=_TMP_SUFFIX, dir=folder)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, _new_file_mode(path))
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


def atomic_write_text(path, text):
    """:func:`atomic_write` of a string (UTF-8 text)."""
    def write(tmp):
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)

    atomic_write(path, write)
