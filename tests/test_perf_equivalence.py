"""The fast paths give the same update as the slow ones: exact GMD strategies vs the naive reference
(``benchmarks/naive_gmd.py``, the authors' design), fast GMD's mechanics, cheap reductions."""

import importlib.util
from pathlib import Path

import pytest
import torch
from torch import nn

from gmd_monai.gmd import GMD, STRATEGIES, FastGMD, available_methods, make_aggregator, stream_gradients
from gmd_monai.gmd.projection import random_permutations
from gmd_monai.gmd.surgery import objective_gradients
from gmd_monai.losses import SubsetLoss
from gmd_monai.networks import DynamicSharingUNet

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _one_thread():
    """One intra-op thread: these many small ops gain nothing from two, and on a busy 2-core machine
    two OpenMP threads can wait on each other for 10x longer (measured)."""
    torch.set_num_threads(1)
    yield


def _load_naive():
    spec = importlib.util.spec_from_file_location("naive_gmd", ROOT / "benchmarks" / "naive_gmd.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


naive = _load_naive()


def _flat_grad(params):
    return torch.cat([p.grad.reshape(-1) for p in params])


def _setup(batch=1, size=16, seed=0):
    torch.manual_seed(seed)
    net = DynamicSharingUNet(width=0.25)
    x = torch.randn(batch, 4, size, size, size)
    y = (torch.rand(batch, 3, size, size, size) > 0.6).float()
    return net, x, y, SubsetLoss(net.modalities)


def _rel(a, b):
    return float((a - b).detach().abs().max() / b.detach().abs().max())


def _conflicting(size=16, seed=2):
    """A DS U-Net step whose subset objectives really disagree (13 conflicting pairs, 19 projections).

    Random weights and random targets give 0 conflicts: soft Dice pushes every subset's prediction
    toward the same target voxel by voxel. Here the odd modalities' streams see the sign-flipped
    image, and their group-norm scales are negated, so that their features (and their gradients on the
    shared convolutions) point the other way.
    """
    torch.manual_seed(seed)
    net = DynamicSharingUNet(width=0.25)
    with torch.no_grad():
        for mod in net.modules():
            if hasattr(mod, "weight") and isinstance(mod.weight, nn.ParameterDict):
                for m in net.modalities[1::2]:
                    mod.weight[m].neg_()
    g = torch.stack(torch.meshgrid(*[torch.arange(size, dtype=torch.float32)] * 3, indexing="ij"))
    blob = (((g - size / 2) ** 2).sum(0).sqrt() < size / 4).float()
    y = blob.expand(1, 3, size, size, size).clone()
    x = torch.stack([s * (2 * blob - 1) for s in (1, -1, 1, -1)])[None] + 0.1 * torch.randn(
        1, 4, size, size, size
    )
    return net, x, y, SubsetLoss(net.modalities)


@pytest.mark.parametrize("nonshared", ["mean", "sum"])
@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
def test_exact_gmd_matches_naive_with_real_conflicts(strategy, nonshared):
    net, x, y, crit = _conflicting()
    params = list(net.parameters())
    agg = GMD(
        params,
        names=crit.names,
        shared=net.shared_mask(),
        nonshared_reduction=nonshared,
        seed=3,
        strategy=strategy,
    )
    streams = net.forward_streams(x, fold=False)
    diag = agg.backward(crit(streams, y), streams=list(streams.values()))
    assert diag.num_conflicts > 0 and diag.num_projections > 0  # the projection path ran
    ours = _flat_grad(params).clone()
    net.zero_grad(set_to_none=True)
    ref = naive.naive_gmd_step(net, x, y, crit.loss, agg.last_permutations, nonshared_reduction=nonshared)
    assert _rel(ours, ref) <= 1e-5
    # and the projections changed the update: it is not the plain mean of the subset gradients
    net.zero_grad(set_to_none=True)
    torch.stack(list(crit(net.forward_streams(x, fold=False), y))).mean().backward()
    assert _rel(_flat_grad(params), ref) > 1e-2


# AMP is a GPU feature here (the trainer autocasts on CUDA only); these tests use CPU bf16 autocast as a
# stand-in. oneDNN's bf16 convolution backward in PyTorch 2.13 returns wrong weight gradients for some
# objectives of a GMD step, while each objective's gradient alone and float32 are right -- a oneDNN
# issue, not GMD's. Measured: non-finite gradients (up1.conv.conv1.weight) on Intel CPUs without native
# bf16 (emulated), and gradients of 1e29 with NaN projections on an AMD EPYC with avx512_bf16. So the
# tests run with oneDNN off: PyTorch's own bf16 convolution kernels are right, and the bf16 path of GMD
# is checked alike on every machine.
@pytest.fixture
def bf16_cpu():
    """bf16 CPU autocast with PyTorch's own convolution kernels (oneDNN off)."""
    before = torch.backends.mkldnn.enabled
    torch.backends.mkldnn.enabled = False
    try:
        yield
    finally:
        torch.backends.mkldnn.enabled = before


def test_bf16_autocast_gmd_matches_naive_with_real_conflicts(bf16_cpu):
    """bf16 autocast of the forward, on a step with conflicts: the exact GMD and the naive reference
    under the same autocast agree, and both stay close to the float32 update."""
    net, x, y, crit = _conflicting()
    params = list(net.parameters())
    agg = GMD(params, names=crit.names, shared=net.shared_mask(), seed=5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        losses = crit(net.forward_streams(x, fold=False), y)
    diag = agg.backward([loss.float() for loss in losses])
    assert diag.num_conflicts > 0 and diag.num_projections > 0
    ours = _flat_grad(params).clone()
    net.zero_grad(set_to_none=True)
    amp = naive.naive_gmd_step(
        net,
        x,
        y,
        crit.loss,
        agg.last_permutations,
        autocast=lambda: torch.autocast("cpu", dtype=torch.bfloat16),
    )
    net.zero_grad(set_to_none=True)
    fp32 = naive.naive_gmd_step(net, x, y, crit.loss, agg.last_permutations)
    assert _rel(ours, amp) <= 2e-2
    cosine = float(ours.double() @ fp32.double() / (ours.double().norm() * fp32.double().norm()))
    assert 0.98 < cosine


@pytest.mark.parametrize(
    "strategy,batch,nonshared",
    [("objective", 1, "mean"), ("stream", 2, "sum"), ("stream_batched", 1, "mean")],
)
def test_exact_gmd_matches_naive_reference(strategy, batch, nonshared):
    net, x, y, crit = _setup(batch=batch)
    params = list(net.parameters())
    agg = GMD(
        params,
        names=crit.names,
        shared=net.shared_mask(),
        nonshared_reduction=nonshared,
        seed=3,
        strategy=strategy,
    )
    streams = net.forward_streams(x, fold=False)
    diag = agg.backward(crit(streams, y), streams=list(streams.values()))
    ours = _flat_grad(params).clone()

    net.zero_grad(set_to_none=True)
    ref = naive.naive_gmd_step(net, x, y, crit.loss, agg.last_permutations, nonshared_reduction=nonshared)
    assert torch.equal(_flat_grad(params), ref)  # the naive step writes what it returns
    assert _rel(ours, ref) <= 1e-5
    assert len(diag.weights) == 15


def test_naive_permutation_draws_match_gmd():
    # the benchmark feeds the naive step from a twin generator: same seed, same draws
    agg = GMD([nn.Parameter(torch.zeros(1))], seed=11)
    twin = torch.Generator().manual_seed(11)
    for _ in range(3):
        agg.weights_from_gram(torch.eye(15, dtype=torch.float64))
        assert torch.equal(agg.last_permutations, random_permutations(15, twin))


def test_stream_gradients_equal_objective_gradients():
    net, x, y, crit = _setup(batch=2)
    params = list(net.parameters())
    streams = net.forward_streams(x, fold=False)
    ref = objective_gradients(crit(streams, y), params)
    for batched, max_batch in [(False, None), (True, None), (True, 3)]:
        streams = net.forward_streams(x, fold=False)
        jac = stream_gradients(crit(streams, y), list(streams.values()), params, batched, max_batch)
        assert _rel(jac, ref) < 1e-5
        # structure: the rows of the singles have no gradient on the other modalities' norm affine
        t1 = [i for i, (n, _) in enumerate(net.named_parameters()) if n.endswith("inc.norm1.weight.t1")][0]
        off = sum(p.numel() for p in params[:t1])
        assert jac[12:, off : off + params[t1].numel()].abs().sum() == 0  # t1ce, t2, flair singles


@pytest.mark.parametrize("batched", [False, True])
def test_stream_gradients_in_worker_threads_are_bitwise_the_sequential_ones(batched):
    """Two streams back-propagating at once in threads (each into its own rows, summed in stream
    order) give exactly the sequential matrix, and the caller's intra-op thread count is restored."""
    net, x, y, crit = _setup(batch=2)
    params = list(net.parameters())
    threads = torch.get_num_threads()
    streams = net.forward_streams(x, fold=False)
    ref = stream_gradients(crit(streams, y), list(streams.values()), params, batched)
    assert ref.abs().sum() > 0
    for workers in (2, 3, 8):  # 8 > 4 streams: capped
        streams = net.forward_streams(x, fold=False)
        jac = stream_gradients(crit(streams, y), list(streams.values()), params, batched, workers=workers)
        assert torch.equal(jac, ref), workers
        assert torch.get_num_threads() == threads
        assert all(h.grad_fn is not None for h in streams.values())
    streams = net.forward_streams(x, fold=False)
    with pytest.raises(ValueError, match="workers must be at least 1"):
        stream_gradients(crit(streams, y), list(streams.values()), params, workers=0)


def test_gmd_with_stream_workers_takes_the_sequential_step():
    """The aggregator forwards ``workers``: same merged gradient, bitwise, with conflicts projected."""
    net, x, y, crit = _conflicting()
    params = list(net.parameters())
    grads, diags = [], []
    for workers in (1, 2):
        for p in params:
            p.grad = None
        agg = GMD(
            params, names=crit.names, shared=net.shared_mask(), seed=0, strategy="stream", workers=workers
        )
        streams = net.forward_streams(x, fold=False)
        diags.append(agg.backward(crit(streams, y), streams=list(streams.values())))
        grads.append([p.grad.clone() for p in params])
    assert diags[0].num_projections > 0  # the projection path ran
    assert all(torch.equal(a, b) for a, b in zip(*grads))
    assert torch.equal(diags[0].weights, diags[1].weights)
    with pytest.raises(ValueError, match="workers must be at least 1"):
        GMD(params, strategy="stream", workers=0)


def test_stream_strategy_without_streams_falls_back_with_warning():
    net, x, y, crit = _setup()
    params = list(net.parameters())
    agg = GMD(params, names=crit.names, shared=net.shared_mask(), seed=0, strategy="stream_batched")
    with pytest.warns(UserWarning, match="needs the stream outputs"):
        agg.backward(crit(net.forward_streams(x, fold=False), y))
    assert all(p.grad is not None for p in params)
    with pytest.raises(ValueError, match="strategy must be one of"):
        GMD(params, strategy="fastest")
    assert set(STRATEGIES) == {"objective", "stream", "stream_batched"}


@pytest.mark.parametrize("strategy", ["stream", "stream_batched"])
def test_trainer_gives_stream_strategies_the_streams(strategy):
    """SubsetTrainer hands the per-modality outputs to GMD: a stream strategy runs (no fallback
    warning) and takes the same step as the default per-objective strategy."""
    import warnings

    from gmd_monai.engine import SubsetTrainer

    net0, x, y, crit = _setup(batch=2)
    updated = {}
    for name, kwargs in (("objective", {}), (strategy, {"strategy": strategy})):
        net = DynamicSharingUNet(width=0.25)
        net.load_state_dict(net0.state_dict())
        trainer = SubsetTrainer(
            "cpu",
            1,
            [{"image": x, "label": y}],
            net,
            torch.optim.SGD(net.parameters(), lr=1.0),
            SubsetLoss(net.modalities),
            method="gmd",
            method_kwargs=kwargs,
            seed=3,
            decollate=False,
        )
        with warnings.catch_warnings():
            warnings.simplefilter("error", UserWarning)
            trainer.run()
        updated[name] = torch.cat([p.detach().reshape(-1) for p in net.parameters()])
    step = updated["objective"] - torch.cat([p.detach().reshape(-1) for p in net0.parameters()])
    assert step.abs().max() > 0
    assert float((updated[strategy] - updated["objective"]).abs().max() / step.abs().max()) < 1e-4


def test_fast_gmd_with_full_proxy_is_exact_gmd():
    # with every parameter in the proxy, the proxy Gram IS the Gram: fast GMD = exact GMD
    net, x, y, crit = _setup()
    params = list(net.parameters())
    shared = net.shared_mask()
    exact = GMD(params, names=crit.names, shared=shared, seed=5)
    exact.backward(crit(net.forward_streams(x, fold=False), y))
    ref = _flat_grad(params).clone()
    net.zero_grad(set_to_none=True)
    fast = FastGMD(params, names=crit.names, shared=shared, seed=5, proxy=len(params))
    diag = fast.backward(crit(net.forward_streams(x, fold=False), y))
    assert torch.equal(fast.last_permutations, exact.last_permutations)
    assert _rel(_flat_grad(params), ref) < 1e-5
    assert diag.extra["approximate"] == 1.0


def test_fast_gmd_default_proxy_runs_and_is_labelled():
    net, x, y, crit = _setup()
    params = list(net.parameters())
    for name in ("fast_gmd", "fast-gmd", "FAST-GMD"):
        agg = make_aggregator(name, params, names=crit.names, shared=net.shared_mask(), seed=0)
        assert isinstance(agg, FastGMD) and agg.approximate and not agg.per_objective_gradients
    assert "fast_gmd" in available_methods()
    assert [p.shape for p in agg.proxy_params] == [params[-2].shape, params[-1].shape]  # output conv
    net.zero_grad(set_to_none=True)
    diag = agg.backward(crit(net.forward_streams(x), y))
    assert diag.method == "fast_gmd" and diag.extra["proxy_numel"] == params[-2].numel() + params[-1].numel()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in params)
    assert not make_aggregator("gmd", params).approximate
    with pytest.raises(ValueError, match="proxy must select"):
        FastGMD(params, proxy=0)


def test_fast_gmd_without_conflicts_is_the_mean():
    torch.manual_seed(0)
    lin = nn.Linear(4, 1)
    x = torch.randn(16, 4)

    def losses():
        return [(lin(x) - 5.0 * (k + 1)).pow(2).mean() for k in range(4)]

    agg = make_aggregator("fast_gmd", list(lin.parameters()), proxy=1, seed=0)
    diag = agg.backward(losses())
    assert diag.num_conflicts == 0 and torch.allclose(diag.weights, torch.full((4,), 0.25))
    ours = _flat_grad(list(lin.parameters())).clone()
    lin.zero_grad(set_to_none=True)
    torch.stack(losses()).mean().backward()
    assert torch.allclose(ours, _flat_grad(list(lin.parameters())), rtol=1e-6)


@pytest.mark.parametrize("method", ["mean", "fast_gmd", "gmd"])
def test_reduce_fn_identity_changes_nothing_and_mean_reduces_once(method):
    calls = []

    def reduce_fn(m):
        calls.append(tuple(m.shape))
        return m

    torch.manual_seed(0)
    lin = nn.Linear(3, 2)
    x = torch.randn(8, 3)
    params = list(lin.parameters())

    def losses():
        out = lin(x)
        return [out[:, 0].pow(2).mean(), (out[:, 1] - 1).pow(2).mean(), (out.sum(1) + 2).pow(2).mean()]

    make_aggregator(method, params, seed=1).backward(losses())
    ref = _flat_grad(params).clone()
    lin.zero_grad(set_to_none=True)
    make_aggregator(method, params, seed=1, reduce_fn=reduce_fn).backward(losses())
    assert torch.allclose(_flat_grad(params), ref, rtol=1e-6, atol=1e-8)
    expected = {"mean": [(1, 8)], "fast_gmd": [(3, 8), (1, 8)], "gmd": [(3, 8)]}[method]
    assert calls == expected  # mean: one (1, P) reduction, not the (T, P) matrix


def test_onednn_conv3d_matches_float64_reference():
    import copy

    from gmd_monai.gmd.fast import OneDNNConv3d, enable_onednn_conv3d

    torch.manual_seed(0)
    for cin, cout, size, k, pad in [(1, 8, 16, 3, 1), (16, 32, 8, 3, 1), (8, 3, 16, 1, 0)]:
        ref = nn.Conv3d(cin, cout, k, padding=pad).double()
        fast = enable_onednn_conv3d(copy.deepcopy(ref).float())
        assert type(fast) is OneDNNConv3d
        x = torch.randn(1, cin, size, size, size, dtype=torch.float64, requires_grad=True)
        y = ref(x)
        go = torch.randn_like(y)
        y.backward(go)
        xf = x.detach().float().requires_grad_()
        assert fast._fast(xf)
        yf = fast(xf)
        yf.backward(go.float())
        grads = [(fast.weight.grad, ref.weight.grad), (fast.bias.grad, ref.bias.grad)]
        for a, b in [(yf, y), (xf.grad, x.grad), *grads]:
            assert _rel(a.double(), b) < 1e-5
    # not eligible / not used: strided convs stay nn.Conv3d; batch > 1 takes nn.Conv3d's path
    strided = enable_onednn_conv3d(nn.Conv3d(2, 2, 3, stride=2, padding=1))
    assert type(strided) is nn.Conv3d
    assert not fast._fast(torch.randn(2, 8, 16, 16, 16))


def test_exact_gmd_matches_naive_with_onednn_conv():
    from gmd_monai.gmd.fast import OneDNNConv3d, enable_onednn_conv3d

    net, x, y, crit = _setup()
    state = {k: v.clone() for k, v in net.state_dict().items()}
    enable_onednn_conv3d(net)
    assert sum(isinstance(m, OneDNNConv3d) for m in net.modules()) == 19
    assert all(torch.equal(v, state[k]) for k, v in net.state_dict().items())
    params = list(net.parameters())
    agg = GMD(params, names=crit.names, shared=net.shared_mask(), seed=2)
    agg.backward(crit(net.forward_streams(x, fold=False), y))
    ours = _flat_grad(params).clone()
    ref = naive.naive_gmd_step(net, x, y, crit.loss, agg.last_permutations)
    assert _rel(ours, ref) <= 1e-5


def test_bf16_autocast_gmd_stays_close_to_float32(bf16_cpu):
    """AMP (bf16 autocast of the forward; the GMD algebra in float32/float64) gives the float32 update
    within bf16 tolerance, on the same permutations. On CPU here; the GPU run is in the benchmarks."""
    net, x, y, crit = _setup(batch=2)
    params = list(net.parameters())
    grads = []
    for amp in (False, True):
        agg = GMD(params, names=crit.names, shared=net.shared_mask(), seed=5)
        net.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            losses = crit(net.forward_streams(x, fold=False), y)
        diag = agg.backward([loss.float() for loss in losses])
        assert all(p.grad.dtype == torch.float32 for p in params)
        grads.append((_flat_grad(params).double(), diag.weights.clone()))
    (ref, w_ref), (amp, w_amp) = grads
    cosine = float(ref @ amp / (ref.norm() * amp.norm()))
    assert 0.99 < cosine < 1.0  # bf16 changes the update a little, not its direction
    assert float((w_amp - w_ref).abs().max()) < 0.02
