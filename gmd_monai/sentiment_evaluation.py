"""7-subset evaluation of sentiment models: metrics, tables (CSV + Markdown + JSON) and a plot.

Metric definitions (the field's reference implementations: MMSA's ``MetricsTop`` regression metrics for
MOSI/MOSEI, which extend MulT's ``eval_mosei_senti``; implemented here from the definitions):

=============  ==========================================================================================
``mae``        mean absolute error ``mean(|pred - label|)`` (on the raw, unclipped prediction).
``corr``       Pearson correlation of pred and label (NaN when either is constant).
``acc2_has0``  binary accuracy of ``pred >= 0`` vs ``label >= 0`` over ALL samples (MMSA "Has0_acc_2":
               zero labels count as non-negative).
``f1_has0``    weighted F1 of the same two classes (per-class F1 weighted by the class's support in the
               labels, as scikit-learn's ``f1_score(average="weighted")``; an undefined F1 counts 0).
``acc2_non0``  binary accuracy of ``pred > 0`` vs ``label > 0`` over samples whose label != 0
               (MMSA "Non0_acc_2", MulT with ``exclude_zero=True``).
``f1_non0``    weighted F1 of the same.
``acc5``       5-class accuracy: ``round(clip(x, -2, 2))`` equal for pred and label.
``acc7``       7-class accuracy: ``round(clip(x, -3, 3))`` equal for pred and label.
=============  ==========================================================================================

Rounding is NumPy's ``np.round`` (half to even: 0.5 -> 0, 1.5 -> 2, -2.5 -> -2), as in both references.
Note: MulT's default (``exclude_zero=False``) binary accuracy uses ``> 0`` over all samples, which differs
from MMSA's has-0 (``>= 0``) when labels or predictions are exactly 0; the has-0 numbers here are MMSA's.

Each subset's prediction is the mean of its modalities' predictions (DS late fusion). Tables list the
subsets in the project order (TAV, TA, TV, AV, T, A, V) with accuracies and F1 in percent in the
Markdown file and as fractions in the CSV/JSON.

Example:
    >>> import numpy as np
    >>> sentiment_metrics(np.array([0.5, -1.0, 0.0, 2.0]), np.array([1.0, -2.0, 0.0, -0.4]))["acc2_non0"]
    0.6666666666666666
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ignite.engine import Engine, Events
from torch import nn

from gmd_monai.devices import resolve_device
from gmd_monai.losses import subset_logits
from gmd_monai.subsets import SENTIMENT_MODALITIES, SubsetSpace

__all__ = [
    "METRIC_NAMES",
    "SubsetTableWriter",
    "binary_accuracy",
    "evaluate_checkpoint",
    "evaluate_cli",
    "evaluate_model",
    "mae",
    "multiclass_accuracy",
    "pearson_corr",
    "sentiment_metrics",
    "short_subset_name",
    "subset_predictions",
    "subset_table",
    "weighted_f1",
    "write_tables",
]

logger = logging.getLogger(__name__)

#: metric keys and their display names (accuracy-like ones are shown in percent in Markdown).
METRIC_NAMES: dict[str, str] = {
    "mae": "MAE",
    "corr": "Corr",
    "acc2_has0": "Acc-2 (has-0)",
    "f1_has0": "F1 (has-0)",
    "acc2_non0": "Acc-2 (non-0)",
    "f1_non0": "F1 (non-0)",
    "acc5": "Acc-5",
    "acc7": "Acc-7",
}
_PERCENT = ("acc2_has0", "f1_has0", "acc2_non0", "f1_non0", "acc5", "acc7")


def _as_1d(x: Any, name: str) -> np.ndarray:
    arr = np.asarray(x.detach().cpu() if isinstance(x, torch.Tensor) else x, dtype=np.float64).reshape(-1)
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains non-finite values")
    return arr


def _pair(pred: Any, label: Any) -> tuple[np.ndarray, np.ndarray]:
    p, y = _as_1d(pred, "pred"), _as_1d(label, "label")
    if p.shape != y.shape:
        raise ValueError(f"pred has {p.size} values but label has {y.size}")
    if p.size == 0:
        raise ValueError("no samples to evaluate")
    return p, y


def mae(pred: Any, label: Any) -> float:
    """Mean absolute error."""
    p, y = _pair(pred, label)
    return float(np.mean(np.abs(p - y)))


def pearson_corr(pred: Any, label: Any) -> float:
    """Pearson correlation coefficient (NaN when pred or label is constant)."""
    p, y = _pair(pred, label)
    pc, yc = p - p.mean(), y - y.mean()
    denom = math.sqrt(float(np.sum(pc * pc)) * float(np.sum(yc * yc)))
    return float(np.sum(pc * yc) / denom) if denom > 0 else float("nan")


def weighted_f1(pred_pos: Any, true_pos: Any) -> float:
    """Support-weighted F1 over the classes {False, True} (scikit-learn ``average="weighted"``).

    ``F1_c = 2 TP_c / (predicted_c + actual_c)`` (0 when undefined), weighted by ``actual_c``.
    """
    p = np.asarray(pred_pos, dtype=bool).reshape(-1)
    t = np.asarray(true_pos, dtype=bool).reshape(-1)
    if p.shape != t.shape or p.size == 0:
        raise ValueError(f"weighted_f1 needs two non-empty arrays of equal size, got {p.size} and {t.size}")
    total, score = 0, 0.0
    for c in (False, True):
        support = int(np.sum(t == c))
        denom = int(np.sum(p == c)) + support
        tp = int(np.sum((p == c) & (t == c)))
        f1 = 2.0 * tp / denom if denom > 0 else 0.0
        score += support * f1
        total += support
    return score / total


def binary_accuracy(pred: Any, label: Any, mode: str = "non0") -> tuple[float, float]:
    """Acc-2 and weighted F1 in the MMSA flavours.

    Args:
        pred, label: sentiment scores.
        mode: ``"has0"`` (``>= 0`` vs ``< 0`` over all samples) or ``"non0"`` (``> 0`` vs ``< 0`` over the
            samples with a non-zero label).

    Returns:
        ``(accuracy, weighted F1)``; NaN when ``non0`` leaves no sample.
    """
    p, y = _pair(pred, label)
    if mode == "has0":
        pp, yy = p >= 0, y >= 0
    elif mode == "non0":
        keep = y != 0
        if not keep.any():
            return float("nan"), float("nan")
        pp, yy = p[keep] > 0, y[keep] > 0
    else:
        raise ValueError(f"unknown mode {mode!r}; expected 'has0' or 'non0'")
    return float(np.mean(pp == yy)), weighted_f1(pp, yy)


def multiclass_accuracy(pred: Any, label: Any, clip: float = 3.0) -> float:
    """Accuracy of ``round(clip(x, -clip, clip))`` classes (``clip=3``: Acc-7, ``clip=2``: Acc-5)."""
    p, y = _pair(pred, label)
    return float(np.mean(np.round(np.clip(p, -clip, clip)) == np.round(np.clip(y, -clip, clip))))


def sentiment_metrics(pred: Any, label: Any) -> dict[str, float]:
    """All metrics of :data:`METRIC_NAMES` for one set of predictions (see the module docstring)."""
    acc_h, f1_h = binary_accuracy(pred, label, "has0")
    acc_n, f1_n = binary_accuracy(pred, label, "non0")
    return {
        "mae": mae(pred, label),
        "corr": pearson_corr(pred, label),
        "acc2_has0": acc_h,
        "f1_has0": f1_h,
        "acc2_non0": acc_n,
        "f1_non0": f1_n,
        "acc5": multiclass_accuracy(pred, label, 2.0),
        "acc7": multiclass_accuracy(pred, label, 3.0),
    }


def short_subset_name(space: SubsetSpace, k: int) -> str:
    """``T``, ``TA``, ``TAV``... (initials) when the initials are unique, else the full subset name."""
    initials = [m[0].upper() for m in space.modalities]
    if len(set(initials)) != len(initials):
        return space.name(k)
    return "".join(initials[i] for i in space.subsets[k])


def subset_table(
    preds: Mapping[str, Any], labels: Any, space: SubsetSpace | Sequence[str] = SENTIMENT_MODALITIES
) -> list[dict[str, Any]]:
    """One row per subset (project order): ``subset``, ``short``, ``n`` and every metric.

    Args:
        preds: ``{subset name: (N,) predictions}`` for every subset of ``space``.
        labels: (N,) labels.
        space: the subset space (or modality names).
    """
    space = space if isinstance(space, SubsetSpace) else SubsetSpace(space)
    missing = [n for n in space.names if n not in preds]
    if missing:
        raise KeyError(f"no predictions for subset(s) {missing}")
    y = _as_1d(labels, "labels")
    rows = []
    for k, name in enumerate(space.names):
        rows.append(
            {
                "subset": name,
                "short": short_subset_name(space, k),
                "n": int(y.size),
                **sentiment_metrics(preds[name], y),
            }
        )
    return rows


# ------------------------------------------------------------------------------------------------
# running a model
# ------------------------------------------------------------------------------------------------
def subset_predictions(
    network: nn.Module,
    loader: Any,
    device: str | torch.device = "cpu",
    prepare_batch: Callable | None = None,
) -> tuple[dict[str, np.ndarray], np.ndarray, list[str]]:
    """Predictions of every subset (one forward per modality and batch; subsets are means of streams).

    Args:
        network: a DS model with ``forward_streams`` and ``modalities``.
        loader: iterable of batches (dicts from :class:`~gmd_monai.data.sentiment.SentimentDataset`).
        device: where to run.
        prepare_batch: ``(batch, device) -> (inputs, labels)`` (default :class:`SentimentPrepareBatch`).

    Returns:
        ``({subset name: (N,)}, labels (N,), ids)``.
    """
    from gmd_monai.engine import unwrap
    from gmd_monai.sentiment_engine import SentimentPrepareBatch

    model = unwrap(network)
    space = SubsetSpace(model.modalities)
    prepare_batch = prepare_batch or SentimentPrepareBatch(model.modalities)
    device = torch.device(device)
    network.eval()
    preds: list[torch.Tensor] = []
    labels: list[torch.Tensor] = []
    ids: list[str] = []
    with torch.no_grad():
        for batch in loader:
            inputs, y = prepare_batch(batch, device)[:2]
            if y is None:
                raise ValueError("the evaluation data has no labels")
            streams = model.forward_streams(inputs)
            preds.append(torch.cat(subset_logits(streams, space), dim=1).float().cpu())
            labels.append(y.reshape(-1).float().cpu())
            ids.extend(str(i) for i in batch.get("id", [""] * len(y)))
    if not preds:
        raise ValueError("the evaluation data is empty")
    p = torch.cat(preds).numpy()
    return {n: p[:, k] for k, n in enumerate(space.names)}, torch.cat(labels).numpy(), ids


def evaluate_model(
    network: nn.Module, loader: Any, device: str | torch.device = "cpu", prepare_batch: Callable | None = None
) -> list[dict[str, Any]]:
    """The 7-subset table (:func:`subset_table`) of a model on a data loader."""
    from gmd_monai.engine import unwrap

    preds, labels, _ = subset_predictions(network, loader, device, prepare_batch)
    return subset_table(preds, labels, SubsetSpace(unwrap(network).modalities))


# ------------------------------------------------------------------------------------------------
# tables and plot
# ------------------------------------------------------------------------------------------------
def _fmt(key: str, value: float, percent: bool) -> str:
    """Markdown (``percent=True``): accuracies in % with 2 decimals, others 4; CSV: 6 decimals."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "nan"
    if not percent:
        return f"{value:.6f}"
    if key in _PERCENT:
        return f"{100.0 * value:.2f}"
    return f"{value:.4f}"


