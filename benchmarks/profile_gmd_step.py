#!/usr/bin/env python
"""Where one exact GMD step spends its time on small inputs (the demo's 32^3 crops), phase by phase.

Times, as medians over ``--repeats`` steps after a warm-up: the forward of the four modality streams
with the 15 subset losses, the per-objective gradients (one autograd call per objective, or per stream
with ``--strategy stream``/``stream_batched``), the Gram matrix and GMD's weights, writing the merged
gradient into ``.grad``, and the optimizer step; beside them a plain step (forward, mean of the 15
losses, one backward) on the same batch. Prints ``key=value`` lines.

    python benchmarks/profile_gmd_step.py            # the demo's step: 2x4x32^3, width 0.25
    python benchmarks/profile_gmd_step.py --batch 1 --onednn-conv --strategy stream_batched
    python benchmarks/profile_gmd_step.py --strategy stream --workers 2   # two streams at once
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from common import emit

from gmd_monai.gmd import make_aggregator
from gmd_monai.gmd.surgery import gram_from_gradients, write_merged_gradient
from gmd_monai.losses import SubsetLoss, brats_loss
from gmd_monai.networks import DynamicSharingUNet


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--crop", type=int, default=32)
    p.add_argument("--width", type=float, default=0.25)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--strategy", default="objective", choices=["objective", "stream", "stream_batched"])
    p.add_argument("--workers", type=int, default=1, help="stream strategies: streams' VJPs at once")
    p.add_argument("--onednn-conv", action="store_true", help="oneDNN for batch-1 convolutions")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    net = DynamicSharingUNet(width=args.width)
    if args.onednn_conv:
        from gmd_monai.gmd.fast import enable_onednn_conv3d

        net = enable_onednn_conv3d(net)
    crit = SubsetLoss(net.modalities, loss=brats_loss("dice_ce"))
    params = [p for p in net.parameters() if p.requires_grad]
    gmd = make_aggregator("gmd", params, names=crit.names, shared=net.shared_mask(), seed=0,
                          strategy=args.strategy, workers=args.workers)  # fmt: skip
    opt = torch.optim.Adam(params, lr=1e-3)
    x = torch.randn(args.batch, 4, *(args.crop,) * 3)
    y = (torch.rand(args.batch, 3, *(args.crop,) * 3) > 0.8).float()
    per_objective = args.strategy == "objective"

    phases: dict[str, list[float]] = {
        k: [] for k in ("forward", "gradients", "gram_weights", "merge", "optimizer")
    }
    plain: list[float] = []
    for i in range(args.warmup + args.repeats):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        streams = net.forward_streams(x, fold=False)  # per-modality graphs, as the trainer does for GMD
        losses = crit(streams, y)
        t1 = time.perf_counter()
        jac = gmd._jacobian(losses, None if per_objective else list(streams.values()))
        t2 = time.perf_counter()
        gram = gram_from_gradients(jac)
        weights, _ = gmd.weights_from_gram(gram)
        t3 = time.perf_counter()
        write_merged_gradient(jac, weights, gmd.params, gmd.shared, gmd._nonshared_factor(len(losses)))
        t4 = time.perf_counter()
        opt.step()
        t5 = time.perf_counter()

        opt.zero_grad(set_to_none=True)
        streams = net.forward_streams(x, fold=True)
        torch.stack(crit(streams, y)).mean().backward()
        opt.step()
        t6 = time.perf_counter()
        if i >= args.warmup:
            for k, v in zip(phases, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4)):
                phases[k].append(v)
            plain.append(t6 - t5)

    emit("input", f"{args.batch}x4x{args.crop}^3")
    emit("width", args.width)
    emit("threads", torch.get_num_threads())
    emit("strategy", args.strategy)
    emit("workers", args.workers)
    emit("onednn_conv", int(args.onednn_conv))
    emit("num_param_tensors", len(params))
    total = sum(statistics.median(v) for v in phases.values())
    for k, v in phases.items():
        emit(f"{k}_s", round(statistics.median(v), 4))
        emit(f"{k}_fraction", round(statistics.median(v) / total, 3))
    emit("exact_step_s", round(total, 4))
    emit("plain_step_s", round(statistics.median(plain), 4))
    emit("exact_vs_plain", round(total / statistics.median(plain), 2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
