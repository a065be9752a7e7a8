"""MONAI transforms of the BraTS pipelines: file checks, loading, label regions, robust z-score, crops,
and the training / validation pipelines built from them.

Data dicts carry ``"image"`` (a list of 4 file paths in the order of
:data:`gmd_monai.subsets.BRATS_MODALITIES`, or one 4-D NIfTI path), ``"label"`` (the segmentation path)
and ``"case"`` (the case id); labels become 3 region channels (WT, TC, ET), see :mod:`gmd_monai.data.labels`.
"""

from __future__ import annotations

import logging
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import (
    Compose,
    CropForegroundd,
    EnsureTyped,
    LoadImaged,
    MapTransform,
    Orientationd,
    RandCropByPosNegLabeld,
    RandFlipd,
    RandSpatialCropd,
    SpatialPadd,
)
from monai.utils.type_conversion import convert_to_dst_type

from gmd_monai.data.checks import CheckBratsCased
from gmd_monai.data.labels import convert_labels_to_regions
from gmd_monai.data.naming import find_siblings
from gmd_monai.data.readers import ThreadSafeNibabelReader
from gmd_monai.data.spatial import Spacingd
from gmd_monai.errors import InputError
from gmd_monai.roi import parse_roi_size
from gmd_monai.subsets import BRATS_MODALITIES

__all__ = [
    "CheckFinited",
    "ConvertBratsLabelsToRegionsd",
    "RandPosNegCropd",
    "RobustZScoreNormalized",
    "robust_zscore",
    "train_transforms",
    "val_transforms",
]

# The BraTS data modules log under the name they had as one module: users' logging settings (and
# the tests) filter on it.
logger = logging.getLogger("gmd_monai.data.brats")


def _describe_source(data: Any, default: str) -> str:
    if isinstance(data, MetaTensor):
        name = data.meta.get("filename_or_obj")
        if name:
            return str(name)
    return default


def _channel_file(first_file: str, channel: int, num_channels: int) -> str:
    """Name the file that channel ``channel`` of a multi-file image was read from.

    MONAI keeps only the first file name of a list of files; the others are its sibling modality files
    (:func:`~gmd_monai.data.naming.find_siblings`) when they can be found.
    """
    if num_channels == len(BRATS_MODALITIES) and 0 <= channel < num_channels:
        try:
            sibling = find_siblings(first_file).get(BRATS_MODALITIES[channel])
        except (InputError, OSError):  # not BraTS-named, or not a file on disk
            sibling = None
        if sibling is not None:
            return str(sibling)
    return f"{first_file} (channel {channel})" if num_channels > 1 else first_file


def _quantiles(values: torch.Tensor, q: Sequence[float]) -> tuple[float, float]:
    """Linear-interpolation quantiles (as ``np.percentile``); selection, not a full sort, on the CPU."""
    if values.device.type != "cpu" and values.numel() <= 16_000_000:  # torch.quantile's limit is 2**24
        lo, hi = torch.quantile(values, torch.tensor(q, dtype=values.dtype, device=values.device)).tolist()
        return lo, hi
    lo, hi = np.percentile(values.detach().cpu().numpy(), [100.0 * x for x in q])
    return float(lo), float(hi)


