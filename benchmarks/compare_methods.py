#!/usr/bin/env python
"""Does GMD beat plain multi-subset training on real scans? A cross-validated, resumable comparison.

The BraTS cases of ``--data-dir`` are split into ``--folds`` folds (seeded; the LGG cases, told apart by
name, are dealt out first so that every fold gets its share). For every fold and every method the bundle
trains on the other folds with the CPU recipe (``train.yaml`` + ``train_cpu.yaml``, the same seed, crops
and schedule; only ``method`` differs) and evaluates the held-out cases on all 15 modality subsets
(``evaluate.yaml``: hard Dice and HD95 per case and subset). Two budgets:

* ``equal_steps``: every method trains ``--epochs`` epochs.
* ``equal_time``: every other method gets the training seconds that GMD took in the same fold (GMD's
  entry is its equal-steps run). Its ``max_epochs``, and so its PolynomialLR schedule, is planned from
  that budget and the method's own seconds per epoch measured in its equal-steps run (medians over
  epochs on both sides: the machine is shared, and a busy neighbour or a pause inflates single epochs);
  the time limit of ``bundle/configs/time_limit.yaml`` at 1.25x the budget is a safety net (the run is
  recorded as stopped if it fires).

The model evaluated is the final one (``final.pt``, written by ``time_limit.yaml``), not the one with the
best validation Dice: validation runs on the held-out fold, so selecting on it would leak the test cases
into the model (and favour the methods with more epochs, hence more chances). Each run validates once,
at its last epoch.

Every (budget, fold, method) run lives in ``--work-dir``/<budget>/fold<k>/<method> and is a separate
``python -m monai.bundle run ...`` process: a finished run (evaluated) is skipped, a killed one resumes
from its ``latest.pt`` (``--resume true``; the budget clock resumes too). Each finished run's
``per_case.csv`` and ``run.json`` (train seconds, epochs done and their times, method, fold, budget) are
copied to ``--results-dir`` at once; a run published there counts as done even when the work folder is
gone (a fresh checkout, another machine), and the equal-time plans are made from the published epoch
times (a fold whose GMD run was published without them keeps the budget its published equal-time runs
already used). ``summary.md``, ``summary.csv`` and ``summary_dice.png`` are rewritten in the
results folder after every run; ``--summarize-only`` rewrites them from those files alone. Progress, with an
ETA, goes to ``<work-dir>/compare.log``.

Statistics: per budget and method, the mean over the 15 subsets and over the 4 single-modality subsets
of Dice and HD95 for WT/TC/ET, mean ± std over folds. Paired GMD − other per case (the difference per
case and subset, averaged over the subsets of the case: the 15 subsets of a case share one scan, so the
case is the independent unit): the mean over cases, a seeded percentile bootstrap 95% CI over cases and
a two-sided sign test (``scipy.stats.binomtest``). The verdict says "GMD better" (or "worse") only when
the CI excludes 0 and the sign test agrees (p < 0.05); anything else is "cannot be distinguished".

Usage::

    nohup python benchmarks/compare_methods.py > /dev/null 2>&1 &     # the full comparison (hours)
    tail -f work/compare/compare.log
    python benchmarks/compare_methods.py                              # again after a kill: resumes
    python benchmarks/compare_methods.py --time-left-min 170          # only the runs that fit
    python benchmarks/compare_methods.py --summarize-only             # tables from the committed results
    python benchmarks/compare_methods.py --smoke                      # synthetic, tiny, a few minutes
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import datetime
import fcntl
import json
import math
import os
import random
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from common import emit

REPO = Path(__file__).resolve().parents[1]
SHARED_BRATS = REPO.parent / "shared" / "data" / "brats2018"
CONFIGS = "bundle/configs"
TRAIN_CONFIGS = [f"{CONFIGS}/train.yaml", f"{CONFIGS}/train_cpu.yaml", f"{CONFIGS}/time_limit.yaml"]
EVAL_CONFIGS = [f"{CONFIGS}/train.yaml", f"{CONFIGS}/train_cpu.yaml", f"{CONFIGS}/evaluate.yaml"]
BUDGETS = ("equal_steps", "equal_time")
BUDGET_TITLES = {"equal_steps": "Equal steps", "equal_time": "Equal wall-clock"}
REGIONS = ("wt", "tc", "et")
METRICS = tuple(f"dice_{r}" for r in REGIONS) + tuple(f"hd95_{r}" for r in REGIONS)
SCOPES = ("all15", "single")
SCOPE_TITLES = {"all15": "15 subsets", "single": "single modality"}
MODALITIES = ("t1", "t1ce", "t2", "flair")
REFERENCE = "gmd"
#: BraTS 2018 names its cases after the contributing institution; TCIA09, 10, 12 and 13 gave LGG only
#: (in ../shared: Brats18_TCIA10_628_1 and Brats18_TCIA10_637_1, the two LGG of the 14).
LGG_PATTERN = r"_TCIA(09|10|12|13)_"
#: seconds per training iteration used for the ETA until a method has been measured (CPU recipe: 48^3
#: crops, width 0.25, 2 cores): exact GMD 3.3 s, a plain step 0.7 s; other aggregators assumed like GMD
DEFAULT_STEP_S = {"gmd": 3.3, "mean": 0.7, "dropout": 0.7}
DEFAULT_EVAL_CASE_S = 60.0
ALPHA = 0.05
TIE = 1e-9
#: what --smoke changes: synthetic data, 2 folds of 2 cases, 2 methods, 2 epochs at 16^3, 1 mm
SMOKE = {
    "num_cases": 4,
    "shape": 24,
    "methods": "gmd,mean",
    "folds": 2,
    "epochs": 2,
    "threads": 1,
    "bundle_args": "--model_pixdim [1.0,1.0,1.0] --roi_size [16,16,16] --width 0.25 --num_workers 0 "
    "--amp False --checkpoint_minutes 0",
}


# ---------------------------------------------------------------------------------------------------
# statistics
# ---------------------------------------------------------------------------------------------------


def sign_test(diffs: Sequence[float], tie: float = TIE) -> tuple[float, int, int, int]:
    """Two-sided sign test of paired differences: ``(p, n_pos, n_neg, n_zero)``; ties are dropped
    (``p = 1`` when nothing is left)."""
    from scipy.stats import binomtest

    d = np.asarray(diffs, dtype=float)
    pos, neg = int((d > tie).sum()), int((d < -tie).sum())
    zero = len(d) - pos - neg
    p = float(binomtest(pos, pos + neg, 0.5, alternative="two-sided").pvalue) if pos + neg else 1.0
    return p, pos, neg, zero


def bootstrap_ci(values: Sequence[float], seed: int = 0, n_boot: int = 10000, level: float = 0.95):
    """Percentile bootstrap CI of the mean of ``values`` (resampled with replacement, seeded)."""
    v = np.asarray(values, dtype=float)
    if len(v) == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, len(v), size=(n_boot, len(v)))].mean(axis=1)
    lo, hi = np.percentile(means, [50 * (1 - level), 50 * (1 + level)])
    return float(lo), float(hi)


def verdict(
    n: int, ci: tuple[float, float], p: float, higher_is_better: bool = True, alpha: float = ALPHA
) -> str:
    """Words for a paired comparison GMD − other: better/worse only when the CI excludes 0 AND the sign
    test agrees (p < alpha); never rounds a tie into a win."""
    if n == 0:
        return "no paired cases yet"
    lo, hi = ci
    up, down = lo > 0, hi < 0
    if up or down:
        gmd_better = up if higher_is_better else down
        if p < alpha:
            return f"GMD {'better' if gmd_better else 'worse'} (n={n})"
        return f"cannot be distinguished (n={n}; the CI excludes 0 but sign test p={p:.3g})"
    return f"cannot be distinguished (n={n})"


def paired_stats(diffs: Sequence[float], higher_is_better: bool, seed: int, n_boot: int) -> dict:
    ci = bootstrap_ci(diffs, seed=seed, n_boot=n_boot)
    p, pos, neg, zero = sign_test(diffs)
    n = len(diffs)
    return {
        "n": n,
        "mean": float(np.mean(diffs)) if n else float("nan"),
        "ci_low": ci[0],
        "ci_high": ci[1],
        "n_pos": pos,
        "n_neg": neg,
        "n_zero": zero,
        "p_sign": p,
        "verdict": verdict(n, ci, p, higher_is_better),
    }


# ---------------------------------------------------------------------------------------------------
# folds and runs
# ---------------------------------------------------------------------------------------------------


def list_cases(data_dir: str | os.PathLike) -> list[str]:
    from gmd_monai.data.brats import scan_brats_folder

    return [item["case"] for item in scan_brats_folder(data_dir)]


def make_folds(
    cases: Sequence[str], k: int, seed: int = 0, lgg_pattern: str = LGG_PATTERN
) -> list[list[str]]:
    """Split ``cases`` into ``k`` test folds of near-equal size, deterministic in ``seed``: LGG cases
    (``lgg_pattern`` in the name) are shuffled and dealt round-robin first, then the HGG cases, so that
    each fold gets its share of both. Each fold's cases are returned sorted."""
    if not 2 <= k <= len(cases):
        raise ValueError(f"--folds must be between 2 and the number of cases ({len(cases)}), got {k}")
    rng = random.Random(seed)
    lgg = sorted(c for c in cases if re.search(lgg_pattern, c))
    hgg = sorted(c for c in cases if c not in set(lgg))
    rng.shuffle(lgg)
    rng.shuffle(hgg)
    folds: list[list[str]] = [[] for _ in range(k)]
    for i, case in enumerate(lgg + hgg):
        folds[i % k].append(case)
    return [sorted(f) for f in folds]


