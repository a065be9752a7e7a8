"""Hostile inputs against ``gmd-monai segment`` (issue 10; the table is docs/safety.md).

Every bad input must give exit code 2 and ONE line naming the file, and nothing may be written or
replaced. Cases are small synthetic images (24 x 24 x 16 voxels); the network is a probe that counts its
calls (so a test can tell that nothing was computed) and whose output is a sphere where the image is
bright.
"""

from __future__ import annotations

import errno
import gzip
import importlib
import json
import os
import re
import signal
import subprocess
import sys
from collections import namedtuple
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
import torch

import gmd_monai.inference.outputs as outputs_mod
from gmd_monai.cli import main
from gmd_monai.inference.integrity import InputError, check_dicom_series, estimate_memory_bytes
from gmd_monai.inference.model import ModelInfo

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_inference import write_dicom_series  # noqa: E402

segment_mod = importlib.import_module("gmd_monai.inference.segment")  # the package exports a function
SHAPE = (24, 24, 16)
CASE = "Case_001"
shutil_usage = namedtuple("shutil_usage", "total used free")


class Probe(torch.nn.Module):
    """Region logits positive where the mean input is high; counts forward calls."""

    calls = 0

    def forward(self, x: torch.Tensor, available=None) -> torch.Tensor:
        Probe.calls += 1
        logit = 8.0 * (x.mean(1, keepdim=True) - 1.0)
        return logit.expand(-1, 3, *x.shape[2:]).contiguous()


def _info(pixdim: float = 1.0) -> ModelInfo:
    return ModelInfo(
        path=None,
        sha256=None,
        version="probe",
        width=0.25,
        trained=True,
        pixdim=(pixdim,) * 3,
        axcodes="LPS",
        roi_size=(32, 32, 32),
    )


@pytest.fixture
def probe(monkeypatch):
    """``--model`` is not read: every command gets the probe network."""
    Probe.calls = 0
    net = Probe()
    monkeypatch.setattr(segment_mod, "load_network", lambda *a, **k: (net, _info()))
    return net


def _volume(seed: int = 0, dtype=np.int16, shape=SHAPE) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = 200 + 40 * rng.standard_normal(shape)
    c = np.asarray(shape) // 2
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1)
    img[np.linalg.norm(grid - c, axis=-1) < 4] = 600
    img[:2] = 0
    return img.astype(dtype)


def _save(path: Path, data: np.ndarray, affine=None) -> Path:
    nib.save(nib.Nifti1Image(data, np.eye(4) if affine is None else affine), path)
    return path


@pytest.fixture
def case(tmp_path) -> Path:
    """A case folder with t1ce, flair and a BraTS ground truth ``<case>_seg.nii.gz``."""
    d = tmp_path / CASE
    d.mkdir()
    _save(d / f"{CASE}_t1ce.nii.gz", _volume(0))
    _save(d / f"{CASE}_flair.nii.gz", _volume(1))
    _save(d / f"{CASE}_seg.nii.gz", (_volume(2) > 500).astype(np.uint8) * 2)
    return d


