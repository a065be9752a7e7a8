"""Readers for multimodal sentiment data (CMU-MOSI / CMU-MOSEI and friends), with validation.

Every reader returns ``{split: SentimentSplit}`` with the splits ``train`` / ``valid`` / ``test`` (as
present) and per-modality feature arrays of shape (N, T_m, d_m). Feature sizes (and lengths) are read
from the data, never assumed per dataset.

Supported sources, one module and one :class:`SentimentReader` each (:func:`load_sentiment` picks it):

============  ==================================================================  =========================
``mult``      MulT's word-aligned pickles (``mosi_data.pkl``,                      :mod:`.sentiment_mult`
              ``mosei_senti_data.pkl``): ``text`` / ``audio`` / ``vision`` and
              ``labels`` per split
``mmsa``      MMSA's pickles (``aligned_50.pkl``, ``unaligned_50.pkl``): BERT or   :mod:`.sentiment_mmsa`
              GloVe ``text`` features, ``audio``, ``vision``, optional lengths,
              ``regression_labels`` per split
``csd``       CMU-MultimodalSDK computational sequences (HDF5 ``.csd``): a label   :mod:`.sentiment_csd`
              sequence, one feature sequence per modality aligned to its segments
              (:func:`align_to_segments`), the standard folds JSON
``mfn_h5``    The MFN project's aligned HDF5 folders (``y_<split>.h5`` and one     :mod:`.sentiment_mfn`
              file per modality; one-hot labels over 3 classes become -1 / 0 / 1)
============  ==================================================================  =========================

This module gathers the names of the sentiment data modules, so that configs
(``gmd_monai.data.sentiment.SentimentDataset``) and users' imports keep working: the four format
modules above, and

- :mod:`gmd_monai.data.sentiment_splits`: the split names and :class:`SentimentSplit`;
- :mod:`gmd_monai.data.sentiment_checks`: the validation every reader shares;
- :mod:`gmd_monai.data.sentiment_files`: which files are unpickled (``.pkl`` / ``.pickle`` only) or read
  as HDF5;
- :mod:`gmd_monai.data.sentiment_readers`: the reader interface (``detect(path)``, ``read(path,
  **kwargs)``), one reader per format, :func:`find_reader` that picks one, :func:`load_sentiment`;
- :mod:`gmd_monai.data.sentiment_dataset`: :class:`SentimentDataset`, the torch dataset of one split.

Validation (clear errors naming the file, split and modality): missing splits or keys, arrays of the
wrong rank, feature sizes that differ between splits, mismatched sample counts, NaN features (unless
``nan_to_zero=True``) and NaN labels. ``+-inf`` features (COVAREP audio has ``-inf``) are set to 0 and
the count is logged. Pickles execute code when loaded: only read files from a trusted source. Only
``.pkl`` / ``.pickle`` files are ever unpickled; any other file that is not ``.csd`` / ``.h5`` / ``.hdf5``
is refused unread.

Example (with MulT's CMU-MOSI pickle)::

    splits = load_sentiment("mosi_data.pkl")          # format detected from the content
    splits["train"].feature_sizes                      # {'text': 300, 'audio': 5, 'vision': 20}
    ds = SentimentDataset("mosi_data.pkl", split="train")
    sorted(ds[0])                                      # ['audio', 'id', 'label', 'text', 'vision']
"""

from __future__ import annotations

from gmd_monai.data.sentiment_csd import (
    CSDSequence,
    align_to_segments,
    csd_label_segments,
    load_csd_dataset,
    read_csd,
    read_folds,
)
from gmd_monai.data.sentiment_dataset import SentimentDataset
from gmd_monai.data.sentiment_files import HDF5_SUFFIXES, PICKLE_SUFFIXES
from gmd_monai.data.sentiment_mfn import load_mfn_h5
from gmd_monai.data.sentiment_mmsa import load_mmsa_pickle
from gmd_monai.data.sentiment_mult import load_mult_pickle
from gmd_monai.data.sentiment_readers import (
    FORMATS,
    READERS,
    CSDReader,
    MFNReader,
    MMSAReader,
    MultReader,
    PickleReader,
    SentimentReader,
    detect_format,
    find_reader,
    load_sentiment,
)
from gmd_monai.data.sentiment_splits import SPLITS, SentimentSplit

__all__ = [
    "FORMATS",
    "HDF5_SUFFIXES",
    "PICKLE_SUFFIXES",
    "READERS",
    "SPLITS",
    "CSDReader",
    "CSDSequence",
    "MFNReader",
    "MMSAReader",
    "MultReader",
    "PickleReader",
    "SentimentDataset",
    "SentimentReader",
    "SentimentSplit",
    "align_to_segments",
    "csd_label_segments",
    "detect_format",
    "find_reader",
    "load_csd_dataset",
    "load_mfn_h5",
    "load_mmsa_pickle",
    "load_mult_pickle",
    "load_sentiment",
    "read_csd",
    "read_folds",
]
