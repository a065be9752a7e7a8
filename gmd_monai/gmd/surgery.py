"""Autograd plumbing of gradient surgery: per-objective gradients, Gram matrix, merge into ``.grad``.

Plain PyTorch (no MONAI). The rule that turns a Gram matrix into weights lives in
:mod:`gmd_monai.gmd.projection` (GMD) or in :mod:`torchjd` (other aggregators); this module only
computes gradients and writes the merged one.

Merge convention (GMD; Wang et al., AAAI 2024): with effective weights ``w`` (``merged = sum_j w_j g_j``):

* shared parameters (touched by every objective) get ``sum_j w_j g_j`` with ``w`` in the MEAN
  convention (``sum(w) == 1`` when nothing conflicts);
* non-shared parameters (e.g. the GroupNorm affine of one modality, touched only by the subsets
  that contain it) get the same combination (``nonshared_reduction="mean"``, the default, which is
  what the authors' published 4-GPU run effectively did) or ``T`` times it (``"sum"``, their
  single-process code).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

__all__ = [
    "SurgeryDiagnostics",
    "objective_gradients",
    "gram_from_gradients",
    "write_merged_gradient",
    "weighted_backward",
    "reduce_gradients",
    "diagnostics_from_gram",
]


ReduceFn = Callable[[torch.Tensor], torch.Tensor]
"""A reduction of a (T, P) gradient matrix, e.g. an all-reduce mean across distributed ranks."""


@dataclass
class SurgeryDiagnostics:
    """What one aggregation step did, for logging.

    Attributes:
        names: objective names (e.g. subset names), length T.
        losses: (T,) loss values.
        weights: (T,) effective weights on shared parameters: ``merged = sum_j weights[j] g_j``.
        grad_norms: (T,) norms of the original per-objective gradients (nan when not computed).
        cosine: (T, T) cosine similarities of the original gradients (nan when not computed).
        num_conflicts: number of pairs ``i < j`` with ``<g_i, g_j> < 0`` (-1 when not computed).
        num_projections: number of projections actually applied (GMD only; 0 otherwise).
        method: aggregator name.
    """

    names: list[str]
    losses: torch.Tensor
    weights: torch.Tensor
    grad_norms: torch.Tensor
    cosine: torch.Tensor
    num_conflicts: int
    num_projections: int = 0
    method: str = "gmd"
    extra: dict[str, float] = field(default_factory=dict)

    def scalars(self, prefix: str = "") -> dict[str, float]:
        """Flat ``{tag: value}`` for TensorBoard/loggers, one tag per objective, labelled by name."""
        out: dict[str, float] = {
            f"{prefix}num_conflicting_pairs": float(self.num_conflicts),
            f"{prefix}num_projections": float(self.num_projections),
        }
        for k, name in enumerate(self.names):
            out[f"{prefix}weight/{name}"] = float(self.weights[k])
            out[f"{prefix}loss/{name}"] = float(self.losses[k])
            out[f"{prefix}grad_norm/{name}"] = float(self.grad_norms[k])
        for key, val in self.extra.items():
            out[f"{prefix}{key}"] = float(val)
        return out


def objective_gradients(
    losses: Sequence[torch.Tensor],
    params: Sequence[torch.Tensor],
    retain_graph: bool = True,
) -> torch.Tensor:
    """Flattened per-objective gradients, shape (T, P), zeros where an objective does not reach a parameter.

    One ``torch.autograd.grad`` per objective. When the model keeps each modality stream as a separate
    graph, the backward of a subset objective only runs through the streams of that subset.

    Args:
        losses: T scalar losses sharing one graph.
        params: the parameters to differentiate (P elements in total).
        retain_graph: keep the graph after the last objective (needed for a later backward).
    """
    numel = sum(p.numel() for p in params)
    device = params[0].device
    jac = torch.zeros(len(losses), numel, device=device, dtype=torch.float32)
    for i, loss in enumerate(losses):
        last = i == len(losses) - 1
        grads = torch.autograd.grad(
            loss, params, retain_graph=retain_graph or not last, allow_unused=True, materialize_grads=False
        )
        offset = 0
        row = jac[i]
        for p, g in zip(params, grads):
            n = p.numel()
            if g is not None:
                row[offset : offset + n].copy_(g.reshape(-1))
            offset += n
    return jac


def gram_from_gradients(jac: torch.Tensor) -> torch.Tensor:
    """Gram matrix ``J J^T`` in float64 (T, T)."""
    return (jac @ jac.T).to(torch.float64)


def diagnostics_from_gram(gram: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Norms, cosine matrix and number of conflicting pairs from a Gram matrix."""
    g = gram.detach().to("cpu", torch.float64)
    norms = torch.sqrt(torch.clamp(torch.diagonal(g), min=0.0))
    denom = torch.outer(norms, norms)
    cosine = torch.where(denom > 0, g / torch.where(denom > 0, denom, torch.ones_like(denom)), 0.0)
    num_conflicts = int((torch.triu(g, diagonal=1) < 0).sum().item())
    return norms, cosine, num_conflicts


