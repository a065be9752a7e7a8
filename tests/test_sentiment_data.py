"""Sentiment data: synthetic generator, MulT / MMSA / CMU-SDK .csd / MFN readers, validation errors."""

import json
import logging
import os
import pickle
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from gmd_monai.data.sentiment import (
    FORMATS,
    READERS,
    SentimentDataset,
    SentimentReader,
    align_to_segments,
    csd_label_segments,
    detect_format,
    find_reader,
    load_csd_dataset,
    load_mfn_h5,
    load_mmsa_pickle,
    load_mult_pickle,
    load_sentiment,
    read_csd,
    read_folds,
)
from gmd_monai.data.synthetic_sentiment import ensure_synthetic_sentiment, make_synthetic_sentiment

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
MOSI = SHARED / "data" / "mosi"
SMALL = {"train": 40, "valid": 12, "test": 12}


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def mosi_dir() -> Path:
    if not (MOSI / "CMU_MOSI_Opinion_Labels.csd").is_file():
        pytest.skip(f"CMU-MOSI labels not available ({MOSI} is absent; see ../shared/README.md)")
    return MOSI


def _dump(path: Path, obj) -> Path:
    with open(path, "wb") as f:
        pickle.dump(obj, f)
    return path


def _mult(**kw):
    return make_synthetic_sentiment(split_sizes=SMALL, num_steps=6, **kw)


# ---- synthetic generator -----------------------------------------------------------------------
def test_synthetic_layout_is_mult():
    data = _mult(seed=3)
    assert set(data) == {"train", "valid", "test"}
    for split, n in SMALL.items():
        d = data[split]
        assert set(d) == {"text", "audio", "vision", "labels"}
        assert (
            d["text"].shape == (n, 6, 48)
            and d["audio"].shape == (n, 6, 8)
            and d["vision"].shape == (n, 6, 16)
        )
        assert d["labels"].shape == (n, 1, 1) and d["labels"].dtype == np.float32
        assert np.all(np.abs(d["labels"]) <= 3.0)
    again = _mult(seed=3)
    np.testing.assert_array_equal(again["train"]["text"], data["train"]["text"])  # deterministic


def _ridge_r2(x: np.ndarray, y: np.ndarray, n_train: int) -> float:
    feats = np.concatenate([x.mean(1), np.abs(x).max(1) * np.sign(x.sum(1))], axis=1)
    feats = np.concatenate([feats, np.ones((len(feats), 1))], axis=1)
    a, b = feats[:n_train], y[:n_train]
    w = np.linalg.solve(a.T @ a + 1.0 * np.eye(a.shape[1]), a.T @ b)
    pred = feats[n_train:] @ w
    return 1.0 - np.mean((pred - y[n_train:]) ** 2) / np.var(y[n_train:])


def test_synthetic_text_carries_most_signal():
    data = make_synthetic_sentiment(
        split_sizes={"train": 3000, "valid": 1, "test": 1}, num_steps=10, seed=0, inf_fraction=0.0
    )
    d = data["train"]
    y = d["labels"].reshape(-1)
    r2 = {m: _ridge_r2(d[m].astype(np.float64), y, 2000) for m in ("text", "audio", "vision")}
    assert r2["text"] > r2["audio"] > r2["vision"] > 0.0, r2
    assert np.mean(y == 0) > 0.02  # some exact zeros, so has-0 and non-0 metrics differ
    n_pad = (np.abs(d["text"]).sum(-1) == 0).sum(1)
    assert n_pad.max() > 0 and np.all((np.abs(d["text"][:, -1]).sum(-1)) > 0)  # left padding


def test_ensure_synthetic_is_idempotent(tmp_path):
    p = tmp_path / "s.pkl"
    ensure_synthetic_sentiment(p, split_sizes=SMALL, num_steps=4)
    mtime = p.stat().st_mtime_ns
    ensure_synthetic_sentiment(p, split_sizes=SMALL, num_steps=4)
    assert p.stat().st_mtime_ns == mtime
    ensure_synthetic_sentiment(p, split_sizes=SMALL, num_steps=5)  # other arguments: rewritten
    assert load_mult_pickle(p)["train"].num_steps == {"text": 5, "audio": 5, "vision": 5}


