#!/usr/bin/env python
"""How close fast GMD (APPROXIMATE) comes to exact GMD, on real BraTS batches.

For each batch the exact per-objective gradients ``g_i`` (all parameters) are computed once. Exact GMD
projects with the full Gram matrix ``G``; fast GMD with the Gram matrix ``G'`` of the proxy, i.e. of the
same gradients restricted to the last ``k`` parameter tensors (``--proxies``), with the SAME seeded
permutations. The proxy ``repr`` is MGDA-UB's: the gradients with respect to the shared representation,
here the per-modality output logits (no backward through the network at all). ``first<k>`` takes the
FIRST ``k`` parameter tensors instead (not a cheap proxy: their gradients need a full backward; it
shows where the conflicts are). Both merged gradients
are ``sum_j w_j g_j`` (fast GMD applies its weights with one backward of ``sum_j w_j L_j``, which is
that sum exactly). Reported, median over batches:

* ``*_conflict_sign_agreement``: fraction of the 105 objective pairs whose conflict status
  (``G_ij < 0``) is the same under ``G'``; ``*_conflict_jaccard``: |C & C'| / |C | C'| of the conflicting
  pairs (1 when both are empty);
* ``*_cosine``: cosine between the fast and the exact merged gradients;
* ``exact_vs_mean_cosine``: cosine between exact GMD and the plain mean of the gradients, for scale:
  an approximation is only informative where this is clearly below 1.

Batches without any conflicting pair (frequent early in training) agree trivially (both methods are
then the plain mean), so the same figures are also given over the batches where exact GMD found at
least one conflicting pair (``*_on_conflicting``, ``batches_with_conflicts``).

The model is the DS U-Net after ``--train-steps`` plain Adam steps on the same data (gradients at
initialisation are not representative). Data: ``--data-dir`` (default ``../shared/data/brats2018``
when present), else the built-in synthetic dataset.

Usage::

    python benchmarks/bench_fast_gmd.py                  # 10 batches of 1x4x32^3 after 100 steps, width 0.5
    python benchmarks/bench_fast_gmd.py --crop 64 --batches 6 --train-steps 20
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import torch
from common import add_device_args, emit, setup_device

from gmd_monai.gmd import enable_onednn_conv3d, pcgrad_coefficients
from gmd_monai.gmd.projection import random_permutations
from gmd_monai.gmd.surgery import gram_from_gradients, objective_gradients
from gmd_monai.losses import SubsetLoss
from gmd_monai.networks import DynamicSharingUNet

ROOT = Path(__file__).resolve().parents[1]
SHARED_BRATS = ROOT.parent / "shared" / "data" / "brats2018"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_device_args(p)
    p.add_argument("--data-dir", default=None, help="a BraTS folder (default: ../shared/data/brats2018)")
    p.add_argument("--batches", type=int, default=10)
    p.add_argument("--max-cases", type=int, default=6, help="cases loaded (and cached) from the folder")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--crop", type=int, default=32)
    p.add_argument("--width", type=float, default=0.5)
    p.add_argument("--foreground-prob", type=float, default=0.5, help="tumour-centred crop probability")
    p.add_argument("--train-steps", type=int, default=100, help="plain Adam steps before measuring")
    p.add_argument(
        "--proxies",
        default="2,10,12,22,repr",
        help="proxies: last k parameter tensors, first<k>, or repr (see above)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--onednn-conv",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="enable_onednn_conv3d (a CPU speed-up; same gradients to float32 round-off)",
    )
    return p.parse_args(argv)


def batches(args: argparse.Namespace, device: torch.device):
    """Endless (image, label) batches: random crops (``train_transforms``) of real or synthetic cases."""
    from monai.data import CacheDataset

    from gmd_monai.data.brats import scan_brats_folder, train_transforms

    data_dir = Path(args.data_dir) if args.data_dir else SHARED_BRATS
    if not data_dir.is_dir():
        from gmd_monai.data.synthetic import ensure_synthetic_brats

        data_dir = Path(ensure_synthetic_brats(Path(tempfile.gettempdir()) / "gmd_bench_synthetic", 8))
        emit("data", "synthetic")
    else:
        emit("data", data_dir)
    items = scan_brats_folder(data_dir)[: args.max_cases]
    emit("num_cases", len(items))
    transform = train_transforms(roi_size=args.crop, foreground_prob=args.foreground_prob)
    transform.set_random_state(seed=args.seed)
    dataset = CacheDataset(items, transform, cache_rate=1.0, num_workers=0, progress=False)
    rng = torch.Generator().manual_seed(args.seed)
    while True:
        samples = [dataset[int(k)] for k in torch.randint(len(dataset), (args.batch,), generator=rng)]
        x = torch.stack([torch.as_tensor(s["image"]).float() for s in samples])
        y = torch.stack([torch.as_tensor(s["label"]).float() for s in samples])
        yield x.to(device), y.to(device)


def proxy_columns(proxy: str, sizes: list[int]) -> slice:
    """Columns of the (T, P) gradient matrix of the last ``k`` (or ``first<k>``) parameter tensors."""
    if proxy.startswith("first"):
        return slice(0, sum(sizes[: int(proxy[5:])]))
    return slice(sum(sizes) - sum(sizes[-int(proxy) :]), sum(sizes))


def representation_gradients(losses, outputs) -> torch.Tensor:
    """(T, N): each loss's gradient with respect to the stream outputs (zero where a stream is unused)."""
    rows = []
    for loss in losses:
        grads = torch.autograd.grad(loss, outputs, retain_graph=True, allow_unused=True)
        rows.append(
            torch.cat([(torch.zeros_like(o) if g is None else g).reshape(-1) for g, o in zip(grads, outputs)])
        )
    return torch.stack(rows)


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    return float(torch.dot(a, b) / (a.norm() * b.norm()).clamp_min(1e-300))


