"""The sentiment bundle end to end: metadata, properties, train 1 epoch -> evaluate -> 7 rows -> infer."""

import csv
import json
from pathlib import Path

import jsonschema
import numpy as np
import pytest
import torch
from monai.bundle import ConfigWorkflow

from gmd_monai.data.synthetic_sentiment import ensure_synthetic_sentiment
from gmd_monai.sentiment_evaluation import evaluate_checkpoint, evaluate_cli
from gmd_monai.subsets import SENTIMENT_MODALITIES, SubsetSpace

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
CONFIGS = REPO / "sentiment_bundle" / "configs"
TRAIN, EVALUATE, INFERENCE = (str(CONFIGS / f"{n}.yaml") for n in ("train", "evaluate", "inference"))
META = str(CONFIGS / "metadata.json")
NAMES = SubsetSpace(SENTIMENT_MODALITIES).names


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def data_file(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("sentiment_data") / "synthetic_mult.pkl"
    return ensure_synthetic_sentiment(path, split_sizes={"train": 48, "valid": 24, "test": 32}, num_steps=6)


def _overrides(tmp: Path, data_file: str, **extra) -> dict:
    base = dict(
        bundle_root=str(REPO / "sentiment_bundle"),
        dataset_path=data_file,
        ckpt_dir=str(tmp / "models"),
        output_dir=str(tmp / "runs"),
        max_epochs=1,
        batch_size=16,
        hidden_size=8,
        cpu_threads=0,
    )
    return {**base, **extra}


def _workflow(config, workflow_type="train", **overrides) -> ConfigWorkflow:
    wf = ConfigWorkflow(config_file=config, meta_file=META, workflow_type=workflow_type, **overrides)
    wf.initialize()
    return wf


def test_metadata_validates_against_the_schema():
    schema_path = SHARED / "schemas" / "meta_schema_20240725.json"
    if not schema_path.is_file():
        pytest.skip(f"bundle schema not available ({schema_path} is absent; see ../shared/README.md)")
    meta = json.loads(Path(META).read_text())
    jsonschema.validate(meta, json.loads(schema_path.read_text()))
    assert set(meta["network_data_format"]["inputs"]) == set(SENTIMENT_MODALITIES)
    assert list(meta["network_data_format"]["outputs"]) == ["pred"]


def test_properties(tmp_path, data_file):
    assert _workflow(TRAIN, **_overrides(tmp_path, data_file)).check_properties() == []
    assert _workflow([TRAIN, EVALUATE], **_overrides(tmp_path, data_file)).check_properties() == []
    infer = _workflow(INFERENCE, "infer", bundle_root=str(tmp_path), dataset_path=data_file, cpu_threads=0)
    assert infer.check_properties() == []


def test_train_evaluate_infer_round_trip(tmp_path, data_file):
    wf = _workflow(TRAIN, **_overrides(tmp_path, data_file))
    wf.run()
    assert wf.trainer.aggregator.name == "gmd"  # the same GMD core as the BraTS bundle
    wf.finalize()
    ckpt = tmp_path / "models" / "model.pt"
    assert ckpt.is_file()
    with open(tmp_path / "runs" / "gmd_weights.csv") as f:
        header = next(csv.reader(f))
    assert header[4:] == [f"w[{n}]" for n in NAMES]
    assert json.loads((tmp_path / "runs" / "run_summary.json").read_text())["epochs"] == 1

    ev = _workflow([TRAIN, EVALUATE], **_overrides(tmp_path, data_file, eval_dir=str(tmp_path / "eval")))
    ev.run()
    with open(tmp_path / "eval" / "sentiment_subsets.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["subset"] for r in rows] == NAMES and all(int(r["n"]) == 32 for r in rows)
    assert (tmp_path / "eval" / "sentiment_subsets.png").stat().st_size > 0
    md = (tmp_path / "eval" / "sentiment_subsets.md").read_text()
    assert "| TAV |" in md and "| V |" in md

    # the fire-friendly CLI gives the same table from the checkpoint alone (architecture stored in it)
    out = evaluate_checkpoint(str(ckpt), data_file, split="test", output_dir=str(tmp_path / "cli"))
    assert [r["subset"] for r in out["rows"]] == NAMES
    paths = evaluate_cli(str(ckpt), data_file, output_dir=str(tmp_path / "cli2"))
    assert Path(paths["markdown"]).read_text().count("| T") == 4
    for r, cli in zip(rows, out["rows"]):
        assert float(r["mae"]) == pytest.approx(cli["mae"], abs=1e-5)

    # inference with two modalities equals the text+audio row's predictions
    inf = _workflow(
        INFERENCE,
        "infer",
        bundle_root=str(tmp_path),
        dataset_path=data_file,
        hidden_size=8,
        ckpt_path=str(ckpt),
        available=["text", "audio"],
        cpu_threads=0,
    )
    inf.run()
    with open(tmp_path / "eval" / "predictions_text+audio.csv") as f:
        preds = list(csv.DictReader(f))
    assert len(preds) == 32 and preds[0]["modalities"] == "text+audio"
    from gmd_monai.data.sentiment import SentimentDataset
    from gmd_monai.networks.ds_sequence import DynamicSharingSequenceModel
    from gmd_monai.sentiment_evaluation import subset_predictions

    net = DynamicSharingSequenceModel.from_checkpoint(ckpt)
    by_subset, labels, _ = subset_predictions(
        net, torch.utils.data.DataLoader(SentimentDataset(data_file, "test"), 8)
    )
    np.testing.assert_allclose([float(p["prediction"]) for p in preds], by_subset["text+audio"], atol=1e-5)
    np.testing.assert_allclose([float(p["label"]) for p in preds], labels, atol=1e-6)


@pytest.mark.parametrize("method", ["mean", "dropout", "upgrad"])
def test_method_is_selectable_in_the_config(tmp_path, data_file, method):
    wf = _workflow(TRAIN, **_overrides(tmp_path, data_file, method=method, val_interval=2))
    wf.run()
    assert wf.trainer.aggregator.name == method
    assert wf.trainer.state.iteration == 3


def test_transformer_encoder_option(tmp_path, data_file):
    wf = _workflow(TRAIN, **_overrides(tmp_path, data_file, encoder="transformer"))
    wf.run()
    assert (tmp_path / "models" / "model.pt").is_file()
    assert (
        type(wf.parser.get_parsed_content("network").encoders["text"].transformer).__name__
        == "TransformerEncoder"
    )


def test_bad_dataset_path_gives_a_clear_error(tmp_path):
    wf = ConfigWorkflow(
        config_file=TRAIN,
        meta_file=META,
        workflow_type="train",
        **_overrides(tmp_path, str(tmp_path / "missing.pkl")),
    )
    wf.initialize()
    with pytest.raises(RuntimeError) as err:
        wf.run()
    chain, e = [], err.value
    while e is not None:
        chain.append(str(e))
        e = e.__cause__
    assert any("no such file or folder" in c and "missing.pkl" in c for c in chain)


def _tiny_csd_dataset(tmp: Path) -> tuple[str, dict]:
    """Label + feature computational sequences (SDK layout) for 6 videos, and a folds JSON."""
    import h5py

    rng = np.random.default_rng(0)
    vids = [f"vid{i}" for i in range(6)]

    def write(name, dim, rows_per_sec, labels=False):
        path = tmp / f"{name}.csd"
        with h5py.File(path, "w") as f:
            data = f.create_group(name).create_group("data")
            for v in vids:
                if labels:
                    ints = np.array([[0.0, 2.0], [2.5, 4.0], [4.0, 6.5]])
                    feats = rng.uniform(-3, 3, size=(3, 1))
                else:
                    starts = np.arange(0.0, 7.0, 1.0 / rows_per_sec)
                    ints = np.stack([starts, starts + 1.0 / rows_per_sec], 1)
                    feats = rng.normal(size=(len(starts), dim))
                g = data.create_group(v)
                g.create_dataset("features", data=feats)
                g.create_dataset("intervals", data=ints)
        return str(path)

    labels = write("labels", 1, 0, labels=True)
    folds = tmp / "folds.json"
    folds.write_text(json.dumps({"train": vids[:3], "valid": vids[3:5], "test": vids[5:]}))
    feats = {
        "text": write("words", 5, 2.0),
        "audio": write("covarep", 3, 20.0),
        "vision": write("facet", 2, 10.0),
    }
    return labels, {"features": feats, "folds": str(folds), "num_steps": 4}


def test_csd_data_through_dataset_kwargs(tmp_path):
    labels, kwargs = _tiny_csd_dataset(tmp_path)
    wf = _workflow(TRAIN, **_overrides(tmp_path, labels, dataset_format="csd", dataset_kwargs=kwargs))
    train = wf.parser.get_parsed_content("train#dataset")
    assert len(train) == 9 and train.feature_sizes == {"text": 5, "audio": 3, "vision": 2}
    assert wf.parser.get_parsed_content("network").input_sizes == {"text": 5, "audio": 3, "vision": 2}
    wf.run()
    assert wf.trainer.state.iteration == 1
