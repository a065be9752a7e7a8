"""Pictures of what GMD did during a training run, drawn from the run's logs (``gmd-monai plot-diagnostics``).

The paper's claim to check: the gradient of the dominant modality is suppressed, i.e. the single
modality whose gradient norm is the largest gets a below-average effective weight. Everything is read
from the folder that :class:`~gmd_monai.engine.GMDDiagnosticsHandler` wrote into (the bundle's
``--output_dir``), nothing is recomputed:

* ``gmd_weights.csv``: per epoch, the mean effective weight ``w_j`` of each subset
  (``merged = sum_j w_j g_j``) and the mean number of conflicting pairs;
* ``gmd_cosine.csv`` (when the run wrote it): the cosine matrix of each epoch's last step;
* the TensorBoard event files: per step ``gmd/grad_norm/<subset>``, ``gmd/weight/<subset>``,
  ``gmd/num_conflicting_pairs``, and the ``gmd/cosine`` image (8-bit ``(cos + 1) / 2``, decoded when
  there is no ``gmd_cosine.csv``).

Written into ``<run_dir>/diagnostics/`` unless told otherwise:

* ``grad_norms.png``: per-subset gradient norm, mean per epoch, single modalities highlighted;
* ``conflicts.png``: conflicting pairs per step, their moving average and the per-epoch mean;
* ``cosine.png``: the cosine matrix at the first, middle and last epoch logged;
* ``weights.png``: the effective weights per epoch, with the uniform ``1/T`` of plain averaging;
* ``dominance.json``: per single modality, its mean gradient norm and mean effective weight, and the
  verdict of the claim (see :func:`dominance_summary`).

A ``mean`` run (no per-subset gradients unless ``compute_diagnostics``) gets only the pictures its
logs allow; a ``dropout`` run trains one loss and has nothing per subset to draw.

Example::

    from gmd_monai.diagnostics_plots import plot_diagnostics

    paths = plot_diagnostics("bundle/runs", "docs/images/diagnostics")
    # {"grad_norms": PosixPath(".../grad_norms.png"), ..., "dominance": PosixPath(".../dominance.json")}
"""

from __future__ import annotations

import csv
import json
import logging
import math
import sys
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path
from typing import Any

import numpy as np

from gmd_monai.subsets import SEPARATOR

__all__ = [
    "DiagnosticsError",
    "RunLogs",
    "read_run_logs",
    "dominance_summary",
    "plot_diagnostics",
    "plot_diagnostics_cli",
]

logger = logging.getLogger(__name__)

WEIGHTS_CSV = "gmd_weights.csv"
COSINE_CSV = "gmd_cosine.csv"
RUN_SUMMARY = "run_summary.json"
EVENTS_GLOB = "events.out.tfevents.*"
CLAIM = "the single modality with the largest mean gradient norm gets a below-average mean effective weight"


class DiagnosticsError(ValueError):
    """A run folder lacks the logs to draw (the message names the folder and what is missing)."""


@dataclass
class Series:
    """One logged quantity over training: ``steps`` (iterations or epochs) and ``values``."""

    steps: np.ndarray
    values: np.ndarray