def robust_zscore(
    image: torch.Tensor | np.ndarray, lower: float = 0.5, upper: float = 99.5, source: str = "image"
) -> torch.Tensor | np.ndarray:
    """Per-channel z-score over the brain (nonzero voxels) after percentile clipping; background stays 0.

    Args:
        image: ``(C, H, W, D)`` array.
        lower: lower clipping percentile (computed over the channel's brain voxels).
        upper: upper clipping percentile.
        source: the file name used in warnings.

    Returns:
        float32 array of the same type (MetaTensor meta kept). A channel without nonzero voxels or of
        zero spread becomes all zeros, with a logged warning.
    """
    if not 0.0 <= lower < upper <= 100.0:
        raise ValueError(f"need 0 <= lower < upper <= 100, got lower={lower}, upper={upper}")
    x = torch.as_tensor(image)
    x = x.as_tensor() if isinstance(x, MetaTensor) else x
    if x.ndim < 2:
        raise ValueError(f"{source}: expected a channel-first image (C, ...), got shape {tuple(x.shape)}")
    x = x.to(torch.float32)
    out = torch.zeros_like(x)
    for c in range(x.shape[0]):
        xc = x[c]
        brain = xc != 0
        vals = xc[brain]
        if vals.numel() == 0:
            logger.warning("%s: channel %d has no nonzero voxel; it stays 0", source, c)
            continue
        if not bool(torch.isfinite(vals).all()):
            raise ValueError(f"{_channel_file(source, c, x.shape[0])}: NaN or infinite values")
        lo, hi = _quantiles(vals, (lower / 100.0, upper / 100.0))
        vals = vals.clamp(lo, hi)
        mean = vals.mean()
        std = vals.std(correction=0)
        if not bool(std > 1e-6 * max(1.0, float(mean.abs()))):
            logger.warning("%s: channel %d is constant over the brain; it stays 0", source, c)
            continue
        out[c] = torch.where(brain, (xc.clamp(lo, hi) - mean) / std, 0.0)
    if isinstance(image, MetaTensor):
        return convert_to_dst_type(out, dst=image, dtype=torch.float32)[0]
    if isinstance(image, np.ndarray):
        return out.numpy()
    return out


