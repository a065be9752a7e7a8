from pathlib import Path

import pytest
import torch

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
BRATS_DIR = SHARED / "data" / "brats2018"


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(2)
    yield


@pytest.fixture
def brats_dir() -> Path:
    if not BRATS_DIR.is_dir():
        pytest.skip(f"real BraTS cases not available ({BRATS_DIR} is absent; see ../shared/README.md)")
    return BRATS_DIR
