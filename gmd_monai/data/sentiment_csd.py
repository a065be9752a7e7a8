"""CMU-MultimodalSDK computational sequences (HDF5 ``.csd``): reading, folds, label segments, alignment.

A sequence is ``<root>/data/<video_id>/{features (n, d), intervals (n, 2)}`` plus ``<root>/metadata``.
A label sequence (e.g. ``CMU_MOSI_Opinion_Labels.csd``) defines the segments; one feature sequence per
modality is aligned to them (see :func:`align_to_segments`); the standard folds JSON
(``cmu_mosi_std_folds.json``) assigns videos to splits.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from gmd_monai.data.sentiment_checks import check_consistent, clean_features, clean_labels
from gmd_monai.data.sentiment_splits import SPLITS, SentimentSplit, split_name

__all__ = [
    "CSDSequence",
    "align_to_segments",
    "csd_label_segments",
    "load_csd_dataset",
    "read_csd",
    "read_folds",
]

logger = logging.getLogger("gmd_monai.data.sentiment")  # the name users and tests filter on


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
            else {split_name(k): list(v) for k, v in folds.items()}
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
            feats[m] = clean_features(parts, f"{seq.path} ({split}/{m})", nan_to_zero)
        labels_arr = clean_labels(np.array([r[3] for r in keep]), len(keep), f"{labels} ({split})")
        ids = [f"{r[0]}[{r[1]}]" for r in keep]
        out[split] = SentimentSplit(feats, labels_arr, {}, ids, f"{labels}:{split}")
    check_consistent(out, str(labels))
    return out
