"""MONAI/Ignite glue: the trainer that calls the GMD core, the diagnostics handler, subset validation.

Thin by design: the method lives in :mod:`gmd_monai.gmd` (plain PyTorch); this module only feeds it
with one forward per batch and logs what it did.
"""

from __future__ import annotations

import csv
import logging
import os
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from typing import Any

import torch
from ignite.engine import Engine, Events
from ignite.metrics import Metric
from monai.engines import SupervisedEvaluator, SupervisedTrainer
from monai.engines.utils import IterationEvents
from monai.metrics import compute_dice
from monai.utils import CommonKeys as Keys
from torch import nn

from gmd_monai.gmd import Aggregator, make_aggregator
from gmd_monai.gmd.surgery import SurgeryDiagnostics
from gmd_monai.losses import SubsetLoss, subset_logits
from gmd_monai.subsets import SubsetSpace

__all__ = [
    "SubsetTrainer",
    "SubsetEvaluator",
    "StackedStreams",
    "SubsetDiceMetric",
    "GMDDiagnosticsHandler",
    "EpochProgressLogger",
    "SubsetDiceHandler",
    "setup_logging",
    "write_run_summary",
    "unwrap",
]

logger = logging.getLogger(__name__)


def unwrap(network: nn.Module) -> nn.Module:
    """The model inside a DistributedDataParallel / DataParallel wrapper (or the model itself)."""
    return network.module if hasattr(network, "module") and isinstance(network.module, nn.Module) else network


def _plain(x):
    """Drop MONAI's MetaTensor wrapper for the network: every op on a MetaTensor pays for metadata."""
    return x.as_tensor() if hasattr(x, "as_tensor") else x


def _autocast(device: torch.device, enabled: bool):
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


