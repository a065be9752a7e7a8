"""The BraTS bundle end to end: train 1 epoch (synthetic and real cases), properties, 15-subset evaluation."""

import csv
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from conftest import brats_train_overrides, run_workflow
from monai.bundle import ConfigWorkflow

from gmd_monai.data.synthetic import make_synthetic_brats
from gmd_monai.subsets import BRATS_MODALITIES, SubsetSpace

REPO = Path(__file__).resolve().parents[1]
TRAIN = str(REPO / "bundle" / "configs" / "train.yaml")
EVALUATE = str(REPO / "bundle" / "configs" / "evaluate.yaml")
NAMES = SubsetSpace(BRATS_MODALITIES).names


def _overrides(tmp: Path, dataset_dir: str, **extra) -> dict:
    return brats_train_overrides(tmp, dataset_dir, **extra)


def _run(config, **overrides) -> ConfigWorkflow:
    return run_workflow(config, **overrides)


def _check_training_outputs(tmp: Path):
    assert (tmp / "models" / "model.pt").is_file()
    summary = json.loads((tmp / "runs" / "run_summary.json").read_text())
    assert summary["method"] == "gmd" and summary["epochs"] == 1
    assert list(summary["last_val_subset_dice"]) == NAMES
    with open(tmp / "runs" / "gmd_weights.csv") as f:
        rows = list(csv.reader(f))
    assert rows[0][4:] == [f"w[{n}]" for n in NAMES]
    weights = [float(x) for x in rows[1][4:]]
    assert len(weights) == 15 and all(w > 0 for w in weights)
    with open(tmp / "runs" / "val_subset_dice.csv") as f:
        val = list(csv.DictReader(f))
    assert [r["subset"] for r in val] == NAMES
    assert list((tmp / "runs").glob("events.out.tfevents*")), "no TensorBoard event file"


