"""The shipped weights (bundle/models/model.pt): they load, say their grid, and segment a real case.

The real-data checks skip without ../shared (see ../shared/README.md); the weights are in the repository.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import nibabel as nib
import numpy as np
from monai.bundle import ConfigWorkflow

from gmd_monai.inference import segment
from gmd_monai.inference.model import default_model_path, load_network, model_config

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "bundle" / "models"
VAL_LIST = ROOT / "bundle" / "configs" / "splits" / "shipped_val.txt"
CASE = "Brats18_CBICA_AME_1"  # a validation case of the shipped model (never trained on)


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2 * float((a & b).sum()) / max(1.0, float(a.sum() + b.sum()))


def test_shipped_weights_describe_themselves():
    path = default_model_path()
    assert path.is_file() and path.stat().st_size < 25 * 2**20
    net, info = load_network(path)
    meta = json.loads((ROOT / "bundle" / "configs" / "metadata.json").read_text())
    assert list(info.pixdim) == meta["model_grid"]["pixdim"] == model_config(path)["pixdim"]
    assert info.axcodes == meta["model_grid"]["axcodes"]
    assert info.width == meta["model_grid"]["width"] and info.meta["method"] == "gmd"
    # the 15-subset evaluation of the validation cases is shipped next to the weights
    with open(MODELS / "subset_summary.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["subset_index"] != ""]
    assert len(rows) == 15
    assert CASE in VAL_LIST.read_text()


def test_shipped_model_segments_a_validation_case(brats_dir, tmp_path):
    case = brats_dir / CASE
    res = segment(case_dir=case, output=tmp_path / "cli", montage=False)
    out = nib.load(res.outputs["segmentation"])
    truth_img = nib.load(case / f"{CASE}_seg.nii.gz")
    assert out.shape == truth_img.shape
    np.testing.assert_allclose(out.affine, truth_img.affine, atol=1e-5)
    pred, truth = np.asarray(out.dataobj), np.asarray(truth_img.dataobj)
    wt = _dice(pred > 0, truth > 0)
    assert wt >= 0.80, f"WT Dice {wt:.3f} with all four modalities"
    assert res.report["model"]["trained"] and res.report["inference"]["network_spacing_mm"] == [2.0] * 3
    # the bundle's inference workflow (what MONAI Label runs) loads the same weights: same label map
    wf = ConfigWorkflow(
        config_file=str(ROOT / "bundle" / "configs" / "inference.yaml"),
        workflow_type="infer",
        bundle_root=str(ROOT / "bundle"),
        datalist=[{"image": str(case / f"{CASE}_t1ce.nii.gz")}],  # one file: its siblings are found
        output_dir=str(tmp_path / "bundle"),
    )
    wf.initialize()
    wf.run()
    bundle_pred = np.asarray(nib.load(next((tmp_path / "bundle").glob("*.nii.gz"))).dataobj)
    assert bundle_pred.shape == truth.shape
    assert _dice(bundle_pred > 0, pred > 0) > 0.99