def write_tables(
    rows: Sequence[Mapping[str, Any]],
    output_dir: str | os.PathLike,
    prefix: str = "sentiment_subsets",
    title: str = "Sentiment regression per modality subset",
    plot: bool = True,
) -> dict[str, str]:
    """Write ``<prefix>.csv``, ``<prefix>.md``, ``<prefix>.json`` and ``<prefix>.png`` in ``output_dir``.

    Args:
        rows: :func:`subset_table` rows.
        output_dir: folder (created).
        prefix: file name stem.
        title: Markdown heading and plot title.
        plot: also draw the PNG (matplotlib, Agg backend).

    Returns:
        ``{"csv", "markdown", "json", "png": path}``.
    """
    if not rows:
        raise ValueError("no rows to write")
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    keys = list(METRIC_NAMES)
    paths = {
        "csv": str(out / f"{prefix}.csv"),
        "markdown": str(out / f"{prefix}.md"),
        "json": str(out / f"{prefix}.json"),
    }
    with open(paths["csv"], "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["subset", "short", "n", *keys])
        for r in rows:
            w.writerow([r["subset"], r["short"], r["n"], *[_fmt(k, r[k], False) for k in keys]])
    means = {k: float(np.nanmean([r[k] for r in rows])) for k in keys}
    lines = [
        f"# {title}",
        "",
        f"{rows[0]['n']} samples. MAE and Corr as values; accuracies and F1 in %. Definitions: MMSA "
        "MetricsTop (has-0: >= 0 over all samples; non-0: > 0 over non-zero labels; Acc-7/Acc-5: round "
        "after clipping).",
        "",
        "| subset | " + " | ".join(METRIC_NAMES[k] for k in keys) + " |",
        "|---|" + "---:|" * len(keys),
    ]
    for r in rows:
        lines.append(f"| {r['short']} | " + " | ".join(_fmt(k, r[k], True) for k in keys) + " |")
    lines += [
        "",
        "Mean over subsets: " + ", ".join(f"{METRIC_NAMES[k]} {_fmt(k, means[k], True)}" for k in keys),
        "",
    ]
    Path(paths["markdown"]).write_text("\n".join(lines), encoding="utf-8")
    Path(paths["json"]).write_text(json.dumps({"rows": list(rows), "mean": means}, indent=1, allow_nan=True))
    if plot:
        paths["png"] = str(out / f"{prefix}.png")
        _plot(rows, paths["png"], title)
    return paths


def _plot(rows: Sequence[Mapping[str, Any]], path: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r["short"] for r in rows]
    x = np.arange(len(rows))
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.4))
    axes[0].bar(x, [r["mae"] for r in rows], color="tab:red")
    axes[0].set_title("MAE (lower is better)")
    axes[1].bar(x, [r["corr"] for r in rows], color="tab:blue")
    axes[1].set_title("Pearson Corr")
    axes[2].bar(x - 0.2, [100 * r["acc2_non0"] for r in rows], 0.4, label="Acc-2 non-0")
    axes[2].bar(x + 0.2, [100 * r["acc2_has0"] for r in rows], 0.4, label="Acc-2 has-0")
    axes[2].set_title("Acc-2 (%)")
    axes[2].legend(fontsize=7, loc="lower right")
    for ax in axes:
        ax.set_xticks(x, names)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


