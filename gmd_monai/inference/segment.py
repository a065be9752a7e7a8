"""Segment one patient's partial MRI set (the clinician's command), or a folder of cases.

Pipeline (:func:`segment`)::

    inputs (any subset of t1, t1ce, t2, flair; NIfTI files, DICOM folders, a case folder or a 4-D file)
      -> checks (clear errors naming the file; nothing written on error)
      -> reference grid = first available of t1ce, flair, t2, t1; other grids resampled (warning),
         optional rigid co-registration (--register)
      -> LPS orientation, 1 mm spacing, crop to the brain, robust z-score (the training normalisation)
      -> sliding window over the whole volume, running ONLY the available modality streams
      -> region probabilities brought back to the reference grid -> BraTS label map (uint8)
      -> <case>_gmdseg.nii.gz (shape and affine of the reference image), optional probabilities,
         <case>_report.json (modalities, model checksum, volumes in mL, measured accuracy for this
         subset, warnings, timings) and <case>_montage.png

Command line (see :func:`segment_cli`)::

    gmd-monai segment --t1ce p/t1ce.nii.gz --flair p/flair_dicom/ --output out/p_gmdseg.nii.gz
    gmd-monai segment --case_dir BraTS2021_00000/ --output out/
    gmd-monai segment --image p_4d.nii.gz --channels t1ce,flair --output out/
    gmd-monai segment_batch cases/ out/
"""

from __future__ import annotations

import csv
import inspect
import io as _io
import logging
import os
import platform
import signal
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import SimpleITK as sitk
import torch
from monai.data import MetaTensor
from monai.transforms import Compose
from torch import nn

import gmd_monai
from gmd_monai.data.naming import canonical_modality, is_modality_name
from gmd_monai.devices import resolve_device
from gmd_monai.inference.case import LoadedCase, case_id_of
from gmd_monai.inference.errors import InferenceError, InputError
from gmd_monai.inference.grid import ras_affine
from gmd_monai.inference.images import write_nifti_like
from gmd_monai.inference.integrity import DEFAULT_MAX_MEMORY_GB, check_memory
from gmd_monai.inference.model import ModelInfo, load_network
from gmd_monai.inference.outputs import (
    SEGMENTATION_SUFFIX,
    AtomicOutputs,
    check_free_space,
    check_outputs,
    output_paths,
    remove_stale_temp_files,
)
from gmd_monai.inference.report import (
    DISCLAIMER,
    modality_warnings,
    region_volumes,
    reliability,
    to_json,
    write_montage,
)
from gmd_monai.inference.sources import (
    ImageSource,
    check_sources,
    find_case_files,
    find_case_folders,
    sources_from_item,
)
from gmd_monai.inference.transforms import (
    LABEL_VALUES,
    ModalitySlidingWindowInferer,
    _label_format,
    inference_postprocessing,
    inference_preprocessing,
    label_value_names,
)
from gmd_monai.roi import parse_roi_size
from gmd_monai.subsets import BRATS_MODALITIES

__all__ = [
    "SegmentationResult",
    "output_paths",
    "resolve_device",
    "segment",
    "segment_batch",
    "segment_batch_cli",
    "segment_cli",
]

logger = logging.getLogger(__name__)


@dataclass
class SegmentationResult:
    """What :func:`segment` produced.

    Attributes:
        case: the case id.
        outputs: ``{"segmentation", "report", "montage", "probabilities"}`` -> written path (or None).
        report: the JSON report as a dict.
        labels: the label map ``(X, Y, Z)`` uint8 on the reference grid.
    """

    case: str
    outputs: dict[str, str | None]
    report: dict[str, Any]
    labels: np.ndarray = field(repr=False)


