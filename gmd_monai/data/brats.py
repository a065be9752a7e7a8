"""BraTS datasets: folder scanning, datalists (splits), file checks and MONAI transforms.

Conventions used everywhere in this project:

- image channels in the order of :data:`gmd_monai.subsets.BRATS_MODALITIES` (``t1, t1ce, t2, flair``);
- labels become 3 region channels in the order ``(WT, TC, ET)``: WT = {1, 2, 4}, TC = {1, 4}, ET = {4}
  for BraTS 2018-2021 label maps, and WT = {1, 2, 3}, TC = {1, 3}, ET = {3} for the BraTS 2023+ maps
  (label 3 = enhancing tumour); the format is detected per volume;
- data dicts carry ``"image"`` (a list of 4 file paths, or one 4-D NIfTI path), ``"label"`` (the
  segmentation path) and ``"case"`` (the case id).

Two file naming conventions are recognised (``.nii.gz`` or ``.nii``):

- ``"brats2018"``: ``<case>/<case>_{t1,t1ce,t2,flair,seg}.nii.gz`` (BraTS 2018, 2019, 2020, 2021);
- ``"brats2021"``: ``<case>/<case>-{t1n,t1c,t2w,t2f,seg}.nii.gz`` (the hyphenated BraTS 2023+ naming,
  ``t1n -> t1``, ``t1c -> t1ce``, ``t2w -> t2``, ``t2f -> flair``).

Example (on the built-in synthetic data; a BraTS folder and ``split_dir=`` RFNet lists work alike):
    >>> from gmd_monai.data.synthetic import ensure_synthetic_brats
    >>> root = ensure_synthetic_brats("synthetic_brats", num_cases=4, shape=(32, 32, 32))
    >>> datalist = build_datalist(root, val_fraction=0.25, test_fraction=0.0)
    >>> sample = train_transforms(roi_size=(16, 16, 16))(datalist["training"][0])
    >>> tuple(sample["image"].shape), tuple(sample["label"].shape)
    ((4, 16, 16, 16), (3, 16, 16, 16))
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
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

from gmd_monai.data.readers import ThreadSafeNibabelReader
from gmd_monai.data.spatial import Spacingd
from gmd_monai.roi import parse_roi_size
from gmd_monai.subsets import BRATS_MODALITIES

__all__ = [
    "LABEL_FORMATS",
    "NAMING_SUFFIXES",
    "REGION_NAMES",
    "CheckBratsCased",
    "CheckFinited",
    "ConvertBratsLabelsToRegionsd",
    "RandPosNegCropd",
    "RobustZScoreNormalized",
    "build_datalist",
    "load_or_build_datalist",
    "convert_labels_to_regions",
    "read_case_list",
    "robust_zscore",
    "scan_brats_folder",
    "train_transforms",
    "val_transforms",
    "validate_case",
]

logger = logging.getLogger(__name__)

#: Region channels of every label tensor, in this order.
REGION_NAMES: tuple[str, ...] = ("WT", "TC", "ET")

#: Label values of each region, per label format.
LABEL_FORMATS: dict[str, dict[str, tuple[int, ...]]] = {
    "brats2018": {"WT": (1, 2, 4), "TC": (1, 4), "ET": (4,)},
    "brats2021": {"WT": (1, 2, 3), "TC": (1, 3), "ET": (3,)},
}

#: File suffix of each modality (and of the segmentation, ``"seg"``), per naming convention,
#: with the separator between the case id and the suffix.
NAMING_SUFFIXES: dict[str, tuple[str, dict[str, str]]] = {
    "brats2018": ("_", {"t1": "t1", "t1ce": "t1ce", "t2": "t2", "flair": "flair", "seg": "seg"}),
    "brats2021": ("-", {"t1": "t1n", "t1ce": "t1c", "t2": "t2w", "flair": "t2f", "seg": "seg"}),
}

_EXTENSIONS = (".nii.gz", ".nii")
_AFFINE_ATOL = 1e-3
_MAX_SCAN_DEPTH = 2  # <root>/<case> or <root>/<group>/<case> (e.g. BraTS 2018's HGG/ and LGG/)


# ----------------------------------------------------------------------------------------------
# folder scanning
# ----------------------------------------------------------------------------------------------


def _naming_patterns(modalities: Sequence[str]) -> str:
    out = []
    for fmt, (sep, suffixes) in NAMING_SUFFIXES.items():
        names = ",".join(suffixes.get(m, m) for m in (*modalities, "seg"))
        out.append(f"{fmt}: <case>/<case>{sep}{{{names}}}.nii.gz (or .nii)")
    return "; ".join(out)


def _find_file(case_dir: Path, case: str, sep: str, suffix: str) -> Path | None:
    for ext in _EXTENSIONS:
        p = case_dir / f"{case}{sep}{suffix}{ext}"
        if p.is_file():
            return p
    return None


def _case_naming(case_dir: Path) -> list[str]:
    """Naming conventions for which ``case_dir`` holds at least one file of its own case."""
    case = case_dir.name
    found = []
    for fmt, (sep, suffixes) in NAMING_SUFFIXES.items():
        if any(_find_file(case_dir, case, sep, s) is not None for s in suffixes.values()):
            found.append(fmt)
    return found


def _scan_case(case_dir: Path, fmt: str, modalities: Sequence[str], require_label: bool) -> dict[str, Any]:
    case = case_dir.name
    sep, suffixes = NAMING_SUFFIXES[fmt]
    images, missing = [], []
    for m in modalities:
        if m not in suffixes:
            raise ValueError(f"unknown modality {m!r}; expected names from {list(BRATS_MODALITIES)}")
        p = _find_file(case_dir, case, sep, suffixes[m])
        if p is None:
            missing.append(f"{case}{sep}{suffixes[m]}.nii.gz")
        else:
            images.append(os.path.abspath(p))
    label = _find_file(case_dir, case, sep, suffixes["seg"])
    if label is None and require_label:
        missing.append(f"{case}{sep}{suffixes['seg']}.nii.gz")
    if missing:
        raise FileNotFoundError(
            f"case {case!r} in {case_dir}: missing file(s) {', '.join(missing)} ({fmt} naming; "
            f"'.nii' is accepted as well)"
        )
    item: dict[str, Any] = {"case": case, "image": images}
    if label is not None:
        item["label"] = os.path.abspath(label)
    item["label_format"] = fmt
    return item


def scan_brats_folder(
    dataset_dir: str | os.PathLike,
    modalities: Sequence[str] = BRATS_MODALITIES,
    require_label: bool = True,
) -> list[dict[str, Any]]:
    """Find the BraTS cases of a folder, in either naming convention (see the module docstring).

    A case is a sub-folder ``<case>`` holding files named after it; grouping folders one level up
    (like BraTS 2018's ``HGG/`` and ``LGG/``) are searched too. Folders holding no file of their own
    case are skipped.

    Args:
        dataset_dir: the dataset root.
        modalities: modality names in channel order (names of :data:`BRATS_MODALITIES`).
        require_label: raise when a case has no segmentation file; otherwise items without one
            have no ``"label"`` key.

    Returns:
        Items ``{"case", "image": [paths in modality order], "label", "label_format"}`` with absolute
        paths, sorted by case id. ``label_format`` is the naming convention, ``"brats2018"`` or
        ``"brats2021"``.

    Raises:
        FileNotFoundError: the folder does not exist, holds no case, or a case misses a file.
        ValueError: mixed naming conventions, or the same case id twice.
    """
    root = Path(dataset_dir)
    if not root.exists():
        raise FileNotFoundError(f"BraTS dataset folder {str(root)!r} does not exist")
    if not root.is_dir():
        raise FileNotFoundError(f"BraTS dataset path {str(root)!r} is not a folder")

    items: dict[str, dict[str, Any]] = {}

    def visit(folder: Path, depth: int) -> None:
        for sub in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
            fmts = _case_naming(sub)
            if len(fmts) > 1:
                raise ValueError(
                    f"case folder {sub} mixes naming conventions {fmts}; "
                    f"use one of {_naming_patterns(modalities)}"
                )
            if fmts:
                item = _scan_case(sub, fmts[0], modalities, require_label)
                if item["case"] in items:
                    other = Path(items[item["case"]]["image"][0]).parent
                    raise ValueError(f"case id {item['case']!r} found twice: in {other} and in {sub}")
                items[item["case"]] = item
            elif depth < _MAX_SCAN_DEPTH:
                visit(sub, depth + 1)

    visit(root, 1)
    if not items:
        raise FileNotFoundError(
            f"no BraTS case found in {str(root)!r}; looked for sub-folders named like their files: "
            f"{_naming_patterns(modalities)}"
        )
    by_format: dict[str, list[str]] = {}
    for case, item in items.items():
        by_format.setdefault(item["label_format"], []).append(case)
    if len(by_format) > 1:
        desc = ", ".join(
            f"{fmt}: {len(c)} case(s), e.g. {sorted(c)[0]}" for fmt, c in sorted(by_format.items())
        )
        raise ValueError(f"{root} mixes naming conventions ({desc}); keep one dataset per folder")
    return [items[c] for c in sorted(items)]


# ----------------------------------------------------------------------------------------------
# header checks
# ----------------------------------------------------------------------------------------------


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


# ----------------------------------------------------------------------------------------------
# datalists and splits
# ----------------------------------------------------------------------------------------------


def read_case_list(path: str | os.PathLike) -> list[str]:
    """Case ids from a text file: one per line; blank lines and ``#`` comments are ignored.

    Args:
        path: the list file.

    Returns:
        The ids in file order, without duplicates.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"case list {str(p)!r} does not exist")
    ids: list[str] = []
    seen: set[str] = set()
    for line in p.read_text().splitlines():
        case = line.split("#", 1)[0].strip()
        if case and case not in seen:
            seen.add(case)
            ids.append(case)
    return ids


