"""``gmd-monai plot-diagnostics``: pictures and the dominant-modality check from a run's logs.

The synthetic runs are written by the real :class:`GMDDiagnosticsHandler` (TensorBoard files,
``gmd_weights.csv``, ``gmd_cosine.csv``) from hand-made diagnostics: 3 epochs of 2 steps, 15 subsets,
``t2`` with by far the largest gradient.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from types import SimpleNamespace

import matplotlib.image as mpimg
import numpy as np
import pytest
import torch
from conftest import run_cli

from gmd_monai.diagnostics_plots import DiagnosticsError, plot_diagnostics, read_run_logs
from gmd_monai.engine import GMDDiagnosticsHandler
from gmd_monai.gmd.surgery import SurgeryDiagnostics
from gmd_monai.subsets import SubsetSpace

NAMES = SubsetSpace().names  # t1+t1ce+t2+flair ... t1, t1ce, t2, flair
T = len(NAMES)
EPOCHS, STEPS = 3, 2
NORMS = {"t1": 1.0, "t1ce": 1.2, "t2": 3.0, "flair": 0.8}  # multi-modal subsets: 0.5
PNGS = ("grad_norms", "conflicts", "cosine", "weights")


def _cosine(epoch: int, step: int) -> torch.Tensor:
    """Symmetric, unit diagonal, a few negative pairs that change with the step."""
    rng = np.random.default_rng(100 * epoch + step)
    a = rng.uniform(-0.3, 0.9, size=(T, T))
    c = np.triu(a, 1)
    c = c + c.T + np.eye(T)
    return torch.tensor(c, dtype=torch.float32)


def _diag(epoch: int, step: int, t2_weight: float, method: str = "gmd") -> SurgeryDiagnostics:
    weights = torch.full((T,), 1.0 / T)
    for m in ("t1", "t1ce", "flair"):
        weights[NAMES.index(m)] = 0.1
    weights[NAMES.index("t2")] = t2_weight
    norms = torch.tensor([NORMS.get(n, 0.5) for n in NAMES]) * (1 + 0.01 * step)
    cosine = _cosine(epoch, step)
    conflicts = int((torch.triu(cosine, 1) < 0).sum())
    if method == "mean":  # no per-objective gradients computed
        weights, norms = torch.full((T,), 1.0 / T), torch.full((T,), float("nan"))
        cosine, conflicts = torch.full((T, T), float("nan")), -1
    return SurgeryDiagnostics(
        names=list(NAMES), losses=torch.linspace(0.2, 0.9, T), weights=weights, grad_norms=norms,
        cosine=cosine, num_conflicts=conflicts, num_projections=max(conflicts, 0), method=method,
    )  # fmt: skip


def _train(run_dir: Path, t2_weight: float, method: str = "gmd", cosine_csv: bool = True) -> list:
    """Drive the handler through EPOCHS x STEPS iterations; returns the diagnostics of each step."""
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(log_dir=str(run_dir))
    handler = GMDDiagnosticsHandler(
        summary_writer=writer,
        csv_path=str(run_dir / "gmd_weights.csv"),
        cosine_csv_path=str(run_dir / "gmd_cosine.csv") if cosine_csv else None,
    )
    engine = SimpleNamespace(state=SimpleNamespace(epoch=0, iteration=0, gmd=None, run_segment=0))
    diags = []
    for epoch in range(1, EPOCHS + 1):
        engine.state.epoch = epoch
        for step in range(STEPS):
            engine.state.iteration += 1
            engine.state.gmd = _diag(epoch, step, t2_weight, method)
            diags.append(engine.state.gmd)
            handler.iteration_completed(engine)
        handler.epoch_completed(engine)
    writer.close()
    return diags


def _read_png(path: Path) -> np.ndarray:
    image = mpimg.imread(path)
    assert image.ndim == 3 and image.shape[0] > 200 and image.shape[1] > 300, image.shape
    assert float(image[..., :3].std()) > 0.05  # something drawn, not a blank canvas
    return image


def test_handler_writes_the_cosine_matrix_as_numbers(tmp_path):
    diags = _train(tmp_path, t2_weight=0.04)
    with open(tmp_path / "gmd_cosine.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["epoch", "segment", "subset_i", "subset_j", "cosine"]
    assert len(rows) == EPOCHS * T * T
    for epoch in range(1, EPOCHS + 1):
        last = diags[epoch * STEPS - 1].cosine  # the epoch's last step, as in the TensorBoard image
        got = [r for r in rows if int(r["epoch"]) == epoch]
        assert len(got) == T * T
        for r in got:
            i, j = NAMES.index(r["subset_i"]), NAMES.index(r["subset_j"])
            assert float(r["cosine"]) == pytest.approx(float(last[i, j]), abs=1e-6)


def test_no_cosine_csv_for_a_run_without_cosines(tmp_path):
    _train(tmp_path, t2_weight=0.04, method="mean")
    assert (tmp_path / "gmd_weights.csv").is_file()
    assert not (tmp_path / "gmd_cosine.csv").exists()


def test_plots_and_dominance_when_the_dominant_modality_is_suppressed(tmp_path):
    run = tmp_path / "run"
    _train(run, t2_weight=0.04)
    paths = plot_diagnostics(run)
    assert set(paths) == {*PNGS, "dominance"}
    for name in PNGS:
        assert paths[name] == run / "diagnostics" / f"{name}.png"
        _read_png(paths[name])
    d = json.loads(paths["dominance"].read_text())
    assert d["method"] == "gmd" and d["subsets"] == T and d["epochs"] == EPOCHS
    assert d["cosine_source"] == "gmd_cosine.csv" and d["skipped"] == {}
    assert d["uniform_weight"] == pytest.approx(1 / T, abs=1e-6)
    mean_factor = 1 + 0.01 * np.mean(range(STEPS))
    for m, norm in NORMS.items():
        assert d["modalities"][m]["mean_grad_norm"] == pytest.approx(norm * mean_factor, rel=1e-5)
        assert d["modalities"][m]["mean_weight"] == pytest.approx(0.04 if m == "t2" else 0.1, abs=1e-5)
    assert d["dominant_modality"] == "t2"
    assert d["dominant_weight"] == pytest.approx(0.04, abs=1e-5)
    assert d["single_modality_mean_weight"] == pytest.approx((0.04 + 3 * 0.1) / 4, abs=1e-5)
    assert d["claim_holds"] is True and d["median_check"]["claim_holds"] is True
    assert d["per_epoch"]["epochs_checked"] == EPOCHS and d["per_epoch"]["claim_holds"] == EPOCHS
    assert d["per_epoch"]["epochs_dominant"] == {"t1": 0, "t1ce": 0, "t2": EPOCHS, "flair": 0}
    assert d["verdict"] == "holds"


def test_dominance_when_the_dominant_modality_is_not_suppressed(tmp_path):
    _train(tmp_path, t2_weight=0.3)
    out = tmp_path / "pictures"
    paths = plot_diagnostics(tmp_path, out)
    assert all(p.parent == out for p in paths.values())
    assert not (tmp_path / "diagnostics").exists()
    d = json.loads(paths["dominance"].read_text())
    assert d["dominant_modality"] == "t2" and d["dominant_weight"] == pytest.approx(0.3, abs=1e-5)
    assert d["claim_holds"] is False and d["median_check"]["claim_holds"] is False
    assert d["per_epoch"]["claim_holds"] == 0
    assert d["relative_weight_difference"] == pytest.approx(0.3 / ((0.3 + 0.3) / 4) - 1, abs=1e-4)
    assert d["verdict"] == "does not hold"


def test_cosine_decoded_from_tensorboard_without_the_csv(tmp_path):
    diags = _train(tmp_path, t2_weight=0.04, cosine_csv=False)
    logs = read_run_logs(tmp_path)
    assert logs.cosine_source == "tensorboard"
    assert logs.iterations_per_epoch == pytest.approx(STEPS)
    assert sorted(logs.cosine) == list(range(1, EPOCHS + 1))
    for epoch, got in logs.cosine.items():
        want = diags[epoch * STEPS - 1].cosine.numpy()
        np.testing.assert_allclose(got, want, atol=1 / 255 + 1e-6)  # 8-bit image
    _read_png(plot_diagnostics(tmp_path)["cosine"])


def test_a_resumed_run_newer_event_file_wins(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    _train(tmp_path, t2_weight=0.04)
    later = SummaryWriter(log_dir=str(tmp_path))  # a resume that logged the last step again
    later.add_scalar("gmd/grad_norm/t2", 99.0, EPOCHS * STEPS)
    later.close()
    s = read_run_logs(tmp_path).series("grad_norm", "t2")
    assert len(s.steps) == EPOCHS * STEPS and s.values[-1] == 99.0


def test_a_mean_run_gets_the_plots_its_logs_allow(tmp_path):
    _train(tmp_path, t2_weight=0.04, method="mean")
    paths = plot_diagnostics(tmp_path)
    assert set(paths) == {"weights", "dominance"}
    _read_png(paths["weights"])
    d = json.loads(paths["dominance"].read_text())
    assert set(d["skipped"]) == {"grad_norms", "conflicts", "cosine"}
    assert d["claim_holds"] is None and d["verdict"] == "not checkable" and "gradient norms" in d["reason"]
    assert d["modalities"]["t2"]["mean_weight"] == pytest.approx(1 / T, abs=1e-5)


def test_missing_or_unusable_run_folders_raise(tmp_path):
    with pytest.raises(DiagnosticsError, match="no such run folder"):
        plot_diagnostics(tmp_path / "absent")
    with pytest.raises(DiagnosticsError, match="no GMD logs"):
        plot_diagnostics(tmp_path)
    (tmp_path / "gmd_weights.csv").write_text(
        "epoch,segment,method,mean_conflicting_pairs,w[dropout]\n1,0,dropout,-1.000,1.00000\n"
    )
    with pytest.raises(DiagnosticsError, match="dropout"):
        plot_diagnostics(tmp_path)
    (tmp_path / "gmd_weights.csv").write_text("subset,weight\nt1,0.1\n")
    with pytest.raises(DiagnosticsError, match="gmd_weights.csv"):
        plot_diagnostics(tmp_path)


def test_cli_missing_folder_is_one_line_and_exit_2(tmp_path, capsys):
    missing = tmp_path / "no_run"
    code, out, err = run_cli(["plot-diagnostics", str(missing)], capsys)
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err
    assert lines[0].startswith("gmd-monai plot-diagnostics: error:") and str(missing) in lines[0]


def test_cli_prints_where_each_picture_went(tmp_path, capsys):
    _train(tmp_path / "run", t2_weight=0.04)
    out_dir = tmp_path / "out"
    code, out, err = run_cli(["plot-diagnostics", str(tmp_path / "run"), "--output", str(out_dir)], capsys)
    assert code == 0, err
    for name in PNGS:
        assert str(out_dir / f"{name}.png") in out
    assert str(out_dir / "dominance.json") in out and "verdict: holds" in out
