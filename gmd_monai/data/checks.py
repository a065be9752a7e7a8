"""Checks of a BraTS case's files from their NIfTI headers (no voxel data read), and of a whole dataset.

:func:`validate_case` checks one case and stops at its first problem (:class:`CheckBratsCased` runs it
in a pipeline); :func:`verify_dataset` checks every
case and reports every bad case at once (like nnU-Net's ``verify_dataset_integrity``), so that one run
lists every file to fix.
"""

from __future__ import annotations

import os
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from monai.config import KeysCollection
from monai.transforms import MapTransform

from gmd_monai.subsets import BRATS_MODALITIES

__all__ = ["CheckBratsCased", "DatasetIntegrityError", "validate_case", "verify_dataset"]

_AFFINE_ATOL = 1e-3


def _read_header(path: str | os.PathLike) -> tuple[tuple[int, ...], np.ndarray, tuple[float, ...]]:
    """Shape, affine and voxel sizes from a NIfTI header (the voxel data are not read)."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{p}: file not found")
    if not p.is_file():
        raise FileNotFoundError(f"{p}: not a file")
    try:
        img = nib.load(str(p))
        shape = tuple(int(s) for s in img.shape)
        affine = np.asarray(img.affine, dtype=np.float64)
        zooms = tuple(float(z) for z in img.header.get_zooms())
    except Exception as e:  # nibabel raises several types for unreadable files
        raise ValueError(f"{p}: cannot read the NIfTI header ({type(e).__name__}: {e})") from e
    while len(shape) > 3 and shape[-1] == 1:  # (H, W, D, 1) is a 3-D volume
        shape = shape[:-1]
    return shape, affine, zooms


def _fmt_shape(shape: Sequence[int]) -> str:
    return "(" + ", ".join(str(int(s)) for s in shape) + ")"


def _fmt_floats(values: Sequence[float]) -> str:
    return "(" + ", ".join(f"{float(v):.4g}" for v in values) + ")"


def _check_geometry(
    files: Sequence[tuple[str, str]], num_channels: int = len(BRATS_MODALITIES)
) -> tuple[int, ...]:
    """Check files listed as ``(path, kind)`` with kind ``"3d"`` or ``"4d"`` against the first one.

    Returns the common spatial shape.
    """
    ref: tuple[str, tuple[int, ...], np.ndarray, tuple[float, ...]] | None = None
    for path, kind in files:
        shape, affine, zooms = _read_header(path)
        if kind == "4d":
            if len(shape) != 4 or shape[3] != num_channels:
                raise ValueError(
                    f"{path}: a single image file must be 4-D with {num_channels} modalities in the last "
                    f"dimension ({', '.join(BRATS_MODALITIES)}), got shape {_fmt_shape(shape)}"
                )
            shape = shape[:3]
        elif len(shape) != 3:
            raise ValueError(f"{path}: expected a 3-D volume, got shape {_fmt_shape(shape)}")
        spacing = zooms[:3]
        if ref is None:
            ref = (path, shape, affine, spacing)
            continue
        ref_path, ref_shape, ref_affine, ref_spacing = ref
        if shape != ref_shape:
            raise ValueError(
                f"{path}: shape {_fmt_shape(shape)} differs from {ref_path} {_fmt_shape(ref_shape)}"
            )
        if not np.allclose(spacing, ref_spacing, atol=_AFFINE_ATOL):
            raise ValueError(
                f"{path}: voxel spacing {_fmt_floats(spacing)} differs from {ref_path} "
                f"{_fmt_floats(ref_spacing)}"
            )
        if not np.allclose(affine, ref_affine, atol=_AFFINE_ATOL):
            diff = float(np.abs(affine - ref_affine).max())
            raise ValueError(
                f"{path}: affine differs from {ref_path} (max abs difference {diff:.4g}; origin "
                f"{_fmt_floats(affine[:3, 3])} vs {_fmt_floats(ref_affine[:3, 3])}): the modalities are "
                "not on the same voxel grid (resample / register them first)"
            )
    if ref is None:
        raise ValueError("no file to check")
    return ref[1]


def _is_path(x: Any) -> bool:
    return isinstance(x, (str, os.PathLike))


def _files_of(item: Mapping[Hashable, Any], keys: Sequence[Hashable]) -> list[tuple[str, str]]:
    """``(path, kind)`` of the file paths under ``keys`` (present ones); the first key is the image.

    A single path under the image key is a 4-D multi-modality file; lists are 3-D modality files.
    Values that are not paths (e.g. arrays already loaded) are skipped.
    """
    files: list[tuple[str, str]] = []
    for i, key in enumerate(keys):
        if key not in item:
            continue
        value = item[key]
        if _is_path(value):
            files.append((os.fspath(value), "4d" if i == 0 else "3d"))
        elif (
            isinstance(value, Sequence) and not isinstance(value, (str, bytes)) and all(map(_is_path, value))
        ):
            if len(value) == 0:
                raise ValueError(f"case {item.get('case', '?')!r}: {key!r} is an empty list of files")
            files.extend((os.fspath(p), "3d") for p in value)
    return files


def validate_case(
    item: Mapping[Hashable, Any], image_key: str = "image", label_key: str = "label"
) -> tuple[int, ...]:
    """Check the files of one case from their NIfTI headers only (cheap: no voxel data are read).

    All files must exist and be readable NIfTI, the modality files and the label 3-D (a single image
    path must be a 4-D file with the 4 modalities last), and all must share the shape, the voxel
    spacing and the affine (``np.allclose``, atol 1e-3) of the first image.

    Args:
        item: a data dict with ``image_key`` (list of paths, or one 4-D path) and optionally ``label_key``.
        image_key: key of the image path(s).
        label_key: key of the segmentation path (optional in ``item``).

    Returns:
        The common spatial shape.

    Raises:
        FileNotFoundError: a file is missing.
        ValueError: a file is unreadable or its geometry differs; the message names the file.
    """
    if image_key not in item:
        raise ValueError(f"case {item.get('case', '?')!r} has no {image_key!r} entry")
    files = _files_of(item, [image_key, label_key])
    if not files:
        raise ValueError(f"case {item.get('case', '?')!r}: {image_key!r} holds no file path")
    return _check_geometry(files)


class CheckBratsCased(MapTransform):
    """Check a case's files before loading: they exist, are readable, and share shape and affine.

    Uses :func:`validate_case` (NIfTI headers only) on the keys present: a list of modality files or a
    single 4-D file for the image key, and 3-D files for the others. Checked cases are remembered, so
    the cost is paid once per case and worker.

    Args:
        keys: keys of the file paths; the first one is the reference image.
        allow_missing_keys: skip missing keys instead of raising.
        cache: remember the file lists already checked.

    Raises:
        FileNotFoundError: a file is missing (named in the message).
        ValueError: a file is unreadable or its geometry differs from the first image.
    """

    def __init__(
        self, keys: KeysCollection = ("image", "label"), allow_missing_keys: bool = False, cache: bool = True
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.cache = cache
        self._checked: set[tuple[tuple[str, str], ...]] = set()

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        list(self.key_iterator(d))  # raises KeyError for a missing key unless allow_missing_keys
        files = _files_of(d, list(self.keys))
        if not files:
            return d
        cache_key = tuple(files)
        if cache_key not in self._checked:
            _check_geometry(files)
            if self.cache:
                self._checked.add(cache_key)
        return d


class DatasetIntegrityError(ValueError):
    """Cases of a dataset that failed the file checks, every one of them.

    Attributes:
        problems: ``{case id: the problem, naming the file}``, in dataset order.
        num_cases: how many cases were checked.
    """

    def __init__(self, problems: Mapping[str, str], num_cases: int) -> None:
        self.problems = dict(problems)
        self.num_cases = num_cases
        lines = [f"case {case!r}: {problem}" for case, problem in self.problems.items()]
        super().__init__(f"{len(lines)} of {num_cases} case(s) failed the file checks:\n" + "\n".join(lines))


def verify_dataset(
    items: Sequence[Mapping[Hashable, Any]], image_key: str = "image", label_key: str = "label"
) -> dict[str, tuple[int, ...]]:
    """Check every case with :func:`validate_case` (headers only) and report every bad case at once.

    Args:
        items: data dicts with ``image_key``, optionally ``label_key`` and ``"case"``.
        image_key: key of the image path(s).
        label_key: key of the segmentation path.

    Returns:
        ``{case id: spatial shape}``.

    Raises:
        DatasetIntegrityError: after checking all of them, one line per bad case with its problem.
    """
    shapes: dict[str, tuple[int, ...]] = {}
    problems: dict[str, str] = {}
    for i, item in enumerate(items):
        case = str(item.get("case", f"item {i}"))
        try:
            shapes[case] = validate_case(item, image_key, label_key)
        except (OSError, ValueError) as e:
            problems[case] = " ".join(str(e).split())
    if problems:
        raise DatasetIntegrityError(problems, len(items))
    return shapes
