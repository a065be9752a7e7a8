"""A wall-clock training budget: stop at a time limit, record the time used, keep the weights at the stop.

Ignite's ``TimeLimit`` counts from its own construction and forgets the time of a killed run. The
:class:`TimeBudget` handler counts the trainer's running time (from ``STARTED``; the data caching before
it is not counted), carried across resumed runs through a small JSON record beside the checkpoints, so
that a run killed and resumed gets the same budget as an uninterrupted one. ``bundle/configs/time_limit.yaml``
adds it to ``train#handlers``; ``benchmarks/compare_methods.py`` uses it to give every method the
wall-clock time that GMD took.

Note:
    The handler writes two files:

    - ``record_path`` (JSON): ``elapsed_s``, ``epoch``, ``iteration``, ``max_epochs``, ``limit_s``,
      ``stopped_by_limit``, ``completed``, ``segments`` (1 + number of resumes), ``epoch_s`` (the duration of
      every epoch, validation and checkpoint included) and ``marks`` (``[iteration, elapsed_s]`` at epoch
      ends, used to restore the clock on resume). Written at every epoch end, every ``write_interval_s``
      and at the end.
    - ``final_path`` (optional): the weights when training ends, at the last epoch or at the time limit,
      as ``{"model": state_dict, "model_meta": ..., "final": {...}}`` (the layout of ``model.pt``, so the
      evaluation and inference paths read it). The best-validation ``model.pt`` is not written when the
      limit stops a run before its validation epoch.

Example:
    >>> import ignite.engine, tempfile, os
    >>> trainer = ignite.engine.Engine(lambda engine, batch: None)
    >>> budget = TimeBudget(os.path.join(tempfile.mkdtemp(), "train_time.json"), limit_s=3600)
    >>> budget.attach(trainer)
    >>> state = trainer.run([0, 1], max_epochs=2)
    >>> record = budget.read()
    >>> record["completed"], record["stopped_by_limit"], record["iteration"], len(record["epoch_s"])
    (True, False, 4, 2)
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Engine, Events

__all__ = ["TimeBudget", "read_time_record"]

logger = logging.getLogger(__name__)


def read_time_record(path: str | os.PathLike) -> dict[str, Any] | None:
    """The JSON record a :class:`TimeBudget` wrote at ``path`` (``None``: none, or unreadable)."""
    try:
        content = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return content if isinstance(content, dict) else None


def _elapsed_at(marks: list[list[float]], iteration: int) -> float:
    """The budget clock at ``iteration``, from ``[iteration, elapsed_s]`` marks: exact at a mark (an epoch
    end, where resumable checkpoints are written), linear in between, the last rate beyond the last."""
    pts = sorted((int(i), float(e)) for i, e in marks if int(i) <= iteration)
    if not pts:
        return 0.0
    i0, e0 = pts[-1]
    if i0 == iteration:
        return e0
    later = sorted((int(i), float(e)) for i, e in marks if int(i) > iteration)
    if later:
        i1, e1 = later[0]
        return e0 + (e1 - e0) * (iteration - i0) / (i1 - i0)
    rate = e0 / i0 if i0 > 0 else 0.0
    return e0 + rate * (iteration - i0)


class TimeBudget:
    """Stop training when its running time reaches ``limit_s``; record the time; save the final weights.

    Attach to the trainer after the handlers whose time belongs to the budget (validation, checkpoints):
    epoch durations are measured to this handler's ``EPOCH_COMPLETED``. The limit is checked after every
    iteration, like Ignite's ``TimeLimit``; the run then ends mid-epoch (``Events.TERMINATE``, then
    ``COMPLETED``), so the LR schedule stops where it is: set ``max_epochs`` to the epochs the budget
    allows for the schedule to complete, and keep the limit as the hard stop.

    Args:
        record_path: the JSON record (see the module's Note).
        limit_s: the budget in seconds (``None`` or 0: no limit, the time is only measured).
        network: the network whose weights go to ``final_path`` (optional).
        meta: the model's metadata saved with them (:func:`gmd_monai.checkpointing.model_meta`).
        final_path: where the final weights go (``None``: not saved).
        write_interval_s: also write the record this often mid-epoch.
    """

    def __init__(
        self,
        record_path: str | os.PathLike,
        limit_s: float | None = None,
        network: torch.nn.Module | None = None,
        meta: Mapping[str, Any] | None = None,
        final_path: str | os.PathLike | None = None,
        write_interval_s: float = 60.0,
    ):
        if limit_s is not None and float(limit_s) < 0:
            raise ValueError(f"limit_s must be >= 0 seconds (0 or None: no limit), got {limit_s!r}")
        self.record_path = Path(record_path)
        self.limit_s = float(limit_s) if limit_s else None
        self.network = network
        self.meta = dict(meta or {})
        self.final_path = Path(final_path) if final_path is not None else None
        self.write_interval_s = float(write_interval_s)
        self.record: dict[str, Any] = {}
        self._base = 0.0
        self._t0 = time.monotonic()
        self._epoch_t0: float | None = None
        self._last_write = 0.0

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self._started)
        engine.add_event_handler(Events.EPOCH_STARTED, self._epoch_started)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._iteration)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._epoch_completed)
        engine.add_event_handler(Events.COMPLETED, self._completed)

    def elapsed(self) -> float:
        """Seconds of the budget used so far (earlier run segments included)."""
        return self._base + time.monotonic() - self._t0

    def read(self) -> dict[str, Any] | None:
        return read_time_record(self.record_path)

    def _started(self, engine: Engine) -> None:
        # runs after TrainingCheckpoint's loader: a resumed run's counters are already restored
        iteration = int(engine.state.iteration)
        previous = self.read() if iteration > 0 else None
        if previous is not None:
            marks = [m for m in previous.get("marks", []) if int(m[0]) <= iteration]
            self._base = _elapsed_at(previous.get("marks", []) + [previous.get("last", [0, 0.0])], iteration)
            epoch_s = list(previous.get("epoch_s", []))[: int(engine.state.epoch)]
            segments = int(previous.get("segments", 1)) + 1
        else:
            if iteration > 0:
                logger.warning(
                    "%s: no time record of the resumed run: its budget clock starts at 0", self.record_path
                )
            marks, self._base, epoch_s, segments = [[0, 0.0]], 0.0, [], 1
        self.record = {
            "limit_s": self.limit_s,
            "elapsed_s": self._base,
            "epoch": int(engine.state.epoch),
            "iteration": iteration,
            "max_epochs": int(engine.state.max_epochs or 0),
            "stopped_by_limit": False,
            "completed": False,
            "segments": segments,
            "epoch_s": epoch_s,
            "marks": marks
            + ([[iteration, self._base]] if not marks or int(marks[-1][0]) != iteration else []),
        }
        self._t0 = time.monotonic()
        if self.limit_s is not None:
            logger.info(
                "time budget %.0f s, %.0f s used before this segment, %.0f s left",
                self.limit_s, self._base, self.limit_s - self._base,
            )  # fmt: skip
            if self._base >= self.limit_s:  # killed after the limit, before the end was recorded
                self.record["stopped_by_limit"] = True
                engine.terminate()
        self._write(engine)

    def _epoch_started(self, engine: Engine) -> None:
        self._epoch_t0 = time.monotonic()

    def _iteration(self, engine: Engine) -> None:
        if (
            self.limit_s is not None
            and not self.record["stopped_by_limit"]
            and self.elapsed() >= self.limit_s
        ):
            self.record["stopped_by_limit"] = True
            logger.info(
                "time limit of %.0f s reached at epoch %d, iteration %d (of %d epochs): training stops",
                self.limit_s, engine.state.epoch, engine.state.iteration, engine.state.max_epochs,
            )  # fmt: skip
            engine.terminate()
        elif time.monotonic() - self._last_write >= self.write_interval_s:
            self._write(engine)

    def _epoch_completed(self, engine: Engine) -> None:
        if self._epoch_t0 is not None:
            self.record["epoch_s"].append(round(time.monotonic() - self._epoch_t0, 3))
        self.record["marks"].append([int(engine.state.iteration), round(self.elapsed(), 3)])
        self._write(engine)

    def _completed(self, engine: Engine) -> None:
        self.record["completed"] = True
        if self.final_path is not None and self.network is not None:
            self._save_final(engine)
        self._write(engine)
        stopped = " (stopped by the time limit)" if self.record["stopped_by_limit"] else ""
        logger.info(
            "training used %.0f s over %d segment(s): %d iterations, epoch %d of %d%s",
            self.record["elapsed_s"], self.record["segments"], engine.state.iteration, engine.state.epoch,
            engine.state.max_epochs, stopped,
        )  # fmt: skip

    def _save_final(self, engine: Engine) -> None:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            if torch.distributed.get_rank() != 0:
                return
        net = (
            self.network.module
            if isinstance(getattr(self.network, "module", None), torch.nn.Module)
            else self.network
        )
        final = {
            "epoch": int(engine.state.epoch),
            "iteration": int(engine.state.iteration),
            "elapsed_s": round(self.elapsed(), 3),
            "stopped_by_limit": bool(self.record["stopped_by_limit"]),
        }
        self.final_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.final_path.with_name(f".{self.final_path.name}.tmp{os.getpid()}")
        torch.save({"model": net.state_dict(), "model_meta": self.meta, "final": final}, tmp)
        os.replace(tmp, self.final_path)
        logger.info("final weights (epoch %d, iteration %d) saved to %s", final["epoch"], final["iteration"],
                    self.final_path)  # fmt: skip

    def _write(self, engine: Engine) -> None:
        elapsed = round(self.elapsed(), 3)
        self.record.update(
            elapsed_s=elapsed,
            epoch=int(engine.state.epoch),
            iteration=int(engine.state.iteration),
            last=[int(engine.state.iteration), elapsed],
        )
        self.record_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.record_path.with_name(f".{self.record_path.name}.tmp{os.getpid()}")
        tmp.write_text(json.dumps(self.record, indent=1) + "\n")
        os.replace(tmp, self.record_path)
        self._last_write = time.monotonic()
