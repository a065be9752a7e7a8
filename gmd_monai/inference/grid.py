"""Voxel grids: comparison, resampling onto a reference grid, rigid co-registration (SimpleITK).

All geometry is SimpleITK's (LPS physical space, ``origin`` = centre of the first voxel). MONAI and
nibabel use RAS affines: :func:`ras_affine` converts.

Example:
    >>> ref = sitk.Image([240, 240, 155], sitk.sitkFloat32)           # T1ce, 1 mm
    >>> t2 = sitk.Image([120, 120, 78], sitk.sitkFloat32)             # T2, 2 mm
    >>> t2.SetSpacing((2.0, 2.0, 2.0))
    >>> grid_differences(t2, ref)
    ['shape (120, 120, 78) vs (240, 240, 155)', 'spacing (2, 2, 2) vs (1, 1, 1) mm']
    >>> resample_onto(t2, ref).GetSize()              # linear interpolation, 0 outside
    (240, 240, 155)
    >>> tx = register_rigid(fixed=ref, moving=t2)     # doctest: +SKIP
    >>> t2_registered = resample_onto(t2, ref, transform=tx)  # doctest: +SKIP

``register_rigid`` maximises mutual information over a 3-D Euler transform (needs real images).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

__all__ = [
    "RegistrationResult",
    "grid_differences",
    "ras_affine",
    "register_rigid",
    "resample_onto",
    "same_grid",
    "spacing_far_from",
]

logger = logging.getLogger(__name__)

#: Tolerances of :func:`same_grid` (mm for spacing and origin, absolute for direction cosines).
SPACING_ATOL = 1e-4
ORIGIN_ATOL = 1e-3
DIRECTION_ATOL = 1e-4

_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])


def _fmt(values: Sequence[float]) -> str:
    return "(" + ", ".join(f"{float(v):.4g}" for v in values) + ")"


def ras_affine(image: sitk.Image) -> np.ndarray:
    """The 4x4 RAS voxel-to-world affine (nibabel/MONAI convention) of a 3-D SimpleITK image.

    Voxel index order is ITK's ``(x, y, z)`` index, i.e. the order of a NIfTI file's voxels.
    """
    direction = np.asarray(image.GetDirection(), dtype=np.float64).reshape(3, 3)
    spacing = np.asarray(image.GetSpacing(), dtype=np.float64)
    origin = np.asarray(image.GetOrigin(), dtype=np.float64)
    affine = np.eye(4)
    affine[:3, :3] = _LPS_TO_RAS @ direction @ np.diag(spacing)
    affine[:3, 3] = _LPS_TO_RAS @ origin
    return affine


def grid_differences(image: sitk.Image, reference: sitk.Image) -> list[str]:
    """How the voxel grid of ``image`` differs from ``reference`` (empty list: same grid).

    Compared: shape, spacing, origin and direction, with the module tolerances.
    """
    out = []
    if image.GetSize() != reference.GetSize():
        out.append(f"shape {tuple(image.GetSize())} vs {tuple(reference.GetSize())}")
    if not np.allclose(image.GetSpacing(), reference.GetSpacing(), rtol=0, atol=SPACING_ATOL):
        out.append(f"spacing {_fmt(image.GetSpacing())} vs {_fmt(reference.GetSpacing())} mm")
    if not np.allclose(image.GetOrigin(), reference.GetOrigin(), rtol=0, atol=ORIGIN_ATOL):
        out.append(f"origin {_fmt(image.GetOrigin())} vs {_fmt(reference.GetOrigin())} mm")
    if not np.allclose(image.GetDirection(), reference.GetDirection(), rtol=0, atol=DIRECTION_ATOL):
        out.append(f"direction {_fmt(image.GetDirection())} vs {_fmt(reference.GetDirection())}")
    return out


def same_grid(image: sitk.Image, reference: sitk.Image) -> bool:
    """True when shape, spacing, origin and direction agree (see :func:`grid_differences`)."""
    return not grid_differences(image, reference)


def spacing_far_from(spacing: Sequence[float], target: float = 1.0, rel_tol: float = 0.25) -> bool:
    """True when any voxel size differs from ``target`` mm by more than ``rel_tol`` (relative)."""
    s = np.asarray(spacing, dtype=np.float64)
    return bool(np.any(np.abs(s - target) > rel_tol * target))


def resample_onto(
    image: sitk.Image,
    reference: sitk.Image,
    transform: sitk.Transform | None = None,
    interpolator: int = sitk.sitkLinear,
    default_value: float = 0.0,
) -> sitk.Image:
    """Resample ``image`` onto the voxel grid of ``reference`` (float32; ``default_value`` outside).

    Args:
        image: the moving image.
        reference: the image whose grid (shape, spacing, origin, direction) the output takes.
        transform: maps reference physical points to ``image`` physical points (e.g. from
            :func:`register_rigid`); identity when ``None`` (scanner coordinates trusted).
        interpolator: a SimpleITK interpolator (linear by default).
        default_value: value of the voxels that fall outside ``image``.
    """
    tx = transform if transform is not None else sitk.Transform(3, sitk.sitkIdentity)
    return sitk.Resample(image, reference, tx, interpolator, float(default_value), sitk.sitkFloat32)


@dataclass
class RegistrationResult:
    """A rigid transform (reference -> moving physical points) and how it was found.

    Attributes:
        transform: the SimpleITK Euler 3-D transform, usable with :func:`resample_onto`.
        rotation_deg: rotation angles about x, y, z in degrees.
        translation_mm: translation in mm (LPS).
        metric: final Mattes mutual information (negative; lower is better).
        iterations: optimizer iterations of the last level.
        stop_condition: the optimizer's stop message.
    """

    transform: sitk.Transform
    rotation_deg: tuple[float, float, float]
    translation_mm: tuple[float, float, float]
    metric: float
    iterations: int
    stop_condition: str

    def as_dict(self) -> dict:
        return {
            "method": "rigid (Euler 3-D), Mattes mutual information, 3 levels",
            "rotation_deg": [round(v, 3) for v in self.rotation_deg],
            "translation_mm": [round(v, 3) for v in self.translation_mm],
            "metric": round(self.metric, 5),
            "iterations": self.iterations,
        }


def register_rigid(
    fixed: sitk.Image,
    moving: sitk.Image,
    iterations: int = 200,
    samples: int = 50_000,
    histogram_bins: int = 32,
    seed: int = 0,
) -> RegistrationResult:
    """Rigid co-registration of ``moving`` to ``fixed`` by Mattes mutual information (SimpleITK).

    Starts from the identity (scanner coordinates are usually close) rotating about the centre of
    ``fixed``; three resolution levels (shrink 4, 2, 1; smoothing 2, 1, 0 mm); regular-step gradient
    descent with scales from physical shift; about ``samples`` random voxels per level with a fixed
    seed (reproducible; a whole 240x240x155 brain registers in seconds).

    Args:
        fixed: the reference image (its grid is the output grid).
        moving: the image to align.
        iterations: maximum optimizer iterations per level.
        samples: number of fixed-image voxels sampled for the metric at each level.
        histogram_bins: Mattes histogram bins.
        seed: metric sampling seed.

    Returns:
        A :class:`RegistrationResult` whose ``transform`` maps fixed to moving physical points.
    """
    fixed_f = sitk.Cast(fixed, sitk.sitkFloat32)
    moving_f = sitk.Cast(moving, sitk.sitkFloat32)
    size = np.asarray(fixed_f.GetSize(), dtype=np.float64)
    centre = fixed_f.TransformContinuousIndexToPhysicalPoint(((size - 1) / 2).tolist())
    initial = sitk.Euler3DTransform()
    initial.SetCenter(centre)

    reg = sitk.ImageRegistrationMethod()
    reg.SetMetricAsMattesMutualInformation(numberOfHistogramBins=int(histogram_bins))
    reg.SetMetricSamplingStrategy(reg.RANDOM)
    shrink = (4, 2, 1)
    n_voxels = float(np.prod(size))
    percentages = [float(min(1.0, samples / max(1.0, n_voxels / f**3))) for f in shrink]
    reg.SetMetricSamplingPercentagePerLevel(percentages, int(seed))
    reg.SetInterpolator(sitk.sitkLinear)
    reg.SetOptimizerAsRegularStepGradientDescent(
        learningRate=1.0,
        minStep=1e-4,
        numberOfIterations=int(iterations),
        relaxationFactor=0.5,
        gradientMagnitudeTolerance=1e-8,
    )
    reg.SetOptimizerScalesFromPhysicalShift()
    reg.SetShrinkFactorsPerLevel(list(shrink))
    reg.SetSmoothingSigmasPerLevel([2.0, 1.0, 0.0])
    reg.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    reg.SetInitialTransform(initial, inPlace=False)
    result = reg.Execute(fixed_f, moving_f)
    # Execute returns a composite holding the optimised Euler transform
    if isinstance(result, sitk.CompositeTransform) or result.GetName() == "CompositeTransform":
        comp = sitk.CompositeTransform(result)
        euler = sitk.Euler3DTransform(comp.GetNthTransform(comp.GetNumberOfTransforms() - 1))
    else:
        euler = sitk.Euler3DTransform(result)
    params = euler.GetParameters()
    return RegistrationResult(
        transform=euler,
        rotation_deg=tuple(float(np.degrees(a)) for a in params[:3]),  # type: ignore[arg-type]
        translation_mm=tuple(float(t) for t in params[3:6]),  # type: ignore[arg-type]
        metric=float(reg.GetMetricValue()),
        iterations=int(reg.GetOptimizerIteration()),
        stop_condition=reg.GetOptimizerStopConditionDescription(),
    )
