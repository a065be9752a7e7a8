"""Where a segmentation is written, and the checks that run BEFORE anything is computed.

- :func:`output_paths`: the label map ``<case>_gmdseg.nii.gz`` (a name no BraTS file has: BraTS ground
  truth is ``<case>_seg.nii.gz``) and its side files.
- :func:`check_outputs`: never replace a file without ``overwrite``, never write over an input or into a
  DICOM input folder, and the folder must be writable (probed with a real file).
- :func:`check_free_space`: the disk holds the outputs (uncompressed size as the bound).
- :class:`AtomicOutputs`: every output goes to a hidden temporary file first, all are renamed at the
  end or all deleted; temporary files of an earlier, killed run are removed (:func:`remove_stale_temp_files`).
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path

from gmd_monai.data.naming import NIFTI_EXTENSIONS, strip_extension
from gmd_monai.inference.errors import InputError
from gmd_monai.inference.sources import ImageSource

__all__ = [
    "SEGMENTATION_SUFFIX",
    "TMP_PREFIX",
    "AtomicOutputs",
    "check_free_space",
    "check_outputs",
    "output_paths",
    "remove_stale_temp_files",
]

#: Suffix of the default label map name, ``<case>_gmdseg.nii.gz``.
SEGMENTATION_SUFFIX = "_gmdseg"
#: Hidden temporary files are ``.gmd-tmp-<pid>-<final name>`` in the output folder.
TMP_PREFIX = ".gmd-tmp-"
_TMP_NAME = re.compile(r"^(?:\.gmd-tmp-|\.tmp-)(?P<pid>\d+)-(?P<name>.+)$")


def output_paths(output: str | os.PathLike | None, case_id: str) -> dict[str, Path]:
    """The files of one segmentation.

    ``output`` ending in ``.nii.gz`` / ``.nii`` is the label map; anything else is a folder that gets
    ``<case>_gmdseg.nii.gz``; ``None`` is the current folder. Side files share the stem without
    ``_gmdseg`` (or ``_seg``): ``<stem>_report.json``, ``<stem>_montage.png``,
    ``<stem>_probabilities.nii.gz``.
    """
    default = f"{case_id}{SEGMENTATION_SUFFIX}.nii.gz"
    if output is None:
        label = Path.cwd() / default
    else:
        p = Path(os.fspath(output)).expanduser()
        is_file = p.name.lower().endswith(NIFTI_EXTENSIONS) and not p.is_dir()
        label = p if is_file else p / default
    label = label.resolve()
    base = strip_extension(label.name)
    for suffix in (SEGMENTATION_SUFFIX, "_seg"):
        if base.endswith(suffix) and len(base) > len(suffix):
            base = base[: -len(suffix)]
            break
    return {
        "segmentation": label,
        "report": label.with_name(f"{base}_report.json"),
        "montage": label.with_name(f"{base}_montage.png"),
        "probabilities": label.with_name(f"{base}_probabilities.nii.gz"),
    }


def _existing_ancestor(folder: Path) -> Path:
    p = folder
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def check_outputs(
    paths: Mapping[str, Path], inputs: Iterable[ImageSource] = (), overwrite: bool = False
) -> None:
    """Raise unless every path in ``paths`` can be written without harm, before anything is computed.

    Args:
        paths: ``{kind: path}`` of the files that will be written.
        inputs: the input sources: no output may be one of them or lie inside a DICOM input folder.
        overwrite: allow replacing existing files (never an input).

    Raises:
        InputError: an output is an input, lies in a DICOM input folder, is an existing folder, exists
            (without ``overwrite``), or its folder cannot be created or written (a parent is a file, a
            read-only folder). The message names the path.
    """
    srcs = list(inputs)
    input_files = {s.path.resolve() for s in srcs if not s.is_dicom}
    dicom_dirs = [s.path.resolve() for s in srcs if s.is_dicom]
    folders: dict[Path, str] = {}
    for kind, p in paths.items():
        p = Path(p).resolve()
        same = p.exists() and any(os.path.samefile(p, f) for f in input_files if f.exists())
        if p in input_files or same:
            raise InputError(f"{p}: the {kind} output would overwrite an input file; choose another --output")
        for d in dicom_dirs:
            if p.is_relative_to(d):
                raise InputError(
                    f"{p}: the {kind} output would be written inside the DICOM input folder {d}; "
                    "choose another --output"
                )
        if p.is_dir():
            raise InputError(f"{p}: the {kind} output path is an existing folder")
        if p.exists() and not overwrite:
            raise InputError(
                f"{p}: the {kind} output exists; nothing was replaced (pass --overwrite to replace it, or "
                "choose another --output)"
            )
        folders.setdefault(p.parent, kind)
    for folder, kind in folders.items():
        anc = _existing_ancestor(folder)
        if not anc.is_dir():
            raise InputError(f"{anc}: is a file, not a folder: cannot write the {kind} output under {folder}")
        try:
            fd, probe = tempfile.mkstemp(prefix=f"{TMP_PREFIX}{os.getpid()}-probe-", dir=anc)
        except OSError as e:
            raise InputError(
                f"{anc}: the output folder is not writable ({e.strerror or e}); choose another --output"
            ) from e
        os.close(fd)
        os.unlink(probe)


def check_free_space(folder: Path, needed_bytes: int) -> None:
    """Raise when the disk of ``folder`` (or its nearest existing parent) has under ``needed_bytes`` free."""
    anc = _existing_ancestor(Path(folder))
    free = shutil.disk_usage(anc).free
    if free < needed_bytes:
        raise InputError(
            f"{anc}: {free / 1e6:.0f} MB free on the disk, the outputs need up to "
            f"{needed_bytes / 1e6:.0f} MB; free some space or choose another --output"
        )


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def remove_stale_temp_files(finals: Iterable[Path]) -> list[Path]:
    """Delete temporary files left by a killed run for these outputs (a dead process's id); returns them.

    Only hidden files named ``.gmd-tmp-<pid>-<final name>`` (or the older ``.tmp-<pid>-<final name>``)
    next to a final output, whose process no longer runs, are removed.
    """
    removed = []
    for final in finals:
        final = Path(final)
        if not final.parent.is_dir():
            continue
        for entry in final.parent.iterdir():
            m = _TMP_NAME.match(entry.name)
            if not m or m["name"] != final.name or not entry.is_file() or _pid_alive(int(m["pid"])):
                continue
            try:
                entry.unlink()
                removed.append(entry)
            except FileNotFoundError:
                pass
    return removed


class AtomicOutputs:
    """Write every output to a hidden temporary file first; rename all at the end, or delete all."""

    def __init__(self) -> None:
        self.pending: list[tuple[Path, Path]] = []

    def tmp(self, final: Path) -> Path:
        t = final.with_name(f"{TMP_PREFIX}{os.getpid()}-{final.name}")
        self.pending.append((t, final))
        return t

    def commit(self) -> None:
        for t, final in self.pending:
            os.replace(t, final)
        self.pending = []

    def discard(self) -> None:
        for t, _ in self.pending:
            try:
                t.unlink()
            except FileNotFoundError:
                pass
        self.pending = []
