#!/usr/bin/env python
"""Ship a model trained and evaluated by scripts/train_cpu_model.sh and scripts/evaluate_cpu_model.sh.

Copies the best weights (``model.pt``, ``model_info.json``) and the 15-subset evaluation
(``subset_summary.csv``, ``subset_table.md``) into ``bundle/models/``, draws the learning curve into
``docs/images/``, and writes the measured figures into ``bundle/configs/metadata.json``
(``eval_metrics``). The model card (bundle/docs/README.md) quotes ``bundle/models/subset_table.md``.

    python scripts/ship_cpu_model.py [--run work/cpu_model/gmd] [--train-minutes 74]
    python scripts/ship_cpu_model.py --run work/cpu_model/gmd_stage2 --after work/cpu_model/gmd \
        --train-minutes M

``--after RUN``: the run whose best model this run's ``--init_weights`` started from (a warm restart);
the learning curve then shows both, and ``--train-minutes`` should count both.
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from plot_learning_curve import plot  # noqa: E402

SINGLES = ("t1", "t1ce", "t2", "flair")


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def figures(summary: Path) -> dict:
    """Dice (%) and HD95 (mm): all four modalities, mean of the 15 subsets, mean of the single modalities."""
    rows = _rows(summary)
    subsets = [r for r in rows if r["subset_index"] != ""]
    mean = next(r for r in rows if r["subset"] == "mean")
    full = next(r for r in subsets if all(int(r[m]) for m in SINGLES))
    singles = [r for r in subsets if sum(int(r[m]) for m in SINGLES) == 1]
    out: dict = {}
    for name, sel in (("all_four", [full]), ("mean_15_subsets", None), ("mean_single_modalities", singles)):
        block = {}
        for region in ("wt", "tc", "et"):
            if sel is None:
                d, h = float(mean[f"dice_{region}"]), float(mean.get(f"hd95_{region}") or "nan")
            else:
                d = sum(float(r[f"dice_{region}"]) for r in sel) / len(sel)
                h = sum(float(r.get(f"hd95_{region}") or "nan") for r in sel) / len(sel)
            block[f"dice_{region}"] = round(100 * d, 2)
            block[f"hd95_{region}_mm"] = round(h, 2)
        out[name] = block
    out["num_cases"] = int(float(mean.get("num_cases") or 0))
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--run", type=Path, default=ROOT / "work" / "cpu_model" / "gmd")
    p.add_argument("--train-minutes", type=float, required=True, help="wall-clock minutes of training")
    p.add_argument("--after", type=Path, default=None, help="the run a warm restart started from")
    args = p.parse_args(argv)
    models, eval_dir, dst = args.run / "models", args.run / "eval", ROOT / "bundle" / "models"
    dst.mkdir(parents=True, exist_ok=True)
    for src in (models / "model.pt", models / "model_info.json", eval_dir / "subset_summary.csv",
                eval_dir / "subset_table.md", eval_dir / "per_case.csv"):  # fmt: skip
        shutil.copyfile(src, dst / src.name)
    ckpt = torch.load(dst / "model.pt", map_location="cpu", weights_only=True)
    title = "Shipped CPU model (GMD, 2 mm): validation Dice per modality-subset group"
    curve = ROOT / "docs" / "images" / "learning_curve_cpu_gmd.png"
    before = None
    if args.after is not None:
        first = torch.load(args.after / "models" / "model.pt", map_location="cpu", weights_only=True)
        before = (args.after / "runs" / "val_subset_dice.csv", int(first["best"]["epoch"]))
    png = plot(args.run / "runs" / "val_subset_dice.csv", curve, title, before)
    meta_path = ROOT / "bundle" / "configs" / "metadata.json"
    meta = json.loads(meta_path.read_text())
    meta["eval_metrics"] = {
        "data": "BraTS 2018, 3 validation cases (bundle/configs/splits/shipped_val.txt), which also chose "
        "the checkpoint; hard Dice (%) and HD95 (mm) per case on the original 1 mm grid, all 15 subsets",
        **figures(dst / "subset_summary.csv"),
        "best_epoch": ckpt["best"]["epoch"] + (before[1] if before else 0),
        "training_wall_clock_minutes_2_cpu_cores": round(args.train_minutes, 1),
    }
    meta_path.write_text(json.dumps(meta, indent=4, ensure_ascii=False) + "\n")
    print(json.dumps(meta["eval_metrics"], indent=2))
    print(f"learning curve: {png}")
    print((dst / "subset_table.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