class SubsetTrainer(SupervisedTrainer):
    """SupervisedTrainer that trains on every modality subset from one forward per batch.

    Each iteration: one forward of the modality streams, the T subset losses (:class:`SubsetLoss`),
    then the aggregator (``gmd``, ``mean``, ``dropout`` or a torchjd weighting) writes ``.grad`` and
    the optimizer steps. ``engine.state.output`` stays batch-shaped (IMAGE, LABEL, PRED = full-set
    logits, LOSS = mean subset loss); the aggregator's diagnostics are on ``engine.state.gmd``.

    Args:
        device, max_epochs, train_data_loader, network, optimizer: as in SupervisedTrainer.
        loss_function: a :class:`SubsetLoss` (or a base loss, wrapped in one).
        method: aggregation method (see :func:`gmd_monai.gmd.available_methods`).
        method_kwargs: extra aggregator arguments (``nonshared_reduction``, ``weighting_kwargs``...).
        seed: seed of GMD's permutations and of the dropout subset draws.
        amp: bf16 autocast on CUDA (ignored on CPU).
        reduce_fn: optional reduction of the per-objective gradients across ranks (distributed GMD).
        kwargs: forwarded to SupervisedTrainer (``train_handlers``, ``key_train_metric``, ...).
    """

    def __init__(
        self,
        device: str | torch.device,
        max_epochs: int,
        train_data_loader,
        network: nn.Module,
        optimizer: torch.optim.Optimizer,
        loss_function: SubsetLoss | nn.Module,
        method: str = "gmd",
        method_kwargs: dict | None = None,
        seed: int = 0,
        amp: bool = False,
        reduce_fn: Callable[[torch.Tensor], torch.Tensor] | None = None,
        **kwargs: Any,
    ):
        super().__init__(
            device=device,
            max_epochs=max_epochs,
            train_data_loader=train_data_loader,
            network=network,
            optimizer=optimizer,
            loss_function=loss_function,
            amp=False,
            **kwargs,
        )
        model = unwrap(network)
        if not hasattr(model, "forward_streams"):
            raise TypeError(f"{type(model).__name__} has no forward_streams(); use a Dynamic Sharing network")
        if not isinstance(loss_function, SubsetLoss):
            loss_function = SubsetLoss(model.modalities, loss_function)
        self.loss_function = loss_function
        self.space: SubsetSpace = loss_function.space
        self.use_amp = bool(amp) and torch.device(device).type == "cuda"
        self.method = method
        params = [p for p in model.parameters() if p.requires_grad]
        shared_all = model.shared_mask([self.space.subsets[k] for k in loss_function.subsets])
        shared = [s for p, s in zip(model.parameters(), shared_all) if p.requires_grad]
        self.aggregator: Aggregator = make_aggregator(
            method, params, names=loss_function.names, shared=shared, seed=seed, reduce_fn=reduce_fn,
            **(method_kwargs or {}),
        )  # fmt: skip
        # the dropout draws differ between ranks (each rank's samples get their own subsets); GMD's
        # permutations must not (every rank takes the same step), so its seed has no rank
        rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
        self.dropout_generator = torch.Generator().manual_seed(int(seed) + 1 + 7919 * rank)
        self.state.gmd = None

    def _draw_masks(self, batch_size: int, device: torch.device) -> torch.Tensor:
        k = torch.randint(len(self.space), (batch_size,), generator=self.dropout_generator)
        return self.space.masks()[k].to(device)

    def _iteration(self, engine: SubsetTrainer, batchdata: dict[str, torch.Tensor]) -> dict:
        if batchdata is None:
            raise ValueError("Must provide batch data for current iteration.")
        batch = engine.prepare_batch(batchdata, engine.state.device, engine.non_blocking, **engine.to_kwargs)
        inputs, targets = _plain(batch[0]), _plain(batch[1])
        model = unwrap(engine.network)
        agg = engine.aggregator
        engine.state.output = {Keys.IMAGE: inputs, Keys.LABEL: targets}
        engine.network.train()
        engine.optimizer.zero_grad(set_to_none=True)
        stream_outputs = None  # per-modality graphs, for GMD's stream-by-stream gradient strategies
        with _autocast(engine.state.device, engine.use_amp):
            if agg.needs_all_subsets:
                streams = model.forward_streams(inputs, fold=not agg.per_objective_gradients)
                losses = engine.loss_function(streams, targets)
                full = subset_logits(streams, engine.space, [0])[0]
                if agg.per_objective_gradients:
                    stream_outputs = list(streams.values())
            else:
                masks = engine._draw_masks(targets.shape[0], targets.device)
                full = engine.network(inputs, masks)
                losses = [engine.loss_function.loss(full, targets.float()).mean()]
        engine.state.output[Keys.PRED] = full.detach()
        engine.fire_event(IterationEvents.FORWARD_COMPLETED)
        engine.state.output[Keys.LOSS] = torch.stack([loss.detach().float() for loss in losses]).mean()
        engine.fire_event(IterationEvents.LOSS_COMPLETED)
        engine.state.gmd = agg.backward([loss.float() for loss in losses], streams=stream_outputs)
        engine.fire_event(IterationEvents.BACKWARD_COMPLETED)
        engine.optimizer.step()
        engine.fire_event(IterationEvents.MODEL_COMPLETED)
        return engine.state.output


class StackedStreams(nn.Module):
    """Wrap a DS network so that ``forward(x)`` returns every modality's logits stacked on channels.

    Output (B, M*K, ...) in modality order; used with a sliding-window inferer so that all subset
    outputs can be formed from ONE pass per modality (sliding-window blending is linear, so the
    mean of blended stream logits equals the blended mean: exact).
    """

    def __init__(self, network: nn.Module, available: Sequence[str] | None = None):
        super().__init__()
        self.network = network
        self.available = available

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        model = unwrap(self.network)
        streams = model.forward_streams(x, self.available)
        return torch.cat([streams[m] for m in model.modalities if m in streams], dim=1)


def split_streams(stacked: torch.Tensor, modalities: Sequence[str]) -> dict[str, torch.Tensor]:
    """Inverse of :class:`StackedStreams`: (B, M*K, ...) -> ``{name: (B, K, ...)}``."""
    chunks = torch.chunk(stacked, len(modalities), dim=1)
    return dict(zip(modalities, chunks))


