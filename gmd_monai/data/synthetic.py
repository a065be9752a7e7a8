"""A small synthetic BraTS-like dataset for demos and tests (no real data needed).

Each case is an ellipsoidal "brain" (white matter, a grey-matter rim and islands, ventricles and sulcal
fluid, a smooth texture, a random smooth bias field per modality, noise) on a zero background, with an
irregular tumour at a random position: a necrotic core (label 1) inside an enhancing rim (4) inside
edema (2). Every 4th case (``index % 4 == 3``) is "low grade": a non-enhancing core (1) in edema, no 4.

The modalities carry different information, as in real MRI:

=========  ==============  ==============  ===================  ===============
modality   necrosis (1)    edema (2)       enhancing (4)        normal brain
=========  ==============  ==============  ===================  ===============
T1         mildly dark     ~ brain         ~ grey matter        WM > GM > CSF
T1ce       dark            ~ brain         strongly bright      as T1
T2         bright          bright          = edema              CSF > GM > WM
FLAIR      darker          brightest       bright               GM > WM, CSF dark
=========  ==============  ==============  ===================  ===============

So T1 alone finds roughly the tumour core, FLAIR (or T2) the whole tumour but not ET, T1ce the ET.
Files use the BraTS 2018 naming ``<case>/<case>_{t1,t1ce,t2,flair,seg}.nii.gz`` (int16 images, uint8
labels in {0, 1, 2, 4}, 1 mm voxels, identity orientation with the volume centred on the origin).

Example:
    >>> from gmd_monai.data.brats import build_datalist
    >>> root = ensure_synthetic_brats("synth_brats", num_cases=4, shape=(32, 32, 32), seed=0)
    >>> sorted(os.listdir(os.path.join(root, "Synth_000")))  # doctest: +NORMALIZE_WHITESPACE
    ['Synth_000_flair.nii.gz', 'Synth_000_seg.nii.gz', 'Synth_000_t1.nii.gz',
     'Synth_000_t1ce.nii.gz', 'Synth_000_t2.nii.gz']
    >>> datalist = build_datalist(root, "synth_brats/datalist.json", val_fraction=0.25, test_fraction=0.0)
    >>> len(datalist["training"]), len(datalist["validation"])
    (3, 1)
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy.ndimage import gaussian_filter

from gmd_monai.subsets import BRATS_MODALITIES

__all__ = ["MARKER_FILE", "ensure_synthetic_brats", "make_synthetic_brats", "synthetic_case_arrays"]

logger = logging.getLogger(__name__)

#: Written last by :func:`ensure_synthetic_brats`: the parameters of a complete dataset.
MARKER_FILE = "synthetic.json"
_GENERATOR_VERSION = 1
_CASE_PREFIX = "Synth_"
_CASE_RE = re.compile(rf"^{_CASE_PREFIX}\d{{3,}}$")

# relative intensities: rows = white matter, grey matter, CSF, necrosis (1), edema (2), enhancing (4),
# non-enhancing core (1, low-grade cases); columns = t1, t1ce, t2, flair
_CLASSES = ("wm", "gm", "csf", "necrosis", "edema", "enhancing", "nonenhancing")
_INTENSITY = np.array(
    [
        [1.00, 1.00, 0.55, 0.65],  # white matter
        [0.72, 0.75, 0.78, 0.85],  # grey matter
        [0.30, 0.32, 1.50, 0.25],  # CSF (suppressed in FLAIR)
        [0.55, 0.45, 1.55, 0.80],  # necrosis: T1 mildly dark, T1ce dark, T2 bright, FLAIR darker
        [0.86, 0.86, 1.25, 1.65],  # edema: ~ brain in T1/T1ce, bright in T2, brightest in FLAIR
        [0.78, 1.90, 1.25, 1.55],  # enhancing: T1 ~ GM, T1ce strongly bright, T2 = edema
        [0.62, 0.62, 1.40, 1.20],  # non-enhancing core (low grade)
    ],
    dtype=np.float32,
)
_SCALE = np.array([520.0, 680.0, 900.0, 430.0], dtype=np.float32)  # per-modality scanner units


def _smooth_field(
    rng: np.random.Generator, coords: Sequence[np.ndarray], n_waves: int, freq: float
) -> np.ndarray:
    """A random smooth field of unit variance: a sum of plane waves with random directions and phases."""
    field = np.zeros(np.broadcast_shapes(*(c.shape for c in coords)), dtype=np.float32)
    k = rng.normal(size=(n_waves, 3)) * freq
    phase = rng.uniform(0.0, 2.0 * np.pi, size=n_waves)
    amp = np.float32(np.sqrt(2.0 / n_waves))
    for w in range(n_waves):
        arg = k[w, 0] * coords[0] + k[w, 1] * coords[1] + k[w, 2] * coords[2] + phase[w]
        field += amp * np.cos(arg.astype(np.float32))
    return field


def synthetic_case_arrays(
    index: int, shape: Sequence[int] = (48, 48, 48), seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Generate one case in memory.

    Args:
        index: the case number (case ``index % 4 == 3`` has no enhancing tumour).
        shape: the volume shape.
        seed: the dataset seed; case ``index`` depends only on ``(seed, index, shape)``.

    Returns:
        ``(image, label)``: int16 ``(4, *shape)`` in the order t1, t1ce, t2, flair (background exactly 0,
        brain >= 1) and uint8 ``shape`` with values in {0, 1, 2, 4}.
    """
    shp = tuple(int(s) for s in shape)
    if len(shp) != 3 or min(shp) < 8:
        raise ValueError(f"shape must be 3 sizes >= 8, got {shape!r}")
    rng = np.random.default_rng([int(seed), int(index)])
    size = np.array(shp, dtype=np.float64)
    centre = (size - 1.0) / 2.0
    axes = [(np.arange(s, dtype=np.float32) - np.float32(c)) for s, c in zip(shp, centre)]
    coords = [axes[0][:, None, None], axes[1][None, :, None], axes[2][None, None, :]]

    # brain: an ellipsoid with a wavy surface
    semi = size / 2.0 * rng.uniform(0.78, 0.88, size=3)
    bc = rng.normal(0.0, 0.01, size=3) * size
    norm = [(coords[a] - np.float32(bc[a])) / np.float32(semi[a]) for a in range(3)]
    rb = np.sqrt(norm[0] ** 2 + norm[1] ** 2 + norm[2] ** 2)
    rb = rb * (1.0 + 0.04 * _smooth_field(rng, norm, 6, 2.5))
    brain = rb < 1.0

    # normal tissue: grey-matter rim and islands, ventricles, sulcal CSF
    tissue = np.zeros(shp, dtype=np.int8)  # 0 = WM, 1 = GM, 2 = CSF
    texture = _smooth_field(rng, norm, 8, 6.0)
    gm = (rb > 0.80 + 0.05 * texture) | (_smooth_field(rng, norm, 6, 4.0) > 1.3)
    tissue[gm] = 1
    lateral = rng.uniform(0.12, 0.2)
    for side in (-1.0, 1.0):
        v = np.sqrt(
            ((norm[0] - side * lateral) / 0.10) ** 2 + ((norm[1] - 0.05) / 0.28) ** 2 + (norm[2] / 0.18) ** 2
        )
        tissue[v < 1.0] = 2
    tissue[(rb > 0.93) & (_smooth_field(rng, norm, 6, 5.0) > 0.9)] = 2

    # tumour: irregular nested blobs around a random centre inside the brain
    high_grade = index % 4 != 3
    rc = rng.uniform(0.10, 0.17) * float(size.min())  # radius of the core (enhancing rim outer edge)
    tc = bc + rng.uniform(-0.4, 0.4, size=3) * semi
    rel = [(coords[a] - np.float32(tc[a])) / np.float32(rc) for a in range(3)]
    d = np.sqrt(rel[0] ** 2 + rel[1] ** 2 + rel[2] ** 2)
    d_et = d * (1.0 + 0.22 * _smooth_field(rng, rel, 6, 1.2))
    d_ed = d * (1.0 + 0.25 * _smooth_field(rng, rel, 6, 0.9))
    d_nec = d * (1.0 + 0.20 * _smooth_field(rng, rel, 6, 1.5))
    edema_outer = rng.uniform(1.5, 2.0) if high_grade else rng.uniform(1.3, 1.8)
    core_inner = rng.uniform(0.5, 0.7)
    label = np.zeros(shp, dtype=np.uint8)
    label[d_ed < edema_outer] = 2
    if high_grade:
        label[d_et < 1.0] = 4
        label[(d_nec < core_inner) & (d_et < 0.85)] = 1
    else:
        label[d_et < 1.0] = 1
    label[~brain] = 0

    # classes -> relative intensities per modality
    cls = tissue.astype(np.int8)  # 0..2
    cls[label == 1] = 3 if high_grade else 6
    cls[label == 2] = 4
    cls[label == 4] = 5
    rel_int = _INTENSITY[cls]  # (*shape, 4)
    rel_int = np.moveaxis(rel_int, -1, 0) * (1.0 + 0.04 * texture)[None]

    case_scale = rng.uniform(0.8, 1.25)
    image = np.empty((len(BRATS_MODALITIES), *shp), dtype=np.int16)
    for m in range(len(BRATS_MODALITIES)):
        x = gaussian_filter(rel_int[m] * brain, sigma=0.6, mode="constant")
        bias = np.exp(0.12 * _smooth_field(rng, norm, 4, 0.8))
        x = x * bias + rng.normal(0.0, 0.035, size=shp).astype(np.float32)
        x = np.clip(x * (_SCALE[m] * case_scale), 1.0, 32767.0)
        image[m] = np.where(brain, np.rint(x), 0).astype(np.int16)
    return image, label


