"""``make demo``: synthetic BraTS-like data -> GMD + DS training with the bundle -> 15-subset evaluation
-> the clinician command on a test case with two modalities missing.

Everything goes through the real bundle configs (``bundle/configs/train.yaml`` and ``evaluate.yaml``)
and the real ``segment`` command, with a few overrides that make it fit in about three minutes on 2 CPU
cores. The synthetic modalities carry different information (enhancing tumour mainly in T1ce, edema in
FLAIR/T2), so the table shows the missing-modality pattern: subsets without T1ce lose ET.
"""

from __future__ import annotations

import csv
import logging
import time
import warnings
from pathlib import Path

__all__ = ["demo", "run_bundle"]

REPO = Path(__file__).resolve().parents[1]


def run_bundle(config_files: list[str], workflow_type: str = "train", **overrides):
    """Run a bundle workflow (``run`` id) with overrides; returns the ConfigWorkflow after finalize."""
    from monai.bundle import ConfigWorkflow

    wf = ConfigWorkflow(config_file=config_files, workflow_type=workflow_type, **overrides)
    wf.initialize()
    wf.run()
    wf.finalize()
    return wf


def demo(
    output_dir: str = "demo_output",
    method: str = "gmd",
    epochs: int = 15,
    num_cases: int = 12,
    size: int = 32,
    roi: int = 32,
    width: float = 0.25,
    batch_size: int = 2,
    learning_rate: float = 0.05,
    loss: str = "dice_ce",
    strategy: str = "stream",
    workers: int = 2,
    foreground_prob: float = 0.0,
    threads: int | None = None,
    seed: int = 0,
) -> str:
    """Train GMD + DS on a synthetic dataset and print the 15-subset Dice table.

    Args:
        output_dir: where data, checkpoints, TensorBoard logs and reports go.
        method: ``gmd``, ``mean``, ``dropout`` or a torchjd weighting.
        epochs: training epochs.
        num_cases: synthetic cases (split train/val/test).
        size: edge of the synthetic volumes (voxels).
        roi: training crop / sliding-window edge (multiple of 16).
        width: network width (0.5 is the paper's; the demo uses 0.25 to stay fast on CPU).
        batch_size: training batch size.
        learning_rate: Adam learning rate (the paper's 8e-4 is for 600 epochs; the demo is short).
        loss: per-subset loss; the demo uses Dice + BCE, which converges faster on tiny tumours in a
            few hundred steps (the bundle default is the paper's Dice).
        strategy: how exact GMD computes the per-subset gradients (all exact): ``"stream"`` (one
            autograd call per modality stream and subset), fastest at the demo's size.
        workers: with ``strategy="stream"``, how many modality streams back-propagate at once
            (threads; same gradients, bitwise).
        foreground_prob: share of training crops centred on tumour.
        threads: torch CPU threads (default: all cores).
        seed: random seed (data split, permutations, initialisation).

    Returns:
        Path of the Markdown table.
    """
    import torch

    from gmd_monai.data.synthetic import ensure_synthetic_brats
    from gmd_monai.engine import setup_logging

    setup_logging()
    logging.getLogger("ignite").setLevel(logging.WARNING)
    for name in ("monai", "gmd_monai.checkpointing", "gmd_monai.engine"):  # the epoch line is enough
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", message=".*nvImageCodec.*")  # MONAI's optional DICOM decoder
    if threads:
        torch.set_num_threads(int(threads))
    out = Path(output_dir).resolve()
    t0 = time.time()
    print(f"[1/4] synthetic BraTS-like data: {num_cases} cases of {size}^3 -> {out / 'data'}", flush=True)
    data_dir = ensure_synthetic_brats(str(out / "data"), num_cases=num_cases, shape=(size,) * 3, seed=seed)
    configs = [str(REPO / "bundle" / "configs" / "train.yaml")]
    common = dict(
        bundle_root=str(REPO / "bundle"),
        dataset_dir=data_dir,
        ckpt_dir=str(out / "models"),
        output_dir=str(out / "runs"),
        roi_size=[roi] * 3,
        width=width,
        seed=seed,
        num_workers=0,
        val_fraction=0.125,
        test_fraction=0.25,
        # oneDNN for the batch-1 convolutions of each stream (the CPU recipe's choice, train_cpu.yaml)
        network="$gmd_monai.gmd.fast.enable_onednn_conv3d(@network_def).to(@device)",
    )
    print(
        f"[2/4] training DS U-Net (width {width}) with method={method} over the 15 modality subsets for "
        f"{epochs} epochs; the ETA of each epoch line is, within seconds, the rest of the demo's",
        flush=True,
    )
    train = run_bundle(
        configs,
        "train",
        method=method,
        overwrite=True,  # a demo run replaces the previous one
        max_epochs=epochs,
        batch_size=batch_size,
        learning_rate=learning_rate,
        loss=loss,
        foreground_prob=foreground_prob,
        val_interval=max(1, epochs // 4),
        **(
            {"train#trainer#method_kwargs#strategy": strategy, "train#trainer#method_kwargs#workers": workers}
            if method == "gmd"
            else {}
        ),
        progress_bar=True,  # one bar, and one line per epoch with the ETA and the validation result
        iteration_log=False,
        epoch_log=False,
        **{"train#dataset#progress": False, "validate#dataset#progress": False},  # caching 9 cases: no bar
        **common,
    )
    t1 = time.time()
    steps = train.parser.get_parsed_content("train#trainer").state.iteration
    print(
        f"      training took {t1 - t0:.0f} s ({steps} steps); logs: {out / 'runs'} "
        f"(tensorboard --logdir {out / 'runs'})"
    )
    print("[3/4] evaluating all 15 modality subsets on the test cases", flush=True)
    run_bundle(configs + [str(REPO / "bundle" / "configs" / "evaluate.yaml")], "train",
               eval_dir=str(out / "eval"), checkpoint=str(out / "models" / "model.pt"), **common)  # fmt: skip
    table = out / "eval" / "subset_table.md"  # the evaluation has printed it
    print("[4/4] the clinician command on a test case with T1 and T2 missing: gmd-monai segment", flush=True)
    result = _segment_example(out, data_dir)
    print(f"done in {time.time() - t0:.0f} s. Table: {table}; heatmap: {out / 'eval' / 'subset_dice.png'}")
    for key in ("segmentation", "report", "montage"):
        print(f"      {key}: {result.outputs[key]}")
    return str(table)


def _segment_example(out: Path, data_dir: str):
    """``gmd-monai segment --t1ce ... --flair ...`` with the demo's model on its first test case."""
    from gmd_monai.inference.segment import segment

    with open(out / "eval" / "per_case.csv", newline="") as f:
        case = next(csv.DictReader(f))["case"]
    stem = Path(data_dir) / case / case
    result = segment(
        t1ce=f"{stem}_t1ce.nii.gz",
        flair=f"{stem}_flair.nii.gz",
        output=str(out / "segment"),
        model=str(out / "models" / "model.pt"),
        overwrite=True,  # a demo run replaces the previous one
    )
    volumes = result.report.get("volumes_ml", {})
    text = ", ".join(f"{k} {v:.1f} mL" for k, v in volumes.items()) if isinstance(volumes, dict) else ""
    print(f"      {case}: T1ce + FLAIR -> {text}", flush=True)
    return result