def _build_item(
    modality_paths: Mapping[str, Any],
    case_dir: Any,
    image: Any,
    channels: Any,
) -> dict[str, Any]:
    given = {k: v for k, v in modality_paths.items() if v is not None}
    ways = (("--t1/--t1ce/--t2/--flair", given), ("--case_dir", case_dir), ("--image", image))
    modes = [name for name, used in ways if used]
    if len(modes) > 1:
        raise InputError(f"give the inputs one way: {' or '.join(modes)}, not several")
    if channels is not None and image is None:
        raise InputError("--channels names the volumes of a 4-D --image; it needs --image")
    if given:
        out: dict[str, Any] = {}
        for k, v in given.items():
            mod = canonical_modality(k)
            if mod in out:
                raise InputError(f"modality {mod} given twice (--{k} and another alias)")
            if isinstance(v, bool) or str(v).strip() == "":
                raise InputError(f"--{k}: expected a file or DICOM folder path, got {v!r}")
            out[mod] = str(v)
        return {"image": out}
    if case_dir is not None:
        if isinstance(case_dir, bool):
            raise InputError("--case_dir needs a folder path")
        return {"image": {m: str(p) for m, p in find_case_files(os.fspath(case_dir)).items()}}
    if image is not None:
        if isinstance(image, bool):
            raise InputError("--image needs a file path")
        item: dict[str, Any] = {"image": str(image)}
        if channels is not None:
            item["modalities"] = channels
        return item
    raise InputError(
        "no modality given: pass at least one of --t1, --t1ce, --t2, --flair (a NIfTI file or a DICOM "
        "folder), "
        "or --case_dir, or --image with --channels"
    )


def _check_input_memory(sources: Sequence[ImageSource], max_memory_gb: float) -> None:
    """The inputs' own memory (from their headers, voxels not read) against the cap, before reading."""
    for s in sources:
        if s.is_dicom:
            continue
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(s.path))
        try:
            reader.ReadImageInformation()
        except RuntimeError:
            continue  # read_source names the unreadable file
        size, spacing = reader.GetSize()[:3], reader.GetSpacing()[:3]
        check_memory(str(s.path), size, spacing, len(sources), None, max_memory_gb)