def main(argv=None) -> None:
    args = parse_args(argv)
    device = setup_device(args)
    torch.manual_seed(args.seed)
    net = DynamicSharingUNet(width=args.width).to(device)
    if args.onednn_conv:
        enable_onednn_conv3d(net)
    crit = SubsetLoss(net.modalities)
    params = list(net.parameters())
    sizes = [p.numel() for p in params]
    proxies = [k.strip() for k in args.proxies.split(",") if k.strip()]
    for k in proxies:
        if k != "repr" and not k.removeprefix("first").isdigit():
            raise SystemExit(f"--proxies: {k!r} is not a number of parameter tensors, first<k> or 'repr'")
    emit("input", f"{args.batch}x4x{args.crop}^3")
    emit("width", args.width)
    emit("train_steps", args.train_steps)
    data = batches(args, device)

    opt = torch.optim.Adam(params, lr=8e-4, weight_decay=1e-5)
    for _ in range(args.train_steps):
        x, y = next(data)
        opt.zero_grad(set_to_none=True)
        torch.stack(crit(net.forward_streams(x), y)).mean().backward()
        opt.step()

    perm_gen = torch.Generator().manual_seed(args.seed)
    rows: list[dict[str, float]] = []  # one per batch
    for _ in range(args.batches):
        x, y = next(data)
        streams = net.forward_streams(x, fold=False)
        losses = crit(streams, y)
        rep = representation_gradients(losses, list(streams.values())) if "repr" in proxies else None
        jac = objective_gradients(losses, params, retain_graph=False)
        t = jac.shape[0]
        perms = random_permutations(t, perm_gen)
        gram = gram_from_gradients(jac)
        w_exact = pcgrad_coefficients(gram, perms).sum(0) / t
        exact = w_exact.float() @ jac
        conflicts = torch.triu(gram < 0, diagonal=1)
        upper = torch.triu(torch.ones(t, t, dtype=torch.bool), diagonal=1)
        row = {
            "num_conflicting_pairs": float(conflicts.sum()),
            "exact_vs_mean_cosine": cosine(exact, jac.mean(0)),
        }
        for k in proxies:
            proxy_gram = gram_from_gradients(rep if k == "repr" else jac[:, proxy_columns(k, sizes)])
            w_fast = pcgrad_coefficients(proxy_gram, perms).sum(0) / t
            proxy_conf = torch.triu(proxy_gram < 0, diagonal=1)
            union, both = int((conflicts | proxy_conf).sum()), int((conflicts & proxy_conf).sum())
            row[f"proxy{k}_num_conflicting_pairs"] = float(proxy_conf.sum())
            row[f"proxy{k}_conflict_sign_agreement"] = float((conflicts == proxy_conf)[upper].float().mean())
            row[f"proxy{k}_conflict_jaccard"] = 1.0 if union == 0 else both / union
            row[f"proxy{k}_cosine"] = cosine(w_fast.float() @ jac, exact)
            row[f"proxy{k}_weight_max_abs_diff"] = float((w_fast - w_exact).abs().max())
        rows.append(row)

    conflicting = [r for r in rows if r["num_conflicting_pairs"] > 0]
    for k in proxies:
        emit(
            f"proxy{k}_numel",
            rep.shape[1] if k == "repr" else len(range(jac.shape[1])[proxy_columns(k, sizes)]),
        )
    emit("batches", len(rows))
    emit("batches_with_conflicts", len(conflicting))
    for key in rows[0]:
        emit(key, statistics.median(r[key] for r in rows))
    for key in rows[0] if conflicting else []:
        emit(f"{key}_on_conflicting", statistics.median(r[key] for r in conflicting))
    default = f"proxy{proxies[0]}"
    emit("fast_gmd_proxy", proxies[0])
    for name in ("cosine", "conflict_sign_agreement", "conflict_jaccard"):
        key = f"{default}_{name}"
        emit(f"fast_gmd_{name}", statistics.median(r[key] for r in rows))
        if conflicting:
            emit(f"fast_gmd_{name}_on_conflicting", statistics.median(r[key] for r in conflicting))
    emit("fast_gmd_cosine_min", min(r[f"{default}_cosine"] for r in rows))


if __name__ == "__main__":
    main()