def _cli(args: list[str], capsys) -> tuple[int, str, str]:
    code = 0
    try:
        main(["segment", *map(str, args), "--quiet", "--nomontage", "--device", "cpu"])
    except SystemExit as e:
        code = int(e.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _assert_refused(code: int, err: str, names: list[str]) -> str:
    lines = [ln for ln in err.strip().splitlines() if ln.startswith("gmd-monai")]
    assert code == 2, err
    assert len(lines) == 1 and "Traceback" not in err, err
    for n in names:
        assert n in lines[0], (n, lines[0])
    return lines[0]


# ----------------------------------------------------------------------------------------------
# 1. never overwrite
# ----------------------------------------------------------------------------------------------


def _dicom_case(case: Path) -> Path:
    dicom = case / "t2"
    write_dicom_series(sitk.ReadImage(str(case / f"{CASE}_t1ce.nii.gz")), dicom)
    return dicom


OVERWRITE_CASES = {
    # name: (extra args builder(case) -> (args, expected message parts))
    "existing_label_map": lambda c: (
        ["--case_dir", c, "--output", c],
        [f"{CASE}_gmdseg.nii.gz", "exists", "--overwrite"],
        [c / f"{CASE}_gmdseg.nii.gz"],
    ),
    "ground_truth_named_explicitly": lambda c: (
        ["--case_dir", c, "--output", c / f"{CASE}_seg.nii.gz"],
        [f"{CASE}_seg.nii.gz", "exists"],
        [],
    ),
    "existing_report": lambda c: (
        ["--case_dir", c, "--output", c],
        [f"{CASE}_report.json", "exists"],
        [c / f"{CASE}_report.json"],
    ),
    "output_is_an_input": lambda c: (
        ["--t1ce", c / f"{CASE}_t1ce.nii.gz", "--output", c / f"{CASE}_t1ce.nii.gz", "--overwrite"],
        [f"{CASE}_t1ce.nii.gz", "would overwrite an input file"],
        [],
    ),
    "output_inside_dicom_input": lambda c: (
        ["--t1ce", c / f"{CASE}_t1ce.nii.gz", "--t2", _dicom_case(c), "--output", c / "t2" / "out.nii.gz"],
        ["out.nii.gz", "inside the DICOM input folder"],
        [],
    ),
}


@pytest.mark.parametrize("name", list(OVERWRITE_CASES))
def test_existing_outputs_and_inputs_are_never_replaced(name, case, probe, capsys):
    args, expected, pre_existing = OVERWRITE_CASES[name](case)
    for p in pre_existing:
        p.write_bytes(b"earlier result")
    before = _snapshot(case)
    code, _, err = _cli(args, capsys)
    _assert_refused(code, err, expected)
    assert _snapshot(case) == before and Probe.calls == 0  # nothing computed, written or replaced


def test_default_name_leaves_the_ground_truth_alone_and_overwrite_replaces(case, probe, capsys):
    gt = (case / f"{CASE}_seg.nii.gz").read_bytes()
    code, out, err = _cli(["--case_dir", case, "--output", case], capsys)
    assert code == 0, err
    seg = case / f"{CASE}_gmdseg.nii.gz"
    assert seg.is_file() and (case / f"{CASE}_report.json").is_file()
    assert (case / f"{CASE}_seg.nii.gz").read_bytes() == gt
    seg.write_bytes(b"stale")
    code, _, err = _cli(["--case_dir", case, "--output", case, "--overwrite"], capsys)
    assert code == 0, err
    assert nib.load(seg).shape == SHAPE and (case / f"{CASE}_seg.nii.gz").read_bytes() == gt


# ----------------------------------------------------------------------------------------------
# 2. truncated or incomplete inputs
# ----------------------------------------------------------------------------------------------


def _truncate(path: Path, keep: float = 0.6) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def _truncated_nifti(tmp: Path, ext: str, dtype) -> Path:
    p = _save(tmp / f"P_t1ce{ext}", _volume(0, dtype))
    _truncate(p)
    return p


def _bad_crc(tmp: Path) -> Path:
    p = tmp / "P_t1ce.nii.gz"
    raw = gzip.decompress(_save(p, _volume(0)).read_bytes())
    data = bytearray(gzip.compress(raw))
    data[-8] ^= 0xFF  # the CRC-32 of the gzip trailer
    p.write_bytes(bytes(data))
    return p


def _dicom_with_truncated_slice(tmp: Path) -> Path:
    folder = tmp / "t1ce"
    write_dicom_series(sitk.GetImageFromArray(_volume(0).transpose(2, 1, 0)), folder)
    _truncate(sorted(folder.iterdir())[7], keep=0.5)
    return folder


def _dicom_with_missing_slice(tmp: Path) -> Path:
    folder = tmp / "t1ce"
    write_dicom_series(sitk.GetImageFromArray(_volume(0).transpose(2, 1, 0)), folder)
    sorted(folder.iterdir())[7].unlink()
    return folder


def _dicom_with_repeated_slice(tmp: Path) -> Path:
    """Slice 7 a second time, under another file name, SOP instance UID and instance number."""
    folder = tmp / "t1ce"
    write_dicom_series(sitk.GetImageFromArray(_volume(0).transpose(2, 1, 0)), folder)
    again = sitk.ReadImage(str(folder / "slice0007.dcm"))
    again.SetMetaData("0008|0018", "1.2.826.0.1.3680043.2.1125.1.3.999")
    again.SetMetaData("0020|0013", "99")
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    writer.SetFileName(str(folder / "slice0099.dcm"))
    writer.Execute(again)
    return folder


TRUNCATED = {
    "nii_gz_int16": (lambda t: _truncated_nifti(t, ".nii.gz", np.int16), "truncated"),
    "nii_gz_float32": (lambda t: _truncated_nifti(t, ".nii.gz", np.float32), "truncated"),
    "nii_int16": (lambda t: _truncated_nifti(t, ".nii", np.int16), "truncated"),
    "nii_float32": (lambda t: _truncated_nifti(t, ".nii", np.float32), "truncated"),
    "nii_gz_bad_crc": (_bad_crc, "corrupt gzip stream"),
    "dicom_truncated_slice": (_dicom_with_truncated_slice, "not slices of its DICOM series"),
    "dicom_missing_slice": (_dicom_with_missing_slice, "non-uniform DICOM slice spacing"),
    "dicom_repeated_slice": (_dicom_with_repeated_slice, "two DICOM slices lie at the same position"),
}


@pytest.mark.parametrize("name", list(TRUNCATED))
def test_truncated_inputs_are_refused(name, tmp_path, probe, capsys):
    make, message = TRUNCATED[name]
    folder = tmp_path / "in"
    folder.mkdir()
    src = make(folder)
    out = tmp_path / "out"
    code, _, err = _cli(["--t1ce", src, "--output", out], capsys)
    _assert_refused(code, err, [str(src), message])
    assert not out.exists() and Probe.calls == 0


#: axial slices 2 mm apart along z (orientation: identity); each case changes one thing
_AXIAL = "1\\0\\0\\0\\1\\0"
_Z = [f"0\\0\\{2.0 * k}" for k in range(5)]
DICOM_SERIES = {
    "repeated_position": (
        dict(positions=[*_Z[:3], _Z[2], _Z[4]]),
        "two DICOM slices lie at the same position",
    ),
    "missing_position": (dict(positions=[*_Z[:2], None, *_Z[3:]]), "slice position or orientation missing"),
    "missing_orientation": (dict(orientation=None), "slice position or orientation missing"),
    "unreadable_position": (dict(positions=[*_Z[:4], "0\\0\\x"]), "unreadable slice position"),
    "depth_differs_from_files": (dict(depth=4), "has 5 files but the volume 4 slices"),
    "spacing_differs_from_positions": (dict(spacing_z=3.0), "slice spacing 3 mm differs from"),
    "missing_slice": (dict(positions=[*_Z[:2], *_Z[3:], "0\\0\\10"]), "non-uniform DICOM slice spacing"),
}


@pytest.mark.parametrize("name", list(DICOM_SERIES))
def test_dicom_series_checks_refuse(name, tmp_path):
    """Each refusal of the series check (positions as the reader returns them), on a 5-slice series."""
    change, message = DICOM_SERIES[name]
    files = [tmp_path / f"s{k}.dcm" for k in range(5)]
    for f in files:
        f.write_bytes(b"")
    args = dict(positions=list(_Z), orientation=_AXIAL, depth=5, spacing_z=2.0) | change
    with pytest.raises(InputError, match=re.escape(message)) as e:
        check_dicom_series(tmp_path, [str(f) for f in files], **args)
    assert str(e.value).startswith(str(tmp_path))


def test_dicom_series_check_accepts_a_complete_series(tmp_path):
    files = [tmp_path / f"s{k}.dcm" for k in range(5)]
    for f in files:
        f.write_bytes(b"")
    check_dicom_series(tmp_path, [str(f) for f in reversed(files)], list(reversed(_Z)), _AXIAL, 5, 2.0)


def test_batch_lists_a_truncated_case_as_failed(tmp_path, probe, capsys):
    root = tmp_path / "cases"
    for name in ("A01", "B02"):
        (root / name).mkdir(parents=True)
        _save(root / name / f"{name}_t1ce.nii.gz", _volume(0))
    _truncate(root / "B02" / "B02_t1ce.nii.gz")
    out = tmp_path / "out"
    code = 0
    try:
        main(["segment_batch", str(root), str(out), "--quiet", "--nomontage", "--device", "cpu"])
    except SystemExit as e:
        code = int(e.code or 0)
    _, err = capsys.readouterr()
    assert code == 2 and "B02" in err and "truncated" in err
    rows = (out / "batch_summary.csv").read_text().splitlines()
    assert rows[1].startswith("A01,ok") and rows[2].startswith("B02,failed") and "truncated" in rows[2]
    assert not list(out.glob("B02*"))


# ----------------------------------------------------------------------------------------------
# 3. a label map given as an image
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("values", [(0, 1, 2, 4), (0, 1), (0, 1, 2, 3)], ids=["brats", "mask", "brats2021"])
def test_label_map_as_image_is_refused_unless_allowed(values, case, probe, capsys, tmp_path):
    lab = np.asarray(values, np.uint8)[np.random.default_rng(0).integers(0, len(values), SHAPE)]
    lab_path = _save(tmp_path / "P_t1ce.nii.gz", lab)
    out = tmp_path / "out"
    code, _, err = _cli(["--t1ce", lab_path, "--output", out], capsys)
    _assert_refused(code, err, [str(lab_path), "looks like a label map", "--allow_label_like"])
    assert not out.exists() and Probe.calls == 0
    code, _, err = _cli(["--t1ce", lab_path, "--output", out, "--allow_label_like"], capsys)
    assert code == 0, err


# ----------------------------------------------------------------------------------------------
# 4. bounded memory, a head-sized field of view
# ----------------------------------------------------------------------------------------------


def test_field_of_view_larger_than_a_head_is_refused(tmp_path, probe, capsys):
    big = _save(tmp_path / "P_t1ce.nii.gz", _volume(0, shape=(64, 64, 64)), np.diag([10.0, 10.0, 10.0, 1]))
    out = tmp_path / "out"
    code, _, err = _cli(["--t1ce", big, "--output", out], capsys)
    _assert_refused(code, err, [str(big), "field of view 640 x 640 x 640 mm", "larger than a head"])
    assert not out.exists() and Probe.calls == 0


@pytest.mark.parametrize("spacing", [1.0, 6.0])
def test_memory_above_the_cap_is_refused_before_allocating(spacing, tmp_path, probe, capsys):
    img = _save(tmp_path / "P_t1ce.nii.gz", _volume(0, shape=(64, 64, 60)), np.diag([spacing] * 3 + [1.0]))
    out = tmp_path / "out"
    code, _, err = _cli(["--t1ce", img, "--output", out, "--max_memory_gb", "0.01"], capsys)
    line = _assert_refused(code, err, [str(img), "GiB of memory", "--max_memory_gb"])
    if spacing == 6.0:  # the resampled grid is what costs: 384 x 384 x 360 at the model's 1 mm
        assert "resampled to 384x384x360" in line
    assert not out.exists() and Probe.calls == 0


def test_memory_estimate_follows_the_model_grid():
    one, two = (estimate_memory_bytes((64, 64, 64), (6.0,) * 3, 2, (p,) * 3) for p in (1.0, 2.0))
    base = estimate_memory_bytes((64, 64, 64), (6.0,) * 3, 2, None)
    assert one - base == 8 * (two - base) == 4 * 384**3 * (3 * 2 + 9)


# ----------------------------------------------------------------------------------------------
# 5. the output location is checked before computing
# ----------------------------------------------------------------------------------------------


def _parent_is_a_file(tmp: Path) -> tuple[Path, str]:
    (tmp / "afile").write_text("x")
    return tmp / "afile" / "sub" / "seg.nii.gz", "is a file, not a folder"


def _read_only(tmp: Path) -> tuple[Path, str]:
    if os.geteuid() == 0:
        pytest.skip("root writes into read-only folders (the simulated case covers the message)")
    ro = tmp / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    return ro / "seg.nii.gz", "not writable"


def _not_writable_simulated(tmp: Path, monkeypatch) -> tuple[Path, str]:
    def refuse(*a, **k):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(outputs_mod.tempfile, "mkstemp", refuse)
    return tmp / "out" / "seg.nii.gz", "not writable (Permission denied)"


@pytest.mark.parametrize("where", ["parent_is_a_file", "read_only_folder", "not_writable_simulated"])
def test_unwritable_output_fails_before_computing(where, case, probe, capsys, tmp_path, monkeypatch):
    if where == "parent_is_a_file":
        out, message = _parent_is_a_file(tmp_path)
    elif where == "read_only_folder":
        out, message = _read_only(tmp_path)
    else:
        out, message = _not_writable_simulated(tmp_path, monkeypatch)
    code, _, err = _cli(["--case_dir", case, "--output", out], capsys)
    _assert_refused(code, err, [message])
    assert Probe.calls == 0 and not out.exists()


def test_too_little_free_disk_fails_before_computing(case, probe, capsys, tmp_path, monkeypatch):
    monkeypatch.setattr(
        outputs_mod.shutil, "disk_usage", lambda p: shutil_usage(total=10**9, used=10**9, free=1000)
    )
    out = tmp_path / "out"
    code, _, err = _cli(["--case_dir", case, "--output", out], capsys)
    _assert_refused(code, err, [str(tmp_path), "MB free on the disk", "choose another --output"])
    assert Probe.calls == 0 and not out.exists()


def test_disk_full_while_writing_leaves_nothing(case, probe, capsys, tmp_path, monkeypatch):
    """The disk fills up in the middle of the label map (after the free-space check passed): one line
    naming the file, exit 2, the partial temporary file removed, nothing else written."""

    def half_then_full(path, *a, **k):
        Path(path).write_bytes(b"\x1f\x8b" + bytes(1000))
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(segment_mod, "write_nifti_like", half_then_full)
    out = tmp_path / "out"
    code, _, err = _cli(["--case_dir", case, "--output", out], capsys)
    _assert_refused(code, err, [str(out), "No space left on device"])
    assert Probe.calls == 1 and out.is_dir() and not list(out.iterdir())


# ----------------------------------------------------------------------------------------------
# 6. interruption
# ----------------------------------------------------------------------------------------------


def _sigint_as_in_a_terminal() -> None:
    """A test run started in the background (``make test &``) inherits SIGINT ignored, which the command
    rightly leaves alone; these tests need it as a terminal delivers it."""
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture
def interruptible():
    previous = signal.getsignal(signal.SIGINT)
    _sigint_as_in_a_terminal()
    yield
    signal.signal(signal.SIGINT, previous)


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["INT", "TERM"])
def test_interrupt_while_writing_leaves_nothing(
    sig, code, case, probe, capsys, tmp_path, monkeypatch, interruptible
):
    real = segment_mod.write_nifti_like

    def write_then_signal(*a, **k):
        real(*a, **k)  # the temporary file now exists
        os.kill(os.getpid(), sig)

    monkeypatch.setattr(segment_mod, "write_nifti_like", write_then_signal)
    out = tmp_path / "out"
    got, _, err = _cli(["--case_dir", case, "--output", out], capsys)
    lines = [ln for ln in err.strip().splitlines() if ln.startswith("gmd-monai")]
    assert got == code and len(lines) == 1 and "Traceback" not in err, err
    assert signal.Signals(sig).name in lines[0]
    assert out.is_dir() and not list(out.iterdir())  # no temporary file left
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL or sig == signal.SIGINT


