"""This bundle served by a real MONAI Label server, checked end to end (``make monailabel-check``).

Copies the bundle (so that training through the server cannot touch the repository's weights), builds a
studies folder from three real BraTS cases, starts the server with the documented command
(``bundle/docs/run_monailabel.sh``: the bundle's app on 127.0.0.1, nothing fetched), and checks over HTTP:

1. ``/info``: the model is listed with the label map's names and values (0 background, 1 necrotic core,
   2 oedema, 4 enhancing tumour) and a trainer;
2. ``/infer`` on a 4-D NIfTI (T1, T1ce, T2, FLAIR) and on one BraTS-named T1ce file whose T2 and FLAIR
   siblings are found by name (T1 absent): the label map's shape and affine equal the input's, uint8,
   values in {0, 1, 2, 4}; it equals, voxel for voxel, what the bundle's own inference
   (``monai.bundle run`` with configs/inference.yaml) writes for the same file; and its WT/TC/ET Dice
   against the case's ground truth is within 0.05 of the shipped model's evaluation figure for that
   case and modality subset (models/per_case.csv; evaluation scores uncropped volumes, hence not
   equal);
3. ``/train`` (a background task, as a viewer starts it: one epoch on one labelled image, validated on
   the other) ends with status DONE; the served weights were kept as a backup and replaced by weights
   that continue them (same width and grid), the old evaluation moved aside; an ``/infer`` then works;

then stops the server by PID. Prints ``key=value`` lines and ``monailabel-check: PASS`` (exit 0), or
the failed check (exit 1); exit 2 when the BraTS cases are missing.

With ``--zoo`` the same checks run on the Model Zoo archive instead (``gmd-monai zoo-bundle``, unpacked:
its own ``docs/run_monailabel.sh`` and ``monailabel/`` app), served by a Python that cannot import the
installed gmd-monai, so that they run on the code the archive carries.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import requests

ROOT = Path(__file__).resolve().parents[2]
MODEL = "gmd_ds_brats"
CASE_4D = "Brats18_TCIA02_370_1"  # test cases of the shipped model (models/per_case.csv)
CASE_SIBLINGS = "Brats18_CBICA_AME_1"
SIBLINGS = ("t1ce", "t2", "flair")  # the file sent is <case>_t1ce.nii.gz; T1 is absent
CASE_TRAIN = "Brats18_2013_3_1"  # a second labelled 4-D image: /train gets one to train, one to validate
CASES = (CASE_4D, CASE_SIBLINGS, CASE_TRAIN)
EXPECTED_LABELS = {0: "background", 1: "necrotic", 2: "oedema", 4: "enhancing"}
DICE_TOLERANCE = 0.05
MIN_AGREEMENT = 0.9999  # fraction of voxels equal to the bundle's own inference
REGIONS = {"wt": (1, 2, 4), "tc": (1, 4), "et": (4,)}


class CheckFailed(Exception):
    pass


def log(key: str, value) -> None:
    print(f"{key}={value}", flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_studies(brats: Path, studies: Path) -> None:
    """Two labelled 4-D NIfTI images (T1, T1ce, T2, FLAIR); one case as BraTS-named files without T1."""
    (studies / "labels" / "final").mkdir(parents=True)
    for name in (CASE_4D, CASE_TRAIN):
        case = brats / name
        images = [nib.load(case / f"{name}_{m}.nii.gz") for m in ("t1", "t1ce", "t2", "flair")]
        stack = np.stack([np.asarray(i.dataobj) for i in images], axis=-1)
        nib.save(nib.Nifti1Image(stack, images[0].affine, images[0].header), studies / f"{name}.nii.gz")
        shutil.copy(case / f"{name}_seg.nii.gz", studies / "labels" / "final" / f"{name}.nii.gz")
    for m in SIBLINGS:
        shutil.copy(brats / CASE_SIBLINGS / f"{CASE_SIBLINGS}_{m}.nii.gz", studies)


def expected_dice(bundle: Path, case: str, subset: str) -> dict[str, float]:
    with open(bundle / "models" / "per_case.csv") as f:
        for row in csv.DictReader(f):
            if row["case"] == case and row["subset"] == subset:
                return {r: float(row[f"dice_{r}"]) for r in REGIONS}
    raise CheckFailed(f"no evaluation figure for {case} {subset} in models/per_case.csv")


def dice(pred: np.ndarray, gt: np.ndarray, values: tuple[int, ...]) -> float:
    p, g = np.isin(pred, values), np.isin(gt, values)
    denom = p.sum() + g.sum()
    return 1.0 if denom == 0 else float(2 * (p & g).sum() / denom)


def bundle_inference(python: Path, bundle: Path, images: list[Path], out: Path) -> None:
    """The reference: the bundle's own inference, run as a user would, on the same files."""
    cmd = [
        str(python),
        "-m",
        "monai.bundle",
        "run",
        "--config_file",
        str(bundle / "configs/inference.yaml"),
    ]
    cmd += [
        "--bundle_root",
        str(bundle),
        "--datalist",
        repr([str(i) for i in images]),
        "--output_dir",
        str(out),
    ]
    t0 = time.time()
    # from the bundle's folder, as the Model Zoo runs a bundle (a zoo archive's configs `import scripts`
    # from there); not from the repository root, whose gmd_monai/ would come first on sys.path
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=bundle)
    if r.returncode != 0:
        raise CheckFailed(f"bundle inference failed ({r.returncode}):\n{r.stdout[-2000:]}{r.stderr[-2000:]}")
    log("bundle_inference.seconds", f"{time.time() - t0:.1f}")


