"""Fine-tuning trained weights with ``configs/train.yaml``: the overrides that continue from them.

``train.yaml``'s defaults describe a new model (its width, voxel grid and crop). To continue training
weights that were trained with other settings, e.g. the shipped CPU model from MONAI Label's ``/train``
with new annotations, the network and the grid must be those the weights were trained with. They are
recorded with the weights (:func:`gmd_monai.checkpointing.model_meta`), and
:func:`fine_tuning_overrides` turns them into config overrides. The weights are loaded strictly by
``init_weights`` (every tensor must fit), never by a lenient loader that would skip what does not fit
and silently train from scratch.

    >>> import torch, tempfile, os
    >>> from gmd_monai.checkpointing import model_meta
    >>> path = os.path.join(tempfile.mkdtemp(), "model.pt")
    >>> meta = model_meta(pixdim=2.0, width=0.25, roi_size=[48, 48, 48], method="gmd", loss="dice_ce")
    >>> torch.save({"model": {}, "model_meta": meta}, path)
    >>> o = fine_tuning_overrides(path)
    >>> o["width"], o["model_pixdim"], o["roi_size"], o["loss"], o["init_weights"] == path
    (0.25, [2.0, 2.0, 2.0], [48, 48, 48], 'dice_ce', True)
"""

from __future__ import annotations

import os
from typing import Any

from gmd_monai.checkpointing import read_model_meta
from gmd_monai.errors import CheckpointError

__all__ = ["fine_tuning_overrides"]

#: model_meta entry -> train.yaml id, for the settings that must match the weights
_META_TO_CONFIG = {
    "width": "width",
    "pixdim": "model_pixdim",
    "axcodes": "model_axcodes",
    "modalities": "modalities",
    "roi_size": "roi_size",
    "loss": "loss",
    "method": "method",
}


def fine_tuning_overrides(weights: str | os.PathLike) -> dict[str, Any]:
    """``train.yaml`` overrides that continue training ``weights`` (a ``model.pt`` of this bundle).

    Returns ``init_weights`` plus the network width, voxel grid, orientation, modalities, crop size,
    loss and method recorded with the weights (those it does not record keep train.yaml's values).

    Raises:
        CheckpointError: the file is missing or unreadable, or records neither width nor grid (weights
            from before the bundle recorded them: pass the settings explicitly instead).
    """
    if not os.path.isfile(weights):
        raise CheckpointError(f"{weights}: no such weights file (fine-tuning starts from it)")
    meta = read_model_meta(weights)
    if not meta or "width" not in meta or "pixdim" not in meta:
        raise CheckpointError(
            f"{weights}: the weights do not record the width and voxel grid they were trained with, so "
            "they cannot be fine-tuned automatically; pass --init_weights with --width and --model_pixdim"
        )
    overrides: dict[str, Any] = {"init_weights": str(weights)}
    for key, config_id in _META_TO_CONFIG.items():
        if meta.get(key) is not None:
            overrides[config_id] = meta[key]
    return overrides
