"""Multi-process GMD: 2 Gloo ranks on CPU give the single-process update on the global batch."""

import os
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from monai.losses import DiceLoss

from gmd_monai import distributed as gdist
from gmd_monai.engine import SubsetDiceMetric
from gmd_monai.gmd import make_aggregator
from gmd_monai.losses import SubsetLoss, brats_loss
from gmd_monai.networks import DynamicSharingUNet
from gmd_monai.subsets import BRATS_MODALITIES

ROOT = Path(__file__).resolve().parents[1]
WORLD = 2


@pytest.fixture(autouse=True)
def _one_thread():
    """One intra-op thread: these many small ops gain nothing from two, and on a busy 2-core machine
    two OpenMP threads can wait on each other for 10x longer (measured)."""
    torch.set_num_threads(1)
    yield


PER_RANK = 1  # samples per rank; global batch WORLD * PER_RANK
SIZE = 16
# float64 model and data: the equalities are algebraic, float32 conv kernels differ between batch sizes
# (oneDNN for batch > 1, another path for batch 1) by up to 1e-3 relative on a 16^3 input
DTYPE = torch.float64
SEED = 7


def _per_sample_dice():
    """A loss that is a mean over samples (Dice per sample and channel, then the mean)."""
    return DiceLoss(sigmoid=True, batch=False, smooth_nr=1.0, smooth_dr=1.0)


def _chunked_pooled_dice(num_chunks: int):
    """The paper's batch-pooled Dice computed per chunk of the batch, averaged over the chunks."""
    pooled = brats_loss()

    def loss(pred, target):
        chunks = zip(pred.chunk(num_chunks), target.chunk(num_chunks))
        return torch.stack([pooled(p, t) for p, t in chunks]).mean()

    return loss


def _data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(WORLD * PER_RANK, 4, SIZE, SIZE, SIZE, generator=g, dtype=DTYPE)
    # samples with very different foreground fractions, so that pooling over the batch matters
    frac = torch.linspace(0.05, 0.6, WORLD * PER_RANK).view(-1, 1, 1, 1, 1)
    y = (torch.rand(WORLD * PER_RANK, 3, SIZE, SIZE, SIZE, generator=g) < frac).to(DTYPE)
    return x, y


# (name, method, loss factory on ONE rank's shard)
CASES = [
    ("gmd_mean_loss", "gmd", _per_sample_dice),
    ("gmd_pooled_dice", "gmd", brats_loss),
    ("fast_gmd_mean_loss", "fast_gmd", _per_sample_dice),
    ("mean_pooled_dice", "mean", brats_loss),
]


def _merged(net, method, loss, x, y, reduce_fn=None):
    params = list(net.parameters())
    crit = SubsetLoss(net.modalities, loss)
    agg = make_aggregator(method, params, names=crit.names, shared=net.shared_mask(), seed=SEED,
                          reduce_fn=reduce_fn)  # fmt: skip
    net.zero_grad(set_to_none=True)
    streams = net.forward_streams(x, fold=not agg.per_objective_gradients)
    agg.backward(crit(streams, y))
    return torch.cat([p.grad.reshape(-1) for p in params]).clone()


def _worker(rank: int, port: int, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(WORLD), LOCAL_RANK=str(rank))  # fmt: skip
    torch.set_num_threads(1)
    device = gdist.init_distributed()
    assert device.type == "cpu" and gdist.is_distributed() and gdist.get_rank() == rank
    torch.manual_seed(100 + rank)  # different initial weights on each rank: the broadcast aligns them
    net = gdist.broadcast_module(DynamicSharingUNet(width=0.25).to(DTYPE))
    x, y = _data()
    shard = slice(rank * PER_RANK, (rank + 1) * PER_RANK)
    out = {"first_weight": net.inc.conv1.weight.detach().clone()}
    for name, method, loss in CASES:
        out[name] = _merged(net, method, loss(), x[shard], y[shard], gdist.make_reduce_fn())
    preds, labels = _val_cases()
    for split, counts in VAL_SHARDS.items():  # this rank's cases of the validation set
        start = sum(counts[:rank])
        metric = SubsetDiceMetric(BRATS_MODALITIES)
        for i in range(start, start + counts[rank]):
            metric.update((preds[i : i + 1], labels[i : i + 1]))
        out[f"dice_{split}"] = (metric.compute(), metric.per_subset)
    out["val_indices"] = list(gdist.validation_sampler(list(range(5))))
    out["val_sampler_too_few_cases"] = gdist.validation_sampler([0])
    out["is_main"] = gdist.is_main_process()
    out["handlers"] = [type(h).__name__ for h in gdist.rank_zero_only([_StatsHandler(), _Other()])]
    torch.save(out, os.path.join(out_dir, f"rank{rank}.pt"))
    gdist.barrier()
    gdist.cleanup()


