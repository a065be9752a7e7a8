"""Spatial transforms that tolerate the string entries our data dicts (and MONAI Label's) carry.

MONAI 1.6.1's ``Spacingd`` calls ``d[k].update(meta)`` on every ``<key>_*`` entry of the data dict after
resampling a NIfTI image: a datalist item's ``label_format`` ("brats2018") or MONAI Label's
``image_path`` (a string) then crashes it with ``'str' object has no attribute 'update'``.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

from monai.transforms import Spacingd as _Spacingd

__all__ = ["Spacingd"]


class Spacingd(_Spacingd):
    """``monai.transforms.Spacingd`` that leaves non-dict ``<key>_*`` entries alone (same arguments)."""

    def __call__(self, data: Mapping[Hashable, Any], lazy: bool | None = None) -> dict[Hashable, Any]:
        d = dict(data)
        prefixes = tuple(f"{k}_" for k in self.keys)
        aside = {
            k: d.pop(k)
            for k in list(d)
            if isinstance(k, str) and k.startswith(prefixes) and not isinstance(d[k], dict)
        }
        out = super().__call__(d, lazy=lazy)
        out.update(aside)
        return out
