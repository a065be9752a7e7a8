"""Tests of gmd_monai.data.brats: scanning, checks, datalists, label regions, normalisation, transforms."""

from __future__ import annotations

import contextlib
import json
import logging
import re
from collections.abc import Iterator
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import DataLoader, Dataset, MetaTensor

from gmd_monai.data import (
    CheckBratsCased,
    CheckFinited,
    ConvertBratsLabelsToRegionsd,
    DatasetIntegrityError,
    RobustZScoreNormalized,
    build_datalist,
    convert_labels_to_regions,
    read_case_list,
    robust_zscore,
    scan_brats_folder,
    train_transforms,
    val_transforms,
    validate_case,
    verify_dataset,
)
from gmd_monai.data.synthetic import make_synthetic_brats
from gmd_monai.subsets import BRATS_MODALITIES

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
REAL_DIR = SHARED / "data" / "brats2018"
RFNET_DIR = SHARED / "data" / "splits" / "brats2018_rfnet"
SUFFIX_2021 = {"t1": "t1n", "t1ce": "t1c", "t2": "t2w", "flair": "t2f"}


@contextlib.contextmanager
def _raises_in_pipeline(exc_type: type[Exception], match: str) -> Iterator[None]:
    """MONAI's Compose re-raises a transform's error as ``RuntimeError("applying transform ...")`` with
    the original as ``__cause__``: check the original's type and message."""
    with pytest.raises(RuntimeError, match="applying transform") as info:
        yield
    cause: BaseException | None = info.value
    while isinstance(cause, RuntimeError) and cause.__cause__ is not None:
        cause = cause.__cause__
    assert isinstance(cause, exc_type), repr(cause)
    assert re.search(match, str(cause)), str(cause)


def _require_real_data() -> None:
    if not (REAL_DIR.is_dir() and RFNET_DIR.is_dir()):
        pytest.skip(
            f"real BraTS 2018 sample data not found at {REAL_DIR} / {RFNET_DIR} (../shared is absent)"
        )


def _save(path: Path, array: np.ndarray, affine: np.ndarray | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array, np.eye(4) if affine is None else affine), str(path))
    return path


def _write_case(
    root: Path,
    case: str,
    naming: str = "brats2018",
    shape: tuple[int, ...] = (8, 8, 8),
    ext: str = ".nii.gz",
    skip: tuple[str, ...] = (),
    label: np.ndarray | None = None,
) -> dict[str, Path]:
    """A tiny case with distinct constant intensities per modality (channel c holds c + 1)."""
    sep = "_" if naming == "brats2018" else "-"
    paths = {}
    for c, m in enumerate(BRATS_MODALITIES):
        suffix = m if naming == "brats2018" else SUFFIX_2021[m]
        if m in skip:
            continue
        paths[m] = _save(root / case / f"{case}{sep}{suffix}{ext}", np.full(shape, c + 1, dtype=np.int16))
    if "seg" not in skip:
        lab = np.zeros(shape, dtype=np.uint8) if label is None else label
        paths["seg"] = _save(root / case / f"{case}{sep}seg{ext}", lab)
    return paths


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("synth")
    make_synthetic_brats(root, num_cases=6, shape=(32, 32, 32), seed=1)
    return root


# ------------------------------------------------------------------------------------------------
# scanning
# ------------------------------------------------------------------------------------------------


def test_scan_brats2018_naming(synth_root: Path) -> None:
    items = scan_brats_folder(synth_root)
    assert [it["case"] for it in items] == [f"Synth_{i:03d}" for i in range(6)]
    for it in items:
        assert it["label_format"] == "brats2018"
        assert [Path(p).name for p in it["image"]] == [f"{it['case']}_{m}.nii.gz" for m in BRATS_MODALITIES]
        assert Path(it["label"]).name == f"{it['case']}_seg.nii.gz"
        assert all(Path(p).is_absolute() for p in [*it["image"], it["label"]])