class SubsetEvaluator(SupervisedEvaluator):
    """SupervisedEvaluator whose PRED is the per-modality logits (B, M*K, ...) of every stream.

    Pair it with :class:`SubsetDiceMetric`, which forms all subset outputs from PRED.
    """

    def __init__(self, device, val_data_loader, network: nn.Module, amp: bool = False, **kwargs: Any):
        super().__init__(device=device, val_data_loader=val_data_loader, network=network, amp=False, **kwargs)
        self.use_amp = bool(amp) and torch.device(device).type == "cuda"
        self.stacked = StackedStreams(network)

    def _iteration(self, engine: SubsetEvaluator, batchdata: dict[str, torch.Tensor]) -> dict:
        if batchdata is None:
            raise ValueError("Must provide batch data for current iteration.")
        batch = engine.prepare_batch(batchdata, engine.state.device, engine.non_blocking, **engine.to_kwargs)
        inputs, targets = _plain(batch[0]), _plain(batch[1])
        engine.state.output = {Keys.IMAGE: inputs, Keys.LABEL: targets}
        engine.network.eval()
        with torch.no_grad(), _autocast(engine.state.device, engine.use_amp):
            engine.state.output[Keys.PRED] = engine.inferer(inputs, engine.stacked).float()
        engine.fire_event(IterationEvents.FORWARD_COMPLETED)
        engine.fire_event(IterationEvents.MODEL_COMPLETED)
        return engine.state.output


class SubsetDiceMetric(Metric):
    """Hard Dice (sigmoid > 0.5) of every subset's fused output, averaged over cases, channels, subsets.

    ``compute()`` returns the mean over subsets and channels; the per-subset table (T, K) is left on
    ``self.per_subset`` and, once attached, on ``engine.state.subset_dice``. Under ``torchrun`` the
    cases of every rank are pooled (each rank may validate its own shard; a shard may be empty).

    Args:
        modalities: modality names (channel order of the stacked PRED).
        output_transform: maps engine output to ``(pred (B, M*K, ...), label (B, K, ...))``.
    """

    def __init__(self, modalities: Sequence[str], output_transform=None, device="cpu"):
        self.space = SubsetSpace(modalities)
        self._sum: torch.Tensor | None = None
        self._count = 0
        self.per_subset: torch.Tensor | None = None
        if output_transform is None:

            def output_transform(out):
                if isinstance(out, list):  # decollated by the engine
                    return (
                        torch.stack([o[Keys.PRED] for o in out]),
                        torch.stack([o[Keys.LABEL] for o in out]),
                    )
                return out[Keys.PRED], out[Keys.LABEL]

        super().__init__(output_transform=output_transform, device=device)

    def reset(self) -> None:
        self._sum = None
        self._count = 0

    def update(self, output) -> None:
        pred, label = output
        streams = split_streams(pred, self.space.modalities)
        label = label.float()
        rows = []
        for fused in subset_logits(streams, self.space):
            d = compute_dice((fused > 0).float(), label, include_background=True, ignore_empty=False)
            rows.append(d.detach().float().cpu())  # (B, K)
        batch = torch.stack(rows, dim=1)  # (B, T, K)
        self._sum = batch.sum(0) if self._sum is None else self._sum + batch.sum(0)
        self._count += batch.shape[0]

    def _gather(self) -> tuple[torch.Tensor | None, int]:
        """Sum and count over all ranks (each rank validates its shard); this rank's outside torchrun."""
        if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
            return self._sum, self._count
        parts: list = [None] * torch.distributed.get_world_size()
        torch.distributed.all_gather_object(parts, (self._sum, self._count))  # a rank may have no case
        sums = [s for s, _ in parts if s is not None]
        return (torch.stack(sums).sum(0) if sums else None), sum(c for _, c in parts)

    def compute(self) -> float:
        total, count = self._gather()
        if total is None or count == 0:
            raise RuntimeError("SubsetDiceMetric has no data")
        self.per_subset = total / count
        return float(self.per_subset.mean())

    def completed(self, engine: Engine, name: str) -> None:
        super().completed(engine, name)
        engine.state.subset_dice = self.per_subset
        engine.state.subset_names = self.space.names


