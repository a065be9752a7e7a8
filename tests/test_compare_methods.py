"""benchmarks/compare_methods.py: the statistics against hand-computed values, the folds, the time budget
(bundle/configs/time_limit.yaml), and the smoke comparison end to end (resume, --summarize-only)."""

import csv
import json
import shutil
import sys
import time
from pathlib import Path

import pytest
import torch
from ignite.engine import Engine, Events
from monai.bundle import ConfigWorkflow

from gmd_monai.data.synthetic import make_synthetic_brats
from gmd_monai.inference.model import model_config
from gmd_monai.time_budget import TimeBudget, read_time_record

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
import compare_methods as cm  # noqa: E402

CONFIGS = REPO / "bundle" / "configs"
#: the 14 BraTS 2018 cases of ../shared (12 HGG, 2 LGG: TCIA10_628 and TCIA10_637)
SHARED_CASES = [
    "Brats18_2013_11_1", "Brats18_2013_20_1", "Brats18_2013_3_1", "Brats18_CBICA_ABM_1",
    "Brats18_CBICA_ALU_1", "Brats18_CBICA_AME_1", "Brats18_TCIA01_201_1", "Brats18_TCIA01_378_1",
    "Brats18_TCIA01_425_1", "Brats18_TCIA02_135_1", "Brats18_TCIA02_370_1", "Brats18_TCIA03_265_1",
    "Brats18_TCIA10_628_1", "Brats18_TCIA10_637_1",
]  # fmt: skip


# ---- statistics ---------------------------------------------------------------------------------


def test_sign_test_hand_values():
    p, pos, neg, zero = cm.sign_test([0.1] * 6)
    assert (pos, neg, zero) == (6, 0, 0) and p == pytest.approx(0.03125)  # 2 * (1/2)^6
    p, *counts = cm.sign_test([1, 1, 1, 1, 1, -1])
    assert counts == [5, 1, 0] and p == pytest.approx(0.21875)  # 2 * (1 + 6) / 64
    p, *counts = cm.sign_test([2, 1, 3, 0, 0])  # ties dropped: 3 of 3 positive
    assert counts == [3, 0, 2] and p == pytest.approx(0.25)
    assert cm.sign_test([0, 0])[0] == 1.0


def test_bootstrap_ci_hand_values():
    assert cm.bootstrap_ci([0.3] * 5) == pytest.approx((0.3, 0.3))
    # two values: a resample's mean is 0, 0.5 or 1 with probability 1/4, 1/2, 1/4 -> percentiles 0 and 1
    assert cm.bootstrap_ci([0.0, 1.0], seed=3) == pytest.approx((0.0, 1.0))
    lo, hi = cm.bootstrap_ci([-2, -1, 1, 2])
    assert lo < 0 < hi and lo == pytest.approx(-hi, abs=0.5)
    assert cm.bootstrap_ci([-2, -1, 1, 2], seed=7) == cm.bootstrap_ci([-2, -1, 1, 2], seed=7)  # seeded


def test_verdicts_never_round_a_tie_into_a_win():
    assert cm.paired_stats([-2, -1, 1, 2], True, 0, 10000)["verdict"] == "cannot be distinguished (n=4)"
    assert cm.paired_stats([0.1, 0.2, 0.3] * 2, True, 0, 10000)["verdict"] == "GMD better (n=6)"
    assert cm.paired_stats([-0.1, -0.2, -0.3] * 2, True, 0, 10000)["verdict"] == "GMD worse (n=6)"
    # HD95: lower is better
    assert cm.paired_stats([-1.0, -2.0, -3.0] * 2, False, 0, 10000)["verdict"] == "GMD better (n=6)"
    # the CI of 2 positive cases excludes 0, but the sign test cannot (p = 0.5): no verdict
    two = cm.paired_stats([0.1, 0.2], True, 0, 10000)
    assert two["ci_low"] > 0 and two["p_sign"] == pytest.approx(0.5)
    assert two["verdict"].startswith("cannot be distinguished (n=2;")
    assert cm.paired_stats([], True, 0, 100)["verdict"] == "no paired cases yet"


# ---- folds and the equal-time plan --------------------------------------------------------------


def test_folds_deal_the_lgg_cases_out():
    folds = cm.make_folds(SHARED_CASES, 2, seed=0)
    assert sorted(c for f in folds for c in f) == sorted(SHARED_CASES)
    assert [len(f) for f in folds] == [7, 7]
    assert all(sum("_TCIA10_" in c for c in f) == 1 for f in folds)  # one LGG per fold
    assert cm.make_folds(SHARED_CASES, 2, seed=0) == folds  # deterministic
    assert [len(f) for f in cm.make_folds(SHARED_CASES, 3, seed=1)] == [5, 5, 4]
    with pytest.raises(ValueError, match="--folds"):
        cm.make_folds(SHARED_CASES, 1)


