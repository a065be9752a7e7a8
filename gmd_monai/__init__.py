"""gmd-monai: Gradient-Guided Modality Decoupling with Dynamic Sharing, as MONAI bundles."""

__version__ = "0.1.0"
