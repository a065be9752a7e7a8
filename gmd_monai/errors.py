"""The project's errors: each message names the file (or option) and the problem.

The command line turns these into a one-line message and exit code 2, without a traceback. Plain
Python with no import, so that any module (data, networks, inference) can raise them.
"""

from __future__ import annotations

__all__ = ["CheckpointError", "InferenceError", "InputError", "ModelError"]


class InferenceError(Exception):
    """Base class of the errors the commands report as one line."""


class InputError(InferenceError, ValueError):
    """An input image or option is missing, unreadable or unusable (the message names it)."""


class ModelError(InferenceError, RuntimeError):
    """The model weights are missing, unreadable or do not fit the network."""


class CheckpointError(ModelError, ValueError):
    """A weights file is unreadable, holds no network state_dict, or does not fit the network.

    Raised by :mod:`gmd_monai.weights`, the one checkpoint loader. A :class:`ModelError` for the
    inference path and a ``ValueError`` for the training and evaluation code that caught one before.
    """
