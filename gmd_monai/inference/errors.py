"""Errors of the inference path (defined in :mod:`gmd_monai.errors`; this import path is kept).

The command line turns these into a one-line message and exit code 2, without a traceback.
"""

from __future__ import annotations

from gmd_monai.errors import CheckpointError, InferenceError, InputError, ModelError

__all__ = ["CheckpointError", "InferenceError", "InputError", "ModelError"]
