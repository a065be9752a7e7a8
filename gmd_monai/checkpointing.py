"""Crash-safe, resumable training: the ``latest`` checkpoint, the best model, the model's grid.

Two Ignite handlers, both writing through Ignite's ``DiskSaver(atomic=True)`` (a temporary file in the
same folder, then ``os.replace``), so that a process killed at any moment leaves either the previous
file or the new one, never a truncated one:

- :class:`TrainingCheckpoint` (on the trainer) writes ``latest.pt`` at every epoch end and at least every
  ``interval_minutes`` mid-epoch: network, optimizer, LR scheduler, trainer counters, the validator's best
  metric, every random state that the run draws from (torch, numpy, Python, the data loader's generator,
  the random transforms, GMD's permutations and the dropout subsets), and the run-segment counter. With
  ``resume=True`` it restores all of it when the trainer starts (through MONAI's ``CheckpointLoader``), so
  the run continues to the same final epoch; resumed from an epoch-end checkpoint on CPU, the weights
  then equal those of an uninterrupted run.
- :class:`BestModelSaver` (on the validator) writes ``model.pt`` when the key metric reaches a new best,
  with the model's grid (:func:`model_meta`) inside and in ``model_info.json`` beside it. It never
  replaces a model whose recorded metric is better, also across resumes.

Example:
    >>> meta = model_meta(pixdim=(2.0, 2.0, 2.0), axcodes="LPS", width=0.25)
    >>> meta["pixdim"], meta["axcodes"], meta["normalization"]["name"]
    ([2.0, 2.0, 2.0], 'LPS', 'robust_zscore')
"""

from __future__ import annotations

import csv
import json
import logging
import os
import random
import re
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ignite.engine import Engine, Events
from ignite.handlers import DiskSaver
from monai.handlers import CheckpointLoader
from monai.transforms import Compose, Randomizable

from gmd_monai.errors import CheckpointError
from gmd_monai.weights import load_checkpoint, load_state_dict_into, state_dict_of

__all__ = [
    "LATEST",
    "BEST",
    "MODEL_INFO",
    "BestModelSaver",
    "RandomStates",
    "as_bool",
    "TrainingCheckpoint",
    "load_initial_weights",
    "model_meta",
    "read_model_meta",
]

logger = logging.getLogger(__name__)

LATEST = "latest.pt"
BEST = "model.pt"
MODEL_INFO = "model_info.json"
#: ``tempfile.NamedTemporaryFile`` names, as left by a process killed inside ``DiskSaver(atomic=True)``.
_STALE_TMP = re.compile(r"^tmp[a-z0-9_]{8}$")


def model_meta(
    pixdim: Sequence[float] | float | None = (1.0, 1.0, 1.0),
    axcodes: str | None = "LPS",
    width: float | None = None,
    modalities: Sequence[str] = ("t1", "t1ce", "t2", "flair"),
    lower: float = 0.5,
    upper: float = 99.5,
    **extra: Any,
) -> dict[str, Any]:
    """What the network was trained at: voxel grid, orientation, normalisation, channels.

    Every inference path resamples each input to ``pixdim`` mm in ``axcodes`` orientation, normalises it
    the same way, and brings the label map back to the patient's grid.

    Args:
        pixdim: voxel size in mm (a number for isotropic; ``None``: the data's own grid, 1 mm for BraTS).
        axcodes: orientation (``None``: as read).
        width: network width.
        modalities: input streams, in order.
        lower, upper: the robust z-score's clipping percentiles.
        extra: more entries (e.g. ``method``, ``roi_size``).
    """
    if pixdim is None:
        pix = [1.0, 1.0, 1.0]
    elif isinstance(pixdim, int | float):
        pix = [float(pixdim)] * 3
    else:
        pix = [float(p) for p in pixdim]
    if len(pix) != 3 or min(pix) <= 0:
        raise ValueError(f"pixdim must be 3 positive numbers (mm), got {pixdim!r}")
    meta: dict[str, Any] = {
        "pixdim": pix,
        "axcodes": axcodes,
        "normalization": {
            "name": "robust_zscore",
            "lower_percentile": lower,
            "upper_percentile": upper,
            "region": "nonzero voxels per channel",
            "crop_foreground": True,
        },  # fmt: skip
        "modalities": list(modalities),
        "region_order": ["WT", "TC", "ET"],
    }
    if width is not None:
        meta["width"] = float(width)
    meta.update(extra)
    return meta