def _region_definitions() -> dict[str, str]:
    words = {"WT": "whole tumour", "TC": "tumour core", "ET": "enhancing tumour"}
    out = {}
    for r in REGION_NAMES:
        v18 = ", ".join(map(str, LABEL_FORMATS["brats2018"][r]))
        v21 = ", ".join(map(str, LABEL_FORMATS["brats2021"][r]))
        out[r] = f"{words[r]}: label in {{{v18}}} (label maps with ET = 3, BraTS 2023+: {{{v21}}})"
    return out


def _round_half_up(x: float) -> int:
    return int(np.floor(x + 0.5))


def _random_split(
    cases: Sequence[str], val_fraction: float, test_fraction: float, seed: int
) -> tuple[list[str], list[str], list[str]]:
    for name, f in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0.0 <= f < 1.0:
            raise ValueError(f"{name} must be in [0, 1), got {f}")
    if val_fraction + test_fraction >= 1.0:
        raise ValueError(f"val_fraction + test_fraction must be < 1, got {val_fraction} + {test_fraction}")
    order = sorted(cases)
    random.Random(seed).shuffle(order)
    n = len(order)
    remaining = n
    counts = []
    for f in (test_fraction, val_fraction):
        k = _round_half_up(f * n)
        if f > 0 and k == 0 and remaining - 1 >= 2:  # a non-zero fraction gets a case when 2 stay in training
            k = 1
        k = max(0, min(k, remaining - 1))  # at least one training case
        counts.append(k)
        remaining -= k
    n_test, n_val = counts
    test = sorted(order[:n_test])
    val = sorted(order[n_test : n_test + n_val])
    train = sorted(order[n_test + n_val :])
    return train, val, test