#: ``gmd-monai segment`` in a real process whose network is a stand-in (no weights needed) and whose label
#: map writer announces itself on stderr and then waits, so that the test signals it mid-write
_SLOW_WRITER = """
import sys, time, importlib, torch
seg = importlib.import_module("gmd_monai.inference.segment")
from gmd_monai.inference.model import ModelInfo
class Net(torch.nn.Module):
    def forward(self, x, available=None):
        return (8.0 * (x.mean(1, keepdim=True) - 1.0)).expand(-1, 3, *x.shape[2:]).contiguous()
info = ModelInfo(path=None, sha256=None, version="probe", width=0.25, trained=True, pixdim=(1.0,) * 3,
                 axcodes="LPS", roi_size=(32, 32, 32))
seg.load_network = lambda *a, **k: (Net(), info)
real = seg.write_nifti_like
def slow(*a, **k):
    real(*a, **k)
    print("WRITING", file=sys.stderr, flush=True)
    time.sleep(60)
seg.write_nifti_like = slow
from gmd_monai.cli import main
main(sys.argv[1:])
"""


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["INT", "TERM"])
def test_signal_from_another_process_while_writing(sig, code, case, tmp_path):
    """The signal comes from outside (as from a terminal or a scheduler), to a real process, while the
    temporary label map exists: exit 130 / 143, one line, no traceback, no file left."""
    out = tmp_path / "out"
    args = ["segment", "--case_dir", str(case), "--output", str(out), "--quiet", "--nomontage"]
    proc = subprocess.Popen(
        [sys.executable, "-c", _SLOW_WRITER, *args, "--device", "cpu"],
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # as a terminal starts it
    )
    try:
        err = []
        for line in proc.stderr:
            err.append(line)
            if line.strip() == "WRITING":
                break
        assert any(ln.startswith(".gmd-tmp-") for ln in os.listdir(out)), err
        proc.send_signal(sig)
        _, rest = proc.communicate(timeout=60)
    finally:
        proc.kill()
    lines = [ln for ln in rest.strip().splitlines() if ln.startswith("gmd-monai")]
    assert proc.returncode == code and len(lines) == 1 and "Traceback" not in rest, "".join(err) + rest
    assert signal.Signals(sig).name in lines[0]
    assert not list(out.iterdir())


