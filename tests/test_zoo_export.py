"""The Model Zoo's checks on the bundle: the network's in/out shapes from metadata.json, TorchScript export
by scripting (``monai.bundle ckpt_export``) and ONNX export, each checked against the eager network on
every modality subset.

The DS U-Net runs only the available modality streams. Scripted, it keeps that: ``forward(x, available)``
takes ``None`` or a boolean mask, so the exported model still serves any subset. The ONNX graph runs every
stream and weights the mean by the mask (static shapes); the mask is a second graph input.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from monai.bundle import ckpt_export, onnx_export, verify_net_in_out

from gmd_monai.inference.model import default_model_path, model_config
from gmd_monai.networks import DynamicSharingUNet
from gmd_monai.subsets import BRATS_MODALITIES

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "bundle" / "configs"
INFERENCE = str(CONFIGS / "inference.yaml")
META = str(CONFIGS / "metadata.json")
#: every non-empty subset as a (4,) boolean mask, in BRATS_MODALITIES order
MASKS = [torch.tensor([bool(k >> i & 1) for i in range(4)]) for k in range(1, 16)]


def _net(seed: int = 0) -> DynamicSharingUNet:
    """A small DS U-Net whose per-modality norm affines differ (so that a mixed-up modality shows)."""
    torch.manual_seed(seed)
    net = DynamicSharingUNet(width=0.25).eval()
    with torch.no_grad():
        for name, p in net.named_parameters():
            if ".weight." in name or ".bias." in name:
                p.add_(0.3 * torch.randn_like(p))
    return net


def test_verify_net_in_out():
    """The zoo's shape check: metadata's input (4 channels, 48^3 patches) gives its output (3 channels)."""
    verify_net_in_out(net_id="network_def", meta_file=META, config_file=INFERENCE, device="cpu", n=1, any=1)


def test_scripted_network_equals_eager_for_every_subset():
    net = _net()
    scripted = torch.jit.script(net)
    x = torch.randn(2, 4, 16, 16, 16)
    with torch.no_grad():
        for mask in MASKS:
            assert torch.equal(scripted(x, mask), net(x, mask)), mask
        assert torch.equal(scripted(x), net(x))
        per_sample = torch.stack([MASKS[0], MASKS[-1]])  # a (B, M) mask: t1 alone, all four
        assert torch.equal(scripted(x, per_sample), net(x, per_sample))
        with pytest.raises(torch.jit.Error, match="no modality available"):
            scripted(x, torch.zeros(4, dtype=torch.bool))
    # scripting compiles a copy: the eager network keeps its per-modality ParameterDicts
    assert "inc.norm1.weight.t1ce" in dict(net.named_parameters())
    assert "inc.norm1.weight" in dict(scripted.named_parameters())


@pytest.mark.skipif(not default_model_path().is_file(), reason="no shipped weights in bundle/models")
def test_ckpt_export_of_the_shipped_model_by_scripting(tmp_path):
    """``python -m monai.bundle ckpt_export network_def --filepath model.ts --ckpt_file models/model.pt
    --key_in_ckpt model ...``: scripted (not traced), the shipped weights, any subset as eager."""
    ts = tmp_path / "model.ts"
    ckpt_export(
        net_id="network_def",
        filepath=str(ts),
        ckpt_file=str(default_model_path()),
        meta_file=META,
        config_file=INFERENCE,
        key_in_ckpt="model",
        bundle_root=str(ROOT / "bundle"),
    )
    exported = torch.jit.load(str(ts))
    net = DynamicSharingUNet(BRATS_MODALITIES, width=model_config()["width"])
    state = torch.load(default_model_path(), map_location="cpu", weights_only=True)["model"]
    net.load_state_dict(state)
    net.eval()
    x = torch.randn(1, 4, 32, 32, 32)
    with torch.no_grad():
        for mask in MASKS:
            assert torch.equal(exported(x, mask), net(x, mask)), mask


def _onnxruntime():
    return pytest.importorskip("onnxruntime", reason="onnxruntime: a dev dependency (pip install -e .[dev])")


def test_onnx_export_with_a_mask_input_matches_eager_for_every_subset(tmp_path):
    onnxruntime = _onnxruntime()
    net = _net(1)
    x = torch.randn(1, 4, 32, 32, 32)
    path = tmp_path / "model.onnx"
    torch.onnx.export(
        net,
        (x, MASKS[-1]),
        str(path),
        input_names=["image", "available"],
        output_names=["pred"],
        dynamo=False,
    )
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["image", "available"]
    with torch.no_grad():
        for mask in MASKS:
            got = session.run(None, {"image": x.numpy(), "available": mask.numpy()})[0]
            np.testing.assert_allclose(got, net(x, mask).numpy(), rtol=1e-4, atol=1e-4, err_msg=str(mask))


@pytest.mark.skipif(not default_model_path().is_file(), reason="no shipped weights in bundle/models")
def test_bundle_onnx_export_full_set_verified_with_onnxruntime(tmp_path):
    """``python -m monai.bundle onnx_export network_def --use_trace true --ckpt_file models/model.pt
    --key_in_ckpt model ...`` (one graph input: the full set); MONAI's own check compares onnxruntime
    with PyTorch."""
    _onnxruntime()
    onnx_export(
        net_id="network_def",
        filepath=str(tmp_path / "model.onnx"),
        meta_file=META,
        config_file=INFERENCE,
        ckpt_file=str(default_model_path()),
        key_in_ckpt="model",
        use_trace=True,
        input_shape=[1, 4, 32, 32, 32],
        converter_kwargs={"dynamo": False, "verify": True, "use_ort": True, "rtol": 1e-4, "atol": 1e-4},
        bundle_root=str(ROOT / "bundle"),
    )
    assert (tmp_path / "model.onnx").stat().st_size > 0