def _check_eval_outputs(eval_dir: Path, num_cases: int):
    table = (eval_dir / "subset_table.md").read_text()
    body = [line for line in table.splitlines() if line.startswith("| ")]
    assert len(body) == 1 + 15 + 1  # header, 15 subsets, mean
    assert body[-1].startswith("| **mean**")
    assert "| 10 | ○ | ● | ○ | ● |" in table  # t1ce+flair row shows present/absent marks
    with open(eval_dir / "per_case.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 15 * num_cases
    for r in rows:
        for key in ("dice_wt", "dice_tc", "dice_et"):
            assert 0.0 <= float(r[key]) <= 1.0
        assert float(r["hd95_wt"]) >= 0.0
    png = eval_dir / "subset_dice.png"
    assert png.is_file() and png.stat().st_size > 5000


@pytest.fixture(scope="module")
def synthetic_dir(tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("synth")
    make_synthetic_brats(root, num_cases=4, shape=(32, 32, 32), seed=1)
    return str(root)


def _case(synthetic_dir: str) -> dict:
    case = sorted(Path(synthetic_dir).iterdir())[0]
    files = {m: str(next(case.glob(f"*_{m}.nii.gz"))) for m in BRATS_MODALITIES}
    return {"image": [files[m] for m in BRATS_MODALITIES], "label": str(next(case.glob("*_seg.nii.gz")))}


def _same_pipeline(config_pipeline, python_pipeline, item: dict) -> None:
    """Same steps, and the same output for the same random state (an independent behavioural check)."""
    assert [type(t).__name__ for t in config_pipeline.transforms] == [
        type(t).__name__ for t in python_pipeline.transforms
    ]
    outs = []
    for pipeline in (config_pipeline, python_pipeline):
        pipeline.set_random_state(seed=7)
        outs.append(pipeline(dict(item)))
    for key in ("image", "label"):
        assert outs[0][key].shape == outs[1][key].shape
        assert torch.equal(outs[0][key].as_tensor(), outs[1][key].as_tensor()), key


@pytest.mark.parametrize("foreground_prob", [0.0, 0.67])
def test_config_pipelines_are_the_python_ones(synthetic_dir, foreground_prob):
    """train.yaml and evaluate.yaml list their steps inline; the Python factories build the same."""
    from monai.bundle import ConfigParser

    from gmd_monai.data.brats import train_transforms, val_transforms

    parser = ConfigParser()
    parser.read_config([TRAIN, EVALUATE])
    parser.update(
        {"foreground_prob": foreground_prob, "roi_size": [16, 16, 16], "model_pixdim": [2.0, 2.0, 2.0]}
    )
    item = _case(synthetic_dir)
    grid = dict(pixdim=[2.0, 2.0, 2.0], axcodes="LPS")
    train = train_transforms(roi_size=[16] * 3, foreground_prob=foreground_prob, **grid)
    _same_pipeline(parser.get_parsed_content("train#preprocessing"), train, item)
    _same_pipeline(parser.get_parsed_content("validate#preprocessing"), val_transforms(True, **grid), item)
    eval_grid = parser.get_parsed_content("eval_model")  # the shipped weights' grid
    evaluate = val_transforms(
        False, pixdim=eval_grid["pixdim"], axcodes=eval_grid["axcodes"], resample_label=False
    )
    _same_pipeline(parser.get_parsed_content("evaluate#preprocessing"), evaluate, item)


def test_train_yaml_alone_asks_for_data(tmp_path):
    """The real-data recipe needs data; the synthetic dataset is an explicit override file."""
    wf = ConfigWorkflow(config_file=TRAIN, workflow_type="train", bundle_root=str(tmp_path))
    with pytest.raises(Exception) as info:
        wf.initialize()
        wf.parser.get_parsed_content("datalist_data")
    assert "configs/synthetic.yaml" in str(info.value) or "configs/synthetic.yaml" in str(
        info.value.__cause__
    )


def test_train_properties(tmp_path, synthetic_dir):
    wf = ConfigWorkflow(config_file=TRAIN, workflow_type="train", **_overrides(tmp_path, synthetic_dir))
    wf.initialize()
    assert wf.check_properties() == []


def test_bundle_trains_and_evaluates_on_synthetic(tmp_path, synthetic_dir):
    _run(TRAIN, **_overrides(tmp_path, synthetic_dir))
    _check_training_outputs(tmp_path)
    ov = _overrides(tmp_path, synthetic_dir, eval_dir=str(tmp_path / "eval"))
    ov["checkpoint"] = str(tmp_path / "models" / "model.pt")
    _run([TRAIN, EVALUATE], **ov)
    _check_eval_outputs(tmp_path / "eval", num_cases=1)
    # the summary is published next to the weights for the clinician's report
    published = tmp_path / "models" / "subset_summary.csv"
    assert published.read_text() == (tmp_path / "eval" / "subset_summary.csv").read_text()


def test_other_methods_train(tmp_path, synthetic_dir):
    for method in ("mean", "dropout", "upgrad"):
        out = tmp_path / method
        _run(TRAIN, **_overrides(out, synthetic_dir, method=method))
        summary = json.loads((out / "runs" / "run_summary.json").read_text())
        assert summary["method"] == method


def test_wrong_dataset_dir_is_named(tmp_path):
    missing = tmp_path / "no_such_brats"
    with pytest.raises(Exception) as info:
        _run(TRAIN, **_overrides(tmp_path, str(missing)))
    chain, e = [], info.value
    while e is not None:
        chain.append(str(e))
        e = e.__cause__ or e.__context__
    assert any(str(missing) in msg for msg in chain), chain


def _crop_real_case(src: Path, dst: Path, size=(64, 64, 48)) -> None:
    case = src.name
    seg = nib.load(src / f"{case}_seg.nii.gz")
    lab = np.asarray(seg.dataobj)
    centre = np.round(np.argwhere(lab > 0).mean(0)).astype(int)
    start = [int(np.clip(c - s // 2, 0, d - s)) for c, s, d in zip(centre, size, lab.shape)]
    sl = tuple(slice(a, a + s) for a, s in zip(start, size))
    (dst / case).mkdir(parents=True)
    for suffix in ("t1", "t1ce", "t2", "flair", "seg"):
        img = nib.load(src / f"{case}_{suffix}.nii.gz")
        affine = img.affine.copy()
        affine[:3, 3] = img.affine[:3, :3] @ np.array(start) + img.affine[:3, 3]
        data = np.asarray(img.dataobj)[sl]
        nib.save(nib.Nifti1Image(data, affine, img.header), dst / case / f"{case}_{suffix}.nii.gz")


@pytest.mark.realdata
def test_bundle_trains_on_two_real_cases(tmp_path, brats_dir):
    data = tmp_path / "real"
    for case in ("Brats18_2013_11_1", "Brats18_CBICA_ABM_1"):
        _crop_real_case(brats_dir / case, data)
    ov = _overrides(tmp_path, str(data), roi_size=[32, 32, 32], val_fraction=0.0, test_fraction=0.0)
    _run(TRAIN, **ov)
    _check_training_outputs(tmp_path)
    ov.update(eval_dir=str(tmp_path / "eval"), checkpoint=str(tmp_path / "models" / "model.pt"), hd95=True)
    _run([TRAIN, EVALUATE], **ov)
    _check_eval_outputs(tmp_path / "eval", num_cases=2)


def test_metadata_valid_against_zoo_schema():
    from conftest import SHARED

    jsonschema = pytest.importorskip("jsonschema")
    schema_path = SHARED / "schemas" / "meta_schema_20240725.json"
    if not schema_path.is_file():
        pytest.skip(f"{schema_path} is absent (see ../shared/README.md)")
    meta = json.loads((REPO / "bundle" / "configs" / "metadata.json").read_text())
    jsonschema.validate(meta, json.loads(schema_path.read_text()))
    inputs = meta["network_data_format"]["inputs"]
    assert list(inputs) == ["image"] and inputs["image"]["num_channels"] == 4
    assert inputs["image"]["channel_def"] == {"0": "T1", "1": "T1ce", "2": "T2", "3": "FLAIR"}
    assert meta["network_data_format"]["outputs"]["pred"]["channel_def"] == {"0": "WT", "1": "TC", "2": "ET"}


def test_demo_runs_end_to_end(tmp_path, capsys):
    """`make demo` in miniature: data, training through the bundle, the 15-subset table, then the
    clinician command on a test case with two modalities missing; a console a person can read."""
    import json
    import logging

    import torch

    from gmd_monai.demo import demo

    root = logging.getLogger()
    handlers, level, threads = list(root.handlers), root.level, torch.get_num_threads()
    quiet = {
        name: logging.getLogger(name).level
        for name in ("monai", "gmd_monai.checkpointing", "gmd_monai.engine")
    }
    try:
        table = Path(demo(output_dir=str(tmp_path / "demo"), epochs=1, num_cases=6, size=32, threads=1))
    finally:  # the bundle's logging.conf binds a handler to this test's captured stderr: undo it
        for h in [h for h in root.handlers if h not in handlers]:
            root.removeHandler(h)
        root.setLevel(level)
        torch.set_num_threads(threads)
        for name, old in quiet.items():
            logging.getLogger(name).setLevel(old)
    rows = [line for line in table.read_text().splitlines() if line.startswith("| ")]
    assert len(rows) == 1 + 15 + 1  # header, one row per subset, the mean
    assert (tmp_path / "demo" / "eval" / "subset_dice.png").stat().st_size > 0
    assert (tmp_path / "demo" / "runs" / "gmd_weights.csv").is_file()
    seg_dir = tmp_path / "demo" / "segment"
    (label_map,) = seg_dir.glob("*_gmdseg.nii.gz")
    (report,) = seg_dir.glob("*_report.json")
    (montage,) = seg_dir.glob("*_montage.png")
    assert label_map.stat().st_size > 0 and montage.stat().st_size > 0
    content = json.loads(report.read_text())
    assert set(content["modalities_missing"]) == {"t1", "t2"}, content.get("modalities_missing")
    captured = capsys.readouterr()
    out = captured.out
    assert "[1/4]" in out and "[4/4]" in out and "done in" in out
    # one line per epoch with the ETA and the validation; the table once; no other bars or log lines
    (epoch_line,) = [
        line for line in out.splitlines() if "gmd_monai.progress" in line and "epoch 1/1" in line
    ]
    assert "ETA" in epoch_line and "val_mean_dice" in epoch_line
    assert out.count("| **mean** |") == 1
    for noise in ("Loading dataset", "Key metric", "Epoch[1] Metrics"):
        assert noise not in out + captured.err, noise
    for path in (label_map, report, montage):
        assert str(path) in out  # the demo says where each file is
