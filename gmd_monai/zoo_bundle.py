"""A self-contained Model Zoo bundle: ``bundle/`` plus the code it runs, as one archive.

The Model Zoo's CI pip-installs the bundle's ``required_packages_version``; ``gmd-monai`` is not on PyPI,
so a bundle whose configs call ``gmd_monai.*`` cannot run there. :func:`make_zoo_bundle` writes the zoo
layout (``configs/``, ``models/``, ``docs/``, ``scripts/``, ``LICENSE``, and the MONAI Label app
``monailabel/``) with this package copied into ``scripts/gmd_monai`` at build time (git keeps one copy
of the sources), and every config changed in two lines only:

* ``bundle_root: .``: the zoo runs a bundle from its own folder
  (``python -m monai.bundle run --config_file configs/inference.yaml``);
* ``$import scripts`` first among ``imports``: ``scripts/__init__.py`` puts ``scripts/`` at the front of
  ``sys.path``, so ``gmd_monai`` is the copy inside the bundle even where another version is installed.

``metadata.json`` drops ``gmd-monai`` from ``required_packages_version`` (the code travels with the
bundle) and keeps its dependencies. ``tests/test_zoo_bundle.py`` unpacks the archive and runs its
inference in a Python environment that has MONAI but not gmd-monai.
:func:`python_without_gmd_monai` makes such an environment from the running one; ``make monailabel-check``
serves the archive's MONAI Label app with it.

Example:
    >>> import tempfile, zipfile
    >>> out = make_zoo_bundle(tempfile.mkdtemp() + "/gmd_monai_brats.zip", include_models=False)
    >>> names = zipfile.ZipFile(out).namelist()
    >>> "gmd_monai_brats/scripts/gmd_monai/networks/ds_unet.py" in names
    True
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

import gmd_monai
from gmd_monai.inference.model import bundle_root

__all__ = ["make_zoo_bundle", "python_without_gmd_monai", "zoo_config_text"]

#: ``scripts/__init__.py`` of the archive
SCRIPTS_INIT = '''"""The code of this bundle: the gmd_monai package, copied in by `gmd-monai zoo-bundle`.

Importing `scripts` (every config does, first) puts this folder at the front of sys.path, so that
`gmd_monai` is the copy inside the bundle.
"""

import os
import sys

_here = os.path.dirname(os.path.abspath(__file__))
if _here not in sys.path:
    sys.path.insert(0, _here)
'''
_IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", ".*")


def zoo_config_text(text: str) -> str:
    """A config of ``bundle/configs`` as the archive holds it: ``bundle_root: .`` and ``$import scripts``
    first among its ``imports`` (a config without either is returned unchanged).

    Example:
        >>> print(zoo_config_text("imports:\\n- $import torch\\nbundle_root: bundle\\n"))
        imports:
        - $import scripts
        - $import torch
        bundle_root: .
        <BLANKLINE>
    """
    text = re.sub(r"^bundle_root:.*$", "bundle_root: .", text, count=1, flags=re.M)
    return re.sub(r"^imports:[ \t]*\n", "imports:\n- $import scripts\n", text, count=1, flags=re.M)


def make_zoo_bundle(
    output: str | os.PathLike = "dist/gmd_monai_brats.zip",
    bundle: str | os.PathLike | None = None,
    name: str = "gmd_monai_brats",
    include_models: bool = True,
    overwrite: bool = False,
) -> Path:
    """Write the zoo-layout bundle archive (a zip holding the folder ``name``).

    Args:
        output: the archive to write (``.zip``).
        bundle: the bundle folder to pack (default: this source tree's ``bundle/``).
        name: the bundle's folder name inside the archive.
        include_models: ship ``models/`` (the trained weights and their evaluation).
        overwrite: replace an existing archive.

    Returns:
        The archive's path.

    Raises:
        FileNotFoundError: ``bundle`` is not a bundle folder (no ``configs/metadata.json``).
        FileExistsError: ``output`` exists and ``overwrite`` is false.
    """
    output = Path(output)
    src = Path(bundle) if bundle is not None else bundle_root()
    if not (src / "configs" / "metadata.json").is_file():
        raise FileNotFoundError(f"{src}: not a bundle folder (no configs/metadata.json)")
    if output.exists() and not overwrite:
        raise FileExistsError(f"{output}: exists; pass --overwrite to replace it")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / name
        root.mkdir()
        shutil.copytree(src / "configs", root / "configs", ignore=_IGNORE)
        shutil.copytree(src / "docs", root / "docs", ignore=_IGNORE)
        if (src / "monailabel").is_dir():  # the bundle's MONAI Label app
            shutil.copytree(src / "monailabel", root / "monailabel", ignore=_IGNORE)
        if include_models and (src / "models").is_dir():
            shutil.copytree(src / "models", root / "models", ignore=_IGNORE)
        for extra in ("LICENSE",):
            if (src / extra).is_file():
                shutil.copy2(src / extra, root / extra)
        scripts = root / "scripts"
        scripts.mkdir()
        (scripts / "__init__.py").write_text(SCRIPTS_INIT)
        shutil.copytree(Path(gmd_monai.__file__).parent, scripts / "gmd_monai", ignore=_IGNORE)
        for cfg in (root / "configs").glob("*.yaml"):
            cfg.write_text(zoo_config_text(cfg.read_text()))
        meta_path = root / "configs" / "metadata.json"
        meta = json.loads(meta_path.read_text())
        meta.get("required_packages_version", {}).pop("gmd-monai", None)
        meta_path.write_text(json.dumps(meta, indent=4) + "\n")
        output.parent.mkdir(parents=True, exist_ok=True)
        built = shutil.make_archive(str(Path(tmp) / "archive"), "zip", root_dir=tmp, base_dir=name)
        partial = output.with_name(f".{output.name}.tmp{os.getpid()}")
        shutil.move(built, partial)  # then an atomic rename: never a half-written archive
        os.replace(partial, output)
    return output


def python_without_gmd_monai(env_dir: str | os.PathLike) -> Path:
    """A virtual environment at ``env_dir`` that sees the running interpreter's packages (MONAI, torch, ...)
    but not gmd-monai: where an archive runs on the code it carries and on nothing else.

    The running environment's site-packages folder is added to the new one as a plain path, so the
    ``.pth`` file of an editable install of gmd-monai there is not run.
    Run it outside a source checkout: Python puts the current folder first on ``sys.path``.

    Returns:
        The new environment's ``python``.

    Raises:
        RuntimeError: the new environment can still import ``gmd_monai`` (a regular, non-editable install
            of gmd-monai in the running environment's site-packages).
    """
    env = Path(env_dir)
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env)], check=True)
    python = env / "bin" / "python"
    probe = [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]
    purelib = Path(subprocess.run(probe, check=True, capture_output=True, text=True).stdout.strip())
    (purelib / "parent_packages.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    clean = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    # run from env: the current folder, first on sys.path, may be a source checkout holding gmd_monai/
    probe = subprocess.run([str(python), "-c", "import gmd_monai"], capture_output=True, env=clean, cwd=env)
    if probe.returncode == 0:
        where = sysconfig.get_paths()["purelib"]
        raise RuntimeError(f"{env}: still imports gmd_monai (installed in {where}, not editable)")
    return python