def test_synthetic_bad_arguments():
    with pytest.raises(ValueError, match="feature_sizes needs exactly the keys"):
        make_synthetic_sentiment(feature_sizes={"text": 3, "audio": 2})


# ---- MulT pickles ------------------------------------------------------------------------------
def test_mult_reader_sizes_from_data_and_inf(tmp_path, caplog):
    data = _mult(feature_sizes={"text": 7, "audio": 3, "vision": 5}, inf_fraction=0.0)
    data["train"]["audio"][0, 0, 0] = -np.inf
    data["train"]["audio"][1, 2, 1] = -np.inf
    data["train"]["id"] = np.array([[f"vid{i}", str(i)] for i in range(SMALL["train"])])
    p = _dump(tmp_path / "mosi_data.pkl", data)
    with caplog.at_level(logging.WARNING, logger="gmd_monai.data.sentiment"):
        splits = load_mult_pickle(p)
    assert "train/audio: set 2 -inf and 0 +inf value(s) to 0" in caplog.text
    tr = splits["train"]
    assert tr.feature_sizes == {"text": 7, "audio": 3, "vision": 5}
    assert tr.features["audio"][0, 0, 0] == 0.0 and np.isfinite(tr.features["audio"]).all()
    assert tr.labels.shape == (SMALL["train"],)
    assert tr.ids[3] == "vid3/3"
    assert detect_format(p) == "mult"
    ds = SentimentDataset(p, split="val")
    item = ds[0]
    assert set(item) == {"text", "audio", "vision", "label", "id"}
    assert item["text"].shape == (6, 7) and item["label"].shape == (1,)
    assert ds.feature_sizes == {"text": 7, "audio": 3, "vision": 5}


def _broken(tmp_path, mutate):
    data = _mult(inf_fraction=0.0)
    mutate(data)
    return _dump(tmp_path / "broken.pkl", data)


@pytest.mark.parametrize(
    "mutate, match",
    [
        (lambda d: d.pop("valid"), r"missing split\(s\) \['valid'\]"),
        (lambda d: d["train"].pop("vision"), r"split train is missing key\(s\) \['vision'\]"),
        (
            lambda d: d["test"].update(audio=d["test"]["audio"][:, :, 0, None, None]),
            r"test/audio: expected features of shape \(N, T, d\)",
        ),
        (
            lambda d: d["train"].update(text=d["train"]["text"][:-1]),
            "different numbers of samples.*mismatched lengths",
        ),
        (
            lambda d: d["valid"].update(labels=d["valid"]["labels"][:-2]),
            r"10 labels for 12 samples \(mismatched lengths\)",
        ),
        (
            lambda d: d["valid"]["vision"].__setitem__((0, 1, 2), np.nan),
            r"valid/vision: 1 NaN value\(s\) in 1 sample",
        ),
        (
            lambda d: d["test"]["labels"].__setitem__((4, 0, 0), np.nan),
            r"test/labels: 1 non-finite label\(s\) at sample\(s\) \[4\]",
        ),
        (
            lambda d: d["test"].update(text=d["test"]["text"][:, :, :40]),
            "text features have size 40 in split test but 48 in split train",
        ),
        (lambda d: d["train"].update(labels=np.zeros((40, 1, 7))), "hold 7 values per sample"),
        (
            lambda d: d["train"].update(audio=d["train"]["audio"][:, :, 0]),
            r"train/audio: rank-2 features of shape \(40, 6\); expected \(N, T, d\)",
        ),
    ],
)
def test_mult_reader_errors(tmp_path, mutate, match):
    p = _broken(tmp_path, mutate)
    with pytest.raises(ValueError, match=match) as err:
        load_mult_pickle(p)
    assert "broken.pkl" in str(err.value)  # the message names the file