@dataclass
class RunLogs:
    """What a run folder holds about GMD, as arrays.

    Attributes:
        run_dir: the folder read.
        method: aggregation method (from ``gmd_weights.csv``; None when only TensorBoard was read).
        names: objective (subset) names in the aggregator's order.
        epochs: (E,) epochs of ``gmd_weights.csv``.
        epoch_weights: (E, T) mean effective weight per epoch and subset.
        epoch_conflicts: (E,) mean conflicting pairs per epoch (nan when not computed).
        scalars: per-step TensorBoard series by tag (``gmd/...``), merged over all event files.
        cosine: {epoch: (T, T) cosine matrix} of each epoch's last step.
        cosine_source: ``gmd_cosine.csv``, ``tensorboard`` (8-bit image) or None.
        iterations_per_epoch: to put steps on the epoch axis (None when unknown).
    """

    run_dir: Path
    method: str | None = None
    names: list[str] = field(default_factory=list)
    epochs: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=int))
    epoch_weights: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    epoch_conflicts: np.ndarray = field(default_factory=lambda: np.zeros(0))
    scalars: dict[str, Series] = field(default_factory=dict)
    cosine: dict[int, np.ndarray] = field(default_factory=dict)
    cosine_source: str | None = None
    iterations_per_epoch: float | None = None

    @property
    def singles(self) -> list[str]:
        """Names of the one-modality subsets, in order."""
        return [n for n in self.names if SEPARATOR not in n]

    def series(self, kind: str, name: str | None = None) -> Series | None:
        """The per-step series ``gmd/<kind>[/<name>]`` with its non-finite (not computed) values dropped."""
        s = self.scalars.get(f"gmd/{kind}" if name is None else f"gmd/{kind}/{name}")
        if s is None:
            return None
        ok = np.isfinite(s.values)
        if kind == "num_conflicting_pairs":
            ok &= s.values >= 0  # -1: not computed
        return Series(s.steps[ok], s.values[ok]) if ok.any() else None

    def per_epoch(self, s: Series) -> Series:
        """Mean of a per-step series over each epoch (steps ``(e-1)*n+1 .. e*n`` make epoch ``e``)."""
        if self.iterations_per_epoch is None:
            return s
        epoch = np.ceil(s.steps / self.iterations_per_epoch - 1e-6).astype(int)
        keys = np.unique(epoch)
        return Series(keys, np.array([s.values[epoch == k].mean() for k in keys]))

    def to_epochs(self, steps: np.ndarray) -> np.ndarray:
        """Steps as fractional epochs (epoch ``e`` spans ``(e-1, e]``), or the steps when unknown."""
        return steps / self.iterations_per_epoch if self.iterations_per_epoch else steps

    @property
    def x_label(self) -> str:
        return "epoch" if self.iterations_per_epoch else "iteration"


# ---------------------------------------------------------------------------------------------------
# reading
# ---------------------------------------------------------------------------------------------------


def _read_csv(path: Path) -> tuple[list[str], list[list[str]]]:
    try:
        with open(path, newline="") as f:
            rows = [r for r in csv.reader(f) if r]
    except (OSError, UnicodeDecodeError) as e:
        raise DiagnosticsError(f"{path}: unreadable ({e})") from e
    if not rows or "epoch" not in rows[0]:
        raise DiagnosticsError(f"{path}: not a log CSV (no header with an 'epoch' column)")
    return rows[0], rows[1:]


def _read_weights_csv(path: Path, logs: RunLogs) -> None:
    header, rows = _read_csv(path)
    cols = [i for i, h in enumerate(header) if h.startswith("w[") and h.endswith("]")]
    needed = ("epoch", "method", "mean_conflicting_pairs")
    if not cols or any(h not in header for h in needed):
        raise DiagnosticsError(f"{path}: expected columns {', '.join(needed)}, w[<subset>]...; got {header}")
    by_epoch: dict[int, list[str]] = {}  # a resumed run may repeat an epoch: the last row wins
    try:
        for r in rows:
            by_epoch[int(float(r[header.index("epoch")]))] = r
        epochs = sorted(by_epoch)
        logs.names = [header[i][2:-1] for i in cols]
        logs.epochs = np.array(epochs, dtype=int)
        logs.epoch_weights = np.array([[float(by_epoch[e][i]) for i in cols] for e in epochs]).reshape(
            len(epochs), len(cols)
        )
        conflicts = np.array([float(by_epoch[e][header.index("mean_conflicting_pairs")]) for e in epochs])
    except (ValueError, IndexError) as e:
        raise DiagnosticsError(f"{path}: a row is not numeric or is cut short ({e})") from e
    logs.epoch_conflicts = np.where(conflicts >= 0, conflicts, np.nan)
    if epochs:
        logs.method = by_epoch[epochs[-1]][header.index("method")]


def _read_cosine_csv(path: Path) -> dict[int, np.ndarray]:
    header, rows = _read_csv(path)
    needed = ("epoch", "subset_i", "subset_j", "cosine")
    if any(h not in header for h in needed):
        raise DiagnosticsError(f"{path}: expected columns {', '.join(needed)}; got {header}")
    e, i, j, c = (header.index(h) for h in needed)
    cells: dict[int, dict[tuple[str, str], float]] = {}
    order: list[str] = []
    try:
        for r in rows:
            cells.setdefault(int(float(r[e])), {})[(r[i], r[j])] = float(r[c])
            if r[i] not in order:
                order.append(r[i])
    except (ValueError, IndexError) as err:
        raise DiagnosticsError(f"{path}: a row is not numeric or is cut short ({err})") from err
    out = {}
    for epoch, cell in cells.items():
        out[epoch] = np.array([[cell.get((a, b), np.nan) for b in order] for a in order])
    return out


