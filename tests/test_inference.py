"""The clinician's inference path: inputs, checks, grids, DICOM, outputs, report, CLI, batch.

Real BraTS 2018 cases from ../shared are cropped around the tumour to 64x64x48 and written to a
temporary folder; a width-0.25 DS U-Net (random weights, saved as a checkpoint) keeps every run to
about a second on 2 CPU cores. The network is untrained: these tests check the plumbing, not accuracy.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
import torch
from conftest import crop_brats_case, require_brats, run_cli

from gmd_monai.inference import (
    InputError,
    ModelError,
    load_network,
    regions_to_labels,
    segment,
    segment_batch,
    sources_from_item,
)
from gmd_monai.inference.grid import register_rigid, resample_onto
from gmd_monai.inference.io import find_case_files, find_siblings, read_inference_datalist
from gmd_monai.inference.report import modality_warnings, read_subset_table, reliability
from gmd_monai.networks import DynamicSharingUNet

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
BRATS_DIR = SHARED / "data" / "brats2018"
CASE = "Brats18_2013_11_1"
CROP = (64, 64, 48)
ROI = (64, 64, 48)
MODS = ("t1", "t1ce", "t2", "flair")
ALLOWED_LABELS = {0, 1, 2, 4}


@pytest.fixture(scope="module")
def case_dir(tmp_path_factory) -> Path:
    return crop_brats_case(require_brats() / CASE, tmp_path_factory.mktemp("cases"), CROP)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    net = DynamicSharingUNet(width=0.25)
    path = tmp_path_factory.mktemp("model") / "model.pt"
    torch.save({"model": net.state_dict()}, path)
    return path


@pytest.fixture(scope="module")
def model(ckpt):
    return load_network(ckpt, device="cpu")


def f(case_dir: Path, m: str) -> str:
    return str(case_dir / f"{CASE}_{m}.nii.gz")


def run(model, out, **kw):
    kw.setdefault("montage", False)
    return segment(output=out, network=model, roi_size=ROI, device="cpu", **kw)


# ----------------------------------------------------------------------------------------------
# pure functions
# ----------------------------------------------------------------------------------------------


def test_regions_to_labels_hierarchy():
    p = torch.zeros(3, 5)
    p[:, 0] = torch.tensor([0.9, 0.1, 0.1])  # WT only -> oedema
    p[:, 1] = torch.tensor([0.9, 0.9, 0.1])  # TC -> necrotic core
    p[:, 2] = torch.tensor([0.9, 0.9, 0.9])  # ET
    p[:, 3] = torch.tensor([0.1, 0.1, 0.9])  # ET without WT/TC: still ET (hierarchy by construction)
    p[:, 4] = torch.tensor([0.5, 0.2, 0.2])  # not > 0.5 -> background
    lab = regions_to_labels(p)
    assert lab.dtype == torch.uint8 and lab.shape == (1, 5)
    assert lab[0].tolist() == [2, 1, 4, 4, 0]
    assert regions_to_labels(p, "brats2021")[0].tolist() == [2, 1, 3, 3, 0]
    with pytest.raises(InputError, match="unknown label convention"):
        regions_to_labels(p, "kits")


def test_case_folder_naming_conventions(tmp_path):
    for name in ("P-t1n.nii.gz", "P-t1c.nii.gz", "P-t2f.nii.gz", "P-seg.nii.gz", "notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "t2").mkdir()  # a DICOM series folder named after its modality
    found = find_case_files(tmp_path)
    assert list(found) == ["t1", "t1ce", "t2", "flair"]
    assert found["t1ce"].name == "P-t1c.nii.gz" and found["t2"].name == "t2"
    flat = tmp_path / "flat"
    flat.mkdir()
    for name in ("A_t1ce.nii.gz", "A_flair.nii", "B_t1ce.nii.gz", "A_seg.nii.gz"):
        (flat / name).write_bytes(b"x")
    assert {m: p.name for m, p in find_siblings(flat / "A_flair.nii").items()} == {
        "t1ce": "A_t1ce.nii.gz",
        "flair": "A_flair.nii",
    }
    (flat / "A_t1c.nii.gz").write_bytes(b"x")
    with pytest.raises(InputError, match="two files name the modality t1ce"):
        find_siblings(flat / "A_flair.nii")
    other = tmp_path / "other"
    other.mkdir()
    (other / "report.nii.gz").write_bytes(b"x")
    with pytest.raises(InputError, match="no modality image found"):
        find_case_files(other)
    srcs = sources_from_item({"image": {"T1c": "a.nii.gz", "t2f": "b.nii.gz", "t1": None}})
    assert [(s.modality, s.path.name) for s in srcs] == [("t1ce", "a.nii.gz"), ("flair", "b.nii.gz")]


def test_subset_table_and_reliability(tmp_path):
    (tmp_path / "model.pt").write_bytes(b"")
    assert reliability(["t2"], tmp_path / "model.pt")["measured_dice"] is None
    assert "No measurement is available" in reliability(["t2"], tmp_path / "model.pt")["statement"]
    (tmp_path / "subset_summary.csv").write_text(
        "subset_index,subset,t1,t1ce,t2,flair,dice_wt,dice_tc,dice_et,hd95_wt,hd95_tc,hd95_et,num_cases\n"
        "0,t1+t1ce+t2+flair,1,1,1,1,0.9000,0.8000,0.7000,4.0,6.0,5.0,57\n"
        "10,t2+flair,0,0,1,1,0.8800,0.6000,0.3000,5.0,9.0,12.0,57\n"
        "4,t1ce+t2+flair,0,1,1,1,0.8900,0.7800,0.6900,4.5,6.5,5.5,57\n"
        ",mean,,,,,0.8,0.7,0.6,5,7,8,57\n"
    )
    table = read_subset_table(tmp_path / "subset_summary.csv")
    assert table["t2+flair"]["ET"] == pytest.approx(0.3) and table["t2+flair"]["n_cases"] == 57
    rel = reliability(["flair", "t2"], tmp_path / "model.pt")
    assert rel["measured_dice"] == pytest.approx({"WT": 0.88, "TC": 0.6, "ET": 0.3})
    assert "WT 0.88, TC 0.60, ET 0.30" in rel["statement"] and "57 test cases" in rel["statement"]
    assert "WT 0.90, TC 0.80, ET 0.70" in rel["statement"]  # the full set, for comparison
    warn = modality_warnings(["t2", "flair"], rel)
    assert any(
        "No T1ce" in w and "Measured ET Dice for t2+flair: 0.30 (with T1ce added: 0.69)" in w for w in warn
    )
    assert modality_warnings(["t1"], reliability(["t1"], tmp_path / "model.pt"))[1].startswith(
        "Neither FLAIR nor T2"
    )
    assert "no row for" in reliability(["t1"], tmp_path / "model.pt")["statement"]


# ----------------------------------------------------------------------------------------------
# real cases
# ----------------------------------------------------------------------------------------------


@pytest.mark.realdata
def test_every_subset_size_on_real_case(case_dir, model, tmp_path, monkeypatch):
    net, _ = model
    streams: list[int] = []
    real = net.run_streams
    monkeypatch.setattr(net, "run_streams", lambda x, m: streams.append(x.shape[0]) or real(x, m))
    for subset in (("flair",), ("t1ce", "flair"), ("t1", "t2", "flair"), MODS):
        streams.clear()
        out = tmp_path / "+".join(subset)
        res = run(model, out, montage=True, **{m: f(case_dir, m) for m in subset})
        ref_mod = next(m for m in ("t1ce", "flair", "t2", "t1") if m in subset)
        ref = nib.load(f(case_dir, ref_mod))
        seg = nib.load(res.outputs["segmentation"])
        assert seg.shape == ref.shape and np.array_equal(seg.affine, ref.affine)
        assert seg.get_data_dtype() == np.uint8
        labels = np.asarray(seg.dataobj)
        assert set(np.unique(labels).tolist()) <= ALLOWED_LABELS
        # only the given modality streams ran, once per window (one window here)
        assert streams and set(streams) == {len(subset)}
        report = json.loads(Path(res.outputs["report"]).read_text())
        assert report["modalities_used"] == list(subset) and report["reference_modality"] == ref_mod
        voxel_ml = float(np.prod(ref.header.get_zooms()[:3])) / 1000
        counts = {"ET": int((labels == 4).sum()), "TC": int(np.isin(labels, (1, 4)).sum()),
                  "WT": int((labels > 0).sum())}  # fmt: skip
        assert report["voxel_counts"] == counts
        for r in ("ET", "TC", "WT"):
            assert report["volumes_ml"][r] == pytest.approx(counts[r] * voxel_ml, abs=1e-3)
        assert (
            report["model"]["sha256"]
            == hashlib.sha256(Path(report["model"]["path"]).read_bytes()).hexdigest()
        )
        assert report["elapsed_seconds"] > 0 and report["warnings"]
        assert ("t1ce" in subset) != any("No T1ce" in w for w in report["warnings"])
        png = Path(res.outputs["montage"])
        assert png.stat().st_size > 20_000
        import matplotlib.image

        rgb = matplotlib.image.imread(png)[..., :3]
        assert rgb.shape[0] > 400 and rgb.shape[1] > 400
        assert float(np.abs(rgb[..., 0] - rgb[..., 2]).max()) > 0.3  # coloured overlay drawn
        assert float(rgb.std()) > 0.05


@pytest.mark.realdata
def test_files_case_folder_and_4d_give_identical_output(case_dir, model, tmp_path):
    a = run(model, tmp_path / "a", t1ce=f(case_dir, "t1ce"), flair=f(case_dir, "flair"))
    folder = tmp_path / "P7"
    folder.mkdir()
    for m in ("t1ce", "flair"):  # BraTS 2021+ naming
        (folder / f"P7-{'t1c' if m == 't1ce' else 't2f'}.nii.gz").write_bytes(
            Path(f(case_dir, m)).read_bytes()
        )
    b = run(model, tmp_path / "b", case_dir=folder)
    ref = nib.load(f(case_dir, "t1ce"))
    stacked = np.stack([np.asarray(nib.load(f(case_dir, m)).dataobj) for m in ("flair", "t1ce")], axis=-1)
    four_d = tmp_path / "p_4d.nii.gz"
    nib.save(nib.Nifti1Image(stacked, ref.affine), four_d)
    c = run(model, tmp_path / "c", image=four_d, channels="flair,t1ce")
    assert b.case == "P7" and c.report["modalities_used"] == ["t1ce", "flair"]
    outs = [nib.load(r.outputs["segmentation"]) for r in (a, b, c)]
    for o in outs:
        assert np.array_equal(o.affine, ref.affine) and o.shape == ref.shape
    assert np.array_equal(np.asarray(outs[0].dataobj), np.asarray(outs[1].dataobj))
    assert np.array_equal(np.asarray(outs[0].dataobj), np.asarray(outs[2].dataobj))


def _resample_spacing(img: sitk.Image, spacing) -> sitk.Image:
    """Same field of view at another voxel size (edges aligned)."""
    size = [int(round(n * s / t)) for n, s, t in zip(img.GetSize(), img.GetSpacing(), spacing)]
    origin = img.TransformContinuousIndexToPhysicalPoint(
        [(t / s - 1) / 2 for s, t in zip(img.GetSpacing(), spacing)]
    )
    identity = sitk.Transform()
    return sitk.Resample(
        img, size, identity, sitk.sitkLinear, origin, spacing, img.GetDirection(), 0.0, img.GetPixelID()
    )


@pytest.mark.realdata
def test_modality_on_another_grid_is_resampled(case_dir, model, tmp_path):
    t2_2mm = tmp_path / "P_t2.nii.gz"
    sitk.WriteImage(_resample_spacing(sitk.ReadImage(f(case_dir, "t2")), (2.0, 2.0, 2.0)), str(t2_2mm))
    res = run(model, tmp_path / "o", t1ce=f(case_dir, "t1ce"), t2=t2_2mm, probabilities=True)
    ref = nib.load(f(case_dir, "t1ce"))
    seg = nib.load(res.outputs["segmentation"])
    assert seg.shape == ref.shape and np.array_equal(seg.affine, ref.affine)
    assert res.report["inputs"]["t2"]["resampled"] and res.report["inputs"]["t2"]["spacing_mm"] == [
        2.0,
        2.0,
        2.0,
    ]
    assert any(
        "t2" in w and "not on the voxel grid" in w and "spacing (2, 2, 2)" in w
        for w in res.report["warnings"]
    )
    prob = nib.load(res.outputs["probabilities"])
    assert prob.shape == (*ref.shape, 3) and np.array_equal(prob.affine, ref.affine)
    p = np.asarray(prob.dataobj)
    assert 0.0 <= p.min() and p.max() <= 1.0
    # the label map is the thresholded probabilities (ET wins over TC over WT)
    assert np.array_equal(regions_to_labels(np.moveaxis(p, -1, 0))[0], np.asarray(seg.dataobj))

    # a reference far from 1 mm: resampled to the model grid for the network, result back on its own grid
    flair_2mm = tmp_path / "Q_flair.nii.gz"
    sitk.WriteImage(_resample_spacing(sitk.ReadImage(f(case_dir, "flair")), (2.0, 2.0, 2.0)), str(flair_2mm))
    res2 = run(model, tmp_path / "o2", flair=flair_2mm)
    seg2 = nib.load(res2.outputs["segmentation"])
    assert seg2.shape == (32, 32, 24) and np.allclose(seg2.header.get_zooms(), 2.0)
    assert np.array_equal(seg2.affine, nib.load(flair_2mm).affine)
    assert res2.report["voxel_volume_ml"] == pytest.approx(0.008)
    assert any("far from the 1 mm isotropic BraTS" in w for w in res2.report["warnings"])


def write_dicom_series(image: sitk.Image, folder: Path) -> None:
    """A 3-D image as an MR DICOM series, one file per slice (the SimpleITK example's tags)."""
    folder.mkdir(parents=True)
    img = sitk.Cast(image, sitk.sitkInt16)
    d = img.GetDirection()
    tags = {
        "0008|0060": "MR",
        "0008|103e": "T1ce test series",
        "0020|000d": "1.2.826.0.1.3680043.2.1125.1.1",
        "0020|000e": "1.2.826.0.1.3680043.2.1125.1.2",
        "0020|0037": "\\".join(str(v) for v in (d[0], d[3], d[6], d[1], d[4], d[7])),
        "0018|0050": str(img.GetSpacing()[2]),
    }
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for k in range(img.GetDepth()):
        sl = img[:, :, k]
        for tag, value in tags.items():
            sl.SetMetaData(tag, value)
        sl.SetMetaData("0008|0018", f"1.2.826.0.1.3680043.2.1125.1.3.{k + 1}")
        sl.SetMetaData("0020|0032", "\\".join(str(v) for v in img.TransformIndexToPhysicalPoint((0, 0, k))))
        sl.SetMetaData("0020|0013", str(k + 1))
        writer.SetFileName(str(folder / f"slice{k:04d}.dcm"))
        writer.Execute(sl)


@pytest.mark.realdata
def test_dicom_series_segments_like_nifti(case_dir, model, tmp_path):
    dicom = tmp_path / "dicom" / "t1ce"
    write_dicom_series(sitk.ReadImage(f(case_dir, "t1ce")), dicom)
    a = run(model, tmp_path / "a", t1ce=f(case_dir, "t1ce"), flair=f(case_dir, "flair"))
    b = run(model, tmp_path / "b" / "seg.nii.gz", t1ce=dicom, flair=f(case_dir, "flair"))
    assert b.report["inputs"]["t1ce"]["format"] == "dicom" and not b.report["inputs"]["flair"]["resampled"]
    sa, sb = nib.load(a.outputs["segmentation"]), nib.load(b.outputs["segmentation"])
    assert sb.shape == sa.shape and np.allclose(sb.affine, sa.affine, atol=1e-4)
    assert np.array_equal(np.asarray(sa.dataobj), np.asarray(sb.dataobj))
    assert Path(b.outputs["report"]).name == "seg_report.json"


@pytest.mark.realdata
def test_rigid_registration(case_dir, model, tmp_path):
    flair = sitk.ReadImage(f(case_dir, "flair"), sitk.sitkFloat32)
    shift = (3.0, -2.0, 2.0)
    moved = resample_onto(
        flair, flair, transform=sitk.TranslationTransform(3, shift)
    )  # content moves by -shift
    result = register_rigid(fixed=moved, moving=flair)
    assert np.allclose(result.translation_mm, shift, atol=0.5)
    assert np.all(np.abs(result.rotation_deg) < 1.0)
    moved_path = tmp_path / "P_flair.nii.gz"
    sitk.WriteImage(moved, str(moved_path))
    res = run(model, tmp_path / "o", t1ce=f(case_dir, "t1ce"), flair=moved_path, register=True)
    reg = res.report["inputs"]["flair"]
    assert reg["resampled"] and len(reg["registered"]["translation_mm"]) == 3
    assert res.labels.shape == CROP


@pytest.mark.realdata
def test_brats2021_labels_and_checkpoint_formats(case_dir, model, ckpt, tmp_path):
    net, _ = model
    bare = tmp_path / "bare" / "model.pt"
    bare.parent.mkdir()
    torch.save(net.state_dict(), bare)  # a bare state_dict loads as well
    (bare.parent / "subset_dice.csv").write_text("subset,WT,TC,ET,n_cases\nflair,85.0,60.5,20.25,12\n")
    a = segment(flair=f(case_dir, "flair"), output=tmp_path / "a", model=ckpt, roi_size=ROI, device="cpu",
                montage=False)  # fmt: skip
    b = segment(flair=f(case_dir, "flair"), output=tmp_path / "b", model=bare, roi_size=ROI, device="cpu",
                montage=False, labels="brats2021")  # fmt: skip
    la, lb = a.labels, b.labels
    assert set(np.unique(lb).tolist()) <= {0, 1, 2, 3}
    assert np.array_equal(np.where(la == 4, 3, la), lb)
    assert b.report["labels"]["values"]["3"] == "enhancing tumour (ET)"
    assert b.report["volumes_ml"] == a.report["volumes_ml"]
    assert a.report["model"]["sha256"] != b.report["model"]["sha256"] and b.report["model"]["width"] == 0.25
    assert a.report["reliability"]["measured_dice"] is None
    assert b.report["reliability"]["measured_dice"] == pytest.approx({"WT": 0.85, "TC": 0.605, "ET": 0.2025})
    assert any("Measured ET Dice for flair: 0.20" in w for w in b.report["warnings"])
    with pytest.raises(ModelError, match="not a network state_dict"):
        (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
        torch.save({"model": {"a": 1}}, tmp_path / "junk.pt")
        load_network(tmp_path / "junk.pt")


# ----------------------------------------------------------------------------------------------
# errors and the command line
# ----------------------------------------------------------------------------------------------


def _nifti(path: Path, data: np.ndarray, affine=None) -> str:
    nib.save(nib.Nifti1Image(data, np.eye(4) if affine is None else affine), path)
    return str(path)


@pytest.fixture
def bad(case_dir, tmp_path) -> SimpleNamespace:
    """The inputs of the bad-input table: a real case's files and broken files beside them."""
    d = tmp_path / "bad"
    d.mkdir()
    garbage = d / "g_t2.nii.gz"
    garbage.write_bytes(b"this is not an image")
    nan = np.random.default_rng(0).random(CROP).astype(np.float32)
    nan[3, 4, 5] = np.nan
    inf = nan.copy()
    inf[3, 4, 5] = np.inf
    flair = f(case_dir, "flair")
    copy = d / "copy_flair.nii.gz"
    copy.write_bytes(Path(flair).read_bytes())
    return SimpleNamespace(
        dir=d,
        case_dir=case_dir,
        t1ce=f(case_dir, "t1ce"),
        flair=flair,
        garbage=str(garbage),
        copy=str(copy),
        four_d=_nifti(d / "four.nii.gz", np.random.default_rng(1).random((*CROP, 2)).astype(np.float32)),
        flat=_nifti(d / "flat.nii.gz", np.ones((64, 64), np.float32) + np.eye(64)),
        nan=_nifti(d / "nan.nii.gz", nan),
        inf=_nifti(d / "inf.nii.gz", inf),
        const=_nifti(d / "const.nii.gz", np.full(CROP, 7, np.int16)),
    )


#: name -> (arguments of `gmd-monai segment`, what its one error line must contain), from the inputs `b`
BAD_INPUTS = {
    "missing_file": lambda b: (
        ["--t1ce", str(b.dir / "missing.nii.gz")],
        ["missing.nii.gz", "file not found"],
    ),
    "garbage_bytes": lambda b: (["--t1ce", b.t1ce, "--t2", b.garbage], [b.garbage, "unreadable image file"]),
    "unknown_modality_option": lambda b: (
        ["--t1ce", b.t1ce, "--dwi", b.flair],
        ["unknown option or modality name --dwi"],
    ),
    "unknown_channel_name": lambda b: (
        ["--image", b.four_d, "--channels", "t1,dwi"],
        ["unknown modality name 'dwi'"],
    ),
    "channel_count": lambda b: (
        ["--image", b.four_d, "--channels", "t1,t2,flair"],
        [b.four_d, "2 volumes but 3 channel names"],
    ),
    "4d_without_channels": lambda b: (["--image", b.four_d], [b.four_d, "needs the list of its channels"]),
    "4d_as_one_modality": lambda b: (["--t2", b.four_d], [b.four_d, "4-D image with 2 volumes, not 3-D"]),
    "2d_image": lambda b: (["--t2", b.flat], ["2-D image"]),
    "nan": lambda b: (["--t2", b.nan], ["nan.nii.gz", "1 NaN and 0 infinite voxel values"]),
    "inf": lambda b: (["--t2", b.inf], ["inf.nii.gz", "0 NaN and 1 infinite voxel values"]),
    "constant_image": lambda b: (["--t1", b.const], ["const.nii.gz", "constant image"]),
    "no_modality": lambda b: ([], ["no modality given"]),
    "same_file_twice": lambda b: (["--t1", b.flair, "--flair", b.flair], [b.flair, "same file"]),
    "identical_voxels": lambda b: (["--t1", b.copy, "--flair", b.flair], ["identical voxel data"]),
    "two_ways_of_input": lambda b: (
        ["--case_dir", str(b.case_dir), "--t1", b.flair],
        ["give the inputs one way"],
    ),
    "case_folder_missing": lambda b: (["--case_dir", str(b.dir / "nowhere")], ["case folder not found"]),
    "label_convention": lambda b: (
        ["--t1ce", b.t1ce, "--labels", "kits"],
        ["unknown label convention 'kits'"],
    ),
    "device": lambda b: (
        ["--t1ce", b.t1ce, "--device", "cuda:7" if not torch.cuda.is_available() else "tpu"],
        ["--device"],
    ),
    "output_is_an_input": lambda b: (
        ["--t1ce", b.t1ce, "--output", b.t1ce],
        ["would overwrite an input file"],
    ),
    "model_missing": lambda b: (
        ["--t1ce", b.t1ce, "--model", str(b.dir / "none.pt")],
        ["none.pt: model file not found"],
    ),
}


@pytest.mark.realdata
@pytest.mark.parametrize("name", list(BAD_INPUTS))
def test_bad_inputs_give_clear_errors(name, bad, ckpt, tmp_path, capsys):
    args, expected = BAD_INPUTS[name](bad)
    out_dir = tmp_path / "out"
    defaults = [] if "--output" in args else ["--output", str(out_dir)]
    defaults += [] if "--model" in args else ["--model", str(ckpt)]
    code, _, err = run_cli(["segment", *args, *defaults, "--quiet"], capsys)
    lines = [ln for ln in err.strip().splitlines() if ln.startswith("gmd-monai")]
    assert code == 2, (args, err)
    assert len(lines) == 1 and "Traceback" not in err, err
    for e in expected:
        assert e in lines[0], (args, lines[0])
    assert not out_dir.exists() or not any(out_dir.iterdir())  # nothing half-written


@pytest.mark.realdata
def test_without_weights_the_cli_says_how_to_get_them(case_dir, tmp_path, capsys, monkeypatch):
    import gmd_monai.inference.model as model_mod

    missing = tmp_path / "bundle" / "models" / "model.pt"
    monkeypatch.setattr(model_mod, "default_model_path", lambda: missing)
    out = tmp_path / "out"
    code, _, err = run_cli(["segment", "--t2", f(case_dir, "t2"), "--output", str(out)], capsys)
    assert code == 2 and f"no trained weights at {missing}" in err
    assert "monai.bundle run training" in err and "--model" in err and "--allow_untrained" in err
    assert not out.exists()
    with pytest.raises(ModelError):
        load_network()
    # --allow_untrained: smoke tests only, and the report says so
    args = ["segment", "--t2", f(case_dir, "t2"), "--output", str(out), "--allow_untrained",
            "--roi_size", "64,64,48", "--nomontage", "--quiet"]  # fmt: skip
    code, stdout, _ = run_cli(args, capsys)
    assert code == 0 and "UNTRAINED" in stdout
    report = json.loads((out / f"{CASE}_report.json").read_text())
    assert report["model"]["trained"] is False and report["warnings"][0].startswith("UNTRAINED model")
    assert not (out / f"{CASE}_montage.png").exists()


@pytest.mark.realdata
def test_cli_success_and_module_entry_point(case_dir, ckpt, tmp_path, capsys):
    out = tmp_path / "seg.nii.gz"
    args = ["segment", "--t1ce", f(case_dir, "t1ce"), "--t2f", f(case_dir, "flair"), "--model", str(ckpt),
            "--output", str(out), "--roi_size", "64,64,48", "--device", "cpu", "--quiet"]  # fmt: skip
    code, stdout, _ = run_cli(args, capsys)
    assert code == 0 and "volumes (mL):" in stdout and "t1ce+flair" in stdout
    code, stdout, _ = run_cli(["segment", "--help"], capsys)
    assert code == 0 and "Examples:" in stdout and "--case_dir" in stdout
    assert (
        out.is_file()
        and (tmp_path / "seg_montage.png").is_file()
        and (tmp_path / "seg_report.json").is_file()
    )
    # the real process: exit code 2 and one line, no traceback
    cmd = [sys.executable, "-m", "gmd_monai", "segment", "--t1ce", str(tmp_path / "none.nii.gz"), "--quiet"]
    bad = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert bad.stderr.strip().splitlines()[-1].startswith("gmd-monai segment: error:")
    assert "none.nii.gz: file not found" in bad.stderr


@pytest.mark.realdata
def test_batch_mode(case_dir, ckpt, tmp_path, capsys):
    root = tmp_path / "cases"
    good = root / "A01"
    good.mkdir(parents=True)
    for m in ("t1ce", "t2"):
        (good / f"A01_{m}.nii.gz").write_bytes(Path(f(case_dir, m)).read_bytes())
    broken = root / "B02"
    broken.mkdir()
    _nifti(broken / "B02_flair.nii.gz", np.zeros(CROP, np.int16))
    (root / "not_a_case").mkdir()
    out = tmp_path / "out"
    args = [
        "segment_batch",
        str(root),
        str(out),
        "--model",
        str(ckpt),
        "--roi_size",
        "64,64,48",
        "--nomontage",
    ]
    code, stdout, err = run_cli(args, capsys)
    assert code == 2 and "1 of 2 case(s) segmented" in stdout and "B02" in err and "constant image" in err
    summary = (out / "batch_summary.csv").read_text().splitlines()
    assert summary[0].startswith("case,status,modalities") and len(summary) == 3
    assert summary[1].startswith("A01,ok,t1ce+t2") and summary[2].startswith("B02,failed")
    assert (out / "A01_gmdseg.nii.gz").is_file() and (out / "A01_report.json").is_file()
    assert not list(out.glob("B02*"))
    with pytest.raises(InputError, match="no case folder found"):
        segment_batch(root / "not_a_case", out)
    items = read_inference_datalist(root)
    assert [it["case"] for it in items] == ["A01", "B02"] and set(items[0]["image"]) == {"t1ce", "t2"}
