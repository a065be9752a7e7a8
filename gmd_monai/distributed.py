"""Multi-process training (``torchrun``): initialisation, gradient synchronisation, rank-0 helpers.

One process per GPU (NCCL) or per CPU worker (Gloo); every rank holds a full model replica and its
own shard of each global batch (``DistributedSampler``); the updates are kept identical on every rank.

Why no ``DistributedDataParallel`` wrapper: DDP synchronises gradients from hooks that fire when a
``.backward()`` accumulates into ``.grad``, and only after a forward through the DDP wrapper itself
(which calls ``prepare_for_backward``). :class:`~gmd_monai.engine.SubsetTrainer` runs the modality
streams through the unwrapped model (``forward_streams``) and GMD differentiates each objective with
``torch.autograd.grad``: DDP would never see the per-objective gradients, and without its forward its
reducer silently skips the all-reduce. Worse, averaging the MERGED gradients across ranks would not
be GMD on the global batch: the projection is non-linear in the gradients. So synchronisation is
explicit and exact:

* at start, :func:`broadcast_module` copies rank 0's parameters and buffers to every rank;
* every step, the aggregator calls ``reduce_fn`` (:func:`make_reduce_fn`) on the (T, P) matrix of
  per-objective gradients BEFORE the projection (an all-reduce mean; GMD and the torchjd
  weightings), or on the merged gradient when the aggregator is linear in the per-objective
  gradients (``mean``, ``dropout``, and the final backward of ``fast_gmd``, whose proxy gradients
  are reduced before its projection). Every rank then computes the same weights from the same
  matrix (seeded permutations: same ``seed`` on every rank) and takes the same optimizer step.

What equality holds (N ranks, b samples each, global batch N*b):

* For a loss that is a MEAN over samples (e.g. ``DiceLoss(batch=False)``, BCE, MSE), each rank's
  per-objective gradient is the gradient of its shard's mean; their average over ranks equals the
  per-objective gradient of the global batch on one process. Hence the merged GMD gradient of N ranks
  equals the single-process one on the global batch (up to float round-off), and so does training.
* The paper's BraTS loss is a BATCH-POOLED soft Dice (sums over the whole batch inside the ratio),
  which is not a mean over samples: N ranks optimise the mean over ranks of each shard's pooled Dice,
  ``L_C = (1/N) sum_r Dice_C(shard r)``. That is exactly what one process computes when it pools
  the Dice per group of b samples and averages over the N groups; it differs from the Dice pooled
  over all N*b samples (what the authors' single-process ``DataParallel`` run computed).
  ``tests/test_distributed.py`` checks both statements on 2 Gloo ranks.
* The DS U-Net uses GroupNorm (per sample), so the forward of a sample does not depend on which
  rank or batch it is in. (BatchNorm would break the equality.)

Example (``torchrun --nproc_per_node=2 train.py``)::

    from gmd_monai import distributed as gdist
    device = gdist.init_distributed()                        # NCCL on GPUs, Gloo on CPU
    net = gdist.broadcast_module(DynamicSharingUNet().to(device))
    trainer = SubsetTrainer(..., network=net, reduce_fn=gdist.make_reduce_fn())
    trainer.run()
    gdist.cleanup()
"""

from __future__ import annotations

import datetime
import logging
import os
from collections.abc import Iterable, Sequence

import torch
import torch.distributed as dist
from torch import nn

__all__ = [
    "init_distributed",
    "local_device",
    "is_distributed",
    "get_rank",
    "get_world_size",
    "is_main_process",
    "broadcast_module",
    "all_reduce_mean",
    "make_reduce_fn",
    "rank_zero_only",
    "barrier",
    "cleanup",
]

logger = logging.getLogger(__name__)

#: Handler classes that write logs, files or checkpoints: kept on rank 0 only by :func:`rank_zero_only`.
OUTPUT_HANDLERS: tuple[str, ...] = (
    "StatsHandler",
    "TensorBoardStatsHandler",
    "TensorBoardImageHandler",
    "CheckpointSaver",
    "MetricsSaver",
    "ClearMLStatsHandler",
    "MLFlowHandler",
    "GMDDiagnosticsHandler",
    "SubsetDiceHandler",
    "ProgressBar",
)


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return int(value) if value not in (None, "") else default


def local_device() -> torch.device:
    """``cuda:LOCAL_RANK`` when CUDA is available, otherwise ``cpu`` (reads torchrun's environment)."""
    if torch.cuda.is_available():
        return torch.device(f"cuda:{_env_int('LOCAL_RANK', 0) % max(1, torch.cuda.device_count())}")
    return torch.device("cpu")