def _event_files(run_dir: Path) -> list[Path]:
    def key(p: Path):  # events.out.tfevents.<unix time>.<host>.<pid>.<n-th writer>: in the order opened
        parts = p.name.split(".")
        stamp = int(parts[3]) if len(parts) > 3 and parts[3].isdigit() else 0
        count = int(parts[-1]) if parts[-1].isdigit() else 0
        return stamp, count, p.stat().st_mtime, p.name

    return sorted((p for p in run_dir.glob(EVENTS_GLOB) if p.is_file()), key=key)


def _read_events(files: list[Path]) -> tuple[dict[str, Series], dict[int, bytes]]:
    """``gmd/*`` scalars and the ``gmd/cosine`` images (PNG bytes by epoch), merged over the event files.

    A resumed run logs again the steps after its checkpoint, into a newer file: for a step logged
    twice the newer file's value wins.
    """
    from tensorboard.backend.event_processing import event_accumulator as ea

    guidance = {ea.SCALARS: 0, ea.IMAGES: 0, ea.HISTOGRAMS: 1, ea.TENSORS: 1, ea.AUDIO: 1}
    scalars: dict[str, dict[int, float]] = {}
    images: dict[int, bytes] = {}
    for path in files:
        acc = ea.EventAccumulator(str(path), size_guidance=guidance)
        try:
            acc.Reload()
        except Exception as e:  # a file cut short by a crash: keep what the other files hold
            logger.warning("%s: unreadable TensorBoard file skipped (%s)", path, e)
            continue
        tags = acc.Tags()
        for tag in tags.get(ea.SCALARS, []):
            if tag.startswith("gmd/"):
                scalars.setdefault(tag, {}).update({ev.step: ev.value for ev in acc.Scalars(tag)})
        if "gmd/cosine" in tags.get(ea.IMAGES, []):
            images.update({ev.step: ev.encoded_image_string for ev in acc.Images("gmd/cosine")})
    series = {
        tag: Series(np.array(sorted(d), dtype=float), np.array([d[k] for k in sorted(d)], dtype=float))
        for tag, d in scalars.items()
    }
    return series, images


def _decode_cosine_png(data: bytes) -> np.ndarray:
    """The handler's image back to cosines, within 1/255 (about 0.004).

    ``SummaryWriter.add_image`` truncates ``255 * (cos + 1) / 2`` to a byte, so a pixel ``p`` holds a
    cosine in ``[2p/255 - 1, 2(p+1)/255 - 1)``: the middle of that interval is returned (clipped to
    [-1, 1]). The sign of a cosine within 0.004 of zero is lost (it reads 0).
    """
    import matplotlib.image as mpimg

    pixels = np.asarray(mpimg.imread(BytesIO(data), format="png"), dtype=float)  # p / 255 in [0, 1]
    if pixels.ndim == 3:
        pixels = pixels[..., 0]
    return np.clip((np.rint(pixels * 255.0) + 0.5) / 255.0 * 2.0 - 1.0, -1.0, 1.0)


def _iterations_per_epoch(logs: RunLogs, image_epochs: list[int]) -> float | None:
    summary = logs.run_dir / RUN_SUMMARY
    if summary.is_file():
        try:
            s = json.loads(summary.read_text())
            if int(s.get("epochs", 0)) > 0 and int(s.get("iterations", 0)) > 0:
                return int(s["iterations"]) / int(s["epochs"])
        except (ValueError, TypeError, OSError):
            pass
    last_epoch = max([*logs.epochs.tolist(), *image_epochs], default=0)
    steps = [s.steps[-1] for s in logs.scalars.values() if len(s.steps)]
    if last_epoch > 0 and steps:
        return max(steps) / last_epoch
    return None


