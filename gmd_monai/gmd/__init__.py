"""GMD core: gradient surgery over modality-subset objectives. Plain PyTorch, no MONAI import.

* :mod:`.projection`: the PCGrad rule on a Gram matrix -> per-objective weights (exact, seeded).
* :mod:`.surgery`: per-objective gradients, Gram matrix, merge into ``.grad``, diagnostics.
* :mod:`.fast`: exact per-objective gradients stream by stream (optionally batched VJPs), and a CPU
  speed-up for batch-1 3-D convolutions (:func:`enable_onednn_conv3d`).
* :mod:`.aggregators`: ``gmd``, ``fast_gmd`` (approximate), ``mean``, ``dropout`` and torchjd
  weightings behind one interface.
"""

from .aggregators import (
    GMD,
    TORCHJD_WEIGHTINGS,
    Aggregator,
    FastGMD,
    MeanLoss,
    ModalityDropout,
    TorchJDWeighting,
    available_methods,
    make_aggregator,
)
from .fast import STRATEGIES, enable_onednn_conv3d, stream_gradients
from .projection import count_conflicts, pcgrad_coefficients, random_permutations
from .surgery import SurgeryDiagnostics, objective_gradients

__all__ = [
    "GMD",
    "STRATEGIES",
    "FastGMD",
    "TORCHJD_WEIGHTINGS",
    "Aggregator",
    "MeanLoss",
    "ModalityDropout",
    "SurgeryDiagnostics",
    "TorchJDWeighting",
    "available_methods",
    "count_conflicts",
    "enable_onednn_conv3d",
    "make_aggregator",
    "objective_gradients",
    "pcgrad_coefficients",
    "random_permutations",
    "stream_gradients",
]
