"""The image sources of one case: which file (or DICOM folder) holds which modality.

An input is an :class:`ImageSource`: a modality name, a path (a NIfTI file, any other file SimpleITK
reads, or a folder holding ONE DICOM series) and, for a 4-D file, the volume index. File and folder
names are read with :mod:`gmd_monai.data.naming`, the naming training uses too.
"""

from __future__ import annotations

import os
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gmd_monai.data.naming import (
    IMAGE_EXTENSIONS,
    NIFTI_EXTENSIONS,
    canonical_modality,
    find_siblings,
    is_modality_name,
    modality_of,
    parse_modality_list,
)
from gmd_monai.inference.errors import InputError
from gmd_monai.inference.images import read_header
from gmd_monai.subsets import BRATS_MODALITIES

__all__ = ["ImageSource", "check_sources", "find_case_files", "find_case_folders", "sources_from_item"]


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
        if self.path.name.lower().endswith(NIFTI_EXTENSIONS):
            return "nifti"
        return "other"

    def describe(self) -> str:
        """The path, with the volume index for a 4-D file (used in every message)."""
        return f"{self.path} (volume {self.volume})" if self.volume is not None else str(self.path)


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
        mod = modality_of(entry.name)
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
            if is_modality_name(k) and v is not None:
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
    dim, size, comps = read_header(path)
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
    mod = modality_of(path.name)
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