def test_scan_brats2021_naming_and_nii(tmp_path: Path) -> None:
    _write_case(tmp_path, "BraTS-GLI-00002-000", naming="brats2021")
    _write_case(tmp_path, "BraTS-GLI-00001-000", naming="brats2021", ext=".nii")
    (tmp_path / "notes").mkdir()  # a folder without case files is ignored
    items = scan_brats_folder(tmp_path)
    assert [it["case"] for it in items] == ["BraTS-GLI-00001-000", "BraTS-GLI-00002-000"]
    first = items[0]
    assert first["label_format"] == "brats2021"
    assert [Path(p).name for p in first["image"]] == [
        "BraTS-GLI-00001-000-t1n.nii",
        "BraTS-GLI-00001-000-t1c.nii",
        "BraTS-GLI-00001-000-t2w.nii",
        "BraTS-GLI-00001-000-t2f.nii",
    ]
    assert Path(first["label"]).name == "BraTS-GLI-00001-000-seg.nii"
    # channel order: t1n -> t1, t1c -> t1ce, t2w -> t2, t2f -> flair
    loaded = val_transforms(crop_foreground=False)({"image": first["image"]})["image"]
    assert loaded.shape == (4, 8, 8, 8)
    assert [float(loaded[c].abs().sum()) for c in range(4)] == [0.0] * 4  # constant channels -> 0 (warned)


def test_scan_grouped_folders(tmp_path: Path) -> None:
    _write_case(tmp_path / "HGG", "Brats18_A_1")
    _write_case(tmp_path / "LGG", "Brats18_B_1")
    assert [it["case"] for it in scan_brats_folder(tmp_path)] == ["Brats18_A_1", "Brats18_B_1"]


def test_scan_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        scan_brats_folder(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"no BraTS case found.*<case>_\{t1,t1ce,t2,flair,seg\}.*t1n"):
        scan_brats_folder(tmp_path / "empty")

    _write_case(tmp_path / "a", "Case1", skip=("t2",))
    with pytest.raises(FileNotFoundError, match=r"case 'Case1'.*missing file\(s\) Case1_t2\.nii\.gz"):
        scan_brats_folder(tmp_path / "a")

    _write_case(tmp_path / "b", "Case1", skip=("seg",))
    with pytest.raises(FileNotFoundError, match=r"Case1_seg\.nii\.gz"):
        scan_brats_folder(tmp_path / "b")
    items = scan_brats_folder(tmp_path / "b", require_label=False)
    assert "label" not in items[0]

    _write_case(tmp_path / "c", "Case1")
    _write_case(tmp_path / "c", "Case2", naming="brats2021")
    with pytest.raises(ValueError, match="mixes naming conventions"):
        scan_brats_folder(tmp_path / "c")


# ------------------------------------------------------------------------------------------------
# header checks
# ------------------------------------------------------------------------------------------------


def _item(paths: dict[str, Path]) -> dict:
    return {"image": [str(paths[m]) for m in BRATS_MODALITIES], "label": str(paths["seg"])}


def test_validate_case_ok_and_4d(tmp_path: Path) -> None:
    paths = _write_case(tmp_path, "C")
    assert validate_case(_item(paths)) == (8, 8, 8)
    four_d = _save(tmp_path / "C4d.nii.gz", np.ones((8, 8, 8, 4), dtype=np.float32))
    assert validate_case({"image": str(four_d), "label": str(paths["seg"])}) == (8, 8, 8)
    three_d = str(paths["t1"])
    with pytest.raises(ValueError, match=r"C_t1\.nii\.gz: a single image file must be 4-D"):
        validate_case({"image": three_d})


def _shifted() -> np.ndarray:
    a = np.eye(4)
    a[:3, 3] = (0.0, 0.0, 2.0)
    return a


