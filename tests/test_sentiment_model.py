"""DS sequence model: streams, mean fusion, absent modalities skipped, lengths, GMD structure, training."""

import pytest
import torch
from monai.data import DataLoader
from torch import nn

from gmd_monai.data.sentiment import SentimentDataset, SentimentSplit
from gmd_monai.data.synthetic_sentiment import make_synthetic_sentiment
from gmd_monai.engine import SubsetTrainer
from gmd_monai.gmd import GMD, ModalityDropout, TorchJDWeighting
from gmd_monai.losses import SubsetLoss
from gmd_monai.networks.ds_sequence import DynamicSharingSequenceModel, input_sizes_from_checkpoint
from gmd_monai.sentiment_engine import SentimentPrepareBatch
from gmd_monai.subsets import SENTIMENT_MODALITIES, SubsetSpace

SIZES = {"text": 6, "audio": 3, "vision": 4}


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _inputs(b=5, t=7, sizes=SIZES, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {m: torch.randn(b, t, d, generator=g) for m, d in sizes.items()}


def _trained_stats(net, x):
    """One train-mode forward so BatchNorm has running statistics, then eval mode."""
    net.train()
    net(x)
    return net.eval()


@pytest.mark.parametrize("encoder", ["gru", "transformer"])
def test_fusion_is_the_mean_of_the_streams(encoder):
    torch.manual_seed(0)
    net = DynamicSharingSequenceModel(SIZES, encoder=encoder, hidden_size=8, latent_size=10)
    x = _inputs()
    _trained_stats(net, x)
    with torch.no_grad():
        streams = net.forward_streams(x)
        assert set(streams) == set(SENTIMENT_MODALITIES) and streams["text"].shape == (5, 1)
        torch.testing.assert_close(net(x), (streams["text"] + streams["audio"] + streams["vision"]) / 3)
        torch.testing.assert_close(net(x, available="vision+text"), (streams["text"] + streams["vision"]) / 2)
        separate = net.forward_streams(x, fold=False)
        for m in SENTIMENT_MODALITIES:
            torch.testing.assert_close(separate[m], streams[m])


def test_absent_modalities_are_not_computed():
    net = DynamicSharingSequenceModel(SIZES, hidden_size=8).eval()
    calls = {m: 0 for m in SENTIMENT_MODALITIES}
    for m in SENTIMENT_MODALITIES:
        net.encoders[m].register_forward_hook(lambda *_, m=m: calls.__setitem__(m, calls[m] + 1))
    x = _inputs()
    with torch.no_grad():
        net(x, available=["text", "vision"])
        assert calls == {"text": 1, "audio": 0, "vision": 1}
        del x["audio"]  # the modality is simply not in the batch
        assert set(net.forward_streams(x)) == {"text", "vision"}
        assert calls["audio"] == 0
        with pytest.raises(ValueError, match=r"modality \['audio'\] requested but not in the inputs"):
            net(x, available="audio+text")


def test_per_sample_masks_match_per_subset_outputs():
    torch.manual_seed(0)
    net = DynamicSharingSequenceModel(SIZES, hidden_size=8)
    x = _inputs(b=7)
    _trained_stats(net, x)
    space = SubsetSpace(SENTIMENT_MODALITIES)
    masks = space.masks()  # one subset per sample (7 samples, 7 subsets)
    with torch.no_grad():
        mixed = net(x, masks)
        for k in range(7):
            alone = net(x, available=space.name(k))[k]
            torch.testing.assert_close(mixed[k], alone)
    with pytest.raises(ValueError, match=r"no modality available for sample\(s\) \[1\]"):
        net(x, torch.tensor([[1, 0, 0], [0, 0, 0]] + [[1, 1, 1]] * 5, dtype=torch.bool))


@pytest.mark.parametrize(
    "encoder, pooling", [("gru", "last"), ("gru", "mean"), ("transformer", "mean"), ("transformer", "last")]
)
def test_lengths_make_padding_irrelevant(encoder, pooling):
    torch.manual_seed(0)
    net = DynamicSharingSequenceModel(SIZES, encoder=encoder, pooling=pooling, hidden_size=8)
    x = _inputs(b=4, t=9)
    _trained_stats(net, x)
    lengths = torch.tensor([9, 5, 2, 7])
    padded = {m: v.clone() for m, v in x.items()}
    for i, n in enumerate(lengths.tolist()):
        for v in padded.values():
            v[i, n:] = 1e3  # garbage after the valid steps
    padded.update({f"{m}_lengths": lengths for m in SENTIMENT_MODALITIES})
    with torch.no_grad():
        out = net.forward_streams(padded)
        for i, n in enumerate(lengths.tolist()):
            alone = net.forward_streams({m: x[m][i : i + 1, :n] for m in SENTIMENT_MODALITIES})
            for m in SENTIMENT_MODALITIES:
                torch.testing.assert_close(out[m][i], alone[m][0], rtol=1e-4, atol=1e-5)


def test_input_errors():
    net = DynamicSharingSequenceModel(SIZES, hidden_size=8)
    x = _inputs()
    with pytest.raises(
        ValueError, match=r"audio: features have size 5 but the model was built with input_sizes"
    ):
        net({**x, "audio": torch.randn(5, 7, 5)})
    with pytest.raises(ValueError, match="different batch sizes"):
        net({**x, "vision": torch.randn(4, 7, 4)})
    with pytest.raises(ValueError, match="no modality in the inputs"):
        net({"label": torch.zeros(5, 1)})
    with pytest.raises(TypeError, match="expected a dict"):
        net(torch.randn(5, 7, 13))
    with pytest.raises(ValueError, match=r"text_lengths must be in \[1, 7\]"):
        net({**x, "text_lengths": torch.tensor([7, 7, 0, 7, 7])})
    with pytest.raises(ValueError, match=r"missing \['vision'\]"):
        DynamicSharingSequenceModel({"text": 3, "audio": 2})
    with pytest.raises(ValueError, match="unknown encoder 'lstm'"):
        DynamicSharingSequenceModel(SIZES, encoder="lstm")
    with pytest.raises(ValueError, match="hidden_size 10 must be divisible by num_heads 4"):
        DynamicSharingSequenceModel(SIZES, encoder="transformer", hidden_size=10)


def test_shared_mask_follows_the_structure():
    net = DynamicSharingSequenceModel(SIZES, hidden_size=8)
    space = SubsetSpace(SENTIMENT_MODALITIES)
    names = [n for n, _ in net.named_parameters()]
    shared = dict(zip(names, net.shared_mask()))
    assert all(shared[n] for n in names if not n.startswith("encoders."))
    assert not any(shared[n] for n in names if n.startswith("encoders."))
    with_text = [space.subsets[k] for k in space.containing("text")]
    shared_text = dict(zip(names, net.shared_mask(with_text)))
    assert all(shared_text[n] for n in names if n.startswith("encoders.text."))
    assert not any(shared_text[n] for n in names if n.startswith("encoders.audio."))
    # structurally right: a subset objective without audio leaves the audio encoder without gradient
    streams = net.forward_streams(_inputs(), fold=False)
    loss = SubsetLoss(SENTIMENT_MODALITIES, nn.L1Loss())(streams, torch.zeros(5, 1))[
        space.index("text+vision")
    ]
    grads = torch.autograd.grad(loss, list(net.parameters()), allow_unused=True)
    for n, g in zip(names, grads):
        assert (g is None) == n.startswith("encoders.audio."), n


def test_checkpoint_round_trip(tmp_path):
    torch.manual_seed(0)
    net = DynamicSharingSequenceModel(SIZES, encoder="transformer", hidden_size=8, latent_size=12)
    x = _inputs()
    _trained_stats(net, x)
    torch.save({"model": net.state_dict()}, tmp_path / "model.pt")
    assert input_sizes_from_checkpoint(tmp_path / "model.pt") == SIZES
    again = DynamicSharingSequenceModel.from_checkpoint(tmp_path / "model.pt").eval()
    assert again.config == net.config
    with torch.no_grad():
        torch.testing.assert_close(again(x), net(x))
    other = DynamicSharingSequenceModel(
        SIZES, encoder="transformer", hidden_size=8, latent_size=12, pooling="mean"
    )
    with pytest.raises(ValueError, match="pooling: checkpoint 'last' vs model 'mean'"):
        other.load_state_dict(torch.load(tmp_path / "model.pt")["model"])
    with pytest.raises(FileNotFoundError, match="no checkpoint at"):
        DynamicSharingSequenceModel.from_checkpoint(tmp_path / "absent.pt")


def _loader(n=24, batch=8):
    data = make_synthetic_sentiment(
        split_sizes={"train": n}, num_steps=5, feature_sizes={"text": 6, "audio": 3, "vision": 4}, seed=1
    )["train"]
    split = SentimentSplit({m: data[m] for m in SENTIMENT_MODALITIES}, data["labels"].reshape(-1))
    split.features["audio"][split.features["audio"] == -float("inf")] = 0
    return DataLoader(SentimentDataset(data=split), batch_size=batch, shuffle=False)


@pytest.mark.parametrize(
    "method, cls", [("gmd", GMD), ("mean", None), ("dropout", ModalityDropout), ("upgrad", TorchJDWeighting)]
)
def test_subset_trainer_steps_with_every_method(method, cls):
    torch.manual_seed(0)
    net = DynamicSharingSequenceModel(SIZES, hidden_size=8)
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    trainer = SubsetTrainer(
        "cpu",
        1,
        _loader(),
        net,
        torch.optim.Adam(net.parameters(), 1e-2),
        SubsetLoss(SENTIMENT_MODALITIES, nn.L1Loss()),
        method=method,
        prepare_batch=SentimentPrepareBatch(),
        decollate=False,
    )
    if cls is not None:
        assert isinstance(trainer.aggregator, cls)
    trainer.run()
    assert trainer.state.iteration == 3
    diag = trainer.state.gmd
    if method != "dropout":
        assert diag.names == SubsetSpace(SENTIMENT_MODALITIES).names
    changed = {n for n, p in net.named_parameters() if not torch.equal(p, before[n])}
    assert {n.split(".")[1] for n in changed if n.startswith("encoders.")} == set(SENTIMENT_MODALITIES)
    assert any(n.startswith("head.") for n in changed)