def init_distributed(backend: str | None = None, timeout_s: float = 1800.0) -> torch.device:
    """Join the process group described by torchrun's environment; return this rank's device.

    Reads ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``. Without them
    (a plain ``python`` run) nothing is initialised and the single-process device is returned, so
    the same config runs with or without torchrun. Idempotent.

    Args:
        backend: ``"nccl"`` or ``"gloo"``; default NCCL when CUDA is available, else Gloo.
        timeout_s: collective timeout (long validations on rank 0 must fit in it).
    """
    device = local_device()
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if dist.is_available() and dist.is_initialized():
        return device
    world_size = _env_int("WORLD_SIZE", 1)
    if world_size <= 1 and "MASTER_ADDR" not in os.environ:
        return device
    if not dist.is_available():
        raise RuntimeError("torch.distributed is not available in this PyTorch build")
    backend = backend or ("nccl" if device.type == "cuda" else "gloo")
    dist.init_process_group(
        backend=backend,
        rank=_env_int("RANK", 0),
        world_size=world_size,
        timeout=datetime.timedelta(seconds=timeout_s),
    )
    logger.info("rank %d/%d initialised (%s, %s)", get_rank(), get_world_size(), backend, device)
    return device


def is_distributed() -> bool:
    """True inside an initialised process group with more than one rank."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def get_rank() -> int:
    """This process's rank (torchrun's ``RANK`` before the group is initialised, else 0)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    return _env_int("RANK", 0)


def get_world_size() -> int:
    """Number of ranks (torchrun's ``WORLD_SIZE`` before the group is initialised, else 1)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return _env_int("WORLD_SIZE", 1)


def is_main_process() -> bool:
    """Rank 0 (or the only process): the one that logs and writes checkpoints."""
    return get_rank() == 0


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def broadcast_module(module: nn.Module, src: int = 0) -> nn.Module:
    """Copy rank ``src``'s parameters and buffers to every rank (in place); returns ``module``."""
    if is_distributed():
        with torch.no_grad():
            for t in [*module.parameters(), *module.buffers()]:
                dist.broadcast(t.data, src=src)
    return module


def all_reduce_mean(tensor: torch.Tensor, group=None) -> torch.Tensor:
    """In-place all-reduce average over the ranks of ``group`` (returns ``tensor``)."""
    if is_distributed():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM, group=group)
        tensor.div_(dist.get_world_size(group))
    return tensor


def make_reduce_fn(group=None):
    """The ``reduce_fn`` of the aggregators: all-reduce mean of a (T, P) gradient matrix across ranks.

    Returns ``None`` outside a multi-rank process group (nothing to synchronise), so configs can pass
    it unconditionally. See the module docstring for what the reduction makes equal.

    Args:
        group: process group (default: the world).
    """
    if not is_distributed():
        return None

    def reduce_fn(matrix: torch.Tensor) -> torch.Tensor:
        return all_reduce_mean(matrix.contiguous(), group=group)

    return reduce_fn


def rank_zero_only(handlers: Sequence | None, output_handlers: Iterable[str] = OUTPUT_HANDLERS) -> list:
    """The handlers to attach on this rank: all on rank 0; on the others, all but the output ones.

    Output handlers (logging, TensorBoard, CSV, checkpoints: :data:`OUTPUT_HANDLERS`, matched by class
    name) only run on rank 0; the others (LR schedule, validation, early stopping...) run everywhere
    so that every rank stays in step.

    Args:
        handlers: the handler list of a trainer or evaluator (``None`` = none).
        output_handlers: class names to keep on rank 0 only.
    """
    handlers = list(handlers or [])
    if is_main_process():
        return handlers
    names = set(output_handlers)
    return [h for h in handlers if type(h).__name__ not in names]


def validation_sampler(dataset):
    """A sampler giving each rank its own share of the validation cases, or ``None`` (all cases).

    MONAI's ``DistributedSampler(even_divisible=False)``: no case is repeated, so the metrics pooled
    over the ranks (:class:`~gmd_monai.engine.SubsetDiceMetric`) are the single-process ones. With
    fewer cases than ranks (which that sampler refuses) or outside ``torchrun`` it returns ``None``:
    every rank then evaluates every case, and the pooled mean is still the single-process mean.

    Args:
        dataset: the validation dataset.
    """
    if not is_distributed() or len(dataset) < get_world_size():
        return None
    from monai.data import DistributedSampler

    return DistributedSampler(dataset, even_divisible=False, shuffle=False)


def cleanup() -> None:
    """Leave the process group (no-op when none)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
