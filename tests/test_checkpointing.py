"""Crash-safe, resumable training: SIGKILL and resume give the uninterrupted run's weights; a kill while
a checkpoint is being written leaves a loadable one; the best model is never replaced by a worse one."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from conftest import brats_train_overrides
from ignite.engine import Engine, Events

from gmd_monai.checkpointing import BestModelSaver, load_initial_weights, model_meta, read_model_meta
from gmd_monai.data.synthetic import ensure_synthetic_brats
from gmd_monai.networks import DynamicSharingUNet

REPO = Path(__file__).resolve().parents[1]
TRAIN = str(REPO / "bundle" / "configs" / "train.yaml")
EPOCHS = 3

# runs the bundle in a child process; KILL_AT=<iteration> SIGKILLs it after that iteration,
# KILL_IN_SAVE=<n> SIGKILLs it halfway through writing the n-th latest.pt
RUNNER = textwrap.dedent(
    """
    import json, os, signal, sys
    import torch
    torch.set_num_threads(1)
    from ignite.engine import Events
    from monai.bundle import ConfigWorkflow
    overrides = json.loads(sys.argv[1])
    wf = ConfigWorkflow(config_file=sys.argv[2], workflow_type="train", **overrides)
    wf.initialize()
    kill_at = int(os.environ.get("KILL_AT", "0"))
    if kill_at:
        @wf.trainer.on(Events.ITERATION_COMPLETED(once=kill_at))
        def _kill(engine):
            os.kill(os.getpid(), signal.SIGKILL)
    kill_in_save = int(os.environ.get("KILL_IN_SAVE", "0"))
    if kill_in_save:
        real_save, calls = torch.save, [0]
        def save(obj, f, *a, **k):
            if isinstance(obj, dict) and "optimizer" in obj:
                calls[0] += 1
                if calls[0] == kill_in_save:
                    f.write(b"PK" + b"\\0" * 4096)  # a partial file, then the process dies
                    f.flush()
                    os.kill(os.getpid(), signal.SIGKILL)
            return real_save(obj, f, *a, **k)
        torch.save = save
    wf.run()
    wf.finalize()
    """
)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> str:
    return ensure_synthetic_brats(str(tmp_path_factory.mktemp("ckpt_data")), num_cases=4, shape=(24, 24, 24))


def _overrides(data_dir: str, run: Path, **extra) -> dict:
    recipe = dict(max_epochs=EPOCHS, batch_size=1, test_fraction=0.0, learning_rate=0.01, foreground_prob=0.5)
    return brats_train_overrides(run, data_dir, checkpoint_minutes=0, **{**recipe, **extra})


def _run(overrides: dict, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env_extra or {})}
    return subprocess.run(
        [sys.executable, "-c", RUNNER, json.dumps(overrides), TRAIN],
        env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["model"]


def _epoch(ckpt: dict) -> int:
    return ckpt["trainer"]["iteration"] // ckpt["trainer"]["epoch_length"]


def _assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    diff = {k: float((a[k] - b[k]).abs().max()) for k in a if not torch.equal(a[k], b[k])}
    assert not diff, f"weights differ: {list(diff.items())[:3]}"


@pytest.fixture(scope="module")
def uninterrupted(data_dir, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("uninterrupted")
    proc = _run(_overrides(data_dir, run))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run


def test_kill_and_resume_gives_the_uninterrupted_weights(data_dir, uninterrupted, tmp_path):
    full = torch.load(uninterrupted / "models" / "latest.pt", map_location="cpu", weights_only=False)
    assert _epoch(full) == EPOCHS
    iters = full["trainer"]["epoch_length"]
    # killed in the middle of the second epoch: the epoch-1 checkpoint is what is left
    proc = _run(_overrides(data_dir, tmp_path), {"KILL_AT": str(iters + iters // 2 + 1)})
    assert proc.returncode == -signal.SIGKILL
    left = torch.load(tmp_path / "models" / "latest.pt", map_location="cpu", weights_only=False)
    assert _epoch(left) == 1
    # a new run must not silently replace the killed one
    proc = _run(_overrides(data_dir, tmp_path))
    assert proc.returncode != 0 and "--resume true" in proc.stderr
    proc = _run(_overrides(data_dir, tmp_path, resume=True))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "resumed from" in proc.stdout + proc.stderr
    resumed = torch.load(tmp_path / "models" / "latest.pt", map_location="cpu", weights_only=False)
    assert _epoch(resumed) == EPOCHS and resumed["run_segment"]["value"] == 1
    _assert_same(resumed["model"], full["model"])
    _assert_same(resumed["optimizer"]["state"][0], full["optimizer"]["state"][0])
    _assert_same(_weights(tmp_path / "models" / "model.pt"), _weights(uninterrupted / "models" / "model.pt"))
    # the CSV logs: one row set per epoch, the resumed segment marked
    with open(tmp_path / "runs" / "val_subset_dice.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    epochs = [int(r["epoch"]) for r in rows]
    assert sorted(set(epochs)) == list(range(1, EPOCHS + 1)) and len(rows) == 15 * EPOCHS
    assert {r["segment"] for r in rows if int(r["epoch"]) == 1} == {"0"}
    assert {r["segment"] for r in rows if int(r["epoch"]) > 1} == {"1"}


def test_kill_while_writing_a_checkpoint_leaves_a_loadable_one(data_dir, uninterrupted, tmp_path):
    proc = _run(_overrides(data_dir, tmp_path), {"KILL_IN_SAVE": "2"})  # dies writing epoch 2's
    assert proc.returncode == -signal.SIGKILL
    models = tmp_path / "models"
    left = torch.load(models / "latest.pt", map_location="cpu", weights_only=False)
    assert _epoch(left) == 1  # the previous checkpoint, whole
    stale = [p for p in models.iterdir() if p.name.startswith("tmp")]
    assert stale, "the killed writer's temporary file should be there"
    assert torch.load(models / "model.pt", map_location="cpu", weights_only=True)["model"]
    proc = _run(_overrides(data_dir, tmp_path, resume=True))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not [p for p in models.iterdir() if p.name.startswith("tmp")], "stale temporary file not removed"
    full = torch.load(uninterrupted / "models" / "latest.pt", map_location="cpu", weights_only=False)
    _assert_same(
        torch.load(models / "latest.pt", map_location="cpu", weights_only=False)["model"], full["model"]
    )


def test_the_weights_carry_the_models_grid(uninterrupted):
    meta = read_model_meta(uninterrupted / "models" / "model.pt")
    assert meta["pixdim"] == [1.0, 1.0, 1.0] and meta["axcodes"] == "LPS" and meta["width"] == 0.25
    assert meta["normalization"]["name"] == "robust_zscore"
    info = json.loads((uninterrupted / "models" / "model_info.json").read_text())
    assert info["model_meta"] == meta and info["width"] == 0.25


def _validator(best: float, epoch: int) -> Engine:
    e = Engine(lambda engine, batch: None)
    e.state.best_metric, e.state.best_metric_epoch, e.state.epoch = best, epoch, epoch
    return e


def test_best_model_never_replaced_by_a_worse_one(tmp_path):
    net = DynamicSharingUNet(width=0.25)
    saver = BestModelSaver(tmp_path, net, model_meta(pixdim=2.0, width=0.25))
    saver(_validator(0.8, 5))
    first = (tmp_path / "model.pt").read_bytes()
    assert torch.load(tmp_path / "model.pt", weights_only=True)["best"] == {
        "metric": 0.8, "epoch": 5, "metric_name": ""}  # fmt: skip
    # a resumed run whose validator lost that best (killed between the two writes) finds a worse one
    with torch.no_grad():
        next(net.parameters()).add_(1.0)
    resumed = BestModelSaver(tmp_path, net, model_meta(pixdim=2.0, width=0.25))
    validator = _validator(0.5, 7)
    resumed.restore_best(validator)
    assert validator.state.best_metric == 0.8
    resumed(validator)
    assert (tmp_path / "model.pt").read_bytes() == first
    resumed(_validator(0.9, 8))  # a real improvement is saved
    assert torch.load(tmp_path / "model.pt", weights_only=True)["best"]["metric"] == 0.9
    assert read_model_meta(tmp_path / "model.pt")["pixdim"] == [2.0, 2.0, 2.0]


def test_new_weights_retire_the_evaluation_of_the_old_ones(tmp_path):
    """A report must never quote the shipped model's accuracy for weights trained over it."""
    from gmd_monai.checkpointing import EVALUATION_FILES
    from gmd_monai.inference.report import SUBSET_TABLE_NAMES, find_subset_table

    assert set(SUBSET_TABLE_NAMES) <= set(EVALUATION_FILES)
    torch.save({"model": {}}, tmp_path / "model.pt")
    (tmp_path / "subset_summary.csv").write_text("subset,WT,TC,ET\nt1,0.9,0.8,0.7\n")
    (tmp_path / "per_case.csv").write_text("case\n")
    assert find_subset_table(tmp_path / "model.pt") == tmp_path / "subset_summary.csv"
    BestModelSaver(tmp_path, DynamicSharingUNet(width=0.25))(_validator(0.5, 1))
    assert find_subset_table(tmp_path / "model.pt") is None
    moved = sorted(p.name for p in (tmp_path / "previous_evaluation").iterdir())
    assert moved == ["per_case.csv", "subset_summary.csv"]


