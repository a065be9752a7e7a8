"""BraTS datalists: scanning a folder for its cases, splits (list files, RFNet split folders, seeded
random), and the decathlon-style JSON the bundle reads (see :mod:`gmd_monai.data.naming` for the file
names and :mod:`gmd_monai.data.checks` for the file checks).
"""

from __future__ import annotations

import json
import logging
import os
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from gmd_monai.data.checks import verify_dataset
from gmd_monai.data.labels import REGION_NAMES, region_definitions
from gmd_monai.data.naming import brats_file, brats_file_name, case_naming, naming_patterns
from gmd_monai.subsets import BRATS_MODALITIES

__all__ = ["build_datalist", "load_or_build_datalist", "read_case_list", "scan_brats_folder"]

# The BraTS data modules log under the name they had as one module: users' logging settings (and
# the tests) filter on it.
logger = logging.getLogger("gmd_monai.data.brats")

_MAX_SCAN_DEPTH = 2  # <root>/<case> or <root>/<group>/<case> (e.g. BraTS 2018's HGG/ and LGG/)


def _scan_case(case_dir: Path, fmt: str, modalities: Sequence[str], require_label: bool) -> dict[str, Any]:
    case = case_dir.name
    images, missing = [], []
    for m in modalities:
        p = brats_file(case_dir, case, fmt, m)
        if p is None:
            missing.append(brats_file_name(case, fmt, m))
        else:
            images.append(os.path.abspath(p))
    label = brats_file(case_dir, case, fmt, "seg")
    if label is None and require_label:
        missing.append(brats_file_name(case, fmt, "seg"))
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
    """Find the BraTS cases of a folder, in either naming convention (see :mod:`gmd_monai.data.naming`).

    A case is a sub-folder ``<case>`` holding files named after it; grouping folders one level up
    (like BraTS 2018's ``HGG/`` and ``LGG/``) are searched too. Folders holding no file of their own
    case are skipped. Every case that misses a file is named in one error, one line per case.

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
    incomplete: list[str] = []  # every case that misses a file, reported together

    def visit(folder: Path, depth: int) -> None:
        for sub in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
            fmts = case_naming(sub)
            if len(fmts) > 1:
                raise ValueError(
                    f"case folder {sub} mixes naming conventions {fmts}; "
                    f"use one of {naming_patterns(modalities)}"
                )
            if fmts:
                try:
                    item = _scan_case(sub, fmts[0], modalities, require_label)
                except FileNotFoundError as e:
                    incomplete.append(str(e))
                    continue
                if item["case"] in items:
                    other = Path(items[item["case"]]["image"][0]).parent
                    raise ValueError(f"case id {item['case']!r} found twice: in {other} and in {sub}")
                items[item["case"]] = item
            elif depth < _MAX_SCAN_DEPTH:
                visit(sub, depth + 1)

    visit(root, 1)
    if len(incomplete) == 1:
        raise FileNotFoundError(incomplete[0])
    if incomplete:
        raise FileNotFoundError(f"{len(incomplete)} cases miss files:\n" + "\n".join(incomplete))
    if not items:
        raise FileNotFoundError(
            f"no BraTS case found in {str(root)!r}; looked for sub-folders named like their files: "
            f"{naming_patterns(modalities)}"
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
        validate: check every kept case's files (:func:`~gmd_monai.data.checks.verify_dataset`, headers
            only); every bad case is named in one error, one line per case.

    Returns:
        ``{"name", "description", "modalities", "labels", "label_format", "split", "training",
        "validation", "testing"}``; items are ``{"case", "image": [4 paths], "label", "label_format"}``.

    Raises:
        FileNotFoundError: a missing folder or list file, or cases that miss files (all of them named).
        ~gmd_monai.data.checks.DatasetIntegrityError: cases whose files fail the header checks (all of
            them named, one line each).
        ValueError: a bad option, or a case in two lists.
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
    if validate:  # every bad case at once, one line each
        verify_dataset([it for name in out_lists for it in out_lists[name]])
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
        "labels": region_definitions(),
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
            raise ValueError(
                "no data: set --dataset_dir (a BraTS folder) or --datalist (a datalist JSON), or add "
                "configs/synthetic.yaml to the config files for the built-in synthetic dataset"
            )
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
