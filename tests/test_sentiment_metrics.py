"""Sentiment metrics against hand-computed values; 7-subset tables; the metric; real YouTube features."""

import csv
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.data import DataLoader
from monai.utils import CommonKeys as Keys
from torch import nn

from gmd_monai.data.sentiment import SentimentDataset, load_mfn_h5
from gmd_monai.engine import SubsetTrainer
from gmd_monai.losses import SubsetLoss
from gmd_monai.networks.ds_sequence import DynamicSharingSequenceModel
from gmd_monai.sentiment_engine import SentimentPrepareBatch, SubsetRegressionMetric
from gmd_monai.sentiment_evaluation import (
    binary_accuracy,
    evaluate_model,
    mae,
    multiclass_accuracy,
    pearson_corr,
    sentiment_metrics,
    subset_predictions,
    subset_table,
    weighted_f1,
    write_tables,
)
from gmd_monai.subsets import SENTIMENT_MODALITIES, SubsetSpace

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
YOUTUBE = SHARED / "data" / "mosi" / "youtube_aligned"
SHORT = ["TAV", "TA", "TV", "AV", "T", "A", "V"]

# hand-computed example (see each test): a tie at 0 in pred (index 2) and two zero labels (1, 5)
PRED = np.array([1.2, -0.3, 0.0, 2.6, -2.4, 0.4])
LABEL = np.array([1.0, 0.0, -0.6, 3.0, -1.6, 0.0])


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_mae_and_corr_by_hand():
    assert mae(PRED, LABEL) == pytest.approx((0.2 + 0.3 + 0.6 + 0.4 + 0.8 + 0.4) / 6)
    # deviations (-1, 0, 1) and (-1, 1, 0): covariance sum 1, variance sums 2 and 2 -> r = 0.5
    assert pearson_corr([1, 2, 3], [1, 3, 2]) == pytest.approx(0.5)
    assert pearson_corr([3, 1, 2], [-3, -1, -2]) == pytest.approx(-1.0)
    assert math.isnan(pearson_corr([1, 1, 1], [1, 2, 3]))


def test_has0_and_non0_with_ties_at_zero():
    # has-0: pred >= 0 [T F T T F T] vs label >= 0 [T T F T F T] -> 4 of 6 agree
    # weighted F1: class True support 4, predicted 4, TP 3 -> 0.75; class False support 2, predicted 2,
    # TP 1 -> 0.5; (4 * 0.75 + 2 * 0.5) / 6 = 2/3
    acc, f1 = binary_accuracy(PRED, LABEL, "has0")
    assert acc == pytest.approx(4 / 6) and f1 == pytest.approx(2 / 3)
    # non-0: drop labels == 0 (indices 1, 5); pred > 0 [T F T F] (0.0 is negative) vs label > 0 [T F T F]
    acc, f1 = binary_accuracy(PRED, LABEL, "non0")
    assert acc == 1.0 and f1 == 1.0
    assert all(math.isnan(v) for v in binary_accuracy([1.0, -1.0], [0.0, 0.0], "non0"))
    with pytest.raises(ValueError, match="unknown mode 'both'"):
        binary_accuracy(PRED, LABEL, "both")


def test_weighted_f1_with_a_class_never_predicted():
    # predicted all True, truth [T T F]: F1(True) = 2*2/(3+2) = 0.8, F1(False) = 0 -> (2*0.8 + 1*0)/3
    assert weighted_f1([True, True, True], [True, True, False]) == pytest.approx(1.6 / 3)


def test_acc7_and_acc5_round_half_to_even_after_clipping():
    # clip to [-3, 3], round: pred (1, -0, 0, 3, -2, 0) vs label (1, 0, -1, 3, -2, 0) -> 5 of 6
    assert multiclass_accuracy(PRED, LABEL, 3.0) == pytest.approx(5 / 6)
    # clip to [-2, 2]: pred (1, 0, 0, 2, -2, 0) vs label (1, 0, -1, 2, -2, 0) -> 5 of 6
    assert multiclass_accuracy(PRED, LABEL, 2.0) == pytest.approx(5 / 6)
    # NumPy rounds half to even: 2.5 -> 2, 0.5 -> 0, -1.5 -> -2; 4.2 clips to 3
    assert multiclass_accuracy([2.5, 0.5, -1.5, 4.2], [2.0, 0.0, -2.0, 3.0]) == 1.0
    m = sentiment_metrics(PRED, LABEL)
    assert set(m) == {"mae", "corr", "acc2_has0", "f1_has0", "acc2_non0", "f1_non0", "acc5", "acc7"}
    with pytest.raises(ValueError, match="pred has 2 values but label has 3"):
        mae([1, 2], [1, 2, 3])
    with pytest.raises(ValueError, match="pred contains non-finite values"):
        mae([np.nan], [1.0])