def test_epoch_progress_line_has_loss_elapsed_and_eta(caplog):
    from gmd_monai.engine import EpochProgressLogger

    losses = iter([1.0, 3.0, 0.5, 0.5])
    engine = Engine(lambda e, batch: [{"loss": torch.tensor(next(losses))}])  # decollated, as the trainer's
    EpochProgressLogger().attach(engine)
    with caplog.at_level("INFO", logger="gmd_monai.progress"):
        engine.run([0, 1], max_epochs=2)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("epoch ")]
    assert lines[0].startswith("epoch 1/2 loss 2.0000 | elapsed") and "ETA" in lines[0]
    assert lines[1].startswith("epoch 2/2 loss 0.5000") and "ETA 0:00:00" in lines[1]


def test_epoch_progress_after_a_resume_counts_the_segment_only(caplog, monkeypatch):
    """A resumed run's counters are restored at STARTED by a handler attached after the logger (the
    bundle lists TrainingCheckpoint last): the header names the epochs left and the ETA extrapolates
    this segment's epochs, not the restored ones."""
    import gmd_monai.engine as engine_module
    from gmd_monai.engine import EpochProgressLogger

    clock = iter(range(0, 1000, 10))  # every epoch takes 10 s on this clock
    monkeypatch.setattr(engine_module.time, "monotonic", lambda: float(next(clock)))
    engine = Engine(lambda e, batch: [{"loss": torch.tensor(1.0)}])
    EpochProgressLogger().attach(engine)

    def restore(e):  # what MONAI's CheckpointLoader does on a resume
        e.state.epoch, e.state.iteration = 6, 6

    engine.add_event_handler(Events.STARTED, restore)
    with caplog.at_level("INFO", logger="gmd_monai.progress"):
        engine.run([0], max_epochs=10)
    messages = [r.getMessage() for r in caplog.records]
    assert "training epochs 7..10 of 10 (segment 0)" in messages
    lines = [m for m in messages if m.startswith("epoch ")]
    assert [m.split(" loss")[0] for m in lines] == ["epoch 7/10", "epoch 8/10", "epoch 9/10", "epoch 10/10"]
    assert "elapsed 0:00:10, ETA 0:00:30" in lines[0]  # 1 epoch of 10 s done, 3 left
    assert "elapsed 0:00:40, ETA 0:00:00" in lines[3]


