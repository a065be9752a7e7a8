"""Fine-tuning trained weights with train.yaml (MONAI Label's /train uses it): the network, grid and crop
come from the weights, which are loaded strictly."""

from pathlib import Path

import pytest
import torch
from conftest import brats_train_overrides, run_workflow
from monai.bundle import ConfigWorkflow

from gmd_monai.checkpointing import model_meta, read_model_meta
from gmd_monai.data.synthetic import make_synthetic_brats
from gmd_monai.errors import CheckpointError
from gmd_monai.fine_tuning import fine_tuning_overrides
from gmd_monai.networks import DynamicSharingUNet

REPO = Path(__file__).resolve().parents[1]
TRAIN = str(REPO / "bundle" / "configs" / "train.yaml")


def _weights(path: Path, width: float, meta_width: float | None = None) -> Path:
    torch.manual_seed(0)
    net = DynamicSharingUNet(out_channels=3, width=width)
    meta = model_meta(
        pixdim=2.0, width=meta_width or width, roi_size=[16, 16, 16], method="mean", loss="dice"
    )
    torch.save({"model": net.state_dict(), "model_meta": meta}, path)
    return path


def _train(tmp: Path, data: Path, **overrides) -> ConfigWorkflow:
    # width, grid and crop come from the weights (the overrides), not from the test's defaults
    base = brats_train_overrides(tmp, data, test_fraction=0.0, progress_bar=False)
    for key in ("width", "roi_size"):
        base.pop(key)
    return run_workflow(TRAIN, **{**base, **overrides})


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synth")
    make_synthetic_brats(root, num_cases=4, shape=(32, 32, 32), seed=3)
    return root


def test_overrides_come_from_the_weights(tmp_path):
    path = _weights(tmp_path / "model.pt", width=0.25)
    o = fine_tuning_overrides(path)
    assert o == {
        "init_weights": str(path),
        "width": 0.25,
        "model_pixdim": [2.0, 2.0, 2.0],
        "model_axcodes": "LPS",
        "modalities": ["t1", "t1ce", "t2", "flair"],
        "roi_size": [16, 16, 16],
        "loss": "dice",
        "method": "mean",
    }


def test_training_continues_from_the_weights_at_their_settings(tmp_path, data):
    """train.yaml's default width (0.5) and grid (1 mm) differ from the weights' (0.25, 2 mm): with the
    overrides the run trains the weights themselves (with learning rate 0 they come out unchanged)."""
    start = _weights(tmp_path / "start.pt", width=0.25)
    _train(tmp_path, data, learning_rate=0.0, weight_decay=0.0, **fine_tuning_overrides(start))
    out = tmp_path / "models" / "model.pt"
    meta = read_model_meta(out)
    assert meta["width"] == 0.25 and meta["pixdim"] == [2.0, 2.0, 2.0] and meta["method"] == "mean"
    assert meta["init_weights"] == str(start)
    before = torch.load(start, weights_only=True)["model"]
    after = torch.load(out, weights_only=True)["model"]
    assert before.keys() == after.keys()
    for k in before:
        torch.testing.assert_close(after[k], before[k], rtol=0, atol=0, msg=k)


def test_weights_that_do_not_fit_stop_the_run(tmp_path, data):
    """A lenient loader (MONAI Label's strict=False) would skip every tensor and train from scratch."""
    wrong = _weights(tmp_path / "wrong.pt", width=0.5, meta_width=0.25)  # recorded width is a lie
    with pytest.raises(Exception) as info:
        _train(tmp_path, data, **fine_tuning_overrides(wrong))
    chain, e = [], info.value
    while e is not None:
        chain.append(e)
        e = e.__cause__ or e.__context__
    assert any(isinstance(x, CheckpointError) and "wrong.pt" in str(x) for x in chain)
    assert not (tmp_path / "models" / "model.pt").exists()


def test_unusable_weights_are_named(tmp_path):
    with pytest.raises(CheckpointError, match="no such weights file"):
        fine_tuning_overrides(tmp_path / "missing.pt")
    bare = tmp_path / "bare.pt"
    torch.save({"model": {}}, bare)
    with pytest.raises(CheckpointError, match="bare.pt: the weights do not record"):
        fine_tuning_overrides(bare)
