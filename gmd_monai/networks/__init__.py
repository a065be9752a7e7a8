"""Networks: the Dynamic Sharing models."""

from .ds_unet import DynamicSharingUNet, ModalityGroupNorm, resolve_availability

__all__ = ["DynamicSharingUNet", "ModalityGroupNorm", "resolve_availability"]
