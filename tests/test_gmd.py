"""GMD core against an independent, straightforward reference (per-objective backward, vector projections)."""

import itertools

import pytest
import torch
from torch import nn

from gmd_monai.gmd import GMD, make_aggregator, pcgrad_coefficients
from gmd_monai.gmd.projection import random_permutations
from gmd_monai.losses import SubsetLoss
from gmd_monai.networks import DynamicSharingUNet
from gmd_monai.subsets import SubsetSpace


def reference_merge(grads: list[torch.Tensor], perms, shared_mask: torch.Tensor, nonshared="mean"):
    """GMD's rule (Wang et al., AAAI 2024), written with explicit float64 vectors."""
    grads = [g.double() for g in grads]
    t = len(grads)
    projected = []
    for i in range(t):
        gi = grads[i].clone()
        for j in perms[i]:
            gj = grads[int(j)]
            dot = torch.dot(gi, gj)
            if dot < 0:
                gi = gi - dot / torch.dot(gj, gj) * gj
        projected.append(gi)
    stacked = torch.stack(projected)
    merged = stacked.mean(0)
    ns = ~shared_mask
    merged[ns] = stacked[:, ns].sum(0) if nonshared == "sum" else stacked[:, ns].mean(0)
    return merged


def per_objective_grads(losses_fn, params):
    """One fresh backward per objective, gradients flattened (zeros where untouched)."""
    out = []
    for k in range(len(losses_fn())):
        for p in params:
            p.grad = None
        losses_fn()[k].backward()
        out.append(
            torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).flatten() for p in params])
        )
    for p in params:
        p.grad = None
    return out


def flat_grad(params):
    return torch.cat([p.grad.flatten() for p in params])


def test_three_vector_case_every_permutation():
    g = torch.tensor([[1.0, 0.0], [-1.0, 1.0], [0.0, 1.0]], dtype=torch.float64)
    for perm in itertools.permutations(range(3)):
        for perm2 in itertools.permutations(range(3)):
            perms = torch.tensor([perm, perm2, perm])
            coeffs = pcgrad_coefficients(g @ g.T, perms)
            merged = (coeffs.sum(0) / 3) @ g
            assert torch.allclose(merged, torch.tensor([1 / 6, 5 / 6], dtype=torch.float64), atol=1e-12)


def test_two_objective_pcgrad_formula():
    g1 = torch.tensor([2.0, 1.0, -1.0], dtype=torch.float64)
    g2 = torch.tensor([-1.0, 0.5, 0.0], dtype=torch.float64)
    assert torch.dot(g1, g2) < 0
    exp1 = g1 - torch.dot(g1, g2) / torch.dot(g2, g2) * g2
    exp2 = g2 - torch.dot(g2, g1) / torch.dot(g1, g1) * g1
    g = torch.stack([g1, g2])
    for perm in ([0, 1], [1, 0]):
        coeffs = pcgrad_coefficients(g @ g.T, torch.tensor([perm, perm]))
        assert torch.allclose(coeffs @ g, torch.stack([exp1, exp2]), atol=1e-12)
        assert torch.allclose((coeffs.sum(0) / 2) @ g, (exp1 + exp2) / 2, atol=1e-12)


class TwoHead(nn.Module):
    """A small 'DS-like' model: a shared trunk, and per-modality scale parameters (non-shared)."""

    def __init__(self):
        super().__init__()
        self.trunk = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 1))
        self.scale = nn.ParameterList([nn.Parameter(torch.ones(1) + 0.1 * k) for k in range(3)])

    def streams(self, x):
        return {f"m{k}": self.trunk(x[:, k]) * self.scale[k] for k in range(3)}


