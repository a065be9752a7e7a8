"""The usage examples in the docstrings run, and print what they say (``make test`` runs them all).

Every module of ``gmd_monai`` whose docstrings hold a ``>>>`` example is collected, so a new example
is checked without registering it here.
"""

from __future__ import annotations

import doctest
import importlib
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "gmd_monai"
MODULES = sorted(
    ".".join(("gmd_monai", *p.relative_to(PACKAGE).with_suffix("").parts))
    for p in PACKAGE.rglob("*.py")
    if ">>>" in p.read_text(encoding="utf-8")
)


def test_the_examples_are_found():
    assert {"gmd_monai.gmd.projection", "gmd_monai.subsets", "gmd_monai.networks.ds_unet"} <= set(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # examples that write files write them here
    module = importlib.import_module(name)
    result = doctest.testmod(
        module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False
    )
    assert result.attempted > 0, f"{name}: no example found"
    assert result.failed == 0, f"{name}: {result.failed} of {result.attempted} examples failed (output above)"
