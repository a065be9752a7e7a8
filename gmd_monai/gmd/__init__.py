"""GMD core: gradient surgery over modality-subset objectives. Plain PyTorch, no MONAI import.

* :mod:`.projection`: the PCGrad rule on a Gram matrix -> per-objective weights (exact, seeded).
* :mod:`.surgery`: per-objective gradients, Gram matrix, merge into ``.grad``, diagnostics.
* :mod:`.aggregators`: ``gmd``, ``mean``, ``dropout`` and torchjd weightings behind one interface.
"""

from .aggregators import (
    GMD,
    TORCHJD_WEIGHTINGS,
    Aggregator,
    MeanLoss,
    ModalityDropout,
    TorchJDWeighting,
    available_methods,
    make_aggregator,
)
from .projection import count_conflicts, pcgrad_coefficients, random_permutations
from .surgery import SurgeryDiagnostics, objective_gradients

__all__ = [
    "GMD",
    "TORCHJD_WEIGHTINGS",
    "Aggregator",
    "MeanLoss",
    "ModalityDropout",
    "SurgeryDiagnostics",
    "TorchJDWeighting",
    "available_methods",
    "count_conflicts",
    "make_aggregator",
    "objective_gradients",
    "pcgrad_coefficients",
    "random_permutations",
]