#: name -> (how a good case (8, 8, 10) is broken, the error, the message naming the file)
BAD_CASES = {
    "shape": (
        lambda p: _save(p["t2"], np.ones((8, 8, 9), dtype=np.int16)),
        ValueError,
        r"C_t2\.nii\.gz: shape \(8, 8, 9\) differs from .*C_t1\.nii\.gz \(8, 8, 10\)",
    ),
    "affine": (
        lambda p: _save(p["t2"], np.ones((8, 8, 10), dtype=np.int16), affine=_shifted()),
        ValueError,
        r"C_t2\.nii\.gz: affine differs from .*C_t1\.nii\.gz",
    ),
    "spacing": (
        lambda p: _save(p["t2"], np.ones((8, 8, 10), dtype=np.int16), affine=np.diag([1.0, 1.0, 2.0, 1.0])),
        ValueError,
        r"C_t2\.nii\.gz: voxel spacing \(1, 1, 2\) differs",
    ),
    "label_not_3d": (
        lambda p: _save(p["seg"], np.zeros((8, 8, 10, 2), dtype=np.uint8)),
        ValueError,
        r"C_seg\.nii\.gz: expected a 3-D volume",
    ),
    "file_missing": (lambda p: p["flair"].unlink(), FileNotFoundError, r"C_flair\.nii\.gz: file not found"),
    "not_nifti": (
        lambda p: p["flair"].write_bytes(b"not a nifti file"),
        ValueError,
        r"C_flair\.nii\.gz: cannot read the NIfTI header",
    ),
}


@pytest.mark.parametrize("name", list(BAD_CASES))
def test_validate_case_errors(name: str, tmp_path: Path) -> None:
    paths = _write_case(tmp_path, "C", shape=(8, 8, 10))
    item = _item(paths)
    assert validate_case(item) == (8, 8, 10)
    breaks, error, message = BAD_CASES[name]
    breaks(paths)
    with pytest.raises(error, match=message):
        validate_case(item)


def test_dataset_check_reports_every_bad_case_at_once(tmp_path: Path) -> None:
    for case in ("A", "B", "C"):
        _write_case(tmp_path, case, shape=(8, 8, 10))
    _save(tmp_path / "A" / "A_t2.nii.gz", np.ones((8, 8, 9), dtype=np.int16))  # another shape
    (tmp_path / "C" / "C_flair.nii.gz").write_bytes(b"not a nifti file")  # unreadable
    with pytest.raises(DatasetIntegrityError) as info:
        build_datalist(tmp_path, val_fraction=0.0, test_fraction=0.0)
    err = info.value
    assert isinstance(err, ValueError) and err.num_cases == 3
    assert list(err.problems) == ["A", "C"]  # B is fine; both bad cases, not only the first
    assert re.search(r"A_t2\.nii\.gz: shape \(8, 8, 9\) differs", err.problems["A"])
    assert re.search(r"C_flair\.nii\.gz: cannot read the NIfTI header", err.problems["C"])
    lines = str(err).splitlines()
    assert lines[0] == "2 of 3 case(s) failed the file checks:"
    assert lines[1].startswith("case 'A': ") and lines[2].startswith("case 'C': ") and len(lines) == 3
    assert verify_dataset(scan_brats_folder(tmp_path)[1:2]) == {"B": (8, 8, 10)}


def test_scan_names_every_case_that_misses_a_file(tmp_path: Path) -> None:
    _write_case(tmp_path, "A", skip=("t2",))
    _write_case(tmp_path, "B")
    _write_case(tmp_path, "C", skip=("seg",))
    with pytest.raises(FileNotFoundError) as info:
        scan_brats_folder(tmp_path)
    lines = str(info.value).splitlines()
    assert lines[0] == "2 cases miss files:" and len(lines) == 3
    assert "case 'A'" in lines[1] and "A_t2.nii.gz" in lines[1]
    assert "case 'C'" in lines[2] and "C_seg.nii.gz" in lines[2]