def segment(
    t1: str | os.PathLike | None = None,
    t1ce: str | os.PathLike | None = None,
    t2: str | os.PathLike | None = None,
    flair: str | os.PathLike | None = None,
    case_dir: str | os.PathLike | None = None,
    image: str | os.PathLike | None = None,
    channels: str | Sequence[str] | None = None,
    output: str | os.PathLike | None = None,
    model: str | os.PathLike | None = None,
    device: str | torch.device = "auto",
    labels: str = "brats",
    probabilities: bool = False,
    montage: bool = True,
    register: bool = False,
    allow_untrained: bool = False,
    roi_size: int | Sequence[int] | None = None,
    overlap: float = 0.5,
    sw_batch_size: int = 1,
    progress: bool = False,
    network: tuple[nn.Module, ModelInfo] | None = None,
    extra_inputs: Mapping[str, Any] | None = None,
    overwrite: bool = False,
    allow_label_like: bool = False,
    max_memory_gb: float = DEFAULT_MAX_MEMORY_GB,
) -> SegmentationResult:
    """Segment one patient from whatever modalities are available.

    Give the inputs ONE way: by modality (``t1``, ``t1ce``, ``t2``, ``flair``: any non-empty subset,
    each a NIfTI file or a DICOM series folder), or ``case_dir`` (a folder of BraTS-named files:
    ``<case>_t1ce.nii.gz`` ... or ``<case>-t1c.nii.gz`` ...), or ``image`` (a 4-D file) with
    ``channels`` naming its volumes in order.

    Args:
        t1: T1 image.
        t1ce: contrast-enhanced T1 image.
        t2: T2 image.
        flair: FLAIR image.
        case_dir: a case folder.
        image: a 4-D image (or one BraTS-named 3-D file: its sibling modality files are used too).
        channels: the modalities of ``image``'s volumes (``"t1ce,flair"`` or a list).
        output: the label map path (``.nii.gz``) or a folder; default ``./<case>_gmdseg.nii.gz`` (never
            ``_seg``, the BraTS ground-truth name).
        model: trained weights; default ``bundle/models/model.pt``.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        labels: ``"brats"`` for {0, 1, 2, 4} or ``"brats2021"`` for {0, 1, 2, 3}.
        probabilities: also write the (WT, TC, ET) probabilities as a 4-D float32 NIfTI.
        montage: write the PNG montage.
        register: rigidly co-register every modality to the reference (mutual information).
        allow_untrained: run a random network when no weights exist (smoke tests only).
        roi_size: sliding-window size (multiple of 16); default: the model's training crop (128 when
            the checkpoint does not record it).
        overlap: sliding-window overlap.
        sw_batch_size: windows per forward.
        progress: show the sliding-window progress bar.
        network: an already loaded ``(network, ModelInfo)`` (batch mode); overrides ``model``.
        extra_inputs: more modality inputs by name (aliases such as ``t1c`` or ``t2f``); unknown
            names are an error.
        overwrite: replace existing output files (never an input).
        allow_label_like: accept an input whose voxels are a handful of small integers (refused by
            default as a label map given as an image).
        max_memory_gb: refuse a run whose estimated memory exceeds this (GiB), before allocating it
            (see :func:`gmd_monai.inference.integrity.estimate_memory_bytes`).

    Returns:
        A :class:`SegmentationResult`.

    Raises:
        InputError: a bad input or output (named in the message), checked before computing; nothing is
            written or replaced.
        ModelError: no (usable) weights; nothing is written.
    """
    t_start = time.perf_counter()
    label_format = _label_format(labels)
    try:
        roi = parse_roi_size(roi_size, multiple_of=16, name="--roi_size") if roi_size is not None else None
    except ValueError as e:
        raise InputError(str(e)) from e
    if not 0.0 <= float(overlap) < 1.0:
        raise InputError(f"--overlap {overlap}: must be in [0, 1)")
    if isinstance(max_memory_gb, bool) or not float(max_memory_gb) > 0:
        raise InputError(f"--max_memory_gb {max_memory_gb}: must be a positive number of GiB")
    modality_paths: dict[str, Any] = {"t1": t1, "t1ce": t1ce, "t2": t2, "flair": flair}
    for k, v in (extra_inputs or {}).items():
        if not is_modality_name(str(k)):
            raise InputError(
                f"unknown option or modality name --{k}; modalities are --t1, --t1ce, --t2, --flair "
                "(aliases --t1n, --t1c, --t2w, --t2f)"
            )
        modality_paths[str(k)] = v
    item = _build_item(modality_paths, case_dir, image, channels)
    sources = check_sources(sources_from_item(item, default_4d_channels=None))
    case_id = case_id_of(sources, case_dir=case_dir)
    paths = output_paths(output, case_id)
    wanted = {"segmentation", "report"} | ({"montage"} if montage else set())
    wanted |= {"probabilities"} if probabilities else set()
    paths = {k: p for k, p in paths.items() if k in wanted}
    # the outputs can be written and replace nothing: checked before any computation
    check_outputs(paths, sources, overwrite=overwrite)

    dev = resolve_device(device)
    _check_input_memory(sources, max_memory_gb)

    # read and check every input (errors before anything else), bring them onto the reference grid
    t0 = time.perf_counter()
    pre = inference_preprocessing(
        register=register, default_4d_channels=None, keep_case=True, allow_label_like=allow_label_like
    )
    data = pre.transforms[0](item)  # LoadModalitiesd
    case: LoadedCase = data.pop("loaded_case")
    names = list(case.modalities)
    t_pre = time.perf_counter() - t0

    if network is None:
        net, info = load_network(model, allow_untrained=allow_untrained, device=dev)
    else:
        net, info = network
        net = net.to(dev).eval()

    # the rest of the preprocessing, exactly as in training: the model's orientation and voxel size
    # (recorded with its weights), crop to the brain, robust z-score
    t0 = time.perf_counter()
    ref_img = case.reference_image
    check_memory(
        case.reference_source.describe(),
        ref_img.GetSize(),
        ref_img.GetSpacing(),
        len(names),
        info.pixdim,
        max_memory_gb,
    )
    n_ref = int(np.prod(ref_img.GetSize()))
    check_free_space(paths["segmentation"].parent, n_ref * (13 if probabilities else 1) + (4 << 20))
    grid = inference_preprocessing(pixdim=info.pixdim, axcodes=info.axcodes, default_4d_channels=None)
    pre = Compose([pre.transforms[0], *grid.transforms[1:]])
    if roi is None:
        roi = tuple(info.roi_size) if info.roi_size else (128, 128, 128)
    data = Compose(pre.transforms[1:])(data)
    t_pre += time.perf_counter() - t0

    # sliding window over the whole volume, only the available streams
    t0 = time.perf_counter()
    inferer = ModalitySlidingWindowInferer(
        roi_size=roi,
        sw_batch_size=int(sw_batch_size),
        overlap=float(overlap),
        mode="gaussian",
        progress=progress,
    )
    x = data["image"].as_tensor()[None].to(dev)
    with torch.inference_mode():
        logits = inferer(x, net, available=names)
    data["pred"] = MetaTensor(logits[0].float().cpu())  # Invertd takes its meta from data["image"]
    t_inf = time.perf_counter() - t0

    # back to the reference grid, label map
    t0 = time.perf_counter()
    prob_key = "prob" if probabilities else None
    post = inference_postprocessing(pre, label_format=label_format, probabilities_key=prob_key)
    data = post(data)
    label_map = np.ascontiguousarray(data["pred"][0].cpu().numpy().astype(np.uint8))
    ref_img = case.reference_image
    if label_map.shape != tuple(ref_img.GetSize()):
        raise RuntimeError(
            f"internal error: label map shape {label_map.shape} != reference {ref_img.GetSize()}"
        )
    values = LABEL_VALUES[label_format]
    vol = region_volumes(label_map, ref_img.GetSpacing(), et_value=values["ET"])
    t_post = time.perf_counter() - t0

    rel = reliability(names, info.path, trained=info.trained)
    untrained = [rel["statement"]] if not info.trained else []
    new_warnings = modality_warnings(names, rel)
    if vol["voxel_counts"]["WT"] == 0:
        new_warnings.append("No tumour was segmented (all voxels background).")
    for w in untrained + new_warnings:
        logger.warning(w)
    warnings = untrained + list(case.warnings) + new_warnings

    report: dict[str, Any] = {
        "case": case_id,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "modalities_used": names,
        "modalities_missing": [m for m in BRATS_MODALITIES if m not in names],
        "subset": rel["subset"],
        "reference_modality": case.reference,
        "inputs": case.info,
        "reference_grid": {
            "shape": list(ref_img.GetSize()),
            "spacing_mm": [float(s) for s in ref_img.GetSpacing()],
            "affine_ras": ras_affine(ref_img).round(6).tolist(),
        },
        "model": info.as_dict(),
        "inference": {
            "device": str(dev),
            "network_orientation": info.axcodes,
            "network_spacing_mm": [float(p) for p in info.pixdim],
            "normalisation": "per modality: clip to the 0.5/99.5 percentiles of the brain (nonzero) voxels, "
            "z-score over the brain, background 0 (gmd_monai.data.brats.RobustZScoreNormalized)",
            "sliding_window": {
                "roi_size": list(roi),
                "overlap": float(overlap),
                "mode": "gaussian",
                "sw_batch_size": int(sw_batch_size),
            },
            "streams_run": names,
            "threshold": 0.5,
        },
        "labels": {"convention": label_format, "values": label_value_names(label_format)},
        "volumes_ml": vol["volumes_ml"],
        "voxel_counts": vol["voxel_counts"],
        "voxel_volume_ml": vol["voxel_volume_ml"],
        "volume_definitions": {
            "ET": f"label {values['ET']}",
            "TC": f"labels {values['NCR']} and {values['ET']}",
            "WT": "all nonzero labels",
        },
        "reliability": rel,
        "warnings": warnings,
        "disclaimer": DISCLAIMER,
        "software": {
            "gmd_monai": gmd_monai.__version__,
            "torch": torch.__version__,
            "monai": __import__("monai").__version__,
            "simpleitk": sitk.Version_VersionString(),
            "python": platform.python_version(),
        },
    }

    writer = AtomicOutputs()
    written: dict[str, str | None] = {k: None for k in ("segmentation", "report", "montage", "probabilities")}
    try:
        t0 = time.perf_counter()
        paths["segmentation"].parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temp_files(paths.values())
        ref_source = case.reference_source
        seg_tmp = writer.tmp(paths["segmentation"])
        write_nifti_like(seg_tmp, label_map, ref_source, ref_img)
        # the affine as written (NIfTI header rules), not as SimpleITK read it: they differ for zero or
        # negative pixdim
        report["reference_grid"]["affine_ras"] = np.asarray(nib.load(seg_tmp).affine).round(6).tolist()
        written["segmentation"] = str(paths["segmentation"])
        if probabilities:
            prob = data["prob"]
            prob = prob.as_tensor() if hasattr(prob, "as_tensor") else torch.as_tensor(prob)
            prob_arr = np.ascontiguousarray(np.moveaxis(prob.cpu().numpy().astype(np.float32), 0, -1))
            write_nifti_like(writer.tmp(paths["probabilities"]), prob_arr, ref_source, ref_img)
            written["probabilities"] = str(paths["probabilities"])
        if montage:
            images = {m: sitk.GetArrayViewFromImage(case.images[m]).transpose(2, 1, 0) for m in names}
            flag = "" if info.trained else "  [UNTRAINED MODEL: meaningless]"
            title = f"{case_id}: {rel['subset']}\nmodel {info.version}{flag}"
            affine = ras_affine(ref_img)
            write_montage(writer.tmp(paths["montage"]), images, label_map, affine, values, title=title)
            written["montage"] = str(paths["montage"])
        written["report"] = str(paths["report"])
        t_write = time.perf_counter() - t0
        report["outputs"] = written
        report["timings_seconds"] = {
            "read_and_preprocess": round(t_pre, 3),
            "inference": round(t_inf, 3),
            "postprocess": round(t_post, 3),
            "write": round(t_write, 3),
        }
        report["elapsed_seconds"] = round(time.perf_counter() - t_start, 3)
        writer.tmp(paths["report"]).write_text(to_json(report))
        writer.commit()
    except BaseException:
        writer.discard()
        raise
    logger.info("wrote %s (%.1f s)", paths["segmentation"], report["elapsed_seconds"])
    return SegmentationResult(case=case_id, outputs=written, report=report, labels=label_map)


