"""The cases bundle inference segments: a datalist JSON, a folder of case folders, or a list of items."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from gmd_monai.data.naming import case_of, is_modality_name
from gmd_monai.inference.errors import InputError
from gmd_monai.inference.sources import find_case_files, find_case_folders

__all__ = ["read_inference_datalist"]

# The inference modules log under the name they had as one module (users' logging settings filter on it).
logger = logging.getLogger("gmd_monai.inference.io")

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
        if k == "image" or is_modality_name(k) or k == "label":
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
                img = {k: v for k, v in it.items() if is_modality_name(k)}
            first = img if isinstance(img, str) else None
            if isinstance(img, Mapping) and img:
                first = next(iter(img.values()))
            elif isinstance(img, Sequence) and not isinstance(img, str) and img:
                first = img[0]
            it["case"] = case_of(Path(first)) if first else f"case{i}"
        items.append(it)
    return items
