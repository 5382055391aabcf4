"""Named pretrained models: the one shipped in the package and others fetched once into a cache.

A model is named in ``PolySRLFeaturizer(pretrained=NAME)``,
``PolySRLFeaturizer.from_pretrained(NAME)`` or ``skpolysrl featurize --model NAME``.
The registry is data: one :class:`ModelEntry` per name (file name, sha256, size,
model card, download address). ``"default"`` is shipped inside the package; every
other entry is downloaded on first use into the cache directory, atomically and
checked against its sha256 (by :mod:`pooch`), and read from there afterwards
without any network access.

Cache directory, first that is set: the ``cache_dir`` argument, the
``SKPOLYSRL_CACHE`` environment variable, the platform's user cache
(``pooch.os_cache("skpolysrl")``, e.g. ``~/.cache/skpolysrl`` on Linux).

To add a model (e.g. one you host for your group)::

    from skpolysrl.registry import register_model
    register_model("mygroup-v1", url="https://example.org/polysrl_mygroup_v1.pt",
                   sha256="<64 hex digits of the file>", size=5716701,
                   model_card="https://example.org/polysrl_mygroup_v1.md")
    PolySRLFeaturizer(pretrained="mygroup-v1").transform(["NaCl"])

Offline machines: copy the file to the path that :func:`cached_model_path` gives
(the error raised for a missing model names it).
"""

import hashlib
import os
import threading
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from .exceptions import ModelFileError

__all__ = ["ModelEntry", "register_model", "available_models", "get_model_entry", "cache_dir",
           "cached_model_path", "model_file", "CACHE_ENV"]

#: Environment variable naming the cache directory of downloaded models.
CACHE_ENV = "SKPOLYSRL_CACHE"


@dataclass(frozen=True)
class ModelEntry:
    """One named model.

    Attributes
    ----------
    name : str
    filename : str
        File name in the package (shipped model) or in the cache directory.
    sha256 : str
        Hex digest of the file; a download that does not match is refused.
    size : int or None
        Bytes (for information and progress; the hash is what is checked).
    model_card : str
        What the model is: a file inside the package (shipped model) or an address.
    url : str or None
        Where to download it; None for the model shipped inside the package.
    description : str
        One line for listings.
    """

    name: str
    filename: str
    sha256: str
    size: int | None
    model_card: str
    url: str | None = None
    description: str = ""

    @property
    def shipped(self):
        """True for a model inside the installed package (never downloaded)."""
        return self.url is None


_REGISTRY = {
    "default": ModelEntry(
        name="default",
        filename="polysrl_default.pt",
        sha256="51070dc15e9d7f4773f12ccfa2eaffa9e25717457a6cd62348ce94673fc5cf6c",
        size=5711476,
        model_card="skpolysrl/weights/MODEL_CARD.md",
        description="stoichiometry encoder pretrained from random weights in one command on Materials Project structures and 9 DFT properties, variances fitted to the polymorphs of 95,231 formulas, uncertainty bounded (shipped, v8)",
    ),
}
_RESOLVED = {}  # (name, cache directory) -> path already fetched and checked in this process
_LOCK = threading.Lock()


def register_model(name, url, sha256, size=None, filename=None, model_card="", description="", overwrite=False):
    """Add a downloadable model to the registry (for this process).

    Parameters
    ----------
    name : str
        The name to pass as ``pretrained=``. Must not look like a file path.
    url : str
        Download address (http, https or ftp; anything :func:`pooch.retrieve` reads).
    sha256 : str
        64 hex digits: the file's SHA-256 (``sha256sum FILE``).
    size : int, optional
        File size in bytes.
    filename : str, optional
        Name in the cache directory; default ``"{name}.pt"``.
    model_card : str, optional
        Address of the model card (training data, recipe, scores).
    description : str, optional
    overwrite : bool, default=False
        Replace an entry of the same name (the shipped "default" cannot be replaced).

    Returns
    -------
    ModelEntry
    """
    sha256 = str(sha256).lower().removeprefix("sha256:")
    if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
        raise ValueError(f"sha256 must be 64 hex digits (the output of `sha256sum FILE`), got {sha256!r}")
    if not name or os.sep in name or "/" in name or name.endswith((".pt", ".joblib", ".pkl", ".pickle")):
        raise ValueError(f"model name {name!r} looks like a file path; choose a plain name such as 'mygroup-v1'")
    if name in _REGISTRY and (name == "default" or not overwrite):
        raise ValueError(f"a model named {name!r} is already registered"
                         + ("" if name == "default" else "; pass overwrite=True to replace it"))
    entry = ModelEntry(name=name, filename=filename or f"{name}.pt", sha256=sha256,
                       size=None if size is None else int(size), model_card=model_card, url=str(url),
                       description=description)
    with _LOCK:
        _REGISTRY[name] = entry
        for key in [k for k in _RESOLVED if k[0] == name]:
            del _RESOLVED[key]
    return entry


