"""MONAI Label app serving this bundle (the folder above this one), with the label map's real names.

    monailabel start_server --app bundle/monailabel --studies /data/studies --host 127.0.0.1

``bundle/docs/run_monailabel.sh`` runs exactly this. The app is MONAI Label's ``monaibundle`` sample app
reduced to this bundle, with one change: MONAI Label's ``BundleInferTask`` names labels from the
``channel_def`` of the first ``network_data_format.outputs`` entry of ``metadata.json``, which for this
bundle is the network's three overlapping region channels (WT, TC, ET), while what the bundle returns
is a BraTS label map (0 background, 1 necrotic core, 2 oedema, 4 or 3 enhancing tumour). The infer task
below names the values the map really holds, following the bundle's ``label_format``.

Training (``/train``) is MONAI Label's ``BundleTrainTask`` (``configs/train.yaml`` on the datastore's
labelled images), changed so that it continues the served weights: MONAI Label would load them with
``strict=False`` into train.yaml's default network, which has another width, so every tensor would be
skipped and a new model trained from scratch on another voxel grid. Here the width, grid and crop come
from the weights (:func:`gmd_monai.fine_tuning.fine_tuning_overrides`) and they are loaded strictly. The
served ``models/model.pt`` is copied to ``models/model_before_train_<UTC time>.pt`` first (MONAI Label
lists it as a choice of weights), then replaced by the run's best validation model, as MONAI Label
expects; validation runs at least once per request (every min(10, max_epochs) epochs).
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import time

import monailabel
from monailabel.interfaces.app import MONAILabelApp
from monailabel.tasks.activelearning.first import First
from monailabel.tasks.activelearning.random import Random
from monailabel.tasks.infer.bundle import BundleInferTask
from monailabel.tasks.train.bundle import BundleTrainTask

logger = logging.getLogger(__name__)

BUNDLE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL_NAME = "gmd_ds_brats"


class LabelMapInferTask(BundleInferTask):
    """MONAI Label's bundle inference, with labels named from the bundle's ``label_names`` ({value: name})."""

    def __init__(self, path: str, conf: dict, **kwargs) -> None:
        super().__init__(path, conf, type="segmentation", **kwargs)
        if not self.is_valid():
            return
        sys.path.insert(0, path)  # a zoo archive carries the package under scripts/
        try:
            names = self.bundle_config.get_parsed_content("label_names", instantiate=True)
        finally:
            sys.path.remove(path)
        self.labels = {name: int(value) for value, name in names.items()}
        logger.info(f"Model: {MODEL_NAME}; labels {self.labels}")


class FineTuneTrainTask(BundleTrainTask):
    """MONAI Label's bundle training, continuing the served weights at the settings they record."""

    def _load_checkpoint(self, model_pytorch, pretrained, train_handlers) -> None:
        # instead of MONAI Label's CheckpointLoader(strict=False): init_weights, strict (_update_overrides)
        self._init_from = model_pytorch if pretrained and os.path.isfile(model_pytorch) else None

    def __call__(self, request, datastore):
        self._max_epochs = int(request.get("max_epochs", 50))
        return super().__call__(request, datastore)

    def _update_overrides(self, overrides: dict) -> dict:
        scripts = os.path.join(self.bundle_path, "scripts")  # a zoo archive carries the package there
        if os.path.isdir(os.path.join(scripts, "gmd_monai")) and scripts not in sys.path:
            sys.path.insert(0, scripts)
        from gmd_monai.fine_tuning import fine_tuning_overrides

        if self._init_from:
            stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
            backup = os.path.join(os.path.dirname(self._init_from), f"model_before_train_{stamp}.pt")
            shutil.copy2(self._init_from, backup)
            logger.info(f"served weights kept as {backup}; training continues from them")
            overrides.update(fine_tuning_overrides(backup))
        # MONAI Label's training replaces the served model.pt (the bundle refuses that unless told)
        overrides.update(
            overwrite=True,
            val_interval=max(1, min(10, self._max_epochs)),
            progress_bar=False,
            iteration_log=False,
        )
        return overrides


class GMDBratsApp(MONAILabelApp):
    """The bundle above this folder, or another copy of it with ``--conf bundle /path/to/bundle``."""

    def __init__(self, app_dir: str, studies: str, conf: dict) -> None:
        self.bundle_dir = os.path.realpath(conf.get("bundle", BUNDLE_DIR))
        super().__init__(
            app_dir=app_dir,
            studies=studies,
            conf=conf,
            name=f"GMD + Dynamic Sharing, BraTS (MONAI Label {monailabel.__version__})",
            description="Brain-tumour segmentation from any subset of T1, T1ce, T2, FLAIR",
            version=monailabel.__version__,
        )

    def init_infers(self) -> dict:
        task = LabelMapInferTask(self.bundle_dir, self.conf)
        return {MODEL_NAME: task} if task.is_valid() else {}

    def init_trainers(self) -> dict:
        if self.conf.get("skip_trainers", "false").lower() == "true":
            return {}
        task = FineTuneTrainTask(self.bundle_dir, self.conf)
        return {MODEL_NAME: task} if task.is_valid() else {}

    def init_strategies(self) -> dict:
        return {"random": Random(), "first": First()}
