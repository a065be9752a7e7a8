"""One interface for every way of turning the subset losses into a parameter update.

Each aggregator is built once with the parameters (and, optionally, which of them are shared by all
objectives) and then called every step with the list of T subset losses; it writes ``p.grad`` and
returns :class:`~gmd_monai.gmd.surgery.SurgeryDiagnostics`. Plain PyTorch: usable from any loop.

=============  =====================================================================================
``gmd``        exact GMD (REFERENCE section 2): per-objective gradients, seeded PCGrad projection
               (``j == i`` included), mean on shared / mean-or-sum on non-shared parameters.
``mean``       plain mean of the subset losses (one backward, no surgery).
``dropout``    random modality dropout baseline: the trainer draws one non-empty subset per sample
               and passes ONE loss; this aggregator just back-propagates it.
``<torchjd>``  any Gramian weighting of :mod:`torchjd.aggregation` by name (``upgrad``, ``mgda``,
               ``imtlg``, ``dualproj``, ``aligned_mtl``, ``pcgrad_torchjd``, ``random``, ...),
               rescaled to the mean convention: weights are divided by the sum of the weights the
               weighting gives to T orthonormal gradients, so non-conflicting objectives are averaged.
=============  =====================================================================================

Example:
    >>> import torch
    >>> net = torch.nn.Linear(3, 2)
    >>> agg = make_aggregator("gmd", list(net.parameters()), names=["a", "b"], seed=0)
    >>> x = torch.randn(8, 3)
    >>> out = net(x)
    >>> diag = agg.backward([out[:, 0].pow(2).mean(), (out[:, 1] - 1).pow(2).mean()])
    >>> net.weight.grad.shape, len(diag.weights)
    (torch.Size([2, 3]), 2)
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from .projection import pcgrad_coefficients, random_permutations
from .surgery import (
    ReduceFn,
    SurgeryDiagnostics,
    diagnostics_from_gram,
    gram_from_gradients,
    objective_gradients,
    weighted_backward,
    write_merged_gradient,
)

__all__ = [
    "Aggregator",
    "GMD",
    "MeanLoss",
    "ModalityDropout",
    "TorchJDWeighting",
    "TORCHJD_WEIGHTINGS",
    "available_methods",
    "make_aggregator",
]

#: Our names for torchjd's Gramian weightings (class name in :mod:`torchjd.aggregation`, kwargs).
TORCHJD_WEIGHTINGS: dict[str, tuple[str, dict]] = {
    "upgrad": ("UPGradWeighting", {}),
    "mgda": ("MGDAWeighting", {}),
    "imtlg": ("IMTLGWeighting", {}),
    "dualproj": ("DualProjWeighting", {}),
    "aligned_mtl": ("AlignedMTLWeighting", {}),
    "pcgrad_torchjd": ("PCGradWeighting", {}),
    "gradvac": ("GradVacWeighting", {}),
    "cagrad": ("CAGradWeighting", {"c": 0.5}),
    "nashmtl": ("NashMTLWeighting", {}),
    "random": ("RandomWeighting", {}),
    "excess_mtl": ("ExcessMTLWeighting", {}),
}


class Aggregator:
    """Base class: ``backward(losses)`` writes ``.grad`` of ``params`` and returns diagnostics.

    Args:
        params: parameters to update (the order defines the flattened gradient layout).
        names: objective names (length T), used to label diagnostics. Defaults to ``obj0..``.
        shared: one bool per parameter: ``True`` if every objective reaches it. ``None`` = all shared.
        nonshared_reduction: ``"mean"`` (default) or ``"sum"`` for non-shared parameters.
        reduce_fn: optional function applied to the (T, P) per-objective gradient matrix before the
            projection, e.g. an all-reduce mean across distributed ranks.
    """

    name = "base"
    #: whether the trainer must form all T subset losses (False for modality dropout).
    needs_all_subsets = True
    #: whether the per-objective gradients are computed (True: the model should keep streams separate).
    per_objective_gradients = False

    def __init__(
        self,
        params: Sequence[torch.Tensor],
        names: Sequence[str] | None = None,
        shared: Sequence[bool] | None = None,
        nonshared_reduction: str = "mean",
        reduce_fn: ReduceFn | None = None,
    ):
        self.params = [p for p in params]
        if not self.params:
            raise ValueError("no parameters given to the aggregator")
        if shared is not None and len(shared) != len(self.params):
            raise ValueError(f"shared has {len(shared)} entries for {len(self.params)} parameters")
        if nonshared_reduction not in ("mean", "sum"):
            raise ValueError(f"nonshared_reduction must be 'mean' or 'sum', got {nonshared_reduction!r}")
        self.names = list(names) if names is not None else None
        self.shared = list(shared) if shared is not None else None
        self.nonshared_reduction = nonshared_reduction
        self.reduce_fn = reduce_fn

    def _names(self, t: int) -> list[str]:
        if self.names is None:
            return [f"obj{k}" for k in range(t)]
        if len(self.names) != t:
            raise ValueError(f"got {t} losses for {len(self.names)} objective names {self.names}")
        return self.names

    def _nonshared_factor(self, t: int) -> float:
        return float(t) if self.nonshared_reduction == "sum" else 1.0

    @staticmethod
    def _check_losses(losses: Sequence[torch.Tensor]) -> None:
        if len(losses) == 0:
            raise ValueError("no loss given")
        for k, loss in enumerate(losses):
            if loss.dim() != 0:
                raise ValueError(f"loss {k} must be a scalar, got shape {tuple(loss.shape)}")
        values = torch.stack([loss.detach().float() for loss in losses])
        if not torch.isfinite(values).all():
            bad = [k for k in range(len(losses)) if not torch.isfinite(values[k])]
            raise FloatingPointError(f"non-finite loss for objective(s) {bad}: {values.tolist()}")

    def backward(self, losses: Sequence[torch.Tensor]) -> SurgeryDiagnostics:  # pragma: no cover
        raise NotImplementedError

    def weights_from_gram(self, gram: torch.Tensor) -> tuple[torch.Tensor, int]:  # pragma: no cover
        """Effective weights (mean convention) and the number of projections, from a Gram matrix."""
        raise NotImplementedError

    # shared implementation for all Gram-based aggregators
    def _gram_backward(self, losses: Sequence[torch.Tensor]) -> SurgeryDiagnostics:
        self._check_losses(losses)
        t = len(losses)
        names = self._names(t)
        jac = objective_gradients(losses, self.params, retain_graph=False)
        if self.reduce_fn is not None:
            jac = self.reduce_fn(jac)
        gram = gram_from_gradients(jac)
        weights, nproj = self.weights_from_gram(gram)
        write_merged_gradient(jac, weights, self.params, self.shared, self._nonshared_factor(t))
        norms, cosine, nconf = diagnostics_from_gram(gram)
        return SurgeryDiagnostics(
            names=names,
            losses=torch.stack([loss.detach().float().cpu() for loss in losses]),
            weights=weights.float().cpu(),
            grad_norms=norms.float(),
            cosine=cosine.float(),
            num_conflicts=nconf,
            num_projections=nproj,
            method=self.name,
        )


class GMD(Aggregator):
    """Exact Gradient-Guided Modality Decoupling (PCGrad over the subset objectives).

    Args:
        params, names, shared, nonshared_reduction, reduce_fn: see :class:`Aggregator`.
        seed: seed of the permutation generator (the authors' code used unseeded ``random``).

    The effective weights ``w`` returned in the diagnostics satisfy ``merged = sum_j w_j g_j``
    exactly on shared parameters; with no conflicting pair ``w_j = 1/T`` (plain mean of losses).
    """

    name = "gmd"
    per_objective_gradients = True

    def __init__(self, params, names=None, shared=None, nonshared_reduction="mean", reduce_fn=None, seed=0):
        super().__init__(params, names, shared, nonshared_reduction, reduce_fn)
        self.generator = torch.Generator().manual_seed(int(seed))
        self.last_permutations: torch.Tensor | None = None

    def weights_from_gram(self, gram, permutations: torch.Tensor | None = None):
        t = gram.shape[0]
        perms = permutations if permutations is not None else random_permutations(t, self.generator)
        self.last_permutations = perms
        coeffs = pcgrad_coefficients(gram, perms)
        nproj = int((coeffs - torch.eye(t, dtype=coeffs.dtype)).ne(0).sum().item())
        return coeffs.sum(0) / t, nproj

    def backward(self, losses):
        return self._gram_backward(losses)


class TorchJDWeighting(Aggregator):
    """Any Gramian weighting of torchjd, rescaled to the mean convention (see module docstring).

    Args:
        method: one of :data:`TORCHJD_WEIGHTINGS` (or a torchjd ``*Weighting`` class name).
        weighting_kwargs: extra constructor arguments for the torchjd weighting.
    """

    per_objective_gradients = True

    def __init__(self, params, method: str, names=None, shared=None, nonshared_reduction="mean",
                 reduce_fn=None, weighting_kwargs: dict | None = None):  # fmt: skip
        super().__init__(params, names, shared, nonshared_reduction, reduce_fn)
        import torchjd.aggregation as tja

        cls_name, kwargs = TORCHJD_WEIGHTINGS.get(method, (method, {}))
        cls = getattr(tja, cls_name, None)
        if cls is None:
            raise ValueError(f"unknown aggregation method {method!r}; expected one of {available_methods()}")
        try:
            self.weighting = cls(**{**kwargs, **(weighting_kwargs or {})})
            self.weighting(torch.eye(2))  # fail now (missing optional solver) rather than mid-training
        except ImportError as e:
            raise ImportError(f"aggregation method {method!r} needs an optional solver: {e}") from e
        self.name = method
        self._scale: dict[int, float] = {}

    def weights_from_gram(self, gram):
        t = gram.shape[0]
        if t not in self._scale:
            self._scale[t] = float(self.weighting(torch.eye(t, dtype=torch.float64)).sum())
        w = self.weighting(gram.to(torch.float64)).to(torch.float64)
        scale = self._scale[t] if math.isfinite(self._scale[t]) and self._scale[t] > 0 else float(t)
        return w / scale, 0

    def backward(self, losses):
        return self._gram_backward(losses)


class MeanLoss(Aggregator):
    """Plain mean of the subset losses: one backward, no surgery (the no-GMD baseline).

    Args:
        compute_diagnostics: also compute the per-objective gradients to log norms, cosines and
            conflicts (costs as much as exact GMD; off by default).
    """

    name = "mean"

    def __init__(self, params, names=None, shared=None, nonshared_reduction="mean", reduce_fn=None,
                 compute_diagnostics: bool = False):  # fmt: skip
        super().__init__(params, names, shared, nonshared_reduction, reduce_fn)
        self.compute_diagnostics = compute_diagnostics
        self.per_objective_gradients = compute_diagnostics

    def weights_from_gram(self, gram):
        t = gram.shape[0]
        return torch.full((t,), 1.0 / t, dtype=torch.float64), 0

    def backward(self, losses):
        if self.compute_diagnostics or self.reduce_fn is not None:
            return self._gram_backward(losses)
        self._check_losses(losses)
        t = len(losses)
        weights = torch.full((t,), 1.0 / t, dtype=torch.float64)
        weighted_backward(losses, weights, self.params, self.shared, self._nonshared_factor(t))
        nan = torch.full((t,), float("nan"))
        return SurgeryDiagnostics(
            names=self._names(t),
            losses=torch.stack([loss.detach().float().cpu() for loss in losses]),
            weights=weights.float(),
            grad_norms=nan,
            cosine=torch.full((t, t), float("nan")),
            num_conflicts=-1,
            method=self.name,
        )


class ModalityDropout(MeanLoss):
    """Random modality dropout baseline: the trainer passes one loss over per-sample random subsets."""

    name = "dropout"
    needs_all_subsets = False

    def __init__(self, params, names=None, shared=None, nonshared_reduction="mean", reduce_fn=None):
        super().__init__(params, names=["dropout"], shared=shared, nonshared_reduction="mean",
                         reduce_fn=reduce_fn)  # fmt: skip


def available_methods() -> list[str]:
    """Names accepted by :func:`make_aggregator`."""
    return ["gmd", "mean", "dropout", *TORCHJD_WEIGHTINGS]


def make_aggregator(method: str, params: Sequence[torch.Tensor], **kwargs) -> Aggregator:
    """Build an aggregator by name (``gmd``, ``mean``, ``dropout`` or a torchjd weighting).

    Args:
        method: see :func:`available_methods`.
        params: parameters to update.
        kwargs: forwarded to the aggregator (``names``, ``shared``, ``nonshared_reduction``,
            ``reduce_fn``, ``seed`` for gmd, ``weighting_kwargs`` for torchjd, ...).
    """
    key = str(method).strip().lower().replace("-", "_")
    if key == "gmd":
        return GMD(params, **kwargs)
    kwargs.pop("seed", None)
    if key == "mean":
        return MeanLoss(params, **kwargs)
    if key == "dropout":
        kwargs.pop("names", None)
        return ModalityDropout(params, **kwargs)
    if key in TORCHJD_WEIGHTINGS:
        return TorchJDWeighting(params, key, **kwargs)
    raise ValueError(f"unknown aggregation method {method!r}; expected one of {available_methods()}")
