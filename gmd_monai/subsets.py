"""Modality names and the 2^M - 1 non-empty modality subsets: the objectives of GMD.

Order (the authors' order, used everywhere in this project: losses, GMD diagnostics, tables):
the full set first, then all subsets of size M-1, ..., then the singles; within one size, the
order of :func:`itertools.combinations` over the modality indices ``0..M-1``.

For BraTS (``t1, t1ce, t2, flair``) that is::

    0 t1+t1ce+t2+flair
    1 t1+t1ce+t2   2 t1+t1ce+flair   3 t1+t2+flair   4 t1ce+t2+flair
    5 t1+t1ce  6 t1+t2  7 t1+flair  8 t1ce+t2  9 t1ce+flair  10 t2+flair
    11 t1  12 t1ce  13 t2  14 flair

Example:
    >>> space = SubsetSpace(BRATS_MODALITIES)
    >>> len(space), space.names[9]
    (15, 't1ce+flair')
    >>> space.index(["flair", "t1ce"])
    9
    >>> space.modalities_of(9)
    ('t1ce', 'flair')
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence

import torch

__all__ = [
    "BRATS_MODALITIES",
    "SENTIMENT_MODALITIES",
    "SubsetSpace",
    "enumerate_subsets",
]

#: BraTS MRI modalities, in the channel order of every 4-channel image in this project.
BRATS_MODALITIES: tuple[str, ...] = ("t1", "t1ce", "t2", "flair")
#: Sentiment-analysis modalities (CMU-MOSI / MOSEI).
SENTIMENT_MODALITIES: tuple[str, ...] = ("text", "audio", "vision")

SEPARATOR = "+"


def enumerate_subsets(num_modalities: int) -> list[tuple[int, ...]]:
    """All non-empty subsets of ``range(num_modalities)``, largest first (see module docstring).

    Args:
        num_modalities: M >= 1.

    Returns:
        ``2**M - 1`` sorted index tuples.
    """
    if not isinstance(num_modalities, int) or num_modalities < 1:
        raise ValueError(f"num_modalities must be a positive integer, got {num_modalities!r}")
    out: list[tuple[int, ...]] = []
    for size in range(num_modalities, 0, -1):
        out.extend(itertools.combinations(range(num_modalities), size))
    return out


class SubsetSpace:
    """The modality names and their non-empty subsets, with stable names and indices.

    Args:
        modalities: modality names, in channel order (e.g. :data:`BRATS_MODALITIES`).
    """

    def __init__(self, modalities: Sequence[str] = BRATS_MODALITIES):
        mods = tuple(str(m) for m in modalities)
        if not mods:
            raise ValueError("at least one modality name is required")
        if len(set(mods)) != len(mods):
            raise ValueError(f"modality names must be unique, got {mods}")
        for m in mods:
            if not m or SEPARATOR in m or m != m.strip():
                raise ValueError(f"invalid modality name {m!r} (empty, spaces or contains '{SEPARATOR}')")
        self.modalities: tuple[str, ...] = mods
        self.subsets: list[tuple[int, ...]] = enumerate_subsets(len(mods))
        self.names: list[str] = [SEPARATOR.join(mods[i] for i in s) for s in self.subsets]
        self._by_key = {frozenset(s): k for k, s in enumerate(self.subsets)}

    def __len__(self) -> int:
        return len(self.subsets)

    def __repr__(self) -> str:
        return f"SubsetSpace(modalities={self.modalities}, num_subsets={len(self)})"

    @property
    def num_modalities(self) -> int:
        return len(self.modalities)

    def modality_index(self, name: str) -> int:
        """Channel index of one modality name (case-insensitive); clear error for unknown names."""
        key = str(name).strip().lower()
        for i, m in enumerate(self.modalities):
            if m.lower() == key:
                return i
        raise ValueError(f"unknown modality name {name!r}; expected one of {list(self.modalities)}")

    def indices(self, available: Iterable[str] | str) -> tuple[int, ...]:
        """Sorted channel indices of the named modalities (``"t1ce+flair"`` or ``["flair", "t1ce"]``)."""
        if isinstance(available, str):
            available = [a for a in available.split(SEPARATOR) if a.strip()]
        idx = sorted({self.modality_index(a) for a in available})
        if not idx:
            raise ValueError(f"no modality given; expected a non-empty subset of {list(self.modalities)}")
        return tuple(idx)

    def index(self, available: Iterable[str] | str) -> int:
        """Subset index (objective number) of a set of available modality names."""
        return self._by_key[frozenset(self.indices(available))]

    def index_of_indices(self, channel_indices: Iterable[int]) -> int:
        """Subset index of a set of channel indices."""
        key = frozenset(int(i) for i in channel_indices)
        if key not in self._by_key:
            raise ValueError(f"{sorted(key)} is not a non-empty subset of range({self.num_modalities})")
        return self._by_key[key]

    def modalities_of(self, subset_index: int) -> tuple[str, ...]:
        """Modality names of subset number ``subset_index``."""
        if not 0 <= int(subset_index) < len(self):
            raise IndexError(f"subset index {subset_index} out of range 0..{len(self) - 1}")
        return tuple(self.modalities[i] for i in self.subsets[int(subset_index)])

    def name(self, subset_index: int) -> str:
        return self.names[int(subset_index)]

    def mask(self, subset_index: int) -> torch.Tensor:
        """Boolean availability vector of shape (M,) for one subset."""
        m = torch.zeros(self.num_modalities, dtype=torch.bool)
        m[list(self.subsets[int(subset_index)])] = True
        return m

    def masks(self) -> torch.Tensor:
        """Boolean matrix (num_subsets, M): row k marks the modalities of subset k."""
        return torch.stack([self.mask(k) for k in range(len(self))])

    def shared_mask(
        self, parameter_modalities: Iterable[str | None], subsets: Sequence[Sequence[int]] | None = None
    ) -> list[bool]:
        """Which parameters every objective reaches, from the modality each parameter belongs to.

        Args:
            parameter_modalities: per parameter, its modality name, or None for a parameter shared by
                all modality streams.
            subsets: the objectives (channel-index tuples); default all subsets of this space.

        Returns:
            One bool per parameter: True for shared parameters, and for a modality's own parameters
            only if every objective contains that modality.
        """
        subsets = self.subsets if subsets is None else subsets
        out = []
        for mod in parameter_modalities:
            if mod is None:
                out.append(True)
            else:
                i = self.modality_index(mod)
                out.append(all(i in s for s in subsets))
        return out

    def containing(self, modality: str | int) -> list[int]:
        """Indices of the subsets that contain one modality (2^(M-1) of them)."""
        i = modality if isinstance(modality, int) else self.modality_index(modality)
        return [k for k, s in enumerate(self.subsets) if i in s]
