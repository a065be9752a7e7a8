"""The clinician's inference path: one patient's partial MRI set -> tumour label map, report, montage.

Modules (data flows top to bottom):

- :mod:`~gmd_monai.inference.sources`: which file or DICOM folder holds which modality (names read with
  :mod:`gmd_monai.data.naming`, as in training);
- :mod:`~gmd_monai.inference.images`: reading one image with its checks, writing a NIfTI like another;
- :mod:`~gmd_monai.inference.case`: a whole case on the reference grid;
- :mod:`~gmd_monai.inference.datalist`: the cases bundle inference segments
  (:mod:`~gmd_monai.inference.io` gathers these names, the import path configs use);
- :mod:`~gmd_monai.inference.grid`: grid comparison, resampling, rigid co-registration (SimpleITK);
- :mod:`~gmd_monai.inference.transforms`: MONAI transforms and the modality-aware sliding-window
  inferer, shared with ``bundle/configs/inference.yaml``;
- :mod:`~gmd_monai.inference.model`: the trained weights;
- :mod:`~gmd_monai.inference.report`: volumes, measured accuracy, warnings, JSON, PNG montage;
- :mod:`~gmd_monai.inference.segment`: the pipeline and the ``segment`` / ``segment_batch`` commands.
"""

from gmd_monai.inference.errors import InferenceError, InputError, ModelError
from gmd_monai.inference.io import (
    ImageSource,
    LoadedCase,
    find_case_files,
    load_case,
    read_inference_datalist,
    sources_from_item,
)
from gmd_monai.inference.model import ModelInfo, default_model_path, load_network
from gmd_monai.inference.segment import SegmentationResult, segment, segment_batch
from gmd_monai.inference.transforms import (
    LoadModalitiesd,
    ModalitySlidingWindowInferer,
    RegionsToLabelsd,
    inference_postprocessing,
    inference_preprocessing,
    regions_to_labels,
)

__all__ = [
    "ImageSource",
    "InferenceError",
    "InputError",
    "LoadModalitiesd",
    "LoadedCase",
    "ModalitySlidingWindowInferer",
    "ModelError",
    "ModelInfo",
    "RegionsToLabelsd",
    "SegmentationResult",
    "default_model_path",
    "find_case_files",
    "inference_postprocessing",
    "inference_preprocessing",
    "load_case",
    "load_network",
    "read_inference_datalist",
    "regions_to_labels",
    "segment",
    "segment_batch",
    "sources_from_item",
]
