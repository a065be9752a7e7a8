#!/usr/bin/env python
"""Real-data evidence on CPU: exact GMD, fast GMD (approximate) and the plain mean, trained alike on
the real BraTS 2018 cases of ``../shared`` and evaluated on all 15 modality subsets.

Every method runs the bundle (``train.yaml`` then ``evaluate.yaml``) with the same split, seed,
initialisation, crops and schedule; only ``method`` differs. The budget is tiny (a few minutes of CPU
per method): the figures compare the methods at equal steps, and say nothing about the paper's
600-epoch recipe. Writes ``methods.csv`` and ``methods.md`` (mean Dice over the 15 subsets, and the
single-modality means) and the per-method evaluation folders under ``--output-dir``; prints
``key=value`` lines (``<method>_dice_wt=`` ..., ``<method>_train_s=``).

Usage::

    python benchmarks/bench_methods_real.py                        # gmd, fast_gmd, mean; 12 epochs
    python benchmarks/bench_methods_real.py --methods gmd,mean --epochs 4
"""

from __future__ import annotations

import argparse
import csv
import logging
import sys
import tempfile
import time
from pathlib import Path

import torch
from common import emit

from gmd_monai.demo import run_bundle

REPO = Path(__file__).resolve().parents[1]
SHARED_BRATS = REPO.parent / "shared" / "data" / "brats2018"
REGIONS = ("wt", "tc", "et")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data-dir", default=str(SHARED_BRATS), help="a BraTS folder (default: ../shared's)")
    p.add_argument("--methods", default="gmd,fast_gmd,mean")
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--roi", type=int, default=64, help="training crop (multiple of 16)")
    p.add_argument("--window", type=int, default=128, help="sliding window of validation and evaluation")
    p.add_argument("--width", type=float, default=0.25)
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--learning-rate", type=float, default=1e-2)
    p.add_argument("--loss", default="dice_ce")
    p.add_argument("--foreground-prob", type=float, default=0.5, help="tumour-centred crop probability")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--output-dir", default=None, help="default: a temporary folder")
    return p.parse_args(argv)


def summary_means(path: Path) -> dict[str, float]:
    """Mean Dice (%) over the 15 subsets and over the 4 single-modality subsets, per region."""
    with open(path, newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["subset_index"] != ""]  # the last row is the mean
    singles = [r for r in rows if sum(int(r[m]) for m in ("t1", "t1ce", "t2", "flair")) == 1]
    out = {}
    for region in REGIONS:
        out[f"dice_{region}"] = 100 * sum(float(r[f"dice_{region}"]) for r in rows) / len(rows)
        out[f"single_dice_{region}"] = 100 * sum(float(r[f"dice_{region}"]) for r in singles) / len(singles)
    return out


def main(argv=None) -> int:
    args = parse_args(argv)
    data_dir = Path(args.data_dir)
    if not data_dir.is_dir():
        print(f"skipped=1 reason={data_dir} not found (../shared/data/brats2018 is absent)")
        return 0
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)
    out = Path(args.output_dir or tempfile.mkdtemp(prefix="bench_methods_real_"))
    configs = [str(REPO / "bundle" / "configs" / "train.yaml")]
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    emit("data", data_dir)
    emit("epochs", args.epochs)
    emit("roi", args.roi)
    emit("window", args.window)
    emit("width", args.width)
    emit("threads", torch.get_num_threads())
    emit("output_dir", out)
    results = []
    for method in methods:
        run_dir = out / method
        common = dict(
            bundle_root=str(REPO / "bundle"),
            dataset_dir=str(data_dir),
            ckpt_dir=str(run_dir / "models"),
            output_dir=str(run_dir / "runs"),
            roi_size=[args.roi] * 3,
            **{"validate#inferer#roi_size": [args.window] * 3},
            width=args.width,
            seed=args.seed,
            num_workers=0,
        )
        print(f"# {method}: training {args.epochs} epochs", file=sys.stderr, flush=True)
        t0 = time.time()
        run_bundle(
            configs,
            "train",
            method=method,
            overwrite=True,  # a rerun replaces the previous one
            max_epochs=args.epochs,
            val_interval=args.epochs,  # one validation, at the end: it selects the saved model
            batch_size=args.batch_size,
            learning_rate=args.learning_rate,
            loss=args.loss,
            foreground_prob=args.foreground_prob,
            **common,
        )
        train_s = time.time() - t0
        print(f"# {method}: evaluating the 15 subsets", file=sys.stderr, flush=True)
        run_bundle(configs + [str(REPO / "bundle" / "configs" / "evaluate.yaml")], "train",
                   eval_dir=str(run_dir / "eval"), checkpoint=str(run_dir / "models" / "model.pt"),
                   hd95=False, **{"evaluate#inferer#roi_size": [args.window] * 3}, **common)  # fmt: skip
        row = {"method": method, "train_s": round(train_s, 1)}
        means = summary_means(run_dir / "eval" / "subset_summary.csv")
        row.update({k: round(v, 2) for k, v in means.items()})
        results.append(row)
        for key, value in row.items():
            if key != "method":
                emit(f"{method}_{key}", value)

    with open(out / "methods.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(results[0]))
        writer.writeheader()
        writer.writerows(results)
    lines = [
        "| method | WT | TC | ET | single-modality WT | TC | ET | training s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        cells = [f"{r[k]:.1f}" for k in ("dice_wt", "dice_tc", "dice_et")]
        cells += [f"{r[f'single_dice_{g}']:.1f}" for g in REGIONS] + [f"{r['train_s']:.0f}"]
        lines.append(f"| `{r['method']}` | " + " | ".join(cells) + " |")
    (out / "methods.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    emit("table", out / "methods.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
