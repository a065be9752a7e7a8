"""MONAI pieces of the inference path, shared by the CLI and ``bundle/configs/inference.yaml``.

- :class:`LoadModalitiesd`: reads the AVAILABLE modalities of a case (NIfTI files, DICOM folders, a
  4-D file, or one file whose sibling modality files are found by name) onto the reference grid, as
  one channel-first MetaTensor; absent modalities are omitted, not zero-filled. The names travel with
  the image (``meta["modalities"]``, e.g. ``"t1ce+flair"``).
- :class:`ModalitySlidingWindowInferer`: a sliding window that passes those names to the DS network,
  so that only the available modality streams run.
- :class:`RegionsToLabelsd`: region probabilities (WT, TC, ET) -> one BraTS label map (uint8).
- :func:`inference_preprocessing` / :func:`inference_postprocessing`: the pipelines, in the same
  order as the bundle's YAML (a test checks that both give the same output).

Preprocessing is the training one (``gmd_monai.data.brats.val_transforms``): crop to the nonzero
bounding box, then :class:`~gmd_monai.data.brats.RobustZScoreNormalized`; before it the image is
reoriented to the BraTS orientation (LPS) and resampled to 1 mm, both inverted on the output.

Example:
    >>> from gmd_monai.data.synthetic import ensure_synthetic_brats
    >>> from gmd_monai.networks import DynamicSharingUNet
    >>> case = ensure_synthetic_brats("synth", num_cases=2, shape=(32, 32, 32)) + "/Synth_000/Synth_000"
    >>> pre = inference_preprocessing()
    >>> d = pre({"image": {"t1ce": case + "_t1ce.nii.gz", "flair": case + "_flair.nii.gz"}})
    >>> d["image"].shape[0], d["modalities"]
    (2, 't1ce+flair')
    >>> network = DynamicSharingUNet(width=0.25).eval()   # untrained here: bundle/models/model.pt in use
    >>> with torch.no_grad():
    ...     d["pred"] = ModalitySlidingWindowInferer(roi_size=32)(d["image"][None], network)[0]
    >>> d = inference_postprocessing(pre)(d)       # back on the input grid, one label map
    >>> tuple(d["pred"].shape), d["pred"].dtype, set(d["pred"].unique().tolist()) <= {0, 1, 2, 4}
    ((1, 32, 32, 32), torch.uint8, True)
"""

from __future__ import annotations

import os
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.inferers import SlidingWindowInferer
from monai.transforms import (
    Activationsd,
    Compose,
    CopyItemsd,
    CropForegroundd,
    EnsureTyped,
    Invertd,
    MapTransform,
    Orientationd,
)
from monai.utils.type_conversion import convert_to_dst_type

from gmd_monai.data.naming import MODALITY_ALIASES
from gmd_monai.data.spatial import Spacingd
from gmd_monai.data.transforms import RobustZScoreNormalized
from gmd_monai.inference.case import case_id_of, case_to_metatensor, load_case
from gmd_monai.inference.errors import InputError
from gmd_monai.inference.sources import sources_from_item
from gmd_monai.subsets import BRATS_MODALITIES

__all__ = [
    "LABEL_VALUES",
    "TRAINING_ORIENTATION",
    "LoadModalitiesd",
    "ModalitySlidingWindowInferer",
    "RegionsToLabelsd",
    "case_name_formatter",
    "inference_postprocessing",
    "inference_preprocessing",
    "label_value_names",
    "modalities_of",
    "regions_to_labels",
]

#: Orientation of the BraTS training images (nibabel axis codes); inference reorients to it.
TRAINING_ORIENTATION = "LPS"

#: Label value of (necrotic/non-enhancing core, oedema, enhancing tumour) per label convention.
LABEL_VALUES: dict[str, dict[str, int]] = {
    "brats2018": {"NCR": 1, "ED": 2, "ET": 4},
    "brats2021": {"NCR": 1, "ED": 2, "ET": 3},
}
_LABEL_ALIASES = {"brats": "brats2018", "brats2018": "brats2018", "brats2021": "brats2021"}


