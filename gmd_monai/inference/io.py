"""Reading one patient's images: modality names, NIfTI / DICOM sources, checks, case folders, datalists.

An input is an :class:`ImageSource`: a modality name, a path (a NIfTI file, any other file SimpleITK
reads, or a folder holding ONE DICOM series) and, for a 4-D file, the volume index. :func:`load_case`
reads the sources, checks them (clear errors naming the file) and brings every modality onto the
reference grid: the first available of T1ce, FLAIR, T2, T1 (resampled with a warning when the grids
differ; optionally rigidly co-registered).

Accepted modality names (case-insensitive) and aliases::

    t1     t1, t1n, t1w            (BraTS 2021+: -t1n)
    t1ce   t1ce, t1c, t1gd         (BraTS 2021+: -t1c)
    t2     t2, t2w                 (BraTS 2021+: -t2w)
    flair  flair, t2f, t2flair     (BraTS 2021+: -t2f)

Example:
    >>> from gmd_monai.data.synthetic import ensure_synthetic_brats
    >>> p = ensure_synthetic_brats("synth", num_cases=2, shape=(32, 32, 32)) + "/Synth_000/Synth_000"
    >>> sources = sources_from_item({"image": {"t1ce": p + "_t1ce.nii.gz", "flair": p + "_flair.nii.gz"}})
    >>> case = load_case(sources)                   # a folder holding one DICOM series works alike
    >>> case.modalities, case.reference
    (('t1ce', 'flair'), 't1ce')
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import SimpleITK as sitk
import torch
from monai.data import MetaTensor

from gmd_monai.inference.errors import InputError
from gmd_monai.inference.grid import (
    grid_differences,
    ras_affine,
    register_rigid,
    resample_onto,
    spacing_far_from,
)
from gmd_monai.inference.integrity import (
    check_dicom_series,
    check_field_of_view,
    check_nifti_complete,
    looks_like_label_map,
)
from gmd_monai.subsets import BRATS_MODALITIES

__all__ = [
    "IMAGE_EXTENSIONS",
    "MODALITY_ALIASES",
    "REFERENCE_PRIORITY",
    "ImageSource",
    "LoadedCase",
    "canonical_modality",
    "case_id_of",
    "case_to_metatensor",
    "check_sources",
    "find_case_files",
    "find_case_folders",
    "find_siblings",
    "load_case",
    "parse_modality_list",
    "read_inference_datalist",
    "read_source",
    "sources_from_item",
    "write_nifti_like",
]

logger = logging.getLogger(__name__)

#: Accepted names of each modality (lower case) -> the project's name.
MODALITY_ALIASES: dict[str, str] = {
    "t1": "t1",
    "t1n": "t1",
    "t1w": "t1",
    "t1ce": "t1ce",
    "t1c": "t1ce",
    "t1gd": "t1ce",
    "t2": "t2",
    "t2w": "t2",
    "flair": "flair",
    "t2f": "flair",
    "t2flair": "flair",
}
#: The reference grid is the first available of these (the output lies on its grid).
REFERENCE_PRIORITY: tuple[str, ...] = ("t1ce", "flair", "t2", "t1")
#: File name endings recognised as image files when scanning folders.
IMAGE_EXTENSIONS: tuple[str, ...] = (".nii.gz", ".nii")
_NIFTI_EXTENSIONS = (".nii.gz", ".nii")
_TOKEN_SPLIT = re.compile(r"[_\-. ]+")
_ALIAS_TEXT = "t1 (t1n), t1ce (t1c, t1gd), t2 (t2w), flair (t2f)"


def canonical_modality(name: Any) -> str:
    """The project's name of a modality (``"T1c"`` -> ``"t1ce"``); :class:`InputError` for unknown names."""
    key = str(name).strip().lower()
    if key in MODALITY_ALIASES:
        return MODALITY_ALIASES[key]
    raise InputError(f"unknown modality name {str(name)!r}; expected one of {_ALIAS_TEXT}")