class GMDDiagnosticsHandler:
    """Log the aggregator's diagnostics: TensorBoard scalars per step, a CSV of per-epoch means.

    One scalar per objective, labelled by subset name: ``gmd/weight/<subset>`` (effective weight
    ``w_j``, ``merged = sum_j w_j g_j``), ``gmd/grad_norm/<subset>``, ``gmd/loss/<subset>``, plus
    ``gmd/num_conflicting_pairs`` and ``gmd/num_projections``. The cosine matrix of the last step of
    each epoch is written as a TensorBoard image (8-bit, ``(cos + 1) / 2``) and, with
    ``cosine_csv_path``, as numbers. With no conflicting pair the weights are all 1/T: GMD then equals
    plain mean-of-losses training, and the logs show it. ``gmd-monai plot-diagnostics`` draws them
    (:mod:`gmd_monai.diagnostics_plots`).

    Args:
        summary_writer: a ``SummaryWriter`` (created in ``log_dir`` when None).
        log_dir: TensorBoard folder when no writer is given.
        csv_path: per-epoch CSV (mean weight per subset, mean conflicts); None to skip.
        cosine_csv_path: per-epoch CSV of the cosine matrix of the epoch's last step, one row per pair
            (``epoch,segment,subset_i,subset_j,cosine``, T*T rows an epoch); None to skip. Nothing is
            written for an epoch without cosines (``mean``/``dropout`` compute none).
        interval: log every ``interval`` iterations.
        tag_prefix: TensorBoard tag prefix.
    """

    def __init__(self, summary_writer=None, log_dir: str = "./runs", csv_path: str | None = None,
                 interval: int = 1, tag_prefix: str = "gmd/",
                 cosine_csv_path: str | None = None):  # fmt: skip
        self._writer = summary_writer
        self.log_dir = log_dir
        self.csv_path = csv_path
        self.cosine_csv_path = cosine_csv_path
        self.interval = max(1, int(interval))
        self.tag_prefix = tag_prefix
        self._epoch: list[SurgeryDiagnostics] = []

    @property
    def writer(self):
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(log_dir=self.log_dir)
        return self._writer

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.iteration_completed)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self.epoch_completed)

    def iteration_completed(self, engine: Engine) -> None:
        diag: SurgeryDiagnostics | None = getattr(engine.state, "gmd", None)
        if diag is None:
            return
        self._epoch.append(diag)
        if engine.state.iteration % self.interval == 0:
            for tag, value in diag.scalars(self.tag_prefix).items():
                self.writer.add_scalar(tag, value, engine.state.iteration)

    def epoch_completed(self, engine: Engine) -> None:
        if not self._epoch:
            return
        diags, self._epoch = self._epoch, []
        last = diags[-1]
        segment = getattr(engine.state, "run_segment", 0)
        if torch.isfinite(last.cosine).all():
            img = ((last.cosine.clamp(-1, 1) + 1) / 2).unsqueeze(0)
            self.writer.add_image(f"{self.tag_prefix}cosine", img, engine.state.epoch, dataformats="CHW")
            if self.cosine_csv_path:
                self._append_cosine(engine.state.epoch, segment, last)
        self.writer.flush()
        if self.csv_path:
            weights = torch.stack([d.weights for d in diags]).mean(0)
            conflicts = sum(d.num_conflicts for d in diags) / len(diags)
            new = not os.path.exists(self.csv_path)
            os.makedirs(os.path.dirname(os.path.abspath(self.csv_path)), exist_ok=True)
            with open(self.csv_path, "a", newline="") as f:
                w = csv.writer(f)
                if new:
                    w.writerow(
                        [
                            "epoch",
                            "segment",
                            "method",
                            "mean_conflicting_pairs",
                            *[f"w[{n}]" for n in last.names],
                        ]
                    )
                w.writerow(
                    [
                        engine.state.epoch,
                        segment,
                        last.method,
                        f"{conflicts:.3f}",
                        *[f"{x:.5f}" for x in weights],
                    ]
                )

    def _append_cosine(self, epoch: int, segment: int, diag: SurgeryDiagnostics) -> None:
        new = not os.path.exists(self.cosine_csv_path)
        os.makedirs(os.path.dirname(os.path.abspath(self.cosine_csv_path)), exist_ok=True)
        cosine = diag.cosine.detach().double().cpu().clamp(-1, 1).tolist()
        with open(self.cosine_csv_path, "a", newline="") as f:
            w = csv.writer(f)
            if new:
                w.writerow(["epoch", "segment", "subset_i", "subset_j", "cosine"])
            for i, name_i in enumerate(diag.names):
                for j, name_j in enumerate(diag.names):
                    w.writerow([epoch, segment, name_i, name_j, f"{cosine[i][j]:.6f}"])