@dataclasses.dataclass(frozen=True)
class Run:
    budget: str
    fold: int
    method: str

    @property
    def rel(self) -> Path:
        return Path(self.budget) / f"fold{self.fold}" / self.method

    def __str__(self) -> str:
        return f"{self.budget} fold {self.fold} {self.method}"


def plan_runs(methods: Sequence[str], folds: int, budgets: Sequence[str]) -> list[Run]:
    """GMD and mean first, fold by fold (the comparison users ask for first, so that a partial
    comparison answers it), then the other methods fold by fold; within a fold the equal-steps runs
    (GMD first), then the equal-time runs that need them."""
    primary = [m for m in methods if m in (REFERENCE, "mean")]
    groups = [primary, [m for m in methods if m not in primary]]
    runs = []
    for group in filter(None, groups):
        for f in range(folds):
            runs += [Run("equal_steps", f, m) for m in group]
            if "equal_time" in budgets:
                runs += [Run("equal_time", f, m) for m in group if m != REFERENCE]
    return runs


def _typical(epoch_s: Sequence[float]) -> tuple[float, float]:
    """``(seconds per training epoch, seconds of the one validation)`` from a run's epoch times: the
    median of the epochs before the last (the machine is shared: a pause or a busy neighbour inflates
    single epochs, not the median) and what the last epoch, which also validates, took beyond it."""
    if not epoch_s:
        raise ValueError("no epoch times in the record")
    per_epoch = statistics.median(epoch_s[:-1]) if len(epoch_s) > 1 else epoch_s[0]
    return per_epoch, max(0.0, epoch_s[-1] - per_epoch)


#: an equal-steps run whose median epoch is more than this many times its quiet epochs (the 10th
#: percentile) shared the machine for most of its epochs: its median says nothing about the method
QUIET_RATIO = 1.5


def check_quiet(epoch_s: Sequence[float], what: str) -> None:
    """Raise ``ValueError`` when the median training epoch is more than ``QUIET_RATIO`` times the quiet
    ones: most epochs were slowed by other work, and an equal-time plan built on them would be wrong."""
    train = list(epoch_s[:-1])
    if len(train) < 10:
        return
    median, quiet = statistics.median(train), statistics.quantiles(train, n=10)[0]
    if median > QUIET_RATIO * quiet:
        raise ValueError(
            f"{what}: its median epoch ({median:.1f} s) is {median / quiet:.1f}x its quiet epochs "
            f"({quiet:.1f} s): the machine was shared for most of it; move its work folder aside and "
            "rerun it on a quiet machine"
        )


#: the hard stop of an equal-time run, as a multiple of its budget: the planned epochs are the budget;
#: the limit only catches a run that is far slower than planned (a busier machine), not noise
LIMIT_SLACK = 1.25


