"""Validation shared by the sentiment readers, with clear errors naming the file, split and modality.

Missing splits or keys, arrays of the wrong rank, feature sizes that differ between splits, mismatched
sample counts, NaN features (unless ``nan_to_zero=True``) and NaN labels are errors. ``+-inf`` features
(COVAREP audio has ``-inf``) are set to 0 and the count is logged.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from gmd_monai.data.sentiment_splits import SPLIT_ALIASES, SPLITS, SentimentSplit

__all__ = [
    "check_consistent",
    "clean_features",
    "clean_labels",
    "clean_lengths",
    "common_count",
    "sample_ids",
    "split_dicts",
]

logger = logging.getLogger("gmd_monai.data.sentiment")  # the name users and tests filter on


def clean_features(x: Any, where: str, nan_to_zero: bool) -> np.ndarray:
    try:
        arr = np.asarray(x, dtype=np.float32)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{where}: cannot convert to a float array ({e})") from e
    if arr.ndim == 2:  # (N, T) or (N, d)? Guessing would silently read a sequence as one step
        raise ValueError(
            f"{where}: rank-2 features of shape {arr.shape}; expected (N, T, d). Add the missing axis "
            "yourself: x[:, None, :] for one step of d values, x[:, :, None] for T steps of one value"
        )
    if arr.ndim != 3:
        raise ValueError(f"{where}: expected features of shape (N, T, d), got {arr.shape}")
    if arr.shape[1] < 1 or arr.shape[2] < 1:
        raise ValueError(f"{where}: empty feature dimension in shape {arr.shape}")
    nan = np.isnan(arr)
    if nan.any():
        if not nan_to_zero:
            rows = np.unique(np.nonzero(nan)[0])
            raise ValueError(
                f"{where}: {int(nan.sum())} NaN value(s) in {len(rows)} sample(s) "
                f"(first: {rows[:5].tolist()}); fix the data or pass nan_to_zero=True to set them to 0"
            )
        arr = arr.copy() if not arr.flags.writeable else arr
        arr[nan] = 0.0
        logger.warning("%s: set %d NaN value(s) to 0", where, int(nan.sum()))
    inf = np.isinf(arr)
    if inf.any():
        arr = arr.copy() if not arr.flags.writeable else arr
        n_neg = int((arr[inf] < 0).sum())
        arr[inf] = 0.0
        logger.warning("%s: set %d -inf and %d +inf value(s) to 0", where, n_neg, int(inf.sum()) - n_neg)
    return arr


def clean_labels(y: Any, n: int | None, where: str, label_index: int | None = None) -> np.ndarray:
    try:
        arr = np.asarray(y, dtype=np.float32)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{where}: cannot convert labels to a float array ({e})") from e
    if arr.ndim == 0:
        raise ValueError(f"{where}: labels must have one value per sample, got a scalar")
    flat = arr.reshape(arr.shape[0], -1)
    if flat.shape[1] != 1:
        if label_index is None:
            raise ValueError(
                f"{where}: labels of shape {arr.shape} hold {flat.shape[1]} values per sample; expected one "
                "sentiment score (pass label_index to pick a column)"
            )
        if not 0 <= label_index < flat.shape[1]:
            raise ValueError(
                f"{where}: label_index {label_index} out of range for labels of shape {arr.shape}"
            )
        flat = flat[:, label_index : label_index + 1]
    out = flat[:, 0].astype(np.float32)
    if n is not None and out.shape[0] != n:
        raise ValueError(f"{where}: {out.shape[0]} labels for {n} samples (mismatched lengths)")
    if not np.isfinite(out).all():
        bad = np.nonzero(~np.isfinite(out))[0]
        raise ValueError(f"{where}: {len(bad)} non-finite label(s) at sample(s) {bad[:5].tolist()}")
    if out.size and (out.min() < -3.0 - 1e-4 or out.max() > 3.0 + 1e-4):
        logger.warning("%s: labels span [%.3f, %.3f], outside the usual [-3, 3]", where, out.min(), out.max())
    return out


def clean_lengths(x: Any, n: int, num_steps: int, where: str) -> np.ndarray:
    arr = np.asarray(x)
    if arr.shape != (n,):
        raise ValueError(f"{where}: expected ({n},) lengths, got shape {arr.shape} (mismatched lengths)")
    if not np.all(np.isfinite(arr.astype(np.float64))) or np.any(arr != np.round(arr)):
        raise ValueError(f"{where}: lengths must be whole numbers")
    arr = arr.astype(np.int64)
    if arr.max(initial=0) > num_steps or arr.min(initial=0) < 0:
        raise ValueError(f"{where}: lengths must be in [0, {num_steps}], got [{arr.min()}, {arr.max()}]")
    zero = int((arr == 0).sum())
    if zero:
        logger.warning("%s: %d sample(s) have length 0; using 1 step (all zeros) for them", where, zero)
        arr = np.maximum(arr, 1)
    return arr


def check_consistent(splits: Mapping[str, SentimentSplit], source: str) -> None:
    """Same modalities and feature sizes in every split."""
    ref_name, ref = next(iter(splits.items()))
    for name, sp in splits.items():
        if set(sp.features) != set(ref.features):
            raise ValueError(
                f"{source}: split {name} has modalities {sorted(sp.features)} but {ref_name} has "
                f"{sorted(ref.features)}"
            )
        for m, d in sp.feature_sizes.items():
            if d != ref.feature_sizes[m]:
                raise ValueError(
                    f"{source}: {m} features have size {d} in split {name} but "
                    f"{ref.feature_sizes[m]} in split {ref_name}"
                )


def sample_ids(raw: Any, n: int, prefix: str) -> list[str]:
    if raw is None:
        return [f"{prefix}_{i}" for i in range(n)]
    arr = np.asarray(raw)
    if arr.shape[0] != n:
        logger.warning("%s: %d ids for %d samples; using indices instead", prefix, arr.shape[0], n)
        return [f"{prefix}_{i}" for i in range(n)]

    def one(v) -> str:
        v = np.asarray(v)
        if v.ndim == 0:
            v = v.item()
            return v.decode() if isinstance(v, bytes) else str(v)
        return "/".join(one(e) for e in v.reshape(-1))

    return [one(arr[i]) for i in range(n)]


def common_count(feats: Mapping[str, np.ndarray], where: str) -> int:
    counts = {m: int(x.shape[0]) for m, x in feats.items()}
    if len(set(counts.values())) != 1:
        raise ValueError(
            f"{where}: modalities have different numbers of samples {counts} (mismatched lengths)"
        )
    return next(iter(counts.values()))


def split_dicts(data: Any, path: str, required: Sequence[str] = SPLITS) -> dict[str, Mapping]:
    if not isinstance(data, Mapping):
        raise ValueError(f"{path}: expected a dict of splits {list(required)}, got {type(data).__name__}")
    found = {}
    for key, value in data.items():
        name = SPLIT_ALIASES.get(str(key).strip().lower())
        if name is not None:
            found[name] = value
    missing = [s for s in required if s not in found]
    if missing:
        raise ValueError(f"{path}: missing split(s) {missing}; the file has keys {sorted(map(str, data))}")
    for name, value in found.items():
        if not isinstance(value, Mapping):
            raise ValueError(f"{path}: split {name} must be a dict of arrays, got {type(value).__name__}")
    return {s: found[s] for s in SPLITS if s in found}
