"""MONAI/Ignite glue for the sentiment bundle: batch preparation, the 7-subset validation metric.

The trainer and evaluator are the BraTS ones (:class:`gmd_monai.engine.SubsetTrainer`,
:class:`gmd_monai.engine.SubsetEvaluator`); only the batch layout (a dict of modality sequences) and the
metric (regression, not Dice) differ.

Example (what ``sentiment_bundle/configs/train.yaml`` builds)::

    loss = SubsetLoss(SENTIMENT_MODALITIES, nn.L1Loss())
    trainer = SubsetTrainer(device, max_epochs, loader, net, opt, loss, method="gmd",
                            prepare_batch=SentimentPrepareBatch())
    evaluator = SubsetEvaluator(device, val_loader, net, prepare_batch=SentimentPrepareBatch(),
                                key_val_metric={"val_mean_mae": SubsetRegressionMetric(SENTIMENT_MODALITIES)})
"""

from __future__ import annotations

import csv
import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from ignite.engine import Engine, Events
from ignite.metrics import Metric
from monai.utils import CommonKeys as Keys

from gmd_monai.engine import split_streams
from gmd_monai.losses import subset_logits
from gmd_monai.sentiment_evaluation import METRIC_NAMES, subset_table
from gmd_monai.subsets import SENTIMENT_MODALITIES, SubsetSpace

__all__ = ["PredictionWriter", "SentimentPrepareBatch", "SubsetRegressionMetric", "lower_is_better"]

logger = logging.getLogger(__name__)


def lower_is_better(current: float, previous: float) -> bool:
    """``metric_cmp_fn`` for error-like key metrics such as MAE."""
    return current < previous


