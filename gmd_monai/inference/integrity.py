"""Is an input image complete, plausible and affordable? Checks run before (or right after) reading.

- :func:`check_nifti_complete`: a ``.nii`` / ``.nii.gz`` file holds every voxel its header describes
  (the gzip stream is read to its end marker and its checksum); SimpleITK fills missing data with zeros.
- :func:`check_dicom_series`: every file of a DICOM folder is a slice of the series, slice positions are
  distinct and evenly spaced along the slice normal, and the volume has one slice per file.
- :func:`looks_like_label_map`: every voxel is one of a handful of small integers (a segmentation given
  as an image).
- :func:`check_field_of_view` and :func:`estimate_memory_bytes`: a field of view larger than a head is an
  error, and the memory of a run is estimated before anything large is allocated.

Every check raises :class:`~gmd_monai.inference.errors.InputError` naming the file. The limits are
module constants, documented in ``docs/safety.md``.
"""

from __future__ import annotations

import gzip
import math
import os
import zlib
from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np

from gmd_monai.inference.errors import InputError

__all__ = [
    "DEFAULT_MAX_MEMORY_GB",
    "LABEL_LIKE_MAX_DISTINCT",
    "LABEL_LIKE_MAX_VALUE",
    "MAX_FOV_MM",
    "check_dicom_series",
    "check_field_of_view",
    "check_memory",
    "check_nifti_complete",
    "estimate_memory_bytes",
    "looks_like_label_map",
]

#: Largest field of view (mm) accepted along any axis: an adult head is about 200-250 mm.
MAX_FOV_MM = 400.0
#: Default cap on the estimated memory of one segmentation (GiB); ``--max_memory_gb`` changes it.
DEFAULT_MAX_MEMORY_GB = 8.0
#: An image whose voxels are all integers in ``[0, LABEL_LIKE_MAX_VALUE]`` with at most
#: ``LABEL_LIKE_MAX_DISTINCT`` distinct values looks like a label map.
LABEL_LIKE_MAX_VALUE = 10
LABEL_LIKE_MAX_DISTINCT = 6

_CHUNK = 1 << 20
_GIB = float(1 << 30)


def _stream_length(path: Path) -> int:
    """Decompressed length of a gzip file, read to its end (end-of-stream marker and CRC checked)."""
    n = 0
    try:
        with gzip.open(path, "rb") as f:
            while chunk := f.read(_CHUNK):
                n += len(chunk)
    except (EOFError, OSError, zlib.error) as e:
        raise InputError(f"{path}: truncated or corrupt gzip stream ({e}); the file is incomplete") from e
    return n


def check_nifti_complete(path: str | os.PathLike) -> None:
    """Raise when a NIfTI file holds fewer bytes than its header's voxels need.

    ``.nii.gz`` files are decompressed to the end (a truncated stream or a bad checksum is an error);
    ``.nii`` files are compared by size. Header problems are left to the reader.

    Raises:
        InputError: the file is truncated or its gzip stream is corrupt (the message names the file).
    """
    p = Path(path)
    try:
        header = nib.load(str(p)).header
        shape = tuple(int(s) for s in header.get_data_shape())
        itemsize = int(np.dtype(header.get_data_dtype()).itemsize)
        offset = int(header.get_data_offset())
    except Exception:  # not a header nibabel understands: the image reader reports it
        return
    expected = offset + int(np.prod(shape, dtype=np.int64)) * itemsize
    gz = p.name.lower().endswith(".gz")
    actual = _stream_length(p) if gz else p.stat().st_size
    if actual < expected:
        what = "decompressed data" if gz else "file"
        raise InputError(
            f"{p}: truncated: the header describes {shape} voxels of {header.get_data_dtype()} "
            f"({expected} bytes with the header) but the {what} holds {actual} bytes"
        )