def test_check_brats_cased(tmp_path: Path) -> None:
    paths = _write_case(tmp_path, "C")
    item = _item(paths)
    check = CheckBratsCased(keys=("image", "label"))
    assert check(item) == item
    _save(paths["seg"], np.zeros((8, 8, 7), dtype=np.uint8))
    with pytest.raises(ValueError, match=r"C_seg\.nii\.gz: shape \(8, 8, 7\) differs"):
        CheckBratsCased()(item)
    no_label = {"image": item["image"]}
    assert CheckBratsCased(allow_missing_keys=True)(no_label) == no_label
    with pytest.raises(KeyError):
        CheckBratsCased()(no_label)
    paths["t1ce"].unlink()  # the first problem found, in file order, is reported
    with _raises_in_pipeline(FileNotFoundError, r"C_t1ce\.nii\.gz: file not found"):
        train_transforms(roi_size=8)(item)


def test_check_finited_names_the_modality_file(tmp_path: Path) -> None:
    paths = _write_case(tmp_path, "C")
    bad = np.ones((8, 8, 8), dtype=np.float32)
    bad[1, 2, 3] = np.nan
    bad[0, 0, 0] = np.inf
    _save(paths["t2"], bad)
    with _raises_in_pipeline(ValueError, r"C_t2\.nii\.gz: 1 NaN and 1 infinite values"):
        val_transforms()(_item(paths))
    x = MetaTensor(torch.tensor([[1.0, float("nan")]]), meta={"filename_or_obj": "/x/y.nii.gz"})
    with pytest.raises(ValueError, match=r"/x/y\.nii\.gz: 1 NaN and 0 infinite"):
        CheckFinited(keys="image")({"image": x})
    assert CheckFinited(keys="image")({"image": torch.ones(1, 2)})["image"].shape == (1, 2)


# ------------------------------------------------------------------------------------------------
# label regions
# ------------------------------------------------------------------------------------------------


def test_regions_brats2018_exact() -> None:
    lab = torch.tensor([0, 1, 2, 4, 4, 2, 0, 1], dtype=torch.float32).reshape(1, 2, 2, 2)
    out = convert_labels_to_regions(lab)
    assert out.dtype == torch.float32 and out.shape == (3, 2, 2, 2)
    flat = out.reshape(3, -1)
    assert flat[0].tolist() == [0, 1, 1, 1, 1, 1, 0, 1]  # WT = {1, 2, 4}
    assert flat[1].tolist() == [0, 1, 0, 1, 1, 0, 0, 1]  # TC = {1, 4}
    assert flat[2].tolist() == [0, 0, 0, 1, 1, 0, 0, 0]  # ET = {4}


def test_regions_brats2021_exact_and_meta() -> None:
    affine = torch.diag(torch.tensor([2.0, 2.0, 2.0, 1.0]))
    lab = MetaTensor(
        torch.tensor([0, 1, 2, 3, 3, 2, 0, 1], dtype=torch.float32).reshape(1, 2, 2, 2),
        affine=affine,
        meta={"filename_or_obj": "case_seg.nii.gz"},
    )
    out = ConvertBratsLabelsToRegionsd(keys="label")({"label": lab})["label"]
    assert isinstance(out, MetaTensor)
    assert torch.equal(out.affine, affine.double()) and out.meta["filename_or_obj"] == "case_seg.nii.gz"
    flat = out.reshape(3, -1)
    assert flat[0].tolist() == [0, 1, 1, 1, 1, 1, 0, 1]  # WT = {1, 2, 3}
    assert flat[1].tolist() == [0, 1, 0, 1, 1, 0, 0, 1]  # TC = {1, 3}
    assert flat[2].tolist() == [0, 0, 0, 1, 1, 0, 0, 0]  # ET = {3}
    np_out = convert_labels_to_regions(np.array([[[[0, 1], [2, 4]]]], dtype=np.uint8))
    assert isinstance(np_out, np.ndarray) and np_out.dtype == np.float32 and np_out.shape == (3, 1, 2, 2)


