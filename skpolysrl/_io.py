"""Model files: weights + config, loadable with ``torch.load(weights_only=True)``.

No pickled code is needed to load weights, so a model file cannot run code.
"""

import os

import torch

from ._runtime import atomic_write
from .exceptions import ModelFileError

__all__ = ["save_model", "load_model", "model_to_payload", "model_from_payload", "FORMAT", "FORMAT_VERSION"]

FORMAT = "skpolysrl-model"
#: 2: ``config`` holds every :class:`~skpolysrl.nn.ModelConfig` field (graph settings included);
#: 1: the architecture only (the graph settings were the defaults, which ModelConfig fills in).
FORMAT_VERSION = 2


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
    from .nn import ModelConfig, PolySRLModel

    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ModelFileError(f"{source} is not an skpolysrl model file (no '{FORMAT}' header)")
    version = payload.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ModelFileError(
            f"{source} was written by skpolysrl {payload.get('skpolysrl_version', '?')} in model format "
            f"{version}; this skpolysrl reads format <= {FORMAT_VERSION}. Upgrade skpolysrl to load it."
        )
    state = payload["state_dict"]
    try:
        config = ModelConfig.from_dict(payload["config"])
    except (TypeError, ValueError) as exc:
        raise ModelFileError(f"{source}: invalid model config: {exc}") from None
    model = PolySRLModel(
        state["stoichiometry.element_table"].numpy(),
        with_structure_encoder=payload["has_structure_encoder"],
        config=config,
    )
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise ModelFileError(f"{source}: weights do not fit the stored config: {exc}") from None
    model.eval()
    return model


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
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated, corrupt, or not a torch file
        raise ModelFileError(
            f"cannot read model file {path!r} ({type(exc).__name__}: {str(exc).splitlines()[0][:200]}); "
            "it may be truncated or corrupt: re-download or re-save it"
        ) from None
    return model_from_payload(payload, source=repr(path)), payload.get("extra", {})
