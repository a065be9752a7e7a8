"""Readers for multimodal sentiment data (CMU-MOSI / CMU-MOSEI and friends), with validation.

Every reader returns ``{split: SentimentSplit}`` with the splits ``train`` / ``valid`` / ``test`` (as
present) and per-modality feature arrays of shape (N, T_m, d_m). Feature sizes (and lengths) are read
from the data, never assumed per dataset.

Supported sources:

============  ===================================================================================
``mult``      MulT's word-aligned pickles (``mosi_data.pkl``, ``mosei_senti_data.pkl``): a dict with
              ``train`` / ``valid`` / ``test``, each a dict with ``text``, ``audio``, ``vision``
              (N, T, d) and ``labels`` (N, 1, 1); extra keys (``id``) are allowed.
``mmsa``      MMSA's pickles (``aligned_50.pkl``, ``unaligned_50.pkl``): per split ``text``
              (N, T, 768 BERT features) or GloVe features, ``audio``, ``vision``, optional
              ``audio_lengths`` / ``vision_lengths`` (unaligned data: valid steps first, zero padding
              at the end), ``regression_labels`` (N,), ``id``. ``text_bert`` (N, 3, T) holds BERT token
              ids, mask and segment ids, not features: this model needs the ``text`` features (a clear
              error says so when only ``text_bert`` is present); its mask row gives the text lengths.
``csd``       CMU-MultimodalSDK computational sequences (HDF5 ``.csd``):
              ``<root>/data/<video_id>/{features (n, d), intervals (n, 2)}`` plus ``<root>/metadata``.
              A label sequence (e.g. ``CMU_MOSI_Opinion_Labels.csd``) defines the segments; one feature
              sequence per modality is aligned to them (see :func:`align_to_segments`); the standard
              folds JSON (``cmu_mosi_std_folds.json``) assigns videos to splits.
``mfn_h5``    The MFN project's aligned HDF5 folders (``text_<split>_emb.h5``, ``audio_<split>.h5``,
              ``video_<split>.h5``, ``y_<split>.h5``, dataset ``d1`` each). One-hot labels over 3
              classes (negative, neutral, positive, as in the CMU YouTube data) are mapped to -1 / 0 / 1.
============  ===================================================================================

Validation (clear errors naming the file, split and modality): missing splits or keys, arrays of the
wrong rank, feature sizes that differ between splits, mismatched sample counts, NaN features (unless
``nan_to_zero=True``) and NaN labels. ``+-inf`` features (COVAREP audio has ``-inf``) are set to 0 and
the count is logged. Pickles execute code when loaded: only read files from a trusted source. Only
``.pkl`` / ``.pickle`` files are ever unpickled; any other file that is not ``.csd`` / ``.h5`` / ``.hdf5``
is refused unread.

Example (with MulT's CMU-MOSI pickle)::

    splits = load_sentiment("mosi_data.pkl")          # format detected from the content
    splits["train"].feature_sizes                      # {'text': 300, 'audio': 5, 'vision': 20}
    ds = SentimentDataset("mosi_data.pkl", split="train")
    sorted(ds[0])                                      # ['audio', 'id', 'label', 'text', 'vision']
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from gmd_monai.data.sentiment_checks import split_dicts
from gmd_monai.data.sentiment_csd import (
    CSDSequence,
    align_to_segments,
    csd_label_segments,
    load_csd_dataset,
    read_csd,
    read_folds,
)
from gmd_monai.data.sentiment_files import HDF5_SUFFIXES, PICKLE_SUFFIXES, is_pickle, read_pickle
from gmd_monai.data.sentiment_mfn import load_mfn_h5
from gmd_monai.data.sentiment_mmsa import load_mmsa_pickle, mmsa_from_data
from gmd_monai.data.sentiment_mult import load_mult_pickle, mult_from_data
from gmd_monai.data.sentiment_splits import SPLITS, SentimentSplit, split_name
from gmd_monai.subsets import SENTIMENT_MODALITIES

__all__ = [
    "FORMATS",
    "SPLITS",
    "CSDSequence",
    "SentimentDataset",
    "SentimentSplit",
    "align_to_segments",
    "csd_label_segments",
    "detect_format",
    "load_csd_dataset",
    "load_mfn_h5",
    "load_mmsa_pickle",
    "load_mult_pickle",
    "load_sentiment",
    "read_csd",
    "read_folds",
]


#: Source formats accepted by :func:`load_sentiment`.
FORMATS: tuple[str, ...] = ("mult", "mmsa", "csd", "mfn_h5")


def detect_format(path: str | os.PathLike) -> str:
    """Guess the format of ``path``: ``mult`` / ``mmsa`` pickle, ``csd`` file or ``mfn_h5`` folder."""
    p = Path(path)
    if p.is_dir():
        if any(p.glob("y_*.h5")):
            return "mfn_h5"
        raise ValueError(f"{p}: cannot tell the format of this folder (no y_<split>.h5 files); pass format=")
    if not p.exists():
        raise FileNotFoundError(f"no such file or folder: {p}")
    if p.suffix.lower() in HDF5_SUFFIXES:
        return "csd"
    if not is_pickle(p):
        raise ValueError(
            f"{p}: unknown file type {p.suffix or '(no extension)'!r}; expected a pickle "
            f"({', '.join(PICKLE_SUFFIXES)}), a .csd file or an MFN HDF5 folder (nothing was read)"
        )
    return _pickle_layout(read_pickle(p), str(p))


def _pickle_layout(data: Any, p: str) -> str:
    splits = split_dicts(data, p, required=())
    if not splits:
        raise ValueError(f"{p}: no train/valid/test split in this pickle (keys: {sorted(map(str, data))})")
    first = next(iter(splits.values()))
    if "regression_labels" in first:
        return "mmsa"
    if "labels" in first:
        return "mult"
    raise ValueError(
        f"{p}: unknown pickle layout (split keys {sorted(map(str, first))}); expected MulT "
        "('labels') or MMSA ('regression_labels')"
    )


_CACHE: dict[tuple, dict[str, SentimentSplit]] = {}
_CACHE_SIZE = 2


def load_sentiment(
    path: str | os.PathLike, format: str = "auto", cache: bool = True, **kwargs: Any
) -> dict[str, SentimentSplit]:
    """Read a sentiment dataset in any supported format (see the module docstring).

    Args:
        path: the MulT / MMSA pickle, the label ``.csd`` (with ``features`` and ``folds`` in kwargs), or
            an MFN HDF5 folder.
        format: ``auto`` or one of :data:`FORMATS`.
        cache: keep the last two datasets in memory (the train and validation datasets of a bundle read
            the same file once).
        kwargs: reader arguments (``nan_to_zero``, ``label_index``, ``features``, ``folds``,
            ``num_steps``...).

    Returns:
        ``{split: SentimentSplit}``.
    """
    if format == "auto":
        fmt = "mult" if is_pickle(Path(path)) else detect_format(path)  # pickles: layout read below
    else:
        fmt = str(format).lower()
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {format!r}; expected 'auto' or one of {list(FORMATS)}")
    p = Path(path).resolve()
    key = (
        str(p),
        p.stat().st_mtime_ns if p.exists() else 0,
        fmt,
        json.dumps(kwargs, sort_keys=True, default=str),
    )
    if cache and key in _CACHE:
        return _CACHE[key]
    if fmt in ("mult", "mmsa"):
        data = read_pickle(path)  # read once, also when the layout is detected from the content
        if format == "auto":
            fmt = _pickle_layout(data, str(path))
        out = (mult_from_data if fmt == "mult" else mmsa_from_data)(data, str(path), **kwargs)
    elif fmt == "mfn_h5":
        out = load_mfn_h5(path, **kwargs)
    else:
        if "features" not in kwargs or "folds" not in kwargs:
            raise ValueError(
                f"{path}: a .csd dataset needs features={{modality: .csd}} and folds=<json> arguments"
            )
        out = load_csd_dataset(path, **kwargs)
    if cache:
        while len(_CACHE) >= _CACHE_SIZE:
            _CACHE.pop(next(iter(_CACHE)))
        _CACHE[key] = out
    return out


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
