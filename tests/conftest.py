from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
BRATS_DIR = SHARED / "data" / "brats2018"


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(2)
    yield


def require_brats() -> Path:
    """The real BraTS cases of ../shared, or skip the test with a message that says where they should be
    (the one real-data skip of the suite: fixtures of any scope call it)."""
    if not BRATS_DIR.is_dir():
        pytest.skip(f"real BraTS cases not available ({BRATS_DIR} is absent; see ../shared/README.md)")
    return BRATS_DIR


@pytest.fixture
def brats_dir() -> Path:
    return require_brats()


def crop_brats_case(src: Path, dst: Path, size=(64, 64, 48), with_label: bool = True) -> Path:
    """Write a BraTS 2018 case's files cropped to ``size`` around the tumour centre, the affine shifted
    so that every voxel keeps its world position; returns the new case folder ``dst/<case>``."""
    case = src.name
    out = dst / case
    out.mkdir(parents=True, exist_ok=True)
    seg = np.asarray(nib.load(src / f"{case}_seg.nii.gz").dataobj)
    idx = np.argwhere(seg > 0)
    centre = (idx.min(0) + idx.max(0)) // 2
    start = np.clip(centre - np.array(size) // 2, 0, np.array(seg.shape) - np.array(size))
    sl = tuple(slice(int(a), int(a) + int(b)) for a, b in zip(start, size))
    for m in ("t1", "t1ce", "t2", "flair", *(("seg",) if with_label else ())):
        img = nib.load(src / f"{case}_{m}.nii.gz")
        affine = img.affine.copy()
        affine[:3, 3] = img.affine[:3, :3] @ start + img.affine[:3, 3]
        cropped = nib.Nifti1Image(np.asarray(img.dataobj)[sl], affine, header=img.header)
        nib.save(cropped, out / f"{case}_{m}.nii.gz")
    return out


def run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    """``gmd-monai ARGS`` in this process: (exit code, stdout, stderr)."""
    from gmd_monai.cli import main

    code = 0
    try:
        main(args)
    except SystemExit as e:
        code = int(e.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def run_workflow(config, workflow_type: str = "train", **overrides):
    """A bundle workflow run as ``monai.bundle run`` does it: initialize, run, finalize."""
    from monai.bundle import ConfigWorkflow

    wf = ConfigWorkflow(config_file=config, workflow_type=workflow_type, **overrides)
    wf.initialize()
    wf.run()
    wf.finalize()
    return wf


def brats_train_overrides(tmp: Path, dataset_dir, **extra) -> dict:
    """A one-epoch BraTS bundle run into ``tmp`` (models/, runs/) on ``dataset_dir``: width 0.25, 16^3
    crops, batch 2, validation after the epoch; ``extra`` overrides any of it."""
    base = dict(
        bundle_root=str(Path(__file__).resolve().parents[1] / "bundle"),
        dataset_dir=str(dataset_dir),
        ckpt_dir=str(tmp / "models"),
        output_dir=str(tmp / "runs"),
        max_epochs=1,
        val_interval=1,
        width=0.25,
        roi_size=[16, 16, 16],
        batch_size=2,
        num_workers=0,
        val_fraction=0.25,
        test_fraction=0.25,
    )
    return {**base, **extra}