VAL_SHARDS = {"uneven": (2, 1), "one_rank_empty": (3, 0)}  # validation cases per rank


def _val_cases():
    """3 validation cases: stacked per-modality logits (B, 4 * 3, ...) and region labels (B, 3, ...)."""
    g = torch.Generator().manual_seed(1)
    labels = (torch.rand(3, 3, 8, 8, 8, generator=g) < 0.3).float()
    preds = torch.randn(3, 12, 8, 8, 8, generator=g) + 2 * labels.repeat(1, 4, 1, 1, 1) - 1
    return preds, labels


def test_validation_dice_pools_the_cases_of_every_rank(rank_results):
    preds, labels = _val_cases()
    single = SubsetDiceMetric(BRATS_MODALITIES)
    for i in range(3):
        single.update((preds[i : i + 1], labels[i : i + 1]))
    value = single.compute()
    assert 0.2 < value < 0.9  # an informative value, neither empty nor perfect
    for split in VAL_SHARDS:
        for r in rank_results:
            got, per_subset = r[f"dice_{split}"]
            assert got == pytest.approx(value, rel=1e-6), split
            torch.testing.assert_close(per_subset, single.per_subset)


def test_validation_sampler_shares_cases_without_repeats(rank_results):
    assert sorted(rank_results[0]["val_indices"] + rank_results[1]["val_indices"]) == [0, 1, 2, 3, 4]
    assert all(r["val_sampler_too_few_cases"] is None for r in rank_results)  # every rank: all cases


class _StatsHandler:  # stands in for monai's StatsHandler (matched by class name)
    pass


_StatsHandler.__name__ = "StatsHandler"


class _Other:
    pass


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rel(a, b):
    return float((a - b).abs().max() / b.abs().max())