def test_plan_equal_time_fits_the_epochs_in_gmds_time():
    # GMD took 100 s; the method: 2 s per epoch, its last epoch 3 s longer (the validation)
    epochs, limit = cm.plan_equal_time({"elapsed_s": 100.0}, {"epoch_s": [2.0, 2.1, 1.9, 5.0]})
    assert (epochs, limit) == (48, 100.0 * cm.LIMIT_SLACK)  # (100 - 3) // 2
    # with GMD's epoch times, its budget is its median epoch (10 s, the 60 s pause ignored) times its
    # 5 epochs plus its validation (5 s): 55 s, of which the method's 2 s epochs fit (55 - 3) // 2
    gmd = {"elapsed_s": 104.0, "epoch_s": [10.0, 60.0, 9.0, 10.0, 15.0]}
    assert cm.plan_equal_time(gmd, {"epoch_s": [2.0, 2.1, 1.9, 5.0]}) == (26, 55.0 * cm.LIMIT_SLACK)
    # a method's equal-steps run slowed by other work for most of its epochs (7-8 s quiet, 17 s at the
    # median, as fold 1's mean beside the test suite) would plan half the epochs: refused
    shared = {"epoch_s": [7.0, 7.5, 8.0, 7.2] + [17.0] * 8 + [20.0]}
    with pytest.raises(ValueError, match="median epoch .* quiet epochs"):
        cm.plan_equal_time(gmd, shared)
    with pytest.raises(ValueError, match="GMD's equal-steps run"):
        cm.plan_equal_time(shared, {"epoch_s": [2.0, 2.1, 1.9, 5.0]})
    runs = cm.plan_runs(["gmd", "mean", "dropout"], 2, cm.BUDGETS)
    assert [str(r) for r in runs] == [  # GMD and mean fold by fold first: a partial run answers them
        "equal_steps fold 0 gmd",
        "equal_steps fold 0 mean",
        "equal_time fold 0 mean",
        "equal_steps fold 1 gmd",
        "equal_steps fold 1 mean",
        "equal_time fold 1 mean",
        "equal_steps fold 0 dropout",
        "equal_time fold 0 dropout",
        "equal_steps fold 1 dropout",
        "equal_time fold 1 dropout",
    ]  # GMD's equal-time entry is its equal-steps run


# ---- the time budget ----------------------------------------------------------------------------


def _sleepy_engine(seconds: float) -> Engine:
    return Engine(lambda engine, batch: time.sleep(seconds))