def read_run_logs(run_dir: str | Path) -> RunLogs:
    """Read the GMD logs of a run folder.

    Raises:
        DiagnosticsError: the folder is missing, holds neither ``gmd_weights.csv`` nor TensorBoard
            ``gmd/*`` scalars, or comes from a ``dropout`` run (one loss, no per-subset weights).
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise DiagnosticsError(f"{run_dir}: no such run folder (give the training run's --output_dir)")
    logs = RunLogs(run_dir=run_dir)
    if (run_dir / WEIGHTS_CSV).is_file():
        _read_weights_csv(run_dir / WEIGHTS_CSV, logs)
    files = _event_files(run_dir)
    images: dict[int, bytes] = {}
    if files:
        logs.scalars, images = _read_events(files)
    if not logs.names:  # no CSV: the subset names from the TensorBoard tags, in the order logged
        logs.names = [t.split("/", 2)[2] for t in logs.scalars if t.startswith("gmd/weight/")]
    if logs.method == "dropout" or logs.names == ["dropout"]:
        raise DiagnosticsError(
            f"{run_dir}: a 'dropout' run trains one loss over random subsets; it logs no per-subset "
            "weights or gradients to draw"
        )
    if not logs.names:
        raise DiagnosticsError(
            f"{run_dir}: no GMD logs (neither {WEIGHTS_CSV} nor TensorBoard gmd/* scalars; "
            "they are written by gmd_monai.engine.GMDDiagnosticsHandler)"
        )
    if (run_dir / COSINE_CSV).is_file():
        logs.cosine = _read_cosine_csv(run_dir / COSINE_CSV)
        logs.cosine_source = COSINE_CSV if logs.cosine else None
    if not logs.cosine and images:
        logs.cosine = {int(e): _decode_cosine_png(b) for e, b in images.items()}
        logs.cosine_source = "tensorboard"
    logs.iterations_per_epoch = _iterations_per_epoch(logs, list(images))
    return logs


# ---------------------------------------------------------------------------------------------------
# the claim
# ---------------------------------------------------------------------------------------------------


def _epoch_weights(logs: RunLogs) -> tuple[np.ndarray, np.ndarray]:
    """(E,) epochs and (E, T) mean weights: from ``gmd_weights.csv``, else from the TensorBoard steps."""
    if len(logs.epochs):
        return logs.epochs, logs.epoch_weights
    per = [logs.series("weight", n) for n in logs.names]
    if any(s is None for s in per) or logs.iterations_per_epoch is None:
        return np.zeros(0, dtype=int), np.zeros((0, len(logs.names)))
    per = [logs.per_epoch(s) for s in per]
    epochs = per[0].steps.astype(int)
    return epochs, np.stack([s.values for s in per], axis=1)


def dominance_summary(logs: RunLogs) -> dict[str, Any]:
    """Check the claim on a run: does the modality with the largest gradient get a below-average weight?

    For each single-modality subset: the mean (and median) over all logged steps of its gradient norm
    and the mean (and median) over epochs of its effective weight. The dominant modality is the one
    with the largest mean gradient norm; ``claim_holds`` when its mean weight is below the mean of the
    single-modality weights. GMD's weights are spiky (a projection on a nearly orthogonal conflicting
    gradient can give one subset several times ``1/T`` for an epoch), so two checks follow:
    ``median_check`` repeats the test with medians, and ``per_epoch`` repeats it in every epoch (that
    epoch's dominant modality and weights). ``verdict`` is ``holds`` or ``does not hold`` when the three
    agree (per epoch: in more than half of the epochs), else ``mixed``; ``not checkable`` (with a
    ``reason``) when the run logged no gradient norms (``mean``) or no weights.
    """
    epochs, weights = _epoch_weights(logs)
    t = len(logs.names)
    out: dict[str, Any] = {
        "run_dir": str(logs.run_dir),
        "method": logs.method,
        "claim": CLAIM,
        "subsets": t,
        "epochs": int(epochs[-1]) if len(epochs) else None,
        "uniform_weight": _num(1.0 / t) if t else None,
        "cosine_source": logs.cosine_source,
        "modalities": {},
        "dominant_modality": None,
        "dominant_weight": None,
        "single_modality_mean_weight": None,
        "relative_weight_difference": None,
        "claim_holds": None,
        "median_check": None,
        "per_epoch": None,
        "verdict": "not checkable",
    }
    singles = logs.singles
    if not singles:
        out["reason"] = "no single-modality subset among the objectives"
        return out
    norms = {m: logs.series("grad_norm", m) for m in singles}
    col = {m: logs.names.index(m) for m in singles}
    for m in singles:
        w = weights[:, col[m]] if len(epochs) else np.zeros(0)
        g = norms[m]
        out["modalities"][m] = {
            "mean_grad_norm": _num(g.values.mean()) if g is not None else None,
            "median_grad_norm": _num(np.median(g.values)) if g is not None else None,
            "mean_weight": _num(w.mean()) if len(w) else None,
            "median_weight": _num(np.median(w)) if len(w) else None,
        }
    if any(g is None for g in norms.values()):
        out["reason"] = "the run logged no per-subset gradient norms (e.g. method 'mean')"
        return out
    if not len(epochs):
        out["reason"] = f"no effective weights logged ({WEIGHTS_CSV} is missing)"
        return out
    stats = out["modalities"]
    dominant = max(singles, key=lambda m: stats[m]["mean_grad_norm"])
    average = float(np.mean([stats[m]["mean_weight"] for m in singles]))
    out["dominant_modality"] = dominant
    out["dominant_weight"] = stats[dominant]["mean_weight"]
    out["single_modality_mean_weight"] = _num(average)
    out["relative_weight_difference"] = _num(stats[dominant]["mean_weight"] / average - 1.0)
    out["claim_holds"] = bool(stats[dominant]["mean_weight"] < average)
    top = max(singles, key=lambda m: stats[m]["median_grad_norm"])
    typical = float(np.mean([stats[m]["median_weight"] for m in singles]))
    out["median_check"] = {
        "dominant_modality": top,
        "dominant_median_weight": stats[top]["median_weight"],
        "single_modality_mean_of_medians": _num(typical),
        "claim_holds": bool(stats[top]["median_weight"] < typical),
    }
    checks = [out["claim_holds"], out["median_check"]["claim_holds"]]
    if logs.iterations_per_epoch is not None:
        per = {m: logs.per_epoch(norms[m]) for m in singles}
        holds = checked = 0
        counts = dict.fromkeys(singles, 0)
        for k, e in enumerate(epochs):
            g = {m: per[m].values[per[m].steps == e] for m in singles}
            if any(len(v) == 0 for v in g.values()):
                continue
            top = max(singles, key=lambda m: g[m][0])
            counts[top] += 1
            checked += 1
            holds += bool(weights[k, col[top]] < np.mean([weights[k, col[m]] for m in singles]))
        out["per_epoch"] = {
            "epochs_checked": checked,
            "claim_holds": holds,
            "fraction": _num(holds / checked) if checked else None,
            "epochs_dominant": counts,
        }
        if checked:
            checks.append(holds / checked > 0.5)
    out["verdict"] = "holds" if all(checks) else "does not hold" if not any(checks) else "mixed"
    return out


def _num(x: float) -> float | None:
    x = float(x)
    return round(x, 6) if math.isfinite(x) else None


def summary_lines(summary: dict[str, Any]) -> list[str]:
    """The claim's verdict in a few readable lines."""
    lines = []
    for m, v in summary["modalities"].items():
        g, w = v["mean_grad_norm"], v["mean_weight"]
        gm, wm = v["median_grad_norm"], v["median_weight"]
        lines.append(
            f"  {m:<8} grad norm mean {_fmt(g, '.4g'):>7} median {_fmt(gm, '.4g'):>7}   "
            f"weight mean {_fmt(w, '.4f')} median {_fmt(wm, '.4f')}"
        )
    if summary["claim_holds"] is None:
        lines.append(f"verdict: not checkable: {summary.get('reason', 'no data')}")
        return lines
    s = summary
    lines.append(
        f"means:   {s['dominant_modality']} has the largest gradient; its weight {s['dominant_weight']:.4f} "
        f"vs single-modality mean {s['single_modality_mean_weight']:.4f} "
        f"({100 * s['relative_weight_difference']:+.1f}%; uniform 1/T = {s['uniform_weight']:.4f}): "
        f"{'holds' if s['claim_holds'] else 'does not hold'}"
    )
    med = summary["median_check"]
    lines.append(
        f"medians: {med['dominant_modality']} has the largest gradient; its weight "
        f"{med['dominant_median_weight']:.4f} vs {med['single_modality_mean_of_medians']:.4f}: "
        f"{'holds' if med['claim_holds'] else 'does not hold'}"
    )
    per = summary.get("per_epoch")
    if per and per["epochs_checked"]:
        lines.append(
            f"epochs:  holds in {per['claim_holds']} of {per['epochs_checked']} (largest gradient: "
            f"{', '.join(f'{m} {n}x' for m, n in per['epochs_dominant'].items())})"
        )
    lines.append(f"verdict: {summary['verdict']}")
    return lines


def _fmt(x: float | None, spec: str) -> str:
    return "-" if x is None else format(x, spec)


# ---------------------------------------------------------------------------------------------------
# pictures
# ---------------------------------------------------------------------------------------------------

_FULL_COLOUR = "black"
_OTHER_COLOUR = "0.72"


def _figure(width: float, height: float):
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def _colours(logs: RunLogs) -> dict[str, str]:
    palette = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink"]
    return {m: palette[k % len(palette)] for k, m in enumerate(logs.singles)}


def _subset_lines(ax, logs: RunLogs, curves: dict[str, Series], ylabel: str) -> None:
    """Multi-modal subsets in grey, the full set in black, single modalities in colour (legend)."""
    colours = _colours(logs)
    full = max(logs.names, key=lambda n: n.count(SEPARATOR)) if logs.names else None
    full = full if full is not None and SEPARATOR in full else None
    others = [n for n in logs.names if n not in colours and n != full and n in curves]
    for k, n in enumerate(others):
        s = curves[n]
        label = f"{len(others)} other subsets" if k == 0 else None
        ax.plot(s.steps, s.values, color=_OTHER_COLOUR, lw=0.8, label=label, zorder=1)
    if full in curves:
        ax.plot(curves[full].steps, curves[full].values, color=_FULL_COLOUR, lw=1.6, ls="--", label=full,
                zorder=2)  # fmt: skip
    for m, c in colours.items():
        if m in curves:
            ax.plot(curves[m].steps, curves[m].values, color=c, lw=2.0, label=m, zorder=3)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, ncol=2, loc="best", framealpha=0.9)