def parse_modality_list(value: Any) -> list[str]:
    """Modality names from ``"t1ce,flair"``, ``"t1ce+flair"``, ``"t1ce flair"`` or a sequence of names."""
    if value is None:
        return []
    if isinstance(value, str):
        names = [v for v in re.split(r"[,+\s]+", value.strip()) if v]
    elif isinstance(value, Iterable):
        names = [str(v).strip() for v in value]
    else:
        raise InputError(f"cannot read a list of modality names from {value!r}")
    return [canonical_modality(n) for n in names]


def _strip_extension(name: str) -> str:
    low = name.lower()
    for ext in (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd", ".dcm"):
        if low.endswith(ext):
            return name[: -len(ext)]
    return name


def _modality_token(name: str) -> str | None:
    """The modality named by the last token of a file or folder name (``case_t1ce.nii.gz`` -> t1ce)."""
    tokens = [t for t in _TOKEN_SPLIT.split(_strip_extension(name).lower()) if t]
    if not tokens:
        return None
    return MODALITY_ALIASES.get(tokens[-1])


@dataclass(frozen=True)
class ImageSource:
    """One modality of one patient.

    Attributes:
        modality: the project's modality name (``t1``, ``t1ce``, ``t2``, ``flair``).
        path: a NIfTI (or other SimpleITK-readable) file, or a folder holding one DICOM series.
        volume: index of the volume in a 4-D file (``None`` for a 3-D file or a DICOM series).
    """

    modality: str
    path: Path
    volume: int | None = None

    @property
    def is_dicom(self) -> bool:
        return self.path.is_dir()

    @property
    def format(self) -> str:
        if self.is_dicom:
            return "dicom"
        if self.path.name.lower().endswith(_NIFTI_EXTENSIONS):
            return "nifti"
        return "other"

    def describe(self) -> str:
        """The path, with the volume index for a 4-D file (used in every message)."""
        return f"{self.path} (volume {self.volume})" if self.volume is not None else str(self.path)


# ----------------------------------------------------------------------------------------------
# finding the files of a case
# ----------------------------------------------------------------------------------------------


def find_case_files(case_dir: str | os.PathLike) -> dict[str, Path]:
    """The modality images of one case folder, by name: ``{modality: path}`` in BraTS order.

    Recognised entries: NIfTI files (``.nii.gz``, ``.nii``) and sub-folders (DICOM series) whose name
    ends with a modality name or alias after ``_``, ``-`` or ``.``: BraTS 2018-2020
    ``<case>_t1.nii.gz, _t1ce, _t2, _flair``, BraTS 2021+ ``<case>-t1n.nii.gz, -t1c, -t2w, -t2f``, or
    plain ``t1ce.nii.gz`` / ``flair/``. Other entries (``_seg``, outputs, ...) are ignored.

    Raises:
        InputError: the folder is missing, holds no modality image, or two entries name one modality.
    """
    folder = Path(case_dir)
    if not folder.exists():
        raise InputError(f"{folder}: case folder not found")
    if not folder.is_dir():
        raise InputError(f"{folder}: not a folder (--case_dir expects a folder of one case's images)")
    found: dict[str, list[Path]] = {}
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_file() and not entry.name.lower().endswith(IMAGE_EXTENSIONS):
            continue
        mod = _modality_token(entry.name)
        if mod is not None:
            found.setdefault(mod, []).append(entry)
    ambiguous = {m: p for m, p in found.items() if len(p) > 1}
    if ambiguous:
        m, paths = next(iter(ambiguous.items()))
        raise InputError(
            f"{folder}: {len(paths)} entries name the modality {m}: {', '.join(p.name for p in paths)}; "
            "keep one or give the files with --t1/--t1ce/--t2/--flair"
        )
    if not found:
        raise InputError(
            f"{folder}: no modality image found; expected files named like <case>_t1ce.nii.gz (BraTS "
            "2018-2020: "
            "_t1, _t1ce, _t2, _flair) or <case>-t1c.nii.gz (BraTS 2021+: -t1n, -t1c, -t2w, -t2f), or DICOM "
            "series folders named t1, t1ce, t2, flair"
        )
    return {m: found[m][0] for m in BRATS_MODALITIES if m in found}


def find_case_folders(root: str | os.PathLike) -> list[Path]:
    """Sub-folders of ``root`` that hold at least one recognised modality image, sorted by name."""
    folder = Path(root)
    if not folder.is_dir():
        raise InputError(f"{folder}: folder not found" if not folder.exists() else f"{folder}: not a folder")
    out = []
    for sub in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        try:
            find_case_files(sub)
        except InputError:
            continue
        out.append(sub)
    return out


def find_siblings(path: str | os.PathLike) -> dict[str, Path]:
    """The modality files next to one BraTS-named file that share its case prefix.

    ``/d/case7_t1ce.nii.gz`` finds ``/d/case7_{t1,t2,flair}.nii.gz`` (any alias, ``_`` or ``-``), so a
    single path (MONAI Label passes one per case) brings the whole case, even in a flat folder.

    Raises:
        InputError: the file name does not end with a modality name.
    """
    p = Path(path)
    stem = _strip_extension(p.name)
    mod = _modality_token(p.name)
    if mod is None:
        raise InputError(
            f"{p}: cannot tell the modality from the file name (expected it to end with one of "
            f"{_ALIAS_TEXT}, "
            "e.g. case_t1ce.nii.gz)"
        )
    m = re.match(r"^(?P<prefix>.*?)(?P<sep>[_\-. ]+)?(?P<token>[^_\-. ]+)$", stem)
    prefix = (m["prefix"] or "") if m else ""
    out: dict[str, Path] = {mod: p}
    if not prefix:
        return out
    for entry in sorted(p.parent.iterdir()):
        if entry == p or not entry.is_file() or not entry.name.lower().endswith(IMAGE_EXTENSIONS):
            continue
        e_stem = _strip_extension(entry.name)
        em = re.match(r"^(?P<prefix>.*?)(?P<sep>[_\-. ]+)(?P<token>[^_\-. ]+)$", e_stem)
        if not em or em["prefix"] != prefix:
            continue
        other = MODALITY_ALIASES.get(em["token"].lower())
        if other is None or other == mod:
            continue
        if other in out:
            raise InputError(f"{p.parent}: two files name the modality {other} for case {prefix!r}")
        out[other] = entry
    return {k: out[k] for k in BRATS_MODALITIES if k in out}


def _header_reader(path: Path) -> sitk.ImageFileReader:
    """A reader that has read the image file's header only (voxels not read)."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as e:
        raise InputError(f"{path}: unreadable image file ({_itk_reason(e)})") from e
    return reader


def _header(path: Path) -> tuple[int, tuple[int, ...], int]:
    """``(dimension, size, components)`` of an image file from its header (voxels not read)."""
    reader = _header_reader(path)
    return reader.GetDimension(), tuple(int(s) for s in reader.GetSize()), reader.GetNumberOfComponents()


def _header_geometry(path: Path) -> tuple[tuple[int, ...], tuple[float, ...]]:
    """``(size, spacing)`` of an image file from its header (voxels not read)."""
    reader = _header_reader(path)
    return tuple(int(s) for s in reader.GetSize()), tuple(float(s) for s in reader.GetSpacing())


def _as_path(value: Any, what: str) -> Path:
    if isinstance(value, (str, os.PathLike)) and str(value).strip():
        return Path(os.fspath(value)).expanduser()
    raise InputError(f"{what}: expected a file or folder path, got {value!r}")


def sources_from_item(
    item: Mapping[Hashable, Any] | str | os.PathLike,
    image_key: str = "image",
    modalities_key: str = "modalities",
    default_4d_channels: Sequence[str] | None = BRATS_MODALITIES,
    siblings: bool = True,
) -> list[ImageSource]:
    """The image sources of one case description (CLI arguments or a datalist item).

    ``item[image_key]`` may be:

    - a mapping ``{modality: path}`` (absent modalities simply omitted);
    - a list of paths, with ``item[modalities_key]`` naming them in order (a list of 4 without names
      is read as ``t1, t1ce, t2, flair``, the project's channel order);
    - one 4-D file, whose volumes are named by ``item[modalities_key]`` (or ``default_4d_channels``
      when it has exactly that many volumes);
    - one 3-D file named like ``<case>_t1ce.nii.gz``: its sibling modality files are added
      (``siblings=True``; MONAI Label's one-path-per-case convention); or a 3-D file / DICOM folder
      with a single name in ``item[modalities_key]``;
    - a case folder (see :func:`find_case_files`).

    Without ``image_key``, per-modality keys (``item["t1ce"]``, ...) are used.

    Raises:
        InputError: no modality, unknown names, a count mismatch, or a 4-D file without channel names.
    """
    if isinstance(item, (str, os.PathLike)):
        item = {image_key: item}
    names = parse_modality_list(item.get(modalities_key)) if item.get(modalities_key) is not None else []
    value = item.get(image_key)
    if value is None:
        per_key = {}
        for k, v in item.items():
            if isinstance(k, str) and k.strip().lower() in MODALITY_ALIASES and v is not None:
                per_key[k] = v
        if not per_key:
            raise InputError(
                "no modality given: pass at least one of --t1, --t1ce, --t2, --flair (a NIfTI file or a "
                "DICOM "
                "folder), or --case_dir, or --image with --channels"
            )
        value = per_key

    if isinstance(value, Mapping):
        out = []
        for k, v in value.items():
            if v is None:
                continue
            mod = canonical_modality(k)
            out.append(ImageSource(mod, _as_path(v, f"--{k}")))
        if not out:
            raise InputError("no modality given: every modality input is empty")
        return out

    if isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        paths = [_as_path(v, f"{image_key}[{i}]") for i, v in enumerate(value)]
        if not paths:
            raise InputError(f"{image_key!r} is an empty list: no modality given")
        if not names:
            if len(paths) != len(BRATS_MODALITIES):
                raise InputError(
                    f"{len(paths)} image files given without {modalities_key!r}: name their modalities "
                    f"(a list of {len(BRATS_MODALITIES)} is read as {', '.join(BRATS_MODALITIES)})"
                )
            names = list(BRATS_MODALITIES)
        if len(names) != len(paths):
            raise InputError(f"{len(paths)} image files but {len(names)} modality names ({'+'.join(names)})")
        return [ImageSource(m, p) for m, p in zip(names, paths)]

    path = _as_path(value, image_key)
    if not path.exists():
        raise InputError(f"{path}: file not found")
    if path.is_dir():
        if len(names) == 1:
            return [ImageSource(names[0], path)]
        if names:
            raise InputError(
                f"{path}: a folder was given with {len(names)} modality names; give one per series"
            )
        return [ImageSource(m, p) for m, p in find_case_files(path).items()]
    dim, size, comps = _header(path)
    n_vol = size[3] if dim >= 4 else (comps if comps > 1 else 1)
    if n_vol > 1:
        if not names:
            if default_4d_channels is not None and n_vol == len(default_4d_channels):
                names = [canonical_modality(c) for c in default_4d_channels]
            else:
                raise InputError(
                    f"{path}: a 4-D image with {n_vol} volumes needs the list of its channels "
                    f"(--channels, e.g. --channels t1,t1ce,t2,flair)"
                )
        if len(names) != n_vol:
            raise InputError(
                f"{path}: the file holds {n_vol} volumes but {len(names)} channel names were given "
                f"({', '.join(names)})"
            )
        return [ImageSource(m, path, volume=i) for i, m in enumerate(names)]
    if names:
        if len(names) != 1:
            raise InputError(f"{path}: a 3-D image (one volume) was given {len(names)} channel names")
        return [ImageSource(names[0], path)]
    if siblings:
        return [ImageSource(m, p) for m, p in find_siblings(path).items()]
    mod = _modality_token(path.name)
    if mod is None:
        raise InputError(f"{path}: cannot tell the modality from the file name; name it (e.g. --t1ce)")
    return [ImageSource(mod, path)]


def check_sources(sources: Sequence[ImageSource]) -> list[ImageSource]:
    """Check a case's sources before reading: at least one, known names, no modality twice, files exist,
    no file given twice. Returns them in BraTS order (t1, t1ce, t2, flair).

    Raises:
        InputError: naming the file or modality.
    """
    if not sources:
        raise InputError(
            "no modality given: pass at least one of --t1, --t1ce, --t2, --flair, or --case_dir, or --image "
            "with --channels"
        )
    by_mod: dict[str, ImageSource] = {}
    for s in sources:
        mod = canonical_modality(s.modality)
        if mod in by_mod:
            raise InputError(f"modality {mod} given twice: {by_mod[mod].describe()} and {s.describe()}")
        by_mod[mod] = s
    seen: dict[tuple, ImageSource] = {}
    for s in by_mod.values():
        if not s.path.exists():
            raise InputError(f"{s.path}: file not found (given as {s.modality})")
        st = s.path.stat()
        key = (st.st_dev, st.st_ino, s.volume)
        if key in seen:
            other = seen[key]
            raise InputError(
                f"{s.describe()} is given as both {other.modality} and {s.modality}: two inputs are the "
                "same file"
            )
        seen[key] = s
    return [by_mod[m] for m in BRATS_MODALITIES if m in by_mod]


# ----------------------------------------------------------------------------------------------
# reading and checking one image
# ----------------------------------------------------------------------------------------------


def _itk_reason(e: Exception) -> str:
    """A short reason from a (long, multi-line) SimpleITK exception."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    for ln in lines:
        low = ln.lower()
        if any(k in low for k in ("unable", "could not", "cannot", "can not", "error", "fail")):
            reason = re.sub(r"^.*?(ITK ERROR|sitk::ERROR|Exception):?\s*", "", ln)
            return reason[:200]
    return (lines[-1] if lines else type(e).__name__)[:200]


def _read_dicom_series(folder: Path, modality: str) -> sitk.Image:
    reader = sitk.ImageSeriesReader()
    try:
        ids = reader.GetGDCMSeriesIDs(str(folder))
    except RuntimeError as e:
        raise InputError(f"{folder}: cannot scan the folder for DICOM files ({_itk_reason(e)})") from e
    if not ids:
        raise InputError(f"{folder}: no DICOM series found in the folder (given as {modality})")
    if len(ids) > 1:
        raise InputError(
            f"{folder}: the folder holds {len(ids)} DICOM series ({', '.join(ids[:3])}"
            f"{', ...' if len(ids) > 3 else ''}); give a folder with exactly one series per modality"
        )
    files = reader.GetGDCMSeriesFileNames(str(folder), ids[0])
    reader.SetFileNames(files)
    reader.MetaDataDictionaryArrayUpdateOn()
    try:
        image = reader.Execute()
    except RuntimeError as e:
        raise InputError(f"{folder}: cannot read the DICOM series ({_itk_reason(e)})") from e

    def tag(i: int, key: str) -> str | None:
        return reader.GetMetaData(i, key).strip() if reader.HasMetaDataKey(i, key) else None

    size = image.GetSize()
    check_dicom_series(
        folder,
        files,
        positions=[tag(i, "0020|0032") for i in range(len(files))],
        orientation=tag(0, "0020|0037"),
        depth=int(size[2]) if len(size) > 2 else 1,
        spacing_z=float(image.GetSpacing()[2]) if len(size) > 2 else 0.0,
    )
    return image


def _check_finite(arr: np.ndarray, desc: str) -> None:
    finite = np.isfinite(arr)
    if not bool(finite.all()):
        n_nan = int(np.isnan(arr).sum())
        n_inf = int(arr.size - finite.sum() - n_nan)
        raise InputError(f"{desc}: {n_nan} NaN and {n_inf} infinite voxel values")


def _check_nifti_finite(source: ImageSource, desc: str) -> None:
    """ITK's NIfTI reader turns NaN and Inf into 0: check a floating-point (or scaled) NIfTI's raw voxels."""
    try:
        img = nib.load(str(source.path))
        hdr = img.header
        slope, inter = hdr.get_slope_inter() if hasattr(hdr, "get_slope_inter") else (None, None)
        if (
            not np.issubdtype(hdr.get_data_dtype(), np.floating)
            and slope in (None, 1.0)
            and inter in (None, 0.0)
        ):
            return  # integer voxels cannot be NaN or infinite
        data = np.asanyarray(img.dataobj)
    except (EOFError, OSError) as e:  # check_nifti_complete ran first: should not happen
        raise InputError(f"{source.path}: cannot read every voxel ({e})") from e
    except Exception:  # nibabel cannot read what ITK read: nothing more to check
        return
    if source.volume is not None and data.ndim >= 4:
        data = data[..., source.volume]
    _check_finite(data, desc)


def read_source(source: ImageSource, allow_label_like: bool = False) -> sitk.Image:
    """Read one modality as a 3-D float32 SimpleITK image, with the checks of the inference path.

    Files are checked before their voxels are read: the field of view from the header (see
    :data:`~gmd_monai.inference.integrity.MAX_FOV_MM`) and, for NIfTI, that every voxel is in the file.
    A DICOM folder must hold one complete, evenly spaced series.

    Args:
        source: the modality and its path.
        allow_label_like: accept an image whose voxels are a handful of small integers (otherwise refused
            as a label map given as an image).

    Raises:
        InputError: missing, unreadable or truncated file, an incomplete or unevenly spaced DICOM series,
            a field of view larger than a head, not 3-D (or a 4-D file without a volume index),
            a volume index out of range, NaN/Inf voxels, a constant image, or a label map. The message
            names the file.
    """
    path = source.path
    desc = source.describe()
    if not path.exists():
        raise InputError(f"{path}: file not found (given as {source.modality})")
    if path.is_dir():
        image = _read_dicom_series(path, source.modality)
    else:
        if source.format == "nifti":
            check_nifti_complete(path)
        size, spacing = _header_geometry(path)
        check_field_of_view(str(path), size[:3], spacing[:3])
        try:
            image = sitk.ReadImage(str(path))
        except RuntimeError as e:
            raise InputError(f"{path}: unreadable image file ({_itk_reason(e)})") from e

    comps = image.GetNumberOfComponentsPerPixel()
    if comps > 1:
        if source.volume is None:
            raise InputError(
                f"{desc}: {comps} values per voxel; expected a 3-D scalar volume (name the channels of a "
                "multi-channel file with --image and --channels)"
            )
        if not 0 <= source.volume < comps:
            raise InputError(f"{desc}: volume index out of range (the file holds {comps} channels)")
        image = sitk.VectorIndexSelectionCast(image, int(source.volume))

    dim = image.GetDimension()
    size = tuple(image.GetSize())
    if dim == 4:
        if source.volume is None and size[3] != 1:
            raise InputError(
                f"{desc}: a 4-D image with {size[3]} volumes, not 3-D (give it with --image and --channels)"
            )
        v = 0 if source.volume is None else int(source.volume)
        if not 0 <= v < size[3]:
            raise InputError(f"{desc}: volume index out of range (the file holds {size[3]} volumes)")
        image = sitk.Extract(image, [size[0], size[1], size[2], 0], [0, 0, 0, v])
        dim, size = 3, tuple(image.GetSize())
    elif source.volume is not None and comps == 1 and not (source.volume == 0 and dim == 3):
        raise InputError(f"{desc}: the file is {dim}-D, not a 4-D image with volume {source.volume}")
    if dim != 3:
        raise InputError(f"{desc}: a {dim}-D image of shape {size}; expected a 3-D volume")
    if min(size) < 2:
        raise InputError(f"{desc}: shape {size} is a single slice, not a 3-D volume")

    image = sitk.Cast(image, sitk.sitkFloat32)
    arr = sitk.GetArrayViewFromImage(image)
    _check_finite(arr, desc)
    if source.format == "nifti":
        _check_nifti_finite(source, desc)
    lo, hi = float(arr.min()), float(arr.max())
    if lo == hi:
        raise InputError(f"{desc}: constant image (every voxel is {lo:g}); it holds no information")
    check_field_of_view(desc, size, image.GetSpacing())
    values = None if allow_label_like else looks_like_label_map(arr)
    if values is not None:
        shown = ", ".join(f"{v:g}" for v in values)
        raise InputError(
            f"{desc}: looks like a label map, not an MRI image (every voxel is one of {shown}); give the "
            "image, or pass --allow_label_like if this really is the image"
        )
    return image


# ----------------------------------------------------------------------------------------------
# a whole case on one grid
# ----------------------------------------------------------------------------------------------


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
    return _case_from_path(ref.path)


def _case_from_path(path: Path) -> str:
    """``/d/case7_t1ce.nii.gz`` -> ``case7``; ``/d/p1/flair.nii.gz`` or DICOM dir ``p1/flair`` -> ``p1``."""
    stem = _strip_extension(path.name)
    m = re.match(r"^(?P<prefix>.+?)[_\-. ]+(?P<token>[^_\-. ]+)$", stem)
    if m and m["token"].lower() in MODALITY_ALIASES:
        return m["prefix"]
    if stem.lower() in MODALITY_ALIASES:
        return path.resolve().parent.name or stem
    return stem


# ----------------------------------------------------------------------------------------------
# datalists (bundle inference)
# ----------------------------------------------------------------------------------------------

_DATALIST_KEYS = ("testing", "test", "inference", "data", "validation")


def _resolve_item_paths(item: dict[str, Any], base: Path | None) -> dict[str, Any]:
    def fix(v: Any) -> Any:
        if isinstance(v, str) and base is not None and v and not os.path.isabs(os.path.expanduser(v)):
            return str(base / v)
        if isinstance(v, list):
            return [fix(x) for x in v]
        if isinstance(v, dict):
            return {k: fix(x) for k, x in v.items()}
        return v

    out = dict(item)
    for k, v in item.items():
        if k == "image" or (isinstance(k, str) and k.lower() in MODALITY_ALIASES) or k == "label":
            out[k] = fix(v)
    return out


def read_inference_datalist(
    datalist: Any, base_dir: str | os.PathLike | None = None, strict: bool = True
) -> list[dict[str, Any]]:
    """The cases to segment, as data dicts for :class:`~gmd_monai.inference.transforms.LoadModalitiesd`.

    Args:
        datalist: a JSON file (a list of items, or a dict with a ``testing`` / ``test`` /
            ``inference`` / ``data`` / ``validation`` list), a folder of case folders (or one case
            folder), a list of items, or ``None`` (no case). An item is a dict with ``image`` (see
            :func:`sources_from_item`) or a single path. Any subset of modalities per case.
        base_dir: folder that relative paths are resolved against (default: the JSON file's folder).
        strict: raise when ``datalist`` is a path that does not exist; otherwise log and return ``[]``.

    Returns:
        A list of dicts, each with ``image`` and ``case``.
    """
    base = Path(base_dir) if base_dir not in (None, "") else None
    if datalist is None or datalist == "":
        return []
    if isinstance(datalist, (str, os.PathLike)):
        p = Path(datalist).expanduser()
        if not p.exists():
            msg = f"{p}: datalist not found (a JSON file or a folder of case folders)"
            if strict:
                raise InputError(msg)
            logger.warning(msg)
            return []
        if p.is_dir():
            folders = find_case_folders(p)
            if not folders:
                try:
                    find_case_files(p)
                    folders = [p]
                except InputError:
                    folders = []
            if not folders and strict:
                raise InputError(f"{p}: no case folder with modality images found")
            return [
                {"case": f.name, "image": {m: str(q) for m, q in find_case_files(f).items()}} for f in folders
            ]
        try:
            content = json.loads(p.read_text())
        except (OSError, ValueError) as e:
            raise InputError(f"{p}: cannot read the datalist JSON ({e})") from e
        base = base or p.parent
        if isinstance(content, dict):
            key = next((k for k in _DATALIST_KEYS if k in content), None)
            if key is None:
                raise InputError(f"{p}: no list of cases under any of the keys {', '.join(_DATALIST_KEYS)}")
            content = content[key]
        datalist = content
    if not isinstance(datalist, Sequence) or isinstance(datalist, (str, bytes)):
        raise InputError(f"datalist must be a list of cases, got {type(datalist).__name__}")
    items = []
    for i, it in enumerate(datalist):
        if isinstance(it, (str, os.PathLike)):
            it = {"image": os.fspath(it)}
        if not isinstance(it, Mapping):
            raise InputError(f"datalist item {i} is neither a dict nor a path: {it!r}")
        it = _resolve_item_paths(dict(it), base)
        if "case" not in it:
            img = it.get("image")
            if img is None:
                img = {k: v for k, v in it.items() if isinstance(k, str) and k.lower() in MODALITY_ALIASES}
            first = img if isinstance(img, str) else None
            if isinstance(img, Mapping) and img:
                first = next(iter(img.values()))
            elif isinstance(img, Sequence) and not isinstance(img, str) and img:
                first = img[0]
            it["case"] = _case_from_path(Path(first)) if first else f"case{i}"
        items.append(it)
    return items


# ----------------------------------------------------------------------------------------------
# writing
# ----------------------------------------------------------------------------------------------


def write_nifti_like(
    path: str | os.PathLike, array: np.ndarray, reference: ImageSource, reference_image: sitk.Image
) -> None:
    """Write ``array`` (``(X, Y, Z)`` or ``(X, Y, Z, C)``, voxel order of the reference) as NIfTI on the
    reference's grid.

    A NIfTI reference lends its exact affine, qform/sform codes and units (the output overlays it in
    any viewer); otherwise (DICOM) the affine comes from the SimpleITK geometry. The array's dtype is kept.
    """
    if tuple(array.shape[:3]) != tuple(reference_image.GetSize()):
        raise ValueError(
            f"array shape {array.shape[:3]} differs from the reference {reference_image.GetSize()}"
        )
    if reference.format == "nifti":
        ref = nib.load(str(reference.path))
        hdr = ref.header
        img = nib.Nifti1Image(array, ref.affine)
        img.header.set_qform(hdr.get_qform(), code=int(hdr["qform_code"]))
        img.header.set_sform(hdr.get_sform(), code=int(hdr["sform_code"]))
        img.header.set_xyzt_units(xyz=hdr.get_xyzt_units()[0])
    else:
        affine = ras_affine(reference_image)
        img = nib.Nifti1Image(array, affine)
        img.header.set_qform(affine, code=1)
        img.header.set_sform(affine, code=1)
        img.header.set_xyzt_units(xyz="mm")
    img.set_data_dtype(array.dtype)
    nib.save(img, os.fspath(path))