def plan_equal_time(gmd_record: dict, own_record: dict) -> tuple[int, float]:
    """``(max_epochs, time_limit_s)`` of an equal-time run. The budget is GMD's training time (its
    median epoch times its epochs, plus its validation; ``elapsed_s`` when it has no epoch times); the
    epochs are what fits of the method's own median epoch, measured in its equal-steps run. The time
    limit is ``LIMIT_SLACK`` times the budget. Refuses (``ValueError``) equal-steps runs whose
    epochs were mostly slowed by other work (:func:`check_quiet`)."""
    gmd_epochs = [float(s) for s in gmd_record.get("epoch_s") or []]
    check_quiet(gmd_epochs, "GMD's equal-steps run")
    if gmd_epochs:
        per, validation = _typical(gmd_epochs)
        budget = per * (len(gmd_epochs) - 1) + (per + validation)
    else:
        budget = float(gmd_record["elapsed_s"])
    epoch_s = [float(s) for s in own_record.get("epoch_s") or []]
    if not epoch_s:
        raise ValueError("no epoch times in the method's equal-steps record")
    check_quiet(epoch_s, "the method's equal-steps run")
    per_epoch, validation = _typical(epoch_s)
    return max(1, int((budget - validation) // per_epoch)), budget * LIMIT_SLACK


def _rel(path: str | os.PathLike) -> str:
    """A path relative to the repository when inside it or its parent (commands read as the README's)."""
    p = Path(path).resolve()
    for base, prefix in ((REPO, ""), (REPO.parent, "../")):
        try:
            return prefix + str(p.relative_to(base))
        except ValueError:
            continue
    return str(p)


def _configs(files: Sequence[str]) -> str:
    return "[" + ",".join(f"'{f}'" for f in files) + "]"


def _read_json(path: Path) -> dict | None:
    try:
        content = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return content if isinstance(content, dict) else None


def _write_json(path: Path, content: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(content, indent=1) + "\n")
    os.replace(tmp, path)


def _show(cmd: Sequence[str]) -> str:
    """A command line as one would type it (the config list in double quotes, as the README writes it)."""
    return " ".join(f'"{a}"' if a.startswith("['") else shlex.quote(a) for a in cmd)


def _hms(seconds: float) -> str:
    s = int(round(max(0.0, seconds)))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


class RunFailed(RuntimeError):
    pass


class Comparison:
    """Runs the plan: trains, evaluates and publishes every run that is not done yet."""

    def __init__(self, args: argparse.Namespace, recipe: dict, folds: list[list[str]], cases: list[str]):
        self.args = args
        self.recipe = recipe
        self.folds = folds
        self.cases = cases
        self.work = Path(args.work_dir).resolve()
        self.results = Path(args.results_dir).resolve()
        self.log_path = self.work / "compare.log"
        self.bundle_args = shlex.split(recipe["bundle_args"])
        self.child: subprocess.Popen | None = None
        self.lock_fd: int | None = None

    # -- logging -----------------------------------------------------------------------------------
    def log(self, msg: str) -> None:
        line = f"{datetime.datetime.now().isoformat(timespec='seconds')} {msg}"
        print(line, flush=True)
        with open(self.log_path, "a") as f:
            f.write(line + "\n")

    # -- folders -----------------------------------------------------------------------------------
    def split_files(self, fold: int) -> tuple[Path, Path]:
        return (
            self.results / "splits" / f"fold{fold}_train.txt",
            self.results / "splits" / f"fold{fold}_test.txt",
        )

    def write_splits(self) -> None:
        for k, test in enumerate(self.folds):
            train = [c for c in self.cases if c not in set(test)]
            tr, te = self.split_files(k)
            tr.parent.mkdir(parents=True, exist_ok=True)
            tr.write_text(f"# fold {k}: training cases ({len(train)})\n" + "\n".join(train) + "\n")
            te.write_text(
                f"# fold {k}: held-out cases ({len(test)}), validated and evaluated\n"
                + "\n".join(test)
                + "\n"
            )
        lgg = [c for c in self.cases if re.search(self.recipe["lgg_pattern"], c)]
        _write_json(self.results / "folds.json", {"folds": self.folds, "lgg": lgg})

    def done_info(self, run: Run) -> dict | None:
        """The run's record when it is done: the work folder's, else the one published in the results
        folder (the committed record outlives the work folder: another machine, a fresh checkout)."""
        info = _read_json(self.work / run.rel / "done.json")
        if info is None and (self.results / run.rel / "per_case.csv").is_file():
            info = _read_json(self.results / run.rel / "run.json")
        return info

    def epoch_record(self, run: Run) -> dict:
        """``{"epoch_s": [...], "elapsed_s": ...}`` of a done run: its training record in the work folder,
        else what its published record keeps (``epoch_s`` empty when it was published without them)."""
        record = _read_json(self.work / run.rel / "models" / "train_time.json")
        if record is not None:
            return record
        info = self.done_info(run) or {}
        return {"epoch_s": info.get("epoch_s") or [], "elapsed_s": info.get("train_s")}

    def published_budget_s(self, fold: int) -> float | None:
        """The budget the fold's published equal-time runs trained to (all share GMD's), if any."""
        for csv_path in sorted((self.results / "equal_time" / f"fold{fold}").glob("*/per_case.csv")):
            info = _read_json(csv_path.with_name("run.json"))
            if info and info.get("budget_s"):
                return float(info["budget_s"])
        return None

    # -- one run -----------------------------------------------------------------------------------
    def _spawn(self, cmd: list[str], log: Path) -> float:
        log.parent.mkdir(parents=True, exist_ok=True)
        t0 = time.monotonic()
        with open(log, "a") as f:
            f.write(f"# {datetime.datetime.now().isoformat(timespec='seconds')} {_show(cmd)}\n")
            f.flush()
            env = dict(os.environ, PYTHONUNBUFFERED="1")
            if self.recipe["threads"]:
                threads = str(self.recipe["threads"])
                env.update(OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads)
            keep = (self.lock_fd,) if self.lock_fd is not None else ()
            self.child = subprocess.Popen(
                cmd, cwd=REPO, stdout=f, stderr=subprocess.STDOUT, env=env, pass_fds=keep
            )
            try:
                rc = self.child.wait()
            except BaseException:  # stopped by a signal: let the bundle run end first (a minute at most)
                try:
                    self.child.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    self.child.kill()
                    self.child.wait()
                raise
            finally:
                self.child = None
        if rc != 0:
            raise RunFailed(f"exit status {rc}; see {log}")
        return time.monotonic() - t0

    def _common(self, run: Run, fold_train: Path, fold_test: Path) -> list[str]:
        d = self.work / run.rel
        return [
            "--dataset_dir", _rel(self.recipe["data_dir"]),
            "--train_list", _rel(fold_train), "--val_list", _rel(fold_test),
            "--ckpt_dir", _rel(d / "models"), "--output_dir", _rel(d / "runs"),
        ]  # fmt: skip

    def train_command(self, run: Run, epochs: int, limit: float | None, resume: bool) -> list[str]:
        tr, te = self.split_files(run.fold)
        cmd = [
            self.args.python,
            "-m",
            "monai.bundle",
            "run",
            "training",
            "--config_file",
            _configs(TRAIN_CONFIGS),
        ]
        cmd += self._common(run, tr, te)
        cmd += ["--method", run.method, "--seed", str(self.recipe["train_seed"]), "--max_epochs", str(epochs)]
        cmd += ["--val_interval", str(epochs)]
        # Python literals: fire passes `true`/`false` through as (truthy) strings
        cmd += ["--resume", "True"] if resume else ["--resume", "False", "--overwrite", "True"]
        if limit is not None:
            cmd += ["--time_limit_s", f"{limit:.3f}"]
        return cmd + self.bundle_args

    def eval_command(self, run: Run) -> list[str]:
        tr, te = self.split_files(run.fold)
        d = self.work / run.rel
        cmd = [
            self.args.python,
            "-m",
            "monai.bundle",
            "run",
            "evaluating",
            "--config_file",
            _configs(EVAL_CONFIGS),
        ]
        cmd += self._common(run, tr, te)
        cmd += ["--eval_dir", _rel(d / "evaluation"), "--eval_section", "validation"]
        cmd += ["--checkpoint", _rel(d / "models" / "final.pt")]
        return cmd + self.bundle_args

    def plan(self, run: Run) -> dict | None:
        """Epochs and time limit of ``run``; for equal_time fixed at its first start (plan.json)."""
        if run.budget == "equal_steps":
            return {"epochs": self.recipe["epochs"], "time_limit_s": None}
        path = self.work / run.rel / "plan.json"
        saved = _read_json(path)
        if saved is not None:
            return saved
        gmd_run, own_run = Run("equal_steps", run.fold, REFERENCE), Run("equal_steps", run.fold, run.method)
        if self.done_info(gmd_run) is None or self.done_info(own_run) is None:
            return None
        gmd_rec, own_rec = self.epoch_record(gmd_run), self.epoch_record(own_run)
        if not gmd_rec.get("epoch_s"):  # published before epoch times were: the fold's budget, if fixed
            fixed = self.published_budget_s(run.fold)
            gmd_rec = {"elapsed_s": fixed} if fixed else gmd_rec
        if not own_rec.get("epoch_s"):
            raise RunFailed(
                f"{own_run} was published without the epoch times the equal-time plan needs: move "
                f"{_rel(self.results / own_run.rel)} aside and rerun it to measure them"
            )
        try:
            epochs, limit = plan_equal_time(gmd_rec, own_rec)
        except ValueError as e:
            raise RunFailed(str(e)) from None
        plan = {
            "epochs": epochs,
            "time_limit_s": round(limit, 3),
            "gmd_train_s": round(float(gmd_rec["elapsed_s"]), 3),
            "budget_s": round(limit / LIMIT_SLACK, 3),
            "own_equal_steps_epoch_s": round(_typical([float(x) for x in own_rec["epoch_s"]])[0], 3),
        }
        _write_json(path, plan)
        return plan

    def execute(self, run: Run) -> dict:
        d = self.work / run.rel
        plan = self.plan(run)
        if plan is None:
            raise RunFailed("its equal-steps runs (GMD's and its own, same fold) are not done")
        models = d / "models"
        record = _read_json(models / "train_time.json")
        if not ((models / "final.pt").is_file() and record and record.get("completed")):
            resume = (models / "latest.pt").is_file()
            train_cmd = self.train_command(run, plan["epochs"], plan["time_limit_s"], resume)
            what = f"{plan['epochs']} epochs" + (
                f" to fit GMD's {plan.get('budget_s', plan['time_limit_s']):.0f} s"
                f" (stop at {plan['time_limit_s']:.0f} s)"
                if plan["time_limit_s"]
                else ""
            )
            self.log(f"  {run}: training {what}{', resuming' if resume else ''}; log {_rel(d / 'train.log')}")
            self._spawn(train_cmd, d / "train.log")
            record = _read_json(models / "train_time.json")
            if not ((models / "final.pt").is_file() and record and record.get("completed")):
                raise RunFailed(f"training ended without {models / 'final.pt'}; see {d / 'train.log'}")
        train_cmd = self.train_command(run, plan["epochs"], plan["time_limit_s"], False)
        self.log(f"  {run}: evaluating {len(self.folds[run.fold])} held-out case(s) on 15 subsets")
        eval_cmd = self.eval_command(run)
        eval_s = self._spawn(eval_cmd, d / "eval.log")
        epoch_s = record.get("epoch_s") or []
        info = {
            "budget": run.budget,
            "fold": run.fold,
            "method": run.method,
            "epochs_planned": plan["epochs"],
            "epochs_done": record["epoch"],
            "iterations": record["iteration"],
            "train_s": round(float(record["elapsed_s"]), 1),
            "time_limit_s": plan["time_limit_s"],
            "budget_s": plan.get("budget_s"),
            "stopped_by_limit": bool(record["stopped_by_limit"]),
            "segments": record["segments"],
            "median_epoch_s": round(statistics.median(epoch_s), 3) if epoch_s else None,
            "epoch_s": [round(float(x), 3) for x in epoch_s],
            "eval_s": round(eval_s, 1),
            "eval_cases": len(self.folds[run.fold]),
            "gmd_train_s": plan.get("gmd_train_s"),
            "seed": self.recipe["train_seed"],
            "train_command": _show(["python", *train_cmd[1:]]),
            "eval_command": _show(["python", *eval_cmd[1:]]),
        }
        _write_json(d / "done.json", info)
        return info

    def publish(self, run: Run, info: dict) -> None:
        """Copy the run's small result files into the results folder (committed)."""
        dst = self.results / run.rel
        src = self.work / run.rel / "evaluation" / "per_case.csv"
        if not src.is_file():  # done and published from another work folder: nothing newer here
            return
        dst.mkdir(parents=True, exist_ok=True)
        if not (dst / "per_case.csv").is_file() or (dst / "per_case.csv").read_bytes() != src.read_bytes():
            shutil.copyfile(src, dst / "per_case.csv")
        if _read_json(dst / "run.json") != info:
            _write_json(dst / "run.json", info)

    # -- ETA ---------------------------------------------------------------------------------------
    def estimate_s(self, run: Run, measured: dict) -> float:
        n_train = len(self.cases) - len(self.folds[run.fold])
        n_test = len(self.folds[run.fold])
        eval_case = measured.get("eval_case_s", DEFAULT_EVAL_CASE_S)
        if run.budget == "equal_time":  # GMD's budget in the fold, as planned (or about to be)
            plan = _read_json(self.work / run.rel / "plan.json")
            gmd = self.done_info(Run("equal_steps", run.fold, REFERENCE))
            train = (
                (plan or {}).get("budget_s")
                or self.published_budget_s(run.fold)
                or (
                    gmd["train_s"]
                    if gmd
                    else self.recipe["epochs"] * n_train * self._step_s(REFERENCE, measured)
                )
            )
        else:
            train = self.recipe["epochs"] * n_train * self._step_s(run.method, measured)
        return train + eval_case * n_test

    @staticmethod
    def _step_s(method: str, measured: dict) -> float:
        return measured.get(method, DEFAULT_STEP_S.get(method, DEFAULT_STEP_S[REFERENCE]))

    def measured(self, runs: Sequence[Run]) -> dict:
        steps: dict[str, list[float]] = {}
        evals: list[float] = []
        for run in runs:
            info = self.done_info(run)
            if info is None:
                continue
            if run.budget == "equal_steps" and info["iterations"]:
                steps.setdefault(run.method, []).append(info["train_s"] / info["iterations"])
            evals.append(info["eval_s"] / max(1, info["eval_cases"]))
        out: dict = {m: float(np.mean(v)) for m, v in steps.items()}
        if evals:
            out["eval_case_s"] = float(np.mean(evals))
        return out

    # -- the loop ----------------------------------------------------------------------------------
    def run_all(self, runs: Sequence[Run]) -> list[str]:
        failures: list[str] = []
        t_start = time.monotonic()
        for i, run in enumerate(runs, 1):
            info = self.done_info(run)
            if info is not None:
                self.publish(run, info)
                self.log(f"[{i}/{len(runs)}] {run}: already done (train {info['train_s']:.0f} s), skipped")
                continue
            pending = [r for r in runs[i - 1 :] if self.done_info(r) is None]
            measured = self.measured(runs)
            eta = sum(self.estimate_s(r, measured) for r in pending)
            need = self.estimate_s(run, measured)
            if self.args.time_left_min is not None:
                left = self.args.time_left_min * 60 - (time.monotonic() - t_start)
                if need > left:
                    self.log(
                        f"[{i}/{len(runs)}] {run}: not started: its estimate {_hms(need)} does not fit "
                        f"the {_hms(left)} left (--time-left-min)"
                    )
                    continue
            self.log(f"[{i}/{len(runs)}] {run}: starting; {len(pending)} run(s) left, ETA {_hms(eta)}")
            t0 = time.monotonic()
            try:
                info = self.execute(run)
            except RunFailed as e:
                failures.append(f"{run}: {e}")
                self.log(f"[{i}/{len(runs)}] {run}: FAILED ({e}); going on with the others")
                continue
            self.publish(run, info)
            summarize(self.results, quiet=True, n_boot=self.args.bootstrap)
            stopped = ", stopped by the time limit" if info["stopped_by_limit"] else ""
            self.log(
                f"[{i}/{len(runs)}] {run}: done in {_hms(time.monotonic() - t0)} (train "
                f"{info['train_s']:.0f} s, {info['epochs_done']} epochs{stopped}; eval "
                f"{info['eval_s']:.0f} s); results in {_rel(self.results / run.rel)}"
            )
        self.log(f"finished this pass in {_hms(time.monotonic() - t_start)}; {len(failures)} failure(s)")
        return failures


# ---------------------------------------------------------------------------------------------------
# summary
# ---------------------------------------------------------------------------------------------------


def _read_per_case(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    out = []
    for r in rows:
        row = {"case": r["case"], "subset_index": int(r["subset_index"]), "subset": r["subset"]}
        row["n_mod"] = sum(int(r[m]) for m in MODALITIES)
        for m in METRICS:
            row[m] = float(r[m]) if r.get(m) not in (None, "") else float("nan")
        out.append(row)
    return out


def load_results(results: Path) -> tuple[dict, dict, dict]:
    """``(config, folds, runs)``; ``runs[(budget, fold, method)] = {"info", "rows"}``; the equal-time
    GMD entry is its equal-steps run."""
    config = _read_json(results / "config.json")
    if config is None:
        raise FileNotFoundError(f"{results / 'config.json'}: not a compare_methods results folder")
    folds = _read_json(results / "folds.json") or {"folds": [], "lgg": []}
    runs: dict = {}
    for info_path in sorted(results.glob("*/fold*/*/run.json")):
        info = _read_json(info_path)
        per_case = info_path.parent / "per_case.csv"
        if info is None or not per_case.is_file():
            continue
        runs[(info["budget"], int(info["fold"]), info["method"])] = {
            "info": info,
            "rows": _read_per_case(per_case),
        }
    for key in [k for k in runs if k[0] == "equal_steps" and k[2] == REFERENCE]:
        if "equal_time" in config["budgets"]:
            runs[("equal_time", key[1], REFERENCE)] = runs[key]
    return config, folds, runs


def _in_scope(row: dict, scope: str) -> bool:
    return scope == "all15" or row["n_mod"] == 1


def _fold_value(rows: list[dict], scope: str, metric: str) -> float:
    vals = [r[metric] for r in rows if _in_scope(r, scope) and math.isfinite(r[metric])]
    return float(np.mean(vals)) if vals else float("nan")


def _case_diffs(a: list[dict], b: list[dict], scope: str, metric: str) -> dict[str, float]:
    """Per case: the mean over the subsets in ``scope`` of ``a − b``, matched by case and subset."""
    bmap = {(r["case"], r["subset_index"]): r[metric] for r in b}
    per_case: dict[str, list[float]] = {}
    for r in a:
        other = bmap.get((r["case"], r["subset_index"]))
        if (
            other is None
            or not _in_scope(r, scope)
            or not (math.isfinite(r[metric]) and math.isfinite(other))
        ):
            continue
        per_case.setdefault(r["case"], []).append(r[metric] - other)
    return {c: float(np.mean(v)) for c, v in per_case.items()}


def method_rows(config: dict, runs: dict) -> list[dict]:
    rows = []
    for budget in config["budgets"]:
        for method in config["methods"]:
            folds = sorted(f for (b, f, m) in runs if b == budget and m == method)
            if not folds:
                continue
            infos = [runs[(budget, f, method)]["info"] for f in folds]
            for scope in SCOPES:
                for metric in METRICS:
                    vals = [_fold_value(runs[(budget, f, method)]["rows"], scope, metric) for f in folds]
                    rows.append({
                        "kind": "method", "budget": budget, "method": method, "scope": scope,
                        "metric": metric,
                        "n": len(folds), "mean": float(np.mean(vals)),
                        "std": float(np.std(vals, ddof=1)) if len(vals) > 1 else float("nan"),
                        "fold_values": ";".join(f"{v:.6f}" for v in vals),
                        "epochs": float(np.mean([i["epochs_done"] for i in infos])),
                        "train_s": float(np.mean([i["train_s"] for i in infos])),
                        "stopped": sum(bool(i["stopped_by_limit"]) for i in infos),
                    })  # fmt: skip
    return rows


def paired_rows(config: dict, runs: dict, n_boot: int) -> list[dict]:
    rows = []
    seed = int(config.get("seed", 0))
    for budget in config["budgets"]:
        for other in [m for m in config["methods"] if m != REFERENCE]:
            folds = sorted(
                f for (b, f, m) in runs if b == budget and m == other and (b, f, REFERENCE) in runs
            )
            for scope in SCOPES:
                for metric in METRICS:
                    diffs: dict[str, float] = {}
                    for f in folds:
                        a, b = runs[(budget, f, REFERENCE)]["rows"], runs[(budget, f, other)]["rows"]
                        diffs.update(_case_diffs(a, b, scope, metric))
                    values = [diffs[c] for c in sorted(diffs)]
                    stats = paired_stats(values, metric.startswith("dice"), seed, n_boot)
                    rows.append({"kind": "paired", "budget": budget, "method": other, "scope": scope,
                                 "metric": metric, "folds": ";".join(map(str, folds)), **stats})  # fmt: skip
    return rows


def missing_runs(config: dict, runs: dict) -> list[str]:
    out = []
    for run in plan_runs(config["methods"], int(config["folds"]), config["budgets"]):
        if run.budget in config["budgets"] and (run.budget, run.fold, run.method) not in runs:
            out.append(str(run))
    return out


def _fixed(v: float) -> str:
    return "n/a" if not math.isfinite(v) else f"{v:.2f}".replace("-0.00", "0.00")


def _pct(v: float) -> str:
    return _fixed(100 * v)


def _mm(v: float) -> str:
    return _fixed(v)


def _pm(mean: float, std: float, fmt) -> str:
    return fmt(mean) if not math.isfinite(std) else f"{fmt(mean)} ± {fmt(std)}"


def _metric_title(metric: str) -> str:
    kind, region = metric.split("_")
    return f"{'Dice' if kind == 'dice' else 'HD95'} {region.upper()}"


def render_markdown(config: dict, folds: dict, runs: dict, mrows: list[dict], prows: list[dict]) -> str:
    lgg = set(folds.get("lgg", []))
    lines = ["# GMD against the other methods: cross-validated comparison", ""]
    lines += [
        "Produced by (from the repository root; one line per invocation that ran something):",
        "",
        "```",
    ]
    lines += config.get("commands", []) + ["```", ""]
    lines += [
        f"Data: `{config['data_dir']}`, {config['num_cases']} cases in {config['folds']} folds (seed "
        f"{config['seed']}; LGG, marked *, by the name pattern `{config['lgg_pattern']}`, dealt out first). "
        "Each fold's held-out cases are its validation and test cases; the model trains on the other folds.",
        "",
    ]
    for k, cases in enumerate(folds.get("folds", [])):
        lines.append(f"- fold {k}: " + ", ".join(c + ("*" if c in lgg else "") for c in cases))
    train_seed = config.get("train_seed", config["seed"])
    lines += [
        "",
        f"Training: `{' + '.join(Path(c).name for c in TRAIN_CONFIGS)}`, the same seed ({train_seed}) "
        f"for every method, one validation at the last epoch; equal steps = {config['epochs']} epochs"
        + (f"; bundle overrides `{config['bundle_args']}`" if config["bundle_args"] else "")
        + (f"; OMP_NUM_THREADS={config['threads']}" if config.get("threads") else "")
        + ". Equal wall-clock: each other method gets the training seconds GMD took in the same fold (GMD's "
        "entry is its equal-steps run: its median epoch times its epochs, plus its validation); its "
        "max_epochs (and so its poly LR schedule) is what fits of its own median epoch in its equal-steps "
        f"run, with a time limit at {LIMIT_SLACK}x the budget as a safety net.",
        "",
        "Evaluation: the final weights (not the best-validation ones: validation uses the held-out cases) on "
        "every held-out case and all 15 modality subsets (`evaluate.yaml`: hard Dice, HD95 on the case's "
        "own 1 mm grid).",
        "",
        "## Status",
        "",
    ]
    missing = missing_runs(config, runs)
    expected = len(plan_runs(config["methods"], int(config["folds"]), config["budgets"]))
    lines.append(f"{expected - len(missing)} of {expected} runs done.")
    if missing:
        lines += ["", "Still missing (rerun the command above to resume):", ""] + [f"- {m}" for m in missing]
    else:
        lines.append("Nothing missing: the comparison is complete.")
    for budget in config["budgets"]:
        sel = [r for r in mrows if r["budget"] == budget]
        lines += ["", f"## {BUDGET_TITLES[budget]}: mean ± std over folds", ""]
        if not sel:
            lines.append("No run finished yet.")
            continue
        head = ["method", "folds", "epochs", "train s"]
        head += [
            f"{_metric_title(m)} ({'15' if s == 'all15' else '1 mod.'})" for s in SCOPES for m in METRICS[:3]
        ]
        head += [f"{_metric_title(m)} (15)" for m in METRICS[3:]]
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for method in config["methods"]:
            cell = {(r["scope"], r["metric"]): r for r in sel if r["method"] == method}
            if not cell:
                continue
            any_row = next(iter(cell.values()))
            name = f"`{method}`" + (
                " (= equal steps)" if budget == "equal_time" and method == REFERENCE else ""
            )
            stopped = f" ({any_row['stopped']} stopped by the limit)" if any_row["stopped"] else ""
            cells = [
                name,
                str(any_row["n"]),
                f"{any_row['epochs']:.0f}{stopped}",
                f"{any_row['train_s']:.0f}",
            ]
            cells += [
                _pm(cell[(s, m)]["mean"], cell[(s, m)]["std"], _pct) for s in SCOPES for m in METRICS[:3]
            ]
            cells += [_pm(cell[("all15", m)]["mean"], cell[("all15", m)]["std"], _mm) for m in METRICS[3:]]
            lines.append("| " + " | ".join(cells) + " |")
        lines += ["", "Dice in %, HD95 in mm; epochs and training seconds are means over folds."]
    lines += ["", "`summary.csv` holds these figures (Dice as fractions) and the per-fold values."]
    lines += [
        "",
        "## Paired differences GMD − other method",
        "",
        "Per held-out case: the difference per subset, averaged over the case's subsets (15, or the 4 single "
        "modalities); n = cases (the subsets of one case share a scan, so the case is the unit). Mean over "
        "cases with a percentile bootstrap 95% CI over cases (10,000 resamples, seeded), the counts of cases "
        "where GMD is higher / lower / equal, and the two-sided sign test. Dice in percentage points "
        '(positive: GMD better), HD95 in mm (negative: GMD better). "GMD better" or "worse" only when the '
        "CI excludes 0 and the sign test gives p < 0.05.",
    ]
    for budget in config["budgets"]:
        sel = [r for r in prows if r["budget"] == budget]
        lines += ["", f"### {BUDGET_TITLES[budget]}", ""]
        head = [
            "GMD −",
            "subsets",
            "metric",
            "n",
            "mean diff",
            "95% CI",
            "+ / − / =",
            "sign test p",
            "verdict",
        ]
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for r in sel:
            fmt = _pct if r["metric"].startswith("dice") else _mm
            ci = "n/a" if not r["n"] else f"[{fmt(r['ci_low'])}, {fmt(r['ci_high'])}]"
            cells = [f"`{r['method']}`", SCOPE_TITLES[r["scope"]], _metric_title(r["metric"]), str(r["n"]),
                     fmt(r["mean"]), ci, f"{r['n_pos']} / {r['n_neg']} / {r['n_zero']}",
                     f"{r['p_sign']:.4g}", r["verdict"]]  # fmt: skip
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _csv_value(v) -> str:
    if isinstance(v, float):
        return "" if not math.isfinite(v) else f"{v:.6g}"
    return str(v)


def write_csv(path: Path, rows: list[dict]) -> None:
    keys: list[str] = []
    for r in rows:
        keys += [k for k in r if k not in keys]
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys, lineterminator="\n")
        w.writeheader()
        for r in rows:
            w.writerow({k: _csv_value(r.get(k, "")) for k in keys})


def plot_subsets(config: dict, runs: dict, path: Path) -> None:
    """Heatmaps of the per-subset Dice (%) per method and region, pooled over the held-out cases of all
    folds done, one panel per budget."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from gmd_monai.subsets import BRATS_MODALITIES, SubsetSpace

    names = SubsetSpace(BRATS_MODALITIES).names
    budgets = list(config["budgets"])
    width = 3.0 + 1.65 * len(config["methods"]) * len(budgets)
    fig, axes = plt.subplots(1, len(budgets), figsize=(width, 0.36 * len(names) + 2.0), squeeze=False)
    for ax, budget in zip(axes[0], budgets):
        cols, data = [], []
        for method in config["methods"]:
            rows = [
                r for (b, f, m), v in sorted(runs.items()) if b == budget and m == method for r in v["rows"]
            ]
            for region in REGIONS:
                col = []
                for k in range(len(names)):
                    vals = [r[f"dice_{region}"] for r in rows if r["subset_index"] == k]
                    col.append(100 * float(np.mean(vals)) if vals else float("nan"))
                cols.append(f"{method}\n{region.upper()}")
                data.append(col)
        arr = np.array(data, dtype=float).T
        im = ax.imshow(arr, cmap="viridis", vmin=0, vmax=100, aspect="auto")
        ax.set_xticks(range(len(cols)), cols, fontsize=7)
        ax.set_yticks(range(len(names)), names if ax is axes[0][0] else [""] * len(names), fontsize=7)
        for i in range(arr.shape[0]):
            for j in range(arr.shape[1]):
                v = arr[i, j]
                ax.text(j, i, "" if np.isnan(v) else f"{v:.0f}", ha="center", va="center", fontsize=6,
                        color="white" if v < 60 else "black")  # fmt: skip
        for j in range(3, len(cols), 3):
            ax.axvline(j - 0.5, color="white", linewidth=2)
        ax.set_title(f"{BUDGET_TITLES[budget]}: Dice (%) per subset", fontsize=9)
    fig.colorbar(im, ax=list(axes[0]), label="Dice (%)", fraction=0.03)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def summarize(results: Path, quiet: bool = False, n_boot: int = 10000) -> dict[str, str]:
    """Write ``summary.md``, ``summary.csv`` and ``summary_dice.png`` into ``results`` from its result
    files alone; print the headline ``key=value`` lines unless ``quiet``."""
    config, folds, runs = load_results(results)
    mrows = method_rows(config, runs)
    prows = paired_rows(config, runs, n_boot)
    paths = {
        "markdown": results / "summary.md",
        "csv": results / "summary.csv",
        "plot": results / "summary_dice.png",
    }
    paths["markdown"].write_text(render_markdown(config, folds, runs, mrows, prows))
    write_csv(paths["csv"], mrows + prows)
    plot_subsets(config, runs, paths["plot"])
    if not quiet:
        expected = len(plan_runs(config["methods"], int(config["folds"]), config["budgets"]))
        emit("runs_done", expected - len(missing_runs(config, runs)))
        emit("runs_expected", expected)
        for r in mrows:
            if r["metric"].startswith("dice"):
                prefix = "" if r["scope"] == "all15" else "single_"
                emit(f"{r['budget']}_{r['method']}_{prefix}{r['metric']}", round(100 * r["mean"], 2))
        for r in prows:
            if r["scope"] == "all15" and r["metric"].startswith("dice") and r["n"]:
                key = f"{r['budget']}_gmd_minus_{r['method']}_{r['metric']}"
                emit(key, round(100 * r["mean"], 2))
                emit(f"{key}_ci", f"[{100 * r['ci_low']:.2f},{100 * r['ci_high']:.2f}]")
                emit(f"{key}_sign_p", round(r["p_sign"], 4))
                emit(f"{key}_verdict", r["verdict"])
        for key, path in paths.items():
            emit(key, _rel(path))
    return {k: str(v) for k, v in paths.items()}


# ---------------------------------------------------------------------------------------------------
# command line
# ---------------------------------------------------------------------------------------------------


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data-dir", default=None, help="a BraTS folder (default: ../shared/data/brats2018)")
    p.add_argument("--folds", type=int, default=None, help="number of folds (default 2)")
    p.add_argument(
        "--methods", default=None, help="comma list, GMD included (default gmd,mean,dropout,upgrad)"
    )
    p.add_argument(
        "--budgets", default=",".join(BUDGETS), help="equal_steps, or both (equal_time needs them)"
    )
    p.add_argument("--epochs", type=int, default=None, help="epochs of every equal-steps run (default 120)")
    p.add_argument(
        "--only-folds",
        default=None,
        help="comma list of fold indices to run in this pass, e.g. '1' (default: all); the split and "
        "the summary still cover every fold",
    )
    p.add_argument(
        "--seed",
        type=int,
        default=0,
        help="fold split and bootstrap seed; the training seed too, unless --train-seed",
    )
    p.add_argument(
        "--train-seed",
        type=int,
        default=None,
        help="training seed of every run, the split kept (default: --seed); with its own --results-dir "
        "and --work-dir it measures how far a result moves with the seed",
    )
    p.add_argument("--lgg-pattern", default=LGG_PATTERN, help="regular expression naming the LGG cases")
    p.add_argument(
        "--bundle-args", default=None, help="more bundle overrides for every run, e.g. '--width 0.5'"
    )
    p.add_argument("--work-dir", default=None, help="runs, checkpoints and logs (default work/compare)")
    p.add_argument(
        "--results-dir",
        default=None,
        help="small result files and the summary (default benchmarks/results/compare_methods)",
    )
    p.add_argument(
        "--summarize-only", action="store_true", help="rewrite the summary from --results-dir alone"
    )
    p.add_argument(
        "--smoke", action="store_true", help="synthetic data, 2 folds, gmd and mean, tiny and fast"
    )
    p.add_argument("--bootstrap", type=int, default=10000, help="bootstrap resamples")
    p.add_argument(
        "--threads", type=int, default=None, help="OMP_NUM_THREADS of the bundle runs (default: unset)"
    )
    p.add_argument("--python", default=sys.executable, help="the interpreter of the bundle runs")
    p.add_argument(
        "--time-left-min",
        type=float,
        default=None,
        help="start only the runs whose estimate fits in this many minutes from now (a session's end: "
        "a run cut short keeps only its checkpoints in --work-dir)",
    )
    args = p.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    return args


def _resolve(args: argparse.Namespace) -> None:
    if args.smoke:
        if args.work_dir is None:
            args.work_dir = tempfile.mkdtemp(prefix="compare_methods_smoke_")
        if args.results_dir is None:
            args.results_dir = str(Path(args.work_dir) / "results")
        args.folds = args.folds or SMOKE["folds"]
        args.methods = args.methods or SMOKE["methods"]
        args.epochs = args.epochs or SMOKE["epochs"]
        args.threads = SMOKE["threads"] if args.threads is None else args.threads
        args.bundle_args = SMOKE["bundle_args"] if args.bundle_args is None else args.bundle_args
    args.work_dir = args.work_dir or str(REPO / "work" / "compare")
    args.results_dir = args.results_dir or str(REPO / "benchmarks" / "results" / "compare_methods")
    args.folds = args.folds or 2
    args.methods = args.methods or "gmd,mean,dropout,upgrad"
    args.epochs = args.epochs or 120
    args.bundle_args = args.bundle_args or ""
    args.threads = args.threads or 0


def _data_dir(args: argparse.Namespace) -> Path | None:
    if args.smoke and not args.data_dir:  # synthetic cases in the work folder (or a smoke's, given)
        from gmd_monai.data.synthetic import ensure_synthetic_brats

        root = Path(args.work_dir) / "data"
        return Path(ensure_synthetic_brats(root, num_cases=SMOKE["num_cases"], shape=(SMOKE["shape"],) * 3))
    path = Path(args.data_dir) if args.data_dir else SHARED_BRATS
    return path if path.is_dir() else None


def _check_recipe(path: Path, recipe: dict) -> dict | None:
    """The config already in ``path`` (None: a new folder); raises when it was another recipe."""
    old = _read_json(path)
    if old is None:
        return None
    old = {"train_seed": old.get("seed"), **old}  # written before --train-seed: trained with --seed
    diff = [k for k in recipe if k not in ("methods", "budgets") and old.get(k) != recipe[k]]
    if diff:
        what = ", ".join(f"{k}: {old.get(k)!r} there, {recipe[k]!r} now" for k in diff)
        raise SystemExit(
            f"{path} holds a comparison with another recipe ({what}); use another --work-dir and "
            "--results-dir, or the same options"
        )
    return old


def _merge(a: Sequence[str], b: Sequence[str]) -> list[str]:
    return list(a) + [x for x in b if x not in a]


def main(argv=None) -> int:
    args = parse_args(argv)
    _resolve(args)
    if args.summarize_only:
        summarize(Path(args.results_dir), n_boot=args.bootstrap)
        return 0
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    budgets = [b.strip() for b in args.budgets.split(",") if b.strip()]
    if REFERENCE not in methods:
        raise SystemExit(f"--methods must include {REFERENCE!r}: every comparison is GMD against the others")
    methods = [REFERENCE] + [m for m in methods if m != REFERENCE]
    bad = [b for b in budgets if b not in BUDGETS]
    if bad or not budgets:
        raise SystemExit(f"--budgets: {bad or budgets} not among {list(BUDGETS)}")
    budgets = [b for b in BUDGETS if b in budgets or b == "equal_steps"]  # equal_time needs the step runs
    only = None
    if args.only_folds is not None:
        try:
            only = {int(f) for f in args.only_folds.split(",") if f.strip()}
        except ValueError:
            raise SystemExit(f"--only-folds: {args.only_folds!r} is not a comma list of integers") from None
        if not only or not only <= set(range(args.folds)):
            raise SystemExit(f"--only-folds: {args.only_folds!r} not among the folds 0..{args.folds - 1}")
    Path(args.work_dir).mkdir(parents=True, exist_ok=True)
    data_dir = _data_dir(args)
    if data_dir is None:
        print(
            f"skipped=1 reason={args.data_dir or SHARED_BRATS} not found (../shared/data/brats2018 is absent)"
        )
        return 0
    cases = list_cases(data_dir)
    recipe = {
        "data_dir": _rel(data_dir),
        "num_cases": len(cases),
        "folds": args.folds,
        "seed": args.seed,
        "train_seed": args.seed if args.train_seed is None else args.train_seed,
        "epochs": args.epochs,
        "lgg_pattern": args.lgg_pattern,
        "bundle_args": args.bundle_args,
        "threads": args.threads,
        "methods": methods,
        "budgets": budgets,
    }
    results, work = Path(args.results_dir).resolve(), Path(args.work_dir).resolve()
    old = _check_recipe(results / "config.json", recipe)
    _check_recipe(work / "config.json", recipe)
    command = shlex.join(["python", "benchmarks/compare_methods.py", *args.argv])
    config = dict(recipe)
    if old is not None:  # a rerun may add methods or budgets
        config["methods"] = _merge(old["methods"], methods)
        config["budgets"] = [b for b in BUDGETS if b in old["budgets"] or b in budgets]
    config["commands"] = _merge(old.get("commands", []) if old else [], [command])
    results.mkdir(parents=True, exist_ok=True)

    folds = make_folds(cases, args.folds, args.seed, args.lgg_pattern)
    cmp = Comparison(args, recipe, folds, cases)
    lock = open(work / ".compare.lock", "w")  # noqa: SIM115 (held, and inherited by the bundle runs)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise SystemExit(
            f"another compare_methods run is using {work} (lock {work / '.compare.lock'})"
        ) from None
    cmp.lock_fd = lock.fileno()

    def stop(signum, frame):  # a kill of this process also stops the bundle run it waits for
        child = cmp.child
        if child is not None and child.poll() is None:
            child.send_signal(signum)
        cmp.log(f"stopped by signal {signum}; run the same command again to resume")
        raise SystemExit(128 + signum)

    previous = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        _write_json(results / "config.json", config)
        _write_json(work / "config.json", config)
        cmp.write_splits()
        runs = [r for r in plan_runs(methods, args.folds, budgets) if only is None or r.fold in only]
        which = "" if only is None else f", this pass fold(s) {', '.join(map(str, sorted(only)))} only"
        cmp.log(
            f"compare_methods: {len(runs)} runs ({', '.join(budgets)}; methods {', '.join(methods)}; "
            f"{args.folds} folds of {', '.join(str(len(f)) for f in folds)} cases{which}); work {work}, "
            f"results {results}"
        )
        cmp.log(f"command: {command}")
        failures = cmp.run_all(runs)
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
        lock.close()
    summarize(results, n_boot=args.bootstrap)
    if failures:
        print("failed runs:\n" + "\n".join(f"  {f}" for f in failures), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
