"""Reading one patient's images: modality names, NIfTI / DICOM sources, checks, case folders, datalists.

This module gathers the names of the inference input modules, so that configs
(``gmd_monai.inference.io.read_inference_datalist``) and users' imports keep working:

- :mod:`gmd_monai.data.naming`: modality names and aliases, file naming, sibling modality files
  (shared with training);
- :mod:`gmd_monai.inference.sources`: which file or DICOM folder holds which modality;
- :mod:`gmd_monai.inference.images`: reading one image with its checks, writing a NIfTI like another;
- :mod:`gmd_monai.inference.case`: a whole case on the reference grid;
- :mod:`gmd_monai.inference.datalist`: the cases bundle inference segments.

An input is an :class:`ImageSource`: a modality name, a path (a NIfTI file, any other file SimpleITK
reads, or a folder holding ONE DICOM series) and, for a 4-D file, the volume index. :func:`load_case`
reads the sources, checks them (clear errors naming the file) and brings every modality onto the
reference grid: the first available of T1ce, FLAIR, T2, T1 (resampled with a warning when the grids
differ; optionally rigidly co-registered).

Accepted modality names (case-insensitive) and aliases::

    t1     t1, t1n, t1w            (BraTS 2021+: -t1n)
    t1ce   t1ce, t1c, t1gd         (BraTS 2021+: -t1c)
    t2     t2, t2w                 (BraTS 2021+: -t2w)
    flair  flair, t2f, t2flair     (BraTS 2021+: -t2f)

Example:
    >>> from gmd_monai.data.synthetic import ensure_synthetic_brats
    >>> p = ensure_synthetic_brats("synth", num_cases=2, shape=(32, 32, 32)) + "/Synth_000/Synth_000"
    >>> sources = sources_from_item({"image": {"t1ce": p + "_t1ce.nii.gz", "flair": p + "_flair.nii.gz"}})
    >>> case = load_case(sources)                   # a folder holding one DICOM series works alike
    >>> case.modalities, case.reference
    (('t1ce', 'flair'), 't1ce')
"""

from __future__ import annotations

from gmd_monai.data.naming import (
    IMAGE_EXTENSIONS,
    MODALITY_ALIASES,
    canonical_modality,
    find_siblings,
    parse_modality_list,
)
from gmd_monai.inference.case import REFERENCE_PRIORITY, LoadedCase, case_id_of, case_to_metatensor, load_case
from gmd_monai.inference.datalist import read_inference_datalist
from gmd_monai.inference.images import read_source, write_nifti_like
from gmd_monai.inference.sources import (
    ImageSource,
    check_sources,
    find_case_files,
    find_case_folders,
    sources_from_item,
)

__all__ = [
    "IMAGE_EXTENSIONS",
    "MODALITY_ALIASES",
    "REFERENCE_PRIORITY",
    "ImageSource",
    "LoadedCase",
    "canonical_modality",
    "case_id_of",
    "case_to_metatensor",
    "check_sources",
    "find_case_files",
    "find_case_folders",
    "find_siblings",
    "load_case",
    "parse_modality_list",
    "read_inference_datalist",
    "read_source",
    "sources_from_item",
    "write_nifti_like",
]