def build_datalist(
    dataset_dir: str | os.PathLike,
    output: str | os.PathLike | None = None,
    split_dir: str | os.PathLike | None = None,
    split: int = 1,
    train_list: str | os.PathLike | None = None,
    val_list: str | os.PathLike | None = None,
    test_list: str | os.PathLike | None = None,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    seed: int = 0,
    missing: str = "error",
    validate: bool = True,
) -> dict[str, Any]:
    """Build (and optionally write) a decathlon-style datalist with absolute paths.

    The split comes from, in this order of precedence:

    (a) explicit list files ``train_list`` / ``val_list`` / ``test_list`` (one case id per line, blank
        lines and ``#`` comments ignored; a list not given is empty);
    (b) ``split_dir`` with ``train{split}.txt``, ``val{split}.txt``, ``test{split}.txt`` (the RFNet layout);
    (c) a seeded random split by ``val_fraction`` / ``test_fraction`` (sorted ids shuffled with
        ``random.Random(seed)``; fractions may be 0; at least one case stays in training).

    When the validation set would be empty it is set to the training set (with a warning), so that
    a dataset of 1-2 cases still trains. Cases of the folder that no list names are dropped (logged).

    Args:
        dataset_dir: the dataset root (see :func:`scan_brats_folder`).
        output: where to write the JSON (parent folders are created); ``None`` writes nothing.
        split_dir: folder of RFNet-style list files.
        split: the split number for ``split_dir``.
        train_list: list file of the training cases.
        val_list: list file of the validation cases.
        test_list: list file of the test cases.
        val_fraction: share of validation cases for the random split.
        test_fraction: share of test cases for the random split.
        seed: seed of the random split.
        missing: ``"error"`` raises when a listed case is not in the folder; ``"warn"`` logs and drops it.
        validate: check every kept case with :func:`validate_case` (headers only).

    Returns:
        ``{"name", "description", "modalities", "labels", "label_format", "split", "training",
        "validation", "testing"}``; items are ``{"case", "image": [4 paths], "label", "label_format"}``.
    """
    if missing not in ("error", "warn"):
        raise ValueError(f"missing must be 'error' or 'warn', got {missing!r}")
    explicit = any(x is not None for x in (train_list, val_list, test_list))
    if explicit and split_dir is not None:
        raise ValueError("give either split_dir or train_list/val_list/test_list, not both")

    items = scan_brats_folder(dataset_dir, BRATS_MODALITIES, require_label=True)
    by_case = {it["case"]: it for it in items}

    split_desc: dict[str, Any]
    if explicit:
        lists = {
            name: (read_case_list(p) if p is not None else [])
            for name, p in (("training", train_list), ("validation", val_list), ("testing", test_list))
        }
        split_desc = {
            "method": "lists",
            "files": {
                k: (os.path.abspath(p) if p is not None else None)
                for k, p in (("training", train_list), ("validation", val_list), ("testing", test_list))
            },
        }
    elif split_dir is not None:
        sdir = Path(split_dir)
        if not sdir.is_dir():
            raise FileNotFoundError(f"split folder {str(sdir)!r} does not exist")
        files = {"training": sdir / f"train{split}.txt", "validation": sdir / f"val{split}.txt"}
        files["testing"] = sdir / f"test{split}.txt"
        if not files["training"].is_file():
            found = sorted(p.name for p in sdir.glob("*.txt"))
            raise FileNotFoundError(
                f"split folder {sdir} has no {files['training'].name} for split {split} (found: {found[:12]})"
            )
        lists = {}
        for k, p in files.items():
            if p.is_file():
                lists[k] = read_case_list(p)
            else:
                logger.warning("split folder %s has no %s: %s is empty", sdir, p.name, k)
                lists[k] = []
        split_desc = {"method": "split_dir", "split_dir": os.path.abspath(sdir), "split": split}
    else:
        train, val, test = _random_split(list(by_case), val_fraction, test_fraction, seed)
        lists = {"training": train, "validation": val, "testing": test}
        split_desc = {
            "method": "random",
            "seed": seed,
            "val_fraction": val_fraction,
            "test_fraction": test_fraction,
        }

    # a case in two lists leaks between training and evaluation
    seen: dict[str, str] = {}
    for name, ids in lists.items():
        for c in ids:
            if c in seen:
                raise ValueError(f"case {c!r} is listed in both {seen[c]} and {name}")
            seen[c] = name

    absent = [c for ids in lists.values() for c in ids if c not in by_case]
    if absent:
        msg = (
            f"{len(absent)} case(s) listed in the split are not in {dataset_dir}: "
            f"{', '.join(absent[:10])}{', ...' if len(absent) > 10 else ''}"
        )
        if missing == "error":
            raise ValueError(msg + " (use missing='warn' to drop them)")
        logger.warning("%s; dropping them", msg)
    unlisted = sorted(set(by_case) - set(seen))
    if unlisted:
        logger.info(
            "%d case(s) of %s are in no split list and are left out, e.g. %s",
            len(unlisted),
            dataset_dir,
            ", ".join(unlisted[:5]),
        )

    out_lists: dict[str, list[dict[str, Any]]] = {
        name: [dict(by_case[c]) for c in ids if c in by_case] for name, ids in lists.items()
    }
    if validate:
        for name in out_lists:
            for it in out_lists[name]:
                validate_case(it)
    if not out_lists["training"]:
        raise ValueError(f"no training case left for {dataset_dir} ({split_desc['method']} split)")
    if not out_lists["validation"]:
        logger.warning(
            "validation set is empty (%d training case(s)); validating on the training cases",
            len(out_lists["training"]),
        )
        out_lists["validation"] = [dict(it) for it in out_lists["training"]]
        split_desc["validation_is_training"] = True

    fmt = items[0]["label_format"]
    datalist: dict[str, Any] = {
        "name": Path(os.path.abspath(dataset_dir)).name,
        "description": "BraTS multi-modal MRI; image channels in modality order, label regions (WT, TC, ET)",
        "modalities": list(BRATS_MODALITIES),
        "labels": _region_definitions(),
        "region_order": list(REGION_NAMES),
        "label_format": fmt,
        "split": split_desc,
        "training": out_lists["training"],
        "validation": out_lists["validation"],
        "testing": out_lists["testing"],
    }
    logger.info(
        "datalist for %s: %d training, %d validation, %d testing case(s)",
        dataset_dir,
        len(datalist["training"]),
        len(datalist["validation"]),
        len(datalist["testing"]),
    )
    if output is not None:
        out = Path(output)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
        tmp.write_text(json.dumps(datalist, indent=2) + "\n")
        os.replace(tmp, out)
        logger.info("wrote %s", out)
    return datalist