def test_regions_invalid_labels_name_the_file(tmp_path: Path) -> None:
    def meta(values: list[float]) -> MetaTensor:
        t = torch.tensor(values, dtype=torch.float32).reshape(1, 1, 1, -1)
        return MetaTensor(t, meta={"filename_or_obj": "/d/Case_seg.nii.gz"})

    conv = ConvertBratsLabelsToRegionsd(keys="label")
    with pytest.raises(ValueError, match=r"Case_seg\.nii\.gz: invalid label value\(s\) \[5\]"):
        conv({"label": meta([0, 1, 5])})
    with pytest.raises(ValueError, match=r"Case_seg\.nii\.gz: the label map holds both 3 and 4"):
        conv({"label": meta([0, 3, 4])})
    with pytest.raises(ValueError, match=r"Case_seg\.nii\.gz: label values must be integers"):
        conv({"label": meta([0, 1.5])})

    # through the whole pipeline, from a file
    lab = np.zeros((8, 8, 8), dtype=np.uint8)
    lab[2, 2, 2] = 7
    paths = _write_case(tmp_path, "C", label=lab)
    with _raises_in_pipeline(ValueError, r"C_seg\.nii\.gz: invalid label value\(s\) \[7\]"):
        val_transforms()(_item(paths))


# ------------------------------------------------------------------------------------------------
# normalisation
# ------------------------------------------------------------------------------------------------