def check_infer(
    url: str, image_id: str, reference: Path, gt: Path, expected: dict, out: Path, bundle_result: Path
) -> None:
    t0 = time.time()
    r = requests.post(f"{url}/infer/{MODEL}", params={"image": image_id, "output": "image"}, timeout=900)
    if r.status_code != 200:
        raise CheckFailed(f"/infer {image_id}: HTTP {r.status_code}: {r.text[:300]}")
    log(f"infer.{image_id}.seconds", f"{time.time() - t0:.1f}")
    out.write_bytes(r.content)
    seg, ref = nib.load(out), nib.load(reference)
    data = np.asarray(seg.dataobj)
    log(f"infer.{image_id}.shape", "x".join(map(str, data.shape)))
    log(f"infer.{image_id}.dtype", data.dtype)
    values = sorted(int(v) for v in np.unique(data))
    log(f"infer.{image_id}.values", values)
    if data.shape != ref.shape[:3]:
        raise CheckFailed(f"/infer {image_id}: shape {data.shape}, input {ref.shape[:3]}")
    if not np.allclose(seg.affine, ref.affine, atol=1e-4):
        raise CheckFailed(f"/infer {image_id}: affine\n{seg.affine}\ndiffers from the input's\n{ref.affine}")
    if data.dtype != np.uint8:
        raise CheckFailed(f"/infer {image_id}: dtype {data.dtype}, expected uint8")
    if not set(values) <= {0, 1, 2, 4}:
        raise CheckFailed(f"/infer {image_id}: values {values} outside BraTS's {{0, 1, 2, 4}}")
    agreement = float((data == np.asarray(nib.load(bundle_result).dataobj)).mean())
    log(f"infer.{image_id}.agreement_with_bundle_inference", f"{agreement:.6f}")
    if agreement < MIN_AGREEMENT:
        raise CheckFailed(
            f"/infer {image_id}: only {agreement:.4%} of voxels equal the bundle's own inference"
        )
    truth = np.asarray(nib.load(gt).dataobj)
    for region, vals in REGIONS.items():
        d = dice(data, truth, vals)
        log(f"infer.{image_id}.dice_{region}", f"{d:.4f} (evaluation {expected[region]:.4f})")
        if abs(d - expected[region]) > DICE_TOLERANCE:
            raise CheckFailed(
                f"/infer {image_id}: {region.upper()} Dice {d:.4f}, the bundle's evaluation gave "
                f"{expected[region]:.4f} (tolerance {DICE_TOLERANCE})"
            )


def check_infer_after_training(url: str, image: Path, gt: Path, work: Path) -> None:
    image_id = image.name.removesuffix(".nii.gz")
    r = requests.post(f"{url}/infer/{MODEL}", params={"image": image_id, "output": "image"}, timeout=900)
    if r.status_code != 200:
        raise CheckFailed(f"/infer after /train: HTTP {r.status_code}: {r.text[:300]}")
    out = work / f"{image_id}_label_after_train.nii.gz"
    out.write_bytes(r.content)
    data = np.asarray(nib.load(out).dataobj)
    if data.shape != nib.load(image).shape[:3] or not set(np.unique(data).tolist()) <= {0, 1, 2, 4}:
        raise CheckFailed(f"/infer after /train: shape {data.shape}, values {np.unique(data)}")
    truth = np.asarray(nib.load(gt).dataobj)
    log("infer_after_train.dice_wt", f"{dice(data, truth, REGIONS['wt']):.4f}")