def available_models():
    """Registered model names, the shipped model first."""
    return list(_REGISTRY)


def get_model_entry(name):
    """The :class:`ModelEntry` of a registered name (KeyError naming the known ones otherwise)."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"no model named {name!r}; registered: {available_models()}") from None


def cache_dir(path=None):
    """The directory downloaded models are kept in (see the module docstring for the order)."""
    if path is not None:
        return Path(path)
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env)
    import pooch

    return Path(pooch.os_cache("skpolysrl"))


def cached_model_path(name, cache=None):
    """Where the file of the registered model ``name`` lives (shipped) or is cached (downloaded)."""
    entry = get_model_entry(name)
    if entry.shipped:
        return Path(str(resources.files("skpolysrl") / "weights" / entry.filename))
    return cache_dir(cache) / entry.filename


def _sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _fetch(entry, cache, progress):
    """Download ``entry`` into the cache unless a file with its hash is there; return the path."""
    import pooch

    target = cached_model_path(entry.name, cache)
    if target.is_file():  # offline reuse: no network once the file is there
        if _sha256(target) == entry.sha256:
            return target
        raise ModelFileError(
            f"the cached file of model {entry.name!r} ({target}) does not match its sha256 {entry.sha256} "
            f"(modified or truncated); delete it to download it again from {entry.url}"
        )
    try:
        # pooch downloads to a temporary file next to the target, checks the hash, then moves it in place
        path = pooch.retrieve(entry.url, known_hash=f"sha256:{entry.sha256}", fname=entry.filename,
                              path=target.parent, progressbar=progress)
    except ValueError as exc:
        if "hash" not in str(exc).lower():
            raise
        raise ModelFileError(
            f"the download of model {entry.name!r} from {entry.url} does not match its sha256 "
            f"{entry.sha256}: refused (nothing was written to {target}). The file on the server "
            "differs from the registered one; check the address or the registered hash"
        ) from None
    except Exception as exc:  # no network, server down, HTTP error, unwritable cache
        raise ModelFileError(
            f"model {entry.name!r} is not in the cache and could not be downloaded from {entry.url} "
            f"({type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}). Download that file "
            f"on a machine with network access and put it at {target} (sha256 {entry.sha256}), or set "
            f"{CACHE_ENV} to the folder that holds it"
        ) from None
    return Path(path)


def model_file(name_or_path, cache=None, progress=False):
    """The local file of a model: a registered name (fetched into the cache once) or a path.

    Parameters
    ----------
    name_or_path : str or path-like
        ``"default"`` (shipped), another registered name, or the path of a model file.
    cache : path, optional
        Cache directory for downloaded models (default: see the module docstring).
    progress : bool, default=False
        Show a download progress bar.

    Returns
    -------
    pathlib.Path
    """
    if isinstance(name_or_path, str) and name_or_path in _REGISTRY:
        entry = _REGISTRY[name_or_path]
        if entry.shipped:
            path = cached_model_path(entry.name)
            if not path.is_file():
                raise ModelFileError(
                    f"the {entry.name!r} weights are missing from this installation ({path}); reinstall "
                    "skpolysrl, or use pretrained=None and fit on structures"
                )
            return path
        key = (entry.name, str(cache_dir(cache)))
        path = _RESOLVED.get(key)
        if path is None or not path.is_file():
            with _LOCK:
                path = _fetch(entry, cache, progress)
                _RESOLVED[key] = path
        return path
    path = Path(os.fspath(name_or_path))
    if not path.exists():
        raise ModelFileError(
            f"model file {str(path)!r} does not exist, and {str(path)!r} is not a registered model name "
            f"(registered: {available_models()})"
        )
    return path
