"""MulT's word-aligned pickles (``mosi_data.pkl``, ``mosei_senti_data.pkl``, the synthetic set).

A dict with ``train`` / ``valid`` / ``test``, each a dict with ``text``, ``audio``, ``vision`` (N, T, d)
and ``labels`` (N, 1, 1); extra keys (``id``) are allowed.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from gmd_monai.data.sentiment_checks import (
    check_consistent,
    clean_features,
    clean_labels,
    common_count,
    sample_ids,
    split_dicts,
)
from gmd_monai.data.sentiment_files import read_pickle
from gmd_monai.data.sentiment_splits import SentimentSplit
from gmd_monai.subsets import SENTIMENT_MODALITIES

__all__ = ["load_mult_pickle", "mult_from_data"]


def load_mult_pickle(
    path: str | os.PathLike,
    modalities: Sequence[str] = SENTIMENT_MODALITIES,
    nan_to_zero: bool = False,
    label_index: int | None = None,
) -> dict[str, SentimentSplit]:
    """Read a MulT word-aligned pickle (``mosi_data.pkl``, ``mosei_senti_data.pkl``, the synthetic set).

    Args:
        path: the pickle.
        modalities: feature keys to read (default ``text``, ``audio``, ``vision``).
        nan_to_zero: set NaN features to 0 (with a warning) instead of raising.
        label_index: column of multi-valued labels to use (MulT's sentiment pickles have one value).

    Returns:
        ``{"train", "valid", "test": SentimentSplit}``.
    """
    return mult_from_data(read_pickle(path), str(path), modalities, nan_to_zero, label_index)


def mult_from_data(
    data: Any,
    path: str,
    modalities: Sequence[str] = SENTIMENT_MODALITIES,
    nan_to_zero: bool = False,
    label_index: int | None = None,
) -> dict[str, SentimentSplit]:
    splits = split_dicts(data, path)
    out: dict[str, SentimentSplit] = {}
    for name, d in splits.items():
        required = [*modalities, "labels"]
        missing = [k for k in required if k not in d]
        if missing:
            raise ValueError(
                f"{path}: split {name} is missing key(s) {missing}; it has {sorted(map(str, d))} "
                f"(a MulT pickle needs {required})"
            )
        feats = {m: clean_features(d[m], f"{path}: {name}/{m}", nan_to_zero) for m in modalities}
        n = common_count(feats, f"{path}: split {name}")
        labels = clean_labels(d["labels"], n, f"{path}: {name}/labels", label_index)
        out[name] = SentimentSplit(feats, labels, {}, sample_ids(d.get("id"), n, name), f"{path}:{name}")
    check_consistent(out, path)
    return out