def _log_scale_if_wide(ax, curves: dict[str, Series]) -> None:
    values = np.concatenate([s.values for s in curves.values()]) if curves else np.zeros(0)
    values = values[values > 0]
    if len(values) and values.max() / values.min() > 20:
        ax.set_yscale("log")


def _plot_grad_norms(logs: RunLogs, path: Path) -> str | None:
    curves = {}
    for n in logs.names:
        s = logs.series("grad_norm", n)
        if s is not None:
            curves[n] = logs.per_epoch(s)
    if not curves:
        return "no per-subset gradient norms logged (gmd/grad_norm/*; method 'mean' computes none)"
    fig = _figure(9, 5)
    ax = fig.add_subplot()
    _subset_lines(ax, logs, curves, "gradient norm ||g_j||")
    _log_scale_if_wide(ax, curves)
    ax.set_xlabel(logs.x_label)
    per = "mean per epoch" if logs.iterations_per_epoch else "per step"
    ax.set_title(f"Per-subset gradient norm ({per}, before GMD), {logs.run_dir}", fontsize=10)
    fig.savefig(path, dpi=120)
    return None


def _moving_average(values: np.ndarray, window: int) -> np.ndarray:
    window = max(1, min(int(window), len(values)))
    c = np.cumsum(np.insert(values, 0, 0.0))
    end = np.arange(1, len(values) + 1)
    start = np.maximum(0, end - window)  # a trailing window, shorter at the start
    return (c[end] - c[start]) / (end - start)


