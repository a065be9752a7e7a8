"""The torch dataset of one split of a sentiment dataset, in any format :func:`load_sentiment` reads."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from gmd_monai.data.sentiment_readers import load_sentiment
from gmd_monai.data.sentiment_splits import SentimentSplit, split_name
from gmd_monai.subsets import SENTIMENT_MODALITIES

__all__ = ["SentimentDataset"]


class SentimentDataset(Dataset):
    """Torch dataset of one split; items are dicts of tensors, ready for MONAI's DataLoader.

    Item: ``{"text": (T_t, d_t), "audio": (T_a, d_a), "vision": (T_v, d_v)`` float32, ``"label": (1,)``
    float32, ``"id": str}`` plus ``"<modality>_lengths"`` (int64 scalar) for modalities with lengths.

    Args:
        path: dataset file/folder (see :func:`load_sentiment`); or None with ``data``.
        split: ``train``, ``valid`` (``val``) or ``test``.
        format: see :func:`load_sentiment`.
        data: an already loaded :class:`SentimentSplit` (instead of ``path``).
        modalities: modalities to keep (default all three).
        reader_kwargs: reader arguments as one dict (handy in bundle configs), merged with ``kwargs``.
        kwargs: reader arguments (see :func:`load_sentiment`).
    """

    def __init__(
        self,
        path: str | os.PathLike | None = None,
        split: str = "train",
        format: str = "auto",
        data: SentimentSplit | None = None,
        modalities: Sequence[str] = SENTIMENT_MODALITIES,
        reader_kwargs: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ):
        if data is None:
            if path is None:
                raise ValueError("SentimentDataset needs a path or data")
            splits = load_sentiment(path, format=format, **{**dict(reader_kwargs or {}), **kwargs})
            name = split_name(split)
            if name not in splits:
                raise ValueError(f"{path}: no split {name!r}; available: {list(splits)}")
            data = splits[name]
        missing = [m for m in modalities if m not in data.features]
        if missing:
            raise ValueError(f"{data.source}: no modality {missing}; available: {list(data.features)}")
        self.data = data
        self.modalities = tuple(modalities)
        self._features = {
            m: torch.from_numpy(np.ascontiguousarray(data.features[m])) for m in self.modalities
        }
        self._lengths = {m: torch.from_numpy(data.lengths[m]) for m in self.modalities if m in data.lengths}
        self._labels = torch.from_numpy(np.ascontiguousarray(data.labels, dtype=np.float32)).reshape(-1, 1)
        self._ids = data.ids if data.ids is not None else [str(i) for i in range(len(data))]

    def __len__(self) -> int:
        return len(self.data)

    @property
    def feature_sizes(self) -> dict[str, int]:
        """``{modality: feature size}`` of the kept modalities, read from the data."""
        return {m: int(self._features[m].shape[-1]) for m in self.modalities}

    @property
    def labels(self) -> np.ndarray:
        return self.data.labels

    def __getitem__(self, index: int) -> dict[str, Any]:
        item: dict[str, Any] = {m: self._features[m][index] for m in self.modalities}
        for m, lengths in self._lengths.items():
            item[f"{m}_lengths"] = lengths[index]
        item["label"] = self._labels[index]
        item["id"] = self._ids[index]
        return item
