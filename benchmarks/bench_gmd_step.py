#!/usr/bin/env python
"""Cost of one training step: exact GMD vs the naive reference, fast GMD and exact GMD vs a plain step.

Same DS U-Net, batch, crop and GMD permutations for every method; every step computes the update
(``.grad``) from one fresh forward, without the optimizer step (so the parameters stay fixed):

``plain``     mean of the 15 subset losses, streams folded into the batch, one backward;
``fast``      fast GMD (APPROXIMATE): PCGrad weights from the output conv's per-objective gradients,
              one backward of ``sum_j w_j L_j`` (folded streams);
``exact``     our exact GMD (``--strategy``: per-objective ``autograd.grad``, or stream by stream,
              optionally batched), streams as separate graphs, projection on the Gram matrix;
``naive``     the authors' design (``naive_gmd.py``): list of streams, one ``backward(retain_graph)``
              per objective, flattened copies, pairwise vector projections, vector merge.

Optional (``--methods``), for the record of what was tried:

``exact_folded``  exact GMD with the streams folded into the batch (every per-objective backward then
                  runs over all 4 streams: 60 stream-backwards instead of 32, but batch 4 per conv);
``autogram``      torchjd's ``autogram.Engine`` Gramian + our PCGrad weights + one backward of
                  ``sum_j w_j L_j``. It can only hook the convolutions (the DS U-Net's per-modality
                  GroupNorm affine parameters are used without calling their modules), so its Gram
                  matrix misses those parameters: NOT exact, a lower bound on the cost of an exact
                  autogram path.

Times are medians over ``--repeats`` rounds after ``--warmup`` rounds; in each round every method runs
once (the order rotates) and the ratios are computed round by round. The merged gradients of exact
and naive GMD are compared on the same permutations (max |diff| / max |naive|). Peak memory of one
step is measured per method in a fresh process (CPU: resident set with glibc's mmap threshold
lowered so freed tensors are returned; CUDA: ``torch.cuda.max_memory_allocated``).

``--onednn-conv`` applies :func:`gmd_monai.gmd.fast.enable_onednn_conv3d` to the model (all methods):
oneDNN instead of PyTorch's slow CPU kernel for the batch-1 convolutions of the coarse levels.

Prints ``key=value`` lines: ``exact_vs_naive``, ``exact_vs_plain``, ``fast_vs_plain``,
``max_rel_grad_diff``, ``peak_mem_ratio`` (exact / naive), step times and peak memory per method.

Usage::

    python benchmarks/bench_gmd_step.py                        # CPU, 1x4x64^3, width 0.5
    python benchmarks/bench_gmd_step.py --crop 32 --repeats 3  # quicker
    python benchmarks/bench_gmd_step.py --device cuda --amp --channels-last --crop 128
"""

from __future__ import annotations

import argparse
import statistics
import sys
from contextlib import nullcontext

import torch
from common import (
    add_device_args,
    autocast_factory,
    emit,
    median_ratio,
    paired_rounds,
    peak_memory_mb,
    reset_peak_memory,
    run_probe,
    setup_device,
)
from naive_gmd import naive_gmd_step

from gmd_monai.gmd import STRATEGIES, make_aggregator, pcgrad_coefficients
from gmd_monai.gmd.fast import enable_onednn_conv3d
from gmd_monai.gmd.projection import random_permutations
from gmd_monai.losses import SubsetLoss
from gmd_monai.networks import DynamicSharingUNet

METHODS = ("plain", "fast", "exact", "naive")
OPTIONAL = ("exact_folded", "autogram")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_device_args(p)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--crop", type=int, default=64, help="cubic crop size (multiple of 16)")
    p.add_argument("--width", type=float, default=0.5, help="DS U-Net width (0.5 = the paper's)")
    p.add_argument("--repeats", type=int, default=5, help="timed rounds (median reported)")
    p.add_argument("--warmup", type=int, default=1, help="untimed rounds first")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--strategy", default="objective", choices=STRATEGIES, help="exact GMD's gradient path")
    p.add_argument("--max-batch", type=int, default=None, help="stream_batched: cotangents per VJP")
    p.add_argument("--proxy", type=int, default=2, help="fast GMD: number of last parameter tensors")
    p.add_argument("--methods", default=",".join(METHODS), help=f"subset of {','.join(METHODS + OPTIONAL)}")
    p.add_argument(
        "--onednn-conv",
        action="store_true",
        help="enable_onednn_conv3d on the (shared) model: oneDNN for batch-1 convs on CPU",
    )
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory probes")
    p.add_argument("--memory-probe", choices=METHODS + OPTIONAL, help=argparse.SUPPRESS)
    return p.parse_args(argv)


