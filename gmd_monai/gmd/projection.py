"""The GMD projection rule (PCGrad over the subset objectives) in coefficient space.

Every projected gradient is a linear combination of the original per-objective gradients, so the
whole projection can run on the T x T Gram matrix ``G[i, j] = <g_i, g_j>``: we keep, for each
objective ``i``, coefficients ``a_i`` with ``g~_i = sum_k a_ik g_k``. Then

* ``<g~_i, g_j> = sum_k a_ik G[k, j]``
* projecting ``g~_i`` off ``g_j`` is ``a_ij -= <g~_i, g_j> / G[j, j]``.

This is GMD's rule (Wang et al., AAAI 2024), with ``j == i`` included in the permutation (as in the
authors' code; torchjd's ``PCGradWeighting`` skips it). The result is exact, not an approximation.

Example:
    >>> import torch
    >>> g = torch.tensor([[1.0, 0.0], [-1.0, 1.0], [0.0, 1.0]])
    >>> coeffs = pcgrad_coefficients(g @ g.T, torch.tensor([[0, 1, 2]] * 3))
    >>> coeffs.dtype                 # float64 whatever the gradients' dtype
    torch.float64
    >>> (coeffs.sum(0) / 3).to(g.dtype) @ g     # the merged (mean) gradient
    tensor([0.1667, 0.8333])
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["pcgrad_coefficients", "random_permutations", "count_conflicts"]


def random_permutations(num_objectives: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """One random permutation of ``range(T)`` per objective, shape (T, T), from a seeded generator."""
    return torch.stack([torch.randperm(num_objectives, generator=generator) for _ in range(num_objectives)])


def pcgrad_coefficients(gram: torch.Tensor, permutations: torch.Tensor) -> torch.Tensor:
    """Projection coefficients ``A`` (T, T, float64) with ``g~_i = sum_k A[i, k] g_k``.

    Args:
        gram: (T, T) Gram matrix of the ORIGINAL per-objective gradients.
        permutations: (T, T) integer tensor; row ``i`` is the order in which objective ``i`` is
            compared with every objective ``j`` (``j == i`` included).

    Returns:
        The coefficient matrix; ``A.sum(0) / T`` are the effective weights of the mean merge.
    """
    g = np.asarray(gram.detach().to("cpu", torch.float64).numpy())
    t = g.shape[0]
    if g.shape != (t, t):
        raise ValueError(f"gram must be square, got shape {tuple(gram.shape)}")
    perms = np.asarray(permutations.detach().to("cpu").numpy(), dtype=np.int64)
    if perms.shape != (t, t):
        raise ValueError(f"permutations must have shape ({t}, {t}), got {tuple(perms.shape)}")
    diag = np.diag(g)
    coeffs = np.eye(t, dtype=np.float64)
    for i in range(t):
        a = coeffs[i]
        for j in perms[i]:
            dot = float(a @ g[:, j])
            if dot < 0.0 and diag[j] > 0.0:
                a[j] -= dot / diag[j]
    return torch.from_numpy(coeffs)


def count_conflicts(gram: torch.Tensor) -> int:
    """Number of unordered objective pairs ``i < j`` whose original gradients conflict (``G_ij < 0``)."""
    upper = torch.triu(gram, diagonal=1)
    return int((upper < 0).sum().item())
