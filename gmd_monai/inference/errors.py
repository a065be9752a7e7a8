"""Errors of the inference path: each message names the file (or option) and the problem.

The command line turns these into a one-line message and exit code 2, without a traceback.
"""

from __future__ import annotations

__all__ = ["InferenceError", "InputError", "ModelError"]


class InferenceError(Exception):
    """Base class of the errors the clinician-facing commands report as one line."""


class InputError(InferenceError, ValueError):
    """An input image or option is missing, unreadable or unusable (the message names it)."""


class ModelError(InferenceError, RuntimeError):
    """The model weights are missing, unreadable or do not fit the network."""
