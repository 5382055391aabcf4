"""Model files: weights + config, loadable with ``torch.load(weights_only=True)``.

No pickled code is needed to load weights, so a model file cannot run code.
"""

import dataclasses
import os

import torch

from ._runtime import atomic_write
from .exceptions import ModelFileError
from .nn import ModelConfig, PolySRLModel

__all__ = ["save_model", "load_model", "model_to_payload", "model_from_payload", "FORMAT", "FORMAT_VERSION"]

FORMAT = "skpolysrl-model"
#: 3: ``config`` may hold ``log_sigma_max`` (the variance stage's bound on the uncertainty);
#: 2: ``config`` holds every :class:`~skpolysrl.nn.ModelConfig` field (graph settings included);
#: 1: the architecture only (the graph settings were the defaults, which ModelConfig fills in).
FORMAT_VERSION = 3


def model_to_payload(model, extra=None):
    """A dict of plain types and CPU tensors describing ``model``."""
    from . import __version__

    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "skpolysrl_version": __version__,
        "config": model.config.to_dict(),
        "has_structure_encoder": model.structure is not None,
        "state_dict": state,
        "extra": dict(extra or {}),
    }


def model_from_payload(payload, source="<memory>"):
    """Rebuild a PolySRLModel (on CPU) from :func:`model_to_payload` output."""
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ModelFileError(f"{source} is not an skpolysrl model file (no '{FORMAT}' header)")
    version = payload.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ModelFileError(
            f"{source} was written by skpolysrl {payload.get('skpolysrl_version', '?')} in model format "
            f"{version}; this skpolysrl reads format <= {FORMAT_VERSION}. Upgrade skpolysrl to load it."
        )
    problem = _payload_problem(payload)
    if problem is not None:
        raise ModelFileError(f"{source} is not a usable model file: {problem}; re-save it with "
                             "PolySRLFeaturizer.save, or use another model file")
    state = payload["state_dict"]
    has_structure = payload.get("has_structure_encoder", any(k.startswith("structure.") for k in state))
    try:
        config = ModelConfig.from_dict(payload["config"])
    except (TypeError, ValueError) as exc:
        raise ModelFileError(f"{source}: invalid model config: {_first_line(exc)}") from None
    try:
        model = PolySRLModel(state["stoichiometry.element_table"].numpy(), with_structure_encoder=bool(has_structure),
                             config=config)
        model.load_state_dict(state)
    except (RuntimeError, TypeError, ValueError) as exc:
        raise ModelFileError(f"{source}: weights do not fit the stored config: {_first_line(exc)}") from None
    model.eval()
    return model


def _payload_problem(payload):
    """What makes a payload with our header unusable (a phrase), or None."""
    config, state = payload.get("config"), payload.get("state_dict")
    if not isinstance(config, dict):
        return "it has no 'config' (the model settings)"
    if not isinstance(state, dict) or not state:
        return "it has no 'state_dict' (the weights)"
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            return f"weights {key!r} are a {type(value).__name__}, not a tensor"
    table = state.get("stoichiometry.element_table")
    if table is None or table.ndim != 2:
        return "it has no element table ('stoichiometry.element_table')"
    known = {f.name for f in dataclasses.fields(ModelConfig)}
    unknown = sorted(map(str, set(config) - known))
    if unknown:
        return f"unknown config setting(s) {unknown} (known: {sorted(known)})"
    for key, value in state.items():
        if value.is_floating_point() and not torch.isfinite(value).all():
            return f"weights {key!r} hold NaN or infinite values (from a diverged training?)"
    return None


def _first_line(exc):
    """The first line of an exception's message, or its type name when the message is empty."""
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0][:200]}" if lines else type(exc).__name__


def save_model(model, path, extra=None, include_structure_encoder=True):
    """Write ``model`` to ``path`` (atomically: a crash leaves the old file intact)."""
    payload = model_to_payload(model, extra)
    if not include_structure_encoder:
        payload["state_dict"] = {k: v for k, v in payload["state_dict"].items() if not k.startswith("structure.")}
        payload["has_structure_encoder"] = False
    atomic_write(path, lambda tmp: torch.save(payload, tmp))


def load_model(path):
    """Load a model file written by :func:`save_model`; returns (model, extra)."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise ModelFileError(f"model file {path!r} does not exist")
    if os.path.isfile(path) and os.path.getsize(path) == 0:
        raise ModelFileError(f"model file {path!r} is empty (0 bytes); re-download or re-save it")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated, corrupt, or not a torch file
        raise ModelFileError(
            f"cannot read model file {path!r} ({_first_line(exc)}); "
            "it may be truncated or corrupt: re-download or re-save it"
        ) from None
    return model_from_payload(payload, source=repr(path)), payload.get("extra", {})