def _brain_image(seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    img = torch.zeros(2, 20, 20, 20)
    img[:, 4:16, 4:16, 4:16] = 500.0 + 100.0 * torch.randn(2, 12, 12, 12, generator=g)
    img[img < 0] = 1.0
    return img


def test_robust_zscore_brain_statistics() -> None:
    img = _brain_image()
    affine = torch.diag(torch.tensor([1.5, 1.5, 1.5, 1.0]))
    out = RobustZScoreNormalized(keys="image")({"image": MetaTensor(img, affine=affine)})["image"]
    assert isinstance(out, MetaTensor) and out.dtype == torch.float32
    assert torch.equal(out.affine, affine.double())
    brain = img != 0
    assert torch.all(out[~brain] == 0)
    for c in range(2):
        vals = out[c][brain[c]]
        assert abs(float(vals.mean())) < 1e-4
        assert abs(float(vals.std(correction=0)) - 1.0) < 1e-4
    int16 = robust_zscore(img.numpy().astype(np.int16))
    assert isinstance(int16, np.ndarray) and int16.dtype == np.float32


def test_robust_zscore_clips_saturated_voxels() -> None:
    img = _brain_image()
    img[0, 5, 5, 5:8] = 32767.0  # int16-saturated voxels, as in Brats18_TCIA10_637_1
    out = robust_zscore(img)
    brain = img[0] != 0
    assert float(out[0].max()) < 4.0  # clipped to the 99.5th percentile
    naive = (img[0][brain] - img[0][brain].mean()) / img[0][brain].std()
    assert float(naive.max()) > 20.0  # what a plain z-score would give
    assert float(out[0][brain].std(correction=0)) == pytest.approx(1.0, abs=1e-4)
    # the saturated voxels sit at the upper clip value, not above the rest of the brain
    assert float(out[0, 5, 5, 5]) == pytest.approx(float(out[0][brain].max()))


def test_robust_zscore_empty_and_constant_channels(caplog: pytest.LogCaptureFixture) -> None:
    img = torch.zeros(3, 6, 6, 6)
    img[1, 1:4, 1:4, 1:4] = 7.0
    img[2, 1:4, 1:4, 1:4] = torch.arange(27, dtype=torch.float32).reshape(3, 3, 3) + 1
    with caplog.at_level(logging.WARNING, logger="gmd_monai.data.brats"):
        out = robust_zscore(img, source="img.nii.gz")
    assert torch.all(out[:2] == 0)
    assert float(out[2].abs().sum()) > 0
    assert "channel 0 has no nonzero voxel" in caplog.text
    assert "channel 1 is constant" in caplog.text


# ------------------------------------------------------------------------------------------------
# datalists and splits
# ------------------------------------------------------------------------------------------------


def _ids(items: list[dict]) -> list[str]:
    return [it["case"] for it in items]


def test_random_split_deterministic_and_disjoint(synth_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "sub" / "datalist.json"
    a = build_datalist(synth_root, output=out, val_fraction=0.2, test_fraction=0.2, seed=3)
    b = build_datalist(synth_root, val_fraction=0.2, test_fraction=0.2, seed=3)
    assert a == b
    tr, va, te = _ids(a["training"]), _ids(a["validation"]), _ids(a["testing"])
    assert (len(tr), len(va), len(te)) == (4, 1, 1)
    assert set(tr) | set(va) | set(te) == {f"Synth_{i:03d}" for i in range(6)}
    assert not (set(tr) & set(va) or set(tr) & set(te) or set(va) & set(te))
    others = [
        _ids(
            build_datalist(synth_root, val_fraction=0.2, test_fraction=0.2, seed=s, validate=False)["testing"]
        )
        for s in range(6)
    ]
    assert len({tuple(t) for t in others}) > 1  # the seed matters

    written = json.loads(out.read_text())
    assert written == a
    assert written["modalities"] == list(BRATS_MODALITIES)
    assert set(written["labels"]) == {"WT", "TC", "ET"} and "1, 2, 4" in written["labels"]["WT"]
    item = written["training"][0]
    assert set(item) >= {"case", "image", "label"} and len(item["image"]) == 4
    assert all(Path(p).is_absolute() and Path(p).is_file() for p in [*item["image"], item["label"]])


def test_random_split_zero_fractions_and_tiny_datasets(
    synth_root: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    dl = build_datalist(synth_root, val_fraction=0.0, test_fraction=0.0)
    assert len(dl["training"]) == 6 and dl["testing"] == [] and dl["validation"] == dl["training"]
    for n in (1, 2):
        root = tmp_path / f"n{n}"
        for i in range(n):
            _write_case(root, f"Case{i}")
        with caplog.at_level(logging.WARNING, logger="gmd_monai.data.brats"):
            dl = build_datalist(root)
        assert _ids(dl["training"]) == [f"Case{i}" for i in range(n)]
        assert dl["validation"] == dl["training"] and dl["testing"] == []
        assert "validation set is empty" in caplog.text
    with pytest.raises(ValueError, match="must be < 1"):
        build_datalist(synth_root, val_fraction=0.5, test_fraction=0.5)


def test_explicit_list_files(synth_root: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "train.txt").write_text("# training cases\nSynth_000\n\nSynth_001  # a comment\nSynth_002\n")
    (tmp_path / "val.txt").write_text("Synth_003\n")
    (tmp_path / "test.txt").write_text("Synth_004\nMissing_1\nMissing_2\n")
    assert read_case_list(tmp_path / "train.txt") == ["Synth_000", "Synth_001", "Synth_002"]
    lists = {"train_list": tmp_path / "train.txt", "val_list": tmp_path / "val.txt"}
    with pytest.raises(
        ValueError, match=r"2 case\(s\) listed in the split are not in .*: Missing_1, Missing_2"
    ):
        build_datalist(synth_root, test_list=tmp_path / "test.txt", **lists)
    with caplog.at_level(logging.INFO, logger="gmd_monai.data.brats"):
        dl = build_datalist(synth_root, test_list=tmp_path / "test.txt", missing="warn", **lists)
    assert _ids(dl["training"]) == ["Synth_000", "Synth_001", "Synth_002"]
    assert _ids(dl["validation"]) == ["Synth_003"] and _ids(dl["testing"]) == ["Synth_004"]
    assert "Missing_1" in caplog.text and "dropping them" in caplog.text
    assert "1 case(s)" in caplog.text and "left out" in caplog.text  # Synth_005 is in no list

    (tmp_path / "leak.txt").write_text("Synth_000\n")
    with pytest.raises(ValueError, match="'Synth_000' is listed in both training and testing"):
        build_datalist(synth_root, test_list=tmp_path / "leak.txt", **lists)
    with pytest.raises(ValueError, match="not both"):
        build_datalist(synth_root, split_dir=tmp_path, **lists)


def test_split_dir_layout(synth_root: Path, tmp_path: Path) -> None:
    (tmp_path / "train2.txt").write_text("Synth_000\nSynth_001\nSynth_002\nSynth_003\n")
    (tmp_path / "val2.txt").write_text("Synth_004\n")
    (tmp_path / "test2.txt").write_text("Synth_005\n")
    dl = build_datalist(synth_root, split_dir=tmp_path, split=2)
    assert (_ids(dl["validation"]), _ids(dl["testing"])) == (["Synth_004"], ["Synth_005"])
    assert dl["split"] == {"method": "split_dir", "split_dir": str(tmp_path), "split": 2}
    with pytest.raises(FileNotFoundError, match=r"no train1\.txt for split 1"):
        build_datalist(synth_root, split_dir=tmp_path, split=1)


@pytest.mark.realdata
def test_rfnet_split_on_real_cases(caplog: pytest.LogCaptureFixture) -> None:
    _require_real_data()
    with pytest.raises(ValueError, match=r"271 case\(s\) listed in the split are not in"):
        build_datalist(REAL_DIR, split_dir=RFNET_DIR, split=1)
    kept = {}
    for split in (1, 2, 3):
        with caplog.at_level(logging.WARNING, logger="gmd_monai.data.brats"):
            dl = build_datalist(REAL_DIR, split_dir=RFNET_DIR, split=split, missing="warn")
        kept[split] = {k: _ids(dl[k]) for k in ("training", "validation", "testing")}
        assert sum(len(v) for v in kept[split].values()) == 14  # every real case is in each RFNet split
    assert "271 case(s)" in caplog.text
    # kept in list-file order
    assert sorted(kept[1]["testing"]) == ["Brats18_TCIA02_135_1", "Brats18_TCIA10_628_1"]
    assert sorted(kept[1]["validation"]) == ["Brats18_2013_11_1", "Brats18_CBICA_ABM_1"]
    assert len(kept[1]["training"]) == 10 and "Brats18_TCIA10_637_1" in kept[1]["training"]
    assert sorted(kept[3]["testing"]) == [
        "Brats18_2013_3_1",
        "Brats18_CBICA_AME_1",
        "Brats18_TCIA01_425_1",
        "Brats18_TCIA10_637_1",
    ]


# ------------------------------------------------------------------------------------------------
# transform pipelines
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("foreground_prob", [0.0, 0.7])
def test_train_transforms_synthetic(synth_root: Path, foreground_prob: float) -> None:
    dl = build_datalist(synth_root, validate=False)
    tr = train_transforms(roi_size=(24, 24, 24), foreground_prob=foreground_prob)
    tr.set_random_state(seed=0)
    for item in dl["training"][:2]:
        out = tr(item)
        assert isinstance(out, dict)
        img, lab = out["image"], out["label"]
        assert img.shape == (4, 24, 24, 24) and lab.shape == (3, 24, 24, 24)
        assert img.dtype == torch.float32 and lab.dtype == torch.float32
        assert set(torch.unique(lab).tolist()) <= {0.0, 1.0}
        assert torch.all(lab[2] <= lab[1]) and torch.all(lab[1] <= lab[0])  # ET in TC in WT
        assert torch.isfinite(img).all()
        assert isinstance(img, MetaTensor) and img.affine.shape == (4, 4)


def test_train_transforms_pad_small_volume_and_collate(synth_root: Path) -> None:
    dl = build_datalist(synth_root, validate=False)
    ds = Dataset(dl["training"][:2], transform=train_transforms(roi_size=40, foreground_prob=0.5))
    batch = next(iter(DataLoader(ds, batch_size=2, num_workers=0)))
    assert batch["image"].shape == (2, 4, 40, 40, 40) and batch["label"].shape == (2, 3, 40, 40, 40)
    assert batch["case"] == _ids(dl["training"][:2])


def test_val_transforms_with_and_without_label(synth_root: Path) -> None:
    item = scan_brats_folder(synth_root)[0]
    out = val_transforms()(item)
    assert out["image"].shape[0] == 4 and out["label"].shape[0] == 3
    assert out["image"].shape[1:] == out["label"].shape[1:]
    assert all(s <= 32 for s in out["image"].shape[1:])  # cropped to the brain
    full = val_transforms(crop_foreground=False)({"image": item["image"], "case": item["case"]})
    assert "label" not in full and full["image"].shape == (4, 32, 32, 32)
    src = nib.load(item["image"][0])
    assert np.allclose(full["image"].affine.numpy(), src.affine)
    assert full["image"].meta["filename_or_obj"] == item["image"][0]


@pytest.mark.realdata
def test_real_case_header_checks_and_train_transforms() -> None:
    _require_real_data()
    items = scan_brats_folder(REAL_DIR)
    assert len(items) == 14
    for it in items:
        assert validate_case(it) == (240, 240, 155)
    item = next(it for it in items if it["case"] == "Brats18_TCIA10_637_1")  # int16-saturated case
    tr = train_transforms(roi_size=64, foreground_prob=1.0)
    tr.set_random_state(seed=0)
    out = tr(item)
    img, lab = out["image"], out["label"]
    assert img.shape == (4, 64, 64, 64) and lab.shape == (3, 64, 64, 64)
    assert img.dtype == torch.float32 and lab.dtype == torch.float32
    assert set(torch.unique(lab).tolist()) == {0.0, 1.0}  # a foreground-centred crop holds tumour
    assert torch.isfinite(img).all() and float(img.abs().max()) < 10.0  # robust to the saturation


# ------------------------------------------------------------------------------------------------
# loading from CacheDataset's thread pool
# ------------------------------------------------------------------------------------------------


def test_reader_keeps_file_names_per_thread(tmp_path: Path) -> None:
    """Thread A reads a case's 4 files; thread B reads the label with the SAME reader before A stacks:
    A must still get 4 channels (MONAI's NibabelReader gives A one channel, the race behind cached
    1-channel images with ``CacheDataset(num_workers > 1)``)."""
    import threading

    from monai.data import NibabelReader

    from gmd_monai.data.readers import ThreadSafeNibabelReader

    paths = _write_case(tmp_path, "c0")
    images = [str(paths[m]) for m in BRATS_MODALITIES]

    def channels_after_interleaved_read(reader) -> int:
        a_read, b_read = threading.Event(), threading.Event()
        out = {}

        def a() -> None:
            img = reader.read(images)
            a_read.set()
            b_read.wait()
            out["shape"] = reader.get_data(img)[0].shape

        def b() -> None:
            a_read.wait()
            reader.get_data(reader.read(str(paths["seg"])))
            b_read.set()

        threads = [threading.Thread(target=a), threading.Thread(target=b)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return out["shape"][0] if len(out["shape"]) == 4 else 1

    assert channels_after_interleaved_read(NibabelReader()) == 1  # the upstream race, reproduced
    assert channels_after_interleaved_read(ThreadSafeNibabelReader()) == 4


def test_cache_dataset_threads_cache_every_channel(synth_root: Path) -> None:
    """Several cache threads over many cases: every cached image has 4 channels, the label 3, and each
    channel holds its own modality (data/readers.py)."""
    from monai.data import CacheDataset

    items = build_datalist(synth_root, val_fraction=0, test_fraction=0)["training"] * 8
    ds = CacheDataset(items, val_transforms(), cache_rate=1.0, num_workers=4, progress=False)
    reference = val_transforms()(items[0])["image"]
    for i in range(len(ds)):
        assert tuple(ds[i]["image"].shape[:1]) == (4,), f"item {i}"
        assert tuple(ds[i]["label"].shape[:1]) == (3,), f"item {i}"
    for i in range(0, len(ds), len(items) // 8):
        torch.testing.assert_close(ds[i]["image"].as_tensor(), reference.as_tensor())