def read_model_meta(path: str | os.PathLike, checkpoint: Any = None) -> dict[str, Any] | None:
    """The :func:`model_meta` saved with the weights at ``path``: the checkpoint's own (authoritative),
    else the one in ``model_info.json`` beside it; ``None`` when neither has one (a weights file from
    before). ``checkpoint``: the already loaded file, to avoid reading it twice."""
    path = Path(path)
    if checkpoint is None and path.is_file():
        checkpoint = load_checkpoint(path)
    if isinstance(checkpoint, dict) and isinstance(checkpoint.get("model_meta"), dict):
        return checkpoint["model_meta"]
    info = path.parent / MODEL_INFO
    if info.is_file():
        try:
            content = json.loads(info.read_text())
        except (OSError, ValueError):
            content = None
        if isinstance(content, dict) and isinstance(content.get("model_meta"), dict):
            return content["model_meta"]
    return None


def as_bool(value: Any, name: str = "value") -> bool:
    """A flag given as a bool or as command-line text: ``--resume false`` reaches a bundle config as the
    string ``"false"``, which Python would take as true.

    >>> as_bool("false"), as_bool("True"), as_bool(1)
    (False, True, True)
    """
    if isinstance(value, str):
        text = value.strip().lower()
        if text in ("true", "1", "yes", "on"):
            return True
        if text in ("false", "0", "no", "off", "none", ""):
            return False
        raise ValueError(f"--{name}: {value!r} is not true or false")
    return bool(value)


def load_initial_weights(
    network: torch.nn.Module, path: str | os.PathLike | None, pixdim: Any = None
) -> bool:
    """Start a new run from trained weights (a warm restart, e.g. a second stage with a fresh LR schedule).

    ``path``: a ``model.pt``/``latest.pt`` written by this bundle (or a bare state dict). The weights must
    fit the network exactly, and, when ``pixdim`` is given and the file records its grid, have been
    trained at that voxel size. Nothing else is taken: optimizer, schedule and counters start anew. A
    resumed run (``--resume true``) overrides these weights with its own ``latest.pt`` when it starts.
    Returns False when ``path`` is None (nothing to load).
    """
    if path is None or path == "":
        return False
    path = Path(path)
    checkpoint = load_checkpoint(path, missing=f"{path}: no such weights file (init_weights)")
    state = state_dict_of(checkpoint, path)
    meta = read_model_meta(path, checkpoint)
    if pixdim is not None and meta and meta.get("pixdim") is not None:
        trained = [float(v) for v in meta["pixdim"]]
        wanted = [float(v) for v in (pixdim if isinstance(pixdim, Sequence) else [pixdim] * 3)]
        if not np.allclose(trained, wanted):
            raise CheckpointError(
                f"{path}: trained at {trained} mm, this run trains at {wanted} mm (init_weights)"
            )
    load_state_dict_into(network, state, path)
    logger.info("initial weights from %s", path)
    return True


