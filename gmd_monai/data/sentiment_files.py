"""Which sentiment files are opened, and how: only ``.pkl`` / ``.pickle`` files are ever unpickled.

Pickles execute code when loaded: only read files from a trusted source. Any other file that is not
``.csd`` / ``.h5`` / ``.hdf5`` is refused unread.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

__all__ = ["HDF5_SUFFIXES", "PICKLE_SUFFIXES", "is_pickle", "read_pickle"]

#: The only file endings that are unpickled: unpickling runs code, so nothing else is ever opened as one.
PICKLE_SUFFIXES = (".pkl", ".pickle")
#: File endings read as HDF5 (CMU-MultimodalSDK ``.csd``, MFN ``.h5``).
HDF5_SUFFIXES = (".csd", ".h5", ".hdf5")


def is_pickle(p: Path) -> bool:
    return p.is_file() and p.suffix.lower() in PICKLE_SUFFIXES


def read_pickle(path: str | os.PathLike) -> Any:
    """Unpickle ``path`` (``.pkl`` / ``.pickle`` only, checked before opening; unpickling runs code)."""
    path = Path(path)
    if path.suffix.lower() not in PICKLE_SUFFIXES:
        raise ValueError(
            f"{path}: not unpickled: only {' / '.join(PICKLE_SUFFIXES)} files are read as pickles "
            "(unpickling runs code); rename a trusted pickle to .pkl"
        )
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    with open(path, "rb") as f:
        try:
            try:
                return pickle.load(f)
            except UnicodeDecodeError:  # pickles written by Python 2
                f.seek(0)
                return pickle.load(f, encoding="latin1")
        except (EOFError, pickle.UnpicklingError, ValueError, TypeError) as e:
            raise ValueError(f"{path}: truncated or corrupt pickle ({type(e).__name__}: {e})") from e