def _plot_conflicts(logs: RunLogs, path: Path) -> str | None:
    steps = logs.series("num_conflicting_pairs")
    has_csv = len(logs.epochs) and np.isfinite(logs.epoch_conflicts).any()
    if steps is None and not has_csv:
        return "no conflicting-pair counts logged (method 'mean' computes none)"
    t = len(logs.names)
    fig = _figure(9, 4.5)
    ax = fig.add_subplot()
    if steps is not None:
        x = logs.to_epochs(steps.steps)
        window = round(logs.iterations_per_epoch) if logs.iterations_per_epoch else max(1, len(x) // 50)
        ax.scatter(x, steps.values, s=4, color="0.6", alpha=0.5, label="per step", zorder=1)
        ax.plot(x, _moving_average(steps.values, window), color="tab:blue", lw=1.5,
                label=f"moving average ({window} steps)", zorder=2)  # fmt: skip
    if has_csv:
        ok = np.isfinite(logs.epoch_conflicts)
        x = logs.epochs[ok] - (0.5 if logs.iterations_per_epoch else 0.0)  # the middle of the epoch
        ax.plot(x, logs.epoch_conflicts[ok], color="tab:red", lw=1.2, marker="o", ms=2.5,
                label=f"epoch mean ({WEIGHTS_CSV})", zorder=3)  # fmt: skip
    ax.set_xlabel(logs.x_label if steps is not None else "epoch")
    ax.set_ylabel("conflicting pairs (cos < 0)")
    ax.set_title(f"Conflicting subset-gradient pairs per step (of {t * (t - 1) // 2}), {logs.run_dir}",
                 fontsize=10)  # fmt: skip
    ax.grid(alpha=0.3)
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=8, loc="best")
    fig.savefig(path, dpi=120)
    return None


