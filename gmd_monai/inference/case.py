"""A whole case on one grid: every available modality read, checked and brought onto the reference grid,
the first available of T1ce, FLAIR, T2, T1 (resampled with a warning when the grids differ; optionally
rigidly co-registered).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk
import torch
from monai.data import MetaTensor

from gmd_monai.data.naming import case_of
from gmd_monai.inference.errors import InputError
from gmd_monai.inference.grid import (
    grid_differences,
    ras_affine,
    register_rigid,
    resample_onto,
    spacing_far_from,
)
from gmd_monai.inference.images import read_source
from gmd_monai.inference.sources import ImageSource, check_sources

__all__ = ["REFERENCE_PRIORITY", "LoadedCase", "case_id_of", "case_to_metatensor", "load_case"]

# The inference modules log under the name they had as one module (users' logging settings filter on it).
logger = logging.getLogger("gmd_monai.inference.io")

#: The reference grid is the first available of these (the output lies on its grid).
REFERENCE_PRIORITY: tuple[str, ...] = ("t1ce", "flair", "t2", "t1")


@dataclass
class LoadedCase:
    """The available modalities of one patient, all on the reference grid.

    Attributes:
        images: ``{modality: float32 SimpleITK image}`` in BraTS order, all on the reference grid.
        reference: the reference modality (first available of t1ce, flair, t2, t1).
        sources: ``{modality: ImageSource}``.
        info: per modality: path, format, volume, original shape and spacing, whether it was
            resampled, and the registration result when registered.
        warnings: messages for the report (also logged).
    """

    images: dict[str, sitk.Image]
    reference: str
    sources: dict[str, ImageSource]
    info: dict[str, dict[str, Any]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    @property
    def modalities(self) -> tuple[str, ...]:
        return tuple(self.images)

    @property
    def reference_image(self) -> sitk.Image:
        return self.images[self.reference]

    @property
    def reference_source(self) -> ImageSource:
        return self.sources[self.reference]

    @property
    def subset_name(self) -> str:
        return "+".join(self.modalities)


def _warn(warnings: list[str], msg: str) -> None:
    logger.warning(msg)
    warnings.append(msg)


def load_case(
    sources: Sequence[ImageSource], register: bool = False, allow_label_like: bool = False
) -> LoadedCase:
    """Read and check the sources of one case and bring them onto the reference grid.

    The reference is the first available of :data:`REFERENCE_PRIORITY`. A modality whose grid (shape,
    spacing, origin or direction) differs from the reference's is resampled onto it (linear), with a
    warning. ``register=True`` first co-registers every other modality rigidly to the reference
    (SimpleITK, Mattes mutual information). ``allow_label_like`` is passed to :func:`read_source`.

    Raises:
        InputError: see :func:`check_sources` and :func:`read_source`; also two modalities holding
            identical voxels, and a modality with no voxel inside the reference's field of view.
    """
    ordered = check_sources(sources)
    images = {s.modality: read_source(s, allow_label_like=allow_label_like) for s in ordered}
    by_mod = {s.modality: s for s in ordered}
    mods = list(images)
    for i, a in enumerate(mods):
        for b in mods[i + 1 :]:
            ia, ib = images[a], images[b]
            if ia.GetSize() == ib.GetSize() and np.array_equal(
                sitk.GetArrayViewFromImage(ia), sitk.GetArrayViewFromImage(ib)
            ):
                raise InputError(
                    f"{by_mod[a].describe()} ({a}) and {by_mod[b].describe()} ({b}) hold identical voxel "
                    "data: "
                    "the same image given twice?"
                )
    ref_mod = next(m for m in REFERENCE_PRIORITY if m in images)
    ref = images[ref_mod]
    warnings: list[str] = []
    info: dict[str, dict[str, Any]] = {}
    for m, img in images.items():
        s = by_mod[m]
        info[m] = {
            "path": str(s.path.resolve()),
            "format": s.format,
            "volume": s.volume,
            "shape": list(img.GetSize()),
            "spacing_mm": [round(float(v), 6) for v in img.GetSpacing()],
            "resampled": False,
            "registered": None,
        }
    for m in mods:
        if m == ref_mod:
            continue
        img = images[m]
        diffs = grid_differences(img, ref)
        transform = None
        if register:
            result = register_rigid(fixed=ref, moving=img)
            transform = result.transform
            info[m]["registered"] = result.as_dict()
            logger.info(
                "%s: rigidly registered to %s (rotation %s deg, translation %s mm)",
                m,
                ref_mod,
                info[m]["registered"]["rotation_deg"],
                info[m]["registered"]["translation_mm"],
            )
            shift = float(np.linalg.norm(result.translation_mm))
            angle = float(np.max(np.abs(result.rotation_deg)))
            if shift > 10.0 or angle > 10.0:
                _warn(
                    warnings,
                    f"{m} ({by_mod[m].describe()}): the rigid registration to {ref_mod} moved it by "
                    f"{shift:.1f} mm and up to {angle:.1f} degrees: check the alignment in the montage",
                )
        elif diffs:
            _warn(
                warnings,
                f"{m} ({by_mod[m].describe()}) is not on the voxel grid of the reference {ref_mod} "
                f"({'; '.join(diffs)}): resampled onto it (linear interpolation, scanner coordinates "
                "trusted; "
                "use --register if the images are not aligned)",
            )
        if diffs or transform is not None:
            img = resample_onto(img, ref, transform=transform)
            info[m]["resampled"] = True
            arr = sitk.GetArrayViewFromImage(img)
            if float(arr.min()) == float(arr.max()):
                raise InputError(
                    f"{by_mod[m].describe()} ({m}): no voxel overlaps the reference {ref_mod} "
                    f"({by_mod[ref_mod].describe()}) after resampling: the images do not cover the same "
                    "region (wrong origin or orientation?)"
                )
            images[m] = img
    if spacing_far_from(ref.GetSpacing()):
        _warn(
            warnings,
            f"the reference {ref_mod} has voxel spacing {tuple(round(float(v), 3) for v in ref.GetSpacing())}"
            " mm, far from the 1 mm isotropic BraTS training data: resampled to the model's grid for the "
            "network and the result brought back; small structures may be less accurate",
        )
    ref_arr = sitk.GetArrayViewFromImage(ref)
    border = np.concatenate(
        [ref_arr[[0, -1]].ravel(), ref_arr[:, [0, -1]].ravel(), ref_arr[:, :, [0, -1]].ravel()]
    )
    if border.size and float(np.mean(border != 0)) > 0.5:
        _warn(
            warnings,
            f"the reference {ref_mod} is nonzero on most of its border: not skull-stripped (or cropped "
            "inside the head)? The model was trained on skull-stripped BraTS images; tissue outside the "
            "brain may be mislabelled",
        )
    return LoadedCase(images=images, reference=ref_mod, sources=by_mod, info=info, warnings=warnings)


def case_to_metatensor(case: LoadedCase) -> MetaTensor:
    """The case as a channel-first float32 MetaTensor ``(C, X, Y, Z)`` with the reference's RAS affine.

    Channels are the available modalities in BraTS order; ``meta["modalities"]`` names them
    (``"t1ce+flair"``); ``meta["filename_or_obj"]`` is the reference file.
    """
    arrays = [sitk.GetArrayFromImage(case.images[m]).transpose(2, 1, 0) for m in case.modalities]
    data = torch.from_numpy(np.ascontiguousarray(np.stack(arrays), dtype=np.float32))
    affine = ras_affine(case.reference_image)
    meta = {
        "filename_or_obj": str(case.reference_source.path),
        "original_affine": affine.copy(),
        "spatial_shape": np.asarray(case.reference_image.GetSize()),
        "original_channel_dim": 0,
        "space": "RAS",
        "modalities": case.subset_name,
        "reference_modality": case.reference,
    }
    return MetaTensor(data, affine=torch.as_tensor(affine, dtype=torch.float64), meta=meta)


def case_id_of(sources: Sequence[ImageSource], case_dir: str | os.PathLike | None = None) -> str:
    """A case identifier: the case folder's name, else the reference file's name without modality suffix."""
    if case_dir is not None:
        return Path(case_dir).resolve().name
    by_mod = {s.modality: s for s in sources}
    ref = next((by_mod[m] for m in REFERENCE_PRIORITY if m in by_mod), sources[0])
    return case_of(ref.path)
