"""What a segmentation can be trusted for: volumes, measured accuracy, warnings, JSON report, PNG montage.

Accuracy statements are never guessed: they are read from the evaluation's per-subset table shipped
next to the weights (the first of ``subset_dice.csv``, ``subset_dice.json``, ``subset_summary.csv``
in the weights' folder); without one, the report says that no measurement is available. The 15-subset
evaluation (``bundle/configs/evaluate.yaml``) writes ``subset_summary.csv``: ship it next to
``model.pt`` (as is, or renamed ``subset_dice.csv``).

The table is a CSV with one row per modality subset, e.g. the evaluation's::

    subset_index,subset,t1,t1ce,t2,flair,dice_wt,dice_tc,dice_et,hd95_wt,hd95_tc,hd95_et,num_cases
    0,t1+t1ce+t2+flair,1,1,1,1,0.874,0.781,0.702,5.1,7.9,6.2,57
    ...

or simply ``subset,WT,TC,ET,n_cases``. ``subset`` names the modalities joined by ``+`` (any order;
aliases accepted); Dice columns may be called ``WT`` / ``dice_wt`` / ``WT_dice`` (any case), in
[0, 1] or in percent; optional ``hd95_wt``... (mm) and ``n_cases`` / ``num_cases`` columns; several
rows for one subset (e.g. per case, or one per split) are averaged; rows whose subset is not a
modality list (``mean``) are skipped. The JSON form is ``{"subsets": {name: {"WT": ...}}}``,
``{name: {...}}`` or a list of row objects.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from gmd_monai.subsets import BRATS_MODALITIES, SubsetSpace

__all__ = [
    "DISCLAIMER",
    "SUBSET_TABLE_NAMES",
    "find_subset_table",
    "modality_warnings",
    "read_subset_table",
    "region_volumes",
    "reliability",
    "to_json",
    "write_montage",
]

logger = logging.getLogger(__name__)

#: File names of the evaluation's per-subset table, looked up next to the weights.
SUBSET_TABLE_NAMES: tuple[str, ...] = ("subset_dice.csv", "subset_dice.json", "subset_summary.csv")
REGIONS: tuple[str, ...] = ("WT", "TC", "ET")
DISCLAIMER = (
    "Research software, not a certified medical device: every segmentation must be reviewed by a qualified "
    "reader before any clinical use. The model was trained on BraTS-style images (skull-stripped, "
    "co-registered, "
    "1 mm isotropic, adult glioma)."
)
_SPACE = SubsetSpace(BRATS_MODALITIES)
_PRETTY = {"t1": "T1", "t1ce": "T1ce", "t2": "T2", "flair": "FLAIR"}


def _subset_key(names: Sequence[str] | str) -> str:
    """Canonical subset name (``"flair+t1c"`` -> ``"t1ce+flair"``)."""
    from gmd_monai.data.naming import parse_modality_list

    mods = parse_modality_list(names)
    return _SPACE.name(_SPACE.index(mods))


# ----------------------------------------------------------------------------------------------
# volumes
# ----------------------------------------------------------------------------------------------


def region_volumes(labels: np.ndarray, spacing_mm: Sequence[float], et_value: int = 4) -> dict[str, Any]:
    """Voxel counts and volumes (mL) of ET, TC and WT in a BraTS label map.

    ET = ``et_value``; TC = {1, ET}; WT = every nonzero label. Volume = count x voxel volume.

    Args:
        labels: the label map on the reference grid.
        spacing_mm: voxel size in mm.
        et_value: 4 (BraTS 2018-2020 labels) or 3 (``brats2021``).
    """
    voxel_ml = float(np.prod(np.asarray(spacing_mm, dtype=np.float64))) / 1000.0
    et = int(np.count_nonzero(labels == et_value))
    tc = et + int(np.count_nonzero(labels == 1))
    wt = int(np.count_nonzero(labels))
    counts = {"ET": et, "TC": tc, "WT": wt}
    return {
        "voxel_volume_ml": voxel_ml,
        "voxel_counts": counts,
        "volumes_ml": {k: round(v * voxel_ml, 4) for k, v in counts.items()},
    }


# ----------------------------------------------------------------------------------------------
# the evaluation's per-subset table
# ----------------------------------------------------------------------------------------------


def find_subset_table(model_path: str | os.PathLike | None) -> Path | None:
    """The per-subset evaluation table next to the weights (first of :data:`SUBSET_TABLE_NAMES`)."""
    if model_path is None:
        return None
    folder = Path(model_path).parent
    for name in SUBSET_TABLE_NAMES:
        p = folder / name
        if p.is_file():
            return p
    return None


def _norm(col: str) -> str:
    return col.strip().lower().replace("-", "_").replace(" ", "_")


def _region_column(columns: Sequence[str], region: str) -> str | None:
    r = region.lower()
    wanted = {r, f"dice_{r}", f"{r}_dice", f"dice{r}", f"{r}dice", f"mean_dice_{r}", f"{r}_mean"}
    return next((c for c in columns if _norm(c) in wanted), None)


def _as_fraction(v: Any) -> float | None:
    try:
        x = float(v)
    except (TypeError, ValueError):
        return None
    if not math.isfinite(x):
        return None
    return x / 100.0 if x > 1.5 else x


def _rows_to_table(rows: Sequence[Mapping[str, Any]], source: Path) -> dict[str, dict[str, Any]]:
    if not rows:
        return {}
    columns = list(rows[0].keys())
    names = ("subset", "subsets", "modalities", "available", "name")
    subset_col = next((c for c in columns if _norm(c) in names), columns[0])
    region_cols = {r: _region_column(columns, r) for r in REGIONS}
    if not any(region_cols.values()):
        logger.warning("%s: no WT/TC/ET column among %s; table ignored", source, columns)
        return {}
    hd_cols = {r: next((c for c in columns if _norm(c) in (f"hd95_{r.lower()}", f"{r.lower()}_hd95")), None)
               for r in REGIONS}  # fmt: skip
    n_col = next((c for c in columns if _norm(c) in ("n_cases", "cases", "n", "num_cases")), None)
    acc: dict[str, dict[str, list[float]]] = {}
    for row in rows:
        try:
            key = _subset_key(str(row.get(subset_col, "")))
        except (ValueError, KeyError):
            continue  # e.g. a "mean" row
        slot = acc.setdefault(key, {r: [] for r in (*REGIONS, *(f"HD95_{r}" for r in REGIONS), "n_cases")})
        for r, c in region_cols.items():
            v = _as_fraction(row.get(c)) if c else None
            if v is not None:
                slot[r].append(v)
        for r, c in hd_cols.items():
            try:
                h = float(row.get(c)) if c else math.nan
            except (TypeError, ValueError):
                h = math.nan
            if math.isfinite(h):
                slot[f"HD95_{r}"].append(h)
        if n_col and row.get(n_col) not in (None, ""):
            try:
                slot["n_cases"].append(float(row[n_col]))
            except (TypeError, ValueError):
                pass
    table = {}
    for key, slot in acc.items():
        entry: dict[str, Any] = {
            r: (float(np.mean(slot[r])) if slot[r] else None)
            for r in (*REGIONS, *(f"HD95_{r}" for r in REGIONS))
        }
        entry["n_cases"] = int(max(slot["n_cases"])) if slot["n_cases"] else None
        table[key] = entry
    return table


def read_subset_table(path: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """``{canonical subset name: {"WT", "TC", "ET" (Dice in [0, 1] or None), "n_cases"}}`` from the
    evaluation's per-subset table (CSV or JSON; see the module docstring). Unreadable files give ``{}``
    with a logged warning.
    """
    p = Path(path)
    try:
        if p.suffix.lower() == ".json":
            content = json.loads(p.read_text())
            if isinstance(content, Mapping) and isinstance(content.get("subsets"), (Mapping, list)):
                content = content["subsets"]
            if isinstance(content, Mapping):
                rows = [{"subset": k, **v} for k, v in content.items() if isinstance(v, Mapping)]
            elif isinstance(content, list):
                rows = [r for r in content if isinstance(r, Mapping)]
            else:
                rows = []
            # rows may have different keys: use the union of the first row's keys
            return _rows_to_table(rows, p)
        with open(p, newline="") as f:
            rows = list(csv.DictReader(f))
        return _rows_to_table(rows, p)
    except (OSError, ValueError) as e:
        logger.warning("%s: unreadable evaluation table (%s); ignored", p, e)
        return {}


def _fmt_dice(entry: Mapping[str, Any] | None) -> str:
    if not entry:
        return "n/a"
    return ", ".join(f"{r} {entry[r]:.2f}" if entry.get(r) is not None else f"{r} n/a" for r in REGIONS)


def reliability(
    modalities: Sequence[str], model_path: str | os.PathLike | None, trained: bool = True
) -> dict[str, Any]:
    """What the evaluation measured for this modality subset, as numbers and one statement.

    Args:
        modalities: the modalities used.
        model_path: the weights file (the table is looked up next to it); ``None`` when untrained.
        trained: False for a random network.

    Returns:
        ``{"subset", "source", "measured_dice" (or None), "full_set_dice", "n_cases", "statement"}``.
    """
    subset = _subset_key(list(modalities))
    full = _SPACE.names[0]
    out: dict[str, Any] = {
        "subset": subset,
        "source": None,
        "measured_dice": None,
        "full_set_dice": None,
        "n_cases": None,
        "statement": "",
    }
    if not trained:
        out["statement"] = (
            "UNTRAINED model (random weights, --allow_untrained): this segmentation is meaningless; smoke "
            "tests only."
        )
        return out
    table_path = find_subset_table(model_path)
    if table_path is None:
        folder = Path(model_path).parent if model_path is not None else None
        out["statement"] = (
            f"No measurement is available for this modality subset ({subset}): no evaluation results "
            f"({' or '.join(SUBSET_TABLE_NAMES)}) next to the weights in {folder}. The accuracy of this "
            "segmentation is unknown."
        )
        return out
    table = read_subset_table(table_path)
    out["source"] = str(table_path)
    entry = table.get(subset)
    if entry is None:
        out["statement"] = (
            f"No measurement is available for this modality subset ({subset}): the evaluation results in "
            f"{table_path} hold no row for it. The accuracy of this segmentation is unknown."
        )
        return out
    out["measured_dice"] = {r: entry[r] for r in REGIONS}
    if any(entry.get(f"HD95_{r}") is not None for r in REGIONS):
        out["measured_hd95_mm"] = {r: entry.get(f"HD95_{r}") for r in REGIONS}
    out["n_cases"] = entry.get("n_cases")
    full_entry = table.get(full)
    out["full_set_dice"] = {r: full_entry[r] for r in REGIONS} if full_entry else None
    cases = f", {entry['n_cases']} test cases" if entry.get("n_cases") else ""
    text = (
        f"The evaluation ({table_path.name}{cases}) measured for this modality subset ({subset}) a mean "
        "Dice of "
        f"{_fmt_dice(entry)}"
    )
    if full_entry and subset != full:
        text += f"; with all four modalities: {_fmt_dice(full_entry)}"
    if out.get("measured_hd95_mm"):
        hd = out["measured_hd95_mm"]
        text += "; HD95 " + ", ".join(f"{r} {hd[r]:.1f} mm" for r in REGIONS if hd.get(r) is not None)
    text += ". Dice is the mean overlap with expert segmentations; single cases can be much worse."
    out["statement"] = text
    return out


def modality_warnings(modalities: Sequence[str], rel: Mapping[str, Any] | None = None) -> list[str]:
    """Warnings about what the missing modalities make unreliable, with measured numbers when known."""
    mods = set(modalities)
    table: dict[str, dict[str, Any]] = {}
    if rel and rel.get("source"):
        table = read_subset_table(rel["source"])
    out = []
    if "t1ce" not in mods:
        msg = (
            "No T1ce (contrast-enhanced T1) given: the enhancing-tumour (ET) estimate is unreliable, since "
            "enhancement is only visible after contrast, and the tumour core (TC) is less reliable."
        )
        here = table.get(_subset_key(sorted(mods)))
        with_t1ce = table.get(_subset_key(sorted(mods | {"t1ce"})))
        if here and here.get("ET") is not None:
            msg += f" Measured ET Dice for {_subset_key(sorted(mods))}: {here['ET']:.2f}"
            if with_t1ce and with_t1ce.get("ET") is not None:
                msg += f" (with T1ce added: {with_t1ce['ET']:.2f})"
            msg += "."
        else:
            msg += " No measurement of ET accuracy for this subset is available."
        out.append(msg)
    if "flair" not in mods and "t2" not in mods:
        out.append(
            "Neither FLAIR nor T2 given: the peritumoral oedema, hence the whole-tumour (WT) extent, is "
            "unreliable."
        )
    if len(mods) == 1:
        out.append(
            f"Only one modality ({_PRETTY.get(next(iter(mods)), next(iter(mods)))}) given: the least "
            "accurate setting."
        )
    return out


# ----------------------------------------------------------------------------------------------
# files
# ----------------------------------------------------------------------------------------------


def _jsonable(x: Any) -> Any:
    if isinstance(x, Mapping):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, Path):
        return str(x)
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def to_json(report: Mapping[str, Any]) -> str:
    """The report as indented JSON (numpy values converted, non-finite floats as null)."""
    return json.dumps(_jsonable(report), indent=2) + "\n"


_COLOURS = {"NCR": (1.0, 0.15, 0.15), "ED": (0.1, 0.85, 0.1), "ET": (1.0, 0.95, 0.0)}


def write_montage(
    path: str | os.PathLike,
    images: Mapping[str, np.ndarray],
    labels: np.ndarray,
    affine: np.ndarray,
    label_values: Mapping[str, int],
    title: str = "",
    num_slices: int = 5,
    alpha: float = 0.45,
) -> list[int]:
    """PNG montage: axial slices through the tumour (rows) x available modalities (columns), with the
    segmentation overlaid (red: necrotic/non-enhancing core, green: oedema, yellow: enhancing).

    Slices are shown in radiological convention (patient right on the image left, anterior up). Without
    tumour, slices spread over the brain are shown and the title says so.

    Args:
        path: the PNG to write.
        images: ``{modality: (X, Y, Z) array}`` on the reference grid (voxel order of the reference).
        labels: ``(X, Y, Z)`` label map on the same grid.
        affine: the grid's RAS affine (orientation and voxel size of the display).
        label_values: ``{"NCR": 1, "ED": 2, "ET": 4 or 3}``.
        title: figure title.
        num_slices: number of axial slices.
        alpha: overlay opacity.

    Returns:
        The axial slice indices shown (in the LPS-reoriented volume).
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch
    from nibabel import orientations as nio

    transform = nio.ornt_transform(nio.io_orientation(affine), nio.axcodes2ornt(("L", "P", "S")))
    zooms = np.sqrt((np.asarray(affine)[:3, :3] ** 2).sum(axis=0))
    zooms_lps = np.empty(3)
    for i in range(3):
        zooms_lps[int(transform[i, 0])] = zooms[i]
    lab = nio.apply_orientation(labels, transform)
    imgs = {m: nio.apply_orientation(a, transform) for m, a in images.items()}
    # show the in-plane bounding box of the head (plus a margin), not the empty field of view
    nonzero = np.any(np.stack([a != 0 for a in imgs.values()]), axis=0) | (lab != 0)
    rows_any, cols_any = np.any(nonzero, axis=(1, 2)), np.any(nonzero, axis=(0, 2))
    if rows_any.any() and cols_any.any():
        margin = 8
        (x0, x1), (y0, y1) = (np.flatnonzero(v)[[0, -1]] for v in (rows_any, cols_any))
        box = (slice(max(0, x0 - margin), x1 + margin + 1), slice(max(0, y0 - margin), y1 + margin + 1))
        lab = lab[box]
        imgs = {m: a[box] for m, a in imgs.items()}
    nz = lab.shape[2]
    area = np.count_nonzero(lab, axis=(0, 1))
    tumour = np.flatnonzero(area)
    if tumour.size:
        picks = np.unique(tumour[np.round(np.linspace(0, tumour.size - 1, num_slices + 2)[1:-1]).astype(int)])
        best = int(np.argmax(area))
        if best not in picks:
            picks[np.argmin(np.abs(picks - best))] = best
        slices = sorted({int(z) for z in picks}, reverse=True)
    else:
        brain = np.flatnonzero(np.any(np.stack([a != 0 for a in imgs.values()]), axis=(0, 1, 2)))
        lo, hi = (int(brain[0]), int(brain[-1])) if brain.size else (0, nz - 1)
        slices = sorted({int(z) for z in np.linspace(lo, hi, num_slices + 2)[1:-1].round()}, reverse=True)
        title = (title + "\n" if title else "") + "no tumour segmented"

    mods = list(imgs)
    rows, cols = len(slices), len(mods)
    fig = Figure(figsize=(max(2.7 * cols, 6.0), 2.7 * rows + 1.1), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, cols, squeeze=False)
    windows = {}
    for m, a in imgs.items():
        vals = a[a != 0]
        if vals.size:
            windows[m] = tuple(float(v) for v in np.percentile(vals, [0.5, 99.5]))
        else:
            windows[m] = (float(a.min()), float(a.max()))
    aspect = float(zooms_lps[1] / zooms_lps[0])
    for r, z in enumerate(slices):
        lab_z = lab[:, :, z].T
        overlay = np.zeros(lab_z.shape + (4,), dtype=np.float32)
        for name, value in label_values.items():
            mask = lab_z == value
            overlay[mask, :3] = _COLOURS[name]
            overlay[mask, 3] = alpha
        for c, m in enumerate(mods):
            ax = axes[r][c]
            lo, hi = windows[m]
            show = {"origin": "upper", "aspect": aspect, "interpolation": "nearest"}
            ax.imshow(imgs[m][:, :, z].T, cmap="gray", vmin=lo, vmax=hi if hi > lo else lo + 1, **show)
            ax.imshow(overlay, **show)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(_PRETTY.get(m, m), fontsize=11)
            if c == 0:
                ax.set_ylabel(f"axial {z + 1}/{nz}", fontsize=9)
    handles = [
        Patch(color=_COLOURS[n], label=f"{v}: {text}")
        for n, v, text in (
            ("NCR", label_values["NCR"], "necrotic/non-enh. core"),
            ("ED", label_values["ED"], "oedema"),
            ("ET", label_values["ET"], "enhancing"),
        )
    ]
    fig.legend(handles=handles, loc="lower center", ncol=3, fontsize=8, frameon=False)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.05, 1, 0.95))
    fig.savefig(os.fspath(path), format="png")
    return slices
