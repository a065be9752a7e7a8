"""One check for named options: the value, normalised, or an error that names the closest valid choice.

Plain Python (the GMD core uses it and imports no MONAI); in the spirit of MONAI's ``look_up_option``.

Example:
    >>> look_up_option("Fast-GMD", ["gmd", "fast_gmd", "mean"], "aggregation method")
    'fast_gmd'
    >>> look_up_option("pcgard", ["pcgrad", "mean"], "aggregation method")
    Traceback (most recent call last):
    ...
    ValueError: unknown aggregation method 'pcgard'; did you mean 'pcgrad'? Expected one of: pcgrad, mean
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = ["look_up_option", "normalise_option"]


def normalise_option(value: object) -> str:
    """``" Fast-GMD "`` -> ``"fast_gmd"``: lower case, ``-`` and spaces as ``_``."""
    return str(value).strip().lower().replace("-", "_").replace(" ", "_")


def look_up_option(value: object, choices: Iterable[str], what: str = "option") -> str:
    """``value`` normalised (:func:`normalise_option`) if it is one of ``choices``.

    Raises:
        ValueError: naming ``what``, the value, the closest choice (if any is close) and every choice.
    """
    choices = list(choices)
    key = normalise_option(value)
    if key in choices:
        return key
    close = difflib.get_close_matches(key, choices, n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]!r}?" if close else "."
    raise ValueError(f"unknown {what} {value!r}{hint} Expected one of: {', '.join(choices)}")