class SentimentPrepareBatch:
    """``prepare_batch`` for sentiment batches: ``(inputs {modality: tensor}, labels (B, 1))`` on ``device``.

    Args:
        modalities: modalities to pass to the network (a subset restricts what is computed, e.g. for
            inference with missing modalities); their ``<modality>_lengths`` entries go along.
        label_key: key of the labels in the batch dict (None or absent: labels are None).
    """

    def __init__(
        self, modalities: Sequence[str] | str = SENTIMENT_MODALITIES, label_key: str | None = "label"
    ):
        if isinstance(modalities, str):
            modalities = [m for m in modalities.split("+") if m.strip()]
        self.modalities = tuple(modalities)
        if not self.modalities:
            raise ValueError("SentimentPrepareBatch needs at least one modality")
        self.label_key = label_key

    def __call__(
        self,
        batchdata: Mapping[str, Any],
        device: str | torch.device | None = None,
        non_blocking: bool = False,
        **kwargs: Any,
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
        if not isinstance(batchdata, Mapping):
            raise TypeError(f"expected a dict batch from SentimentDataset, got {type(batchdata).__name__}")
        missing = [m for m in self.modalities if m not in batchdata]
        if missing:
            raise KeyError(f"batch has no modality {missing}; keys: {sorted(map(str, batchdata))}")
        inputs: dict[str, torch.Tensor] = {}
        for m in self.modalities:
            inputs[m] = torch.as_tensor(batchdata[m]).to(device=device, non_blocking=non_blocking, **kwargs)
            if f"{m}_lengths" in batchdata:
                inputs[f"{m}_lengths"] = torch.as_tensor(batchdata[f"{m}_lengths"])
        labels = None
        if self.label_key is not None and self.label_key in batchdata:
            labels = torch.as_tensor(batchdata[self.label_key]).float().reshape(-1, 1)
            labels = labels.to(device=device, non_blocking=non_blocking, **kwargs)
        return inputs, labels


def _stack_outputs(out) -> tuple[torch.Tensor, torch.Tensor]:
    if isinstance(out, list):  # decollated by the engine
        return torch.stack([o[Keys.PRED] for o in out]), torch.stack([o[Keys.LABEL] for o in out])
    return out[Keys.PRED], out[Keys.LABEL]


class SubsetRegressionMetric(Metric):
    """Sentiment metrics of every subset's fused prediction; ``compute()`` is their mean over subsets.

    PRED is the stacked per-modality predictions (B, M) of :class:`gmd_monai.engine.SubsetEvaluator`;
    each subset's prediction is the mean of its members' columns. At the end the full table (one
    row per subset, every metric of :func:`gmd_monai.sentiment_evaluation.sentiment_metrics`) is on
    ``self.table`` and, once attached, on ``engine.state.subset_metrics`` (with ``subset_names``).

    Args:
        modalities: modality names (column order of PRED).
        metric: which metric ``compute()`` averages over subsets (``mae`` default; lower is better, so
            pair it with ``metric_cmp_fn=lower_is_better`` and ``key_metric_negative_sign=True``).
        output_transform: maps the engine output to ``(pred (B, M), label (B, 1))``.
    """

    def __init__(
        self,
        modalities: Sequence[str] = SENTIMENT_MODALITIES,
        metric: str = "mae",
        output_transform=_stack_outputs,
        device: str | torch.device = "cpu",
    ):
        if metric not in METRIC_NAMES:
            raise ValueError(f"unknown metric {metric!r}; expected one of {list(METRIC_NAMES)}")
        self.space = SubsetSpace(modalities)
        self.metric = metric
        self.table: list[dict[str, Any]] | None = None
        self._preds: list[torch.Tensor] = []
        self._labels: list[torch.Tensor] = []
        super().__init__(output_transform=output_transform, device=device)

    def reset(self) -> None:
        self._preds, self._labels = [], []

    def update(self, output) -> None:
        pred, label = output
        if pred.shape[1] != self.space.num_modalities:
            raise ValueError(
                f"PRED has {pred.shape[1]} columns; expected one per modality "
                f"{list(self.space.modalities)} (use SubsetEvaluator)"
            )
        streams = split_streams(pred.detach().float(), self.space.modalities)
        fused = torch.cat(subset_logits(streams, self.space), dim=1)  # (B, T)
        self._preds.append(fused.cpu())
        self._labels.append(label.detach().float().reshape(-1).cpu())

    def compute(self) -> float:
        if not self._preds:
            raise RuntimeError("SubsetRegressionMetric has no data")
        preds = torch.cat(self._preds).numpy()
        labels = torch.cat(self._labels).numpy()
        self.table = subset_table(
            {n: preds[:, k] for k, n in enumerate(self.space.names)}, labels, self.space
        )
        return float(np.nanmean([row[self.metric] for row in self.table]))

    def completed(self, engine: Engine, name: str) -> None:
        super().completed(engine, name)
        engine.state.subset_metrics = self.table
        engine.state.subset_names = self.space.names


class PredictionWriter:
    """Write one CSV row per sample: ``id, prediction[, label]`` (inference bundle handler).

    Args:
        output_file: CSV path (folders are created).
        available: label written in the ``modalities`` column (e.g. ``"text+audio"``).
    """

    def __init__(self, output_file: str, available: Sequence[str] | str = SENTIMENT_MODALITIES):
        self.output_file = output_file
        self.available = available if isinstance(available, str) else "+".join(available)
        self._rows: list[tuple[str, float, float | None]] = []

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self._reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._collect)
        engine.add_event_handler(Events.COMPLETED, self._write)

    def _reset(self, engine: Engine) -> None:
        self._rows = []

    def _collect(self, engine: Engine) -> None:
        batch, out = engine.state.batch, engine.state.output
        if isinstance(out, list):
            preds = [float(o[Keys.PRED].reshape(-1)[0]) for o in out]
            ids = [str(b.get("id", "")) for b in batch]
            labels = [
                float(o[Keys.LABEL].reshape(-1)[0]) if o.get(Keys.LABEL) is not None else None for o in out
            ]
        else:
            preds = out[Keys.PRED].reshape(len(out[Keys.PRED]), -1)[:, 0].tolist()
            ids = [str(i) for i in batch.get("id", [""] * len(preds))]
            lab = out.get(Keys.LABEL)
            labels = [None] * len(preds) if lab is None else lab.reshape(len(preds), -1)[:, 0].tolist()
        self._rows.extend(zip(ids, preds, labels))

    def _write(self, engine: Engine) -> None:
        os.makedirs(os.path.dirname(os.path.abspath(self.output_file)), exist_ok=True)
        with open(self.output_file, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["id", "modalities", "prediction", "label"])
            for i, p, y in self._rows:
                w.writerow([i, self.available, f"{p:.6f}", "" if y is None else f"{y:.6f}"])
        logger.info("wrote %d predictions to %s", len(self._rows), self.output_file)
