"""The MFN project's aligned HDF5 folders (the CMU YouTube data, MOSI).

Files ``text_<split>_emb.h5``, ``audio_<split>.h5``, ``video_<split>.h5``, ``y_<split>.h5``, dataset
``d1`` each. One-hot labels over 3 classes (negative, neutral, positive, as in the CMU YouTube data) are
mapped to -1 / 0 / 1.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from gmd_monai.data.sentiment_checks import check_consistent, clean_features, clean_labels, common_count
from gmd_monai.data.sentiment_splits import SPLITS, SentimentSplit

__all__ = ["MFN_FILES", "load_mfn_h5"]

#: The file of each modality (and the labels) of one split, ``{}`` standing for the split's name.
MFN_FILES = {"text": "text_{}_emb.h5", "audio": "audio_{}.h5", "vision": "video_{}.h5", "labels": "y_{}.h5"}


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
        files = {k: folder / v.format(split) for k, v in MFN_FILES.items()}
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
            m: clean_features(arrays[m], f"{files[m]}", nan_to_zero) for m in ("text", "audio", "vision")
        }
        n = common_count(feats, f"{folder}: split {split}")
        y = np.asarray(arrays["labels"], dtype=np.float32)
        if y.ndim == 2 and y.shape[1] == 3 and np.all((y == 0) | (y == 1)) and np.all(y.sum(1) == 1):
            y = y.argmax(axis=1).astype(np.float32) - 1.0
        labels = clean_labels(y, n, str(files["labels"]))
        out[split] = SentimentSplit(
            feats, labels, {}, [f"{split}_{i}" for i in range(n)], f"{folder}:{split}"
        )
    if not out:
        raise ValueError(f"{folder}: no MFN split files (expected e.g. {MFN_FILES['text'].format('test')})")
    check_consistent(out, str(folder))
    return out
