"""BraTS label values and the three tumour regions every label tensor holds, in the order (WT, TC, ET).

WT = {1, 2, 4}, TC = {1, 4}, ET = {4} for BraTS 2018-2021 label maps, and WT = {1, 2, 3}, TC = {1, 3},
ET = {3} for the BraTS 2023+ maps (label 3 = enhancing tumour); the format is detected per volume.
"""

from __future__ import annotations

import numpy as np
import torch
from monai.data import MetaTensor
from monai.utils.type_conversion import convert_to_dst_type

__all__ = ["LABEL_FORMATS", "REGION_NAMES", "convert_labels_to_regions", "region_definitions"]

#: Region channels of every label tensor, in this order.
REGION_NAMES: tuple[str, ...] = ("WT", "TC", "ET")

#: Label values of each region, per label format.
LABEL_FORMATS: dict[str, dict[str, tuple[int, ...]]] = {
    "brats2018": {"WT": (1, 2, 4), "TC": (1, 4), "ET": (4,)},
    "brats2021": {"WT": (1, 2, 3), "TC": (1, 3), "ET": (3,)},
}


def region_definitions() -> dict[str, str]:
    words = {"WT": "whole tumour", "TC": "tumour core", "ET": "enhancing tumour"}
    out = {}
    for r in REGION_NAMES:
        v18 = ", ".join(map(str, LABEL_FORMATS["brats2018"][r]))
        v21 = ", ".join(map(str, LABEL_FORMATS["brats2021"][r]))
        out[r] = f"{words[r]}: label in {{{v18}}} (label maps with ET = 3, BraTS 2023+: {{{v21}}})"
    return out


def convert_labels_to_regions(
    label: torch.Tensor | np.ndarray, source: str = "label"
) -> torch.Tensor | np.ndarray:
    """Label map ``(1, H, W, D)`` (or ``(H, W, D)``) to float32 regions ``(3, H, W, D)`` = (WT, TC, ET).

    BraTS 2018-style maps (ET = 4) and BraTS 2023-style maps (ET = 3) are told apart per volume: a map
    holding 3 uses {1, 2, 3}; maps without 3 or 4 give the same regions either way.

    Args:
        label: the label map; integer values in {0, 1, 2, 3, 4}, never both 3 and 4.
        source: the file name used in error messages.

    Raises:
        ValueError: other values, non-integer values, both 3 and 4, or a wrong shape.
    """
    t = torch.as_tensor(label)
    if t.ndim == 4:
        if t.shape[0] != 1:
            raise ValueError(f"{source}: expected a 1-channel label map, got shape {tuple(t.shape)}")
        t = t[0]
    elif t.ndim != 3:
        raise ValueError(f"{source}: expected a label map of shape (1, H, W, D), got {tuple(t.shape)}")
    t = t.as_tensor() if isinstance(t, MetaTensor) else t
    if t.is_floating_point():
        rounded = torch.round(t)
        if not torch.equal(rounded, t):  # also catches NaN
            bad = t[rounded != t]
            raise ValueError(
                f"{source}: label values must be integers in {{0,1,2,3,4}}, found {bad[0].item()!r}"
            )
        ints = rounded.to(torch.int64)
    else:
        ints = t.to(torch.int64)
    invalid = (ints < 0) | (ints > 4)
    if bool(invalid.any()):
        values = torch.unique(ints[invalid])[:10].tolist()
        raise ValueError(
            f"{source}: invalid label value(s) {values}; BraTS labels are 0, 1, 2 and 4 (or 3 in BraTS 2023+)"
        )
    present = torch.bincount(ints.flatten(), minlength=5) > 0
    if present[3] and present[4]:
        raise ValueError(
            f"{source}: the label map holds both 3 and 4; BraTS uses 4 (2018-2021) or 3 (2023+) for the "
            "enhancing tumour, never both"
        )
    et_value = 3 if present[3] else 4
    et = ints == et_value
    tc = et | (ints == 1)
    wt = tc | (ints == 2)
    regions = torch.stack([wt, tc, et]).to(torch.float32)
    if isinstance(label, MetaTensor):
        return convert_to_dst_type(regions, dst=label, dtype=torch.float32)[0]
    if isinstance(label, np.ndarray):
        return regions.numpy()
    return regions