class SubsetDiceHandler:
    """After each validation: per-subset Dice to TensorBoard (``val_dice/<subset>/<region>``) and a CSV.

    Reads ``engine.state.subset_dice`` (T, K) left by :class:`SubsetDiceMetric`. The ``segment`` column
    counts the resumes of the run (``engine.state.run_segment``, set by
    :class:`~gmd_monai.checkpointing.TrainingCheckpoint`; 0 for the first segment).

    Args:
        summary_writer: a ``SummaryWriter`` (created in ``log_dir`` when None).
        log_dir: TensorBoard folder.
        csv_path: CSV appended with one row per subset and validation; None to skip.
        regions: names of the output channels.
    """

    def __init__(self, summary_writer=None, log_dir: str = "./runs", csv_path: str | None = None,
                 regions: Sequence[str] = ("WT", "TC", "ET")):  # fmt: skip
        self._writer = summary_writer
        self.log_dir = log_dir
        self.csv_path = csv_path
        self.regions = tuple(regions)

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        table = getattr(engine.state, "subset_dice", None)
        if table is None:
            return
        names = engine.state.subset_names
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(log_dir=self.log_dir)
        epoch = engine.state.epoch
        for k, name in enumerate(names):
            for r, region in enumerate(self.regions):
                self._writer.add_scalar(f"val_dice/{name}/{region}", float(table[k, r]), epoch)
        self._writer.flush()
        if self.csv_path:
            new = not os.path.exists(self.csv_path)
            os.makedirs(os.path.dirname(os.path.abspath(self.csv_path)), exist_ok=True)
            with open(self.csv_path, "a", newline="") as f:
                w = csv.writer(f)
                if new:
                    w.writerow(
                        ["epoch", "segment", "subset", *[f"dice_{r.lower()}" for r in self.regions], "mean"]
                    )
                segment = getattr(engine.state, "run_segment", 0)
                for k, name in enumerate(names):
                    row = table[k].tolist()
                    w.writerow(
                        [epoch, segment, name, *[f"{v:.4f}" for v in row], f"{sum(row) / len(row):.4f}"]
                    )


def _is_main_process() -> bool:
    dist = torch.distributed
    return not (dist.is_available() and dist.is_initialized() and dist.get_rank() != 0)