class Setup:
    """The model, one batch, the loss and one step function per method."""

    def __init__(self, args: argparse.Namespace):
        self.device = setup_device(args)
        self.autocast = autocast_factory(self.device, args.amp)
        torch.manual_seed(args.seed)
        self.net = DynamicSharingUNet(width=args.width).to(self.device)
        if args.onednn_conv:
            enable_onednn_conv3d(self.net)
        s, b = args.crop, args.batch
        self.x = torch.randn(b, 4, s, s, s, device=self.device)
        # a blob-like target: thresholded smooth noise, about a third foreground per region
        noise = torch.nn.functional.avg_pool3d(torch.randn(b, 3, s, s, s, device=self.device), 5, 1, 2)
        self.y = (noise > 0.1).float()
        if args.channels_last:
            self.net = self.net.to(memory_format=torch.channels_last_3d)
            self.x = self.x.contiguous(memory_format=torch.channels_last_3d)
        self.crit = SubsetLoss(self.net.modalities)
        self.params = list(self.net.parameters())
        shared = self.net.shared_mask()
        kw = {"names": self.crit.names, "shared": shared, "seed": args.seed}
        self.plain = make_aggregator("mean", self.params, **kw)
        self.fast = make_aggregator("fast_gmd", self.params, proxy=args.proxy, **kw)
        self.exact = make_aggregator(
            "gmd", self.params, strategy=args.strategy, max_batch=args.max_batch, **kw
        )
        self.naive_generator = torch.Generator().manual_seed(args.seed)  # same draws as exact GMD's
        self.strategy = args.strategy

    def zero(self) -> None:
        self.net.zero_grad(set_to_none=True)

    def _losses(self, fold: bool):
        with self.autocast():
            streams = self.net.forward_streams(self.x, fold=fold)
            losses = self.crit(streams, self.y)
        return [loss.float() for loss in losses], list(streams.values())

    def step_plain(self):
        self.zero()
        losses, _ = self._losses(fold=True)
        return self.plain.backward(losses)

    def step_fast(self):
        self.zero()
        losses, _ = self._losses(fold=True)
        return self.fast.backward(losses)

    def step_exact(self):
        self.zero()
        losses, streams = self._losses(fold=False)
        return self.exact.backward(losses, streams=streams if self.strategy != "objective" else None)

    def step_exact_folded(self):
        self.zero()
        losses, _ = self._losses(fold=True)
        return self.exact.backward(losses)

    def step_autogram(self):
        from torchjd.autogram import Engine

        if not hasattr(self, "_autogram"):  # a copy: the engine's hooks would disturb the other methods
            import copy

            net = copy.deepcopy(self.net)
            convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv3d)]
            self._autogram = (net, Engine(*convs, batch_dim=None))
        net, engine = self._autogram
        net.zero_grad(set_to_none=True)
        with self.autocast():
            losses = torch.stack(self.crit(net.forward_streams(self.x, fold=False), self.y)).float()
        gram = engine.compute_gramian(losses)
        weights, _ = self.exact.weights_from_gram(gram.to(torch.float64))
        losses.backward(weights.to(losses.dtype))

    def step_naive(self, permutations: torch.Tensor | None = None):
        self.zero()
        if permutations is None:
            permutations = random_permutations(15, self.naive_generator)
        return naive_gmd_step(self.net, self.x, self.y, self.crit.loss, permutations, autocast=self.autocast)

    def flat_grad(self) -> torch.Tensor:
        return torch.cat([p.grad.reshape(-1).float() for p in self.params])

    def steps(self) -> dict:
        return {
            "plain": self.step_plain,
            "fast": self.step_fast,
            "exact": self.step_exact,
            "naive": self.step_naive,
            "exact_folded": self.step_exact_folded,
            "autogram": self.step_autogram,
        }


def memory_probe(args: argparse.Namespace) -> None:
    """Child process: peak memory of ONE step of one method (baseline: model, batch and imports)."""
    setup = Setup(args)
    step = setup.steps()[args.memory_probe]
    base = reset_peak_memory(setup.device)
    step()
    emit("peak_mem_mb", peak_memory_mb(setup.device) - base)


def compare_gradients(setup: Setup) -> tuple[float, float, int]:
    """Exact vs naive merged gradient on the same permutations: (max rel diff, rel L2 diff, conflicts)."""
    diag = setup.step_exact()
    ours = setup.flat_grad().clone()
    perms = random_permutations(15, setup.naive_generator)  # the twin generator: same draw
    assert torch.equal(perms, setup.exact.last_permutations)
    setup.step_naive(perms)
    ref = setup.flat_grad()
    max_rel = float((ours - ref).abs().max() / ref.abs().max().clamp_min(1e-30))
    l2_rel = float((ours - ref).norm() / ref.norm().clamp_min(1e-30))
    return max_rel, l2_rel, diag.num_conflicts


