"""BraTS datasets: folder scanning, datalists (splits), file checks and MONAI transforms.

This module gathers the names of the BraTS data modules, so that configs (``gmd_monai.data.brats.
RobustZScoreNormalized``, ``gmd_monai.data.brats.train_transforms``) and users' imports keep working:

- :mod:`gmd_monai.data.naming`: the file naming conventions, modality names, sibling modality files;
- :mod:`gmd_monai.data.checks`: the files' header checks, one case or a whole dataset at once;
- :mod:`gmd_monai.data.datalist`: folder scanning, splits, the datalist JSON;
- :mod:`gmd_monai.data.labels`: label values and the (WT, TC, ET) regions;
- :mod:`gmd_monai.data.transforms`: the MONAI transforms and the training / validation pipelines.

Conventions used everywhere in this project:

- image channels in the order of :data:`gmd_monai.subsets.BRATS_MODALITIES` (``t1, t1ce, t2, flair``);
- labels become 3 region channels in the order ``(WT, TC, ET)``: WT = {1, 2, 4}, TC = {1, 4}, ET = {4}
  for BraTS 2018-2021 label maps, and WT = {1, 2, 3}, TC = {1, 3}, ET = {3} for the BraTS 2023+ maps
  (label 3 = enhancing tumour); the format is detected per volume;
- data dicts carry ``"image"`` (a list of 4 file paths, or one 4-D NIfTI path), ``"label"`` (the
  segmentation path) and ``"case"`` (the case id).

Two file naming conventions are recognised (``.nii.gz`` or ``.nii``):

- ``"brats2018"``: ``<case>/<case>_{t1,t1ce,t2,flair,seg}.nii.gz`` (BraTS 2018, 2019, 2020, 2021);
- ``"brats2021"``: ``<case>/<case>-{t1n,t1c,t2w,t2f,seg}.nii.gz`` (the hyphenated BraTS 2023+ naming,
  ``t1n -> t1``, ``t1c -> t1ce``, ``t2w -> t2``, ``t2f -> flair``).

Example (on the built-in synthetic data; a BraTS folder and ``split_dir=`` RFNet lists work alike):
    >>> from gmd_monai.data.synthetic import ensure_synthetic_brats
    >>> root = ensure_synthetic_brats("synthetic_brats", num_cases=4, shape=(32, 32, 32))
    >>> datalist = build_datalist(root, val_fraction=0.25, test_fraction=0.0)
    >>> sample = train_transforms(roi_size=(16, 16, 16))(datalist["training"][0])
    >>> tuple(sample["image"].shape), tuple(sample["label"].shape)
    ((4, 16, 16, 16), (3, 16, 16, 16))
"""

from __future__ import annotations

from gmd_monai.data.checks import CheckBratsCased, DatasetIntegrityError, validate_case, verify_dataset
from gmd_monai.data.datalist import build_datalist, load_or_build_datalist, read_case_list, scan_brats_folder
from gmd_monai.data.labels import LABEL_FORMATS, REGION_NAMES, convert_labels_to_regions
from gmd_monai.data.naming import NAMING_SUFFIXES
from gmd_monai.data.transforms import (
    CheckFinited,
    ConvertBratsLabelsToRegionsd,
    RandPosNegCropd,
    RobustZScoreNormalized,
    robust_zscore,
    train_transforms,
    val_transforms,
)

__all__ = [
    "LABEL_FORMATS",
    "NAMING_SUFFIXES",
    "REGION_NAMES",
    "CheckBratsCased",
    "CheckFinited",
    "ConvertBratsLabelsToRegionsd",
    "DatasetIntegrityError",
    "RandPosNegCropd",
    "RobustZScoreNormalized",
    "build_datalist",
    "load_or_build_datalist",
    "convert_labels_to_regions",
    "read_case_list",
    "robust_zscore",
    "scan_brats_folder",
    "train_transforms",
    "val_transforms",
    "validate_case",
    "verify_dataset",
]