# ----------------------------------------------------------------------------------------------
# array functions
# ----------------------------------------------------------------------------------------------


def _describe_source(data: Any, default: str) -> str:
    if isinstance(data, MetaTensor):
        name = data.meta.get("filename_or_obj")
        if name:
            return str(name)
    return default


_SIBLING_RE = {
    fmt: re.compile(
        rf"^(?P<stem>.*){re.escape(sep)}(?P<mod>{'|'.join(re.escape(suffixes[m]) for m in BRATS_MODALITIES)})"
        r"(?P<ext>\.nii(\.gz)?)$"
    )
    for fmt, (sep, suffixes) in NAMING_SUFFIXES.items()
}


def _channel_file(first_file: str, channel: int, num_channels: int) -> str:
    """Name the file that channel ``channel`` of a multi-file image was read from.

    MONAI keeps only the first file name of a list of files; the others are found from the naming
    conventions when possible.
    """
    if num_channels == len(BRATS_MODALITIES) and 0 <= channel < num_channels:
        for fmt, rx in _SIBLING_RE.items():
            m = rx.match(first_file)
            if m:
                sep, suffixes = NAMING_SUFFIXES[fmt]
                cand = f"{m['stem']}{sep}{suffixes[BRATS_MODALITIES[channel]]}{m['ext']}"
                if os.path.exists(cand):
                    return cand
    return f"{first_file} (channel {channel})" if num_channels > 1 else first_file


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


