"""One reader per on-disk sentiment format, behind one interface, and the dispatch that picks one.

A :class:`SentimentReader` knows one format: :meth:`~SentimentReader.detect` tells whether a path holds
it, :meth:`~SentimentReader.read` returns ``{split: SentimentSplit}``. :data:`READERS` holds one reader
per name of :data:`FORMATS`:

==========  ===================  ========================================================================
``mult``    :class:`MultReader`  MulT's pickles (:mod:`gmd_monai.data.sentiment_mult`)
``mmsa``    :class:`MMSAReader`  MMSA's pickles (:mod:`gmd_monai.data.sentiment_mmsa`)
``csd``     :class:`CSDReader`   CMU-MultimodalSDK ``.csd`` sequences (:mod:`gmd_monai.data.sentiment_csd`)
``mfn_h5``  :class:`MFNReader`   MFN's aligned HDF5 folders (:mod:`gmd_monai.data.sentiment_mfn`)
==========  ===================  ========================================================================

:func:`find_reader` picks the reader of a path (:func:`detect_format` names it) and :func:`load_sentiment`
reads any format, keeping the last datasets in memory. The two pickle layouts are told apart by the label
key of their splits (:class:`PickleReader`), so a pickle is unpickled once per load; no file but a
``.pkl`` / ``.pickle`` is ever unpickled, not even to detect its format.
"""

from __future__ import annotations

import json
import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any, ClassVar

from gmd_monai.data.sentiment_checks import split_dicts
from gmd_monai.data.sentiment_csd import load_csd_dataset
from gmd_monai.data.sentiment_files import HDF5_SUFFIXES, PICKLE_SUFFIXES, is_pickle, read_pickle
from gmd_monai.data.sentiment_mfn import MFN_FILES, load_mfn_h5
from gmd_monai.data.sentiment_mmsa import mmsa_from_data
from gmd_monai.data.sentiment_mult import mult_from_data
from gmd_monai.data.sentiment_splits import SentimentSplit

__all__ = [
    "FORMATS",
    "READERS",
    "CSDReader",
    "MFNReader",
    "MMSAReader",
    "MultReader",
    "PickleReader",
    "SentimentReader",
    "detect_format",
    "find_reader",
    "load_sentiment",
    "pickle_reader",
]