@pytest.fixture(scope="module")
def rank_results(tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("ddp")
    mp.spawn(_worker, args=(_free_port(), str(out_dir)), nprocs=WORLD, join=True)
    return [torch.load(out_dir / f"rank{r}.pt") for r in range(WORLD)]


@pytest.fixture(scope="module")
def reference():
    torch.manual_seed(100)  # rank 0's initial weights (broadcast to every rank)
    return DynamicSharingUNet(width=0.25).to(DTYPE)


def test_ranks_agree_and_start_from_rank0_weights(rank_results, reference):
    r0, r1 = rank_results
    assert torch.equal(r0["first_weight"], reference.inc.conv1.weight.detach())  # same init, same dtype
    assert torch.equal(r1["first_weight"], r0["first_weight"])
    for name, _, _ in CASES:
        assert torch.equal(r0[name], r1[name]), name  # identical updates: the replicas stay in sync
    assert r0["is_main"] and not r1["is_main"]
    assert r0["handlers"] == ["StatsHandler", "_Other"] and r1["handlers"] == ["_Other"]


@pytest.mark.parametrize("name", ["gmd_mean_loss", "fast_gmd_mean_loss"])
def test_mean_over_samples_loss_equals_single_process_global_batch(rank_results, reference, name):
    method = {"gmd_mean_loss": "gmd", "fast_gmd_mean_loss": "fast_gmd"}[name]
    x, y = _data()
    single = _merged(reference, method, _per_sample_dice(), x, y)
    assert _rel(rank_results[0][name], single) < 1e-5


@pytest.mark.parametrize("name,method", [("gmd_pooled_dice", "gmd"), ("mean_pooled_dice", "mean")])
def test_pooled_dice_equals_single_process_chunked_dice(rank_results, reference, name, method):
    x, y = _data()
    # what holds: N ranks == one process averaging the pooled Dice of N chunks of the global batch
    chunked = _merged(reference, method, _chunked_pooled_dice(WORLD), x, y)
    assert _rel(rank_results[0][name], chunked) < 1e-5
    # what does not: the Dice pooled over the whole global batch is another objective
    pooled = _merged(reference, method, brats_loss(), x, y)
    assert _rel(rank_results[0][name], pooled) > 1e-3


def test_single_process_helpers_are_no_ops(monkeypatch):
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(key, raising=False)
    assert gdist.init_distributed().type in ("cpu", "cuda")
    assert not gdist.is_distributed() and gdist.get_rank() == 0 and gdist.get_world_size() == 1
    assert gdist.make_reduce_fn() is None
    assert gdist.validation_sampler([0, 1, 2]) is None
    handlers = [_StatsHandler(), _Other()]
    assert gdist.rank_zero_only(handlers) == handlers and gdist.rank_zero_only(None) == []
    t = torch.ones(3)
    assert gdist.all_reduce_mean(t) is t and torch.equal(t, torch.ones(3))
    lin = torch.nn.Linear(2, 2)
    assert gdist.broadcast_module(lin) is lin


def test_multi_gpu_config_merges_on_train_config(monkeypatch):
    from monai.bundle import ConfigParser

    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(key, raising=False)
    configs = ROOT / "bundle" / "configs"
    parser = ConfigParser()
    parser.read_config([str(configs / "train.yaml"), str(configs / "multi_gpu_train.yaml")])
    assert "$import gmd_monai.distributed" in parser["imports"]
    assert "$import gmd_monai" in parser["imports"]  # train.yaml's imports are kept (+imports)
    assert parser["train#dataloader#sampler"] == "@train#sampler"
    assert parser["train#dataloader#shuffle"] is False
    assert parser["train#sampler#_target_"] == "DistributedSampler"
    assert parser["validate#dataloader#sampler"] == "@validate#sampler"
    assert parser["validate#sampler"] == "$gmd_monai.distributed.validation_sampler(@validate#dataset)"
    assert parser["initialize"][0] == "$gmd_monai.distributed.init_distributed()"
    assert parser["finalize"][-1] == "$gmd_monai.distributed.cleanup()"
    parser.parse()
    # outside torchrun: no reduction, rank 0's output folder, the local device
    assert parser.get_parsed_content("train#trainer#reduce_fn") is None
    assert parser.get_parsed_content("output_dir") == parser.get_parsed_content("bundle_root") + "/runs"
    assert parser.get_parsed_content("device") == gdist.local_device()


def test_bundle_trains_with_torchrun_on_two_gloo_ranks(tmp_path):
    """The documented command, end to end: 2 CPU ranks, the synthetic dataset, one epoch with
    validation; rank 0 alone writes the checkpoint and the run summary."""
    import json
    import subprocess
    import sys

    configs = ROOT / "bundle" / "configs"
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={_free_port()}",
        "-m", "monai.bundle", "run", "training",
        "--config_file",
        f"['{configs / 'train.yaml'}','{configs / 'synthetic.yaml'}','{configs / 'multi_gpu_train.yaml'}']",
        "--bundle_root", str(tmp_path), "--max_epochs", "1", "--val_interval", "1", "--width", "0.25",
        "--num_workers", "0",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "rank 1/2 initialised (gloo, cpu)" in proc.stderr + proc.stdout
    summary = json.loads((tmp_path / "runs" / "run_summary.json").read_text())
    assert summary["iterations"] == 2  # 5 training cases, 2 ranks, batch 2: ceil(3 / 2) steps per rank
    assert len(summary["last_val_subset_dice"]) == 15
    assert (tmp_path / "models" / "model.pt").is_file()
    assert not list((tmp_path / "runs" / "rank1").glob("*.csv"))  # rank 1 writes no output files
