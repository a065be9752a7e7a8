"""One ROI-size parser for every command and config: a number or 1 or 3 sizes -> 3 checked sizes.

Example:
    >>> parse_roi_size(128), parse_roi_size("96,96,64"), parse_roi_size("64x64x64"), parse_roi_size([32])
    ((128, 128, 128), (96, 96, 64), (64, 64, 64), (32, 32, 32))
    >>> parse_roi_size(100, multiple_of=16, name="--roi_size")
    Traceback (most recent call last):
    ...
    ValueError: --roi_size 100: need 1 or 3 sizes, each a multiple of 16 (e.g. 128)
"""

from __future__ import annotations

from typing import Any

__all__ = ["parse_roi_size"]


def parse_roi_size(value: Any, multiple_of: int = 1, name: str = "roi_size") -> tuple[int, int, int]:
    """``(x, y, z)`` voxels from a number, a sequence of 1 or 3 numbers, or text (``"128"``,
    ``"128,128,96"``, ``"128x128x96"``, as the command line and bundle overrides give it).

    Args:
        value: the size(s).
        multiple_of: each size must be a positive multiple of this (16 for the DS U-Net's windows).
        name: the option named in the error.

    Raises:
        ValueError: not 1 or 3 whole sizes, or a size that is not a positive multiple of ``multiple_of``.
    """
    sizes: tuple[int, ...] = ()
    try:
        if isinstance(value, str):
            sizes = tuple(int(v) for v in value.replace("x", ",").split(",") if v.strip())
        elif isinstance(value, int | float) and not isinstance(value, bool):
            sizes = (int(value),)
        elif not isinstance(value, bool):
            sizes = tuple(int(v) for v in value)
    except (TypeError, ValueError):
        sizes = ()
    if len(sizes) == 1:
        sizes = sizes * 3
    step = max(1, int(multiple_of))
    if len(sizes) != 3 or any(s < step or s % step for s in sizes):
        each = f"a multiple of {step}" if step > 1 else "a positive integer"
        raise ValueError(f"{name} {value!r}: need 1 or 3 sizes, each {each} (e.g. 128)")
    return sizes  # type: ignore[return-value]