def _atomic_json(path: Path, content: Mapping[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(content, indent=2) + "\n")
    os.replace(tmp, path)


def _remove_stale_tmp(folder: Path) -> None:
    """Delete temporary files that a process killed while saving left in ``folder``."""
    for p in folder.iterdir() if folder.is_dir() else []:
        if p.is_file() and _STALE_TMP.match(p.name):
            logger.info("removing %s (left by a run killed while saving a checkpoint)", p)
            p.unlink(missing_ok=True)


def _unwrap(obj: Any) -> Any:
    return obj.module if isinstance(getattr(obj, "module", None), torch.nn.Module) else obj


def _random_transforms(dataset: Any) -> list[Randomizable]:
    """The random transforms of a MONAI dataset's pipeline, nested ones included (e.g. the cropper
    inside ``RandSpatialCropd``), in a fixed order: their ``R`` states drive crops and flips, and are
    restored on resume so that a resumed run draws what the uninterrupted run would."""
    out: list[Randomizable] = []
    seen: set[int] = set()

    def walk(t: Any, depth: int = 0) -> None:
        if id(t) in seen or depth > 4:
            return
        seen.add(id(t))
        if isinstance(t, Compose):
            for s in t.transforms:
                walk(s, depth + 1)
            return
        if isinstance(t, Randomizable):
            out.append(t)
        for v in vars(t).values() if hasattr(t, "__dict__") else ():
            if isinstance(v, Randomizable | Compose):
                walk(v, depth + 1)

    walk(getattr(dataset, "transform", None))
    return out


def _np_state_to_torch(state: tuple) -> list:
    """numpy's RandomState state with torch tensors instead of arrays (loadable with weights_only)."""
    name, keys, pos, has_gauss, cached = state
    return [name, torch.from_numpy(np.asarray(keys, dtype=np.int64)), int(pos), int(has_gauss), float(cached)]


def _np_state_from_torch(state: Sequence) -> tuple:
    name, keys, pos, has_gauss, cached = state
    return (name, keys.numpy().astype(np.uint32), int(pos), int(has_gauss), float(cached))


class RandomStates:
    """Every random state a training run draws from, as one ``state_dict``/``load_state_dict`` object.

    torch's global generator, numpy's and Python's, the data loader's ``generator`` (shuffling and the
    worker seeds), the random transforms of the dataset (used when ``num_workers == 0``), and the
    trainer's own generators: GMD's permutations (``trainer.aggregator.generator``) and the dropout
    subsets (``trainer.dropout_generator``).
    """

    def __init__(self, trainer: Engine | None = None, data_loader: Any = None):
        self.trainer = trainer
        self.data_loader = data_loader

    def _generators(self) -> dict[str, torch.Generator]:
        gens: dict[str, torch.Generator] = {}
        t = self.trainer
        loader = self.data_loader if self.data_loader is not None else getattr(t, "data_loader", None)
        if isinstance(getattr(loader, "generator", None), torch.Generator):
            gens["data_loader"] = loader.generator
        if isinstance(getattr(getattr(t, "aggregator", None), "generator", None), torch.Generator):
            gens["aggregator"] = t.aggregator.generator
        if isinstance(getattr(t, "dropout_generator", None), torch.Generator):
            gens["dropout"] = t.dropout_generator
        return gens

    def _transforms(self) -> list[Randomizable]:
        loader = (
            self.data_loader if self.data_loader is not None else getattr(self.trainer, "data_loader", None)
        )
        return _random_transforms(getattr(loader, "dataset", None))

    def state_dict(self) -> dict[str, Any]:
        return {
            "torch": torch.get_rng_state(),
            "numpy": _np_state_to_torch(np.random.get_state()),  # noqa: NPY002 (the global one)
            "python": random.getstate(),
            "generators": {k: g.get_state() for k, g in self._generators().items()},
            "transforms": [_np_state_to_torch(t.R.get_state()) for t in self._transforms()],
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        torch.set_rng_state(state["torch"])
        np.random.set_state(_np_state_from_torch(state["numpy"]))  # noqa: NPY002
        random.setstate(state["python"])
        for k, g in self._generators().items():
            if k in state["generators"]:
                g.set_state(state["generators"][k])
        transforms = self._transforms()
        if len(transforms) == len(state["transforms"]):
            for t, s in zip(transforms, state["transforms"]):
                t.R.set_state(_np_state_from_torch(s))
        else:
            logger.warning("the data pipeline changed since the checkpoint: random transforms not restored")


class _BestMetric:
    """The validator's best key metric and its epoch, as a checkpointable object."""

    def __init__(self, evaluator: Engine | None):
        self.evaluator = evaluator

    def state_dict(self) -> dict[str, Any]:
        s = getattr(self.evaluator, "state", None)
        return {
            "best_metric": float(getattr(s, "best_metric", -1)),
            "best_metric_epoch": int(getattr(s, "best_metric_epoch", -1)),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if self.evaluator is not None:
            self.evaluator.state.best_metric = state["best_metric"]
            self.evaluator.state.best_metric_epoch = state["best_metric_epoch"]


class _Counter:
    def __init__(self, value: int = 0):
        self.value = value

    def state_dict(self) -> dict[str, int]:
        return {"value": self.value}

    def load_state_dict(self, state: Mapping[str, int]) -> None:
        self.value = int(state["value"])


class TrainingCheckpoint:
    """Write ``latest.pt`` (everything needed to resume) atomically; optionally resume from it first.

    Attach to the trainer, as the LAST trainer handler (after the LR scheduler and the validation
    handlers, so that the checkpoint of epoch ``e`` holds the state after all of epoch ``e``'s work).

    Args:
        save_dir: folder of ``latest.pt`` (and usually of ``model.pt``).
        network, optimizer: saved and restored.
        lr_scheduler: saved and restored (optional).
        evaluator: the validator: its best metric is saved and restored (optional).
        best_saver: the :class:`BestModelSaver` of the validator: on resume it learns the best metric
            already saved (optional).
        interval_minutes: also save mid-epoch when this many minutes passed since the last save
            (``None`` or 0: epoch ends only). Resuming from a mid-epoch checkpoint continues the epoch
            with fresh batches (not bit-identical to an uninterrupted run; epoch ends are).
        resume: restore from ``save_dir/latest.pt`` when the trainer starts. When it does not exist the
            run starts fresh (with a warning).
        overwrite: a fresh run (``resume=False``) into a ``save_dir`` that already has a ``latest.pt``
            or a best model (e.g. the shipped weights) is refused unless this is True (then the old
            files are replaced as the run goes).
        csv_paths: CSV logs with an ``epoch`` column: on resume, rows of epochs after the checkpoint
            (work lost with the killed process, about to be redone) are dropped.
        filename: the checkpoint's file name.
    """

    def __init__(
        self,
        save_dir: str | os.PathLike,
        network: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        lr_scheduler: Any = None,
        evaluator: Engine | None = None,
        best_saver: BestModelSaver | None = None,
        interval_minutes: float | None = 10.0,
        resume: bool = False,
        overwrite: bool = False,
        csv_paths: Sequence[str | os.PathLike] = (),
        filename: str = LATEST,
    ):
        self.save_dir = Path(save_dir)
        self.path = self.save_dir / filename
        self.filename = filename
        self.network = network
        self.optimizer = optimizer
        self.lr_scheduler = lr_scheduler
        self.evaluator = evaluator
        self.best_saver = best_saver
        self.interval_s = float(interval_minutes or 0) * 60.0
        self.resume = as_bool(resume, "resume")
        self.overwrite = as_bool(overwrite, "overwrite")
        self.csv_paths = [Path(p) for p in csv_paths]
        self.segment = _Counter(0)
        self._last_save = time.monotonic()
        self._trainer: Engine | None = None

    def _objects(self, trainer: Engine) -> dict[str, Any]:
        objs: dict[str, Any] = {"model": self.network, "optimizer": self.optimizer, "trainer": trainer}
        if self.lr_scheduler is not None:
            objs["lr_scheduler"] = self.lr_scheduler
        objs["best_metric"] = _BestMetric(self.evaluator)
        objs["random_states"] = RandomStates(trainer)
        objs["run_segment"] = self.segment
        return objs

    def attach(self, engine: Engine) -> None:
        self._trainer = engine
        if not self.resume and not self.overwrite:
            if self.path.is_file():
                raise FileExistsError(
                    f"{self.path} exists: a run was already written to {self.save_dir}. Continue it with "
                    "--resume true, or start a new one in another ckpt_dir (or with --overwrite true)"
                )
            best = self.best_saver.path if self.best_saver is not None else None
            if best is not None and best.is_file():
                raise FileExistsError(
                    f"{best} exists (e.g. the shipped weights): a new run would replace it. Train into "
                    "another ckpt_dir (--ckpt_dir runs/my_model), or pass --overwrite true"
                )
        if self.resume:
            _remove_stale_tmp(self.save_dir)
            if self.path.is_file():
                # MONAI's loader restores the trainer's counters and keeps its max_epochs (STARTED)
                loader = CheckpointLoader(str(self.path), self._objects(engine), map_location="cpu")
                loader.attach(engine)
            else:
                logger.warning("--resume: no %s yet: starting a new run", self.path)
        engine.add_event_handler(Events.STARTED, self._started)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._save)
        if self.interval_s > 0:
            engine.add_event_handler(Events.ITERATION_COMPLETED, self._maybe_save)

    def _started(self, engine: Engine) -> None:
        if self.resume and self.path.is_file():
            self.segment.value += 1
            self._truncate_csvs(engine.state.epoch)
            if self.best_saver is not None:
                self.best_saver.restore_best(self.evaluator)
            best = getattr(getattr(self.evaluator, "state", None), "best_metric", None)
            logger.info(
                "resumed from %s: epoch %d, iteration %d of %d epochs, best metric %s (run segment %d)",
                self.path, engine.state.epoch, engine.state.iteration, engine.state.max_epochs, best,
                self.segment.value,
            )  # fmt: skip
        else:  # a new run starts new logs (rows of an earlier run in the same output_dir would mix in)
            self._truncate_csvs(0)
        engine.state.run_segment = self.segment.value
        if self.evaluator is not None:
            self.evaluator.state.run_segment = self.segment.value
        self._last_save = time.monotonic()

    def _truncate_csvs(self, epoch: int) -> None:
        for path in self.csv_paths:
            if not path.is_file():
                continue
            with open(path, newline="") as f:
                rows = list(csv.reader(f))
            if not rows or "epoch" not in rows[0]:
                continue
            col = rows[0].index("epoch")
            keep = [rows[0]] + [r for r in rows[1:] if r and int(float(r[col])) <= epoch]
            if len(keep) != len(rows):
                tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
                with open(tmp, "w", newline="") as f:
                    csv.writer(f).writerows(keep)
                os.replace(tmp, path)
                logger.info(
                    "%s: dropped %d row(s) after epoch %d (redone now)", path, len(rows) - len(keep), epoch
                )

    def _maybe_save(self, engine: Engine) -> None:
        if time.monotonic() - self._last_save >= self.interval_s:
            self._save(engine)

    def _save(self, engine: Engine) -> None:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            if torch.distributed.get_rank() != 0:
                return
        self.save_dir.mkdir(parents=True, exist_ok=True)
        checkpoint = {k: _unwrap(v).state_dict() for k, v in self._objects(engine).items()}
        DiskSaver(str(self.save_dir), atomic=True, require_empty=False)(checkpoint, self.filename)
        self._last_save = time.monotonic()


#: What the 15-subset evaluation publishes next to the weights it measured (and the names the clinician's
#: report reads its accuracy table from): stale once the weights change.
EVALUATION_FILES: tuple[str, ...] = (
    "subset_summary.csv",
    "subset_dice.csv",
    "subset_dice.json",
    "subset_table.md",
    "subset_dice.png",
    "per_case.csv",
)


def _retire_evaluation(folder: Path) -> None:
    stale = [folder / n for n in EVALUATION_FILES if (folder / n).is_file()]
    if not stale:
        return
    previous = folder / "previous_evaluation"
    previous.mkdir(exist_ok=True)
    for f in stale:
        os.replace(f, previous / f.name)
    logger.info("evaluation of the earlier weights moved to %s (it does not describe the new ones)", previous)


class BestModelSaver:
    """Write ``model.pt`` (``{"model": state_dict, "model_meta": ..., "best": ...}``) at each new best.

    Attach to the validator. A new best is the validator's own decision (MONAI's key-metric comparison,
    ``state.best_metric_epoch == state.epoch``); the file is replaced only when that metric is also
    better than the one recorded in the existing ``model.pt``, so a resumed run never replaces a better
    model with a worse one. ``model_info.json`` beside it repeats the metadata in readable form.
    Evaluation results of earlier weights in the folder (:data:`EVALUATION_FILES`: the accuracy table the
    clinician's report quotes) are moved into ``previous_evaluation/`` when ``model.pt`` is replaced, so
    that no report quotes another model's accuracy for these weights.

    Args:
        save_dir: folder of ``model.pt``.
        network: the network whose ``state_dict`` is saved.
        meta: :func:`model_meta` of the run (grid, orientation, normalisation...).
        filename: the file name.
    """

    def __init__(
        self,
        save_dir: str | os.PathLike,
        network: torch.nn.Module,
        meta: Mapping[str, Any] | None = None,
        filename: str = BEST,
    ):
        self.save_dir = Path(save_dir)
        self.network = network
        self.meta = dict(meta or model_meta())
        self.filename = filename
        self.best: float | None = None

    @property
    def path(self) -> Path:
        return self.save_dir / self.filename

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def saved_metric(self) -> float | None:
        """The metric recorded in the existing ``model.pt`` (``None``: no file, or none recorded)."""
        if not self.path.is_file():
            return None
        try:
            ckpt = load_checkpoint(self.path)
        except (CheckpointError, OSError) as e:  # an unreadable file is replaced by the next best
            logger.warning("%s: unreadable (%s)", self.path, e)
            return None
        best = ckpt.get("best") if isinstance(ckpt, dict) else None
        return float(best["metric"]) if isinstance(best, dict) and "metric" in best else None

    def restore_best(self, evaluator: Engine | None) -> None:
        """On resume: the validator's best is at least the saved model's (a kill may fall between the
        two writes)."""
        saved = self.saved_metric()
        self.best = saved
        if evaluator is not None and saved is not None and saved > float(evaluator.state.best_metric):
            evaluator.state.best_metric = saved

    def __call__(self, engine: Engine) -> None:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            if torch.distributed.get_rank() != 0:
                return
        state = engine.state
        if getattr(state, "best_metric_epoch", None) != state.epoch:
            return
        metric = float(state.best_metric)
        if self.best is not None and metric <= self.best:
            return
        self.save_dir.mkdir(parents=True, exist_ok=True)
        name = str(getattr(state, "key_metric_name", "") or "")
        best = {"metric": metric, "epoch": int(state.epoch), "metric_name": name}
        ckpt = {"model": _unwrap(self.network).state_dict(), "model_meta": self.meta, "best": best}
        DiskSaver(str(self.save_dir), atomic=True, require_empty=False)(ckpt, self.filename)
        _retire_evaluation(self.save_dir)
        info = {
            "weights": self.filename,
            "width": self.meta.get("width"),
            "model_meta": self.meta,
            "best": best,
        }
        _atomic_json(self.save_dir / MODEL_INFO, info)
        self.best = metric
        logger.info("new best model (%.4f at epoch %d) saved to %s", metric, state.epoch, self.path)
