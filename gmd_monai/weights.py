"""The one checkpoint loader: a weights file, the network ``state_dict`` inside it, loaded into a network.

Every reader of weights (inference, evaluation, warm restarts, the sequence model, the best-model
bookkeeping) goes through :func:`load_checkpoint`. What is wrong with a file that exists is one error,
:class:`~gmd_monai.errors.CheckpointError`: unreadable, no ``state_dict`` inside, or weights that do not
fit the network (one line and exit 2 at the command line).

Example:
    >>> import torch
    >>> state_dict_of({"model": {"module.w": torch.zeros(1)}}, "model.pt")
    {'w': tensor([0.])}
    >>> state_dict_of({"epoch": 3}, "model.pt")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    gmd_monai.errors.CheckpointError: model.pt: not a network state_dict (expected a state_dict, bare or ...)
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from gmd_monai.errors import CheckpointError

__all__ = [
    "STATE_DICT_KEYS",
    "CheckpointError",
    "load_checkpoint",
    "load_state_dict_into",
    "load_weights",
    "state_dict_of",
]

#: Keys a checkpoint may hold the state_dict under (MONAI's CheckpointSaver writes ``model``).
STATE_DICT_KEYS: tuple[str, ...] = ("model", "state_dict", "network")


def _first_line(e: BaseException) -> str:
    text = str(e)
    return text.splitlines()[0] if text else ""


def load_checkpoint(
    path: str | os.PathLike, map_location: str | torch.device = "cpu", missing: str | None = None
) -> Any:
    """Read a checkpoint file (``torch.load`` with ``weights_only=True``).

    Args:
        path: the file.
        map_location: where tensors go.
        missing: the message when there is no file (say how to get one); default ``"<path>: checkpoint
            file not found"``.

    Raises:
        FileNotFoundError: no file at ``path``.
        CheckpointError: the file is not a readable checkpoint (the message names it).
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(missing or f"{p}: checkpoint file not found")
    try:
        return torch.load(p, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises many types for corrupt or foreign files
        reason = f"{type(e).__name__}: {_first_line(e)}"
        raise CheckpointError(f"{p}: cannot read the checkpoint ({reason})") from e


def state_dict_of(checkpoint: Any, source: str | os.PathLike = "checkpoint") -> dict[str, Any]:
    """The network ``state_dict`` in a loaded checkpoint: bare or under one of :data:`STATE_DICT_KEYS`,
    with DDP's ``module.`` prefix removed. Values are tensors (``*_extra_state`` entries excepted).

    Raises:
        CheckpointError: no such state_dict (``source`` names the file).
    """
    state = checkpoint
    if isinstance(state, Mapping):
        for key in STATE_DICT_KEYS:
            if isinstance(state.get(key), Mapping):
                state = state[key]
                break
    if (
        not isinstance(state, Mapping)
        or not state
        or not all(isinstance(v, torch.Tensor) or str(k).endswith("_extra_state") for k, v in state.items())
    ):
        raise CheckpointError(
            f"{source}: not a network state_dict (expected a state_dict, bare or under "
            f"{', '.join(repr(k) for k in STATE_DICT_KEYS[:-1])} or {STATE_DICT_KEYS[-1]!r})"
        )
    return {k[len("module.") :] if k.startswith("module.") else k: v for k, v in state.items()}


def load_state_dict_into(
    network: torch.nn.Module, state: Mapping[str, Any], source: str | os.PathLike
) -> None:
    """``network.load_state_dict(state, strict=True)`` (on the module inside a DDP wrapper).

    Raises:
        CheckpointError: the weights do not fit the network (``source`` names the file).
    """
    target = network.module if isinstance(getattr(network, "module", None), torch.nn.Module) else network
    try:
        target.load_state_dict(state, strict=True)
    except RuntimeError as e:
        reason = _first_line(e) or type(e).__name__
        raise CheckpointError(f"{source}: the weights do not fit the network ({reason})") from e


def load_weights(
    network: torch.nn.Module,
    path: str | os.PathLike,
    map_location: str | torch.device = "cpu",
    missing: str | None = None,
) -> Any:
    """Load the weights file at ``path`` into ``network``; returns the whole checkpoint (for its metadata).

    Raises:
        FileNotFoundError: no file (``missing``: the message, see :func:`load_checkpoint`).
        CheckpointError: unreadable, no state_dict, or weights that do not fit.
    """
    checkpoint = load_checkpoint(path, map_location, missing)
    load_state_dict_into(network, state_dict_of(checkpoint, path), path)
    return checkpoint
