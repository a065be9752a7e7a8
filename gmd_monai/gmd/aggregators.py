"""One interface for every way of turning the subset losses into a parameter update.

Each aggregator is built once with the parameters (and, optionally, which of them are shared by all
objectives) and then called every step with the list of T subset losses; it writes ``p.grad`` and
returns :class:`~gmd_monai.gmd.surgery.SurgeryDiagnostics`. Plain PyTorch: usable from any loop.

=============  =====================================================================================
``gmd``        exact GMD (Wang et al., AAAI 2024): per-objective gradients, seeded PCGrad projection
               (``j == i`` included), mean on shared / mean-or-sum on non-shared parameters.
``fast_gmd``   APPROXIMATE GMD (opt-in): the Gram matrix of a cheap proxy (the per-objective gradients
               of the last parameters only, e.g. the output conv, as in MGDA-UB) gives the PCGrad
               weights; ONE backward of ``sum_j w_j L_j`` applies them to the whole network.
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

import functools
import math
import warnings
from collections.abc import Callable, Sequence

import torch

from ..options import look_up_option
from .fast import STRATEGIES, stream_gradients
from .projection import pcgrad_coefficients, random_permutations
from .surgery import (
    ReduceFn,
    SurgeryDiagnostics,
    diagnostics_from_gram,
    gram_from_gradients,
    objective_gradients,
    reduce_gradients,
    weighted_backward,
    write_merged_gradient,
)

__all__ = [
    "Aggregator",
    "FastGMD",
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
    #: whether the update only approximates the method it is named after (``fast_gmd``).
    approximate = False
    #: how the per-objective gradients are computed (see :data:`gmd_monai.gmd.fast.STRATEGIES`).
    strategy = "objective"
    #: with ``strategy="stream_batched"``: at most this many cotangents per batched VJP (None: all).
    max_batch: int | None = None
    #: with a stream strategy on CPU: threads that run different streams' VJPs at once.
    workers: int = 1

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

    def backward(
        self, losses: Sequence[torch.Tensor], streams: Sequence[torch.Tensor] | None = None
    ) -> SurgeryDiagnostics:  # pragma: no cover
        """Write ``.grad`` from the T losses.

        Args:
            losses: T scalar losses (one per objective), sharing one graph.
            streams: optional per-modality stream outputs the losses were computed from (each its own
                graph); used by the per-stream strategies of the Gram-based aggregators, ignored
                otherwise.
        """
        raise NotImplementedError

    def _set_strategy(self, strategy: str, max_batch: int | None, workers: int = 1) -> None:
        if strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {list(STRATEGIES)}, got {strategy!r}")
        if int(workers) < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        self.strategy = strategy
        self.max_batch = max_batch
        self.workers = int(workers)
        self._warned_no_streams = False

    def _jacobian(self, losses: Sequence[torch.Tensor], streams: Sequence[torch.Tensor] | None):
        """Per-objective gradients (T, P) with the configured strategy (all exact)."""
        if self.strategy != "objective":
            if streams is not None:
                batched = self.strategy == "stream_batched"
                return stream_gradients(losses, streams, self.params, batched, self.max_batch, self.workers)
            if not getattr(self, "_warned_no_streams", False):
                warnings.warn(
                    f"strategy={self.strategy!r} needs the stream outputs (backward(losses, streams=...)); "
                    "using strategy='objective'",
                    stacklevel=3,
                )
                self._warned_no_streams = True
        return objective_gradients(losses, self.params, retain_graph=False)

    def weights_from_gram(self, gram: torch.Tensor) -> tuple[torch.Tensor, int]:  # pragma: no cover
        """Effective weights (mean convention) and the number of projections, from a Gram matrix."""
        raise NotImplementedError

    # shared implementation for all Gram-based aggregators
    def _gram_backward(
        self, losses: Sequence[torch.Tensor], streams: Sequence[torch.Tensor] | None = None
    ) -> SurgeryDiagnostics:
        self._check_losses(losses)
        t = len(losses)
        names = self._names(t)
        jac = self._jacobian(losses, streams)
        if self.reduce_fn is not None:
            jac = self.reduce_fn(jac)
        gram = gram_from_gradients(jac)
        weights, nproj = self.weights_from_gram(gram)
        write_merged_gradient(jac, weights, self.params, self.shared, self._nonshared_factor(t))
        return self._gram_diagnostics(names, losses, gram, weights, nproj)

    def _gram_diagnostics(self, names, losses, gram, weights, nproj, extra=None) -> SurgeryDiagnostics:
        """Diagnostics of a Gram-based step: norms, cosines and conflicts read off ``gram``."""
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
            extra=extra or {},
        )


class GMD(Aggregator):
    """Exact Gradient-Guided Modality Decoupling (PCGrad over the subset objectives).

    Args:
        params, names, shared, nonshared_reduction, reduce_fn: see :class:`Aggregator`.
        seed: seed of the permutation generator (the authors' code used unseeded ``random``).
        strategy: how the exact per-objective gradients are computed (same result to float32
            round-off, see :mod:`gmd_monai.gmd.fast`): ``"objective"`` (default: one
            ``autograd.grad`` per objective), ``"stream"`` (stream by stream, one VJP per
            (objective, stream) pair) or ``"stream_batched"`` (one batched VJP per stream). The
            stream strategies need ``backward(losses, streams=...)``; without streams they fall back
            to ``"objective"`` with a warning.
        max_batch: with ``"stream_batched"``, at most this many cotangents per batched VJP.
        workers: with a stream strategy on CPU, how many streams' VJPs run at once, in threads
            (same result, bitwise; see :func:`gmd_monai.gmd.fast.stream_gradients`).

    The effective weights ``w`` returned in the diagnostics satisfy ``merged = sum_j w_j g_j``
    exactly on shared parameters; with no conflicting pair ``w_j = 1/T`` (plain mean of losses).
    """

    name = "gmd"
    per_objective_gradients = True

    def __init__(self, params, names=None, shared=None, nonshared_reduction="mean", reduce_fn=None, seed=0,
                 strategy: str = "objective", max_batch: int | None = None, workers: int = 1):  # fmt: skip
        super().__init__(params, names, shared, nonshared_reduction, reduce_fn)
        self.generator = torch.Generator().manual_seed(int(seed))
        self.last_permutations: torch.Tensor | None = None
        self._set_strategy(strategy, max_batch, workers)

    def weights_from_gram(self, gram, permutations: torch.Tensor | None = None):
        t = gram.shape[0]
        perms = permutations if permutations is not None else random_permutations(t, self.generator)
        self.last_permutations = perms
        coeffs = pcgrad_coefficients(gram, perms)
        nproj = int((coeffs - torch.eye(t, dtype=coeffs.dtype)).ne(0).sum().item())
        return coeffs.sum(0) / t, nproj

    def backward(self, losses, streams=None):
        return self._gram_backward(losses, streams)


class FastGMD(GMD):
    """APPROXIMATE GMD (opt-in, ``method: fast_gmd``): PCGrad weights from a cheap proxy Gram matrix.

    The Gram matrix of the per-objective gradients of a few LAST parameters only (the proxy; by
    default the output convolution, in the spirit of MGDA-UB's bound on the shared representation)
    stands in for the full one; the seeded PCGrad rule of :class:`GMD` turns it into weights ``w``
    and ONE backward of ``sum_j w_j L_j`` applies them to the whole network. Cost: a plain
    mean-of-losses step plus T backwards through the loss head and the proxy layers. The update is
    NOT the exact GMD update: it is exact GMD only where the proxy Gram matrix has the same
    conflicts and projections as the full one (``benchmarks/bench_fast_gmd.py`` measures the
    agreement). The diagnostics (norms, cosines, conflicts) are those of the proxy gradients.

    Measured on real BraTS 2018 batches of the DS U-Net after 400 training steps (README,
    Performance): the proxies of the last 2 or 22 parameter tensors found NONE of the conflicting
    pairs that exact GMD found, so the update was the plain mean there. Use ``gmd`` to study GMD.

    Args:
        params, names, shared, nonshared_reduction, reduce_fn, seed: see :class:`GMD`. With
            ``reduce_fn`` (distributed), the proxy gradients are reduced before the projection and the
            merged gradient after the backward.
        proxy: the proxy parameters: an int ``k`` for the last ``k`` tensors of ``params`` (default
            2: the output conv's weight and bias of :class:`~gmd_monai.networks.DynamicSharingUNet`),
            or a sequence of indices into ``params``.
    """

    name = "fast_gmd"
    per_objective_gradients = False  # the model may fold its streams: one backward for the update
    approximate = True

    def __init__(self, params, names=None, shared=None, nonshared_reduction="mean", reduce_fn=None, seed=0,
                 proxy: int | Sequence[int] = 2):  # fmt: skip
        super().__init__(params, names, shared, nonshared_reduction, reduce_fn, seed=seed)
        n = len(self.params)
        if isinstance(proxy, int):
            if not 1 <= proxy <= n:
                raise ValueError(f"proxy must select 1..{n} parameter tensors, got {proxy}")
            idx = list(range(n - proxy, n))
        else:
            idx = sorted({int(i) % n for i in proxy})
            if not idx:
                raise ValueError("proxy selects no parameter")
        self.proxy_index = idx
        self.proxy_params = [self.params[i] for i in idx]

    def backward(self, losses, streams=None):
        self._check_losses(losses)
        t = len(losses)
        proxy_jac = objective_gradients(losses, self.proxy_params, retain_graph=True)
        if self.reduce_fn is not None:
            proxy_jac = self.reduce_fn(proxy_jac)
        gram = gram_from_gradients(proxy_jac)
        weights, nproj = self.weights_from_gram(gram)
        weighted_backward(losses, weights, self.params, self.shared, self._nonshared_factor(t))
        if self.reduce_fn is not None:
            reduce_gradients(self.params, self.reduce_fn)
        extra = {"approximate": 1.0, "proxy_numel": float(proxy_jac.shape[1])}
        return self._gram_diagnostics(self._names(t), losses, gram, weights, nproj, extra)


class TorchJDWeighting(Aggregator):
    """Any Gramian weighting of torchjd, rescaled to the mean convention (see module docstring).

    Args:
        method: one of :data:`TORCHJD_WEIGHTINGS` (or a torchjd ``*Weighting`` class name).
        weighting_kwargs: extra constructor arguments for the torchjd weighting.
        strategy, max_batch, workers: how the per-objective gradients are computed, as for
            :class:`GMD`.
    """

    per_objective_gradients = True

    def __init__(self, params, method: str, names=None, shared=None, nonshared_reduction="mean",
                 reduce_fn=None, weighting_kwargs: dict | None = None, strategy: str = "objective",
                 max_batch: int | None = None, workers: int = 1):  # fmt: skip
        super().__init__(params, names, shared, nonshared_reduction, reduce_fn)
        self._set_strategy(strategy, max_batch, workers)
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

    def backward(self, losses, streams=None):
        return self._gram_backward(losses, streams)


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

    def backward(self, losses, streams=None):
        if self.compute_diagnostics:
            return self._gram_backward(losses, streams)
        self._check_losses(losses)
        t = len(losses)
        weights = torch.full((t,), 1.0 / t, dtype=torch.float64)
        weighted_backward(losses, weights, self.params, self.shared, self._nonshared_factor(t))
        if self.reduce_fn is not None:  # the mean is linear: reducing the merged gradient is exact
            reduce_gradients(self.params, self.reduce_fn)
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


def _dropping(*keys: str) -> Callable[[Callable[..., Aggregator]], Callable[..., Aggregator]]:
    """Wrap an aggregator factory so that it ignores keyword arguments the aggregator does not take."""

    def wrap(make: Callable[..., Aggregator]) -> Callable[..., Aggregator]:
        def factory(params, **kwargs):
            return make(params, **{k: v for k, v in kwargs.items() if k not in keys})

        return factory

    return wrap


#: ``method`` name -> ``factory(params, **kwargs)``: exact and fast GMD, the baselines, then every
#: torchjd weighting of :data:`TORCHJD_WEIGHTINGS`
AGGREGATORS: dict[str, Callable[..., Aggregator]] = {
    "gmd": GMD,
    "fast_gmd": FastGMD,
    "mean": _dropping("seed")(MeanLoss),
    "dropout": _dropping("seed", "names")(ModalityDropout),
    **{
        name: _dropping("seed")(functools.partial(TorchJDWeighting, method=name))
        for name in TORCHJD_WEIGHTINGS
    },
}


def available_methods() -> list[str]:
    """Names accepted by :func:`make_aggregator`."""
    return list(AGGREGATORS)


def make_aggregator(method: str, params: Sequence[torch.Tensor], **kwargs) -> Aggregator:
    """Build an aggregator by name (``gmd``, ``fast_gmd``, ``mean``, ``dropout`` or a torchjd weighting).

    Args:
        method: see :func:`available_methods` (case, ``-`` and spaces do not matter).
        params: parameters to update.
        kwargs: forwarded to the aggregator (``names``, ``shared``, ``nonshared_reduction``,
            ``reduce_fn``, ``seed``, ``strategy`` and ``workers`` for gmd, ``proxy`` for fast_gmd,
            ``weighting_kwargs`` for torchjd, ...).

    Raises:
        ValueError: an unknown method, naming the closest valid one.
    """
    return AGGREGATORS[look_up_option(method, AGGREGATORS, "aggregation method")](params, **kwargs)