def compare_amp(setup: Setup, autocast=None) -> tuple[float, float]:
    """Exact GMD under AMP vs float32, same batch and permutations: (cosine, max rel diff)."""
    autocast = autocast or setup.autocast
    kw = {"names": setup.crit.names, "shared": setup.net.shared_mask(), "seed": 1234}
    grads = []
    for ctx in (nullcontext, autocast):
        agg = make_aggregator("gmd", setup.params, **kw)  # a fresh generator: the same permutations
        setup.zero()
        with ctx():
            losses = setup.crit(setup.net.forward_streams(setup.x, fold=False), setup.y)
        agg.backward([loss.float() for loss in losses])
        grads.append(setup.flat_grad().clone().double())
    ref, amp = grads
    cos = float(torch.dot(ref, amp) / (ref.norm() * amp.norm()).clamp_min(1e-300))
    return cos, float((amp - ref).abs().max() / ref.abs().max().clamp_min(1e-300))


def weighting_costs(setup: Setup, repeats: int = 50) -> tuple[float, float]:
    """Milliseconds to turn the 15x15 Gram matrix into weights: ours vs torchjd's PCGradWeighting."""
    import time

    from torchjd.aggregation import PCGradWeighting

    jac = torch.randn(15, 1000, dtype=torch.float64)
    gram = jac @ jac.T
    perms = random_permutations(15, torch.Generator().manual_seed(0))
    tj = PCGradWeighting()

    def clock(fn):
        fn()
        t0 = time.perf_counter()
        for _ in range(repeats):
            fn()
        return (time.perf_counter() - t0) / repeats * 1e3

    return clock(lambda: pcgrad_coefficients(gram, perms).sum(0)), clock(lambda: tj(gram))


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.memory_probe:
        memory_probe(args)
        return
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    bad = [m for m in methods if m not in METHODS + OPTIONAL]
    if bad:
        raise SystemExit(f"unknown method(s) {bad}; expected a subset of {list(METHODS + OPTIONAL)}")
    setup = Setup(args)
    nparams = sum(p.numel() for p in setup.params)
    emit("device", setup.device)
    emit("threads", torch.get_num_threads())
    emit("input", f"{args.batch}x4x{args.crop}^3")
    emit("width", args.width)
    emit("num_params", nparams)
    emit("amp", int(args.amp and setup.device.type == "cuda"))
    emit("channels_last", int(args.channels_last))
    emit("exact_strategy", args.strategy)
    emit("onednn_conv", int(args.onednn_conv))

    if "exact" in methods and "naive" in methods:
        max_rel, l2_rel, nconf = compare_gradients(setup)
        emit("max_rel_grad_diff", max_rel)
        emit("l2_rel_grad_diff", l2_rel)
        emit("num_conflicting_pairs", nconf)

    if args.amp and setup.device.type == "cuda":  # AMP must stay within its tolerance of float32
        cos, rel = compare_amp(setup)
        emit("amp_vs_fp32_grad_cosine", cos)
        emit("amp_vs_fp32_max_rel_grad_diff", rel)

    steps = setup.steps()
    times = paired_rounds({m: steps[m] for m in methods}, setup.device, args.repeats, args.warmup)
    for m in methods:
        emit(f"step_time_{m}_s", statistics.median(times[m]))
    if "exact" in methods and "naive" in methods:
        emit("exact_vs_naive", median_ratio(times["exact"], times["naive"]))
    if "plain" in methods:
        for m in ("exact", "fast", "naive", *OPTIONAL):
            if m in methods:
                emit(f"{m}_vs_plain", median_ratio(times[m], times["plain"]))
    if "exact" in methods:
        for m in OPTIONAL:
            if m in methods:
                emit(f"{m}_vs_exact", median_ratio(times[m], times["exact"]))

    ours_ms, torchjd_ms = weighting_costs(setup)
    emit("weights_ms_ours_pcgrad", ours_ms)
    emit("weights_ms_torchjd_pcgradweighting", torchjd_ms)

    if not args.no_memory:
        passthrough = [a for a in (argv if argv is not None else sys.argv[1:])]
        peaks = {}
        for m in methods:
            res = run_probe(__file__, [*passthrough, "--memory-probe", m])
            peaks[m] = float(res["peak_mem_mb"])
            emit(f"peak_mem_{m}_mb", peaks[m])
        if "exact" in peaks and "naive" in peaks:
            emit("peak_mem_ratio", peaks["exact"] / peaks["naive"])


if __name__ == "__main__":
    main()
