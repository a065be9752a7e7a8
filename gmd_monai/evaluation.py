"""Evaluation over every modality subset: per-case hard Dice and HD95 for WT, TC, ET; tables and a heatmap.

The standard protocol of the missing-modality literature (RFNet, Ding et al., ICCV 2021; GMD, Wang et
al., AAAI 2024), with per-case hard Dice rather than the GMD code's soft batch Dice: for every test
case and each of the 15 subsets, the full volume is segmented with a sliding window, thresholded at
sigmoid > 0.5, and scored per case:

* Dice (MONAI ``compute_dice``): an empty prediction on an empty truth scores 1.
* HD95 in mm (MONAI ``compute_hausdorff_distance``, percentile 95, image spacing): both empty -> 0;
  exactly one empty -> 373.13 (the diagonal of the 240x240x155 BraTS grid, the challenge convention).
* optional ``et_min_voxels`` rule (labelled ``dice_et_pp``): an ET prediction with fewer voxels than
  the threshold is set to empty (many peers use 500).
* optional authors' metric (labelled ``soft_dice_*``): soft Dice on sigmoid probabilities (no
  threshold), smoothing 1, on a 192x192x128 centre crop, per case. Not comparable to the standard one.

All 15 subsets are formed from ONE sliding-window pass per modality: fusion is the mean of logits and
sliding-window blending is linear, so this is exact.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from monai.metrics import compute_dice, compute_hausdorff_distance

from gmd_monai.devices import resolve_device
from gmd_monai.losses import subset_logits
from gmd_monai.roi import parse_roi_size
from gmd_monai.subsets import BRATS_MODALITIES, SubsetSpace
from gmd_monai.weights import load_weights

__all__ = [
    "REGIONS",
    "case_subset_metrics",
    "predict_streams",
    "summarise",
    "write_reports",
    "SubsetEvaluation",
    "evaluate_cli",
]

logger = logging.getLogger(__name__)

#: Output channel order of the BraTS model (the authors' order).
REGIONS: tuple[str, ...] = ("WT", "TC", "ET")
HD_MAX = 373.13


def predict_streams(network, image: torch.Tensor, inferer, device, available=None) -> dict[str, torch.Tensor]:
    """Per-modality logits of one batch via ``inferer`` (e.g. SlidingWindowInferer), on CPU.

    Args:
        network: a DS network (``forward_streams``) or a wrapper of one.
        image: (B, M, ...) input.
        inferer: MONAI inferer; called once with a module returning all streams stacked on channels.
        device: where the network runs.
        available: modality names to run (default all).
    """
    from gmd_monai.engine import StackedStreams, split_streams, unwrap

    model = unwrap(network)
    stacked = StackedStreams(network, available)
    names = [m for m in model.modalities if available is None or m in available]
    if hasattr(image, "as_tensor"):  # MetaTensor: metadata bookkeeping on every op is not needed here
        image = image.as_tensor()
    with torch.no_grad():
        out = inferer(image.to(device), stacked)
    return {k: v.float().cpu() for k, v in split_streams(out, names).items()}


def _hd95(pred: torch.Tensor, truth: torch.Tensor, spacing) -> float:
    p_any, t_any = bool(pred.any()), bool(truth.any())
    if not p_any and not t_any:
        return 0.0
    if p_any != t_any:
        return HD_MAX
    d = compute_hausdorff_distance(
        pred[None, None].float(),
        truth[None, None].float(),
        include_background=True,
        percentile=95,
        spacing=spacing,
    )
    return float(d.item())


def _centre_crop(x: torch.Tensor, size=(192, 192, 128)) -> torch.Tensor:
    sl = []
    for dim, s in zip(x.shape[-3:], size):
        start = max(0, (dim - s) // 2)
        sl.append(slice(start, start + min(s, dim)))
    return x[..., sl[0], sl[1], sl[2]]


def case_subset_metrics(
    streams: dict[str, torch.Tensor],
    label: torch.Tensor,
    space: SubsetSpace,
    spacing: Sequence[float] | None = None,
    hd95: bool = True,
    et_min_voxels: int | None = None,
    soft_dice: bool = False,
    to_label_grid=None,
) -> list[dict]:
    """Metrics of one case for every subset.

    Args:
        streams: per-modality logits ``{name: (1, 3, ...)}`` (or (3, ...)).
        label: region targets (3, ...) or (1, 3, ...) in (WT, TC, ET) order.
        space: the subset space (modality names).
        spacing: voxel spacing in mm for HD95.
        hd95: compute HD95 (the slowest part).
        et_min_voxels: also report ``dice_et_pp`` with ET predictions below this size removed.
        soft_dice: also report the authors' soft centre-crop Dice.
        to_label_grid: maps a subset's probabilities (3, ...) from the network's grid onto the label's
            (when the network ran at another voxel size); the prediction is then ``> 0.5`` there.

    Returns:
        One dict per subset: subset index/name, presence flags, ``dice_wt/tc/et``, ``hd95_*``, ...
    """
    label = label.reshape((-1,) + tuple(label.shape[-3:])).bool()
    if label.shape[0] != len(REGIONS):
        raise ValueError(f"label must have {len(REGIONS)} region channels (WT, TC, ET), got {label.shape[0]}")
    streams = {k: v.reshape((-1,) + tuple(v.shape[-3:])) for k, v in streams.items()}
    rows = []
    for k, fused in enumerate(subset_logits(streams, space)):
        if to_label_grid is not None:
            fused = torch.logit(to_label_grid(torch.sigmoid(fused)).clamp(1e-6, 1 - 1e-6))
        pred = fused > 0  # sigmoid > 0.5
        row: dict = {"subset_index": k, "subset": space.name(k)}
        for m in space.modalities:
            row[m] = int(m in space.modalities_of(k))
        dice = compute_dice(
            pred[None].float(), label[None].float(), include_background=True, ignore_empty=False
        )[0]
        for r, name in enumerate(REGIONS):
            row[f"dice_{name.lower()}"] = float(dice[r])
        if et_min_voxels is not None:
            et = pred[2] if int(pred[2].sum()) >= et_min_voxels else torch.zeros_like(pred[2])
            d = compute_dice(et[None, None].float(), label[2][None, None].float(), ignore_empty=False)
            row["dice_et_pp"] = float(d)
        if hd95:
            for r, name in enumerate(REGIONS):
                row[f"hd95_{name.lower()}"] = _hd95(pred[r], label[r], spacing)
        if soft_dice:
            prob = _centre_crop(torch.sigmoid(fused))
            lab = _centre_crop(label.float())
            for r, name in enumerate(REGIONS):
                inter = float((prob[r] * lab[r]).sum())
                row[f"soft_dice_{name.lower()}"] = (2 * inter + 1) / (float(prob[r].sum() + lab[r].sum()) + 1)
        rows.append(row)
    return rows


def _metric_columns(rows: list[dict]) -> list[str]:
    skip = {"case", "subset_index", "subset", *BRATS_MODALITIES}
    cols = []
    for key in rows[0]:
        if key not in skip and isinstance(rows[0][key], float | int) and not isinstance(rows[0][key], bool):
            cols.append(key)
    return [c for c in cols if c.startswith(("dice", "hd95", "soft"))]


def summarise(rows: list[dict], space: SubsetSpace) -> list[dict]:
    """Mean over cases of every metric, per subset (in subset order), plus a final ``mean`` row."""
    if not rows:
        raise ValueError("no evaluation rows to summarise")
    cols = _metric_columns(rows)
    out = []
    for k in range(len(space)):
        sel = [r for r in rows if r["subset_index"] == k]
        row = {
            "subset_index": k,
            "subset": space.name(k),
            **{m: int(m in space.modalities_of(k)) for m in space.modalities},
        }
        for c in cols:
            vals = [r[c] for r in sel if r.get(c) is not None and math.isfinite(r[c])]
            row[c] = float(np.mean(vals)) if vals else float("nan")
        row["num_cases"] = len(sel)
        out.append(row)
    mean = {"subset_index": "", "subset": "mean", **{m: "" for m in space.modalities}}
    for c in cols:
        mean[c] = float(np.nanmean([r[c] for r in out]))
    mean["num_cases"] = out[0]["num_cases"]
    out.append(mean)
    return out


def _write_csv(path: Path, rows: list[dict]) -> None:
    keys: list[str] = []
    for r in rows:
        keys += [k for k in r if k not in keys]
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{v:.4f}" if isinstance(v, float) else v) for k, v in r.items()})


def markdown_table(summary: list[dict], space: SubsetSpace) -> str:
    """15 rows (one per subset, modalities as present/absent marks) + the mean row; Dice in %."""
    cols = [c for c in _metric_columns(summary) if c in summary[0]]
    head = ["#", *[m.upper() if m != "t1ce" else "T1ce" for m in space.modalities]]
    names = {
        "dice_wt": "Dice WT", "dice_tc": "Dice TC", "dice_et": "Dice ET", "dice_et_pp": "Dice ET (pp)",
        "hd95_wt": "HD95 WT", "hd95_tc": "HD95 TC", "hd95_et": "HD95 ET",
        "soft_dice_wt": "soft WT*", "soft_dice_tc": "soft TC*", "soft_dice_et": "soft ET*",
    }  # fmt: skip
    head += [names.get(c, c) for c in cols]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in summary:
        is_mean = r["subset"] == "mean"
        cells = ["**mean**" if is_mean else str(r["subset_index"] + 1)]
        cells += ["" if is_mean else ("●" if r[m] else "○") for m in space.modalities]
        for c in cols:
            v = r[c]
            txt = "nan" if not math.isfinite(v) else (f"{100 * v:.2f}" if "dice" in c else f"{v:.2f}")
            cells.append(f"**{txt}**" if is_mean else txt)
        lines.append("| " + " | ".join(cells) + " |")
    n = summary[0].get("num_cases", "?")
    notes = [
        "",
        f"● present, ○ absent. Dice in % (hard, sigmoid > 0.5, per case, full volume), HD95 in mm; "
        f"mean of {n} case(s).",
    ]
    if "dice_et_pp" in cols:
        notes.append("Dice ET (pp): ET predictions below the size threshold removed (post-processing rule).")
    if any(c.startswith("soft") for c in cols):
        notes.append(
            "*soft: the authors' soft Dice on a 192x192x128 centre crop (not comparable to hard Dice)."
        )
    return "\n".join(lines + notes) + "\n"


def heatmap_png(summary: list[dict], path: Path, title: str = "Dice per modality subset") -> None:
    """PNG heatmap: rows = subsets, columns = WT/TC/ET Dice (%)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in summary if r["subset"] != "mean"]
    data = np.array([[100 * r[f"dice_{c.lower()}"] for c in REGIONS] for r in rows])
    fig, ax = plt.subplots(figsize=(5.2, 0.42 * len(rows) + 1.4))
    im = ax.imshow(data, cmap="viridis", vmin=0, vmax=100, aspect="auto")
    ax.set_xticks(range(len(REGIONS)), REGIONS)
    ax.set_yticks(range(len(rows)), [r["subset"] for r in rows], fontsize=8)
    for i in range(data.shape[0]):
        for j in range(data.shape[1]):
            v = data[i, j]
            ax.text(j, i, "nan" if np.isnan(v) else f"{v:.1f}", ha="center", va="center",
                    color="white" if (np.isnan(v) or v < 60) else "black", fontsize=8)  # fmt: skip
    ax.set_title(title, fontsize=10)
    fig.colorbar(im, ax=ax, label="Dice (%)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_reports(rows: list[dict], space: SubsetSpace, output_dir: str | os.PathLike) -> dict[str, str]:
    """Write ``per_case.csv``, ``subset_summary.csv``, ``subset_table.md`` and ``subset_dice.png``."""
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    summary = summarise(rows, space)
    paths = {
        "per_case": out / "per_case.csv",
        "summary": out / "subset_summary.csv",
        "markdown": out / "subset_table.md",
        "heatmap": out / "subset_dice.png",
    }
    _write_csv(paths["per_case"], rows)
    _write_csv(paths["summary"], summary)
    paths["markdown"].write_text(markdown_table(summary, space), encoding="utf-8")
    heatmap_png(summary, paths["heatmap"])
    return {k: str(v) for k, v in paths.items()}


class SubsetEvaluation:
    """Evaluate a DS network on every modality subset of every case of a dataset.

    Used by ``bundle/configs/evaluate.yaml`` (id ``evaluating``) and by ``gmd-monai evaluate``.

    Args:
        network: the DS network (weights loaded by the caller or via ``checkpoint``).
        dataset: a MONAI dataset yielding dicts with ``image`` (M, ...) and ``label`` (3, ...) regions;
            full volumes (no cropping) for the standard protocol.
        inferer: e.g. ``SlidingWindowInferer(roi_size=128, overlap=0.5)``.
        output_dir: where the tables and the heatmap go.
        device: torch device.
        checkpoint: optional path of a state_dict (or a dict holding one under ``model``/``network``).
        hd95: compute HD95.
        et_min_voxels: optional ET post-processing rule (reported separately, labelled).
        soft_dice: also report the authors' soft centre-crop Dice.
        modalities: modality names (default the network's).
        publish_dir: also copy ``subset_summary.csv`` there (e.g. next to the weights, where
            ``gmd-monai segment`` reads what was measured for each modality subset).
    """

    def __init__(
        self,
        network,
        dataset,
        inferer,
        output_dir: str,
        device="cpu",
        checkpoint: str | None = None,
        hd95: bool = True,
        et_min_voxels: int | None = None,
        soft_dice: bool = False,
        modalities: Sequence[str] | None = None,
        publish_dir: str | None = None,
    ):
        self.network = network
        self.dataset = dataset
        self.inferer = inferer
        self.output_dir = output_dir
        self.device = torch.device(device)
        self.checkpoint = checkpoint
        self.hd95 = hd95
        self.et_min_voxels = et_min_voxels
        self.soft_dice = soft_dice
        self.space = SubsetSpace(modalities or getattr(network, "modalities", BRATS_MODALITIES))
        self.publish_dir = publish_dir
        self.rows: list[dict] = []
        self.paths: dict[str, str] = {}

    def run(self) -> dict[str, str]:
        from tqdm import tqdm

        if self.checkpoint:
            missing = (
                f"model weights not found: {self.checkpoint}. Train with `python -m monai.bundle run "
                "training --config_file bundle/configs/train.yaml` (writes bundle/models/model.pt) or pass "
                "the path of your weights."
            )
            load_weights(self.network, self.checkpoint, self.device, missing=missing)
        self.network.to(self.device).eval()
        if len(self.dataset) == 0:
            raise ValueError("the evaluation dataset is empty (check the datalist's section)")
        self.rows = []
        t0 = time.time()
        for i in tqdm(range(len(self.dataset)), desc="evaluating 15 subsets", unit="case"):
            item = self.dataset[i]
            if isinstance(item, list):
                item = item[0]
            image, label = item["image"], item["label"]
            case = item.get("case") or _case_name(image, i)
            spacing = _spacing(label) or _spacing(image)
            streams = predict_streams(self.network, image[None], self.inferer, self.device)
            back = _resampler(image, label)
            metrics = case_subset_metrics(
                streams, label, self.space, spacing, self.hd95, self.et_min_voxels, self.soft_dice, back
            )
            for row in metrics:
                self.rows.append({"case": case, **row})
        self.paths = write_reports(self.rows, self.space, self.output_dir)
        if self.publish_dir:
            import shutil

            os.makedirs(self.publish_dir, exist_ok=True)
            dst = os.path.join(self.publish_dir, "subset_summary.csv")
            shutil.copyfile(self.paths["summary"], dst)
            self.paths["published_summary"] = dst
        logger.info("evaluated %d case(s) in %.1f s; table: %s", len(self.dataset), time.time() - t0,
                    self.paths["markdown"])  # fmt: skip
        print(Path(self.paths["markdown"]).read_text())
        return self.paths


def _resampler(image, label):
    """``None`` when image and label share a grid; else a function bringing (3, ...) probabilities from
    the image's grid (the network's voxel size) onto the label's (the case's own), linearly, as the
    clinician path does (``Invertd`` of the preprocessing)."""
    from monai.data import MetaTensor
    from monai.transforms import ResampleToMatch

    if not (isinstance(image, MetaTensor) and isinstance(label, MetaTensor)):
        return None
    same = tuple(image.shape[1:]) == tuple(label.shape[1:]) and np.allclose(
        np.asarray(image.affine, dtype=float), np.asarray(label.affine, dtype=float), atol=1e-4
    )
    if same:
        return None
    resample = ResampleToMatch(mode="bilinear", padding_mode="zeros", align_corners=False)
    dst = MetaTensor(torch.zeros((1, *label.shape[1:])), affine=label.affine)

    def back(prob: torch.Tensor) -> torch.Tensor:
        src = MetaTensor(prob.reshape((-1, *prob.shape[-3:])).float(), affine=image.affine)
        return resample(src, dst).as_tensor()

    return back


def _case_name(image, index: int) -> str:
    meta = getattr(image, "meta", {}) or {}
    name = meta.get("filename_or_obj")
    if isinstance(name, list | tuple):
        name = name[0]
    return Path(str(name)).parent.name if name else f"case{index:03d}"


def _spacing(image) -> list[float] | None:
    affine = getattr(image, "affine", None)
    if affine is None:
        return None
    a = np.asarray(affine, dtype=float)
    return [float(np.linalg.norm(a[:3, i])) for i in range(3)]


def evaluate_cli(
    model: str = "bundle/models/model.pt",
    datalist: str | None = None,
    dataset_dir: str | None = None,
    section: str = "testing",
    output_dir: str = "eval",
    width: float | None = None,
    roi: int | None = None,
    device: str = "auto",
    hd95: bool = True,
    et_min_voxels: int | None = None,
    soft_dice: bool = False,
    max_cases: int | None = None,
) -> dict[str, str]:
    """Evaluate a trained model on all 15 modality subsets and write CSV / Markdown / PNG reports.

    Args:
        model: weights (state_dict).
        datalist: datalist JSON (from ``gmd-monai prepare-datalist``); or give ``dataset_dir``.
        dataset_dir: BraTS folder; all its cases are evaluated when no datalist is given.
        section: datalist section to evaluate (``testing``, ``validation``, ``training``).
        output_dir: report folder.
        width: network width (default: the checkpoint's).
        roi: sliding-window ROI edge (voxels, multiple of 16; default: the model's training crop).
        device: ``auto``, ``cpu`` or ``cuda[:N]``.
        hd95: compute HD95.
        et_min_voxels: ET post-processing rule threshold (e.g. 500); reported as a separate column.
        soft_dice: also report the authors' soft centre-crop Dice.
        max_cases: evaluate only the first N cases.
    """
    from monai.data import Dataset
    from monai.inferers import SlidingWindowInferer

    from gmd_monai.data.brats import build_datalist, val_transforms
    from gmd_monai.inference.model import model_config
    from gmd_monai.networks import DynamicSharingUNet

    if datalist:
        p = Path(datalist)
        if not p.is_file():
            raise FileNotFoundError(f"datalist not found: {p}")
        items = json.loads(p.read_text()).get(section)
        if not items:
            raise ValueError(f"{p}: section {section!r} is missing or empty")
    elif dataset_dir:
        dl = build_datalist(dataset_dir, val_fraction=0.0, test_fraction=0.0)
        items = dl["training"]
    else:
        raise ValueError("give --datalist or --dataset_dir")
    if max_cases:
        items = items[: int(max_cases)]
    dev = resolve_device(device)
    grid = model_config(model)  # the grid the model was trained at, recorded with its weights
    net = DynamicSharingUNet(width=grid["width"] if width is None else width)
    roi = grid["roi_size"] if roi is None else parse_roi_size(roi, multiple_of=16, name="--roi")
    transform = val_transforms(False, pixdim=grid["pixdim"], axcodes=grid["axcodes"], resample_label=False)
    ds = Dataset(items, transform=transform)
    runner = SubsetEvaluation(net, ds, SlidingWindowInferer(roi_size=roi, overlap=0.5, sw_batch_size=1),
                              output_dir, dev, checkpoint=model, hd95=hd95, et_min_voxels=et_min_voxels,
                              soft_dice=soft_dice)  # fmt: skip
    return runner.run()