def test_epoch_progress_line_carries_the_validation_of_its_epoch_and_follows_the_bar(caplog):
    """On an epoch that validated, the line gives the key metric and the best so far; the progress
    bar it owns is closed before the line is written (else the line is glued to the bar)."""
    from ignite.handlers import ProgressBar

    from gmd_monai.engine import EpochProgressLogger

    dice = iter([0.2, 0.5])
    validator = Engine(lambda e, batch: None)
    validator.state.key_metric_name = "val_mean_dice"

    def validate(engine):
        if engine.state.epoch % 2 == 0:  # every 2nd epoch, as ValidationHandler(interval=2)
            value = next(dice)
            validator.state.epoch, validator.state.metrics = engine.state.epoch, {"val_mean_dice": value}
            validator.state.best_metric, validator.state.best_metric_epoch = value, engine.state.epoch

    engine = Engine(lambda e, batch: [{"loss": torch.tensor(1.0)}])
    engine.add_event_handler(Events.EPOCH_COMPLETED, validate)
    logger = EpochProgressLogger(validator=validator, progress_bar=True)
    logger.attach(engine)
    handlers = [h[0] for h in engine._event_handlers[Events.EPOCH_COMPLETED]]
    bar_close = [k for k, h in enumerate(handlers) if isinstance(getattr(h, "__self__", None), ProgressBar)]
    assert bar_close and bar_close[0] < handlers.index(logger._epoch)
    with caplog.at_level("INFO", logger="gmd_monai.progress"):
        engine.run([0], max_epochs=4)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("epoch ")]
    assert "val_mean_dice" not in lines[0] and "val_mean_dice" not in lines[2]
    assert lines[1].endswith("| val_mean_dice 0.2000 (best 0.2000, epoch 2)")
    assert lines[3].endswith("| val_mean_dice 0.5000 (best 0.5000, epoch 4)")


def test_a_warm_restart_starts_from_the_given_weights_and_checks_their_grid(tmp_path):
    trained, fresh = DynamicSharingUNet(width=0.25), DynamicSharingUNet(width=0.25)
    meta = model_meta(pixdim=(2.0, 2.0, 2.0), axcodes="LPS", width=0.25)
    torch.save({"model": trained.state_dict(), "model_meta": meta}, tmp_path / "model.pt")
    assert load_initial_weights(fresh, None) is False
    assert any(
        not torch.equal(a, b) for a, b in zip(trained.state_dict().values(), fresh.state_dict().values())
    )
    assert load_initial_weights(fresh, tmp_path / "model.pt", [2.0, 2.0, 2.0]) is True
    for (name, a), b in zip(trained.state_dict().items(), fresh.state_dict().values()):
        assert torch.equal(a, b), name
    with pytest.raises(ValueError, match="trained at"):
        load_initial_weights(DynamicSharingUNet(width=0.25), tmp_path / "model.pt", [1.0, 1.0, 1.0])
    with pytest.raises(RuntimeError):  # another width: the weights do not fit
        load_initial_weights(DynamicSharingUNet(width=0.5), tmp_path / "model.pt")
    with pytest.raises(FileNotFoundError, match="init_weights"):
        load_initial_weights(fresh, tmp_path / "missing.pt")
