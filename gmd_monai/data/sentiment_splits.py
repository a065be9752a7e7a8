"""The splits of a sentiment dataset: their names, and :class:`SentimentSplit`, what every reader returns.

Every reader returns ``{split: SentimentSplit}`` with the splits ``train`` / ``valid`` / ``test`` (as
present) and per-modality feature arrays of shape (N, T_m, d_m). Feature sizes (and lengths) are read
from the data, never assumed per dataset.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["SPLITS", "SPLIT_ALIASES", "SentimentSplit", "split_name"]

#: Split names used throughout (MulT / MMSA naming).
SPLITS: tuple[str, ...] = ("train", "valid", "test")
#: Names accepted for the splits (folds JSON keys, bundle configs), lower case.
SPLIT_ALIASES = {
    "train": "train",
    "valid": "valid",
    "val": "valid",
    "validation": "valid",
    "dev": "valid",
    "test": "test",
}


def split_name(split: str) -> str:
    key = str(split).strip().lower()
    if key not in SPLIT_ALIASES:
        raise ValueError(f"unknown split {split!r}; expected one of {list(SPLITS)} (or val/validation/dev)")
    return SPLIT_ALIASES[key]


@dataclass
class SentimentSplit:
    """One split of a sentiment dataset.

    Attributes:
        features: ``{modality: (N, T_m, d_m) float32}``.
        labels: (N,) float32 sentiment scores (CMU-MOSI/MOSEI: in [-3, 3]).
        lengths: ``{modality: (N,) int64}`` valid steps (padding at the END) for the modalities that
            have them (unaligned MMSA data); modalities without lengths use all T steps.
        ids: one identifier per sample.
        source: where it came from (for messages).
    """

    features: dict[str, np.ndarray]
    labels: np.ndarray
    lengths: dict[str, np.ndarray] = field(default_factory=dict)
    ids: list[str] | None = None
    source: str = ""

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def feature_sizes(self) -> dict[str, int]:
        """``{modality: d_m}`` read from the arrays."""
        return {m: int(x.shape[-1]) for m, x in self.features.items()}

    @property
    def num_steps(self) -> dict[str, int]:
        """``{modality: T_m}`` read from the arrays."""
        return {m: int(x.shape[1]) for m, x in self.features.items()}
