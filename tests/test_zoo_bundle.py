"""`gmd-monai zoo-bundle`: the zoo-layout archive runs its inference where gmd-monai is not installed."""

from __future__ import annotations

import json
import os
import subprocess
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from gmd_monai.inference.model import default_model_path
from gmd_monai.zoo_bundle import make_zoo_bundle, python_without_gmd_monai

NAME = "gmd_monai_brats"


def _run(python: Path, args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run([str(python), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.skipif(not default_model_path().is_file(), reason="no shipped weights in bundle/models")
def test_zoo_bundle_runs_inference_without_gmd_monai_installed(tmp_path):
    archive = make_zoo_bundle(tmp_path / "dist" / f"{NAME}.zip")
    with pytest.raises(FileExistsError, match="--overwrite"):
        make_zoo_bundle(archive)
    zipfile.ZipFile(archive).extractall(tmp_path / "unpacked")
    root = tmp_path / "unpacked" / NAME
    assert {p.name for p in root.iterdir()} >= {
        "configs",
        "models",
        "docs",
        "scripts",
        "LICENSE",
        "monailabel",
    }
    meta = json.loads((root / "configs" / "metadata.json").read_text())
    assert "gmd-monai" not in meta["required_packages_version"] and "monai_version" in meta
    assert "bundle_root: .\n" in (root / "configs" / "inference.yaml").read_text()

    python = python_without_gmd_monai(tmp_path / "venv")
    probe = _run(python, ["-c", "import monai, torch; import gmd_monai"], cwd=tmp_path)
    assert probe.returncode != 0 and "No module named 'gmd_monai'" in probe.stderr, probe.stderr
    where = _run(python, ["-c", "import scripts, gmd_monai; print(gmd_monai.__file__)"], cwd=root)
    assert where.returncode == 0 and where.stdout.strip().startswith(str(root / "scripts")), where.stderr

    rng = np.random.default_rng(0)
    case = tmp_path / "case"
    case.mkdir()
    for m in ("t1ce", "flair"):
        vol = (200 + 30 * rng.standard_normal((64, 64, 48))).astype(np.float32)
        vol[20:40, 24:44, 16:32] += 400
        nib.save(nib.Nifti1Image(vol, np.diag([1.0, 1.0, 1.5, 1.0])), case / f"P_{m}.nii.gz")
    datalist = tmp_path / "datalist.json"
    datalist.write_text(json.dumps({"testing": [{"case": "P", "image": str(case / "P_t1ce.nii.gz")}]}))
    out = tmp_path / "out"
    run = _run(
        python,
        ["-m", "monai.bundle", "run", "--config_file", "configs/inference.yaml", "--datalist", str(datalist),
         "--output_dir", str(out), "--device", "$torch.device('cpu')"],
        cwd=root,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    seg = nib.load(out / "P_gmdseg.nii.gz")
    assert seg.shape == (64, 64, 48) and np.allclose(seg.affine, np.diag([1.0, 1.0, 1.5, 1.0]))
    assert set(np.unique(np.asarray(seg.dataobj)).tolist()) <= {0, 1, 2, 4}
