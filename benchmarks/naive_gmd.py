"""NAIVE reference GMD step, written the way the authors' code works (the baseline of the benchmarks).

Deliberately independent of :mod:`gmd_monai.gmd`: it only uses the model's per-modality streams and a
base loss. The steps follow the authors' design (their PCGrad code is the ``Pytorch-PCGrad`` one):

1. forward: a Python list of modality streams, one graph each (``model.run_streams`` per modality);
   the output of subset C is the mean of its streams' logits, one loss per subset;
2. for every objective: ``zero_grad``, ``loss.backward(retain_graph=True)``, then a flattened copy of
   every ``.grad`` (zeros where ``None``) plus a flattened "has gradient" mask;
3. pairwise vector projections: for objective i, a copy of ``g_i``, projected off every ``g_j``
   (``j == i`` included) it conflicts with, in the order of a permutation;
4. vector merge: mean over objectives on shared coordinates (those with a gradient for every
   objective, read from the masks as in their code), mean (default) or sum on the others; the merged
   vector is unflattened into ``.grad``.

Every step costs one stream forward per modality and one stream backward per (objective, member
stream) pair, plus 2T flattened copies of all gradients and T^2 vector dot products.

Used by ``bench_gmd_step.py`` and by ``tests/test_perf_equivalence.py`` (imported by file path).

Example:
    >>> import torch
    >>> from gmd_monai.losses import brats_loss
    >>> from gmd_monai.networks import DynamicSharingUNet
    >>> net = DynamicSharingUNet(width=0.25)
    >>> x, y = torch.randn(1, 4, 16, 16, 16), (torch.rand(1, 3, 16, 16, 16) > 0.5).float()
    >>> perms = torch.stack([torch.randperm(15) for _ in range(15)])
    >>> merged = naive_gmd_step(net, x, y, brats_loss(), perms)  # also written into .grad
    >>> merged.shape
    torch.Size([813915])
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

import torch
from torch import nn

__all__ = ["naive_subsets", "naive_gmd_step", "pcgrad_vectors"]


def naive_subsets(num_modalities: int) -> list[tuple[int, ...]]:
    """All non-empty subsets, full set first, then by decreasing size (itertools.combinations order)."""
    out: list[tuple[int, ...]] = []
    for size in range(num_modalities, 0, -1):
        out.extend(itertools.combinations(range(num_modalities), size))
    return out


def pcgrad_vectors(
    grads: Sequence[torch.Tensor],
    has_grads: Sequence[torch.Tensor],
    permutations: torch.Tensor,
    nonshared_reduction: str = "mean",
) -> torch.Tensor:
    """The authors' projection and merge on flattened vectors.

    Args:
        grads: T flattened per-objective gradients (zeros where an objective has no gradient).
        has_grads: T flattened masks (1 where the objective reached the parameter).
        permutations: (T, T); row i is the order in which g_i is compared with every g_j (j == i too).
        nonshared_reduction: ``"mean"`` or ``"sum"`` on the coordinates not reached by every objective.
    """
    shared = torch.stack(list(has_grads)).prod(0).bool()
    pc_grads = [g.clone() for g in grads]
    for i, g_i in enumerate(pc_grads):
        for j in permutations[i].tolist():
            g_j = grads[j]
            g_i_g_j = torch.dot(g_i, g_j)
            if g_i_g_j < 0:
                g_i -= g_i_g_j * g_j / (g_j.norm() ** 2)
    merged = torch.zeros_like(grads[0])
    merged[shared] = torch.stack([g[shared] for g in pc_grads]).mean(dim=0)
    if nonshared_reduction == "sum":
        merged[~shared] = torch.stack([g[~shared] for g in pc_grads]).sum(dim=0)
    else:
        merged[~shared] = torch.stack([g[~shared] for g in pc_grads]).mean(dim=0)
    return merged


def naive_gmd_step(
    model: nn.Module,
    image: torch.Tensor,
    target: torch.Tensor,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    permutations: torch.Tensor,
    nonshared_reduction: str = "mean",
    autocast: Callable | None = None,
) -> torch.Tensor:
    """One naive GMD step on a DS model: writes the merged gradient into ``.grad`` and returns it flat.

    Args:
        model: a :class:`~gmd_monai.networks.DynamicSharingUNet` (anything with ``run_streams(x, m)``
            and ``modalities``).
        image: (B, M, ...) input with every modality.
        target: (B, K, ...) target.
        loss_fn: base loss of one subset's fused logits (e.g. the BraTS Dice loss).
        permutations: (T, T) projection orders, T = 2^M - 1 (same as the exact GMD's).
        nonshared_reduction: ``"mean"`` (default) or ``"sum"`` (their single-process code).
        autocast: optional context-manager factory wrapped around the forward (AMP benchmarks).
    """
    params = [p for p in model.parameters() if p.requires_grad]
    num_mod = len(model.modalities)
    ctx = autocast() if autocast is not None else torch.enable_grad()
    with ctx:
        streams = [model.run_streams(image[:, m : m + 1], m) for m in range(num_mod)]
        losses = []
        for subset in naive_subsets(num_mod):
            fused = sum(streams[m] for m in subset) / len(subset)
            losses.append(loss_fn(fused, target.float()).mean())
    grads, has_grads = [], []
    for loss in losses:
        for p in params:
            p.grad = None
        loss.float().backward(retain_graph=True)
        grads.append(
            torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).flatten() for p in params])
        )
        has_grads.append(
            torch.cat(
                [
                    (torch.ones_like(p) if p.grad is not None else torch.zeros_like(p)).flatten()
                    for p in params
                ]
            )
        )
    merged = pcgrad_vectors(grads, has_grads, permutations, nonshared_reduction)
    offset = 0
    for p in params:
        n = p.numel()
        p.grad = merged[offset : offset + n].view_as(p).clone()
        offset += n
    return merged