def _label_format(name: str) -> str:
    key = str(name).strip().lower()
    if key not in _LABEL_ALIASES:
        raise InputError(
            f"unknown label convention {name!r}; expected 'brats' ({{0,1,2,4}}) or 'brats2021' ({{0,1,2,3}})"
        )
    return _LABEL_ALIASES[key]


def label_value_names(label_format: str = "brats2018") -> dict[str, str]:
    """``{value: meaning}`` of the output label map, for reports."""
    v = LABEL_VALUES[_label_format(label_format)]
    return {
        "0": "background",
        str(v["NCR"]): "necrotic and non-enhancing tumour core (NCR/NET)",
        str(v["ED"]): "peritumoral oedema (ED)",
        str(v["ET"]): "enhancing tumour (ET)",
    }


def regions_to_labels(
    regions: torch.Tensor | np.ndarray, label_format: str = "brats2018", threshold: float = 0.5
) -> torch.Tensor | np.ndarray:
    """Region maps ``(3, ...)`` in the order (WT, TC, ET) -> label map ``(1, ...)`` uint8.

    ``region > threshold`` marks a region; ET wins over TC, TC over WT: ET -> 4 (3 for
    ``brats2021``), TC without ET -> 1, WT without TC -> 2, else 0. The label map is hierarchical by
    construction: an ET voxel counts in TC and WT, a TC voxel in WT.

    Args:
        regions: probabilities (or 0/1 masks) of WT, TC, ET.
        label_format: ``"brats"``/``"brats2018"`` ({0, 1, 2, 4}) or ``"brats2021"`` ({0, 1, 2, 3}).
        threshold: probability threshold (0.5: sigmoid > 0.5, i.e. logit > 0).
    """
    values = LABEL_VALUES[_label_format(label_format)]
    r = torch.as_tensor(regions)
    r = r.as_tensor() if isinstance(r, MetaTensor) else r
    if r.shape[0] != 3:
        raise ValueError(f"expected 3 region channels (WT, TC, ET), got shape {tuple(r.shape)}")
    wt, tc, et = (r[i] > threshold for i in range(3))
    out = torch.zeros(r.shape[1:], dtype=torch.uint8, device=r.device)
    out[wt] = values["ED"]
    out[tc] = values["NCR"]
    out[et] = values["ET"]
    out = out[None]
    if isinstance(regions, MetaTensor):
        return convert_to_dst_type(out, dst=regions, dtype=torch.uint8)[0]
    if isinstance(regions, np.ndarray):
        return out.cpu().numpy()
    return out


