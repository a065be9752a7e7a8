"""Exact per-objective gradients organised by modality stream (plain PyTorch, no MONAI import).

A subset objective ``L_C`` depends on the parameters only through the stream outputs ``h_m`` of its
modalities ``m in C``, and each stream is its own graph (``forward_streams(..., fold=False)``). By the
chain rule and the linearity of back-propagation in the output cotangent,

    g_C = dL_C/dtheta = sum_{m in C} VJP_m(dL_C/dh_m)

where ``VJP_m(c)`` back-propagates the cotangent ``c`` through stream ``m`` only. So the (T, P) matrix
of per-objective gradients can be computed stream by stream:

1. the cotangents ``dL_C/dh_m`` for every (objective, stream) pair: T cheap backwards through the
   loss head only (they stop at the stream outputs);
2. for each stream, the VJPs of its cotangents (8 per stream for the 15 BraTS subsets): one after
   the other (``batched=False``), or all at once as one batched VJP (``batched=True``,
   ``torch.autograd.grad(..., is_grads_batched=True)``, i.e. vmap over the cotangents), which runs
   each layer's backward once on a batch of cotangents instead of once per cotangent.

Both do the same 32 stream-backwards as one ``autograd.grad`` per objective
(:func:`gmd_monai.gmd.surgery.objective_gradients`): the arithmetic floor for exact per-objective
gradients. The results agree to float32 round-off (the sums over streams are taken in a different
order). Each stream's graph is freed after its last VJP. On CPU neither is faster than one
``autograd.grad`` per objective (``benchmarks/bench_gmd_step.py --strategy``): PyTorch's vmap has no
fast batching rule for the GroupNorm backward and falls back to loops and copies.

CPU threads: the streams' graphs are disjoint, so their VJPs can run concurrently
(``workers=2``): each stream's VJPs run in a worker thread that uses ``intra-op threads / workers``
threads, into that stream's own rows, summed afterwards in stream order. The result is bitwise the
one of ``workers=1``. On small inputs a convolution's backward does not keep two cores busy, and two
single-threaded streams at once do (``benchmarks/profile_gmd_step.py --workers``).

CPU kernels: a single stream (batch 1) of a 3-D convolution on a small volume
(``N*C*D*H <= 20480``) makes PyTorch leave oneDNN for its slow reference kernel (``slow_conv3d``),
several times slower, above all in the backward. Per-stream gradients hit exactly that case on the
coarse levels of the U-Net (``bench_gmd_step.py --onednn-conv`` measures the effect on a GMD step).
:func:`enable_onednn_conv3d` routes those convolutions (forward and backward) through oneDNN:
same results to float32 round-off, used by every method alike (it is a model speed-up, not a GMD one).

Example:
    >>> import torch
    >>> w = torch.nn.Parameter(torch.tensor([1.0, 2.0]))
    >>> x = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    >>> h = [x[0] * w, x[1] * w]                    # two "streams"
    >>> losses = [(h[0] + h[1]).sum() / 2, h[0].sum(), h[1].sum()]
    >>> stream_gradients(losses, h, [w])
    tensor([[0.5000, 0.5000],
            [1.0000, 0.0000],
            [0.0000, 1.0000]])
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import torch
from torch import nn

__all__ = ["STRATEGIES", "stream_cotangents", "stream_gradients", "enable_onednn_conv3d", "OneDNNConv3d"]

#: How exact GMD computes the per-objective gradients (see :class:`gmd_monai.gmd.aggregators.GMD`).
STRATEGIES: tuple[str, ...] = ("objective", "stream", "stream_batched")


def stream_cotangents(
    losses: Sequence[torch.Tensor], streams: Sequence[torch.Tensor]
) -> list[list[torch.Tensor | None]]:
    """``cot[i][m] = dL_i / dh_m`` (``None`` where objective ``i`` does not use stream ``m``).

    Only the loss head (subset means and losses) is back-propagated: the graphs of the streams are
    neither run nor freed.

    Args:
        losses: T scalar losses.
        streams: the M stream outputs the losses were computed from (tensors that require grad).
    """
    streams = list(streams)
    out: list[list[torch.Tensor | None]] = []
    for loss in losses:
        grads = torch.autograd.grad(loss, streams, retain_graph=True, allow_unused=True)
        out.append(list(grads))
    return out


def stream_gradients(
    losses: Sequence[torch.Tensor],
    streams: Sequence[torch.Tensor],
    params: Sequence[torch.Tensor],
    batched: bool = False,
    max_batch: int | None = None,
    workers: int = 1,
) -> torch.Tensor:
    """Flattened per-objective gradients (T, P), computed stream by stream (see the module docstring).

    Same result as :func:`gmd_monai.gmd.surgery.objective_gradients` (to float32 round-off) when
    every stream is its own graph; frees the stream graphs.

    Args:
        losses: T scalar losses computed from ``streams``.
        streams: M stream outputs whose graphs are disjoint except for the parameters
            (``forward_streams(x, fold=False)``). Slices of one folded batch also give the exact
            result, but every VJP then runs over all the folded streams.
        params: parameters to differentiate (P elements in total).
        batched: one batched VJP per stream (vmap over its cotangents) instead of one VJP each.
        max_batch: with ``batched``, at most this many cotangents per batched VJP (bounds memory).
        workers: CPU threads that run different streams' VJPs at once, each with
            ``torch.get_num_threads() // workers`` intra-op threads (1: one stream after the other).
            Same result, bitwise; needs disjoint stream graphs (``fold=False``) and costs one extra
            float32 row of P per (objective, stream) pair (32 rows for the 15 BraTS subsets).
            Ignored off CPU.
    """
    params = list(params)
    streams = list(streams)
    if not streams:
        raise ValueError("stream_gradients needs the stream outputs")
    if int(workers) < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    cot = stream_cotangents(losses, streams)
    numel = sum(p.numel() for p in params)
    device = params[0].device
    jac = torch.zeros(len(losses), numel, device=device, dtype=torch.float32)
    offsets = [0]
    for p in params:
        offsets.append(offsets[-1] + p.numel())
    rows = [[i for i in range(len(losses)) if cot[i][m] is not None] for m in range(len(streams))]
    workers = min(int(workers), len(streams)) if device.type == "cpu" else 1
    if workers == 1:
        for m, h in enumerate(streams):
            _stream_vjps(h, [cot[i][m] for i in rows[m]], rows[m], params, offsets, jac, batched, max_batch)
        return jac

    intra_op = torch.get_num_threads()

    def one_stream(m: int) -> torch.Tensor:
        # the intra-op thread count is per thread (OpenMP); a new thread starts from the global one
        torch.set_num_threads(max(1, intra_op // workers))
        own = torch.zeros(len(rows[m]), numel, device=device, dtype=torch.float32)
        local = list(range(len(rows[m])))
        _stream_vjps(
            streams[m], [cot[i][m] for i in rows[m]], local, params, offsets, own, batched, max_batch
        )
        return own

    try:
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="gmd-stream") as pool:
            parts = list(pool.map(one_stream, range(len(streams))))
    finally:
        torch.set_num_threads(intra_op)  # the workers' setting also reaches the global default
    for m, own in enumerate(parts):  # stream order: the sums of workers=1, bitwise
        if rows[m]:
            jac[rows[m]] += own
    return jac


def _stream_vjps(h, cotangents, rows, params, offsets, jac, batched, max_batch) -> None:
    """Back-propagate each of ``cotangents`` through the stream output ``h`` (its graph is freed
    after the last one) and add the parameter gradients to the matching ``rows`` of ``jac``."""
    if not rows:
        return
    step = (len(rows) if not max_batch else max(1, int(max_batch))) if batched else 1
    for start in range(0, len(rows), step):
        chunk, cots = rows[start : start + step], cotangents[start : start + step]
        keep = start + step < len(rows)
        if batched:
            grads = torch.autograd.grad(
                h, params, torch.stack(cots), retain_graph=keep, allow_unused=True, is_grads_batched=True
            )
        else:
            grads = torch.autograd.grad(h, params, cots[0], retain_graph=keep, allow_unused=True)
        idx = torch.tensor(chunk, device=jac.device)
        for k, g in enumerate(grads):
            if g is None:
                continue
            block = g.reshape(len(chunk), -1).to(jac.dtype)
            view = jac[:, offsets[k] : offsets[k + 1]]
            if len(chunk) == 1:
                view[chunk[0]].add_(block[0])
            else:
                view.index_add_(0, idx, block)


# ----------------------------------------------------------------------------------------------
# CPU: oneDNN for the batch-1 3-D convolutions that PyTorch sends to its slow reference kernel
# ----------------------------------------------------------------------------------------------

_ONES3 = [1, 1, 1]
#: PyTorch's own threshold (``ConvParams::use_mkldnn``): a batch-1 input with ``N*C*D*H`` at most this
#: many elements goes to the slow reference kernel (``slow_conv3d``) instead of oneDNN.
_SLOW_PATH_MAX = 20480


class _OneDNNConv3dFunction(torch.autograd.Function):
    """Stride-1, undilated, ungrouped 3-D convolution whose forward AND backward run on oneDNN.

    ``grad_input`` is the convolution of ``grad_output`` with the flipped, transposed kernel;
    ``grad_weight`` the convolution of the input (channels as batch) with ``grad_output`` (channels as
    filters); ``grad_bias`` the sum of ``grad_output``. Same mathematics as PyTorch's backward.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, padding):
        ctx.save_for_backward(x, weight)
        ctx.padding = padding
        ctx.has_bias = bias is not None
        return torch.ops.aten.mkldnn_convolution(x, weight, bias, padding, _ONES3, _ONES3, 1)

    @staticmethod
    def backward(ctx, grad_out):
        x, weight = ctx.saved_tensors
        grad_out = grad_out.contiguous()
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            flipped = weight.transpose(0, 1).flip(2, 3, 4).contiguous()
            pad = [k - 1 - p for k, p in zip(weight.shape[2:], ctx.padding)]
            grad_x = torch.ops.aten.mkldnn_convolution(grad_out, flipped, None, pad, _ONES3, _ONES3, 1)
        if ctx.needs_input_grad[1]:
            xt = x.transpose(0, 1).contiguous()
            gt = grad_out.transpose(0, 1).contiguous()
            grad_w = torch.ops.aten.mkldnn_convolution(xt, gt, None, ctx.padding, _ONES3, _ONES3, 1)
            grad_w = grad_w.transpose(0, 1)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = grad_out.sum((0, 2, 3, 4))
        return grad_x, grad_w, grad_b, None


