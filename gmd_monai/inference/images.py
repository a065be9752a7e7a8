"""Reading one modality image (NIfTI, other SimpleITK formats, a DICOM series) with the inference
path's checks, and writing a NIfTI on a reference image's grid.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

import nibabel as nib
import numpy as np
import SimpleITK as sitk

from gmd_monai.inference.errors import InputError
from gmd_monai.inference.grid import ras_affine
from gmd_monai.inference.integrity import (
    check_dicom_series,
    check_field_of_view,
    check_nifti_complete,
    looks_like_label_map,
)

if TYPE_CHECKING:
    from gmd_monai.inference.sources import ImageSource

__all__ = ["read_header", "read_source", "write_nifti_like"]


def _header_reader(path: Path) -> sitk.ImageFileReader:
    """A reader that has read the image file's header only (voxels not read)."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as e:
        raise InputError(f"{path}: unreadable image file ({_itk_reason(e)})") from e
    return reader


def read_header(path: Path) -> tuple[int, tuple[int, ...], int]:
    """``(dimension, size, components)`` of an image file from its header (voxels not read)."""
    reader = _header_reader(path)
    return reader.GetDimension(), tuple(int(s) for s in reader.GetSize()), reader.GetNumberOfComponents()


def _header_geometry(path: Path) -> tuple[tuple[int, ...], tuple[float, ...]]:
    """``(size, spacing)`` of an image file from its header (voxels not read)."""
    reader = _header_reader(path)
    return tuple(int(s) for s in reader.GetSize()), tuple(float(s) for s in reader.GetSpacing())


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
