"""The model's grid travels with its weights: every inference path resamples to it and brings the label
map back to the patient's grid exactly (shape and affine), for 1 mm and other inputs, 1 mm and 2 mm models."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import ConfigWorkflow

from gmd_monai.checkpointing import model_meta
from gmd_monai.inference import segment
from gmd_monai.inference.model import ModelInfo, load_network, model_config
from gmd_monai.networks import DynamicSharingUNet

ROOT = Path(__file__).resolve().parents[1]
INFER = ROOT / "bundle" / "configs" / "inference.yaml"
MODS = ("t1", "t1ce", "t2", "flair")
SHAPE = (44, 40, 36)


class SphereProbe(torch.nn.Module):
    """A stand-in for the DS network whose output is its input's geometry: all three region logits are
    positive where the mean of the available (z-scored) modalities is high -- a bright sphere in the
    inputs comes back as a tumour sphere, so any flip, shift or scale in the round trip shows."""

    def forward(self, x: torch.Tensor, available=None) -> torch.Tensor:
        logit = 8.0 * (x.mean(1, keepdim=True) - 1.0)
        return logit.expand(-1, 3, *x.shape[2:]).contiguous()


def _affine(spacing, flip: bool) -> np.ndarray:
    a = np.diag([*spacing, 1.0])
    if flip:  # BraTS-like: x and y reversed (LPS on disk), and an origin far from 0
        a[0, 0], a[1, 1] = -spacing[0], -spacing[1]
    a[:3, 3] = [90.0, 120.0, -60.0]
    return a


def _case(tmp: Path, spacing, flip: bool) -> tuple[Path, np.ndarray]:
    """A 4-modality case with a bright sphere of radius 10 mm; returns its folder and the sphere mask."""
    case = tmp / "Case_001"
    case.mkdir(parents=True)
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in SHAPE], indexing="ij"), -1).astype(float)
    mm = grid * np.asarray(spacing)
    centre = np.asarray(SHAPE) * np.asarray(spacing) * np.array([0.45, 0.55, 0.5])
    sphere = np.linalg.norm(mm - centre, axis=-1) < 10.0
    rng = np.random.default_rng(0)
    for m in MODS:
        img = 200 + 20 * rng.standard_normal(SHAPE)
        img[sphere] = 600
        img[:2] = 0  # some background
        nib.save(nib.Nifti1Image(img.astype(np.int16), _affine(spacing, flip)), case / f"Case_001_{m}.nii.gz")
    return case, sphere


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2 * float((a & b).sum()) / float(a.sum() + b.sum())


@pytest.mark.parametrize("model_mm", [1.0, 2.0])
@pytest.mark.parametrize(("spacing", "flip"), [((1.0, 1.0, 1.0), True), ((1.5, 1.2, 2.0), False)])
def test_segment_round_trip(tmp_path, model_mm, spacing, flip):
    case, sphere = _case(tmp_path, spacing, flip)
    info = ModelInfo(path=None, sha256=None, version="probe", width=0.25, trained=True,
                     pixdim=(model_mm,) * 3, axcodes="LPS", roi_size=(32, 32, 32))  # fmt: skip
    res = segment(case_dir=case, output=tmp_path / "out", network=(SphereProbe(), info), montage=False)
    out = nib.load(res.outputs["segmentation"])
    ref = nib.load(case / "Case_001_t1ce.nii.gz")
    assert out.shape == ref.shape
    np.testing.assert_allclose(out.affine, ref.affine, atol=1e-5)
    labels = np.asarray(out.dataobj)
    assert set(np.unique(labels)) <= {0, 4}
    assert _dice(labels > 0, sphere) > (0.9 if model_mm == 1.0 else 0.8)  # back where it was
    assert res.report["inference"]["network_spacing_mm"] == [model_mm] * 3
    assert res.report["reference_grid"]["shape"] == list(ref.shape)


def _checkpoint(tmp: Path, model_mm: float) -> Path:
    torch.manual_seed(0)
    net = DynamicSharingUNet(width=0.25)
    path = tmp / "models" / "model.pt"
    path.parent.mkdir(parents=True)
    meta = model_meta(pixdim=model_mm, axcodes="LPS", width=0.25, roi_size=[32, 32, 32])
    torch.save({"model": net.state_dict(), "model_meta": meta}, path)
    return path


def test_the_checkpoint_says_the_grid(tmp_path):
    path = _checkpoint(tmp_path, 2.0)
    assert model_config(path) == {"width": 0.25, "pixdim": [2.0] * 3, "axcodes": "LPS", "roi_size": [32] * 3}
    _, info = load_network(path)
    assert info.pixdim == (2.0, 2.0, 2.0) and info.roi_size == (32, 32, 32) and info.width == 0.25
    # a bare state_dict (the paper's models) is a 1 mm model
    bare = tmp_path / "bare.pt"
    torch.save(DynamicSharingUNet(width=0.25).state_dict(), bare)
    assert model_config(bare) == {"width": 0.25, "pixdim": [1.0] * 3, "axcodes": "LPS", "roi_size": [128] * 3}
    assert load_network(bare)[1].pixdim == (1.0, 1.0, 1.0)
    assert model_config(tmp_path / "none.pt")["width"] == 0.5  # no weights yet: the configs still parse


@pytest.mark.parametrize("model_mm", [1.0, 2.0])
def test_bundle_inference_round_trip(tmp_path, model_mm):
    case, _ = _case(tmp_path / "in", (1.5, 1.2, 2.0), flip=True)
    ckpt = _checkpoint(tmp_path, model_mm)
    out_dir = str(tmp_path / "out")
    wf = ConfigWorkflow(config_file=str(INFER), workflow_type="infer", bundle_root=str(ROOT / "bundle"),
                        datalist=str(case.parent), output_dir=out_dir, ckpt_path=str(ckpt))  # fmt: skip
    wf.initialize()
    assert wf.parser.get_parsed_content("pixdim") == [model_mm] * 3
    assert wf.parser.get_parsed_content("network_def").width == 0.25  # from the weights, not a flag
    wf.run()
    out = nib.load(tmp_path / "out" / "Case_001_gmdseg.nii.gz")
    ref = nib.load(case / "Case_001_t1ce.nii.gz")
    assert out.shape == ref.shape
    np.testing.assert_allclose(out.affine, ref.affine, atol=1e-5)
    assert out.get_data_dtype() == np.uint8