def _scale_vector(params: Sequence[torch.Tensor], shared: Sequence[bool] | None, nonshared_factor: float):
    """Per-element factor: 1 on shared parameters, ``nonshared_factor`` on the others (or None)."""
    if shared is None or nonshared_factor == 1.0 or all(shared):
        return None
    parts = [
        torch.full((p.numel(),), 1.0 if s else nonshared_factor, device=p.device)
        for p, s in zip(params, shared)
    ]
    return torch.cat(parts)


def write_merged_gradient(
    jac: torch.Tensor,
    weights: torch.Tensor,
    params: Sequence[torch.Tensor],
    shared: Sequence[bool] | None = None,
    nonshared_factor: float = 1.0,
) -> None:
    """Accumulate ``merged = weights @ jac`` into ``p.grad`` (non-shared ones times ``nonshared_factor``)."""
    merged = weights.to(jac.device, jac.dtype) @ jac
    scale = _scale_vector(params, shared, nonshared_factor)
    if scale is not None:
        merged = merged * scale
    _unflatten_into_grads(merged, params, accumulate=True)


def _unflatten_into_grads(flat: torch.Tensor, params: Sequence[torch.Tensor], accumulate: bool) -> None:
    """Split a flat (P,) vector over ``params``; add it to ``p.grad`` or overwrite ``p.grad`` with it."""
    offset = 0
    for p in params:
        n = p.numel()
        g = flat[offset : offset + n].view_as(p).to(p.dtype)
        if p.grad is None:
            p.grad = g.clone()
        elif accumulate:
            p.grad.add_(g)
        else:
            p.grad.copy_(g)
        offset += n


def weighted_backward(
    losses: Sequence[torch.Tensor],
    weights: torch.Tensor,
    params: Sequence[torch.Tensor],
    shared: Sequence[bool] | None = None,
    nonshared_factor: float = 1.0,
    retain_graph: bool = False,
) -> None:
    """One backward of ``sum_j w_j L_j`` (exactly ``sum_j w_j g_j``), accumulated into ``p.grad``."""
    w = weights.to(losses[0].device, losses[0].dtype)
    total = (torch.stack(list(losses)) * w).sum()
    grads = torch.autograd.grad(total, params, retain_graph=retain_graph, allow_unused=True)
    for p, g, s in zip(params, grads, shared if shared is not None else [True] * len(params)):
        if g is None:
            continue
        if not s and nonshared_factor != 1.0:
            g = g * nonshared_factor
        if p.grad is None:
            p.grad = g.detach().clone()
        else:
            p.grad.add_(g.detach())


def reduce_gradients(params: Sequence[torch.Tensor], reduce_fn: ReduceFn) -> None:
    """Apply ``reduce_fn`` to the flattened ``.grad`` of ``params`` as a (1, P) matrix, in place.

    For aggregators whose update is linear in the per-objective gradients (mean, dropout, or the
    final ``sum_j w_j L_j`` backward of fast GMD once the weights agree across ranks), reducing the
    merged gradient equals reducing the (T, P) matrix first, at 1/T of the communication.

    Args:
        params: parameters whose ``.grad`` (``None`` = zeros) is reduced.
        reduce_fn: e.g. an all-reduce mean across ranks (:func:`gmd_monai.distributed.make_reduce_fn`).
    """
    params = list(params)
    flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in params])
    _unflatten_into_grads(reduce_fn(flat.unsqueeze(0)).reshape(-1), params, accumulate=False)
