"""Tests of gmd_monai.data.synthetic: files, determinism, modality contrasts, ensure_synthetic_brats."""

from __future__ import annotations

import json
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from gmd_monai.data import ensure_synthetic_brats, make_synthetic_brats, scan_brats_folder, validate_case
from gmd_monai.data.synthetic import MARKER_FILE, synthetic_case_arrays
from gmd_monai.subsets import BRATS_MODALITIES

T1, T1CE, T2, FLAIR = range(4)


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str], float]:
    root = tmp_path_factory.mktemp("synth")
    start = time.perf_counter()
    dirs = make_synthetic_brats(root, num_cases=8, shape=(48, 48, 48), seed=0)
    return root, dirs, time.perf_counter() - start


def test_files_shapes_and_values(synth: tuple[Path, list[str], float]) -> None:
    root, dirs, seconds = synth
    assert [Path(d).name for d in dirs] == [f"Synth_{i:03d}" for i in range(8)]
    items = scan_brats_folder(root)
    assert [it["case"] for it in items] == [Path(d).name for d in dirs]
    for it in items:
        assert validate_case(it) == (48, 48, 48)
        imgs = [nib.load(p) for p in it["image"]]
        seg = nib.load(it["label"])
        assert all(im.get_data_dtype() == np.int16 for im in imgs)
        assert np.allclose(np.abs(np.diag(imgs[0].affine)[:3]), 1.0)  # 1 mm voxels
        assert np.abs(imgs[0].affine[:3, 3]).max() > 0  # a non-trivial origin
        lab = np.asarray(seg.dataobj)
        assert set(np.unique(lab).tolist()) <= {0, 1, 2, 4}
        data = np.stack([np.asarray(im.dataobj) for im in imgs])
        brain = data[0] != 0
        assert np.all((data != 0) == brain[None])  # same brain mask in every modality, background 0
        assert np.all(lab[~brain] == 0)  # tumour inside the brain
        assert 0.2 < brain.mean() < 0.6


def test_deterministic_and_seeded() -> None:
    a_img, a_lab = synthetic_case_arrays(2, (32, 32, 32), seed=5)
    b_img, b_lab = synthetic_case_arrays(2, (32, 32, 32), seed=5)
    c_img, c_lab = synthetic_case_arrays(2, (32, 32, 32), seed=6)
    assert np.array_equal(a_img, b_img) and np.array_equal(a_lab, b_lab)
    assert not np.array_equal(a_img, c_img)
    assert a_img.shape == (4, 32, 32, 32) and a_img.dtype == np.int16 and a_lab.dtype == np.uint8


def test_deterministic_files(synth: tuple[Path, list[str], float], tmp_path: Path) -> None:
    root, _, _ = synth
    make_synthetic_brats(tmp_path, num_cases=2, shape=(48, 48, 48), seed=0)
    for case in ("Synth_000", "Synth_001"):
        for m in (*BRATS_MODALITIES, "seg"):
            name = f"{case}/{case}_{m}.nii.gz"
            assert np.array_equal(
                np.asarray(nib.load(root / name).dataobj), np.asarray(nib.load(tmp_path / name).dataobj)
            )


def test_tumour_regions_and_low_grade_cases() -> None:
    for i in range(8):
        _, lab = synthetic_case_arrays(i, (48, 48, 48), seed=0)
        counts = {v: int((lab == v).sum()) for v in (1, 2, 4)}
        assert counts[1] > 0 and counts[2] > 0
        if i % 4 == 3:
            assert counts[4] == 0  # low grade: no enhancing tumour
        else:
            assert counts[4] > 50


def test_modalities_carry_different_information() -> None:
    """Region means over several cases follow the intended MRI contrasts."""
    means: dict[str, list[np.ndarray]] = {"brain": [], "nec": [], "edema": [], "et": []}
    for i in (0, 1, 2, 4, 5, 6):  # high-grade cases
        img, lab = synthetic_case_arrays(i, (48, 48, 48), seed=0)
        x = img.astype(np.float64)
        brain = (x[0] > 0) & (lab == 0)
        scale = x[:, brain].mean(axis=1)  # per-case, per-modality normal-brain mean
        for name, mask in (("brain", brain), ("nec", lab == 1), ("edema", lab == 2), ("et", lab == 4)):
            means[name].append(x[:, mask].mean(axis=1) / scale)
    m = {k: np.mean(v, axis=0) for k, v in means.items()}  # relative to normal brain (= 1)
    # T1ce: ET strongly bright, clearly above edema and necrosis
    assert m["et"][T1CE] > 1.5 * m["edema"][T1CE] and m["et"][T1CE] > 1.5 * m["nec"][T1CE]
    # T1: the core is mildly dark, edema close to normal brain, ET not enhanced
    assert m["nec"][T1] < 0.85 and abs(m["edema"][T1] - 1.0) < 0.15 and m["et"][T1] < 1.1
    # T2: edema and core bright; ET indistinguishable from edema
    assert m["edema"][T2] > 1.4 and m["nec"][T2] > m["edema"][T2]
    assert abs(m["et"][T2] - m["edema"][T2]) < 0.1 * m["edema"][T2]
    # FLAIR: edema brightest, the necrotic core darker
    assert m["edema"][FLAIR] > 1.6 and m["edema"][FLAIR] > m["et"][FLAIR] > m["nec"][FLAIR]
    # ET only stands out in T1ce: the T1ce/FLAIR ratio separates ET from edema
    assert m["et"][T1CE] / m["et"][FLAIR] > 1.5 * m["edema"][T1CE] / m["edema"][FLAIR]


def test_ensure_synthetic_brats_regenerates_only_when_needed(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    params = {"num_cases": 3, "shape": (24, 24, 24), "seed": 1}
    assert ensure_synthetic_brats(root, **params) == str(root)
    marker = json.loads((root / MARKER_FILE).read_text())
    assert marker["num_cases"] == 3 and marker["shape"] == [24, 24, 24] and marker["seed"] == 1
    t1 = root / "Synth_000" / "Synth_000_t1.nii.gz"
    stamp = t1.stat().st_mtime_ns

    ensure_synthetic_brats(root, **params)  # complete: nothing rewritten
    assert t1.stat().st_mtime_ns == stamp

    (root / MARKER_FILE).unlink()  # a half-written folder has no marker: regenerated
    time.sleep(0.01)
    ensure_synthetic_brats(root, **params)
    assert t1.stat().st_mtime_ns != stamp and (root / MARKER_FILE).is_file()

    (root / "Synth_002" / "Synth_002_seg.nii.gz").unlink()  # a file lost: regenerated
    ensure_synthetic_brats(root, **params)
    assert (root / "Synth_002" / "Synth_002_seg.nii.gz").is_file()

    ensure_synthetic_brats(root, num_cases=2, shape=(24, 24, 24), seed=1)  # other parameters
    assert sorted(p.name for p in root.iterdir() if p.is_dir()) == ["Synth_000", "Synth_001"]
    assert json.loads((root / MARKER_FILE).read_text())["num_cases"] == 2
    assert len(scan_brats_folder(root)) == 2


def test_invalid_parameters(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="num_cases"):
        make_synthetic_brats(tmp_path, num_cases=0)
    with pytest.raises(ValueError, match="shape"):
        synthetic_case_arrays(0, (4, 48, 48))