def test_stale_temp_files_of_a_killed_run_are_removed(case, probe, capsys, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    dead = 2**22 + 12345  # above Linux's pid_max: no such process
    stale = [out / f".gmd-tmp-{dead}-{CASE}_gmdseg.nii.gz", out / f".tmp-{dead}-{CASE}_report.json"]
    alive = out / f".gmd-tmp-{os.getppid()}-{CASE}_gmdseg.nii.gz"  # a running process's: kept
    for p in (*stale, alive):
        p.write_bytes(b"")
    code, _, err = _cli(["--case_dir", case, "--output", out], capsys)
    assert code == 0, err
    assert not any(p.exists() for p in stale) and alive.exists()
    assert nib.load(out / f"{CASE}_gmdseg.nii.gz").shape == SHAPE


# ----------------------------------------------------------------------------------------------
# 7. the report's affine is the file's
# ----------------------------------------------------------------------------------------------


def _odd_pixdim(path: Path, pixdim, qform_code: int) -> Path:
    img = nib.Nifti1Image(_volume(0), None)
    img.header.set_sform(None, code=0)
    img.header.set_qform(None, code=0)
    img.header["pixdim"][1:4] = pixdim
    img.header["qform_code"] = qform_code
    nib.save(img, path)
    return path


@pytest.mark.parametrize(
    ("pixdim", "qform_code"),
    [((0.0, 1.0, 1.0), 0), ((-1.0, 2.0, 1.0), 0), ((1.0, -1.5, 1.0), 1), ((0.0, -2.0, 1.0), 1)],
    ids=["zero", "negative", "negative_qform", "zero_and_negative_qform"],
)
def test_report_affine_equals_the_written_affine(pixdim, qform_code, tmp_path, probe, capsys):
    src = _odd_pixdim(tmp_path / "P_t1ce.nii.gz", pixdim, qform_code)
    out = tmp_path / "out"
    code, _, err = _cli(["--t1ce", src, "--output", out], capsys)
    assert code == 0, err
    written = nib.load(out / "P_gmdseg.nii.gz").affine
    report = json.loads((out / "P_report.json").read_text())
    np.testing.assert_allclose(report["reference_grid"]["affine_ras"], written, atol=1e-6)