def _three_epochs(epochs: list[int]) -> list[int]:
    if not epochs:
        return []
    return sorted({epochs[0], epochs[len(epochs) // 2], epochs[-1]})


def _conflicts_at(logs: RunLogs, epoch: int, cosine: np.ndarray) -> int:
    """Conflicting pairs of an epoch's last step: the exact logged count when there is one."""
    s = logs.series("num_conflicting_pairs")
    if s is not None and logs.iterations_per_epoch:
        at = s.values[s.steps == round(epoch * logs.iterations_per_epoch)]
        if len(at):
            return int(at[-1])
    return int(np.sum(np.triu(cosine, 1) < 0))


def _plot_cosine(logs: RunLogs, path: Path) -> str | None:
    from matplotlib.colors import TwoSlopeNorm

    shown = _three_epochs(sorted(logs.cosine))
    if not shown:
        return "no cosine matrix logged (gmd_cosine.csv or the TensorBoard image gmd/cosine)"
    mats = [logs.cosine[e] for e in shown]
    t = mats[0].shape[0]
    names = logs.names if len(logs.names) == t else [str(k) for k in range(t)]
    off = ~np.eye(t, dtype=bool)
    spread = max(float(np.nanmax(np.abs(m[off]))) if t > 1 else 0.0 for m in mats)
    spread = max(spread, 0.01)
    norm = TwoSlopeNorm(vcenter=0.0, vmin=-spread, vmax=spread)
    cell = 0.3
    fig = _figure(len(mats) * (cell * t + 1.0) + 2.6, cell * t + 2.2)
    axes = fig.subplots(1, len(mats), squeeze=False)[0]
    image = None
    for k, (ax, e, m) in enumerate(zip(axes, shown, mats)):
        shown_m = np.where(off, m, np.nan)  # the diagonal (1) would flatten the colour scale
        image = ax.imshow(shown_m, cmap="RdBu_r", norm=norm)
        rows, cols = np.nonzero(shown_m < 0)  # conflicts are often tiny cosines: mark them
        ax.scatter(cols, rows, marker="x", s=14, linewidths=0.9, color="black")
        ax.set_facecolor("0.85")
        ax.set_title(f"epoch {e}: {_conflicts_at(logs, e, m)} pair(s) < 0", fontsize=9)
        ax.set_xticks(range(t), names, rotation=90, fontsize=7)
        ax.set_yticks(range(t), names if k == 0 else [""] * t, fontsize=7)
    fig.colorbar(image, ax=list(axes), shrink=0.8, label=f"cosine (colour clipped at ±{spread:.2g})")
    source = "8-bit TensorBoard image, ±0.004" if logs.cosine_source == "tensorboard" else COSINE_CSV
    fig.suptitle(f"Cosine of subset gradients at the epoch's last step, × = conflict (cos < 0) ({source}), "
                 f"{logs.run_dir}", fontsize=10)  # fmt: skip
    fig.savefig(path, dpi=120)
    return None


def _plot_weights(logs: RunLogs, path: Path) -> str | None:
    epochs, weights = _epoch_weights(logs)
    if not len(epochs):
        return f"no effective weights logged ({WEIGHTS_CSV} or gmd/weight/*)"
    curves = {n: Series(epochs, weights[:, k]) for k, n in enumerate(logs.names)}
    fig = _figure(9, 5)
    ax = fig.add_subplot()
    uniform = 1.0 / len(logs.names)
    ax.axhline(uniform, color="tab:gray", ls=":", lw=1.5, label=f"uniform 1/T = {uniform:.4f}", zorder=0)
    _subset_lines(ax, logs, curves, "mean effective weight w_j (merged = Σ w_j g_j)")
    _log_scale_if_wide(ax, curves)
    ax.set_xlabel("epoch")
    method = f"method {logs.method}, " if logs.method else ""
    ax.set_title(f"Effective weight per subset, mean per epoch ({method}{logs.run_dir})", fontsize=10)
    fig.savefig(path, dpi=120)
    return None


_PLOTS = {
    "grad_norms": _plot_grad_norms,
    "conflicts": _plot_conflicts,
    "cosine": _plot_cosine,
    "weights": _plot_weights,
}


def plot_diagnostics(run_dir: str | Path, output_dir: str | Path | None = None) -> dict[str, Path]:
    """Draw a training run's GMD diagnostics and check the dominant-modality claim.

    Args:
        run_dir: the run's log folder (the bundle's ``--output_dir``, e.g. ``bundle/runs``).
        output_dir: where to write; defaults to ``<run_dir>/diagnostics``.

    Returns:
        ``{"grad_norms": png, "conflicts": png, "cosine": png, "weights": png, "dominance": json}``,
        without the pictures the logs do not allow (``dominance.json`` lists them under ``skipped``
        with the reason).

    Raises:
        DiagnosticsError: see :func:`read_run_logs`.
    """
    logs = read_run_logs(run_dir)
    out_dir = Path(run_dir) / "diagnostics" if output_dir is None else Path(output_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DiagnosticsError(f"{out_dir}: cannot create the output folder ({e.strerror or e})") from e
    written: dict[str, Path] = {}
    skipped: dict[str, str] = {}
    for name, draw in _PLOTS.items():
        path = out_dir / f"{name}.png"
        reason = draw(logs, path)
        if reason is None:
            written[name] = path
        else:
            skipped[name] = reason
            logger.warning("%s.png not drawn: %s", name, reason)
    summary = dominance_summary(logs)
    summary["skipped"] = skipped
    path = out_dir / "dominance.json"
    path.write_text(json.dumps(summary, indent=2) + "\n")
    written["dominance"] = path
    return written


def plot_diagnostics_cli(run_dir: str, output: str | None = None, debug: bool = False) -> None:
    """Draw what GMD did during a training run and check "the dominant modality's gradient is suppressed".

    Example:
        gmd-monai plot-diagnostics bundle/runs --output docs/images/diagnostics

    Reads the run folder's gmd_weights.csv, gmd_cosine.csv (if any) and TensorBoard files; writes
    grad_norms.png, conflicts.png, cosine.png, weights.png and dominance.json. Errors: one line on
    stderr, exit code 2.

    Args:
        run_dir: the training run's --output_dir (e.g. bundle/runs).
        output: output folder (default: <run_dir>/diagnostics).
        debug: show the full traceback on error.
    """
    try:
        written = plot_diagnostics(str(run_dir), None if output is None else str(output))
        summary = json.loads(written["dominance"].read_text())
    except (DiagnosticsError, OSError, ValueError) as e:
        if debug:
            raise
        msg = " ".join(str(e).split()) or type(e).__name__
        print(f"gmd-monai plot-diagnostics: error: {msg}", file=sys.stderr)
        raise SystemExit(2) from None
    lines = [f"{name + ':':<12}{path}" for name, path in written.items()]
    lines.extend(f"{name + ':':<12}not drawn: {why}" for name, why in summary["skipped"].items())
    lines.append(f"claim: {CLAIM}")
    lines.extend(summary_lines(summary))
    print("\n".join(lines))
