import pytest
import torch

from gmd_monai.networks import DynamicSharingUNet


def test_parameter_counts():
    net = DynamicSharingUNet()
    total = sum(p.numel() for p in net.parameters())
    shared = sum(p.numel() for p, s in zip(net.parameters(), net.shared_mask()) if s)
    assert total == 3_245_235
    assert shared == 3_236_403
    per_mod = [
        sum(p.numel() for n, p in net.named_parameters() if n.endswith("." + m)) for m in net.modalities
    ]
    assert per_mod == [2_208] * 4
    assert sum(p.numel() for p in DynamicSharingUNet(width=1.0).parameters()) == 12_960_099


@pytest.fixture(scope="module")
def net_and_x():
    torch.manual_seed(0)
    net = DynamicSharingUNet(width=0.25).eval()
    return net, torch.randn(2, 4, 32, 32, 32)


def test_absent_stream_invariance(net_and_x):
    net, x = net_and_x
    with torch.no_grad():
        for avail in (["t1ce", "flair"], ["t2"], ["t1", "t1ce", "t2"]):
            idx = [net.modalities.index(m) for m in avail]
            a = net(x, avail)
            x_zero = torch.zeros_like(x)
            x_zero[:, idx] = x[:, idx]
            x_noise = torch.randn_like(x) * 100
            x_noise[:, idx] = x[:, idx]
            assert torch.equal(a, net(x_zero, avail))  # zero-filled absent channels
            assert torch.equal(a, net(x_noise, avail))  # absent channels never read
            assert torch.equal(a, net(x[:, idx], avail))  # omitted channels
            mask = torch.zeros(4, dtype=torch.bool)
            mask[idx] = True
            assert torch.equal(a, net(x, mask))


def test_fused_is_mean_of_stream_logits(net_and_x):
    net, x = net_and_x
    with torch.no_grad():
        streams = net.forward_streams(x)
        assert list(streams) == list(net.modalities)
        fused = net(x)
        assert torch.allclose(fused, sum(streams.values()) / 4, atol=1e-6)
        two = net(x, "t1ce+flair")
        assert torch.allclose(two, (streams["t1ce"] + streams["flair"]) / 2, atol=1e-5)
        # per-sample availability: each sample fuses only its own modalities
        mask = torch.tensor([[True, False, False, True], [False, True, True, True]])
        per = net(x, mask)
        assert torch.allclose(per[0], (streams["t1"][0] + streams["flair"][0]) / 2, atol=1e-5)
        assert torch.allclose(
            per[1], (streams["t1ce"][1] + streams["t2"][1] + streams["flair"][1]) / 3, atol=1e-5
        )
        # separate-graph streams give the same numbers as folded ones
        sep = net.forward_streams(x, fold=False)
        for m in net.modalities:
            assert torch.allclose(sep[m], streams[m], atol=1e-4)


def test_streams_run_only_available(net_and_x):
    net, x = net_and_x
    calls = []
    h = net.inc.conv1.register_forward_hook(lambda mod, inp, out: calls.append(inp[0].shape[0]))
    with torch.no_grad():
        net(x, ["t2"])
        net(x, ["t1", "flair"])
    h.remove()
    assert calls == [2, 4]  # batch 2 x 1 stream, then batch 2 x 2 streams


def test_separate_streams_backward_touches_only_subset(net_and_x):
    net, x = net_and_x
    streams = net.forward_streams(x[:1], fold=False)
    loss = ((streams["t1ce"] + streams["flair"]) / 2).mean()
    grads = torch.autograd.grad(loss, list(net.parameters()), allow_unused=True)
    names = [n for n, _ in net.named_parameters()]
    for n, g in zip(names, grads):
        if n.endswith(".t1") or n.endswith(".t2"):
            assert g is None, n
        if n.endswith(".t1ce"):
            assert g is not None


def test_errors(net_and_x):
    net, x = net_and_x
    with pytest.raises(ValueError, match="unknown modality name 'pd'"):
        net(x, ["pd"])
    with pytest.raises(ValueError, match="no modality given"):
        net(x, [])
    with pytest.raises(ValueError, match=r"no modality available for sample\(s\) \[1\]"):
        net(x, torch.tensor([[True, False, False, False], [False] * 4]))
    with pytest.raises(ValueError, match="input has 3 channels"):
        net(x[:, :3])
    with pytest.raises(ValueError, match="divisible by 16"):
        net(torch.randn(1, 4, 24, 32, 32))
