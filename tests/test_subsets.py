import pytest
import torch

from gmd_monai.subsets import BRATS_MODALITIES, SubsetSpace, enumerate_subsets


def test_counts_and_order():
    for m in range(1, 7):
        subsets = enumerate_subsets(m)
        assert len(subsets) == 2**m - 1
        assert len(set(subsets)) == len(subsets)
        sizes = [len(s) for s in subsets]
        assert sizes == sorted(sizes, reverse=True)
    assert enumerate_subsets(4)[:5] == [(0, 1, 2, 3), (0, 1, 2), (0, 1, 3), (0, 2, 3), (1, 2, 3)]
    assert enumerate_subsets(4)[-4:] == [(0,), (1,), (2,), (3,)]


def test_brats_names_and_roundtrip():
    space = SubsetSpace(BRATS_MODALITIES)
    assert space.names[0] == "t1+t1ce+t2+flair"
    assert space.names[9] == "t1ce+flair"
    assert space.names[11:] == ["t1", "t1ce", "t2", "flair"]
    for k in range(len(space)):
        assert space.index(space.modalities_of(k)) == k
        assert space.index(space.names[k]) == k
        assert space.mask(k).sum() == len(space.subsets[k])
    assert space.index(["FLAIR", "t1ce"]) == 9
    assert len(space.containing("t1ce")) == 8
    assert space.masks().shape == (15, 4)
    assert torch.equal(space.masks()[9], torch.tensor([False, True, False, True]))


def test_errors():
    space = SubsetSpace(BRATS_MODALITIES)
    with pytest.raises(ValueError, match="unknown modality name 't3'"):
        space.index(["t3"])
    with pytest.raises(ValueError, match="no modality given"):
        space.index([])
    with pytest.raises(ValueError, match="unique"):
        SubsetSpace(["a", "a"])
    with pytest.raises(IndexError):
        space.modalities_of(15)