# ----------------------------------------------------------------------------------------------
# batch
# ----------------------------------------------------------------------------------------------

_SUMMARY_FIELDS = (
    "case",
    "status",
    "modalities",
    "ET_ml",
    "TC_ml",
    "WT_ml",
    "seconds",
    "segmentation",
    "message",
)


def segment_batch(
    input_dir: str | os.PathLike,
    output_dir: str | os.PathLike,
    model: str | os.PathLike | None = None,
    device: str | torch.device = "auto",
    labels: str = "brats",
    probabilities: bool = False,
    montage: bool = True,
    register: bool = False,
    allow_untrained: bool = False,
    roi_size: int | Sequence[int] | None = None,
    overlap: float = 0.5,
    sw_batch_size: int = 1,
    progress: bool = True,
    overwrite: bool = False,
    allow_label_like: bool = False,
    max_memory_gb: float = DEFAULT_MAX_MEMORY_GB,
) -> list[dict[str, Any]]:
    """Segment every case folder under ``input_dir`` (any subset of modalities per case).

    A case folder is a sub-folder holding BraTS-named modality files or DICOM series folders (see
    :func:`gmd_monai.inference.io.find_case_files`). Outputs go to ``output_dir/<case>_gmdseg.nii.gz``
    (+ report, montage, probabilities); ``output_dir/batch_summary.csv`` lists every case with its
    status, volumes and error message. A failing case (unreadable, truncated, existing outputs without
    ``overwrite``, ...) is listed as failed with the reason and does not stop the others. The model is
    loaded once. ``overwrite``, ``allow_label_like`` and ``max_memory_gb`` are :func:`segment`'s.

    Returns:
        One summary row per case.

    Raises:
        InputError: ``input_dir`` holds no case folder, or ``batch_summary.csv`` exists (without
            ``overwrite``) or cannot be written.
        ModelError: no (usable) weights.
    """
    folders = find_case_folders(input_dir)
    if not folders:
        raise InputError(
            f"{input_dir}: no case folder found (sub-folders holding files named like <case>_t1ce.nii.gz or "
            "<case>-t1c.nii.gz, or DICOM folders named t1, t1ce, t2, flair)"
        )
    out_dir = Path(output_dir).expanduser().resolve()
    summary = out_dir / "batch_summary.csv"
    check_outputs({"summary": summary}, overwrite=overwrite)
    _label_format(labels)
    dev = resolve_device(device)
    net, info = load_network(model, allow_untrained=allow_untrained, device=dev)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    from tqdm.auto import tqdm

    bar = tqdm(folders, desc="segmenting", unit="case", disable=not progress)
    for folder in bar:
        bar.set_postfix_str(folder.name)
        t0 = time.perf_counter()
        try:
            res = segment(
                case_dir=folder,
                output=out_dir / f"{folder.name}{SEGMENTATION_SUFFIX}.nii.gz",
                device=dev,
                labels=labels,
                probabilities=probabilities,
                montage=montage,
                register=register,
                roi_size=roi_size,
                overlap=overlap,
                sw_batch_size=sw_batch_size,
                network=(net, info),
                overwrite=overwrite,
                allow_label_like=allow_label_like,
                max_memory_gb=max_memory_gb,
            )
            v = res.report["volumes_ml"]
            rows.append(
                {
                    "case": folder.name,
                    "status": "ok",
                    "modalities": res.report["subset"],
                    "ET_ml": v["ET"],
                    "TC_ml": v["TC"],
                    "WT_ml": v["WT"],
                    "seconds": round(time.perf_counter() - t0, 2),
                    "segmentation": res.outputs["segmentation"],
                    "message": f"{len(res.report['warnings'])} warning(s)",
                }
            )
        except (InferenceError, ValueError, OSError) as e:
            msg = " ".join(str(e).split())
            logger.error("%s: %s", folder.name, msg)
            seconds = round(time.perf_counter() - t0, 2)
            rows.append({"case": folder.name, "status": "failed", "seconds": seconds, "message": msg})
    buf = _io.StringIO()
    w = csv.DictWriter(buf, fieldnames=_SUMMARY_FIELDS)
    w.writeheader()
    for r in rows:
        w.writerow({k: r.get(k, "") for k in _SUMMARY_FIELDS})
    writer = AtomicOutputs()
    try:
        remove_stale_temp_files([summary])
        writer.tmp(summary).write_text(buf.getvalue())
        writer.commit()
    except BaseException:
        writer.discard()
        raise
    return rows


