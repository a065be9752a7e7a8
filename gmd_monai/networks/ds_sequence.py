"""Dynamic Sharing (DS) sequence model for multimodal sentiment regression (text / audio / vision).

The backbone the GMD authors built on (GMC: Poklukar et al., ICML 2022): one encoder per modality (a GRU by
default; a Transformer option) maps that modality's sequence to a latent vector; a SHARED encoder and
regression head are applied to each modality's latent, giving one prediction ``h_m`` per modality; the
prediction for a set of available modalities is the mean of their ``h_m`` (late fusion). Absent
modalities are never computed.

For GMD (:class:`gmd_monai.engine.SubsetTrainer`): :meth:`forward_streams` returns ``{modality: (B, 1)}``
for the modalities present; :meth:`shared_mask` marks the shared encoder and head as shared (every
subset objective reaches them) and each modality encoder as reached only by the subsets that contain
that modality.

Inputs are dicts ``{"text": (B, T_t, d_t), "audio": (B, T_a, d_a), "vision": (B, T_v, d_v)}`` with
optional ``"<modality>_lengths"`` (B,) entries (valid steps first, padding at the end). Sequence lengths
may differ between modalities (unaligned data). The feature sizes ``d_m`` are constructor arguments,
read from the data (``SentimentDataset.feature_sizes``), and stored in the checkpoint
(:meth:`get_extra_state`), so :meth:`DynamicSharingSequenceModel.from_checkpoint` rebuilds the model.

Example:
    >>> import torch
    >>> net = DynamicSharingSequenceModel({"text": 300, "audio": 5, "vision": 20})
    >>> x = {"text": torch.randn(4, 50, 300), "audio": torch.randn(4, 50, 5),
    ...      "vision": torch.randn(4, 50, 20)}
    >>> net(x).shape                               # fused over all three
    torch.Size([4, 1])
    >>> net(x, available="text+vision").shape      # audio not computed
    torch.Size([4, 1])
    >>> sorted(net.forward_streams(x))
    ['audio', 'text', 'vision']
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from gmd_monai.subsets import SENTIMENT_MODALITIES, SubsetSpace
from gmd_monai.weights import load_checkpoint, load_state_dict_into, state_dict_of

__all__ = [
    "DynamicSharingSequenceModel",
    "SequenceEncoder",
    "input_sizes_from_checkpoint",
    "load_state_dict_from_checkpoint",
]

_ENCODERS = ("gru", "transformer")
_POOLING = ("last", "mean")
_INPUT_NORMS = ("batch", "layer", "none")


def _step_mask(
    lengths: torch.Tensor | None, batch: int, steps: int, device: torch.device
) -> torch.Tensor | None:
    """(B, T) bool, True on valid steps; None when every step is valid."""
    if lengths is None:
        return None
    return torch.arange(steps, device=device)[None, :] < lengths.to(device).view(-1, 1)


class _SinusoidalPositions(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = x.shape[1]
        pos = torch.arange(t, device=x.device, dtype=torch.float32)[:, None]
        div = torch.exp(
            torch.arange(0, self.dim, 2, device=x.device, dtype=torch.float32)
            * (-math.log(10000.0) / self.dim)
        )
        pe = torch.zeros(t, self.dim, device=x.device)
        pe[:, 0::2] = torch.sin(pos * div)
        pe[:, 1::2] = torch.cos(pos * div)[:, : self.dim // 2]
        return x + pe.to(x.dtype)


class SequenceEncoder(nn.Module):
    """One modality's encoder: sequence (B, T, d) -> latent (B, latent_size).

    Args:
        input_size: feature size d of this modality.
        latent_size: output size (GMC: 60).
        encoder: ``"gru"`` (GMC backbone) or ``"transformer"``.
        hidden_size: GRU hidden size / Transformer model width.
        num_layers: GRU or Transformer layers.
        pooling: ``"last"`` (GRU final state at each sequence's length; last valid step for the
            Transformer) or ``"mean"`` (mean over valid steps).
        input_norm: ``"batch"`` (per-feature standardisation with running statistics over all training
            steps, BatchNorm without affine and with a cumulative average), ``"layer"`` (LayerNorm over
            features per step) or ``"none"`` (GMC feeds raw features).
        dropout: dropout on the latent (and inside the Transformer).
        num_heads: Transformer attention heads (``hidden_size`` must be divisible by it).
        bidirectional: bidirectional GRU (final states of both directions concatenated).
    """

    def __init__(
        self,
        input_size: int,
        latent_size: int = 60,
        encoder: str = "gru",
        hidden_size: int = 32,
        num_layers: int = 1,
        pooling: str = "last",
        input_norm: str = "batch",
        dropout: float = 0.0,
        num_heads: int = 4,
        bidirectional: bool = False,
    ):
        super().__init__()
        if encoder not in _ENCODERS:
            raise ValueError(f"unknown encoder {encoder!r}; expected one of {list(_ENCODERS)}")
        if pooling not in _POOLING:
            raise ValueError(f"unknown pooling {pooling!r}; expected one of {list(_POOLING)}")
        if input_norm not in _INPUT_NORMS:
            raise ValueError(f"unknown input_norm {input_norm!r}; expected one of {list(_INPUT_NORMS)}")
        if int(input_size) < 1:
            raise ValueError(f"input_size must be >= 1, got {input_size}")
        self.input_size = int(input_size)
        self.encoder = encoder
        self.pooling = pooling
        self.input_norm = input_norm
        if input_norm == "batch":
            self.norm: nn.Module = nn.BatchNorm1d(self.input_size, affine=False, momentum=None)
        elif input_norm == "layer":
            self.norm = nn.LayerNorm(self.input_size)
        else:
            self.norm = nn.Identity()
        if encoder == "gru":
            self.rnn = nn.GRU(
                self.input_size,
                hidden_size,
                num_layers=num_layers,
                batch_first=True,
                bidirectional=bidirectional,
                dropout=dropout if num_layers > 1 else 0.0,
            )
            out_size = hidden_size * (2 if bidirectional else 1)
        else:
            if hidden_size % num_heads:
                raise ValueError(f"hidden_size {hidden_size} must be divisible by num_heads {num_heads}")
            self.proj = nn.Linear(self.input_size, hidden_size)
            self.positions = _SinusoidalPositions(hidden_size)
            layer = nn.TransformerEncoderLayer(
                hidden_size,
                num_heads,
                dim_feedforward=2 * hidden_size,
                dropout=dropout,
                batch_first=True,
                norm_first=True,
            )
            self.transformer = nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)
            self.out_norm = nn.LayerNorm(hidden_size)
            out_size = hidden_size
        self.drop = nn.Dropout(dropout)
        self.to_latent = nn.Linear(out_size, latent_size)

    def _normalise(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        if self.input_norm != "batch":
            return self.norm(x)
        if mask is None:
            return self.norm(x.reshape(-1, x.shape[-1])).view_as(x)
        out = torch.zeros_like(x)
        out[mask] = self.norm(x[mask])  # statistics over valid steps only
        return out

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        b, t, _ = x.shape
        mask = _step_mask(lengths, b, t, x.device)
        x = self._normalise(x, mask)
        if self.encoder == "gru":
            if lengths is None:
                out, h = self.rnn(x)
            else:
                packed = pack_padded_sequence(
                    x, lengths.detach().cpu().long(), batch_first=True, enforce_sorted=False
                )
                out, h = self.rnn(packed)
                out, _ = pad_packed_sequence(out, batch_first=True, total_length=t)
            if self.pooling == "last":
                n_dir = 2 if self.rnn.bidirectional else 1
                feat = torch.cat([h[-n_dir + k] for k in range(n_dir)], dim=-1)
            else:
                feat = self._mean(out, mask)
        else:
            y = self.positions(self.proj(x))
            y = self.out_norm(self.transformer(y, src_key_padding_mask=None if mask is None else ~mask))
            if self.pooling == "mean":
                feat = self._mean(y, mask)
            else:
                last = (
                    (lengths.to(x.device).long() - 1)
                    if lengths is not None
                    else torch.full((b,), t - 1, device=x.device)
                )
                feat = y[torch.arange(b, device=x.device), last]
        return self.to_latent(self.drop(feat))

    @staticmethod
    def _mean(y: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        if mask is None:
            return y.mean(dim=1)
        w = mask.to(y.dtype).unsqueeze(-1)
        return (y * w).sum(dim=1) / w.sum(dim=1).clamp_min(1.0)


class DynamicSharingSequenceModel(nn.Module):
    """DS sequence model: per-modality encoders, a shared encoder + regression head, mean fusion.

    Args:
        input_sizes: ``{modality: feature size}`` read from the data (e.g. ``dataset.feature_sizes``),
            or a sequence of sizes in ``modalities`` order.
        modalities: modality names (default ``text``, ``audio``, ``vision``); the order of the subsets
            and of the stacked outputs.
        encoder: ``"gru"`` (default, as GMC) or ``"transformer"``.
        hidden_size: GRU hidden size / Transformer width.
        latent_size: per-modality latent size (GMC: 60).
        num_layers: layers of each modality encoder.
        pooling: ``"last"`` or ``"mean"`` (see :class:`SequenceEncoder`).
        input_norm: ``"batch"``, ``"layer"`` or ``"none"`` (see :class:`SequenceEncoder`).
        shared_hidden: hidden size of the shared encoder MLP (default ``latent_size``).
        dropout: dropout in the encoders and the shared MLP.
        num_heads: Transformer heads.
        bidirectional: bidirectional GRU.
        out_channels: outputs of the regression head (1: sentiment score).
    """

    def __init__(
        self,
        input_sizes: Mapping[str, int] | Sequence[int],
        modalities: Sequence[str] = SENTIMENT_MODALITIES,
        encoder: str = "gru",
        hidden_size: int = 32,
        latent_size: int = 60,
        num_layers: int = 1,
        pooling: str = "last",
        input_norm: str = "batch",
        shared_hidden: int | None = None,
        dropout: float = 0.1,
        num_heads: int = 4,
        bidirectional: bool = False,
        out_channels: int = 1,
    ):
        super().__init__()
        self.modalities = tuple(str(m) for m in modalities)
        self.space = SubsetSpace(self.modalities)
        if isinstance(input_sizes, Mapping):
            unknown = sorted(set(input_sizes) - set(self.modalities))
            missing = [m for m in self.modalities if m not in input_sizes]
            if unknown or missing:
                raise ValueError(
                    f"input_sizes must have exactly the modalities {list(self.modalities)}; "
                    f"missing {missing}, unknown {unknown}"
                )
            sizes = {m: int(input_sizes[m]) for m in self.modalities}
        else:
            if len(input_sizes) != len(self.modalities):
                raise ValueError(f"{len(input_sizes)} input sizes for {len(self.modalities)} modalities")
            sizes = {m: int(s) for m, s in zip(self.modalities, input_sizes)}
        self.input_sizes = sizes
        shared_hidden = int(shared_hidden or latent_size)
        self.config: dict[str, Any] = {
            "input_sizes": dict(sizes),
            "modalities": list(self.modalities),
            "encoder": encoder,
            "hidden_size": int(hidden_size),
            "latent_size": int(latent_size),
            "num_layers": int(num_layers),
            "pooling": pooling,
            "input_norm": input_norm,
            "shared_hidden": shared_hidden,
            "dropout": float(dropout),
            "num_heads": int(num_heads),
            "bidirectional": bool(bidirectional),
            "out_channels": int(out_channels),
        }
        self.out_channels = int(out_channels)
        self.encoders = nn.ModuleDict(
            {
                m: SequenceEncoder(
                    sizes[m],
                    latent_size,
                    encoder,
                    hidden_size,
                    num_layers,
                    pooling,
                    input_norm,
                    dropout,
                    num_heads,
                    bidirectional,
                )
                for m in self.modalities
            }
        )
        self.shared_encoder = nn.Sequential(
            nn.Linear(latent_size, shared_hidden),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(shared_hidden, latent_size),
            nn.ReLU(),
        )
        self.head = nn.Linear(latent_size, out_channels)

    # -- checkpoints -----------------------------------------------------------------------------
    def get_extra_state(self) -> dict[str, Any]:
        """The constructor arguments, stored in ``state_dict()`` (key ``_extra_state``)."""
        return {"config": dict(self.config)}

    def set_extra_state(self, state: Any) -> None:
        """Check that a loaded checkpoint was made for the same architecture (clear error if not)."""
        cfg = state.get("config") if isinstance(state, Mapping) else None
        if cfg is None:
            return
        diff = {k: (v, self.config.get(k)) for k, v in cfg.items() if self.config.get(k) != v}
        if diff:
            detail = ", ".join(f"{k}: checkpoint {a!r} vs model {b!r}" for k, (a, b) in diff.items())
            raise ValueError(
                f"checkpoint was made for a different DynamicSharingSequenceModel ({detail}); build the "
                "model with DynamicSharingSequenceModel.from_checkpoint(path) or with the same arguments"
            )

    @classmethod
    def from_checkpoint(
        cls, checkpoint: str | os.PathLike | Mapping[str, Any], map_location: str | torch.device = "cpu"
    ) -> DynamicSharingSequenceModel:
        """Rebuild a model (architecture and weights) from a checkpoint written by training.

        Args:
            checkpoint: a ``.pt`` file (a state dict, or a dict with the state dict under ``model``,
                ``network`` or ``state_dict``, as MONAI's CheckpointSaver writes), or such a dict.
            map_location: device for ``torch.load``.
        """
        sd = load_state_dict_from_checkpoint(checkpoint, map_location)
        extra = sd.get("_extra_state")
        if not isinstance(extra, Mapping) or "config" not in extra:
            raise ValueError(
                f"{_describe(checkpoint)}: no model configuration in the checkpoint (no '_extra_state'); "
                "build DynamicSharingSequenceModel(input_sizes=...) with the training arguments and "
                "load_state_dict"
            )
        net = cls(**extra["config"])
        load_state_dict_into(net, sd, _describe(checkpoint))
        return net

    # -- inputs ----------------------------------------------------------------------------------
    def _availability(self, inputs: Mapping[str, Any], available) -> tuple[int, torch.Tensor]:
        """Batch size and the (B, M) bool availability mask."""
        if not isinstance(inputs, Mapping):
            raise TypeError(
                f"expected a dict {{modality: (B, T, d) tensor}} with keys among {list(self.modalities)}, "
                f"got {type(inputs).__name__}"
            )
        present = [m for m in self.modalities if inputs.get(m) is not None]
        if not present:
            raise ValueError(
                f"no modality in the inputs: keys {sorted(map(str, inputs))}, "
                f"expected some of {list(self.modalities)}"
            )
        for m in present:
            x = inputs[m]
            if not isinstance(x, torch.Tensor) or x.dim() not in (2, 3):
                shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
                raise ValueError(f"{m}: expected a (B, T, d) tensor, got {shape}")
            if x.shape[-1] != self.input_sizes[m]:
                raise ValueError(
                    f"{m}: features have size {x.shape[-1]} but the model was built with input_sizes[{m!r}]="
                    f"{self.input_sizes[m]} (sizes are read from the training data)"
                )
        sizes = {m: int(inputs[m].shape[0]) for m in present}
        if len(set(sizes.values())) != 1:
            raise ValueError(f"modalities have different batch sizes {sizes} (mismatched lengths)")
        b = next(iter(sizes.values()))
        device = inputs[present[0]].device
        has = torch.tensor([m in present for m in self.modalities], device=device)
        if available is None:
            mask = has.unsqueeze(0).expand(b, -1)
        elif isinstance(available, torch.Tensor):
            mask = available.to(device=device, dtype=torch.bool)
            if mask.dim() == 1:
                mask = mask.unsqueeze(0).expand(b, -1)
            if mask.shape != (b, len(self.modalities)):
                raise ValueError(
                    f"availability mask must have shape ({len(self.modalities)},) or "
                    f"({b}, {len(self.modalities)}), got {tuple(available.shape)}"
                )
        else:
            idx = self.space.indices(available)
            mask = torch.zeros(b, len(self.modalities), dtype=torch.bool, device=device)
            mask[:, list(idx)] = True
        needed = [self.modalities[i] for i in mask.any(dim=0).nonzero().flatten().tolist()]
        absent = [m for m in needed if m not in present]
        if absent:
            raise ValueError(
                f"modality {absent} requested but not in the inputs (keys {sorted(map(str, inputs))})"
            )
        empty = (~mask.any(dim=1)).nonzero().flatten().tolist()
        if empty:
            raise ValueError(f"no modality available for sample(s) {empty}")
        return b, mask

    def _modality_input(self, inputs: Mapping[str, Any], m: str, rows: torch.Tensor | None = None):
        x = inputs[m]
        if x.dim() == 2:
            x = x.unsqueeze(1)
        lengths = inputs.get(f"{m}_lengths")
        if lengths is not None:
            lengths = torch.as_tensor(lengths).reshape(-1)
            if lengths.shape[0] != x.shape[0]:
                raise ValueError(f"{m}_lengths has {lengths.shape[0]} entries for a batch of {x.shape[0]}")
            if bool((lengths < 1).any()) or bool((lengths > x.shape[1]).any()):
                raise ValueError(f"{m}_lengths must be in [1, {x.shape[1]}], got {lengths.tolist()[:8]}")
        if rows is not None:
            x = x[rows]
            lengths = None if lengths is None else lengths.to(rows.device)[rows]
        return x.float(), lengths

    # -- the streams -----------------------------------------------------------------------------
    def encode(
        self, inputs: Mapping[str, Any], modality: str, rows: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Latent (B, latent_size) of one modality (optionally only for batch ``rows``)."""
        x, lengths = self._modality_input(inputs, modality, rows)
        return self.encoders[modality](x, lengths)

    def predict_latent(self, z: torch.Tensor) -> torch.Tensor:
        """Shared encoder + regression head on latents (N, latent_size) -> (N, out_channels)."""
        return self.head(self.shared_encoder(z))

    def forward_streams(
        self, inputs: Mapping[str, Any], available=None, fold: bool = True
    ) -> dict[str, torch.Tensor]:
        """Per-modality predictions ``{name: (B, out_channels)}`` for the modalities available in the batch.

        Args:
            inputs: ``{modality: (B, T, d)}`` (+ optional ``<modality>_lengths``).
            available: restrict to these modalities for the whole batch (names, ``"text+audio"``, or a
                bool mask of shape (M,)); default: every modality present in ``inputs``.
            fold: run the shared encoder and head once on the concatenated latents (fast). With
                ``fold=False`` each modality is its own graph, so a subset objective's backward only runs
                through its own streams (what per-objective gradient methods such as GMD want).
        """
        b, mask = self._availability(inputs, available)
        if not bool((mask == mask[:1]).all()):
            raise ValueError("forward_streams needs the same available modalities for every sample")
        names = [self.modalities[i] for i in mask[0].nonzero().flatten().tolist()]
        latents = [self.encode(inputs, m) for m in names]
        if fold and len(names) > 1:
            out = self.predict_latent(torch.cat(latents, dim=0))
            return {m: out[k * b : (k + 1) * b] for k, m in enumerate(names)}
        return {m: self.predict_latent(z) for m, z in zip(names, latents)}

    def forward(self, inputs: Mapping[str, Any], available=None) -> torch.Tensor:
        """Fused prediction (B, out_channels): the mean over the available modalities' predictions.

        ``available`` may also be a (B, M) bool mask (one subset per sample, e.g. modality dropout);
        each modality encoder then runs only on the samples that have that modality.
        """
        b, mask = self._availability(inputs, available)
        fused = None
        for i, m in enumerate(self.modalities):
            col = mask[:, i]
            if not bool(col.any()):
                continue
            if bool(col.all()):
                h = self.predict_latent(self.encode(inputs, m))
                fused = h if fused is None else fused + h
            else:
                rows = col.nonzero().flatten()
                h = self.predict_latent(self.encode(inputs, m, rows))
                part = h.new_zeros((b, h.shape[1])).index_add(0, rows, h)
                fused = part if fused is None else fused + part
        count = mask.sum(dim=1, keepdim=True).to(fused.dtype)
        return fused / count

    # -- structure for GMD -----------------------------------------------------------------------
    def parameter_modality(self) -> dict[str, str | None]:
        """``{parameter name: modality}`` (``None`` for the shared encoder and head)."""
        out: dict[str, str | None] = {}
        for name, _ in self.named_parameters():
            parts = name.split(".")
            out[name] = parts[1] if parts[0] == "encoders" else None
        return out

    def shared_mask(self, subsets: Sequence[Sequence[int]] | None = None) -> list[bool]:
        """One bool per ``parameters()`` entry: True if every subset objective reaches it.

        Built from the structure: the shared encoder and head are reached by every subset; modality
        m's encoder only by the subsets that contain m.
        """
        return self.space.shared_mask(self.parameter_modality().values(), subsets)


def _describe(checkpoint) -> str:
    return str(checkpoint) if isinstance(checkpoint, (str, os.PathLike)) else "checkpoint"


def load_state_dict_from_checkpoint(
    checkpoint: str | os.PathLike | Mapping[str, Any], map_location: str | torch.device = "cpu"
) -> dict[str, Any]:
    """The model state dict inside a checkpoint (plain, or under ``model`` / ``network`` / ``state_dict``)."""
    if isinstance(checkpoint, (str, os.PathLike)):
        missing = f"no checkpoint at {checkpoint} (train the bundle first)"
        ckpt = load_checkpoint(checkpoint, map_location=map_location, missing=missing)
    else:
        ckpt = checkpoint
    return state_dict_of(ckpt, _describe(checkpoint))


def input_sizes_from_checkpoint(checkpoint: str | os.PathLike | Mapping[str, Any]) -> dict[str, int]:
    """``{modality: feature size}`` a checkpoint was trained with."""
    sd = load_state_dict_from_checkpoint(checkpoint)
    extra = sd.get("_extra_state")
    if isinstance(extra, Mapping) and "config" in extra:
        return dict(extra["config"]["input_sizes"])
    out = {}
    for k, v in sd.items():
        parts = k.split(".")
        if parts[0] == "encoders" and parts[2:] in (["rnn", "weight_ih_l0"], ["proj", "weight"]):
            out[parts[1]] = int(v.shape[1])
    if not out:
        raise ValueError(f"{_describe(checkpoint)}: cannot find the input sizes in the checkpoint")
    return out