class SentimentReader(ABC):
    """One on-disk sentiment format: recognise it (:meth:`detect`) and read it (:meth:`read`)."""

    #: The format's name: ``load_sentiment(format=...)``, a key of :data:`READERS`.
    format: ClassVar[str]

    @abstractmethod
    def detect(self, path: str | os.PathLike) -> bool:
        """Whether ``path`` holds this format (False for a path that does not exist)."""

    @abstractmethod
    def read(self, path: str | os.PathLike, **kwargs: Any) -> dict[str, SentimentSplit]:
        """Read ``path`` into ``{split: SentimentSplit}``; ``kwargs`` are this format's reader arguments."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class PickleReader(SentimentReader):
    """A layout of a pickled dict of splits (``.pkl`` / ``.pickle``), known by the label key of its splits.

    The content decides the layout, so :func:`load_sentiment` unpickles a file once and hands the data
    to :meth:`read_data`; :meth:`detect` unpickles the file to look at it.
    """

    #: The key of the labels in each split: it tells the layouts apart (see :func:`pickle_reader`).
    label_key: ClassVar[str]
    #: The layout's parser, ``parse(data, path, **kwargs)`` (a ``staticmethod``).
    parse: ClassVar[Callable[..., dict[str, SentimentSplit]]]

    def detect(self, path: str | os.PathLike) -> bool:
        p = Path(path)
        if not is_pickle(p):
            return False
        try:
            return pickle_reader(read_pickle(p), str(p)).format == self.format
        except ValueError:  # a corrupt pickle, not a dict of splits, another layout
            return False

    def read(self, path: str | os.PathLike, **kwargs: Any) -> dict[str, SentimentSplit]:
        return self.read_data(read_pickle(path), str(path), **kwargs)

    def read_data(self, data: Any, path: str, **kwargs: Any) -> dict[str, SentimentSplit]:
        """Read the unpickled ``data`` of ``path`` (``path`` only names the file in messages)."""
        return self.parse(data, path, **kwargs)


class MultReader(PickleReader):
    """MulT's pickles, per split ``text`` / ``audio`` / ``vision`` and ``labels``.

    Arguments: see :func:`~gmd_monai.data.sentiment_mult.load_mult_pickle`.
    """

    format = "mult"
    label_key = "labels"
    parse = staticmethod(mult_from_data)


class MMSAReader(PickleReader):
    """MMSA's pickles, per split ``text`` / ``audio`` / ``vision`` (with lengths) and ``regression_labels``.

    Arguments: see :func:`~gmd_monai.data.sentiment_mmsa.load_mmsa_pickle`.
    """

    format = "mmsa"
    label_key = "regression_labels"
    parse = staticmethod(mmsa_from_data)


class CSDReader(SentimentReader):
    """A CMU-MultimodalSDK label sequence (an HDF5 file: ``.csd``, ``.h5``, ``.hdf5``).

    :meth:`read` needs ``features={modality: .csd}`` and ``folds=`` (see
    :func:`~gmd_monai.data.sentiment_csd.load_csd_dataset`).
    """

    format = "csd"

    def detect(self, path: str | os.PathLike) -> bool:
        p = Path(path)
        return p.is_file() and p.suffix.lower() in HDF5_SUFFIXES

    def read(self, path: str | os.PathLike, **kwargs: Any) -> dict[str, SentimentSplit]:
        if "features" not in kwargs or "folds" not in kwargs:
            raise ValueError(
                f"{path}: a .csd dataset needs features={{modality: .csd}} and folds=<json> arguments"
            )
        return load_csd_dataset(path, **kwargs)


class MFNReader(SentimentReader):
    """An MFN aligned HDF5 folder: a folder with ``y_<split>.h5`` label files.

    Arguments: see :func:`~gmd_monai.data.sentiment_mfn.load_mfn_h5`.
    """

    format = "mfn_h5"

    def detect(self, path: str | os.PathLike) -> bool:
        p = Path(path)
        return p.is_dir() and any(p.glob(MFN_FILES["labels"].format("*")))

    def read(self, path: str | os.PathLike, **kwargs: Any) -> dict[str, SentimentSplit]:
        return load_mfn_h5(path, **kwargs)


_MULT, _MMSA = MultReader(), MMSAReader()
#: One reader per format, by name (read-only).
READERS: Mapping[str, SentimentReader] = MappingProxyType(
    {r.format: r for r in (_MULT, _MMSA, CSDReader(), MFNReader())}
)
#: Source formats accepted by :func:`load_sentiment`.
FORMATS: tuple[str, ...] = tuple(READERS)
#: The pickle layouts in the order they are tried: a split with ``regression_labels`` is MMSA's.
_PICKLE_LAYOUTS: tuple[PickleReader, ...] = (_MMSA, _MULT)


def pickle_reader(data: Any, path: str) -> PickleReader:
    """The reader of an unpickled dict of splits, by the keys of its first split (``path`` names it)."""
    splits = split_dicts(data, path, required=())
    if not splits:
        raise ValueError(f"{path}: no train/valid/test split in this pickle (keys: {sorted(map(str, data))})")
    first = next(iter(splits.values()))
    for reader in _PICKLE_LAYOUTS:
        if reader.label_key in first:
            return reader
    raise ValueError(
        f"{path}: unknown pickle layout (split keys {sorted(map(str, first))}); expected MulT "
        "('labels') or MMSA ('regression_labels')"
    )


def find_reader(path: str | os.PathLike) -> SentimentReader:
    """The reader of ``path``: a pickle's by its content, otherwise the first whose ``detect`` says yes.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: no reader knows ``path`` (the message names it; nothing was read), or a pickle is
            corrupt or of an unknown layout.
    """
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"no such file or folder: {p}")
    if is_pickle(p):  # unpickled once, here: MulT and MMSA differ only in content
        return pickle_reader(read_pickle(p), str(p))
    for reader in READERS.values():
        if reader.detect(p):
            return reader
    if p.is_dir():
        raise ValueError(f"{p}: cannot tell the format of this folder (no y_<split>.h5 files); pass format=")
    raise ValueError(
        f"{p}: unknown file type {p.suffix or '(no extension)'!r}; expected a pickle "
        f"({', '.join(PICKLE_SUFFIXES)}), a .csd file or an MFN HDF5 folder (nothing was read)"
    )


def detect_format(path: str | os.PathLike) -> str:
    """Guess the format of ``path``: ``mult`` / ``mmsa`` pickle, ``csd`` file or ``mfn_h5`` folder."""
    return find_reader(path).format


_CACHE: dict[tuple, dict[str, SentimentSplit]] = {}
_CACHE_SIZE = 2


def load_sentiment(
    path: str | os.PathLike, format: str = "auto", cache: bool = True, **kwargs: Any
) -> dict[str, SentimentSplit]:
    """Read a sentiment dataset in any supported format (see :mod:`gmd_monai.data.sentiment`).

    Args:
        path: the MulT / MMSA pickle, the label ``.csd`` (with ``features`` and ``folds`` in kwargs), or
            an MFN HDF5 folder.
        format: ``auto`` or one of :data:`FORMATS`.
        cache: keep the last two datasets in memory (the train and validation datasets of a bundle read
            the same file once).
        kwargs: reader arguments (``nan_to_zero``, ``label_index``, ``features``, ``folds``,
            ``num_steps``...).

    Returns:
        ``{split: SentimentSplit}``.
    """
    if format == "auto":
        fmt = "mult" if is_pickle(Path(path)) else detect_format(path)  # pickles: layout read below
    else:
        fmt = str(format).lower()
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {format!r}; expected 'auto' or one of {list(FORMATS)}")
    p = Path(path).resolve()
    key = (
        str(p),
        p.stat().st_mtime_ns if p.exists() else 0,
        fmt,
        json.dumps(kwargs, sort_keys=True, default=str),
    )
    if cache and key in _CACHE:
        return _CACHE[key]
    reader = READERS[fmt]
    if isinstance(reader, PickleReader):
        data = read_pickle(path)  # read once, also when the layout is detected from the content
        if format == "auto":
            reader = pickle_reader(data, str(path))
        out = reader.read_data(data, str(path), **kwargs)
    else:
        out = reader.read(path, **kwargs)
    if cache:
        while len(_CACHE) >= _CACHE_SIZE:
            _CACHE.pop(next(iter(_CACHE)))
        _CACHE[key] = out
    return out
