"""A small synthetic multimodal sentiment dataset in the MulT word-aligned pickle layout.

The layout is exactly that of MulT's ``mosi_data.pkl`` / ``mosei_senti_data.pkl``: a dict with the splits
``train``, ``valid``, ``test``, each a dict of float32 arrays ``text`` (N, T, d_t), ``audio`` (N, T, d_a),
``vision`` (N, T, d_v) and ``labels`` (N, 1, 1), so it goes through the same reader as the real files
(:func:`gmd_monai.data.sentiment.load_mult_pickle`).

How the data is made (``T`` aligned steps, a sentiment score ``y`` per sample):

* ``y`` is drawn from a normal distribution clipped to [-3, 3] and rounded to a multiple of 0.2 (as
  the 5-annotator averages of CMU-MOSI), so a few labels are exactly 0 (the has-0 / non-0 metrics
  differ, as on real data).
* Each modality sees its own noisy copy of the sentiment, ``y_m = y + sigma_m * eps_m``, with
  ``sigma_text < sigma_audio < sigma_vision``: text carries the most signal, vision the least, as in
  real datasets; the copies are independent, so fusing modalities helps.
* ``y_m`` is written into a few random "salient" steps of the sequence along a fixed random direction
  of the modality's feature space, through a mild non-linearity (``tanh``), on top of Gaussian
  feature noise and a per-sample nuisance offset; everything else is noise.
* Sequences have random lengths and are zero-padded at the START (word-aligned MulT data is
  left-padded), and a few audio entries are ``-inf`` (like COVAREP features in the real pickles;
  the readers set them to 0 and log how many).

Example:
    >>> path = ensure_synthetic_sentiment("/tmp/gmd_sentiment/synthetic_sentiment.pkl")
    >>> from gmd_monai.data.sentiment import load_mult_pickle
    >>> splits = load_mult_pickle(path)
    >>> len(splits["train"]), splits["train"].feature_sizes
    (960, {'text': 48, 'audio': 8, 'vision': 16})
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import tempfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from gmd_monai.subsets import SENTIMENT_MODALITIES

__all__ = [
    "DEFAULT_FEATURE_SIZES",
    "DEFAULT_GAIN",
    "DEFAULT_NOISE",
    "DEFAULT_SPLIT_SIZES",
    "ensure_synthetic_sentiment",
    "make_synthetic_sentiment",
    "write_synthetic_sentiment",
]

logger = logging.getLogger(__name__)

_GENERATOR_VERSION = 1
#: Feature sizes per modality (small, for speed; the reader takes sizes from the data).
DEFAULT_FEATURE_SIZES: dict[str, int] = {"text": 48, "audio": 8, "vision": 16}
#: Standard deviation of each modality's private sentiment noise (lower = more signal).
DEFAULT_NOISE: dict[str, float] = {"text": 0.3, "audio": 0.9, "vision": 1.3}
#: Strength of the sentiment pattern in each modality's features (higher = easier to read).
DEFAULT_GAIN: dict[str, float] = {"text": 2.0, "audio": 1.2, "vision": 1.0}
#: Number of samples per split.
DEFAULT_SPLIT_SIZES: dict[str, int] = {"train": 960, "valid": 160, "test": 320}


def _split_arrays(
    rng: np.random.Generator,
    n: int,
    num_steps: int,
    feature_sizes: Mapping[str, int],
    noise: Mapping[str, float],
    gain: Mapping[str, float],
    directions: Mapping[str, np.ndarray],
    mixing: Mapping[str, np.ndarray],
    inf_fraction: float,
) -> dict[str, np.ndarray]:
    y = np.clip(rng.normal(0.0, 1.4, size=n), -3.0, 3.0)
    y = np.round(y * 5.0) / 5.0
    y[np.abs(y) < 1e-9] = 0.0
    lengths = rng.integers(max(2, num_steps // 3), num_steps + 1, size=n)
    out: dict[str, np.ndarray] = {}
    for m, d in feature_sizes.items():
        y_m = y + noise[m] * rng.normal(size=n)
        x = 0.5 * rng.normal(size=(n, num_steps, d))
        x += rng.normal(size=(n, 1, d)) * 0.3  # per-sample nuisance offset
        x = x @ mixing[m]  # correlated feature noise
        amp = 1.5 * np.tanh(y_m / 1.5)  # mild non-linearity, keeps sign
        for i in range(n):
            start = num_steps - lengths[i]
            k = max(1, lengths[i] // 3)
            steps = rng.choice(np.arange(start, num_steps), size=k, replace=False)
            x[i, steps] += amp[i] * gain[m] * directions[m]
            x[i, :start] = 0.0  # left padding, as in word-aligned MulT data
        out[m] = x.astype(np.float32)
    if inf_fraction > 0 and "audio" in out:
        a = out["audio"].reshape(n, -1)
        rows = rng.random(n) < inf_fraction
        cols = rng.integers(0, a.shape[1], size=n)
        a[rows, cols[rows]] = -np.inf
    out["labels"] = y.astype(np.float32).reshape(n, 1, 1)
    return out


def make_synthetic_sentiment(
    split_sizes: Mapping[str, int] | None = None,
    num_steps: int = 20,
    feature_sizes: Mapping[str, int] | None = None,
    noise: Mapping[str, float] | None = None,
    gain: Mapping[str, float] | None = None,
    inf_fraction: float = 0.02,
    seed: int = 0,
) -> dict[str, dict[str, np.ndarray]]:
    """Generate a synthetic dataset in the MulT pickle layout (see the module docstring).

    Args:
        split_sizes: samples per split (default :data:`DEFAULT_SPLIT_SIZES`).
        num_steps: aligned sequence length T (MulT uses 50).
        feature_sizes: feature size per modality (default :data:`DEFAULT_FEATURE_SIZES`).
        noise: private sentiment noise per modality (default :data:`DEFAULT_NOISE`, text strongest).
        gain: strength of the sentiment pattern in the features (default :data:`DEFAULT_GAIN`).
        inf_fraction: fraction of samples with one ``-inf`` audio entry (0 to disable).
        seed: random seed (the output is a deterministic function of all arguments).

    Returns:
        ``{split: {"text", "audio", "vision": (N, T, d) float32, "labels": (N, 1, 1) float32}}``.
    """
    split_sizes = dict(DEFAULT_SPLIT_SIZES if split_sizes is None else split_sizes)
    feature_sizes = dict(DEFAULT_FEATURE_SIZES if feature_sizes is None else feature_sizes)
    noise = dict(DEFAULT_NOISE if noise is None else noise)
    gain = dict(DEFAULT_GAIN if gain is None else gain)
    for arg, val in (("feature_sizes", feature_sizes), ("noise", noise), ("gain", gain)):
        if set(val) != set(SENTIMENT_MODALITIES):
            raise ValueError(f"{arg} needs exactly the keys {list(SENTIMENT_MODALITIES)}, got {sorted(val)}")
    if any(int(v) < 1 for v in feature_sizes.values()) or int(num_steps) < 2:
        raise ValueError(f"feature sizes must be >= 1 and num_steps >= 2, got {feature_sizes}, {num_steps}")
    if any(int(v) < 1 for v in split_sizes.values()):
        raise ValueError(f"every split needs at least one sample, got {split_sizes}")
    rng = np.random.default_rng(seed)
    directions, mixing = {}, {}
    for m in SENTIMENT_MODALITIES:
        d = int(feature_sizes[m])
        u = rng.normal(size=d)
        directions[m] = u / np.linalg.norm(u)
        mixing[m] = np.eye(d) + 0.3 * rng.normal(size=(d, d)) / np.sqrt(d)
    out = {}
    for split, n in split_sizes.items():
        out[split] = _split_arrays(
            rng, int(n), int(num_steps), feature_sizes, noise, gain, directions, mixing, float(inf_fraction)
        )
    return out


def write_synthetic_sentiment(path: str | os.PathLike, **kwargs) -> Path:
    """Generate (:func:`make_synthetic_sentiment` ``**kwargs``) and pickle to ``path`` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = make_synthetic_sentiment(**kwargs)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            pickle.dump(data, f, protocol=pickle.HIGHEST_PROTOCOL)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def ensure_synthetic_sentiment(path: str | os.PathLike, **kwargs) -> str:
    """Write the synthetic dataset to ``path`` unless an identical one (same arguments) is there.

    A sidecar ``<path>.json`` records the generator version and arguments; the pickle is rewritten
    when they differ. Used by the sentiment bundle's default configuration (generated on first use).

    Args:
        path: the pickle to create (e.g. ``sentiment_bundle/data/synthetic_sentiment.pkl``).
        kwargs: :func:`make_synthetic_sentiment` arguments.

    Returns:
        ``str(path)``.
    """
    path = Path(path)
    params = {"version": _GENERATOR_VERSION, **{k: kwargs[k] for k in sorted(kwargs)}}
    marker = path.with_name(path.name + ".json")
    if path.is_file() and marker.is_file():
        try:
            if json.loads(marker.read_text()) == json.loads(json.dumps(params)):
                return str(path)
        except json.JSONDecodeError:
            pass
    logger.info("writing the synthetic sentiment dataset to %s", path)
    write_synthetic_sentiment(path, **kwargs)
    marker.write_text(json.dumps(params, indent=1))
    return str(path)