# ----------------------------------------------------------------------------------------------
# command line
# ----------------------------------------------------------------------------------------------


def _setup_logging(quiet: bool) -> None:
    root = logging.getLogger()
    if not root.handlers:
        level = logging.WARNING if quiet else logging.INFO
        logging.basicConfig(level=level, format="%(levelname)s: %(message)s")
    logging.getLogger("gmd_monai").setLevel(logging.WARNING if quiet else logging.INFO)


def _fail(command: str, e: BaseException) -> None:
    msg = " ".join(str(e).split()) or type(e).__name__
    print(f"gmd-monai {command}: error: {msg}", file=sys.stderr)
    raise SystemExit(2)


class Terminated(BaseException):
    """SIGTERM (or SIGHUP) received: unwinds like Ctrl-C, so that temporary files are removed."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _raise_terminated(signum: int, frame: Any) -> None:
    raise Terminated(signum)


def _run_interruptible(command: str, fn: Any) -> Any:
    """Run ``fn()``; on SIGINT or SIGTERM print one line and exit 128 + the signal number (130, 143).

    Every output is written through a temporary file that is deleted while the exception unwinds.
    """
    old = None
    try:
        old = signal.signal(signal.SIGTERM, _raise_terminated)
    except ValueError:  # not the main thread: keep the default handling
        pass
    try:
        return fn()
    except KeyboardInterrupt:
        print(f"gmd-monai {command}: interrupted (SIGINT); no partial output was left", file=sys.stderr)
        raise SystemExit(128 + signal.SIGINT) from None
    except Terminated as e:
        print(f"gmd-monai {command}: terminated ({e}); no partial output was left", file=sys.stderr)
        raise SystemExit(128 + e.signum) from None
    finally:
        if old is not None:
            signal.signal(signal.SIGTERM, old)


def segment_cli(
    *,
    t1: str | None = None,
    t1ce: str | None = None,
    t2: str | None = None,
    flair: str | None = None,
    case_dir: str | None = None,
    image: str | None = None,
    channels: str | Sequence[str] | None = None,
    output: str | None = None,
    model: str | None = None,
    device: str = "auto",
    labels: str = "brats",
    probabilities: bool = False,
    montage: bool = True,
    register: bool = False,
    allow_untrained: bool = False,
    roi_size: int | Sequence[int] | None = None,
    overlap: float = 0.5,
    sw_batch_size: int = 1,
    overwrite: bool = False,
    allow_label_like: bool = False,
    max_memory_gb: float = DEFAULT_MAX_MEMORY_GB,
    quiet: bool = False,
    debug: bool = False,
    **unknown: Any,
) -> None:
    """Segment a brain tumour from any subset of T1, T1ce, T2 and FLAIR (NIfTI files or DICOM folders).

    Examples:
        gmd-monai segment --t1ce t1ce.nii.gz --flair flair_dicom/ --output out/patient_seg.nii.gz
        gmd-monai segment --case_dir BraTS2021_00000/ --output out/
        gmd-monai segment --image patient_4d.nii.gz --channels t1ce,flair --output out/

    Writes the label map ``<case>_gmdseg.nii.gz`` (BraTS labels, on the reference image's grid),
    ``<case>_report.json`` (modalities, model checksum, volumes in mL, what the evaluation measured for
    this modality subset, warnings) and ``<case>_montage.png``. Existing files are never replaced
    without --overwrite. Errors: one line on stderr, exit code 2, nothing written (checked before
    computing). Ctrl-C / SIGTERM: one line, exit code 130 / 143, no partial file. See docs/safety.md.

    Args:
        t1: T1 NIfTI file or DICOM series folder.
        t1ce: contrast-enhanced T1 (T1c, T1Gd).
        t2: T2.
        flair: FLAIR (T2f).
        case_dir: a folder with BraTS-named files (<case>_t1ce.nii.gz ... or <case>-t1c.nii.gz ...).
        image: a 4-D NIfTI (give --channels).
        channels: its volumes' modalities in order, e.g. t1,t1ce,t2,flair.
        output: label map path (.nii.gz) or output folder (default: ./<case>_gmdseg.nii.gz).
        model: trained weights (default: bundle/models/model.pt).
        device: auto, cpu, cuda or cuda:N.
        labels: brats ({0,1,2,4}, default) or brats2021 ({0,1,2,3}).
        probabilities: also write WT/TC/ET probability maps.
        montage: write the PNG montage (--nomontage to skip).
        register: rigid co-registration of every modality to the reference (mutual information).
        allow_untrained: run without trained weights (random output; smoke tests only).
        roi_size: sliding-window size (multiple of 16); default: the model's training crop.
        overlap: sliding-window overlap.
        sw_batch_size: windows per forward pass.
        overwrite: replace existing output files (never an input).
        allow_label_like: accept an input that looks like a label map (a handful of small integers).
        max_memory_gb: stop before computing when the estimated memory exceeds this many GiB (default 8).
        quiet: only warnings and errors on stderr.
        debug: show the full traceback on error.
    """
    if unknown.keys() & {"help", "h"}:  # **unknown would swallow fire's --help
        print(inspect.cleandoc(segment_cli.__doc__ or ""))
        return
    _setup_logging(quiet)
    try:
        res = _run_interruptible(
            "segment",
            lambda: segment(
                t1=t1,
                t1ce=t1ce,
                t2=t2,
                flair=flair,
                case_dir=case_dir,
                image=image,
                channels=channels,
                output=output,
                model=model,
                device=device,
                labels=labels,
                probabilities=probabilities,
                montage=montage,
                register=register,
                allow_untrained=allow_untrained,
                roi_size=roi_size,
                overlap=overlap,
                sw_batch_size=sw_batch_size,
                progress=not quiet,
                extra_inputs=unknown,
                overwrite=overwrite,
                allow_label_like=allow_label_like,
                max_memory_gb=max_memory_gb,
            ),
        )
    except (InferenceError, ValueError, OSError) as e:
        if debug:
            raise
        _fail("segment", e)
        return
    r = res.report
    v = r["volumes_ml"]
    lines = [f"{k + ':':<14}{p}" for k, p in res.outputs.items() if p]
    lines.append(f"{'modalities:':<14}{r['subset']} (reference grid: {r['reference_modality']})")
    lines.append(f"{'volumes (mL):':<14}ET {v['ET']:.2f}  TC {v['TC']:.2f}  WT {v['WT']:.2f}")
    lines.append(f"{'accuracy:':<14}{r['reliability']['statement']}")
    if r["warnings"]:
        lines.append("warnings:")
        lines.extend(f"  - {w}" for w in r["warnings"])
    print("\n".join(lines))


def segment_batch_cli(
    input_dir: str,
    output_dir: str,
    *,
    model: str | None = None,
    device: str = "auto",
    labels: str = "brats",
    probabilities: bool = False,
    montage: bool = True,
    register: bool = False,
    allow_untrained: bool = False,
    roi_size: int | Sequence[int] | None = None,
    overlap: float = 0.5,
    sw_batch_size: int = 1,
    overwrite: bool = False,
    allow_label_like: bool = False,
    max_memory_gb: float = DEFAULT_MAX_MEMORY_GB,
    quiet: bool = False,
    debug: bool = False,
) -> None:
    """Segment every case folder under INPUT_DIR into OUTPUT_DIR, with a progress bar.

    Each case keeps the modalities it has. OUTPUT_DIR gets <case>_gmdseg.nii.gz, <case>_report.json,
    <case>_montage.png per case and batch_summary.csv. Exit code 2 if any case failed (each failed case
    is listed with its reason); 130 / 143 on Ctrl-C / SIGTERM.

    Args:
        input_dir: folder of case folders.
        output_dir: where the results go.
        model: trained weights (default: bundle/models/model.pt).
        device: auto, cpu, cuda or cuda:N.
        labels: brats ({0,1,2,4}) or brats2021 ({0,1,2,3}).
        probabilities: also write probability maps.
        montage: write PNG montages (--nomontage to skip).
        register: rigid co-registration to the reference modality.
        allow_untrained: run without trained weights (smoke tests only).
        roi_size: sliding-window size; default: the model's training crop.
        overlap: sliding-window overlap.
        sw_batch_size: windows per forward pass.
        overwrite: replace existing output files.
        allow_label_like: accept inputs that look like label maps.
        max_memory_gb: per-case cap on the estimated memory (GiB).
        quiet: no progress bar; only warnings and errors.
        debug: full traceback on error.
    """
    _setup_logging(quiet)
    try:
        rows = _run_interruptible(
            "segment_batch",
            lambda: segment_batch(
                input_dir,
                output_dir,
                model=model,
                device=device,
                labels=labels,
                probabilities=probabilities,
                montage=montage,
                register=register,
                allow_untrained=allow_untrained,
                roi_size=roi_size,
                overlap=overlap,
                sw_batch_size=sw_batch_size,
                progress=not quiet,
                overwrite=overwrite,
                allow_label_like=allow_label_like,
                max_memory_gb=max_memory_gb,
            ),
        )
    except (InferenceError, ValueError, OSError) as e:
        if debug:
            raise
        _fail("segment_batch", e)
        return
    failed = [r for r in rows if r["status"] != "ok"]
    summary = Path(output_dir) / "batch_summary.csv"
    print(f"{len(rows) - len(failed)} of {len(rows)} case(s) segmented; summary: {summary}")
    for r in failed:
        print(f"  failed: {r['case']}: {r['message']}", file=sys.stderr)
    if failed:
        raise SystemExit(2)
