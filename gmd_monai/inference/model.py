"""The trained network for inference: where its weights are, how to load them, and what they are.

Weights are a ``state_dict`` of :class:`~gmd_monai.networks.DynamicSharingUNet`, saved bare or under
``"model"`` (MONAI's CheckpointSaver), ``"state_dict"`` or ``"network"``. The width comes from the
checkpoint's tensor shapes. The grid the network was trained at (voxel size, orientation, training
crop) comes from the checkpoint's ``model_meta`` (or ``model_info.json`` next to it); a checkpoint
without one is taken as the paper's 1 mm LPS model.
Without weights nothing runs unless ``allow_untrained=True`` (smoke tests only): no silent random output.

Example:
    >>> net, info = load_network()                    # bundle/models/model.pt, the shipped weights
    >>> info.width, info.trained, info.pixdim, len(info.sha256)
    (0.25, True, (2.0, 2.0, 2.0), 64)
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from gmd_monai.checkpointing import read_model_meta
from gmd_monai.inference.errors import CheckpointError, ModelError
from gmd_monai.networks import DynamicSharingUNet
from gmd_monai.roi import parse_roi_size
from gmd_monai.subsets import BRATS_MODALITIES
from gmd_monai.weights import load_checkpoint, load_state_dict_into, state_dict_of

__all__ = [
    "DEFAULT_WIDTH",
    "ModelInfo",
    "bundle_root",
    "default_model_path",
    "load_network",
    "model_config",
    "missing_weights_message",
    "require_weights",
]

logger = logging.getLogger(__name__)

#: The bundle's network width (``network_def#width`` of bundle/configs/train.yaml).
DEFAULT_WIDTH = 0.5
_BASE_CHANNELS = (32, 64, 128, 256, 512)


def bundle_root() -> Path:
    """The ``bundle/`` folder of this source tree (``<repo>/bundle``)."""
    return Path(__file__).resolve().parents[2] / "bundle"


def default_model_path() -> Path:
    """``bundle/models/model.pt``: where the CLI looks for trained weights by default."""
    return bundle_root() / "models" / "model.pt"


def missing_weights_message(path: str | os.PathLike) -> str:
    """How to get weights, for the error raised when none are found at ``path``."""
    return (
        f"no trained weights at {path}. Train the bundle first "
        "(python -m monai.bundle run training --config_file bundle/configs/train.yaml --dataset_dir "
        "/path/to/BraTS), "
        f"or copy a trained checkpoint to {path}, or pass --model /path/to/model.pt. "
        "(--allow_untrained runs a randomly initialised network: for smoke tests only, its output is "
        "meaningless)"
    )


def require_weights(path: str | os.PathLike) -> str:
    """Return ``path`` if it is a file, else raise :class:`ModelError` saying how to get weights.

    Used by ``bundle/configs/inference.yaml`` before the checkpoint loader runs.
    """
    if not Path(path).is_file():
        raise ModelError(missing_weights_message(path))
    return os.fspath(path)


@dataclass
class ModelInfo:
    """What the report says about the model.

    Attributes:
        path: the weights file (``None`` when untrained).
        sha256: checksum of the weights file.
        version: the bundle / model version (``model_info.json`` or ``bundle/configs/metadata.json``).
        width: network width.
        trained: False for a randomly initialised network (``--allow_untrained``).
        modalities: the network's modality names.
        region_order: the output channels.
        pixdim: the voxel size (mm) the network was trained at; inputs are resampled to it.
        axcodes: the orientation the network was trained in.
        roi_size: the training crop (the default sliding window), when recorded.
        meta: everything recorded with the weights (:func:`gmd_monai.checkpointing.model_meta`).
    """

    path: str | None
    sha256: str | None
    version: str
    width: float
    trained: bool
    modalities: tuple[str, ...] = BRATS_MODALITIES
    region_order: tuple[str, ...] = ("WT", "TC", "ET")
    pixdim: tuple[float, float, float] = (1.0, 1.0, 1.0)
    axcodes: str = "LPS"
    roi_size: tuple[int, int, int] | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["modalities"] = list(self.modalities)
        d["region_order"] = list(self.region_order)
        d["pixdim"] = list(self.pixdim)
        d["roi_size"] = list(self.roi_size) if self.roi_size else None
        d["network"] = "gmd_monai.networks.DynamicSharingUNet"
        return d


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        content = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        logger.warning("%s: unreadable (%s); ignored", path, e)
        return {}
    return content if isinstance(content, dict) else {}


def _grid_of(meta: dict[str, Any] | None) -> dict[str, Any]:
    """``pixdim``, ``axcodes``, ``roi_size`` from a checkpoint's ``model_meta`` (a weights file without
    one is the paper's: 1 mm, LPS, trained on the data's grid)."""
    meta = meta or {}
    pix = meta.get("pixdim") or (1.0, 1.0, 1.0)
    roi = meta.get("roi_size")
    return {
        "pixdim": tuple(float(p) for p in pix),
        "axcodes": str(meta.get("axcodes") or "LPS"),
        "roi_size": parse_roi_size(roi) if roi else None,
    }


def model_config(path: str | os.PathLike | None = None) -> dict[str, Any]:
    """What a config needs to build and feed the network of the weights at ``path`` (default:
    :func:`default_model_path`): ``width``, ``pixdim``, ``axcodes``, ``roi_size``.

    Read from ``model_info.json`` next to the weights, else from the checkpoint; defaults (width 0.5,
    1 mm, LPS, 128³ window) when there are no weights yet, so that a config still parses and the
    missing-weights error comes from :func:`require_weights`. ``bundle/configs/inference.yaml`` (and so
    MONAI Label) uses it: the network is always fed at the grid it was trained at.

    Example:
        >>> model_config("/nonexistent/model.pt")["pixdim"]
        [1.0, 1.0, 1.0]
    """
    path = Path(path) if path is not None else default_model_path()
    meta: dict[str, Any] | None = None
    width = DEFAULT_WIDTH
    if path.is_file():
        ckpt = load_checkpoint(path)
        meta = read_model_meta(path, ckpt)
        width = _width_from_state(state_dict_of(ckpt, path), path)  # the shapes, as load_network
    grid = _grid_of(meta)
    roi = grid["roi_size"] or (128, 128, 128)
    return {"width": width, "pixdim": list(grid["pixdim"]), "axcodes": grid["axcodes"], "roi_size": list(roi)}


def _width_from_state(state: dict[str, torch.Tensor], path: Path) -> float:
    key = "down3.conv.conv2.weight"  # out channels = round(256 * width)
    if key not in state:
        raise CheckpointError(f"{path}: no {key!r} in the state_dict: not a DynamicSharingUNet checkpoint")
    return float(state[key].shape[0]) / _BASE_CHANNELS[3]


def _version(model_dir: Path, info: dict[str, Any]) -> str:
    if info.get("version"):
        return str(info["version"])
    meta = _read_json(model_dir.parent / "configs" / "metadata.json")
    return str(meta.get("version", "unknown"))


def load_network(
    model: str | os.PathLike | None = None,
    allow_untrained: bool = False,
    device: str | torch.device = "cpu",
    width: float | None = None,
) -> tuple[DynamicSharingUNet, ModelInfo]:
    """Build the DS network and load its trained weights (eval mode, on ``device``).

    Args:
        model: the weights file; ``None`` uses :func:`default_model_path`.
        allow_untrained: when no weights exist at the DEFAULT path, return a randomly initialised
            network (logged as an error-level warning) instead of failing. For smoke tests only.
            An explicitly given ``model`` path must always exist.
        device: where the network goes.
        width: network width of the untrained network (default: :data:`DEFAULT_WIDTH`); for a
            checkpoint the width comes from ``model_info.json`` or the tensor shapes, and a different
            ``width`` is an error.

    Raises:
        ModelError: missing weights (with how to get them).
        CheckpointError: an unreadable file, or weights that do not fit the network.
    """
    explicit = model is not None
    path = Path(model).expanduser() if explicit else default_model_path()
    if not path.is_file():
        if explicit:
            raise ModelError(f"{path}: model file not found")
        if not allow_untrained:
            raise ModelError(missing_weights_message(path))
        w = DEFAULT_WIDTH if width is None else float(width)
        logger.error(
            "UNTRAINED network (width %s, random weights): no weights at %s; the output is meaningless",
            w,
            path,
        )
        torch.manual_seed(0)
        net = DynamicSharingUNet(modalities=BRATS_MODALITIES, out_channels=3, width=w)
        info = ModelInfo(path=None, sha256=None, version="untrained", width=w, trained=False)
        return net.to(device).eval(), info

    checkpoint = load_checkpoint(path)
    state = state_dict_of(checkpoint, path)
    model_info = _read_json(path.parent / "model_info.json")
    meta = read_model_meta(path, checkpoint) or {}
    ckpt_width = _width_from_state(state, path)
    if model_info.get("width") is not None and abs(float(model_info["width"]) - ckpt_width) > 1e-6:
        logger.warning(
            "%s says width %s but the checkpoint's shapes give %s; using %s",
            path.parent / "model_info.json",
            model_info["width"],
            ckpt_width,
            ckpt_width,
        )
    if width is not None and abs(float(width) - ckpt_width) > 1e-6:
        raise CheckpointError(f"{path}: the checkpoint has width {ckpt_width}, not the requested {width}")
    norm_mods = sorted({k.rsplit(".", 1)[-1] for k in state if ".norm1.weight." in k})
    if norm_mods and set(norm_mods) != set(BRATS_MODALITIES):
        raise CheckpointError(
            f"{path}: the checkpoint's modalities are {norm_mods}, not the BraTS {list(BRATS_MODALITIES)}"
        )
    out_channels = int(state["outc.weight"].shape[0]) if "outc.weight" in state else 3
    if out_channels != 3:
        raise CheckpointError(f"{path}: the checkpoint has {out_channels} outputs, expected 3 (WT, TC, ET)")
    net = DynamicSharingUNet(modalities=BRATS_MODALITIES, out_channels=3, width=ckpt_width)
    load_state_dict_into(net, state, path)
    info = ModelInfo(
        path=str(path.resolve()),
        sha256=_sha256(path),
        version=_version(path.parent, model_info),
        width=ckpt_width,
        trained=True,
        meta=meta,
        **_grid_of(meta),
    )
    return net.to(device).eval(), info
