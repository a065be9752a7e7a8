"""bundle/configs/inference.yaml: infer-workflow properties, any-subset datalists, same output as the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from conftest import crop_brats_case, require_brats
from monai.bundle import ConfigParser, ConfigWorkflow
from monai.data import MetaTensor

from gmd_monai.inference import InputError, ModalitySlidingWindowInferer, ModelError, load_network, segment
from gmd_monai.networks import DynamicSharingUNet

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "bundle" / "configs" / "inference.yaml"
TRAIN = ROOT / "bundle" / "configs" / "train.yaml"
SHARED = ROOT.parent / "shared"
BRATS_DIR = SHARED / "data" / "brats2018"
CASE = "Brats18_TCIA02_135_1"
CROP = (64, 64, 48)
MODS = ("t1", "t1ce", "t2", "flair")


def test_infer_workflow_properties_and_network_def():
    wf = ConfigWorkflow(config_file=str(CONFIG), workflow_type="infer")
    wf.initialize()
    assert wf.check_properties() == []
    # the same network as training (the shipped model's recipe: train.yaml + train_cpu.yaml), its width
    # read from the shipped weights: class, modalities, outputs, width, parameter shapes
    train = ConfigParser()
    train.read_config([str(TRAIN), str(TRAIN.parent / "train_cpu.yaml")])
    a, b = wf.parser.get_parsed_content("network_def"), train.get_parsed_content("network_def")
    assert type(a) is type(b) is DynamicSharingUNet
    assert (a.modalities, a.out_channels, a.width) == (b.modalities, b.out_channels, b.width)
    assert a.width == load_network()[1].width
    assert {k: v.shape for k, v in a.state_dict().items()} == {k: v.shape for k, v in b.state_dict().items()}
    assert wf.parser["postprocessing"]["transforms"][-1]["output_dtype"] == "$numpy.uint8"


@pytest.mark.parametrize("label_format, et", [("brats2018", 4), ("brats2021", 3)])
def test_label_names_are_the_values_the_map_holds(label_format, et):
    """MONAI Label shows `label_names` (bundle/monailabel/main.py): one name per value the map can hold."""
    parser = ConfigParser()
    parser.read_config(str(CONFIG))
    parser["label_format"] = label_format
    names = parser.get_parsed_content("label_names")
    assert sorted(int(v) for v in names) == [0, 1, 2, et]
    assert names["0"] == "background" and "necrotic" in names["1"] and "oedema" in names["2"]
    assert "enhancing" in names[str(et)]


def test_inferer_runs_only_the_named_streams():
    seen: list[tuple[int, tuple[str, ...]]] = []

    class Stub(torch.nn.Module):
        def forward(self, x, available=None):
            seen.append((x.shape[1], tuple(available)))
            return torch.zeros(x.shape[0], 3, *x.shape[2:])

    inferer = ModalitySlidingWindowInferer(roi_size=(16, 16, 16), overlap=0.0)
    x = MetaTensor(torch.rand(1, 2, 20, 16, 16), meta={"modalities": ["t1ce+flair"]})  # as collated
    assert inferer(x, Stub()).shape == (1, 3, 20, 16, 16)
    assert seen and set(seen) == {(2, ("t1ce", "flair"))}
    seen.clear()
    inferer(torch.rand(1, 4, 16, 16, 16), Stub())
    assert set(seen) == {(4, MODS)}
    with pytest.raises(ValueError, match="no modality names"):
        inferer(torch.rand(1, 3, 16, 16, 16), Stub())
    with pytest.raises(ValueError, match="mixes modality subsets"):
        inferer(MetaTensor(torch.rand(2, 1, 16, 16, 16), meta={"modalities": ["t1", "t2"]}), Stub())


def _run_bundle_inference(datalist: dict, ckpt: Path, tmp_path: Path) -> tuple[Path, Path]:
    """Run ``inference.yaml`` on ``datalist`` with the weights ``ckpt`` (width 0.25, a 64x64x48 window):
    ``(datalist file, output folder)``."""
    dl = tmp_path / "datalist.json"
    dl.write_text(json.dumps(datalist))
    out = tmp_path / "out"
    wf = ConfigWorkflow(config_file=str(CONFIG), workflow_type="infer", datalist=str(dl), output_dir=str(out),
                        ckpt_path=str(ckpt), width=0.25, roi_size=[64, 64, 48])  # fmt: skip
    wf.initialize()
    wf.run()
    wf.finalize()
    return dl, out


@pytest.mark.realdata
def test_bundle_inference_any_subset_matches_cli(tmp_path):
    case = crop_brats_case(require_brats() / CASE, tmp_path / "src", CROP, with_label=False)
    f = {m: case / f"{CASE}_{m}.nii.gz" for m in MODS}
    torch.manual_seed(1)
    ckpt = tmp_path / "models" / "model.pt"
    ckpt.parent.mkdir()
    torch.save(DynamicSharingUNet(width=0.25).state_dict(), ckpt)  # a bare state_dict

    four_d = tmp_path / "p4d.nii.gz"  # 4 volumes in the project's order (t1, t1ce, t2, flair)
    ref = nib.load(f["t1ce"])
    nib.save(
        nib.Nifti1Image(np.stack([np.asarray(nib.load(f[m]).dataobj) for m in MODS], -1), ref.affine), four_d
    )
    flat = tmp_path / "flat"  # MONAI Label's convention: one path per case, siblings found by name
    flat.mkdir()
    for m in ("t2", "flair"):
        (flat / f"C_{m}.nii.gz").write_bytes(f[m].read_bytes())
    (flat / "D_t2.nii.gz").write_bytes(f["t1"].read_bytes())  # another case in the same folder
    datalist = {
        "testing": [
            {"case": "A", "image": {"t1ce": str(f["t1ce"]), "flair": str(f["flair"])}},
            {"image": str(four_d)},
            str(flat / "C_flair.nii.gz"),
            {"image": ["src/" + CASE + "/" + f["t1"].name], "modalities": ["t1"], "case": "E"},  # relative
        ]
    }
    dl, out = _run_bundle_inference(datalist, ckpt, tmp_path)
    expected = {"A": f["t1ce"], "p4d": four_d, "C": flat / "C_flair.nii.gz", "E": f["t1"]}
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{k}_gmdseg.nii.gz" for k in expected)
    for name, reference in expected.items():
        seg = nib.load(out / f"{name}_gmdseg.nii.gz")
        r = nib.load(reference)
        assert seg.shape == r.shape[:3] and np.allclose(seg.affine, r.affine, atol=1e-4)
        assert seg.get_data_dtype() == np.uint8
        assert set(np.unique(np.asarray(seg.dataobj)).tolist()) <= {0, 1, 2, 4}

    # the same case through the CLI pipeline gives the same label map
    cli = segment(t1ce=f["t1ce"], flair=f["flair"], output=tmp_path / "cli", network=load_network(ckpt),
                  roi_size=(64, 64, 48), montage=False, device="cpu")  # fmt: skip
    assert np.array_equal(np.asarray(nib.load(out / "A_gmdseg.nii.gz").dataobj), cli.labels)

    # a second run into the same folder never replaces a result, unless --overwrite true
    before = (out / "A_gmdseg.nii.gz").stat().st_mtime_ns
    for overwrite, replaced in ((False, False), ("true", True)):
        wf = ConfigWorkflow(config_file=str(CONFIG), workflow_type="infer", datalist=str(dl),
                            output_dir=str(out), ckpt_path=str(ckpt), width=0.25, roi_size=[64, 64, 48],
                            overwrite=overwrite)  # fmt: skip
        wf.initialize()
        if replaced:
            wf.run()
        else:
            with pytest.raises(Exception) as err:
                wf.run()
            chain, e = [], err.value
            while e is not None:  # MONAI wraps the transform's error once per Compose level
                chain.append(str(e))
                e = e.__cause__
            assert any("A_gmdseg.nii.gz: already exists" in m for m in chain), chain
        assert ((out / "A_gmdseg.nii.gz").stat().st_mtime_ns != before) is replaced

    # clear errors before anything runs: no weights, no datalist
    wf = ConfigWorkflow(config_file=str(CONFIG), workflow_type="infer", datalist=str(dl), output_dir=str(out),
                        ckpt_path=str(tmp_path / "none" / "model.pt"))  # fmt: skip
    wf.initialize()
    with pytest.raises(RuntimeError) as err:  # MONAI wraps errors of config expressions
        wf.run()
    assert isinstance(err.value.__cause__, ModelError) and "no trained weights at" in str(err.value.__cause__)
    assert "none/model.pt" in str(err.value.__cause__)
    missing = str(tmp_path / "nothing.json")
    wf = ConfigWorkflow(config_file=str(CONFIG), workflow_type="infer", datalist=missing, ckpt_path=str(ckpt))
    wf.initialize()
    with pytest.raises(RuntimeError) as err:
        wf.run()
    assert isinstance(err.value.__cause__, InputError)
    assert "nothing.json: datalist not found" in str(err.value.__cause__)


def test_bundle_reads_nrrd_and_dicom_like_nifti(tmp_path):
    """ITK formats through the bundle: a case whose T1ce is an .nrrd file and whose FLAIR is a DICOM
    series folder gives the label map (values, shape, affine) of the same images as NIfTI files."""
    import SimpleITK as sitk
    from test_inference import write_dicom_series

    rng = np.random.default_rng(0)
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in (48, 64, 64)], indexing="ij"), -1)  # z, y, x
    blob = np.linalg.norm(grid - (24, 30, 34), axis=-1) < 9

    def image(seed_shift: float) -> sitk.Image:
        arr = (200 + 30 * rng.standard_normal(blob.shape) + (400 + seed_shift) * blob).astype(np.int16)
        arr[:, :4] = 0
        img = sitk.GetImageFromArray(arr)
        img.SetSpacing((1.0, 1.0, 1.5))
        img.SetOrigin((-31.0, 12.5, -40.0))
        return img

    t1ce, flair = image(0.0), image(150.0)
    nifti, itk_case = tmp_path / "nifti", tmp_path / "itk"
    nifti.mkdir()
    itk_case.mkdir()
    sitk.WriteImage(t1ce, str(nifti / "G_t1ce.nii.gz"))
    sitk.WriteImage(flair, str(nifti / "G_flair.nii.gz"))
    sitk.WriteImage(t1ce, str(itk_case / "F_t1ce.nrrd"))
    write_dicom_series(flair, itk_case / "F_flair")
    torch.manual_seed(2)
    ckpt = tmp_path / "models" / "model.pt"
    ckpt.parent.mkdir()
    torch.save(DynamicSharingUNet(width=0.25).state_dict(), ckpt)
    datalist = {
        "testing": [
            {
                "case": "G",
                "image": {"t1ce": str(nifti / "G_t1ce.nii.gz"), "flair": str(nifti / "G_flair.nii.gz")},
            },
            {
                "case": "F",
                "image": {"t1ce": str(itk_case / "F_t1ce.nrrd"), "flair": str(itk_case / "F_flair")},
            },
        ]
    }
    _, out = _run_bundle_inference(datalist, ckpt, tmp_path)
    g, f = nib.load(out / "G_gmdseg.nii.gz"), nib.load(out / "F_gmdseg.nii.gz")
    assert f.shape == g.shape == (64, 64, 48)
    assert np.allclose(f.affine, g.affine, atol=1e-4) and np.allclose(
        g.affine, nib.load(nifti / "G_t1ce.nii.gz").affine
    )
    labels = np.asarray(g.dataobj)
    assert 0.0 < float((labels > 0).mean()) < 1.0  # neither empty nor full: the comparison means something
    assert np.array_equal(np.asarray(f.dataobj), labels)
    assert set(np.unique(labels).tolist()) <= {0, 1, 2, 4}