def check_info(url: str) -> None:
    info = requests.get(f"{url}/info/", timeout=60).json()
    model = info.get("models", {}).get(MODEL)
    if model is None:
        raise CheckFailed(f"/info lists no model {MODEL!r}: {sorted(info.get('models', {}))}")
    labels = model.get("labels", {})
    log("info.labels", json.dumps(labels))
    by_value = {int(v): k for k, v in labels.items()}
    for value, word in EXPECTED_LABELS.items():
        if word not in by_value.get(value, "").lower():
            raise CheckFailed(
                f"/info: label {value} is {by_value.get(value)!r}, expected a name with {word!r}"
            )
    if set(by_value) != set(EXPECTED_LABELS):
        raise CheckFailed(f"/info: label values {sorted(by_value)}, the map holds {sorted(EXPECTED_LABELS)}")
    if MODEL not in info.get("trainers", {}):
        raise CheckFailed(f"/info lists no trainer {MODEL!r}")


def check_train(url: str, bundle: Path) -> None:
    """One epoch on one labelled image, validated on the other: the served weights are kept as a backup
    and replaced by the fine-tuned ones, at the width and grid they were trained with."""
    served = bundle / "models" / "model.pt"
    before = served.stat().st_mtime_ns
    t0 = time.time()
    params = {"max_epochs": 1, "val_split": 0.5, "device": "cpu", "multi_gpu": False, "pretrained": True}
    # as a viewer starts it: a background task, polled until it ends
    r = requests.post(f"{url}/train/{MODEL}", json=params, timeout=60)
    if r.status_code != 200:
        raise CheckFailed(f"/train: HTTP {r.status_code}: {r.text[:300]}")
    status: dict = {}
    while time.time() - t0 < 1200:
        time.sleep(5)
        status = requests.get(f"{url}/train/", timeout=60).json()
        if status.get("status") in ("DONE", "ERROR", "STOPPED"):
            break
    log("train.seconds", f"{time.time() - t0:.1f}")
    log("train.status", status.get("status"))
    if status.get("status") != "DONE":
        details = json.dumps(status)[-1500:]
        raise CheckFailed(f"/train: status {status.get('status')!r}: {details}")
    backups = sorted((bundle / "models").glob("model_before_train_*.pt"))
    if len(backups) != 1 or served.stat().st_mtime_ns == before:
        raise CheckFailed(f"/train: served weights not kept and replaced (backups {backups})")
    from gmd_monai.checkpointing import read_model_meta

    meta = read_model_meta(served)
    keys = ("width", "pixdim", "roi_size", "init_weights")
    log("train.model_meta", json.dumps({k: meta.get(k) for k in keys}))
    if meta.get("init_weights") != str(backups[0]) or meta.get("width") != 0.25:
        raise CheckFailed(f"/train: the new model.pt does not continue the served weights: {meta}")
    if (bundle / "models" / "subset_summary.csv").exists():
        raise CheckFailed("/train: the old model's evaluation still sits beside the new weights")


def zoo_bundle(work: Path) -> tuple[Path, Path]:
    """The Model Zoo archive, written and unpacked in ``work``, and a Python that cannot import gmd-monai
    (where the archive can only run on the code it carries)."""
    from gmd_monai.zoo_bundle import make_zoo_bundle, python_without_gmd_monai

    archive = make_zoo_bundle(work / "dist" / "gmd_monai_brats.zip")
    shutil.unpack_archive(archive, work / "zoo")
    python = python_without_gmd_monai(work / "python")  # raises where it can still import gmd_monai
    log("zoo.archive", archive)
    log("zoo.python", python)
    return work / "zoo" / "gmd_monai_brats", python