class SubsetTableWriter:
    """Evaluator handler: write the 7-subset tables when the evaluation completes.

    Reads ``engine.state.subset_metrics``, set by
    :class:`~gmd_monai.sentiment_engine.SubsetRegressionMetric`.

    Args:
        output_dir: folder for the tables (see :func:`write_tables`).
        prefix: file name stem.
        title: table title.
        plot: also draw the PNG (off for per-epoch validation tables, to save time).
    """

    def __init__(
        self,
        output_dir: str,
        prefix: str = "sentiment_subsets",
        title: str = "Sentiment per subset",
        plot: bool = True,
    ):
        self.output_dir = output_dir
        self.prefix = prefix
        self.title = title
        self.plot = plot
        self.paths: dict[str, str] | None = None

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        rows = getattr(engine.state, "subset_metrics", None)
        if not rows:
            raise RuntimeError("SubsetTableWriter needs a SubsetRegressionMetric attached to the evaluator")
        self.paths = write_tables(rows, self.output_dir, self.prefix, self.title, plot=self.plot)
        logger.info("wrote the subset tables to %s", self.paths["markdown"])


# ------------------------------------------------------------------------------------------------
# command line
# ------------------------------------------------------------------------------------------------
def evaluate_checkpoint(
    checkpoint: str,
    dataset_path: str,
    split: str = "test",
    output_dir: str = "eval/sentiment",
    format: str = "auto",
    batch_size: int = 128,
    device: str = "cpu",
    dataset_kwargs: dict | None = None,
    prefix: str = "sentiment_subsets",
) -> dict[str, Any]:
    """Evaluate a trained sentiment checkpoint on every modality subset and write the tables.

    Args:
        checkpoint: checkpoint written by the sentiment bundle (the architecture is read from it).
        dataset_path: dataset file or folder (any format of :func:`gmd_monai.data.sentiment.load_sentiment`).
        split: ``train``, ``valid`` or ``test``.
        output_dir: where the CSV / Markdown / JSON / PNG go.
        format: dataset format (``auto``, ``mult``, ``mmsa``, ``csd``, ``mfn_h5``).
        batch_size: evaluation batch size.
        device: ``cpu``, ``cuda``, ``cuda:0``...
        dataset_kwargs: reader arguments (e.g. ``{"features": {...}, "folds": "..."}`` for ``.csd`` data).
        prefix: file name stem of the tables.

    Returns:
        ``{"paths": {...}, "rows": [...], "mean": {metric: value}}``.
    """
    from torch.utils.data import DataLoader

    from gmd_monai.data.sentiment import SentimentDataset
    from gmd_monai.networks.ds_sequence import DynamicSharingSequenceModel

    dev = resolve_device(device)
    net = DynamicSharingSequenceModel.from_checkpoint(checkpoint, map_location=dev).to(dev)
    ds = SentimentDataset(
        dataset_path, split=split, format=format, modalities=net.modalities, reader_kwargs=dataset_kwargs
    )
    if ds.feature_sizes != net.input_sizes:
        raise ValueError(
            f"{dataset_path}: feature sizes {ds.feature_sizes} differ from those the checkpoint was trained "
            f"with {net.input_sizes}"
        )
    loader = DataLoader(ds, batch_size=int(batch_size), shuffle=False)
    rows = evaluate_model(net, loader, dev)
    title = f"{Path(dataset_path).name} ({split}): sentiment per modality subset"
    paths = write_tables(rows, output_dir, prefix, title)
    means = {k: float(np.nanmean([r[k] for r in rows])) for k in METRIC_NAMES}
    return {"paths": paths, "rows": rows, "mean": means}


def evaluate_cli(
    checkpoint: str,
    dataset_path: str,
    split: str = "test",
    output_dir: str = "eval/sentiment",
    format: str = "auto",
    batch_size: int = 128,
    device: str = "cpu",
    dataset_kwargs: dict | None = None,
    prefix: str = "sentiment_subsets",
) -> dict[str, str]:
    """Command-line 7-subset evaluation: print the Markdown table, return the written files.

    Command line::

        gmd-monai sentiment-evaluate --checkpoint sentiment_bundle/models/model.pt \\
            --dataset_path mosi_data.pkl [--split test] [--output_dir eval/sentiment]

    Arguments as :func:`evaluate_checkpoint` (fire-friendly keyword arguments).

    Returns:
        ``{"csv", "markdown", "json", "png": path}``.
    """
    out = evaluate_checkpoint(
        checkpoint, dataset_path, split, output_dir, format, batch_size, device, dataset_kwargs, prefix
    )
    print(Path(out["paths"]["markdown"]).read_text())
    return out["paths"]
