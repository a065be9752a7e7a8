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
import logging
import os
import pickle
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

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

logger = logging.getLogger(__name__)

#: Split names used throughout (MulT / MMSA naming).
SPLITS: tuple[str, ...] = ("train", "valid", "test")
#: Source formats accepted by :func:`load_sentiment`.
FORMATS: tuple[str, ...] = ("mult", "mmsa", "csd", "mfn_h5")
_SPLIT_ALIASES = {
    "train": "train",
    "valid": "valid",
    "val": "valid",
    "validation": "valid",
    "dev": "valid",
    "test": "test",
}


def _split_name(split: str) -> str:
    key = str(split).strip().lower()
    if key not in _SPLIT_ALIASES:
        raise ValueError(f"unknown split {split!r}; expected one of {list(SPLITS)} (or val/validation/dev)")
    return _SPLIT_ALIASES[key]


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


# ------------------------------------------------------------------------------------------------
# validation shared by all readers
# ------------------------------------------------------------------------------------------------
def _clean_features(x: Any, where: str, nan_to_zero: bool) -> np.ndarray:
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


def _clean_labels(y: Any, n: int | None, where: str, label_index: int | None = None) -> np.ndarray:
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


def _clean_lengths(x: Any, n: int, num_steps: int, where: str) -> np.ndarray:
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


def _check_consistent(splits: Mapping[str, SentimentSplit], source: str) -> None:
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


def _ids(raw: Any, n: int, prefix: str) -> list[str]:
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


#: The only file endings that are unpickled: unpickling runs code, so nothing else is ever opened as one.
PICKLE_SUFFIXES = (".pkl", ".pickle")
#: File endings read as HDF5 (CMU-MultimodalSDK ``.csd``, MFN ``.h5``).
HDF5_SUFFIXES = (".csd", ".h5", ".hdf5")


def _read_pickle(path: str | os.PathLike) -> Any:
    """Unpickle ``path`` (``.pkl`` / ``.pickle`` only, checked before opening; unpickling runs code)."""
    path = Path(path)
    if path.suffix.lower() not in PICKLE_SUFFIXES:
        raise ValueError(
            f"{path}: not unpickled: only {' / '.join(PICKLE_SUFFIXES)} files are read as pickles "
            "(unpickling runs code); rename a trusted pickle to .pkl"
        )
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    with open(path, "rb") as f:
        try:
            try:
                return pickle.load(f)
            except UnicodeDecodeError:  # pickles written by Python 2
                f.seek(0)
                return pickle.load(f, encoding="latin1")
        except (EOFError, pickle.UnpicklingError, ValueError, TypeError) as e:
            raise ValueError(f"{path}: truncated or corrupt pickle ({type(e).__name__}: {e})") from e


def _split_dicts(data: Any, path: str, required: Sequence[str] = SPLITS) -> dict[str, Mapping]:
    if not isinstance(data, Mapping):
        raise ValueError(f"{path}: expected a dict of splits {list(required)}, got {type(data).__name__}")
    found = {}
    for key, value in data.items():
        name = _SPLIT_ALIASES.get(str(key).strip().lower())
        if name is not None:
            found[name] = value
    missing = [s for s in required if s not in found]
    if missing:
        raise ValueError(f"{path}: missing split(s) {missing}; the file has keys {sorted(map(str, data))}")
    for name, value in found.items():
        if not isinstance(value, Mapping):
            raise ValueError(f"{path}: split {name} must be a dict of arrays, got {type(value).__name__}")
    return {s: found[s] for s in SPLITS if s in found}


# ------------------------------------------------------------------------------------------------
# MulT pickles
# ------------------------------------------------------------------------------------------------
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
    return _mult_from_data(_read_pickle(path), str(path), modalities, nan_to_zero, label_index)


def _mult_from_data(
    data: Any,
    path: str,
    modalities: Sequence[str] = SENTIMENT_MODALITIES,
    nan_to_zero: bool = False,
    label_index: int | None = None,
) -> dict[str, SentimentSplit]:
    splits = _split_dicts(data, path)
    out: dict[str, SentimentSplit] = {}
    for name, d in splits.items():
        required = [*modalities, "labels"]
        missing = [k for k in required if k not in d]
        if missing:
            raise ValueError(
                f"{path}: split {name} is missing key(s) {missing}; it has {sorted(map(str, d))} "
                f"(a MulT pickle needs {required})"
            )
        feats = {m: _clean_features(d[m], f"{path}: {name}/{m}", nan_to_zero) for m in modalities}
        n = _common_n(feats, f"{path}: split {name}")
        labels = _clean_labels(d["labels"], n, f"{path}: {name}/labels", label_index)
        out[name] = SentimentSplit(feats, labels, {}, _ids(d.get("id"), n, name), f"{path}:{name}")
    _check_consistent(out, path)
    return out


