#!/usr/bin/env python
"""Learning curve of a training run: validation Dice per subset group (all four modalities, the triples,
the pairs, the single modalities) over epochs, one panel per region (WT, TC, ET).

Reads the run's ``val_subset_dice.csv`` (written by the bundle's SubsetDiceHandler); a resumed run's
segments are drawn as one curve and the resumes marked. A warm restart (a run started with
``--init_weights`` from an earlier run's best model) is drawn after that run's epochs up to the epoch its
weights came from (``--before CSV:EPOCH``), with the restart marked. Writes a PNG.

    python scripts/plot_learning_curve.py work/cpu_model/gmd/runs/val_subset_dice.csv docs/learning_curve.png
    python scripts/plot_learning_curve.py work/cpu_model/gmd_stage2/runs/val_subset_dice.csv out.png \
        --before work/cpu_model/gmd/runs/val_subset_dice.csv:100
"""

from __future__ import annotations

import argparse
import csv
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

REGIONS = ("wt", "tc", "et")
GROUPS = {4: "all four", 3: "triples (mean of 4)", 2: "pairs (mean of 6)", 1: "single modalities (mean of 4)"}


def read_curve(path: Path) -> tuple[dict[int, dict[int, list[float]]], list[int]]:
    """``{group size: {epoch: [mean WT, TC, ET]}}`` and the epochs where a resumed segment starts."""
    sums: dict[int, dict[int, list[list[float]]]] = defaultdict(lambda: defaultdict(list))
    segment_of: dict[int, int] = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            epoch = int(row["epoch"])
            size = len(row["subset"].split("+"))
            sums[size][epoch].append([float(row[f"dice_{r}"]) for r in REGIONS])
            segment_of[epoch] = int(row.get("segment") or 0)
    curve = {
        size: {
            e: [sum(v[i] for v in vals) / len(vals) for i in range(3)] for e, vals in sorted(by_epoch.items())
        }
        for size, by_epoch in sums.items()
    }
    epochs = sorted(segment_of)
    resumes = [e for a, e in zip(epochs, epochs[1:]) if segment_of[e] != segment_of[a]]
    return curve, resumes


def chain(before: tuple[Path, int], after: Path):
    """The curve of ``before`` up to its epoch ``before[1]``, then ``after``'s epochs shifted past it."""
    (first, last_epoch), (second, resumes) = before, read_curve(after)
    head, head_resumes = read_curve(first)
    curve = {
        size: {e: v for e, v in head.get(size, {}).items() if e <= last_epoch}
        | {e + last_epoch: v for e, v in second.get(size, {}).items()}
        for size in set(head) | set(second)
    }
    marks = (
        [e for e in head_resumes if e <= last_epoch] + [last_epoch + 1] + [e + last_epoch for e in resumes]
    )
    return curve, marks


def plot(csv_path: Path, png: Path, title: str | None = None, before: tuple[Path, int] | None = None) -> Path:
    curve, resumes = chain(before, csv_path) if before else read_curve(csv_path)
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8), sharey=True)
    for i, (ax, region) in enumerate(zip(axes, REGIONS)):
        for size in sorted(curve, reverse=True):
            epochs = list(curve[size])
            ax.plot(epochs, [100 * curve[size][e][i] for e in epochs], marker="o", ms=3, label=GROUPS[size])
        for e in resumes:
            ax.axvline(e - 0.5, color="grey", ls=":", lw=1)
        ax.set_title(region.upper())
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("validation Dice (%)")
    axes[0].set_ylim(0, 100)
    axes[-1].legend(loc="lower right", fontsize=8)
    fig.suptitle(title or f"Validation Dice per modality-subset group ({csv_path.parent.parent.name})")
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return png


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("csv", type=Path, help="the run's val_subset_dice.csv")
    p.add_argument("png", type=Path, help="output PNG")
    p.add_argument("--title", default=None)
    p.add_argument("--before", default=None, help="CSV:EPOCH of the run a warm restart started from")
    args = p.parse_args(argv)
    before = None
    if args.before:
        path, epoch = args.before.rsplit(":", 1)
        before = (Path(path), int(epoch))
    print(plot(args.csv, args.png, args.title, before))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
