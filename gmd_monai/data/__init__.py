"""Datasets: BraTS naming, file checks, datalists, labels and transforms; synthetic demo data."""

from gmd_monai.data.checks import CheckBratsCased, DatasetIntegrityError, validate_case, verify_dataset
from gmd_monai.data.datalist import build_datalist, read_case_list, scan_brats_folder
from gmd_monai.data.labels import LABEL_FORMATS, REGION_NAMES, convert_labels_to_regions
from gmd_monai.data.synthetic import ensure_synthetic_brats, make_synthetic_brats
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
    "REGION_NAMES",
    "CheckBratsCased",
    "CheckFinited",
    "ConvertBratsLabelsToRegionsd",
    "DatasetIntegrityError",
    "RandPosNegCropd",
    "RobustZScoreNormalized",
    "build_datalist",
    "convert_labels_to_regions",
    "ensure_synthetic_brats",
    "make_synthetic_brats",
    "read_case_list",
    "robust_zscore",
    "scan_brats_folder",
    "train_transforms",
    "val_transforms",
    "validate_case",
    "verify_dataset",
]