def _affine(shape: Sequence[int]) -> np.ndarray:
    affine = np.eye(4)
    affine[:3, 3] = -(np.asarray(shape, dtype=np.float64) - 1.0) / 2.0
    return affine


def _save_atomic(array: np.ndarray, affine: np.ndarray, path: Path) -> None:
    img = nib.Nifti1Image(array, affine)
    img.header.set_xyzt_units("mm", "sec")
    img.header.set_qform(affine, code=1)
    img.header.set_sform(affine, code=1)
    tmp = path.with_name(f".tmp{os.getpid()}_{path.name}")
    nib.save(img, str(tmp))
    os.replace(tmp, path)


def _case_id(i: int) -> str:
    return f"{_CASE_PREFIX}{i:03d}"


def make_synthetic_brats(
    out_dir: str | os.PathLike, num_cases: int = 8, shape: Sequence[int] = (48, 48, 48), seed: int = 0
) -> list[str]:
    """Write a synthetic BraTS 2018-style dataset (see the module docstring); deterministic per seed.

    Args:
        out_dir: the dataset folder (created).
        num_cases: number of cases, ``Synth_000``, ``Synth_001``, ...
        shape: volume shape.
        seed: random seed.

    Returns:
        The absolute case folder paths, in case order.
    """
    if int(num_cases) < 1:
        raise ValueError(f"num_cases must be >= 1, got {num_cases}")
    root = Path(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    (root / MARKER_FILE).unlink(missing_ok=True)  # the content changes: no longer a known complete dataset
    affine = _affine(shape)
    dirs = []
    for i in range(int(num_cases)):
        case = _case_id(i)
        case_dir = root / case
        case_dir.mkdir(exist_ok=True)
        image, label = synthetic_case_arrays(i, shape, seed)
        for m, name in enumerate(BRATS_MODALITIES):
            _save_atomic(image[m], affine, case_dir / f"{case}_{name}.nii.gz")
        _save_atomic(label, affine, case_dir / f"{case}_seg.nii.gz")
        dirs.append(os.path.abspath(case_dir))
    return dirs


def _expected_files(root: Path, num_cases: int) -> list[Path]:
    out = []
    for i in range(num_cases):
        case = _case_id(i)
        out.extend(root / case / f"{case}_{m}.nii.gz" for m in (*BRATS_MODALITIES, "seg"))
    return out


def ensure_synthetic_brats(
    out_dir: str | os.PathLike, num_cases: int = 8, shape: Sequence[int] = (48, 48, 48), seed: int = 0
) -> str:
    """Generate the synthetic dataset unless ``out_dir`` already holds it with the same parameters.

    A complete dataset is marked by ``synthetic.json`` (written last, so an interrupted generation is
    redone). Stale ``Synth_*`` case folders beyond ``num_cases`` are removed. Safe to call from a bundle
    config expression, e.g. ``"$gmd_monai.data.ensure_synthetic_brats(@bundle_root + '/data/synthetic')"``.

    Args:
        out_dir: the dataset folder.
        num_cases: number of cases.
        shape: volume shape.
        seed: random seed.

    Returns:
        ``out_dir`` as an absolute path string.
    """
    root = Path(out_dir)
    params = {
        "generator": "gmd_monai.data.synthetic.make_synthetic_brats",
        "version": _GENERATOR_VERSION,
        "num_cases": int(num_cases),
        "shape": [int(s) for s in shape],
        "seed": int(seed),
    }
    marker = root / MARKER_FILE
    if marker.is_file():
        try:
            found = json.loads(marker.read_text())
        except (OSError, ValueError):
            found = None
        if (
            isinstance(found, dict)
            and all(found.get(k) == v for k, v in params.items())
            and all(p.is_file() for p in _expected_files(root, int(num_cases)))
        ):
            return os.path.abspath(root)
    logger.info("generating %d synthetic BraTS cases of shape %s in %s", num_cases, tuple(shape), root)
    make_synthetic_brats(root, num_cases, shape, seed)
    keep = {_case_id(i) for i in range(int(num_cases))}
    for sub in root.iterdir():
        if sub.is_dir() and _CASE_RE.match(sub.name) and sub.name not in keep:
            shutil.rmtree(sub, ignore_errors=True)
    params["cases"] = sorted(keep)
    tmp = marker.with_name(f".{MARKER_FILE}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(params, indent=2) + "\n")
    os.replace(tmp, marker)
    return os.path.abspath(root)