def check_dicom_series(
    folder: Path,
    files: Sequence[str],
    positions: Sequence[str | None],
    orientation: str | None,
    depth: int,
    spacing_z: float,
) -> None:
    """Raise unless a DICOM series is complete and evenly sampled.

    Args:
        folder: the series folder (named in messages).
        files: the files the reader used, in slice order.
        positions: each file's ImagePositionPatient (0020,0032) as read, or ``None`` when absent.
        orientation: the ImageOrientationPatient (0020,0037) of the first file.
        depth: slices in the volume read.
        spacing_z: the slice spacing of the volume read (mm).

    Raises:
        InputError: a file of the folder is not in the series (unreadable or truncated?), the volume's
            slice count differs from the file count, a position is missing or repeated, or the spacing
            is not uniform (or differs from the volume's).
    """
    used = {Path(f).resolve() for f in files}
    others = sorted(
        e.name
        for e in folder.iterdir()
        if e.is_file()
        and not e.name.startswith(".")
        and e.name.upper() != "DICOMDIR"
        and e.resolve() not in used
    )
    if others:
        listed = ", ".join(others[:3]) + (", ..." if len(others) > 3 else "")
        raise InputError(
            f"{folder}: {len(others)} file(s) of the folder are not slices of its DICOM series ({listed}): "
            f"unreadable (truncated?) or from another series; the series would have {len(files)} slices"
        )
    if depth != len(files):
        raise InputError(f"{folder}: the DICOM series has {len(files)} files but the volume {depth} slices")
    if len(files) < 2:
        return
    missing = [Path(f).name for f, p in zip(files, positions) if not p]
    if missing or not orientation:
        raise InputError(
            f"{folder}: slice position or orientation missing in the DICOM files ({', '.join(missing[:3])}); "
            "the slice spacing cannot be checked"
        )
    try:
        o = np.array([float(v) for v in orientation.split("\\")], dtype=np.float64)
        pos = np.array([[float(v) for v in str(p).split("\\")] for p in positions], dtype=np.float64)
    except ValueError as e:
        raise InputError(
            f"{folder}: unreadable slice position or orientation in the DICOM files ({e})"
        ) from e
    normal = np.cross(o[:3], o[3:6])
    d = np.sort(pos @ normal)
    gaps = np.diff(d)
    step = float(np.median(gaps))
    tol = max(1e-3, 0.01 * abs(step))
    if step <= tol or np.any(gaps <= tol):
        raise InputError(f"{folder}: two DICOM slices lie at the same position (a repeated or foreign slice)")
    if float(np.max(np.abs(gaps - step))) > tol:
        i = int(np.argmax(np.abs(gaps - step)))
        raise InputError(
            f"{folder}: non-uniform DICOM slice spacing ({gaps[i]:.4g} mm between slices {i} and {i + 1}, "
            f"{step:.4g} mm elsewhere): a missing or extra slice"
        )
    if abs(float(spacing_z) - step) > tol:
        raise InputError(
            f"{folder}: the volume's slice spacing {spacing_z:.4g} mm differs from the slice positions' "
            f"{step:.4g} mm"
        )


def looks_like_label_map(arr: np.ndarray) -> list[float] | None:
    """The distinct values of ``arr`` when it looks like a label map, else ``None``.

    A label map: every voxel an integer in ``[0, LABEL_LIKE_MAX_VALUE]`` and at most
    ``LABEL_LIKE_MAX_DISTINCT`` distinct values (cheap range test first; the full test only then).
    """
    lo, hi = float(arr.min()), float(arr.max())
    if lo < 0 or hi > LABEL_LIKE_MAX_VALUE:
        return None
    if not bool(np.all(arr == np.rint(arr))):
        return None
    values = np.unique(arr)
    if values.size > LABEL_LIKE_MAX_DISTINCT:
        return None
    return [float(v) for v in values]


def check_field_of_view(
    what: str, size: Sequence[int], spacing: Sequence[float], limit_mm: float = MAX_FOV_MM
) -> None:
    """Raise when ``size * spacing`` exceeds ``limit_mm`` along any axis (not a head)."""
    fov = [int(n) * abs(float(s)) for n, s in zip(size, spacing)]
    if max(fov) > limit_mm:
        shown = " x ".join(f"{v:.0f}" for v in fov)
        raise InputError(
            f"{what}: field of view {shown} mm is larger than a head (limit {limit_mm:.0f} mm per axis); "
            "wrong voxel size in the header, or not a brain MRI"
        )


def estimate_memory_bytes(
    size: Sequence[int], spacing: Sequence[float], channels: int, pixdim: Sequence[float] | None = None
) -> int:
    """A rough upper estimate of the memory one segmentation needs (bytes), before allocating.

    ``4 * (N_ref * (2C + 6) + N_net * (3C + 9))`` with ``N_ref`` voxels of the reference grid, ``N_net``
    voxels after resampling to the network's voxel size ``pixdim`` (0 when ``None``: the input alone)
    and ``C`` modalities: float32 images and their channel-first copy, the probabilities and label map
    on the reference grid; resampled, cropped and normalised images, logits and the sliding-window
    buffers on the network grid.
    """
    n_ref = math.prod(int(n) for n in size)
    n_net = 0
    if pixdim is not None:
        n_net = math.prod(
            math.ceil(int(n) * abs(float(s)) / float(p)) for n, s, p in zip(size, spacing, pixdim)
        )
    c = int(channels)
    return 4 * (n_ref * (2 * c + 6) + n_net * (3 * c + 9))


def check_memory(
    what: str,
    size: Sequence[int],
    spacing: Sequence[float],
    channels: int,
    pixdim: Sequence[float] | None,
    max_memory_gb: float,
) -> int:
    """Raise when :func:`estimate_memory_bytes` exceeds ``max_memory_gb``; returns the estimate."""
    need = estimate_memory_bytes(size, spacing, channels, pixdim)
    if need > float(max_memory_gb) * _GIB:
        grid = ""
        if pixdim is not None:
            shape = [math.ceil(int(n) * abs(float(s)) / float(p)) for n, s, p in zip(size, spacing, pixdim)]
            grid = f" (resampled to {'x'.join(map(str, shape))} voxels at the model's {tuple(pixdim)} mm)"
        raise InputError(
            f"{what}: this segmentation would need about {need / _GIB:.1f} GiB of memory{grid}, above the "
            f"cap of {float(max_memory_gb):g} GiB; raise it with --max_memory_gb if the machine has it"
        )
    return need