def _hms(seconds: float) -> str:
    seconds = int(round(max(0.0, seconds)))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class EpochProgressLogger:
    """One log line per epoch: epoch, mean loss, elapsed time, ETA to the last epoch, CPU time, and
    the validation's key metric on the epochs that ran one.

    The ETA extrapolates the mean epoch time of the current run segment (a resumed run starts a new
    segment: :class:`~gmd_monai.checkpointing.TrainingCheckpoint`); validation epochs are included, so
    the estimate settles once a validation has run. For logs read in a file (``nohup``), where a
    progress bar is unreadable.

    Args:
        name: logger name.
        validator: the evaluator that :class:`monai.handlers.ValidationHandler` runs; attach this
            logger after that handler so the line of a validation epoch carries its result.
        progress_bar: also show ignite's progress bar of the epoch's iterations (with the loss),
            cleared before the epoch's line is written; only on the main process of a distributed run.
    """

    def __init__(
        self, name: str = "gmd_monai.progress", validator: Engine | None = None, progress_bar: bool = False
    ):
        self.logger = logging.getLogger(name)
        self.validator = validator
        self.progress_bar = bool(progress_bar)
        self._t0: float | None = None
        self._cpu0: float | None = None
        self._epoch0 = 0
        self._losses: list[float] = []

    def attach(self, engine: Engine) -> None:
        if self.progress_bar and _is_main_process():
            from ignite.handlers import ProgressBar
            from monai.handlers import from_engine

            # attached first, so that the bar is cleared before this logger's line of the same event
            ProgressBar(persist=False, desc="train").attach(
                engine, output_transform=from_engine([Keys.LOSS], first=True)
            )
        engine.add_event_handler(Events.STARTED, self._reset)
        engine.add_event_handler(Events.EPOCH_STARTED, self._started)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._iteration)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._epoch)

    def _reset(self, engine: Engine) -> None:
        self._t0 = None

    def _started(self, engine: Engine) -> None:
        # at the first epoch of this run segment, not at STARTED: a resumed run's counters are
        # restored by a STARTED handler that may come after this one (TrainingCheckpoint is last)
        if self._t0 is not None:
            return
        self._t0, self._cpu0 = time.monotonic(), time.process_time()
        self._epoch0 = engine.state.epoch - 1  # ignite counts the epoch before EPOCH_STARTED
        self.logger.info(
            "training epochs %d..%d of %d (segment %d)", engine.state.epoch, engine.state.max_epochs,
            engine.state.max_epochs, getattr(engine.state, "run_segment", 0),
        )  # fmt: skip

    def _iteration(self, engine: Engine) -> None:
        from monai.handlers import from_engine

        try:  # a dict, or a list of dicts once the trainer decollated its output
            loss = from_engine([Keys.LOSS], first=True)(engine.state.output)  # one key: the value
        except (KeyError, IndexError, TypeError):
            return
        if loss is not None:
            self._losses.append(float(loss))

    def _epoch(self, engine: Engine) -> None:
        if self._t0 is None:
            return
        elapsed = time.monotonic() - self._t0
        done = engine.state.epoch - self._epoch0
        left = engine.state.max_epochs - engine.state.epoch
        eta = elapsed / max(done, 1) * left
        loss = sum(self._losses) / len(self._losses) if self._losses else float("nan")
        self._losses = []
        cpu = time.process_time() - (self._cpu0 or 0.0)
        self.logger.info(
            "epoch %d/%d loss %.4f | elapsed %s, ETA %s | process CPU %s%s",
            engine.state.epoch, engine.state.max_epochs, loss, _hms(elapsed), _hms(eta), _hms(cpu),
            self._validation(engine.state.epoch),
        )  # fmt: skip

    def _validation(self, epoch: int) -> str:
        """`` | val_mean_dice 0.6239 (best 0.6239, epoch 15)`` if the validator ran at ``epoch``."""
        state = getattr(self.validator, "state", None)
        name = getattr(state, "key_metric_name", None)
        if state is None or name is None or state.epoch != epoch or name not in state.metrics:
            return ""
        best, best_epoch = (
            getattr(state, "best_metric", float("nan")),
            getattr(state, "best_metric_epoch", -1),
        )
        return f" | {name} {float(state.metrics[name]):.4f} (best {float(best):.4f}, epoch {int(best_epoch)})"


def setup_logging(level: int = logging.INFO) -> None:
    """Make MONAI's StatsHandler output visible when the caller configured no logging."""
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    else:
        root.setLevel(min(root.level, level) if root.level else level)


def write_run_summary(trainer: Engine, evaluator: Engine | None, output_dir: str) -> str:
    """Write ``run_summary.json`` (method, epochs, best validation metric, last per-subset Dice)."""
    import json

    os.makedirs(output_dir, exist_ok=True)
    summary: dict[str, Any] = {
        "method": getattr(trainer, "method", None),
        "epochs": trainer.state.epoch,
        "iterations": trainer.state.iteration,
        "train_metrics": {k: float(v) for k, v in trainer.state.metrics.items()},
    }
    if evaluator is not None and evaluator.state is not None:
        summary["best_val_metric"] = float(evaluator.state.best_metric)
        summary["best_val_epoch"] = int(evaluator.state.best_metric_epoch)
        table = getattr(evaluator.state, "subset_dice", None)
        if table is not None:
            summary["last_val_subset_dice"] = {
                n: [round(float(v), 4) for v in table[k]] for k, n in enumerate(evaluator.state.subset_names)
            }
    path = os.path.join(output_dir, "run_summary.json")
    with open(path, "w") as f:
        json.dump(summary, f, indent=2)
    logger.info("run summary written to %s", path)
    return path