def wait_for_server(url: str, proc: subprocess.Popen, log_file: Path, timeout: float) -> None:
    end = time.time() + timeout
    while time.time() < end:
        if proc.poll() is not None:
            raise CheckFailed(f"server exited with {proc.returncode}; see {log_file}:\n{tail(log_file)}")
        try:
            if requests.get(f"{url}/info/", timeout=5).status_code == 200:
                return
        except requests.ConnectionError:
            pass
        time.sleep(2)
    raise CheckFailed(f"server not up after {timeout:.0f} s; see {log_file}:\n{tail(log_file)}")


def tail(path: Path, n: int = 30) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-n:]) if path.exists() else ""


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    log("server.stopped", f"pid {proc.pid}, exit {proc.returncode}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--brats", default=os.environ.get("BRATS_DIR", ROOT.parent / "shared/data/brats2018"))
    parser.add_argument("--work", help="default: work/monailabel_check, or work/monailabel_check_zoo")
    parser.add_argument("--skip-train", action="store_true", help="check /info and /infer only")
    parser.add_argument(
        "--zoo", action="store_true", help="serve the Model Zoo archive, with a Python without gmd-monai"
    )
    args = parser.parse_args()
    brats = Path(args.brats)
    default_work = ROOT / "work" / ("monailabel_check_zoo" if args.zoo else "monailabel_check")
    work = Path(args.work or default_work).resolve()
    if not all((brats / c).is_dir() for c in CASES):
        print(
            f"monailabel-check: needs BraTS 2018 cases {', '.join(CASES)} in {brats}",
            file=sys.stderr,
        )
        return 2
    shutil.rmtree(work, ignore_errors=True)
    studies = work / "studies"
    # a copy either way: training through the server writes the bundle's models/
    if args.zoo:
        bundle, python = zoo_bundle(work)
    else:
        bundle, python = work / "bundle", Path(sys.executable)
        skip = shutil.ignore_patterns("data", "eval", "runs", "logs")
        shutil.copytree(ROOT / "bundle", bundle, ignore=skip)
    make_studies(brats, studies)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log_file = work / "server.log"
    # the documented command (it execs the server: the PID is the server's)
    cmd = ["bash", str(bundle / "docs" / "run_monailabel.sh"), str(studies)]
    env = dict(os.environ, MONAILABEL_PYTHON=str(python), HOST="127.0.0.1", PORT=str(port))
    t0 = time.time()
    with open(log_file, "w") as f:
        # from work: in the repository root, `python -m` would import gmd_monai/ from the checkout
        proc = subprocess.Popen(
            cmd, stdout=f, stderr=subprocess.STDOUT, env=env, cwd=work, start_new_session=True
        )
    log("server.pid", proc.pid)
    log("server.url", url)
    try:
        wait_for_server(url, proc, log_file, timeout=300)
        log("server.start_seconds", f"{time.time() - t0:.1f}")
        check_info(url)
        four_d, sibling = studies / f"{CASE_4D}.nii.gz", studies / f"{CASE_SIBLINGS}_t1ce.nii.gz"
        bundle_inference(python, bundle, [four_d, sibling], work / "bundle_inference")
        brats_case = brats / CASE_4D
        check_infer(
            url,
            CASE_4D,
            four_d,
            brats_case / f"{CASE_4D}_seg.nii.gz",
            expected_dice(bundle, CASE_4D, "t1+t1ce+t2+flair"),
            work / f"{CASE_4D}_label.nii.gz",
            work / "bundle_inference" / f"{CASE_4D}_gmdseg.nii.gz",
        )
        check_infer(
            url,
            f"{CASE_SIBLINGS}_t1ce",
            sibling,
            brats / CASE_SIBLINGS / f"{CASE_SIBLINGS}_seg.nii.gz",
            expected_dice(bundle, CASE_SIBLINGS, "+".join(SIBLINGS)),
            work / f"{CASE_SIBLINGS}_label.nii.gz",
            work / "bundle_inference" / f"{CASE_SIBLINGS}_gmdseg.nii.gz",
        )
        if not args.skip_train:
            check_train(url, bundle)
            # the server serves the new weights (it reloads model.pt when it changes)
            check_infer_after_training(url, four_d, brats_case / f"{CASE_4D}_seg.nii.gz", work)
    except (CheckFailed, requests.RequestException) as e:
        print(f"monailabel-check: FAIL: {e}", file=sys.stderr)
        print(f"server log: {log_file}", file=sys.stderr)
        return 1
    finally:
        stop(proc)
    log("total_seconds", f"{time.time() - t0:.1f}")
    print("monailabel-check: PASS", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