def _common_n(feats: Mapping[str, np.ndarray], where: str) -> int:
    counts = {m: int(x.shape[0]) for m, x in feats.items()}
    if len(set(counts.values())) != 1:
        raise ValueError(
            f"{where}: modalities have different numbers of samples {counts} (mismatched lengths)"
        )
    return next(iter(counts.values()))


# ------------------------------------------------------------------------------------------------
# MMSA pickles
# ------------------------------------------------------------------------------------------------
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
    return _mmsa_from_data(_read_pickle(path), str(path), label_key, text_key, nan_to_zero)


def _mmsa_from_data(
    data: Any,
    path: str,
    label_key: str = "regression_labels",
    text_key: str = "text",
    nan_to_zero: bool = False,
) -> dict[str, SentimentSplit]:
    splits = _split_dicts(data, path)
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
            "text": _clean_features(raw_text, f"{path}: {name}/{text_key}", nan_to_zero),
            "audio": _clean_features(d["audio"], f"{path}: {name}/audio", nan_to_zero),
            "vision": _clean_features(d["vision"], f"{path}: {name}/vision", nan_to_zero),
        }
        n = _common_n(feats, f"{path}: split {name}")
        labels = _clean_labels(d[label_key], n, f"{path}: {name}/{label_key}")
        lengths: dict[str, np.ndarray] = {}
        for m in ("audio", "vision"):
            if f"{m}_lengths" in d:
                lengths[m] = _clean_lengths(
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
                lengths["text"] = _clean_lengths(
                    tb[:, 1].sum(axis=1), n, feats["text"].shape[1], f"{path}: {name}/text_bert mask"
                )
        out[name] = SentimentSplit(feats, labels, lengths, _ids(d.get("id"), n, name), f"{path}:{name}")
    _check_consistent(out, path)
    return out


# ------------------------------------------------------------------------------------------------
# CMU-MultimodalSDK computational sequences
# ------------------------------------------------------------------------------------------------
@dataclass
class CSDSequence:
    """A CMU-MultimodalSDK computational sequence read from a ``.csd`` file.

    Attributes:
        root: the root group name (e.g. ``Opinion Segment Labels``).
        data: ``{video_id: (features (n, d) float32, intervals (n, 2) float64)}``.
        metadata: the ``metadata`` group as ``{name: str}``.
        path: the file.
    """

    root: str
    data: dict[str, tuple[np.ndarray, np.ndarray]]
    metadata: dict[str, str]
    path: str

    @property
    def feature_size(self) -> int:
        return int(next(iter(self.data.values()))[0].shape[1]) if self.data else 0

    @property
    def num_segments(self) -> int:
        return sum(int(f.shape[0]) for f, _ in self.data.values())


def read_csd(
    path: str | os.PathLike, video_ids: Sequence[str] | None = None, root: str | None = None
) -> CSDSequence:
    """Read (and validate) a computational sequence.

    Args:
        path: the ``.csd`` file (HDF5).
        video_ids: read only these videos (absent ones are skipped); all when None.
        root: the root group; when None the file must have exactly one top-level group.

    Returns:
        :class:`CSDSequence`.
    """
    import h5py

    path = str(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no such file: {path}")
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise ValueError(f"{path}: not a readable HDF5 computational sequence ({e})") from e
    with f:
        groups = [k for k in f.keys() if isinstance(f[k], h5py.Group)]
        if root is None:
            if len(groups) != 1:
                raise ValueError(
                    f"{path}: expected one root group in a computational sequence, found {groups}; "
                    "pass root=..."
                )
            root = groups[0]
        if root not in f:
            raise ValueError(f"{path}: no root group {root!r}; found {groups}")
        g = f[root]
        if "data" not in g:
            raise ValueError(f"{path}: group {root!r} has no 'data' group (keys: {sorted(g.keys())})")
        meta: dict[str, str] = {}
        if "metadata" in g:
            for k, v in g["metadata"].items():
                try:
                    val = v[()]
                    val = val[0] if getattr(val, "shape", ()) and len(val) == 1 else val
                    meta[k] = val.decode() if isinstance(val, bytes) else str(val)
                except Exception:  # noqa: BLE001 - metadata is informative only
                    meta[k] = "?"
        else:
            logger.warning("%s: no 'metadata' group", path)
        data: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        keys = list(g["data"].keys()) if video_ids is None else [v for v in video_ids if v in g["data"]]
        dim = None
        for vid in keys:
            vg = g["data"][vid]
            if not isinstance(vg, h5py.Group) or "features" not in vg or "intervals" not in vg:
                raise ValueError(f"{path}: video {vid!r} needs 'features' and 'intervals' datasets")
            feats = np.asarray(vg["features"][()])
            ints = np.asarray(vg["intervals"][()], dtype=np.float64)
            if feats.ndim == 1:
                feats = feats[:, None]
            if feats.ndim != 2:
                raise ValueError(f"{path}: video {vid!r}: features must be (n, d), got shape {feats.shape}")
            if ints.ndim != 2 or ints.shape[1] != 2:
                raise ValueError(f"{path}: video {vid!r}: intervals must be (n, 2), got shape {ints.shape}")
            if ints.shape[0] != feats.shape[0]:
                raise ValueError(
                    f"{path}: video {vid!r}: {feats.shape[0]} feature rows but {ints.shape[0]} "
                    "intervals (mismatched lengths)"
                )
            if not np.isfinite(ints).all() or np.any(ints[:, 1] < ints[:, 0]):
                raise ValueError(f"{path}: video {vid!r}: intervals must be finite with end >= start")
            if dim is None:
                dim = feats.shape[1]
            elif feats.shape[1] != dim:
                raise ValueError(f"{path}: video {vid!r} has {feats.shape[1]} features per row, others {dim}")
            if feats.dtype.kind not in "fiub":
                raise ValueError(f"{path}: video {vid!r}: non-numeric features of dtype {feats.dtype}")
            data[vid] = (feats.astype(np.float32), ints)
    if not data:
        raise ValueError(
            f"{path}: no video found" + ("" if video_ids is None else " among the requested ids")
        )
    return CSDSequence(root, data, meta, path)


def read_folds(path: str | os.PathLike) -> dict[str, list[str]]:
    """Read a standard-folds JSON (``{"standard_train_fold": [...], "standard_valid_fold": ..., ...}``).

    Keys are matched by the words ``train``, ``valid``/``val``/``dev`` and ``test``.

    Returns:
        ``{"train", "valid", "test": [video ids]}``.
    """
    path = str(path)
    with open(path) as f:
        raw = json.load(f)
    if not isinstance(raw, Mapping):
        raise ValueError(f"{path}: expected a JSON object of folds, got {type(raw).__name__}")
    out: dict[str, list[str]] = {}
    for key, ids in raw.items():
        low = str(key).lower()
        name = (
            "train"
            if "train" in low
            else "test"
            if "test" in low
            else "valid"
            if any(w in low for w in ("valid", "val", "dev"))
            else None
        )
        if name is None:
            continue
        if name in out:
            raise ValueError(f"{path}: more than one {name} fold ({key!r})")
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise ValueError(f"{path}: fold {key!r} must be a list of video id strings")
        out[name] = list(ids)
    missing = [s for s in SPLITS if s not in out]
    if missing:
        raise ValueError(f"{path}: no {missing} fold(s) among keys {sorted(raw)}")
    seen: dict[str, str] = {}
    for name, ids in out.items():
        for v in ids:
            if v in seen and seen[v] != name:
                raise ValueError(f"{path}: video {v!r} is in both the {seen[v]} and {name} folds")
            seen[v] = name
    return {s: out[s] for s in SPLITS}


def csd_label_segments(
    labels: str | os.PathLike | CSDSequence,
    folds: str | os.PathLike | Mapping[str, Sequence[str]] | None = None,
    label_index: int = 0,
) -> dict[str, list[tuple[str, int, np.ndarray, float]]]:
    """Label segments of a label computational sequence, grouped by fold.

    Args:
        labels: the label ``.csd`` (or a read :class:`CSDSequence`), e.g. ``CMU_MOSI_Opinion_Labels.csd``.
        folds: a folds JSON path or ``{split: [video ids]}``; None puts every segment in split ``all``.
        label_index: which label column (CMU-MOSEI's ``All Labels`` has sentiment in column 0).

    Returns:
        ``{split: [(video_id, segment_index, interval (2,), label)]}`` in fold order, then time order.
    """
    seq = labels if isinstance(labels, CSDSequence) else read_csd(labels)
    if folds is None:
        fold_ids = {"all": sorted(seq.data)}
    else:
        fold_ids = (
            read_folds(folds)
            if isinstance(folds, (str, os.PathLike))
            else {_split_name(k): list(v) for k, v in folds.items()}
        )
    out: dict[str, list[tuple[str, int, np.ndarray, float]]] = {}
    assigned: set[str] = set()
    for split, ids in fold_ids.items():
        absent = [v for v in ids if v not in seq.data]
        if absent:
            logger.warning(
                "%s: %d %s video(s) of the folds are not in the file (e.g. %s)",
                seq.path,
                len(absent),
                split,
                absent[:3],
            )
        rows = []
        for vid in ids:
            if vid not in seq.data:
                continue
            assigned.add(vid)
            feats, ints = seq.data[vid]
            if not 0 <= label_index < feats.shape[1]:
                raise ValueError(
                    f"{seq.path}: label_index {label_index} out of range ({feats.shape[1]} columns)"
                )
            lab = feats[:, label_index].astype(np.float64)
            if not np.isfinite(lab).all():
                raise ValueError(f"{seq.path}: video {vid!r} has non-finite labels")
            for k in np.argsort(ints[:, 0], kind="stable"):
                rows.append((vid, int(k), ints[k].copy(), float(lab[k])))
        out[split] = rows
    unused = len(set(seq.data) - assigned)
    if unused:
        logger.info("%s: %d video(s) are in no fold", seq.path, unused)
    return out


def align_to_segments(
    features: np.ndarray, intervals: np.ndarray, segments: np.ndarray, num_steps: int | None = 50
) -> tuple[np.ndarray, np.ndarray]:
    """Average a feature sequence over each label segment (or over ``num_steps`` equal parts of it).

    Each output step is the OVERLAP-WEIGHTED mean of the feature rows whose intervals overlap that
    step's time window: a word spanning 0.2 s of a 0.4 s window weighs half as much as one covering
    it. Zero-length feature intervals (point events) count with weight 1 inside their window. Windows
    that no feature row overlaps are zeros.

    Args:
        features: (n, d) finite feature rows of one video (clean ``-inf``/NaN first).
        intervals: (n, 2) their [start, end] times.
        segments: (S, 2) label segments [start, end] of the same video.
        num_steps: split each segment into this many equal windows (a fixed-length sequence, like the
            50 word-aligned steps of MulT); None gives one step, the mean over the whole segment.

    Returns:
        ``(aligned (S, K, d) float32, empty (S, K) bool)`` with K = ``num_steps`` or 1; ``empty`` marks
        windows without any overlapping row.
    """
    feats = np.asarray(features, dtype=np.float64)
    if not np.isfinite(feats).all():
        raise ValueError("align_to_segments needs finite features (set -inf/NaN to 0 first)")
    ints = np.asarray(intervals, dtype=np.float64)
    segs = np.asarray(segments, dtype=np.float64).reshape(-1, 2)
    k = 1 if num_steps is None else int(num_steps)
    if k < 1:
        raise ValueError(f"num_steps must be >= 1 or None, got {num_steps}")
    out = np.zeros((segs.shape[0], k, feats.shape[1]), dtype=np.float64)
    empty = np.ones((segs.shape[0], k), dtype=bool)
    a, b = ints[:, 0], ints[:, 1]
    point = b <= a
    for s, (start, end) in enumerate(segs):
        rows = np.nonzero(((a < end) & (b > start)) | (point & (a >= start) & (a <= end)))[0]
        if rows.size == 0:
            continue
        edges = np.linspace(start, end, k + 1)
        lo, hi = edges[:-1, None], edges[1:, None]  # (K, 1)
        ra, rb = a[rows][None, :], b[rows][None, :]  # (1, r)
        w = np.clip(np.minimum(rb, hi) - np.maximum(ra, lo), 0.0, None)
        rp = point[rows][None, :]
        if rp.any():
            last = np.zeros((k, 1), dtype=bool)
            last[-1] = True
            inside = (ra >= lo) & ((ra < hi) | (last & (ra <= hi)))
            w = np.where(rp, inside.astype(np.float64), w)
        total = w.sum(axis=1)
        ok = total > 0
        out[s, ok] = (w[ok] @ feats[rows]) / total[ok, None]
        empty[s] = ~ok
    return out.astype(np.float32), empty


def load_csd_dataset(
    labels: str | os.PathLike,
    features: Mapping[str, str | os.PathLike],
    folds: str | os.PathLike | Mapping[str, Sequence[str]],
    num_steps: int | None = 50,
    label_index: int = 0,
    nan_to_zero: bool = False,
) -> dict[str, SentimentSplit]:
    """Build aligned splits from CMU-MultimodalSDK computational sequences.

    Args:
        labels: label sequence (e.g. ``CMU_MOSI_Opinion_Labels.csd``); its intervals are the segments.
        features: ``{modality: .csd}``, e.g. ``{"text": "CMU_MOSI_TimestampedWordVectors.csd",
            "audio": "CMU_MOSI_COVAREP.csd", "vision": "CMU_MOSI_Visual_Facet_42.csd"}``.
        folds: standard folds JSON (or ``{split: [video ids]}``).
        num_steps: steps per segment (see :func:`align_to_segments`); None = one averaged step.
        label_index: label column.
        nan_to_zero: set NaN features to 0 instead of raising.

    Videos missing from a feature sequence are dropped (logged); windows without features are zeros
    (count logged).

    Returns:
        ``{"train", "valid", "test": SentimentSplit}``; ids are ``<video_id>[<segment index>]``.
    """
    if not features:
        raise ValueError("features must map at least one modality to a .csd file")
    segs = csd_label_segments(labels, folds, label_index)
    wanted = sorted({r[0] for rows in segs.values() for r in rows})
    seqs = {m: read_csd(p, video_ids=wanted) for m, p in features.items()}
    for m, seq in seqs.items():  # non-finite raw values would spread through the averaging
        n_inf = n_nan = 0
        for vid, (f, ints) in seq.data.items():
            bad_nan, bad_inf = np.isnan(f), np.isinf(f)
            if bad_nan.any() and not nan_to_zero:
                raise ValueError(
                    f"{seq.path}: video {vid!r}: {int(bad_nan.sum())} NaN feature value(s); fix the "
                    "data or pass nan_to_zero=True to set them to 0"
                )
            if bad_nan.any() or bad_inf.any():
                n_nan, n_inf = n_nan + int(bad_nan.sum()), n_inf + int(bad_inf.sum())
                seq.data[vid] = (np.where(bad_nan | bad_inf, 0.0, f).astype(np.float32), ints)
        if n_inf or n_nan:
            logger.warning(
                "%s: set %d +-inf and %d NaN raw %s value(s) to 0 before alignment", seq.path, n_inf, n_nan, m
            )
    out: dict[str, SentimentSplit] = {}
    for split, rows in segs.items():
        keep = [r for r in rows if all(r[0] in s.data for s in seqs.values())]
        dropped = sorted({r[0] for r in rows} - {r[0] for r in keep})
        if dropped:
            logger.warning(
                "%s: %d video(s) lack features in some modality and are dropped (e.g. %s)",
                split,
                len(dropped),
                dropped[:3],
            )
        if not keep:
            raise ValueError(f"split {split}: no segment has features in every modality {list(features)}")
        feats: dict[str, np.ndarray] = {}
        for m, seq in seqs.items():
            n_empty = 0
            by_video: dict[str, list[int]] = {}
            for i, r in enumerate(keep):
                by_video.setdefault(r[0], []).append(i)
            aligned = [None] * len(keep)
            for vid, idx in by_video.items():
                f, ints = seq.data[vid]
                a, e = align_to_segments(f, ints, np.stack([keep[i][2] for i in idx]), num_steps)
                n_empty += int(e.sum())
                for j, i in enumerate(idx):
                    aligned[i] = a[j]
            parts = np.stack(aligned)
            if n_empty:
                logger.info(
                    "%s/%s: %d of %d windows had no %s features (zeros)",
                    split,
                    m,
                    n_empty,
                    parts.shape[0] * parts.shape[1],
                    m,
                )
            feats[m] = _clean_features(parts, f"{seq.path} ({split}/{m})", nan_to_zero)
        labels_arr = _clean_labels(np.array([r[3] for r in keep]), len(keep), f"{labels} ({split})")
        ids = [f"{r[0]}[{r[1]}]" for r in keep]
        out[split] = SentimentSplit(feats, labels_arr, {}, ids, f"{labels}:{split}")
    _check_consistent(out, str(labels))
    return out


# ------------------------------------------------------------------------------------------------
# MFN aligned HDF5 folders (CMU YouTube, MOSI)
# ------------------------------------------------------------------------------------------------
_MFN_FILES = {"text": "text_{}_emb.h5", "audio": "audio_{}.h5", "vision": "video_{}.h5", "labels": "y_{}.h5"}


def load_mfn_h5(folder: str | os.PathLike, nan_to_zero: bool = False) -> dict[str, SentimentSplit]:
    """Read an MFN-style aligned HDF5 folder (a small adapter; e.g. the CMU YouTube data).

    Files ``text_<split>_emb.h5``, ``audio_<split>.h5``, ``video_<split>.h5``, ``y_<split>.h5`` with one
    dataset ``d1`` each. Labels that are one-hot over 3 classes (negative, neutral, positive) become
    -1 / 0 / 1; continuous labels are used as they are.

    Returns:
        ``{split: SentimentSplit}`` for every split whose four files are present.
    """
    import h5py

    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"no such folder: {folder}")
    out: dict[str, SentimentSplit] = {}
    for split in SPLITS:
        files = {k: folder / v.format(split) for k, v in _MFN_FILES.items()}
        present = [k for k, p in files.items() if p.is_file()]
        if not present:
            continue
        if len(present) != len(files):
            missing = [str(p.name) for k, p in files.items() if k not in present]
            raise ValueError(f"{folder}: split {split} is missing file(s) {missing}")
        arrays = {}
        for k, p in files.items():
            with h5py.File(p, "r") as f:
                if "d1" not in f:
                    raise ValueError(f"{p}: no dataset 'd1' (keys: {sorted(f.keys())})")
                arrays[k] = np.asarray(f["d1"][()])
        feats = {
            m: _clean_features(arrays[m], f"{files[m]}", nan_to_zero) for m in ("text", "audio", "vision")
        }
        n = _common_n(feats, f"{folder}: split {split}")
        y = np.asarray(arrays["labels"], dtype=np.float32)
        if y.ndim == 2 and y.shape[1] == 3 and np.all((y == 0) | (y == 1)) and np.all(y.sum(1) == 1):
            y = y.argmax(axis=1).astype(np.float32) - 1.0
        labels = _clean_labels(y, n, str(files["labels"]))
        out[split] = SentimentSplit(
            feats, labels, {}, [f"{split}_{i}" for i in range(n)], f"{folder}:{split}"
        )
    if not out:
        raise ValueError(f"{folder}: no MFN split files (expected e.g. {_MFN_FILES['text'].format('test')})")
    _check_consistent(out, str(folder))
    return out


# ------------------------------------------------------------------------------------------------
# dispatch, cache, torch Dataset
# ------------------------------------------------------------------------------------------------
def _is_pickle(p: Path) -> bool:
    return p.is_file() and p.suffix.lower() in PICKLE_SUFFIXES


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
    if not _is_pickle(p):
        raise ValueError(
            f"{p}: unknown file type {p.suffix or '(no extension)'!r}; expected a pickle "
            f"({', '.join(PICKLE_SUFFIXES)}), a .csd file or an MFN HDF5 folder (nothing was read)"
        )
    return _pickle_layout(_read_pickle(p), str(p))


def _pickle_layout(data: Any, p: str) -> str:
    splits = _split_dicts(data, p, required=())
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
        fmt = "mult" if _is_pickle(Path(path)) else detect_format(path)  # pickles: layout read below
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
        data = _read_pickle(path)  # read once, also when the layout is detected from the content
        if format == "auto":
            fmt = _pickle_layout(data, str(path))
        out = (_mult_from_data if fmt == "mult" else _mmsa_from_data)(data, str(path), **kwargs)
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
            name = _split_name(split)
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
