"""BraTS file naming, in one place for training and inference: modality names, file names, siblings.

Two file naming conventions are recognised (``.nii.gz`` or ``.nii``):

- ``"brats2018"``: ``<case>/<case>_{t1,t1ce,t2,flair,seg}.nii.gz`` (BraTS 2018, 2019, 2020, 2021);
- ``"brats2021"``: ``<case>/<case>-{t1n,t1c,t2w,t2f,seg}.nii.gz`` (the hyphenated BraTS 2023+ naming,
  ``t1n -> t1``, ``t1c -> t1ce``, ``t2w -> t2``, ``t2f -> flair``).

Training (:func:`gmd_monai.data.datalist.scan_brats_folder`) reads exactly these names. Inference is
more lenient: any file or folder name whose last token (after ``_``, ``-``, ``.`` or a space) is a
modality name or alias (case-insensitive) names that modality::

    t1     t1, t1n, t1w            (BraTS 2021+: -t1n)
    t1ce   t1ce, t1c, t1gd         (BraTS 2021+: -t1c)
    t2     t2, t2w                 (BraTS 2021+: -t2w)
    flair  flair, t2f, t2flair     (BraTS 2021+: -t2f)

Example:
    >>> canonical_modality("T1c"), modality_of("Brats18_x_t1ce.nii.gz"), case_of(Path("/d/case7-t2f.nii"))
    ('t1ce', 't1ce', 'case7')
    >>> brats_file_name("Case1", "brats2021", "flair")
    'Case1-t2f.nii.gz'
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from gmd_monai.errors import InputError
from gmd_monai.subsets import BRATS_MODALITIES

__all__ = [
    "IMAGE_EXTENSIONS",
    "MODALITY_ALIASES",
    "NAMING_SUFFIXES",
    "NIFTI_EXTENSIONS",
    "brats_file",
    "brats_file_name",
    "canonical_modality",
    "case_naming",
    "case_of",
    "find_siblings",
    "is_modality_name",
    "modality_of",
    "naming_patterns",
    "parse_modality_list",
    "strip_extension",
]

#: File name endings of NIfTI files.
NIFTI_EXTENSIONS: tuple[str, ...] = (".nii.gz", ".nii")
#: File name endings recognised as image files when scanning folders.
IMAGE_EXTENSIONS: tuple[str, ...] = NIFTI_EXTENSIONS
#: Endings removed from a file name before reading the modality from it.
_KNOWN_EXTENSIONS = (*NIFTI_EXTENSIONS, ".nrrd", ".mha", ".mhd", ".dcm")

#: File suffix of each modality (and of the segmentation, ``"seg"``), per naming convention,
#: with the separator between the case id and the suffix.
NAMING_SUFFIXES: dict[str, tuple[str, dict[str, str]]] = {
    "brats2018": ("_", {"t1": "t1", "t1ce": "t1ce", "t2": "t2", "flair": "flair", "seg": "seg"}),
    "brats2021": ("-", {"t1": "t1n", "t1ce": "t1c", "t2": "t2w", "flair": "t2f", "seg": "seg"}),
}

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
_ALIAS_TEXT = "t1 (t1n), t1ce (t1c, t1gd), t2 (t2w), flair (t2f)"
_TOKEN_SPLIT = re.compile(r"[_\-. ]+")
#: ``<prefix><separator><last token>`` of a file name without its extension.
_PREFIX_TOKEN = re.compile(r"^(?P<prefix>.*?)(?P<sep>[_\-. ]+)(?P<token>[^_\-. ]+)$")


# ----------------------------------------------------------------------------------------------
# modality names
# ----------------------------------------------------------------------------------------------


def is_modality_name(name: Any) -> bool:
    """Whether ``name`` is a modality name or alias (case-insensitive, surrounding spaces ignored)."""
    return isinstance(name, str) and name.strip().lower() in MODALITY_ALIASES


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


# ----------------------------------------------------------------------------------------------
# file names
# ----------------------------------------------------------------------------------------------


def strip_extension(name: str) -> str:
    """``case_t1ce.nii.gz`` -> ``case_t1ce`` (NIfTI and the other image endings SimpleITK reads)."""
    low = name.lower()
    for ext in _KNOWN_EXTENSIONS:
        if low.endswith(ext):
            return name[: -len(ext)]
    return name


def modality_of(name: str) -> str | None:
    """The modality named by the last token of a file or folder name (``case_t1ce.nii.gz`` -> t1ce)."""
    tokens = [t for t in _TOKEN_SPLIT.split(strip_extension(name).lower()) if t]
    if not tokens:
        return None
    return MODALITY_ALIASES.get(tokens[-1])


def case_of(path: Path) -> str:
    """``/d/case7_t1ce.nii.gz`` -> ``case7``; ``/d/p1/flair.nii.gz`` or DICOM dir ``p1/flair`` -> ``p1``."""
    stem = strip_extension(path.name)
    m = _PREFIX_TOKEN.match(stem)
    if m and m["prefix"] and m["token"].lower() in MODALITY_ALIASES:
        return m["prefix"]
    if stem.lower() in MODALITY_ALIASES:
        return path.resolve().parent.name or stem
    return stem


def brats_file_name(case: str, fmt: str, key: str, ext: str = ".nii.gz") -> str:
    """The file name of modality (or ``"seg"``) ``key`` of ``case`` in naming convention ``fmt``."""
    sep, suffixes = NAMING_SUFFIXES[fmt]
    if key not in suffixes:
        raise ValueError(f"unknown modality {key!r}; expected names from {list(BRATS_MODALITIES)}")
    return f"{case}{sep}{suffixes[key]}{ext}"


def brats_file(case_dir: Path, case: str, fmt: str, key: str) -> Path | None:
    """The existing file of ``key`` (a modality or ``"seg"``) of ``case`` in ``case_dir`` (``.nii.gz``
    before ``.nii``), or ``None``."""
    for ext in NIFTI_EXTENSIONS:
        p = case_dir / brats_file_name(case, fmt, key, ext)
        if p.is_file():
            return p
    return None


def case_naming(case_dir: Path) -> list[str]:
    """Naming conventions for which ``case_dir`` holds at least one file of its own case."""
    case = case_dir.name
    return [
        fmt
        for fmt, (_, suffixes) in NAMING_SUFFIXES.items()
        if any(brats_file(case_dir, case, fmt, key) is not None for key in suffixes)
    ]


def naming_patterns(modalities: Sequence[str]) -> str:
    """The file names of every convention, for error messages."""
    out = []
    for fmt, (sep, suffixes) in NAMING_SUFFIXES.items():
        names = ",".join(suffixes.get(m, m) for m in (*modalities, "seg"))
        out.append(f"{fmt}: <case>/<case>{sep}{{{names}}}.nii.gz (or .nii)")
    return "; ".join(out)


# ----------------------------------------------------------------------------------------------
# sibling modality files
# ----------------------------------------------------------------------------------------------


def find_siblings(path: str | os.PathLike) -> dict[str, Path]:
    """The modality files next to one BraTS-named file that share its case prefix.

    ``/d/case7_t1ce.nii.gz`` finds ``/d/case7_{t1,t2,flair}.nii.gz`` (any alias, ``_`` or ``-``), so a
    single path (MONAI Label passes one per case) brings the whole case, even in a flat folder.

    Returns:
        ``{modality: path}`` in BraTS order, ``path`` itself included.

    Raises:
        InputError: the file name does not end with a modality name, or two files name one modality.
    """
    p = Path(path)
    stem = strip_extension(p.name)
    mod = modality_of(p.name)
    if mod is None:
        raise InputError(
            f"{p}: cannot tell the modality from the file name (expected it to end with one of "
            f"{_ALIAS_TEXT}, "
            "e.g. case_t1ce.nii.gz)"
        )
    m = _PREFIX_TOKEN.match(stem)
    prefix = m["prefix"] if m else ""
    out: dict[str, Path] = {mod: p}
    if not prefix:
        return out
    for entry in sorted(p.parent.iterdir()):
        if entry == p or not entry.is_file() or not entry.name.lower().endswith(IMAGE_EXTENSIONS):
            continue
        em = _PREFIX_TOKEN.match(strip_extension(entry.name))
        if not em or em["prefix"] != prefix:
            continue
        other = MODALITY_ALIASES.get(em["token"].lower())
        if other is None or other == mod:
            continue
        if other in out:
            raise InputError(f"{p.parent}: two files name the modality {other} for case {prefix!r}")
        out[other] = entry
    return {k: out[k] for k in BRATS_MODALITIES if k in out}
