"""Datasets: BraTS naming, file checks, datalists, labels and transforms; synthetic demo data."""

from gmd_monai.data.brats import (
    LABEL_FORMATS,
    REGION_NAMES,
    CheckBratsCased,
    CheckFinited,
    ConvertBratsLabelsToRegionsd,
    DatasetIntegrityError,
    RandPosNegCropd,
    RobustZScoreNormalized,
    build_datalist,
    convert_labels_to_regions,
    read_case_list,
    robust_zscore,
    scan_brats_folder,
    train_transforms,
    val_transforms,
    validate_case,
    verify_dataset,
)
from gmd_monai.data.synthetic import ensure_synthetic_brats, make_synthetic_brats

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