def test_time_budget_stops_saves_and_resumes(tmp_path):
    net = torch.nn.Linear(2, 1)
    record_path, final = tmp_path / "train_time.json", tmp_path / "final.pt"
    trainer = _sleepy_engine(0.01)
    TimeBudget(record_path, limit_s=0.15, network=net, meta={"pixdim": [2.0] * 3}, final_path=final).attach(
        trainer
    )
    trainer.run(range(5), max_epochs=20)
    record = read_time_record(record_path)
    assert record["stopped_by_limit"] and record["completed"]
    assert 0.15 <= record["elapsed_s"] < 1.0 and record["iteration"] < 20 * 5
    saved = torch.load(final, weights_only=True)
    assert saved["model_meta"] == {"pixdim": [2.0] * 3} and saved["final"]["stopped_by_limit"]
    assert torch.equal(saved["model"]["weight"], net.weight.detach())

    # a resumed run (counters restored at STARTED, as TrainingCheckpoint does) keeps the clock of the
    # epoch-end mark it resumes from, and stops at once when the limit was already reached there
    done = [m for m in record["marks"] if m[0] > 0]
    iteration, elapsed = done[-1]
    resumed = _sleepy_engine(0.0)

    @resumed.on(Events.STARTED)
    def restore(engine):
        engine.state.iteration, engine.state.epoch = int(iteration), int(iteration) // 5

    budget = TimeBudget(record_path, limit_s=elapsed + 5.0)
    budget.attach(resumed)
    resumed.run(range(5), max_epochs=int(iteration) // 5 + 1)
    again = read_time_record(record_path)
    assert again["segments"] == 2 and not again["stopped_by_limit"] and again["completed"]
    assert elapsed <= again["elapsed_s"] < elapsed + 1.0
    assert len(again["epoch_s"]) == int(iteration) // 5 + 1


@pytest.fixture(scope="module")
def synthetic_dir(tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("synth")
    make_synthetic_brats(root, num_cases=2, shape=(16, 16, 16), seed=1)
    return str(root)


def test_time_limit_config_stops_bundle_training(tmp_path, synthetic_dir):
    configs = [str(CONFIGS / n) for n in ("train.yaml", "train_cpu.yaml", "time_limit.yaml")]
    ckpt = tmp_path / "models"
    wf = ConfigWorkflow(
        config_file=configs, workflow_type="train", bundle_root=str(REPO / "bundle"),
        dataset_dir=synthetic_dir, ckpt_dir=str(ckpt), output_dir=str(tmp_path / "runs"), max_epochs=50,
        val_interval=50, width=0.25, roi_size=[16, 16, 16], model_pixdim=[1.0, 1.0, 1.0], num_workers=0,
        amp=False, checkpoint_minutes=0, time_limit_s=0.001,
    )  # fmt: skip
    wf.initialize()
    wf.run()
    wf.finalize()
    record = read_time_record(ckpt / "train_time.json")
    assert record["stopped_by_limit"] and record["completed"] and record["epoch"] < 50
    assert not (ckpt / "model.pt").exists()  # no validation ran: the final weights are what is evaluated
    assert model_config(ckpt / "final.pt")["pixdim"] == [1.0, 1.0, 1.0]  # the evaluation reads their grid


# ---- the smoke comparison -----------------------------------------------------------------------


def _tree_mtimes(root: Path) -> dict[str, int]:
    keep = ("final.pt", "latest.pt", "train_time.json", "per_case.csv", "done.json", "run.json")
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*") if p.name in keep}


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    work = tmp_path_factory.mktemp("compare")
    t0 = time.monotonic()
    assert cm.main(["--smoke", "--work-dir", str(work)]) == 0
    seconds = time.monotonic() - t0
    print(f"smoke comparison: {seconds:.0f} s")
    return {"work": work, "results": work / "results", "seconds": seconds}


def _csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_smoke_writes_every_table_and_the_plot(smoke):
    results = smoke["results"]
    infos = [json.loads(p.read_text()) for p in sorted(results.glob("*/fold*/*/run.json"))]
    assert sorted((i["budget"], i["fold"], i["method"]) for i in infos) == [
        ("equal_steps", 0, "gmd"), ("equal_steps", 0, "mean"), ("equal_steps", 1, "gmd"),
        ("equal_steps", 1, "mean"), ("equal_time", 0, "mean"), ("equal_time", 1, "mean"),
    ]  # fmt: skip
    steps = {(i["fold"], i["method"]): i for i in infos if i["budget"] == "equal_steps"}
    for i in infos:
        assert len(_csv(results / i["budget"] / f"fold{i['fold']}" / i["method"] / "per_case.csv")) == 15 * 2
        if i["budget"] == "equal_time":  # the budget is GMD's time in the same fold (from its epochs)
            assert i["budget_s"] == pytest.approx(steps[(i["fold"], "gmd")]["train_s"], rel=0.5)
            assert i["time_limit_s"] == pytest.approx(cm.LIMIT_SLACK * i["budget_s"], abs=0.01)
        else:
            assert i["epochs_done"] == 2 and i["time_limit_s"] is None
    assert len((results / "splits" / "fold0_test.txt").read_text().split("\n")) == 1 + 2 + 1

    md = (results / "summary.md").read_text()
    assert "python benchmarks/compare_methods.py --smoke --work-dir" in md
    assert "6 of 6 runs done." in md and "Nothing missing" in md
    for title in ("## Equal steps: mean ± std over folds", "## Equal wall-clock: mean ± std over folds",
                  "### Equal steps", "### Equal wall-clock"):  # fmt: skip
        assert title in md
    method_lines = [line for line in md.splitlines() if line.startswith(("| `gmd`", "| `mean` | 2 |"))]
    assert len(method_lines) == 2 * 2 and "| `gmd` (= equal steps) | 2 |" in md
    paired_lines = [
        line for line in md.splitlines() if line.startswith(("| `mean` | 15 ", "| `mean` | single "))
    ]
    assert len(paired_lines) == 2 * 2 * 6  # budgets x (15 subsets, single modality) x (Dice, HD95) x 3
    assert all("cannot be distinguished (n=" in line or "GMD " in line for line in paired_lines)

    rows = _csv(results / "summary.csv")
    methods = [r for r in rows if r["kind"] == "method"]
    assert {(r["budget"], r["method"]) for r in methods} == {
        (b, m) for b in cm.BUDGETS for m in ("gmd", "mean")
    }
    assert len(methods) == 2 * 2 * 2 * 6  # budgets x methods x scopes x (Dice, HD95 of WT/TC/ET)
    paired = [r for r in rows if r["kind"] == "paired"]
    assert len(paired) == 2 * 2 * 6 and all(r["n"] == "4" and r["verdict"] for r in paired)
    png = results / "summary_dice.png"
    assert png.is_file() and png.stat().st_size > 10_000


@pytest.mark.slow
def test_smoke_summarize_only_reproduces_the_summary(smoke, tmp_path):
    results = smoke["results"]
    before = (results / "summary.md").read_bytes()
    copy = tmp_path / "results"
    shutil.copytree(results, copy, ignore=shutil.ignore_patterns("summary*"))  # the result files alone
    assert cm.main(["--summarize-only", "--results-dir", str(copy)]) == 0
    assert (copy / "summary.md").read_bytes() == before
    assert (copy / "summary.csv").read_bytes() == (results / "summary.csv").read_bytes()

    shutil.rmtree(copy / "equal_time" / "fold1")  # partial results name what is missing
    assert cm.main(["--summarize-only", "--results-dir", str(copy)]) == 0
    md = (copy / "summary.md").read_text()
    assert "5 of 6 runs done." in md and "- equal_time fold 1 mean" in md


@pytest.mark.parametrize(
    ("folder", "status"),
    [("compare_methods", "14 of 14 runs done."), ("compare_methods_seed1", "1 of 2 runs done.")],
)
def test_committed_summary_is_what_the_committed_runs_give(tmp_path, folder, status):
    """docs/results.md quotes benchmarks/results/compare_methods*/summary.*: regenerated from the
    committed per-run files alone (no data, no training), they must come out byte for byte."""
    committed = REPO / "benchmarks" / "results" / folder
    copy = tmp_path / "results"
    shutil.copytree(committed, copy, ignore=shutil.ignore_patterns("summary*"))
    assert cm.main(["--summarize-only", "--results-dir", str(copy)]) == 0
    for name in ("summary.md", "summary.csv"):
        assert (copy / name).read_text() == (committed / name).read_text(), name
    assert status in (copy / "summary.md").read_text()


@pytest.mark.slow
def test_smoke_rerun_skips_finished_runs(smoke):
    work = smoke["work"]
    before = _tree_mtimes(work)
    assert len([k for k in before if k.endswith("final.pt")]) == 6
    t0 = time.monotonic()
    assert cm.main(["--smoke", "--work-dir", str(work)]) == 0
    assert _tree_mtimes(work) == before  # nothing retrained, re-evaluated or rewritten
    log = (work / "compare.log").read_text()
    assert log.count("already done") == 6
    assert time.monotonic() - t0 < smoke["seconds"]


@pytest.mark.slow
def test_a_fresh_work_folder_resumes_from_the_published_runs(smoke, tmp_path):
    """The work folder is lost (a fresh checkout, another machine): the published runs count as done,
    and the equal-time runs are planned from the published epoch times, to the same budget."""
    results = tmp_path / "results"
    shutil.copytree(smoke["results"], results)
    published = {
        f: json.loads((results / "equal_time" / f"fold{f}" / "mean" / "run.json").read_text()) for f in (0, 1)
    }
    shutil.rmtree(results / "equal_time")
    smoke_data = ["--smoke", "--data-dir", str(smoke["work"] / "data")]  # the recipe of the published runs
    work = tmp_path / "work"
    assert cm.main([*smoke_data, "--work-dir", str(work), "--results-dir", str(results)]) == 0
    log = (work / "compare.log").read_text()
    assert log.count("already done") == 4 and log.count(": training ") == 2  # only the equal-time runs
    assert not (work / "equal_steps").exists()
    for f in (0, 1):
        again = json.loads((results / "equal_time" / f"fold{f}" / "mean" / "run.json").read_text())
        assert again["epochs_planned"] == published[f]["epochs_planned"]
        for key in ("budget_s", "time_limit_s", "gmd_train_s"):  # published rounded to ms, 0.1 s
            assert again[key] == pytest.approx(published[f][key], abs=0.1), key

    # published without epoch times (before they were recorded): GMD's budget is the one the fold's
    # published equal-time runs used; the method's own run cannot be planned from
    def blank_epochs(run_json: Path) -> None:
        info = json.loads(run_json.read_text())
        run_json.write_text(json.dumps(dict(info, epoch_s=[])))

    blank_epochs(results / "equal_steps" / "fold0" / "gmd" / "run.json")
    other = results / "equal_time" / "fold0" / "dropout"  # another method's published equal-time run
    shutil.copytree(results / "equal_time" / "fold0" / "mean", other)
    budget = 2 * published[0]["budget_s"]
    (other / "run.json").write_text(json.dumps(dict(published[0], method="dropout", budget_s=budget)))
    (results / "equal_time" / "fold0" / "mean" / "per_case.csv").unlink()
    blank_epochs(results / "equal_steps" / "fold1" / "mean" / "run.json")
    shutil.rmtree(results / "equal_time" / "fold1")
    work2 = tmp_path / "work2"
    assert cm.main([*smoke_data, "--work-dir", str(work2), "--results-dir", str(results)]) == 1
    planned = json.loads((work2 / "equal_time" / "fold0" / "mean" / "plan.json").read_text())
    assert planned["budget_s"] == pytest.approx(budget, abs=1e-3)
    assert (
        "equal_time fold 1 mean: FAILED (equal_steps fold 1 mean was published without the epoch"
        in (work2 / "compare.log").read_text()
    )


def _steps_only(smoke, tmp_path):
    """A copy of the smoke results without its equal-time runs, a work folder, and the arguments that
    resume the comparison there."""
    results, work = tmp_path / "results", tmp_path / "work"
    shutil.copytree(smoke["results"], results)
    shutil.rmtree(results / "equal_time")
    argv = ["--smoke", "--data-dir", str(smoke["work"] / "data"), "--work-dir", str(work)]
    return results, work, [*argv, "--results-dir", str(results)]


@pytest.mark.slow
def test_time_left_starts_only_the_runs_that_fit(smoke, tmp_path):
    results, work, argv = _steps_only(smoke, tmp_path)
    assert cm.main([*argv, "--time-left-min", "0.01"]) == 0
    log = (work / "compare.log").read_text()
    assert log.count("not started: its estimate") == 2 and ": training " not in log
    assert not (results / "equal_time").exists()
    md = (results / "summary.md").read_text()
    assert "4 of 6 runs done." in md and "- equal_time fold 1 mean" in md  # the missing runs are listed


@pytest.mark.slow
def test_only_folds_runs_one_fold_and_summarizes_all(smoke, tmp_path):
    """A pass over one fold (a session's share of a long comparison) leaves the others' runs alone."""
    results, work, argv = _steps_only(smoke, tmp_path)
    assert cm.main([*argv, "--only-folds", "1"]) == 0
    log = (work / "compare.log").read_text()
    assert "this pass fold(s) 1 only" in log and log.count(": training ") == 1
    assert (results / "equal_time" / "fold1" / "mean" / "run.json").is_file()
    assert not (results / "equal_time" / "fold0").exists()
    md = (results / "summary.md").read_text()
    assert "5 of 6 runs done." in md and "- equal_time fold 0 mean" in md
    for bad in ("2", "0,x"):
        with pytest.raises(SystemExit, match="--only-folds"):
            cm.main([*argv, "--only-folds", bad])


def test_a_config_from_before_train_seed_is_the_same_recipe(tmp_path):
    """Comparisons written before --train-seed trained with --seed: they resume, another seed is refused."""
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"seed": 0, "epochs": 120}))
    assert cm._check_recipe(path, {"seed": 0, "train_seed": 0, "epochs": 120}) is not None
    with pytest.raises(SystemExit, match="train_seed"):
        cm._check_recipe(path, {"seed": 0, "train_seed": 1, "epochs": 120})