def test_subset_table_and_files(tmp_path):
    space = SubsetSpace(SENTIMENT_MODALITIES)
    rng = np.random.default_rng(0)
    labels = rng.uniform(-3, 3, 20)
    preds = {n: labels + (k + 1) * 0.1 * rng.normal(size=20) for k, n in enumerate(space.names)}
    rows = subset_table(preds, labels, space)
    assert [r["short"] for r in rows] == SHORT and [r["subset"] for r in rows] == space.names
    assert rows[4]["mae"] == pytest.approx(mae(preds["text"], labels))
    paths = write_tables(rows, tmp_path, prefix="t")
    with open(paths["csv"]) as f:
        table = list(csv.DictReader(f))
    assert len(table) == 7 and table[0]["subset"] == "text+audio+vision"
    assert float(table[6]["mae"]) == pytest.approx(rows[6]["mae"], abs=1e-4)
    md = Path(paths["markdown"]).read_text().splitlines()
    assert sum(line.startswith("| ") and "subset" not in line for line in md) == 7
    assert Path(paths["png"]).stat().st_size > 5000
    with pytest.raises(KeyError, match="no predictions for subset"):
        subset_table({"text": labels}, labels, space)


def test_subset_regression_metric_forms_subsets_from_streams():
    stacked = torch.tensor([[1.0, 2.0, 3.0], [0.0, -1.0, -2.0]])
    label = torch.tensor([[1.0], [-1.0]])
    metric = SubsetRegressionMetric(SENTIMENT_MODALITIES, metric="mae")
    metric.update((stacked, label))
    value = metric.compute()
    # subset predictions per sample: TAV (2, -1), TA (1.5, -0.5), TV (2, -1), AV (2.5, -1.5),
    # T (1, 0), A (2, -1), V (3, -2)
    expected = [
        (1 + 0) / 2,
        (0.5 + 0.5) / 2,
        (1 + 0) / 2,
        (1.5 + 0.5) / 2,
        (0 + 1) / 2,
        (1 + 0) / 2,
        (2 + 1) / 2,
    ]
    assert [r["mae"] for r in metric.table] == pytest.approx(expected)
    assert value == pytest.approx(np.mean(expected))
    with pytest.raises(ValueError, match="PRED has 2 columns"):
        metric.update((stacked[:, :2], label))
    with pytest.raises(ValueError, match="unknown metric 'rmse'"):
        SubsetRegressionMetric(metric="rmse")
    out = {Keys.PRED: stacked, Keys.LABEL: label}
    assert metric._output_transform(out)[0] is stacked


def test_youtube_features_through_model_training_and_evaluation():
    if not YOUTUBE.is_dir():
        pytest.skip(f"YouTube features not available ({YOUTUBE} is absent; see ../shared/README.md)")
    splits = load_mfn_h5(YOUTUBE)  # the small adapter: one-hot over 3 classes -> -1 / 0 / 1
    train, test = SentimentDataset(data=splits["valid"]), SentimentDataset(data=splits["test"])
    torch.manual_seed(0)
    net = DynamicSharingSequenceModel(train.feature_sizes, hidden_size=8, latent_size=16)
    assert net.input_sizes == {"text": 300, "audio": 74, "vision": 36}  # read from the data
    trainer = SubsetTrainer(
        "cpu",
        1,
        DataLoader(train, batch_size=12, shuffle=True),
        net,
        torch.optim.Adam(net.parameters(), 1e-3),
        SubsetLoss(SENTIMENT_MODALITIES, nn.L1Loss()),
        method="gmd",
        prepare_batch=SentimentPrepareBatch(),
        decollate=False,
    )
    trainer.run()
    assert trainer.state.iteration == 3 and len(trainer.state.gmd.weights) == 7
    loader = DataLoader(test, batch_size=32)
    rows = evaluate_model(net, loader)
    assert [r["short"] for r in rows] == SHORT and all(r["n"] == 60 for r in rows)
    assert all(np.isfinite(r["mae"]) for r in rows)
    preds, labels, ids = subset_predictions(net, loader)
    assert sorted(set(labels.tolist())) == [-1.0, 0.0, 1.0] and len(ids) == 60
    with torch.no_grad():  # the TV row is the mean of the text and vision predictions
        x = {m: torch.as_tensor(splits["test"].features[m]) for m in ("text", "vision")}
        np.testing.assert_allclose(preds["text+vision"], net(x).reshape(-1).numpy(), rtol=1e-5, atol=1e-6)