class RegionsToLabelsd(MapTransform):
    """Dictionary version of :func:`regions_to_labels` (keeps the MetaTensor meta, for SaveImaged).

    Args:
        keys: keys of the (3, ...) region probabilities.
        label_format: ``"brats"`` ({0, 1, 2, 4}) or ``"brats2021"`` ({0, 1, 2, 3}).
        threshold: probability threshold.
        allow_missing_keys: skip missing keys.
    """

    def __init__(
        self,
        keys: KeysCollection = "pred",
        label_format: str = "brats2018",
        threshold: float = 0.5,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.label_format = _label_format(label_format)
        self.threshold = float(threshold)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = regions_to_labels(d[key], self.label_format, self.threshold)
        return d


class LoadModalitiesd(MapTransform):
    """Load the available modalities of one case as a channel-first MetaTensor on the reference grid.

    The item's image (see :func:`gmd_monai.inference.io.sources_from_item`): ``{modality: path}``,
    a list of paths with ``modalities``, a 4-D file (channels named by ``modalities``, default
    t1, t1ce, t2, flair), a single BraTS-named file whose siblings are found by name, a case folder,
    or per-modality keys. Paths are NIfTI files or DICOM series folders. Every modality is checked
    and brought onto the reference grid (first available of t1ce, flair, t2, t1) by
    :func:`gmd_monai.inference.io.load_case`.

    Output: ``data[key]`` = float32 MetaTensor ``(C, X, Y, Z)``, channels = available modalities in
    BraTS order, RAS affine of the reference, ``meta["modalities"]`` = ``"t1ce+flair"``; and
    ``data[modalities_key]`` = the same name.

    Args:
        keys: the image key (one).
        modalities_key: key naming the channels of a list / 4-D input, and receiving the subset name.
        register: rigidly co-register every modality to the reference (mutual information).
        default_4d_channels: channel names of a 4-D file without ``modalities`` (``None``: required).
        siblings: a single 3-D BraTS-named file brings its sibling modality files.
        keep_case: also store the :class:`~gmd_monai.inference.io.LoadedCase` under ``"loaded_case"``
            (for reports; not collatable, so off in the bundle).
        allow_missing_keys: skip a missing image key.
        allow_label_like: accept an image that looks like a label map (see
            :func:`gmd_monai.inference.io.read_source`).
    """

    def __init__(
        self,
        keys: KeysCollection = "image",
        modalities_key: str = "modalities",
        register: bool = False,
        default_4d_channels: Sequence[str] | None = BRATS_MODALITIES,
        siblings: bool = True,
        keep_case: bool = False,
        allow_missing_keys: bool = False,
        allow_label_like: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.modalities_key = modalities_key
        self.register = register
        self.default_4d_channels = default_4d_channels
        self.siblings = siblings
        self.keep_case = keep_case
        self.allow_label_like = allow_label_like

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.keys:
            per_modality = any(isinstance(k, str) and k.strip().lower() in MODALITY_ALIASES for k in d)
            if key not in d and not per_modality and self.allow_missing_keys:
                continue
            sources = sources_from_item(
                d,
                image_key=str(key),
                modalities_key=self.modalities_key,
                default_4d_channels=self.default_4d_channels,
                siblings=self.siblings,
            )
            case = load_case(sources, register=self.register, allow_label_like=self.allow_label_like)
            d[key] = case_to_metatensor(case)
            d[key].meta["case"] = str(d.get("case") or case_id_of(sources))
            d[self.modalities_key] = case.subset_name
            if self.keep_case:
                d["loaded_case"] = case
        return d


def case_name_formatter(metadict: Mapping[str, Any] | None, saver: Any = None) -> dict[str, Any]:
    """``SaveImaged`` file naming by case id (``<case>_gmdseg.nii.gz``), set by :class:`LoadModalitiesd`.

    Falls back to the source file name (MONAI's default) when the metadata has no case id.
    """
    meta = metadict or {}
    subject = meta.get("case") or meta.get("filename_or_obj") or getattr(saver, "_data_index", 0)
    return {"subject": f"{subject}", "idx": meta.get("patch_index")}


class CaseNameFormatter:
    """``SaveImaged``'s ``output_name_formatter`` for the bundle: files named by case id
    (:func:`case_name_formatter`), and an existing file is never replaced unless ``overwrite``.

    The check runs before the file is written (the saver's ``folder_layout`` gives the path), so a
    second run into the same folder stops with ``FileExistsError`` naming the file instead of
    replacing an earlier result.
    """

    def __init__(self, overwrite: bool = False):
        from gmd_monai.checkpointing import as_bool

        self.overwrite = as_bool(overwrite, "overwrite")

    def __call__(self, metadict: Mapping[str, Any] | None, saver: Any = None) -> dict[str, Any]:
        names = case_name_formatter(metadict, saver)
        layout = getattr(saver, "folder_layout", None)
        if not self.overwrite and layout is not None:
            path = layout.filename(**names)
            if os.path.exists(path):
                raise FileExistsError(f"{path}: already exists; --overwrite true replaces it")
        return names


def modalities_of(image: Any) -> list[str] | None:
    """The modality names carried by an image's metadata (``meta["modalities"]``), batch-aware.

    Returns ``None`` when the image carries none. Raises ``ValueError`` when a batch mixes subsets.
    """
    meta = getattr(image, "meta", None)
    if not isinstance(meta, Mapping) or meta.get("modalities") is None:
        return None
    value = meta["modalities"]
    if isinstance(value, (list, tuple)):
        unique = sorted({str(v) for v in value})
        if len(unique) > 1:
            raise ValueError(f"a batch mixes modality subsets {unique}; use batch_size 1")
        if not unique:
            return None
        value = unique[0]
    return [v for v in str(value).split("+") if v]


class ModalitySlidingWindowInferer(SlidingWindowInferer):
    """Sliding-window inference that runs only the available modality streams of a DS network.

    The available modalities are the ``available`` keyword if given, else the names in the input
    MetaTensor's ``meta["modalities"]`` (set by :class:`LoadModalitiesd`, kept by MONAI transforms and
    collation); an input without names must have all 4 channels. They are passed to the network as
    ``network(window, available=names)``, so the cost grows with the number of modalities given.
    Takes the arguments of :class:`monai.inferers.SlidingWindowInferer`.
    """

    def __call__(self, inputs: torch.Tensor, network, *args: Any, **kwargs: Any):  # type: ignore[override]
        if kwargs.get("available") is None:
            names = modalities_of(inputs)
            if names is None:
                if inputs.shape[1] != len(BRATS_MODALITIES):
                    raise ValueError(
                        f"input has {inputs.shape[1]} channels but no modality names (meta['modalities']); "
                        "load it with LoadModalitiesd or pass available=[...]"
                    )
                names = list(BRATS_MODALITIES)
            kwargs["available"] = names
        if len(kwargs["available"]) != inputs.shape[1]:
            raise ValueError(f"{inputs.shape[1]} input channels but modalities {kwargs['available']}")
        return super().__call__(inputs, network, *args, **kwargs)


def inference_preprocessing(
    register: bool = False,
    pixdim: Sequence[float] | float = 1.0,
    axcodes: str = TRAINING_ORIENTATION,
    default_4d_channels: Sequence[str] | None = BRATS_MODALITIES,
    keep_case: bool = False,
    allow_label_like: bool = False,
) -> Compose:
    """``LoadModalitiesd -> EnsureTyped -> Orientationd -> Spacingd -> CropForegroundd ->
    RobustZScoreNormalized`` on ``"image"`` (the bundle's ``preprocessing``).

    Args:
        register: rigid co-registration of every modality to the reference.
        pixdim: voxel size (mm) the network sees (the model's ``ModelInfo.pixdim``).
        axcodes: orientation the network sees (the model's ``ModelInfo.axcodes``).
        default_4d_channels: channel names of an unnamed 4-D file.
        keep_case: keep the loaded case for reports (CLI).
        allow_label_like: accept an image that looks like a label map.
    """
    pix = (float(pixdim),) * 3 if isinstance(pixdim, (int, float)) else tuple(float(p) for p in pixdim)
    return Compose(
        [
            LoadModalitiesd(
                keys="image",
                register=register,
                default_4d_channels=default_4d_channels,
                keep_case=keep_case,
                allow_label_like=allow_label_like,
            ),
            EnsureTyped(keys="image", dtype=torch.float32, track_meta=True),
            Orientationd(keys="image", axcodes=axcodes, labels=None),
            Spacingd(keys="image", pixdim=pix, mode="bilinear"),  # gmd_monai.data.spatial's
            CropForegroundd(keys="image", source_key="image", allow_smaller=True),
            RobustZScoreNormalized(keys="image", lower=0.5, upper=99.5),
        ]
    )


def inference_postprocessing(
    preprocessing: Compose, label_format: str = "brats2018", probabilities_key: str | None = None
) -> Compose:
    """``Activationsd(sigmoid) -> Invertd(preprocessing) -> [CopyItemsd] -> RegionsToLabelsd`` on ``"pred"``.

    The region probabilities are brought back to the reference grid (linear), then thresholded at 0.5
    into one label map (the bundle's ``postprocessing`` without its SaveImaged).

    Args:
        preprocessing: the transform the image went through (inverted on the prediction).
        label_format: ``"brats"`` ({0, 1, 2, 4}) or ``"brats2021"`` ({0, 1, 2, 3}).
        probabilities_key: also keep the inverted probabilities (WT, TC, ET) under this key.
    """
    transforms: list = [
        Activationsd(keys="pred", sigmoid=True),
        Invertd(
            keys="pred", transform=preprocessing, orig_keys="image", nearest_interp=False, to_tensor=True
        ),
    ]
    if probabilities_key:
        transforms.append(CopyItemsd(keys="pred", names=probabilities_key))
    transforms.append(RegionsToLabelsd(keys="pred", label_format=label_format))
    return Compose(transforms)