@pytest.mark.slow
def test_train_seed_retrains_on_the_same_folds(smoke, tmp_path):
    """--train-seed: another model on the same split (how far a result moves with the seed); a folder
    holding another training seed is refused."""
    results = tmp_path / "results"
    argv = ["--smoke", "--data-dir", str(smoke["work"] / "data"), "--work-dir", str(tmp_path / "work")]
    argv += ["--results-dir", str(results), "--methods", "gmd", "--budgets", "equal_steps"]
    assert cm.main([*argv, "--only-folds", "0", "--train-seed", "1"]) == 0
    run = results / "equal_steps" / "fold0" / "gmd"
    info = json.loads((run / "run.json").read_text())
    assert info["seed"] == 1 and "--seed 1 " in info["train_command"]
    for name in ("fold0_train.txt", "fold0_test.txt"):
        assert (results / "splits" / name).read_text() == (smoke["results"] / "splits" / name).read_text()
    seed0 = smoke["results"] / "equal_steps" / "fold0" / "gmd" / "per_case.csv"
    assert (run / "per_case.csv").read_text() != seed0.read_text()  # another model
    assert "the same seed (1)" in (results / "summary.md").read_text()
    with pytest.raises(SystemExit, match="train_seed"):
        cm.main([*argv, "--only-folds", "0", "--train-seed", "2"])