@pytest.mark.parametrize("nonshared", ["mean", "sum"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_gmd_matches_reference_small_model(nonshared, seed):
    torch.manual_seed(seed)
    model = TwoHead()
    space = SubsetSpace(["m0", "m1", "m2"])
    x = torch.randn(6, 3, 5)
    y = torch.randn(6, 1) * 3
    crit = SubsetLoss(space, nn.MSELoss())
    params = list(model.parameters())
    # structural mask: trunk shared; scale[k] only reached by the 4 subsets containing m{k}
    shared = [True] * 4 + [False] * 3

    def losses_fn():
        return crit(model.streams(x), y)

    agg = GMD(params, names=space.names, shared=shared, nonshared_reduction=nonshared, seed=seed)
    diag = agg.backward(losses_fn())
    ours = flat_grad(params).double()

    grads = per_objective_grads(losses_fn, params)
    mask = torch.cat([torch.full((p.numel(),), s) for p, s in zip(params, shared)])
    ref = reference_merge(grads, agg.last_permutations, mask, nonshared)
    assert torch.allclose(ours, ref, rtol=1e-5, atol=1e-7)
    # effective weights reproduce the merged gradient exactly
    g = torch.stack(grads).double()
    w = diag.weights.double()
    assert torch.allclose((w @ g)[mask], ref[mask], rtol=1e-4, atol=1e-6)
    factor = 7.0 if nonshared == "sum" else 1.0  # T = 7 objectives
    assert torch.allclose(factor * (w @ g)[~mask], ref[~mask], rtol=1e-4, atol=1e-6)
    # diagnostics are consistent with the gradients
    norms = torch.stack([gi.norm() for gi in grads])
    assert torch.allclose(diag.grad_norms.double(), norms.double(), rtol=1e-4)
    conflicts = sum(int(torch.dot(grads[i], grads[j]) < 0) for i in range(7) for j in range(i + 1, 7))
    assert diag.num_conflicts == conflicts
    assert diag.names == space.names


def test_no_conflict_equals_mean_loss():
    torch.manual_seed(0)
    lin = nn.Linear(4, 1)
    x = torch.randn(16, 4)
    # objectives that all push the same way: no conflicting pair
    losses = lambda: [(lin(x) - 5.0 * (k + 1)).pow(2).mean() for k in range(4)]  # noqa: E731
    agg = make_aggregator("gmd", list(lin.parameters()), seed=3)
    diag = agg.backward(losses())
    assert diag.num_conflicts == 0 and diag.num_projections == 0
    assert torch.allclose(diag.weights, torch.full((4,), 0.25))
    ours = flat_grad(list(lin.parameters())).clone()
    lin.zero_grad(set_to_none=True)
    torch.stack(losses()).mean().backward()
    assert torch.allclose(ours, flat_grad(list(lin.parameters())), rtol=1e-6)


def test_seeded_permutations_are_reproducible_and_logged():
    a = random_permutations(15, torch.Generator().manual_seed(7))
    b = random_permutations(15, torch.Generator().manual_seed(7))
    assert torch.equal(a, b)
    assert all(sorted(row.tolist()) == list(range(15)) for row in a)


def test_gmd_on_ds_unet_matches_reference():
    torch.manual_seed(0)
    net = DynamicSharingUNet(width=0.25)
    x = torch.randn(1, 4, 16, 16, 16)
    y = (torch.rand(1, 3, 16, 16, 16) > 0.6).float()
    crit = SubsetLoss(net.modalities)
    params = list(net.parameters())
    shared = net.shared_mask()
    # the mask is structural: convolutions shared, each modality's norm affine not
    assert sum(shared) == len([n for n, m in net.parameter_modality().items() if m is None])

    agg = GMD(params, names=crit.names, shared=shared, nonshared_reduction="sum", seed=5)
    diag = agg.backward(crit(net.forward_streams(x, fold=False), y))
    ours = flat_grad(params).double()

    def losses_fn():
        return crit(net.forward_streams(x, fold=False), y)

    grads = per_objective_grads(losses_fn, params)
    mask = torch.cat([torch.full((p.numel(),), s) for p, s in zip(params, shared)])
    ref = reference_merge(grads, agg.last_permutations, mask, "sum")
    rel = (ours - ref).abs().max() / ref.abs().max()
    assert rel < 1e-5
    assert len(diag.weights) == 15 and diag.cosine.shape == (15, 15)
    # a non-shared parameter gets gradient only from the 8 subsets that contain its modality
    t1_rows = [k for k in range(15) if "t1" in crit.space.modalities_of(k)]
    name_idx = [i for i, (n, _) in enumerate(net.named_parameters()) if n.endswith("norm1.weight.t1")][0]
    offset = sum(p.numel() for p in params[:name_idx])
    sl = slice(offset, offset + params[name_idx].numel())
    touched = [k for k in range(15) if grads[k][sl].abs().sum() > 0]
    assert touched == t1_rows


@pytest.mark.parametrize("method", ["mean", "upgrad", "mgda", "imtlg", "pcgrad_torchjd"])
def test_other_aggregators_run_and_use_mean_convention(method):
    torch.manual_seed(0)
    lin = nn.Linear(3, 1)
    x = torch.randn(8, 3)
    agg = make_aggregator(method, list(lin.parameters()), names=["a", "b", "c"])
    # orthogonal-ish objectives on disjoint inputs: mean convention => weights sum close to 1
    diag = agg.backward([(lin(x) - k).pow(2).mean() for k in range(3)])
    assert lin.weight.grad is not None
    assert diag.weights.shape == (3,)
    assert 0.2 < float(diag.weights.sum()) < 3.5


def test_bad_inputs():
    lin = nn.Linear(2, 1)
    with pytest.raises(ValueError, match="unknown aggregation method 'pcgard'"):
        make_aggregator("pcgard", list(lin.parameters()))
    with pytest.raises(ValueError, match="unknown aggregation method 'meen'; did you mean 'mean'"):
        make_aggregator("meen", list(lin.parameters()))
    assert type(make_aggregator(" Fast-GMD ", list(lin.parameters()), names=["a", "b"])).__name__ == "FastGMD"
    agg = make_aggregator("gmd", list(lin.parameters()), names=["a", "b"])
    out = lin(torch.randn(3, 2)).mean()
    with pytest.raises(ValueError, match="got 1 losses for 2 objective names"):
        agg.backward([out])
    with pytest.raises(FloatingPointError, match="non-finite loss"):
        agg.backward([out * float("nan"), out])
    with pytest.raises(ValueError, match="nonshared_reduction"):
        make_aggregator("gmd", list(lin.parameters()), nonshared_reduction="max")