class OneDNNConv3d(nn.Conv3d):
    """``nn.Conv3d`` that uses oneDNN where PyTorch would use its slow CPU kernel (see module docstring).

    Only for float32 CPU inputs of batch 1 below PyTorch's own size threshold, stride 1, no dilation,
    one group, zero padding no larger than ``kernel - 1``; everything else is ``nn.Conv3d``'s forward.
    Same parameters and state dict as ``nn.Conv3d``. Made by :func:`enable_onednn_conv3d`.
    """

    def _fast(self, x: torch.Tensor) -> bool:
        return (
            x.device.type == "cpu"
            and x.dtype == torch.float32
            and x.dim() == 5
            and x.shape[0] == 1
            and x.shape[0] * x.shape[1] * x.shape[2] * x.shape[3] <= _SLOW_PATH_MAX
            and not torch.is_autocast_enabled("cpu")
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._fast(x):
            return _OneDNNConv3dFunction.apply(x, self.weight, self.bias, list(self.padding))
        return super().forward(x)


def _eligible(m: nn.Module) -> bool:
    return (
        type(m) is nn.Conv3d
        and m.groups == 1
        and tuple(m.stride) == (1, 1, 1)
        and tuple(m.dilation) == (1, 1, 1)
        and m.padding_mode == "zeros"
        and isinstance(m.padding, tuple)
        and all(0 <= p <= k - 1 for p, k in zip(m.padding, m.kernel_size))
    )


def enable_onednn_conv3d(module: nn.Module) -> nn.Module:
    """Make the eligible ``nn.Conv3d`` of ``module`` :class:`OneDNNConv3d`, in place; returns ``module``.

    A CPU speed-up for batch-1 streams on small volumes (the coarse levels of the DS U-Net when each
    modality stream is its own graph, as exact GMD wants): no effect on GPU, on larger batches or
    volumes, or where oneDNN is not built in. Parameters, state dict and results (to float32
    round-off) are unchanged.

    Args:
        module: a model, e.g. :class:`~gmd_monai.networks.DynamicSharingUNet`.
    """
    if not torch.backends.mkldnn.is_available():
        return module
    for m in module.modules():
        if _eligible(m):
            m.__class__ = OneDNNConv3d
    return module
