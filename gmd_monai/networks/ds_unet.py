"""Dynamic Sharing (DS) 3-D U-Net: one single-channel U-Net shared by all modalities.

Each modality runs as its own stream through the SAME convolutions, with its own GroupNorm affine
parameters; the output for a set of available modalities is the mean of the per-modality logits
(late fusion). Absent modalities are never computed (Dynamic Sharing; Wang et al., AAAI 2024).

Implementation: the available (sample, modality) streams are folded into the batch dimension and every
shared convolution runs once; GroupNorm runs without affine and then applies each stream's own
scale/shift. This gives the same numbers as running the streams one by one.

Example:
    >>> import torch
    >>> net = DynamicSharingUNet(width=0.25)
    >>> x = torch.randn(2, 4, 32, 32, 32)
    >>> net(x).shape                                     # all four modalities
    torch.Size([2, 3, 32, 32, 32])
    >>> net(x, available=["t1ce", "flair"]).shape        # only two streams computed
    torch.Size([2, 3, 32, 32, 32])
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from gmd_monai.subsets import BRATS_MODALITIES, SubsetSpace

__all__ = ["DynamicSharingUNet", "ModalityGroupNorm", "resolve_availability"]


class ModalityGroupNorm(nn.Module):
    """GroupNorm whose affine parameters belong to one modality per stream.

    Args:
        num_groups: GroupNorm groups.
        num_channels: channels.
        modalities: modality names; one (weight, bias) pair each, e.g. ``weight.t1ce``.
        eps: GroupNorm epsilon.
    """

    def __init__(self, num_groups: int, num_channels: int, modalities: Sequence[str], eps: float = 1e-5):
        super().__init__()
        if num_channels % num_groups:
            raise ValueError(f"num_channels={num_channels} is not divisible by num_groups={num_groups}")
        self.num_groups = num_groups
        self.eps = eps
        self.modalities = tuple(modalities)
        self.weight = nn.ParameterDict({m: nn.Parameter(torch.ones(num_channels)) for m in self.modalities})
        self.bias = nn.ParameterDict({m: nn.Parameter(torch.zeros(num_channels)) for m in self.modalities})

    def forward(self, x: torch.Tensor, modality: int | torch.Tensor) -> torch.Tensor:
        """``modality``: one index for the whole batch, or a (N,) tensor of indices (one per stream)."""
        if isinstance(modality, int):
            m = self.modalities[modality]
            return F.group_norm(x, self.num_groups, self.weight[m], self.bias[m], self.eps)
        y = F.group_norm(x, self.num_groups, None, None, self.eps)
        w = torch.stack([self.weight[m] for m in self.modalities])[modality]
        b = torch.stack([self.bias[m] for m in self.modalities])[modality]
        shape = (x.shape[0], x.shape[1]) + (1,) * (x.dim() - 2)
        return y * w.view(shape).to(y.dtype) + b.view(shape).to(y.dtype)

    def __prepare_scriptable__(self) -> nn.Module:
        """What ``torch.jit.script`` compiles instead (TorchScript cannot index a ParameterDict by a
        variable name): the same norm with every modality's affine stacked (see :meth:`DynamicSharingUNet.
        __prepare_scriptable__`, which scripts a copy)."""
        return _StackedModalityGroupNorm(self)


class _StackedModalityGroupNorm(nn.Module):
    """:class:`ModalityGroupNorm` for TorchScript: the per-modality affine as (M, C) tensors, indexed by the
    modality index (same numbers; used only in scripted exports, never trained)."""

    def __init__(self, norm: ModalityGroupNorm):
        super().__init__()
        self.num_groups = norm.num_groups
        self.eps = norm.eps
        self.weight = nn.Parameter(torch.stack([norm.weight[m].detach() for m in norm.modalities]))
        self.bias = nn.Parameter(torch.stack([norm.bias[m].detach() for m in norm.modalities]))

    def forward(self, x: torch.Tensor, modality: int | torch.Tensor) -> torch.Tensor:
        if isinstance(modality, int):
            return F.group_norm(x, self.num_groups, self.weight[modality], self.bias[modality], self.eps)
        y = F.group_norm(x, self.num_groups, None, None, self.eps)
        shape = [x.shape[0], x.shape[1]] + [1] * (x.dim() - 2)
        return y * self.weight[modality].view(shape).to(y.dtype) + self.bias[modality].view(shape).to(y.dtype)


class _DoubleConv(nn.Module):
    """[Conv3d 3x3x3 (bias) -> modality GroupNorm -> ReLU] x 2."""

    def __init__(self, cin: int, cout: int, modalities: Sequence[str], groups: int, mid: int | None = None):
        super().__init__()
        mid = mid or cout
        self.conv1 = nn.Conv3d(cin, mid, kernel_size=3, padding=1, bias=True)
        self.norm1 = ModalityGroupNorm(groups, mid, modalities)
        self.conv2 = nn.Conv3d(mid, cout, kernel_size=3, padding=1, bias=True)
        self.norm2 = ModalityGroupNorm(groups, cout, modalities)

    def forward(self, x: torch.Tensor, modality: int | torch.Tensor) -> torch.Tensor:
        x = F.relu(self.norm1(self.conv1(x), modality), inplace=True)
        return F.relu(self.norm2(self.conv2(x), modality), inplace=True)


class _Down(nn.Module):
    def __init__(self, cin, cout, modalities, groups):
        super().__init__()
        self.conv = _DoubleConv(cin, cout, modalities, groups)

    def forward(self, x: torch.Tensor, modality: int | torch.Tensor) -> torch.Tensor:
        return self.conv(F.max_pool3d(x, 2), modality)


class _Up(nn.Module):
    def __init__(self, cin, cout, modalities, groups):
        super().__init__()
        self.conv = _DoubleConv(cin, cout, modalities, groups, mid=cin // 2)

    def forward(self, x: torch.Tensor, skip: torch.Tensor, modality: int | torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2.0, mode="trilinear", align_corners=True)
        return self.conv(torch.cat([skip, x], dim=1), modality)


def resolve_availability(
    x: torch.Tensor, modalities: Sequence[str], available=None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalise an input and its availability to ``(x (B, M, ...), mask (B, M) bool)``.

    ``available`` may be ``None`` (all), a subset name (``"t1ce+flair"``), a list of names, or a
    boolean tensor of shape (M,) or (B, M). If ``x`` has exactly ``len(names)`` channels and names are
    given, the channels are taken to be those modalities in the given order.
    """
    space = SubsetSpace(modalities)
    m_total = len(modalities)
    if x.dim() < 3:
        raise ValueError(f"expected input of shape (batch, modalities, *spatial), got {tuple(x.shape)}")
    b = x.shape[0]
    if available is None:
        mask = torch.ones(b, m_total, dtype=torch.bool, device=x.device)
    elif isinstance(available, torch.Tensor):
        mask = available.to(device=x.device, dtype=torch.bool)
        if mask.dim() == 1:
            mask = mask.unsqueeze(0).expand(b, -1)
        if mask.shape != (b, m_total):
            raise ValueError(f"availability mask must have shape ({m_total},) or ({b}, {m_total}), "
                             f"got {tuple(available.shape)}")  # fmt: skip
    else:
        names = available.split("+") if isinstance(available, str) else list(available)
        idx = [space.modality_index(n) for n in names]
        if not idx:
            raise ValueError(f"no modality given; expected a non-empty subset of {list(modalities)}")
        if len(set(idx)) != len(idx):
            raise ValueError(f"modality listed twice in {names}")
        if x.shape[1] == len(idx) and len(idx) != m_total:
            full = x.new_zeros((b, m_total) + tuple(x.shape[2:]))
            full[:, idx] = x
            x = full
        mask = torch.zeros(b, m_total, dtype=torch.bool, device=x.device)
        mask[:, idx] = True
    if x.shape[1] != m_total:
        raise ValueError(
            f"input has {x.shape[1]} channels but the model expects {m_total} ({'/'.join(modalities)}) "
            "or as many channels as names given in `available`"
        )
    empty = (~mask.any(dim=1)).nonzero().flatten().tolist()
    if empty:
        raise ValueError(f"no modality available for sample(s) {empty}")
    return x, mask


def _exporting() -> bool:
    """Inside ``torch.onnx.export`` (either exporter) or ``torch.export``."""
    return torch.onnx.is_in_onnx_export() or torch.compiler.is_exporting()


class DynamicSharingUNet(nn.Module):
    """DS 3-D U-Net (Dynamic Sharing; Wang et al., AAAI 2024).

    Args:
        modalities: modality names in input channel order (or their number M).
        out_channels: output logits (3 BraTS regions: WT, TC, ET).
        width: channel multiplier of ``channels`` (0.5 gives 16, 32, 64, 128, 256).
        channels: base channels of the 5 levels before ``width``.
        norm_groups: GroupNorm groups.

    ``forward(x, available)`` returns fused logits; ``forward_streams`` returns the per-modality logits
    (for training on every subset from one forward). Spatial sizes must be divisible by 16.
    """

    def __init__(
        self,
        modalities: Sequence[str] | int = BRATS_MODALITIES,
        out_channels: int = 3,
        width: float = 0.5,
        channels: Sequence[int] = (32, 64, 128, 256, 512),
        norm_groups: int = 8,
    ):
        super().__init__()
        if isinstance(modalities, int):
            modalities = BRATS_MODALITIES if modalities == 4 else tuple(f"m{i}" for i in range(modalities))
        self.modalities = tuple(modalities)
        self.space = SubsetSpace(self.modalities)
        if len(channels) != 5:
            raise ValueError(f"channels must have 5 levels, got {channels}")
        c = [max(norm_groups, int(round(ch * width))) for ch in channels]
        mods, g = self.modalities, norm_groups
        self.out_channels = out_channels
        self.width = width
        self.inc = _DoubleConv(1, c[0], mods, g)
        self.down1 = _Down(c[0], c[1], mods, g)
        self.down2 = _Down(c[1], c[2], mods, g)
        self.down3 = _Down(c[2], c[3], mods, g)
        self.down4 = _Down(c[3], c[4] // 2, mods, g)
        self.up1 = _Up(c[4], c[3] // 2, mods, g)
        self.up2 = _Up(c[3], c[2] // 2, mods, g)
        self.up3 = _Up(c[2], c[1] // 2, mods, g)
        self.up4 = _Up(c[1], c[0], mods, g)
        self.outc = nn.Conv3d(c[0], out_channels, kernel_size=1)

    # -- the streams ---------------------------------------------------------------------------
    def run_streams(self, x: torch.Tensor, modality: int | torch.Tensor) -> torch.Tensor:
        """Run folded single-channel streams: ``x`` (N, 1, ...) with one modality index per stream."""
        for size in x.shape[2:]:
            if size % 16:
                raise ValueError("spatial size " + str(x.shape[2:]) + " must be divisible by 16 (4 poolings)")
        x1 = self.inc(x, modality)
        x2 = self.down1(x1, modality)
        x3 = self.down2(x2, modality)
        x4 = self.down3(x3, modality)
        x5 = self.down4(x4, modality)
        y = self.up1(x5, x4, modality)
        y = self.up2(y, x3, modality)
        y = self.up3(y, x2, modality)
        y = self.up4(y, x1, modality)
        return self.outc(y)

    def forward_streams(self, x: torch.Tensor, available=None, fold: bool = True) -> dict[str, torch.Tensor]:
        """Per-modality logits ``{name: (B, out, ...)}`` for the modalities available in the batch.

        Args:
            x: (B, M, ...) input (or fewer channels with names in ``available``).
            available: which modalities to run for the whole batch (names, or mask of shape (M,)).
            fold: run all streams as one folded batch (fast forward). With ``fold=False`` each
                modality is its own graph, so a backward of a subset objective only runs through the
                streams of that subset (what per-objective gradient methods such as GMD want).
        """
        x, mask = resolve_availability(x, self.modalities, available)
        if not bool((mask == mask[:1]).all()):
            raise ValueError("forward_streams needs the same available modalities for every sample")
        idx = mask[0].nonzero().flatten().tolist()
        b = x.shape[0]
        if not fold or len(idx) == 1:
            return {self.modalities[m]: self.run_streams(x[:, m : m + 1], m) for m in idx}
        xf = x[:, idx].transpose(0, 1).reshape((len(idx) * b, 1) + tuple(x.shape[2:]))
        mod = torch.tensor(idx, device=x.device).repeat_interleave(b)
        out = self.run_streams(xf, mod).reshape((len(idx), b, self.out_channels) + tuple(x.shape[2:]))
        return {self.modalities[m]: out[k] for k, m in enumerate(idx)}

    def forward(self, x: torch.Tensor, available: torch.Tensor | None = None) -> torch.Tensor:
        """Fused logits: mean over the available modalities' logits (per sample if a (B, M) mask).

        ``available``: ``None`` (all), a boolean mask of shape (M,) or (B, M), or (eager only) names as
        in :func:`resolve_availability`. Scripted (``torch.jit.script``, the zoo's ``ckpt_export``), the
        model takes ``None`` or a mask and, like eager, runs only the available streams.
        """
        if torch.jit.is_scripting():
            mask = self.availability_mask(x, available)
        elif _exporting():
            return self._forward_static(x, self.availability_mask(x, available))
        else:
            x, mask = self._resolve(x, available)
        nz = mask.nonzero()
        b_idx, m_idx = nz[:, 0], nz[:, 1]
        xf = x[b_idx, m_idx].unsqueeze(1)
        if bool((m_idx == m_idx[0]).all()):
            out = self.run_streams(xf, int(m_idx[0]))
        else:
            out = self.run_streams(xf, m_idx)
        fused = out.new_zeros([x.shape[0], self.out_channels] + list(x.shape[2:]))
        fused.index_add_(0, b_idx, out)
        count = mask.sum(dim=1).to(out.dtype).view([-1] + [1] * (fused.dim() - 1))
        return fused / count

    def availability_mask(self, x: torch.Tensor, available: torch.Tensor | None) -> torch.Tensor:
        """The (B, M) boolean mask of ``available`` (``None``: all; a mask of shape (M,) or (B, M)) for an
        input of M channels; scriptable (names go through :func:`resolve_availability`)."""
        b, m = x.shape[0], len(self.modalities)
        if x.dim() < 3 or x.shape[1] != m:
            raise ValueError("expected an input of shape (batch, " + str(m) + " modalities, *spatial)")
        if available is None:
            return torch.ones(b, m, dtype=torch.bool, device=x.device)
        mask = available.to(device=x.device, dtype=torch.bool)
        if mask.dim() == 1:
            mask = mask.unsqueeze(0).expand(b, -1)
        if mask.dim() != 2 or mask.shape[0] != b or mask.shape[1] != m:
            raise ValueError("the availability mask must have shape (M,) or (B, M) with M = " + str(m))
        if not bool(mask.any(dim=1).all()):
            raise ValueError("no modality available for a sample of the batch")
        return mask

    def _forward_static(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The ONNX graph: every stream runs (static shapes, no data-dependent control flow) and the
        mask weights the mean; equal to :meth:`forward` up to float rounding."""
        b, m = x.shape[0], len(self.modalities)
        xf = x.transpose(0, 1).reshape([m * b, 1] + list(x.shape[2:]))
        mod = torch.arange(m, device=x.device).repeat_interleave(b)
        out = self.run_streams(xf, mod).reshape([m, b, self.out_channels] + list(x.shape[2:]))
        w = mask.t().to(out.dtype).reshape([m, b] + [1] * (out.dim() - 2))
        return (out * w).sum(0) / w.sum(0)

    @torch.jit.unused
    def _resolve(self, x: torch.Tensor, available) -> tuple[torch.Tensor, torch.Tensor]:
        return resolve_availability(x, self.modalities, available)

    def __prepare_scriptable__(self) -> nn.Module:
        """``torch.jit.script`` compiles a copy whose norms hold their per-modality affine stacked
        (:class:`_StackedModalityGroupNorm`); this module is left as it is. The scripted model takes
        ``forward(x, available=None or a boolean mask)`` and gives the eager outputs for every subset."""
        clone = copy.deepcopy(self)  # its norms are swapped by their own __prepare_scriptable__
        clone.__class__ = _ScriptableDynamicSharingUNet
        return clone

    # -- structure for GMD -----------------------------------------------------------------------
    def parameter_modality(self) -> dict[str, str | None]:
        """``{parameter name: modality}`` (``None`` for the convolutions shared by all modalities)."""
        out: dict[str, str | None] = {}
        for name, _ in self.named_parameters():
            parts = name.split(".")
            out[name] = parts[-1] if len(parts) >= 2 and parts[-2] in ("weight", "bias") else None
        return out

    def shared_mask(self, subsets: Sequence[Sequence[int]] | None = None) -> list[bool]:
        """One bool per ``parameters()`` entry: True if every subset objective reaches it.

        Built from the structure (not from ``p.grad is None``): the convolutions are shared; the norm
        affine of modality m is touched only by the subsets containing m.
        """
        return self.space.shared_mask(self.parameter_modality().values(), subsets)


class _ScriptableDynamicSharingUNet(DynamicSharingUNet):
    """The class of the copy that ``torch.jit.script`` compiles (no further preparation)."""

    def __prepare_scriptable__(self) -> nn.Module:
        return self