def test_mult_reader_nan_to_zero_and_not_a_dict(tmp_path, caplog):
    p = _broken(tmp_path, lambda d: d["valid"]["vision"].__setitem__((0, 1, 2), np.nan))
    splits = load_mult_pickle(p, nan_to_zero=True)
    assert splits["valid"].features["vision"][0, 1, 2] == 0.0
    with pytest.raises(ValueError, match="expected a dict of splits"):
        load_mult_pickle(_dump(tmp_path / "list.pkl", [1, 2, 3]))
    with pytest.raises(FileNotFoundError, match="no such file"):
        load_mult_pickle(tmp_path / "absent.pkl")


class _RunsCode:
    """Unpickling this creates the folder ``marker``: evidence that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))


@pytest.mark.parametrize("name", ["data.json", "data.txt", "data", "data.npy", "data.pkl.bak"])
@pytest.mark.parametrize(
    "reader", ["load_sentiment", "detect_format", "load_mult_pickle", "load_mmsa_pickle"]
)
def test_only_pkl_files_are_unpickled(tmp_path, name, reader):
    marker = tmp_path / "code_ran"
    p = _dump(tmp_path / name, _RunsCode(marker))
    fn = {
        "load_sentiment": lambda q: load_sentiment(q, cache=False),
        "detect_format": detect_format,
        "load_mult_pickle": load_mult_pickle,
        "load_mmsa_pickle": load_mmsa_pickle,
    }[reader]
    with pytest.raises(ValueError, match="unknown file type|not unpickled") as err:
        fn(p)
    assert str(p) in str(err.value) and not marker.exists()
    with pytest.raises(ValueError):  # the same bytes as .pkl do run: the marker shows it
        load_mult_pickle(_dump(tmp_path / "same.pkl", _RunsCode(marker)))
    assert marker.is_dir()


@pytest.mark.parametrize("keep", [0.0, 0.3, 0.9])
def test_truncated_pickle_names_the_file(tmp_path, keep):
    p = _dump(tmp_path / "mosi_data.pkl", _mult(inf_fraction=0.0))
    p.write_bytes(p.read_bytes()[: int(p.stat().st_size * keep)])
    with pytest.raises(ValueError, match="truncated or corrupt pickle") as err:
        load_sentiment(p, cache=False)
    assert str(p) in str(err.value)


# ---- MMSA pickles ------------------------------------------------------------------------------
def _mmsa(n=10, t=7, ta=11, tv=9, with_text=True, rng=None):
    rng = rng or np.random.default_rng(0)
    out = {}
    for split in ("train", "valid", "test"):
        mask = np.zeros((n, t))
        text_len = rng.integers(2, t + 1, size=n)
        for i, L in enumerate(text_len):
            mask[i, :L] = 1
        d = {
            "raw_text": np.array(["a sentence"] * n),
            "audio": rng.normal(size=(n, ta, 5)).astype(np.float32),
            "vision": rng.normal(size=(n, tv, 4)).astype(np.float32),
            "audio_lengths": rng.integers(1, ta + 1, size=n).tolist(),
            "vision_lengths": rng.integers(1, tv + 1, size=n).tolist(),
            "id": np.array([f"v$_${i}" for i in range(n)]),
            "text_bert": np.stack([rng.integers(100, 999, size=(n, t)), mask, np.zeros((n, t))], axis=1),
            "regression_labels": rng.uniform(-3, 3, size=n).astype(np.float32),
            "classification_labels": np.zeros(n),
        }
        if with_text:
            d["text"] = rng.normal(size=(n, t, 12)).astype(np.float32)
        d["audio"][0, 0, 0] = -np.inf
        out[split] = d
    return out


def test_mmsa_reader_unaligned_with_lengths(tmp_path):
    raw = _mmsa()
    p = _dump(tmp_path / "unaligned_50.pkl", raw)
    assert detect_format(p) == "mmsa"
    splits = load_mmsa_pickle(p)
    tr = splits["train"]
    assert tr.feature_sizes == {"text": 12, "audio": 5, "vision": 4}
    assert tr.num_steps == {"text": 7, "audio": 11, "vision": 9}
    np.testing.assert_array_equal(tr.lengths["audio"], raw["train"]["audio_lengths"])
    np.testing.assert_array_equal(tr.lengths["text"], raw["train"]["text_bert"][:, 1].sum(1))
    assert tr.features["audio"][0, 0, 0] == 0.0
    np.testing.assert_allclose(tr.labels, raw["train"]["regression_labels"])
    item = SentimentDataset(p, split="test")[3]
    assert int(item["vision_lengths"]) == raw["test"]["vision_lengths"][3]


def test_mmsa_reader_errors(tmp_path, caplog):
    with pytest.raises(ValueError, match="holds BERT token ids"):
        load_mmsa_pickle(_dump(tmp_path / "a.pkl", _mmsa(with_text=False)))
    raw = _mmsa()
    raw["valid"]["audio_lengths"][2] = 99
    with pytest.raises(ValueError, match=r"valid/audio_lengths: lengths must be in \[0, 11\]"):
        load_mmsa_pickle(_dump(tmp_path / "b.pkl", raw))
    raw = _mmsa()
    raw["test"]["vision_lengths"][1] = 0
    with caplog.at_level(logging.WARNING, logger="gmd_monai.data.sentiment"):
        splits = load_mmsa_pickle(_dump(tmp_path / "c.pkl", raw))
    assert "1 sample(s) have length 0" in caplog.text and splits["test"].lengths["vision"][1] == 1
    raw = _mmsa()
    del raw["train"]["regression_labels"]
    with pytest.raises(ValueError, match=r"split train is missing key\(s\) \['regression_labels'\]"):
        load_mmsa_pickle(_dump(tmp_path / "d.pkl", raw))


# ---- CMU-MultimodalSDK computational sequences ------------------------------------------------
def test_csd_reader_on_real_mosi_labels(mosi_dir):
    seq = read_csd(mosi_dir / "CMU_MOSI_Opinion_Labels.csd")
    assert seq.root == "Opinion Segment Labels"
    assert len(seq.data) == 93 and seq.num_segments == 2199 and seq.feature_size == 1
    labels = np.concatenate([f[:, 0] for f, _ in seq.data.values()])
    assert labels.min() >= -3.0 and labels.max() <= 3.0 and labels.min() < -2.5 and labels.max() > 2.5
    assert "CMU-MOSI" in seq.metadata["dataset name"]
    segs = csd_label_segments(seq, mosi_dir / "cmu_mosi_std_folds.json")
    assert {k: len(v) for k, v in segs.items()} == {"train": 1284, "valid": 229, "test": 686}
    folds = read_folds(mosi_dir / "cmu_mosi_std_folds.json")
    assert [len(folds[s]) for s in ("train", "valid", "test")] == [52, 10, 31]
    mosei = read_folds(mosi_dir / "cmu_mosei_std_folds.json")
    assert [len(mosei[s]) for s in ("train", "valid", "test")] == [2249, 300, 678]


def test_align_to_segments_hand_computed():
    f = np.array([[1.0], [3.0], [5.0]])
    ints = np.array([[0.0, 1.0], [1.0, 2.0], [2.0, 4.0]])
    one, empty = align_to_segments(f, ints, np.array([[0.5, 2.5]]), num_steps=None)
    assert one.shape == (1, 1, 1) and one[0, 0, 0] == pytest.approx((0.5 * 1 + 1.0 * 3 + 0.5 * 5) / 2.0)
    two, _ = align_to_segments(f, ints, np.array([[0.5, 2.5]]), num_steps=2)
    np.testing.assert_allclose(two[0, :, 0], [2.0, 4.0])  # [0.5,1.5]: rows 0,1 half each; [1.5,2.5]: rows 1,2
    gap, empty = align_to_segments(f, ints, np.array([[3.0, 7.0]]), num_steps=4)
    np.testing.assert_allclose(gap[0, :, 0], [5.0, 0.0, 0.0, 0.0])
    assert empty[0].tolist() == [False, True, True, True]
    points = align_to_segments(
        np.array([[2.0], [4.0], [9.0]]),
        np.array([[1.0, 1.0], [1.2, 1.2], [5, 5]]),
        np.array([[0.0, 2.0]]),
        num_steps=None,
    )[0]
    assert points[0, 0, 0] == pytest.approx(3.0)  # zero-length intervals count with weight 1
    with pytest.raises(ValueError, match="needs finite features"):
        align_to_segments(np.array([[-np.inf]]), np.array([[0.0, 1.0]]), np.array([[0.0, 1.0]]))


def _write_csd(path: Path, root: str, videos: dict, meta: bool = True) -> Path:
    with h5py.File(path, "w") as f:
        g = f.create_group(root)
        d = g.create_group("data")
        for vid, (feats, ints) in videos.items():
            v = d.create_group(vid)
            v.create_dataset("features", data=feats)
            v.create_dataset("intervals", data=ints)
        if meta:
            g.create_group("metadata").create_dataset("root name", data=[root.encode()])
    return path


def test_csd_dataset_aligned_to_real_mosi_segments(mosi_dir, tmp_path, caplog):
    labels = read_csd(mosi_dir / "CMU_MOSI_Opinion_Labels.csd")
    rng = np.random.default_rng(0)
    feature_files = {}
    for m, (d, hz) in {"text": (4, 3.0), "audio": (3, 10.0), "vision": (2, 5.0)}.items():
        videos = {}
        for vid, (_, ints) in labels.data.items():
            end = float(ints[:, 1].max()) + 1.0
            starts = np.arange(0.0, end, 1.0 / hz)
            feats = rng.normal(size=(len(starts), d)).astype(np.float32)
            if m == "audio":
                feats[0, 0] = -np.inf
            videos[vid] = (feats, np.stack([starts, starts + 1.0 / hz], axis=1))
        feature_files[m] = _write_csd(tmp_path / f"{m}.csd", f"{m} features", videos)
    with caplog.at_level(logging.WARNING, logger="gmd_monai.data.sentiment"):
        splits = load_csd_dataset(
            mosi_dir / "CMU_MOSI_Opinion_Labels.csd",
            feature_files,
            mosi_dir / "cmu_mosi_std_folds.json",
            num_steps=5,
        )
    assert "set 93 +-inf and 0 NaN raw audio value(s) to 0" in caplog.text
    assert {k: len(v) for k, v in splits.items()} == {"train": 1284, "valid": 229, "test": 686}
    te = splits["test"]
    assert te.feature_sizes == {"text": 4, "audio": 3, "vision": 2}
    assert te.num_steps == {"text": 5, "audio": 5, "vision": 5}
    assert np.isfinite(te.features["audio"]).all()
    vid, k = te.ids[0][:-1].split("[")
    np.testing.assert_allclose(te.labels[0], labels.data[vid][0][int(k), 0], rtol=1e-6)
    # one step = the overlap-weighted mean of the text rows inside the first fifth of the segment
    seg = labels.data[vid][1][int(k)]
    expect, _ = align_to_segments(*read_csd(feature_files["text"], [vid]).data[vid], seg[None], 5)
    np.testing.assert_allclose(te.features["text"][0], expect[0], rtol=1e-5)
    ds = SentimentDataset(
        mosi_dir / "CMU_MOSI_Opinion_Labels.csd",
        split="train",
        format="csd",
        features={m: str(p) for m, p in feature_files.items()},
        folds=str(mosi_dir / "cmu_mosi_std_folds.json"),
        num_steps=5,
    )
    assert len(ds) == 1284 and ds.feature_sizes == {"text": 4, "audio": 3, "vision": 2}


def test_csd_errors(tmp_path):
    ok = (np.zeros((3, 2), np.float32), np.array([[0, 1], [1, 2], [2, 3]], float))
    bad = _write_csd(tmp_path / "len.csd", "f", {"a": ok, "b": (np.zeros((4, 2)), ok[1])})
    with pytest.raises(ValueError, match=r"len.csd: video 'b': 4 feature rows but 3 intervals \(mismatched"):
        read_csd(bad)
    with h5py.File(tmp_path / "nodata.csd", "w") as f:
        f.create_group("root").create_group("metadata")
    with pytest.raises(ValueError, match="nodata.csd: group 'root' has no 'data' group"):
        read_csd(tmp_path / "nodata.csd")
    two = _write_csd(tmp_path / "dims.csd", "f", {"a": ok, "b": (np.zeros((3, 5)), ok[1])})
    with pytest.raises(ValueError, match="video 'b' has 5 features per row, others 2"):
        read_csd(two)
    back = _write_csd(tmp_path / "back.csd", "f", {"a": (ok[0], np.array([[0, 1], [2, 1], [2, 3]], float))})
    with pytest.raises(ValueError, match="intervals must be finite with end >= start"):
        read_csd(back)
    folds = tmp_path / "folds.json"
    folds.write_text(json.dumps({"train": ["a", "b"], "valid": ["b"], "test": []}))
    with pytest.raises(ValueError, match="video 'b' is in both the train and valid folds"):
        read_folds(folds)
    folds.write_text(json.dumps({"train": ["a"], "test": []}))
    with pytest.raises(ValueError, match=r"no \['valid'\] fold"):
        read_folds(folds)
    with pytest.raises(ValueError, match="needs features="):
        load_sentiment(_write_csd(tmp_path / "l.csd", "labels", {"a": ok}))


# ---- MFN HDF5 folders (the CMU YouTube data) ---------------------------------------------------
def test_youtube_adapter_reads_real_features(mosi_dir):
    folder = mosi_dir / "youtube_aligned"
    assert detect_format(folder) == "mfn_h5"
    splits = load_mfn_h5(folder)
    assert set(splits) == {"valid", "test"}
    te = splits["test"]
    assert len(te) == 60 and len(splits["valid"]) == 36
    assert te.feature_sizes == {"text": 300, "audio": 74, "vision": 36}
    assert te.num_steps == {"text": 20, "audio": 20, "vision": 20}
    with h5py.File(folder / "y_test.h5", "r") as f:
        onehot = f["d1"][()]
    np.testing.assert_array_equal(te.labels, onehot.argmax(1) - 1.0)
    assert sorted(set(te.labels.tolist())) == [-1.0, 0.0, 1.0]


def test_mfn_missing_file(tmp_path):
    with h5py.File(tmp_path / "y_test.h5", "w") as f:
        f.create_dataset("d1", data=np.eye(3)[[0, 1]])
    with pytest.raises(ValueError, match=r"split test is missing file\(s\)"):
        load_mfn_h5(tmp_path)
    os.remove(tmp_path / "y_test.h5")
    with pytest.raises(ValueError, match="cannot tell the format of this folder"):
        detect_format(tmp_path)


# ---- one reader per format behind one interface ------------------------------------------------
def _write_mfn(folder: Path, n: int = 4) -> Path:
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name, d in {"text_test_emb.h5": 6, "audio_test.h5": 3, "video_test.h5": 2}.items():
        with h5py.File(folder / name, "w") as f:
            f.create_dataset("d1", data=rng.normal(size=(n, 5, d)).astype(np.float32))
    with h5py.File(folder / "y_test.h5", "w") as f:
        f.create_dataset("d1", data=np.eye(3)[np.arange(n) % 3])
    return folder


def _one_of_each(tmp_path: Path, fmt: str) -> Path:
    if fmt == "mult":
        return _dump(tmp_path / "mosi_data.pkl", _mult())
    if fmt == "mmsa":
        return _dump(tmp_path / "aligned_50.pkl", _mmsa())
    if fmt == "csd":
        return _write_csd(
            tmp_path / "labels.csd", "labels", {"a": (np.ones((2, 1)), np.array([[0, 1], [1, 2]]))}
        )
    return _write_mfn(tmp_path / "youtube")


def test_one_reader_per_format():
    assert tuple(READERS) == FORMATS == ("mult", "mmsa", "csd", "mfn_h5")
    for name, reader in READERS.items():
        assert isinstance(reader, SentimentReader) and reader.format == name
    with pytest.raises(TypeError):  # the table is read-only: FORMATS always names every reader
        READERS["npz"] = READERS["mult"]  # type: ignore[index]


@pytest.mark.parametrize("fmt", ["mult", "mmsa", "csd", "mfn_h5"])
def test_detect_picks_the_reader_of_each_format(tmp_path, fmt):
    p = _one_of_each(tmp_path, fmt)
    assert {name for name, reader in READERS.items() if reader.detect(p)} == {fmt}
    assert find_reader(p) is READERS[fmt] and detect_format(p) == fmt
    assert not any(reader.detect(tmp_path / "absent.pkl") for reader in READERS.values())


@pytest.mark.parametrize("fmt", ["mult", "mmsa", "mfn_h5"])
def test_reader_reads_like_load_sentiment(tmp_path, fmt):
    p = _one_of_each(tmp_path, fmt)
    direct, loaded = READERS[fmt].read(p), load_sentiment(p, cache=False)
    assert list(direct) == list(loaded)
    for split in direct:
        a, b = direct[split], loaded[split]
        assert a.ids == b.ids and a.feature_sizes == b.feature_sizes
        np.testing.assert_array_equal(a.labels, b.labels)
        for m in a.features:
            np.testing.assert_array_equal(a.features[m], b.features[m])


@pytest.mark.parametrize("name", ["data.json", "data.npz", "data", "data.pkl.bak"])
def test_no_reader_for_an_unknown_file_names_it(tmp_path, name):
    p = tmp_path / name
    p.write_bytes(b"not a dataset")
    assert not any(reader.detect(p) for reader in READERS.values())
    with pytest.raises(ValueError, match="unknown file type") as err:
        find_reader(p)
    assert str(p) in str(err.value) and "nothing was read" in str(err.value)


@pytest.mark.parametrize(
    "content, match",
    [
        ({"train": {"text": np.zeros((2, 1, 1))}}, "unknown pickle layout"),
        ({"other": {}}, "no train/valid/test split in this pickle"),
        ([1, 2], "expected a dict of splits"),
    ],
)
def test_no_reader_for_an_unknown_pickle_names_it(tmp_path, content, match):
    p = _dump(tmp_path / "odd.pkl", content)
    assert not any(reader.detect(p) for reader in READERS.values())
    with pytest.raises(ValueError, match=match) as err:
        find_reader(p)
    assert str(p) in str(err.value)


def test_no_reader_for_a_missing_path_or_a_plain_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file or folder") as err:
        find_reader(tmp_path / "absent")
    assert str(tmp_path / "absent") in str(err.value)
    with pytest.raises(ValueError, match="cannot tell the format of this folder") as err:
        find_reader(tmp_path)
    assert str(tmp_path) in str(err.value)


def test_moved_names_are_the_same_objects():
    import importlib

    import gmd_monai.data.sentiment as sentiment

    homes = [
        importlib.import_module(f"gmd_monai.data.sentiment_{m}")
        for m in ("csd", "dataset", "files", "mfn", "mmsa", "mult", "readers", "splits")
    ]
    for name in sentiment.__all__:
        assert any(getattr(home, name, None) is getattr(sentiment, name) for home in homes), name
