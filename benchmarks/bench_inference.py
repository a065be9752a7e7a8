"""Seconds per case of `gmd-monai segment` for 1, 2, 3 and 4 modalities on a full 240x240x155 BraTS case.

Only the available modality streams run, so the time should grow with the number of modalities:
the target is ``infer_1_vs_4 <= 0.35`` (one modality costs at most 35% of four).

    .venv/bin/python benchmarks/bench_inference.py [--case Brats18_2013_11_1] [--repeats N] [--device auto]

After ``--warmup`` untimed runs, each subset runs ``--repeats`` times, round-robin over the subsets
(so that changes of machine load affect all alike); the median is reported. Times are of the
whole pipeline (read, check, preprocess, sliding window, invert, write label map and report; the montage
is off unless ``--montage``); ``network_seconds_k`` is the sliding-window part alone. The network runs
at the grid its weights were trained at (the shipped model: 2 mm); without weights a randomly
initialised width-0.5 1 mm network is timed.
Output: ``key=value`` lines. Reads ../shared/data/brats2018 in place; skips when it is absent.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from gmd_monai.inference import load_network, segment
from gmd_monai.inference.model import default_model_path
from gmd_monai.inference.segment import resolve_device

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
BRATS_DIR = SHARED / "data" / "brats2018"
SUBSETS = (("t1ce",), ("t1ce", "flair"), ("t1ce", "t2", "flair"), ("t1", "t1ce", "t2", "flair"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--case", default="Brats18_2013_11_1", help="case folder under ../shared/data/brats2018"
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=None,
        help="timed runs per subset, median reported (default: CPU 1, GPU 3)",
    )
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs (single modality) first")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--model", default=None, help="weights (default: bundle/models/model.pt if present)")
    parser.add_argument("--roi_size", type=int, default=None, help="default: the model's training crop")
    parser.add_argument("--montage", action="store_true", help="also write the PNG montage")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)

    case_dir = BRATS_DIR / args.case
    if not case_dir.is_dir():
        print(f"skipped=1 reason=case {case_dir} not found (../shared/data/brats2018 is absent)")
        return 0
    device = resolve_device(args.device)
    if args.repeats is None:  # a 4-modality case takes minutes on a 2-core CPU
        args.repeats = 3 if torch.device(device).type == "cuda" else 1
    trained = args.model is not None or default_model_path().is_file()
    net_info = load_network(args.model, allow_untrained=not trained, device=device)
    print(f"device={device}")
    print(f"threads={torch.get_num_threads()}")
    print(f"case={args.case}")
    print(f"weights={'trained' if net_info[1].trained else 'untrained-random'} width={net_info[1].width}")
    print(f"roi_size={args.roi_size} repeats={args.repeats} warmup={args.warmup}")
    sys.stdout.flush()

    inputs = {len(s): {m: str(case_dir / f"{args.case}_{m}.nii.gz") for m in s} for s in SUBSETS}
    times: dict[int, list[float]] = {k: [] for k in inputs}
    net_times: dict[int, list[float]] = {k: [] for k in inputs}
    with tempfile.TemporaryDirectory() as tmp:
        # warm-up (one-time costs are shared by all subsets), then round-robin over the subsets, so
        # that a change of machine load hits all of them alike
        for _ in range(args.warmup):
            segment(**inputs[1], output=Path(tmp) / "out", network=net_info, device=device,
                    roi_size=args.roi_size, montage=args.montage, overwrite=True)  # fmt: skip
        for _ in range(args.repeats):
            for k, paths in inputs.items():
                t0 = time.perf_counter()
                res = segment(
                    **paths,
                    output=Path(tmp) / "out",
                    network=net_info,
                    device=device,
                    roi_size=args.roi_size,
                    montage=args.montage,
                    overwrite=True,
                )
                if device.type == "cuda":
                    torch.cuda.synchronize()
                dt = time.perf_counter() - t0
                times[k].append(dt)
                net_times[k].append(res.report["timings_seconds"]["inference"])
    totals = {k: statistics.median(v) for k, v in times.items()}
    network = {k: statistics.median(v) for k, v in net_times.items()}
    for k, paths in inputs.items():
        runs = ",".join(f"{t:.1f}" for t in times[k])
        print(f"infer_seconds_{k}={totals[k]:.2f} network_seconds_{k}={network[k]:.2f} "
              f"subset={'+'.join(paths)} runs={runs}")  # fmt: skip
    print(f"network_1_vs_4={network[1] / network[4]:.3f}")
    print(f"infer_1_vs_4={totals[1] / totals[4]:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