# ----------------------------------------------------------------------------------------------
# MONAI transforms
# ----------------------------------------------------------------------------------------------


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


def load_or_build_datalist(
    datalist: str | os.PathLike | None,
    dataset_dir: str | os.PathLike | None,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    seed: int = 0,
    train_list: str | os.PathLike | None = None,
    val_list: str | os.PathLike | None = None,
    test_list: str | os.PathLike | None = None,
) -> dict:
    """The bundle's entry: read a datalist JSON if given, else scan ``dataset_dir`` and split it.

    Relative image/label paths in a datalist are resolved against ``dataset_dir`` (or the JSON's folder).
    Every section the bundle uses (``training``, ``validation``, ``testing``) is present afterwards;
    a missing ``validation``/``testing`` section falls back to ``training`` with a warning.

    Args:
        datalist: path of a decathlon-style JSON (e.g. from ``gmd-monai prepare-datalist``), or None.
        dataset_dir: BraTS folder, used when no datalist is given.
        val_fraction, test_fraction, seed: random split of ``dataset_dir`` (see :func:`build_datalist`).
        train_list, val_list, test_list: split of ``dataset_dir`` by case-list files instead (one case
            id per line); used when ``train_list`` is given.
    """
    if datalist is None:
        if dataset_dir is None:
            raise ValueError("no data: set dataset_dir (a BraTS folder) or datalist (a datalist JSON)")
        if train_list is not None:
            data = build_datalist(dataset_dir, train_list=train_list, val_list=val_list, test_list=test_list)
        else:
            data = build_datalist(
                dataset_dir, val_fraction=val_fraction, test_fraction=test_fraction, seed=seed
            )
    else:
        path = Path(datalist)
        if not path.is_file():
            raise FileNotFoundError(f"datalist not found: {path}")
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: not valid JSON ({e})") from e
        if not isinstance(data, dict) or not data.get("training"):
            raise ValueError(f"{path}: no 'training' section (expected a decathlon-style datalist)")
        base = Path(dataset_dir) if dataset_dir is not None else path.parent

        def _abs(p):
            if isinstance(p, list | tuple):
                return [_abs(x) for x in p]
            return str(p if Path(p).is_absolute() else base / p)

        for section in ("training", "validation", "testing"):
            for item in data.get(section) or []:
                for key in ("image", "label"):
                    if key in item:
                        item[key] = _abs(item[key])
    for section in ("validation", "testing"):
        if not data.get(section):
            logger.warning("datalist has no %r cases: using the training cases for it", section)
            data[section] = list(data["training"])
    return data
