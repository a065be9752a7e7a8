#!/usr/bin/env python
"""Data pipeline: the fraction of a training iteration spent waiting for data, after the first epoch.

Builds the training part of the bundle exactly as ``bundle/configs/train.yaml`` does (MONAI
``CacheDataset`` over ``gmd_monai.data.brats.train_transforms``, the DataLoader with its workers, the
DS U-Net, the subset loss, the aggregator and the optimizer of ``SubsetTrainer``), with the training
handlers (validation, logging) removed, and times every iteration of the real trainer:

* wait: from ``GET_BATCH_STARTED`` to ``GET_BATCH_COMPLETED`` (the main process blocked on the loader);
* iteration: from ``GET_BATCH_STARTED`` to ``ITERATION_COMPLETED`` (wait + the training step).

``data_wait_fraction`` = total wait / total iteration time over epochs 2.. (epoch 1 fills the cache
and starts the workers). Default: the config's defaults, i.e. the built-in synthetic dataset
(32^3 crops, batch 2, method gmd); ``--dataset-dir`` for real data (e.g. ``../shared/data/brats2018``,
with ``--roi`` and ``--batch-size`` to keep CPU runs short).

Usage::

    python benchmarks/bench_data.py                   # default config, 3 epochs
    python benchmarks/bench_data.py --dataset-dir ../shared/data/brats2018 --roi 64 --batch-size 1
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from common import add_device_args, emit
from ignite.engine import Events

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "bundle" / "configs" / "train.yaml"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--epochs", type=int, default=3, help="epochs (the first is not counted)")
    p.add_argument("--dataset-dir", default=None, help="a BraTS folder (default: the synthetic dataset)")
    p.add_argument("--roi", type=int, default=None, help="crop size (default: the config's)")
    p.add_argument("--batch-size", type=int, default=None, help="default: the config's")
    p.add_argument("--num-workers", type=int, default=None, help="default: the config's")
    p.add_argument("--method", default=None, help="aggregation method (default: the config's)")
    p.add_argument("--persistent-workers", action="store_true", help="persistent loader workers")
    add_device_args(p)  # --amp: the config's bf16 autocast (CUDA); --channels-last: not used here
    p.add_argument("--bundle-root", default=None, help="where data and outputs go (default: a temp dir)")
    return p.parse_args(argv)


def build_trainer(args: argparse.Namespace):
    """The config, with its training handlers removed and the command-line overrides."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    # without --dataset_dir: the built-in synthetic dataset and its tiny recipe (configs/synthetic.yaml)
    parser.read_config([str(CONFIG)] + ([] if args.dataset_dir else [str(CONFIG.parent / "synthetic.yaml")]))
    bundle_root = args.bundle_root or str(Path(tempfile.gettempdir()) / "gmd_bench_data_bundle")
    parser["bundle_root"] = bundle_root
    parser["device"] = f"$torch.device('{args.device}')"
    parser["max_epochs"] = args.epochs
    parser["train#handlers"] = []
    if args.dataset_dir:
        parser["dataset_dir"] = str(Path(args.dataset_dir).resolve())
    if args.roi:
        parser["roi_size"] = [args.roi] * 3
    if args.batch_size:
        parser["batch_size"] = args.batch_size
    if args.num_workers is not None:
        parser["num_workers"] = args.num_workers
    if args.method:
        parser["method"] = args.method
    if args.amp:
        parser["amp"] = True
    if args.persistent_workers:
        parser["train#dataloader#persistent_workers"] = True
    parser.parse()
    from monai.utils import set_determinism

    set_determinism(seed=parser.get_parsed_content("seed"))  # what the config's `initialize` does first
    return parser


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    parser = build_trainer(args)
    trainer = parser.get_parsed_content("train#trainer")
    loader = parser.get_parsed_content("train#dataloader")
    emit("config", CONFIG.relative_to(ROOT))
    emit("data", args.dataset_dir or "synthetic")
    emit("roi", parser.get_parsed_content("roi_size"))
    emit("batch_size", parser.get_parsed_content("batch_size"))
    emit("num_workers", loader.num_workers)
    emit("persistent_workers", int(loader.persistent_workers))
    emit("method", parser.get_parsed_content("method"))
    emit("threads", torch.get_num_threads())
    emit("iterations_per_epoch", len(loader))

    marks: dict[str, float] = {}
    per_epoch: dict[int, list[tuple[float, float]]] = {}

    @trainer.on(Events.GET_BATCH_STARTED)
    def _start(engine):
        marks["start"] = time.perf_counter()

    @trainer.on(Events.GET_BATCH_COMPLETED)
    def _got(engine):
        marks["got"] = time.perf_counter()

    @trainer.on(Events.ITERATION_COMPLETED)
    def _done(engine):
        wait, total = marks["got"] - marks["start"], time.perf_counter() - marks["start"]
        per_epoch.setdefault(engine.state.epoch, []).append((wait, total))

    trainer.run()
    for epoch, rows in sorted(per_epoch.items()):
        wait = sum(r[0] for r in rows)
        total = sum(r[1] for r in rows)
        emit(f"epoch{epoch}_wait_s", wait)
        emit(f"epoch{epoch}_iteration_s", total)
    later = [r for epoch, rows in per_epoch.items() if epoch > 1 for r in rows]
    if not later:
        raise SystemExit("need --epochs >= 2 (the first epoch is not counted)")
    wait = sum(r[0] for r in later)
    total = sum(r[1] for r in later)
    emit("mean_iteration_s", total / len(later))
    emit("mean_wait_s", wait / len(later))
    emit("data_wait_fraction", wait / total)


if __name__ == "__main__":
    main()
