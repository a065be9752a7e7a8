"""MMSA's pickles (``aligned_50.pkl``, ``unaligned_50.pkl`` of MOSI, MOSEI, SIMS).

Per split ``text`` (N, T, 768 BERT features) or GloVe features, ``audio``, ``vision``, optional
``audio_lengths`` / ``vision_lengths`` (unaligned data: valid steps first, zero padding at the end),
``regression_labels`` (N,), ``id``. ``text_bert`` (N, 3, T) holds BERT token ids, mask and segment ids,
not features: this model needs the ``text`` features (a clear error says so when only ``text_bert`` is
present); its mask row gives the text lengths.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from gmd_monai.data.sentiment_checks import (
    check_consistent,
    clean_features,
    clean_labels,
    clean_lengths,
    common_count,
    sample_ids,
    split_dicts,
)
from gmd_monai.data.sentiment_files import read_pickle
from gmd_monai.data.sentiment_splits import SentimentSplit

__all__ = ["load_mmsa_pickle", "mmsa_from_data"]


def _looks_like_token_ids(x: np.ndarray) -> bool:
    return x.ndim == 3 and x.shape[1] == 3 and bool(np.all(x == np.round(x)))


def load_mmsa_pickle(
    path: str | os.PathLike,
    label_key: str = "regression_labels",
    text_key: str = "text",
    nan_to_zero: bool = False,
) -> dict[str, SentimentSplit]:
    """Read an MMSA pickle (``aligned_50.pkl`` / ``unaligned_50.pkl`` of MOSI, MOSEI, SIMS).

    MMSA's layout (as read by MMSA's ``data_loader.MMDataset``): per split ``text`` (N, T, d) text
    features (BERT 768 in the ``*_50.pkl`` files), ``text_bert`` (N, 3, T) BERT token ids / attention
    mask / segment ids, ``audio`` (N, T_a, d_a), ``vision`` (N, T_v, d_v), ``audio_lengths`` and
    ``vision_lengths`` (N,) (unaligned files; valid steps first), ``regression_labels`` (N,),
    ``classification_labels``, ``id``, ``raw_text``.

    Args:
        path: the pickle.
        label_key: which labels to use (``regression_labels``; SIMS also has ``regression_labels_T`` ...).
        text_key: key of the text FEATURES (``text``). Token ids (``text_bert``) are refused with an error.
        nan_to_zero: set NaN features to 0 (with a warning) instead of raising.

    Returns:
        ``{"train", "valid", "test": SentimentSplit}`` with ``lengths`` for audio/vision when present
        and for text when ``text_bert`` provides an attention mask.
    """
    return mmsa_from_data(read_pickle(path), str(path), label_key, text_key, nan_to_zero)


def mmsa_from_data(
    data: Any,
    path: str,
    label_key: str = "regression_labels",
    text_key: str = "text",
    nan_to_zero: bool = False,
) -> dict[str, SentimentSplit]:
    splits = split_dicts(data, path)
    out: dict[str, SentimentSplit] = {}
    for name, d in splits.items():
        if text_key not in d:
            hint = (
                " It has 'text_bert', which holds BERT token ids (input ids, attention mask, segment ids), "
                "not features: compute BERT features first (MMSA's *_50.pkl files ship them as 'text', "
                "N x 50 x 768)."
                if "text_bert" in d
                else ""
            )
            raise ValueError(
                f"{path}: split {name} has no text features {text_key!r}; keys: {sorted(map(str, d))}." + hint
            )
        missing = [k for k in ("audio", "vision", label_key) if k not in d]
        if missing:
            raise ValueError(
                f"{path}: split {name} is missing key(s) {missing}; it has {sorted(map(str, d))}"
            )
        raw_text = np.asarray(d[text_key])
        if _looks_like_token_ids(raw_text) and text_key == "text_bert":
            raise ValueError(
                f"{path}: {name}/{text_key} of shape {raw_text.shape} holds BERT token ids, not features"
            )
        feats = {
            "text": clean_features(raw_text, f"{path}: {name}/{text_key}", nan_to_zero),
            "audio": clean_features(d["audio"], f"{path}: {name}/audio", nan_to_zero),
            "vision": clean_features(d["vision"], f"{path}: {name}/vision", nan_to_zero),
        }
        n = common_count(feats, f"{path}: split {name}")
        labels = clean_labels(d[label_key], n, f"{path}: {name}/{label_key}")
        lengths: dict[str, np.ndarray] = {}
        for m in ("audio", "vision"):
            if f"{m}_lengths" in d:
                lengths[m] = clean_lengths(
                    d[f"{m}_lengths"], n, feats[m].shape[1], f"{path}: {name}/{m}_lengths"
                )
        if "text_bert" in d:
            tb = np.asarray(d["text_bert"])
            if (
                tb.ndim == 3
                and tb.shape[0] == n
                and tb.shape[1] == 3
                and tb.shape[2] == feats["text"].shape[1]
            ):
                lengths["text"] = clean_lengths(
                    tb[:, 1].sum(axis=1), n, feats["text"].shape[1], f"{path}: {name}/text_bert mask"
                )
        out[name] = SentimentSplit(feats, labels, lengths, sample_ids(d.get("id"), n, name), f"{path}:{name}")
    check_consistent(out, path)
    return out