class CheckFinited(MapTransform):
    """Raise when a loaded array holds NaN or infinite values, naming the file it came from.

    Args:
        keys: keys of the loaded arrays.
        allow_missing_keys: skip missing keys instead of raising.
    """

    def __init__(self, keys: KeysCollection = ("image", "label"), allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            x = torch.as_tensor(d[key])
            if not x.is_floating_point() or bool(torch.isfinite(x).all()):
                continue
            source = _describe_source(d[key], f"{key!r} of case {d.get('case', '?')!r}")
            xs = x.as_tensor() if isinstance(x, MetaTensor) else x
            xs = xs.reshape(xs.shape[0], -1) if xs.ndim > 1 else xs.reshape(1, -1)
            problems = []
            for c in range(xs.shape[0]):
                n_nan = int(torch.isnan(xs[c]).sum())
                n_inf = int(torch.isinf(xs[c]).sum())
                if n_nan or n_inf:
                    problems.append(
                        f"{_channel_file(source, c, xs.shape[0])}: {n_nan} NaN and {n_inf} infinite values"
                    )
            raise ValueError("non-finite voxel values in " + "; ".join(problems))
        return d


class ConvertBratsLabelsToRegionsd(MapTransform):
    """Label map ``(1, H, W, D)`` to float32 region channels ``(3, H, W, D)`` in the order (WT, TC, ET).

    The label format is detected per volume: ET = 4 (BraTS 2018-2021) or ET = 3 (BraTS 2023+).
    Unlike MONAI's ``ConvertToMultiChannelBasedOnBratsClassesd`` (order TC, WT, ET; bool output), the
    output is float32 and the MetaTensor meta (affine, file name) is kept.

    Args:
        keys: keys of the label maps.
        allow_missing_keys: skip missing keys (e.g. image-only inference).

    Raises:
        ValueError: label values outside {0, 1, 2, 3, 4}, non-integers or both 3 and 4 (names the file).
    """

    def __init__(self, keys: KeysCollection = "label", allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            source = _describe_source(d[key], f"{key!r} of case {d.get('case', '?')!r}")
            d[key] = convert_labels_to_regions(d[key], source=source)
        return d


class RobustZScoreNormalized(MapTransform):
    """Per-channel robust z-score over the brain: see :func:`robust_zscore`.

    Brain = nonzero voxels of the channel; values are clipped to the ``[lower, upper]`` percentiles of
    the brain voxels, then z-scored with the brain's mean and standard deviation; the background stays
    exactly 0. Robust to saturated volumes (e.g. BraTS 2018's ``Brats18_TCIA10_637_1`` reaching 32767).

    Args:
        keys: keys of the channel-first images.
        lower: lower clipping percentile.
        upper: upper clipping percentile.
        allow_missing_keys: skip missing keys instead of raising.
    """

    def __init__(
        self,
        keys: KeysCollection = "image",
        lower: float = 0.5,
        upper: float = 99.5,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if not 0.0 <= lower < upper <= 100.0:
            raise ValueError(f"need 0 <= lower < upper <= 100, got lower={lower}, upper={upper}")
        self.lower = lower
        self.upper = upper

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            source = _describe_source(d[key], f"{key!r} of case {d.get('case', '?')!r}")
            d[key] = robust_zscore(d[key], self.lower, self.upper, source=source)
        return d


class RandPosNegCropd(RandCropByPosNegLabeld):
    """``RandCropByPosNegLabeld`` with one sample, returning a dict instead of a one-element list.

    Centres fall on foreground (any label channel > 0) with probability ``pos / (pos + neg)``.

    Args:
        keys: keys to crop.
        label_key: key of the label used to find foreground.
        spatial_size: the crop size.
        pos: weight of foreground centres.
        neg: weight of background centres.
        allow_smaller: allow images smaller than the crop (they are not padded).
        allow_missing_keys: skip missing keys instead of raising.
    """

    def __init__(
        self,
        keys: KeysCollection,
        label_key: str,
        spatial_size: Sequence[int] | int,
        pos: float = 1.0,
        neg: float = 1.0,
        allow_smaller: bool = False,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(
            keys,
            label_key=label_key,
            spatial_size=spatial_size,
            pos=pos,
            neg=neg,
            num_samples=1,
            allow_smaller=allow_smaller,
            allow_missing_keys=allow_missing_keys,
        )

    def __call__(self, data: Mapping[Hashable, torch.Tensor], lazy: bool | None = None) -> dict:  # type: ignore[override]
        return super().__call__(data, lazy=lazy)[0]


def _grid_part(
    keys: tuple[str, str],
    pixdim: Sequence[float] | float | None,
    axcodes: str | None,
    resample_label: bool = True,
) -> list:
    """Reorient to ``axcodes`` and resample to ``pixdim`` mm (image bilinear, label regions nearest;
    the label stays on its own grid when ``resample_label`` is False)."""
    image, label = keys
    grid_keys = [image, label] if resample_label else [image]
    modes = ("bilinear", "nearest") if resample_label else ("bilinear",)
    out: list = []
    if axcodes is not None:
        out.append(Orientationd(keys=grid_keys, axcodes=axcodes, labels=None, allow_missing_keys=True))
    if pixdim is not None:
        pix = (float(pixdim),) * 3 if isinstance(pixdim, int | float) else tuple(float(p) for p in pixdim)
        out.append(Spacingd(keys=grid_keys, pixdim=pix, mode=modes, allow_missing_keys=True))
    return out


def _load_part(
    keys: tuple[str, str],
    crop_foreground: bool,
    allow_missing_label: bool,
    pixdim: Sequence[float] | float | None = None,
    axcodes: str | None = None,
    resample_label: bool = True,
) -> list:
    image, label = keys
    return [
        CheckBratsCased(keys=[image, label], allow_missing_keys=allow_missing_label),
        LoadImaged(
            keys=[image, label],
            reader=ThreadSafeNibabelReader(),  # CacheDataset's thread pool: see data/readers.py
            ensure_channel_first=True,
            image_only=True,
            allow_missing_keys=allow_missing_label,
        ),
        CheckFinited(keys=[image, label], allow_missing_keys=allow_missing_label),
        ConvertBratsLabelsToRegionsd(keys=label, allow_missing_keys=allow_missing_label),
        EnsureTyped(
            keys=[image, label], dtype=torch.float32, track_meta=True, allow_missing_keys=allow_missing_label
        ),
        *_grid_part(keys, pixdim, axcodes, resample_label),
        *(
            [
                CropForegroundd(
                    keys=[image, label], source_key=image, allow_smaller=True, allow_missing_keys=True
                )
            ]
            if crop_foreground
            else []
        ),
        RobustZScoreNormalized(keys=image),
    ]


def train_transforms(
    roi_size: Sequence[int] | int = (128, 128, 128),
    foreground_prob: float = 0.0,
    flip_prob: float = 0.5,
    crop_foreground: bool = True,
    pixdim: Sequence[float] | float | None = None,
    axcodes: str | None = None,
) -> Compose:
    """Training preprocessing: checks, loading, regions, robust z-score, random crop, random flips.

    ``CheckBratsCased -> LoadImaged -> CheckFinited -> ConvertBratsLabelsToRegionsd -> EnsureTyped ->
    [Orientationd] -> [Spacingd] -> [CropForegroundd] -> RobustZScoreNormalized -> SpatialPadd -> crop
    -> RandFlipd x 3``. The crop is
    uniform (``RandSpatialCropd``, the authors' recipe) when ``foreground_prob == 0``, otherwise centred
    on tumour with that probability (:class:`RandPosNegCropd`). The output is one dict with a
    ``(4, *roi)`` float32 image and a ``(3, *roi)`` float32 label in {0, 1}.

    Args:
        roi_size: crop size.
        foreground_prob: probability that the crop is centred on a tumour voxel.
        flip_prob: probability of a flip, per spatial axis.
        crop_foreground: crop to the brain's bounding box first.
        pixdim: the model's voxel size in mm (``None``: keep the data's own grid, 1 mm for BraTS).
            The image is resampled bilinearly, the label regions by nearest neighbour.
        axcodes: reorient to these axis codes first (``None``: keep the data's orientation).
    """
    roi = parse_roi_size(roi_size)
    if not 0.0 <= foreground_prob <= 1.0:
        raise ValueError(f"foreground_prob must be in [0, 1], got {foreground_prob}")
    keys = ["image", "label"]
    if foreground_prob > 0:
        crop: MapTransform = RandPosNegCropd(
            keys=keys, label_key="label", spatial_size=roi, pos=foreground_prob, neg=1.0 - foreground_prob
        )
    else:
        crop = RandSpatialCropd(keys=keys, roi_size=roi, random_size=False)
    return Compose(
        [
            *_load_part(("image", "label"), crop_foreground, False, pixdim, axcodes),
            SpatialPadd(keys=keys, spatial_size=roi),
            crop,
            *(RandFlipd(keys=keys, prob=flip_prob, spatial_axis=axis) for axis in range(3)),
        ]
    )


def val_transforms(
    crop_foreground: bool = True,
    pixdim: Sequence[float] | float | None = None,
    axcodes: str | None = None,
    resample_label: bool = True,
) -> Compose:
    """Deterministic preprocessing for validation and inference (the label is optional).

    ``CheckBratsCased -> LoadImaged -> CheckFinited -> ConvertBratsLabelsToRegionsd -> EnsureTyped ->
    [Orientationd] -> [Spacingd] -> [CropForegroundd] -> RobustZScoreNormalized``; no crop to a fixed
    size (use a sliding window). Every spatial step is invertible (``Invertd``).

    Args:
        crop_foreground: crop to the brain's bounding box.
        pixdim: the model's voxel size in mm (``None``: the data's own grid).
        axcodes: reorient to these axis codes first (``None``: keep the data's orientation).
        resample_label: resample the label with the image; False keeps it on the case's own grid (for
            evaluation there: :class:`gmd_monai.evaluation.SubsetEvaluation` brings the prediction back).
    """
    if not resample_label and crop_foreground:
        raise ValueError("resample_label=False keeps the label on the case's grid: use crop_foreground=False")
    return Compose(_load_part(("image", "label"), crop_foreground, True, pixdim, axcodes, resample_label))
