"""One device resolver for every command: ``"auto"`` or a device name -> a checked ``torch.device``.

Example:
    >>> resolve_device("cpu")
    device(type='cpu')
    >>> resolve_device("tpu")
    Traceback (most recent call last):
    ...
    ValueError: --device 'tpu': not a device name (use auto, cpu, cuda or cuda:N)
"""

from __future__ import annotations

import torch

__all__ = ["resolve_device"]


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``"auto"`` (or ``None``) -> CUDA when available, else CPU; otherwise ``torch.device(device)``,
    refused with ``ValueError`` (one line at the command line) when it is not a device name or names
    CUDA on a machine without it."""
    if device is None or str(device).lower() == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(str(device))
    except (RuntimeError, ValueError) as e:
        raise ValueError(f"--device {device!r}: not a device name (use auto, cpu, cuda or cuda:N)") from e
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {device}: CUDA is not available on this machine (use --device cpu)")
    return dev
