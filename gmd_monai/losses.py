"""Per-subset losses from per-modality outputs (one objective per non-empty modality subset).

The output for subset C is the mean of the member modalities' logits, ``H_C = mean_{m in C} h_m``
(mean of logits, not of probabilities). The default BraTS loss is the authors' one: sigmoid soft Dice
over the 3 region channels, pooled over the batch, smoothing 1 (MONAI ``DiceLoss(sigmoid=True,
batch=True, smooth_nr=1, smooth_dr=1)``), no cross-entropy.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
from monai.losses import DiceCELoss, DiceLoss
from torch import nn

from gmd_monai.subsets import SubsetSpace

__all__ = ["SubsetLoss", "subset_logits", "brats_loss"]


def brats_loss(kind: str = "dice") -> nn.Module:
    """The BraTS region loss: ``"dice"`` (paper default) or ``"dice_ce"`` (Dice + BCE)."""
    if kind == "dice":
        return DiceLoss(sigmoid=True, batch=True, smooth_nr=1.0, smooth_dr=1.0)
    if kind == "dice_ce":
        return DiceCELoss(sigmoid=True, batch=True, smooth_nr=1.0, smooth_dr=1.0)
    raise ValueError(f"unknown loss {kind!r}; expected 'dice' or 'dice_ce'")


def subset_logits(
    stream_logits: Mapping[str, torch.Tensor], space: SubsetSpace, subsets: Sequence[int] | None = None
) -> list[torch.Tensor]:
    """Fused logits of each subset (default: all of ``space``, in its order) from per-modality logits."""
    out = []
    for k in range(len(space)) if subsets is None else subsets:
        members = space.modalities_of(k)
        missing = [m for m in members if m not in stream_logits]
        if missing:
            raise KeyError(f"subset {space.name(k)} needs stream(s) {missing}; got {list(stream_logits)}")
        total = stream_logits[members[0]]
        for m in members[1:]:
            total = total + stream_logits[m]
        out.append(total / len(members))
    return out


class SubsetLoss(nn.Module):
    """One loss per modality subset.

    Args:
        modalities: modality names (or a :class:`SubsetSpace`).
        loss: base loss applied to each subset's fused output (default :func:`brats_loss`).
        subsets: restrict to these subset indices (default all ``2^M - 1``).

    ``forward(stream_logits, target)`` returns the list of T scalar losses, in subset order.
    """

    def __init__(
        self,
        modalities: Sequence[str] | SubsetSpace,
        loss: nn.Module | Callable | None = None,
        subsets: Sequence[int] | None = None,
    ):
        super().__init__()
        self.space = modalities if isinstance(modalities, SubsetSpace) else SubsetSpace(modalities)
        self.loss = loss if loss is not None else brats_loss()
        self.subsets = list(range(len(self.space))) if subsets is None else list(subsets)

    @property
    def names(self) -> list[str]:
        return [self.space.name(k) for k in self.subsets]

    def forward(self, stream_logits: Mapping[str, torch.Tensor], target: torch.Tensor) -> list[torch.Tensor]:
        target = target.float()
        return [self.loss(h, target).mean() for h in subset_logits(stream_logits, self.space, self.subsets)]
